"""The state the reducer derives: orders, balances, one-way positions, markets, anomalies.

Everything here is immutable. Collections are persistent maps (`immutables.Map`, a HAMT),
so `apply` returns a new state in O(log n) without copying the old one. The records inside
(orders, balances, positions, ...) are frozen `msgspec.Struct`s: the reducer makes a changed
copy of one for nearly every event, and `msgspec.structs.replace` does that about fifteen
times faster than `attrs.evolve`. `State` itself stays an attrs class. The records are not
tracked by the garbage collector (`gc=False`): they hold only immutable values, so they cannot
be part of a reference cycle, and untracked instances are cheaper to make.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Final

import attrs
import msgspec
from immutables import Map

from oms.core.values import (
    CTX,
    ZERO,
    MarketType,
    OrderOrigin,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)

__all__ = [
    "DEFAULT_RETAIN_FINISHED",
    "Anomaly",
    "AnomalyKind",
    "Balance",
    "Mark",
    "Market",
    "ObservedBalance",
    "ObservedPosition",
    "Order",
    "POSITION_WINDOW",
    "FillKey",
    "Position",
    "PositionFigures",
    "PositionFill",
    "PnlSample",
    "RiskState",
    "State",
]

# Finished orders kept in state (so late and duplicate reports for them are recognised)
# before the oldest are dropped; keeps memory bounded for sessions of any length.
DEFAULT_RETAIN_FINISHED: Final = 10_000
# Most recent anomalies kept in full; `State.anomaly_counts` counts all of them.
ANOMALIES_KEPT: Final = 1_000


class AnomalyKind(StrEnum):
    DUPLICATE_FILL = "duplicate_fill"  # a trade id already counted for the order
    UNKNOWN_ORDER = "unknown_order"  # a report or command for an order we do not know
    FORBIDDEN_TRANSITION = "forbidden_transition"  # the transition table says no
    OVERFILL = "overfill"  # filled more than the order's quantity
    CUM_MISMATCH = "cum_mismatch"  # venue cumulative quantity below the fills we counted
    FILL_GAP = "fill_gap"  # venue cumulative quantity above the fills we counted
    UNKNOWN_MARKET = "unknown_market"  # a fill on a symbol with no MarketInfo: balances unmoved
    BALANCE_DRIFT = "balance_drift"  # a venue balance differs from the derived one
    POSITION_DRIFT = "position_drift"  # a venue position differs from the derived one
    DUPLICATE_FUNDING = "duplicate_funding"  # a funding interval already counted
    NOT_UNDERSTOOD = "not_understood"  # a venue message the codec could not read
    ID_CONFLICT = "id_conflict"  # a report whose client id and venue id name different orders
    # a perp fill older than its position's window: counted, but not at its place in order
    FILL_OUT_OF_ORDER = "fill_out_of_order"


class Anomaly(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Input that contradicts state. `seq` is the event that caused it."""

    seq: int
    kind: AnomalyKind
    detail: str
    order_key: str | None = None


