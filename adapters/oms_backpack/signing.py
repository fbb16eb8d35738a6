"""Backpack request signing (ED25519). Builds strings and signs them: no network or file I/O
(nonces made ahead read `os.urandom`, below).

The signing string (fact sheet §1.4): `instruction=<name>` first, then the request's
parameters sorted by key as `&key=value` (values raw, not URL-encoded; booleans lowercase;
absent values left out), then `&timestamp=<ms>&window=<ms>`. A batch repeats
`instruction=...&<sorted params>` per order and appends the timestamp and window once.
WebSocket subscribe signs `instruction=subscribe&timestamp=...&window=...`.

Keys: the API secret is a base64 ED25519 seed (32 bytes; a 64-byte secret is accepted and its
first 32 bytes used, as some tools export it); the API key is the base64 public key. The seed
is held only inside `Credentials` and never appears in a repr, a str or an exception.

Nonces made ahead. An ED25519 signature is `R || S` with `R = r·B` for a secret nonce `r`,
and `S = r + H(R || A || M)·a mod L`. The scalar multiplication `r·B` is nearly all of the
cost (about 19 of libsodium's 20 µs) and does not depend on the message when `r` is random
instead of derived from it. RFC 8032 derives `r` from the message so that a poor random
source cannot repeat it; verification cannot tell the two apart, and both are valid
signatures. `Credentials.add_nonces` makes `(r, R)` pairs ahead of time (the session's
`BackpackRest.keep_nonces` task, in a worker thread), and `sign` then spends one pair: a
SHA-512 and two scalar operations, about 2 µs. Every step is a libsodium primitive
(constant-time scalar arithmetic); only the order of the steps is ours, and a test checks
it against libsodium's own `crypto_sign` byte for byte when given libsodium's nonce.

A nonce used for two messages gives the key away, so:
- a pair is taken off the pool exactly once (`list.pop`, atomic under the GIL, so threads
  cannot share one), before anything else that could fail;
- a child process never uses its parent's pairs: `os.register_at_fork` empties every pool in
  the child and starts a new generation, and each pair also carries the generation and the
  process id it was made in (checked by `sign`, for a fork that runs no Python hooks);
- each `r` hashes the secret nonce prefix with 32 fresh bytes of `os.urandom`, the process
  id, a counter and the time: it stays secret and unpredictable even from a weak random
  source, and the inputs never repeat within a process;
- `Credentials` cannot be copied or pickled.
With an empty pool (a burst longer than it, or no task filling it) `sign` falls back to
libsodium's deterministic `crypto_sign`. One risk is outside what a process can see: a
virtual machine restored from a snapshot, or a process restored by a checkpoint tool, runs
again with a pool whose nonces it has already spent. Where that can happen, do not make
nonces ahead (`open_backpack_session(nonces_ahead=False)`).

The module checks at import that the steps give libsodium's own signature byte for byte
(from libsodium's nonce, for a fixed key); if they do not, or pynacl lacks the primitives,
no nonces are made and every signature is made in full.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import os
import struct
import time
import weakref
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

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

try:
    # pynacl's own cffi module: its public wrappers of the scalar operations add about 1.5 µs
    # of argument checks a call, which the pool's arguments (always 32 or 64 bytes) need not.
    from nacl import _sodium

    _ffi: Any = _sodium.ffi
    _lib: Any = _sodium.lib
except ImportError:  # pragma: no cover - a pynacl without it signs every message in full
    _ffi = _lib = None

# Whether this pynacl has the primitives; `_POOLED` (at the end) also needs the self-check.
_HAS_PRIMITIVES: Final = (
    _lib is not None
    and bool(nacl.bindings.has_crypto_core_ed25519)
    and bool(nacl.bindings.has_crypto_scalarmult_ed25519)
)

_NONCE_SALT: Final = struct.Struct("<QQQ")  # process id, counter, time (ns)


class _Generation:
    """This process's pairs: replaced in a child after every fork."""


# The current generation (one item: replaced, not rebound, after a fork).
_GENERATION: Final = [_Generation()]
_ALL: weakref.WeakSet[Credentials] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    _GENERATION[0] = _Generation()
    for credentials in list(_ALL):
        credentials._forget_nonces()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

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


def _derive(secret: str) -> tuple[bytes, bytes, bytes, bytes]:
    """From the API secret: the public key, libsodium's 64-byte secret key (used as is by
    every full signature), and the signing scalar (clamped, reduced mod L) and nonce prefix
    as RFC 8032 §5.1.6 derives them from the seed."""
    seed = _decode_key(secret, "API secret")
    if len(seed) not in (32, 64):
        raise CredentialsError(
            f"the API secret decodes to {len(seed)} bytes; an ED25519 seed has 32"
        )
    public, secret_key = nacl.bindings.crypto_sign_seed_keypair(seed[:32])
    digest = hashlib.sha512(seed[:32]).digest()
    clamped = bytearray(digest[:32])
    clamped[0] &= 248
    clamped[31] &= 127
    clamped[31] |= 64
    scalar = (
        nacl.bindings.crypto_core_ed25519_scalar_reduce(bytes(clamped) + bytes(32))
        if _HAS_PRIMITIVES
        else b""
    )
    return public, secret_key, scalar, digest[32:]


