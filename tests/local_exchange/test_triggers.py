"""Conditional orders, attached stop loss / take profit and venue-placed orders on the local
exchange's core, driven directly (no I/O). The market moves only when a test steps the clock
(the mid walks a few ticks a step, seeded), so a trigger one tick away fires within steps."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from oms_local_exchange import ApiError, OrderRequest, Venue
from oms_local_exchange.model import Exit, Outbound
from tests.local_exchange.test_venue import KEY, make_venue, market

D = Decimal
PERP = "SOL_USDC_PERP"


def updates(venue: Venue) -> list[dict[str, Any]]:
    return [m.data for m in venue.drain() if m.stream == "account.orderUpdate"]


def trigger(side: str, price: D, amount: str, **kwargs: Any) -> OrderRequest:
    return OrderRequest(
        symbol=PERP,
        side=side,
        order_type="Market",
        trigger_price=price,
        trigger_quantity=amount,
        **kwargs,
    )


def step_until(venue: Venue, clock: Any, done: Any, steps: int = 2000) -> list[dict[str, Any]]:
    """Step the market until `done()`, returning the order updates sent meanwhile."""
    seen: list[Outbound] = []
    for _ in range(steps):
        clock.advance(0.25)
        venue.advance()
        seen.extend(venue.drain())
        if done():
            return [m.data for m in seen if m.stream == "account.orderUpdate"]
    raise AssertionError("the market never got there")


def test_a_trigger_order_waits_then_becomes_an_order_with_the_same_id() -> None:
    venue, clock = make_venue()
    mid = venue.mark_price(PERP)
    order = venue.place(KEY, trigger("Bid", mid + D("0.01"), "2", client_id=5))
    assert order.status == "TriggerPending"
    [placed] = updates(venue)
    assert placed["e"] == "triggerPlaced" and placed["X"] == "TriggerPending"
    assert (placed["P"], placed["Y"], placed["q"], placed["c"]) == ("150.01", "2", "0", 5)
    assert venue.open_orders(KEY, PERP) == [order]  # listed while it waits
    sent = step_until(venue, clock, lambda: order.status != "TriggerPending")
    assert [u["e"] for u in sent][:2] == ["orderAccepted", "orderFill"]
    assert {u["i"] for u in sent} == {order.id}
    assert order.status == "Filled" and order.executed_quantity == D(2)
    assert order.triggered_us is not None
    assert venue.accounts[KEY].positions[PERP].net_quantity == D(2)


def test_a_percentage_trigger_quantity_is_a_share_of_the_position() -> None:
    venue, clock = make_venue()
    venue.place(KEY, market(PERP, "Bid", "3"))
    mid = venue.mark_price(PERP)
    order = venue.place(KEY, trigger("Ask", mid - D("0.01"), "50%", reduce_only=True))
    step_until(venue, clock, lambda: order.status != "TriggerPending")
    assert order.status == "Filled" and order.executed_quantity == D("1.5")


def test_a_trigger_order_is_cancelled_before_it_triggers() -> None:
    venue, _ = make_venue()
    order = venue.place(KEY, trigger("Bid", D(200), "1", client_id=9))
    updates(venue)
    cancelled = venue.cancel(KEY, PERP, client_id=9)
    assert cancelled is order and order.status == "Cancelled"
    [update] = updates(venue)
    assert update["e"] == "orderCancelled" and update["P"] == "200"
    assert venue.open_orders(KEY, PERP) == []


def test_a_trigger_that_cannot_become_an_order_fails() -> None:
    venue, clock = make_venue()
    mid = venue.mark_price(PERP)
    # Reduce-only with no position: refused when it triggers, not when placed.
    order = venue.place(KEY, trigger("Ask", mid - D("0.01"), "1", reduce_only=True))
    sent = step_until(venue, clock, lambda: order.status != "TriggerPending")
    assert order.status == "TriggerFailed"
    assert [(u["e"], u["X"]) for u in sent] == [
        ("triggerPlaced", "TriggerPending"),
        ("triggerFailed", "TriggerFailed"),
    ]


def test_attached_exits_follow_the_fill_and_one_cancels_the_other() -> None:
    venue, clock = make_venue()
    mid = venue.mark_price(PERP)
    parent = venue.place(
        KEY,
        market(
            PERP,
            "Bid",
            "2",
            stop_loss=Exit(trigger_price=mid - D("0.05")),
            take_profit=Exit(trigger_price=mid + D("0.05"), limit_price=mid + D("0.04")),
        ),
    )
    assert parent.status == "Filled"
    placed = [u for u in updates(venue) if u["e"] == "triggerPlaced"]
    assert [(u["I"], u["S"], u["r"], u["Y"], u["o"]) for u in placed] == [
        (parent.id, "Ask", True, "2", "MARKET"),
        (parent.id, "Ask", True, "2", "LIMIT"),
    ]
    stop, take = (venue.accounts[KEY].orders[u["i"]] for u in placed)
    sent = step_until(venue, clock, lambda: "TriggerPending" not in (stop.status, take.status))
    fired, other = (stop, take) if stop.triggered_us is not None else (take, stop)
    assert other.status == "Cancelled"
    assert any(u["e"] == "orderAccepted" and u["i"] == fired.id for u in sent)
    rest = venue.order_history(KEY, order_id=parent.id)
    assert rest[0].stop_loss is not None


def test_exits_and_trigger_shapes_the_venue_refuses() -> None:
    venue, _ = make_venue()
    for request, code in (
        (market("SOL_USDC", "Bid", "1", stop_loss=Exit(trigger_price=D(100))), "INVALID_ORDER"),
        (trigger("Bid", D(160), "1", quantity=D(1)), "INVALID_CLIENT_REQUEST"),
        (
            OrderRequest(symbol=PERP, side="Bid", order_type="Market", trigger_price=D(160)),
            "INVALID_CLIENT_REQUEST",
        ),
        (trigger("Bid", D(160), "120%"), "INVALID_QUANTITY"),
    ):
        try:
            venue.place(KEY, request)
        except ApiError as exc:
            assert exc.code == code
        else:
            raise AssertionError(f"accepted {request}")


def test_the_venue_places_liquidations_and_strategy_orders_itself() -> None:
    venue, _ = make_venue()
    venue.place(KEY, market(PERP, "Bid", "2"))
    updates(venue)
    closing = venue.liquidate(KEY, PERP)
    assert closing.status == "Filled" and closing.client_id is None
    assert {u["O"] for u in updates(venue)} == {"LIQUIDATION_AUTOCLOSE"}
    assert venue.accounts[KEY].positions[PERP].net_quantity == 0
    [item] = [i for i in venue.order_history(KEY, order_id=closing.id)]
    assert item.origin == "LIQUIDATION_AUTOCLOSE"
    slice_ = venue.run_strategy(KEY, PERP, "Ask", D(1), strategy_id=6023471188)
    assert {(u["H"], u["O"]) for u in updates(venue)} == {(6023471188, "USER")}
    assert slice_.strategy_id == 6023471188
    assert venue.accounts[KEY].positions[PERP].net_quantity == D(-1)
