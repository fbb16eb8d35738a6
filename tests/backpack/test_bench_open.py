"""The bench's `Engine.open` figure: both sessions are opened from the snapshots the engine
wrote while recording them, and the figure is printed with its target.

Speed is never asserted; only that the figure measures what its label says.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oms.core.reducer import replay
from oms.core.serialization import state_hash
from oms.engine import Engine
from oms.log import Fsync
from oms.snapshot import list_snapshots
from oms_backpack import bench


def test_both_sessions_resume_from_the_snapshots_written_while_recording(
    tmp_path: Path,
) -> None:
    figure = bench._open_figure(tmp_path, 300, seed=4, runs=2)
    assert (figure.small, figure.large, figure.every) == (300, 3000, 150)
    for opened, count in ((figure.small_open, 300), (figure.large_open, 3000)):
        assert opened.resumed and opened.read == 0 and opened.last_seq == count
        assert opened.seconds > 0
    assert figure.ratio == figure.large_open.seconds / figure.small_open.seconds

    # What was opened: the same session, cut, each with the engine's newest snapshots.
    small, large = tmp_path / "open-small.jsonl", tmp_path / "open-large.jsonl"
    assert [seq for seq, _ in list_snapshots(small)] == [300, 150]
    assert [seq for seq, _ in list_snapshots(large)] == [3000, 2850]
    assert large.read_bytes().startswith(small.read_bytes())
    for path, count in ((small, 300), (large, 3000)):
        engine = Engine.open(path, fsync=Fsync.never())
        try:
            assert engine.resumed_from is not None
            expected = replay(bench.session_events(count, seed=4))
            assert state_hash(engine.state) == state_hash(expected)
        finally:
            engine.close()


def test_sizes_are_shown_short() -> None:
    assert [bench._short(n) for n in (2_000_000, 200_000, 50_000, 400, 1_500)] == [
        "2M",
        "200k",
        "50k",
        "400",
        "1,500",
    ]


def test_main_prints_the_open_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--events", "1000", "--seed", "2", "--submit-samples", "20"]) == 0
    out = capsys.readouterr().out
    number = r"\d+\.\d{3}"
    assert re.search(
        rf"Engine\.open 2k vs 200 events\s+{number} s / {number} s = \d+\.\d\dx\s+<= 1\.5x\s+"
        r"(PASS|MISS)",
        out,
    ), out
    assert re.search(
        r"submit\(\) -> request bytes at the socket p50 \(20\)\s+[\d,.]+ µs\s+< 200 µs\s+"
        r"(PASS|MISS)",
        out,
    ), out
    assert "Engine.open of 2,000 events:" in out and "resumed from a snapshot" in out
    assert "NO SNAPSHOT USED" not in out
