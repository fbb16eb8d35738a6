"""The event log file: append with an fsync policy, read as a stream in constant memory.

Crash safety: each event is written as one line ending in a newline. A crash mid-write leaves
a last line without its newline (a torn line); on reading, a torn line that does not decode
is dropped and reported (`LogReader.torn`), every complete event before it kept. A torn line
that does decode (only its newline was lost) is kept. Anything wrong anywhere else is a
`LogReadError` naming file and line: the log is corrupt, and nothing guesses. Whatever the
bytes, reading raises nothing else, and its message is one printable line of bounded length.

While a log is open for appending with an fsync policy, its file is mapped into memory and
extended ahead of the writer (`EventLog`): a line is appended by copying it into the mapping,
which is the kernel's page cache of the file, so it survives a crash of the process as a
`write` would, without a system call per line. The file then ends in zero bytes beyond the last
line, up to `PREALLOCATE_BYTES`; closing cuts them off, and after a crash the next open does.
A reader takes a tail of zero bytes after the last complete line as the end of the log, not as
a torn line.
"""

from __future__ import annotations

import errno
import mmap
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import attrs

from oms.core.errors import ExternalError
from oms.core.events import Event
from oms.core.serialization import (
    FORMAT_VERSION,
    READABLE_VERSIONS,
    LineDecoder,
    LogFormatError,
    decode_header,
    encode_header,
    encode_line_into,
    line_decoder,
)

# A duration for the shell's timers (fsync delays, polling, the status view), as trio counts
# time. Never a price, quantity, fee or PnL: those are Decimal, and the pure core has no float.
Seconds = float

__all__ = [
    "PREALLOCATE_BYTES",
    "READ_BUFFER_BYTES",
    "EventLog",
    "Fsync",
    "LogMark",
    "LogReadError",
    "LogReader",
    "Seconds",
    "TornTail",
]

# `LogReader` reads a log through a buffer this large: an eighth of the system calls of the
# default 8 KiB when replaying (about 0.08 µs a line less on the bench session).
READ_BUFFER_BYTES = 1 << 16

# How far ahead of the writer a mapped log's file is extended (allocated on disk, so that a
# full disk is an error of the append that needs the space, never a fault writing to memory).
PREALLOCATE_BYTES = 4 << 20
_PAGE = mmap.ALLOCATIONGRANULARITY

# How a mapped log takes the pages it has filled out of its mapping before each group's fsync
# (`EventLog._release_written`). Linux only: there a shared file mapping keeps its data in the
# page cache through `MADV_DONTNEED`; other systems may drop it.
_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None) if sys.platform == "linux" else None
# While an fsync runs, the pages filled meanwhile leave the mapping every this many bytes
# (`EventLog._release_during_fsync`): 200,000 appends in one burst, 231,958 -> 252,267 events
# a second (docs/speed.md).
_RELEASE_STEP = 64 << 10
_NEVER = 1 << 62  # an offset no log reaches: nothing to release (no mapping, or refused)


# What `posix_fallocate` raises where a file system cannot allocate ahead.
_NO_ALLOCATE = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS})


def _padding(line: bytes) -> bool:
    """A mapped log's unused tail: zero bytes to the end of the file, no newline."""
    return line[:1] == b"\0" and line.count(0) == len(line)


def fsync_directory(directory: Path) -> None:
    """Make a new file's directory entry durable too (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_MAX_REASON = 300


def _ignore(event: Event) -> None:
    """A consumer of events that does nothing with them."""


def _one_line(text: str) -> str:
    """A reason as one printable line of bounded length: it may quote a damaged line."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


class LogReadError(ExternalError):
    """A log that cannot be read: `path:line: what is wrong` (the message one line). The
    input's fault, not the program's: an `oms.core.errors.ExternalError`."""

    def __init__(self, path: str | os.PathLike[str], line: int, message: str) -> None:
        message = _one_line(message)
        super().__init__(f"{os.fspath(path)}:{line}: {message}")
        self.path = os.fspath(path)
        self.line = line
        self.message = message


