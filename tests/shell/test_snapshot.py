"""Snapshots: a resumed state is the fully replayed one, and a bad snapshot is never believed.

Every check compares against a full replay of the same log (`replay` over `LogReader`), and
the snapshot bytes of a resumed state against those of the replayed one: the encoding writes
every field of the state, sets and maps sorted and decimals as their own text, so equal bytes
mean equal states down to each decimal's digits and exponent.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import attrs
import msgspec
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import oms.core.snapshot as core_snapshot
import oms.snapshot as shell_snapshot
from oms.core.events import Event
from oms.core.reducer import Fold, replay
from oms.core.serialization import SCHEMA_VERSION, state_hash
from oms.core.snapshot import SnapshotError, decode_state, encode_snapshot, read_header
from oms.core.state import State
from oms.core.values import OrderStatus, Side
from oms.engine import Engine
from oms.log import EventLog, Fsync, LogMark, LogReader, LogReadError
from oms.replay import main as replay_main
from oms.replay import replay_file
from oms.snapshot import (
    CORE_DIGEST,
    SnapshotPolicy,
    find_snapshot,
    list_snapshots,
    snapshot_dir,
    stray_files,
    write_snapshot,
)
from oms.testing import strategies as s
from oms.testing.waiting import wait_for
from oms_backpack.bench import session_events
from tests.helpers import REPLAY_DIR, resealed

GOLDEN = [
    "spot_limit_partial_cancel",
    "spot_market_buy_multi_fill",
    "post_only_rejected",
    "perp_position_lifecycle",
    "reordered_duplicates_converge",
]
OFF = SnapshotPolicy(every=0)  # resume from snapshots, write none


def golden(name: str) -> list[Event]:
    return list(LogReader(REPLAY_DIR / f"{name}.jsonl").events())


@functools.cache
def bench(count: int) -> tuple[Event, ...]:
    return tuple(session_events(count, seed=7))


def full_replay(path: Path, retain_finished: int | None = None) -> State:
    start = State() if retain_finished is None else State(retain_finished=retain_finished)
    fold = Fold(start)
    for event in LogReader(path).events():
        fold.step(event)
    return fold.freeze()


def body(state: State) -> bytes:
    """The snapshot bytes of `state` (its place in a log aside): equal iff identical."""
    line = b"x\n"
    return encode_snapshot(state, offset=len(line), line=line, core_digest="")


def assert_same(resumed: State, replayed: State) -> None:
    assert resumed == replayed
    for field in attrs.fields(State):
        assert getattr(resumed, field.name) == getattr(replayed, field.name), field.name
    assert state_hash(resumed) == state_hash(replayed)
    assert body(resumed) == body(replayed)


def write_log(path: Path, events: Sequence[Event], cut: int) -> tuple[State, LogMark]:
    """Log `events`; returns the state after the first `cut` and where event `cut` ends."""
    mark: LogMark | None = None
    with EventLog.open(path, fsync=Fsync.never()) as log:
        for number, event in enumerate(events, start=1):
            log.append(event)
            if number == cut:
                mark = log.mark()
        log.sync()
    assert mark is not None and mark.seq == cut
    return replay(events[:cut]), mark


def session_with_snapshot(
    tmp_path: Path, events: Sequence[Event] | None = None, cut: int | None = None
) -> tuple[Path, Path]:
    """A log of `events` (default: 400 bench events) with one snapshot at `cut`."""
    events = bench(400) if events is None else events
    cut = len(events) * 3 // 4 if cut is None else cut
    path = tmp_path / "session.jsonl"
    state, mark = write_log(path, events, cut)
    return path, write_snapshot(path, state, mark)


def open_engine(path: Path, policy: SnapshotPolicy | None = OFF) -> Engine:
    return Engine.open(path, fsync=Fsync.never(), snapshots=policy)


# --- the encoding -----------------------------------------------------------------------------


def rich_state() -> State:
    """A state in which no field is at its default: bench trading with evictions from the
    finished queue, a baseline, perp positions with their windows, plus anomalies."""
    extra = [
        s.submit(9001, Side.BID, "1.50", "20.0010"),
        s.accept("v9001", client_id=9001, side=Side.BID, quantity="1.50", price="20.0010"),
        s.fill("v9001", 1, Side.BID, "0.5", "20.0010", client_id=9001, cum="0.5"),
        s.fill("v9001", 1, Side.BID, "0.5", "20.0010", client_id=9001, cum="0.5"),  # again
        s.cancel(venue_id="v-unknown"),
        s.funding(1_000_000, "0.0010"),
        s.mark("20.0150"),
    ]
    return replay([*bench(6000), *extra], State(retain_finished=300))


def test_a_rich_state_round_trips_exactly() -> None:
    state = rich_state()
    for field in attrs.fields(State):
        assert getattr(state, field.name) != field.default, f"{field.name} is at its default"
    assert state.finished_head > 0 and state.anomaly_total > 0
    assert any(p.recent and p.checkpoint.key for p in state.positions.values())

    line = b'{"seq":6007}\n'
    data = encode_snapshot(state, offset=1000, line=line, core_digest="abc")
    header = read_header(data, core_digest="abc")
    assert (header.seq, header.offset, header.line_length) == (6007, 1000, len(line))
    decoded = decode_state(data, header)
    assert_same(decoded, state)
    # Decimals keep their digits and exponent, not only their value.
    order = decoded.order(client_id=9001)
    assert order is not None and order.status is OrderStatus.PARTIALLY_FILLED
    assert str(order.price) == "20.0010" and str(order.quantity) == "1.50"


@pytest.mark.parametrize("name", GOLDEN)
def test_the_golden_sessions_round_trip(name: str) -> None:
    state = replay(golden(name))
    data = encode_snapshot(state, offset=10, line=b"x\n", core_digest="")
    assert_same(decode_state(data, read_header(data, core_digest="")), state)


@given(s.histories(min_size=1))
@settings(max_examples=60)
def test_any_history_round_trips(events: list[Event]) -> None:
    state = replay(events)
    data = encode_snapshot(state, offset=10, line=b"x\n", core_digest="")
    assert_same(decode_state(data, read_header(data, core_digest="")), state)


def test_the_header_refuses_what_it_must() -> None:
    state = replay(golden("spot_limit_partial_cancel"))
    data = encode_snapshot(state, offset=100, line=b"x\n", core_digest="d")
    with pytest.raises(SnapshotError, match="another build of the core"):
        read_header(data, core_digest="e")
    with pytest.raises(SnapshotError, match="torn"):
        read_header(data[:20], core_digest="d")
    with pytest.raises(SnapshotError, match="torn"):
        read_header(b"", core_digest="d")
    with pytest.raises(SnapshotError, match="checksum"):
        read_header(data[:-1], core_digest="d")
    with pytest.raises(SnapshotError, match="not an oms snapshot"):
        read_header(b"{" + data[1:], core_digest="d")
    with pytest.raises(ValueError, match="at least one event"):
        encode_snapshot(State(), offset=10, line=b"x\n", core_digest="d")


# --- resuming equals replaying: the property ---------------------------------------------------


@given(events=s.histories(min_size=1, max_size=60), data=st.data())
@settings(max_examples=40)
def test_resume_at_any_cut_equals_full_replay(events: list[Event], data: st.DataObject) -> None:
    cut = data.draw(st.integers(1, len(events)), label="cut")
    with tempfile.TemporaryDirectory() as scratch:
        path, _ = session_with_snapshot(Path(scratch), events, cut)
        engine = open_engine(path)
        try:
            assert engine.resumed_from is not None, engine.snapshot_report
            assert engine.replayed_at_open == len(events) - cut
            assert_same(engine.state, replay(events))
        finally:
            engine.close()
        replayed, reader = replay_file(str(path), use_snapshots=True)
        assert reader.last_seq == len(events)
        assert_same(replayed, replay(events))


@functools.cache
def trading_log() -> tuple[bytes, tuple[LogMark, ...], State]:
    """3,000 bench events logged: the file's bytes, the mark of each seq, the final state."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "session.jsonl"
        marks = []
        with EventLog.open(path, fsync=Fsync.never()) as log:
            for event in bench(3000):
                log.append(event)
                mark = log.mark()
                assert mark is not None
                marks.append(mark)
        return path.read_bytes(), tuple(marks), full_replay(path)


