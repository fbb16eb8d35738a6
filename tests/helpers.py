"""Helpers shared by the tests of every folder: where the repository's files are, waiting for
other tasks, and the local exchange on a manual clock with our clients on it.

Waiting: on the engine's state, wait on its events (`wait_state`, or the engine's own
`wait_acknowledged`, `wait_fills_counted` and `wait_done` inside `deadline`); poll
(`wait_for`) only what has no event to wait on: the exchange's books and connections, a
client's counters, a scripted venue.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from oms.core.events import Event
from oms.core.state import State
from oms.engine import Engine
from oms_backpack.clock import VenueClock
from oms_backpack.rest import BackpackRest
from oms_backpack.signing import Credentials
from oms_local_exchange import LocalExchange, ManualClock, open_local_exchange

__all__ = [
    "Inbox",
    "DATA",
    "DAY_US",
    "REPLAY_DIR",
    "ROOT",
    "deadline",
    "local_exchange",
    "local_exchange_and_rest",
    "next_frame",
    "signed_request",
    "subscribe",
    "venue_clock",
    "wait_for",
    "wait_state",
]

# --- the repository's files --------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"  # venue payloads and signing vectors; see tests/data/README.md
REPLAY_DIR = ROOT / "replay"  # the recorded sessions and their expected final states

# --- waiting -----------------------------------------------------------------------------------

WAIT_S = 10.0


@contextmanager
def deadline(what: str, seconds: float = WAIT_S) -> Iterator[None]:
    """Fail naming `what` if the block has not finished within `seconds`."""
    with trio.move_on_after(seconds) as scope:
        yield
    if scope.cancelled_caught:
        raise AssertionError(f"timed out waiting for {what}")


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    """Poll a condition that other tasks change and that has no event to wait on (the
    exchange's books and connections, a client's counters, a scripted venue); fail naming
    `what` after 10 s. For the engine's state use `wait_state`."""
    with deadline(what):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def wait_state(engine: Engine, predicate: Callable[[State], bool], what: str) -> State:
    """Wait (on the engine's events, no polling) until `predicate` holds for the engine's
    state; fail naming `what` after 10 s."""
    with deadline(what):
        return await engine.wait_until(predicate)
    raise AssertionError("unreachable")  # the deadline raised


# --- the local exchange on a manual clock ------------------------------------------------------

DAY_US = 24 * 3_600_000_000


def venue_clock(clock: ManualClock, *, behind_ms: int = 0) -> VenueClock:
    """Our clients' clock reading the exchange's manual clock (in whole milliseconds, as
    signatures carry them), optionally `behind_ms` behind it."""
    return VenueClock(local_ns=lambda: (clock.now_us // 1000 - behind_ms) * 1_000_000)


@asynccontextmanager
async def local_exchange(**options: Any) -> AsyncIterator[tuple[LocalExchange, ManualClock]]:
    """The local exchange on 127.0.0.1 on a `ManualClock` started at the wall-clock time, so
    nothing moves unless a test moves the clock; the mid steps once a day unless `step_us`
    says otherwise. `options` go to `open_local_exchange`."""
    clock = ManualClock(time.time_ns() // 1000)
    options.setdefault("step_us", DAY_US)
    async with open_local_exchange(clock=clock, **options) as exchange:
        yield exchange, clock


@asynccontextmanager
async def local_exchange_and_rest(
    **options: Any,
) -> AsyncIterator[tuple[LocalExchange, ManualClock, BackpackRest]]:
    """`local_exchange`, and our REST client on it as the funded account, reading the same
    clock, with short retry backoffs."""
    async with (
        local_exchange(**options) as (exchange, clock),
        BackpackRest(
            exchange.rest_url,
            Credentials(exchange.credentials().api_secret),
            clock=venue_clock(clock),
            backoff_initial=0.01,
            backoff_max=0.05,
        ) as rest,
    ):
        yield exchange, clock, rest


def signed_request(
    credentials: Credentials,
    method: str,
    path: str,
    instruction: str,
    timestamp_ms: int,
    *,
    query: Mapping[str, str] | None = None,
    body: Any = None,
    window: int = 5000,
    sign_params: Any = None,
) -> dict[str, Any]:
    """The keyword arguments of an `httpx` request signed for `instruction` by hand (for
    what our client never sends)."""
    params = sign_params if sign_params is not None else (body if body is not None else query)
    headers = credentials.headers(instruction, params, timestamp_ms, window)
    request: dict[str, Any] = {"headers": headers, "params": query}
    if body is not None:
        request["content"] = json.dumps(body)
        headers["Content-Type"] = "application/json; charset=utf-8"
    return request


async def subscribe(
    ws: trio_websocket.WebSocketConnection,
    exchange: LocalExchange,
    clock: ManualClock,
    streams: list[str],
    timestamp_ms: int | None = None,
) -> None:
    """Send a subscription to `streams`, signed as the funded account (at the clock's time
    unless `timestamp_ms` says otherwise)."""
    stamp = clock.now_us // 1000 if timestamp_ms is None else timestamp_ms
    frame = Credentials(exchange.credentials().api_secret).subscribe_frame(streams, stamp)
    await ws.send_message(json.dumps(frame))


async def next_frame(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    """The next text frame, parsed; fail after 5 s."""
    with trio.fail_after(5):
        message = await ws.get_message()
    assert isinstance(message, str)
    frame: dict[str, Any] = json.loads(message)
    return frame


class Inbox:
    """A `record` for the stream that keeps what it is given; `receive` waits for the next."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._taken = 0
        self._arrived = trio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._arrived.set()

    async def receive(self) -> Event:
        while self._taken >= len(self.events):
            self._arrived = trio.Event()
            await self._arrived.wait()
        self._taken += 1
        return self.events[self._taken - 1]
