"""The order life cycle: every (status, event) pair through the real reducer, against the table.

Each status is reached from scratch with real events (no hand-built `Order`), then one more
event is applied and the resulting status, and whether a forbidden_transition anomaly was
recorded for that event, are compared with `oms.core.lifecycle.TRANSITIONS` read as data.
Hand-written expectations for the edges that matter most follow, so that a nonsensical table
cannot pass by agreeing with itself.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from oms.core.events import (
    CancelRejected,
    CancelRequested,
    Event,
    OrderModified,
    SubmitRejected,
    SubmitUnknown,
    TriggerFailed,
    TriggerPlaced,
)
from oms.core.lifecycle import TRANSITIONS, Kind, Transition, kind_of_venue_status, transition
from oms.core.reducer import apply, replay
from oms.core.state import AnomalyKind, Order, State
from oms.core.values import OrderStatus, Side, Source, VenueStatus
from oms.testing.strategies import SPOT, accept, cancel, expire, fill, market, observe, submit

S = OrderStatus
CID = 7
VID = "V7"
QTY = Decimal(10)
PRICE = Decimal(20)


def _rejected() -> SubmitRejected:
    return SubmitRejected(
        source=Source.REST, recv_time_us=1, symbol=SPOT, client_id=CID, code="X", message="no"
    )


def _unknown() -> SubmitUnknown:
    return SubmitUnknown(source=Source.REST, recv_time_us=1, symbol=SPOT, client_id=CID, reason="t")


def _trigger_placed() -> TriggerPlaced:
    return TriggerPlaced(source=Source.WS, recv_time_us=1, symbol=SPOT, venue_id=VID, client_id=CID)


def _trigger_failed() -> TriggerFailed:
    return TriggerFailed(source=Source.WS, recv_time_us=1, symbol=SPOT, venue_id=VID, client_id=CID)


def _accepted() -> Event:
    return accept(VID, client_id=CID, side=Side.BID, quantity=QTY, price=PRICE)


# Events that take a fresh order (bid 10 @ 20) into each status.
PATHS: dict[OrderStatus, list[Event]] = {
    S.PENDING_NEW: [],
    S.IN_DOUBT: [_unknown()],
    S.TRIGGER_PENDING: [_trigger_placed()],
    S.NEW: [_accepted()],
    S.PARTIALLY_FILLED: [
        _accepted(),
        fill(VID, 1, Side.BID, "4", PRICE, client_id=CID, cum="4"),
    ],
    S.FILLED: [
        _accepted(),
        fill(VID, 1, Side.BID, QTY, PRICE, client_id=CID, cum=QTY, status=VenueStatus.FILLED),
    ],
    S.CANCELLED: [_accepted(), cancel(venue_id=VID, client_id=CID, cum="0")],
    S.EXPIRED: [_accepted(), expire(venue_id=VID, client_id=CID, cum="0")],
    S.REJECTED: [_rejected()],
    S.TRIGGER_FAILED: [_trigger_placed(), _trigger_failed()],
}


def reach(status: OrderStatus) -> State:
    """A state holding order CID in `status`, built by applying real events."""
    events = [market(), submit(CID, Side.BID, QTY, PRICE), *PATHS[status]]
    state = replay(events)
    order = state.order(client_id=CID)
    assert order is not None
    assert order.status is status, f"path to {status} ended in {order.status}"
    return state


def test_every_status_is_reachable_without_anomalies() -> None:
    assert set(PATHS) == set(OrderStatus)
    for status in OrderStatus:
        state = reach(status)
        assert state.anomaly_total == 0, (status, state.anomalies)


# One probe event per column: (name, kind it counts as, maker). A fill takes 1 of the 10.
Probe = tuple[str, Kind, Callable[[], Event]]
PROBES: list[Probe] = [
    ("OrderSubmitted", Kind.SUBMITTED, lambda: submit(CID, Side.BID, QTY, PRICE)),
    (
        "CancelRequested",
        Kind.CANCEL_REQUESTED,
        lambda: CancelRequested(source=Source.LOCAL, recv_time_us=1, symbol=SPOT, client_id=CID),
    ),
    ("SubmitRejected", Kind.SUBMIT_REJECTED, _rejected),
    ("SubmitUnknown", Kind.SUBMIT_UNKNOWN, _unknown),
    (
        "CancelRejected",
        Kind.CANCEL_REJECTED,
        lambda: CancelRejected(
            source=Source.REST,
            recv_time_us=1,
            symbol=SPOT,
            client_id=CID,
            code="RESOURCE_NOT_FOUND",
            message="",
        ),
    ),
    ("OrderAccepted", Kind.ACCEPTED, _accepted),
    (
        "OrderFilled",
        Kind.FILL,
        lambda: fill(VID, 99, Side.BID, "1", PRICE, client_id=CID),
    ),
    ("OrderCancelled", Kind.CANCELLED, lambda: cancel(venue_id=VID, client_id=CID)),
    ("OrderExpired", Kind.EXPIRED, lambda: expire(venue_id=VID, client_id=CID)),
    (
        "OrderModified",
        Kind.MODIFIED,
        lambda: OrderModified(
            source=Source.WS,
            recv_time_us=1,
            symbol=SPOT,
            quantity=Decimal(9),
            venue_id=VID,
            client_id=CID,
        ),
    ),
    ("TriggerPlaced", Kind.TRIGGER_PLACED, _trigger_placed),
    ("TriggerFailed", Kind.TRIGGER_FAILED, _trigger_failed),
    *(
        (
            f"OrderObserved[{vs.value}]",
            kind_of_venue_status(vs),
            (lambda vs=vs: observe(vs, venue_id=VID, client_id=CID)),
        )
        for vs in VenueStatus
    ),
]


def _follow_fills_status(name: str, before: Order) -> OrderStatus:
    """Where a status that follows the fills lands after the probe, computed by hand."""
    if name == "OrderObserved[Filled]":
        return S.FILLED
    if name == "OrderObserved[PartiallyFilled]":
        return S.PARTIALLY_FILLED
    assert name == "OrderFilled"
    filled = before.filled_quantity + 1
    return S.FILLED if filled >= QTY else S.PARTIALLY_FILLED


def _forbidden_at(state: State, seq: int) -> list[str]:
    return [
        a.detail
        for a in state.anomalies
        if a.seq == seq and a.kind is AnomalyKind.FORBIDDEN_TRANSITION
    ]


@pytest.mark.parametrize("status", list(OrderStatus), ids=str)
@pytest.mark.parametrize("probe", PROBES, ids=[p[0] for p in PROBES])
def test_transition_table(status: OrderStatus, probe: Probe) -> None:
    name, kind, make = probe
    before = reach(status)
    order_before = before.order(client_id=CID)
    assert order_before is not None
    after = apply(before, make())
    order = after.order(client_id=CID)
    assert order is not None

    rule = TRANSITIONS[(status, kind)]
    if rule.to is not None:
        expected = rule.to
    elif rule.follow_fills:
        expected = _follow_fills_status(name, order_before)
    else:
        expected = status
    assert order.status is expected
    forbidden = _forbidden_at(after, after.last_seq)
    assert bool(forbidden) is rule.anomaly, forbidden
    if forbidden:
        # The message names the event, the order and the state it was in.
        assert forbidden == [f"can't apply {name.split('[')[0]} to order c{CID} in state {status}"]
    # Whatever the table says, the order is still there under both of its ids.
    assert after.order(venue_id=VID) is order or order.venue_id is None


@pytest.mark.parametrize(
    "status", [s for s in OrderStatus if transition(s, Kind.FILL).follow_fills], ids=str
)
def test_a_fill_of_the_whole_remainder_fills_the_order(status: OrderStatus) -> None:
    before = reach(status)
    order = before.order(client_id=CID)
    assert order is not None
    rest = QTY - order.filled_quantity
    after = apply(before, fill(VID, 99, Side.BID, rest, PRICE, client_id=CID))
    done = after.order(client_id=CID)
    assert done is not None
    assert done.status is S.FILLED
    assert done.filled_quantity == QTY


# --- the table is data: its shape and the promises of its theory of operation ---------------

RANK = {
    S.PENDING_NEW: 0,
    S.IN_DOUBT: 0,
    S.TRIGGER_PENDING: 1,
    S.NEW: 2,
    S.PARTIALLY_FILLED: 3,
    S.FILLED: 4,
    S.CANCELLED: 4,
    S.EXPIRED: 4,
    S.REJECTED: 4,
    S.TRIGGER_FAILED: 4,
}


def test_table_is_complete() -> None:
    assert set(TRANSITIONS) == {(s, k) for s in OrderStatus for k in Kind}
    assert {kind_of_venue_status(vs) for vs in VenueStatus} <= set(Kind)


def test_legal_moves_never_go_backwards() -> None:
    for (status, kind), rule in TRANSITIONS.items():
        if rule.to is not None and not rule.anomaly:
            assert RANK[rule.to] >= RANK[status], (status, kind, rule)


def test_filled_cancelled_expired_absorb_everything() -> None:
    for status in (S.FILLED, S.CANCELLED, S.EXPIRED):
        for kind in Kind:
            rule = transition(status, kind)
            assert rule.to is None and not rule.follow_fills, (status, kind)


def test_our_cancel_commands_never_move_an_order() -> None:
    keep = Transition(None, False, False)
    for status in OrderStatus:
        assert transition(status, Kind.CANCEL_REQUESTED) == keep
        assert transition(status, Kind.CANCEL_REJECTED) == keep
        # A client id already in the log: submitting it again is always our mistake.
        assert transition(status, Kind.SUBMITTED) == Transition(None, False, True)


# --- hand-written edges ---------------------------------------------------------------------------


def test_fill_after_cancel_stays_cancelled_and_counts() -> None:
    state = apply(reach(S.CANCELLED), fill(VID, 5, Side.BID, "3", PRICE, client_id=CID))
    order = state.order(client_id=CID)
    assert order is not None
    assert order.status is S.CANCELLED
    assert order.filled_quantity == Decimal(3)
    assert order.filled_quote == Decimal(60)
    assert state.anomaly_total == 0
    # The late fill moved money: 3 SOL in, 60 USDC out; nothing stays locked.
    assert state.balances["SOL"].total == Decimal(3)
    assert state.balances["USDC"].total == Decimal(-60)
    assert state.balances["USDC"].locked == 0


def test_accept_after_fill_keeps_partially_filled() -> None:
    events: list[Event] = [
        market(),
        submit(CID, Side.BID, QTY, PRICE),
        fill(VID, 1, Side.BID, "4", PRICE, client_id=CID, cum="4"),
        _accepted(),
    ]
    state = replay(events)
    order = state.order(client_id=CID)
    assert order is not None
    assert order.status is S.PARTIALLY_FILLED
    assert order.filled_quantity == Decimal(4)
    assert state.anomaly_total == 0
    # Resting: 6 remaining at 20 locked.
    assert state.balances["USDC"].locked == Decimal(120)


def test_submit_unknown_then_accepted_resolves_in_doubt() -> None:
    state = replay([market(), submit(CID, Side.BID, QTY, PRICE), _unknown()])
    order = state.order(client_id=CID)
    assert order is not None and order.status is S.IN_DOUBT
    # In doubt: nothing is known to rest, nothing is locked.
    assert state.balances.get("USDC") is None
    state = apply(state, _accepted())
    order = state.order(client_id=CID)
    assert order is not None
    assert order.status is S.NEW
    assert order.venue_id == VID
    assert state.balances["USDC"].locked == Decimal(200)
    assert state.anomaly_total == 0


def test_submit_unknown_after_a_report_keeps_the_report() -> None:
    state = apply(reach(S.NEW), _unknown())
    order = state.order(client_id=CID)
    assert order is not None and order.status is S.NEW


def test_submit_rejected_after_new_is_an_anomaly() -> None:
    state = apply(reach(S.NEW), _rejected())
    order = state.order(client_id=CID)
    assert order is not None
    assert order.status is S.NEW
    assert [a.kind for a in state.anomalies] == [AnomalyKind.FORBIDDEN_TRANSITION]
    assert state.anomalies[0].seq == state.last_seq
    assert state.anomalies[0].order_key == f"c{CID}"


def test_submit_rejected_before_any_report_rejects() -> None:
    state = apply(reach(S.PENDING_NEW), _rejected())
    order = state.order(client_id=CID)
    assert order is not None
    assert order.status is S.REJECTED
    assert (order.reject_code, order.reject_message) == ("X", "no")
    assert state.anomaly_total == 0


def test_cancel_after_complete_fill_is_an_anomaly_and_stays_filled() -> None:
    state = apply(reach(S.FILLED), cancel(venue_id=VID, client_id=CID))
    order = state.order(client_id=CID)
    assert order is not None and order.status is S.FILLED
    assert _forbidden_at(state, state.last_seq)


def test_venue_report_on_rejected_order_wins() -> None:
    state = apply(reach(S.REJECTED), _accepted())
    order = state.order(client_id=CID)
    assert order is not None and order.status is S.NEW
    assert _forbidden_at(state, state.last_seq)
    # The venue says it rests: its funds are locked.
    assert state.balances["USDC"].locked == Decimal(200)


def test_cancel_request_and_rejection_flag_the_order() -> None:
    state = apply(
        reach(S.NEW),
        CancelRequested(source=Source.LOCAL, recv_time_us=1, symbol=SPOT, client_id=CID),
    )
    order = state.order(client_id=CID)
    assert order is not None and order.cancel_requested and order.status is S.NEW
    state = apply(
        state,
        CancelRejected(
            source=Source.REST, recv_time_us=1, symbol=SPOT, client_id=CID, code="X", message=""
        ),
    )
    order = state.order(client_id=CID)
    assert order is not None and not order.cancel_requested and order.status is S.NEW
