"""The exchange's own money rules (`oms_local_exchange.arithmetic`, specified in
docs/local-exchange.md "Arithmetic and rounding"), worked out by hand here."""

from __future__ import annotations

import decimal
from decimal import Decimal

import pytest

from oms_local_exchange.arithmetic import (
    VENUE,
    display,
    entry_price,
    realized_pnl,
    round_to,
    text,
)

D = Decimal


def test_the_entry_is_the_open_cost_over_the_size_in_sixty_digits() -> None:
    assert entry_price(D("300.01"), D("-2")) == D("150.005")
    third = entry_price(D(1), D(3))
    assert third == D("0." + "3" * 60)  # 60 significant digits, the last one rounded (down)
    assert entry_price(D(2), D(3)) == D("0." + "6" * 59 + "7")  # ... and up


def test_realized_pnl_is_rounded_half_even_to_1e_18_per_fill() -> None:
    entry = entry_price(D(1), D(3))  # 0.333...
    # Closing 3 at 1 from 0.333...: 3 x 0.666... = 2.000...0001 (60 digits) -> 2 at 1e-18.
    assert realized_pnl(D(3), D(1), entry, long=True) == D("2.000000000000000000")
    assert realized_pnl(D(3), D(1), entry, long=False) == D("-2.000000000000000000")
    # A tie goes to the even neighbour: 0.5e-18 -> 0, 1.5e-18 -> 2e-18.
    assert realized_pnl(D("0.5E-18"), D(2), D(1), long=True) == D("0E-18")
    assert realized_pnl(D("1.5E-18"), D(2), D(1), long=True) == D("2E-18")


def test_a_figure_coarser_than_the_quantum_is_kept_as_it_is() -> None:
    # 9E+40 x 1 has 41 digits before the point: rounding it to 1e-18 would need 59 more
    # digits than the context holds, so it is already a multiple and is kept.
    assert round_to(D("9E+40"), D("1E-18")) == D("9E+40")
    assert realized_pnl(D(1), D("9E+40"), D(0), long=True) == D("9E+40")


def test_shown_figures_are_rounded_to_1e_8_and_written_plainly() -> None:
    assert display(D("1.234567895")) == D("1.23456790")  # half even: ...895 -> ...90
    assert display(D("1.234567885")) == D("1.23456788")
    assert text(D("150.2500")) == "150.25"
    assert text(D("1E+3")) == "1000"
    assert text(D("-0.000")) == "0"
    assert text(D("1E-7")) == "0.0000001"


def test_the_context_is_the_venues_own_not_the_threads() -> None:
    with decimal.localcontext() as local:
        local.prec = 5
        assert entry_price(D(1), D(3)) == D("0." + "3" * 60)
    with pytest.raises(decimal.DivisionByZero):
        VENUE.divide(D(1), D(0))
