"""Regenerate the recorded sessions in `replay/`: `.venv/bin/python replay/make_sessions.py`.

Each session is a list of domain events, written with `oms.log.EventLog` to `NAME.jsonl`;
`NAME.expected.json` is then what `python -m oms.replay NAME.jsonl --json` prints for it.

Venue events are made as the adapter makes them: the Backpack message comes first, built by
the local exchange's frame builder (`oms_local_exchange.frames`, the one that writes the
exchange's own messages: `account.orderUpdate` and `account.positionUpdate` frames, REST
bodies), and the event is what the adapter's codec (`oms_backpack.codec`) derives from that
text. So `raw` and the event cannot disagree, and a codec that misreads a message changes the
sessions (tests/shell/test_golden.py notices). Our own commands (submit, cancel) and a refused
submit are built directly, as the session records them. Times are fixed (no clock): the
sessions are byte-for-byte reproducible, and tests/shell/test_golden.py checks that running this
script again changes nothing.

The figures (fills, fees, PnL, funding) are chosen so that every expected number can be
worked out by hand; tests/shell/test_golden.py does so.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs

from oms.core.events import (
    BalanceObserved,
    CancelRequested,
    Event,
    FundingPaid,
    MarketInfo,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderObserved,
    OrderSubmitted,
    PositionObserved,
    SubmitRejected,
)
from oms.core.values import CTX, MarketType, OrderType, Side, Source, TimeInForce, VenueStatus
from oms.log import EventLog, Fsync
from oms.replay import replay_file, summary_document
from oms_backpack import codec
from oms_local_exchange import frames

__all__ = ["SESSIONS", "main", "reordered_natural_order", "write_session"]

REPLAY_DIR: Final = Path(__file__).resolve().parent
# 2025-09-11T20:00:00Z in microseconds: every session starts here.
BASE_US: Final = 1_757_620_800_000_000
HOUR_US: Final = 3_600_000_000
SECOND_US: Final = 1_000_000
# When the venue listed the markets (their `createdAt`), and the account's user id.
LISTED_US: Final = 1_737_441_294_691_858
USER_ID: Final = 1_813_870
# Margin fractions the venue reports on positions (`f`, `m`).
IMF: Final = Decimal("0.02")
MMF: Final = Decimal("0.0135")

_E = TypeVar("_E", bound=Event)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _derived(kind: type[_E], events: list[Event]) -> _E:
    """The one event the codec made of a message, which must be of `kind`: a message the
    codec cannot read would otherwise slip into a golden session unnoticed."""
    assert len(events) == 1 and isinstance(events[0], kind), events
    return events[0]


def _rest(
    kind: type[_E],
    body: Any,
    read: Callable[[Any, Source, int], Event],
    *,
    source: Source,
    recv: int,
) -> _E:
    """What the adapter records for a REST body: `read` (a codec function) applied to the
    body parsed from the text the venue sent."""
    return _derived(kind, [read(codec.parse_json(_json(body)), source, recv)])


class Timeline:
    """Deterministic clock for one session.

    A venue message gets `E` (when the stream server sent it), `T` (the matching-engine
    time of the fact, a little earlier; the event's `venue_time_us`, as the adapter codec
    takes it) and a local receive time (a little later); a local command gets only a
    receive time.
    """

    def __init__(self, start_us: int = BASE_US) -> None:
        self.now = start_us

    def venue(self, step_us: int = 2_500) -> tuple[int, int, int]:
        """(E, T, recv) for the next venue message, `step_us` after the previous moment."""
        self.now += step_us
        event_time = self.now
        return event_time, event_time - 1_137, event_time + 1_850

    def local(self, step_us: int = 1_000) -> int:
        self.now += step_us
        return self.now

    def jump_to(self, time_us: int) -> None:
        assert time_us >= self.now, "time only moves forward"
        self.now = time_us


# --- markets and account snapshots (REST bodies) ---------------------------------------------


@attrs.frozen(kw_only=True)
class MarketSpec:
    symbol: str
    base: str
    quote: str
    market_type: MarketType
    tick_size: Decimal
    step_size: Decimal
    min_quantity: Decimal


SOL_USDC: Final = MarketSpec(
    symbol="SOL_USDC",
    base="SOL",
    quote="USDC",
    market_type=MarketType.SPOT,
    tick_size=Decimal("0.01"),
    step_size=Decimal("0.01"),
    min_quantity=Decimal("0.01"),
)
ETH_USDC: Final = MarketSpec(
    symbol="ETH_USDC",
    base="ETH",
    quote="USDC",
    market_type=MarketType.SPOT,
    tick_size=Decimal("0.01"),
    step_size=Decimal("0.0001"),
    min_quantity=Decimal("0.0001"),
)
SOL_USDC_PERP: Final = MarketSpec(
    symbol="SOL_USDC_PERP",
    base="SOL",
    quote="USDC",
    market_type=MarketType.PERP,
    tick_size=Decimal("0.01"),
    step_size=Decimal("0.01"),
    min_quantity=Decimal("0.01"),
)


def market_info(market: MarketSpec, clock: Timeline) -> MarketInfo:
    """`GET /api/v1/market?symbol=`: one market object."""
    body = frames.market_object(
        symbol=market.symbol,
        base=market.base,
        quote=market.quote,
        market_type=market.market_type.value,
        tick_size=market.tick_size,
        step_size=market.step_size,
        min_quantity=market.min_quantity,
        created_us=LISTED_US,
    )
    return _rest(MarketInfo, body, codec.market, source=Source.REST, recv=clock.local(40_000))


def balances(clock: Timeline, figures: dict[str, tuple[str, str]]) -> BalanceObserved:
    """`GET /api/v1/capital`: {asset: {available, locked, staked}}; asset -> (available, locked)."""
    body = frames.capital(
        (asset, Decimal(available), Decimal(locked), Decimal(0))
        for asset, (available, locked) in figures.items()
    )
    recv = clock.local(35_000)
    return _rest(BalanceObserved, body, codec.balances, source=Source.RECONCILE, recv=recv)


def funding(
    clock: Timeline, market: MarketSpec, *, interval_end_us: int, rate: str, amount: str
) -> FundingPaid:
    """The newest item of `GET /wapi/v1/history/funding?symbol=` (> 0 received). Like the
    adapter, each item of a list response is one event whose raw is that item."""
    item = frames.funding_item(
        symbol=market.symbol,
        interval_end_ms=interval_end_us // 1000,
        rate=Decimal(rate),
        amount=Decimal(amount),
        user_id=USER_ID,
    )
    clock.jump_to(interval_end_us + 4 * SECOND_US)
    recv = clock.local()
    return _rest(FundingPaid, item, codec.funding_item, source=Source.RECONCILE, recv=recv)


@attrs.frozen(kw_only=True)
class PositionFigures:
    """One `account.positionUpdate` message's figures (strings, as on the wire)."""

    event: str | None  # None: the snapshot sent on subscribe (no `e`)
    position_id: int
    net: str  # q, signed
    entry: str  # B
    break_even: str  # b
    mark: str  # M
    realized: str  # p
    unrealized: str  # P


