"""The order life cycle: one transition table, read by the reducer, the tests and the docs.

Theory of operation
-------------------
An order's status moves on *kinds* of input: our own commands and their outcomes (submit,
reject, unknown outcome, cancel request, cancel reject) and the venue's reports (accepted,
fill, cancelled, expired, modified, trigger placed, trigger failed). A REST observation of
an order (`OrderObserved`) counts as the report its venue status names.

Venue reports for one order travel on two paths (the WebSocket stream and REST responses)
and can arrive in any order: a fill before the accept, a fill after the cancel (the fill
happened first at the venue; its message was late), an accept after a fill. The table is
built so that any arrival order of one order's venue reports ends in the same status:

- statuses advance by rank: PendingNew/InDoubt < TriggerPending < New < PartiallyFilled <
  a terminal status; a report that would move an order backwards is absorbed (`=`);
- terminal statuses absorb everything except fills: a late fill still counts (money moved),
  but a cancelled order stays cancelled;
- where the venue contradicts what we believed (it reports on an order it had rejected,
  or a cancel after a complete fill), the contradiction is recorded as an anomaly (`!`);
  if the report is the venue's own order report, the venue wins and the status moves.

Cells: a status name moves there; `fill` moves to PartiallyFilled or Filled as the fills and
the venue's reported status say; `=` keeps the status (legal); `!` keeps it and records an
anomaly; `!Name` / `!fill` records an anomaly and moves.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

import attrs

from oms.core.values import OrderStatus, VenueStatus

__all__ = ["TRANSITIONS", "Kind", "Transition", "kind_of_venue_status", "transition"]


class Kind(StrEnum):
    """What happened to an order, as far as its status is concerned."""

    SUBMITTED = "submitted"
    SUBMIT_REJECTED = "submit_rejected"
    SUBMIT_UNKNOWN = "submit_unknown"
    CANCEL_REQUESTED = "cancel_requested"
    CANCEL_REJECTED = "cancel_rejected"
    ACCEPTED = "accepted"
    FILL = "fill"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    MODIFIED = "modified"
    TRIGGER_PLACED = "trigger_placed"
    TRIGGER_FAILED = "trigger_failed"


@attrs.frozen
class Transition:
    """`to`: the new status, or None to keep it; `follow_fills`: the status follows the fills
    (PartiallyFilled or Filled); `anomaly`: the input contradicts the order's state."""

    to: OrderStatus | None
    follow_fills: bool
    anomaly: bool


_S = OrderStatus
# Column order of every row below.
_COLUMNS: Final = (
    _S.PENDING_NEW,
    _S.IN_DOUBT,
    _S.TRIGGER_PENDING,
    _S.NEW,
    _S.PARTIALLY_FILLED,
    _S.FILLED,
    _S.CANCELLED,
    _S.EXPIRED,
    _S.REJECTED,
    _S.TRIGGER_FAILED,
)

# fmt: off
_TABLE: Final[dict[Kind, tuple[str, ...]]] = {
    #                  PendingNew   InDoubt      TriggerPend  New          PartFilled   Filled  Cancelled    Expired      Rejected          TriggerFailed
    # A client id already in our log: a second submit with it is our own mistake.
    Kind.SUBMITTED:       ("!",         "!",         "!",         "!",         "!",         "!",    "!",         "!",         "!",              "!"),
    # The venue said no. After any venue report on the order, a reject contradicts it.
    Kind.SUBMIT_REJECTED: ("Rejected",  "Rejected",  "!",         "!",         "!",         "!",    "!",         "!",         "=",              "!"),
    # No definitive answer. If a report already came (it raced the timeout), keep it.
    Kind.SUBMIT_UNKNOWN:  ("InDoubt",   "=",         "=",         "=",         "=",         "=",    "=",         "=",         "=",              "="),
    # Cancel commands and their refusals never move the status; the venue's report does.
    Kind.CANCEL_REQUESTED:("=",         "=",         "=",         "=",         "=",         "=",    "=",         "=",         "=",              "="),
    Kind.CANCEL_REJECTED: ("=",         "=",         "=",         "=",         "=",         "=",    "=",         "=",         "=",              "="),
    # An accept after fills or a terminal report is a late message: absorbed.
    # On a rejected order the venue's own report wins (anomaly).
    Kind.ACCEPTED:        ("New",       "New",       "New",       "=",         "=",         "=",    "=",         "=",         "!New",           "!New"),
    # A fill after a cancel or expiry is legal (it happened first at the venue): it counts,
    # the status stays terminal. Fills on a rejected order: the venue wins (anomaly).
    Kind.FILL:            ("fill",      "fill",      "fill",      "fill",      "fill",      "=",    "=",         "=",         "!fill",          "!fill"),
    # A cancel after a complete fill, or after an expiry, contradicts the venue's own report.
    Kind.CANCELLED:       ("Cancelled", "Cancelled", "Cancelled", "Cancelled", "Cancelled", "!",    "=",         "!",         "!Cancelled",     "!"),
    Kind.EXPIRED:         ("Expired",   "Expired",   "Expired",   "Expired",   "Expired",   "!",    "!",         "=",         "!Expired",       "!"),
    # A reduce-only order shrunk by the venue: quantities change, the status does not.
    Kind.MODIFIED:        ("=",         "=",         "=",         "=",         "=",         "=",    "=",         "=",         "!",              "!"),
    # A trigger report after the order went live is a late message: absorbed.
    Kind.TRIGGER_PLACED:  ("TriggerPending", "TriggerPending", "=", "=",       "=",         "=",    "=",         "=",         "!TriggerPending", "="),
    # A trigger cannot fail once its order is live.
    Kind.TRIGGER_FAILED:  ("TriggerFailed", "TriggerFailed", "TriggerFailed", "!", "!",     "!",    "!",         "!",         "!TriggerFailed", "="),
}
# fmt: on


def _parse(cell: str) -> Transition:
    anomaly = cell.startswith("!")
    body = cell[1:] if anomaly else cell
    if body in ("", "="):
        return Transition(None, False, anomaly)
    if body == "fill":
        return Transition(None, True, anomaly)
    return Transition(OrderStatus(body), False, anomaly)


TRANSITIONS: Final[dict[tuple[OrderStatus, Kind], Transition]] = {
    (status, kind): _parse(cell)
    for kind, row in _TABLE.items()
    for status, cell in zip(_COLUMNS, row, strict=True)
}


def transition(status: OrderStatus, kind: Kind) -> Transition:
    return TRANSITIONS[(status, kind)]


_OBSERVED_KIND: Final[dict[VenueStatus, Kind]] = {
    VenueStatus.NEW: Kind.ACCEPTED,
    VenueStatus.PARTIALLY_FILLED: Kind.FILL,
    VenueStatus.FILLED: Kind.FILL,
    VenueStatus.CANCELLED: Kind.CANCELLED,
    VenueStatus.EXPIRED: Kind.EXPIRED,
    VenueStatus.TRIGGER_PENDING: Kind.TRIGGER_PLACED,
    VenueStatus.TRIGGER_FAILED: Kind.TRIGGER_FAILED,
}


def kind_of_venue_status(status: VenueStatus) -> Kind:
    """The report kind a REST observation with this venue status counts as."""
    return _OBSERVED_KIND[status]
