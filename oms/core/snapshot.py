"""A snapshot of the state as bytes: encoding, and the checks a snapshot must pass. Pure.

A snapshot is the whole `State` after event `seq` of a log, plus what ties it to that log
and to the program that made it. The files (where they live, atomic writes, the log's bytes)
are `oms.snapshot`'s business; this module only turns a state into bytes and back, and says
what is wrong with bytes that do not qualify. See docs/snapshots.md.

Layout of the bytes:

    MAGIC (8 bytes) | SHA-256 of everything after it (32) | header length (4, big-endian)
    | header (msgpack map) | body (msgpack array: the state's fields)

The digest covers header and body, so a torn or damaged file is refused before anything in
it is believed. The header names the versions the state depends on and the log line it
covers (its end offset, length and SHA-256); the body holds every field of `State` in
declaration order, each persistent map as a list of (key, value) pairs sorted by key and
each set sorted, so equal states give equal bytes. Decimals are written as their own text,
so each reads back with the same digits and exponent (`0.0010` stays `0.0010`).
"""

from __future__ import annotations

import hashlib
import typing
from typing import Any, Final

import attrs
import msgspec
from immutables import Map

from oms.core.serialization import (
    FORMAT_VERSION,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    LogFormatError,
    decode_line,
)
from oms.core.state import State

__all__ = [
    "MAGIC",
    "REDUCER_VERSION",
    "SNAPSHOT_FORMAT_VERSION",
    "SnapshotError",
    "SnapshotHeader",
    "check_covered_line",
    "decode_state",
    "encode_snapshot",
    "read_header",
]

MAGIC: Final = b"OMSSNAP\n"
# The layout above and the header's fields. Bump when either changes.
SNAPSHOT_FORMAT_VERSION: Final = 1
# What the reducer makes of the events. Bump it whenever `apply` (or anything it calls)
# gives a different state for some input than before, and whenever `State` or one of its
# records changes shape: a snapshot from another reducer version is ignored and the log
# replayed in full. (The shell also fingerprints the core's source, `oms.snapshot`, so a
# forgotten bump costs a full replay, not a wrong state; the bump is still the contract.)
# 2: State.risk (the kill switch and the risk check's records); 3: State.marks (MarkObserved);
# 4: an exit whose parent may be an order of ours still without a venue id is no anomaly.
REDUCER_VERSION: Final = 4

_DIGEST_SIZE: Final = 32
_LENGTH_SIZE: Final = 4
_PREFIX: Final = len(MAGIC) + _DIGEST_SIZE + _LENGTH_SIZE


class SnapshotError(ValueError):
    """Bytes that are not a snapshot this program can use; the message says why."""


class SnapshotHeader(msgspec.Struct, frozen=True, kw_only=True):
    """What a snapshot depends on and which log line it covers.

    `offset` is the byte offset in the log just after the covered line (the line of event
    `seq`), `line_length` its length in bytes and `line_sha256` the digest of exactly those
    bytes, newline included. `core_digest` is the shell's fingerprint of the core's code.
    """

    format_version: int
    reducer_version: int
    core_digest: str
    log_version: int
    schema: dict[str, int]
    seq: int
    offset: int
    line_length: int
    line_sha256: bytes
    retain_finished: int


def _pairs_type(hint: Any) -> Any:
    """The body's type for a `State` field: a map becomes a list of (key, value) pairs."""
    if typing.get_origin(hint) is Map:
        key, value = typing.get_args(hint)
        return list[tuple[key, value]]  # type: ignore[valid-type]
    return hint


_STATE_HINTS: Final = typing.get_type_hints(State)
# Every field of State, found by walking it (not listed by hand): a field added to State is
# carried without a change here, and the body's types are the state's own.
_FIELDS: Final = tuple(f.name for f in attrs.fields(State))
_MAPS: Final = frozenset(name for name in _FIELDS if typing.get_origin(_STATE_HINTS[name]) is Map)
_Body: Final = msgspec.defstruct(
    "_Body",
    [(name, _pairs_type(_STATE_HINTS[name])) for name in _FIELDS],
    array_like=True,
    frozen=True,
)

_encoder: Final = msgspec.msgpack.Encoder(decimal_format="string", order="deterministic")
_header_decoder: Final = msgspec.msgpack.Decoder(SnapshotHeader)
_body_decoder: Final = msgspec.msgpack.Decoder(_Body)


