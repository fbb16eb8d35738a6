"""Hypothesis strategies for the engine's events and for whole Backpack-shaped sessions.

Three families:

- *format* strategies (`wide_decimals`, `texts`, `EVENT_STRATEGIES`, `events`) cover
  everything a field may hold: None for every optional, any unicode text, decimals of
  either sign from `1E-30` up to about `1E+38` (plain and exponent spellings: the log accepts
  magnitudes from 1E-40 to 1E+40, `oms.core.values.decimal_in_range`), negative
  zero, trailing zeros. Use them for serialization and for "never raises" properties.
- *trading* strategies (`quantities`, `prices`, `trading_event`, `histories`) produce
  figures a venue would send (positive, a few decimal places) for a small set of orders
  and markets, in any mix and order (duplicates, unknown orders, forbidden transitions,
  overfills), so that random sequences hit the same orders again and again.
- *session* strategies (`sessions`) produce consistent sessions, as the venue would send
  them: markets first, orders with their accepts, fills (trade ids in sequence per market),
  cancels and expiries, funding, and balance and position snapshots that agree with what
  came before. Knobs then duplicate, drop, reorder and delay the stream's messages; the
  result keeps both what the venue sent (`truth`) and what reached the engine (`delivered`).

The builders (`submit`, `accept`, `fill`, ...) live in `oms.testing.builders` and are
re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

import attrs
import msgspec
from hypothesis import strategies as st

from oms.core.events import (
    EVENT_TYPES,
    AssetBalance,
    BalanceObserved,
    CancelRejected,
    CancelRequested,
    Event,
    FundingPaid,
    KillSwitchReset,
    KillSwitchTripped,
    MarketInfo,
    MarkObserved,
    MessageNotUnderstood,
    OrderAccepted,
    OrderCancelled,
    OrderDenied,
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
from oms.core.reducer import replay
from oms.core.values import (
    MarketType,
    OrderOrigin,
    OrderType,
    Side,
    Source,
    TimeInForce,
    VenueStatus,
)
from oms.testing.builders import (
    ETH_SOL,
    ORIGINS,
    PERP,
    SPOT,
    accept,
    balances,
    cancel,
    expire,
    fill,
    funding,
    mark,
    market,
    markets,
    observe,
    position,
    submit,
)

__all__ = [
    "EVENT_STRATEGIES",
    "ETH_SOL",
    "ORIGINS",
    "PERP",
    "SPOT",
    "DrawnSession",
    "accept",
    "balances",
    "cancel",
    "events",
    "expire",
    "fill",
    "funding",
    "histories",
    "mark",
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

# The links of a venue report: an attached exit's parent, a venue strategy's id (either makes
# a report of an order we did not send expected rather than an anomaly).
_links: Final[dict[str, st.SearchStrategy[Any]]] = {
    "related_order_id": st.none() | texts,
    "strategy_id": st.none() | int64,
}
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
        **_links,
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
        **_links,
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
        **_links,
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
        **_links,
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
        **_links,
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
        **_links,
        symbol=texts,
        venue_id=optional_texts,
        client_id=st.none() | uint32,
    ),
    OrderObserved: st.builds(
        OrderObserved,
        **_meta,
        **_links,
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
    OrderDenied: st.builds(
        OrderDenied,
        **_meta,
        client_id=uint32,
        symbol=texts,
        side=st.sampled_from(Side),
        order_type=st.sampled_from(OrderType),
        limit=texts,
        scope=texts,
        reason=texts,
        quantity=optional_decimals,
        quote_quantity=optional_decimals,
        price=optional_decimals,
        reduce_only=st.booleans(),
    ),
    KillSwitchTripped: st.builds(KillSwitchTripped, **_meta, reason=texts, by=texts),
    KillSwitchReset: st.builds(KillSwitchReset, **_meta, reason=texts),
    MarkObserved: st.builds(
        MarkObserved,
        **_meta,
        symbol=texts,
        mark_price=wide_decimals,
        index_price=optional_decimals,
        funding_rate=optional_decimals,
    ),
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


# --- session strategies -------------------------------------------------------------------------


@attrs.frozen(repr=False)
class DrawnSession:
    """A drawn session: `truth` is what the venue sent, each message once and in the venue's
    order; `delivered` is what reached the engine after the knobs (duplicates, drops,
    reorders, delays). Both start with the same markets and keep local commands (submits)
    and REST snapshots where they were."""

    truth: tuple[Event, ...]
    delivered: tuple[Event, ...]
    dropped: tuple[Event, ...] = ()

    def __repr__(self) -> str:
        """One line an event, with the fields that are not at their defaults (receive times
        and sources left out): what Hypothesis prints for a failing example."""
        lines = ["DrawnSession(delivered=["]
        lines += [f"    {brief(event)}," for event in self.delivered]
        lines.append("], dropped=[")
        lines += [f"    {brief(event)}," for event in self.dropped]
        lines.append("])")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis (and IPython) print a failing example through this."""
        printer.text(repr(self))


