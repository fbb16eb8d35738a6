"""Backpack REST client: the thin trio shell around the pure request specs and codec.

`BackpackRest.call(spec)` sends one `RequestSpec` (from `oms_backpack.endpoints`) and
returns the parsed JSON body (numbers as `Decimal`), or None for an empty body. It signs,
rate-limits, retries and maps errors. The query helpers (`markets`, `capital`, `positions`,
`open_orders`, `order_history`, `fill_history`, `funding_history`) also pass the body through
the pure codec and return the events it yields (`MessageNotUnderstood` for an item it cannot
read). The client only returns events; it never records them and keeps no order or account
state: recording is the caller's (the session's, the reconciler's).

What a caller can rely on:

- **Signed exactly as sent.** A JSON body is the spec's own values serialised compactly; the
  signature covers those same values (`Credentials.headers`), so nothing is re-formatted in
  between. `X-Timestamp` is the venue's time as the session's `VenueClock` knows it (the
  local wall clock plus the offset `sync_clock()` measures).
- **Never a guess about an order.** A POST (order execute) is retried only when the venue
  certainly did not act on it: HTTP 429, a clock rejection, or a connection that could not
  be opened. A timeout, a connection lost after sending, a 5xx, or a "client ID already
  exists" rejection on a retry raise `OutcomeUnknown`: the order may or may not be live, and
  only a venue report (stream or reconciliation) can say which.
- **Idempotent calls retry.** GET, DELETE (cancels) and PATCH (account settings are absolute
  values) are retried on 429, 5xx and transport errors with exponential backoff and jitter.
  If a DELETE or PATCH may have taken effect and the retries run out, that is `OutcomeUnknown`
  too.
- **Rate limit.** At most `max_requests_per_minute` attempts start in any rolling 60 s of
  `trio.current_time()`; further attempts wait.
- **No secret leaks.** Exception messages and log records name the method, path, status and
  the venue's code and message, never request headers or key material.
- **Order executes take a lane of their own.** `POST /api/v1/order(s)` goes over one
  connection kept for it (`_Lane`: h11 over a trio stream, the whole request in one send),
  with the very bytes httpx would send and the same verdicts on failure; everything else, a
  second execute while one is in flight, a caller's transport and a proxy named by the
  environment stay on httpx. `keep_warm` (a task the session runs) keeps that connection
  and httpx's open through pauses, so that an order or a cancel after a quiet spell pays no
  handshake.

Callers own timeouts (`trio.fail_after` around the call). The transport timeout below only
guards against a dead socket; if a caller's cancel scope interrupts an execute, its outcome
is unknown to the caller in the same way.
"""

from __future__ import annotations

import http.cookiejar
import logging
import math
import os
import random
import ssl
import time
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Final, Self

import attrs
import h11
import httpx
import msgspec
import trio

from oms.core.errors import ConfigurationError, ExternalError
from oms.core.events import Event, MarketInfo, MessageNotUnderstood
from oms.core.values import Source
from oms_backpack import codec, endpoints
from oms_backpack.clock import VenueClock
from oms_backpack.endpoints import Param, RequestSpec
from oms_backpack.signing import MAX_WINDOW_MS, Credentials

__all__ = [
    "BackpackRest",
    "BadResponse",
    "ClockError",
    "MissingCredentials",
    "NotFound",
    "OutcomeUnknown",
    "RateLimited",
    "RestError",
    "VenueError",
    "VenueUnavailable",
    "venue_error",
]

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"
TRANSPORT_TIMEOUT: Final = httpx.Timeout(10.0)
RATE_PERIOD_S: Final = 60.0
_MAX_MESSAGE: Final = 500
# Failures raised before any byte of the request left this process: the venue never saw it.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_EXECUTE_PATHS: Final = frozenset({"/api/v1/order", "/api/v1/orders"})
# httpx's defaults, kept by the order lane: how much one read asks for, and how long an idle
# connection may be reused (a server may close one it has kept idle; reusing it then would
# leave an order in doubt).
_READ_SIZE: Final = 64 * 1024
KEEPALIVE_EXPIRY: Final = 5.0
# How long a connection may sit idle before `BackpackRest.keep_warm` uses it: below
# `KEEPALIVE_EXPIRY`, so that it is never too old for the next request.
WARM_IDLE_S: Final = 4.0
# The request that keeps a connection in use (`keep_warm`): public, unsigned, "pong".
_PING_PATH: Final = "/api/v1/ping"
# `keep_nonces` refills the credentials' pool of signing nonces (`signing` module doc) to
# `NONCE_POOL` whenever a request leaves fewer than `NONCE_LOW`: a burst of up to
# `NONCE_POOL` signed requests, and a steady `NONCE_LOW` between refills, sign without the
# 20 µs scalar multiplication.
NONCE_POOL: Final = 256
NONCE_LOW: Final = 128


# --- errors -------------------------------------------------------------------------------------


class RestError(ExternalError):
    """Base of the errors this client raises about the venue or the connection: the
    outside world's, so an `oms.core.errors.ExternalError`."""


