"""The pytest plugin of the test kit: fixtures that put a program's tests on a local exchange.

Registered through the `pytest11` entry point, so installing `oms[testing]` is enough. The
fixtures are trio fixtures (pytest-trio): run the tests with `trio_mode = true` in the pytest
configuration, or mark them `@pytest.mark.trio`.

- `oms_clock`: the exchange's `ManualClock`, started at the wall-clock time; the synthetic
  market moves only when the test advances it (then `oms_exchange.venue.advance()`).
- `oms_faults`: the exchange's fault knobs (`Faults`): set them at any time in a test.
- `oms_exchange`: the local exchange on 127.0.0.1 (options from the `oms_exchange` marker:
  `@pytest.mark.oms_exchange(seed=3, balances={...})`, passed to `open_local_exchange`).
- `oms_log_path`: where the engine's log is written (in the test's `tmp_path`).
- `oms_engine`: an engine recorded to `oms_log_path`. On teardown it is closed and its log
  must replay to exactly its live state.
- `oms_session`: a Backpack session of `oms_engine` on `oms_exchange` (symbols from the
  `oms_symbols` marker, `SOL_USDC` and `SOL_USDC_PERP` by default), reconciled and ready.
- `oms_books`: `await oms_books()` waits until the engine agrees with the exchange's books
  and fails with every difference, one a line, if it does not within 10 s.

Nothing heavy is imported until a fixture is used, so the plugin costs nothing in test
suites that do not use it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from oms.engine import Engine
    from oms_backpack.session import BackpackSession
    from oms_local_exchange import Faults, LocalExchange, ManualClock

__all__ = [
    "oms_books",
    "oms_clock",
    "oms_engine",
    "oms_exchange",
    "oms_faults",
    "oms_log_path",
    "oms_session",
]

DEFAULT_SYMBOLS = ("SOL_USDC", "SOL_USDC_PERP")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "oms_exchange(**options): options for the local exchange of the oms fixtures "
        "(see oms_local_exchange.open_local_exchange)",
    )
    config.addinivalue_line(
        "markers", "oms_symbols(*symbols): the markets the oms_session fixture trades"
    )


@pytest.fixture
def oms_clock() -> ManualClock:
    from oms_local_exchange import ManualClock

    return ManualClock(time.time_ns() // 1000)


@pytest.fixture
def oms_faults() -> Faults:
    from oms_local_exchange import Faults

    return Faults()


@pytest.fixture
async def oms_exchange(
    request: pytest.FixtureRequest, oms_clock: ManualClock, oms_faults: Faults
) -> AsyncIterator[LocalExchange]:
    from oms.testing.harness import DAY_US
    from oms_local_exchange import open_local_exchange

    marker = request.node.get_closest_marker("oms_exchange")
    options: dict[str, Any] = {"step_us": DAY_US, **(marker.kwargs if marker else {})}
    async with open_local_exchange(clock=oms_clock, faults=oms_faults, **options) as exchange:
        yield exchange


@pytest.fixture
def oms_log_path(tmp_path: Path) -> Path:
    return tmp_path / "session.jsonl"


@pytest.fixture
def oms_engine(oms_log_path: Path) -> Iterator[Engine]:
    from oms.core.reducer import replay
    from oms.core.serialization import state_hash
    from oms.engine import Engine
    from oms.log import Fsync, LogReader
    from oms.replay import replay_file

    engine = Engine.open(oms_log_path, fsync=Fsync.group())
    try:
        yield engine
    finally:
        engine.close()
    live = state_hash(engine.state)
    if state_hash(replay(LogReader(oms_log_path).events())) != live:
        raise AssertionError(f"replaying {oms_log_path} does not give the engine's live state")
    if state_hash(replay_file(str(oms_log_path))[0]) != live:
        raise AssertionError(f"oms.replay of {oms_log_path} does not give the engine's live state")


@pytest.fixture
async def oms_session(
    request: pytest.FixtureRequest,
    oms_exchange: LocalExchange,
    oms_engine: Engine,
    oms_clock: ManualClock,
) -> AsyncIterator[BackpackSession]:
    from oms.testing.harness import venue_clock
    from oms_backpack.session import open_backpack_session
    from oms_backpack.signing import Credentials

    marker = request.node.get_closest_marker("oms_symbols")
    symbols = list(marker.args) if marker else list(DEFAULT_SYMBOLS)
    async with open_backpack_session(
        oms_engine,
        Credentials(oms_exchange.credentials().api_secret),
        rest_url=oms_exchange.rest_url,
        ws_url=oms_exchange.ws_url,
        symbols=symbols,
        clock=venue_clock(oms_clock),
        poll_interval=3600.0,
    ) as session:
        await session.reconciled.wait()
        yield session


@pytest.fixture
def oms_books(oms_engine: Engine, oms_exchange: LocalExchange) -> Callable[..., Awaitable[None]]:
    from oms.testing.books import book_differences

    async def check(seconds: float = 10.0) -> None:
        import trio

        with trio.move_on_after(seconds):
            while True:
                oms_exchange.dispatch()
                if not book_differences(oms_engine.state, oms_exchange):
                    return
                await trio.sleep(0.01)
        found = book_differences(oms_engine.state, oms_exchange)
        if found:
            raise AssertionError(
                f"the engine disagrees with the exchange after {seconds} s:\n  "
                + "\n  ".join(found)
            )

    return check
