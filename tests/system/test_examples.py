"""The programs in examples/ run, against the local exchange, and say what they did."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from oms import LogReader, OrderStatus, replay_events
from tests.helpers import REPLAY_DIR, ROOT

EXAMPLES = ROOT / "examples"


def _run(*args: str | Path) -> str:
    done = subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def test_quoting_keeps_two_post_only_quotes_and_leaves_nothing_open(tmp_path: Path) -> None:
    log = tmp_path / "quoting.jsonl"
    out = _run(EXAMPLES / "quoting.py", "--seconds", "2", "--log", log)
    assert "open orders at the end: 0" in out
    state = replay_events(LogReader(log).events())
    assert state.orders, "it placed quotes"
    assert all(o.post_only for o in state.orders.values())
    assert {o.side for o in state.orders.values()} == {"Bid", "Ask"}
    assert not state.open_orders()


def test_the_perp_manager_opens_scales_and_closes_with_reduce_only(tmp_path: Path) -> None:
    log = tmp_path / "perp.jsonl"
    out = _run(EXAMPLES / "perp_position.py", "--log", log)
    assert "closed: position 0" in out
    state = replay_events(LogReader(log).events())
    orders = sorted(state.orders.values(), key=lambda o: o.created_seq)
    assert [o.reduce_only for o in orders] == [False, False, True, True]
    assert all(o.status is OrderStatus.FILLED for o in orders)
    assert state.positions["SOL_USDC_PERP"].net_quantity == 0
    report = _run(EXAMPLES / "session_report.py", log)
    row = next(line for line in report.splitlines() if line.startswith("SOL_USDC_PERP"))
    fills = sum(len(o.trade_ids) for o in orders)
    pnl = state.positions["SOL_USDC_PERP"].realized_pnl.quantize(Decimal("0.0001"))
    assert row.split()[1:5] == [str(fills), "3", "3", str(pnl)]


def test_the_asyncio_perp_manager_runs_the_same_way(tmp_path: Path) -> None:
    log = tmp_path / "perp.jsonl"
    out = _run(EXAMPLES / "perp_position_asyncio.py", "--log", log)
    assert "closed: position 0" in out
    state = replay_events(LogReader(log).events())
    assert state.positions["SOL_USDC_PERP"].net_quantity == 0
    assert len(state.orders) == 3


def test_the_report_counts_a_doubled_fill_once() -> None:
    session = REPLAY_DIR / "reordered_duplicates_converge.jsonl"
    state = replay_events(LogReader(session).events())
    report = _run(EXAMPLES / "session_report.py", session)
    for symbol in {o.symbol for o in state.orders.values() if o.trade_ids}:
        fills = sum(len(o.trade_ids) for o in state.orders.values() if o.symbol == symbol)
        row = next(line for line in report.splitlines() if line.startswith(symbol))
        assert row.split()[1] == str(fills)


def test_the_report_says_what_is_wrong_with_a_missing_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "session_report.py"), str(tmp_path / "none.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "session_report:" in done.stderr and "Traceback" not in done.stderr
