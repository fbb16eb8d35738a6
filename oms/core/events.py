"""Domain events: immutable facts, named in the past tense.

Every event carries:

- `source`: `local` (our own command, logged before it is sent), `ws`, `rest` or `reconcile`;
- `venue_time_us`: the venue's time of the fact in microseconds since the epoch (`None` for
  local commands and for venue messages that carry no time);
- `recv_time_us`: when this process received (or, for local events, made) it, microseconds;
- `raw`: for venue-derived events, the venue message exactly as received (text), so a fixed
  codec can derive events again from an old session. `None` for local events.

Construction is dumb: the classes validate nothing. Wire formats live in the adapters'
codecs, the log format in `oms.core.serialization`. `docs/events.md` is the catalogue.
Orders are named by `client_id` (our uint32) and/or `venue_id` (Backpack's order id string);
venue-originated orders (liquidations, ADL) have only the venue id.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import attrs

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
    "EVENT_TYPES",
    "AssetBalance",
    "BalanceObserved",
    "CancelRejected",
    "CancelRequested",
    "Event",
    "FundingPaid",
    "MarketInfo",
    "MessageNotUnderstood",
    "OrderAccepted",
    "OrderCancelled",
    "OrderEvent",
    "OrderExpired",
    "OrderFilled",
    "OrderModified",
    "OrderObserved",
    "OrderSubmitted",
    "PositionObserved",
    "SubmitRejected",
    "SubmitUnknown",
    "TriggerFailed",
    "TriggerPlaced",
]


@attrs.frozen(kw_only=True)
class _Meta:
    """Fields every event carries (see the module docstring). Only events derive from it."""

    source: Source
    recv_time_us: int
    venue_time_us: int | None = None
    raw: str | None = None


# --- local commands, logged before they are sent -------------------------------------------


@attrs.frozen(kw_only=True)
class OrderSubmitted(_Meta):
    """We are about to send a new order. `client_id` is a uint32 unique in the account's log.

    LIMIT and LIMIT_MAKER need `price` and `quantity`; MARKET needs `quantity` or
    `quote_quantity` (spend or receive at most this much quote).
    """

    client_id: int
    symbol: str
    side: Side
    order_type: OrderType
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    post_only: bool = False
    reduce_only: bool = False


@attrs.frozen(kw_only=True)
class CancelRequested(_Meta):
    """We are about to ask the venue to cancel an order."""

    symbol: str
    client_id: int | None = None
    venue_id: str | None = None


# --- outcomes of our commands ---------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SubmitRejected(_Meta):
    """The venue refused a submit (a definitive error answer such as INVALID_ORDER)."""

    symbol: str
    client_id: int
    code: str
    message: str


@attrs.frozen(kw_only=True)
class SubmitUnknown(_Meta):
    """A submit got no definitive answer (timeout, 5xx, connection lost after sending).

    The order is in doubt until a venue report or reconciliation resolves it; never a guess.
    """

    symbol: str
    client_id: int
    reason: str


@attrs.frozen(kw_only=True)
class CancelRejected(_Meta):
    """The venue refused a cancel (for example RESOURCE_NOT_FOUND: already finished)."""

    symbol: str
    code: str
    message: str
    client_id: int | None = None
    venue_id: str | None = None


# --- venue order reports ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class OrderAccepted(_Meta):
    """The order is on the venue (`orderAccepted`, or an execute response with status New)."""

    symbol: str
    venue_id: str
    client_id: int | None = None
    side: Side | None = None
    order_type: OrderType | None = None
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    post_only: bool = False
    reduce_only: bool = False
    origin: OrderOrigin = OrderOrigin.USER


@attrs.frozen(kw_only=True)
class OrderFilled(_Meta):
    """One fill (`orderFill`, or an item of the fill history).

    `quantity`/`price` are this fill (`l`/`L`); `fee` is a flat amount in `fee_asset` (`n`/`N`).
    `cum_quantity`/`cum_quote` are the venue's cumulative executed figures after this fill
    (`z`/`Z`), `None` where the source does not give them (fill history).
    `status` is the order status the venue reported with the fill (`X`), if any.
    Fills are keyed by (symbol, venue_id, trade_id).
    """

    symbol: str
    venue_id: str
    trade_id: int
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str
    maker: bool
    client_id: int | None = None
    cum_quantity: Decimal | None = None
    cum_quote: Decimal | None = None
    status: VenueStatus | None = None
    order_type: OrderType | None = None
    order_quantity: Decimal | None = None
    order_price: Decimal | None = None
    origin: OrderOrigin = OrderOrigin.USER


@attrs.frozen(kw_only=True)
class OrderCancelled(_Meta):
    """The order left the book by a cancel (`orderCancelled`, or a cancel response)."""

    symbol: str
    venue_id: str | None = None
    client_id: int | None = None
    side: Side | None = None
    order_type: OrderType | None = None
    quantity: Decimal | None = None
    price: Decimal | None = None
    cum_quantity: Decimal | None = None
    origin: OrderOrigin = OrderOrigin.USER


@attrs.frozen(kw_only=True)
class OrderExpired(_Meta):
    """The venue expired the order (`orderExpired`): IOC/FOK remainder, post-only taker, ...

    `reason` is the venue's text (`R` on the stream, `expiryReason` over REST).
    """

    symbol: str
    venue_id: str | None = None
    client_id: int | None = None
    reason: str | None = None
    side: Side | None = None
    order_type: OrderType | None = None
    quantity: Decimal | None = None
    price: Decimal | None = None
    cum_quantity: Decimal | None = None
    origin: OrderOrigin = OrderOrigin.USER


@attrs.frozen(kw_only=True)
class OrderModified(_Meta):
    """A resting reduce-only order's quantity was decreased by the venue (`orderModified`)."""

    symbol: str
    quantity: Decimal
    venue_id: str | None = None
    client_id: int | None = None
    price: Decimal | None = None


