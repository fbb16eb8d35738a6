"""Reconciliation: differences become events; a second pass adds nothing."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from oms.core.events import (
    AssetBalance,
    BalanceObserved,
    Event,
    FundingPaid,
    MarketInfo,
    MessageNotUnderstood,
    OrderAccepted,
    OrderFilled,
    OrderObserved,
    OrderSubmitted,
    PositionObserved,
    SubmitUnknown,
)
from oms.core.state import AnomalyKind
from oms.core.values import MarketType, OrderStatus, OrderType, Side, Source, VenueStatus
from oms.engine import Engine
from oms_backpack.clock import VenueClock
from oms_backpack.reconcile import Reconciler

R = Source.RECONCILE
T0 = 1_750_000_000_000_000


class FakeVenue:
    """Canned REST answers, as events (what BackpackRest's helpers return)."""

    def __init__(self) -> None:
        self.open: list[Event] = []
        self.history: list[Event] = []
        self.fills: list[Event] = []
        self.balance: Event = BalanceObserved(source=R, recv_time_us=T0, balances=())
        self.positions_now: list[Event] = []
        self.funding: list[Event] = []
        self.fill_queries: list[int | None] = []

    async def open_orders(self, symbol: str | None = None, *, source: Source) -> list[Event]:
        return list(self.open)

    async def order_history(
        self, *, venue_id: str | None = None, symbol: str | None = None, source: Source
    ) -> list[Event]:
        return [
            e
            for e in self.history
            if isinstance(e, OrderObserved)
            and (venue_id is None or e.venue_id == venue_id)
            and (symbol is None or e.symbol == symbol)
        ]

    async def fill_history(
        self, *, symbol: str | None = None, from_ms: int | None = None, source: Source
    ) -> list[Event]:
        self.fill_queries.append(from_ms)
        return list(self.fills)

    async def capital(self, *, source: Source) -> Event:
        return self.balance

    async def positions(self, *, source: Source) -> list[Event]:
        return list(self.positions_now)

    async def funding_history(self, *, symbol: str | None = None, source: Source) -> list[Event]:
        return list(self.funding)


def market(symbol: str, kind: MarketType) -> MarketInfo:
    base, quote = symbol.split("_")[:2]
    return MarketInfo(
        source=Source.REST, recv_time_us=T0, symbol=symbol, base_asset=base, quote_asset=quote,
        market_type=kind, tick_size=Decimal("0.01"), step_size=Decimal("0.01"),
        min_quantity=Decimal("0.01"),
    )  # fmt: skip


def fill(trade: int, qty: str, price: str, *, venue_id: str = "900", side: Side = Side.BID,
         symbol: str = "SOL_USDC", fee_asset: str = "SOL") -> OrderFilled:  # fmt: skip
    return OrderFilled(
        source=R, recv_time_us=T0 + trade, venue_time_us=T0 + trade, symbol=symbol,
        venue_id=venue_id, client_id=None, trade_id=trade, side=side, quantity=Decimal(qty),
        price=Decimal(price), fee=Decimal("0.001"), fee_asset=fee_asset, maker=True,
    )  # fmt: skip


def engine_with_live_order() -> Engine:
    engine = Engine()
    engine.record(market("SOL_USDC", MarketType.SPOT))
    engine.record(
        BalanceObserved(source=R, recv_time_us=T0, balances=(
            AssetBalance(asset="USDC", available=Decimal("1000"), locked=Decimal(0)),))
    )  # fmt: skip
    engine.record(
        OrderSubmitted(source=Source.LOCAL, recv_time_us=T0, client_id=1, symbol="SOL_USDC",
                       side=Side.BID, order_type=OrderType.LIMIT, quantity=Decimal("2"),
                       price=Decimal("100"))
    )  # fmt: skip
    engine.record(
        OrderAccepted(source=Source.WS, recv_time_us=T0, venue_time_us=T0, symbol="SOL_USDC",
                      venue_id="900", client_id=1, side=Side.BID, quantity=Decimal("2"),
                      price=Decimal("100"))
    )  # fmt: skip
    return engine


def reconciler(engine: Engine, venue: FakeVenue, *, perpetual: bool = False) -> Reconciler:
    return Reconciler(
        venue, engine, perpetual=perpetual, clock=VenueClock(local_ns=lambda: T0 * 1_000)
    )


async def test_fills_missed_while_disconnected_are_recovered_once() -> None:
    engine = engine_with_live_order()
    venue = FakeVenue()
    venue.fills = [fill(1, "1.5", "100"), fill(2, "0.5", "99.5")]
    venue.history = [
        OrderObserved(source=R, recv_time_us=T0, symbol="SOL_USDC", status=VenueStatus.FILLED,
                      venue_id="900", client_id=1, executed_quantity=Decimal("2"))
    ]  # fmt: skip
    venue.balance = BalanceObserved(source=R, recv_time_us=T0, balances=(
        AssetBalance(asset="SOL", available=Decimal("1.998"), locked=Decimal(0)),
        AssetBalance(asset="USDC", available=Decimal("800.25"), locked=Decimal(0)),
    ))  # fmt: skip
    rec = reconciler(engine, venue)
    added = await rec.run_pass()
    order = engine.state.order(client_id=1)
    assert order is not None
    assert order.status is OrderStatus.FILLED
    assert order.filled_quantity == Decimal("2")
    assert order.trade_ids == frozenset({1, 2})
    usdc, sol = engine.state.balances["USDC"], engine.state.balances["SOL"]
    # 1000 - 150 - 49.75 = 800.25 spent; 2 SOL bought minus 0.002 SOL fees: matches the venue.
    assert (usdc.available, usdc.locked, usdc.drift_available) == (
        Decimal("800.25"),
        Decimal(0),
        Decimal(0),
    )
    assert (sol.available, sol.drift_available) == (Decimal("1.998"), Decimal(0))
    assert engine.state.anomaly_total == 0
    # Two fills and the balance snapshot; the history report (Filled) adds nothing once the
    # fills are in, and the fills come first so no transient fill gap is recorded.
    assert added == 3
    seq = engine.state.last_seq
    assert await rec.run_pass() == 0
    assert engine.state.last_seq == seq


async def test_an_in_doubt_order_the_venue_never_saw_is_rejected() -> None:
    engine = Engine()
    engine.record(market("SOL_USDC", MarketType.SPOT))
    engine.record(
        OrderSubmitted(source=Source.LOCAL, recv_time_us=T0, client_id=5, symbol="SOL_USDC",
                       side=Side.ASK, order_type=OrderType.LIMIT, quantity=Decimal("1"),
                       price=Decimal("120"))
    )  # fmt: skip
    engine.record(SubmitUnknown(source=Source.REST, recv_time_us=T0, symbol="SOL_USDC",
                                client_id=5, reason="timeout"))  # fmt: skip
    venue = FakeVenue()
    await reconciler(engine, venue).run_pass()
    order = engine.state.order(client_id=5)
    assert order is not None and order.status is OrderStatus.REJECTED
    assert order.reject_code == "NOT_FOUND"


async def test_an_in_doubt_order_found_resting_is_resolved_as_new() -> None:
    engine = Engine()
    engine.record(market("SOL_USDC", MarketType.SPOT))
    engine.record(
        OrderSubmitted(source=Source.LOCAL, recv_time_us=T0, client_id=6, symbol="SOL_USDC",
                       side=Side.ASK, order_type=OrderType.LIMIT, quantity=Decimal("1"),
                       price=Decimal("120"))
    )  # fmt: skip
    engine.record(SubmitUnknown(source=Source.REST, recv_time_us=T0, symbol="SOL_USDC",
                                client_id=6, reason="503"))  # fmt: skip
    venue = FakeVenue()
    venue.open = [
        OrderObserved(source=R, recv_time_us=T0, symbol="SOL_USDC", status=VenueStatus.NEW,
                      venue_id="77", client_id=6, executed_quantity=Decimal(0))
    ]  # fmt: skip
    venue.balance = BalanceObserved(source=R, recv_time_us=T0, balances=(
        AssetBalance(asset="SOL", available=Decimal("4"), locked=Decimal("1")),))  # fmt: skip
    rec = reconciler(engine, venue)
    await rec.run_pass()
    order = engine.state.order(venue_id="77")
    assert order is not None and order.status is OrderStatus.NEW and order.client_id == 6
    sol = engine.state.balances["SOL"]
    # The venue's snapshot is the first one (a baseline) and agrees with the lock we derived.
    assert (sol.available, sol.locked, sol.drift_locked) == (Decimal("4"), Decimal("1"), Decimal(0))
    assert await rec.run_pass() == 0


async def test_perp_positions_flat_symbols_and_funding() -> None:
    engine = Engine()
    engine.record(market("SOL_USDC_PERP", MarketType.PERP))
    # The account was reconciled before (its baseline): reports are compared from now on.
    engine.record(BalanceObserved(source=R, recv_time_us=T0, balances=()))
    engine.record(fill(1, "3", "150", venue_id="1", symbol="SOL_USDC_PERP", fee_asset="USDC"))
    venue = FakeVenue()
    venue.funding = [
        FundingPaid(source=R, recv_time_us=T0, symbol="SOL_USDC_PERP", interval_end_us=T0,
                    amount=Decimal("-0.12"), rate=Decimal("0.0001"))
    ]  # fmt: skip
    rec = reconciler(engine, venue, perpetual=True)
    await rec.run_pass()
    position = engine.state.positions["SOL_USDC_PERP"]
    assert position.observed is not None and position.observed.net_quantity == 0
    # The venue says flat while our fills say 3: recorded as drift, never silently adopted.
    assert (position.net_quantity, position.drift_quantity) == (Decimal(3), Decimal(-3))
    assert position.funding == Decimal("-0.12")
    assert await rec.run_pass() == 0


def test_only_news_is_recorded() -> None:
    engine = engine_with_live_order()
    first = fill(1, "1", "100")
    assert engine.record_news([first, first]) == [first]
    assert engine.record_news([first]) == []
    observed = PositionObserved(source=R, recv_time_us=T0, symbol="X_PERP", net_quantity=Decimal(0))
    assert engine.record_news([observed, observed]) == [observed]


async def test_fill_history_items_it_cannot_read_are_recorded_once() -> None:
    engine = engine_with_live_order()
    venue = FakeVenue()
    venue.fills = [
        MessageNotUnderstood(source=R, recv_time_us=T0, raw='{"tradeId":null}', reason="no tradeId")
    ]
    rec = reconciler(engine, venue)
    await rec.run_pass()
    assert engine.state.anomaly_counts.get(AnomalyKind.NOT_UNDERSTOOD) == 1
    assert await rec.run_pass() == 0


PERP = "SOL_USDC_PERP"


def perp_report(net: str, entry: str) -> PositionObserved:
    return PositionObserved(source=R, recv_time_us=T0, symbol=PERP, net_quantity=Decimal(net),
                            entry_price=Decimal(entry))  # fmt: skip


class FillLandsDuringSnapshot(FakeVenue):
    """A perp market order fills after the fill-history request and before the positions
    request: the venue's snapshots include it, its stream message is held back."""

    def __init__(self, landing: OrderFilled) -> None:
        super().__init__()
        self.landing = landing
        self.positions_now = [perp_report("2", "100")]  # 2 from before the log began
        self.balance = BalanceObserved(source=R, recv_time_us=T0, balances=(
            AssetBalance(asset="USDC", available=Decimal("500"), locked=Decimal(0)),))  # fmt: skip

    async def positions(self, *, source: Source) -> list[Event]:
        if self.landing not in self.fills:
            self.fills.append(self.landing)
            self.positions_now = [perp_report("3", "110")]
        return await super().positions(source=source)


async def test_a_fill_in_flight_during_the_first_snapshot_is_counted_once() -> None:
    engine = Engine()
    engine.record(market(PERP, MarketType.PERP))
    landing = fill(7, "1", "130", venue_id="70", symbol=PERP, fee_asset="USDC")
    venue = FillLandsDuringSnapshot(landing)
    rec = reconciler(engine, venue, perpetual=True)
    await rec.run_pass()
    # The second look at the fill history found the fill: it was counted first, then the
    # snapshots taken again and adopted (2 before the log + 1).
    assert engine.state.baseline_seq is not None
    position = engine.state.positions[PERP]
    assert (position.net_quantity, position.entry_price) == (Decimal(3), Decimal(110))
    # The held stream message arrives now: a duplicate, the position does not move.
    engine.record(msgspec.structs.replace(landing, source=Source.WS))
    position = engine.state.positions[PERP]
    assert (position.net_quantity, position.drift_quantity) == (Decimal(3), Decimal(0))
    assert engine.state.balances["USDC"].available == Decimal("500")
    assert engine.state.anomaly_counts.get(AnomalyKind.DUPLICATE_FILL) == 1
    assert await rec.run_pass() == 0


class NeverQuiet(FakeVenue):
    """Every look at the fill history shows a new fill."""

    async def fill_history(
        self, *, symbol: str | None = None, from_ms: int | None = None, source: Source
    ) -> list[Event]:
        trade = len(self.fill_queries) + 1
        self.fills.append(fill(trade, "1", "100", venue_id=str(trade), symbol=PERP,
                               fee_asset="USDC"))  # fmt: skip
        return await super().fill_history(symbol=symbol, from_ms=from_ms, source=source)


async def test_no_baseline_is_adopted_while_fills_keep_landing() -> None:
    engine = Engine()
    engine.record(market(PERP, MarketType.PERP))
    venue = NeverQuiet()
    venue.positions_now = [perp_report("99", "100")]
    await reconciler(engine, venue, perpetual=True).run_pass()
    # No snapshot could be shown to agree with the fills counted: none is adopted yet, and
    # every fill seen is counted once.
    assert engine.state.baseline_seq is None
    assert engine.state.positions[PERP].net_quantity == len(venue.fills)


async def test_a_position_from_before_the_log_is_adopted_once_with_recent_fills_counted() -> None:
    engine = Engine()
    engine.record(market(PERP, MarketType.PERP))
    venue = FakeVenue()
    # Long 5 from long ago; the last 5 minutes of fills (in the look-back) bought 1 more.
    venue.fills = [fill(1, "1", "120", venue_id="10", symbol=PERP, fee_asset="USDC")]
    venue.positions_now = [perp_report("6", "101")]
    rec = reconciler(engine, venue, perpetual=True)
    await rec.run_pass()
    position = engine.state.positions[PERP]
    assert (position.net_quantity, position.entry_price) == (Decimal(6), Decimal(101))
    assert position.baselined and position.drift_quantity == 0
    # Later reports are compared, not adopted.
    venue.positions_now = [perp_report("7", "101")]
    await rec.run_pass()
    position = engine.state.positions[PERP]
    assert (position.net_quantity, position.drift_quantity) == (Decimal(6), Decimal(1))


def usdc(amount: str) -> BalanceObserved:
    return BalanceObserved(source=R, recv_time_us=T0, balances=(
        AssetBalance(asset="USDC", available=Decimal(amount), locked=Decimal(0)),))  # fmt: skip


class StreamFillDuringSecondLook(FakeVenue):
    """The snapshots are taken, then a fill happens: the venue's second look at the fill
    history was answered just before it, and its stream message is recorded while that answer
    is on its way (the stream keeps recording while the pass awaits REST)."""

    def __init__(self, engine: Engine, landing: OrderFilled) -> None:
        super().__init__()
        self.engine = engine
        self.landing = landing
        self.positions_now = [perp_report("2", "100")]
        self.balance = usdc("1000")

    async def fill_history(
        self, *, symbol: str | None = None, from_ms: int | None = None, source: Source
    ) -> list[Event]:
        answer = await super().fill_history(symbol=symbol, from_ms=from_ms, source=source)
        if len(self.fill_queries) == 2:
            self.engine.record(msgspec.structs.replace(self.landing, source=Source.WS))
            # From now on the venue's books include the fill.
            self.fills.append(self.landing)
            self.positions_now = [perp_report("1", "100")]
            self.balance = usdc("1009.999")
        return answer


async def test_a_stream_fill_recorded_while_the_pass_waits_is_not_overwritten() -> None:
    engine = Engine()
    engine.record(market(PERP, MarketType.PERP))
    landing = fill(8, "1", "110", venue_id="80", side=Side.ASK, symbol=PERP, fee_asset="USDC")
    await reconciler(engine, StreamFillDuringSecondLook(engine, landing), perpetual=True).run_pass()
    # The snapshots taken before the fill are not adopted; the ones after it are.
    position = engine.state.positions[PERP]
    assert (position.net_quantity, position.drift_quantity) == (Decimal(1), Decimal(0))
    assert engine.state.balances["USDC"].available == Decimal("1009.999")


class PaymentDuringSnapshots(FakeVenue):
    """A funding payment lands just after the venue answered the balance snapshot (which so
    does not include it), before the pass asks for the funding history."""

    def __init__(self) -> None:
        super().__init__()
        self.positions_now = [perp_report("2", "100")]
        self.balance = usdc("1000")
        self.payment = FundingPaid(source=R, recv_time_us=T0, symbol=PERP,
                                   interval_end_us=T0 + 1, amount=Decimal("-3"))  # fmt: skip

    async def capital(self, *, source: Source) -> Event:
        answer = await super().capital(source=source)
        if not self.funding:
            self.funding = [self.payment]
            self.balance = usdc("997")
        return answer


async def test_a_funding_payment_during_the_snapshots_is_counted_once() -> None:
    engine = Engine()
    engine.record(market(PERP, MarketType.PERP))
    venue = PaymentDuringSnapshots()
    rec = reconciler(engine, venue, perpetual=True)
    await rec.run_pass()
    assert engine.state.balances["USDC"].available == Decimal(997)
    assert engine.state.positions[PERP].funding == Decimal(-3)
    await rec.run_pass()
    balance = engine.state.balances["USDC"]
    assert (balance.available, balance.drift_available) == (Decimal(997), Decimal(0))
