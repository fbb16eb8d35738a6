"""Helpers for the end-to-end tests: the engine and our Backpack session against the local
exchange over real sockets on 127.0.0.1, and a comparison of the engine's state with the
exchange's own books.

`book_differences` is the judge: every order, fill, balance, position and funding payment the
exchange holds for the account must be in the engine's state exactly as the exchange has it.
`open_harness` starts an exchange and a recorded session on it; `Harness.finish` waits until
the streams are quiet, reconciles once more, compares, checks the anomaly kinds the scenario
allows, and checks that replaying the session's log gives the live state.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import attrs
import trio

from oms.core.reducer import replay
from oms.core.serialization import state_hash
from oms.core.state import Anomaly, AnomalyKind, Order, State
from oms.core.values import ZERO, OrderStatus, OrderType, Side
from oms.engine import Engine
from oms.log import Fsync, LogReader
from oms.replay import replay_file
from oms_backpack.codec import venue_error_of
from oms_backpack.session import BackpackSession, open_backpack_session
from oms_backpack.signing import Credentials
from oms_local_exchange import (
    DEFAULT_MARKETS,
    Faults,
    LocalExchange,
    MarketSpec,
    open_local_exchange,
)
from oms_local_exchange import Order as VenueOrder
from tests.helpers import wait_for

__all__ = [
    "EXPLAINED",
    "FAULTS",
    "NO_POLLING",
    "ORDER_KINDS",
    "REFUSED",
    "Action",
    "act",
    "PERP",
    "SPOT",
    "Harness",
    "book_differences",
    "open_harness",
    "open_session",
    "refused_subscriptions",
]

SPOT = "SOL_USDC"
PERP = "SOL_USDC_PERP"
# Reconciliation is repeated by the session only at this interval: far beyond any test, so
# that the only snapshots are those of the passes after a (re)connect. (Tests that want the
# periodic pass ask for a shorter interval.)
NO_POLLING = 3600.0

_VENUE_STATUS: Mapping[str, OrderStatus] = {
    "New": OrderStatus.NEW,
    "PartiallyFilled": OrderStatus.PARTIALLY_FILLED,
    "Filled": OrderStatus.FILLED,
    "Cancelled": OrderStatus.CANCELLED,
    "Expired": OrderStatus.EXPIRED,
}


def _fees(items: Sequence[tuple[str, Decimal]]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for asset, amount in items:
        out[asset] += amount
    return {asset: amount for asset, amount in out.items() if amount}


def _engine_order(state: State, venue: VenueOrder) -> Order | None:
    if venue.client_id is not None:
        found = state.order(client_id=venue.client_id)
        if found is not None:
            return found
    return state.order(venue_id=venue.id)


def book_differences(
    state: State, exchange: LocalExchange, api_key: str | None = None
) -> list[str]:
    """Every way `state` disagrees with the exchange's books for one account (the funded
    account by default), as readable lines; empty when they agree.

    Compared: each exchange order (found by client id, else venue id) for venue id, status,
    executed quantity and quote, its fills' trade ids (each counted once, no others) and fees;
    engine orders the exchange never saw (only a refused submit may be one) and orders left
    PendingNew or InDoubt; available and locked balances of every asset; net quantity and
    entry price of every perp position; funding received per symbol.
    """
    account = exchange.venue.accounts[api_key if api_key is not None else exchange.api_key]
    out: list[str] = []
    fills_by_order: dict[str, list[tuple[int, Decimal, Decimal, str, Decimal]]] = defaultdict(list)
    for fill in account.fills:
        fills_by_order[fill.order_id].append(
            (fill.trade_id, fill.quantity, fill.price, fill.fee_asset, fill.fee)
        )
    matched: set[str] = set()
    for venue in sorted(account.orders.values(), key=lambda o: o.seq):
        name = f"order {venue.id} (client id {venue.client_id}, {venue.symbol})"
        ours = _engine_order(state, venue)
        if ours is None:
            out.append(f"{name}: missing from the engine")
            continue
        matched.add(ours.key)
        if ours.venue_id != venue.id:
            out.append(f"{name}: engine has venue id {ours.venue_id}")
        if venue.quantity is not None and ours.quantity != venue.quantity:
            out.append(f"{name}: exchange quantity {venue.quantity}, engine {ours.quantity}")
        expected = _VENUE_STATUS.get(venue.status)
        if expected is None or ours.status is not expected:
            out.append(f"{name}: exchange status {venue.status}, engine {ours.status.value}")
        fills = fills_by_order.get(venue.id, [])
        trade_ids = [f[0] for f in fills]
        if sorted(ours.trade_ids) != sorted(trade_ids):
            missing = sorted(set(trade_ids) - ours.trade_ids)
            extra = sorted(ours.trade_ids - set(trade_ids))
            out.append(f"{name}: trades missing from the engine {missing}, extra {extra}")
        fill_sum = sum((f[1] for f in fills), ZERO)
        if fill_sum != venue.executed_quantity:
            out.append(
                f"{name}: exchange fills sum to {fill_sum}, executed {venue.executed_quantity}"
            )
        if ours.filled_quantity != venue.executed_quantity:
            out.append(
                f"{name}: exchange executed {venue.executed_quantity}, "
                f"engine filled {ours.filled_quantity}"
            )
        if ours.filled_quote != venue.executed_quote_quantity:
            out.append(
                f"{name}: exchange executed quote {venue.executed_quote_quantity}, "
                f"engine {ours.filled_quote}"
            )
        venue_fees = _fees([(f[3], f[4]) for f in fills])
        if _fees(list(ours.fees)) != venue_fees:
            out.append(f"{name}: exchange fees {venue_fees}, engine {dict(ours.fees)}")
    for order in sorted(state.orders.values(), key=lambda o: o.key):
        if order.status in (OrderStatus.PENDING_NEW, OrderStatus.IN_DOUBT):
            out.append(f"engine order {order.key} left {order.status.value}")
        elif order.key not in matched and order.status is not OrderStatus.REJECTED:
            out.append(
                f"engine order {order.key} ({order.status.value}) is unknown to the exchange"
            )
    for asset in sorted(set(account.balances) | set(state.balances)):
        theirs = account.balances.get(asset)
        ours_balance = state.balances.get(asset)
        venue_pair = (theirs.available, theirs.locked) if theirs else (ZERO, ZERO)
        engine_pair = (
            (ours_balance.available, ours_balance.locked) if ours_balance else (ZERO, ZERO)
        )
        if venue_pair != engine_pair:
            out.append(
                f"balance {asset}: exchange available/locked {venue_pair[0]}/{venue_pair[1]}, "
                f"engine {engine_pair[0]}/{engine_pair[1]}"
            )
    funding: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for payment in account.funding:
        funding[payment.symbol] += payment.amount
    for symbol in sorted(set(account.positions) | set(state.positions) | set(funding)):
        venue_position = account.positions.get(symbol)
        ours_position = state.positions.get(symbol)
        venue_figures = (
            (venue_position.net_quantity, venue_position.entry_price)
            if venue_position is not None
            else (ZERO, ZERO)
        )
        engine_figures = (
            (ours_position.net_quantity, ours_position.entry_price)
            if ours_position is not None
            else (ZERO, ZERO)
        )
        if venue_figures != engine_figures:
            out.append(
                f"position {symbol}: exchange net/entry {venue_figures[0]}/{venue_figures[1]}, "
                f"engine {engine_figures[0]}/{engine_figures[1]}"
            )
        engine_funding = ours_position.funding if ours_position is not None else ZERO
        if engine_funding != funding.get(symbol, ZERO):
            out.append(
                f"funding {symbol}: exchange paid {funding.get(symbol, ZERO)}, "
                f"engine {engine_funding}"
            )
    return out


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
        assert order.client_id is not None
        venue_id = account.client_ids[order.client_id]
        return account.orders[venue_id]

    def now(self, order: Order) -> Order:
        """The engine's current view of an order returned earlier."""
        found = self.state.order(client_id=order.client_id, venue_id=order.venue_id)
        assert found is not None
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
            # HTTP requests are left out: a poller makes them while nothing happens.
            frames = sum(1 for kind, _ in self.exchange.wire_log if kind == "ws")
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
        differences = book_differences(self.state, self.exchange)
        assert differences == [], "\n".join(differences)
        kinds = set(self.state.anomaly_counts)
        unexplained = kinds - set(allowed)
        assert not unexplained, [
            f"{a.kind.value}: {a.detail}" for a in self.state.anomalies if a.kind in unexplained
        ]
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
) -> AsyncIterator[Harness]:
    """A session on a running exchange, recorded to `path` (created, or continued if it
    exists). On leaving: the engine is closed and, with `check`, the scenario must have called
    `finish`, and the whole log must replay to exactly the live state."""
    engine = Engine.open(path, fsync=Fsync.never())
    try:
        async with open_backpack_session(
            engine,
            Credentials(exchange.credentials().api_secret),
            venue="backpack_perpetual",
            symbols=list(symbols),
            rest_url=exchange.rest_url,
            ws_url=exchange.ws_url,
            poll_interval=poll_interval,
        ) as session:
            harness = Harness(exchange, engine, session, path)
            yield harness
    finally:
        engine.close()
    if not check:
        return
    assert harness.finished, "a scenario ends with `await harness.finish(...)`"
    live = state_hash(engine.state)
    assert state_hash(replay(LogReader(path).events())) == live, "replay differs from live"
    # The fold `oms.replay` and `Engine.open` use (`ReplayFold`) too.
    assert state_hash(replay_file(str(path))[0]) == live, "replay_file differs from live"


