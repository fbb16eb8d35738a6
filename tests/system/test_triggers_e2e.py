"""Conditional orders, attached exits and venue-placed orders from the session to the local
exchange and back: the engine tracks each order with its ids, links and origin, and its
books agree with the exchange's at the end (`Harness.finish`). The market steps every 20 ms,
so a trigger a tick or a few away from the mid fires within a fraction of a second."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from pathlib import Path

import trio

from oms.core.state import AnomalyKind, Order, State
from oms.core.values import Exit, OrderOrigin, OrderStatus, OrderType, Side
from oms.status import render_text, status_document
from oms.testing.books import PERP
from oms.testing.harness import Harness, open_harness

D = Decimal
LIMIT = 30  # seconds, for any one scenario
TICK = D("0.01")


def harness(path: Path) -> AbstractAsyncContextManager[Harness]:
    return open_harness(path, step_us=20_000, tick_interval=0.02, symbols=(PERP,))


async def linked(h: Harness, parent: Order, count: int) -> list[Order]:
    """Wait for `count` engine orders attached to `parent` (by `related_order_id`)."""

    def children(state: State) -> list[Order]:
        return [o for o in state.orders.values() if o.related_order_id == parent.venue_id]

    with trio.move_on_after(10):
        await h.engine.wait_until(lambda s: len(children(s)) >= count)
        return sorted(children(h.state), key=lambda o: o.created_seq)
    raise AssertionError(f"the engine has {children(h.state)} attached to {parent.key}")


async def test_a_stop_triggers_and_fills(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with harness(tmp_path / "s.jsonl") as h:
            stop = await h.session.submit(
                PERP,
                Side.BID,
                OrderType.MARKET,
                trigger_price=h.mid(PERP) + TICK,
                trigger_quantity=D(2),
                trigger_by="MarkPrice",
            )
            if stop.status is OrderStatus.TRIGGER_PENDING:  # unless the market got there first
                assert stop.quantity is None and stop.trigger_quantity == "2"
            done = await h.until(stop, lambda o: o.status is OrderStatus.FILLED, "the stop")
            assert (done.client_id, done.venue_id) == (stop.client_id, stop.venue_id)
            assert done.filled_quantity == D(2) and done.trigger_price == stop.trigger_price
            assert h.state.positions[PERP].net_quantity == D(2)
            await h.finish()


async def test_a_stop_is_cancelled_before_it_triggers(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with harness(tmp_path / "c.jsonl") as h:
            stop = await h.session.submit(
                PERP,
                Side.ASK,
                OrderType.LIMIT,
                price=h.mid(PERP) - D(20),
                trigger_price=h.mid(PERP) - D(10),
                trigger_quantity=D(1),
            )
            assert stop.status is OrderStatus.TRIGGER_PENDING
            assert h.venue_order(stop).status == "TriggerPending"
            cancelled = await h.session.cancel(PERP, client_id=stop.client_id)
            assert cancelled is not None and cancelled.status is OrderStatus.CANCELLED
            assert h.venue_order(stop).status == "Cancelled"
            await h.finish()


async def test_a_stop_that_cannot_be_placed_fails(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with harness(tmp_path / "f.jsonl") as h:
            # Reduce-only with no position: the venue refuses it when it triggers.
            stop = await h.session.submit(
                PERP,
                Side.ASK,
                OrderType.MARKET,
                reduce_only=True,
                trigger_price=h.mid(PERP) - TICK,
                trigger_quantity="100%",
            )
            failed = await h.until(
                stop, lambda o: o.status is OrderStatus.TRIGGER_FAILED, "the failed trigger"
            )
            assert failed.filled_quantity == 0 and failed.trigger_quantity == "100%"
            await h.finish()


async def test_attached_exits_are_tracked_and_one_cancels_the_other(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with harness(tmp_path / "x.jsonl") as h:
            mid = h.mid(PERP)
            parent = await h.session.submit(
                PERP,
                Side.BID,
                OrderType.MARKET,
                quantity=D(1),
                stop_loss=Exit(mid - 3 * TICK),
                take_profit=Exit(mid + 3 * TICK, limit_price=mid + 2 * TICK),
            )
            parent = await h.until(parent, lambda o: o.status is OrderStatus.FILLED, "parent")
            assert parent.stop_loss_trigger_price == mid - 3 * TICK
            stop, take = await linked(h, parent, 2)
            for exit_ in (stop, take):
                assert exit_.side is Side.ASK and exit_.reduce_only
                assert exit_.client_id is None and not exit_.placed_by_venue
            assert (stop.trigger_price, take.trigger_price) == (mid - 3 * TICK, mid + 3 * TICK)
            await h.engine.wait_until(
                lambda s: (
                    {s.orders[stop.key].status, s.orders[take.key].status}
                    & {OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED}
                    != set()
                )
            )
            await h.finish()
            ends = {h.state.orders[stop.key].status, h.state.orders[take.key].status}
            assert OrderStatus.CANCELLED in ends
            assert AnomalyKind.UNKNOWN_ORDER not in h.state.anomaly_counts


async def test_orders_the_venue_places_are_tracked_with_their_origin(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with harness(tmp_path / "v.jsonl") as h:
            opened = await h.submit(PERP, Side.BID, OrderType.MARKET, quantity="2")
            await h.until(opened, lambda o: o.status is OrderStatus.FILLED, "the opening buy")
            venue = h.exchange.venue
            liquidation = venue.liquidate(h.exchange.api_key, PERP)
            slice_ = venue.run_strategy(
                h.exchange.api_key, PERP, "Ask", D(1), strategy_id=6023471188
            )
            h.exchange.dispatch()
            await h.engine.wait_until(
                lambda s: all(
                    (o := s.order(venue_id=v.id)) is not None and o.status is OrderStatus.FILLED
                    for v in (liquidation, slice_)
                )
            )
            ours = h.state.order(venue_id=liquidation.id)
            theirs = h.state.order(venue_id=slice_.id)
            assert ours is not None and theirs is not None
            assert ours.origin is OrderOrigin.LIQUIDATION_AUTOCLOSE and ours.placed_by_venue
            assert theirs.strategy_id == 6023471188 and theirs.placed_by_venue
            assert h.state.positions[PERP].net_quantity == D(-1)
            doc = status_document(h.state)
            shown = {o["venue_id"]: o for o in doc["orders"]["placed_by_venue"]}
            assert shown.keys() == {liquidation.id, slice_.id}
            assert shown[liquidation.id]["origin"] == "LIQUIDATION_AUTOCLOSE"
            assert shown[slice_.id]["strategy_id"] == 6023471188
            assert any(
                line.startswith(f"  {ours.key} ") and line.endswith("origin LIQUIDATION_AUTOCLOSE")
                for line in render_text(doc)
            )
            await h.finish()
            assert AnomalyKind.UNKNOWN_ORDER not in h.state.anomaly_counts


async def test_a_trigger_whose_messages_are_lost_is_found_by_reconciliation(
    tmp_path: Path,
) -> None:
    with trio.fail_after(LIMIT):
        async with harness(tmp_path / "r.jsonl") as h:
            for event in ("orderAccepted", "orderFill"):
                h.faults.drop_private(event=event, symbol=PERP, count=10)
            stop = await h.session.submit(
                PERP,
                Side.BID,
                OrderType.MARKET,
                trigger_price=h.mid(PERP) + TICK,
                trigger_quantity=D(1),
            )
            venue = h.venue_order(stop)
            while venue.status == "TriggerPending":
                await trio.sleep(0.02)
                h.mid(PERP)
            if stop.status is OrderStatus.TRIGGER_PENDING:  # unless it fired as it was placed
                await h.quiet(0.1)
                assert h.now(stop).status is OrderStatus.TRIGGER_PENDING  # the stream was silent
            await h.session.reconcile()
            await h.until(stop, lambda o: o.status is OrderStatus.FILLED, "the reconciled stop")
            await h.finish()


async def test_exits_placed_and_done_while_the_stream_is_silent_are_found_with_their_parent(
    tmp_path: Path,
) -> None:
    """The parent fills and its exits are placed, one fires and fills and the other is
    cancelled, all while the stream delivers nothing: the reconciliation finds both exits,
    linked to their parent, and neither is taken for an order we know nothing of."""
    with trio.fail_after(LIMIT):
        async with harness(tmp_path / "q.jsonl") as h:
            h.faults.drop_private(symbol=PERP, count=None)
            mid = h.mid(PERP)
            parent = await h.session.submit(
                PERP,
                Side.BID,
                OrderType.MARKET,
                quantity=D(1),
                stop_loss=Exit(mid - D(5)),
                # Already reached (a take profit below a long's price): it fires at once,
                # and the stop loss is cancelled.
                take_profit=Exit(mid - D(1)),
            )
            assert parent.status is OrderStatus.FILLED
            venue_exits = [
                o
                for o in h.exchange.venue.accounts[h.exchange.api_key].orders.values()
                if o.related_order_id == parent.venue_id
            ]
            assert sorted(o.status for o in venue_exits) == ["Cancelled", "Filled"]
            await h.quiet(0.1)
            assert not [o for o in h.state.orders.values() if o.related_order_id is not None]
            await h.session.reconcile()
            h.faults.clear()
            stop, take = await linked(h, parent, 2)
            assert {stop.status, take.status} == {OrderStatus.CANCELLED, OrderStatus.FILLED}
            await h.finish(allowed={AnomalyKind.FILL_GAP, AnomalyKind.POSITION_DRIFT})
            assert AnomalyKind.UNKNOWN_ORDER not in h.state.anomaly_counts
