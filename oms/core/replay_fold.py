"""`ReplayFold`: `Fold` for replaying many events at once, with the usual reports taken by a
short path. It folds to exactly the state `apply` gives event by event (the reference), and
tests/core/test_replay_fold.py holds it to that, state for state, over random sessions.

The short path takes the reports a healthy session is made of: a submit with a new client id,
and an accept, a fill, a cancel request or a cancel of an order found by its client id, in a
status where the transition table moves it without an anomaly (a fill on a perp market also
in the venue's matching order, after any adopted baseline). Anything else, and any report
that would record an anomaly, goes to `Fold`'s own handler, untouched. Each short handler
decides before it changes anything, so that it can still hand the event over.

What makes it cheaper than `Fold`: one handler per report instead of the general steps,
one copy of the order per report (two for a fill that brings what the order did not know
yet), the order maps as plain dicts, and balances and perp positions kept as private mutable
drafts while the short path runs (a balance move is an addition in place; a position's
window of fills is a deque, not a tuple copied on every fill; so are the risk check's submit
times, not a tuple of up to 256 copied on every submit). The drafts are written back as the
usual frozen records before any event goes to `Fold`'s handlers and when the fold is frozen,
so `Fold`'s code never sees a stale record. Every figure is computed by the same
operations, in the same order, as in `Fold`, so the results are the same Decimals.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any, ClassVar, Final

from immutables import Map
from msgspec.structs import replace

from oms.core.events import (
    CancelRequested,
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderSubmitted,
)
from oms.core.lifecycle import TRANSITIONS, Kind
from oms.core.reducer import (
    _POSITION_MARKETS,
    _RESTING,
    _STEPS,
    _TERMINAL,
    Fold,
    _fees_plus,
    _new_order,
    _position_step,
)
from oms.core.risk import RATE_MEMORY, pnl_sample_due, with_pnl_sample
from oms.core.serialization import FULL_CLASS, full_event
from oms.core.state import (
    POSITION_WINDOW,
    Balance,
    FillKey,
    Order,
    Position,
    PositionFill,
    State,
)
from oms.core.values import (
    CTX,
    SYNTHETIC_TRADE_ID_BASE,
    ZERO,
    OrderStatus,
    Side,
    VenueStatus,
)

__all__ = ["ReplayFold"]

_add = CTX.add
_sub = CTX.subtract
_mul = CTX.multiply

_FILLED: Final = OrderStatus.FILLED
_PARTIALLY_FILLED: Final = OrderStatus.PARTIALLY_FILLED
_NEW: Final = OrderStatus.NEW
_BID: Final = Side.BID
_ASK: Final = Side.ASK
_V_FILLED: Final = VenueStatus.FILLED
_V_PARTIALLY_FILLED: Final = VenueStatus.PARTIALLY_FILLED


def _moves(kind: Kind) -> dict[OrderStatus, OrderStatus]:
    """The statuses from which `kind` moves an order to a named status, with no anomaly."""
    out = {}
    for (status, k), rule in TRANSITIONS.items():
        if k is kind and rule.to is not None and not rule.anomaly:
            out[status] = rule.to
    return out


# From which statuses the short path takes a report (the rest go to `Fold`).
_ACCEPT_TO: Final = _moves(Kind.ACCEPTED)
_CANCEL_TO: Final = _moves(Kind.CANCELLED)
# A fill follows the fills (`follow_fills`) or keeps the status (`=`): no anomaly either way.
_FILL_FOLLOWS: Final = {
    status: rule.follow_fills
    for (status, kind), rule in TRANSITIONS.items()
    if kind is Kind.FILL and not rule.anomaly and rule.to is None
}
assert all(
    rule.to is None and not rule.anomaly
    for (status, kind), rule in TRANSITIONS.items()
    if kind is Kind.CANCEL_REQUESTED
), "a cancel request never moves the status"


class _PositionDraft:
    """A perp position while fills in matching order change it: the stored record's figures,
    with the window of recent fills as a deque."""

    __slots__ = (
        "checkpoint",
        "entry_price",
        "fees",
        "net_quantity",
        "open_cost",
        "realized_pnl",
        "recent",
        "record",
        "synthetic_fills",
    )

    def __init__(self, record: Position) -> None:
        self.record = record
        self.net_quantity = record.net_quantity
        self.entry_price = record.entry_price
        self.open_cost = record.open_cost
        self.realized_pnl = record.realized_pnl
        self.fees = record.fees
        self.checkpoint = record.checkpoint
        self.recent: deque[PositionFill] = deque(record.recent)
        self.synthetic_fills = record.synthetic_fills

    def freeze(self) -> Position:
        return replace(
            self.record,
            net_quantity=self.net_quantity,
            entry_price=self.entry_price,
            open_cost=self.open_cost,
            realized_pnl=self.realized_pnl,
            fees=self.fees,
            checkpoint=self.checkpoint,
            recent=tuple(self.recent),
            synthetic_fills=self.synthetic_fills,
        )


class ReplayFold(Fold):
    """A `Fold` (same use: `step` each event, `freeze` for the state) for long runs of events:
    replaying a log, resuming from a snapshot. `apply` stays the reference, used live."""

    # The handler of each event class, set below (and for each subclass).
    _handlers: ClassVar[dict[type[Event], Callable[[ReplayFold, Any], None]]]

    def __init__(self, state: State) -> None:
        super().__init__(state)
        # The maps of orders as private dicts (cheaper to read and write than a mutation).
        # (Plain dicts: the interpreter's fast paths for reading and writing a dict are for
        # `dict` itself, not a subclass.)
        self._order_dict: dict[str, Order] = dict(state.orders)
        self._client_dict: dict[int, str] = dict(state.by_client)
        self._venue_dict: dict[str, str] = dict(state.by_venue)
        self._finished_dict: dict[int, str] = dict(state.finished)
        self._use_dicts()
        # Drafts, by asset: [available, locked, the record they started from].
        self._balance_drafts: dict[str, list[Any]] = {}
        self._position_drafts: dict[str, _PositionDraft] = {}
        # `risk.submit_times` while submits append to it (a tuple of up to 256 copied on each
        # submit otherwise), or None.
        self._submit_times: deque[int] | None = None
        self.failed: Event | None = None  # the event a step raised on

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handlers = _handlers(cls)

    def step(self, event: Event) -> None:
        self.seq += 1
        try:
            self._handlers[type(event)](self, event)
        except BaseException:
            self.failed = event
            raise

    def freeze(self) -> State:
        self._write_back()
        # Each dict into a Map here: `Fold.freeze` finishes only the mutations it made.
        self._orders_m = self._by_client_m = self._by_venue_m = self._finished_m = None
        self._orders_base = Map(self._order_dict)
        self._by_client_base = Map(self._client_dict)
        self._by_venue_base = Map(self._venue_dict)
        self._finished_base = Map(self._finished_dict)
        state = super().freeze()
        self._use_dicts()  # and written to again if the fold goes on
        return state

    def _use_dicts(self) -> None:
        """Have `Fold` read and write the dicts (as the mutations it makes itself)."""
        self._orders_m = self.orders = self._order_dict  # type: ignore[assignment]
        self._by_client_m = self.by_client = self._client_dict  # type: ignore[assignment]
        self._by_venue_m = self.by_venue = self._venue_dict  # type: ignore[assignment]
        self._finished_m = self.finished = self._finished_dict  # type: ignore[assignment]

    # --- the drafts -------------------------------------------------------------------------

    def _write_back(self) -> None:
        """Write the drafts back as frozen records (before `Fold`'s code reads any)."""
        if self._submit_times is not None:
            self.risk = replace(self.risk, submit_times=tuple(self._submit_times))
            self._submit_times = None
        if self._balance_drafts:
            balances = self._w_balances()
            for asset, (available, locked, record) in self._balance_drafts.items():
                balances[asset] = replace(record, available=available, locked=locked)
            self._balance_drafts = {}
        if self._position_drafts:
            positions = self._w_positions()
            for symbol, draft in self._position_drafts.items():
                positions[symbol] = draft.freeze()
            self._position_drafts = {}

    def _balance(self, asset: str) -> list[Any]:
        draft = self._balance_drafts.get(asset)
        if draft is None:
            record = self.balances.get(asset)
            if record is None:
                record = Balance(asset=asset)
            draft = self._balance_drafts[asset] = [record.available, record.locked, record]
        return draft

    def _positions_now(self) -> Map[str, Position]:
        self._write_back()
        return self._frozen_positions()

    def _slow(self, event: Event) -> None:
        """`Fold`'s own handler (seq already counted), for an event of its own class (a
        fold-only one, see `serialization.FOLD_ONLY`, is turned back into one first)."""
        self._write_back()
        cls = type(event)
        if cls in FULL_CLASS:
            event = full_event(event)
            cls = type(event)
        _STEPS[cls](self, event)

    # --- the short path ---------------------------------------------------------------------

    def _submitted(self, event: OrderSubmitted) -> None:
        client_id = event.client_id
        if self.by_client.get(client_id) is not None:
            self._slow(event)  # a client id used before: the table's anomaly
            return
        # The risk check's memory of submits, as `Fold._submitted` keeps it (`risk.after_event`):
        # a PnL sample about once a minute (drafts written back first), and the submit's time.
        now = event.recv_time_us
        samples = self.risk.pnl_samples
        if pnl_sample_due(samples, now):
            samples = with_pnl_sample(samples, now, self._positions_now(), self.markets)
            self.risk = replace(self.risk, pnl_samples=samples)
        times = self._submit_times
        if times is None:
            # The newest `RATE_MEMORY` times: appending drops the oldest beyond them.
            times = self._submit_times = deque(self.risk.submit_times, maxlen=RATE_MEMORY)
        times.append(now)
        if self.last_client_id is None or client_id > self.last_client_id:
            self.last_client_id = client_id
        # `Fold._submit`, on the dicts.
        order = _new_order(event, self.seq)
        key = order.key
        self._order_dict[key] = order
        self._client_dict[client_id] = key

    def _known(self, client_id: int | None, venue_id: str | None) -> Order | None:
        """The order a report names by its client id, when `Fold` would take it as it is:
        found by that id, carrying it, and the venue id (if any) naming no other order."""
        if client_id is None:
            return None
        key = self.by_client.get(client_id)
        if key is None:
            return None
        if venue_id is not None:
            other = self.by_venue.get(venue_id)
            if other is not None and other != key:
                return None  # an id conflict
        order = self._order_dict[key]
        if order.client_id is None:
            return None
        return order

    def _accepted(self, event: OrderAccepted) -> None:
        # `_known`, written out: one in five events is an accept.
        client_id = event.client_id
        key = None if client_id is None else self._client_dict.get(client_id)
        if key is None:
            self._slow(event)
            return
        venue_id = event.venue_id
        other = self._venue_dict.get(venue_id)
        order = self._order_dict[key]
        if (other is not None and other != key) or order.client_id is None:
            self._slow(event)  # an id conflict
            return
        status = _ACCEPT_TO.get(order.status)
        if status is None:
            self._slow(event)  # absorbed, or the table's anomaly
            return
        if order.venue_id is None:
            self._venue_dict[venue_id] = key
        else:
            venue_id = order.venue_id
        # Fields the order does not have yet, from the report; a smaller quantity wins.
        quantity = order.quantity if order.quantity is not None else event.quantity
        reported = event.quantity
        if reported is not None and quantity is not None and 0 < reported < quantity:
            quantity = reported
        side = order.side if order.side is not None else event.side
        price = order.price if order.price is not None else event.price
        venue_time = order.venue_time_us
        if event.venue_time_us is not None and (
            venue_time is None or event.venue_time_us > venue_time
        ):
            venue_time = event.venue_time_us
        locked, lock_asset = self._relocked(
            order, status, quantity, order.filled_quantity, side=side, price=price
        )
        self._order_dict[key] = replace(
            order,
            venue_id=venue_id,
            side=side,
            order_type=order.order_type if order.order_type is not None else event.order_type,
            quantity=quantity,
            quote_quantity=(
                order.quote_quantity if order.quote_quantity is not None else event.quote_quantity
            ),
            price=price,
            status=status,
            venue_time_us=venue_time,
            updated_seq=self.seq,
            locked=locked,
            lock_asset=lock_asset,
        )

    def _cancel_requested(self, event: CancelRequested) -> None:
        venue_id = event.venue_id
        order = self._known(event.client_id, venue_id)
        if order is None or (venue_id is not None and order.venue_id is None):
            self._slow(event)
            return
        venue_time = order.venue_time_us
        if event.venue_time_us is not None and (
            venue_time is None or event.venue_time_us > venue_time
        ):
            venue_time = event.venue_time_us
        if order.cancel_requested and venue_time == order.venue_time_us:
            return  # the same request again: nothing changes
        status = order.status
        locked, lock_asset = self._relocked(
            order,
            status,
            order.quantity,
            order.filled_quantity,
            side=order.side,
            price=order.price,
        )
        self._order_dict[order.key] = replace(
            order,
            cancel_requested=True,
            venue_time_us=venue_time,
            updated_seq=self.seq,
            locked=locked,
            lock_asset=lock_asset,
        )

    def _cancelled(self, event: OrderCancelled) -> None:
        venue_id = event.venue_id
        order = self._known(event.client_id, venue_id)
        if order is None or (venue_id is not None and order.venue_id is None):
            self._slow(event)
            return
        status = _CANCEL_TO.get(order.status)
        cumulative = event.cum_quantity
        if status is None or (cumulative is not None and cumulative > order.filled_quantity):
            self._slow(event)  # absorbed, the table's anomaly, or a fill gap
            return
        executed = order.venue_executed
        if cumulative is not None and (executed is None or cumulative > executed):
            executed = cumulative
        venue_time = order.venue_time_us
        if event.venue_time_us is not None and (
            venue_time is None or event.venue_time_us > venue_time
        ):
            venue_time = event.venue_time_us
        locked, lock_asset = self._relocked(
            order,
            status,
            order.quantity,
            order.filled_quantity,
            side=order.side,
            price=order.price,
        )
        key = order.key
        finishing = status in _TERMINAL  # and it was not: the table moved it
        self._order_dict[key] = replace(
            order,
            venue_executed=executed,
            status=status,
            venue_time_us=venue_time,
            updated_seq=self.seq,
            finished_at=self.finished_tail if finishing else order.finished_at,
            locked=locked,
            lock_asset=lock_asset,
        )
        if finishing:
            self._finished(key)

    def _filled(self, event: OrderFilled) -> None:
        # `_known`, written out: this is the most frequent event.
        client_id = event.client_id
        key = None if client_id is None else self.by_client.get(client_id)
        if key is None:
            self._slow(event)
            return
        other = self.by_venue.get(event.venue_id)
        order = self._order_dict[key]
        trade_id = event.trade_id
        if (
            (other is not None and other != key)
            or order.client_id is None
            or trade_id in order.trade_ids
        ):
            self._slow(event)  # an id conflict, or a duplicate
            return
        old_status = order.status
        follows = _FILL_FOLLOWS.get(old_status)
        market = self.markets.get(event.symbol)
        if follows is None or market is None:
            self._slow(event)  # the table's anomaly, or a market with no MarketInfo
            return
        quantity = event.quantity
        notional = _mul(quantity, event.price)
        filled = _add(order.filled_quantity, quantity)
        order_quantity = order.quantity if order.quantity is not None else event.order_quantity
        executed = order.venue_executed
        cumulative = event.cum_quantity
        if cumulative is not None:
            if cumulative > filled or (
                cumulative < filled and (executed is None or cumulative >= executed)
            ):
                self._slow(event)  # a fill gap, or a cumulative below the fills
                return
            if executed is None or cumulative > executed:
                executed = cumulative
        if order_quantity is not None and order_quantity and filled > order_quantity:
            self._slow(event)  # an overfill
            return
        fee = event.fee
        fee_asset = event.fee_asset
        perp = market.market_type in _POSITION_MARKETS
        if perp:
            # Counted in the position if in matching order (else nothing changed yet).
            realized = self._position_in_order(event)
            if realized is None:
                self._slow(event)  # late, or inside an adopted baseline
                return
            # Decided: from here on the state changes.
            if fee and fee_asset == market.quote_asset:
                realized = _sub(realized, fee)
                fee = ZERO
            drafts = self._balance_drafts
            if realized:
                asset = market.quote_asset
                draft = drafts.get(asset) or self._balance(asset)
                draft[0] = _add(draft[0], realized)
            if fee:
                draft = drafts.get(fee_asset) or self._balance(fee_asset)
                draft[0] = _add(draft[0], fee.copy_negate())
        else:
            # Decided: from here on the state changes.
            if event.side is _BID:
                base, quote = quantity, notional.copy_negate()
            else:
                base, quote = quantity.copy_negate(), notional
            drafts = self._balance_drafts
            if fee:
                if fee_asset == market.quote_asset:
                    quote = _sub(quote, fee)
                elif fee_asset == market.base_asset:
                    base = _sub(base, fee)
                else:
                    draft = drafts.get(fee_asset) or self._balance(fee_asset)
                    draft[0] = _add(draft[0], fee.copy_negate())
            asset = market.base_asset
            draft = drafts.get(asset) or self._balance(asset)
            draft[0] = _add(draft[0], base)
            asset = market.quote_asset
            draft = drafts.get(asset) or self._balance(asset)
            draft[0] = _add(draft[0], quote)
        venue_id = order.venue_id
        if venue_id is None:
            venue_id = event.venue_id
            self._venue_dict[venue_id] = key
        # The status the fills say (`reducer._fill_status`), or kept where the table keeps it.
        status = old_status
        if follows:
            reported = event.status
            if reported is _V_FILLED or (order_quantity and filled >= order_quantity):
                status = _FILLED
            elif reported is _V_PARTIALLY_FILLED or filled:
                status = _PARTIALLY_FILLED
            elif old_status not in _RESTING:
                status = _NEW
        venue_time = order.venue_time_us
        if event.venue_time_us is not None and (
            venue_time is None or event.venue_time_us > venue_time
        ):
            venue_time = event.venue_time_us
        side = order.side or event.side
        price = order.price if order.price is not None else event.order_price
        if perp and order.lock_asset is None and not order.locked and order.symbol == event.symbol:
            # A perp order holds nothing locked, and comes to hold nothing: `_relock` is a no-op.
            locked, lock_asset = order.locked, None
        else:
            locked, lock_asset = self._relocked(
                order, status, order_quantity, filled, side=side, price=price
            )
        fees = _fees_plus(order.fees, fee_asset, event.fee) if event.fee else order.fees
        finishing = status in _TERMINAL and old_status not in _TERMINAL
        order_type = order.order_type or event.order_type
        if (
            venue_id is not order.venue_id
            or side is not order.side
            or order_type is not order.order_type
            or order_quantity is not order.quantity
            or price is not order.price
        ):
            # What the order did not know yet, from the fill (rare: a fill before the accept).
            # A separate copy: a call with more than 14 keywords builds a dictionary first.
            order = replace(
                order,
                venue_id=venue_id,
                side=side,
                order_type=order_type,
                quantity=order_quantity,
                price=price,
            )
        self._order_dict[key] = replace(
            order,
            trade_ids=order.trade_ids | {trade_id},
            filled_quantity=filled,
            filled_quote=_add(order.filled_quote, notional),
            fees=fees,
            venue_executed=executed,
            status=status,
            venue_time_us=venue_time,
            updated_seq=self.seq,
            finished_at=self.finished_tail if finishing else order.finished_at,
            locked=locked,
            lock_asset=lock_asset,
        )
        if finishing:
            self._finished(key)

    def _finished(self, key: str) -> None:
        """`Fold._finished`, on the dicts."""
        finished = self._finished_dict
        tail = self.finished_tail
        finished[tail] = key
        tail += 1
        self.finished_tail = tail
        head = self.finished_head
        if tail - head <= self.retain_finished:
            return
        orders = self._order_dict
        while tail - head > self.retain_finished:
            old_key = finished.pop(head)
            head += 1
            self.finished_head = head
            old = orders.get(old_key)
            if old is None or old.finished_at != head - 1:
                continue  # gone already, or reopened since (see `Fold._finished`)
            del orders[old_key]
            client_id = old.client_id
            if client_id is not None and self._client_dict.get(client_id) == old_key:
                del self._client_dict[client_id]
            venue_id = old.venue_id
            if venue_id is not None and self._venue_dict.get(venue_id) == old_key:
                del self._venue_dict[venue_id]

    def _relocked(
        self,
        order: Order,
        status: OrderStatus,
        quantity: Decimal | None,
        filled: Decimal,
        *,
        side: Side | None,
        price: Decimal | None,
    ) -> tuple[Decimal, str | None]:
        """`Fold._relock` for `order` with these figures, moving the balance drafts."""
        asset: str | None = None
        amount = ZERO
        if status in _RESTING and quantity is not None:
            market = self.markets.get(order.symbol)
            if market is not None and market.market_type not in _POSITION_MARKETS:
                remaining = _sub(quantity, filled)
                if remaining > 0:
                    if side is _ASK:
                        asset, amount = market.base_asset, remaining
                    elif side is _BID and price is not None:
                        asset, amount = market.quote_asset, _mul(remaining, price)
        held, held_asset = order.locked, order.lock_asset
        if asset == held_asset and amount == held:
            return held, held_asset
        drafts = self._balance_drafts
        if held_asset is not None and held:
            draft = drafts.get(held_asset) or self._balance(held_asset)
            if held_asset == asset:
                change = _sub(held, amount)
                draft[0] = _add(draft[0], change)
                draft[1] = _add(draft[1], change.copy_negate())
                return amount, asset if amount else None
            draft[0] = _add(draft[0], held)
            draft[1] = _add(draft[1], held.copy_negate())
        if asset is not None and amount:
            draft = drafts.get(asset) or self._balance(asset)
            draft[0] = _add(draft[0], amount.copy_negate())
            draft[1] = _add(draft[1], amount)
        return amount, asset if amount else None

    def _position_in_order(self, event: OrderFilled) -> Decimal | None:
        """Count a perp fill in its position if it comes after every fill counted and after
        any adopted baseline: the change in realized PnL. Otherwise None, with nothing
        changed (`Fold._position_fill` places it)."""
        symbol = event.symbol
        draft = self._position_drafts.get(symbol)
        if draft is None:
            record = self.positions.get(symbol) or Position(symbol=symbol)
            recent: Any = record.recent
            checkpoint = record.checkpoint
            synthetic = record.synthetic_fills
        else:
            record = draft.record
            recent = draft.recent
            checkpoint = draft.checkpoint
            synthetic = draft.synthetic_fills
        newest = recent[-1].key if recent else checkpoint.key
        if event.trade_id >= SYNTHETIC_TRADE_ID_BASE:
            synthetic += 1
            key: FillKey = (newest[0] if newest else 0, synthetic, event.venue_id)
        else:
            key = (event.trade_id, 0, event.venue_id)
        if (
            (newest is not None and not key > newest)
            or (record.baseline_key is not None and key <= record.baseline_key)
            or (
                record.baseline_before_us is not None
                and event.venue_time_us is not None
                and event.venue_time_us < record.baseline_before_us
            )
        ):
            return None
        if draft is None:
            draft = self._position_drafts[symbol] = _PositionDraft(record)
            recent = draft.recent
        quantity = event.quantity
        delta = quantity if event.side is _BID else quantity.copy_negate()
        price = event.price
        current = _position_step(recent[-1].after if recent else checkpoint, key, delta, price)
        if len(recent) >= POSITION_WINDOW:
            # The checkpoint moves past the oldest fill, whose figures are at hand.
            draft.checkpoint = recent.popleft().after
        recent.append(PositionFill(key=key, delta=delta, price=price, after=current))
        if event.fee:
            draft.fees = _fees_plus(draft.fees, event.fee_asset, event.fee)
        realized = _sub(current.realized_pnl, draft.realized_pnl)
        draft.net_quantity = current.net_quantity
        draft.entry_price = current.entry_price
        draft.open_cost = current.open_cost
        draft.realized_pnl = current.realized_pnl
        draft.synthetic_fills = synthetic
        return realized


# The short handler of each event class (every other class goes to `_slow`), by name: a
# subclass's own version of one is the one called.
_SHORT: Final[dict[type[Event], str]] = {
    OrderSubmitted: "_submitted",
    OrderAccepted: "_accepted",
    OrderFilled: "_filled",
    CancelRequested: "_cancel_requested",
    OrderCancelled: "_cancelled",
}


def _handlers(cls: type[ReplayFold]) -> dict[type[Event], Callable[[ReplayFold, Any], None]]:
    table = {event_class: getattr(cls, _SHORT.get(event_class, "_slow")) for event_class in _STEPS}
    # A fold-only class (`raw` undecoded, read by `LogReader(..., fold_only=True)`) takes
    # the handler of the class it stands for: no handler reads `raw`.
    table.update({lean: table[full] for lean, full in FULL_CLASS.items()})
    return table


ReplayFold._handlers = _handlers(ReplayFold)