def position_update(clock: Timeline, market: MarketSpec, figures: PositionFigures) -> Event:
    event_time, engine_time, recv = clock.venue()
    data = frames.position_update(
        figures.event,
        event_time_us=event_time,
        engine_time_us=engine_time,
        symbol=market.symbol,
        position_id=figures.position_id,
        net_quantity=Decimal(figures.net),
        entry_price=Decimal(figures.entry),
        break_even_price=Decimal(figures.break_even),
        mark_price=Decimal(figures.mark),
        realized_pnl=Decimal(figures.realized),
        unrealized_pnl=Decimal(figures.unrealized),
        imf=IMF,
        mmf=MMF,
    )
    frame = frames.frame(frames.POSITION_STREAM, data)
    return _derived(PositionObserved, codec.ws_frame(frame, recv))


# --- one order's messages -------------------------------------------------------------------


class OrderFeed:
    """Builds every event of one order, keeping the venue's cumulative figures (`z`, `Z`).

    Stream frames are `account.orderUpdate` messages (fact sheet §3.3); REST bodies are order
    objects as `POST`/`DELETE /api/v1/order` return them (§2.3).
    """

    def __init__(
        self,
        clock: Timeline,
        market: MarketSpec,
        *,
        client_id: int,
        venue_id: str,
        side: Side,
        order_type: OrderType,
        quantity: str,
        price: str | None = None,
        reduce_only: bool = False,
    ) -> None:
        self.clock = clock
        self.market = market
        self.client_id = client_id
        self.venue_id = venue_id
        self.side = side
        self.order_type = order_type
        self.quantity = Decimal(quantity)
        self.price = None if price is None else Decimal(price)
        self.post_only = order_type is OrderType.LIMIT_MAKER
        self.reduce_only = reduce_only
        self.executed = Decimal(0)
        self.executed_quote = Decimal(0)
        self.created_ms: int | None = None

    # local commands

    def submitted(self) -> OrderSubmitted:
        time_us = self.clock.local()
        # The venue creates the order within the millisecond after we send it.
        self.created_ms = time_us // 1000 + 1
        return OrderSubmitted(
            source=Source.LOCAL,
            recv_time_us=time_us,
            client_id=self.client_id,
            symbol=self.market.symbol,
            side=self.side,
            order_type=self.order_type,
            quantity=self.quantity,
            price=self.price,
            time_in_force=TimeInForce.GTC,
            post_only=self.post_only,
            reduce_only=self.reduce_only,
        )

    def cancel_requested(self) -> CancelRequested:
        return CancelRequested(
            source=Source.LOCAL,
            recv_time_us=self.clock.local(),
            symbol=self.market.symbol,
            client_id=self.client_id,
        )

    # the venue's view of the order

    def _fields(self, status: VenueStatus, expiry_reason: str | None = None) -> frames.OrderFields:
        assert self.created_ms is not None, "submit first"
        return frames.OrderFields(
            id=self.venue_id,
            symbol=self.market.symbol,
            side=self.side.value,
            order_type="Market" if self.order_type is OrderType.MARKET else "Limit",
            status=status.value,
            client_id=self.client_id,
            quantity=self.quantity,
            price=self.price,
            executed_quantity=self.executed,
            executed_quote_quantity=self.executed_quote,
            post_only=self.post_only,
            reduce_only=self.reduce_only,
            created_us=self.created_ms * 1000,
            expiry_reason=expiry_reason,
        )

    # the stream

    def _update(
        self,
        kind: str,
        status: VenueStatus,
        *,
        fill: frames.FillFigures | None = None,
        expiry_reason: str | None = None,
    ) -> list[Event]:
        """The events the codec derives from the next `account.orderUpdate` frame."""
        event_time, engine_time, recv = self.clock.venue()
        data = frames.order_update(
            self._fields(status, expiry_reason),
            kind,
            event_time_us=event_time,
            engine_time_us=engine_time,
            fill=fill,
        )
        return codec.ws_frame(frames.frame(frames.ORDER_STREAM, data), recv)

    def accepted(self) -> OrderAccepted:
        return _derived(OrderAccepted, self._update("orderAccepted", VenueStatus.NEW))

    def fill(
        self, *, trade_id: int, quantity: str, price: str, fee: str, fee_asset: str, maker: bool
    ) -> OrderFilled:
        qty, px = Decimal(quantity), Decimal(price)
        self.executed = CTX.add(self.executed, qty)
        self.executed_quote = CTX.add(self.executed_quote, CTX.multiply(qty, px))
        status = (
            VenueStatus.FILLED if self.executed == self.quantity else VenueStatus.PARTIALLY_FILLED
        )
        figures = frames.FillFigures(
            trade_id=trade_id,
            quantity=qty,
            price=px,
            fee=Decimal(fee),
            fee_asset=fee_asset,
            is_maker=maker,
        )
        return _derived(OrderFilled, self._update("orderFill", status, fill=figures))

    def cancelled(self) -> OrderCancelled:
        return _derived(OrderCancelled, self._update("orderCancelled", VenueStatus.CANCELLED))

    def expired(self, reason: str) -> OrderExpired:
        events = self._update("orderExpired", VenueStatus.EXPIRED, expiry_reason=reason)
        return _derived(OrderExpired, events)

    # REST responses

    def answered(self, status: VenueStatus, *, executed: str = "0") -> OrderObserved:
        """The order object a REST answer carries (execute or cancel response), as the adapter
        records it: an observation of the order with the venue's status and executed figures
        when the answer was made (`executed`, which may be behind the stream)."""
        saved = self.executed, self.executed_quote
        self.executed = Decimal(executed)
        self.executed_quote = CTX.multiply(self.executed, self.price or Decimal(0))
        body = frames.order_object(self._fields(status))
        self.executed, self.executed_quote = saved
        recv = self.clock.local(60_000)
        return _rest(OrderObserved, body, codec.order_object, source=Source.REST, recv=recv)

    def rejected(self, code: str, message: str) -> SubmitRejected:
        """A 400 answer to the execute request: `{"code", "message"}` (§2.5). The session
        records it from the HTTP error, not through the codec."""
        return SubmitRejected(
            source=Source.REST,
            recv_time_us=self.clock.local(45_000),
            raw=_json(frames.error(code, message)),
            symbol=self.market.symbol,
            client_id=self.client_id,
            code=code,
            message=message,
        )