def brief(event: Event) -> str:
    """`event` as `Type(field=value, ...)` with only the fields that are not at their default
    (and neither its receive time nor its source)."""
    parts = []
    for name in event.__struct_fields__:
        if name in ("recv_time_us", "source"):
            continue
        value = getattr(event, name)
        default = _DEFAULTS.get((type(event), name), _NO_DEFAULT)
        if value == default and type(value) is type(default):
            continue
        if isinstance(value, Decimal):
            parts.append(f"{name}={value}")
        elif isinstance(value, tuple):
            items = (brief(v) if hasattr(v, "__struct_fields__") else repr(v) for v in value)
            parts.append(f"{name}=[{', '.join(items)}]")
        elif hasattr(value, "value") and isinstance(getattr(value, "value", None), str):
            parts.append(f"{name}={value.value}")
        elif hasattr(value, "__struct_fields__"):
            parts.append(f"{name}={brief(value)}")
        else:
            parts.append(f"{name}={value!r}")
    return f"{type(event).__name__}({', '.join(parts)})"


_NO_DEFAULT: Final = object()
_DEFAULTS: Final[dict[tuple[type[Any], str], Any]] = {}
for _cls in (*EVENT_TYPES.values(), AssetBalance):
    for _name, _default in zip(
        _cls.__struct_fields__[len(_cls.__struct_fields__) - len(_cls.__struct_defaults__) :],
        _cls.__struct_defaults__,
        strict=True,
    ):
        _DEFAULTS[(_cls, _name)] = _default


# What the account holds at the start of a session: enough for every order drawn below.
FUNDS: Final = {"USDC": ("1000000", "0"), "SOL": ("10000", "0"), "ETH": ("1000", "0")}
_BASE: Final = {SPOT: "SOL", ETH_SOL: "ETH", PERP: "SOL"}
_QUOTE: Final = {SPOT: "USDC", ETH_SOL: "SOL", PERP: "USDC"}


def _is_stream(event: Event) -> bool:
    return event.source is Source.WS


