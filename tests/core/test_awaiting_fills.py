"""An executed quantity is never left without its fills: the order shows it is waiting."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from oms.core.events import Event, OrderObserved
from oms.core.reducer import replay
from oms.core.values import MarketType, OrderStatus, OrderType, Side, Source, VenueStatus
from oms.engine import Engine
from oms.replay import main as replay_main
from oms.testing.strategies import PERP, fill, market, submit

D = Decimal

START: list[Event] = [
    market(PERP, "SOL", "USDC", MarketType.PERP),
    submit(9, Side.BID, "2", None, symbol=PERP, order_type=OrderType.MARKET),
    # The REST answer to the MARKET order says Filled, 2 executed, before any fill message.
    OrderObserved(
        source=Source.REST,
        recv_time_us=50,
        symbol=PERP,
        status=VenueStatus.FILLED,
        venue_id="V9",
        client_id=9,
        side=Side.BID,
        order_type=OrderType.MARKET,
        quantity=D(2),
        executed_quantity=D(2),
    ),
]


def test_filled_with_no_fills_counted_is_visibly_waiting() -> None:
    state = replay(START)
    order = state.order(client_id=9)
    assert order is not None and order.status is OrderStatus.FILLED
    assert (order.filled_quantity, order.venue_executed) == (D(0), D(2))
    assert order.awaiting_fills and order.unfilled_executed == D(2)
    # One fill of two: still waiting for the rest.
    state = replay([*START, fill("V9", 1, Side.BID, "1.5", "100", client_id=9, symbol=PERP)])
    order = state.order(client_id=9)
    assert order is not None and order.awaiting_fills and order.unfilled_executed == D("0.5")
    # Both: level, no longer waiting; the position holds what the venue executed.
    state = replay(
        [
            *START,
            fill("V9", 1, Side.BID, "1.5", "100", client_id=9, symbol=PERP),
            fill("V9", 2, Side.BID, "0.5", "100", client_id=9, symbol=PERP),
        ]
    )
    order = state.order(client_id=9)
    assert order is not None and not order.awaiting_fills and order.unfilled_executed == 0
    assert state.positions[PERP].net_quantity == 2


def test_the_replay_summary_shows_an_order_waiting_for_fills(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.jsonl"
    engine = Engine.open(path)
    for event in START:
        engine.record(event)
    engine.close()
    assert replay_main([str(path)]) == 0
    assert "0 (venue 2: awaiting fills)" in capsys.readouterr().out
    assert replay_main([str(path), "--json"]) == 0
    assert '"awaiting_fills": true' in capsys.readouterr().out