@attrs.frozen(kw_only=True)
class TornTail:
    """An incomplete last line, dropped: where it started and how many bytes it had."""

    line: int
    offset: int
    length: int
    reason: str


@attrs.frozen(kw_only=True)
class LogMark:
    """The end of event `seq` in a log: `offset` bytes into the file, just after `line`
    (that event's whole line, newline included), in a log of line format `version`. A
    snapshot names one; `LogReader` can start there, and checks first that the file still holds
    `line` there."""

    seq: int
    offset: int
    line: bytes
    version: int = FORMAT_VERSION


@attrs.frozen(kw_only=True)
class Fsync:
    """When appended events are forced to disk.

    `max_events=1` fsyncs every event. A group commit fsyncs once `max_events` are waiting
    or the oldest waiting event is `max_delay` seconds old (checked on append and by `poll`);
    until then each line is already with the OS, so a crash of the process loses nothing and
    a power loss at most the events of the last `max_delay` seconds (with `background`, plus
    those appended while the fsync in flight ran). `max_events=0` never
    fsyncs and leaves lines in this process's buffer until it fills or the log is closed:
    for tests, benchmarks and scratch files only.
    """

    max_events: int = 1
    max_delay: Seconds = 0.0
    background: bool = False

    @classmethod
    def every_event(cls) -> Fsync:
        return cls(max_events=1)

    @classmethod
    def group(
        cls, max_events: int = 4096, max_delay: Seconds = 0.05, *, background: bool = True
    ) -> Fsync:
        """A group commit. With `background` (the default) a thread of the log's own runs the
        fsyncs, so `append` never waits for the disk; a power loss can then also take the
        events appended while the last fsync ran. `background=False` fsyncs in `append`.

        `max_delay` is the bound that matters live (a trading session records hundreds of
        events a second, not thousands); `max_events` bounds a burst (a replay into a new
        log, a flood of reports): 4,096 events, about 2.8 MB of lines, a fsync each."""
        return cls(max_events=max_events, max_delay=max_delay, background=background)

    @classmethod
    def never(cls) -> Fsync:
        return cls(max_events=0)


