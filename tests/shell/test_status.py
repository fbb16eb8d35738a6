"""`python -m oms.status`: the account at a glance, from a session file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from oms.core.events import Event
from oms.core.values import Side, Source
from oms.engine import Engine
from oms.log import Fsync
from oms.status import STATUS_FORMAT, main, status_document, status_of_file
from oms.testing.builders import PERP, accept, balances, fill, mark, markets, submit
from tests.helpers import REPLAY_DIR, ROOT


def write_log(path: Path, events: list[Event]) -> Path:
    engine = Engine.open(path, fsync=Fsync.never())
    for event in events:
        engine.record(event)
    engine.close()
    return path


def session(tmp_path: Path) -> Path:
    events: list[Event] = [
        *markets(),
        # An earlier finding: the baseline snapshot a first reconciliation pass recorded.
        msgspec.structs.replace(balances({"USDC": ("1000", "0")}), source=Source.RECONCILE),
        submit(1, Side.BID, "3", "100", symbol=PERP),
        accept("V1", client_id=1, symbol=PERP),
        fill("V1", 1, Side.BID, "2", "100", client_id=1, symbol=PERP, fee="0.1", fee_asset="USDC"),
        submit(2, Side.BID, "1", "90", symbol=PERP),  # rests: open
        accept("V2", client_id=2, symbol=PERP),
        mark("103"),
    ]
    # Reconciliation finds a fill of order 1 the stream lost: the newest finding.
    found = fill("V1", 2, Side.BID, "1", "100", client_id=1, symbol=PERP)
    events.append(msgspec.structs.replace(found, source=Source.RECONCILE))
    return write_log(tmp_path / "s.jsonl", events)


def test_the_json_document_has_every_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = session(tmp_path)
    assert main([str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == STATUS_FORMAT and doc["last_seq"] == 11
    assert [o["client_id"] for o in doc["orders"]["open"]] == [2]  # 1 is filled
    (position,) = doc["positions"]
    assert (position["net_quantity"], position["entry_price"], position["mark_price"]) == (
        "3",
        "100",
        "103",
    )
    assert position["unrealized_pnl"] == "9" and position["notional"] == "309"
    (usdc,) = doc["account"]
    assert usdc["gross_exposure"] == "309" and usdc["unrealized_pnl"] == "9"
    assert doc["fees"] == {"by_asset": {"USDC": "0.1"}, "complete": True}
    finding = doc["reconciliation"]["last_finding"]
    assert (finding["first_seq"], finding["last_seq"], finding["by_type"]) == (
        11,
        11,
        {"OrderFilled": 1},
    )
    balance = {b["asset"]: b for b in doc["balances"]}["USDC"]
    assert balance["venue"]["available"] == "1000"


def test_the_text_view_shows_positions_marked_to_market(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(session(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "open orders: 1" in out
    assert "mark 103  unrealized 9" in out
    assert (
        "reconciliation: newest finding: seq 11..11 at 1970-01-01 00:00:00.000 UTC: "
        "1 events 1 OrderFilled" in out
    )


@pytest.mark.parametrize("name", ["perp_position_lifecycle", "spot_limit_partial_cancel"])
def test_golden_sessions_give_a_status(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(REPLAY_DIR / f"{name}.jsonl"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == STATUS_FORMAT


def test_bad_input_is_one_line_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "missing.jsonl")]) == 1
    assert capsys.readouterr().err == f"{tmp_path / 'missing.jsonl'}: no such file\n"
    assert main([str(tmp_path)]) == 1
    assert capsys.readouterr().err.endswith(": is a directory\n")
    bad = session(tmp_path)
    bad.write_bytes(bad.read_bytes() + b'{"seq": 10, "nonsense": true}\n{"seq": 11}\n')
    lines = bad.read_bytes().count(b"\n")
    assert main([str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{bad}:{lines - 1}:") and "Traceback" not in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2


def _keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return {k for k in value} | {n for v in value.values() for n in _keys(v)}
    if isinstance(value, list):
        return {n for v in value for n in _keys(v)}
    return set()


def test_docs_status_names_every_key_of_the_document(tmp_path: Path) -> None:
    state, tracker, _ = status_of_file(str(session(tmp_path)))
    doc = status_document(state, reconciliation=tracker, last_pass_us=1, last_pass_events=0)
    dynamic = {"USDC", "OrderFilled"}  # assets and event types, not keys of the schema
    text = (ROOT / "docs" / "status.md").read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # the code blocks
    documented = set(re.findall(r"`([^`]+)`", text))
    named = {part for item in documented for part in re.split(r"[.\[\]*, ]+", item) if part}
    missing = sorted(_keys(doc) - dynamic - named)
    assert not missing, f"docs/status.md does not name {missing}"
