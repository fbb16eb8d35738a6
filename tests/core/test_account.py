"""Marks and the figures marked to market (`oms.core.account`), and marks in the state."""

from __future__ import annotations

from decimal import Decimal as D

from oms.core.account import account_totals, mark_price, marked_position
from oms.core.events import PositionObserved
from oms.core.reducer import replay
from oms.core.serialization import state_document, state_hash
from oms.core.values import Side, Source
from oms.testing.builders import PERP, accept, fill, mark, markets, submit


def long_two_at_100() -> list[object]:
    return [
        *markets(),
        submit(1, Side.BID, "2", "100", symbol=PERP),
        accept("V1", client_id=1, symbol=PERP),
        fill("V1", 1, Side.BID, "2", "100", client_id=1, symbol=PERP),
    ]


def test_a_long_position_is_marked_with_the_newest_recorded_mark() -> None:
    state = replay([*long_two_at_100(), mark("104"), mark("103.5")])  # type: ignore[list-item]
    figures = marked_position(state, state.positions[PERP])
    assert figures.mark_price == D("103.5") and figures.mark_seq == state.last_seq
    assert figures.unrealized_pnl == D("7.0")  # (103.5 - 100) x 2
    assert figures.notional == D("207.0") and figures.exposure == D("207.0")
    _, totals = account_totals(state)
    (usdc,) = totals
    assert usdc.quote_asset == "USDC" and usdc.unrealized_pnl == D("7.0")
    assert usdc.gross_exposure == D("207.0") and usdc.unmarked == ()


def test_a_short_has_negative_exposure_and_gains_when_the_mark_falls() -> None:
    events = [
        *markets(),
        submit(1, Side.ASK, "3", "50", symbol=PERP),
        accept("V1", client_id=1, symbol=PERP),
        fill("V1", 1, Side.ASK, "3", "50", client_id=1, symbol=PERP),
        mark("48"),
    ]
    state = replay(events)  # type: ignore[arg-type]
    figures = marked_position(state, state.positions[PERP])
    assert figures.unrealized_pnl == D("6")  # (48 - 50) x -3
    assert figures.notional == D("144") and figures.exposure == D("-144")


def test_without_a_mark_the_figures_are_unknown_not_zero() -> None:
    state = replay(long_two_at_100())  # type: ignore[arg-type]
    figures = marked_position(state, state.positions[PERP])
    assert figures.mark_price is None and figures.unrealized_pnl is None
    (usdc,) = account_totals(state)[1]
    assert usdc.unrealized_pnl is None and usdc.unmarked == (PERP,)


def report(net: str, mark_price: str, unrealized: str, entry: str = "100") -> PositionObserved:
    return PositionObserved(
        source=Source.WS,
        recv_time_us=500,
        symbol=PERP,
        net_quantity=D(net),
        entry_price=D(entry),
        mark_price=D(mark_price),
        unrealized_pnl=D(unrealized),
    )


def test_the_venue_unrealized_pnl_is_compared_at_its_own_mark_and_precision() -> None:
    # The venue shows 2 places: (101.237 - 100) x 2 = 2.474 -> 2.47 at its precision.
    agreeing = replay([*long_two_at_100(), mark("105"), report("2", "101.237", "2.47")])  # type: ignore[list-item]
    figures = marked_position(agreeing, agreeing.positions[PERP])
    assert figures.derived_unrealized_at_venue_mark == D("2.47")
    assert figures.drift_unrealized_pnl == D("0.00")
    assert figures.unrealized_pnl == D("10")  # at our own newest mark
    differing = replay([*long_two_at_100(), report("2", "101.237", "1.47")])  # type: ignore[list-item]
    drift = marked_position(differing, differing.positions[PERP]).drift_unrealized_pnl
    assert drift == D("-1.00")
    # Without a recorded mark, the venue report's mark is used.
    assert mark_price(differing, PERP) == D("101.237")


def test_marks_are_in_the_document_and_hash_only_when_recorded() -> None:
    without = replay(long_two_at_100())  # type: ignore[arg-type]
    assert "marks" not in state_document(without)
    marked = replay([*long_two_at_100(), mark("101")])  # type: ignore[list-item]
    doc = state_document(marked)
    assert doc["marks"][0]["symbol"] == PERP and doc["marks"][0]["price"] == "101"
    moved = replay([*long_two_at_100(), mark("102")])  # type: ignore[list-item]
    assert state_hash(marked) != state_hash(moved)