@attrs.frozen(kw_only=True)
class HistoryFill:
    """One fill as `GET /wapi/v1/history/fills` lists it."""

    trade_id: int
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str
    maker: bool
    time_us: int


def fill_history(
    clock: Timeline, feed: OrderFeed, fills: Sequence[HistoryFill]
) -> list[OrderFilled]:
    """A reconciliation pass over the fill history of one order: one event per item (the
    item is its raw). History items have no cumulative figures and no status."""
    recv = clock.local(80_000)
    return [
        _rest(
            OrderFilled,
            frames.fill_item(
                trade_id=f.trade_id,
                order_id=feed.venue_id,
                client_id=feed.client_id,
                symbol=feed.market.symbol,
                side=feed.side.value,
                price=f.price,
                quantity=f.quantity,
                fee=f.fee,
                fee_asset=f.fee_asset,
                is_maker=f.maker,
                time_us=f.time_us,
            ),
            codec.fill_history_item,
            source=Source.RECONCILE,
            recv=recv,
        )
        for f in fills
    ]


# --- the sessions ---------------------------------------------------------------------------


def spot_limit_partial_cancel() -> list[Event]:
    """A resting SOL_USDC bid for 4 @ 150.25: two maker fills (1.5 and 1, fees in SOL, as
    spot buys pay in the base asset), then cancelled by us; the last balance snapshot agrees
    with what the events imply (SOL 1.5 + 2.5 - 0.002 = 3.998; USDC 1000 - 375.625)."""
    clock = Timeline()
    order = OrderFeed(
        clock,
        SOL_USDC,
        client_id=1_001,
        venue_id="8284661101",
        side=Side.BID,
        order_type=OrderType.LIMIT,
        quantity="4",
        price="150.25",
    )
    events: list[Event] = [
        market_info(SOL_USDC, clock),
        balances(clock, {"SOL": ("1.5", "0"), "USDC": ("1000", "0")}),
        order.submitted(),
        order.accepted(),
    ]
    clock.local(7 * SECOND_US)
    events.append(
        order.fill(
            trade_id=2_959_301,
            quantity="1.5",
            price="150.25",
            fee="0.0012",
            fee_asset="SOL",
            maker=True,
        )
    )
    clock.local(19 * SECOND_US)
    events.append(
        order.fill(
            trade_id=2_959_377,
            quantity="1",
            price="150.25",
            fee="0.0008",
            fee_asset="SOL",
            maker=True,
        )
    )
    clock.local(30 * SECOND_US)
    events += [
        order.cancel_requested(),
        order.cancelled(),
        balances(clock, {"SOL": ("3.998", "0"), "USDC": ("624.375", "0")}),
    ]
    return events


