"""The shipper: follows one account's log file and publishes each event to a JetStream subject.

Each event line goes out as it is in the file (without its newline), to
`oms.<venue>.<account>.events` by default, with two headers: `Nats-Msg-Id`
(`<venue>:<account>:<seq>`) and `Nats-Expected-Last-Subject-Sequence` (the stream sequence of
the event before it on that subject, 0 for the first). So the stream refuses an event that
does not follow the last one it holds: a gap, a repeat and a second writer are refused, not
merged. One event is in flight at a time: the fence names the previous event's stream
sequence, which is known only once it is acknowledged.

Where it starts: at every (re)connection the shipper asks the stream for the last event on
the subject, checks that the file holds the very same line at that seq (or stops with
`ShipConflict`), and goes on after it. So a server restart, a dropped connection, a lost
acknowledgement or a restart of the shipper all resume from what the stream acknowledged,
and nothing is stored twice.

It never slows the engine's writer: it reads the file, not the engine, and the engine only
wakes it (`Shipper.follow_engine`: a listener that sets a flag). While NATS is away, events
wait in the file, and the shipper catches up when it is back.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Final

import attrs
import trio

from oms.core.errors import ConfigurationError, ExternalError
from oms.core.serialization import LogFormatError, decode_header, line_decoder
from oms.engine import Engine
from oms.log import LogReadError, Seconds
from oms.ship.client import NatsAddress, NatsConnection, connect
from oms.ship.jetstream import (
    WRONG_LAST_SEQUENCE,
    JetStreamError,
    Stored,
    ensure_stream,
    last_on_subject,
    publish,
)

__all__ = [
    "DEFAULT_STREAM",
    "DEFAULT_SUBJECT",
    "FORMAT_HEADER",
    "ShipConfig",
    "ShipConflict",
    "Shipper",
    "ShipperStatistics",
    "event_of",
]

DEFAULT_SUBJECT: Final = "oms.{venue}.{account}.events"
DEFAULT_STREAM: Final = "OMS"
# The log's line format (its header's version), so that a reader decodes the line as written.
FORMAT_HEADER: Final = "Oms-Log-Format"
_KEEPALIVE: Final[Seconds] = 30.0
_RECENT_LINES: Final = 1024

_log = logging.getLogger("oms.ship")


class ShipConflict(ExternalError):
    """The stream holds another history for this account than the file: a second writer,
    or a log that is not the one shipped before. The shipper stops; nothing is merged."""


def _token(kind: str, value: str) -> str:
    if not value or any(c in value for c in ".*> \t\r\n"):
        raise ConfigurationError(
            f"{kind} {value!r} cannot be part of a NATS subject (no '.', '*', '>' or spaces)"
        )
    return value


@attrs.frozen(kw_only=True)
class ShipConfig:
    """Where and how one account's log is shipped.

    `subject` is a template with `{venue}` and `{account}`; `stream` the JetStream stream
    that holds it, created if missing with `replicas` copies and subjects the template with
    both fields as `*`. `request_timeout` bounds each round trip; after a failure the
    shipper waits from `retry_min` doubling up to `retry_max` before it connects again.
    `poll` is how often it looks at the file when nothing wakes it.
    """

    url: str = attrs.field(repr=False)  # may hold a password
    venue: str = attrs.field(validator=lambda _i, _a, v: _token("venue", v))
    account: str = attrs.field(validator=lambda _i, _a, v: _token("account", v))
    subject_template: str = DEFAULT_SUBJECT
    stream: str = attrs.field(
        default=DEFAULT_STREAM, validator=lambda _i, _a, v: _token("stream", v)
    )
    replicas: int = attrs.field(default=1, validator=attrs.validators.in_((1, 3, 5)))
    request_timeout: Seconds = 5.0
    retry_min: Seconds = 0.05
    retry_max: Seconds = 2.0
    poll: Seconds = 0.2

    def __attrs_post_init__(self) -> None:
        NatsAddress.parse(self.url)  # a bad address is the caller's mistake: say it now
        for template in (self.subject, self.stream_subject):
            if any(not part or " " in part for part in template.split(".")):
                raise ConfigurationError(f"not a NATS subject: {template!r}")

    @property
    def address(self) -> NatsAddress:
        return NatsAddress.parse(self.url)

    @property
    def subject(self) -> str:
        try:
            return self.subject_template.format(venue=self.venue, account=self.account)
        except (KeyError, IndexError, ValueError):
            raise ConfigurationError(
                f"a subject template may name {{venue}} and {{account}} only: "
                f"{self.subject_template!r}"
            ) from None

    @property
    def stream_subject(self) -> str:
        """What the stream is created to hold: every venue's and account's subject."""
        return self.subject_template.format(venue="*", account="*")

    def msg_id(self, seq: int) -> str:
        return f"{self.venue}:{self.account}:{seq}"


@attrs.frozen(kw_only=True)
class ShipperStatistics:
    """A snapshot of a shipper's progress. `acked_seq`: the last event the stream is known to
    hold; `published`: events stored by this shipper; `connections`: connections opened;
    `failures`: connections lost or refused; `stopped`: why it stopped for good (a conflict
    or a bad log), else None."""

    acked_seq: int
    published: int
    connections: int
    failures: int
    last_error: str | None
    stopped: str | None


def event_of(stored: Stored) -> int:
    """The seq of the event a stored message holds (its line decoded and checked)."""
    try:
        version = int(stored.headers.get(FORMAT_HEADER, "2"))
        seq, _event = line_decoder(version)(stored.data)
    except (LogFormatError, ValueError) as exc:
        raise ShipConflict(
            f"stream message {stored.seq} on {stored.subject} is not an oms event: {exc}"
        ) from None
    return seq


class _Lines:
    """Complete event lines read from a log file, from a position that can be moved back.

    Only lines ending in a newline are read (a line being written is left for later); each
    is decoded (its checksum checked) and must carry the next seq, or `LogReadError`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seq = 0  # the last event read
        self.version = 2
        self._handle: BinaryIO | None = None
        self._stale = False
        self._offset = 0
        self._line_number = 1
        self._header_end = 0
        self._recent: OrderedDict[int, int] = OrderedDict()  # seq -> where its line starts
        self._decode = line_decoder(2)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _open(self) -> BinaryIO | None:
        if self._handle is not None:
            return self._handle
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return None
        header = handle.readline()
        if not header.endswith(b"\n"):
            handle.close()  # not there yet (or being created)
            return None
        try:
            self.version = decode_header(header)
        except LogFormatError as exc:
            handle.close()
            raise LogReadError(self.path, 1, str(exc)) from None
        self._decode = line_decoder(self.version)
        self._handle = handle
        self._header_end = self._offset = len(header)
        return handle

    def next(self) -> tuple[int, bytes] | None:
        """The next complete event line (its seq, the line without the newline), or None."""
        handle = self._open()
        if handle is None:
            return None
        if self._stale:
            # The last read met the unwritten end of the file (a mapped log's zero tail, a
            # line being written): seeking to the end drops what the reader buffered, so
            # that the bytes are read again as they are now.
            handle.seek(0, os.SEEK_END)
            self._stale = False
        handle.seek(self._offset)
        line = handle.readline()
        if not line.endswith(b"\n") or b"\0" in line:
            # Not written yet. No complete line holds a zero byte (JSON escapes it); one that
            # seems to is a line the writer is still copying into its mapping, read early.
            self._stale = True
            return None
        try:
            seq, _event = self._decode(line)
        except LogFormatError as exc:
            raise LogReadError(self.path, self._line_number + 1, str(exc)) from None
        if seq != self.seq + 1:
            raise LogReadError(
                self.path, self._line_number + 1, f"expected seq {self.seq + 1}, found {seq}"
            )
        self._recent[seq] = self._offset
        if len(self._recent) > _RECENT_LINES:
            self._recent.popitem(last=False)
        self._offset += len(line)
        self._line_number += 1
        self.seq = seq
        return seq, line[:-1]

    def rewind(self, seq: int) -> None:
        """Go back to just after event `seq` (at or before the last read)."""
        if seq == self.seq:
            return
        start = self._recent.get(seq + 1)
        if start is not None:
            self._offset, self.seq, self._line_number = start, seq, seq + 1
            return
        self.close()  # from the start of the file
        self.seq, self._line_number, self._recent = 0, 1, OrderedDict()
        self._offset = self._header_end

    def line_at(self, seq: int) -> bytes | None:
        """The line of event `seq` (checked like any other), positioned just after it; None
        if the file has no such line (yet). The lines before it are only counted, not
        decoded: this is where a restarted shipper finds its place in a long log."""
        self.rewind(min(self.seq, seq - 1))
        handle = self._open()
        if handle is None:
            return None
        handle.seek(0, os.SEEK_END)  # drop what was buffered: read the file as it is now
        handle.seek(self._offset)
        recent = self._recent
        while self.seq < seq - 1:
            line = handle.readline()
            if not line.endswith(b"\n") or b"\0" in line:
                self._stale = True
                return None
            self.seq += 1
            recent[self.seq] = self._offset
            if len(recent) > _RECENT_LINES:
                recent.popitem(last=False)
            self._offset += len(line)
            self._line_number += 1
        item = self.next()
        return None if item is None else item[1]


