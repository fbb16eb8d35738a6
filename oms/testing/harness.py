"""The local exchange, the engine and a Backpack session, wired together for tests.

- `local_exchange`: the local exchange on 127.0.0.1 on a `ManualClock`, so the synthetic
  market moves only when the test moves the clock; `venue_clock` is our clients' clock on it.
- `open_harness` / `open_session`: an engine recorded to a file and a session on an exchange,
  as a `Harness` with the small vocabulary scenarios need (`submit`, `until`, `mid`, `quiet`,
  `finish`). On leaving, the whole log must replay to exactly the live state.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import trio

from oms.core.reducer import replay
from oms.core.serialization import state_hash
from oms.core.state import AnomalyKind, Order, State
from oms.core.values import OrderStatus, OrderType, Side
from oms.engine import Engine
from oms.log import Fsync, LogReader
from oms.replay import replay_file
from oms.testing.books import NO_POLLING, PERP, SPOT, assert_books_agree
from oms_backpack.clock import VenueClock
from oms_backpack.session import BackpackSession, open_backpack_session
from oms_backpack.signing import Credentials
from oms_local_exchange import (
    DEFAULT_MARKETS,
    Faults,
    LocalExchange,
    ManualClock,
    MarketSpec,
    open_local_exchange,
)
from oms_local_exchange import Order as VenueOrder

__all__ = [
    "DAY_US",
    "Harness",
    "local_exchange",
    "open_harness",
    "open_session",
    "venue_clock",
]

DAY_US = 24 * 3_600_000_000


def venue_clock(clock: ManualClock, *, behind_ms: int = 0) -> VenueClock:
    """Our clients' clock reading the exchange's manual clock (in whole milliseconds, as
    signatures carry them), optionally `behind_ms` behind it."""
    return VenueClock(local_ns=lambda: (clock.now_us // 1000 - behind_ms) * 1_000_000)


@asynccontextmanager
async def local_exchange(**options: Any) -> AsyncIterator[tuple[LocalExchange, ManualClock]]:
    """The local exchange on 127.0.0.1 on a `ManualClock` started at the wall-clock time, so
    nothing moves unless a test moves the clock; the mid steps once a day unless `step_us`
    says otherwise. `options` go to `open_local_exchange`."""
    clock = ManualClock(time.time_ns() // 1000)
    options.setdefault("step_us", DAY_US)
    async with open_local_exchange(clock=clock, **options) as exchange:
        yield exchange, clock


@attrs.define(eq=False)
class Harness:
    """One exchange, one recorded engine and the session between them."""

    exchange: LocalExchange
    engine: Engine
    session: BackpackSession
    log_path: Path
    finished: bool = False

    @property
    def faults(self) -> Faults:
        return self.exchange.faults

    @property
    def state(self) -> State:
        return self.engine.state

    def venue_order(self, order: Order) -> VenueOrder:
        """The exchange's record of one of our orders (by client id)."""
        account = self.exchange.venue.accounts[self.exchange.api_key]
        if order.client_id is None:
            raise ValueError(f"order {order.key} has no client id")
        venue_id = account.client_ids[order.client_id]
        return account.orders[venue_id]

    def now(self, order: Order) -> Order:
        """The engine's current view of an order returned earlier."""
        found = self.state.order(client_id=order.client_id, venue_id=order.venue_id)
        if found is None:
            raise LookupError(f"the engine no longer has order {order.key}")
        return found

    async def until(self, order: Order, done: Callable[[Order], bool], what: str) -> Order:
        """Wait (on the engine's events, no polling) until `done` holds for the engine's view
        of `order`; fail naming `what` after 10 s."""

        def holds(state: State) -> bool:
            found = state.order(client_id=order.client_id, venue_id=order.venue_id)
            return found is not None and done(found)

        with trio.move_on_after(10):
            await self.engine.wait_until(holds)
            return self.now(order)
        raise AssertionError(f"timed out waiting for {what}: the engine has {self.now(order)}")

    def mid(self, symbol: str) -> Decimal:
        """The exchange's mid price of `symbol` now (after catching up with its clock)."""
        self.exchange.venue.advance()
        self.exchange.dispatch()
        return self.exchange.venue.mark_price(symbol)

    async def submit(
        self,
        symbol: str,
        side: Side,
        order_type: OrderType,
        *,
        quantity: str | None = None,
        price: str | Decimal | None = None,
        quote_quantity: str | None = None,
        reduce_only: bool = False,
    ) -> Order:
        return await self.session.submit(
            symbol,
            side,
            order_type,
            quantity=None if quantity is None else Decimal(quantity),
            price=None if price is None else Decimal(price),
            quote_quantity=None if quote_quantity is None else Decimal(quote_quantity),
            reduce_only=reduce_only,
        )

    async def quiet(self, quiet_for: float = 0.25) -> None:
        """Wait until neither the engine's log nor the exchange's stream frames have moved for
        `quiet_for` seconds, and no engine order is still waiting for its submit's answer."""

        def mark() -> tuple[int, int]:
            # HTTP requests are left out: a poller makes them while nothing happens; so are
            # mark prices, which the moving market publishes all the time.
            frames = sum(
                1
                for kind, label in self.exchange.wire_log
                if kind == "ws" and not label.startswith("markPrice.")
            )
            return (self.state.last_seq, frames)

        with trio.move_on_after(15):
            last = mark()
            since = trio.current_time()
            while True:
                await trio.sleep(0.02)
                now = mark()
                pending = any(
                    o.status is OrderStatus.PENDING_NEW for o in self.state.orders.values()
                )
                if now != last or pending:
                    last, since = now, trio.current_time()
                elif trio.current_time() - since >= quiet_for:
                    return
        raise AssertionError("the session never went quiet")

    async def finish(self, allowed: Collection[AnomalyKind] = (), *, cancel: bool = True) -> None:
        """Quiescence, a last reconciliation, then: the books agree, and every anomaly is of a
        kind in `allowed` (the ones the scenario explains).

        With `cancel`, resting orders are cancelled first, so the moving market cannot fill
        anything between the reconciliation and the comparison."""
        if cancel:
            for symbol in sorted({o.symbol for o in self.state.open_orders()}):
                await self.session.cancel_all(symbol)
        await self.quiet()
        await self.session.reconcile()
        await self.quiet(0.1)
        assert_books_agree(self.state, self.exchange)
        kinds = set(self.state.anomaly_counts)
        unexplained = kinds - set(allowed)
        if unexplained:
            lines = [
                f"{a.kind.value}: {a.detail}" for a in self.state.anomalies if a.kind in unexplained
            ]
            raise AssertionError(
                "anomalies the scenario does not explain:\n  " + "\n  ".join(lines)
            )
        self.finished = True


