"""The event log file (oms.log): round trips, crash safety, corruption, fsync policies,
streaming reads."""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import attrs
import msgspec
import pytest

from oms.core.events import Event, MessageNotUnderstood, OrderExpired, OrderFilled
from oms.core.serialization import LogFormatError, encode_header, encode_line
from oms.core.values import Side, Source, VenueStatus
from oms.log import EventLog, Fsync, LogReader, LogReadError
from tests.helpers import REPLAY_DIR, resealed

T0 = 1_757_620_800_000_000


def golden_events() -> list[Event]:
    events: list[Event] = []
    for path in sorted(REPLAY_DIR.glob("*.jsonl")):
        events += LogReader(path).events()
    return events


def fill(n: int, *, raw_size: int = 0) -> OrderFilled:
    raw = json.dumps({"stream": "account.orderUpdate", "data": {"e": "orderFill", "t": n}})
    if raw_size:
        raw += " " * max(raw_size - len(raw), 0)
    return OrderFilled(
        source=Source.WS,
        recv_time_us=T0 + n,
        venue_time_us=T0 + n - 1,
        raw=raw,
        symbol="SOL_USDC",
        venue_id="8284661101",
        trade_id=n,
        side=Side.BID,
        quantity=Decimal("0.01"),
        price=Decimal("150.25"),
        fee=Decimal("0.000008"),
        fee_asset="SOL",
        maker=True,
        cum_quantity=Decimal("0.01") * n,
        status=VenueStatus.PARTIALLY_FILLED,
    )


# Multi-byte UTF-8 in the last line: cuts land inside characters too.
LAST = OrderExpired(
    source=Source.WS,
    recv_time_us=T0 + 99,
    raw='{"e":"orderExpired","R":"PostOnlyTaker","note":"échéance — 期限切れ"}',
    symbol="SOL_USDC",
    venue_id="8284661101",
    reason="PostOnlyTaker — 期限切れ",
)
EXTRA = MessageNotUnderstood(source=Source.WS, recv_time_us=T0 + 500, raw="?", reason="later")


def write_log(path: Path, events: list[Event]) -> None:
    with EventLog.open(path, fsync=Fsync.never()) as log:
        for event in events:
            log.append(event)


