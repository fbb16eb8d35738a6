"""oms: an event-sourced order-management engine (see the README).

The names below are the public API: import them from `oms`, not from the modules that define
them, which may move. The pure core (`oms.core`) and the errors are imported with the package;
the shell (`Engine`, the log classes, `replay_file`) is imported on first use.

Why lazily: importing any submodule imports this package first, so if this file imported
`oms.engine` (and with it trio), `import oms.core` would load trio too, and the core could no
longer be used, or tested, without an I/O library. A module `__getattr__` (PEP 562) loads the
shell's names on first access instead; mypy and editors read them from the `TYPE_CHECKING`
block, which also keeps a misspelt name a type error rather than `Any`.

The reducer's `replay` (fold events into a state) is exported as `replay_events`: the name
`oms.replay` belongs to the module behind `python -m oms.replay`, and a package attribute of
the same name would be replaced by that module as soon as anything imported it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from oms.core.errors import (
    ConfigurationError,
    DuplicateClientId,
    ExternalError,
    InvalidOrder,
    OmsError,
    ProgramError,
    RiskDenied,
    UnknownMarket,
)
from oms.core.events import (
    AssetBalance,
    BalanceObserved,
    CancelRejected,
    CancelRequested,
    Event,
    FundingPaid,
    KillSwitchReset,
    KillSwitchTripped,
    MarketInfo,
    MarkObserved,
    MessageNotUnderstood,
    OrderAccepted,
    OrderCancelled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderModified,
    OrderObserved,
    OrderSubmitted,
    PositionObserved,
    SubmitRejected,
    SubmitUnknown,
    TriggerFailed,
    TriggerPlaced,
)
from oms.core.reducer import apply
from oms.core.reducer import replay as replay_events
from oms.core.risk import (
    AccountLimits,
    Limits,
    LimitsError,
    SymbolLimits,
    limits_from_mapping,
)
from oms.core.serialization import state_hash
from oms.core.state import (
    Anomaly,
    AnomalyKind,
    Balance,
    Mark,
    Market,
    ObservedBalance,
    ObservedPosition,
    Order,
    Position,
    RiskState,
    State,
)
from oms.core.values import (
    Exit,
    MarketType,
    OrderOrigin,
    OrderStatus,
    OrderType,
    Side,
    Source,
    TimeInForce,
    VenueStatus,
)

if TYPE_CHECKING:
    from oms.engine import Engine, EngineFailed
    from oms.log import EventLog, Fsync, LogReader, LogReadError
    from oms.replay import replay_file
    from oms.snapshot import SnapshotPolicy

__version__ = "0.2.0.dev0"

__all__ = [
    "__version__",
    # the engine and the log
    "Engine",
    "EventLog",
    "Fsync",
    "LogReader",
    "SnapshotPolicy",
    # replay and the state hash
    "apply",
    "replay_events",
    "replay_file",
    "state_hash",
    # state
    "Anomaly",
    "AnomalyKind",
    "Balance",
    "Mark",
    "Market",
    "ObservedBalance",
    "ObservedPosition",
    "Order",
    "Position",
    "RiskState",
    "State",
    # risk limits (docs/risk.md)
    "AccountLimits",
    "Limits",
    "LimitsError",
    "SymbolLimits",
    "limits_from_mapping",
    # values
    "Exit",
    "MarketType",
    "OrderOrigin",
    "OrderStatus",
    "OrderType",
    "Side",
    "Source",
    "TimeInForce",
    "VenueStatus",
    # events
    "Event",
    "AssetBalance",
    "BalanceObserved",
    "CancelRejected",
    "CancelRequested",
    "FundingPaid",
    "KillSwitchReset",
    "KillSwitchTripped",
    "MarketInfo",
    "MarkObserved",
    "MessageNotUnderstood",
    "OrderAccepted",
    "OrderCancelled",
    "OrderDenied",
    "OrderExpired",
    "OrderFilled",
    "OrderModified",
    "OrderObserved",
    "OrderSubmitted",
    "PositionObserved",
    "SubmitRejected",
    "SubmitUnknown",
    "TriggerFailed",
    "TriggerPlaced",
    # errors
    "OmsError",
    "ProgramError",
    "InvalidOrder",
    "UnknownMarket",
    "DuplicateClientId",
    "RiskDenied",
    "ConfigurationError",
    "ExternalError",
    "LogReadError",
    "EngineFailed",
]

# Shell names and the module each comes from, loaded by `__getattr__` on first access.
_SHELL = {
    "Engine": "oms.engine",
    "EngineFailed": "oms.engine",
    "EventLog": "oms.log",
    "Fsync": "oms.log",
    "LogReader": "oms.log",
    "LogReadError": "oms.log",
    "replay_file": "oms.replay",
    "SnapshotPolicy": "oms.snapshot",
}

if not TYPE_CHECKING:  # to mypy the names are the imports above; `oms.Typo` stays an error

    def __getattr__(name: str) -> object:
        module = _SHELL.get(name)
        if module is None:
            raise AttributeError(f"module 'oms' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SHELL))
