"""Order statuses and stream events the codec does not know yet (the venue adds new ones), and
the links of conditional and venue-placed orders: recorded with the raw message, an anomaly
for what is not understood, and never a move backwards."""

from __future__ import annotations

import json
from typing import Any

from oms.core.events import MessageNotUnderstood, OrderFilled, TriggerPlaced
from oms.core.reducer import apply
from oms.core.state import AnomalyKind, State
from oms.core.values import OrderStatus, Side, Source
from oms.testing.builders import accept, submit
from oms_backpack import codec

RECV = 1_800_000_000_000_000
SYMBOL = "SOL_USDC_PERP"


def frame(data: dict[str, Any]) -> str:
    return json.dumps({"stream": "account.orderUpdate", "data": data}, separators=(",", ":"))


def update(kind: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "e": kind, "E": RECV, "T": RECV, "s": SYMBOL, "S": "Bid", "o": "LIMIT", "f": "GTC",
        "X": status, "i": "77", "c": 5, "q": "2", "p": "150", "z": "0", "Z": "0",
        "O": "USER", "r": False, "y": False, "t": None, **extra,
    }  # fmt: skip


def fill(status: str) -> dict[str, Any]:
    return update(
        "orderFill", status, t=41, l="1", L="150", m=False, n="0.01", N="USDC", z="1", Z="150"
    )


def live_order() -> State:
    state = State()
    state = apply(state, submit(5, Side.BID, "2", "150", symbol=SYMBOL))
    state = apply(state, accept("77", client_id=5, symbol=SYMBOL))
    return state


def feed(state: State, text: str) -> State:
    for event in codec.ws_frame(text, RECV):
        state = apply(state, event)
    return state


def test_an_unknown_event_kind_is_kept_raw_and_moves_nothing() -> None:
    before = live_order()
    text = frame(update("orderTriggered", "New"))
    [event] = codec.ws_frame(text, RECV)
    assert isinstance(event, MessageNotUnderstood) and event.raw == text
    after = apply(before, event)
    assert after.orders["c5"] == before.orders["c5"]
    assert after.anomaly_counts[AnomalyKind.NOT_UNDERSTOOD] == 1


def test_an_unknown_status_on_a_fill_keeps_the_fill_and_records_the_status() -> None:
    text = frame(fill("Triggered"))
    events = codec.ws_frame(text, RECV)
    assert [type(e) for e in events] == [OrderFilled, MessageNotUnderstood]
    assert all(e.raw == text for e in events)
    assert isinstance(events[1], MessageNotUnderstood) and "Triggered" in events[1].reason
    after = feed(live_order(), text)
    order = after.orders["c5"]
    assert order.filled_quantity == 1 and order.status is OrderStatus.PARTIALLY_FILLED
    assert after.anomaly_counts[AnomalyKind.NOT_UNDERSTOOD] == 1


def test_an_unknown_status_never_moves_a_finished_order_backwards() -> None:
    state = feed(live_order(), frame(fill("PartiallyFilled")))
    state = feed(state, frame(update("orderCancelled", "Cancelled", z="1", Z="150")))
    assert state.orders["c5"].status is OrderStatus.CANCELLED
    for text in (
        frame(update("orderAccepted", "Reopened")),
        frame(update("triggerPlaced", "TriggerPending", P="149")),
        frame(update("orderWoken", "Reopened")),
    ):
        state = feed(state, text)
        assert state.orders["c5"].status is OrderStatus.CANCELLED
    # Over REST too: an order object with an unknown status is kept raw, not applied.
    rest = {
        "id": "77", "clientId": 5, "symbol": SYMBOL, "side": "Bid", "status": "Reopened",
        "orderType": "Limit", "quantity": "2", "price": "150", "executedQuantity": "1",
    }  # fmt: skip
    event = codec.order_object(rest, Source.RECONCILE, RECV)
    assert isinstance(event, MessageNotUnderstood) and event.raw == json.dumps(
        rest, separators=(",", ":")
    )
    after = apply(state, event)
    assert after.orders["c5"] == state.orders["c5"]
    assert after.anomaly_counts[AnomalyKind.NOT_UNDERSTOOD] == 3


def test_links_and_triggers_are_read_from_the_stream_and_rest() -> None:
    placed = codec.ws_frame(
        frame(
            update(
                "triggerPlaced",
                "TriggerPending",
                q="0",
                P="140",
                B="MarkPrice",
                Y="80%",
                I="70",
                H=6023471188,
                r=True,
            )
        ),
        RECV,
    )
    [event] = placed
    assert isinstance(event, TriggerPlaced)
    assert (event.trigger_by, event.trigger_quantity, event.related_order_id) == (
        "MarkPrice", "80%", "70"
    )  # fmt: skip
    assert event.strategy_id == 6023471188 and event.reduce_only and event.side is Side.BID
    rest = {"id": "78", "symbol": SYMBOL, "side": "Ask", "status": "TriggerPending",
            "orderType": "Market", "quantity": "0", "triggerPrice": "140",
            "triggerQuantity": "1", "relatedOrderId": "70", "strategyId": None}  # fmt: skip
    observed = codec.order_object(rest, Source.RECONCILE, RECV)
    assert not isinstance(observed, MessageNotUnderstood)
    assert observed.quantity is None  # type: ignore[union-attr]  # 0 until it triggers
    assert observed.related_order_id == "70"  # type: ignore[union-attr]