class LogReader:
    """Iterate `(seq, event)` over a log file, streaming; checks seqs run 1, 2, 3, ...

    After iterating: `last_seq`, `end_offset` (bytes of valid content), `torn` (a dropped
    torn last line, or None), `has_header`, `last_line` (the last event line's bytes). A
    missing or empty file reads as empty.

    With `start` (a `LogMark`, from a snapshot), the header is read and checked as usual,
    then reading goes on just after event `start.seq`: the events up to it are not read
    again, and the first one yielded is seq `start.seq + 1`. The file must still hold
    `start.line` right before `start.offset`, at the start of a line; if it does not (or the
    file ends before), iterating raises `ValueError` before yielding anything, so that the
    caller can read the whole log instead. Everything after the mark is read exactly as in a
    full read (line numbers, torn last line, `end_offset` in the whole file).

    With `fold_only`, the usual reports come as the fold-only classes of
    `oms.core.serialization.FOLD_ONLY` (their `raw` undecoded): for folding with
    `ReplayFold` only, which is all that is cheaper for it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        start: LogMark | None = None,
        fold_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.start = start
        self.fold_only = fold_only
        self.last_seq = 0
        self.end_offset = 0
        self.torn: TornTail | None = None
        self.has_header = False
        self.missing_newline = False
        self.version = FORMAT_VERSION  # the format its header names, once read
        self.last_line: bytes | None = None

    def __iter__(self) -> Iterator[tuple[int, Event]]:
        handle = self._open()
        if handle is None:
            return iter(())
        return self._read(handle)

    def events(self) -> Iterator[Event]:
        for _seq, event in self:
            yield event

    def feed(self, consume: Callable[[Event], object]) -> None:
        """Read the log as iterating does and pass each event to `consume`, in order: the
        same checks, errors and attributes, in one loop with no generator between (about
        0.13 µs an event of a replay). Should `consume` raise, the exception goes through,
        with the attributes saying its event was the last read (`last_seq` is its seq)."""
        handle = self._open()
        if handle is None:
            return
        with handle:
            begun = self._begin(handle)
            if begun is None:
                return
            decode_line, offset = begun
            expected = self.last_seq + 1
            last_line = self.last_line
            line = b""
            try:
                for line in handle:
                    try:
                        seq, event = decode_line(line)
                    except LogFormatError as exc:
                        self._refused(line, expected + 1, offset, exc)
                        return
                    if seq != expected:
                        raise self._out_of_order(expected, seq)
                    offset += len(line)
                    expected += 1
                    last_line = line
                    consume(event)
            finally:
                self.last_seq = expected - 1
                self.end_offset = offset
                self.last_line = last_line
                if line and last_line is line:
                    self.missing_newline = not line.endswith(b"\n")

    def _open(self) -> BinaryIO | None:
        """The file, open for reading; None for a missing file (read as empty)."""
        try:
            return self.path.open("rb", buffering=READ_BUFFER_BYTES)
        except FileNotFoundError:
            if self.start is not None:
                raise ValueError(f"{self.path} does not exist: nothing to start after") from None
            return None

    def _read(self, handle: BinaryIO) -> Iterator[tuple[int, Event]]:
        with handle:
            yield from self._read_open(handle)

    def _begin(self, handle: BinaryIO) -> tuple[LineDecoder, int] | None:
        """Read and check the header (and go to `start`); (the line decoder, the offset of the
        first line to read), or None when there is nothing to read. The line of seq n is line
        n + 1 of the file."""
        path = self.path
        start = self.start
        header = handle.readline()
        if not header:
            if start is not None:
                raise ValueError(f"{path} is empty: it has no event {start.seq} to start after")
            return None
        try:
            self.version = decode_header(header)
        except LogFormatError as exc:
            # A torn first line is a header cut short by a crash while creating the log; any
            # other unfinished first line means this is not our file, and must not be cut.
            if not header.endswith(b"\n") and any(
                encode_header(version).startswith(header) for version in READABLE_VERSIONS
            ):
                if start is not None:
                    raise ValueError(
                        f"{path}: the header is torn: no event to start after"
                    ) from None
                self.torn = TornTail(
                    line=1, offset=0, length=len(header), reason=_one_line(str(exc))
                )
                return None
            raise LogReadError(path, 1, str(exc)) from None
        self.has_header = True
        offset = self.end_offset = len(header)
        self.missing_newline = not header.endswith(b"\n")
        if start is not None:
            self._go_to(handle, start, offset)
            offset = start.offset
            self.last_seq, self.end_offset = start.seq, start.offset
            self.last_line, self.missing_newline = start.line, False
        return line_decoder(self.version, fold_only=self.fold_only), offset

    def _out_of_order(self, expected: int, seq: int) -> LogReadError:
        return LogReadError(self.path, expected + 1, f"expected seq {expected}, found {seq}")

    def _refused(self, line: bytes, number: int, offset: int, exc: LogFormatError) -> None:
        """A line at `offset` (line `number`) that does not decode: the end of the events (the
        zero tail of a mapped log), a torn last line (noted in `torn`), or else raised."""
        if _padding(line):
            return  # the zero tail of a mapped log: the end of its events
        # The decoders raise nothing else, whatever the bytes (deep nesting, huge numbers,
        # bad UTF-8 included). Only a last line can be torn (a crash while it was written):
        # one without its newline, or one with zero bytes in it (never in a written line:
        # JSON escapes them), which is a line a mapped log's writer was copying (the file's
        # zero tail shows through).
        if not line.endswith(b"\n") or b"\0" in line:
            self.torn = TornTail(
                line=number, offset=offset, length=len(line), reason=_one_line(str(exc))
            )
            return
        raise LogReadError(self.path, number, str(exc)) from None

    def _read_open(self, handle: BinaryIO) -> Iterator[tuple[int, Event]]:
        # The same loop as `feed`'s, yielding instead of calling (a generator cannot be made
        # of a callback's loop); tests/shell/test_log_feed.py holds the two to each other.
        begun = self._begin(handle)
        if begun is None:
            return
        decode_line, offset = begun
        expected = self.last_seq + 1
        line = b""
        try:
            for line in handle:
                try:
                    seq, event = decode_line(line)
                except LogFormatError as exc:
                    self._refused(line, expected + 1, offset, exc)
                    return
                offset += len(line)
                if seq != expected:
                    raise self._out_of_order(expected, seq)
                expected += 1
                self.last_seq = seq
                self.end_offset = offset
                self.last_line = line
                yield seq, event
        finally:
            # Only the last line read can lack its newline (a decoded one kept after a crash).
            if line and self.last_line is line:
                self.missing_newline = not line.endswith(b"\n")

    def _go_to(self, handle: BinaryIO, start: LogMark, header_end: int) -> None:
        """Seek to just after `start.line`, having checked that the file holds it there."""
        begin = start.offset - len(start.line)
        if start.seq < 1 or not start.line.endswith(b"\n") or begin < header_end:
            raise ValueError(
                f"{self.path}: the mark of seq {start.seq} at byte {start.offset} names no "
                "event line"
            )
        handle.seek(begin - 1)
        # The byte before must end the previous line: the mark is at a line boundary.
        if handle.read(len(start.line) + 1) != b"\n" + start.line:
            raise ValueError(
                f"{self.path}: the line of seq {start.seq} is not where the mark says "
                f"(ending at byte {start.offset})"
            )


class _Syncer:
    """The fsyncs of a log with a background group commit: `request(seq)` asks for the log to
    be on disk up to `seq` and returns at once; a thread of its own fsyncs (through its own
    descriptor) and reports each completed fsync to the log (`EventLog._synced`). An fsync
    that fails is kept in `error` and raised by the log's next `append` or `sync`.

    The thread holds the log weakly: a log dropped without `close` is still collected, and
    the thread then ends and closes its descriptor."""

    def __init__(self, log: EventLog) -> None:
        self._log = weakref.ref(log)
        self._fd = os.dup(log.fileno())
        self._cv = threading.Condition()
        self._want = self._done = log.synced_seq
        self._closing = False
        self.error: OSError | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"oms-fsync {log.path.name}", daemon=True
        )
        self._thread.start()
        weakref.finalize(log, self.stop)

    @property
    def busy(self) -> bool:
        """An fsync is asked for or running (read without the lock: a hint)."""
        return self._want > self._done

    def request(self, seq: int) -> None:
        with self._cv:
            if seq > self._want:
                self._want = seq
                self._cv.notify()

    def wait(self, seq: int) -> None:
        """Block until the log is on disk up to `seq` (or an fsync failed)."""
        with self._cv:
            if seq > self._want:
                self._want = seq
                self._cv.notify()
            while self._done < seq and self.error is None:
                self._cv.wait()

    def stop(self) -> None:
        """Ask the thread to end once it has done what was asked (it does not wait)."""
        with self._cv:
            self._closing = True
            self._cv.notify()

    def close(self) -> None:
        self.stop()
        self._thread.join()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            os.close(self._fd)

    def _loop(self) -> None:
        cv = self._cv
        while True:
            with cv:
                while self._want <= self._done and not self._closing:
                    cv.wait()
                if self._want <= self._done or self.error is not None:
                    return
                target = self._want
            started = time.perf_counter()
            try:
                os.fsync(self._fd)
            except OSError as exc:
                with cv:
                    self.error = exc
                    cv.notify_all()
                return
            log = self._log()
            if log is not None:
                log._synced(target, time.perf_counter() - started)
            del log
            with cv:
                self._done = target
                cv.notify_all()


class EventLog:
    """Appends events to a log file. One writer per file (the engine's single task).

    Open with `EventLog.open`, which reads what is there first and hands each event to its
    `on_event` callback (`Engine.open` folds them into the state), so that the state and the
    log agree before anything is appended.
    """

    def __init__(
        self,
        *,
        path: Path,
        handle: BinaryIO,
        last_seq: int,
        fsync: Fsync,
        clock: Callable[[], float],
        torn: TornTail | None,
        version: int = FORMAT_VERSION,
        offset: int = 0,
        last_line: bytes | None = None,
    ) -> None:
        self.path = path
        # The line format appended in: the one the file's header names (an old log stays
        # in its own format; a new one gets the current format).
        self.version = version
        self._handle = handle
        self.last_seq = last_seq
        # Where the file ends (what this log has written included) and the last event line:
        # a snapshot names that position and checks that line (`mark`).
        self.offset = offset
        # The last event line: bytes as read at open, then the buffer the last append wrote
        # (appends encode into the other buffer, `_spare`, and swap).
        self._last_line: bytes | bytearray | None = last_line
        # Appends encode into one of two buffers in turn, `_buffers[_spare]`: the other one
        # holds the last line written (`_last_line`), intact if encoding fails.
        self._buffers = (bytearray(), bytearray())
        self._spare = 0
        self.fsync = fsync
        self._clock = clock
        self.torn = torn
        self._pending = 0
        self._pending_since = 0.0
        self.syncs = 0
        # Called with (what, seconds) after each append ("append") and fsync ("fsync"), when
        # set (the metrics); costs nothing when not.
        self.observer: Callable[[str, float], None] | None = None
        # The last seq known to be on disk (opening syncs what it read): a follower that
        # must not run ahead of the disk (the NATS shipper) ships up to here.
        self.synced_seq = last_seq
        # The mapping lines are copied into (None: written with `write`): it covers the file
        # from byte `_map_base`, `len(_map)` bytes, allocated on disk.
        self._map: mmap.mmap | None = None
        self._map_base = 0
        self._map_end = 0
        # The whole pages before this offset are out of the mapping (`_release_written`).
        self._released = 0
        self._release = _DONTNEED
        # The offset past which an append releases again (`_RELEASE_STEP` past `_released`).
        self._release_next = 0
        # The fsync thread of a background group commit (started at the first group).
        self._syncer: _Syncer | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        fsync: Fsync | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[Event], object] | None = None,
        start: LogMark | None = None,
        fold_only: bool = False,
    ) -> EventLog:
        """Open (or create) a log for appending. Existing events are read and passed to
        `on_event` in order; a torn last line is cut off the file and reported in `.torn`.

        With `start`, only the events after that mark are read (`LogReader`'s `start`); the
        caller holds the state up to it (a snapshot's). If the file does not hold the mark's
        line where it says, `ValueError` is raised before anything is written. With
        `fold_only` (`LogReader`'s), `on_event` must be a `ReplayFold`'s `step`.
        """
        path = Path(path)
        reader = LogReader(path, start=start, fold_only=fold_only)
        reader.feed(on_event if on_event is not None else _ignore)
        created = not path.exists()
        handle: BinaryIO = path.open("w+b") if created else path.open("r+b")
        offset, last_line = reader.end_offset, reader.last_line
        try:
            if reader.torn is not None or handle.seek(0, os.SEEK_END) != reader.end_offset:
                handle.truncate(reader.end_offset)
            handle.seek(reader.end_offset)
            if not reader.has_header:
                handle.truncate(0)
                handle.write(encode_header())
                offset, last_line = len(encode_header()), None
            elif reader.missing_newline:
                handle.write(b"\n")
                offset += 1
                if last_line is not None:
                    last_line += b"\n"
            handle.flush()
            os.fsync(handle.fileno())
            if created:
                fsync_directory(path.parent)
        except BaseException:
            handle.close()
            raise
        policy = fsync or Fsync.every_event()
        if policy.max_events != 0:
            # Every line goes to the OS as it is appended, into a mapping of the file (one
            # copy, no system call; see the module's docstring). Where the file cannot be
            # mapped and allocated ahead, each line is written with one system call instead.
            handle.close()
            handle = path.open("r+b", buffering=0)
        log = cls(
            path=path,
            handle=handle,
            last_seq=reader.last_seq,
            fsync=policy,
            clock=clock,
            torn=reader.torn,
            version=reader.version if reader.has_header else FORMAT_VERSION,
            offset=offset,
            last_line=last_line,
        )
        if policy.max_events != 0:
            try:
                log._map_from(offset, 0)
            except BaseException:
                handle.close()
                raise
        return log

    def append(self, event: Event) -> int:
        """Write `event` as the next seq and return that seq (durable per the policy)."""
        observer = self.observer
        if observer is None:
            return self._append(event)
        started = time.perf_counter()
        seq = self._append(event)
        observer("append", time.perf_counter() - started)
        return seq

    def _append(self, event: Event) -> int:
        syncer = self._syncer
        if syncer is not None and syncer.error is not None:
            # The disk failed an fsync: nothing more is appended (the lines since the last
            # good fsync may be lost), until the program deals with it.
            raise syncer.error
        seq = self.last_seq + 1
        # Encoded into a spare buffer: if encoding fails, nothing is written and the last
        # line (kept for `mark`) is intact.
        line = self._buffers[self._spare]
        encode_line_into(seq, event, line, self.version)
        max_events = self.fsync.max_events
        # Unless the policy is `never`, the line is with the OS (the page cache of the file)
        # when this returns, so a crash of this process loses nothing; only a power loss can
        # take events not yet fsynced. (`never` writes into this process's buffer, a copy.)
        offset = self.offset
        end = offset + len(line)
        if self._map is not None:
            if end > self._map_end:
                self._map_from(offset, len(line))
            assert self._map is not None
            self._map[offset - self._map_base : end - self._map_base] = line
        else:
            written = self._handle.write(line)
            if max_events and written != len(line):
                self._write_rest(line, written)
        self._spare ^= 1
        self._last_line = line
        self.last_seq = seq
        self.offset = end
        if end >= self._release_next:
            self._release_during_fsync()
        if not max_events:
            return seq
        pending = self._pending = self._pending + 1
        if pending == 1:
            self._pending_since = self._clock()
            if max_events <= 1 or self.fsync.max_delay <= 0:
                self._commit()
        elif pending >= max_events or self._clock() - self._pending_since >= self.fsync.max_delay:
            self._commit()
        return seq

    def _commit(self) -> None:
        """A group is due: fsync it, here or (background) in the fsync thread."""
        self._release_written()
        if not self.fsync.background:
            self.sync()
            return
        syncer = self._syncer
        if syncer is None:
            syncer = self._syncer = _Syncer(self)
        syncer.request(self.last_seq)
        self._pending = 0

    def _synced(self, seq: int, seconds: float) -> None:
        """The fsync thread made the log durable up to `seq` (it took `seconds`)."""
        self.syncs += 1
        self.synced_seq = max(self.synced_seq, seq)
        observer = self.observer
        if observer is not None:
            observer("fsync", seconds)

    def _release_written(self) -> None:
        """Take the pages the lines have filled out of the mapping; their lines stay in the
        page cache, dirty, for the fsync to write.

        To write a page that is mapped, the kernel write-protects it first, which costs a
        TLB flush of every CPU the process runs on: with the fsync in its own thread, an
        interrupt of the writer for each page. Pages that are no longer mapped cost
        nothing of the kind. (200,000 appends in one burst under `Fsync.group()`: 230,189
        -> 253,313 events a second, docs/speed.md.) Where the kernel refuses (memory locked with
        `mlockall`, say), the log stops trying and goes on as before."""
        mapping, release = self._map, self._release
        if mapping is None or release is None:
            self._release_next = _NEVER
            return
        start = max(self._released, self._map_base)
        end = self.offset - self.offset % _PAGE
        if end <= start:
            self._release_next = start + _RELEASE_STEP
            return
        try:
            mapping.madvise(release, start - self._map_base, end - start)
        except OSError:
            self._release = None
            self._release_next = _NEVER
            return
        self._released = end
        self._release_next = end + _RELEASE_STEP

    def _release_during_fsync(self) -> None:
        """Every `_RELEASE_STEP` bytes appended: while the fsync thread writes the file, take
        the pages filled since out of the mapping at once. (The fsync writes every dirty page
        of the file, those the writer fills meanwhile included: each one still mapped is a
        TLB flush of the writer's CPU.) Otherwise they wait for the next group's fsync."""
        syncer = self._syncer
        if syncer is not None and syncer.busy:
            self._release_written()
        else:
            self._release_next = self.offset + _RELEASE_STEP

    def _write_rest(self, line: bytearray, written: int | None) -> None:
        """Finish a short write (rare: a signal, a full disk that is then reported)."""
        view = memoryview(line)[written or 0 :]
        while view:
            count = self._handle.write(view)
            view = view[count or 0 :]

    def _map_from(self, offset: int, need: int) -> None:
        """Map the file from the page holding `offset` (the end of the lines), allocated
        `PREALLOCATE_BYTES` beyond what `need` more bytes take. Falls back to writing lines
        with `write` where the file system cannot allocate ahead or map the file."""
        fd = self._handle.fileno()
        base = offset - offset % _PAGE
        length = offset - base + need + PREALLOCATE_BYTES
        try:
            os.posix_fallocate(fd, base, length)
        except OSError as exc:
            if exc.errno not in _NO_ALLOCATE:
                # A full disk, a quota: this append fails as a `write` would, and the log
                # stays as it was (mapped), to try again at the next append.
                raise
            self._write_mode(offset)
            return
        if self._map is not None:
            self._map.close()
            self._map = None
        try:
            self._map = mmap.mmap(fd, length, offset=base)
        except (OSError, ValueError):
            self._write_mode(offset)
            return
        self._map_base, self._map_end = base, base + length

    def _write_mode(self, offset: int) -> None:
        """Write each line with one system call from `offset` on (no mapping)."""
        if self._map is not None:
            self._map.close()
            self._map = None
        os.ftruncate(self._handle.fileno(), offset)
        self._handle.seek(offset)
        self._map_end = 0

    def _unmap(self) -> None:
        """Cut the zero tail the mapping allocated: the file ends with the last line."""
        if self._map is None:
            return
        self._map.close()
        self._map = None
        os.ftruncate(self._handle.fileno(), self.offset)

    def mark(self) -> LogMark | None:
        """Where the last event appended (or read at open) ends; None before any event."""
        if self._last_line is None or self.last_seq == 0:
            return None
        return LogMark(
            seq=self.last_seq, offset=self.offset, line=bytes(self._last_line), version=self.version
        )

    def flush(self) -> None:
        """Hand what was appended to the OS (no fsync)."""
        self._handle.flush()

    def fileno(self) -> int:
        return self._handle.fileno()

    @property
    def closed(self) -> bool:
        return self._handle.closed

    @property
    def unsynced(self) -> bool:
        """Events are waiting for a group commit's fsync (or, background, for the one in
        flight)."""
        return self._pending > 0 or (self._syncer is not None and self.synced_seq < self.last_seq)

    def poll(self) -> None:
        """Group commit: sync if the oldest waiting event has waited `max_delay`."""
        if self._pending and self._clock() - self._pending_since >= self.fsync.max_delay:
            self._commit()

    def sync(self) -> None:
        """Write everything appended so far to disk now."""
        self._handle.flush()
        syncer = self._syncer
        if syncer is not None:
            if self._pending or self.synced_seq < self.last_seq:
                self._pending = 0
                syncer.wait(self.last_seq)
            if syncer.error is not None:
                raise syncer.error
            return
        if self._pending or self.fsync.max_events == 0:
            started = time.perf_counter()
            os.fsync(self._handle.fileno())
            self.syncs += 1
            if self.observer is not None:
                self.observer("fsync", time.perf_counter() - started)
        self._pending = 0
        self.synced_seq = self.last_seq

    def close(self) -> None:
        if self._handle.closed:
            return
        try:
            if self.fsync.max_events == 0:
                self._handle.flush()  # the `never` policy: the OS writes it when it likes
            else:
                syncer, self._syncer = self._syncer, None
                if syncer is not None:
                    # What the thread has not synced is synced below, in this thread.
                    syncer.close()
                    if self.synced_seq < self.last_seq:
                        self._pending = max(self._pending, 1)
                    if syncer.error is not None:
                        raise syncer.error
                # Cut the zero tail (if the cut is lost to a power loss, readers skip the
                # tail), then sync what is pending.
                self._unmap()
                self.sync()
        finally:
            if self._map is not None:
                self._map.close()
                self._map = None
            self._handle.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