def spot_market_buy_multi_fill() -> list[Event]:
    """A MARKET bid for 1.2 ETH taking three levels (0.5 @ 3120.10, 0.4 @ 3120.50,
    0.3 @ 3121.00), taker fees of 0.1% in ETH; then a balance snapshot that agrees."""
    clock = Timeline(BASE_US + 15 * 60 * SECOND_US)
    order = OrderFeed(
        clock,
        ETH_USDC,
        client_id=2_001,
        venue_id="8284702230",
        side=Side.BID,
        order_type=OrderType.MARKET,
        quantity="1.2",
    )
    events: list[Event] = [
        market_info(ETH_USDC, clock),
        balances(clock, {"ETH": ("0.0019918", "0"), "USDC": ("5000", "0")}),
        order.submitted(),
        order.accepted(),
    ]
    for trade_id, quantity, price, fee in (
        (4_120_001, "0.5", "3120.10", "0.0005"),
        (4_120_002, "0.4", "3120.50", "0.0004"),
        (4_120_003, "0.3", "3121.00", "0.0003"),
    ):
        events.append(
            order.fill(
                trade_id=trade_id,
                quantity=quantity,
                price=price,
                fee=fee,
                fee_asset="ETH",
                maker=False,
            )
        )
    clock.local(3 * SECOND_US)
    events.append(balances(clock, {"ETH": ("1.2007918", "0"), "USDC": ("1255.45", "0")}))
    return events