@attrs.frozen(kw_only=True)
class TriggerPlaced(_Meta):
    """A conditional order waits for its trigger (`triggerPlaced`).

    `trigger_quantity` is text: Backpack allows a percentage such as `"80%"`.
    """

    symbol: str
    venue_id: str | None = None
    client_id: int | None = None
    side: Side | None = None
    order_type: OrderType | None = None
    trigger_price: Decimal | None = None
    trigger_quantity: str | None = None
    price: Decimal | None = None


@attrs.frozen(kw_only=True)
class TriggerFailed(_Meta):
    """A conditional order's trigger could not be turned into an order (`triggerFailed`)."""

    symbol: str
    venue_id: str | None = None
    client_id: int | None = None


@attrs.frozen(kw_only=True)
class OrderObserved(_Meta):
    """An order as a REST query or the order history shows it (reconciliation's view).

    It carries the venue status and cumulative executed figures but no individual fills:
    a quantity executed beyond the fills seen is a fill gap, to be closed from fill history.
    """

    symbol: str
    status: VenueStatus
    venue_id: str | None = None
    client_id: int | None = None
    side: Side | None = None
    order_type: OrderType | None = None
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    price: Decimal | None = None
    executed_quantity: Decimal | None = None
    executed_quote_quantity: Decimal | None = None
    expiry_reason: str | None = None
    origin: OrderOrigin = OrderOrigin.USER


# --- account and market -----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class AssetBalance:
    """One asset of a balance snapshot (`GET /api/v1/capital`)."""

    asset: str
    available: Decimal
    locked: Decimal
    staked: Decimal = Decimal(0)


@attrs.frozen(kw_only=True)
class BalanceObserved(_Meta):
    """A complete balance snapshot: an asset absent from it is observed as zero."""

    balances: tuple[AssetBalance, ...]


@attrs.frozen(kw_only=True)
class PositionObserved(_Meta):
    """The venue's view of one perp position (REST `/position`, or `account.positionUpdate`).

    `net_quantity` is signed: positive long, negative short, zero flat.
    `covers_fills_before_us`, set by reconciliation on a report it sends as the account's
    baseline: every fill with an earlier venue time is inside these figures (the fill history
    looked at before it reached back to that time), so one that turns up later does not move
    the adopted position again.
    """

    symbol: str
    net_quantity: Decimal
    entry_price: Decimal | None = None
    break_even_price: Decimal | None = None
    mark_price: Decimal | None = None
    realized_pnl: Decimal | None = None
    unrealized_pnl: Decimal | None = None
    covers_fills_before_us: int | None = None


@attrs.frozen(kw_only=True)
class FundingPaid(_Meta):
    """A funding payment on a perp position. `amount` > 0 received, < 0 paid (quote asset).

    Keyed by (symbol, interval_end_us): the same interval twice is counted once.
    """

    symbol: str
    interval_end_us: int
    amount: Decimal
    rate: Decimal | None = None


@attrs.frozen(kw_only=True)
class MarketInfo(_Meta):
    """A market's definition (`GET /api/v1/markets`): assets, type and filters."""

    symbol: str
    base_asset: str
    quote_asset: str
    market_type: MarketType
    tick_size: Decimal
    step_size: Decimal
    min_quantity: Decimal


@attrs.frozen(kw_only=True)
class MessageNotUnderstood(_Meta):
    """A venue message the codec could not turn into events; `raw` keeps it, `reason` says why.

    Recorded so that nothing received is lost and the stream never stops on it.
    """

    reason: str


OrderEvent = (
    OrderSubmitted
    | CancelRequested
    | SubmitRejected
    | SubmitUnknown
    | CancelRejected
    | OrderAccepted
    | OrderFilled
    | OrderCancelled
    | OrderExpired
    | OrderModified
    | TriggerPlaced
    | TriggerFailed
    | OrderObserved
)

Event = (
    OrderEvent
    | BalanceObserved
    | PositionObserved
    | FundingPaid
    | MarketInfo
    | MessageNotUnderstood
)

EVENT_TYPES: Final[dict[str, type[Event]]] = {
    cls.__name__: cls
    for cls in (
        OrderSubmitted,
        CancelRequested,
        SubmitRejected,
        SubmitUnknown,
        CancelRejected,
        OrderAccepted,
        OrderFilled,
        OrderCancelled,
        OrderExpired,
        OrderModified,
        TriggerPlaced,
        TriggerFailed,
        OrderObserved,
        BalanceObserved,
        PositionObserved,
        FundingPaid,
        MarketInfo,
        MessageNotUnderstood,
    )
}
