"""Request and subscription authentication, checked as the venue checks it (fact sheet §1.3-§1.8).

Pure apart from the ED25519 verification itself. The signed text is rebuilt with the very
function our client signs with (`oms_backpack.signing.signing_string`), from the
parameters as they arrived: the query's decoded values, or the JSON body's values (booleans
lowercase, numbers as written, nulls left out; a batch repeats the instruction per order).

Timestamps and windows go through the exchange's strict integer parser (`inputs`). Every
refusal is an `ApiError` with status 401 (the venue answers "Request has expired" with
401 Unauthorized) and the venue's `{"code", "message"}` body.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

import nacl.exceptions
import nacl.signing

from oms_backpack.signing import DEFAULT_WINDOW_MS, MAX_WINDOW_MS, ParamValue, signing_string
from oms_local_exchange import inputs
from oms_local_exchange.model import ApiError

__all__ = ["check_request", "check_subscription", "signature_valid"]

JSON = Any
_CLIENT: Final = "INVALID_CLIENT_REQUEST"
_MAX_KEY_TEXT: Final = 128  # a key is 44 characters of base64


def _refuse(message: str, code: str = _CLIENT) -> ApiError:
    return ApiError(401, code, message)


def _verify_key(api_key: str) -> nacl.signing.VerifyKey | None:
    if len(api_key) > _MAX_KEY_TEXT:
        return None  # not a key; and a megabyte of text should not sit in the cache
    return _cached_verify_key(api_key)


@lru_cache(maxsize=64)
def _cached_verify_key(api_key: str) -> nacl.signing.VerifyKey | None:
    try:
        raw = base64.b64decode(api_key, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 32:
        return None
    return nacl.signing.VerifyKey(raw)


def signature_valid(api_key: str, signature: str, message: str) -> bool:
    """Whether `signature` (base64) is `api_key`'s ED25519 signature of `message`."""
    key = _verify_key(api_key)
    if key is None:
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(message.encode("utf-8"), raw)
    except (binascii.Error, ValueError, nacl.exceptions.BadSignatureError):
        return False
    return True


def _number(value: JSON, what: str) -> int:
    """A timestamp or window: ASCII digits (surrounding blanks allowed), or a JSON integer in
    a subscription's signature list; at most int64."""
    try:
        if isinstance(value, str):
            return inputs.parse_int(value.strip(" \t"))
        return inputs.int_value(value)
    except inputs.BadInput:
        raise _refuse(f"Invalid {what} header") from None


def _check_time(timestamp: int, window: int, now_ms: int) -> None:
    if not 0 < window <= MAX_WINDOW_MS:
        raise _refuse("Invalid X-Window header: must be at most 60000")
    if now_ms > timestamp + window:
        raise _refuse("Request has expired")
    if timestamp > now_ms + window:
        raise _refuse("Invalid timestamp: the request's timestamp is ahead of the server time")


def check_request(
    headers: Mapping[str, str],
    instruction: str,
    params: Mapping[str, ParamValue] | Sequence[Mapping[str, ParamValue]] | None,
    now_ms: int,
    known: Callable[[str], bool],
) -> str:
    """The API key of a correctly signed, unexpired request; `ApiError` otherwise.

    `headers` are keyed in lower case. `known(api_key)` says whether an account has that key.
    """
    api_key = headers.get("x-api-key")
    if not api_key:
        raise _refuse("Missing X-API-Key header", "UNAUTHORIZED")
    if _verify_key(api_key) is None or not known(api_key):
        raise _refuse("Invalid X-API-Key header", "UNAUTHORIZED")
    signature = headers.get("x-signature")
    if not signature:
        raise _refuse("Missing X-Signature header")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 64:
        raise _refuse("Invalid X-Signature header")
    timestamp = _number(headers.get("x-timestamp"), "X-Timestamp")
    window_text = headers.get("x-window")
    window = DEFAULT_WINDOW_MS if window_text is None else _number(window_text, "X-Window")
    _check_time(timestamp, window, now_ms)
    if isinstance(params, Sequence) and not params:
        params = None
    message = signing_string(instruction, params, timestamp, window)
    if not signature_valid(api_key, signature, message):
        raise _refuse("Invalid signature")
    return api_key


def check_subscription(signature: JSON, now_ms: int, known: Callable[[str], bool]) -> str:
    """The API key of a private SUBSCRIBE's `signature: [key, sig, timestamp, window]`."""
    if not isinstance(signature, list) or len(signature) not in (3, 4):
        raise _refuse("Invalid signature")
    api_key, sig = signature[0], signature[1]
    if not isinstance(api_key, str) or _verify_key(api_key) is None or not known(api_key):
        raise _refuse("Invalid X-API-Key header", "UNAUTHORIZED")
    if not isinstance(sig, str):
        raise _refuse("Invalid signature")
    timestamp = _number(signature[2], "timestamp")
    window = _number(signature[3], "window") if len(signature) == 4 else DEFAULT_WINDOW_MS
    _check_time(timestamp, window, now_ms)
    if not signature_valid(api_key, sig, signing_string("subscribe", None, timestamp, window)):
        raise _refuse("Invalid signature")
    return api_key