def post_only_rejected() -> list[Event]:
    """Two post-only bids that would take: the venue refuses the first at submit
    (INVALID_ORDER, fact sheet §2.5) and accepts then expires the second (PostOnlyTaker)."""
    clock = Timeline(BASE_US + 30 * 60 * SECOND_US)
    first = OrderFeed(
        clock,
        SOL_USDC,
        client_id=3_001,
        venue_id="8284739911",  # never assigned: the venue refused the order
        side=Side.BID,
        order_type=OrderType.LIMIT_MAKER,
        quantity="2",
        price="151.00",
    )
    second = OrderFeed(
        clock,
        SOL_USDC,
        client_id=3_002,
        venue_id="8284740158",
        side=Side.BID,
        order_type=OrderType.LIMIT_MAKER,
        quantity="2",
        price="150.90",
    )
    events: list[Event] = [
        market_info(SOL_USDC, clock),
        balances(clock, {"USDC": ("1000", "0")}),
        first.submitted(),
        first.rejected("INVALID_ORDER", "Order would immediately match and take"),
        second.submitted(),
        second.accepted(),
        second.expired("PostOnlyTaker"),
        balances(clock, {"USDC": ("1000", "0")}),
    ]
    return events


def perp_position_lifecycle() -> list[Event]:
    """SOL_USDC_PERP, one-way, market orders with 0.05% taker fees in USDC:

    buy 2 @ 150 (long 2 @ 150); buy 1 @ 153 (long 3 @ 151); funding at 21:00, rate
    0.0000125, mark 152: pays 0.0057; sell 1 @ 155 reduce-only (realized +4, long 2 @ 151);
    sell 4 as 3 @ 148 + 1 @ 147 (closes 2: realized -6, then short 2 @ 147.5); funding at
    22:00, rate 0.00002, mark 147.5: receives 0.0059; buy 2 @ 146 reduce-only (realized +3,
    flat). Realized 1, fees 0.7455, funding 0.0002. Venue position reports after each step
    agree with the derived position.
    """
    clock = Timeline(BASE_US + 5 * 60 * SECOND_US)
    market = SOL_USDC_PERP

    def order(
        client_id: int, venue_id: str, side: Side, quantity: str, *, reduce: bool = False
    ) -> OrderFeed:
        return OrderFeed(
            clock,
            market,
            client_id=client_id,
            venue_id=venue_id,
            side=side,
            order_type=OrderType.MARKET,
            quantity=quantity,
            reduce_only=reduce,
        )

    def taker(feed: OrderFeed, trade_id: int, quantity: str, price: str, fee: str) -> Event:
        return feed.fill(
            trade_id=trade_id,
            quantity=quantity,
            price=price,
            fee=fee,
            fee_asset="USDC",
            maker=False,
        )

    events: list[Event] = [market_info(market, clock)]
    open_long = order(5_001, "8338878740", Side.BID, "2")
    events += [
        open_long.submitted(),
        open_long.accepted(),
        taker(open_long, 91_300_001, "2", "150", "0.15"),
        position_update(
            clock,
            market,
            PositionFigures(
                event="positionOpened",
                position_id=28_375_996_537,
                net="2",
                entry="150",
                break_even="150.075",
                mark="150.05",
                realized="0",
                unrealized="0.1",
            ),
        ),
    ]
    clock.local(11 * 60 * SECOND_US)
    increase = order(5_002, "8338912044", Side.BID, "1")
    events += [
        increase.submitted(),
        increase.accepted(),
        taker(increase, 91_300_154, "1", "153", "0.0765"),
        position_update(
            clock,
            market,
            PositionFigures(
                event="positionAdjusted",
                position_id=28_375_996_537,
                net="3",
                entry="151",
                break_even="151.0755",
                mark="153.02",
                realized="0",
                unrealized="6.06",
            ),
        ),
        funding(
            clock, market, interval_end_us=BASE_US + HOUR_US, rate="0.0000125", amount="-0.0057"
        ),
    ]
    clock.local(9 * 60 * SECOND_US)
    reduce = order(5_003, "8339005512", Side.ASK, "1", reduce=True)
    events += [
        reduce.submitted(),
        reduce.accepted(),
        taker(reduce, 91_301_870, "1", "155", "0.0775"),
    ]
    clock.local(23 * 60 * SECOND_US)
    flip = order(5_004, "8339140076", Side.ASK, "4")
    events += [
        flip.submitted(),
        flip.accepted(),
        taker(flip, 91_303_402, "3", "148", "0.222"),
        taker(flip, 91_303_403, "1", "147", "0.0735"),
        position_update(
            clock,
            market,
            PositionFigures(
                event="positionOpened",
                position_id=28_376_120_915,
                net="-2",
                entry="147.5",
                break_even="147.35225",
                mark="147.2",
                realized="-2",
                unrealized="0.6",
            ),
        ),
        funding(
            clock, market, interval_end_us=BASE_US + 2 * HOUR_US, rate="0.00002", amount="0.0059"
        ),
    ]
    clock.local(6 * 60 * SECOND_US)
    close = order(5_005, "8339288307", Side.BID, "2", reduce=True)
    events += [
        close.submitted(),
        close.accepted(),
        taker(close, 91_305_998, "2", "146", "0.146"),
        position_update(
            clock,
            market,
            PositionFigures(
                event="positionClosed",
                position_id=28_376_120_915,
                net="0",
                entry="0",
                break_even="0",
                mark="146.1",
                realized="1",
                unrealized="0",
            ),
        ),
    ]
    return events


