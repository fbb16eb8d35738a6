"""Snapshot files beside a log: find the newest one that is valid for it, write one atomically.

A log `PATH` keeps its snapshots in the directory `PATH.snapshots/`, one file per snapshot,
named by the seq it covers (`00000000000000100000.snapshot`); a file being written has a
hidden temporary name (`.00000000000000100000.<pid>.<random>.tmp`) until it is complete,
fsynced and renamed. The bytes are `oms.core.snapshot`'s. See docs/snapshots.md.

Reading never raises on a bad snapshot: a snapshot that is torn, damaged, from another
version of the program or of the log format, or that no longer matches its log is passed
over, with the reason, for the next older one, and in the end for the full log. Only a bad
log is an error, as without snapshots.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pkgutil
import secrets
from pathlib import Path
from typing import BinaryIO, Final

import attrs

import oms.core
from oms.core.serialization import LogFormatError, decode_header
from oms.core.snapshot import (
    SnapshotError,
    check_covered_line,
    decode_state,
    encode_snapshot,
    read_header,
)
from oms.core.state import State
from oms.log import LogMark, _one_line, fsync_directory

__all__ = [
    "CORE_DIGEST",
    "DEFAULT_EVERY",
    "DEFAULT_KEEP",
    "IgnoredSnapshot",
    "Resume",
    "SnapshotPolicy",
    "find_snapshot",
    "list_snapshots",
    "remove_files",
    "snapshot_dir",
    "stray_files",
    "write_snapshot",
]

_log = logging.getLogger("oms.snapshot")

DEFAULT_EVERY: Final = 100_000
DEFAULT_KEEP: Final = 2
_SUFFIX: Final = ".snapshot"
_TEMP_SUFFIX: Final = ".tmp"
_SEQ_DIGITS: Final = 20  # 2**64 has 20 digits: names sort by seq


def _core_digest() -> str:
    """A fingerprint of the pure core's source: every module of `oms.core`.

    The state a log replays to is a function of this code. A snapshot made by other code is
    refused even if nobody bumped `REDUCER_VERSION`: a forgotten bump costs one full replay,
    never a wrong state. Taken once, at import, from the files the running program loaded
    (close enough to when they were loaded that an edit in between is not a concern). Where
    a module's source cannot be read (an install without sources) its name alone counts, and
    `REDUCER_VERSION` is the only guard left for it.
    """
    digest = hashlib.sha256()
    modules = sorted(info.name for info in pkgutil.iter_modules(oms.core.__path__, "oms.core."))
    names = ["oms.core", *modules]
    for name in names:
        module = importlib.import_module(name)
        source: str | None
        try:
            loader = module.__spec__.loader if module.__spec__ is not None else None
            get_source = getattr(loader, "get_source", None)
            source = get_source(name) if get_source is not None else None
        except (OSError, ImportError):
            source = None
        digest.update(name.encode() + b"\0" + (source or "").encode("utf-8", "replace") + b"\0")
    return digest.hexdigest()


CORE_DIGEST: Final = _core_digest()
# Events after the newest snapshot above which closing the engine writes one (a few tens of
# milliseconds at close, instead of a tenth of a second or more at the next open).
DEFAULT_AT_CLOSE: Final = 10_000


@attrs.frozen(kw_only=True)
class SnapshotPolicy:
    """When the engine writes snapshots of its log.

    `every`: write one once this many events were recorded since the last (0: never write,
    but still resume from the snapshots there are). `keep`: how many of the newest to keep.
    `at_close`: `Engine.close` writes one if at least this many events came after the newest
    (0: only when one is due), so that opening the log after a clean stop reads next to
    nothing; after a crash, opening reads at most `every` events.
    """

    every: int = attrs.field(default=DEFAULT_EVERY, validator=attrs.validators.ge(0))
    keep: int = attrs.field(default=DEFAULT_KEEP, validator=attrs.validators.ge(1))
    at_close: int = attrs.field(default=DEFAULT_AT_CLOSE, validator=attrs.validators.ge(0))


@attrs.frozen
class IgnoredSnapshot:
    """A snapshot that was not used, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: snapshot ignored: {self.reason}"


@attrs.frozen(kw_only=True)
class Resume:
    """A valid snapshot: the state after event `mark.seq` and where that event ends."""

    path: Path
    state: State
    mark: LogMark


def snapshot_dir(log_path: str | os.PathLike[str]) -> Path:
    """The directory of a log's snapshots: `PATH.snapshots` beside it."""
    path = Path(log_path)
    return path.with_name(path.name + ".snapshots")


def _name(seq: int) -> str:
    return f"{seq:0{_SEQ_DIGITS}d}{_SUFFIX}"


def _seq_of(name: str) -> int | None:
    stem = name.removesuffix(_SUFFIX)
    if stem == name or len(stem) != _SEQ_DIGITS or not stem.isascii() or not stem.isdigit():
        return None
    return int(stem)


