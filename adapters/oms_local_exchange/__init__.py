"""A local Backpack-compatible exchange, for tests and as the offline default.

It speaks Backpack's wire protocol (REST paths, instructions, ED25519 request signing,
error bodies, order/fill/position objects, WebSocket frames) over real HTTP and WebSocket
servers on 127.0.0.1, around a pure matching and accounting core with seeded synthetic
markets. See `server.open_local_exchange` for the entry point and `faults.Faults` for the
failure knobs. Run it alone with `python -m oms_local_exchange`.

An independent oracle: it imports neither the engine (`oms`) nor the client (`oms_backpack`);
its arithmetic, rounding and signature checks are its own.

The servers (`LocalExchange`, `open_local_exchange`) are imported on first use, so the pure
parts (the venue, `frames`) load without the web server libraries.
"""

from typing import TYPE_CHECKING, Any

from oms_local_exchange.auth import KeyPair
from oms_local_exchange.faults import Faults, HttpFault
from oms_local_exchange.model import (
    DEFAULT_BALANCES,
    DEFAULT_MARKETS,
    Account,
    ApiError,
    Balance,
    Fill,
    FundingPayment,
    ManualClock,
    MarketSpec,
    Order,
    OrderRequest,
    Outbound,
    PayloadError,
    Position,
)
from oms_local_exchange.venue import Venue

if TYPE_CHECKING:
    from oms_local_exchange.server import LocalExchange, open_local_exchange

__all__ = [
    "DEFAULT_BALANCES",
    "DEFAULT_MARKETS",
    "Account",
    "ApiError",
    "Balance",
    "Faults",
    "Fill",
    "FundingPayment",
    "HttpFault",
    "KeyPair",
    "LocalExchange",
    "ManualClock",
    "MarketSpec",
    "Order",
    "OrderRequest",
    "Outbound",
    "PayloadError",
    "Position",
    "Venue",
    "open_local_exchange",
]


def __getattr__(name: str) -> Any:
    if name in ("LocalExchange", "open_local_exchange"):
        from oms_local_exchange import server

        return getattr(server, name)
    raise AttributeError(f"module 'oms_local_exchange' has no attribute {name!r}")
