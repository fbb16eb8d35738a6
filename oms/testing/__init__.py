"""oms.testing: the test kit for programs that embed the engine (see docs/testing.md).

Install it with the package's `testing` extra (`pip install 'oms[testing]'`), which brings
Hypothesis, pytest, pytest-trio and the local exchange's web server. The modules:

- `oms.testing.builders`: one event each with sensible defaults (no Hypothesis needed);
- `oms.testing.strategies`: Hypothesis strategies for every event type, for trading
  histories, and for whole consistent Backpack sessions with knobs that duplicate, drop,
  reorder and delay the venue's messages (`sessions`);
- `oms.testing.machine`: `EngineMachine`, a Hypothesis state machine on a live local
  exchange that a program subclasses to test its own strategy code;
- `oms.testing.books`: `book_differences` / `assert_books_agree`, the judge that compares the
  engine's books with the local exchange's;
- `oms.testing.harness`: the local exchange, an engine on a log and a session on both;
- `oms.testing.waiting`: waiting in trio tests with a deadline that names what it waited for;
- `oms.testing.plugin`: the pytest plugin (fixtures `oms_exchange`, `oms_engine`,
  `oms_session`, ...), registered through the `pytest11` entry point.

The names below are loaded from their modules on first use, so importing `oms.testing`
costs nothing until a name is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oms.testing.books import assert_books_agree, book_differences
    from oms.testing.harness import Harness, local_exchange, open_harness, open_session
    from oms.testing.machine import EngineMachine
    from oms.testing.strategies import DrawnSession, sessions
    from oms.testing.waiting import deadline, wait_for, wait_state

__all__ = [
    "DrawnSession",
    "EngineMachine",
    "Harness",
    "assert_books_agree",
    "book_differences",
    "deadline",
    "local_exchange",
    "open_harness",
    "open_session",
    "sessions",
    "wait_for",
    "wait_state",
]

_WHERE = {
    "DrawnSession": "oms.testing.strategies",
    "EngineMachine": "oms.testing.machine",
    "Harness": "oms.testing.harness",
    "assert_books_agree": "oms.testing.books",
    "book_differences": "oms.testing.books",
    "deadline": "oms.testing.waiting",
    "local_exchange": "oms.testing.harness",
    "open_harness": "oms.testing.harness",
    "open_session": "oms.testing.harness",
    "sessions": "oms.testing.strategies",
    "wait_for": "oms.testing.waiting",
    "wait_state": "oms.testing.waiting",
}

if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        module = _WHERE.get(name)
        if module is None:
            raise AttributeError(f"module 'oms.testing' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
