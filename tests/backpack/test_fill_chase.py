"""An executed quantity is never left without its fills: the session's fill chaser and the
final pass of a clean shutdown.

Against the local exchange on 127.0.0.1 (wall clock, so the chaser's grace is short), and,
for the gap that cannot be closed, against a REST client on httpx's MockTransport whose fill
history never has the fill (virtual time).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from oms.core.events import MarketInfo, OrderObserved, OrderSubmitted
from oms.core.reducer import replay
from oms.core.serialization import state_hash
from oms.core.state import AnomalyKind, Order
from oms.core.values import MarketType, OrderStatus, OrderType, Side, Source, VenueStatus
from oms.engine import Engine
from oms.log import Fsync, LogReader
from oms.testing.books import NO_POLLING, PERP, SPOT, book_differences
from oms.testing.waiting import deadline
from oms_backpack.rest import BackpackRest
from oms_backpack.session import FillChaser, open_backpack_session
from oms_backpack.signing import Credentials
from oms_local_exchange import open_local_exchange

D = Decimal
SECRET = "sKmC5939f6W9/viyhwyaNHa0f7j5wSMvZsysW5BB9L4="


def _order(engine: Engine, placed: Order) -> Order:
    found = engine.state.order(client_id=placed.client_id)
    assert found is not None
    return found


async def test_fills_whose_messages_are_lost_are_found_after_the_grace_period(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chase.jsonl"
    engine = Engine.open(path, fsync=Fsync.never())
    with trio.fail_after(30):
        async with open_local_exchange(seed=7, tick_interval=0.05) as exchange:
            # Not one fill message reaches us; no periodic pass, no reconnect.
            exchange.faults.drop_private(event="orderFill", count=None)
            async with open_backpack_session(
                engine,
                Credentials(exchange.credentials().api_secret),
                venue="backpack_perpetual",
                symbols=[SPOT, PERP],
                rest_url=exchange.rest_url,
                ws_url=exchange.ws_url,
                poll_interval=NO_POLLING,
                fill_grace=0.2,
            ) as session:
                # 15 sweeps two levels of the book: two fills.
                spot = await session.submit(SPOT, Side.BID, OrderType.MARKET, quantity=D(15))
                perp = await session.submit(PERP, Side.ASK, OrderType.MARKET, quantity=D(2))
                for placed in (spot, perp):
                    # The venue's answer: filled, but no fill counted yet.
                    now = _order(engine, placed)
                    assert (now.status, now.filled_quantity) == (OrderStatus.FILLED, D(0))
                    assert now.awaiting_fills and now.venue_executed == placed.quantity
                with deadline("the chased fills"):
                    for placed in (spot, perp):
                        await engine.wait_fills_counted(client_id=placed.client_id)
                dropped = len(exchange.faults.dropped)
                assert dropped >= 3 and session.chaser.recovered == dropped
                assert session.chaser.gaps == 0
                for placed in (spot, perp):
                    assert _order(engine, placed).filled_quantity == placed.quantity
                # Orders, fills, fees, balances and the perp position agree with the venue.
                differences = book_differences(engine.state, exchange)
                assert differences == [], "\n".join(differences)
                assert engine.state.anomaly_total == 0, engine.state.anomalies
    engine.close()
    assert state_hash(replay(LogReader(path).events())) == state_hash(engine.state)


async def test_a_clean_shutdown_records_fills_still_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "shutdown.jsonl"
    engine = Engine.open(path, fsync=Fsync.never())
    with trio.fail_after(30):
        async with open_local_exchange(seed=7, tick_interval=0.05) as exchange:
            async with open_backpack_session(
                engine,
                Credentials(exchange.credentials().api_secret),
                venue="backpack",
                symbols=[SPOT],
                rest_url=exchange.rest_url,
                ws_url=exchange.ws_url,
                poll_interval=NO_POLLING,
                fill_grace=3600,  # the chaser would be too late: only the final pass acts
            ) as session:
                await session.reconciled.wait()
                exchange.faults.hold_private(event="orderFill", count=None)
                placed = await session.submit(SPOT, Side.BID, OrderType.MARKET, quantity=D(15))
                assert _order(engine, placed).filled_quantity == 0
                # The program is done: leave at once, the fill messages still held.
            assert exchange.faults.held
            account = exchange.venue.accounts[exchange.api_key]
            assert placed.client_id is not None
            venue_order = account.orders[account.client_ids[placed.client_id]]
            trade_ids = {f.trade_id for f in account.fills if f.order_id == venue_order.id}
    engine.close()
    replayed = replay(LogReader(path).events())
    assert state_hash(replayed) == state_hash(engine.state)
    order = replayed.order(client_id=placed.client_id)
    assert order is not None
    assert order.trade_ids == trade_ids and len(trade_ids) == 2
    assert order.filled_quantity == venue_order.executed_quantity == D(15)
    assert order.filled_quote == venue_order.executed_quote_quantity
    assert not order.awaiting_fills


# --- a gap that cannot be closed ---------------------------------------------------------------

VENUE_ID = "5406825793"
CLIENT_ID = 42


def _market_filled_without_fills(engine: Engine) -> None:
    """What a MARKET order's answer leaves: filled 2 by the venue's word, no fill counted."""
    engine.record(
        MarketInfo(source=Source.REST, recv_time_us=1, symbol=SPOT, base_asset="SOL",
                   quote_asset="USDC", market_type=MarketType.SPOT, tick_size=D("0.01"),
                   step_size=D("0.01"), min_quantity=D("0.01"))
    )  # fmt: skip
    engine.record(
        OrderSubmitted(source=Source.LOCAL, recv_time_us=2, client_id=CLIENT_ID, symbol=SPOT,
                       side=Side.BID, order_type=OrderType.MARKET, quantity=D(2))
    )  # fmt: skip
    engine.record(
        OrderObserved(source=Source.REST, recv_time_us=3, symbol=SPOT, status=VenueStatus.FILLED,
                      venue_id=VENUE_ID, client_id=CLIENT_ID, side=Side.BID,
                      order_type=OrderType.MARKET, quantity=D(2), executed_quantity=D(2),
                      executed_quote_quantity=D("300"))
    )  # fmt: skip


def _fill_history(fills_from_look: int, asked: list[str]) -> Callable[..., httpx.Response]:
    """A venue whose fill history lists the order's one fill from look `fills_from_look` on."""

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/wapi/v1/history/fills"
        asked.append(str(request.url.params.get("orderId")))
        if len(asked) < fills_from_look:
            return httpx.Response(200, json=[])
        return httpx.Response(200, json=[{
            "clientId": str(CLIENT_ID), "fee": "0.002", "feeSymbol": "SOL", "isMaker": False,
            "orderId": VENUE_ID, "price": "150", "quantity": "2", "side": "Bid",
            "symbol": SPOT, "timestamp": "2025-10-09T08:53:20.000", "tradeId": 7,
        }])  # fmt: skip

    return handle


