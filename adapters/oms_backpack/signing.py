"""Backpack request signing (ED25519). Pure: builds strings and signs them, no I/O.

The signing string (fact sheet §1.4): `instruction=<name>` first, then the request's
parameters sorted by key as `&key=value` (values raw, not URL-encoded; booleans lowercase;
absent values left out), then `&timestamp=<ms>&window=<ms>`. A batch repeats
`instruction=...&<sorted params>` per order and appends the timestamp and window once.
WebSocket subscribe signs `instruction=subscribe&timestamp=...&window=...`.

Keys: the API secret is a base64 ED25519 seed (32 bytes; a 64-byte secret is accepted and its
first 32 bytes used, as some tools export it); the API key is the base64 public key. The seed
is held only inside `Credentials` and never appears in a repr, a str or an exception.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Final

import nacl.bindings

from oms.core.errors import ConfigurationError

__all__ = [
    "DEFAULT_WINDOW_MS",
    "MAX_WINDOW_MS",
    "Credentials",
    "CredentialsError",
    "ParamValue",
    "signing_string",
]

DEFAULT_WINDOW_MS: Final = 5000
MAX_WINDOW_MS: Final = 60000

ParamValue = str | int | bool | Decimal | None


class CredentialsError(ConfigurationError):
    """The API key or secret is unusable (a `ConfigurationError`, and so a `ValueError`).
    The message never contains the secret."""


def _render(key: str, value: str | int | bool | Decimal) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, Decimal):
        # Requests are built with the exact strings they send; a Decimal here is signed as
        # its str(), which must then be what the body carries too.
        return str(value)
    raise TypeError(f"cannot sign parameter {key!r} of type {type(value).__name__}")


def _params(params: Mapping[str, ParamValue]) -> str:
    parts = []
    for key in sorted(params):
        value = params[key]
        if value is not None:
            parts.append(f"&{key}={_render(key, value)}")
    return "".join(parts)


def signing_string(
    instruction: str,
    params: Mapping[str, ParamValue] | Sequence[Mapping[str, ParamValue]] | None,
    timestamp_ms: int,
    window_ms: int = DEFAULT_WINDOW_MS,
) -> str:
    """The exact text Backpack expects signed for one request (or one batch)."""
    if params is None or isinstance(params, Mapping):
        body = f"instruction={instruction}{_params(params or {})}"
    else:
        if not params:
            raise ValueError("a batch needs at least one item")
        body = "&".join(f"instruction={instruction}{_params(item)}" for item in params)
    return f"{body}&timestamp={timestamp_ms}&window={window_ms}"


def _decode_key(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CredentialsError(f"the {what} is not valid base64") from None


class Credentials:
    """An ED25519 key pair for signing Backpack requests.

    `api_key` is public (it is sent as `X-API-Key`); the seed stays private.
    """

    __slots__ = ("__secret_key", "api_key")

    def __init__(self, secret: str, api_key: str | None = None) -> None:
        seed = _decode_key(secret, "API secret")
        if len(seed) not in (32, 64):
            raise CredentialsError(
                f"the API secret decodes to {len(seed)} bytes; an ED25519 seed has 32"
            )
        # libsodium's 64-byte secret key (seed and public key), used as is by every signature.
        public, self.__secret_key = nacl.bindings.crypto_sign_seed_keypair(seed[:32])
        derived = base64.b64encode(public).decode("ascii")
        if api_key is not None and api_key.strip() != derived:
            raise CredentialsError(
                "the API key does not belong to the API secret (the key must be the base64 "
                "public key of the secret's seed)"
            )
        self.api_key: str = derived

    def __repr__(self) -> str:
        return f"Credentials(api_key={self.api_key!r}, secret=<hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Credentials cannot be pickled: the secret stays in this process")

    def sign(self, message: str) -> str:
        """base64 of the 64-byte ED25519 signature of `message` (UTF-8)."""
        # crypto_sign returns the signature followed by the message; nacl.signing's wrapper
        # adds nothing but objects around the same call.
        signed = nacl.bindings.crypto_sign(message.encode("utf-8"), self.__secret_key)
        return binascii.b2a_base64(signed[:64], newline=False).decode("ascii")

    def headers(
        self,
        instruction: str,
        params: Mapping[str, ParamValue] | Sequence[Mapping[str, ParamValue]] | None,
        timestamp_ms: int,
        window_ms: int = DEFAULT_WINDOW_MS,
    ) -> dict[str, str]:
        """The authentication headers of one signed REST request."""
        message = signing_string(instruction, params, timestamp_ms, window_ms)
        return {
            "X-API-Key": self.api_key,
            "X-Signature": self.sign(message),
            "X-Timestamp": str(timestamp_ms),
            "X-Window": str(window_ms),
        }

    def subscribe_frame(
        self, streams: Sequence[str], timestamp_ms: int, window_ms: int = DEFAULT_WINDOW_MS
    ) -> dict[str, object]:
        """A signed WebSocket SUBSCRIBE frame for private (`account.*`) streams."""
        signature = self.sign(signing_string("subscribe", None, timestamp_ms, window_ms))
        return {
            "method": "SUBSCRIBE",
            "params": list(streams),
            "signature": [self.api_key, signature, str(timestamp_ms), str(window_ms)],
        }
