"""A trading session on Backpack: the WebSocket, reconciliation, polling and the order API.

    async with open_backpack_session(engine, credentials, venue="backpack") as session:
        order = await session.submit("SOL_USDC", Side.BID, OrderType.LIMIT,
                                     quantity=Decimal("1"), price=Decimal("150"))

One nursery holds: the engine's writer task (draining the WebSocket's events), the
WebSocket task (subscribe, read, reconnect), and the balance/position poller. Every connect
and reconnect runs a reconciliation pass; new submits wait until it has completed.

Every command is recorded before it is sent (`OrderSubmitted`, `CancelRequested`), and its
outcome is recorded after: the venue's answer (`OrderObserved`), a refusal
(`SubmitRejected`, `CancelRejected`) or, when the outcome is unknown (timeout, 5xx),
`SubmitUnknown`: the order then stays in doubt until a venue report or reconciliation
resolves it. Nothing is guessed.

Recording is synchronous (`Engine.record` has no await), so under trio each event is
logged and applied atomically, in one order, whichever task produced it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Final, Literal

import httpx
import trio

from adapters.backpack import codec, endpoints
from adapters.backpack.reconcile import Reconciler, novel_events
from adapters.backpack.rest import (
    BackpackRest,
    OutcomeUnknown,
    RestError,
    VenueError,
    VenueUnavailable,
)
from adapters.backpack.signing import Credentials, CredentialsError
from adapters.backpack.ws import BackpackStream
from oms.engine import Engine
from oms.events import (
    CancelRejected,
    CancelRequested,
    Event,
    MarketInfo,
    OrderSubmitted,
    SubmitRejected,
    SubmitUnknown,
)
from oms.state import Order
from oms.values import OrderType, Side, Source, TimeInForce

__all__ = [
    "DEFAULT_REST_URL",
    "DEFAULT_WS_URL",
    "BackpackSession",
    "load_credentials",
    "open_backpack_session",
]

DEFAULT_REST_URL: Final = "https://api.backpack.exchange"
DEFAULT_WS_URL: Final = "wss://ws.backpack.exchange"
UINT32: Final = 2**32

Venue = Literal["backpack", "backpack_perpetual"]
_log = logging.getLogger(__name__)


def load_credentials(
    key_file: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> Credentials:
    """Keys from `BACKPACK_API_KEY` / `BACKPACK_API_SECRET`, or from a key file holding
    `{"api_key": "...", "api_secret": "..."}`. Error messages never contain the secret."""
    env = os.environ if environ is None else environ
    if key_file is not None:
        path = Path(key_file)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CredentialsError(
                f"{path}: cannot read the key file ({type(exc).__name__})"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("api_secret"), str):
            raise CredentialsError(f"{path}: expected a JSON object with api_key and api_secret")
        api_key = data.get("api_key")
        return Credentials(data["api_secret"], api_key if isinstance(api_key, str) else None)
    secret = env.get("BACKPACK_API_SECRET")
    if not secret:
        raise CredentialsError("BACKPACK_API_SECRET is not set (or give a key file)")
    return Credentials(secret, env.get("BACKPACK_API_KEY") or None)


def _refusal(exc: VenueError | VenueUnavailable) -> tuple[str, str]:
    """(code, message) to record for a request the venue certainly did not carry out."""
    if isinstance(exc, VenueError):
        return exc.code, exc.message
    return "UNAVAILABLE", str(exc)


def _now_us() -> int:
    return time.time_ns() // 1000


class BackpackSession:
    """The order API of one connected account. Made by `open_backpack_session`."""

    def __init__(
        self,
        engine: Engine,
        rest: BackpackRest,
        *,
        perpetual: bool,
        now_us: Callable[[], int] = _now_us,
    ) -> None:
        self.engine = engine
        self.rest = rest
        self.perpetual = perpetual
        self.now_us = now_us
        self.stream: BackpackStream | None = None
        self.errors = 0  # REST failures of reconciliation and polling (retried)
        self.reconciled = trio.Event()
        self._reconcile_lock = trio.Lock()
        self.reconciler = Reconciler(
            rest,
            lambda: engine.state,
            self._record_all,
            perpetual=perpetual,
            now_us=self.venue_now_us,  # the fill window is asked in the venue's time
        )

    async def _record_all(self, events: Sequence[Event]) -> None:
        for event in events:
            self.engine.record(event)

    async def resync_clock(self) -> None:
        """Measure the venue's clock again (before a reconnect signs its subscription)."""
        try:
            await self.rest.sync_clock()
        except RestError as exc:
            self.errors += 1
            _log.warning("clock resync failed (%s); signing with the last offset", exc)

    def venue_now_us(self) -> int:
        """The venue's time as this process best knows it (local clock + measured offset)."""
        return self.now_us() + self.rest.clock_offset_ms * 1000

    async def on_connect(self) -> None:
        """Called by the WebSocket task after every (re)connect: reconcile, retrying with
        backoff while REST fails (submits keep waiting meanwhile; callers own timeouts)."""
        delay = 1.0
        while True:
            try:
                await self.reconcile()
                return
            except RestError as exc:
                self.errors += 1
                _log.warning("reconciliation failed (%s); retrying in %.0f s", exc, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def reconcile(self, *, gate: bool = True) -> int:
        """One reconciliation pass (serialised). With `gate`, submits wait until it has
        succeeded (after a (re)connect); the periodic pass of `poll` leaves them alone.

        Raises the REST client's errors; a closed gate then stays closed."""
        async with self._reconcile_lock:
            if gate and self.reconciled.is_set():
                self.reconciled = trio.Event()
            added = await self.reconciler.run_pass()
            self.reconciled.set()
            return added

    def next_client_id(self) -> int:
        """A uint32 never used in this account's log: above the last one used, and above the
        current time in seconds, so a lost log after a restart does not reuse recent ids."""
        last = self.engine.state.last_client_id
        candidate = max(0 if last is None else last + 1, int(self.now_us() // 1_000_000))
        return candidate % UINT32

    async def submit(
        self,
        symbol: str,
        side: Side,
        order_type: OrderType,
        *,
        quantity: Decimal | None = None,
        price: Decimal | None = None,
        quote_quantity: Decimal | None = None,
        time_in_force: TimeInForce | None = None,
        reduce_only: bool = False,
    ) -> Order:
        """Place an order; returns it as the engine sees it after the venue's answer.

        Raises `endpoints.InvalidOrder` (nothing logged, nothing sent) for an order the market
        cannot represent. A venue refusal is recorded, not raised: check `order.status`.
        """
        await self.reconciled.wait()
        market = self.engine.state.markets.get(symbol)
        if market is None:
            raise endpoints.InvalidOrder(f"unknown market {symbol}")
        command = OrderSubmitted(
            source=Source.LOCAL,
            recv_time_us=self.now_us(),
            client_id=self.next_client_id(),
            symbol=symbol,
            side=side,
            order_type=order_type,
            quantity=quantity,
            quote_quantity=quote_quantity,
            price=price,
            time_in_force=time_in_force,
            post_only=order_type is OrderType.LIMIT_MAKER,
            reduce_only=reduce_only,
        )
        spec = endpoints.execute_order(command, market)  # raises before anything is logged
        self.engine.record(command)
        try:
            body = await self.rest.call(spec)
        except OutcomeUnknown as exc:
            self.engine.record(
                SubmitUnknown(
                    source=Source.REST,
                    recv_time_us=self.now_us(),
                    symbol=symbol,
                    client_id=command.client_id,
                    reason=str(exc),
                )
            )
        except (VenueError, VenueUnavailable) as exc:
            # A refusal, or no connection ever made: either way the order was not placed.
            code, message = _refusal(exc)
            self.engine.record(
                SubmitRejected(
                    source=Source.REST,
                    recv_time_us=self.now_us(),
                    symbol=symbol,
                    client_id=command.client_id,
                    code=code,
                    message=message,
                )
            )
        else:
            answer = codec.order_object(body, Source.REST, self.now_us())
            await self._record_all(novel_events(self.engine.state, [answer]))
        order = self.engine.state.order(client_id=command.client_id)
        assert order is not None
        return order

    async def cancel(
        self, symbol: str, *, client_id: int | None = None, venue_id: str | None = None
    ) -> Order | None:
        """Ask the venue to cancel an order; returns the order as the engine then sees it."""
        spec = endpoints.cancel_order(symbol, client_id=client_id, venue_id=venue_id)
        self.engine.record(
            CancelRequested(
                source=Source.LOCAL,
                recv_time_us=self.now_us(),
                symbol=symbol,
                client_id=client_id,
                venue_id=venue_id,
            )
        )
        try:
            body = await self.rest.call(spec)
        except (VenueError, VenueUnavailable) as exc:
            code, message = _refusal(exc)
            self.engine.record(
                CancelRejected(
                    source=Source.REST,
                    recv_time_us=self.now_us(),
                    symbol=symbol,
                    client_id=client_id,
                    venue_id=venue_id,
                    code=code,
                    message=message,
                )
            )
        except OutcomeUnknown:
            # The cancel may or may not have happened; the stream or reconciliation will say.
            pass
        else:
            if isinstance(body, dict):  # 202 Accepted has no order: the stream will tell
                answer = codec.order_object(body, Source.REST, self.now_us())
                await self._record_all(novel_events(self.engine.state, [answer]))
        return self.engine.state.order(client_id=client_id, venue_id=venue_id)

    async def cancel_all(self, symbol: str) -> None:
        """Cancel every open order on `symbol` (one request; the venue reports each cancel).

        A cancel request is recorded first for every order the engine has open there."""
        for order in self.engine.state.open_orders():
            if order.symbol == symbol:
                self.engine.record(
                    CancelRequested(
                        source=Source.LOCAL,
                        recv_time_us=self.now_us(),
                        symbol=symbol,
                        client_id=order.client_id,
                        venue_id=None if order.client_id is not None else order.venue_id,
                    )
                )
        try:
            body = await self.rest.call(endpoints.cancel_all(symbol))
        except RestError as exc:
            # The stream or the next reconciliation says what happened to each order.
            self.errors += 1
            _log.warning("cancel all on %s failed: %s", symbol, exc)
            return
        if isinstance(body, list):
            answers = [codec.order_object(item, Source.REST, self.now_us()) for item in body]
            await self._record_all(novel_events(self.engine.state, answers))

    async def cancel_open_orders(self) -> None:
        symbols = sorted({o.symbol for o in self.engine.state.open_orders()})
        for symbol in symbols:
            await self.cancel_all(symbol)

    async def poll(self, interval: float) -> None:
        """A full reconciliation pass every `interval` seconds: balances and positions have no
        stream, and a private message the venue dropped without closing the connection is
        found in the fill and order history (nothing waits for a reconnect)."""
        while True:
            await trio.sleep(interval)
            try:
                await self.reconcile(gate=False)
            except RestError as exc:
                self.errors += 1
                _log.warning("periodic reconciliation failed (%s); next in %.0f s", exc, interval)


@asynccontextmanager
async def open_backpack_session(
    engine: Engine,
    credentials: Credentials,
    *,
    venue: Venue = "backpack",
    rest_url: str = DEFAULT_REST_URL,
    ws_url: str = DEFAULT_WS_URL,
    poll_interval: float = 15.0,
    cancel_on_shutdown: bool = False,
    shutdown_timeout: float = 5.0,
    window_ms: int = 5000,
    transport: httpx.AsyncBaseTransport | None = None,
    heartbeat_interval: float = 30.0,
    symbols: Sequence[str] | None = None,
) -> AsyncIterator[BackpackSession]:
    """Connect, load markets, subscribe, reconcile; yield the session; shut down cleanly.

    `venue` picks the markets (spot for `backpack`, perpetuals for `backpack_perpetual`)
    unless `symbols` names them; positions are followed when any perpetual is traded.
    `transport` replaces httpx's network transport (tests); everything else is real.
    """
    perpetual = venue == "backpack_perpetual"
    async with BackpackRest(
        rest_url, credentials, window_ms=window_ms, transport=transport
    ) as rest:
        await rest.sync_clock()
        markets = await rest.markets()
        if symbols is None:
            wanted = [
                m
                for m in markets
                if isinstance(m, MarketInfo) and m.market_type.has_positions == perpetual
            ]
        else:
            wanted = [m for m in markets if isinstance(m, MarketInfo) and m.symbol in symbols]
            missing = sorted(set(symbols) - {m.symbol for m in wanted})
            if missing:
                raise endpoints.InvalidOrder(f"the venue has no market {', '.join(missing)}")
            perpetual = perpetual or any(m.market_type.has_positions for m in wanted)
        streams = ["account.orderUpdate", *(["account.positionUpdate"] if perpetual else [])]
        for event in novel_events(engine.state, wanted):
            engine.record(event)
        session = BackpackSession(engine, rest, perpetual=perpetual)
        stream = BackpackStream(
            ws_url,
            credentials,
            private_streams=streams,
            window_ms=window_ms,
            heartbeat_interval=heartbeat_interval,
            # Sign subscriptions with the venue's clock, as REST requests are.
            wall_clock_ms=lambda: time.time_ns() // 1_000_000 + rest.clock_offset_ms,
        )
        session.stream = stream
        send, receive = trio.open_memory_channel[Event](1024)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.run, receive)
            await nursery.start(
                lambda task_status=trio.TASK_STATUS_IGNORED: stream.run(
                    send,
                    on_connect=session.on_connect,
                    before_connect=session.resync_clock,
                    task_status=task_status,
                )
            )
            nursery.start_soon(session.poll, poll_interval)
            try:
                yield session
            finally:
                if cancel_on_shutdown:
                    with trio.move_on_after(shutdown_timeout) as cleanup:
                        cleanup.shield = True
                        await session.cancel_open_orders()
                nursery.cancel_scope.cancel()
