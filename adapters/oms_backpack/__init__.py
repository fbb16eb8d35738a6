"""oms_backpack: the Backpack adapter of oms (see docs/backpack.md).

The names below are the public API: open a session on an `oms.Engine`, load the keys, and
catch the errors a session or the REST client can raise. Import them from `oms_backpack`;
the modules behind them may move. The errors a program makes itself (`InvalidOrder`,
`UnknownMarket`, `DuplicateClientId`, `ConfigurationError`) are `oms`'s, shared by every
venue. This package is the I/O shell of one venue, so importing it loads trio, httpx and
nacl; it imports no module of the local exchange (only `oms_backpack.run` and
`oms_backpack.bench` start one).
"""

from oms import __version__
from oms_backpack.rest import (
    BadResponse,
    ClockError,
    MissingCredentials,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    RestError,
    VenueError,
    VenueUnavailable,
)
from oms_backpack.session import BackpackSession, load_credentials, open_backpack_session
from oms_backpack.signing import Credentials, CredentialsError

__all__ = [
    "__version__",
    "BackpackSession",
    "open_backpack_session",
    "load_credentials",
    "Credentials",
    # errors: the program's (configuration)
    "CredentialsError",
    "MissingCredentials",
    # errors: the venue's or the network's
    "RestError",
    "VenueError",
    "NotFound",
    "RateLimited",
    "ClockError",
    "BadResponse",
    "OutcomeUnknown",
    "VenueUnavailable",
]