class VenueError(RestError):
    """The venue answered with an error status. `code` is the venue's error code (for a
    plain-text body, `HTTP_<status>`); `message` is its text."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.code}: {self.message}"

    @property
    def duplicate_client_id(self) -> bool:
        """The venue already has an order with the client id this request used."""
        return self.code == "INVALID_ORDER" and "already exists" in self.message.lower()


class NotFound(VenueError):
    """404 / RESOURCE_NOT_FOUND: for an order, it is not resting (finished or never placed)."""


class RateLimited(VenueError):
    """429: the venue refused the request without acting on it."""


class ClockError(VenueError):
    """The venue rejected the timestamp (expired request or clock skew)."""


class BadResponse(VenueError):
    """A success status whose body is not JSON."""


class OutcomeUnknown(RestError):
    """The request may or may not have taken effect (timeout, connection lost after sending,
    5xx on a non-idempotent call, duplicate client id on a retry). Only a later venue report
    can tell; do not resend blindly."""

    def __init__(self, method: str, path: str, reason: str) -> None:
        super().__init__(f"{method} {path}: outcome unknown: {reason}")
        self.method = method
        self.path = path
        self.reason = reason


class VenueUnavailable(RestError):
    """No answer after all retries, and the request cannot have taken effect."""


class MissingCredentials(ConfigurationError, RuntimeError):
    """A signed endpoint was called on a client built without credentials: the program's
    mistake (a `ConfigurationError`; still a `RuntimeError`, as it was before)."""


def _is_clock_error(code: str, message: str) -> bool:
    text = message.lower()
    return code == "INVALID_CLIENT_REQUEST" and (
        "request has expired" in text or "timestamp" in text
    )


def venue_error(status: int, body: str) -> VenueError:
    """The error for one non-success response. JSON `{"code", "message"}` bodies keep the
    venue's code; anything else becomes code `HTTP_<status>` with the text as the message."""
    code = f"HTTP_{status}"
    message = body.strip()
    try:
        data = codec.parse_json(body) if message else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        if isinstance(data.get("code"), str) and data["code"]:
            code = data["code"]
        for key in ("message", "msg"):
            if isinstance(data.get(key), str):
                message = data[key]
                break
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    if status == 404 or code == "RESOURCE_NOT_FOUND":
        return NotFound(status, code, message)
    if status == 429 or code == "TOO_MANY_REQUESTS":
        return RateLimited(status, code, message)
    if _is_clock_error(code, message):
        return ClockError(status, code, message)
    return VenueError(status, code, message)


# --- wire helpers -------------------------------------------------------------------------------


# Only str/int/bool render identically in the JSON body and the signing string; a float or
# Decimal would be written one way and signed another. (A tuple: `str | int` would build a
# union object on every test.)
_SENDABLE: Final = (str, int)


def _present(params: Mapping[str, Param | None]) -> dict[str, Param]:
    """The parameters that are sent; None values are left out, as the signer leaves them out."""
    result: dict[str, Param] = {}
    for key, value in params.items():
        if value is not None:
            if not isinstance(value, _SENDABLE):
                raise TypeError(f"request parameter {key!r} has type {type(value).__name__}")
            result[key] = value
    return result


_encode_json = msgspec.json.Encoder().encode


def _json_body(body: Mapping[str, Param] | Sequence[Mapping[str, Param]]) -> bytes:
    # Compact UTF-8 JSON, byte for byte what `json.dumps(payload, separators=(",", ":"),
    # ensure_ascii=False).encode()` gives for str/int/bool values, at a tenth of the cost.
    payload = _present(body) if isinstance(body, Mapping) else [_present(i) for i in body]
    return _encode_json(payload)


def _query_params(query: Mapping[str, Param]) -> httpx.QueryParams:
    # Rendered here, not by httpx, so the URL carries the very text the signer signed.
    return httpx.QueryParams(
        [
            (key, ("true" if value else "false") if isinstance(value, bool) else str(value))
            for key, value in _present(query).items()
        ]
    )


class _Reply:
    """One answer: the status, the body (decoded as httpx decodes it), and its text (for
    error messages, computed only when asked for)."""

    __slots__ = ("_text", "_text_of", "content", "received_ms", "sent_ms", "status")

    def __init__(
        self,
        status: int,
        content: bytes,
        text_of: Callable[[], str],
        sent_ms: int,
        received_ms: int,
    ) -> None:
        self.status = status
        self.content = content
        self.sent_ms = sent_ms
        self.received_ms = received_ms
        self._text_of = text_of
        self._text: str | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self._text_of()
        return self._text


def _httpx_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> httpx.Response:
    """The body as httpx makes it: Content-Encoding undone, text decoded by the charset."""
    response = httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))
    response.read()
    return response


def _lane_reply(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, sent_ms: int, received_ms: int
) -> _Reply:
    if any(name.lower() == b"content-encoding" for name, _ in headers):
        response = _httpx_response(status, headers, body)
        return _Reply(status, response.content, lambda: response.text, sent_ms, received_ms)
    return _Reply(
        status,
        body,
        lambda: _httpx_response(status, headers, body).text,
        sent_ms,
        received_ms,
    )


