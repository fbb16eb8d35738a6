"""Value types shared by events and state: enums, and exact Decimal arithmetic.

Pure: standard library only. Every price, quantity, fee and PnL is a `Decimal`.

Arithmetic in the core goes through `CTX`, a fixed context, never the thread's current
context: an embedding program that lowers `decimal.getcontext().prec` must not change
what the reducer computes. Sums and products of venue figures are exact at this precision;
the only inexact operation is the average entry price of a position (a division), which is
rounded deterministically by `CTX` (60 significant digits, half-even); the PnL realized from
it is rounded to `PNL_QUANTUM`.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple

__all__ = [
    "CTX",
    "Exit",
    "ID_LIMIT",
    "MAX_MAGNITUDE_EXPONENT",
    "PNL_QUANTUM",
    "SYNTHETIC_TRADE_ID_BASE",
    "ZERO",
    "MarketType",
    "OrderOrigin",
    "OrderStatus",
    "OrderType",
    "Side",
    "Source",
    "TimeInForce",
    "VenueStatus",
    "canonical_decimal",
    "decimal_in_range",
]

CTX = decimal.Context(
    prec=60,
    rounding=decimal.ROUND_HALF_EVEN,
    Emin=-999999,
    Emax=999999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
ZERO = Decimal(0)
# Realized PnL is rounded to this many quote units per fill (half even): the average entry it
# comes from is a 60-digit quotient, and rounding here keeps every balance an exact sum, so
# sums do not depend on the order they are added in.
PNL_QUANTUM = Decimal("1E-18")


class Side(StrEnum):
    """Backpack's side names: `Bid` buys, `Ask` sells."""

    BID = "Bid"
    ASK = "Ask"


class OrderType(StrEnum):
    """Order types the engine places. LIMIT_MAKER is a post-only limit order."""

    LIMIT = "LIMIT"
    LIMIT_MAKER = "LIMIT_MAKER"
    MARKET = "MARKET"


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class Source(StrEnum):
    """Where an event came from."""

    LOCAL = "local"  # a command of the embedding program, logged before it is sent
    WS = "ws"  # a WebSocket frame
    REST = "rest"  # the response to a request we made (execute, cancel, ...)
    RECONCILE = "reconcile"  # found by a reconciliation pass over REST


class VenueStatus(StrEnum):
    """Order status as Backpack reports it (`X` on the stream, `status` over REST)."""

    NEW = "New"
    PARTIALLY_FILLED = "PartiallyFilled"
    FILLED = "Filled"
    CANCELLED = "Cancelled"
    EXPIRED = "Expired"
    TRIGGER_PENDING = "TriggerPending"
    TRIGGER_FAILED = "TriggerFailed"


class OrderStatus(StrEnum):
    """The engine's order status: the venue's statuses plus the local ones."""

    PENDING_NEW = "PendingNew"  # submitted, no answer yet
    IN_DOUBT = "InDoubt"  # submit outcome unknown (timeout, 5xx): wait for a venue report
    TRIGGER_PENDING = "TriggerPending"
    NEW = "New"
    PARTIALLY_FILLED = "PartiallyFilled"
    FILLED = "Filled"
    CANCELLED = "Cancelled"
    EXPIRED = "Expired"
    REJECTED = "Rejected"  # the venue refused the submit
    TRIGGER_FAILED = "TriggerFailed"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def is_open(self) -> bool:
        """Resting on the book, so funds are locked for it."""
        return self in _RESTING


_TERMINAL = frozenset(
    {
        OrderStatus.FILLED,
        OrderStatus.CANCELLED,
        OrderStatus.EXPIRED,
        OrderStatus.REJECTED,
        OrderStatus.TRIGGER_FAILED,
    }
)
_RESTING = frozenset({OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED})


class OrderOrigin(StrEnum):
    """Who placed an order: the user, or the venue for one of its own reasons (Backpack's `O`
    on the order stream).

    Open: a value Backpack adds later is not refused but becomes a member of its own (not in
    `list(OrderOrigin)`, never identical to a known member, equal to its text), so a new
    origin neither stops a stream nor breaks an old log, and is written back unchanged.
    """

    USER = "USER"
    LIQUIDATION_AUTOCLOSE = "LIQUIDATION_AUTOCLOSE"
    ADL_AUTOCLOSE = "ADL_AUTOCLOSE"
    COLLATERAL_CONVERSION = "COLLATERAL_CONVERSION"
    SETTLEMENT_AUTOCLOSE = "SETTLEMENT_AUTOCLOSE"
    BACKSTOP_LIQUIDITY_PROVIDER = "BACKSTOP_LIQUIDITY_PROVIDER"

    @classmethod
    def _missing_(cls, value: object) -> OrderOrigin | None:
        if not isinstance(value, str):
            return None
        # Not cached in the value map: hostile input cannot grow it.
        member = str.__new__(cls, value)
        member._name_ = value
        member._value_ = value
        return member

    @property
    def is_known(self) -> bool:
        """One of the origins listed here (not one the venue added since)."""
        return self._value_ in OrderOrigin._value2member_map_


class Exit(NamedTuple):
    """A stop loss or take profit to attach to an order (perpetuals): when the price
    `trigger_by` names (`LastPrice`, `MarkPrice`, `IndexPrice`; None: the venue's default)
    reaches `trigger_price`, the venue closes what the order opened, at `limit_price`, or at
    market when it is None."""

    trigger_price: Decimal
    limit_price: Decimal | None = None
    trigger_by: str | None = None


class MarketType(StrEnum):
    """Backpack `marketType`. SPOT moves balances; the others carry positions."""

    SPOT = "SPOT"
    PERP = "PERP"
    IPERP = "IPERP"
    DATED = "DATED"
    PREDICTION = "PREDICTION"
    RFQ = "RFQ"

    @property
    def has_positions(self) -> bool:
        return self in (MarketType.PERP, MarketType.IPERP, MarketType.DATED)


# Venue figures are far inside this range; bounding input keeps every product and sum of two
# of them exact and finite in `CTX`, so the reducer cannot overflow on any accepted input.
MAX_MAGNITUDE_EXPONENT = 40


def decimal_in_range(value: Decimal) -> bool:
    """Finite, and zero or with 1e-40 <= |value| < 1e41 (adjusted exponent within +-40)."""
    if not value.is_finite():
        return False
    return not value or -MAX_MAGNITUDE_EXPONENT <= value.adjusted() <= MAX_MAGNITUDE_EXPONENT


# Every integer read from the venue (trade ids, client ids, times) is below this bound:
# Backpack types them as int64/uint32, and an unbounded integer could not be written or
# compared cheaply. A venue integer at or above it is input the codec refuses.
ID_LIMIT = 1 << 63
# A fill the venue reports without a trade id (a system fill: liquidation, ADL) is keyed by
# an id derived from the fill itself, in [SYNTHETIC_TRADE_ID_BASE, 2**64): never a real id.
SYNTHETIC_TRADE_ID_BASE = ID_LIMIT


def canonical_decimal(value: Decimal) -> str:
    """A Decimal as a plain string with no exponent and no trailing fractional zeros.

    Numerically equal values get the same text (`1.50` and `1.5000` both give `1.5`), so
    canonical hashes depend on values, not on how a figure happened to be written.
    """
    if not value:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