# --- the vocabulary of random sessions (the e2e property test and the campaign) ------------

# ("order", symbol, kind, side, size) | ("cancel_last",) | ("cancel_all", symbol) |
# ("fault", name)
Action = tuple[str, ...]
ORDER_KINDS = ("market", "market_quote", "limit_near", "limit_far", "post_only_near", "reduce")
FAULTS = ("drop_ws", "drop_fill", "duplicate", "hold_fill", "429", "503", "ws_first", "skew")
# What each fault can legitimately leave among the anomalies, and why:
EXPLAINED: dict[str, set[AnomalyKind]] = {
    # every second copy of a fill is a duplicate
    "duplicate": {AnomalyKind.DUPLICATE_FILL},
    # a later fill overtakes the held one (gap); the held one may come after a reconciliation
    # already counted it (duplicate); position reports run ahead of the held fill (drift)
    "hold_fill": {AnomalyKind.FILL_GAP, AnomalyKind.DUPLICATE_FILL, AnomalyKind.POSITION_DRIFT},
    # the next fill of the order shows the gap; position reports include the lost fill
    "drop_fill": {AnomalyKind.FILL_GAP, AnomalyKind.POSITION_DRIFT},
    # the reconnect's reconciliation runs while resting orders fill as the market moves: its
    # snapshots can run ahead of the stream (balances, positions, executed quantities)
    "drop_ws": {AnomalyKind.FILL_GAP, AnomalyKind.BALANCE_DRIFT, AnomalyKind.POSITION_DRIFT},
    # a jump between sending a subscription and the venue reading it: the venue refuses it
    # (its error frame is recorded) and the stream subscribes again after a resync
    "skew": {AnomalyKind.NOT_UNDERSTOOD},
}
# The code of the error frame with which the venue refuses a subscription whose signature
# timestamp is outside its window (a clock jump).
REFUSED = 4003


