"""The exchange's arithmetic: one decimal context and the rounding rules of this venue.

Standard library only, and the exchange's own: it imports neither the engine (`oms`) nor the
client (`oms_backpack`). The end-to-end tests compare the engine's books with the books kept
here; they prove something only because the two are computed by separate code. The rules are
the venue's specification (docs/local-exchange.md, "Arithmetic and rounding"):

- Every price, quantity, fee, balance, PnL and funding amount is a `Decimal` computed in
  `VENUE`, never in the thread's current context: 60 significant digits, half-even, with
  invalid operations, division by zero and overflow trapped. Figures a client may send are
  bounded by `inputs` (50 digits, exponent within +-40), so sums and products of two of them
  are exact here.
- Fees, notionals, balance moves and funding amounts are exact products and sums: never
  rounded.
- A position's entry price is its open cost over its size (`entry_price`), the venue's only
  division, rounded to the context's 60 significant digits.
- Realized PnL is rounded once per fill to `PNL_QUANTUM` (`realized_pnl`), then settled.
- Derived figures that nothing is settled from (break-even, unrealized PnL, notionals,
  collateral) are shown rounded to `DISPLAY_QUANTUM` (`display`).
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Final

__all__ = [
    "DISPLAY_QUANTUM",
    "PNL_QUANTUM",
    "VENUE",
    "WIRE_MAX_SCALE",
    "ZERO",
    "add",
    "display",
    "divide",
    "entry_price",
    "floor_to",
    "multiple_of",
    "multiply",
    "realized_pnl",
    "round_to",
    "subtract",
    "text",
    "wire_decimal",
]

VENUE: Final = decimal.Context(
    prec=60,
    rounding=decimal.ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
ZERO: Final = Decimal(0)
# The grain in which realized PnL is settled into the quote balance: the entry it comes from
# is a 60-digit quotient, and settling a rounded figure keeps every balance an exact sum.
PNL_QUANTUM: Final = Decimal("1E-18")
DISPLAY_QUANTUM: Final = Decimal("1E-8")
# The venue's own decimals are 96-bit integers scaled by at most 28 places.
WIRE_MAX_SCALE: Final = 28
_WIRE_MANTISSA: Final = Decimal(2**96)

add = VENUE.add
subtract = VENUE.subtract
multiply = VENUE.multiply
divide = VENUE.divide


def round_to(value: Decimal, quantum: Decimal) -> Decimal:
    """`value` as a multiple of `quantum`, rounded half even.

    A value whose last digit already lies at or above the quantum is a multiple of it and is
    returned unchanged: rounding it would ask for more digits than the context holds (a PnL
    of 1e42 kept to 1e-18 is 61 digits), which `quantize` refuses rather than rounds.
    """
    exponent, unit = value.as_tuple().exponent, quantum.as_tuple().exponent
    if isinstance(exponent, int) and isinstance(unit, int) and exponent >= unit:
        return value
    return VENUE.quantize(value, quantum)


def display(value: Decimal) -> Decimal:
    """A derived figure (break-even, unrealized PnL, a notional) as the venue shows it."""
    return round_to(value, DISPLAY_QUANTUM)


def wire_decimal(value: Decimal) -> Decimal:
    """`value` as the venue's 96-bit decimals can hold it: at most `WIRE_MAX_SCALE` places,
    and fewer while the digits as an integer would reach 2**96, rounded half even. The
    venue shows a quotient such as an entry price this way (`"3826.8888888888888888888888889"`,
    29 digits) rather than to this exchange's 60 significant digits. Nothing is settled from
    the shown figure."""
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    scale = min(-exponent, WIRE_MAX_SCALE)
    while scale > 0:
        shown = round_to(value, Decimal(1).scaleb(-scale))
        if abs(VENUE.scaleb(shown, scale)) < _WIRE_MANTISSA:
            return shown
        scale -= 1
    return value if exponent >= 0 else VENUE.quantize(value, Decimal(1))


def entry_price(open_cost: Decimal, net_quantity: Decimal) -> Decimal:
    """Average entry of a position: exact open cost over |net quantity|, in 60 digits."""
    return VENUE.divide(open_cost, net_quantity.copy_abs())


def realized_pnl(closed: Decimal, price: Decimal, entry: Decimal, *, long: bool) -> Decimal:
    """PnL of closing `closed` units at `price` of a position entered at `entry`, rounded half
    even to `PNL_QUANTUM` (the rounding is symmetric, so a short's is the long's negated)."""
    pnl = round_to(VENUE.multiply(closed, VENUE.subtract(price, entry)), PNL_QUANTUM)
    return pnl if long else pnl.copy_negate()


def floor_to(value: Decimal, unit: Decimal) -> Decimal:
    """The largest multiple of `unit` not above `value` (for positive figures)."""
    return VENUE.multiply(VENUE.divide_int(value, unit), unit)


def multiple_of(value: Decimal, unit: Decimal) -> bool:
    return VENUE.remainder(value, unit) == 0


def text(value: Decimal) -> str:
    """A decimal as the venue writes it: plain digits, no exponent, no trailing zeros after
    the point, and `"0"` for zero (so equal values always read the same)."""
    if not value:
        return "0"
    written = format(value, "f")
    if "." in written:
        written = written.rstrip("0").rstrip(".")
    return written
