"""The local exchange's I/O shell: a REST server (hypercorn's trio worker serving a small ASGI
app) and a WebSocket server (trio-websocket), both on 127.0.0.1, around one `Venue`.

    async with open_local_exchange(seed=1) as exchange:
        keys = exchange.credentials()  # the funded account's API key and secret
        ...  # point any Backpack client at exchange.rest_url and exchange.ws_url

Everything runs in the caller's trio run, in one nursery. Venue operations are synchronous,
so each request's state change and the stream messages it produces happen atomically; the
messages are queued on every subscribed connection before the request is answered (written
concurrently, unless `faults.ws_before_rest` makes the answer wait for them). A background
task advances the venue every `tick_interval` seconds, so the market moves and resting orders
fill while nobody asks.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from functools import partial
from typing import Any, Final
from urllib.parse import parse_qsl

import attrs
import hypercorn.config
import hypercorn.trio
import trio
import trio_websocket
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from oms_local_exchange import api, auth, frames, inputs
from oms_local_exchange.auth import KeyPair
from oms_local_exchange.faults import Faults
from oms_local_exchange.model import (
    DEFAULT_MARKETS,
    KLINE_INTERVALS,
    ApiError,
    MarketSpec,
    Outbound,
    PayloadError,
)
from oms_local_exchange.venue import Venue

__all__ = ["LocalExchange", "open_local_exchange"]

log = logging.getLogger(__name__)

JSON = Any
MAX_BODY: Final = 1 << 20
_EXECUTE_PATHS: Final = frozenset({"/api/v1/order", "/api/v1/orders"})
# `account.rfqUpdate` is served but stays silent: the local exchange has no RFQ markets.
_RFQ_STREAM: Final = "account.rfqUpdate"
_PRIVATE: Final = (frames.ORDER_STREAM, frames.POSITION_STREAM, _RFQ_STREAM)
_PUBLIC_KINDS: Final = (
    "depth", "bookTicker", "trade", "markPrice", "ticker", "openInterest", "kline",
)  # fmt: skip
# Public streams without a symbol: `liquidation`, the trades of the orders the venue places to
# close a position (`Venue.liquidate`), in every market.
_PUBLIC_GLOBAL: Final = (frames.LIQUIDATION_STREAM,)
_DEPTH_INTERVALS: Final = ("200ms", "600ms", "1000ms")
# Error codes of our own for WebSocket refusals other than the venue's 4006 "Invalid stream".
WS_INVALID_REQUEST: Final = 4001
WS_UNAUTHORIZED: Final = 4003
WS_INVALID_STREAM: Final = 4006
_WAIT_FOR_STREAM: Final = 5.0
_MAX_ID: Final = 2**63 - 1
_MAX_ID_TEXT: Final = 128


def _wall_clock_us() -> int:
    return time.time_ns() // 1000


@attrs.define(eq=False)
class _Frame:
    text: str
    label: str = ""
    sent: trio.Event | None = None
    not_before: float = 0.0


class _Connection:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.api_key: str | None = None
        self.subscriptions: set[str] = set()
        self.send, self.receive = trio.open_memory_channel[_Frame](math.inf)
        self.scope = trio.CancelScope()
        self.abrupt = False
        self.close_code = 1001
        self.close_reason = "Going away"

    def enqueue(self, frame: _Frame) -> None:
        try:
            self.send.send_nowait(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            if frame.sent is not None:
                frame.sent.set()


class LocalExchange:
    """A running local exchange. Made by `open_local_exchange`.

    `rest_url` and `ws_url` point at the servers; `api_key`/`api_secret` are the funded
    account's credentials (the secret is a base64 ED25519 seed, never logged or shown in a
    repr; `credentials()` gives both as a `KeyPair`); `venue` is the core with the
    exchange's own books, `faults` the injection knobs, `requests` every HTTP request served
    as (method, path, status), and `wire_log` the latest writes in the order they went out:
    `("http", "POST /api/v1/order 200")` when a response starts, `("ws", "<stream> <event>")`
    when a stream frame has been written.
    """

    def __init__(
        self,
        *,
        venue: Venue,
        faults: Faults,
        clock: Callable[[], int],
        keys: KeyPair,
        tick_interval: float,
        ping_interval: float,
    ) -> None:
        self.venue = venue
        self.faults = faults
        self._clock = clock
        self.api_key: str = keys.api_key
        self.__keys = keys
        self.rest_url = ""
        self.ws_url = ""
        self.requests: deque[tuple[str, str, int]] = deque(maxlen=10_000)
        self.wire_log: deque[tuple[str, str]] = deque(maxlen=10_000)
        self._tick_interval = tick_interval
        self._ping_interval = ping_interval
        self._connections: set[_Connection] = set()

    @property
    def api_secret(self) -> str:
        return self.__keys.api_secret

    def __repr__(self) -> str:
        return (
            f"LocalExchange(rest_url={self.rest_url!r}, ws_url={self.ws_url!r}, "
            f"api_key={self.api_key!r}, api_secret=<hidden>)"
        )

    def credentials(self) -> KeyPair:
        """The funded account's API key and secret: what a Backpack client is configured with
        (the client builds its own credentials from them)."""
        return self.__keys

    def add_account(self, balances: Mapping[str, Decimal] | None = None) -> KeyPair:
        """Open another funded account with a new key pair; returns the pair."""
        keys = KeyPair.generate()
        self.venue.add_account(keys.api_key, balances)
        return keys

    def now_us(self) -> int:
        """The server clock: the injected clock plus `faults.clock_skew_ms`."""
        return self._clock() + self.faults.clock_skew_ms * 1000

    @property
    def connections(self) -> int:
        """WebSocket connections open now."""
        return len(self._connections)

    def subscribers(self, stream: str | None = None) -> int:
        """Connections subscribed to `stream` (to anything, if None)."""
        return sum(
            1
            for conn in self._connections
            if (stream in conn.subscriptions if stream is not None else conn.subscriptions)
        )

    # --- stream delivery ----------------------------------------------------------------------

    def _targets(self, message: Outbound) -> list[tuple[_Connection, str]]:
        targets = []
        for conn in self._connections:
            if message.private and conn.api_key != message.account:
                continue
            for name in conn.subscriptions:
                if _stream_matches(name, message):
                    targets.append((conn, name))
        return targets

    def _deliver(self, message: Outbound) -> list[trio.Event]:
        """Queue one message on every connection subscribed to it."""
        events = []
        delay = self.faults.private_delay if message.private else 0.0
        not_before = trio.current_time() + delay if delay > 0 else 0.0
        for conn, name in self._targets(message):
            text = frames.frame(name, message.data)
            sent = trio.Event()
            label = f"{name} {message.data.get('e', '')}".rstrip()
            conn.enqueue(_Frame(text, label, sent, not_before))
            events.append(sent)
        return events

    def _deliver_released(self, message: Outbound) -> None:
        self._deliver(message)

    def dispatch(self) -> dict[str, list[trio.Event]]:
        """Send what the venue produced; returns the private frames' write events per key."""
        written: dict[str, list[trio.Event]] = {}
        for message in self.venue.drain():
            if not message.private:
                self._deliver(message)
                continue
            if not self._targets(message):
                continue
            assert message.account is not None
            for out in self.faults.route_private(message):
                events = self._deliver(out)
                if out.account is not None:
                    written.setdefault(out.account, []).extend(events)
        return written

    def _drop_all(self, abrupt: bool) -> int:
        connections = list(self._connections)
        for conn in connections:
            conn.abrupt = abrupt
            conn.scope.cancel()
        return len(connections)

    # --- HTTP ---------------------------------------------------------------------------------

    async def asgi(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """The ASGI application hypercorn serves."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        method = scope["method"].upper()
        path = scope["path"]
        if size > MAX_BODY:
            reply = api.Reply(413, text="Payload Too Large")
        else:
            try:
                reply = await self._serve(
                    method, path, scope["query_string"], headers, b"".join(chunks)
                )
            except Exception:
                log.exception("local exchange: %s %s failed", method, path)
                reply = api.Reply(500, {"code": "SERVER_ERROR", "message": "Internal server error"})
        self.requests.append((method, path, reply.status))
        self.wire_log.append(("http", f"{method} {path} {reply.status}"))
        payload, content_type = reply.encode()
        response_headers = [(b"content-length", str(len(payload)).encode("ascii"))]
        if content_type is not None:
            response_headers.append((b"content-type", content_type.encode("ascii")))
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": response_headers,
                "trailers": False,
            }
        )
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    async def _serve(
        self, method: str, path: str, query_string: bytes, headers: Mapping[str, str], raw: bytes
    ) -> api.Reply:
        route = api.ROUTES.get((method, path))
        fault = self.faults.take_http(method, path)
        if fault is not None and not fault.after_execute:
            return api.Reply(fault.status, Faults.error_body(fault))
        if route is None:
            return api.not_found()
        now_ms = self.now_us() // 1000
        try:
            query, arrays = api.parse_query(
                parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
            )
            body = api.parse_body(raw) if method != "GET" else None
            api_key = None
            if route.instruction is not None:
                params = api.signed_params(route, query, body, arrays)
                api_key = auth.check_request(
                    headers, route.instruction, params, now_ms, self.venue.accounts.__contains__
                )
        except ApiError as exc:
            return api.Reply(exc.status, exc.body())
        except PayloadError as exc:
            return api.Reply(400, text=exc.text)
        reply = api.handle(self.venue, route, api.Call(api_key, query, body, now_ms, arrays))
        written = self.dispatch()
        executed = method == "POST" and path in _EXECUTE_PATHS and api_key is not None
        if executed and self.faults.ws_before_rest and api_key is not None:
            with trio.move_on_after(_WAIT_FOR_STREAM):
                for event in written.get(api_key, []):
                    await event.wait()
        if fault is not None:
            return api.Reply(fault.status, Faults.error_body(fault))
        return reply

    # --- WebSocket ----------------------------------------------------------------------------

    async def ws_handler(self, request: trio_websocket.WebSocketRequest) -> None:
        """One WebSocket connection. Whatever happens in it ends at most this connection: an
        exception escaping here would stop the whole server (trio-websocket runs every
        handler in the server's nursery)."""
        try:
            await self._connection(request)
        except* trio_websocket.ConnectionClosed:
            pass  # the client went away mid-handshake or mid-close
        except* Exception:
            log.exception("local exchange: a WebSocket connection failed")

    async def _connection(self, request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        conn = _Connection(ws)
        self._connections.add(conn)
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, conn, nursery.cancel_scope)
                    nursery.start_soon(self._pinger, conn, nursery.cancel_scope)
                    await self._reader(conn)
                    nursery.cancel_scope.cancel()
        finally:
            self._connections.discard(conn)
            conn.send.close()
            while True:
                try:
                    frame = conn.receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                if frame.sent is not None:
                    frame.sent.set()
            with trio.move_on_after(1, shield=True):
                if conn.abrupt:
                    await ws._stream.aclose()  # no public handle on the transport
                else:
                    await ws.aclose(code=conn.close_code, reason=conn.close_reason)

    async def _writer(self, conn: _Connection, scope: trio.CancelScope) -> None:
        async for frame in conn.receive:
            if frame.not_before > trio.current_time():
                await trio.sleep_until(frame.not_before)
            try:
                await conn.ws.send_message(frame.text)
                if frame.label:
                    self.wire_log.append(("ws", frame.label))
            except trio_websocket.ConnectionClosed:
                scope.cancel()
                return
            finally:
                if frame.sent is not None:
                    frame.sent.set()

    async def _pinger(self, conn: _Connection, scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep(self._ping_interval)
            with trio.move_on_after(2 * self._ping_interval) as waited:
                try:
                    await conn.ws.ping()
                except trio_websocket.ConnectionClosed:
                    scope.cancel()
                    return
            if waited.cancelled_caught:
                scope.cancel()
                return

    async def _reader(self, conn: _Connection) -> None:
        while True:
            try:
                message = await conn.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            try:
                self._on_frame(conn, message)
            except Exception:
                # A bug met by this client's frame: logged, and only this connection ends
                # (with 1011, so that tests can tell it from a normal close).
                log.exception("local exchange: a WebSocket frame failed")
                conn.close_code, conn.close_reason = 1011, "Internal error"
                return

    def _error(self, conn: _Connection, request_id: JSON, code: int, message: str) -> None:
        text = json.dumps({"id": request_id, "error": {"code": code, "message": message}})
        conn.enqueue(_Frame(text))

    def _on_frame(self, conn: _Connection, message: str | bytes) -> None:
        try:
            frame = inputs.load_json(message)
        except inputs.BadInput:
            frame = None
        if not isinstance(frame, dict):
            self._error(conn, None, WS_INVALID_REQUEST, "Invalid request")
            return
        request_id = _echo_id(frame.get("id"))
        method = frame.get("method")
        params = frame.get("params")
        if (
            not isinstance(method, str)
            or method.upper() not in ("SUBSCRIBE", "UNSUBSCRIBE")
            or not isinstance(params, list)
            or not all(isinstance(p, str) for p in params)
        ):
            self._error(conn, request_id, WS_INVALID_REQUEST, "Invalid request")
            return
        streams: list[str] = params
        if method.upper() == "UNSUBSCRIBE":
            conn.subscriptions.difference_update(streams)
            return
        if not streams:
            self._error(conn, request_id, WS_INVALID_STREAM, "Invalid stream")
            return
        # Each stream stands alone: one the venue does not serve is refused with its own
        # error frame, and the others of the frame are subscribed all the same.
        valid = [s for s in streams if self._valid_stream(s)]
        for _ in range(len(streams) - len(valid)):
            self._error(conn, request_id, WS_INVALID_STREAM, "Invalid stream")
        private = [s for s in valid if s.startswith("account.")]
        if private:
            refusal = None
            try:
                api_key = auth.check_subscription(
                    frame.get("signature"), self.now_us() // 1000, self.venue.accounts.__contains__
                )
            except ApiError as exc:
                refusal = exc.message
            else:
                if conn.api_key is not None and conn.api_key != api_key:
                    refusal = "Connection signed in as another key"
                else:
                    conn.api_key = api_key
            if refusal is not None:
                # The private streams need the signature; the public ones of the frame do not.
                self._error(conn, request_id, WS_UNAUTHORIZED, refusal)
                valid = [s for s in valid if not s.startswith("account.")]
                private = []
        streams = valid
        if not streams:
            return
        # Catch up first, so the snapshot below is the state after every message sent so far.
        self.venue.advance()
        self.dispatch()
        conn.subscriptions.update(streams)
        for name in private:
            if not name.startswith(frames.POSITION_STREAM):
                continue
            assert conn.api_key is not None
            symbol = name[len(frames.POSITION_STREAM) + 1 :] or None
            for data in self.venue.position_snapshot(conn.api_key, symbol):
                conn.enqueue(_Frame(frames.frame(name, data), f"{name} snapshot"))
        self.dispatch()

    def _valid_stream(self, name: str) -> bool:
        for base in _PRIVATE:
            if name == base:
                return True
            if name.startswith(base + "."):
                return name[len(base) + 1 :] in self.venue.markets
        if name in _PUBLIC_GLOBAL:
            return True
        kind, _, rest = name.partition(".")
        if kind not in _PUBLIC_KINDS:
            return False
        if kind == "depth":
            interval, _, symbol = rest.partition(".")
            if interval in _DEPTH_INTERVALS:
                rest = symbol
        elif kind == "kline":
            interval, _, rest = rest.partition(".")
            if interval not in KLINE_INTERVALS:
                return False
        return rest in self.venue.markets

    # --- the clock ------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(self._tick_interval)
            self.venue.advance()
            self.dispatch()


def _echo_id(value: JSON) -> int | str | None:
    """The request id an error frame repeats: an integer or a short string as the client sent
    it, else null (an id of any other shape is not repeated back)."""
    if isinstance(value, int) and not isinstance(value, bool) and -_MAX_ID <= value <= _MAX_ID:
        return value
    if isinstance(value, str) and len(value) <= _MAX_ID_TEXT:
        return value
    return None


def _stream_matches(name: str, message: Outbound) -> bool:
    if name == message.stream:
        return True
    if message.private:
        return name == f"{message.stream}.{message.data.get('s')}"
    if message.stream.startswith("depth."):
        kind, _, rest = name.partition(".")
        interval, _, symbol = rest.partition(".")
        return (
            kind == "depth" and interval in _DEPTH_INTERVALS and f"depth.{symbol}" == message.stream
        )
    return False


@asynccontextmanager
async def open_local_exchange(
    *,
    seed: int = 0,
    clock: Callable[[], int] | None = None,
    faults: Faults | None = None,
    host: str = "127.0.0.1",
    rest_port: int = 0,
    ws_port: int = 0,
    markets: Sequence[MarketSpec] = DEFAULT_MARKETS,
    balances: Mapping[str, Decimal] | None = None,
    api_secret: str | None = None,
    tick_interval: float = 0.1,
    step_us: int = 250_000,
    ping_interval: float = 60.0,
) -> AsyncIterator[LocalExchange]:
    """Start a local Backpack-compatible exchange; stop it when the block ends.

    `clock()` gives epoch microseconds (default: the wall clock); `seed` fixes the price
    paths and funding rates; `balances` funds the account (default: generous amounts of USDC,
    SOL and ETH); `api_secret` fixes the account's key (default: a new random key; a secret
    that is not a base64 ED25519 seed is a `ValueError`). Ports 0 let the OS choose.
    """
    knobs = faults if faults is not None else Faults()
    base_clock = clock if clock is not None else _wall_clock_us

    def venue_clock() -> int:
        return base_clock() + knobs.clock_skew_ms * 1000

    venue = Venue(clock=venue_clock, seed=seed, markets=markets, step_us=step_us)
    exchange = LocalExchange(
        venue=venue,
        faults=knobs,
        clock=base_clock,
        keys=KeyPair.generate() if api_secret is None else KeyPair.from_secret(api_secret),
        tick_interval=tick_interval,
        ping_interval=ping_interval,
    )
    venue.add_account(exchange.api_key, balances)
    config = hypercorn.config.Config()
    config.bind = [f"{host}:{rest_port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("oms_local_exchange.http")
    config.loglevel = "WARNING"
    config.graceful_timeout = 0.5
    knobs.attach(exchange._deliver_released, exchange._drop_all)
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                partial(hypercorn.trio.serve, exchange.asgi, config, mode="asgi")
            )
            exchange.rest_url = binds[0]
            server = await nursery.start(
                partial(
                    trio_websocket.serve_websocket,
                    exchange.ws_handler,
                    host,
                    ws_port,
                    ssl_context=None,
                )
            )
            exchange.ws_url = f"ws://{host}:{server.port}"
            nursery.start_soon(exchange._ticker)
            try:
                yield exchange
            finally:
                nursery.cancel_scope.cancel()
    finally:
        knobs.detach()
