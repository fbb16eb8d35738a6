"""The main job: `python -m oms_backpack.run` on the embedded local exchange, end to end."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from oms.core.events import KillSwitchTripped, OrderDenied
from oms.core.reducer import replay
from oms.core.values import OrderStatus
from oms.engine import Engine
from oms.log import Fsync, LogReader
from oms.status import ReconciliationTracker
from oms_backpack.run import AccountConfig, _Running, main, status_view
from tests.helpers import REPLAY_DIR


def test_the_demo_trades_records_and_replays_to_the_live_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "demo.jsonl"
    assert main(["--duration", "4", "--record", str(record)]) == 0
    out = capsys.readouterr().out
    assert "replay matches the live state" in out
    state = replay(LogReader(record).events())
    orders = list(state.orders.values())
    # Every kind of order the demo promises, and none left open or in doubt.
    kinds = {(o.symbol, o.order_type) for o in orders}
    assert {
        ("SOL_USDC", "LIMIT_MAKER"),
        ("SOL_USDC", "MARKET"),
        ("SOL_USDC_PERP", "MARKET"),
    } <= kinds
    assert any(o.status is OrderStatus.CANCELLED for o in orders)
    assert not state.open_orders()
    # The perp position went long, flipped short and was closed with a reduce-only order.
    position = state.positions["SOL_USDC_PERP"]
    assert position.net_quantity == 0
    assert any(o.reduce_only for o in orders)
    assert state.anomaly_total == 0, state.anomalies


def test_usage_errors_exit_2_and_the_help_names_the_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "oms_backpack.run", "--venue", "nowhere"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "oms_backpack.run", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    for flag in ("--venue", "--strategy", "--record", "--duration"):
        assert flag in helped.stdout


def test_the_real_venue_without_keys_fails_with_one_clear_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "oms_backpack.run", "--venue", "backpack", "--record",
         str(tmp_path / "x.jsonl"), "--duration", "1"],
        capture_output=True, text=True, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "BACKPACK_API_SECRET is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_limits_file_fails_with_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    limits = tmp_path / "limits.toml"
    limits.write_text("[symbols.SOL_USDC_PERP]\nmax_position = 10.5\n", encoding="utf-8")
    assert main(["--limits", str(limits), "--record", str(tmp_path / "x.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{limits}: symbols.SOL_USDC_PERP: max_position must be a decimal string" in err
    assert main(["--limits", str(tmp_path / "missing.toml")]) == 1
    assert "cannot read the limits file" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")
def test_sigusr1_trips_the_kill_switch_of_the_main_job(tmp_path: Path) -> None:
    record = tmp_path / "s.jsonl"
    limits = tmp_path / "limits.toml"
    limits.write_text("[account]\nmax_submits = 50\n", encoding="utf-8")
    job = subprocess.Popen(
        [sys.executable, "-m", "oms_backpack.run", "--strategy", "none", "--duration", "3",
         "--record", str(record), "--limits", str(limits)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert job.stdout is not None
        first = job.stdout.readline()  # the status view starts once the signal is handled
        assert first.startswith("oms main  events"), first
        job.send_signal(signal.SIGUSR1)
        out, err = job.communicate(timeout=60)
    finally:
        job.kill()
    assert job.returncode == 0, err
    assert "replay matches the live state" in out
    trips = [e for e in LogReader(record).events() if isinstance(e, KillSwitchTripped)]
    assert [(e.by, e.reason) for e in trips] == [("signal", "signal SIGUSR1")]


def test_two_accounts_from_one_config_file_trade_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text(
        f"""
venue = "local"
duration = 3

[[accounts]]
name = "main"
record = "{tmp_path / "main.jsonl"}"

[[accounts]]
name = "hedge"
record = "{tmp_path / "hedge.jsonl"}"
strategy = "none"
""",
        encoding="utf-8",
    )
    assert main(["--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "main: replay matches the live state" in out
    assert "hedge: replay matches the live state" in out
    main_state = replay(LogReader(tmp_path / "main.jsonl").events())
    hedge_state = replay(LogReader(tmp_path / "hedge.jsonl").events())
    # Each account's engine saw its own orders and balances only: the demo traded on main,
    # the other account (its own keys, opened on the exchange) placed nothing.
    assert main_state.orders and not hedge_state.orders
    assert main_state.positions and not hedge_state.positions
    assert hedge_state.balances and hedge_state.anomaly_total == 0
    assert main_state.marks and hedge_state.marks  # each follows the marks itself


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("venue = 'local'\n", "no [[accounts]]"),
        ("[[accounts]]\nname = 'a'\nlimit = 3\n", "unknown key 'limit'"),
        ("[[accounts]]\nname = 'a'\nlimits = 3\n", "limits must be a path to a limits file"),
        (
            "[[accounts]]\nname = 'a'\nlimits = { symbols = { X = { max_position = 1.5 } } }\n",
            "account a: limits: symbols.X: max_position must be a decimal string",
        ),
        ("[[accounts]]\nname = 'a'\nlimits = 'nowhere.toml'\n", "cannot read the limits file"),
        ("[[accounts]]\nname = 'a'\n[[accounts]]\nname = 'a'\n", "two accounts with the same name"),
        ("venue = 'backpack'\n[[accounts]]\nname = 'a'\n[[accounts]]\nname = 'b'\n", "key_file"),
        ("[[accounts]\n", "not valid TOML"),
    ],
)
def test_a_bad_config_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, says: str
) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text(text, encoding="utf-8")
    assert main(["--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and str(config) in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_the_live_view_on_a_terminal_is_the_status_of_each_account(tmp_path: Path) -> None:
    engine = Engine.open(tmp_path / "a.jsonl", fsync=Fsync.never())
    try:
        for event in LogReader(REPLAY_DIR / "perp_position_lifecycle.jsonl").events():
            engine.record(event)
        account = AccountConfig(name="alpha", record=tmp_path / "a.jsonl", strategy="none")
        running = _Running(account, engine, ReconciliationTracker())
        screen = _Terminal()
        with trio.move_on_after(0.5):
            await status_view([running], screen, 1.0)
    finally:
        engine.close()
    shown = screen.getvalue()
    assert "oms alpha  events 23" in shown
    assert "SOL_USDC_PERP  net          0  entry 0  mark 146.1" in shown
    assert "funding: 0.0002 USDC" in shown


def test_each_account_of_a_config_file_has_its_own_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    limits = tmp_path / "tight.toml"
    limits.write_text('[symbols.SOL_USDC_PERP]\nmax_position = "0.5"\n', encoding="utf-8")
    config = tmp_path / "accounts.toml"
    config.write_text(
        f"""
venue = "local"
duration = 2

[[accounts]]
name = "main"
record = "{tmp_path / "main.jsonl"}"
limits = "{limits}"

[[accounts]]
name = "free"
record = "{tmp_path / "free.jsonl"}"
""",
        encoding="utf-8",
    )
    assert main(["--config", str(config)]) == 0
    out = capsys.readouterr().out
    # The demo's first perp order (1 contract) breaks main's limit: denied, recorded, and the
    # demo stops; the other account's demo, with no limits, trades its perp position.
    assert "demo stopped: " in out and "max_position" in out
    denied = [e for e in LogReader(tmp_path / "main.jsonl").events() if isinstance(e, OrderDenied)]
    assert [(e.limit, e.symbol) for e in denied] == [("max_position", "SOL_USDC_PERP")]
    free = replay(LogReader(tmp_path / "free.jsonl").events())
    assert free.risk.denials == 0
    assert any(o.symbol == "SOL_USDC_PERP" and o.filled_quantity for o in free.orders.values())
