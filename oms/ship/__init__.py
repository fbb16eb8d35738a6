"""oms.ship: every event of a session's log to NATS JetStream, and state rebuilt from there.

The file log stays the source of truth; the stream is a copy that other processes (a risk
process, a dashboard, an audit store) follow. See docs/nats.md. The names below are the
public face; the modules behind them may move.

    Shipper, ShipConfig        follow a log (live beside the engine, or catching up a file)
    rebuild, read_events       an account's state, or its events, from the stream
    ShipConflict               the stream holds another history for the account
    StreamReadError            the stream does not hold an account's events as shipped

`python -m oms.ship` is the catch-up command; `python -m oms.replay nats://HOST:PORT/SUBJECT`
replays from a stream.
"""

from oms import __version__
from oms.ship.client import ConnectionLost, NatsAddress, ServerError
from oms.ship.jetstream import JetStreamError
from oms.ship.rebuild import StreamReadError, read_events, rebuild
from oms.ship.shipper import (
    ShipConfig,
    ShipConflict,
    Shipper,
    ShipperStatistics,
)

__all__ = [
    "__version__",
    "Shipper",
    "ShipConfig",
    "ShipperStatistics",
    "rebuild",
    "read_events",
    "NatsAddress",
    # errors
    "ShipConflict",
    "StreamReadError",
    "JetStreamError",
    "ConnectionLost",
    "ServerError",
]