@given(cut=st.integers(1, 3000))
@settings(max_examples=25)
def test_resume_at_any_cut_of_a_trading_session_equals_full_replay(cut: int) -> None:
    data, marks, final = trading_log()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "session.jsonl"
        path.write_bytes(data)
        write_snapshot(path, replay(bench(3000)[:cut]), marks[cut - 1])
        engine = open_engine(path)
        try:
            assert engine.resumed_from is not None, engine.snapshot_report
            assert engine.replayed_at_open == 3000 - cut
            assert_same(engine.state, final)
        finally:
            engine.close()


# --- bad snapshots are ignored, reported, and the log replayed --------------------------------


def _torn(path: Path, snap: Path) -> None:
    snap.write_bytes(snap.read_bytes()[:-100])


def _flipped(path: Path, snap: Path) -> None:
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0x01
    snap.write_bytes(bytes(data))


def _log_truncated(path: Path, snap: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:200]))  # below the snapshot's seq 300


def _log_truncated_and_regrown(path: Path, snap: Path) -> None:
    # Another session at the same path, as long as the first: the covered line is not it.
    other = [*bench(400)[:200], *session_events(200, seed=99)]
    path.unlink()
    write_log(path, other, 1)


def _resigned(data: bytes, at: int) -> bytes:
    """`data` with the checksum of the line holding byte `at` made to match its content
    again: the log is changed, but every line still reads (as a rewritten log would)."""
    begin = data.rindex(b"\n", 0, at) + 1
    end = data.index(b"\n", at) + 1
    return data[:begin] + resealed(data[begin:end]) + data[end:]


