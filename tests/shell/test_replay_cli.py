"""`python -m oms.replay`: output, --json, --until, exit codes, and one clear line per bad file."""

from __future__ import annotations

import gc
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oms.core.events import Event, OrderFilled
from oms.core.replay_fold import ReplayFold
from oms.core.serialization import FOLD_ONLY
from oms.log import LogReadError
from oms.replay import main, replay_file
from tests.helpers import REPLAY_DIR, resealed

TOP_KEYS = {
    "format",
    "version",
    "events",
    "last_seq",
    "state_hash",
    "torn_tail",
    "orders",
    "balances",
    "positions",
    "markets",
    "anomalies",
}


def copy_session(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.jsonl"
    shutil.copyfile(REPLAY_DIR / f"{name}.jsonl", path)
    return path


def expected_hash(name: str) -> str:
    document = json.loads((REPLAY_DIR / f"{name}.expected.json").read_text(encoding="utf-8"))
    value = document["state_hash"]
    assert isinstance(value, str)
    return value


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def run_process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oms.replay", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- good input -----------------------------------------------------------------------------


def test_text_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = copy_session(tmp_path, "spot_limit_partial_cancel")
    code, out, err = run([str(path)], capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"{path}: 9 events, last seq 9\n")
    assert f"state hash: {expected_hash('spot_limit_partial_cancel')}\n" in out
    assert "Open orders (0)" in out
    finished = out.split("Recently finished orders")[1].split("Balances")[0]
    assert re.search(r"c1001\s+SOL_USDC\s+Bid\s+LIMIT\s+Cancelled\s+150.25\s+4\s+2.5", finished)
    balances = out.split("Balances")[1].split("Positions")[0]
    assert re.search(r"SOL\s+3.998\s+0\s+3.998", balances)
    assert re.search(r"USDC\s+624.375\s+0\s+624.375", balances)
    assert "Anomalies: 0" in out


def test_text_output_shows_positions_and_anomalies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run([str(copy_session(tmp_path, "perp_position_lifecycle"))], capsys)
    assert code == 0
    positions = out.split("Positions")[1].split("Anomalies")[0]
    # net 0, entry 0, realized 1, funding 0.0002, fees 0.7455 USDC
    assert re.search(r"SOL_USDC_PERP\s+0\s+0\s+1\s+0.0002\s+0.7455 USDC", positions)

    code, out, _ = run([str(copy_session(tmp_path, "reordered_duplicates_converge"))], capsys)
    assert code == 0
    anomalies = out.split("Anomalies: ")[1]
    assert anomalies.startswith("4\n")
    assert "duplicate_fill: 2" in anomalies and "fill_gap: 2" in anomalies


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = copy_session(tmp_path, "spot_market_buy_multi_fill")
    code, out, err = run([str(path), "--json"], capsys)
    assert (code, err) == (0, "")
    document = json.loads(out)
    assert set(document) >= TOP_KEYS
    assert document["format"] == "oms-replay"
    assert document["events"] == document["last_seq"] == 8
    assert document["state_hash"] == expected_hash("spot_market_buy_multi_fill")
    assert document["torn_tail"] is None
    assert document["orders"]["open"] == []
    (order,) = document["orders"]["finished"]
    assert (order["key"], order["status"], order["filled_quantity"]) == ("c2001", "Filled", "1.2")
    assert {b["asset"]: b["total"] for b in document["balances"]} == {
        "ETH": "1.2007918",
        "USDC": "1255.45",
    }
    assert document["positions"] == []
    assert document["anomalies"]["total"] == 0


def test_until_stops_after_that_seq(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = copy_session(tmp_path, "spot_limit_partial_cancel")
    # Seq 4 is the accept: the bid for 4 @ 150.25 rests, locking 601 USDC.
    code, out, _ = run([str(path), "--json", "--until", "4"], capsys)
    assert code == 0
    document = json.loads(out)
    assert document["events"] == document["last_seq"] == 4
    (order,) = document["orders"]["open"]
    assert (order["key"], order["status"], order["filled_quantity"]) == ("c1001", "New", "0")
    usdc = next(b for b in document["balances"] if b["asset"] == "USDC")
    assert (usdc["available"], usdc["locked"]) == ("399", "601")

    code, out, _ = run([str(path), "--json", "--until", "0"], capsys)
    assert code == 0 and json.loads(out)["last_seq"] == 0
    code, out, _ = run([str(path), "--json", "--until", "1000"], capsys)
    assert code == 0 and json.loads(out)["state_hash"] == expected_hash("spot_limit_partial_cancel")


def test_as_a_process(tmp_path: Path) -> None:
    path = copy_session(tmp_path, "post_only_rejected")
    done = run_process(str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert f"state hash: {expected_hash('post_only_rejected')}" in done.stdout
    assert "Rejected" in done.stdout and "Expired" in done.stdout

    done = run_process(str(path), "--json", cwd=tmp_path)
    assert done.returncode == 0
    assert json.loads(done.stdout)["state_hash"] == expected_hash("post_only_rejected")


def test_the_input_is_only_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = copy_session(tmp_path, "perp_position_lifecycle")
    data = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(data.splitlines(keepends=True)[-1][:-20])  # and a torn line
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    for argv in ([str(path)], [str(path), "--json"], [str(path), "--until", "3"]):
        code, _, _ = run(argv, capsys)
        assert code == 0
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == mtime


def test_a_torn_last_line_is_dropped_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = copy_session(tmp_path, "spot_limit_partial_cancel")
    data = path.read_bytes()
    last = data.splitlines(keepends=True)[-1]
    path.write_bytes(data[: len(data) - len(last) // 2])
    code, out, err = run([str(path), "--json"], capsys)
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:10: torn last line dropped")
    assert "Traceback" not in err
    document = json.loads(out)
    assert document["last_seq"] == 8  # the complete events are all there
    assert document["torn_tail"] == {
        "line": 10,
        "offset": len(data) - len(last),
        "length": len(last) - len(last) // 2,
    }


# --- bad input: exit 1, one line ------------------------------------------------------------


def _lines(name: str) -> list[bytes]:
    return (REPLAY_DIR / f"{name}.jsonl").read_bytes().splitlines(keepends=True)


def _resigned(line: bytes) -> bytes:
    return resealed(line)


def _broken(kind: str) -> bytes:
    """The spot session with its line 4 (seq 3, OrderSubmitted) broken one way."""
    lines = _lines("spot_limit_partial_cancel")
    line = lines[3]
    assert b'"type":"OrderSubmitted"' in line
    lines[3] = {
        "malformed JSON": line[:40] + b"\n",
        "unknown event type": line.replace(b"OrderSubmitted", b"OrderTeleported"),
        "unknown schema version": line.replace(b'"v":1', b'"v":7'),
        "bad UTF-8": line.replace(b'"SOL_USDC"', b'"SOL\xc3_USDC"'),
        "missing field": line.replace(b'"client_id":1001,', b""),
        "mistyped field": line.replace(b'"client_id":1001', b'"client_id":"1001"'),
        # A well-formed line (its checksum made to match) in the wrong place.
        "seq gap": _resigned(line.replace(b'"seq":3', b'"seq":5')),
    }[kind]
    assert lines[3] != line
    return b"".join(lines)


BAD_KINDS = [
    "malformed JSON",
    "unknown event type",
    "unknown schema version",
    "bad UTF-8",
    "missing field",
    "mistyped field",
    "seq gap",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_gives_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(_broken(kind))
    code, out, err = run([str(path)], capsys)
    assert code == 1
    assert out == ""
    assert "Traceback" not in err
    assert re.fullmatch(re.escape(str(path)) + r":4: \S.*\n", err), err


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("unknown event type", "OrderTeleported"),
        ("unknown schema version", "version 7"),
        ("bad UTF-8", "UTF-8"),
        ("missing field", "client_id"),
        ("mistyped field", "client_id"),
        ("seq gap", "expected seq 3, found 5"),
    ],
)
def test_bad_input_says_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, words: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(_broken(kind))
    assert main([str(path)]) == 1
    assert words in capsys.readouterr().err


def test_bad_input_as_a_process(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(_broken("bad UTF-8"))
    done = run_process(str(path), "--json", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert re.fullmatch(re.escape(str(path)) + r":4: .+\n", done.stderr), done.stderr


def test_missing_file_and_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in (tmp_path / "nothing-here.jsonl", tmp_path):
        code, out, err = run([str(path)], capsys)
        assert code == 1
        assert out == ""
        assert "Traceback" not in err
        assert re.fullmatch(re.escape(str(path)) + r": \S.*\n", err), err
    assert not (tmp_path / "nothing-here.jsonl").exists()  # replay creates nothing


# --- usage: exit 2 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[], ["a.jsonl", "--until", "abc"], ["a.jsonl", "--until", "-1"], ["a.jsonl", "--bogus"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage:") and "Traceback" not in err


def test_usage_error_as_a_process(tmp_path: Path) -> None:
    done = run_process(cwd=tmp_path)
    assert done.returncode == 2
    assert "usage:" in done.stderr and "Traceback" not in done.stderr


def _set_fill_handler(monkeypatch: pytest.MonkeyPatch, handler: object) -> None:
    """Make `handler` ReplayFold's handler of fills, as read by a replay (the fold-only class
    of `OrderFilled`) and as objects."""
    for cls in (OrderFilled, FOLD_ONLY[OrderFilled]):
        monkeypatch.setitem(ReplayFold._handlers, cls, handler)


def test_a_failure_applying_an_event_names_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reducer is total on what the reader accepts; should it ever fail, the user still
    # gets the file and line and exit 1, not a traceback.
    path = copy_session(tmp_path, "spot_limit_partial_cancel")

    def fail(self: ReplayFold, event: Event) -> None:
        raise ArithmeticError("boom\nsecond line")

    _set_fill_handler(monkeypatch, fail)
    code, out, err = run([str(path)], capsys)
    assert (code, out) == (1, "")
    first_fill = next(
        number
        for number, line in enumerate(_lines("spot_limit_partial_cancel"), start=1)
        if b'"type":"OrderFilled"' in line
    )
    assert err == (
        f"{path}:{first_fill}: cannot apply OrderFilled: ArithmeticError: boom\\nsecond line\n"
    )
    # The same from the library, folding with nothing else to do per event (`LogReader.feed`).
    with pytest.raises(LogReadError) as caught:
        replay_file(str(path))
    assert (caught.value.line, caught.value.message) == (
        first_fill,
        "cannot apply OrderFilled: ArithmeticError: boom\\nsecond line",
    )


def test_a_replay_leaves_the_garbage_collector_as_it_found_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The collector is paused while a replay folds (docs/speed.md); whatever happens, the
    # program gets it back as it was.
    path = copy_session(tmp_path, "spot_limit_partial_cancel")
    seen: list[bool] = []
    real = ReplayFold._handlers[OrderFilled]

    def watch(self: ReplayFold, event: Event) -> None:
        seen.append(gc.isenabled())
        real(self, event)

    _set_fill_handler(monkeypatch, watch)
    assert gc.isenabled()
    replay_file(str(path))
    assert gc.isenabled() and seen and not any(seen)

    def fail(self: ReplayFold, event: Event) -> None:
        raise ArithmeticError("boom")

    _set_fill_handler(monkeypatch, fail)
    with pytest.raises(LogReadError):
        replay_file(str(path))
    assert gc.isenabled()
    gc.disable()
    try:
        _set_fill_handler(monkeypatch, real)
        replay_file(str(path))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_replay_shows_the_kill_switch_and_the_denials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from decimal import Decimal

    from oms.core.events import KillSwitchTripped, OrderDenied
    from oms.core.values import OrderType, Side, Source
    from oms.log import EventLog

    path = tmp_path / "risk.jsonl"
    log = EventLog.open(path)
    log.append(
        OrderDenied(
            source=Source.LOCAL,
            recv_time_us=1,
            client_id=7,
            symbol="SOL_USDC_PERP",
            side=Side.BID,
            order_type=OrderType.MARKET,
            limit="max_position",
            scope="SOL_USDC_PERP",
            reason="position 0 would become 12",
            quantity=Decimal(12),
        )
    )
    log.append(
        KillSwitchTripped(source=Source.LOCAL, recv_time_us=2, reason="SIGUSR1", by="signal")
    )
    log.close()
    code, out, _ = run([str(path)], capsys)
    assert code == 0
    assert "Kill switch: TRIPPED (tripped at seq 2 by signal: SIGUSR1); trips 1, resets 0" in out
    assert "max_position: 1" in out and "position 0 would become 12" in out
    code, out, _ = run([str(path), "--json"], capsys)
    risk = json.loads(out)["risk"]
    assert risk["kill_switch"]["tripped"] is True
    assert risk["denials"] == {
        "total": 1,
        "by_limit": {"max_position": 1},
        "last": "seq 1: max_position (SOL_USDC_PERP): position 0 would become 12",
    }
    # a session that never used them prints neither
    code, out, _ = run([str(copy_session(tmp_path, "perp_position_lifecycle"))], capsys)
    assert "Kill switch" not in out and "Risk denials" not in out
