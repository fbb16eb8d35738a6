"""`EngineMachine`: a Hypothesis state machine on a live local exchange, for testing a
program's own strategy code against the engine.

Each example starts a local exchange on 127.0.0.1 (on a manual clock, so the market moves
only when a rule moves it), an engine recorded to a temporary log, and a Backpack session on
both. They run in trio, in a thread of their own, because Hypothesis calls rules from plain
functions: a rule hands its work to that thread with `self.call(async_function, ...)` and
waits for the answer.

The base class brings the rules a venue can throw at a program (`submit`, `take`, `stop`
and `bracket` for conditional orders and attached exits on the perp, `fill` by moving the
market, `cancel`, `reconnect`, and faults on the private stream) and the engine's guarantees
as invariants:

- the engine agrees with the exchange's books once the stream has caught up: every fill
  counted once (none lost, none doubled), statuses, executed quantities, fees, balances,
  positions and funding (`settle`, after every rule);
- each order's filled quantity is the sum of its distinct fills in the log;
- each perp position is the signed sum of its orders' fills;
- per asset, what is locked is what the open orders lock, and total = available + locked;
- each attached exit names an order of ours that asked for exits, on its other side, one of
  at most two;
- replaying the log gives exactly the live state.

A program adds its own rules and invariants in a subclass:

    class QuoterMachine(EngineMachine):
        @rule()
        def requote(self) -> None:
            self.call(my_quoter.step, self.session)

        @invariant()
        def never_more_than_two_orders(self) -> None:
            assert len(self.state.open_orders()) <= 2

    TestQuoter = QuoterMachine.TestCase
    TestQuoter.settings = settings(max_examples=10, stateful_step_count=8, deadline=None)
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import trio
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from oms.core.events import OrderFilled
from oms.core.reducer import replay
from oms.core.serialization import state_hash
from oms.core.state import AnomalyKind, State
from oms.core.values import ZERO, Exit, OrderStatus, OrderType, Side
from oms.engine import Engine
from oms.log import Fsync, LogReader
from oms.testing.books import PERP, SPOT, book_differences
from oms.testing.harness import Harness, local_exchange, open_session, venue_clock
from oms.testing.waiting import wait_for
from oms_backpack.session import BackpackSession
from oms_local_exchange import LocalExchange, ManualClock

__all__ = ["EngineMachine"]

T = TypeVar("T")

# Faults the `fault` rule may inject on the private stream.
FAULTS: tuple[str, ...] = ("duplicate", "drop_fill", "hold_fill")


class _TrioThread:
    """A trio run in a thread of its own, kept open until `stop`; `call` runs an async
    function in it and returns its result (or raises its exception) in the calling thread."""

    def __init__(
        self, main: Callable[[trio.Event, trio.Event], Awaitable[None]], start_timeout: float
    ) -> None:
        self._main = main
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="oms-machine", daemon=True)
        self._thread.start()
        if not self._ready.wait(start_timeout):
            raise RuntimeError(f"the exchange and session did not start within {start_timeout} s")
        if self.error is not None:
            raise RuntimeError("the exchange and session failed to start") from self.error

    def _run(self) -> None:
        try:
            trio.run(self._host)
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()

    async def _host(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        started = trio.Event()
        async with trio.open_nursery() as nursery:
            # `main` returns once `_stop` is set, leaving its contexts the normal way; if it
            # fails before it has started, the nursery raises (into `_run`).
            nursery.start_soon(self._main, started, self._stop)
            await started.wait()
            self._ready.set()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self.error is not None:
            raise RuntimeError("the exchange and session have stopped") from self.error
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def call_sync(self, fn: Callable[..., T], *args: Any) -> T:
        if self.error is not None:
            raise RuntimeError("the exchange and session have stopped") from self.error
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def stop(self, timeout: float) -> None:
        if self._thread.is_alive() and self._stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the exchange and session did not stop within {timeout} s")


def _tick(price: Decimal) -> Decimal:
    return price.quantize(Decimal("0.01"))


class EngineMachine(RuleBasedStateMachine):
    """The engine and a Backpack session on a live local exchange, driven by rules.

    Class attributes a subclass may change: `symbols` (the markets the session trades),
    `exchange_options` (for `open_local_exchange`: `seed`, `markets`, `balances`, ...),
    `step_seconds` (how far `fill` moves the market clock per step), `settle_seconds` (how
    long the engine has to agree with the exchange after a step) and `faults` (what the
    `fault` rule may inject; empty to turn it off).

    Attributes for rules and invariants: `exchange`, `clock` (the exchange's manual clock),
    `engine`, `session`, `harness` and `state` (the engine's state now). Touch the exchange,
    the engine and the session only inside `call`/`call_sync`: they live in the machine's
    trio thread.
    """

    symbols: ClassVar[Sequence[str]] = (SPOT, PERP)
    exchange_options: ClassVar[dict[str, Any]] = {}
    step_seconds: ClassVar[float] = 1.0
    settle_seconds: ClassVar[float] = 10.0
    faults: ClassVar[Sequence[str]] = FAULTS

    exchange: LocalExchange
    clock: ManualClock
    harness: Harness

    def __init__(self) -> None:
        super().__init__()
        self._folder = Path(tempfile.mkdtemp(prefix="oms-machine-"))
        self.log_path = self._folder / "session.jsonl"
        self._loop = _TrioThread(self._open, start_timeout=30.0)

    async def _open(self, started: trio.Event, stop: trio.Event) -> None:
        options = {"step_us": round(self.step_seconds * 1_000_000), **self.exchange_options}
        async with (
            local_exchange(**options) as (exchange, clock),
            open_session(
                exchange,
                self.log_path,
                symbols=self.symbols,
                clock=venue_clock(clock),
                check=False,
                # Each line goes to the OS as it is appended, so the log can be read at
                # any step.
                fsync=Fsync.group(),
                heartbeat_interval=0.05,
            ) as harness,
        ):
            self.exchange, self.clock, self.harness = exchange, clock, harness
            started.set()
            await stop.wait()

    # --- for rules and invariants ---------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return self.harness.engine

    @property
    def session(self) -> BackpackSession:
        return self.harness.session

    @property
    def state(self) -> State:
        return self.harness.engine.state

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `await fn(*args)` in the machine's trio thread; return or raise its outcome."""
        return self._loop.call(fn, *args)

    def call_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in the machine's trio thread (for reading the exchange's books)."""
        return self._loop.call_sync(fn, *args)

    def settle(self) -> None:
        """Wait until the engine agrees with the exchange. If it has not after half of
        `settle_seconds` (a lost fill waits for the fill chaser or a reconciliation), run one
        reconciliation pass and wait again; fail with the differences after that."""
        self.call(self._settle)

    async def _settle(self) -> None:
        def differences() -> list[str]:
            self.exchange.dispatch()
            return book_differences(self.state, self.exchange)

        for attempt in range(2):
            with trio.move_on_after(self.settle_seconds / 2):
                while differences():  # noqa: ASYNC110 (the exchange's books have no event)
                    await trio.sleep(0.005)
                return
            if attempt == 0:
                await self.session.reconcile(gate=False)
        found = differences()
        if found:
            raise AssertionError(
                "the engine disagrees with the exchange after the stream caught up "
                "and a reconciliation:\n  " + "\n  ".join(found)
            )

    def _perp(self) -> str | None:
        """The first perpetual market among `symbols` (None: the session trades none)."""
        for symbol in self.symbols:
            market = self.state.markets.get(symbol)
            if market is not None and market.market_type.has_positions:
                return symbol
        return None

    # --- rules ----------------------------------------------------------------------------

    @rule(
        symbol=st.sampled_from(symbols),
        side=st.sampled_from(Side),
        kind=st.sampled_from([OrderType.LIMIT, OrderType.LIMIT_MAKER]),
        size=st.integers(1, 20),
        offset=st.integers(-3, 3),
    )
    def submit(self, symbol: str, side: Side, kind: OrderType, size: int, offset: int) -> None:
        """A limit order `offset` tenths of a percent from the mid (a marketable one may
        fill at once; a post-only one that would take is refused by the venue)."""
        if symbol not in self.symbols:
            return

        async def place() -> None:
            mid = self.harness.mid(symbol)
            price = _tick(mid * (1 + Decimal(offset) / 1000))
            await self.harness.submit(
                symbol, side, kind, quantity=str(Decimal(size) / 10), price=price
            )

        self.call(place)
        self.settle()

    @rule(symbol=st.sampled_from(symbols), side=st.sampled_from(Side), size=st.integers(1, 20))
    def take(self, symbol: str, side: Side, size: int) -> None:
        """A market order: fills against the exchange's book at once."""
        if symbol not in self.symbols:
            return
        quantity = str(Decimal(size) / 10)
        self.call(lambda: self.harness.submit(symbol, side, OrderType.MARKET, quantity=quantity))
        self.settle()

    @rule(
        side=st.sampled_from(Side),
        size=st.integers(1, 20),
        ticks=st.integers(-4, 4),
        limit=st.booleans(),
        close=st.booleans(),
    )
    def stop(self, side: Side, size: int, ticks: int, limit: bool, close: bool) -> None:
        """A conditional order on the perp: it waits until the mark price reaches a trigger
        `ticks` ticks from the mid (0: reached already, it fires at once), then becomes a
        market order (`limit`: a limit order a tick past the trigger). With `close` it is a
        reduce-only order for the whole position against it (`side` is ignored): it fails
        when it fires with no position."""
        symbol = self._perp()
        if symbol is None:
            return

        async def place() -> None:
            mid, tick = self.harness.mid(symbol), self.state.markets[symbol].tick_size
            trigger = mid + ticks * tick
            order_side = side
            if close:
                held = self.state.positions.get(symbol)
                order_side = Side.ASK if held is not None and held.net_quantity > 0 else Side.BID
            past = trigger + tick if order_side is Side.BID else trigger - tick
            await self.session.submit(
                symbol,
                order_side,
                OrderType.LIMIT if limit else OrderType.MARKET,
                price=past if limit else None,
                trigger_price=trigger,
                trigger_quantity="100%" if close else Decimal(size) / 10,
                reduce_only=close,
            )

        self.call(place)
        self.settle()

    @rule(
        side=st.sampled_from(Side),
        size=st.integers(1, 20),
        offset=st.sampled_from((None, -2, 0, 2)),
        loss=st.integers(1, 5),
        profit=st.integers(1, 5),
        profit_limit=st.booleans(),
    )
    def bracket(
        self,
        *,
        side: Side,
        size: int,
        offset: int | None,
        loss: int,
        profit: int,
        profit_limit: bool,
    ) -> None:
        """An order on the perp with a stop loss `loss` ticks and a take profit `profit`
        ticks from the mid, against and for the position it opens: a market order (`offset`
        None) or a limit order `offset` tenths of a percent from the mid. The venue places
        the exits once the order has executed; when one fires, it cancels the other."""
        symbol = self._perp()
        if symbol is None:
            return

        async def place() -> None:
            mid, tick = self.harness.mid(symbol), self.state.markets[symbol].tick_size
            sign = 1 if side is Side.BID else -1
            stop_at = mid - sign * loss * tick
            take_at = mid + sign * profit * tick
            await self.session.submit(
                symbol,
                side,
                OrderType.MARKET if offset is None else OrderType.LIMIT,
                quantity=Decimal(size) / 10,
                price=None if offset is None else _tick(mid * (1 + Decimal(offset) / 1000)),
                stop_loss=Exit(stop_at),
                take_profit=Exit(take_at, limit_price=take_at - sign * tick)
                if profit_limit
                else Exit(take_at),
            )

        self.call(place)
        self.settle()

    @rule(steps=st.integers(1, 5))
    def fill(self, steps: int) -> None:
        """Move the market `steps` steps: resting orders it crosses fill and waiting triggers
        it reaches fire."""
        self.clock.advance(steps * self.step_seconds)

        async def advance() -> None:
            self.exchange.venue.advance()
            self.exchange.dispatch()

        self.call(advance)
        self.settle()

    @precondition(lambda self: bool(self.state.open_orders()))
    @rule(pick=st.integers(0, 1000))
    def cancel(self, pick: int) -> None:
        """Cancel one of the open orders."""
        open_orders = sorted(self.state.open_orders(), key=lambda o: o.created_seq)
        if not open_orders:
            return
        order = open_orders[pick % len(open_orders)]
        if order.client_id is not None:
            self.call(lambda: self.session.cancel(order.symbol, client_id=order.client_id))
        else:
            self.call(lambda: self.session.cancel(order.symbol, venue_id=order.venue_id))
        self.settle()

    @rule()
    def reconnect(self) -> None:
        """The venue drops the WebSocket; the session reconnects and reconciles."""

        async def drop() -> None:
            exchange, stream = self.exchange, self.session.stream
            assert stream is not None
            healthy = stream.healthy_connections
            if exchange.faults.drop_websockets(abrupt=True):
                await wait_for(lambda: exchange.connections == 0, "the venue to drop the stream")
            # Until the new connection has answered a ping: only then does the stream's
            # reconnection backoff start again from its shortest wait.
            await wait_for(
                lambda: stream.healthy_connections > healthy and self.session.reconciled.is_set(),
                "the session to reconnect and reconcile",
            )

        self.call(drop)
        self.settle()

    @rule(kind=st.sampled_from(FAULTS))
    def fault(self, kind: str) -> None:
        """Arm a fault on the next private message: deliver it twice, lose it, or hold it
        back until two more have passed."""
        if kind not in self.faults:
            return
        faults = self.exchange.faults
        if kind == "duplicate":
            self.call_sync(faults.duplicate_private)
        elif kind == "drop_fill":
            self.call_sync(lambda: faults.drop_private(event="orderFill"))
        else:
            self.call_sync(lambda: faults.hold_private(event="orderFill", release_after=2))

    # --- the engine's guarantees ----------------------------------------------------------

    @invariant()
    def positions_are_the_signed_sum_of_fills(self) -> None:
        state = self.state
        for symbol, held in state.positions.items():
            fills = sum(
                (
                    o.filled_quantity if o.side is Side.BID else -o.filled_quantity
                    for o in state.orders.values()
                    if o.symbol == symbol
                ),
                ZERO,
            )
            assert held.net_quantity == fills, (
                f"position {symbol}: net {held.net_quantity}, its orders' fills sum to {fills}"
            )

    @invariant()
    def locked_is_what_open_orders_lock(self) -> None:
        state = self.state
        locks: dict[str, Decimal] = {}
        for order in state.orders.values():
            if order.lock_asset is not None and order.status not in _FINAL:
                locks[order.lock_asset] = locks.get(order.lock_asset, ZERO) + order.locked
        for asset, balance in state.balances.items():
            assert balance.locked == locks.get(asset, ZERO), (
                f"{asset}: locked {balance.locked}, open orders lock {locks.get(asset, ZERO)}"
            )
            assert balance.total == balance.available + balance.locked

    @invariant()
    def every_fill_counted_once(self) -> None:
        """Each order's filled quantity is the sum of its distinct fills in the log: a fill
        delivered twice (or found again by a reconciliation) is counted once."""

        def read() -> tuple[State, list[OrderFilled]]:
            return self.state, [
                e for e in LogReader(self.log_path).events() if isinstance(e, OrderFilled)
            ]

        state, fills = self.call_sync(read)
        overfilled = {a.order_key for a in state.anomalies if a.kind is AnomalyKind.OVERFILL}
        sums: dict[str, Decimal] = {}
        seen: set[tuple[str, int]] = set()
        for fill in fills:
            order = state.order(client_id=fill.client_id, venue_id=fill.venue_id)
            if order is None or (order.key, fill.trade_id) in seen:
                continue
            seen.add((order.key, fill.trade_id))
            sums[order.key] = sums.get(order.key, ZERO) + fill.quantity
        for order in state.orders.values():
            if order.key in overfilled:
                continue
            assert order.filled_quantity == sums.get(order.key, ZERO), (
                f"order {order.key}: filled {order.filled_quantity}, "
                f"its distinct fills sum to {sums.get(order.key, ZERO)}"
            )
            assert len(order.trade_ids) == len({t for k, t in seen if k == order.key})

    @invariant()
    def exits_belong_to_their_parent(self) -> None:
        """Each attached exit the engine tracks names an order of ours that asked for exits,
        closes on the other side, and is one of at most two."""
        state = self.state
        exits: dict[str, int] = {}
        for order in state.orders.values():
            if order.related_order_id is None:
                continue
            parent = state.order(venue_id=order.related_order_id)
            assert parent is not None, f"exit {order.key}: parent {order.related_order_id} unknown"
            assert (
                parent.stop_loss_trigger_price is not None
                or parent.take_profit_trigger_price is not None
            ), f"exit {order.key}: its parent {parent.key} asked for none"
            assert order.side is not parent.side, f"exit {order.key} adds to {parent.key}"
            exits[parent.key] = exits.get(parent.key, 0) + 1
            assert exits[parent.key] <= 2, f"order {parent.key} has more than two exits"

    @invariant()
    def replay_equals_live(self) -> None:
        def hashes() -> tuple[str, str]:
            # In the trio thread, so that no event is recorded between the two readings.
            live = state_hash(self.state)
            return live, state_hash(replay(LogReader(self.log_path).events()))

        live, replayed = self.call_sync(hashes)
        assert replayed == live, "replaying the log differs from the live state"

    def teardown(self) -> None:
        try:
            self._loop.stop(timeout=30.0)
            if self._loop.error is not None:
                raise RuntimeError("the exchange or the session failed") from self._loop.error
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)


_FINAL = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REJECTED}
)