class _SlidingWindow:
    """At most `limit` acquisitions in any `period` seconds of trio time; FIFO under a lock."""

    def __init__(self, limit: int, period: float) -> None:
        self._limit = limit
        self._period = period
        self._starts: deque[float] = deque()
        self._lock = trio.Lock()

    def try_acquire(self) -> bool:
        """Take room in the window only if there is some now and nobody is waiting for it:
        for requests that may be skipped (`keep_warm`'s pings), which must never hold up one
        that may not."""
        if self._lock.locked():
            return False
        now = trio.current_time()
        while self._starts and self._starts[0] <= now - self._period:
            self._starts.popleft()
        if len(self._starts) >= self._limit:
            return False
        self._starts.append(now)
        return True

    async def acquire(self) -> None:
        if not self._lock.locked():
            # Nobody is queued: with room in the window, take it at once. No scheduling point
            # here (a submit's bytes should not wait behind other tasks), but a cancelled
            # caller still stops before its request starts.
            now = trio.current_time()
            while self._starts and self._starts[0] <= now - self._period:
                self._starts.popleft()
            if len(self._starts) < self._limit:
                await trio.lowlevel.checkpoint_if_cancelled()
                self._starts.append(now)
                return
        async with self._lock:
            while True:
                now = trio.current_time()
                while self._starts and self._starts[0] <= now - self._period:
                    self._starts.popleft()
                if len(self._starts) < self._limit:
                    self._starts.append(now)
                    return
                await trio.sleep(self._starts[0] + self._period - now)


class _Head:
    """The fixed start of one kind of request on the lane: the request line, Host and httpx's
    default headers, checked by h11 once and laid out as h11 lays them out (Host first).

    Per request, `encode` appends the caller's headers (the signature's), Content-Length and
    the body. h11 serialising the whole request costs more than the rest of the HTTP layer
    (it validates every header with regular expressions, each time), so the lane writes these
    few bytes itself and tells its h11 connection the same request (`shadow`: the fixed
    headers and the body's Content-Length, which are all that decides keep-alive and framing).
    h11 then reads the answer knowing what was sent. Values are checked against h11's rules
    before they are written; one that fails a quick check is judged by h11 itself.
    """

    def __init__(self, method: bytes, target: bytes, fixed: list[tuple[bytes, bytes]]) -> None:
        h11.Request(method=method, target=target, headers=[*fixed, (b"Content-Length", b"0")])
        self.method = method
        self.target = target
        self.fixed = [
            *[item for item in fixed if item[0].lower() == b"host"],
            *[item for item in fixed if item[0].lower() != b"host"],
        ]
        self.start = b"%s %s HTTP/1.1\r\n" % (method, target) + b"".join(
            b"%s: %s\r\n" % item for item in self.fixed
        )
        self._shadows: dict[int, h11.Request] = {}
        self._plain_names: set[str] = set()  # caller's header names h11 has accepted

    def encode(self, headers: Mapping[str, str], body: bytes) -> bytes:
        """The request's bytes, as h11 would write `shadow`'s request with `headers` added."""
        parts = [self.start]
        for name, value in headers.items():
            if name not in self._plain_names or not _plain_value(value):
                self._check(name, value, len(body))
            parts.append(b"%s: %s\r\n" % (name.encode("ascii"), value.encode("ascii")))
        parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
        parts.append(body)
        return b"".join(parts)

    def shadow(self, length: int) -> h11.Request:
        event = self._shadows.get(length)
        if event is None:
            event = h11.Request(
                method=self.method,
                target=self.target,
                headers=[*self.fixed, (b"Content-Length", b"%d" % length)],
            )
            if len(self._shadows) < 256:  # bodies of an order differ by a few bytes at most
                self._shadows[length] = event
        return event

    def _check(self, name: str, value: str, length: int) -> None:
        if name.lower() in _FRAMING:
            raise httpx.LocalProtocolError(f"the lane sets {name} itself")
        if not (name.isascii() and value.isascii()):
            raise httpx.LocalProtocolError(f"header {name!r} is not ASCII")
        try:  # h11's own rules, and its message, as httpx would have raised them
            h11.Request(
                method=self.method,
                target=self.target,
                headers=[*self.fixed, (name.encode("ascii"), value.encode("ascii"))],
            )
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from exc
        self._plain_names.add(name)


# Headers that change what h11 expects on the connection: never taken from the caller.
_FRAMING: Final = frozenset({"host", "content-length", "transfer-encoding", "connection", "expect"})


def _plain_value(value: str) -> bool:
    # Visibly within h11's rules for a field value (printable ASCII, nothing around it): such
    # values skip its regular expressions; any other goes to h11 to be judged.
    return value.isascii() and value.isprintable() and value == value.strip() and value != ""


# The most a response's head may take, as httpcore allows (h11's own default is 16 KiB).
_MAX_HEADER_BYTES: Final = 100 * 1024


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Refuses every cookie: the client keeps none."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return False


def _tls_buffered(stream: trio.abc.Stream) -> bool:
    """Whether a TLS stream holds bytes the answer did not use (records already received and
    not yet read: an unasked-for answer would otherwise be taken for the next request's). The
    attributes are trio's own; if they are not there, the connection is not reused."""
    if not isinstance(stream, trio.SSLStream):
        return False
    try:
        return bool(stream._ssl_object.pending() or stream._incoming.pending)
    except AttributeError:
        return True


