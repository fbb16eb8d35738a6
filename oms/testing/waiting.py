"""Waiting in trio tests, with a deadline that names what was awaited.

On the engine's state, wait on its events (`wait_state`, or the engine's own
`wait_acknowledged`, `wait_fills_counted` and `wait_done` inside `deadline`); poll
(`wait_for`) only what has no event to wait on: the exchange's books and connections, a
client's counters, a scripted venue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from oms.core.state import State
from oms.engine import Engine

__all__ = ["WAIT_S", "deadline", "wait_for", "wait_state"]

WAIT_S = 10.0


@contextmanager
def deadline(what: str, seconds: float = WAIT_S) -> Iterator[None]:
    """Fail naming `what` if the block has not finished within `seconds`."""
    with trio.move_on_after(seconds) as scope:
        yield
    if scope.cancelled_caught:
        raise AssertionError(f"timed out waiting for {what}")


async def wait_for(predicate: Callable[[], bool], what: str, seconds: float = WAIT_S) -> None:
    """Poll a condition that other tasks change and that has no event to wait on (the
    exchange's books and connections, a client's counters, a scripted venue); fail naming
    `what` after `seconds`. For the engine's state use `wait_state`."""
    with deadline(what, seconds):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def wait_state(
    engine: Engine, predicate: Callable[[State], bool], what: str, seconds: float = WAIT_S
) -> State:
    """Wait (on the engine's events, no polling) until `predicate` holds for the engine's
    state; fail naming `what` after `seconds`."""
    with deadline(what, seconds):
        return await engine.wait_until(predicate)
    raise AssertionError("unreachable")  # the deadline raised