def _reordered_parts() -> tuple[list[Event], list[Event]]:
    """(natural order, arrival order) of one resting SOL_USDC ask for 4 @ 152.

    At the venue: accepted; fills t1 = 1, t2 = 0.5, t3 = 1.5 (maker, 0.08% fee in USDC as
    spot sells pay in the quote asset); cancelled with 3 executed, 1 left.

    As it arrived: the stream was still subscribing when the order went in and missed the
    `orderAccepted` frame; t1 came on the stream before the (slow) execute response, whose
    order object (status New, nothing executed yet) is the accept; the stream then dropped
    and missed t2; t3 came after the reconnect; our cancel was confirmed on the stream; a
    reconciliation pass over the fill history then brought t2 (a fill after the cancel)
    and t1 and t3 again (duplicates).
    """
    clock = Timeline(BASE_US + 45 * 60 * SECOND_US)
    order = OrderFeed(
        clock,
        SOL_USDC,
        client_id=4_001,
        venue_id="8285120337",
        side=Side.ASK,
        order_type=OrderType.LIMIT,
        quantity="4",
        price="152",
    )
    market = market_info(SOL_USDC, clock)
    baseline = balances(clock, {"SOL": ("5", "0"), "USDC": ("100", "0")})
    submitted = order.submitted()
    t1 = order.fill(
        trade_id=2_961_004, quantity="1", price="152", fee="0.1216", fee_asset="USDC", maker=True
    )
    t1_at = clock.now - 1_137
    accepted = order.answered(VenueStatus.NEW, executed="0")
    clock.local(12 * SECOND_US)
    # t2 happens at the venue now; its frame is lost with the connection.
    lost = order.fill(
        trade_id=2_961_088, quantity="0.5", price="152", fee="0.0608", fee_asset="USDC", maker=True
    )
    t2_at = clock.now - 1_137
    clock.local(9 * SECOND_US)
    t3 = order.fill(
        trade_id=2_961_131, quantity="1.5", price="152", fee="0.1824", fee_asset="USDC", maker=True
    )
    t3_at = clock.now - 1_137
    clock.local(4 * SECOND_US)
    cancel = order.cancel_requested()
    cancelled = order.cancelled()
    history = fill_history(
        clock,
        order,
        [
            HistoryFill(
                trade_id=t.trade_id,
                quantity=t.quantity,
                price=t.price,
                fee=t.fee,
                fee_asset=t.fee_asset,
                maker=t.maker,
                time_us=at,
            )
            for t, at in ((t1, t1_at), (lost, t2_at), (t3, t3_at))
        ],
    )
    t1_again, t2_late, t3_again = history
    del lost  # only the history's copy of t2 ever arrived
    arrived: list[Event] = [
        market,
        baseline,
        submitted,
        t1,
        accepted,
        t3,
        cancel,
        cancelled,
        t1_again,
        t2_late,
        t3_again,
    ]
    natural: list[Event] = [
        market,
        baseline,
        submitted,
        accepted,
        t1,
        t2_late,
        t3,
        cancel,
        cancelled,
    ]
    return natural, arrived