def list_snapshots(log_path: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The log's snapshot files as (seq, path), newest first (by the seq in the name).
    Files of other names (temporary ones included) are not listed."""
    try:
        entries = list(os.scandir(snapshot_dir(log_path)))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for entry in entries:
        seq = _seq_of(entry.name)
        if seq is not None:
            found.append((seq, Path(entry.path)))
    found.sort(reverse=True)
    return found


def stray_files(log_path: str | os.PathLike[str]) -> list[Path]:
    """Temporary files a writer left behind (a crash while writing a snapshot)."""
    try:
        entries = list(os.scandir(snapshot_dir(log_path)))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        Path(e.path) for e in entries if e.name.startswith(".") and e.name.endswith(_TEMP_SUFFIX)
    )


# The header line is short; a first line longer than this is not ours.
_HEADER_LIMIT: Final = 4096


def find_snapshot(
    log_path: str | os.PathLike[str],
    *,
    retain_finished: int,
    until: int | None = None,
) -> tuple[Resume | None, list[IgnoredSnapshot]]:
    """The newest snapshot valid for the log at `log_path`, and those passed over on the way
    (the caller reports them). Only reads; never raises for a bad snapshot. With `until`,
    snapshots beyond that seq are not considered (nor reported).

    Valid means: intact (checksum), of this program's snapshot format, reducer, core code,
    log format and event schemas, for this `retain_finished`, and matching the log: the log
    holds, ending at the snapshot's offset and starting a line, exactly the line it covers,
    and that line is the event of its seq.
    """
    log_path = Path(log_path)
    ignored: list[IgnoredSnapshot] = []
    candidates = [(s, p) for s, p in list_snapshots(log_path) if until is None or s <= until]
    if not candidates:
        return None, ignored

    def ignore(path: Path, reason: str) -> None:
        ignored.append(IgnoredSnapshot(path, _one_line(reason)))

    try:
        log = log_path.open("rb")
    except OSError as exc:
        for _seq, path in candidates:
            ignore(path, f"the log cannot be read: {exc.strerror or exc}")
        return None, ignored
    with log:
        size = os.fstat(log.fileno()).st_size
        for seq, path in candidates:
            try:
                resume = _check(path, seq, log, size, retain_finished)
            except SnapshotError as exc:
                ignore(path, str(exc))
                continue
            except Exception as exc:  # whatever it is, a snapshot must not stop the open
                ignore(path, f"{type(exc).__name__}: {exc}")
                continue
            return resume, ignored
    return None, ignored


def _check(path: Path, seq: int, log: BinaryIO, size: int, retain_finished: int) -> Resume:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SnapshotError(f"cannot be read: {exc.strerror or exc}") from None
    header = read_header(data, core_digest=CORE_DIGEST)
    if header.seq != seq:
        raise SnapshotError(f"named for seq {seq} but holds seq {header.seq}")
    if header.retain_finished != retain_finished:
        raise SnapshotError(
            f"made for retain_finished {header.retain_finished}, not {retain_finished}"
        )
    if header.offset > size:
        raise SnapshotError(
            f"names byte {header.offset} of the log, which has {size} bytes (truncated?)"
        )
    begin = header.offset - header.line_length
    before_and_line = b""
    if begin >= 1:
        log.seek(begin - 1)
        before_and_line = log.read(header.line_length + 1)
    if before_and_line[:1] != b"\n":
        raise SnapshotError(
            f"the log has no line starting at byte {begin} (where seq {seq} should begin): "
            "the log was changed"
        )
    line = before_and_line[1:]
    log.seek(0)
    try:
        version = decode_header(log.readline(_HEADER_LIMIT))
    except LogFormatError as exc:
        raise SnapshotError(f"the log's header does not read: {exc}") from None
    if version != header.log_version:
        raise SnapshotError(
            f"made for a log of format {header.log_version}, this one is of format {version}"
        )
    check_covered_line(header, line)
    state = decode_state(data, header)
    return Resume(
        path=path,
        state=state,
        mark=LogMark(seq=seq, offset=header.offset, line=line, version=header.log_version),
    )


def write_snapshot(
    log_path: str | os.PathLike[str],
    state: State,
    mark: LogMark,
    *,
    keep: int = DEFAULT_KEEP,
    sync_log_fd: int | None = None,
) -> Path:
    """Write the snapshot of `state` (the state after the event `mark` ends) atomically:
    a temporary file in the snapshot directory, fsync, rename, fsync of the directory. Then
    keep the newest `keep` snapshots and remove the others. Returns the new file's path.

    The log must be durable up to `mark` before a snapshot names it: the caller syncs it, or
    passes a descriptor of the log in `sync_log_fd` to fsync here first (off the writer's
    thread). Safe to run in a worker thread: it reads only `state`, which is immutable.
    """
    if mark.seq != state.last_seq:
        raise ValueError(f"the state is at seq {state.last_seq}, the mark at {mark.seq}")
    if sync_log_fd is not None:
        os.fsync(sync_log_fd)
    data = encode_snapshot(
        state,
        offset=mark.offset,
        line=mark.line,
        core_digest=CORE_DIGEST,
        log_version=mark.version,
    )
    directory = snapshot_dir(log_path)
    if not directory.is_dir():
        directory.mkdir(exist_ok=True)
        fsync_directory(directory.parent)
    final = directory / _name(mark.seq)
    temporary = directory / (
        f".{_name(mark.seq)}.{os.getpid()}.{secrets.token_hex(4)}{_TEMP_SUFFIX}"
    )
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(directory)
    _prune(log_path, keep=keep, newest=mark.seq)
    return final


def _prune(log_path: str | os.PathLike[str], *, keep: int, newest: int) -> None:
    """Keep the `keep` newest snapshots up to seq `newest` (the one just written); remove
    the older ones. Any beyond `newest` are left alone: another write of this engine may have
    just made it (a stale one, from before the log was cut, is removed when the engine opens
    the log)."""
    older = [path for seq, path in list_snapshots(log_path) if seq <= newest]
    remove_files(older[keep:])


def remove_files(paths: list[Path]) -> None:
    """Remove snapshot files that are of no use; a failure is logged, not raised."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            _log.warning("%s: could not be removed: %s", path, exc.strerror or exc)
