"""The pure reducer: `apply(state, event) -> state` and `replay(events) -> state`.

Guarantees (tested in tests/test_reducer*.py):

- pure and total: no clock, no I/O, never raises on venue input. Input that contradicts the
  state is recorded as an `Anomaly` with the seq of the event that caused it;
- idempotent: a fill is keyed by (symbol, venue order id, trade id) and counted once;
  a funding payment by (symbol, interval end); a repeated snapshot changes nothing;
- order-insensitive across one order's venue reports (see `oms.core.lifecycle`);
- exact: Decimal arithmetic in the fixed context `oms.core.values.CTX`.

The n-th event applied gets seq n: `apply` numbers events itself, so a log with contiguous
seqs from 1 replays to exactly the live state.

`replay` folds with one mutable draft and freezes once at the end; `apply` thaws, steps and
freezes. Both run the same step code, so they agree bit for bit. Logs are replayed by
`oms.core.replay_fold.ReplayFold`, a `Fold` with a short path for a healthy session's reports,
held to `apply` by a differential test; `apply` is the reference.
"""

from __future__ import annotations

import bisect
import typing
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, Final, TypeAlias, TypeVar

from immutables import Map, MapMutation
from msgspec.structs import replace

from oms.core.events import (
    EVENT_TYPES,
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
    OrderEvent,
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
from oms.core.lifecycle import TRANSITIONS, Kind, kind_of_venue_status
from oms.core.risk import after_event as _risk_after
from oms.core.state import (
    ANOMALIES_KEPT,
    POSITION_WINDOW,
    Anomaly,
    AnomalyKind,
    Balance,
    FillKey,
    Mark,
    Market,
    ObservedBalance,
    ObservedPosition,
    Order,
    Position,
    PositionFigures,
    PositionFill,
    State,
)
from oms.core.values import (
    CTX,
    PNL_QUANTUM,
    SYNTHETIC_TRADE_ID_BASE,
    ZERO,
    MarketType,
    OrderOrigin,
    OrderStatus,
    Side,
    Source,
    VenueStatus,
)
from oms.core.values import canonical_decimal as _d

__all__ = ["Fold", "apply", "is_news", "replay"]

_add = CTX.add
_sub = CTX.subtract
_mul = CTX.multiply
_div = CTX.divide
_quantize = CTX.quantize  # `_quantize(a, b)` is `a.quantize(b, context=CTX)`


def apply(state: State, event: Event) -> State:
    """The state after `event`, which gets seq `state.last_seq + 1`."""
    draft = Fold(state)
    draft.step(event)
    return draft.freeze()


# Anomalies that only say a known fact came again: a candidate recording one is not news.
_REPEATS = frozenset({AnomalyKind.DUPLICATE_FILL, AnomalyKind.DUPLICATE_FUNDING})


def is_news(before: State, after: State) -> bool:
    """Whether `after` (the state after one more event) says anything `before` did not.

    News is an order, balance, position or market that differs, or an anomaly whose (kind,
    order, detail) is not among those kept in `before` (a repeated fill or funding payment is
    no news). Reconciliation and the answers to our own commands offer the engine facts it may
    already have; only news is recorded, so running a pass twice records nothing the second
    time.
    """
    changed = any(
        new is not old and new != old
        for new, old in (
            (after.orders, before.orders),
            (after.balances, before.balances),
            (after.positions, before.positions),
            (after.markets, before.markets),
            (after.marks, before.marks),
        )
    )
    if changed:
        return True
    added = after.anomaly_total - before.anomaly_total
    if not added:
        return False
    recent = after.anomalies[len(after.anomalies) - added :]
    fresh = [a for a in recent if a.kind not in _REPEATS]
    if not fresh:
        return False
    known = {(a.kind, a.order_key, a.detail) for a in before.anomalies}
    return any((a.kind, a.order_key, a.detail) not in known for a in fresh)


def replay(events: Iterable[Event], state: State | None = None) -> State:
    """Apply `events` in order, from `state` (default: the empty state)."""
    draft = Fold(State() if state is None else state)
    step = draft.step
    for event in events:
        step(event)
    return draft.freeze()


def _fees_plus(
    fees: tuple[tuple[str, Decimal], ...], asset: str, amount: Decimal
) -> tuple[tuple[str, Decimal], ...]:
    """Fees per asset, sorted by asset, with `amount` of `asset` added."""
    if not fees:  # the first fee (added to zero, as below)
        return ((asset, _add(ZERO, amount)),)
    if len(fees) == 1 and fees[0][0] == asset:  # the usual case: one fee asset per order
        return ((asset, _add(fees[0][1], amount)),)
    out = dict(fees)
    out[asset] = _add(out.get(asset, ZERO), amount)
    return tuple(sorted(out.items()))


# Realized PnL is rounded to `PNL_QUANTUM` below this adjusted exponent: beyond about 1e41 a
# 1e-18 grain no longer fits the context's 60 digits (quantize would trap), and the figure is
# kept as it is.
_ROUNDED_BELOW: Final = CTX.prec - 19


_K = TypeVar("_K")
_V = TypeVar("_V")
# A map of the state while a fold writes to it: the state's own, or a mutation of it.
_Table: TypeAlias = Map[_K, _V] | MapMutation[_K, _V]


class Fold:
    """An incremental `replay`: `step(event)` for each event, `freeze()` for the state.

    A mutable holder of one state's (immutable) parts; freezing is cheap and the fold can go
    on after it. `apply` and `replay` are both made of it.
    """

    def __init__(self, state: State) -> None:
        self.seq = state.last_seq
        # Each map is read where it is (`self.orders`: the state's Map, or the mutation made
        # at its first write) and written through `_w_*`, which makes that mutation once:
        # replaying writes in place, and `freeze` finishes only the maps that changed, so an
        # unchanged map stays the same object (`is_news` relies on that). `self._orders_base` is
        # the newest frozen Map.
        self.orders: _Table[str, Order] = state.orders
        self.by_client: _Table[int, str] = state.by_client
        self.by_venue: _Table[str, str] = state.by_venue
        self.balances: _Table[str, Balance] = state.balances
        self.positions: _Table[str, Position] = state.positions
        self.finished: _Table[int, str] = state.finished
        self._orders_base: Map[str, Order] = state.orders
        self._by_client_base: Map[int, str] = state.by_client
        self._by_venue_base: Map[str, str] = state.by_venue
        self._balances_base: Map[str, Balance] = state.balances
        self._positions_base: Map[str, Position] = state.positions
        self._finished_base: Map[int, str] = state.finished
        self._orders_m: MapMutation[str, Order] | None = None
        self._by_client_m: MapMutation[int, str] | None = None
        self._by_venue_m: MapMutation[str, str] | None = None
        self._balances_m: MapMutation[str, Balance] | None = None
        self._positions_m: MapMutation[str, Position] | None = None
        self._finished_m: MapMutation[int, str] | None = None
        self.markets = state.markets
        self.anomalies = state.anomalies
        self.anomaly_counts = state.anomaly_counts
        self.finished_head = state.finished_head
        self.finished_tail = state.finished_tail
        self.retain_finished = state.retain_finished
        self.last_client_id = state.last_client_id
        self.baseline_seq = state.baseline_seq
        self.risk = state.risk
        self.marks = state.marks

    def _w_orders(self) -> MapMutation[str, Order]:
        if self._orders_m is None:
            self._orders_m = self.orders = self._orders_base.mutate()
        return self._orders_m

    def _w_by_client(self) -> MapMutation[int, str]:
        if self._by_client_m is None:
            self._by_client_m = self.by_client = self._by_client_base.mutate()
        return self._by_client_m

    def _w_by_venue(self) -> MapMutation[str, str]:
        if self._by_venue_m is None:
            self._by_venue_m = self.by_venue = self._by_venue_base.mutate()
        return self._by_venue_m

    def _w_balances(self) -> MapMutation[str, Balance]:
        if self._balances_m is None:
            self._balances_m = self.balances = self._balances_base.mutate()
        return self._balances_m

    def _w_positions(self) -> MapMutation[str, Position]:
        if self._positions_m is None:
            self._positions_m = self.positions = self._positions_base.mutate()
        return self._positions_m

    def _w_finished(self) -> MapMutation[int, str]:
        if self._finished_m is None:
            self._finished_m = self.finished = self._finished_base.mutate()
        return self._finished_m

    def freeze(self) -> State:
        if self._orders_m is not None:
            self._orders_base = self.orders = self._orders_m.finish()
            self._orders_m = None
        if self._by_client_m is not None:
            self._by_client_base = self.by_client = self._by_client_m.finish()
            self._by_client_m = None
        if self._by_venue_m is not None:
            self._by_venue_base = self.by_venue = self._by_venue_m.finish()
            self._by_venue_m = None
        if self._balances_m is not None:
            self._balances_base = self.balances = self._balances_m.finish()
            self._balances_m = None
        if self._positions_m is not None:
            self._positions_base = self.positions = self._positions_m.finish()
            self._positions_m = None
        if self._finished_m is not None:
            self._finished_base = self.finished = self._finished_m.finish()
            self._finished_m = None
        return State(
            last_seq=self.seq,
            orders=self._orders_base,
            by_client=self._by_client_base,
            by_venue=self._by_venue_base,
            balances=self._balances_base,
            positions=self._positions_base,
            markets=self.markets,
            anomalies=self.anomalies,
            anomaly_counts=self.anomaly_counts,
            finished=self._finished_base,
            finished_head=self.finished_head,
            finished_tail=self.finished_tail,
            retain_finished=self.retain_finished,
            last_client_id=self.last_client_id,
            baseline_seq=self.baseline_seq,
            risk=self.risk,
            marks=self.marks,
        )

    # --- dispatch ---------------------------------------------------------------------------

    def step(self, event: Event) -> None:
        self.seq += 1
        _STEPS[type(event)](self, event)

    def _market_info(self, event: MarketInfo) -> None:
        self.markets = self.markets.set(
            event.symbol,
            Market(
                symbol=event.symbol,
                base_asset=event.base_asset,
                quote_asset=event.quote_asset,
                market_type=event.market_type,
                tick_size=event.tick_size,
                step_size=event.step_size,
                min_quantity=event.min_quantity,
            ),
        )

    def _risk(self, event: OrderDenied | KillSwitchTripped | KillSwitchReset) -> None:
        """The kill switch and denials: only `State.risk` changes (`oms.core.risk`)."""
        self.risk = _risk_after(self.risk, event, self.seq, self._frozen_positions, self.markets)

    def _submitted(self, event: OrderSubmitted) -> None:
        # The risk check's memory of submits (rate, PnL samples), then the order itself.
        self.risk = _risk_after(self.risk, event, self.seq, self._frozen_positions, self.markets)
        self._order_event(event)

    def _frozen_positions(self) -> Map[str, Position]:
        """The positions as a Map (finishing a pending mutation: the next write starts one)."""
        if self._positions_m is not None:
            self._positions_base = self.positions = self._positions_m.finish()
            self._positions_m = None
        return self._positions_base

    def _mark_observed(self, event: MarkObserved) -> None:
        # The newest mark wins; marks move nothing else (derived figures: `oms.core.account`).
        self.marks = self.marks.set(
            event.symbol,
            Mark(
                symbol=event.symbol,
                price=event.mark_price,
                seq=self.seq,
                recv_time_us=event.recv_time_us,
                venue_time_us=event.venue_time_us,
                index_price=event.index_price,
                funding_rate=event.funding_rate,
            ),
        )

    def _not_understood(self, event: MessageNotUnderstood) -> None:
        self._anomaly(AnomalyKind.NOT_UNDERSTOOD, event.reason)

    def _anomaly(self, kind: AnomalyKind, detail: str, order_key: str | None = None) -> None:
        record = Anomaly(seq=self.seq, kind=kind, detail=detail, order_key=order_key)
        kept = self.anomalies
        if len(kept) >= ANOMALIES_KEPT:
            kept = kept[len(kept) - ANOMALIES_KEPT + 1 :]
        self.anomalies = (*kept, record)
        self.anomaly_counts = self.anomaly_counts.set(kind, self.anomaly_counts.get(kind, 0) + 1)

    # --- orders -----------------------------------------------------------------------------

    def _find(self, client_id: int | None, venue_id: str | None) -> str | None:
        key: str | None = None
        if client_id is not None:
            key = self.by_client.get(client_id)
        if key is None and venue_id is not None:
            key = self.by_venue.get(venue_id)
        return key

    def _order_event(self, event: OrderEvent) -> None:
        venue_id = getattr(event, "venue_id", None)
        client_id = event.client_id
        key = self._find(client_id, venue_id)
        if key is not None and client_id is not None and venue_id is not None:
            other = self.by_venue.get(venue_id)
            if other is not None and other != key:
                # Our client id names one order, the venue's id another: the report is taken
                # for the order of our client id, and the contradiction is kept.
                self._anomaly(
                    AnomalyKind.ID_CONFLICT,
                    f"{type(event).__name__} names client id {client_id} (order {key}) and "
                    f"venue id {venue_id} (order {other})",
                    key,
                )
        if isinstance(event, OrderSubmitted):
            if self.last_client_id is None or event.client_id > self.last_client_id:
                self.last_client_id = event.client_id
            if key is None:
                self._submit(event)
                return
        if key is None:
            if isinstance(event, CancelRequested | CancelRejected | SubmitRejected | SubmitUnknown):
                # Nothing to attach a command outcome to; there is no order to create.
                self._anomaly(
                    AnomalyKind.UNKNOWN_ORDER,
                    f"{type(event).__name__} for unknown order "
                    f"(client id {client_id}, venue id {venue_id}) on {event.symbol}",
                )
                return
            created = self._create_from_report(event, client_id, venue_id)
            if created is None:
                return
            key = created
        order = stored = self.orders[key]
        # Index ids the order did not have yet (the venue id arrives with the first report).
        if venue_id is not None and order.venue_id is None:
            order = replace(order, venue_id=venue_id)
            self._w_by_venue()[venue_id] = key
        if client_id is not None and order.client_id is None:
            order = replace(order, client_id=client_id)
            self._w_by_client()[client_id] = key
        if order is not stored:
            # Store the ids now: `_advance` may return early (an absorbed report, a duplicate
            # fill), and an index entry for an id the order does not carry would outlive the
            # order when retention drops it (a later report then finds a missing key).
            self._w_orders()[key] = order
        self._advance(order, event)

    def _submit(self, event: OrderSubmitted) -> None:
        order = _new_order(event, self.seq)
        self._w_orders()[order.key] = order
        self._w_by_client()[event.client_id] = order.key

    def _exits_may_be_ours(self, symbol: str) -> bool:
        """Whether an order of ours on `symbol` asked for exits (stop loss, take profit) and
        has no venue id yet: its submit in doubt, or not answered yet. The venue's exits for it
        name a parent (`related_order_id`) we cannot match until the order's own report comes,
        which can be after theirs (an answer lost, a stream late). Rare: a report naming an
        unknown parent; the orders kept are scanned."""
        mutation = self._orders_m
        if mutation is not None and not isinstance(mutation, dict):  # (`ReplayFold`: a dict)
            self._orders_base = self.orders = mutation.finish()  # finished, to be read
            self._orders_m = None
        orders: Mapping[str, Order] = self.orders  # type: ignore[assignment]
        for order in orders.values():
            if (
                order.symbol == symbol
                and order.venue_id is None
                and order.status not in _TERMINAL
                and (
                    order.stop_loss_trigger_price is not None
                    or order.take_profit_trigger_price is not None
                )
            ):
                return True
        return False

    def _create_from_report(
        self, event: OrderEvent, client_id: int | None, venue_id: str | None
    ) -> str | None:
        """A venue report on an order we have no record of: create the record from it."""
        if client_id is not None:
            key = f"c{client_id}"
        elif venue_id is not None:
            key = f"v{venue_id}"
        else:
            self._anomaly(
                AnomalyKind.UNKNOWN_ORDER,
                f"{type(event).__name__} on {event.symbol} names no order (no client or venue id)",
            )
            return None
        # Events without an `origin` field (OrderModified, Trigger*) report user orders.
        origin: OrderOrigin = getattr(event, "origin", OrderOrigin.USER)
        related: str | None = getattr(event, "related_order_id", None)
        strategy: int | None = getattr(event, "strategy_id", None)
        if (
            origin == OrderOrigin.USER
            and strategy is None
            and (
                related is None
                or (
                    self.by_venue.get(related) is None and not self._exits_may_be_ours(event.symbol)
                )
            )
        ):
            # Venue-originated orders (liquidation, ADL, a venue strategy's orders) and the
            # exits the venue attaches to an order we know are expected to be new to us; so
            # are exits whose parent may be an order of ours the venue has not named yet.
            self._anomaly(
                AnomalyKind.UNKNOWN_ORDER,
                f"{type(event).__name__} for an order we did not submit "
                f"(client id {client_id}, venue id {venue_id}) on {event.symbol}",
                key,
            )
        if isinstance(event, OrderFilled):
            quantity, price = event.order_quantity, event.order_price
        else:
            quantity, price = getattr(event, "quantity", None), getattr(event, "price", None)
        order = Order(
            key=key,
            symbol=event.symbol,
            status=OrderStatus.PENDING_NEW,
            client_id=client_id,
            venue_id=venue_id,
            side=getattr(event, "side", None),
            order_type=getattr(event, "order_type", None),
            quantity=quantity,
            quote_quantity=getattr(event, "quote_quantity", None),
            price=price,
            origin=origin,
            created_seq=self.seq,
            updated_seq=self.seq,
            related_order_id=related,
            strategy_id=strategy,
        )
        self._w_orders()[key] = order
        if client_id is not None:
            self._w_by_client()[client_id] = key
        if venue_id is not None:
            self._w_by_venue()[venue_id] = key
        return key

    def _advance(self, order: Order, event: OrderEvent) -> None:
        before = order
        cls = type(event)
        # The report's own changes to the order (None: nothing more to do, e.g. a duplicate).
        changed = _REPORTS[cls](self, order, event)
        if changed is None:
            return
        order = changed
        reported: VenueStatus | None = None
        if cls is OrderFilled:
            kind = Kind.FILL
            reported = event.status  # type: ignore[union-attr]
        elif cls is OrderObserved:
            reported = event.status  # type: ignore[union-attr]
            kind = kind_of_venue_status(reported)  # type: ignore[arg-type]
        else:
            kind = _KINDS[cls]
        old_status = order.status
        rule = TRANSITIONS[(old_status, kind)]
        status = old_status
        if rule.to is not None:
            status = rule.to
        elif rule.follow_fills:
            status = _fill_status(order, reported)
        if rule.anomaly:
            self._anomaly(
                AnomalyKind.FORBIDDEN_TRANSITION,
                f"can't apply {cls.__name__} to order {order.key} in state {old_status.value}",
                order.key,
            )
        venue_time = order.venue_time_us
        if event.venue_time_us is not None and (
            venue_time is None or event.venue_time_us > venue_time
        ):
            # The latest venue time of any report on the order, absorbed ones included, not
            # the time of the last to arrive: arrival order must not change the order.
            venue_time = event.venue_time_us
        if (
            cls is not OrderFilled
            and status is old_status
            and venue_time == before.venue_time_us
            and order == before
        ):
            # Equality, not identity: a repeated report rebuilds fields with the same values
            # (an expiry reason, a reject code); it must not count as a change, or applying
            # it twice would bump `updated_seq` and break idempotence. (A fill counted always
            # changes the order: its trade id is new.)
            return
        locked, lock_asset = self._relock(order, status)
        was_terminal = before.status in _TERMINAL
        finishing = status in _TERMINAL and not was_terminal
        if finishing:
            finished_at: int | None = self.finished_tail
        elif was_terminal and status not in _TERMINAL:
            # Reopened by the venue (a rejected order it accepts): no longer in the queue.
            finished_at = None
        else:
            finished_at = order.finished_at
        order = replace(
            order,
            status=status,
            venue_time_us=venue_time,
            updated_seq=self.seq,
            finished_at=finished_at,
            locked=locked,
            lock_asset=lock_asset,
        )
        self._w_orders()[order.key] = order
        if finishing:
            self._finished(order.key)

    # --- what each report changes in its order, before the status moves ---------------------

    def _report_unchanged(self, order: Order, event: OrderEvent) -> Order | None:
        """A report that moves only the status (a submit, a submit in doubt, a failed trigger)."""
        return order

    def _report_submit_rejected(self, order: Order, event: SubmitRejected) -> Order | None:
        return replace(order, reject_code=event.code, reject_message=event.message)

    def _report_cancel_requested(self, order: Order, event: CancelRequested) -> Order | None:
        return order if order.cancel_requested else replace(order, cancel_requested=True)

    def _report_cancel_rejected(self, order: Order, event: CancelRejected) -> Order | None:
        return replace(order, cancel_requested=False) if order.cancel_requested else order

    def _report_accepted(self, order: Order, event: OrderAccepted) -> Order | None:
        if event.reduce_only and not order.reduce_only:
            # The venue's word (an order it placed, an exit): reduce-only is never taken away.
            order = replace(order, reduce_only=True)
        order = _fill_in(
            order,
            side=event.side,
            order_type=event.order_type,
            quantity=event.quantity,
            quote_quantity=event.quote_quantity,
            price=event.price,
        )
        return _venue_cap(order, event.quantity)

    def _report_filled(self, order: Order, event: OrderFilled) -> Order | None:
        if event.trade_id in order.trade_ids:
            self._anomaly(
                AnomalyKind.DUPLICATE_FILL,
                f"trade {event.trade_id} of order {order.key} on {order.symbol} already counted",
                order.key,
            )
            return None
        return self._fill(order, event)

    def _report_cancelled(self, order: Order, event: OrderCancelled) -> Order | None:
        return self._cumulative(order, event.cum_quantity)

    def _report_expired(self, order: Order, event: OrderExpired) -> Order | None:
        if event.reason is not None:
            order = replace(order, expiry_reason=event.reason)
        return self._cumulative(order, event.cum_quantity)

    def _report_modified(self, order: Order, event: OrderModified) -> Order | None:
        if order.quantity is None or event.quantity < order.quantity:
            # Only ever a decrease; the smallest quantity reported wins in any order.
            order = replace(order, quantity=event.quantity)
            if event.quantity < order.filled_quantity:
                self._anomaly(
                    AnomalyKind.OVERFILL,
                    f"order {order.key} modified to {_d(event.quantity)}, below the "
                    f"{_d(order.filled_quantity)} already filled",
                    order.key,
                )
        return order

    def _report_trigger_placed(self, order: Order, event: TriggerPlaced) -> Order | None:
        if event.reduce_only and not order.reduce_only:
            order = replace(order, reduce_only=True)
        return _fill_in(
            order,
            side=event.side,
            order_type=event.order_type,
            price=event.price,
            trigger_price=event.trigger_price,
            trigger_quantity=event.trigger_quantity,
            trigger_by=event.trigger_by,
        )

    def _report_observed(self, order: Order, event: OrderObserved) -> Order | None:
        if event.reduce_only and not order.reduce_only:
            order = replace(order, reduce_only=True)
        order = _fill_in(
            order,
            side=event.side,
            order_type=event.order_type,
            quantity=event.quantity,
            quote_quantity=event.quote_quantity,
            price=event.price,
            trigger_price=event.trigger_price,
            trigger_quantity=event.trigger_quantity,
        )
        order = _venue_cap(order, event.quantity)
        if event.expiry_reason is not None and order.expiry_reason is None:
            order = replace(order, expiry_reason=event.expiry_reason)
        # An answer to our own command (source rest) often runs ahead of the stream's fills: a
        # normal race, so only other observations are checked for a gap.
        return self._cumulative(
            order, event.executed_quantity, check=event.source is not Source.REST
        )

    def _cumulative(self, order: Order, cumulative: Decimal | None, *, check: bool = True) -> Order:
        """Compare a venue cumulative executed quantity with the fills counted."""
        if cumulative is None:
            return order
        if check and cumulative > order.filled_quantity:
            self._anomaly(
                AnomalyKind.FILL_GAP,
                f"venue reports {_d(cumulative)} executed on order {order.key}, fills counted "
                f"{_d(order.filled_quantity)}",
                order.key,
            )
        if order.venue_executed is None or cumulative > order.venue_executed:
            order = replace(order, venue_executed=cumulative)
        return order

    def _fill(self, order: Order, event: OrderFilled) -> Order:
        notional = _mul(event.quantity, event.price)
        filled = _add(order.filled_quantity, event.quantity)
        quantity = order.quantity if order.quantity is not None else event.order_quantity
        executed = order.venue_executed
        cumulative = event.cum_quantity
        if cumulative is not None:
            if cumulative > filled:
                self._anomaly(
                    AnomalyKind.FILL_GAP,
                    f"trade {event.trade_id}: venue reports {_d(cumulative)} executed on "
                    f"order {order.key}, fills counted {_d(filled)}",
                    order.key,
                )
            elif cumulative < filled and (executed is None or cumulative >= executed):
                # Only the newest cumulative report can contradict the fills counted: an older
                # one (a reordered fill) naturally counts fewer.
                self._anomaly(
                    AnomalyKind.CUM_MISMATCH,
                    f"trade {event.trade_id}: venue reports {_d(cumulative)} executed on "
                    f"order {order.key}, below the {_d(filled)} counted",
                    order.key,
                )
            if executed is None or cumulative > executed:
                executed = cumulative
        if quantity is not None and quantity and filled > quantity:
            self._anomaly(
                AnomalyKind.OVERFILL,
                f"order {order.key} filled {_d(filled)} of {_d(quantity)}",
                order.key,
            )
        order = replace(
            order,
            trade_ids=order.trade_ids | {event.trade_id},
            filled_quantity=filled,
            filled_quote=_add(order.filled_quote, notional),
            fees=_fees_plus(order.fees, event.fee_asset, event.fee) if event.fee else order.fees,
            side=order.side or event.side,
            order_type=order.order_type or event.order_type,
            quantity=quantity,
            price=order.price if order.price is not None else event.order_price,
            venue_executed=executed,
        )
        self._money(order, event, notional)
        return order

    def _money(self, order: Order, event: OrderFilled, notional: Decimal) -> None:
        """Move balances (spot) or the position (perps) for one fill."""
        market = self.markets.get(event.symbol)
        if market is None:
            self._anomaly(
                AnomalyKind.UNKNOWN_MARKET,
                f"fill {event.trade_id} on {event.symbol}, a market with no MarketInfo: "
                "balances and positions not moved",
                order.key,
            )
            return
        fee = event.fee
        fee_asset = event.fee_asset
        if market.market_type in _POSITION_MARKETS:
            # Perps settle in the quote asset as they go: realized PnL in, the fee out.
            realized = self._position_fill(event)
            if realized is None:
                return  # inside the adopted baseline: its PnL and fee are in the venue's figures
            if fee and fee_asset == market.quote_asset:
                realized = _sub(realized, fee)
                fee = ZERO
            if realized:
                self._move_available(market.quote_asset, realized)
            if fee:
                self._move_available(fee_asset, fee.copy_negate())
            return
        # Spot: one move per asset, the fee folded into the move of its asset.
        if event.side is Side.BID:
            base, quote = event.quantity, notional.copy_negate()
        else:
            base, quote = event.quantity.copy_negate(), notional
        if fee:
            if fee_asset == market.quote_asset:
                quote = _sub(quote, fee)
            elif fee_asset == market.base_asset:
                base = _sub(base, fee)
            else:
                self._move_available(fee_asset, fee.copy_negate())
        self._move_available(market.base_asset, base)
        self._move_available(market.quote_asset, quote)

    def _relock(self, order: Order, status: OrderStatus) -> tuple[Decimal, str | None]:
        """Hold exactly what a resting spot order (in `status`) can still spend; release the
        rest. Returns the order's new (locked, lock_asset)."""
        asset: str | None = None
        amount = ZERO
        if status in _RESTING and order.quantity is not None:
            market = self.markets.get(order.symbol)
            if market is not None and market.market_type not in _POSITION_MARKETS:
                remaining = _sub(order.quantity, order.filled_quantity)
                if remaining > 0:
                    if order.side is Side.ASK:
                        asset, amount = market.base_asset, remaining
                    elif order.side is Side.BID and order.price is not None:
                        asset, amount = market.quote_asset, _mul(remaining, order.price)
        held, held_asset = order.locked, order.lock_asset
        if asset == held_asset and amount == held:
            return held, held_asset
        if held_asset is not None and held:
            if held_asset == asset:
                # The same asset (the usual case: a fill of a resting order): one move.
                change = _sub(held, amount)
                self._move(asset, change, change.copy_negate())
                return amount, asset if amount else None
            self._move(held_asset, held, held.copy_negate())
        if asset is not None and amount:
            self._move(asset, amount.copy_negate(), amount)
        return amount, asset if amount else None

    def _move_available(self, asset: str, change: Decimal) -> None:
        balance = self.balances.get(asset)
        if balance is None:
            balance = Balance(asset=asset)
        self._w_balances()[asset] = replace(balance, available=_add(balance.available, change))

    def _move(self, asset: str, d_available: Decimal, d_locked: Decimal) -> None:
        balance = self.balances.get(asset)
        if balance is None:
            balance = Balance(asset=asset)
        self._w_balances().set(
            asset,
            replace(
                balance,
                available=_add(balance.available, d_available),
                locked=_add(balance.locked, d_locked),
            ),
        )

    def _finished(self, key: str) -> None:
        self._w_finished()[self.finished_tail] = key
        self.finished_tail += 1
        while self.finished_tail - self.finished_head > self.retain_finished:
            old_key = self.finished[self.finished_head]
            del self._w_finished()[self.finished_head]
            self.finished_head += 1
            old = self.orders.get(old_key)
            if old is None or old.finished_at != self.finished_head - 1:
                # Gone already, or reopened by a venue report after it finished (a rejected
                # order the venue accepts): an open order is never dropped, and one that
                # finished again is dropped at its newer place in the queue.
                continue
            del self._w_orders()[old_key]
            if old.client_id is not None and self.by_client.get(old.client_id) == old_key:
                del self._w_by_client()[old.client_id]
            if old.venue_id is not None and self.by_venue.get(old.venue_id) == old_key:
                del self._w_by_venue()[old.venue_id]

    # --- positions --------------------------------------------------------------------------

    def _position_fill(self, event: OrderFilled) -> Decimal | None:
        """Count one fill in its position; returns the change in realized PnL, or None for a
        fill inside the adopted baseline (the venue's figures include it).

        The position is re-derived from the set of its fills in the venue's matching order:
        a fill that arrives after a newer one (recovered late by reconciliation) takes its
        place in that order, and the figures after it are folded again.
        """
        position = self.positions.get(event.symbol) or Position(symbol=event.symbol)
        delta = event.quantity if event.side is Side.BID else event.quantity.copy_negate()
        base = position.checkpoint
        recent = position.recent
        newest = recent[-1].key if recent else base.key
        synthetic = position.synthetic_fills
        if event.trade_id >= SYNTHETIC_TRADE_ID_BASE:
            # No trade id from the venue: placed after the newest fill counted so far, and
            # after every earlier fill without one (the derived id is a hash: no order).
            synthetic += 1
            key: FillKey = (newest[0] if newest else 0, synthetic, event.venue_id)
        else:
            key = (event.trade_id, 0, event.venue_id)
        if (position.baseline_key is not None and key <= position.baseline_key) or (
            position.baseline_before_us is not None
            and event.venue_time_us is not None
            and event.venue_time_us < position.baseline_before_us
        ):
            # Older than the adopted venue report, which includes it: the order counts it,
            # the position (and the balance) do not move again.
            self._anomaly(
                AnomalyKind.FILL_OUT_OF_ORDER,
                f"fill {event.trade_id} on {event.symbol} predates the adopted venue "
                "position, which includes it: position not moved",
            )
            return None
        price = event.price
        if newest is None or key > newest:
            # In order (the usual case): one step on top of the current figures.
            current = _position_step(recent[-1].after if recent else base, key, delta, price)
            fill = PositionFill(key=key, delta=delta, price=price, after=current)
            if len(recent) >= POSITION_WINDOW:
                # The checkpoint moves past the oldest fill, whose figures are at hand.
                base = recent[0].after
                recent = (*recent[1:], fill)
            else:
                recent = (*recent, fill)
        else:
            if base.key is not None and key <= base.key:
                # Older than the window: counted just after the checkpoint, and reported.
                self._anomaly(
                    AnomalyKind.FILL_OUT_OF_ORDER,
                    f"fill {event.trade_id} on {event.symbol} is older than the "
                    f"{POSITION_WINDOW} fills kept: applied out of order",
                )
                base = _position_step(base, base.key, delta, price)
                recent = _refold(base, recent)
            else:
                # Late but within the window: insert at its place; the newer fills fold again.
                at = bisect.bisect_left([f.key for f in recent], key)
                after = _position_step(recent[at - 1].after if at else base, key, delta, price)
                fill = PositionFill(key=key, delta=delta, price=price, after=after)
                recent = (*recent[:at], fill, *_refold(after, recent[at:]))
                if len(recent) > POSITION_WINDOW:
                    base = recent[0].after
                    recent = recent[1:]
            current = recent[-1].after if recent else base
        fees = position.fees
        if event.fee:
            fees = _fees_plus(fees, event.fee_asset, event.fee)
        self._w_positions().set(
            event.symbol,
            replace(
                position,
                net_quantity=current.net_quantity,
                entry_price=current.entry_price,
                open_cost=current.open_cost,
                realized_pnl=current.realized_pnl,
                fees=fees,
                checkpoint=base,
                recent=recent,
                synthetic_fills=synthetic,
            ),
        )
        return _sub(current.realized_pnl, position.realized_pnl)

    def _funding(self, event: FundingPaid) -> None:
        position = self.positions.get(event.symbol) or Position(symbol=event.symbol)
        if event.interval_end_us in position.funding_intervals:
            self._anomaly(
                AnomalyKind.DUPLICATE_FUNDING,
                f"funding for {event.symbol} interval ending {event.interval_end_us} "
                "already counted",
            )
            return
        self._w_positions().set(
            event.symbol,
            replace(
                position,
                funding=_add(position.funding, event.amount),
                funding_intervals=position.funding_intervals | {event.interval_end_us},
            ),
        )
        market = self.markets.get(event.symbol)
        if market is not None:  # funding settles in the quote asset
            self._move_available(market.quote_asset, event.amount)

    def _position_observed(self, event: PositionObserved) -> None:
        position = self.positions.get(event.symbol) or Position(symbol=event.symbol)
        observed = ObservedPosition(
            net_quantity=event.net_quantity,
            entry_price=event.entry_price,
            break_even_price=event.break_even_price,
            mark_price=event.mark_price,
            realized_pnl=event.realized_pnl,
            unrealized_pnl=event.unrealized_pnl,
        )
        if self.baseline_seq is None and event.source is not Source.WS:
            # Before the account's first balance snapshot, a REST report is the position's
            # baseline (it may predate this log): adopt the venue's quantity and entry. The
            # reconciler sends it only once a fill history taken after it shows no fill the
            # engine has not counted, so every fill it includes is counted already: those
            # fills are folded into the adopted figures, and a copy arriving later is a
            # duplicate. Not a stream report: the snapshot sent on subscribe can include a
            # fill still on its way.
            recent = position.recent
            newest = recent[-1].key if recent else position.checkpoint.key
            if event.net_quantity == position.net_quantity:
                # The fills counted explain the venue's position: keep their exact figures.
                adopted = _figures(position)
            else:
                entry = event.entry_price if event.entry_price is not None else ZERO
                if not event.net_quantity:
                    entry = ZERO
                adopted = PositionFigures(
                    key=newest,
                    net_quantity=event.net_quantity,
                    entry_price=entry,
                    open_cost=_mul(entry, event.net_quantity.copy_abs()),
                    realized_pnl=position.realized_pnl,
                )
            self._w_positions().set(
                event.symbol,
                replace(
                    position,
                    net_quantity=adopted.net_quantity,
                    entry_price=adopted.entry_price,
                    open_cost=adopted.open_cost,
                    checkpoint=adopted,
                    recent=(),
                    baselined=True,
                    baseline_key=newest,
                    baseline_before_us=event.covers_fills_before_us,
                    observed=observed,
                    drift_quantity=ZERO,
                    drift_reported=ZERO,
                ),
            )
            return
        # Afterwards the position is what the fills say; a report is compared, never adopted.
        # The position stream and the order stream are not ordered with each other, so a
        # report can run ahead of (or behind) a fill in flight: a difference is recorded as
        # drift, and becomes an anomaly when the next report shows the same difference; a
        # difference that persists is reported once, not on every report.
        last = position.observed
        if last == observed:
            return  # the same report again: no news
        drift = _sub(event.net_quantity, position.net_quantity)
        reported = position.drift_reported
        confirmed = bool(drift) and drift == position.drift_quantity and drift != reported
        if (
            not confirmed
            and last is not None
            and drift == position.drift_quantity
            and (last.net_quantity, last.entry_price, last.break_even_price, last.realized_pnl)
            == (
                observed.net_quantity,
                observed.entry_price,
                observed.break_even_price,
                observed.realized_pnl,
            )
        ):
            return  # only the mark (and so the unrealized PnL) moved: no news
        if confirmed:
            self._anomaly(
                AnomalyKind.POSITION_DRIFT,
                f"{event.symbol}: venue position {_d(event.net_quantity)}, derived "
                f"{_d(position.net_quantity)}, in two reports running",
            )
            reported = drift
        elif not drift:
            reported = ZERO
        self._w_positions().set(
            event.symbol,
            replace(position, observed=observed, drift_quantity=drift, drift_reported=reported),
        )

    # --- balances ---------------------------------------------------------------------------

    def _balances_observed(self, event: BalanceObserved) -> None:
        """The account's first snapshot is the baseline and is adopted (what came before the
        log is unknown). Every later snapshot is compared, never adopted: a poll can run ahead
        of a fill still in flight, and adopting it would count that fill twice when it
        arrives. The difference is kept as drift, and each new difference is an anomaly."""
        seen = {b.asset: b for b in event.balances}
        # A snapshot is complete: an asset it lacks is observed as zero.
        baseline = self.baseline_seq is None
        if baseline:
            self.baseline_seq = self.seq
        if self._balances_m is not None:  # a mutation cannot list its keys
            self._balances_base = self.balances = self._balances_m.finish()
            self._balances_m = None
        balances = self._balances_base
        for asset in sorted(set(seen) | set(balances.keys())):
            balance = self.balances.get(asset) or Balance(asset=asset)
            reported = seen.get(asset)
            observed = ObservedBalance(
                available=reported.available if reported else ZERO,
                locked=reported.locked if reported else ZERO,
                staked=reported.staked if reported else ZERO,
            )
            if baseline:
                if balance.observed == observed and balance.available == observed.available:
                    continue
                self._w_balances().set(
                    asset,
                    replace(
                        balance,
                        available=observed.available,
                        locked=observed.locked,
                        observed=observed,
                        drift_available=ZERO,
                        drift_locked=ZERO,
                    ),
                )
                continue
            drift_available = _sub(observed.available, balance.available)
            drift_locked = _sub(observed.locked, balance.locked)
            unchanged = (drift_available, drift_locked) == (
                balance.drift_available,
                balance.drift_locked,
            )
            if balance.observed == observed and unchanged:
                continue  # the same snapshot again, and nothing moved since: no news
            if (drift_available or drift_locked) and not unchanged:
                self._anomaly(
                    AnomalyKind.BALANCE_DRIFT,
                    f"{asset}: venue available {_d(observed.available)} locked "
                    f"{_d(observed.locked)}, derived available {_d(balance.available)} locked "
                    f"{_d(balance.locked)}",
                )
            self._w_balances().set(
                asset,
                replace(
                    balance,
                    observed=observed,
                    drift_available=drift_available,
                    drift_locked=drift_locked,
                ),
            )


# What a report does to its order (see `Fold._advance`), and the kind of report it is for the
# transition table (fills and REST observations carry theirs with them).
_REPORTS: Final[dict[type[OrderEvent], Callable[[Fold, Order, Any], Order | None]]] = {
    OrderSubmitted: Fold._report_unchanged,
    SubmitRejected: Fold._report_submit_rejected,
    SubmitUnknown: Fold._report_unchanged,
    CancelRequested: Fold._report_cancel_requested,
    CancelRejected: Fold._report_cancel_rejected,
    OrderAccepted: Fold._report_accepted,
    OrderFilled: Fold._report_filled,
    OrderCancelled: Fold._report_cancelled,
    OrderExpired: Fold._report_expired,
    OrderModified: Fold._report_modified,
    TriggerPlaced: Fold._report_trigger_placed,
    TriggerFailed: Fold._report_unchanged,
    OrderObserved: Fold._report_observed,
}
_KINDS: Final[dict[type[OrderEvent], Kind]] = {
    OrderSubmitted: Kind.SUBMITTED,
    SubmitRejected: Kind.SUBMIT_REJECTED,
    SubmitUnknown: Kind.SUBMIT_UNKNOWN,
    CancelRequested: Kind.CANCEL_REQUESTED,
    CancelRejected: Kind.CANCEL_REJECTED,
    OrderAccepted: Kind.ACCEPTED,
    OrderCancelled: Kind.CANCELLED,
    OrderExpired: Kind.EXPIRED,
    OrderModified: Kind.MODIFIED,
    TriggerPlaced: Kind.TRIGGER_PLACED,
    TriggerFailed: Kind.TRIGGER_FAILED,
}
assert set(_REPORTS) == set(typing.get_args(OrderEvent))
# Status and market-type sets, looked up directly (an enum property costs a call each time).
_TERMINAL: Final = frozenset(s for s in OrderStatus if s.is_terminal)
_RESTING: Final = frozenset(s for s in OrderStatus if s.is_open)
_POSITION_MARKETS: Final = frozenset(t for t in MarketType if t.has_positions)


# One handler per event class: `step` dispatches on the exact type (a dictionary lookup, not a
# chain of isinstance tests; events are final classes).
_STEPS: Final[dict[type[Event], Callable[[Fold, Any], None]]] = {
    **{cls: Fold._order_event for cls in typing.get_args(OrderEvent)},
    BalanceObserved: Fold._balances_observed,
    PositionObserved: Fold._position_observed,
    FundingPaid: Fold._funding,
    MarketInfo: Fold._market_info,
    MessageNotUnderstood: Fold._not_understood,
    OrderSubmitted: Fold._submitted,
    OrderDenied: Fold._risk,
    KillSwitchTripped: Fold._risk,
    KillSwitchReset: Fold._risk,
    MarkObserved: Fold._mark_observed,
}
assert set(_STEPS) == set(EVENT_TYPES.values())


def _new_order(event: OrderSubmitted, seq: int) -> Order:
    """The order a submit (seq `seq`) creates."""
    order = Order(
        key=f"c{event.client_id}",
        symbol=event.symbol,
        status=OrderStatus.PENDING_NEW,
        client_id=event.client_id,
        side=event.side,
        order_type=event.order_type,
        quantity=event.quantity,
        quote_quantity=event.quote_quantity,
        price=event.price,
        time_in_force=event.time_in_force,
        post_only=event.post_only,
        reduce_only=event.reduce_only,
        created_seq=seq,
        updated_seq=seq,
    )
    if (
        event.trigger_price is not None
        or event.trigger_quantity is not None
        or event.trigger_by is not None
        or event.stop_loss_trigger_price is not None
        or event.stop_loss_limit_price is not None
        or event.take_profit_trigger_price is not None
        or event.take_profit_limit_price is not None
    ):
        # A second call for the trigger and the exits (rare): a call with more than 14
        # keywords builds a dictionary first, about three times as slow as two calls.
        order = replace(
            order,
            trigger_price=event.trigger_price,
            trigger_quantity=event.trigger_quantity,
            trigger_by=event.trigger_by,
            stop_loss_trigger_price=event.stop_loss_trigger_price,
            stop_loss_limit_price=event.stop_loss_limit_price,
            take_profit_trigger_price=event.take_profit_trigger_price,
            take_profit_limit_price=event.take_profit_limit_price,
        )
    return order


def _venue_cap(order: Order, quantity: Decimal | None) -> Order:
    """The venue may accept less than we asked (a reduce-only order capped at the position it
    reduces): a smaller positive quantity in its report wins, in any arrival order."""
    if quantity is not None and order.quantity is not None and 0 < quantity < order.quantity:
        return replace(order, quantity=quantity)
    return order


def _fill_in(order: Order, **reported: Any) -> Order:
    """Take the venue's description for fields the order does not have yet."""
    changes = {
        name: value
        for name, value in reported.items()
        if value is not None and getattr(order, name) is None
    }
    return replace(order, **changes) if changes else order


def _fill_status(order: Order, reported: VenueStatus | None) -> OrderStatus:
    if reported is VenueStatus.FILLED:
        return OrderStatus.FILLED
    if order.quantity and order.filled_quantity >= order.quantity:
        return OrderStatus.FILLED
    if reported is VenueStatus.PARTIALLY_FILLED or order.filled_quantity:
        return OrderStatus.PARTIALLY_FILLED
    return order.status if order.status.is_open else OrderStatus.NEW


def _figures(position: Position) -> PositionFigures:
    return PositionFigures(
        key=position.recent[-1].key if position.recent else position.checkpoint.key,
        net_quantity=position.net_quantity,
        entry_price=position.entry_price,
        open_cost=position.open_cost,
        realized_pnl=position.realized_pnl,
    )


def _refold(figures: PositionFigures, fills: tuple[PositionFill, ...]) -> tuple[PositionFill, ...]:
    """`fills` with their figures after derived again on top of `figures`."""
    out = []
    for fill in fills:
        figures = _position_step(figures, fill.key, fill.delta, fill.price)
        out.append(replace(fill, after=figures))
    return tuple(out)


def _position_step(
    figures: PositionFigures, key: FillKey, delta: Decimal, price: Decimal
) -> PositionFigures:
    """The figures after one more fill at `key` of signed quantity `delta` at `price` (in
    matching order)."""
    qty = figures.net_quantity
    entry = figures.entry_price
    cost = figures.open_cost
    realized = figures.realized_pnl
    size = delta.copy_abs()
    new_qty = _add(qty, delta)
    if not qty or (qty > 0) == (delta > 0):
        # Opening or increasing: the entry is the open cost over the open quantity.
        cost = _add(cost, _mul(size, price))
        if new_qty:  # a zero-quantity fill on a flat position opens nothing (and 0/0 traps)
            entry = _div(cost, new_qty.copy_abs())
    else:
        held = qty.copy_abs()
        closed = held if held < size else size  # min(size, held)
        pnl = _mul(closed, _sub(price, entry))
        if pnl.adjusted() < _ROUNDED_BELOW:
            pnl = _quantize(pnl, PNL_QUANTUM)
        realized = _add(realized, pnl if qty > 0 else pnl.copy_negate())
        if not new_qty:
            entry = cost = ZERO
        elif (new_qty > 0) != (qty > 0):
            # Through zero: the remainder opens the other side at the fill price.
            entry = price
            cost = _mul(price, new_qty.copy_abs())
        else:
            # Reducing keeps the average entry; the open cost follows the quantity.
            cost = _mul(entry, new_qty.copy_abs())
    return PositionFigures(
        key=key,
        net_quantity=new_qty,
        entry_price=entry,
        open_cost=cost,
        realized_pnl=realized,
    )
