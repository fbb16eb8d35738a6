"""A log open for appending is a mapping of its file, extended ahead of the writer (oms.log):
what a reader, a crash and a full disk see."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from oms.core.serialization import encode_line
from oms.log import PREALLOCATE_BYTES, EventLog, Fsync, LogReader
from tests.helpers import ROOT
from tests.shell.test_log import fill


def read_all(path: Path) -> tuple[list[int], LogReader]:
    reader = LogReader(path)
    return [seq for seq, _ in reader], reader


def test_an_open_log_ends_in_zeros_that_readers_skip(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with EventLog.open(path, fsync=Fsync.group()) as log:
        for n in range(1, 101):
            log.append(fill(n))
        # Every line is in the file (the page cache) already, with the allocated tail after.
        tail = path.read_bytes()[log.offset :]
        assert len(tail) >= PREALLOCATE_BYTES - log.offset and tail.count(0) == len(tail)
        seqs, reader = read_all(path)
        assert seqs == list(range(1, 101))
        assert reader.torn is None and reader.end_offset == log.offset
    # Closing cuts the tail: the file is its lines and nothing else.
    assert path.stat().st_size == log.offset
    assert path.read_bytes().endswith(b"\n")


def test_after_a_crash_the_next_open_cuts_the_tail_and_appends_after_the_last_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.jsonl"
    log = EventLog.open(path, fsync=Fsync.group())
    for n in range(1, 11):
        log.append(fill(n))
    end = log.offset
    # A crash: the process dies without closing; what it appended is in the file.
    with open(path, "r+b") as copy:
        image = copy.read()
    log.close()
    path.write_bytes(image)
    assert len(image) > end and not image[end:].strip(b"\0")

    reopened = EventLog.open(path, fsync=Fsync.group())
    assert reopened.torn is None and reopened.last_seq == 10
    reopened.append(fill(11))
    reopened.close()
    seqs, reader = read_all(path)
    assert seqs == list(range(1, 12)) and reader.torn is None
    assert path.stat().st_size == reader.end_offset


def test_a_line_cut_short_before_the_zeros_is_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with EventLog.open(path, fsync=Fsync.group()) as log:
        for n in range(1, 4):
            log.append(fill(n))
        end = log.offset
    # The image of a process killed while it copied line 4 into the mapping.
    partial = encode_line(4, fill(4))[:57]
    with open(path, "ab") as file:
        file.write(partial + b"\0" * 10_000)
    reopened = EventLog.open(path, fsync=Fsync.group())
    assert reopened.torn is not None and reopened.torn.offset == end
    assert reopened.last_seq == 3
    reopened.append(fill(4))
    reopened.close()
    assert read_all(path)[0] == [1, 2, 3, 4]


def test_appends_past_the_allocated_tail_map_the_next_part(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    big = fill(1, raw_size=200_000)
    count = PREALLOCATE_BYTES // 200_000 * 3  # three times the first allocation
    with EventLog.open(path, fsync=Fsync.group()) as log:
        for n in range(1, count + 1):
            log.append(fill(n, raw_size=200_000) if n > 1 else big)
    seqs, reader = read_all(path)
    assert seqs == list(range(1, count + 1)) and reader.torn is None
    assert path.stat().st_size == reader.end_offset


def test_where_the_disk_cannot_allocate_ahead_lines_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(os, "posix_fallocate", refuse)
    path = tmp_path / "s.jsonl"
    with EventLog.open(path, fsync=Fsync.group()) as log:
        for n in range(1, 6):
            log.append(fill(n))
        assert path.stat().st_size == log.offset  # no tail: written line by line
    assert read_all(path)[0] == [1, 2, 3, 4, 5]


def test_a_full_disk_fails_the_append_that_needs_the_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.jsonl"
    log = EventLog.open(path, fsync=Fsync.group())
    log.append(fill(1))

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError, match="No space"):
        log.append(fill(2, raw_size=PREALLOCATE_BYTES))  # beyond the allocated tail
    assert log.last_seq == 1
    monkeypatch.undo()
    log.append(fill(2))  # space again: the log goes on where it was
    log.close()
    assert read_all(path)[0] == [1, 2]


_CHILD = textwrap.dedent(
    """
    import sys, time
    from oms.log import EventLog, Fsync
    from tests.shell.test_log import fill

    log = EventLog.open(sys.argv[1], fsync=Fsync.group())
    pause = int(sys.argv[2])
    for n in range(1, 1_000_000):
        log.append(fill(n))
        if n % 97 == 0 or n == pause:
            print(n, flush=True)  # appended: `append` returned for every seq up to n
        if n == pause:
            time.sleep(60)  # killed here, just after an append returned
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no SIGKILL on this platform")
@pytest.mark.parametrize(("after", "pause"), [(1, 0), (180, 0), (1, 1), (1, 5_000)])
def test_a_killed_writer_loses_nothing_append_returned_for(
    tmp_path: Path, after: int, pause: int
) -> None:
    """Killed while it appends (`pause` 0: anywhere, even inside a copy) or just after an
    append returned (`pause`: that seq): every seq printed is in the file."""
    path = tmp_path / "s.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(pause)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert child.stdout is not None
    last = 0
    try:
        while after or (pause and last < pause):
            line = child.stdout.readline()
            assert line, "the writer stopped early"
            last = int(line)
            after = max(after - 1, 0)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.communicate()
    seqs, _ = read_all(path)
    assert seqs and seqs[-1] >= last and seqs == list(range(1, len(seqs) + 1))
    if pause:
        assert seqs[-1] == pause
    log = EventLog.open(path, fsync=Fsync.group())  # and it opens to append on
    assert log.last_seq == seqs[-1]
    log.append(fill(log.last_seq + 1))
    log.close()
    assert read_all(path)[0] == list(range(1, len(seqs) + 2))


