"""Backpack WebSocket client: the thin trio shell around `codec.decode_ws_frame`.

`BackpackStream.run` keeps one connection open for as long as it runs. On every connection it
sends a freshly signed SUBSCRIBE for the private (`account.*`) streams (fact sheet §1.7) and an
unsigned one for any public streams, then turns every frame it receives into events and hands
each to `record` (the session passes `Engine.record`: synchronous, so a frame's events are
logged and applied before the next frame is read, through the same entry as every other
producer). It never stops on the venue's account: a lost connection (closed, refused,
an OS error, no pong to our ping) is closed and reopened after an exponential backoff with
jitter; a frame it cannot understand becomes a `MessageNotUnderstood` event.

Theory of operation, per connection:

- connect, subscribe (a new timestamp and signature every time; a signature is never reused,
  even if the wall clock stalls or steps back);
- start the reader and the heartbeat, then run the caller's `on_connect` while they run, so a
  reconciliation pass started there cannot make us miss a frame;
- the first task that sees the connection die records why and cancels the others.

Backpack sends no documented subscribe acknowledgement, so "subscribed" means "the SUBSCRIBE
frames were sent". A connection counts as healthy once a ping of ours has been answered after
subscribing; only a healthy connection resets the backoff, so a venue that accepts and then
drops us at once (for example on a rejected signature) is retried ever more slowly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import trio
import trio_websocket

from oms.core.errors import ConfigurationError
from oms.core.events import Event, MessageNotUnderstood
from oms.core.values import Source
from oms_backpack import codec
from oms_backpack.clock import VenueClock
from oms_backpack.signing import MAX_WINDOW_MS, Credentials

__all__ = ["PRIVATE_PREFIX", "BackpackStream"]

PRIVATE_PREFIX: Final = "account."


class _Connection:
    """What one connection's tasks share: how it ended, and whether it proved healthy."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.scope = trio.CancelScope()
        self.lost: str | None = None
        self.dead = False  # lost to a missing pong: don't wait for a closing handshake
        self.healthy = False
        self.data_frames = 0  # frames that carried something other than a venue error

    def lose(self, reason: str, *, dead: bool = False) -> None:
        if self.lost is None:
            self.lost = reason
            self.dead = dead
        self.scope.cancel()