async def _chase(engine: Engine, handler: Callable[..., httpx.Response], seconds: float) -> None:
    async with BackpackRest(
        "http://venue.test", Credentials(SECRET), transport=httpx.MockTransport(handler)
    ) as rest:
        chaser = FillChaser(engine, rest, grace=2.0, attempts=4)
        engine.subscribe(chaser.notice)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chaser.run)
            await trio.sleep(seconds)
            nursery.cancel_scope.cancel()


async def test_fills_that_reach_the_history_late_are_still_found(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = Engine()
    _market_filled_without_fills(engine)  # before the chaser runs: as a replayed log
    asked: list[str] = []
    await _chase(engine, _fill_history(3, asked), 60)
    # Looks at 2 s (grace), 3 s and 5 s; the third finds the fill, and that is the end.
    assert asked == [VENUE_ID] * 3
    order = engine.state.order(client_id=CLIENT_ID)
    assert order is not None
    assert (order.status, order.filled_quantity, order.trade_ids) == (
        OrderStatus.FILLED,
        D(2),
        frozenset({7}),
    )
    assert engine.state.anomaly_total == 0


async def test_a_gap_that_cannot_be_closed_becomes_an_anomaly(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine()
    asked: list[str] = []
    with caplog.at_level(logging.ERROR, logger="oms_backpack.session"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_chase, engine, _fill_history(1_000, asked), 600)
            await trio.sleep(1)
            _market_filled_without_fills(engine)  # while the chaser runs: noticed as recorded
            await trio.sleep(1.9)
            assert asked == []  # within the grace period the fill messages may still come
            await trio.sleep(60)
    # Four looks (after 2 s, then 1, 2 and 4 s more), then no more.
    assert asked == [VENUE_ID] * 4
    order = engine.state.order(client_id=CLIENT_ID)
    assert order is not None
    assert (order.status, order.filled_quantity, order.venue_executed) == (
        OrderStatus.FILLED,
        D(0),
        D(2),
    )
    # Recorded in the log as a fill gap on the order, once; not silence.
    [gap] = [a for a in engine.state.anomalies if a.kind is AnomalyKind.FILL_GAP]
    assert gap.order_key == order.key
    assert "venue reports 2 executed" in gap.detail and "fills counted 0" in gap.detail
    assert any("fill gap" in r.getMessage() for r in caplog.records)