@asynccontextmanager
async def open_harness(
    path: Path,
    *,
    faults: Faults | None = None,
    markets: Sequence[MarketSpec] = DEFAULT_MARKETS,
    seed: int = 7,
    step_us: int = 250_000,
    tick_interval: float = 0.05,
    symbols: Sequence[str] = (SPOT, PERP),
    poll_interval: float = NO_POLLING,
) -> AsyncIterator[Harness]:
    """An exchange on 127.0.0.1 (wall clock; the synthetic market steps every `step_us`) and a
    session on it recorded to `path` (see `open_session`)."""
    async with (
        open_local_exchange(
            seed=seed,
            faults=faults,
            markets=markets,
            step_us=step_us,
            tick_interval=tick_interval,
        ) as exchange,
        open_session(exchange, path, symbols=symbols, poll_interval=poll_interval) as harness,
    ):
        yield harness


@asynccontextmanager
async def open_session(
    exchange: LocalExchange,
    path: Path,
    *,
    symbols: Sequence[str] = (SPOT, PERP),
    poll_interval: float = NO_POLLING,
    check: bool = True,
    clock: VenueClock | None = None,
    fsync: Fsync | None = None,
    **session_options: Any,
) -> AsyncIterator[Harness]:
    """A session on a running exchange, recorded to `path` (created, or continued if it
    exists). `clock` is the session's clock: on an exchange with a `ManualClock`, pass
    `venue_clock(manual)` so that requests are signed at the exchange's time. On leaving: the
    engine is closed and, with `check`, the scenario must have called `finish`, and the whole
    log must replay to exactly the live state. `session_options` go to
    `open_backpack_session`."""
    engine = Engine.open(path, fsync=Fsync.never() if fsync is None else fsync)
    try:
        async with open_backpack_session(
            engine,
            Credentials(exchange.credentials().api_secret),
            venue="backpack_perpetual",
            symbols=list(symbols),
            rest_url=exchange.rest_url,
            ws_url=exchange.ws_url,
            poll_interval=poll_interval,
            clock=clock,
            **session_options,
        ) as session:
            harness = Harness(exchange, engine, session, path)
            yield harness
    finally:
        engine.close()
    if not check:
        return
    if not harness.finished:
        raise AssertionError("a scenario ends with `await harness.finish(...)`")
    live = state_hash(engine.state)
    if state_hash(replay(LogReader(path).events())) != live:
        raise AssertionError(f"replaying {path} does not give the live state")
    # The fold `python -m oms.replay` and `Engine.open` use (`ReplayFold`) must agree too.
    if state_hash(replay_file(str(path))[0]) != live:
        raise AssertionError(f"oms.replay of {path} does not give the live state")
