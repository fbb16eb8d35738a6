"""Request and subscription authentication, checked as the venue checks it (fact sheet §1.2-§1.8).

The exchange's own: it imports neither the engine nor the client, so a client that builds its
signing string wrongly is refused here rather than agreed with. Pure apart from the ED25519
arithmetic (pynacl).

The text a client must have signed is rebuilt from the request as it arrived
(`signing_string`): `instruction=<name>`, then the parameters sorted by key as `&key=value`
(the query's decoded values for a GET, the JSON body's values otherwise: booleans
lowercase, numbers and strings as written, nulls left out), then `&timestamp=<ms>&window=<ms>`.
A batch body repeats `instruction=...&<sorted params>` per order, joined by `&`, with the
timestamp and window once at the end.

Timestamps and windows go through the exchange's strict integer parser (`inputs`). Every
refusal is an `ApiError` with status 401 (the venue answers "Request has expired" with
401 Unauthorized) and the venue's `{"code", "message"}` body.

Keys: an API secret is a base64 ED25519 seed (32 bytes; of a 64-byte secret the first 32 are
the seed), and its API key the base64 public key (`KeyPair`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final

import attrs
import nacl.exceptions
import nacl.signing

from oms_local_exchange import inputs
from oms_local_exchange.model import ApiError

__all__ = [
    "DEFAULT_WINDOW_MS",
    "MAX_WINDOW_MS",
    "KeyPair",
    "SignedValue",
    "check_request",
    "check_subscription",
    "signature_valid",
    "signing_string",
]

JSON = Any
# A parameter value as a request carries it: text from a query (an array parameter's values
# as a tuple), any JSON scalar from a body.
SignedValue = str | int | bool | Decimal | tuple[str, ...] | None
SignedParams = Mapping[str, SignedValue] | Sequence[Mapping[str, SignedValue]] | None
DEFAULT_WINDOW_MS: Final = 5_000
MAX_WINDOW_MS: Final = 60_000
_CLIENT: Final = "INVALID_CLIENT_REQUEST"
_MAX_KEY_TEXT: Final = 128  # a key is 44 characters of base64


@attrs.frozen
class KeyPair:
    """An account's API key and secret (base64 public key and ED25519 seed), as a client is
    configured with them. The secret is left out of the repr."""

    api_key: str
    api_secret: str = attrs.field(repr=False)

    @classmethod
    def generate(cls) -> KeyPair:
        """A new random key pair."""
        return cls.from_secret(base64.b64encode(bytes(nacl.signing.SigningKey.generate())).decode())

    @classmethod
    def from_secret(cls, api_secret: str) -> KeyPair:
        """The pair of a given secret; `ValueError` if it is not a base64 seed."""
        try:
            seed = base64.b64decode(api_secret.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the API secret is not valid base64") from None
        if len(seed) not in (32, 64):
            raise ValueError(f"the API secret decodes to {len(seed)} bytes, not a 32-byte seed")
        public = nacl.signing.SigningKey(seed[:32]).verify_key
        return cls(base64.b64encode(bytes(public)).decode("ascii"), api_secret)


def _value_text(value: str | int | bool | Decimal) -> str:
    if isinstance(value, bool):  # before int: a bool is an int to Python
        return "true" if value else "false"
    return str(value)


def _sorted_params(params: Mapping[str, SignedValue]) -> str:
    """`&key=value` per parameter, sorted by key; an array parameter (a tuple) as one
    `&key=value` per value, in the order sent (the venue documents no rule for arrays)."""
    parts = []
    for key, value in sorted(params.items()):
        if value is None:
            continue
        for item in value if isinstance(value, tuple) else (value,):
            parts.append(f"&{key}={_value_text(item)}")
    return "".join(parts)


def signing_string(instruction: str, params: SignedParams, timestamp: int, window: int) -> str:
    """The text the venue expects signed for a request with these parameters (a list of
    mappings for a batch)."""
    if params is None or isinstance(params, Mapping):
        body = f"instruction={instruction}{_sorted_params(params or {})}"
    else:
        body = "&".join(f"instruction={instruction}{_sorted_params(item)}" for item in params)
    return f"{body}&timestamp={timestamp}&window={window}"


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
    params: SignedParams,
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
