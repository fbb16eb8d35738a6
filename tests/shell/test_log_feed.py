"""`LogReader.feed` (the replay's loop, no generator) against iterating the reader: on any file,
healthy or damaged, the same events in the same order, the same attributes after, and the same
error (type, line, message). A consumer that raises leaves the attributes on its event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oms.core.events import Event
from oms.log import LogMark, LogReader
from tests.shell.test_log import LAST, fill, write_log

_ATTRIBUTES = (
    "last_seq",
    "end_offset",
    "torn",
    "has_header",
    "missing_newline",
    "version",
    "last_line",
)


def _outcome(reader: LogReader, read: Any) -> tuple[list[Event], Any, dict[str, object]]:
    """(events read, the error raised or None, the reader's attributes after)."""
    events: list[Event] = []
    error: Any = None
    try:
        read(reader, events.append)
    except Exception as exc:  # compared below: type, and what it says
        error = (type(exc), str(exc))
    return events, error, {name: getattr(reader, name) for name in _ATTRIBUTES}


def _iterate(reader: LogReader, consume: Any) -> None:
    for _seq, event in reader:
        consume(event)


def _feed(reader: LogReader, consume: Any) -> None:
    reader.feed(consume)


def _healthy(directory: Path, count: int) -> bytes:
    path = directory / "healthy.jsonl"
    if path.exists():
        path.unlink()
    write_log(path, [fill(n) for n in range(1, count + 1)] + [LAST])
    return path.read_bytes()


# Damage: cut the file short, overwrite a byte, add a zero tail (a mapped log's), drop the
# final newline, repeat or drop a line (a seq out of order).
_DAMAGE = st.one_of(
    st.tuples(st.just("cut"), st.integers(0, 10_000)),
    st.tuples(st.just("byte"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("zeros"), st.integers(1, 4096)),
    st.tuples(st.just("no_newline"), st.just(0)),
    st.tuples(st.just("repeat"), st.integers(1, 6)),
    st.tuples(st.just("drop"), st.integers(1, 6)),
)


def _damaged(data: bytes, damage: tuple[Any, ...]) -> bytes:
    kind = damage[0]
    if not data:
        return data
    if kind == "cut":
        return data[: damage[1] % (len(data) + 1)]
    if kind == "byte":
        at = damage[1] % len(data)
        return data[:at] + bytes([damage[2]]) + data[at + 1 :]
    if kind == "zeros":
        return data + b"\0" * damage[1]
    if kind == "no_newline":
        return data.rstrip(b"\n")
    lines = data.splitlines(keepends=True)
    at = damage[1] % len(lines)
    if kind == "repeat":
        return b"".join([*lines[: at + 1], lines[at], *lines[at + 1 :]])
    return b"".join(lines[:at] + lines[at + 1 :])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    count=st.integers(0, 6),
    damages=st.lists(_DAMAGE, max_size=3),
    fold_only=st.booleans(),
)
def test_feed_reads_what_iterating_reads(
    tmp_path: Path, count: int, damages: list[tuple[Any, ...]], fold_only: bool
) -> None:
    data = _healthy(tmp_path, count)
    for damage in damages:
        data = _damaged(data, damage)
    path = tmp_path / "log.jsonl"
    path.write_bytes(data)
    iterated = _outcome(LogReader(path, fold_only=fold_only), _iterate)
    fed = _outcome(LogReader(path, fold_only=fold_only), _feed)
    assert fed == iterated


@pytest.mark.parametrize("at", [1, 3, 5])
def test_feed_starts_after_a_mark_as_iterating_does(tmp_path: Path, at: int) -> None:
    path = tmp_path / "log.jsonl"
    write_log(path, [fill(n) for n in range(1, 7)])
    first = LogReader(path)
    for seq, _event in first:
        if seq == at:
            break
    mark = LogMark(seq=at, offset=first.end_offset, line=first.last_line or b"")
    iterated = _outcome(LogReader(path, start=mark), _iterate)
    fed = _outcome(LogReader(path, start=mark), _feed)
    assert fed == iterated
    assert [event.trade_id for event in fed[0]] == list(range(at + 1, 7))  # type: ignore[attr-defined]


def test_a_consumer_that_raises_leaves_the_reader_on_its_event(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    write_log(path, [fill(n) for n in range(1, 7)])
    seen: list[int] = []

    def consume(event: Event) -> None:
        seen.append(event.trade_id)  # type: ignore[attr-defined]
        if len(seen) == 4:
            raise ArithmeticError("boom")

    fed = LogReader(path)
    with pytest.raises(ArithmeticError):
        fed.feed(consume)
    iterated = LogReader(path)
    for seq, _event in iterated:
        if seq == 4:
            break
    assert seen == [1, 2, 3, 4]
    assert (fed.last_seq, fed.end_offset, fed.last_line) == (
        iterated.last_seq,
        iterated.end_offset,
        iterated.last_line,
    )
    assert fed.last_seq == 4