@st.composite
def _order_messages(draw: st.DrawFn, client_id: int, symbols: Sequence[str]) -> list[Event]:
    """One order's life as the venue reports it: the submit, the accept, its fills (trade id
    0 for now: numbered per market once the orders are interleaved), then a cancel or an
    expiry if it did not fill completely, or nothing (it rests)."""
    symbol = draw(st.sampled_from(symbols))
    side = draw(st.sampled_from(Side))
    kind = draw(st.sampled_from([OrderType.LIMIT, OrderType.LIMIT_MAKER, OrderType.MARKET]))
    steps = draw(st.integers(1, 40))
    quantity = steps * Decimal("0.1")
    price = draw(st.integers(500, 1500)) * Decimal("0.1")
    venue_id = f"V{client_id}"
    limit = None if kind is OrderType.MARKET else price
    out: list[Event] = [
        OrderSubmitted(
            source=Source.LOCAL,
            recv_time_us=0,
            client_id=client_id,
            symbol=symbol,
            side=side,
            order_type=kind,
            quantity=quantity,
            price=limit,
            time_in_force=None if kind is OrderType.MARKET else TimeInForce.GTC,
            post_only=kind is OrderType.LIMIT_MAKER,
        ),
        OrderAccepted(
            source=Source.WS,
            recv_time_us=0,
            symbol=symbol,
            venue_id=venue_id,
            client_id=client_id,
            side=side,
            order_type=kind,
            quantity=quantity,
            price=limit,
            post_only=kind is OrderType.LIMIT_MAKER,
        ),
    ]
    # Split some or all of the quantity into fills.
    filled_steps = draw(st.integers(0 if kind is not OrderType.MARKET else 1, steps))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, filled_steps - 1)), max_size=3)))
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, filled_steps], strict=True) if b > a]
    cum = Decimal(0)
    maker = kind is not OrderType.MARKET
    for part in parts:
        size = part * Decimal("0.1")
        cum += size
        at = price if maker else price + draw(st.integers(-5, 5)) * Decimal("0.1")
        out.append(
            OrderFilled(
                source=Source.WS,
                recv_time_us=0,
                symbol=symbol,
                venue_id=venue_id,
                client_id=client_id,
                trade_id=0,
                side=side,
                quantity=size,
                price=at,
                fee=(size * at * Decimal("0.001")).quantize(Decimal("0.0001")),
                fee_asset=_QUOTE[symbol],
                maker=maker,
                cum_quantity=cum,
                status=VenueStatus.FILLED if cum == quantity else VenueStatus.PARTIALLY_FILLED,
            )
        )
    if cum < quantity:
        ending = draw(st.sampled_from(["cancel", "expire", "rest"]))
        if kind is OrderType.MARKET or ending == "expire":
            out.append(
                OrderExpired(
                    source=Source.WS,
                    recv_time_us=0,
                    symbol=symbol,
                    venue_id=venue_id,
                    client_id=client_id,
                    reason="ImmediateOrCancel" if kind is OrderType.MARKET else "PriceBand",
                    cum_quantity=cum,
                )
            )
        elif ending == "cancel":
            out.append(
                OrderCancelled(
                    source=Source.WS,
                    recv_time_us=0,
                    symbol=symbol,
                    venue_id=venue_id,
                    client_id=client_id,
                    cum_quantity=cum,
                )
            )
    return out


def _snapshots(prefix: Sequence[Event], positions: bool) -> list[Event]:
    """Balance (and position) snapshots that agree with everything in `prefix`, as REST
    answers taken at that point would."""
    state = replay(prefix)
    out: list[Event] = [
        BalanceObserved(
            source=Source.REST,
            recv_time_us=0,
            balances=tuple(
                AssetBalance(asset=asset, available=b.available, locked=b.locked)
                for asset, b in sorted(state.balances.items())
            ),
        )
    ]
    if positions:
        held = state.positions.get(PERP)
        out.append(
            PositionObserved(
                source=Source.REST,
                recv_time_us=0,
                symbol=PERP,
                net_quantity=Decimal(0) if held is None else held.net_quantity,
                entry_price=None if held is None or not held.net_quantity else held.entry_price,
            )
        )
    return out


def _restamp(events: Sequence[Event]) -> list[Event]:
    """Receive times in delivery order (1 µs apart), as a recording would have them."""
    return [_evolve(event, recv_time_us=1_000_000 + i) for i, event in enumerate(events)]


def _evolve(event: Event, **changes: Any) -> Event:
    """A copy of `event` with `changes` (events are frozen msgspec structs)."""
    return msgspec.structs.replace(event, **changes)