def test_a_line_read_while_it_is_copied_is_torn_not_corrupt(tmp_path: Path) -> None:
    """A reader of a live mapped log may see a line's newline before its first bytes (the
    copy is not ordered for other readers): the zero bytes show it is not written yet."""
    path = tmp_path / "s.jsonl"
    with EventLog.open(path, fsync=Fsync.group()) as log:
        for n in range(1, 4):
            log.append(fill(n))
        end = log.offset
    line = encode_line(4, fill(4))
    with open(path, "ab") as file:
        file.write(b"\0" * 40 + line[40:] + b"\0" * 5_000)
    seqs, reader = read_all(path)
    assert seqs == [1, 2, 3] and reader.torn is not None and reader.torn.offset == end


def mapped_kib(path: Path) -> int:
    """How much of the file is mapped into this process now (its mappings' `Rss`), in KiB."""
    total = 0
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header: range perms ... [path]
            inside = fields[-1] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pages leave the mapping on Linux")
def test_at_each_group_the_filled_pages_leave_the_mapping_and_keep_their_lines(
    tmp_path: Path,
) -> None:
    """Before a group's fsync the log takes the pages it has filled out of its mapping (so
    that the fsync need not write-protect them under the writer): their lines stay in the
    file, for a reader now, after a close, and after a crash (the kill tests above)."""
    path = tmp_path / "s.jsonl"
    count = 1_000  # about 2 MB of lines
    with EventLog.open(path, fsync=Fsync.group(max_events=10)) as log:
        for n in range(1, count + 1):
            log.append(fill(n, raw_size=2_000))
        assert mapped_kib(path) <= 3 * 4  # the page being filled, and the one after it
        assert read_all(path)[0] == list(range(1, count + 1))
        log.append(fill(count + 1))
    assert read_all(path)[0] == list(range(1, count + 2))


def test_where_the_kernel_will_not_release_pages_the_log_keeps_them_mapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`madvise` refused (a process with its memory locked): appends go on as before."""
    monkeypatch.setattr("oms.log._DONTNEED", 0x7FFF)  # no such advice: EINVAL
    path = tmp_path / "s.jsonl"
    with EventLog.open(path, fsync=Fsync.group(max_events=10)) as log:
        for n in range(1, 301):
            log.append(fill(n, raw_size=2_000))
        if sys.platform.startswith("linux"):
            assert mapped_kib(path) >= 300 * 2_000 // 1024 - 8  # all still mapped
    assert read_all(path)[0] == list(range(1, 301))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pages leave the mapping on Linux")
def test_while_an_fsync_runs_the_pages_filled_meanwhile_leave_the_mapping_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fsync writes every dirty page of the file, those the writer fills while it runs
    included: the log takes them out of its mapping as it goes (every 64 KiB), not at the
    next group, and their lines are all there."""
    fsync_started = threading.Event()
    disk_done = threading.Event()
    real_fsync = os.fsync

    def slow_disk(fd: int) -> None:
        if threading.current_thread().name.startswith("oms-fsync"):
            fsync_started.set()
            assert disk_done.wait(30)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_disk)
    path = tmp_path / "s.jsonl"
    with EventLog.open(path, fsync=Fsync.group(max_events=100, max_delay=3600)) as log:
        try:
            for n in range(1, 101):  # the hundredth asks the thread for an fsync
                log.append(fill(n, raw_size=2_000))
            assert fsync_started.wait(30)
            for n in range(101, 401):  # about 600 KB while that fsync runs
                log.append(fill(n, raw_size=2_000))
                assert mapped_kib(path) <= 64 + 2 * 4
        finally:
            disk_done.set()
    assert read_all(path)[0] == list(range(1, 401))
