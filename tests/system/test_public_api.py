"""The public face: what `oms`, `oms_backpack` and `oms.ship` export is there, is the real
thing, and is what the installed distribution says it is.

Programs import from these packages, never from the modules behind them (which may move),
so a name in `__all__` that is missing, or is a different object from the one its module
defines, breaks them; so would `import oms.core` starting to load trio.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import subprocess
import sys
import types

import pytest

import oms
import oms.ship
import oms_backpack
from oms.core.events import EVENT_TYPES, Event

PACKAGES = {"oms": oms, "oms_backpack": oms_backpack, "oms.ship": oms.ship}


def _exports() -> list[tuple[str, str]]:
    return [(package, name) for package, module in PACKAGES.items() for name in module.__all__]


@pytest.mark.parametrize("package", PACKAGES)
def test_all_lists_each_name_once(package: str) -> None:
    names = PACKAGES[package].__all__
    assert len(names) == len(set(names))
    assert "__version__" in names


@pytest.mark.parametrize(("package", "name"), _exports())
def test_every_exported_name_is_the_object_its_home_module_defines(package: str, name: str) -> None:
    value = getattr(PACKAGES[package], name)
    if name == "__version__":
        assert value == oms.__version__
        return
    if isinstance(value, types.UnionType):  # `Event`: a union has no home module of its own
        assert value is Event
        return
    home = value.__module__
    assert home.split(".")[0] in ("oms", "oms_backpack"), (name, home)
    assert home != package, f"{package}.{name} should be re-exported, not defined in __init__"
    # Exported under its own name, except the reducer's fold (see oms/__init__.py).
    defined = "replay" if name == "replay_events" else name
    assert getattr(importlib.import_module(home), defined) is value


def test_oms_exports_every_event_and_the_engines_essentials() -> None:
    assert set(EVENT_TYPES) <= set(oms.__all__)
    assert {
        "Engine",
        "State",
        "Order",
        "Balance",
        "Position",
        "Market",
        "Anomaly",
        "AnomalyKind",
        "apply",
        "replay_events",
        "replay_file",
        "state_hash",
        "EventLog",
        "LogReader",
        "Fsync",
        "OmsError",
        "ProgramError",
        "ExternalError",
        "LogReadError",
        "Side",
        "OrderType",
        "OrderStatus",
        "OrderOrigin",
    } <= set(oms.__all__)
    assert {
        "open_backpack_session",
        "BackpackSession",
        "load_credentials",
        "Credentials",
        "RestError",
        "OutcomeUnknown",
    } <= set(oms_backpack.__all__)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from oms import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(oms.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Engien'"):
        _ = oms.Engien  # type: ignore[attr-defined]


def test_version_is_the_installed_distributions() -> None:
    assert oms.__version__ == importlib.metadata.version("oms")
    assert oms_backpack.__version__ == oms.__version__


def test_the_shell_is_loaded_on_first_use_only() -> None:
    # `import oms` (and so `import oms.core`) must not load trio; the engine does.
    program = (
        "import json, sys, oms\n"
        "before = 'trio' in sys.modules\n"
        "oms.State, oms.apply, oms.OrderSubmitted\n"
        "core = 'trio' in sys.modules\n"
        "oms.Engine\n"
        "print(json.dumps([before, core, 'trio' in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(result.stdout) == [False, False, True]


def test_the_replay_cli_module_and_the_reducer_fold_do_not_clash() -> None:
    # `oms.replay` is the CLI module (python -m oms.replay); the fold is `oms.replay_events`.
    program = (
        "import oms, oms.core.reducer\n"
        "oms.replay_file\n"
        "import oms.replay\n"
        "assert oms.replay_events is oms.core.reducer.replay\n"
        "assert oms.replay.main and oms.replay.replay_file is oms.replay_file\n"
    )
    subprocess.run([sys.executable, "-c", program], check=True, timeout=120)
