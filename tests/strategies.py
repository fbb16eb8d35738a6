"""Hypothesis strategies for the domain events, and plain builders for example-based tests.

Two families of values:

- *format* strategies (`wide_decimals`, `texts`, `EVENT_STRATEGIES`, `events`) cover
  everything a field may hold: None for every optional, any unicode text, decimals of
  either sign from `1E-30` up to about `1E+38` (plain and exponent spellings: the log accepts
  magnitudes from 1E-40 to 1E+40, `oms.core.values.decimal_in_range`), negative
  zero, trailing zeros. Use them for serialization and for "never raises" properties.
- *trading* strategies (`quantities`, `prices`, `trading_event`, `histories`) produce
  figures a venue would send (positive, a few decimal places) for a small set of orders
  and markets, so that random sequences hit the same orders again and again.

The builders (`submit`, `accept`, `fill`, ...) make one event with sensible defaults for
the markets below; every figure a test relies on is passed explicitly by the test.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

from hypothesis import strategies as st

from oms.core.events import (
    EVENT_TYPES,
    AssetBalance,
    BalanceObserved,
    CancelRejected,
    CancelRequested,
    Event,
    FundingPaid,
    MarketInfo,
    MessageNotUnderstood,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderModified,
    OrderObserved,
    OrderSubmitted,
    PositionObserved,
    SubmitRejected,
    SubmitUnknown,
    TriggerFailed,
    TriggerPlaced,
)
from oms.core.values import (
    MarketType,
    OrderOrigin,
    OrderType,
    Side,
    Source,
    TimeInForce,
    VenueStatus,
)

__all__ = [
    "EVENT_STRATEGIES",
    "ETH_SOL",
    "ORIGINS",
    "PERP",
    "SPOT",
    "accept",
    "balances",
    "cancel",
    "events",
    "expire",
    "fill",
    "funding",
    "histories",
    "market",
    "markets",
    "observe",
    "position",
    "prices",
    "quantities",
    "sessions",
    "submit",
    "texts",
    "trading_event",
    "wide_decimals",
]

# --- markets used by the builders and the trading strategies ----------------------------------

SPOT: Final = "SOL_USDC"  # base SOL, quote USDC
ETH_SOL: Final = "ETH_SOL"  # base ETH, quote SOL: SOL is locked by bids here, asks there
PERP: Final = "SOL_USDC_PERP"
ORIGINS: Final = tuple(OrderOrigin)  # USER first


def market(
    symbol: str = SPOT,
    base: str = "SOL",
    quote: str = "USDC",
    market_type: MarketType = MarketType.SPOT,
) -> MarketInfo:
    return MarketInfo(
        source=Source.REST,
        recv_time_us=1,
        symbol=symbol,
        base_asset=base,
        quote_asset=quote,
        market_type=market_type,
        tick_size=Decimal("0.01"),
        step_size=Decimal("0.01"),
        min_quantity=Decimal("0.01"),
    )


def markets() -> list[MarketInfo]:
    """MarketInfo for SPOT, ETH_SOL and PERP."""
    return [
        market(SPOT, "SOL", "USDC"),
        market(ETH_SOL, "ETH", "SOL"),
        market(PERP, "SOL", "USDC", MarketType.PERP),
    ]


# --- builders -----------------------------------------------------------------------------------


def submit(
    client_id: int,
    side: Side,
    quantity: Decimal | str,
    price: Decimal | str | None,
    *,
    symbol: str = SPOT,
    order_type: OrderType = OrderType.LIMIT,
) -> OrderSubmitted:
    return OrderSubmitted(
        source=Source.LOCAL,
        recv_time_us=10,
        client_id=client_id,
        symbol=symbol,
        side=side,
        order_type=order_type,
        quantity=Decimal(quantity),
        price=None if price is None else Decimal(price),
        time_in_force=TimeInForce.GTC,
    )


def accept(
    venue_id: str,
    *,
    client_id: int | None = None,
    symbol: str = SPOT,
    side: Side | None = None,
    quantity: Decimal | str | None = None,
    price: Decimal | str | None = None,
    origin: OrderOrigin | str = OrderOrigin.USER,
) -> OrderAccepted:
    return OrderAccepted(
        source=Source.WS,
        recv_time_us=20,
        venue_time_us=19,
        symbol=symbol,
        venue_id=venue_id,
        client_id=client_id,
        side=side,
        order_type=None if side is None else OrderType.LIMIT,
        quantity=None if quantity is None else Decimal(quantity),
        price=None if price is None else Decimal(price),
        origin=OrderOrigin(origin),
    )


def fill(
    venue_id: str,
    trade_id: int,
    side: Side,
    quantity: Decimal | str,
    price: Decimal | str,
    *,
    fee: Decimal | str = "0",
    fee_asset: str = "USDC",
    client_id: int | None = None,
    cum: Decimal | str | None = None,
    status: VenueStatus | None = None,
    symbol: str = SPOT,
    origin: OrderOrigin | str = OrderOrigin.USER,
    order_quantity: Decimal | str | None = None,
    order_price: Decimal | str | None = None,
) -> OrderFilled:
    return OrderFilled(
        source=Source.WS,
        recv_time_us=30,
        venue_time_us=29,
        symbol=symbol,
        venue_id=venue_id,
        trade_id=trade_id,
        side=side,
        quantity=Decimal(quantity),
        price=Decimal(price),
        fee=Decimal(fee),
        fee_asset=fee_asset,
        maker=False,
        client_id=client_id,
        cum_quantity=None if cum is None else Decimal(cum),
        status=status,
        origin=OrderOrigin(origin),
        order_quantity=None if order_quantity is None else Decimal(order_quantity),
        order_price=None if order_price is None else Decimal(order_price),
    )


def cancel(
    *,
    venue_id: str | None = None,
    client_id: int | None = None,
    symbol: str = SPOT,
    cum: Decimal | str | None = None,
) -> OrderCancelled:
    return OrderCancelled(
        source=Source.WS,
        recv_time_us=40,
        symbol=symbol,
        venue_id=venue_id,
        client_id=client_id,
        cum_quantity=None if cum is None else Decimal(cum),
    )


def expire(
    *,
    venue_id: str | None = None,
    client_id: int | None = None,
    symbol: str = SPOT,
    cum: Decimal | str | None = None,
    reason: str | None = "ImmediateOrCancel",
) -> OrderExpired:
    return OrderExpired(
        source=Source.WS,
        recv_time_us=50,
        symbol=symbol,
        venue_id=venue_id,
        client_id=client_id,
        reason=reason,
        cum_quantity=None if cum is None else Decimal(cum),
    )


def observe(
    status: VenueStatus,
    *,
    venue_id: str | None = None,
    client_id: int | None = None,
    symbol: str = SPOT,
    executed: Decimal | str | None = None,
) -> OrderObserved:
    return OrderObserved(
        source=Source.RECONCILE,
        recv_time_us=60,
        symbol=symbol,
        status=status,
        venue_id=venue_id,
        client_id=client_id,
        executed_quantity=None if executed is None else Decimal(executed),
    )


def balances(figures: dict[str, tuple[str, str]]) -> BalanceObserved:
    """A snapshot from {asset: (available, locked)}."""
    return BalanceObserved(
        source=Source.REST,
        recv_time_us=70,
        balances=tuple(
            AssetBalance(asset=asset, available=Decimal(available), locked=Decimal(locked))
            for asset, (available, locked) in figures.items()
        ),
    )


def position(
    net_quantity: Decimal | str, *, symbol: str = PERP, entry: str | None = None
) -> PositionObserved:
    return PositionObserved(
        source=Source.REST,
        recv_time_us=80,
        symbol=symbol,
        net_quantity=Decimal(net_quantity),
        entry_price=None if entry is None else Decimal(entry),
    )


def funding(interval_end_us: int, amount: Decimal | str, *, symbol: str = PERP) -> FundingPaid:
    return FundingPaid(
        source=Source.REST,
        recv_time_us=90,
        symbol=symbol,
        interval_end_us=interval_end_us,
        amount=Decimal(amount),
    )


# --- format strategies --------------------------------------------------------------------------

_EDGE_DECIMALS: Final = tuple(
    Decimal(text)
    for text in (
        "0",
        "-0",
        "0E-10",
        "1E-18",
        "-1E-18",
        "1.50",
        "123456789012345678.123456789",
        "-123456789012345678.123456789",
        "1E+30",
        "0.000000000000000001",
    )
)

wide_decimals: st.SearchStrategy[Decimal] = st.one_of(
    st.sampled_from(_EDGE_DECIMALS),
    st.decimals(min_value=Decimal("-1E18"), max_value=Decimal("1E18"), places=9, allow_nan=False),
    st.decimals(min_value=Decimal("-1"), max_value=Decimal("1"), places=18, allow_nan=False),
    # Exponent form, as the venue never writes it but a Decimal may hold it.
    st.builds(
        lambda digits, exponent: Decimal(digits).scaleb(exponent),
        st.integers(-(10**10), 10**10),
        st.integers(-30, 28),
    ),
)
optional_decimals = st.none() | wide_decimals
texts = st.text(max_size=30)  # any unicode except lone surrogates (JSON cannot carry them)
optional_texts = st.none() | texts
uint32 = st.integers(0, 2**32 - 1)
times_us = st.integers(0, 2**62)
int64 = st.integers(-(2**63), 2**63 - 1)

_meta: dict[str, st.SearchStrategy[Any]] = {
    "source": st.sampled_from(Source),
    "recv_time_us": times_us,
    "venue_time_us": st.none() | times_us,
    "raw": optional_texts,
}
_sides = st.none() | st.sampled_from(Side)
_types = st.none() | st.sampled_from(OrderType)
# Known origins, and any text as an origin the venue may add later.
_origins = st.sampled_from(ORIGINS) | texts.map(OrderOrigin)

EVENT_STRATEGIES: Final[dict[type[Event], st.SearchStrategy[Event]]] = {
    OrderSubmitted: st.builds(
        OrderSubmitted,
        **_meta,
        client_id=uint32,
        symbol=texts,
        side=st.sampled_from(Side),
        order_type=st.sampled_from(OrderType),
        quantity=optional_decimals,
        quote_quantity=optional_decimals,
        price=optional_decimals,
        time_in_force=st.none() | st.sampled_from(TimeInForce),
        post_only=st.booleans(),
        reduce_only=st.booleans(),
    ),
    CancelRequested: st.builds(
        CancelRequested,
        **_meta,
        symbol=texts,
        client_id=st.none() | uint32,
        venue_id=optional_texts,
    ),
    SubmitRejected: st.builds(
        SubmitRejected, **_meta, symbol=texts, client_id=uint32, code=texts, message=texts
    ),
    SubmitUnknown: st.builds(SubmitUnknown, **_meta, symbol=texts, client_id=uint32, reason=texts),
    CancelRejected: st.builds(
        CancelRejected,
        **_meta,
        symbol=texts,
        code=texts,
        message=texts,
        client_id=st.none() | uint32,
        venue_id=optional_texts,
    ),
    OrderAccepted: st.builds(
        OrderAccepted,
        **_meta,
        symbol=texts,
        venue_id=texts,
        client_id=st.none() | uint32,
        side=_sides,
        order_type=_types,
        quantity=optional_decimals,
        quote_quantity=optional_decimals,
        price=optional_decimals,
        time_in_force=st.none() | st.sampled_from(TimeInForce),
        post_only=st.booleans(),
        reduce_only=st.booleans(),
        origin=_origins,
    ),
    OrderFilled: st.builds(
        OrderFilled,
        **_meta,
        symbol=texts,
        venue_id=texts,
        trade_id=int64,
        side=st.sampled_from(Side),
        quantity=wide_decimals,
        price=wide_decimals,
        fee=wide_decimals,
        fee_asset=texts,
        maker=st.booleans(),
        client_id=st.none() | uint32,
        cum_quantity=optional_decimals,
        cum_quote=optional_decimals,
        status=st.none() | st.sampled_from(VenueStatus),
        order_type=_types,
        order_quantity=optional_decimals,
        order_price=optional_decimals,
        origin=_origins,
    ),
    OrderCancelled: st.builds(
        OrderCancelled,
        **_meta,
        symbol=texts,
        venue_id=optional_texts,
        client_id=st.none() | uint32,
        side=_sides,
        order_type=_types,
        quantity=optional_decimals,
        price=optional_decimals,
        cum_quantity=optional_decimals,
        origin=_origins,
    ),
    OrderExpired: st.builds(
        OrderExpired,
        **_meta,
        symbol=texts,
        venue_id=optional_texts,
        client_id=st.none() | uint32,
        reason=optional_texts,
        side=_sides,
        order_type=_types,
        quantity=optional_decimals,
        price=optional_decimals,
        cum_quantity=optional_decimals,
        origin=_origins,
    ),
    OrderModified: st.builds(
        OrderModified,
        **_meta,
        symbol=texts,
        quantity=wide_decimals,
        venue_id=optional_texts,
        client_id=st.none() | uint32,
        price=optional_decimals,
    ),
    TriggerPlaced: st.builds(
        TriggerPlaced,
        **_meta,
        symbol=texts,
        venue_id=optional_texts,
        client_id=st.none() | uint32,
        side=_sides,
        order_type=_types,
        trigger_price=optional_decimals,
        trigger_quantity=optional_texts,
        price=optional_decimals,
    ),
    TriggerFailed: st.builds(
        TriggerFailed,
        **_meta,
        symbol=texts,
        venue_id=optional_texts,
        client_id=st.none() | uint32,
    ),
    OrderObserved: st.builds(
        OrderObserved,
        **_meta,
        symbol=texts,
        status=st.sampled_from(VenueStatus),
        venue_id=optional_texts,
        client_id=st.none() | uint32,
        side=_sides,
        order_type=_types,
        quantity=optional_decimals,
        quote_quantity=optional_decimals,
        price=optional_decimals,
        executed_quantity=optional_decimals,
        executed_quote_quantity=optional_decimals,
        expiry_reason=optional_texts,
        origin=_origins,
    ),
    BalanceObserved: st.builds(
        BalanceObserved,
        **_meta,
        balances=st.lists(
            st.builds(
                AssetBalance,
                asset=texts,
                available=wide_decimals,
                locked=wide_decimals,
                staked=wide_decimals,
            ),
            max_size=4,
        ).map(tuple),
    ),
    PositionObserved: st.builds(
        PositionObserved,
        **_meta,
        symbol=texts,
        net_quantity=wide_decimals,
        entry_price=optional_decimals,
        break_even_price=optional_decimals,
        mark_price=optional_decimals,
        realized_pnl=optional_decimals,
        unrealized_pnl=optional_decimals,
    ),
    FundingPaid: st.builds(
        FundingPaid,
        **_meta,
        symbol=texts,
        interval_end_us=times_us,
        amount=wide_decimals,
        rate=optional_decimals,
    ),
    MarketInfo: st.builds(
        MarketInfo,
        **_meta,
        symbol=texts,
        base_asset=texts,
        quote_asset=texts,
        market_type=st.sampled_from(MarketType),
        tick_size=wide_decimals,
        step_size=wide_decimals,
        min_quantity=wide_decimals,
    ),
    MessageNotUnderstood: st.builds(MessageNotUnderstood, **_meta, reason=texts),
}
assert set(EVENT_STRATEGIES) == set(EVENT_TYPES.values()), "a strategy for every event type"


def events() -> st.SearchStrategy[Event]:
    """Any event of any type, with any valid field values (format strategies)."""
    return st.one_of(*EVENT_STRATEGIES.values())


# --- trading strategies -------------------------------------------------------------------------


def quantities(max_steps: int = 1000, step: str = "0.01") -> st.SearchStrategy[Decimal]:
    """A positive multiple of `step`, at most `max_steps` steps."""
    unit = Decimal(step)
    return st.integers(1, max_steps).map(lambda n: n * unit)


def prices(max_steps: int = 20_000, step: str = "0.01") -> st.SearchStrategy[Decimal]:
    unit = Decimal(step)
    return st.integers(1, max_steps).map(lambda n: n * unit)


_CLIENT_IDS: Final = (1, 2, 3)
_SYMBOLS: Final = (SPOT, ETH_SOL, PERP)
_ASSETS: Final = ("SOL", "USDC", "ETH", "BPX")


def _venue_id(client_id: int) -> str:
    return f"V{client_id}"


@st.composite
def trading_event(draw: st.DrawFn) -> Event:
    """One trading event on a small set of orders (client ids 1-3, trade ids 1-6)."""
    client_id = draw(st.sampled_from(_CLIENT_IDS))
    venue_id = _venue_id(client_id)
    # The symbol and side belong to the order, so that reports on one order agree on them.
    symbol = _SYMBOLS[client_id % len(_SYMBOLS)]
    side = Side.BID if client_id % 2 else Side.ASK
    # Reports name the order by both ids, or only one of them.
    cid, vid = draw(st.sampled_from([(client_id, venue_id), (None, venue_id), (client_id, None)]))
    ws = Source.WS
    t = draw(times_us)
    kind = draw(st.integers(0, 13))
    if kind == 0:
        return submit(client_id, side, draw(quantities(500)), draw(prices(2000)), symbol=symbol)
    if kind == 1:
        return OrderAccepted(
            source=ws,
            recv_time_us=t,
            symbol=symbol,
            venue_id=venue_id,
            client_id=cid,
            side=side,
            quantity=draw(st.none() | quantities(500)),
            price=draw(st.none() | prices(2000)),
        )
    if kind in (2, 3, 4):
        return OrderFilled(
            source=ws,
            recv_time_us=t,
            symbol=symbol,
            venue_id=venue_id,
            client_id=cid,
            trade_id=draw(st.integers(1, 6)),
            side=side,
            quantity=draw(quantities(300) | st.just(Decimal(0))),
            price=draw(prices(2000)),
            fee=draw(st.sampled_from([Decimal(0), Decimal("0.01"), Decimal("0.0001")])),
            fee_asset=draw(st.sampled_from(_ASSETS)),
            maker=draw(st.booleans()),
            cum_quantity=draw(st.none() | quantities(500)),
            status=draw(st.none() | st.sampled_from(VenueStatus)),
            origin=draw(st.sampled_from(ORIGINS[:2])),
        )
    if kind == 5:
        return OrderCancelled(
            source=ws,
            recv_time_us=t,
            symbol=symbol,
            venue_id=vid,
            client_id=cid,
            cum_quantity=draw(st.none() | quantities()),
        )
    if kind == 6:
        return OrderExpired(
            source=ws, recv_time_us=t, symbol=symbol, venue_id=vid, client_id=cid, reason="IOC"
        )
    if kind == 7:
        return OrderObserved(
            source=Source.RECONCILE,
            recv_time_us=t,
            symbol=symbol,
            venue_id=vid,
            client_id=cid,
            status=draw(st.sampled_from(VenueStatus)),
            executed_quantity=draw(st.none() | quantities()),
        )
    if kind == 8:
        return OrderModified(
            source=ws,
            recv_time_us=t,
            symbol=symbol,
            venue_id=vid,
            client_id=cid,
            quantity=draw(quantities(500)),
        )
    if kind == 9:
        commands: list[Event] = [
            CancelRequested(
                source=Source.LOCAL,
                recv_time_us=t,
                symbol=symbol,
                venue_id=vid,
                client_id=cid,
            ),
            SubmitUnknown(
                source=Source.REST,
                recv_time_us=t,
                symbol=symbol,
                client_id=client_id,
                reason="timeout",
            ),
            TriggerPlaced(source=ws, recv_time_us=t, symbol=symbol, venue_id=vid, client_id=cid),
            TriggerFailed(source=ws, recv_time_us=t, symbol=symbol, venue_id=vid, client_id=cid),
        ]
        return draw(st.sampled_from(commands))
    if kind == 10:
        outcomes: list[Event] = [
            SubmitRejected(
                source=Source.REST,
                recv_time_us=t,
                symbol=symbol,
                client_id=client_id,
                code="INVALID_ORDER",
                message="no",
            ),
            CancelRejected(
                source=Source.REST,
                recv_time_us=t,
                symbol=symbol,
                code="RESOURCE_NOT_FOUND",
                message="",
                venue_id=vid,
                client_id=cid,
            ),
        ]
        return draw(st.sampled_from(outcomes))
    if kind == 11:
        snapshot = draw(
            st.dictionaries(
                st.sampled_from(_ASSETS),
                st.tuples(quantities(10**6), quantities(1000)),
                max_size=len(_ASSETS),
            )
        )
        return BalanceObserved(
            source=Source.REST,
            recv_time_us=t,
            balances=tuple(
                AssetBalance(asset=asset, available=available, locked=locked)
                for asset, (available, locked) in sorted(snapshot.items())
            ),
        )
    if kind == 12:
        return PositionObserved(
            source=Source.REST,
            recv_time_us=t,
            symbol=PERP,
            net_quantity=draw(st.sampled_from([Decimal(0), Decimal(-1)]) | quantities()),
            entry_price=draw(st.none() | prices()),
        )
    return FundingPaid(
        source=Source.REST,
        recv_time_us=t,
        symbol=PERP,
        interval_end_us=draw(st.sampled_from([3_600_000_000, 7_200_000_000])),
        amount=draw(st.sampled_from([Decimal("-0.5"), Decimal("0.25")])),
    )


def histories(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[list[Event]]:
    """Markets first, then random trading events on a few orders: realistic figures, but any
    mix and order (duplicates, unknown orders, forbidden transitions, overfills, drift)."""
    return st.lists(trading_event(), min_size=min_size, max_size=max_size).map(
        lambda tail: [*markets(), *tail]
    )


@st.composite
def _order_life(draw: st.DrawFn, client_id: int, trade_ids: list[int]) -> list[Event]:
    """One order as a healthy venue reports it: submitted, accepted, filled in parts (the
    venue's cumulative figures agreeing), often cancelled, on any of the three markets."""
    symbol = draw(st.sampled_from(_SYMBOLS))
    side = draw(st.sampled_from(Side))
    quantity = draw(quantities(500))
    price = draw(prices(2000))
    venue_id = _venue_id(client_id)
    events: list[Event] = [submit(client_id, side, quantity, price, symbol=symbol)]
    events.append(
        accept(
            venue_id,
            client_id=client_id,
            symbol=symbol,
            side=side,
            quantity=draw(st.sampled_from([quantity, None])),
            price=draw(st.sampled_from([price, None])),
        )
    )
    filled = Decimal(0)
    for _ in range(draw(st.integers(0, 4))):
        part = draw(quantities(300))
        if filled + part > quantity:
            break
        filled += part
        trade_ids[0] += draw(st.integers(1, 3))
        events.append(
            fill(
                venue_id,
                trade_ids[0],
                side,
                part,
                draw(st.sampled_from([price, price - Decimal("0.01")])),
                fee=draw(st.sampled_from(["0", "0.01", "0.0003"])),
                fee_asset=draw(st.sampled_from(_ASSETS)),
                client_id=client_id,
                cum=draw(st.sampled_from([filled, None])),
                status=VenueStatus.FILLED if filled == quantity else VenueStatus.PARTIALLY_FILLED,
                symbol=symbol,
            )
        )
    if filled < quantity and draw(st.booleans()):
        if draw(st.booleans()):
            events.append(
                CancelRequested(
                    source=Source.LOCAL,
                    recv_time_us=35,
                    symbol=symbol,
                    client_id=client_id,
                    venue_id=draw(st.sampled_from([venue_id, None])),
                )
            )
        events.append(
            cancel(
                venue_id=draw(st.sampled_from([venue_id, None])),
                client_id=client_id,
                symbol=symbol,
                cum=draw(st.sampled_from([filled, None])),
            )
        )
    return events


@st.composite
def sessions(draw: st.DrawFn, max_orders: int = 8) -> list[Event]:
    """Markets, then several healthy orders (`_order_life`) interleaved as a venue's reports
    interleave, each order's own reports in order; sometimes a balance snapshot among them.
    The usual shape of a recorded session, unlike `histories`, which is mostly trouble."""
    trade_ids = [draw(st.integers(0, 5))]
    lives = [
        draw(_order_life(client_id, trade_ids))
        for client_id in range(10, 10 + draw(st.integers(1, max_orders)))
    ]
    random = draw(st.randoms(use_true_random=False))
    out: list[Event] = [*markets()]
    while lives:
        life = random.choice(lives)
        out.append(life.pop(0))
        if not life:
            lives.remove(life)
        if random.random() < 0.05:
            out.append(balances({"SOL": ("1000", "0"), "USDC": ("50000", "0")}))
    return out