class _Lane:
    """One HTTP/1.1 connection kept for order executes, below httpx: h11 over a trio stream.

    httpx spends about half of a submit's time before the request reaches the socket, and its
    connection writes the headers and the body in two sends, with a scheduling point between.
    The lane writes the whole request, the very bytes httpx would send (`_Head`), in one send,
    and reads the answer with h11.

    Failures are raised as the httpx exceptions httpx raises for them, so the caller's verdict
    does not depend on the path: failing to connect (`ConnectError`, `ConnectTimeout`) means
    nothing was sent; anything after that (`WriteTimeout`, `ReadError`, `ReadTimeout`,
    `RemoteProtocolError`) means the request may have arrived. As httpx's connection pool does,
    it does not reuse an idle connection older than `KEEPALIVE_EXPIRY` or one the server has
    closed, and after a failed write it still reads, since the server may have answered.

    One request at a time: `busy` is true while one is in flight, and the caller sends another
    meanwhile through httpx. A request that fails or is cancelled closes the connection.
    """

    def __init__(self, url: httpx.URL, timeout: httpx.Timeout) -> None:
        self._host = url.raw_host.decode("ascii")
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if url.scheme == "https":
            # httpx's context (certifi, SSL_CERT_FILE/SSL_CERT_DIR) with httpcore's ALPN.
            self._ssl = httpx.create_ssl_context()
            self._ssl.set_alpn_protocols(["http/1.1"])
        self._connect_timeout = _seconds(timeout.connect)
        self._read_timeout = _seconds(timeout.read)
        self._write_timeout = _seconds(timeout.write)
        self._stream: trio.abc.Stream | None = None
        self._socket: trio.socket.SocketType | None = None
        # The socket's descriptor on a plain TCP lane (written to directly: `_send_now`);
        # -1 over TLS and while unconnected.
        self._fd = -1
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEADER_BYTES)
        self._expires = 0.0
        self.busy = False
        # When (trio's clock) the last request on the lane ended, answered or not.
        self.last_used = -math.inf

    async def request(
        self,
        head: _Head,
        headers: Mapping[str, str],
        body: bytes,
        sent: Callable[[], None] | None = None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send one request (`head`, then `headers`, Content-Length and `body`); return
        (status, raw response headers, raw body). `sent` is called once the request is
        written (or its write failed), before the first scheduling point after it."""
        if self.busy:
            raise RuntimeError("the order lane carries one request at a time")
        self.busy = True
        try:
            return await self._exchange(head, headers, body, sent)
        except BaseException:
            self._drop()  # its state is unknown: never reused
            raise
        finally:
            self.busy = False
            self.last_used = trio.current_time()

    async def aclose(self) -> None:
        stream, self._stream, self._socket, self._fd = self._stream, None, None, -1
        if stream is not None:
            await trio.aclose_forcefully(stream)

    def _drop(self) -> None:
        socket, self._stream, self._socket, self._fd = self._socket, None, None, -1
        if socket is not None:
            socket.close()

    async def _connection(self) -> tuple[trio.abc.Stream, h11.Connection]:
        conn = self._conn
        if self._socket is not None and (
            time.monotonic() > self._expires
            or conn.our_state is not h11.IDLE
            or conn.their_state is not h11.IDLE
            or self._socket.is_readable()
        ):
            self._drop()  # idle too long, closed (or written to) by the server, or mid-cycle
        if self._stream is None:
            await self._connect()
        assert self._stream is not None
        return self._stream, self._conn

    def _send_now(self, data: bytes) -> int:
        """Write what a plain TCP lane's socket takes at once: one non-blocking system call
        (`write` on its descriptor), with no scheduling point; returns the bytes written, 0 if
        it would block or failed. A request on an idle keep-alive connection nearly always fits
        its empty send buffer whole, and then needs no cancel scope for the write timeout and
        none of trio's send path (together about 10 µs of the submit's span); whatever is
        left goes through `send_all` under the timeout as before. A failed write is left to the
        reading that follows, as a failed `send_all` is: the server may have answered."""
        try:
            return os.write(self._fd, data)
        except OSError:  # EAGAIN included; trio's own send raises nothing else either
            return 0

    async def _connect(self) -> None:
        try:
            with trio.fail_after(self._connect_timeout):
                tcp = await trio.open_tcp_stream(self._host, self._port)
        except trio.TooSlowError as exc:
            raise httpx.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        stream: trio.abc.Stream = tcp
        if self._ssl is not None:
            tls = trio.SSLStream(tcp, self._ssl, server_hostname=self._host, https_compatible=True)
            try:
                with trio.fail_after(self._connect_timeout):
                    await tls.do_handshake()
            except BaseException as exc:
                tcp.socket.close()
                if isinstance(exc, trio.TooSlowError):
                    raise httpx.ConnectTimeout(str(exc)) from exc
                if isinstance(exc, trio.BrokenResourceError):
                    raise httpx.ConnectError(str(exc)) from exc
                raise
            stream = tls
        self._stream, self._socket = stream, tcp.socket
        self._fd = tcp.socket.fileno() if self._ssl is None and os.name == "posix" else -1
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEADER_BYTES)

    async def _exchange(
        self,
        head: _Head,
        headers: Mapping[str, str],
        body: bytes,
        sent: Callable[[], None] | None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        data = head.encode(headers, body)  # before connecting: a refused header sends nothing
        stream, conn = await self._connection()
        written = self._send_now(data) if self._fd >= 0 else 0
        if written < len(data):
            try:
                with trio.fail_after(self._write_timeout):
                    await stream.send_all(memoryview(data)[written:] if written else data)
            except trio.TooSlowError as exc:
                raise httpx.WriteTimeout(str(exc)) from exc
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the server may have answered before closing: read what it sent
        if sent is not None:
            sent()
        # h11 learns what was sent once it is on its way (its own copy of the bytes is not
        # needed); all it must know before it reads the answer.
        conn.send(head.shadow(len(body)))
        conn.send(h11.Data(data=body))
        conn.send(h11.EndOfMessage())
        status = 0
        response_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if event is h11.NEED_DATA:
                try:
                    with trio.fail_after(self._read_timeout):
                        received = await stream.receive_some(_READ_SIZE)
                except trio.TooSlowError as exc:
                    raise httpx.ReadTimeout(str(exc)) from exc
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise httpx.ReadError(str(exc)) from exc
                if not received and conn.their_state is h11.SEND_RESPONSE:
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response."
                    )
                conn.receive_data(bytes(received))
            elif isinstance(event, h11.Response):
                status = event.status_code
                response_headers = list(event.headers.raw_items())
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif not isinstance(event, h11.InformationalResponse):  # 1xx: wait for the answer
                raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__} from server")
        finished = conn.our_state is h11.DONE and conn.their_state is h11.DONE
        if finished and not conn.trailing_data[0] and not _tls_buffered(stream):
            conn.start_next_cycle()
            self._expires = time.monotonic() + KEEPALIVE_EXPIRY
        else:
            # "Connection: close", a body framed by closing, or bytes after the answer that
            # nothing asked for: the next request gets a new connection.
            self._drop()
        return status, response_headers, b"".join(chunks)


async def _pool_ping(client: httpx.AsyncClient) -> int:
    """A ping through httpx's pool (`keep_warm`); its status."""
    response = await client.get(_PING_PATH)
    return response.status_code


