"""The docs state facts the code can check: keep them from drifting apart.

- the order transition table in docs/architecture.md is `oms.core.lifecycle.TRANSITIONS`, cell by
  cell (editing one without the other fails here);
- docs/events.md has a section for every event type and a row for every anomaly kind;
- docs/replay.md documents every option of `python -m oms.replay --help`, and no other;
- the log example in docs/log-format.md is what the line codec writes for those events.
"""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal

from oms.core.events import EVENT_TYPES
from oms.core.lifecycle import TRANSITIONS, Kind, Transition
from oms.core.serialization import decode_header, decode_line, encode_header, encode_line
from oms.core.state import AnomalyKind
from oms.core.values import OrderStatus
from tests.helpers import ROOT

DOCS = ROOT / "docs"


def _read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _cells(line: str) -> list[str]:
    """The cells of one Markdown table row, stripped, backticks removed."""
    assert line.startswith("|") and line.endswith("|"), line
    return [cell.strip().strip("`") for cell in line[1:-1].split("|")]


def _table_after(text: str, header_prefix: str) -> tuple[list[str], list[list[str]]]:
    """The header cells and body rows of the Markdown table whose header line starts with
    `header_prefix` (exactly one such table must exist)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(header_prefix)]
    assert len(starts) == 1, f"expected one table starting {header_prefix!r}, found {len(starts)}"
    start = starts[0]
    header = _cells(lines[start])
    assert set(lines[start + 1].replace("|", "").replace(" ", "")) <= {"-", ":"}
    rows: list[list[str]] = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    return header, rows


# --- the transition table ---------------------------------------------------------------------


def _doc_cell(text: str) -> Transition:
    """A cell as docs/architecture.md's legend defines it."""
    anomaly = text.startswith("!")
    body = text[1:] if anomaly else text
    if body in ("", "="):
        return Transition(None, False, anomaly)
    if body == "fill":
        return Transition(None, True, anomaly)
    return Transition(OrderStatus(body), False, anomaly)


def test_architecture_transition_table_is_the_code_table() -> None:
    header, rows = _table_after(_read("architecture.md"), "| input kind \\ status |")
    columns = [OrderStatus(name) for name in header[1:]]
    assert sorted(columns) == sorted(OrderStatus), "one column per order status"
    kinds = [Kind(row[0]) for row in rows]
    assert sorted(kinds) == sorted(Kind), "one row per input kind"
    documented: dict[tuple[OrderStatus, Kind], Transition] = {}
    for kind, row in zip(kinds, rows, strict=True):
        assert len(row) == len(header), f"row {kind} has {len(row)} cells"
        for status, cell in zip(columns, row[1:], strict=True):
            documented[(status, kind)] = _doc_cell(cell)
    wrong = [
        f"{kind.value} on {status.value}: docs {documented[(status, kind)]}, code {rule}"
        for (status, kind), rule in TRANSITIONS.items()
        if documented[(status, kind)] != rule
    ]
    assert not wrong, "\n".join(wrong)
    assert documented.keys() == TRANSITIONS.keys()


def test_doc_cell_reads_every_form_of_the_legend() -> None:
    # The parser above is what makes the table test meaningful: check it on each form.
    assert _doc_cell("=") == Transition(None, False, False)
    assert _doc_cell("!") == Transition(None, False, True)
    assert _doc_cell("fill") == Transition(None, True, False)
    assert _doc_cell("!fill") == Transition(None, True, True)
    assert _doc_cell("Cancelled") == Transition(OrderStatus.CANCELLED, False, False)
    assert _doc_cell("!New") == Transition(OrderStatus.NEW, False, True)


# --- the event catalogue ----------------------------------------------------------------------


def test_events_doc_has_a_section_per_event_type() -> None:
    headings = set(re.findall(r"^### (\w+)\s*$", _read("events.md"), flags=re.MULTILINE))
    missing = sorted(set(EVENT_TYPES) - headings)
    assert not missing, f"docs/events.md has no section for {missing}"


def test_events_doc_lists_exactly_the_anomaly_kinds() -> None:
    text = _read("events.md")
    header, rows = _table_after(text, "| `AnomalyKind` |")
    assert header[:2] == ["AnomalyKind", "Value"]
    documented = {(row[0], row[1]) for row in rows}
    actual = {(kind.name, kind.value) for kind in AnomalyKind}
    assert documented == actual, (
        f"missing from docs/events.md: {sorted(actual - documented)}; "
        f"documented but not in the code: {sorted(documented - actual)}"
    )
    for kind in AnomalyKind:
        assert f"`{kind.value}`" in text


# --- the replay CLI ---------------------------------------------------------------------------


def _replay_help() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "oms.replay", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_replay_doc_covers_every_option_of_the_help() -> None:
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", _replay_help()))
    assert {"--help", "--json", "--until", "--retain-finished"} <= flags
    text = _read("replay.md")
    missing = sorted(flag for flag in flags if f"`{flag}" not in text)
    assert not missing, f"docs/replay.md does not document {missing}"
    _, rows = _table_after(text, "| Option |")
    documented = {
        match for row in rows for match in re.findall(r"(?<![\w-])--[a-z][a-z-]*", row[0])
    }
    assert documented <= flags, f"documented but not accepted: {sorted(documented - flags)}"


# --- the log example --------------------------------------------------------------------------


def test_log_format_example_is_what_the_codec_writes() -> None:
    text = _read("log-format.md")
    blocks = re.findall(r"^```\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    example = next(block for block in blocks if block.startswith('{"format":"oms-event-log"'))
    lines = [line.encode("utf-8") + b"\n" for line in example.splitlines()]
    assert lines[0] == encode_header()
    decode_header(lines[0])
    assert len(lines) > 1
    for expected_seq, line in enumerate(lines[1:], start=1):
        seq, event = decode_line(line)
        assert seq == expected_seq
        assert encode_line(seq, event) == line


def test_the_example_limits_file_is_the_one_in_risk_doc_and_loads() -> None:
    from oms.limits import load_limits

    example = ROOT / "examples" / "limits.toml"
    block = re.search(r"```toml\n(.*?)```", _read("risk.md"), flags=re.DOTALL)
    assert block is not None
    assert example.read_text(encoding="utf-8").endswith(block.group(1))
    limits = load_limits(example)
    assert limits.account.max_submits == 20
    assert limits.symbols["SOL_USDC_PERP"].max_position == Decimal("10")