class Market(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    symbol: str
    base_asset: str
    quote_asset: str
    market_type: MarketType
    tick_size: Decimal
    step_size: Decimal
    min_quantity: Decimal


class Mark(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The newest recorded mark of one market (`MarkObserved`); `seq` is that event's."""

    symbol: str
    price: Decimal
    seq: int
    recv_time_us: int
    venue_time_us: int | None = None
    index_price: Decimal | None = None
    funding_rate: Decimal | None = None


class Order(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One order as the events describe it.

    `key` is stable for the order's life: `c<client id>` for our orders, `v<venue id>` for
    orders first seen without a client id. `filled_quantity` and `filled_quote` sum the fills
    counted (each trade id once); `venue_executed` is the largest cumulative executed quantity
    the venue reported. `locked` is what this order holds locked in `lock_asset` (spot only).
    `finished_at` is the order's place in the state's queue of finished orders (see
    `State.finished`), set each time it reaches a terminal status.
    """

    key: str
    symbol: str
    status: OrderStatus
    client_id: int | None = None
    venue_id: str | None = None
    side: Side | None = None
    order_type: OrderType | None = None
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    post_only: bool = False
    reduce_only: bool = False
    origin: OrderOrigin = OrderOrigin.USER
    filled_quantity: Decimal = ZERO
    filled_quote: Decimal = ZERO
    venue_executed: Decimal | None = None
    fees: tuple[tuple[str, Decimal], ...] = ()
    trade_ids: frozenset[int] = frozenset()
    cancel_requested: bool = False
    expiry_reason: str | None = None
    reject_code: str | None = None
    reject_message: str | None = None
    locked: Decimal = ZERO
    lock_asset: str | None = None
    finished_at: int | None = None
    created_seq: int = 0
    updated_seq: int = 0
    venue_time_us: int | None = None
    # Conditional orders and links (left out of the state hash while unset): the trigger,
    # the exits asked for with the order, the parent of an attached exit (its venue id), and
    # the venue strategy that placed the order.
    trigger_price: Decimal | None = None
    trigger_quantity: str | None = None
    trigger_by: str | None = None
    stop_loss_trigger_price: Decimal | None = None
    stop_loss_limit_price: Decimal | None = None
    take_profit_trigger_price: Decimal | None = None
    take_profit_limit_price: Decimal | None = None
    related_order_id: str | None = None
    strategy_id: int | None = None

    @property
    def placed_by_venue(self) -> bool:
        """An order the program did not send: one of the venue's own (liquidation, ADL, ...,
        see `origin`) or of a venue strategy (`strategy_id`)."""
        return self.origin != OrderOrigin.USER or self.strategy_id is not None

    @property
    def remaining(self) -> Decimal | None:
        if self.quantity is None:
            return None
        return max(CTX.subtract(self.quantity, self.filled_quantity), ZERO)

    @property
    def unfilled_executed(self) -> Decimal:
        """What the venue reports executed beyond the fills counted (zero when level).

        Positive while the order waits for fills: the venue's answer (a `Filled` status, a
        cumulative quantity) ran ahead of its fill messages, or a fill message was lost.
        """
        if self.venue_executed is None or self.venue_executed <= self.filled_quantity:
            return ZERO
        return CTX.subtract(self.venue_executed, self.filled_quantity)

    @property
    def awaiting_fills(self) -> bool:
        """True while the venue reports more executed than the fills counted."""
        return self.venue_executed is not None and self.venue_executed > self.filled_quantity

    @property
    def average_price(self) -> Decimal | None:
        if not self.filled_quantity:
            return None
        return CTX.divide(self.filled_quote, self.filled_quantity)


class ObservedBalance(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    available: Decimal
    locked: Decimal
    staked: Decimal


class Balance(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Derived balance of one asset: total = available + locked, always.

    The derived figures start from the last venue snapshot (`observed`) and move with the
    events since. `drift_*` is venue minus derived at that snapshot, before re-basing.
    """

    asset: str
    available: Decimal = ZERO
    locked: Decimal = ZERO
    observed: ObservedBalance | None = None
    drift_available: Decimal = ZERO
    drift_locked: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        return CTX.add(self.available, self.locked)


class ObservedPosition(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    net_quantity: Decimal
    entry_price: Decimal | None
    break_even_price: Decimal | None
    mark_price: Decimal | None
    realized_pnl: Decimal | None
    unrealized_pnl: Decimal | None


# Fills a position keeps after its checkpoint, in the venue's matching order: a fill that
# arrives late but within this window re-derives the position from its place in that order.
POSITION_WINDOW: Final = 256

# A fill's place in the venue's matching order: (trade id, 0, venue order id) for a fill with
# a trade id; a fill without one (a derived id >= SYNTHETIC_TRADE_ID_BASE) is placed just
# after the newest fill counted when it arrived, and after every earlier fill without one:
# (that fill's trade id, n, order id) for the position's n-th such fill.
FillKey = tuple[int, int, str]


class PositionFigures(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The order-dependent part of a position after some prefix of its fills.

    `key` is the place of the last fill folded in (None: before any fill).
    """

    key: FillKey | None = None
    net_quantity: Decimal = ZERO
    entry_price: Decimal = ZERO
    open_cost: Decimal = ZERO
    realized_pnl: Decimal = ZERO


class PositionFill(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One fill as a position needs it: its place, signed quantity (bid > 0) and price.

    `after` is the position's figures with this fill folded in (on top of the checkpoint and
    every older fill of the window). It follows from the rest, so the state hash leaves it
    out; it is kept so that a fill in order, and moving the checkpoint past the oldest fill,
    each cost one step instead of a fold.
    """

    key: FillKey
    delta: Decimal
    price: Decimal
    after: PositionFigures


class Position(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A one-way (netted) perp position.

    `net_quantity` is signed (long > 0). `entry_price` is the average entry of the open side
    (zero when flat): `open_cost / |net_quantity|`, where `open_cost` is the exact sum of
    quantity x price of the fills that opened it (after a reduction: entry x quantity left).
    `realized_pnl` accrues on every reduction; fees (per asset) and
    funding (quote asset; > 0 received) accumulate. `drift_quantity` is venue minus derived
    at the last venue report, before re-basing; `drift_reported` the drift last recorded as
    an anomaly.

    Quantity, entry, open cost and realized PnL are a function of the set of fills taken in
    the venue's matching order (`FillKey`), whatever order they arrive in: `checkpoint` holds
    the figures after the older fills, `recent` the newest (at most `POSITION_WINDOW`, sorted),
    and the figures above are the checkpoint with `recent` folded in. A `baselined` position
    adopted a venue report when the account was first reconciled; every fill at or before
    `baseline_key` (the newest fill counted then), and every fill with a venue time before
    `baseline_before_us`, is inside the venue's figures.
    """

    symbol: str
    net_quantity: Decimal = ZERO
    entry_price: Decimal = ZERO
    open_cost: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: tuple[tuple[str, Decimal], ...] = ()
    funding: Decimal = ZERO
    funding_intervals: frozenset[int] = frozenset()
    observed: ObservedPosition | None = None
    drift_quantity: Decimal = ZERO
    drift_reported: Decimal = ZERO
    checkpoint: PositionFigures = PositionFigures()
    recent: tuple[PositionFill, ...] = ()
    baselined: bool = False
    baseline_key: FillKey | None = None
    synthetic_fills: int = 0  # fills without a trade id counted (they are placed by arrival)
    baseline_before_us: int | None = None  # fills older than this are inside the baseline


class PnlSample(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Each position's realized PnL (`oms.core.risk.realized`) at a submit's local time:
    where a loss window starts (see `RiskState.pnl_samples`)."""

    time_us: int
    realized: tuple[tuple[str, Decimal], ...]


class RiskState(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The kill switch, the denials of the pre-trade check, and what the check needs from
    the past (see docs/risk.md; `oms.core.risk` computes every change).

    `tripped` latches on `KillSwitchTripped` and clears only on `KillSwitchReset`;
    `trip_reason`, `trip_by`, `trip_seq` and `trip_time_us` describe the latest trip.
    `denials` counts `OrderDenied` events, by limit in `denied_by_limit`; `last_denial` is the
    newest one's reason, `last_denied_client_id` its client id (a session does not give that
    id to the next order, so that a log never shows one id both denied and sent).

    Bookkeeping, left out of the state document and hash (so logs that never used risk
    features keep their hashes): `submit_times`, the local times of the newest submits (at
    most `oms.core.risk.RATE_MEMORY`), for the rate of submits; `pnl_samples`, realized PnL
    per position at submits at least a minute apart (at most `oms.core.risk.PNL_SAMPLES_KEPT`),
    where a loss window starts.
    """

    tripped: bool = False
    trip_reason: str | None = None
    trip_by: str | None = None
    trip_seq: int | None = None
    trip_time_us: int | None = None
    trips: int = 0
    resets: int = 0
    denials: int = 0
    denied_by_limit: tuple[tuple[str, int], ...] = ()
    last_denial: str | None = None
    last_denied_client_id: int | None = None  # so that the next order takes a fresh id
    submit_times: tuple[int, ...] = ()
    pnl_samples: tuple[PnlSample, ...] = ()

    @property
    def used(self) -> bool:
        """Whether the switch or the check ever recorded anything (else the state document
        and hash leave the risk section out)."""
        return bool(self.trips or self.resets or self.denials)


_NO_RISK: Final = RiskState()


# A set test, not the `is_terminal` property: a scan of every kept order calls it each time.
_TERMINAL_STATUSES: Final = frozenset(s for s in OrderStatus if s.is_terminal)


@attrs.frozen(kw_only=True)
class State:
    """Everything the events imply. `last_seq` is the seq of the last event applied."""

    last_seq: int = 0
    orders: Map[str, Order] = Map()
    by_client: Map[int, str] = Map()
    by_venue: Map[str, str] = Map()
    balances: Map[str, Balance] = Map()
    positions: Map[str, Position] = Map()
    markets: Map[str, Market] = Map()
    anomalies: tuple[Anomaly, ...] = ()
    anomaly_counts: Map[AnomalyKind, int] = Map()
    # Finished orders in the order they finished: index -> order key, indexes
    # finished_head .. finished_tail-1 are live. The oldest leave beyond retain_finished.
    finished: Map[int, str] = Map()
    finished_head: int = 0
    finished_tail: int = 0
    retain_finished: int = DEFAULT_RETAIN_FINISHED
    last_client_id: int | None = None
    # Seq of the account's first venue balance snapshot, the baseline it adopted (None before).
    # Until then a REST position report is adopted as its position's baseline too.
    baseline_seq: int | None = None
    # The kill switch and the pre-trade check's records (docs/risk.md).
    risk: RiskState = _NO_RISK
    # The newest recorded mark of each market (`MarkObserved`); see `oms.core.account`.
    marks: Map[str, Mark] = Map()

    def order(self, *, client_id: int | None = None, venue_id: str | None = None) -> Order | None:
        """Find an order by our client id or by the venue's order id."""
        key: str | None = None
        if client_id is not None:
            key = self.by_client.get(client_id)
        if key is None and venue_id is not None:
            key = self.by_venue.get(venue_id)
        return None if key is None else self.orders.get(key)

    def open_orders(self) -> list[Order]:
        """Every order not in a terminal status, in no particular order. A scan of the orders
        kept (finished ones included, up to `retain_finished`): about 0.3 ms at 10,000."""
        terminal = _TERMINAL_STATUSES
        return [o for o in self.orders.values() if o.status not in terminal]

    @property
    def anomaly_total(self) -> int:
        return sum(self.anomaly_counts.values())