async def _lane_ping(lane: _Lane, head: _Head) -> int:
    """A ping on the order lane (`keep_warm`); its status."""
    status, _headers, _body = await lane.request(head, {}, b"")
    return status


def _seconds(value: float | None) -> float:
    return float("inf") if value is None else value


def _proxied() -> bool:
    """The environment names a proxy, which httpx would use: the lane then stays off."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


# --- the client ---------------------------------------------------------------------------------


class BackpackRest:
    """One Backpack REST session. Use as `async with BackpackRest(url, creds) as rest:`."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | None = None,
        *,
        window_ms: int = 5000,
        transport: httpx.AsyncBaseTransport | None = None,
        max_requests_per_minute: int = 2000,
        max_retries: int = 4,
        backoff_initial: float = 0.25,
        backoff_max: float = 8.0,
        clock: VenueClock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < window_ms <= MAX_WINDOW_MS:
            raise ConfigurationError(f"window_ms must be in 1..{MAX_WINDOW_MS}, not {window_ms}")
        if max_requests_per_minute < 1:
            raise ConfigurationError("max_requests_per_minute must be at least 1")
        if max_retries < 0:
            raise ConfigurationError("max_retries must not be negative")
        if not 0 < backoff_initial <= backoff_max:
            raise ConfigurationError("backoff needs 0 < backoff_initial <= backoff_max")
        self._base_url = base_url
        self._credentials = credentials
        self._window_ms = window_ms
        self._transport = transport
        self._max_retries = max_retries
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self.clock = clock if clock is not None else VenueClock()
        self._rng = rng if rng is not None else random.Random()
        self._limiter = _SlidingWindow(max_requests_per_minute, RATE_PERIOD_S)
        self._client: httpx.AsyncClient | None = None
        self._lane: _Lane | None = None
        # When (trio's clock) the last request through httpx's pool ended (`keep_warm`).
        self._pool_used = -math.inf
        # Set when a signature leaves the nonce pool low (`keep_nonces`).
        self._nonces_wanted = trio.Event()
        # (method, path) -> the request target and the headers httpx puts before ours.
        self._lane_heads: dict[tuple[str, str], _Head] = {}
        # Called after every HTTP attempt with (path, seconds, error): `error` None for an
        # answer below 400, else the status or the exception's class name (the metrics).
        self.observer: Callable[[str, float, str | None], None] | None = None

    async def __aenter__(self) -> Self:
        if self._client is not None:
            raise RuntimeError("this BackpackRest is already open")
        self._client = httpx.AsyncClient(
            base_url=self._base_url,
            transport=self._transport,
            timeout=TRANSPORT_TIMEOUT,
            # httpx's default, stated: `keep_warm` pings within it.
            limits=httpx.Limits(
                max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_EXPIRY
            ),
        )
        # An API client keeps no cookies (a CDN's would only go stale): every request carries
        # the same headers whichever path sends it, the lane or httpx.
        self._client.cookies.jar.set_policy(_NoCookies())
        # Order executes take the lane when httpx would reach the venue directly: not with a
        # transport of the caller's (tests, mocks), nor through a proxy the environment names.
        base = self._client.base_url
        if self._transport is None and base.scheme in ("http", "https") and not _proxied():
            self._lane = _Lane(base, TRANSPORT_TIMEOUT)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        lane, self._lane = self._lane, None
        self._lane_heads.clear()
        if lane is not None:
            await lane.aclose()
        if client is not None:
            await client.aclose()

    def _now_us(self) -> int:
        return self.clock.local_us()

    async def keep_warm(self, idle: float | None = None) -> None:
        """Keep the connections to the venue open and fresh, until cancelled.

        Neither the order lane nor httpx's pool reuses a connection idle for
        `KEEPALIVE_EXPIRY` seconds, so the first request after a pause would open one inside
        its own latency: a TCP and a TLS handshake, a few round trips to the venue. That hits
        the first order (the lane) and the first cancel (httpx) after any quiet spell. This
        task connects the lane at once and, whenever the lane or the pool has carried nothing
        for `idle` seconds (`WARM_IDLE_S` unless given), sends `GET /api/v1/ping` on it
        (counted by the rate limiter and reported to the observer, as any request; but only
        when the rate window has room and no request waits for it). A ping that fails is
        logged and tried again `idle` seconds later; nothing is raised. Returns at once where
        the client does not reach the venue directly (a caller's transport, a proxy): there
        are no connections of ours to keep.
        """
        if idle is None:
            idle = WARM_IDLE_S
        if not 0 < idle < KEEPALIVE_EXPIRY:
            raise ConfigurationError(f"idle must be in (0, {KEEPALIVE_EXPIRY}) s, not {idle}")
        if self._lane is None:
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_lane_warm, idle)
            nursery.start_soon(self._keep_pool_warm, idle)

    async def keep_nonces(self) -> None:
        """Keep the credentials' pool of signing nonces filled, until cancelled: at once, and
        whenever a signed request leaves fewer than `NONCE_LOW`, make up to `NONCE_POOL` in a
        worker thread (about 20 µs each, libsodium's, with the GIL let go), so that signing
        takes about 2 µs instead of 20 (`oms_backpack.signing`). Without it every signature
        is made in full. Returns at once for a client without credentials, and where nonces
        are not made ahead (`signing` module doc); returns, with a warning, if making them
        fails (nothing is raised into the session)."""
        credentials = self._credentials
        if credentials is None:
            return
        while True:
            self._nonces_wanted = trio.Event()
            missing = NONCE_POOL - credentials.nonces_left
            if missing > NONCE_POOL - NONCE_LOW:
                try:
                    made = await trio.to_thread.run_sync(credentials.add_nonces, missing)
                except Exception as exc:  # the random source failing, say: never the session
                    log.warning(
                        "making signing nonces ahead failed (%s); every signature is made "
                        "in full from now on",
                        type(exc).__name__,
                    )
                    return
                if not made:
                    return  # nonces are not made ahead here: every signature is made in full
            else:
                await self._nonces_wanted.wait()

    async def _keep_lane_warm(self, idle: float) -> None:
        while True:
            lane, client = self._lane, self._client
            if lane is None or client is None:
                return
            wait = lane.last_used + idle - trio.current_time()
            if wait > 0 or lane.busy:
                await trio.sleep(wait if wait > 0 else idle)
                continue
            if not self._limiter.try_acquire():
                # The rate window is full or has a queue: a ping must not take room an order
                # or a cancel is waiting for. Tried again later (the connection may expire).
                await trio.sleep(idle)
                continue
            head = self._lane_head(client, "GET", _PING_PATH)
            await self._ping("order lane", partial(_lane_ping, lane, head))

    async def _keep_pool_warm(self, idle: float) -> None:
        while True:
            client = self._client
            if client is None:
                return
            wait = self._pool_used + idle - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
                continue
            if not self._limiter.try_acquire():  # as for the lane
                await trio.sleep(idle)
                continue
            try:
                await self._ping("httpx pool", partial(_pool_ping, client))
            finally:
                self._pool_used = trio.current_time()

    async def _ping(self, where: str, send: Callable[[], Awaitable[int]]) -> None:
        """One ping (`keep_warm`): timed for the observer; a failure is logged, not raised."""
        started = time.perf_counter()
        error: str | None
        try:
            status = await send()
        except Exception as exc:  # the connection is closed; the next ping opens another
            error = type(exc).__name__
            log.log(
                logging.DEBUG if isinstance(exc, httpx.HTTPError) else logging.WARNING,
                "%s ping failed (tried again in a moment): %s: %s",
                where,
                error,
                exc,
            )
        else:
            error = None if status < 400 else str(status)
        observer = self.observer
        if observer is not None:
            observer(_PING_PATH, time.perf_counter() - started, error)

    # --- core --------------------------------------------------------------------------------

    async def call(self, spec: RequestSpec, *, sent: Callable[[], None] | None = None) -> Any:
        """Send `spec`; return its parsed JSON (Decimal numbers), or None for an empty body.

        `sent`, if given, is called after each attempt's request is written and before the
        next scheduling point, on the order lane (for an order execute); through httpx, just
        before the request is handed to it. (A submit passes `Engine.settle`, which applies
        the `OrderSubmitted` it logged with `Engine.record_pending`.)

        Raises `VenueError` (or a subclass) when the venue refuses, `OutcomeUnknown` when the
        request may or may not have taken effect, `VenueUnavailable` when it got no answer and
        cannot have taken effect, `MissingCredentials` for a signed spec without credentials.
        """
        return (await self._call(spec, sent)).body

    async def sync_clock(self) -> int:
        """Measure the venue clock (`GET /api/v1/time`); store and return the offset in ms:
        venue time minus the midpoint of the local send and receive times."""
        reply = await self._call(endpoints.server_time())
        try:
            # Bounded before it is converted: `1E+1000000` must not become a million digits.
            server_ms = codec.venue_int(reply.body, "server time")
        except codec.BadMessage as exc:
            raise BadResponse(200, "BAD_RESPONSE", f"server time is not a number: {exc}") from None
        offset = self.clock.measure(
            sent_ms=reply.sent_ms, venue_ms=server_ms, received_ms=reply.received_ms
        )
        log.info("Backpack clock offset %+d ms", offset)
        return offset

    def _delay(self, retry: int) -> float:
        # Exponential, capped, with "equal jitter": half fixed, half random, so successive
        # delays never shrink while concurrent clients still spread out.
        ceiling = min(self._backoff_max, self._backoff_initial * 2.0**retry)
        return ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)

    async def _backoff(self, spec: RequestSpec, retry: int, why: str) -> None:
        delay = self._delay(retry)
        log.warning(
            "%s %s: %s; retry %d of %d in %.2f s",
            spec.method,
            spec.path,
            why,
            retry + 1,
            self._max_retries,
            delay,
        )
        await trio.sleep(delay)

    async def _send(self, spec: RequestSpec, sent: Callable[[], None] | None = None) -> _Reply:
        observer = self.observer
        if observer is None:
            return await self._send_once(spec, sent)
        started = time.perf_counter()
        try:
            reply = await self._send_once(spec, sent)
        except Exception as exc:
            observer(spec.path, time.perf_counter() - started, type(exc).__name__)
            raise
        error = None if reply.status < 400 else str(reply.status)
        observer(spec.path, time.perf_counter() - started, error)
        return reply

    async def _send_once(self, spec: RequestSpec, sent: Callable[[], None] | None = None) -> _Reply:
        client = self._client
        if client is None:
            raise RuntimeError("BackpackRest is not open: use `async with BackpackRest(...)`")
        await self._limiter.acquire()
        headers: dict[str, str] = {}
        if spec.instruction is not None:
            credentials = self._credentials
            assert credentials is not None  # checked by _call
            timestamp = self.clock.venue_ms()
            headers.update(
                credentials.headers(
                    spec.instruction, spec.signed_params, timestamp, self._window_ms
                )
            )
            if credentials.nonces_left < NONCE_LOW:
                self._nonces_wanted.set()
        content = None
        if spec.body is not None:
            content = _json_body(spec.body)
            headers["Content-Type"] = JSON_CONTENT_TYPE
        lane = self._lane
        if (
            lane is not None
            and not lane.busy
            and content is not None
            and spec.path in _EXECUTE_PATHS
            and spec.method.upper() == "POST"
        ):
            head = self._lane_head(client, "POST", spec.path)
            sent_ms = self.clock.local_ms()
            status, answer_headers, answer = await lane.request(head, headers, content, sent)
            received_ms = self.clock.local_ms()
            return _lane_reply(status, answer_headers, answer, sent_ms, received_ms)
        params = _query_params(spec.query) if spec.query else None
        if sent is not None:
            sent()
        sent_ms = self.clock.local_ms()
        try:
            response = await client.request(
                spec.method, spec.path, params=params, content=content, headers=headers
            )
        finally:
            self._pool_used = trio.current_time()
        received_ms = self.clock.local_ms()
        return _Reply(
            response.status_code,
            response.content,
            lambda: response.text,
            sent_ms,
            received_ms,
        )

    def _lane_head(self, client: httpx.AsyncClient, method: str, path: str) -> _Head:
        """The target and the leading headers (Host, then the client's defaults) that httpx
        builds for `method path`, asked of httpx itself once per path."""
        key = (method, path)
        head = self._lane_heads.get(key)
        if head is None:
            built = client.build_request(method, path, content=b"")
            fixed = [
                (n, v)
                for n, v in built.headers.raw
                if n.lower() not in (b"content-length", b"cookie")
            ]
            head = self._lane_heads[key] = _Head(method.encode("ascii"), built.url.raw_path, fixed)
        return head

    async def _call(self, spec: RequestSpec, sent: Callable[[], None] | None = None) -> _Result:
        if spec.instruction is not None and self._credentials is None:
            raise MissingCredentials(
                f"{spec.method} {spec.path} ({spec.instruction}) is signed, but this client "
                "has no credentials"
            )
        method = spec.method.upper()
        # POST creates something (an order); GET reads; DELETE and PATCH set an end state
        # that repeating cannot change.
        idempotent = method != "POST"
        is_execute = method == "POST" and spec.path in _EXECUTE_PATHS
        retries = 0
        sent_count = 0
        resynced = False
        may_have_acted = False  # an earlier attempt of an idempotent write may have landed

        def unknown(reason: str) -> OutcomeUnknown:
            return OutcomeUnknown(spec.method, spec.path, reason)

        while True:
            sent_count += 1
            try:
                reply = await self._send(spec, sent)
            except httpx.DecodingError as exc:
                # An answer came, but its body does not decode (a bad Content-Encoding): the
                # request reached the venue, so for a write the outcome is not known.
                if method != "GET":
                    raise unknown(f"the answer does not decode: {exc}") from exc
                raise BadResponse(0, "BAD_RESPONSE", f"the answer does not decode: {exc}") from exc
            except httpx.TransportError as exc:
                what = type(exc).__name__
                reached = not isinstance(exc, _NOT_SENT)
                if reached and not idempotent:
                    raise unknown(f"{what} after the request may have been sent") from exc
                if reached and method != "GET":
                    may_have_acted = True
                if retries < self._max_retries:
                    await self._backoff(spec, retries, what)
                    retries += 1
                    continue
                if may_have_acted:
                    raise unknown(f"{what}; an earlier attempt may have taken effect") from exc
                raise VenueUnavailable(
                    f"{spec.method} {spec.path}: no answer after {sent_count} attempts ({what})"
                ) from exc

            if 200 <= reply.status < 300:
                if not reply.content.strip():
                    return _Result(None, reply.sent_ms, reply.received_ms)
                try:
                    body = codec.parse_json(reply.content)
                except ValueError:
                    bad = BadResponse(
                        reply.status, "BAD_RESPONSE", f"body is not JSON: {reply.text[:200]!r}"
                    )
                    if method != "GET":
                        raise unknown(str(bad)) from bad
                    raise bad from None
                return _Result(body, reply.sent_ms, reply.received_ms)

            error = venue_error(reply.status, reply.text)
            if isinstance(error, ClockError) and spec.instruction is not None and not resynced:
                resynced = True
                log.warning("%s %s: %s; resyncing the clock", spec.method, spec.path, error)
                await self.sync_clock()
                continue
            if is_execute and sent_count > 1 and error.duplicate_client_id:
                # The client id is ours; on a retry, the likeliest owner is our first attempt.
                raise unknown(f"retry rejected as a duplicate ({error})") from error
            if isinstance(error, RateLimited) or (reply.status >= 500 and idempotent):
                if reply.status >= 500 and method != "GET":
                    may_have_acted = True
                if retries < self._max_retries:
                    await self._backoff(spec, retries, f"HTTP {reply.status} {error.code}")
                    retries += 1
                    continue
            if reply.status >= 500 and not idempotent:
                raise unknown(str(error)) from error
            if may_have_acted and not isinstance(error, NotFound):
                raise unknown(f"{error}; an earlier attempt may have taken effect") from error
            raise error

    # --- domain helpers ----------------------------------------------------------------------

    async def markets(
        self, *, source: Source = Source.REST
    ) -> list[MarketInfo | MessageNotUnderstood]:
        """All markets as `MarketInfo` (or `MessageNotUnderstood` for items the codec cannot
        read, keeping the raw item)."""
        body = await self.call(endpoints.markets())
        recv = self._now_us()
        result: list[MarketInfo | MessageNotUnderstood] = []
        for event in self._items(body, "markets", source, recv, codec.market):
            assert isinstance(event, MarketInfo | MessageNotUnderstood)
            result.append(event)
        return result

    async def capital(self, *, source: Source = Source.REST) -> Event:
        """Spot balances as one `BalanceObserved`."""
        body = await self.call(endpoints.capital())
        return codec.balances(body, source, self._now_us())

    async def positions(
        self, symbol: str | None = None, *, source: Source = Source.REST
    ) -> list[Event]:
        body = await self.call(endpoints.positions(symbol))
        return self._items(body, "positions", source, self._now_us(), codec.position)

    async def open_orders(
        self, symbol: str | None = None, *, source: Source = Source.REST
    ) -> list[Event]:
        """Resting orders as `OrderObserved` events."""
        body = await self.call(endpoints.open_orders(symbol))
        return self._items(body, "open orders", source, self._now_us(), codec.order_object)

    async def order_history(
        self,
        *,
        venue_id: str | None = None,
        symbol: str | None = None,
        page_size: int = 1000,
        source: Source = Source.REST,
    ) -> list[Event]:
        """Every matching order of the history (oldest first), fetched page by page."""

        def page(offset: int) -> RequestSpec:
            return endpoints.order_history(
                venue_id=venue_id,
                symbol=symbol,
                limit=page_size,
                offset=offset,
                sort_direction="Asc",
            )

        return await self._paginate(page, page_size, "order history", source, codec.order_object)

    async def recent_orders(
        self, *, symbol: str, count: int = 1000, source: Source = Source.REST
    ) -> list[Event]:
        """The newest `count` orders of `symbol` in the order history (one page, newest
        first): for what happened lately, without paging through an account's whole past."""
        body = await self.call(
            endpoints.order_history(symbol=symbol, limit=count, sort_direction="Desc")
        )
        return list(self._items(body, "order history", source, self._now_us(), codec.order_object))

    async def fill_history(
        self,
        *,
        venue_id: str | None = None,
        symbol: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        page_size: int = 1000,
        source: Source = Source.REST,
    ) -> list[Event]:
        """Every matching fill (oldest first) as `OrderFilled`, fetched page by page."""

        def page(offset: int) -> RequestSpec:
            return endpoints.fill_history(
                venue_id=venue_id,
                symbol=symbol,
                from_ms=from_ms,
                to_ms=to_ms,
                limit=page_size,
                offset=offset,
                sort_direction="Asc",
            )

        return await self._paginate(
            page, page_size, "fill history", source, codec.fill_history_item
        )

    async def funding_history(
        self,
        *,
        symbol: str | None = None,
        limit: int = 1000,
        offset: int = 0,
        source: Source = Source.REST,
    ) -> list[Event]:
        """One page of funding payments, newest first (the history has no time filter, so the
        caller chooses how far back to page)."""
        spec = endpoints.funding_history(symbol=symbol, limit=limit, offset=offset)
        body = await self.call(spec)
        return self._items(body, "funding history", source, self._now_us(), codec.funding_item)

    def _items(
        self,
        body: Any,
        what: str,
        source: Source,
        recv_time_us: int,
        convert: Callable[[Any, Source, int], Event],
    ) -> list[Event]:
        if not isinstance(body, list):
            return [
                MessageNotUnderstood(
                    source=source,
                    recv_time_us=recv_time_us,
                    raw=codec.compact(body),
                    reason=f"{what} response is not a JSON array",
                )
            ]
        return [convert(item, source, recv_time_us) for item in body]

    async def _paginate(
        self,
        page: Callable[[int], RequestSpec],
        page_size: int,
        what: str,
        source: Source,
        convert: Callable[[Any, Source, int], Event],
    ) -> list[Event]:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        events: list[Event] = []
        offset = 0
        while True:
            body = await self.call(page(offset))
            events.extend(self._items(body, what, source, self._now_us(), convert))
            if not isinstance(body, list) or len(body) < page_size:
                return events
            offset += len(body)


@attrs.frozen
class _Result:
    body: Any
    sent_ms: int
    received_ms: int