class BackpackStream:
    """A self-healing subscription to Backpack's WebSocket streams.

    Counters for tests and the status view: `connects` (connections that reached the
    subscribed state), `reconnects` (waits before a new attempt after a failed or lost
    connection), `frames` (frames received, of any kind). `connected` says whether a
    subscribed connection is up now; `last_error` says why the last connection ended or
    failed; `last_delay` is the most recent wait before reconnecting, in seconds.

    Timing: every `heartbeat_interval` seconds we ping; a pong must come back within
    `heartbeat_timeout`. The same timeout bounds the opening and closing handshakes. The
    wait before reconnecting is drawn between half and all of the current backoff, which
    starts at `backoff_initial`, doubles after each failure and never exceeds `backoff_max`.
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials | None,
        *,
        private_streams: Sequence[str] = ("account.orderUpdate",),
        public_streams: Sequence[str] = (),
        window_ms: int = 5000,
        heartbeat_interval: float = 30.0,
        heartbeat_timeout: float = 15.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        rng: random.Random | None = None,
        clock: VenueClock | None = None,
    ) -> None:
        if isinstance(private_streams, str) or isinstance(public_streams, str):
            raise TypeError("streams are given as a sequence of names, not one string")
        private = tuple(private_streams)
        public = tuple(public_streams)
        if not private and not public:
            raise ConfigurationError("nothing to subscribe to: no private and no public streams")
        for name in private:
            if not name.startswith(PRIVATE_PREFIX):
                raise ConfigurationError(
                    f"private stream {name!r} does not start with {PRIVATE_PREFIX!r}"
                )
        for name in public:
            if name.startswith(PRIVATE_PREFIX):
                raise ConfigurationError(f"stream {name!r} is private: list it in private_streams")
        if private and credentials is None:
            raise ConfigurationError(f"private streams {list(private)} need credentials")
        if not 0 < window_ms <= MAX_WINDOW_MS:
            raise ConfigurationError(f"window_ms must be in 1..{MAX_WINDOW_MS}, not {window_ms}")
        if not heartbeat_interval > 0 or not heartbeat_timeout > 0:
            raise ConfigurationError("heartbeat_interval and heartbeat_timeout must be positive")
        if not 0 < backoff_initial <= backoff_max:
            raise ConfigurationError(
                f"need 0 < backoff_initial <= backoff_max, got {backoff_initial}, {backoff_max}"
            )
        self._url = url
        self._credentials = credentials
        self._private = private
        self._public = public
        self._window_ms = window_ms
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._rng = rng if rng is not None else random.Random()
        # Subscriptions are signed in the venue's time; frames are stamped in ours.
        self.clock = clock if clock is not None else VenueClock()
        self._last_timestamp_ms = 0

        self.connects = 0
        self.reconnects = 0
        self.healthy_connections = 0  # connections whose ping was answered after subscribing
        self.frames = 0
        self.connected = False
        self.last_error: str | None = None
        self.last_delay = 0.0

    def __repr__(self) -> str:
        return (
            f"BackpackStream(url={self._url!r}, connects={self.connects}, "
            f"reconnects={self.reconnects}, frames={self.frames}, connected={self.connected})"
        )

    async def run(
        self,
        record: Callable[[Event], object],
        *,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        before_connect: Callable[[], Awaitable[None]] | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hand every event to `record` until cancelled, reconnecting whenever needed.

        Reports started (for `nursery.start`) once the first connection is subscribed.
        `on_connect` runs after every subscribe while frames are being read; if the
        connection drops meanwhile it is cancelled, and runs again on the next connection.
        An exception from `record` (the log cannot be written) or from `on_connect` is the
        caller's and propagates: the stream does not read on when it cannot record.
        `before_connect` runs before every reconnect (the session resyncs the clock the
        subscription is signed with).
        """
        backoff = self._backoff_initial
        started = False

        def subscribed() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        while True:
            if before_connect is not None and self.connects:
                await before_connect()
            conn = await self._connect_once(record, on_connect, subscribed)
            if conn is not None:
                if conn.lost is not None:
                    self.last_error = conn.lost
                if conn.healthy:
                    backoff = self._backoff_initial
            self.last_delay = self._rng.uniform(backoff / 2, backoff)
            backoff = min(backoff * 2, self._backoff_max)
            self.reconnects += 1
            await trio.sleep(self.last_delay)

    async def _connect_once(
        self,
        record: Callable[[Event], object],
        on_connect: Callable[[], Awaitable[None]] | None,
        subscribed: Callable[[], None],
    ) -> _Connection | None:
        """One connection from opening to loss; None if it never opened."""
        conn: _Connection | None = None
        try:
            async with trio_websocket.open_websocket_url(
                self._url,
                connect_timeout=self._heartbeat_timeout,
                disconnect_timeout=self._heartbeat_timeout,
            ) as ws:
                conn = _Connection(ws)
                await self._subscribe(ws)
                self.connects += 1
                self.connected = True
                subscribed()
                try:
                    await self._serve(conn, record, on_connect)
                finally:
                    self.connected = False
                if conn.dead:
                    await self._abort(conn, record)
        except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
            self.last_error = _describe(exc)
        except OSError as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
        finally:
            if conn is not None:
                await _close_transport(conn.ws)
        return conn

    def _next_timestamp_ms(self) -> int:
        # Strictly increasing, so that every SUBSCRIBE carries a new signature.
        timestamp = max(self.clock.venue_ms(), self._last_timestamp_ms + 1)
        self._last_timestamp_ms = timestamp
        return timestamp

    async def _subscribe(self, ws: trio_websocket.WebSocketConnection) -> None:
        if self._private:
            assert self._credentials is not None  # checked in __init__
            frame = self._credentials.subscribe_frame(
                self._private, self._next_timestamp_ms(), self._window_ms
            )
            await ws.send_message(json.dumps(frame, separators=(",", ":")))
        if self._public:
            frame = {"method": "SUBSCRIBE", "params": list(self._public)}
            await ws.send_message(json.dumps(frame, separators=(",", ":")))

    async def _serve(
        self,
        conn: _Connection,
        record: Callable[[Event], object],
        on_connect: Callable[[], Awaitable[None]] | None,
    ) -> None:
        with conn.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, conn, record)
                nursery.start_soon(self._heartbeat, conn)
                if on_connect is not None:
                    await on_connect()

    async def _read(self, conn: _Connection, record: Callable[[Event], object]) -> None:
        while True:
            try:
                message = await conn.ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                conn.lose(_describe(exc))
                return
            refusal = self._deliver(message, record)
            if refusal is None:
                conn.data_frames += 1
            elif conn.data_frames == 0:
                # An error before anything else arrived: the subscription was refused (an
                # expired signature after a clock jump, say). Reconnect, and sign afresh.
                conn.lose(f"the venue refused the subscription: {refusal}")
                return

    def _deliver(
        self, message: str | bytes, record: Callable[[Event], object]
    ) -> codec.VenueErrorFrame | None:
        """Record the events of one frame; returns the venue's error if it was an error frame.
        Synchronous: no other task records between two events of one frame."""
        recv_time_us = self.clock.local_us()
        self.frames += 1
        refusal: codec.VenueErrorFrame | None = None
        events: Sequence[Event]
        if isinstance(message, str):
            decoded = codec.decode_ws_frame(message, recv_time_us)
            events, refusal = decoded.events, decoded.venue_error
        else:
            events = (
                MessageNotUnderstood(
                    source=Source.WS,
                    recv_time_us=recv_time_us,
                    raw=message.decode("utf-8", errors="backslashreplace"),
                    reason="binary frame (the venue sends text)",
                ),
            )
        for event in events:
            record(event)
        return refusal

    async def _abort(self, conn: _Connection, record: Callable[[Event], object]) -> None:
        """Drop a connection whose peer stopped answering, without a closing handshake.

        Closing the socket wakes trio-websocket's reader unless it is parked on its full
        message queue, where it would never notice, so take what the queue holds until the
        reader reports the end (finite: the socket is closed). Those frames were received,
        so they are recorded (at once: recording does not wait).
        """
        await _close_transport(conn.ws)
        while True:
            try:
                message = await conn.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            # A venue error frame changes nothing now: the connection is already lost.
            self._deliver(message, record)

    async def _heartbeat(self, conn: _Connection) -> None:
        while True:
            await trio.sleep(self._heartbeat_interval)
            answered = False
            with trio.move_on_after(self._heartbeat_timeout):
                try:
                    await conn.ws.ping()
                except trio_websocket.ConnectionClosed as exc:
                    conn.lose(_describe(exc))
                    return
                answered = True
            if not answered:
                conn.lose(f"no pong within {self._heartbeat_timeout} s", dead=True)
                return
            if not conn.healthy:
                conn.healthy = True
                self.healthy_connections += 1


async def _close_transport(ws: trio_websocket.WebSocketConnection) -> None:
    """Close the connection's TCP (or TLS) stream at once, without any goodbye.

    Needed because trio-websocket (0.12) never closes a client's stream after a close the
    server started: its reader stops at the server's EOF and the socket is left to the
    garbage collector (a ResourceWarning, and a file descriptor held meanwhile). Closing a
    closed stream is harmless. A trio stream closes even when its `aclose` is cancelled,
    so this takes no time and is shielded from an outer cancellation.
    """
    stream = ws._stream  # no public handle on the transport
    with trio.move_on_after(0, shield=True):
        await stream.aclose()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio_websocket.ConnectionClosed):
        return f"connection closed: {exc.reason}"
    cause = exc.__cause__
    if cause is not None:
        return f"{type(exc).__name__}: {type(cause).__name__}: {cause}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