def encode_snapshot(
    state: State,
    *,
    offset: int,
    line: bytes,
    core_digest: str,
    log_version: int = FORMAT_VERSION,
) -> bytes:
    """The snapshot of `state`, which must be the state after the log line `line` (the line
    of event `state.last_seq`), which ends at byte `offset` of a log of line format
    `log_version`."""
    if state.last_seq < 1:
        raise ValueError("a snapshot covers at least one event")
    if not line.endswith(b"\n") or offset < len(line):
        raise ValueError("a snapshot covers a whole line of the log, newline included")
    header = SnapshotHeader(
        format_version=SNAPSHOT_FORMAT_VERSION,
        reducer_version=REDUCER_VERSION,
        core_digest=core_digest,
        log_version=log_version,
        schema=dict(SCHEMA_VERSION),
        seq=state.last_seq,
        offset=offset,
        line_length=len(line),
        line_sha256=hashlib.sha256(line).digest(),
        retain_finished=state.retain_finished,
    )
    values = []
    for name in _FIELDS:
        value = getattr(state, name)
        values.append(sorted(value.items()) if name in _MAPS else value)
    head = _encoder.encode(header)
    rest = len(head).to_bytes(_LENGTH_SIZE, "big") + head + _encoder.encode(_Body(*values))
    return MAGIC + hashlib.sha256(rest).digest() + rest


def read_header(data: bytes, *, core_digest: str) -> SnapshotHeader:
    """The header of snapshot bytes `data`, once the whole file is intact and made by this
    program's reducer for this log format. Raises `SnapshotError` saying what is wrong."""
    if not data.startswith(MAGIC) and not MAGIC.startswith(data):
        raise SnapshotError("not an oms snapshot (no magic bytes)")
    if len(data) < _PREFIX:
        raise SnapshotError(f"torn: {len(data)} bytes, too short for a snapshot")
    digest = data[len(MAGIC) : len(MAGIC) + _DIGEST_SIZE]
    if hashlib.sha256(memoryview(data)[len(MAGIC) + _DIGEST_SIZE :]).digest() != digest:
        raise SnapshotError("checksum mismatch: the file is torn or corrupted")
    length = int.from_bytes(data[len(MAGIC) + _DIGEST_SIZE : _PREFIX], "big")
    try:
        header = _header_decoder.decode(memoryview(data)[_PREFIX : _PREFIX + length])
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise SnapshotError(f"unreadable header: {exc}") from None
    if header.format_version != SNAPSHOT_FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot format version {header.format_version} (this program writes "
            f"{SNAPSHOT_FORMAT_VERSION})"
        )
    if header.reducer_version != REDUCER_VERSION:
        raise SnapshotError(
            f"reducer version {header.reducer_version} (this program's is {REDUCER_VERSION})"
        )
    if header.core_digest != core_digest:
        raise SnapshotError("made by another build of the core (its code fingerprint differs)")
    if header.log_version not in READABLE_VERSIONS:
        raise SnapshotError(
            f"log format version {header.log_version} (this program reads "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    if header.schema != SCHEMA_VERSION:
        changed = sorted(
            name
            for name in set(header.schema) | set(SCHEMA_VERSION)
            if header.schema.get(name) != SCHEMA_VERSION.get(name)
        )
        raise SnapshotError(f"event schema versions differ: {', '.join(changed)}")
    if header.seq < 1 or header.line_length < 1 or header.offset < header.line_length:
        raise SnapshotError(
            f"names no whole line: seq {header.seq}, offset {header.offset}, "
            f"line length {header.line_length}"
        )
    return header


def check_covered_line(header: SnapshotHeader, line: bytes) -> None:
    """Check that `line` (the log's bytes where the header says its line is) is that line:
    the same bytes, and the event of seq `header.seq`. Raises `SnapshotError`."""
    if len(line) != header.line_length or hashlib.sha256(line).digest() != header.line_sha256:
        raise SnapshotError(
            f"the log's line of seq {header.seq} (ending at byte {header.offset}) is not the "
            "one it covers: the log was changed"
        )
    try:
        seq, _event = decode_line(line, header.log_version)
    except LogFormatError as exc:
        raise SnapshotError(f"the line it covers does not decode: {exc}") from None
    if seq != header.seq:
        raise SnapshotError(f"the line it covers holds seq {seq}, not {header.seq}")


def decode_state(data: bytes, header: SnapshotHeader) -> State:
    """The state in snapshot bytes `data` whose header `read_header` returned."""
    length = int.from_bytes(data[len(MAGIC) + _DIGEST_SIZE : _PREFIX], "big")
    try:
        body = _body_decoder.decode(memoryview(data)[_PREFIX + length :])
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise SnapshotError(f"unreadable state: {exc}") from None
    fields: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(body, name)
        fields[name] = Map(value) if name in _MAPS else value
    state = State(**fields)
    if state.last_seq != header.seq or state.retain_finished != header.retain_finished:
        raise SnapshotError(
            f"the state is at seq {state.last_seq}, retaining {state.retain_finished}; the "
            f"header says seq {header.seq}, retaining {header.retain_finished}"
        )
    return state
