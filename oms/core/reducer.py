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
freezes. Both run the same step code, so they agree bit for bit.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, assert_never

from msgspec.structs import replace

from oms.core.events import (
    BalanceObserved,
    CancelRejected,
    CancelRequested,
    Event,
    FundingPaid,
    MarketInfo,
    MessageNotUnderstood,
    OrderAccepted,
    OrderCancelled,
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
from oms.core.lifecycle import Kind, kind_of_venue_status, transition
from oms.core.state import (
    ANOMALIES_KEPT,
    POSITION_WINDOW,
    Anomaly,
    AnomalyKind,
    Balance,
    FillKey,
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
    if len(fees) == 1 and fees[0][0] == asset:  # the usual case: one fee asset per order
        return ((asset, _add(fees[0][1], amount)),)
    out = dict(fees)
    out[asset] = _add(out.get(asset, ZERO), amount)
    return tuple(sorted(out.items()))


def _round_pnl(value: Decimal) -> Decimal:
    """Realized PnL rounded to `PNL_QUANTUM`. Beyond about 1e41 a 1e-18 grain no longer fits
    the context's 60 digits (quantize would trap), and the figure is kept as it is."""
    if value.adjusted() < CTX.prec - 19:
        return value.quantize(PNL_QUANTUM, context=CTX)
    return value


class Fold:
    """An incremental `replay`: `step(event)` for each event, `freeze()` for the state.

    A mutable holder of one state's (immutable) parts; freezing is cheap and the fold can go
    on after it. `apply` and `replay` are both made of it.
    """

    def __init__(self, state: State) -> None:
        self.seq = state.last_seq
        self.orders = state.orders
        self.by_client = state.by_client
        self.by_venue = state.by_venue
        self.balances = state.balances
        self.positions = state.positions
        self.markets = state.markets
        self.anomalies = state.anomalies
        self.anomaly_counts = state.anomaly_counts
        self.finished = state.finished
        self.finished_head = state.finished_head
        self.finished_tail = state.finished_tail
        self.retain_finished = state.retain_finished
        self.last_client_id = state.last_client_id
        self.baseline_seq = state.baseline_seq

    def freeze(self) -> State:
        return State(
            last_seq=self.seq,
            orders=self.orders,
            by_client=self.by_client,
            by_venue=self.by_venue,
            balances=self.balances,
            positions=self.positions,
            markets=self.markets,
            anomalies=self.anomalies,
            anomaly_counts=self.anomaly_counts,
            finished=self.finished,
            finished_head=self.finished_head,
            finished_tail=self.finished_tail,
            retain_finished=self.retain_finished,
            last_client_id=self.last_client_id,
            baseline_seq=self.baseline_seq,
        )

    # --- dispatch ---------------------------------------------------------------------------

    def step(self, event: Event) -> None:
        self.seq += 1
        match event:
            case (
                OrderSubmitted()
                | CancelRequested()
                | SubmitRejected()
                | SubmitUnknown()
                | CancelRejected()
                | OrderAccepted()
                | OrderFilled()
                | OrderCancelled()
                | OrderExpired()
                | OrderModified()
                | TriggerPlaced()
                | TriggerFailed()
                | OrderObserved()
            ):
                self._order_event(event)
            case BalanceObserved():
                self._balances_observed(event)
            case PositionObserved():
                self._position_observed(event)
            case FundingPaid():
                self._funding(event)
            case MarketInfo():
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
            case MessageNotUnderstood():
                self._anomaly(AnomalyKind.NOT_UNDERSTOOD, event.reason)
            case _:
                assert_never(event)

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
        order = self.orders[key]
        # Index ids the order did not have yet (the venue id arrives with the first report).
        if venue_id is not None and order.venue_id is None:
            order = replace(order, venue_id=venue_id)
            self.by_venue = self.by_venue.set(venue_id, key)
        if client_id is not None and order.client_id is None:
            order = replace(order, client_id=client_id)
            self.by_client = self.by_client.set(client_id, key)
        if order is not self.orders[key]:
            # Store the ids now: `_advance` may return early (an absorbed report, a duplicate
            # fill), and an index entry for an id the order does not carry would outlive the
            # order when retention drops it (a later report then finds a missing key).
            self.orders = self.orders.set(key, order)
        self._advance(order, event)

    def _submit(self, event: OrderSubmitted) -> None:
        key = f"c{event.client_id}"
        order = Order(
            key=key,
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
            created_seq=self.seq,
            updated_seq=self.seq,
        )
        self.orders = self.orders.set(key, order)
        self.by_client = self.by_client.set(event.client_id, key)

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
        if origin == OrderOrigin.USER:
            # Venue-originated orders (liquidation, ADL) are expected to be new to us.
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
        )
        self.orders = self.orders.set(key, order)
        if client_id is not None:
            self.by_client = self.by_client.set(client_id, key)
        if venue_id is not None:
            self.by_venue = self.by_venue.set(venue_id, key)
        return key

    def _advance(self, order: Order, event: OrderEvent) -> None:
        before = order
        reported: VenueStatus | None = None
        match event:
            case OrderSubmitted():
                kind = Kind.SUBMITTED
            case SubmitRejected():
                kind = Kind.SUBMIT_REJECTED
                order = replace(order, reject_code=event.code, reject_message=event.message)
            case SubmitUnknown():
                kind = Kind.SUBMIT_UNKNOWN
            case CancelRequested():
                kind = Kind.CANCEL_REQUESTED
                if not order.cancel_requested:
                    order = replace(order, cancel_requested=True)
            case CancelRejected():
                kind = Kind.CANCEL_REJECTED
                if order.cancel_requested:
                    order = replace(order, cancel_requested=False)
            case OrderAccepted():
                kind = Kind.ACCEPTED
                order = _fill_in(
                    order,
                    side=event.side,
                    order_type=event.order_type,
                    quantity=event.quantity,
                    quote_quantity=event.quote_quantity,
                    price=event.price,
                )
                order = _venue_cap(order, event.quantity)
            case OrderFilled():
                kind = Kind.FILL
                reported = event.status
                if event.trade_id in order.trade_ids:
                    self._anomaly(
                        AnomalyKind.DUPLICATE_FILL,
                        f"trade {event.trade_id} of order {order.key} on {order.symbol} "
                        "already counted",
                        order.key,
                    )
                    return
                order = self._fill(order, event)
            case OrderCancelled():
                kind = Kind.CANCELLED
                order = self._cumulative(order, event.cum_quantity)
            case OrderExpired():
                kind = Kind.EXPIRED
                if event.reason is not None:
                    order = replace(order, expiry_reason=event.reason)
                order = self._cumulative(order, event.cum_quantity)
            case OrderModified():
                kind = Kind.MODIFIED
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
            case TriggerPlaced():
                kind = Kind.TRIGGER_PLACED
                order = _fill_in(
                    order, side=event.side, order_type=event.order_type, price=event.price
                )
            case TriggerFailed():
                kind = Kind.TRIGGER_FAILED
            case OrderObserved():
                kind = kind_of_venue_status(event.status)
                reported = event.status
                order = _fill_in(
                    order,
                    side=event.side,
                    order_type=event.order_type,
                    quantity=event.quantity,
                    quote_quantity=event.quote_quantity,
                    price=event.price,
                )
                order = _venue_cap(order, event.quantity)
                if event.expiry_reason is not None and order.expiry_reason is None:
                    order = replace(order, expiry_reason=event.expiry_reason)
                # An answer to our own command (source rest) often runs ahead of the stream's
                # fills: a normal race, so only other observations are checked for a gap.
                order = self._cumulative(
                    order, event.executed_quantity, check=event.source is not Source.REST
                )
            case _:
                assert_never(event)

        rule = transition(order.status, kind)
        status = order.status
        if rule.to is not None:
            status = rule.to
        elif rule.follow_fills:
            status = _fill_status(order, reported)
        if rule.anomaly:
            self._anomaly(
                AnomalyKind.FORBIDDEN_TRANSITION,
                f"can't apply {type(event).__name__} to order {order.key} in state "
                f"{order.status.value}",
                order.key,
            )
        if status is not order.status:
            order = replace(order, status=status)
        if event.venue_time_us is not None and (
            order.venue_time_us is None or event.venue_time_us > order.venue_time_us
        ):
            # The latest venue time of any report on the order, absorbed ones included, not
            # the time of the last to arrive: arrival order must not change the order.
            order = replace(order, venue_time_us=event.venue_time_us)
        if order == before:
            # Equality, not identity: a repeated report rebuilds fields with the same values
            # (an expiry reason, a reject code); it must not count as a change, or applying
            # it twice would bump `updated_seq` and break idempotence.
            return
        order = self._relock(order)
        finishing = order.status.is_terminal and not before.status.is_terminal
        if finishing:
            order = replace(order, updated_seq=self.seq, finished_at=self.finished_tail)
        elif before.status.is_terminal and not order.status.is_terminal:
            # Reopened by the venue (a rejected order it accepts): no longer in the queue.
            order = replace(order, updated_seq=self.seq, finished_at=None)
        else:
            order = replace(order, updated_seq=self.seq)
        self.orders = self.orders.set(order.key, order)
        if finishing:
            self._finished(order.key)

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
        order = replace(
            order,
            trade_ids=order.trade_ids | {event.trade_id},
            filled_quantity=filled,
            filled_quote=_add(order.filled_quote, notional),
            fees=_fees_plus(order.fees, event.fee_asset, event.fee) if event.fee else order.fees,
            side=order.side or event.side,
            order_type=order.order_type or event.order_type,
            quantity=order.quantity if order.quantity is not None else event.order_quantity,
            price=order.price if order.price is not None else event.order_price,
        )
        if event.cum_quantity is not None:
            if event.cum_quantity > filled:
                self._anomaly(
                    AnomalyKind.FILL_GAP,
                    f"trade {event.trade_id}: venue reports {_d(event.cum_quantity)} executed on "
                    f"order {order.key}, fills counted {_d(filled)}",
                    order.key,
                )
            elif event.cum_quantity < filled and (
                order.venue_executed is None or event.cum_quantity >= order.venue_executed
            ):
                # Only the newest cumulative report can contradict the fills counted: an older
                # one (a reordered fill) naturally counts fewer.
                self._anomaly(
                    AnomalyKind.CUM_MISMATCH,
                    f"trade {event.trade_id}: venue reports {_d(event.cum_quantity)} executed on "
                    f"order {order.key}, below the {_d(filled)} counted",
                    order.key,
                )
            if order.venue_executed is None or event.cum_quantity > order.venue_executed:
                order = replace(order, venue_executed=event.cum_quantity)
        if order.quantity is not None and order.quantity and filled > order.quantity:
            self._anomaly(
                AnomalyKind.OVERFILL,
                f"order {order.key} filled {_d(filled)} of {_d(order.quantity)}",
                order.key,
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
        if market.market_type.has_positions:
            # Perps settle in the quote asset as they go: realized PnL in, the fee out.
            realized = self._position_fill(event)
            if realized is None:
                return  # inside the adopted baseline: its PnL and fee are in the venue's figures
            if realized:
                self._move(market.quote_asset, realized, ZERO)
            if event.fee:
                self._move(event.fee_asset, event.fee.copy_negate(), ZERO)
            return
        if event.side is Side.BID:
            self._move(market.base_asset, event.quantity, ZERO)
            self._move(market.quote_asset, notional.copy_negate(), ZERO)
        else:
            self._move(market.base_asset, event.quantity.copy_negate(), ZERO)
            self._move(market.quote_asset, notional, ZERO)
        if event.fee:
            self._move(event.fee_asset, event.fee.copy_negate(), ZERO)

    def _relock(self, order: Order) -> Order:
        """Hold exactly what a resting spot order can still spend; release the rest."""
        asset: str | None = None
        amount = ZERO
        market = self.markets.get(order.symbol)
        if (
            market is not None
            and not market.market_type.has_positions
            and order.status.is_open
            and order.quantity is not None
        ):
            remaining = _sub(order.quantity, order.filled_quantity)
            if remaining > 0:
                if order.side is Side.ASK:
                    asset, amount = market.base_asset, remaining
                elif order.side is Side.BID and order.price is not None:
                    asset, amount = market.quote_asset, _mul(remaining, order.price)
        if asset == order.lock_asset and amount == order.locked:
            return order
        if order.lock_asset is not None and order.locked:
            self._move(order.lock_asset, order.locked, order.locked.copy_negate())
        if asset is not None and amount:
            self._move(asset, amount.copy_negate(), amount)
        return replace(order, locked=amount, lock_asset=asset if amount else None)

    def _move(self, asset: str, d_available: Decimal, d_locked: Decimal) -> None:
        balance = self.balances.get(asset)
        if balance is None:
            balance = Balance(asset=asset)
        self.balances = self.balances.set(
            asset,
            replace(
                balance,
                available=_add(balance.available, d_available),
                locked=_add(balance.locked, d_locked),
            ),
        )

    def _finished(self, key: str) -> None:
        self.finished = self.finished.set(self.finished_tail, key)
        self.finished_tail += 1
        while self.finished_tail - self.finished_head > self.retain_finished:
            old_key = self.finished[self.finished_head]
            self.finished = self.finished.delete(self.finished_head)
            self.finished_head += 1
            old = self.orders.get(old_key)
            if old is None or old.finished_at != self.finished_head - 1:
                # Gone already, or reopened by a venue report after it finished (a rejected
                # order the venue accepts): an open order is never dropped, and one that
                # finished again is dropped at its newer place in the queue.
                continue
            self.orders = self.orders.delete(old_key)
            if old.client_id is not None and self.by_client.get(old.client_id) == old_key:
                self.by_client = self.by_client.delete(old.client_id)
            if old.venue_id is not None and self.by_venue.get(old.venue_id) == old_key:
                self.by_venue = self.by_venue.delete(old.venue_id)

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
        fill = PositionFill(key=key, delta=delta, price=event.price)
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
        current: PositionFigures | None = None
        if newest is None or key > newest:
            # In order (the usual case): one step on top of the current figures.
            current = _position_step(_figures(position), fill)
            recent = (*recent, fill)
        elif base.key is not None and key <= base.key:
            # Older than the window: counted just after the checkpoint, and reported.
            self._anomaly(
                AnomalyKind.FILL_OUT_OF_ORDER,
                f"fill {event.trade_id} on {event.symbol} is older than the "
                f"{POSITION_WINDOW} fills kept: applied out of order",
            )
            base = _position_step(base, replace(fill, key=base.key))
        else:
            # Late but within the window: insert at its place; the newer fills fold again.
            at = bisect.bisect_left([f.key for f in recent], key)
            recent = (*recent[:at], fill, *recent[at:])
        if len(recent) > POSITION_WINDOW:
            base = _position_step(base, recent[0])
            recent = recent[1:]
        if current is None:
            current = _fold_fills(base, recent)
        fees = position.fees
        if event.fee:
            fees = _fees_plus(fees, event.fee_asset, event.fee)
        self.positions = self.positions.set(
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
        self.positions = self.positions.set(
            event.symbol,
            replace(
                position,
                funding=_add(position.funding, event.amount),
                funding_intervals=position.funding_intervals | {event.interval_end_us},
            ),
        )
        market = self.markets.get(event.symbol)
        if market is not None:  # funding settles in the quote asset
            self._move(market.quote_asset, event.amount, ZERO)

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
            self.positions = self.positions.set(
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
        self.positions = self.positions.set(
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
        for asset in sorted(set(seen) | set(self.balances.keys())):
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
                self.balances = self.balances.set(
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
            self.balances = self.balances.set(
                asset,
                replace(
                    balance,
                    observed=observed,
                    drift_available=drift_available,
                    drift_locked=drift_locked,
                ),
            )


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


def _fold_fills(base: PositionFigures, fills: Iterable[PositionFill]) -> PositionFigures:
    for fill in fills:
        base = _position_step(base, fill)
    return base


def _position_step(figures: PositionFigures, fill: PositionFill) -> PositionFigures:
    """The figures after one more fill (in matching order)."""
    qty = figures.net_quantity
    entry = figures.entry_price
    cost = figures.open_cost
    realized = figures.realized_pnl
    delta = fill.delta
    size = delta.copy_abs()
    new_qty = _add(qty, delta)
    if not qty or (qty > 0) == (delta > 0):
        # Opening or increasing: the entry is the open cost over the open quantity.
        cost = _add(cost, _mul(size, fill.price))
        if new_qty:  # a zero-quantity fill on a flat position opens nothing (and 0/0 traps)
            entry = CTX.divide(cost, new_qty.copy_abs())
    else:
        closed = min(size, qty.copy_abs())
        pnl = _round_pnl(_mul(closed, _sub(fill.price, entry)))
        realized = _add(realized, pnl if qty > 0 else pnl.copy_negate())
        if not new_qty:
            entry = cost = ZERO
        elif (new_qty > 0) != (qty > 0):
            # Through zero: the remainder opens the other side at the fill price.
            entry = fill.price
            cost = _mul(fill.price, new_qty.copy_abs())
        else:
            # Reducing keeps the average entry; the open cost follows the quantity.
            cost = _mul(entry, new_qty.copy_abs())
    return PositionFigures(
        key=fill.key,
        net_quantity=new_qty,
        entry_price=entry,
        open_cost=cost,
        realized_pnl=realized,
    )