def last_seq(path: Path) -> int:
    reader = LogReader(path)
    for _ in reader:
        pass
    return reader.last_seq


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count os.fsync calls (and skip the real, slow, ones)."""
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    return calls


# --- round trip -----------------------------------------------------------------------------


def test_round_trip_of_every_recorded_event(tmp_path: Path) -> None:
    events = golden_events()
    assert len(events) > 50
    path = tmp_path / "all.jsonl"
    with EventLog.open(path, fsync=Fsync.never()) as log:
        seqs = [log.append(event) for event in events]
    assert seqs == list(range(1, len(events) + 1))

    reader = LogReader(path)
    read = list(reader)
    assert [seq for seq, _ in read] == seqs
    assert [event for _, event in read] == events
    assert reader.last_seq == len(events)
    assert reader.torn is None
    assert reader.end_offset == path.stat().st_size

    lines = lines_of(path)
    assert lines[0] == encode_header()
    assert [json.loads(line)["seq"] for line in lines[1:]] == seqs


def test_open_replays_existing_events_then_continues_the_seq(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_log(path, [fill(1), fill(2), fill(3)])
    seen: list[Event] = []
    with EventLog.open(path, fsync=Fsync.never(), on_event=seen.append) as log:
        assert log.last_seq == 3
        assert log.torn is None
        assert log.append(fill(4)) == 4
    assert seen == [fill(1), fill(2), fill(3)]
    assert [(seq, e) for seq, e in LogReader(path)] == [(n, fill(n)) for n in range(1, 5)]


def test_a_new_log_starts_with_the_header(tmp_path: Path) -> None:
    path = tmp_path / "new.jsonl"
    assert list(LogReader(path)) == []  # a missing file reads as empty
    with EventLog.open(path) as log:
        assert log.last_seq == 0
    assert path.read_bytes() == encode_header()
    path.write_bytes(b"")  # an empty file is a new log too
    with EventLog.open(path, fsync=Fsync.never()) as log:
        assert log.append(fill(1)) == 1
    assert list(LogReader(path)) == [(1, fill(1))]


# --- a crash mid-write ------------------------------------------------------------------------


def test_torn_last_line_at_every_byte_offset(tmp_path: Path, fsyncs: list[int]) -> None:
    events: list[Event] = [fill(1), fill(2), fill(3), LAST]
    whole = tmp_path / "whole.jsonl"
    write_log(whole, events)
    data = whole.read_bytes()
    start = len(data) - len(lines_of(whole)[-1])  # where the last line begins
    end = len(data)
    assert len(data[start:end].decode()) < end - start  # it has multi-byte characters

    for cut in range(start, end + 1):
        path = tmp_path / f"cut{cut}.jsonl"
        path.write_bytes(data[:cut])
        # Everything but the newline: the event is whole and kept.
        kept = 4 if cut >= end - 1 else 3
        torn = start < cut < end - 1

        reader = LogReader(path)
        assert [e for _, e in reader] == events[:kept], cut
        assert reader.last_seq == kept
        if torn:
            assert reader.torn is not None
            assert (reader.torn.line, reader.torn.offset, reader.torn.length) == (
                5,
                start,
                cut - start,
            )
            assert reader.end_offset == start
        else:
            assert reader.torn is None

        seen: list[Event] = []
        with EventLog.open(path, fsync=Fsync.never(), on_event=seen.append) as log:
            assert seen == events[:kept]
            assert log.last_seq == kept
            assert (log.torn is not None) is torn
            if torn:
                assert path.read_bytes() == data[:start]  # the torn line is cut off the file
            assert log.append(EXTRA) == kept + 1

        again = LogReader(path)
        assert list(again) == [*enumerate(events[:kept], start=1), (kept + 1, EXTRA)]
        assert again.torn is None
        path.unlink()


def test_torn_header_is_rewritten(tmp_path: Path, fsyncs: list[int]) -> None:
    header = encode_header()
    for cut in range(1, len(header) - 1):  # (without only its newline, the header is whole)
        path = tmp_path / "h.jsonl"
        path.write_bytes(header[:cut])
        reader = LogReader(path)
        assert list(reader) == []
        assert reader.torn is not None and reader.torn.line == 1
        with EventLog.open(path, fsync=Fsync.never()) as log:
            assert log.torn is not None
            log.append(fill(1))
        assert list(LogReader(path)) == [(1, fill(1))]


def test_an_unfinished_line_that_is_not_a_header_is_not_our_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"shopping list: eggs")  # no newline, not a log
    with pytest.raises(LogReadError) as caught:
        list(LogReader(path))
    assert caught.value.line == 1
    with pytest.raises(LogReadError):
        EventLog.open(path)
    assert path.read_bytes() == b"shopping list: eggs"  # untouched


# --- corruption -------------------------------------------------------------------------------


def _corrupt(line: bytes) -> dict[str, bytes]:
    return {
        "malformed JSON": line[: len(line) // 2] + b"\n",
        "bad UTF-8": line.replace(b'"SOL_USDC"', b'"SOL\xff_USDC"'),
        "unknown type": line.replace(b'"OrderFilled"', b'"OrderTeleported"'),
        "seq gap": line.replace(b'"seq":3', b'"seq":4'),
        "empty line": b"\n",
        "unknown field": line.replace(b'"symbol"', b'"colour":"red","symbol"'),
    }


@pytest.mark.parametrize(
    "kind",
    ["malformed JSON", "bad UTF-8", "unknown type", "seq gap", "empty line", "unknown field"],
)
def test_corruption_in_a_middle_line_names_file_and_line(tmp_path: Path, kind: str) -> None:
    good = tmp_path / "good.jsonl"
    write_log(good, [fill(n) for n in range(1, 6)])
    lines = lines_of(good)
    lines[3] = _corrupt(lines[3])[kind]  # line 4 of the file: seq 3
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(lines))
    before = path.read_bytes()

    reader = iter(LogReader(path))
    assert next(reader) == (1, fill(1))
    assert next(reader) == (2, fill(2))
    with pytest.raises(LogReadError) as caught:
        next(reader)
    assert caught.value.line == 4
    assert str(caught.value).startswith(f"{path}:4: ")
    assert "\n" not in str(caught.value)

    with pytest.raises(LogReadError) as again:
        EventLog.open(path)
    assert again.value.line == 4
    assert path.read_bytes() == before  # a corrupt log is never "repaired"


def test_a_complete_bad_last_line_is_corruption_not_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_log(path, [fill(1), fill(2)])
    with path.open("ab") as handle:
        handle.write(b'{"seq":3,"type":"OrderFilled"\n')
    with pytest.raises(LogReadError) as caught:
        list(LogReader(path))
    assert caught.value.line == 4


@pytest.mark.parametrize(
    ("first_line", "message"),
    [
        (b'{"format":"csv","version":1}\n', "not an oms event log"),
        (b'{"format":"oms-event-log","version":9}\n', "version 9 is not supported"),
        (b"hello\n", "not an oms event log header"),
        (encode_line(1, fill(1)), "not an oms event log header"),
    ],
)
def test_a_wrong_header_fails_clearly(tmp_path: Path, first_line: bytes, message: str) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(first_line + encode_line(1, fill(1)))
    with pytest.raises(LogReadError, match=message) as caught:
        list(LogReader(path))
    assert caught.value.line == 1
    assert str(caught.value).startswith(f"{path}:1: ")
    with pytest.raises(LogReadError):
        EventLog.open(path)
    assert path.read_bytes() == first_line + encode_line(1, fill(1))


# --- fsync policies ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_every_event_syncs_each_append(tmp_path: Path, fsyncs: list[int]) -> None:
    path = tmp_path / "s.jsonl"
    with EventLog.open(path, fsync=Fsync.every_event()) as log:
        fsyncs.clear()  # creating the file syncs once; count the appends only
        for n in range(1, 6):
            log.append(fill(n))
            assert log.syncs == n
            assert len(fsyncs) == n
            assert last_seq(path) == n  # written through to the file, not buffered
    assert log.syncs == 5


def settled(log: EventLog) -> EventLog:
    """`log` once its fsync thread (a background group commit) has done what was asked."""
    syncer = log._syncer
    if syncer is not None:
        syncer.wait(syncer._want)
    return log


@pytest.mark.parametrize("background", [False, True])
def test_group_commit_syncs_on_count(tmp_path: Path, fsyncs: list[int], background: bool) -> None:
    clock = FakeClock()
    policy = Fsync.group(max_events=3, max_delay=10.0, background=background)
    with EventLog.open(tmp_path / "s.jsonl", fsync=policy, clock=clock) as log:
        fsyncs.clear()
        log.append(fill(1))
        log.append(fill(2))
        assert (settled(log).syncs, len(fsyncs)) == (0, 0)
        log.append(fill(3))
        assert (settled(log).syncs, len(fsyncs)) == (1, 1)
        assert log.synced_seq == 3 and not log.unsynced
        for n in range(4, 9):
            log.append(fill(n))
        assert settled(log).syncs == 2  # after the 6th; the 7th and 8th wait
        assert log.synced_seq == 6 and log.unsynced
    assert log.syncs == 3  # closing syncs what waits
    assert last_seq(log.path) == 8


@pytest.mark.parametrize("background", [False, True])
def test_group_commit_syncs_on_delay(tmp_path: Path, fsyncs: list[int], background: bool) -> None:
    clock = FakeClock()
    policy = Fsync.group(max_events=100, max_delay=0.5, background=background)
    with EventLog.open(tmp_path / "s.jsonl", fsync=policy, clock=clock) as log:
        fsyncs.clear()
        log.poll()
        assert settled(log).syncs == 0  # nothing waiting
        log.append(fill(1))
        clock.now += 0.25
        log.append(fill(2))
        log.poll()
        assert settled(log).syncs == 0  # the oldest has waited 0.25 s
        clock.now += 0.25
        log.poll()
        assert (settled(log).syncs, len(fsyncs)) == (1, 1)  # 0.5 s: due
        log.poll()
        assert settled(log).syncs == 1  # nothing new
        # An append after the delay syncs by itself, with no poll.
        log.append(fill(3))
        clock.now += 0.75
        log.append(fill(4))
        assert (settled(log).syncs, len(fsyncs)) == (2, 2)
    assert log.syncs == 2
    assert last_seq(log.path) == 4


def test_never_does_not_fsync_but_the_data_is_in_the_file(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    path = tmp_path / "s.jsonl"
    with EventLog.open(path, fsync=Fsync.never()) as log:
        fsyncs.clear()
        for n in range(1, 51):
            log.append(fill(n))
        log.poll()
        assert (log.syncs, len(fsyncs)) == (0, 0)
    assert (log.syncs, len(fsyncs)) == (0, 0)  # not even on close
    assert [seq for seq, _ in LogReader(path)] == list(range(1, 51))


def test_explicit_sync_writes_through(tmp_path: Path, fsyncs: list[int]) -> None:
    clock = FakeClock()
    path = tmp_path / "s.jsonl"
    policy = Fsync.group(max_events=100, max_delay=60.0)
    with EventLog.open(path, fsync=policy, clock=clock) as log:
        fsyncs.clear()
        log.append(fill(1))
        log.sync()
        assert (log.syncs, len(fsyncs)) == (1, 1)
        assert last_seq(path) == 1


# --- streaming ------------------------------------------------------------------------------


def test_reading_is_lazy(tmp_path: Path) -> None:
    """The first event comes out before the rest of the file is read: a corrupt line near
    the end is only met when iteration gets there."""
    path = tmp_path / "s.jsonl"
    write_log(path, [fill(n) for n in range(1, 1001)])
    with path.open("ab") as handle:
        handle.write(b"garbage\n")
    events = iter(LogReader(path))
    assert next(events) == (1, fill(1))
    assert isinstance(LogReader(path).events(), Iterator)
    with pytest.raises(LogReadError) as caught:
        for _ in events:
            pass
    assert caught.value.line == 1002


def test_reading_a_big_log_takes_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("wb") as handle:
        handle.write(encode_header())
        for n in range(1, 6001):
            handle.write(encode_line(n, fill(n, raw_size=1000)))
    size = path.stat().st_size
    assert size > 6_000_000

    tracemalloc.start()
    try:
        events = iter(LogReader(path))
        assert next(events)[0] == 1
        _, first_peak = tracemalloc.get_traced_memory()
        count = 1
        for _seq, _event in events:
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 6000
    assert first_peak < size // 20
    assert peak < size // 10  # streaming: memory does not grow with the file


# --- integers beyond 64 bits, deep nesting (issue 7) ------------------------------------------


@pytest.mark.parametrize(
    "trade_id", [2**64, -(2**63) - 1, 10**5000], ids=["2**64", "-2**63-1", "1E+5000"]
)
def test_an_integer_beyond_64_bits_is_refused_before_anything_is_written(
    tmp_path: Path, trade_id: int
) -> None:
    path = tmp_path / "s.jsonl"
    with EventLog.open(path, fsync=Fsync.never()) as log:
        log.append(fill(1))
        with pytest.raises(LogFormatError, match="trade_id is not a 64-bit integer"):
            log.append(msgspec.structs.replace(fill(2), trade_id=trade_id))
        assert log.last_seq == 1
    assert [seq for seq, _ in LogReader(path)] == [1]


@pytest.mark.parametrize("policy", [Fsync.never(), Fsync.group(), Fsync.every_event()])
def test_an_event_that_cannot_be_written_leaves_the_last_line_as_it_was(
    tmp_path: Path, policy: Fsync
) -> None:
    # Appends encode into a reused buffer: a failure while encoding (here a lone surrogate,
    # refused by the encoder itself) must not touch the line a snapshot's mark names.
    path = tmp_path / "s.jsonl"
    with EventLog.open(path, fsync=policy) as log:
        log.append(fill(1))
        log.append(fill(2))
        mark = log.mark()
        assert mark is not None and mark.line == encode_line(2, fill(2))
        with pytest.raises(LogFormatError, match="cannot be written"):
            log.append(msgspec.structs.replace(fill(3), raw="\ud800"))
        assert log.mark() == mark
        log.append(fill(3))
        assert log.mark() == attrs.evolve(
            mark,
            seq=3,
            offset=mark.offset + len(encode_line(3, fill(3))),
            line=encode_line(3, fill(3)),
        )
    assert [seq for seq, _ in LogReader(path)] == [1, 2, 3]
    assert path.read_bytes().endswith(encode_line(3, fill(3)))


def test_the_64_bit_extremes_round_trip(tmp_path: Path) -> None:
    events: list[Event] = [
        msgspec.structs.replace(fill(1), trade_id=2**64 - 1),
        msgspec.structs.replace(fill(2), trade_id=-(2**63)),
    ]
    write_log(tmp_path / "s.jsonl", events)
    assert list(LogReader(tmp_path / "s.jsonl").events()) == events


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (b'"trade_id":18446744073709551616', "OrderFilled: field trade_id is not a 64-bit integer"),
        (b'"trade_id":' + b"[" * 5000 + b"]" * 5000, "JSON nested too deeply"),
        (b'"trade_id":1E+1000000', "Number out of range"),
    ],
)
def test_a_huge_or_deep_value_in_a_line_is_a_log_read_error(
    tmp_path: Path, damage: bytes, message: str
) -> None:
    path = tmp_path / "s.jsonl"
    write_log(path, [fill(1), fill(2)])
    lines = lines_of(path)
    # Forged: the checksum is made to match, so the value itself must be refused.
    lines[1] = _resigned(lines[1].replace(b'"trade_id":1', damage))
    path.write_bytes(b"".join(lines))
    with pytest.raises(LogReadError) as caught:
        EventLog.open(path)
    assert caught.value.line == 2
    assert message in caught.value.message
    assert len(caught.value.message) <= 300
    assert path.read_bytes() == b"".join(lines)  # corruption is reported, never cut


def _resigned(line: bytes) -> bytes:
    """A line with its checksum (version 2) or seal (3) made anew for its (edited) content."""
    return resealed(line)


def test_a_damaged_line_fails_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_log(path, [fill(1), fill(2), fill(3)])
    lines = lines_of(path)
    assert b'"quantity":"0.01"' in lines[2]
    lines[2] = lines[2].replace(b'"quantity":"0.01"', b'"quantity":"0.07"')  # still valid JSON
    path.write_bytes(b"".join(lines))
    with pytest.raises(LogReadError, match="checksum mismatch") as caught:
        EventLog.open(path)
    assert caught.value.line == 3


def test_group_commit_hands_every_line_to_the_os_at_once(tmp_path: Path) -> None:
    # Between fsyncs the lines are not in this process's buffer: a crash of the process (not
    # of the machine) loses none of them. Another reader sees each as soon as it is appended.
    path = tmp_path / "s.jsonl"
    policy = Fsync.group(max_events=1000, max_delay=60.0)
    with EventLog.open(path, fsync=policy, clock=FakeClock()) as log:
        for n in range(1, 6):
            log.append(fill(n))
            assert log.syncs == 0
            assert last_seq(path) == n


def test_a_background_group_commit_never_makes_append_wait_for_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    disk = threading.Event()  # the disk answers when this is set
    callers: list[str] = []

    def slow_fsync(fd: int) -> None:
        callers.append(threading.current_thread().name)
        assert disk.wait(10)

    path = tmp_path / "s.jsonl"
    log = EventLog.open(path, fsync=Fsync.group(max_events=2, max_delay=60.0))
    monkeypatch.setattr(os, "fsync", slow_fsync)
    for n in range(1, 11):  # five groups fall due while the first fsync hangs
        log.append(fill(n))
    assert log.last_seq == 10 and log.synced_seq == 0 and log.unsynced
    assert last_seq(path) == 10  # and every line is with the OS
    disk.set()
    log.sync()  # waits for the disk
    assert log.synced_seq == 10 and not log.unsynced
    assert callers and all(name.startswith("oms-fsync") for name in callers)
    log.close()


def test_a_failed_background_fsync_is_raised_by_the_next_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    log = EventLog.open(tmp_path / "s.jsonl", fsync=Fsync.group(max_events=1, max_delay=60.0))
    monkeypatch.setattr(os, "fsync", broken)
    log.append(fill(1))  # its fsync fails in the thread
    with pytest.raises(OSError, match="Input/output error"):
        log.sync()
    with pytest.raises(OSError, match="Input/output error"):
        log.append(fill(2))
    assert log.synced_seq == 0 and log.last_seq == 1  # nothing more was appended
    monkeypatch.undo()
    with pytest.raises(OSError):
        log.close()  # the failure is not forgotten on close either
    assert log.closed


# Dropping a log unclosed is the user's mistake, and Python says so (a ResourceWarning).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_log_dropped_without_close_ends_its_fsync_thread(tmp_path: Path) -> None:
    import gc
    import threading
    import weakref

    def fsync_threads() -> int:
        return sum(t.name.startswith("oms-fsync d.jsonl") for t in threading.enumerate())

    log = EventLog.open(tmp_path / "d.jsonl", fsync=Fsync.group(max_events=1, max_delay=60.0))
    log.append(fill(1))  # starts the thread
    assert fsync_threads() == 1
    dropped = weakref.ref(log)
    del log
    gc.collect()
    assert dropped() is None  # the thread does not keep the log alive
    for _ in range(200):
        if not fsync_threads():
            break
        threading.Event().wait(0.01)
    assert fsync_threads() == 0
    assert last_seq(tmp_path / "d.jsonl") == 1