def refused_subscriptions(path: Path, anomalies: Iterable[Anomaly]) -> list[bool]:
    """For each `not_understood` anomaly of a session logged at `path`: whether the event that
    caused it is the venue refusing a subscription (an error frame with code `REFUSED`)."""
    wanted = [a.seq for a in anomalies if a.kind is AnomalyKind.NOT_UNDERSTOOD]
    seqs = set(wanted)
    logged = {seq: event for seq, event in LogReader(path) if seq in seqs}
    errors = [venue_error_of(logged[seq]) for seq in wanted]
    return [error is not None and error.code == REFUSED for error in errors]


def _tick(price: Decimal) -> Decimal:
    return price.quantize(Decimal("0.01"))


async def act(h: Harness, action: Action) -> None:
    if action[0] == "order":
        _, symbol, kind, side_name, size = action
        side = Side(side_name)
        mid = h.mid(symbol)
        if kind == "market":
            await h.submit(symbol, side, OrderType.MARKET, quantity=size)
        elif kind == "market_quote":
            await h.submit(symbol, side, OrderType.MARKET, quote_quantity=str(40 * Decimal(size)))
        elif kind == "limit_near":
            await h.submit(symbol, side, OrderType.LIMIT, quantity=size, price=mid)
        elif kind == "limit_far":
            far = _tick(mid * (Decimal("0.7") if side is Side.BID else Decimal("1.3")))
            await h.submit(symbol, side, OrderType.LIMIT, quantity=size, price=far)
        elif kind == "post_only_near":
            await h.submit(symbol, side, OrderType.LIMIT_MAKER, quantity=size, price=mid)
        else:  # reduce-only against the position we hold (the venue caps it, or refuses it flat)
            held = h.state.positions.get(PERP)
            against = Side.ASK if held is not None and held.net_quantity > 0 else Side.BID
            await h.submit(PERP, against, OrderType.MARKET, quantity=size, reduce_only=True)
    elif action[0] == "cancel_last":
        live = [o for o in h.state.open_orders() if o.client_id is not None]
        if live:
            newest = max(live, key=lambda o: o.created_seq)
            await h.session.cancel(newest.symbol, client_id=newest.client_id)
    elif action[0] == "cancel_all":
        await h.session.cancel_all(action[1])
    else:
        fault = action[1]
        faults = h.faults
        if fault == "drop_ws":
            if faults.drop_websockets(abrupt=True):
                await wait_for(lambda: h.exchange.connections == 0, "the server's side closed")
        elif fault == "drop_fill":
            faults.drop_private(event="orderFill")
        elif fault == "duplicate":
            faults.duplicate_private(count=3)
        elif fault == "hold_fill":
            faults.hold_private(event="orderFill", release_after=2)
        elif fault == "429":
            faults.fail_http(429, method="POST", path="/api/v1/order")
        elif fault == "503":
            faults.fail_http(503, method="POST", path="/api/v1/order", after_execute=True)
        elif fault == "ws_first":
            faults.ws_before_rest = not faults.ws_before_rest
        else:
            faults.clock_skew_ms += 20_000  # the server's clock jumps 4 signature windows
