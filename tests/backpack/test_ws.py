"""Backpack WebSocket client against real trio-websocket servers on 127.0.0.1.

Each test scripts a small venue: connection number n runs the n-th script (the last one
repeats). Tests that wait on timers use pytest-trio's `autojump_clock`, so every duration
below is virtual time: gaps between connections are read from the mock clock, never from
the wall clock.
"""

from __future__ import annotations

import base64
import gc
import itertools
import json
import random
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from decimal import Decimal
from functools import partial
from typing import Any

import nacl.signing
import pytest
import trio
import trio.testing
import trio_websocket
from trio_websocket import WebSocketConnection, WebSocketRequest, serve_websocket

from oms.core.events import Event, MessageNotUnderstood, OrderAccepted, OrderFilled
from oms.core.values import OrderType, Side, Source, VenueStatus
from oms_backpack.clock import VenueClock
from oms_backpack.signing import Credentials
from oms_backpack.ws import BackpackStream
from tests.helpers import Inbox

# Hummingbot's literal test secret and the key and subscribe signature the fact sheet
# derives from it (api.md §1.6, computed there with `cryptography`, not with our signer).
HB_SECRET = "sKmC5939f6W9/viyhwyaNHa0f7j5wSMvZsysW5BB9L4="
HB_API_KEY = "1dCOvaOfUlYl8m8gNNUUA2cs9VZyaSD9vuwNgi944uM="
TS = 1614550000000
SUBSCRIBE_SIGNATURE_AT_TS = (
    "yv53JMmBCjtwWqVwaX8IpZgb974YXk4DjB6gx95Hzb7KWu7y8k3EGZZJbc3vOmN/upvzXnSx1SKqDIj6Rx/7Bg=="
)
CREDENTIALS = Credentials(HB_SECRET)
RECV_US = 1_754_939_110_200_000
# Frames received at RECV_US; subscriptions signed at TS (the venue's clock, ahead of ours).
AT_TS = VenueClock(local_ns=lambda: RECV_US * 1_000, offset_ms=TS - RECV_US // 1_000)

# The ccxt orderAccepted / orderFill pair for one spot market order (api.md §3.3).
ACCEPTED = {
    "E": "1754939110175843",
    "O": "USER",
    "Q": "4.30",
    "S": "Bid",
    "T": "1754939110174703",
    "V": "RejectTaker",
    "X": "New",
    "Z": "0",
    "e": "orderAccepted",
    "f": "GTC",
    "i": "5406825793",
    "o": "MARKET",
    "q": "0.0010",
    "r": False,
    "s": "ETH_USDC",
    "t": None,
    "z": "0",
}
FILL = {
    "E": "1754939110175879",
    "L": "4299.16",
    "N": "ETH",
    "O": "USER",
    "Q": "4.30",
    "S": "Bid",
    "T": "1754939110174705",
    "V": "RejectTaker",
    "X": "Filled",
    "Z": "4.299160",
    "e": "orderFill",
    "f": "GTC",
    "i": "5406825793",
    "l": "0.0010",
    "m": False,
    "n": "0.000001",
    "o": "MARKET",
    "q": "0.0010",
    "r": False,
    "s": "ETH_USDC",
    "t": 2888471,
    "z": "0.0010",
}


Script = Callable[["Venue", WebSocketRequest, int], Awaitable[None]]


# trio-websocket 0.12.2 never closes a client's socket when the opening handshake fails (a
# rejected upgrade, a server that drops TCP before answering, a cancellation mid-handshake):
# the socket is left to the garbage collector. Only the cases that provoke such failures
# ignore that warning. Every test collects garbage before it ends, so an unclosed socket is
# reported by the test that left it, and everywhere else it is an error.
upstream_handshake_leak = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    yield
    gc.collect()


def data_frame(data: dict[str, Any], stream: str = "account.orderUpdate") -> str:
    return json.dumps({"stream": stream, "data": data})


class Venue:
    """A scripted stand-in for Backpack. Frames it receives go to `inbox` as (conn, text)."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = scripts
        self.connected_at: list[float] = []
        self.closed_at: dict[int, float] = {}
        self.inbox_send, self.inbox = trio.open_memory_channel[tuple[int, str]](1000)
        self.connection_made_send, self.connection_made = trio.open_memory_channel[int](1000)

    async def handler(self, request: WebSocketRequest) -> None:
        index = len(self.connected_at)
        self.connected_at.append(trio.current_time())
        self.connection_made_send.send_nowait(index)
        script = self.scripts[min(index, len(self.scripts) - 1)]
        await script(self, request, index)

    async def accept(
        self, request: WebSocketRequest, index: int, subscribes: int = 1
    ) -> WebSocketConnection:
        ws = await request.accept()
        for _ in range(subscribes):
            self.inbox_send.send_nowait((index, str(await ws.get_message())))
        return ws

    async def keep_reading(self, ws: WebSocketConnection, index: int) -> None:
        """Read (and so answer pings) until the client goes away."""
        try:
            while True:
                self.inbox_send.send_nowait((index, str(await ws.get_message())))
        except trio_websocket.ConnectionClosed:
            pass

    async def close(self, ws: WebSocketConnection, index: int) -> None:
        await ws.aclose()
        self.closed_at[index] = trio.current_time()

    async def connections_reached(self, count: int) -> None:
        """Wait until `count` connections have been opened."""
        while await self.connection_made.receive() + 1 < count:
            pass

    async def frame_from(self, index: int) -> dict[str, Any]:
        """The next frame received on connection `index` (frames of others are skipped)."""
        while True:
            conn, text = await self.inbox.receive()
            if conn == index:
                frame: dict[str, Any] = json.loads(text)
                return frame


async def start_venue(nursery: trio.Nursery, venue: Venue, **kwargs: Any) -> str:
    server = await nursery.start(
        partial(serve_websocket, venue.handler, "127.0.0.1", 0, ssl_context=None, **kwargs)
    )
    return f"ws://127.0.0.1:{server.port}"


# --- scripts -----------------------------------------------------------------------------


async def hold_open(venue: Venue, request: WebSocketRequest, index: int) -> None:
    ws = await venue.accept(request, index)
    await venue.keep_reading(ws, index)


def send_then_hold(*frames: str | bytes) -> Script:
    async def script(venue: Venue, request: WebSocketRequest, index: int) -> None:
        ws = await venue.accept(request, index)
        for frame in frames:
            await ws.send_message(frame)
        await venue.keep_reading(ws, index)

    return script


def send_then_drop(*frames: str) -> Script:
    async def script(venue: Venue, request: WebSocketRequest, index: int) -> None:
        ws = await venue.accept(request, index)
        for frame in frames:
            await ws.send_message(frame)
        await venue.close(ws, index)

    return script


async def subscribe_twice_then_hold(venue: Venue, request: WebSocketRequest, index: int) -> None:
    ws = await venue.accept(request, index, subscribes=2)
    await venue.keep_reading(ws, index)


async def reject(venue: Venue, request: WebSocketRequest, index: int) -> None:
    await request.reject(503)


async def accept_then_close(venue: Venue, request: WebSocketRequest, index: int) -> None:
    ws = await request.accept()
    await venue.close(ws, index)


async def never_read(venue: Venue, request: WebSocketRequest, index: int) -> None:
    # With a server message queue of 0, the library's reader stays parked on the
    # subscribe frame nobody takes, so the client's pings are never answered.
    await request.accept()
    await trio.sleep_forever()


def verify_subscribe(frame: dict[str, Any], streams: Sequence[str]) -> tuple[str, str]:
    """Check a private SUBSCRIBE the way the venue would; return (timestamp, signature)."""
    assert frame["method"] == "SUBSCRIBE"
    assert frame["params"] == list(streams)
    key, signature, timestamp, window = frame["signature"]
    assert key == HB_API_KEY
    message = f"instruction=subscribe&timestamp={timestamp}&window={window}"
    # Raises BadSignatureError if the signature does not verify.
    nacl.signing.VerifyKey(base64.b64decode(key)).verify(
        message.encode("utf-8"), base64.b64decode(signature)
    )
    return timestamp, signature


def stream_for(url: str, **kwargs: Any) -> BackpackStream:
    kwargs.setdefault("clock", VenueClock(local_ns=lambda: RECV_US * 1_000))
    kwargs.setdefault("rng", random.Random(7))
    return BackpackStream(url, CREDENTIALS, **kwargs)


# --- subscribing -------------------------------------------------------------------------


async def test_subscribe_frame_is_signed_and_lists_the_private_streams() -> None:
    venue = Venue(subscribe_twice_then_hold)
    inbox = Inbox()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await start_venue(nursery, venue)
            private = ("account.orderUpdate", "account.positionUpdate")
            stream = stream_for(
                url,
                private_streams=private,
                public_streams=("bookTicker.SOL_USDC",),
                clock=AT_TS,
            )
            await nursery.start(stream.run, inbox)
            assert stream.connects == 1

            signed = await venue.frame_from(0)
            timestamp, signature = verify_subscribe(signed, private)
            assert (timestamp, signed["signature"][3]) == (str(TS), "5000")
            assert signature == SUBSCRIBE_SIGNATURE_AT_TS

            public = await venue.frame_from(0)
            assert public == {"method": "SUBSCRIBE", "params": ["bookTicker.SOL_USDC"]}
            nursery.cancel_scope.cancel()


async def test_window_is_signed_as_configured() -> None:
    venue = Venue(hold_open)
    inbox = Inbox()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await start_venue(nursery, venue)
            stream = stream_for(url, window_ms=60000)
            await nursery.start(stream.run, inbox)
            frame = await venue.frame_from(0)
            verify_subscribe(frame, ["account.orderUpdate"])
            assert frame["signature"][3] == "60000"
            nursery.cancel_scope.cancel()


# --- frames to events ----------------------------------------------------------------------


async def test_order_fill_frame_becomes_an_order_filled_event() -> None:
    text = data_frame(FILL, "account.orderUpdate.ETH_USDC")
    venue = Venue(send_then_hold(text))
    inbox = Inbox()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await start_venue(nursery, venue)
            stream = stream_for(url)
            await nursery.start(stream.run, inbox)
            event = await inbox.receive()
            nursery.cancel_scope.cancel()
    assert event == OrderFilled(
        source=Source.WS,
        recv_time_us=RECV_US,
        venue_time_us=1754939110174705,
        raw=text,
        symbol="ETH_USDC",
        venue_id="5406825793",
        trade_id=2888471,
        side=Side.BID,
        quantity=Decimal("0.0010"),
        price=Decimal("4299.16"),
        fee=Decimal("0.000001"),
        fee_asset="ETH",
        maker=False,
        cum_quantity=Decimal("0.0010"),
        cum_quote=Decimal("4.299160"),
        status=VenueStatus.FILLED,
        order_type=OrderType.MARKET,
        order_quantity=Decimal("0.0010"),
        order_price=None,
    )
    assert stream.frames == 1


async def test_bad_frames_become_message_not_understood_and_the_stream_goes_on() -> None:
    error = '{"id":null,"error":{"code":4006,"message":"Invalid stream"}}'
    fill = data_frame(FILL)
    venue = Venue(send_then_hold("{not json", b"\x00\xffbinary", error, fill))
    inbox = Inbox()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await start_venue(nursery, venue)
            stream = stream_for(url)
            await nursery.start(stream.run, inbox)
            events = [await inbox.receive() for _ in range(4)]
            nursery.cancel_scope.cancel()

    garbled, binary, refused, filled = events
    assert isinstance(garbled, MessageNotUnderstood)
    assert garbled.raw == "{not json"
    assert garbled.source is Source.WS
    assert garbled.recv_time_us == RECV_US
    assert isinstance(binary, MessageNotUnderstood)
    assert "binary" in binary.reason
    assert isinstance(refused, MessageNotUnderstood)
    assert refused.raw == error
    assert "4006" in refused.reason
    assert "Invalid stream" in refused.reason
    assert isinstance(filled, OrderFilled)
    assert filled.trade_id == 2888471
    # The same connection carried all four.
    assert (stream.connects, stream.reconnects, stream.frames) == (1, 0, 4)


# --- readiness and on_connect ------------------------------------------------------------


async def test_frames_keep_flowing_while_on_connect_runs() -> None:
    venue = Venue(send_then_hold(data_frame(ACCEPTED), data_frame(FILL)))
    inbox = Inbox()
    got_fill = trio.Event()
    finished: list[bool] = []

    async def reconcile() -> None:
        # Only completes once the engine has seen frames read during this call.
        await got_fill.wait()
        finished.append(True)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await start_venue(nursery, venue)
            stream = stream_for(url)
            await nursery.start(partial(stream.run, inbox, on_connect=reconcile))
            # Ready as soon as subscribed: on_connect has not finished yet.
            assert finished == []
            first = await inbox.receive()
            second = await inbox.receive()
            got_fill.set()
            await trio.testing.wait_all_tasks_blocked()
            assert finished == [True]
            nursery.cancel_scope.cancel()
    assert isinstance(first, OrderAccepted)
    assert isinstance(second, OrderFilled)


# --- reconnecting --------------------------------------------------------------------------


async def test_dropped_connection_resubscribes_with_a_fresh_signature() -> None:
    venue = Venue(send_then_drop(data_frame(ACCEPTED)), hold_open)
    inbox = Inbox()
    calls_send, calls = trio.open_memory_channel[int](10)

    async def on_connect() -> None:
        calls_send.send_nowait(stream.connects)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await start_venue(nursery, venue)
            # A stalled wall clock: a fresh signature must not depend on time moving.
            stream = stream_for(url, clock=AT_TS, backoff_initial=0.01)
            await nursery.start(partial(stream.run, inbox, on_connect=on_connect))
            first = await venue.frame_from(0)
            accepted = await inbox.receive()
            second = await venue.frame_from(1)
            assert [await calls.receive(), await calls.receive()] == [1, 2]
            nursery.cancel_scope.cancel()

    assert isinstance(accepted, OrderAccepted)
    ts1, sig1 = verify_subscribe(first, ["account.orderUpdate"])
    ts2, sig2 = verify_subscribe(second, ["account.orderUpdate"])
    assert int(ts2) > int(ts1)
    assert sig2 != sig1
    assert (stream.connects, stream.reconnects) == (2, 1)
    assert stream.last_error is not None


async def test_timestamps_follow_the_wall_clock_when_it_moves() -> None:
    venue = Venue(send_then_drop(), hold_open)
    inbox = Inbox()
    ticks = itertools.chain([TS], itertools.repeat(TS + 2500))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await start_venue(nursery, venue)
            stream = stream_for(
                url,
                clock=VenueClock(local_ns=lambda: next(ticks) * 1_000_000),
                backoff_initial=0.01,
            )
            await nursery.start(stream.run, inbox)
            first = await venue.frame_from(0)
            second = await venue.frame_from(1)
            nursery.cancel_scope.cancel()
    assert verify_subscribe(first, ["account.orderUpdate"])[0] == str(TS)
    assert verify_subscribe(second, ["account.orderUpdate"])[0] == str(TS + 2500)


def _bounds(initial: float, maximum: float, count: int) -> list[tuple[float, float]]:
    """Allowed (low, high) wait before each retry: half to all of the doubling backoff."""
    bounds = []
    backoff = initial
    for _ in range(count):
        bounds.append((backoff / 2, backoff))
        backoff = min(backoff * 2, maximum)
    return bounds


@pytest.mark.parametrize(
    "refusal",
    [pytest.param(reject, marks=upstream_handshake_leak), accept_then_close],
    ids=["reject", "close"],
)
async def test_backoff_grows_and_stays_within_backoff_max(
    autojump_clock: trio.testing.MockClock,
    refusal: Script,
) -> None:
    venue = Venue(refusal)
    inbox = Inbox()
    eps = 1e-6
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            url = await start_venue(nursery, venue)
            stream = stream_for(url, backoff_initial=1.0, backoff_max=8.0, rng=random.Random(3))
            nursery.start_soon(stream.run, inbox)
            await venue.connections_reached(10)
            # Let the tenth attempt finish: a client cancelled mid-handshake leaks its
            # socket inside trio-websocket (see upstream_handshake_leak).
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()

    times = venue.connected_at[:10]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for gap, (low, high) in zip(gaps, _bounds(1.0, 8.0, len(gaps)), strict=True):
        assert low - eps <= gap <= high + eps
    assert max(gaps) <= 8.0 + eps
    assert gaps[-1] >= 4.0 - eps  # it did grow to the cap
    assert stream.last_error is not None


@upstream_handshake_leak
async def test_not_ready_until_a_connection_subscribes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    venue = Venue(reject, reject, reject, hold_open)
    inbox = Inbox()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            url = await start_venue(nursery, venue)
            stream = stream_for(url, backoff_initial=1.0)
            await nursery.start(stream.run, inbox)
            assert len(venue.connected_at) == 4
            assert (stream.connects, stream.reconnects) == (1, 3)
            verify_subscribe(await venue.frame_from(3), ["account.orderUpdate"])
            nursery.cancel_scope.cancel()


@upstream_handshake_leak
async def test_backoff_resets_after_a_healthy_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def healthy_then_drop(venue: Venue, request: WebSocketRequest, index: int) -> None:
        ws = await venue.accept(request, index)
        with trio.move_on_after(12):  # two heartbeats answered
            await venue.keep_reading(ws, index)
        await venue.close(ws, index)

    venue = Venue(reject, reject, reject, reject, healthy_then_drop, hold_open)
    inbox = Inbox()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            url = await start_venue(nursery, venue)
            stream = stream_for(url, backoff_initial=1.0, backoff_max=30.0, heartbeat_interval=5.0)
            await nursery.start(stream.run, inbox)
            await venue.frame_from(5)
            nursery.cancel_scope.cancel()

    times = venue.connected_at
    assert times[4] - times[3] >= 4.0  # grown to 8 by the fourth retry
    gap_after_healthy = times[5] - venue.closed_at[4]
    assert 0.5 <= gap_after_healthy <= 1.0
    assert stream.connects == 2


@pytest.mark.parametrize(
    "failure", ["refused", pytest.param("tcp-close", marks=upstream_handshake_leak)]
)
async def test_keeps_retrying_when_no_websocket_answers(
    autojump_clock: trio.testing.MockClock, failure: str
) -> None:
    inbox = Inbox()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            if failure == "refused":
                # A port nobody listens on: bind, note it, close.
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", 0))
                    port = sock.getsockname()[1]
            else:

                async def slam(stream: trio.SocketStream) -> None:
                    await stream.aclose()

                listeners = await nursery.start(partial(trio.serve_tcp, slam, 0, host="127.0.0.1"))
                port = listeners[0].socket.getsockname()[1]
            stream = stream_for(
                f"ws://127.0.0.1:{port}",
                backoff_initial=1.0,
                backoff_max=4.0,
                heartbeat_timeout=2.0,
            )
            nursery.start_soon(stream.run, inbox)
            await trio.sleep(100)
            nursery.cancel_scope.cancel()
    # Each attempt fails at once (refused) or within the 2 s handshake bound (closed
    # socket), then waits 2..4 s once the backoff has reached the cap.
    assert stream.connects == 0
    assert 100 / (4 + 2) - 1 <= stream.reconnects <= 100 / 2 + 4
    assert stream.last_error is not None
    assert 2.0 <= stream.last_delay <= 4.0


# --- heartbeat -----------------------------------------------------------------------------


async def test_a_server_that_stops_answering_pings_is_replaced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    venue = Venue(never_read, hold_open)
    inbox = Inbox()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            url = await start_venue(nursery, venue, message_queue_size=0)
            stream = stream_for(url, heartbeat_interval=5.0, heartbeat_timeout=2.0)
            await nursery.start(stream.run, inbox)
            start = trio.current_time()
            verify_subscribe(await venue.frame_from(1), ["account.orderUpdate"])
            # Found dead after one interval and one timeout, then a short backoff.
            assert trio.current_time() - start <= 5.0 + 2.0 + 0.5 + 1e-6
            nursery.cancel_scope.cancel()
    assert (stream.connects, stream.reconnects) == (2, 1)
    assert stream.last_error is not None
    assert "pong" in stream.last_error


async def test_a_healthy_connection_survives_many_heartbeats(
    autojump_clock: trio.testing.MockClock,
) -> None:
    venue = Venue(hold_open)
    inbox = Inbox()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            url = await start_venue(nursery, venue)
            stream = stream_for(url, heartbeat_interval=5.0, heartbeat_timeout=2.0)
            await nursery.start(stream.run, inbox)
            await trio.sleep(200)
            assert stream.connected
            nursery.cancel_scope.cancel()
    assert (stream.connects, stream.reconnects, len(venue.connected_at)) == (1, 0, 1)


# --- shutting down -------------------------------------------------------------------------


async def test_a_recording_that_fails_stops_the_stream() -> None:
    # The engine could not write its log (a full disk): the stream must not read on and drop
    # what it cannot record; the failure reaches the caller (the session, then the program).
    venue = Venue(send_then_hold(data_frame(FILL), data_frame(ACCEPTED)))
    recorded: list[Event] = []

    def record(event: Event) -> None:
        recorded.append(event)
        raise OSError(28, "No space left on device")

    failed: list[OSError] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await start_venue(nursery, venue)
            stream = stream_for(url)
            try:
                await stream.run(record)
            except* OSError as group:
                failed.extend(e for e in group.exceptions if isinstance(e, OSError))
            nursery.cancel_scope.cancel()
    assert [e.errno for e in failed] == [28]
    assert len(recorded) == 1 and stream.reconnects == 0


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "kwargs"),
    [
        (None, {}),  # the default private stream needs keys
        (CREDENTIALS, {"private_streams": (), "public_streams": ()}),
        (CREDENTIALS, {"private_streams": ("bookTicker.SOL_USDC",)}),
        (CREDENTIALS, {"public_streams": ("account.orderUpdate",)}),
        (CREDENTIALS, {"window_ms": 60001}),
        (CREDENTIALS, {"window_ms": 0}),
        (CREDENTIALS, {"heartbeat_interval": 0.0}),
        (CREDENTIALS, {"heartbeat_timeout": -1.0}),
        (CREDENTIALS, {"backoff_initial": 0.0}),
        (CREDENTIALS, {"backoff_initial": 5.0, "backoff_max": 1.0}),
    ],
)
def test_bad_configuration_is_refused_at_once(
    credentials: Credentials | None, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        BackpackStream("ws://127.0.0.1:1", credentials, **kwargs)


def test_public_only_stream_needs_no_credentials() -> None:
    stream = BackpackStream(
        "ws://127.0.0.1:1", None, private_streams=(), public_streams=("trade.SOL_USDC",)
    )
    assert (stream.connects, stream.reconnects, stream.frames) == (0, 0, 0)
