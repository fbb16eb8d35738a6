"""Helpers shared by the tests of every folder that the test kit (`oms.testing`) does not
offer: where the repository's files are, our REST client on the local exchange, and raw
WebSocket and signing helpers for what our clients never send.

Waiting, the local exchange on a manual clock and the harness come from `oms.testing`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from oms.core.events import Event
from oms.core.serialization import _CRC_FIELD, _CRC_KEY, _SEAL_BLANK, _crc32, _seal
from oms.testing.harness import local_exchange, venue_clock
from oms_backpack.rest import BackpackRest
from oms_backpack.signing import Credentials
from oms_local_exchange import LocalExchange, ManualClock

__all__ = [
    "Inbox",
    "DATA",
    "REPLAY_DIR",
    "ROOT",
    "local_exchange_and_rest",
    "next_frame",
    "resealed",
    "signed_request",
    "subscribe",
]

# --- the repository's files --------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"  # venue payloads and signing vectors; see tests/data/README.md
REPLAY_DIR = ROOT / "replay"  # the recorded sessions and their expected final states


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


# --- log lines ---------------------------------------------------------------------------------


def resealed(line: bytes) -> bytes:
    """A version 2 or 3 log line (the version told by its checksum's length) with its checksum
    or seal made anew for what it holds now: for tests that edit lines on purpose."""
    at = line.rindex(_CRC_KEY)
    head = bytearray(line[:at])
    newline = line.endswith(b"\n")
    if len(line) - at == len(_SEAL_BLANK) - (0 if newline else 1):
        _seal(head)
    else:
        head += _CRC_FIELD % _crc32(head)
    return bytes(head if newline else head[:-1])