def reordered_duplicates_converge() -> list[Event]:
    return _reordered_parts()[1]


def reordered_natural_order() -> list[Event]:
    """The distinct facts of `reordered_duplicates_converge` (the same event objects) in the
    order they happened at the venue, each once. Replaying it gives the same order and
    balances; tests/shell/test_golden.py checks so."""
    return _reordered_parts()[0]


SESSIONS: Final[dict[str, Callable[[], list[Event]]]] = {
    "spot_limit_partial_cancel": spot_limit_partial_cancel,
    "spot_market_buy_multi_fill": spot_market_buy_multi_fill,
    "post_only_rejected": post_only_rejected,
    "perp_position_lifecycle": perp_position_lifecycle,
    "reordered_duplicates_converge": reordered_duplicates_converge,
}


def write_session(directory: Path, name: str, events: Sequence[Event]) -> None:
    """Write `NAME.jsonl` (replacing it) and its `NAME.expected.json`."""
    log_path = directory / f"{name}.jsonl"
    log_path.unlink(missing_ok=True)
    with EventLog.open(log_path, fsync=Fsync.never()) as log:
        for event in events:
            log.append(event)
    state, reader = replay_file(str(log_path))
    document = summary_document(state, reader)
    expected = directory / f"{name}.expected.json"
    expected.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the recorded sessions.")
    parser.add_argument("--out", type=Path, default=REPLAY_DIR, help="directory to write")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name, build in SESSIONS.items():
        write_session(out, name, build())
        print(f"wrote {out / name}.jsonl and .expected.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