@st.composite
def sessions(
    draw: st.DrawFn,
    *,
    max_orders: int = 6,
    symbols: Sequence[str] = (SPOT, ETH_SOL, PERP),
    duplicates: int = 0,
    drops: int = 0,
    reorders: int = 0,
    delays: int = 0,
    max_delay: int = 5,
    snapshots: bool = True,
    funding_payments: bool = True,
) -> DrawnSession:
    """A consistent session on `symbols` (any of `SPOT`, `ETH_SOL`, `PERP`), then up to
    `duplicates` stream messages delivered twice, up to `drops` lost, up to `reorders`
    neighbouring pairs swapped and up to `delays` moved up to `max_delay` places later.

    Only stream messages move: a submit stays before its order's reports, and no stream
    message crosses a REST snapshot (a snapshot is taken where it stands). With `snapshots`,
    the session opens with a funded balance snapshot and may take more later, each agreeing
    with the venue's messages before it. With `funding_payments`, funding may be paid on
    the perp.
    """
    # A list, so that shrinking can drop whole orders; ids are given by position after.
    drawn = draw(st.lists(_order_messages(0, symbols), min_size=1, max_size=max_orders))
    lives = [
        [
            _evolve(e, client_id=i, **({"venue_id": f"V{i}"} if hasattr(e, "venue_id") else {}))
            for e in life
        ]
        for i, life in enumerate(drawn, start=1)
    ]
    count = len(lives)
    # Interleave the orders' lives, each kept in its own order.
    merged: list[Event] = []
    cursors = [0] * count
    while any(c < len(life) for c, life in zip(cursors, lives, strict=True)):
        live = [i for i in range(count) if cursors[i] < len(lives[i])]
        pick = draw(st.sampled_from(live))
        merged.append(lives[pick][cursors[pick]])
        cursors[pick] += 1
    # Trade ids in sequence per market, in the venue's order.
    next_trade: dict[str, int] = {}
    for i, event in enumerate(merged):
        if isinstance(event, OrderFilled):
            next_trade[event.symbol] = next_trade.get(event.symbol, 0) + 1
            merged[i] = _evolve(event, trade_id=next_trade[event.symbol])
    has_perp = PERP in symbols
    truth: list[Event] = [m for m in markets() if m.symbol in symbols]
    if snapshots:
        truth.append(balances(dict(FUNDS)))
        if has_perp:
            truth.append(position("0", symbol=PERP))
    interval = 0
    for event in merged:
        truth.append(event)
        # Drawn so that shrinking (towards 0) removes them.
        if has_perp and funding_payments and draw(st.integers(0, 9)) == 9:
            interval += 1
            truth.append(funding(interval * 3_600_000_000, draw(st.sampled_from(["-0.5", "0.25"]))))
        if snapshots and draw(st.integers(0, 9)) == 9:
            truth.extend(_snapshots(truth, has_perp))
    truth = _restamp(truth)
    delivered, dropped = _perturb(
        draw,
        truth,
        duplicates=duplicates,
        drops=drops,
        reorders=reorders,
        delays=delays,
        max_delay=max_delay,
    )
    return DrawnSession(truth=tuple(truth), delivered=tuple(delivered), dropped=tuple(dropped))


def _perturb(
    draw: st.DrawFn,
    truth: list[Event],
    *,
    duplicates: int,
    drops: int,
    reorders: int,
    delays: int,
    max_delay: int,
) -> tuple[list[Event], list[Event]]:
    out = list(truth)
    dropped: list[Event] = []

    def stream_positions() -> list[int]:
        return [i for i, e in enumerate(out) if _is_stream(e)]

    def movable(j: int) -> bool:
        """Whether a stream message may pass the message at `j`: never a submit or a
        snapshot."""
        return _is_stream(out[j])

    for _ in range(draw(st.integers(0, duplicates))):
        places = stream_positions()
        if not places:
            break
        i = draw(st.sampled_from(places))
        out.insert(i + 1, out[i])
    for _ in range(draw(st.integers(0, drops))):
        places = stream_positions()
        if not places:
            break
        dropped.append(out.pop(draw(st.sampled_from(places))))
    for _ in range(draw(st.integers(0, reorders))):
        places = [i for i in stream_positions() if i + 1 < len(out) and movable(i + 1)]
        if not places:
            break
        i = draw(st.sampled_from(places))
        out[i], out[i + 1] = out[i + 1], out[i]
    for _ in range(draw(st.integers(0, delays))):
        places = stream_positions()
        if not places:
            break
        i = draw(st.sampled_from(places))
        j = i
        for _ in range(draw(st.integers(1, max_delay))):
            if j + 1 < len(out) and movable(j + 1):
                j += 1
        out.insert(j, out.pop(i))
    return _restamp(out), dropped