def _covered_line_changed(path: Path, snap: Path) -> None:
    header = read_header(snap.read_bytes(), core_digest=CORE_DIGEST)
    data = bytearray(path.read_bytes())
    line_start = header.offset - header.line_length
    at = data.index(b'"recv_time_us":', line_start) + len(b'"recv_time_us":')
    data[at] = ord("1") if data[at] != ord("1") else ord("2")  # same length, other bytes
    path.write_bytes(_resigned(bytes(data), at))


def _earlier_line_shifted(path: Path, snap: Path) -> None:
    data = path.read_bytes()
    # One byte less in an earlier line: the covered line no longer ends at the offset.
    at = data.index(b'"recv_time_us":', 2000) + len(b'"recv_time_us":')
    path.write_bytes(_resigned(data[:at] + data[at + 1 :], at))


def _renamed(path: Path, snap: Path) -> None:
    snap.rename(snap.with_name(f"{299:020d}.snapshot"))


def _garbage(path: Path, snap: Path) -> None:
    snap.write_bytes(b"not a snapshot at all")


BAD = {
    "torn": (_torn, "checksum mismatch"),
    "a flipped byte": (_flipped, "checksum mismatch"),
    "garbage": (_garbage, "not an oms snapshot"),
    "renamed to another seq": (_renamed, "named for seq 299 but holds seq 300"),
    "log truncated below it": (_log_truncated, "which has"),
    "log rewritten": (_log_truncated_and_regrown, "the log was changed"),
    "covered line changed": (_covered_line_changed, "the log was changed"),
    "an earlier line shifted": (_earlier_line_shifted, "the log was changed"),
}


