"""The project's exceptions: one root, split by whose fault it is.

    OmsError
    ├── ProgramError        the embedding program's own mistake
    │   ├── InvalidOrder        an order the market cannot represent (also a ValueError)
    │   │   └── UnknownMarket   an order for a market the engine does not know
    │   ├── DuplicateClientId   a client id already used in the log (also a ValueError)
    │   ├── RiskDenied          the pre-trade risk check or the kill switch refused an order
    │   └── ConfigurationError  unusable settings: keys, URLs, limits, symbols (also a ValueError)
    ├── ExternalError       the outside world's: the venue, the network or an input file
    └── EngineFailed        (`oms.engine`) an event logged ahead of its apply could not be
                            applied: a bug; the engine records nothing more

A `ProgramError` is raised at once, before anything is logged or sent: fixing the call fixes
it, and retrying the same call fails the same way. An `ExternalError` is about something the
program does not control (a venue refusal, an answer that cannot be understood, a venue that
cannot be reached, a log that cannot be read). Inside a session such input is recorded as an
event or an anomaly, not raised; the errors below `ExternalError` reach the program only from
the calls that read a file or ask the venue directly.

The classes that raise them live with the code that knows the case:
`oms.core.serialization.LogFormatError`, `oms.log.LogReadError`,
and in the Backpack adapter `oms_backpack.rest.RestError` (and its subclasses),
`oms_backpack.signing.CredentialsError`, `oms_backpack.rest.MissingCredentials`. Where a class
was a `ValueError` or `RuntimeError` before this root existed, it still is.

This module imports nothing, so any layer may use it (it lives in the pure core for that).
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DuplicateClientId",
    "ExternalError",
    "InvalidOrder",
    "OmsError",
    "ProgramError",
    "RiskDenied",
    "UnknownMarket",
]


class OmsError(Exception):
    """The root of every exception this project defines."""


class ProgramError(OmsError):
    """A mistake of the embedding program, raised before anything is logged or sent."""


class ExternalError(OmsError):
    """A failure that comes from outside the program: the venue's answer or refusal, the
    network, or an input file (named for where the fault lies, not for how it arrives)."""


class InvalidOrder(ProgramError, ValueError):
    """An order the market cannot represent (a price off the tick, a quantity below the
    minimum, a missing price on a limit order, ...). Nothing was logged or sent."""


class UnknownMarket(InvalidOrder):
    """An order for a symbol whose market the engine has not been told about."""


class DuplicateClientId(ProgramError, ValueError):
    """The client id given for a new order is already used by an order in the log."""

    def __init__(self, client_id: int) -> None:
        super().__init__(client_id)  # args stay (client_id,), so it pickles
        self.client_id = client_id

    def __str__(self) -> str:
        return f"client id {self.client_id} is already used in this log"


class RiskDenied(ProgramError):
    """The pre-trade risk check refused an order (a limit it would break, or the kill
    switch): nothing was sent, and the denial was recorded as an `OrderDenied` event.

    `limit` names the limit (`oms.core.risk.LimitName` value), `scope` where it is set
    (`account` or the symbol), `reason` what the order would have done, `client_id` the id the
    order would have had."""

    def __init__(self, limit: str, scope: str, reason: str, client_id: int) -> None:
        super().__init__(limit, scope, reason, client_id)  # args kept, so it pickles
        self.limit = limit
        self.scope = scope
        self.reason = reason
        self.client_id = client_id

    def __str__(self) -> str:
        return f"order {self.client_id} denied by {self.limit} ({self.scope}): {self.reason}"


class ConfigurationError(ProgramError, ValueError):
    """Settings that cannot work: missing or malformed keys, a symbol the venue does not
    list, an out-of-range limit. Raised when the object is built or the session opens."""