def _decode_key(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CredentialsError(f"the {what} is not valid base64") from None


class Credentials:
    """An ED25519 key pair for signing Backpack requests.

    `api_key` is public (it is sent as `X-API-Key`); the seed stays private.
    """

    __slots__ = (
        "__counter",
        "__nonces",
        "__prefix",
        "__public",
        "__scalar",
        "__secret_key",
        "__weakref__",
        "api_key",
    )

    def __init__(self, secret: str, api_key: str | None = None) -> None:
        try:
            public, self.__secret_key, self.__scalar, self.__prefix = _derive(secret)
        finally:
            del secret  # out of this frame's locals, which a traceback may carry
        derived = base64.b64encode(public).decode("ascii")
        if api_key is not None and api_key.strip() != derived:
            raise CredentialsError(
                "the API key does not belong to the API secret (the key must be the base64 "
                "public key of the secret's seed)"
            )
        self.api_key: str = derived
        self.__public = public
        self.__nonces: list[tuple[_Generation, int, bytes, bytes]] = []  # (.., pid, r, R)
        self.__counter = itertools.count()
        _ALL.add(self)

    def __repr__(self) -> str:
        # `api_key` is unset while `__init__` runs (a traceback may show the half-made object).
        return f"Credentials(api_key={getattr(self, 'api_key', None)!r}, secret=<hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Credentials cannot be pickled: the secret stays in this process")

    @property
    def nonces_left(self) -> int:
        """How many signatures the pool of nonces made ahead still covers (module doc)."""
        return len(self.__nonces)

    def add_nonces(self, count: int) -> int:
        """Make `count` nonces ahead (about 20 µs each, nearly all of it in libsodium with
        the GIL released: meant for a worker thread); returns how many were added (0 where
        nonces are not made ahead: see the module doc)."""
        if not _POOLED or count <= 0:
            return 0
        generation, pid = _GENERATION[0], os.getpid()
        made: list[tuple[_Generation, int, bytes, bytes]] = []
        nonce = _ffi.new("unsigned char[32]")
        point = _ffi.new("unsigned char[32]")
        for _ in range(count):
            salt = _NONCE_SALT.pack(pid, next(self.__counter), time.time_ns() & (2**64 - 1))
            _lib.crypto_core_ed25519_scalar_reduce(
                nonce, hashlib.sha512(self.__prefix + os.urandom(32) + salt).digest()
            )
            # Refuses only a nonce of 0 (a chance of 2^-252): that one is skipped.
            if _lib.crypto_scalarmult_ed25519_base_noclamp(point, nonce) == 0:
                made.append((generation, pid, bytes(_ffi.buffer(nonce)), bytes(_ffi.buffer(point))))
        _lib.sodium_memzero(nonce, 32)
        self.__nonces.extend(made)
        return len(made)

    def _forget_nonces(self) -> None:
        """Throw every pair away (in a child after a fork: they are its parent's)."""
        self.__nonces.clear()

    def _spend(self, nonce: bytes, point: bytes, data: bytes) -> bytes:
        """The signature `R || S` of `data` for the pair (`nonce`, `point` = R):
        `S = nonce + SHA-512(R || A || data)·a mod L`. The scalar `a` is read from the slot,
        never held in a local a traceback could show; `k·a`, which would give `a` away, is
        wiped once added."""
        # One buffer: the hash (64 bytes), k = the hash mod L, k·a, then S. libsodium's
        # SHA-512 into it, not hashlib's: cold (as a submit runs it) OpenSSL's object costs
        # about 8 µs more (docs/speed.md, seventh part).
        work = _ffi.new("unsigned char[160]")
        hashed = point + self.__public + data
        _lib.crypto_hash_sha512(work, hashed, len(hashed))
        _lib.crypto_core_ed25519_scalar_reduce(work + 64, work)
        _lib.crypto_core_ed25519_scalar_mul(work + 96, work + 64, self.__scalar)
        _lib.crypto_core_ed25519_scalar_add(work + 128, nonce, work + 96)
        _lib.sodium_memzero(work + 96, 32)
        return point + bytes(_ffi.buffer(work + 128, 32))

    def sign(self, message: str) -> str:
        """base64 of the 64-byte ED25519 signature of `message` (UTF-8): with a nonce from
        the pool when it has one, else libsodium's deterministic signature."""
        data = message.encode("utf-8")
        try:
            generation, pid, nonce, point = self.__nonces.pop()
        except IndexError:
            generation = None
        if generation is _GENERATION[0] and pid == os.getpid():
            signed = self._spend(nonce, point, data)
        else:
            if generation is not None:  # made in another process: none may be used here
                self.__nonces.clear()
            # crypto_sign returns the signature followed by the message; nacl.signing's
            # wrapper adds nothing but objects around the same call.
            signed = nacl.bindings.crypto_sign(data, self.__secret_key)[:64]
        return binascii.b2a_base64(signed, newline=False).decode("ascii")

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


def _steps_agree(
    seed: bytes = bytes(range(32)),
    message: bytes = b"instruction=orderExecute&clientId=1&timestamp=1&window=5000",
) -> bool:
    """Whether `Credentials._spend` for the key of `seed`, given the nonce RFC 8032 derives
    for `message`, gives libsodium's own signature (at import: a fixed, public test key)."""
    if not _HAS_PRIMITIVES:
        return False
    try:
        probe = Credentials(base64.b64encode(seed).decode("ascii"))
        _, secret_key = nacl.bindings.crypto_sign_seed_keypair(seed)
        prefix = hashlib.sha512(seed).digest()[32:]
        nonce = nacl.bindings.crypto_core_ed25519_scalar_reduce(
            hashlib.sha512(prefix + message).digest()
        )
        point = nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(nonce)
        ours = probe._spend(nonce, point, message)
    except Exception:  # a pynacl whose private module changed: sign in full
        return False
    return bool(ours == nacl.bindings.crypto_sign(message, secret_key)[:64])


_POOLED: Final = _steps_agree()