@pytest.mark.parametrize("damage", list(BAD))
def test_a_bad_snapshot_is_ignored_and_the_full_log_replayed(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spoil, reason = BAD[damage]
    path, snap = session_with_snapshot(tmp_path, cut=300)
    spoil(path, snap)
    (snap,) = (p for _, p in list_snapshots(path))
    expected = full_replay(path)

    resume, ignored = find_snapshot(path, retain_finished=expected.retain_finished)
    assert resume is None
    assert [i.path for i in ignored] == [snap] and reason in ignored[0].reason

    # The replay CLI: reports it on stderr, exit 0, the state of the full log; writes nothing.
    before = sorted(os.listdir(snapshot_dir(path)))
    out_full = _cli(path, "--json", "--full")
    out = _cli(path, "--json", expect_err=f"{snap}: snapshot ignored: ")
    assert out == out_full
    assert sorted(os.listdir(snapshot_dir(path))) == before

    # The engine: the same, logged on `oms.snapshot`; as the writer it removes the file.
    with caplog.at_level(logging.WARNING, logger="oms.snapshot"):
        engine = open_engine(path, SnapshotPolicy(every=1000))
    try:
        assert engine.resumed_from is None
        assert [i.path for i in engine.snapshot_report] == [snap]
        assert reason in engine.snapshot_report[0].reason
        assert any(r.name == "oms.snapshot" and str(snap) in r.getMessage() for r in caplog.records)
        assert_same(engine.state, expected)
        assert engine.replayed_at_open == expected.last_seq
        assert not snap.exists()
    finally:
        engine.close()


def _cli(path: Path, *args: str, expect_err: str = "") -> str:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = replay_main([str(path), *args])
    assert code == 0, err.getvalue()
    if expect_err:
        assert expect_err in err.getvalue()
        assert len(err.getvalue().splitlines()) == 1
    else:
        assert err.getvalue() == ""
    return out.getvalue()


def test_a_snapshot_naming_the_wrong_line_is_ignored(tmp_path: Path) -> None:
    """Checks that only a buggy writer could fail: the line it covers is another event's,
    or the covered bytes are there but no longer start a line (two lines merged)."""
    events = bench(400)
    path = tmp_path / "session.jsonl"
    _state, mark_299 = write_log(path, events, 299)
    data = encode_snapshot(
        replay(events[:300]), offset=mark_299.offset, line=mark_299.line, core_digest=CORE_DIGEST
    )
    snapshot_dir(path).mkdir()
    (snapshot_dir(path) / f"{300:020d}.snapshot").write_bytes(data)
    resume, (item,) = find_snapshot(path, retain_finished=10_000)
    assert resume is None and "holds seq 299, not 300" in item.reason

    (tmp_path / "merged").mkdir()
    path, snap = session_with_snapshot(tmp_path / "merged", cut=300)
    header = read_header(snap.read_bytes(), core_digest=CORE_DIGEST)
    log = bytearray(path.read_bytes())
    before = header.offset - header.line_length - 1
    assert log[before : before + 1] == b"\n"
    log[before] = ord(" ")
    path.write_bytes(bytes(log))
    resume, (item,) = find_snapshot(path, retain_finished=10_000)
    assert resume is None and "no line starting at byte" in item.reason


@pytest.mark.parametrize(
    ("what", "reason"),
    [
        ("reducer version", "reducer version 999"),
        ("core digest", "another build of the core"),
        ("event schema", "event schema versions differ: OrderFilled"),
        ("retention", "made for retain_finished 10000, not 50"),
    ],
)
def test_a_snapshot_of_another_version_is_ignored(
    what: str, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = bench(400)
    path = tmp_path / "session.jsonl"
    state, mark = write_log(path, events, 300)
    with monkeypatch.context() as patch:
        if what == "reducer version":
            patch.setattr(core_snapshot, "REDUCER_VERSION", 999)
        elif what == "core digest":
            patch.setattr(shell_snapshot, "CORE_DIGEST", "another")
        elif what == "event schema":
            patch.setitem(SCHEMA_VERSION, "OrderFilled", 2)
        write_snapshot(path, state, mark)
    retain = 50 if what == "retention" else state.retain_finished
    engine = Engine.open(path, fsync=Fsync.never(), retain_finished=retain, snapshots=OFF)
    try:
        assert engine.resumed_from is None
        (item,) = engine.snapshot_report
        assert reason in item.reason
        assert_same(engine.state, full_replay(path, retain))
    finally:
        engine.close()


def test_the_newest_valid_snapshot_is_used(tmp_path: Path) -> None:
    events = bench(400)
    path = tmp_path / "session.jsonl"
    marks = {}
    with EventLog.open(path, fsync=Fsync.never()) as log:
        for number, event in enumerate(events, start=1):
            log.append(event)
            marks[number] = log.mark()
    for cut in (100, 200, 300):
        mark = marks[cut]
        assert mark is not None
        write_snapshot(path, replay(events[:cut]), mark, keep=5)
    newest = list_snapshots(path)[0][1]
    _flipped(path, newest)

    engine = open_engine(path)
    try:
        assert engine.resumed_from == snapshot_dir(path) / f"{200:020d}.snapshot"
        assert engine.replayed_at_open == 200
        assert [i.path for i in engine.snapshot_report] == [newest]
        assert_same(engine.state, replay(events))
    finally:
        engine.close()


def test_a_snapshot_the_log_does_not_go_on_from_is_dropped_for_the_full_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Valid when checked, but the log changed before it was read on from (simulated: the
    check's answer names a line the log does not hold there): the whole log is read."""
    path, snap = session_with_snapshot(tmp_path, cut=300)
    resume, _ = find_snapshot(path, retain_finished=10_000)
    assert resume is not None
    stale = attrs.evolve(resume, mark=attrs.evolve(resume.mark, line=b"{}\n"))
    for module in ("oms.engine", "oms.replay"):
        monkeypatch.setattr(f"{module}.find_snapshot", lambda *a, **k: (stale, []))

    out = _cli(path, "--json", expect_err=f"{snap}: snapshot ignored: resuming from it failed")
    assert out == _cli(path, "--json", "--full")
    engine = open_engine(path)
    try:
        assert engine.resumed_from is None and engine.replayed_at_open == 400
        (item,) = engine.snapshot_report
        assert item.path == snap and item.reason.startswith("resuming from it failed: ValueError")
        assert_same(engine.state, replay(bench(400)))
    finally:
        engine.close()


def test_snapshots_none_neither_reads_nor_writes(tmp_path: Path) -> None:
    path, _snap = session_with_snapshot(tmp_path)
    engine = Engine.open(path, fsync=Fsync.never(), snapshots=None)
    try:
        assert engine.resumed_from is None and engine.snapshot_report == []
        assert engine.replayed_at_open == 400
        for event in bench(700)[400:]:
            engine.record(event)
        assert not engine.snapshot_due
    finally:
        engine.close()
    assert [seq for seq, _ in list_snapshots(path)] == [300]


# --- crashes while writing, and the log's own repairs ----------------------------------------


def test_open_after_a_crash_in_the_middle_of_a_snapshot_write(tmp_path: Path) -> None:
    path, snap = session_with_snapshot(tmp_path, cut=300)
    # A second write died half way: its temporary file holds part of a newer snapshot.
    stray = snapshot_dir(path) / f".{400:020d}.snapshot.123.abcd.tmp"
    stray.write_bytes(snap.read_bytes()[:1000])
    assert stray_files(path) == [stray]

    out = _cli(path, "--json")  # a reader neither uses nor touches it
    assert stray.exists()
    assert out == _cli(path, "--json", "--full")

    engine = open_engine(path, SnapshotPolicy(every=1000))
    try:
        assert engine.resumed_from == snap and engine.snapshot_report == []
        assert_same(engine.state, full_replay(path))
        assert not stray.exists()  # the writer cleans up
    finally:
        engine.close()


def test_a_torn_log_tail_after_the_snapshot_is_cut_as_usual(tmp_path: Path) -> None:
    path, snap = session_with_snapshot(tmp_path, cut=300)
    data = path.read_bytes()
    path.write_bytes(data[:-50])  # the last line torn
    engine = open_engine(path)
    try:
        assert engine.resumed_from == snap
        assert engine.torn is not None and engine.torn.line == 401
        assert engine.state.last_seq == 399
        assert path.stat().st_size == engine.torn.offset  # cut off
        assert_same(engine.state, replay(bench(400)[:399]))
        engine.record(bench(400)[399])
    finally:
        engine.close()
    assert path.read_bytes() == data


def test_a_snapshot_after_the_lost_newline_was_restored(tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    write_log(path, bench(300), 1)
    path.write_bytes(path.read_bytes()[:-1])  # the last line's newline lost in a crash
    engine = open_engine(path, SnapshotPolicy(every=1000))
    try:
        assert engine.write_snapshot() is not None
    finally:
        engine.close()
    engine = open_engine(path)
    try:
        assert engine.resumed_from is not None and engine.replayed_at_open == 0
        assert_same(engine.state, replay(bench(300)))
    finally:
        engine.close()


def test_a_bad_line_after_the_snapshot_is_the_same_error_as_without(tmp_path: Path) -> None:
    path, _snap = session_with_snapshot(tmp_path, cut=300)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[350] = lines[350].replace(b'"seq":350', b'"seq":"350"')
    path.write_bytes(b"".join(lines))
    with pytest.raises(LogReadError) as with_snapshot:
        open_engine(path)
    with pytest.raises(LogReadError) as without:
        open_engine(path, None)
    assert str(with_snapshot.value) == str(without.value)
    assert str(without.value).startswith(f"{path}:351: ")


def test_resuming_reads_only_the_tail(tmp_path: Path) -> None:
    """A damaged line before the snapshot is not read again: proof the snapshot is used
    (and the limit of what resuming checks; `--full` reads it all)."""
    path, _snap = session_with_snapshot(tmp_path, cut=300)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[100] = b"{" + lines[100][1:].replace(b"{", b"[", 1)
    path.write_bytes(b"".join(lines))
    state, _reader = replay_file(str(path), use_snapshots=True)
    assert state.last_seq == 400
    with pytest.raises(LogReadError, match=":101: "):
        replay_file(str(path))


def test_the_log_reader_checks_its_start_mark(tmp_path: Path) -> None:
    events = bench(400)
    path = tmp_path / "session.jsonl"
    _state, mark = write_log(path, events, 300)
    reader = LogReader(path, start=mark)
    assert [seq for seq, _ in reader] == list(range(301, 401))
    assert (reader.end_offset, reader.last_seq) == (path.stat().st_size, 400)
    full = LogReader(path)
    assert [e for _, e in full][300:] == list(LogReader(path, start=mark).events())
    assert full.last_line == reader.last_line

    for wrong in (
        attrs.evolve(mark, offset=mark.offset + 1),
        attrs.evolve(mark, line=mark.line.replace(b"1", b"2", 1)),
        attrs.evolve(mark, offset=path.stat().st_size + 100),
        attrs.evolve(mark, offset=10, line=b"x\n"),
    ):
        with pytest.raises(ValueError, match=str(path)):
            list(LogReader(path, start=wrong))
    with pytest.raises(ValueError, match="does not exist"):
        list(LogReader(tmp_path / "missing.jsonl", start=mark))
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        list(LogReader(tmp_path / "empty.jsonl", start=mark))


# --- writing: the engine's policy ------------------------------------------------------------


def record_all(engine: Engine, events: Sequence[Event]) -> None:
    """Record as a program without `Engine.run` does: write each snapshot when due."""
    for event in events:
        engine.record(event)
        if engine.snapshot_due:
            assert engine.write_snapshot() is not None


def test_the_engine_writes_every_n_and_keeps_the_newest(tmp_path: Path) -> None:
    events = bench(560)
    path = tmp_path / "session.jsonl"
    engine = open_engine(path, SnapshotPolicy(every=100, keep=3))
    try:
        record_all(engine, events)
        assert [seq for seq, _ in list_snapshots(path)] == [500, 400, 300]
        assert engine.last_snapshot == list_snapshots(path)[0][1]
        assert not engine.snapshot_due
        assert engine.write_snapshot() is not None  # on demand, at 560
    finally:
        engine.close()
    assert [seq for seq, _ in list_snapshots(path)] == [560, 500, 400]
    assert stray_files(path) == []
    for seq, snap in list_snapshots(path):
        header = read_header(snap.read_bytes(), core_digest=CORE_DIGEST)
        assert header.seq == seq
        assert_same(decode_state(snap.read_bytes(), header), replay(events[:seq]))


def test_the_engine_goes_on_appending_after_resuming(tmp_path: Path) -> None:
    events = bench(900)
    path = tmp_path / "session.jsonl"
    engine = open_engine(path, SnapshotPolicy(every=250))
    record_all(engine, events[:300])
    engine.close()
    assert [seq for seq, _ in list_snapshots(path)] == [250]

    engine = open_engine(path, SnapshotPolicy(every=250))
    try:
        assert engine.resumed_from is not None and engine.replayed_at_open == 50
        record_all(engine, events[300:600])
        assert engine.state.last_seq == 600
        assert [seq for seq, _ in list_snapshots(path)] == [500, 250]
    finally:
        engine.close()

    engine = open_engine(path, SnapshotPolicy(every=250))
    try:
        assert engine.replayed_at_open == 100
        record_all(engine, events[600:])
        live = engine.state
    finally:
        engine.close()
    assert [seq for seq, _ in LogReader(path)] == list(range(1, 901))
    assert_same(live, full_replay(path))
    assert_same(live, replay(events))


def test_close_writes_a_due_snapshot_and_only_then(tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    engine = open_engine(path, SnapshotPolicy(every=100))
    for event in bench(99):
        engine.record(event)
    assert not engine.snapshot_due
    engine.close()
    assert not snapshot_dir(path).exists()

    engine = open_engine(path, SnapshotPolicy(every=100))
    for event in bench(150)[99:]:
        engine.record(event)
    assert engine.snapshot_due
    engine.close()
    assert [seq for seq, _ in list_snapshots(path)] == [150]


def test_a_long_tail_at_open_makes_a_snapshot_due(tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    write_log(path, bench(300), 1)
    engine = open_engine(path, SnapshotPolicy(every=100))
    assert engine.snapshot_due
    engine.close()
    assert [seq for seq, _ in list_snapshots(path)] == [300]


def test_a_failed_write_is_reported_and_the_engine_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "session.jsonl"
    snapshot_dir(path).write_bytes(b"a file where the directory should be")
    engine = open_engine(path, SnapshotPolicy(every=50))
    with caplog.at_level(logging.WARNING, logger="oms.snapshot"):
        for event in bench(120):
            engine.record(event)
        engine.close()
    assert engine.snapshot_errors == 1
    assert isinstance(engine.last_snapshot_error, OSError)
    assert any("writing a snapshot" in r.getMessage() for r in caplog.records)
    assert_same(full_replay(path), replay(bench(120)))


async def test_run_writes_due_snapshots_from_a_worker_thread(tmp_path: Path) -> None:
    events = bench(700)
    path = tmp_path / "session.jsonl"
    engine = Engine.open(path, fsync=Fsync.group(), snapshots=SnapshotPolicy(every=200))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.run)
            for number, event in enumerate(events, start=1):
                engine.record(event)  # never waits for a snapshot
                if number % 200 == 0:
                    await wait_for(lambda: not engine.snapshot_due, "the snapshot written")
            nursery.cancel_scope.cancel()
    finally:
        engine.close()
    assert engine.snapshot_errors == 0
    assert [seq for seq, _ in list_snapshots(path)] == [600, 400]
    resume, ignored = find_snapshot(path, retain_finished=engine.state.retain_finished)
    assert ignored == [] and resume is not None and resume.mark.seq == 600
    assert_same(resume.state, replay(events[:600]))


# --- python -m oms.replay ------------------------------------------------------------------


def test_replay_cli_default_and_full_agree(tmp_path: Path) -> None:
    path, _snap = session_with_snapshot(tmp_path, cut=300)
    assert _cli(path) == _cli(path, "--full")
    assert _cli(path, "--json") == _cli(path, "--json", "--full")
    for until in ("0", "150", "300", "301", "399", "5000"):
        assert _cli(path, "--json", "--until", until) == _cli(
            path, "--json", "--until", until, "--full"
        )


def test_replay_cli_until_ignores_snapshots_beyond_it(tmp_path: Path) -> None:
    path, _snap = session_with_snapshot(tmp_path, cut=300)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[100] = b"{" + lines[100][1:].replace(b"{", b"[", 1)  # line 101, seq 100: damaged
    path.write_bytes(b"".join(lines))
    _cli(path, "--until", "300")  # resumes at 300: line 101 is not read
    for args in (["--until", "299"], ["--full"]):
        code = replay_main([str(path), *args])
        assert code == 1


def test_replay_cli_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    write_log(path, bench(400), 1)
    before = path.read_bytes()
    _cli(path)
    _cli(path, "--json", "--until", "350")
    assert path.read_bytes() == before
    assert not snapshot_dir(path).exists()


def test_decimals_survive_the_engine_round_trip(tmp_path: Path) -> None:
    events = [*s.markets(), s.submit(1, Side.BID, "0.0010", "100.00")]
    path, _snap = session_with_snapshot(tmp_path, events, cut=len(events))
    engine = open_engine(path)
    try:
        order = engine.state.order(client_id=1)
        assert order is not None and engine.resumed_from is not None
        assert str(order.quantity) == "0.0010" and order.quantity == Decimal("0.001")
        assert str(order.price) == "100.00"
    finally:
        engine.close()


def test_msgspec_is_what_we_think() -> None:
    """The encoding relies on msgspec writing decimals as text and sorting sets."""
    encoder = msgspec.msgpack.Encoder(decimal_format="string", order="deterministic")
    assert msgspec.msgpack.decode(encoder.encode(Decimal("1.50E+3"))) == "1.50E+3"
    assert msgspec.msgpack.decode(encoder.encode(frozenset({3, 1, 2}))) == [1, 2, 3]


def test_copying_a_log_and_its_snapshots_keeps_them_valid(tmp_path: Path) -> None:
    path, _snap = session_with_snapshot(tmp_path, cut=300)
    other = tmp_path / "copy" / "renamed.jsonl"
    other.parent.mkdir()
    shutil.copyfile(path, other)
    shutil.copytree(snapshot_dir(path), snapshot_dir(other))
    engine = open_engine(other)
    try:
        assert engine.resumed_from is not None
        assert_same(engine.state, full_replay(path))
    finally:
        engine.close()


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_format_log_resumes_from_its_snapshot(tmp_path: Path, version: int) -> None:
    # An old log is appended to in its own format; its snapshots name that format, and the
    # line they cover is read in it.
    path = tmp_path / "old.jsonl"
    shutil.copyfile(REPLAY_DIR / f"v{version}" / "perp_position_lifecycle.jsonl", path)
    engine = Engine.open(path, fsync=Fsync.never(), snapshots=SnapshotPolicy(every=0))
    assert engine.log is not None and engine.log.version == version
    assert engine.write_snapshot() is not None
    full = engine.state
    engine.close()
    again = Engine.open(path, fsync=Fsync.never(), snapshots=SnapshotPolicy(every=0))
    try:
        assert again.resumed_from is not None, again.snapshot_report
        assert again.state == full
        assert state_hash(again.state) == state_hash(full)
    finally:
        again.close()


def test_close_writes_one_when_enough_came_after_the_newest(tmp_path: Path) -> None:
    # A clean stop leaves a snapshot at the end, so the next open reads no tail at all.
    path = tmp_path / "session.jsonl"
    engine = open_engine(path, SnapshotPolicy(every=1000, at_close=50))
    for event in bench(49):
        engine.record(event)
    engine.close()
    assert not snapshot_dir(path).exists()  # 49 < 50
    engine = open_engine(path, SnapshotPolicy(every=1000, at_close=50))
    for event in bench(120)[49:]:
        engine.record(event)
    assert not engine.snapshot_due
    engine.close()
    assert [seq for seq, _ in list_snapshots(path)] == [120]
    again = open_engine(path, SnapshotPolicy(every=1000, at_close=50))
    try:
        assert again.resumed_from is not None and again.replayed_at_open == 0
        assert again.state == replay(bench(120))
    finally:
        again.close()
    never = open_engine(path, SnapshotPolicy(every=1000, at_close=0))
    for event in bench(300)[120:]:
        never.record(event)
    never.close()
    assert [seq for seq, _ in list_snapshots(path)] == [120]
