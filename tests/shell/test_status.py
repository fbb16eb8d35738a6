"""`python -m oms.status`: the account at a glance, from a session file."""

from __future__ import annotations

import json
import re
from decimal import Decimal as D
from pathlib import Path

import msgspec
import pytest

from oms.core.events import Event, KillSwitchTripped, OrderDenied
from oms.core.risk import AccountLimits, Limits
from oms.core.values import OrderOrigin, OrderType, Side, Source
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


def test_orders_the_venue_placed_are_listed_with_their_origin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A long 3 the venue liquidates, then a slice of a venue strategy: both finished orders
    are listed (open ones of ours are not), each row says who placed it and what it is
    linked to."""
    liquidation = OrderOrigin.LIQUIDATION_AUTOCLOSE
    closing = accept("V9", symbol=PERP, side=Side.ASK, quantity="3", origin=liquidation)
    slice_ = accept("V8", symbol=PERP, side=Side.BID, quantity="1")
    exit_ = accept("V3", symbol=PERP, side=Side.ASK, quantity="1", price="120")
    events: list[Event] = [
        *markets(),
        submit(1, Side.BID, "3", "100", symbol=PERP),
        accept("V1", client_id=1, symbol=PERP),
        fill("V1", 1, Side.BID, "3", "100", client_id=1, symbol=PERP),
        submit(2, Side.BID, "1", "90", symbol=PERP),  # rests: open, ours
        accept("V2", client_id=2, symbol=PERP),
        msgspec.structs.replace(closing, order_type=OrderType.MARKET),
        fill("V9", 2, Side.ASK, "3", "80", symbol=PERP, origin=liquidation, cum="3"),
        msgspec.structs.replace(slice_, order_type=OrderType.MARKET, strategy_id=6023471188),
        fill("V8", 3, Side.BID, "1", "81", symbol=PERP, cum="1"),
        # A take profit attached to order 1 (by the venue, for us): linked, not the venue's.
        msgspec.structs.replace(exit_, related_order_id="V1"),
    ]
    path = write_log(tmp_path / "v.jsonl", events)
    assert main([str(path), "--json"]) == 0
    orders = json.loads(capsys.readouterr().out)["orders"]
    ours, attached = orders["open"]
    assert (ours["origin"], ours["placed_by_venue"], ours["strategy_id"]) == ("USER", False, None)
    assert ours["related_order_id"] is None
    assert (attached["venue_id"], attached["related_order_id"]) == ("V3", "V1")
    assert (attached["origin"], attached["placed_by_venue"]) == ("USER", False)
    closed, bought = orders["placed_by_venue"]
    assert (closed["venue_id"], closed["status"], closed["filled_quantity"]) == (
        "V9",
        "Filled",
        "3",
    )
    assert (closed["origin"], closed["placed_by_venue"], closed["strategy_id"]) == (
        "LIQUIDATION_AUTOCLOSE",
        True,
        None,
    )
    assert (bought["origin"], bought["placed_by_venue"], bought["strategy_id"]) == (
        "USER",
        True,
        6023471188,
    )
    assert main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    at = out.index("placed by the venue (kept, any status): 2")
    v9, v8 = out[at + 1 : at + 3]
    assert v9.startswith("  vV9 ") and v9.endswith("3/3  origin LIQUIDATION_AUTOCLOSE"), v9
    assert v8.startswith("  vV8 ") and v8.endswith("1/1  origin USER strategy 6023471188"), v8
    for key in ("c2", "vV3"):  # ours: no origin shown
        (line,) = [line for line in out if line.startswith(f"  {key} ")]
        assert line.endswith("0/1"), line


def _keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return {k for k in value} | {n for v in value.values() for n in _keys(v)}
    if isinstance(value, list):
        return {n for v in value for n in _keys(v)}
    return set()


def test_docs_status_names_every_key_of_the_document(tmp_path: Path) -> None:
    state, tracker, _, _ = status_of_file(str(session(tmp_path)))
    limits = Limits(account=AccountLimits(max_open_orders=3))
    doc = status_document(
        state, reconciliation=tracker, last_pass_us=1, last_pass_events=0, limits=limits
    )
    assert doc["risk"]["limits"]["rows"]
    dynamic = {"USDC", "OrderFilled"}  # assets and event types, not keys of the schema
    text = (ROOT / "docs" / "status.md").read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # the code blocks
    documented = set(re.findall(r"`([^`]+)`", text))
    named = {part for item in documented for part in re.split(r"[.\[\]*, ]+", item) if part}
    missing = sorted(_keys(doc) - dynamic - named)
    assert not missing, f"docs/status.md does not name {missing}"


def test_the_risk_section_shows_the_switch_denials_and_headroom(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = session(tmp_path)
    engine = Engine.open(path, fsync=Fsync.never())  # append a denial, then a trip
    engine.record(
            OrderDenied(
                source=Source.LOCAL, recv_time_us=200, client_id=3, symbol=PERP, side=Side.BID,
                order_type=OrderType.LIMIT, limit="max_position", scope=PERP,
                reason="position 3 would become 9", quantity=D("6"), price=D("100"),
            )
    )  # fmt: skip
    engine.record(
        KillSwitchTripped(source=Source.LOCAL, recv_time_us=300, reason="test", by="program")
    )
    engine.close()
    limits = tmp_path / "limits.toml"
    limits.write_text(
        '[account]\nmax_open_orders = 5\nmax_loss = "4"\n'
        '[symbols.SOL_USDC_PERP]\nmax_position = "2.5"\nmax_order_quantity = "10"\n',
        encoding="utf-8",
    )
    assert main([str(path), "--json", "--limits", str(limits)]) == 0
    risk = json.loads(capsys.readouterr().out)["risk"]
    switch = risk["kill_switch"]
    assert (switch["tripped"], switch["reason"], switch["by"], switch["seq"]) == (
        True, "test", "program", 13,
    )  # fmt: skip
    assert risk["denials"]["total"] == 1 and risk["denials"]["by_limit"] == {"max_position": 1}
    rows = {(r["limit"], r["scope"]): r for r in risk["limits"]["rows"]}
    # One order open (V2) of at most 5; long 3 against at most 2.5 (a fill can overshoot);
    # the loss: 3 long from 100 marked at 103 is a gain of 9, less the fee 0.1 = -8.9.
    orders = rows["max_open_orders", "account"]
    assert (orders["used"], orders["left"]) == (1, 4)
    assert (rows["max_position", PERP]["used"], rows["max_position", PERP]["left"]) == ("3", "-0.5")
    assert rows["max_loss", "account"]["used"] == "-8.9"
    assert rows["max_order_quantity", PERP]["per_order"] is True
    assert rows["max_order_quantity", PERP]["used"] is None
    assert main([str(path), "--limits", str(limits)]) == 0
    out = capsys.readouterr().out
    assert "KILL SWITCH TRIPPED at seq 13" in out and "by program: test" in out
    assert "max_position         SOL_USDC_PERP  used 3 of 2.5, left -0.5  BROKEN" in out
    assert "risk denials: 1 (1 max_position)" in out


def test_status_without_limits_says_the_switch_is_not_tripped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(session(tmp_path)), "--json"]) == 0
    risk = json.loads(capsys.readouterr().out)["risk"]
    assert risk["kill_switch"]["tripped"] is False and risk["limits"] is None
    assert main([str(session(tmp_path))]) == 0
    assert "kill switch: not tripped" in capsys.readouterr().out


def test_a_bad_limits_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    limits = tmp_path / "limits.toml"
    limits.write_text("[account]\nmax_loss = 0.5\n", encoding="utf-8")
    assert main([str(session(tmp_path)), "--limits", str(limits)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(limits) in err and "max_loss" in err
