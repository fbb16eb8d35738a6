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
venue-originated orders (liquidations, ADL, the venue's scheduled strategies) and the exits
the venue attaches to an order have only the venue id. Venue reports may carry the order's
links: `related_order_id` (an attached exit's parent, `I`/`relatedOrderId`) and `strategy_id`
(the venue strategy that placed it, `H`/`strategyId`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final

import msgspec

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
    "KillSwitchReset",
    "KillSwitchTripped",
    "MarkObserved",
    "MarketInfo",
    "MessageNotUnderstood",
    "OrderAccepted",
    "OrderCancelled",
    "OrderDenied",
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


# An integer the log holds as a signed 64-bit number (times, client ids): the decoder refuses
# any other, so a damaged or hostile line cannot carry a number thousands of digits long.
# Trade ids are wider (the synthetic ids of fills without one go up to 2**64 - 1) and are
# checked by the log codec itself.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class _Meta(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    tag_field="type",
    tag=True,
    gc=False,
):
    """Fields every event carries (see the module docstring). Only events derive from it.

    Events are frozen `msgspec.Struct`s tagged with their class name in a `type` field, so a
    log line decodes in one pass into the right class (`oms.core.serialization`), with any
    unknown field refused by the decoder itself. Fields at their default are not written.
    Not tracked by the garbage collector (`gc=False`): an event holds only immutable values,
    so it cannot be part of a reference cycle, and untracked instances are cheaper to make
    (decoding a fill line 16% faster).
    """

    source: Source
    recv_time_us: Int64
    venue_time_us: Int64 | None = None
    raw: str | None = None


# --- local commands, logged before they are sent -------------------------------------------


class OrderSubmitted(_Meta, frozen=True):
    """We are about to send a new order. `client_id` is a uint32 unique in the account's log.

    LIMIT and LIMIT_MAKER need `price` and `quantity`; MARKET needs `quantity` or
    `quote_quantity` (spend or receive at most this much quote).
    """

    client_id: Int64
    symbol: str
    side: Side
    order_type: OrderType
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    post_only: bool = False
    reduce_only: bool = False
    # A conditional order: `trigger_quantity` (a quantity, or a percentage such as "80%")
    # replaces `quantity`, and the order waits until the price `trigger_by` names
    # (LastPrice, MarkPrice, IndexPrice; None: the venue's default) reaches `trigger_price`.
    trigger_price: Decimal | None = None
    trigger_quantity: str | None = None
    trigger_by: str | None = None
    # Exits attached to the order (perpetuals): each a trigger price, an optional limit price
    # (None: a market order) and an optional trigger-by.
    stop_loss_trigger_price: Decimal | None = None
    stop_loss_limit_price: Decimal | None = None
    stop_loss_trigger_by: str | None = None
    take_profit_trigger_price: Decimal | None = None
    take_profit_limit_price: Decimal | None = None
    take_profit_trigger_by: str | None = None


class CancelRequested(_Meta, frozen=True):
    """We are about to ask the venue to cancel an order."""

    symbol: str
    client_id: Int64 | None = None
    venue_id: str | None = None


# --- outcomes of our commands ---------------------------------------------------------------


class SubmitRejected(_Meta, frozen=True):
    """The venue refused a submit (a definitive error answer such as INVALID_ORDER)."""

    symbol: str
    client_id: Int64
    code: str
    message: str


class SubmitUnknown(_Meta, frozen=True):
    """A submit got no definitive answer (timeout, 5xx, connection lost after sending).

    The order is in doubt until a venue report or reconciliation resolves it; never a guess.
    """

    symbol: str
    client_id: Int64
    reason: str


class CancelRejected(_Meta, frozen=True):
    """The venue refused a cancel (for example RESOURCE_NOT_FOUND: already finished)."""

    symbol: str
    code: str
    message: str
    client_id: Int64 | None = None
    venue_id: str | None = None


# --- venue order reports ----------------------------------------------------------------------


class OrderAccepted(_Meta, frozen=True):
    """The order is on the venue (`orderAccepted`, or an execute response with status New)."""

    symbol: str
    venue_id: str
    client_id: Int64 | None = None
    side: Side | None = None
    order_type: OrderType | None = None
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    post_only: bool = False
    reduce_only: bool = False
    origin: OrderOrigin = OrderOrigin.USER
    related_order_id: str | None = None
    strategy_id: Int64 | None = None


class OrderFilled(_Meta, frozen=True):
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
    client_id: Int64 | None = None
    cum_quantity: Decimal | None = None
    cum_quote: Decimal | None = None
    status: VenueStatus | None = None
    order_type: OrderType | None = None
    order_quantity: Decimal | None = None
    order_price: Decimal | None = None
    origin: OrderOrigin = OrderOrigin.USER
    related_order_id: str | None = None
    strategy_id: Int64 | None = None


class OrderCancelled(_Meta, frozen=True):
    """The order left the book by a cancel (`orderCancelled`, or a cancel response)."""

    symbol: str
    venue_id: str | None = None
    client_id: Int64 | None = None
    side: Side | None = None
    order_type: OrderType | None = None
    quantity: Decimal | None = None
    price: Decimal | None = None
    cum_quantity: Decimal | None = None
    origin: OrderOrigin = OrderOrigin.USER
    related_order_id: str | None = None
    strategy_id: Int64 | None = None


class OrderExpired(_Meta, frozen=True):
    """The venue expired the order (`orderExpired`): IOC/FOK remainder, post-only taker, ...

    `reason` is the venue's text (`R` on the stream, `expiryReason` over REST).
    """

    symbol: str
    venue_id: str | None = None
    client_id: Int64 | None = None
    reason: str | None = None
    side: Side | None = None
    order_type: OrderType | None = None
    quantity: Decimal | None = None
    price: Decimal | None = None
    cum_quantity: Decimal | None = None
    origin: OrderOrigin = OrderOrigin.USER
    related_order_id: str | None = None
    strategy_id: Int64 | None = None


class OrderModified(_Meta, frozen=True):
    """A resting reduce-only order's quantity was decreased by the venue (`orderModified`)."""

    symbol: str
    quantity: Decimal
    venue_id: str | None = None
    client_id: Int64 | None = None
    price: Decimal | None = None


class TriggerPlaced(_Meta, frozen=True):
    """A conditional order waits for its trigger (`triggerPlaced`).

    `trigger_quantity` is text: Backpack allows a percentage such as `"80%"`.
    """

    symbol: str
    venue_id: str | None = None
    client_id: Int64 | None = None
    side: Side | None = None
    order_type: OrderType | None = None
    trigger_price: Decimal | None = None
    trigger_quantity: str | None = None
    price: Decimal | None = None
    trigger_by: str | None = None
    reduce_only: bool = False
    related_order_id: str | None = None
    strategy_id: Int64 | None = None


class TriggerFailed(_Meta, frozen=True):
    """A conditional order's trigger could not be turned into an order (`triggerFailed`)."""

    symbol: str
    venue_id: str | None = None
    client_id: Int64 | None = None
    related_order_id: str | None = None
    strategy_id: Int64 | None = None


class OrderObserved(_Meta, frozen=True):
    """An order as a REST query or the order history shows it (reconciliation's view).

    It carries the venue status and cumulative executed figures but no individual fills:
    a quantity executed beyond the fills seen is a fill gap, to be closed from fill history.
    """

    symbol: str
    status: VenueStatus
    venue_id: str | None = None
    client_id: Int64 | None = None
    side: Side | None = None
    order_type: OrderType | None = None
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    price: Decimal | None = None
    executed_quantity: Decimal | None = None
    executed_quote_quantity: Decimal | None = None
    expiry_reason: str | None = None
    origin: OrderOrigin = OrderOrigin.USER
    trigger_price: Decimal | None = None
    trigger_quantity: str | None = None
    related_order_id: str | None = None
    strategy_id: Int64 | None = None
    reduce_only: bool = False


# --- account and market -----------------------------------------------------------------------


class AssetBalance(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """One asset of a balance snapshot (`GET /api/v1/capital`)."""

    asset: str
    available: Decimal
    locked: Decimal
    staked: Decimal = Decimal(0)


class BalanceObserved(_Meta, frozen=True):
    """A complete balance snapshot: an asset absent from it is observed as zero."""

    balances: tuple[AssetBalance, ...]


class PositionObserved(_Meta, frozen=True):
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
    covers_fills_before_us: Int64 | None = None


class FundingPaid(_Meta, frozen=True):
    """A funding payment on a perp position. `amount` > 0 received, < 0 paid (quote asset).

    Keyed by (symbol, interval_end_us): the same interval twice is counted once.
    """

    symbol: str
    interval_end_us: Int64
    amount: Decimal
    rate: Decimal | None = None


class MarkObserved(_Meta, frozen=True):
    """A market's mark price (the public `markPrice.<symbol>` stream), as sampled for the log.

    The stream pushes a mark about once a second per symbol; the session records only a
    sample of them (see `oms_backpack.marks.MarkSampler` for the rule), so the log does not
    grow with time alone. `index_price` and `funding_rate` (the estimated rate of the current
    interval) are perps' (`None` where the venue leaves them out).
    """

    symbol: str
    mark_price: Decimal
    index_price: Decimal | None = None
    funding_rate: Decimal | None = None


class MarketInfo(_Meta, frozen=True):
    """A market's definition (`GET /api/v1/markets`): assets, type and filters."""

    symbol: str
    base_asset: str
    quote_asset: str
    market_type: MarketType
    tick_size: Decimal
    step_size: Decimal
    min_quantity: Decimal


class MessageNotUnderstood(_Meta, frozen=True):
    """A venue message the codec could not turn into events; `raw` keeps it, `reason` says why.

    Recorded so that nothing received is lost and the stream never stops on it.
    """

    reason: str


# --- risk: the pre-trade check and the kill switch (docs/risk.md) --------------------------------


class OrderDenied(_Meta, frozen=True):
    """The pre-trade risk check refused a new order: it was neither logged as a submit nor
    sent. `limit` names the limit (an `oms.core.risk.LimitName` value, e.g. `max_position`),
    `scope` where it is set (`account` or the symbol), `reason` says what the order would have
    done. The order's own fields are kept so that a replay shows what was refused.
    """

    client_id: Int64
    symbol: str
    side: Side
    order_type: OrderType
    limit: str
    scope: str
    reason: str
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    price: Decimal | None = None
    reduce_only: bool = False


class KillSwitchTripped(_Meta, frozen=True):
    """The kill switch was tripped: from now on only reduce-only orders are accepted, and
    every open order is cancelled. `by` is who tripped it: `program`, `limit` or `signal`.
    It stays tripped (a restart included) until a `KillSwitchReset`."""

    reason: str
    by: str


class KillSwitchReset(_Meta, frozen=True):
    """The program reset a tripped kill switch: new orders are checked as before."""

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
    | OrderDenied
    | KillSwitchTripped
    | KillSwitchReset
    | MarkObserved
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
        OrderDenied,
        KillSwitchTripped,
        KillSwitchReset,
        MarkObserved,
    )
}