@attrs.define(eq=False)
class Shipper:
    """Ships the log at `path` per `config` (see the module's docstring). Run `run`; for a
    live engine call `follow_engine` first. `limit`, if given, is the last seq it may ship
    (the engine's synced seq: never an event the disk might not keep)."""

    path: Path = attrs.field(converter=Path)
    config: ShipConfig
    limit: Callable[[], int] | None = None
    _acked_seq: int = 0
    _fence: int = 0  # the stream sequence of event `_acked_seq` (0: none on the subject)
    _published: int = 0
    _connections: int = 0
    _failures: int = 0
    _last_error: str | None = None
    _stopped: str | None = None
    _wake: trio.Event = attrs.field(factory=trio.Event)
    _heard: float = 0.0  # when the server last answered (trio's clock)
    _held_back: Callable[[], bool] | None = None  # lines written but not yet synced
    _lines: _Lines = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._lines = _Lines(self.path)

    def statistics(self) -> ShipperStatistics:
        return ShipperStatistics(
            acked_seq=self._acked_seq,
            published=self._published,
            connections=self._connections,
            failures=self._failures,
            last_error=self._last_error,
            stopped=self._stopped,
        )

    def wake(self) -> None:
        """New lines are in the file: look now rather than at the next poll."""
        self._wake.set()

    def follow_engine(self, engine: Engine) -> Callable[[], None]:
        """Be woken by `engine` after each event it records, and ship only what its log has
        synced. Returns the unsubscribe. The listener only sets a flag: the writer never
        waits for NATS, whatever NATS does."""
        log = engine.log
        if log is None:
            raise ConfigurationError("the engine has no log to ship")
        if Path(log.path).resolve() != self.path.resolve():
            raise ConfigurationError(f"the engine records to {log.path}, not {self.path}")
        self.limit = lambda: log.synced_seq
        self._held_back = lambda: log.unsynced
        return engine.subscribe(lambda _event, _state: self._wake.set())

    async def run(
        self,
        *,
        follow: bool = True,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Ship until cancelled (`follow`), or until every complete line of the file is in
        the stream (not `follow`: the catch-up command). The server's and the network's
        failures are retried for ever (the caller bounds the time); `ShipConflict` and
        `LogReadError` (or an `OSError` reading the file) stop it, raised here."""
        task_status.started()
        delay = self.config.retry_min
        try:
            while True:
                try:
                    done = await self._session(follow)
                except (ShipConflict, LogReadError):
                    raise
                except (ExternalError, trio.TooSlowError) as exc:
                    # The server's or the network's: a lost connection, a refusal, something
                    # that is not NATS, no answer in time. Connect again and resynchronise.
                    self._failures += 1
                    message = str(exc) or "no answer in time"
                    if self._last_error is None:
                        _log.warning("shipping %s: %s; retrying", self.path, message)
                    self._last_error = message
                    await trio.sleep(delay)
                    delay = min(delay * 2, self.config.retry_max)
                    continue
                if done:
                    return
                delay = self.config.retry_min
        except (ShipConflict, LogReadError, OSError) as exc:
            self._stopped = str(exc)
            raise
        finally:
            self._lines.close()

    async def run_beside(
        self, engine: Engine, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """`follow_engine`, then ship until cancelled. A conflict or a bad log stops the
        shipping, logged as an error on `oms.ship` (and in `statistics().stopped`), never
        the session: the engine keeps trading, the file keeps every event."""
        unsubscribe = self.follow_engine(engine)
        try:
            await self.run(follow=True, task_status=task_status)
        except (ShipConflict, LogReadError, OSError) as exc:
            _log.error("shipping %s stopped: %s", self.path, exc)
        except Exception as exc:
            # A bug of ours must not end the trading session either (as with listeners).
            self._stopped = f"{type(exc).__name__}: {exc}"
            _log.error("shipping %s stopped", self.path, exc_info=exc)
        finally:
            unsubscribe()

    async def _session(self, follow: bool) -> bool:
        """One connection: resynchronise, then ship. True when caught up (not `follow`)."""
        config = self.config
        with trio.fail_after(config.request_timeout):
            connection = await connect(config.address, name=f"oms-ship {config.msg_id(0)}")
        try:
            self._connections += 1
            with trio.fail_after(config.request_timeout):
                await ensure_stream(
                    connection,
                    config.stream,
                    subjects=[config.stream_subject],
                    replicas=config.replicas,
                )
            await self._resync(connection)
            self._heard = trio.current_time()
            if self._last_error is not None:
                _log.info("shipping %s: connected again at seq %d", self.path, self._acked_seq)
                self._last_error = None
            return await self._pump(connection, follow)
        finally:
            await connection.aclose()

    async def _resync(self, connection: NatsConnection) -> None:
        """Start after the last event the stream holds, once the file is checked to hold it
        too, byte for byte."""
        config = self.config
        with trio.fail_after(config.request_timeout):
            last = await last_on_subject(connection, config.stream, config.subject)
        if last is None:
            self._lines.rewind(0)
            self._acked_seq, self._fence = 0, 0
            return
        seq = event_of(last)
        # Finding the line may read much of a long file (a shipper started afresh): in a
        # worker thread, so that the engine's loop goes on meanwhile, and with no timeout.
        mine = await trio.to_thread.run_sync(self._lines.line_at, seq)
        if mine != last.data:
            where = "has no event" if mine is None else "holds another event"
            raise ShipConflict(
                f"{config.subject} in stream {config.stream} holds event {seq} "
                f"(stream seq {last.seq}), and {self.path} {where} there: another "
                "writer ships to this account, or this is not the log shipped before"
            )
        self._acked_seq, self._fence = seq, last.seq

    async def _pump(self, connection: NatsConnection, follow: bool) -> bool:
        config = self.config
        lines = self._lines
        while True:
            limit = self.limit
            item = None if limit is not None and lines.seq >= limit() else lines.next()
            if item is None:
                if not follow:
                    return True
                await self._idle(connection)
                continue
            seq, line = item
            headers = {
                "Nats-Msg-Id": config.msg_id(seq),
                "Nats-Expected-Last-Subject-Sequence": str(self._fence),
                FORMAT_HEADER: str(lines.version),
            }
            try:
                with trio.fail_after(config.request_timeout):
                    ack = await publish(connection, config.subject, line, headers)
            except JetStreamError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
                # The stream moved on without us (a lost acknowledgement, or another shipper
                # of this account): see what it holds now.
                _log.info("shipping %s: %s at seq %d; resynchronising", self.path, exc, seq)
                await self._resync(connection)
                continue
            if ack.duplicate:
                raise ShipConflict(
                    f"{config.subject}: the stream already holds message id {config.msg_id(seq)} "
                    f"(stream seq {ack.seq}) though the subject's last event is "
                    f"{self._acked_seq}: the stream was changed behind the shipper"
                )
            self._acked_seq, self._fence = seq, ack.seq
            self._published += 1
            self._heard = trio.current_time()

    async def _idle(self, connection: NatsConnection) -> None:
        """Wait for new lines: woken by the engine, or the next poll (sooner while the log's
        sync holds lines back). A round trip every half minute of quiet finds a dead
        connection now, not at the next event."""
        # Events the group commit has not synced yet are not woken for again: look soon.
        limited = self._held_back is not None and self._held_back()
        with trio.move_on_after(min(self.config.poll, 0.01) if limited else self.config.poll):
            await self._wake.wait()
        self._wake = trio.Event()
        if trio.current_time() - self._heard >= _KEEPALIVE:
            with trio.fail_after(self.config.request_timeout):
                await connection.ping()
            self._heard = trio.current_time()
