"""Fuzz: any damage to a recorded log gives exit 0 or one clear line, never a traceback.

Each example takes a recorded session from `replay/`, damages it (byte flips, truncation,
lines duplicated, deleted or swapped, a value replaced by an odd one, deep nesting or huge
numbers injected) and runs `python -m oms.replay` on it in-process. The replay must exit 0
(with at most a torn-tail note) or 1 with one line `PATH:LINE: reason`, and leave the file's
bytes as they were. `tests/fuzz_settings.py` sets the example counts.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Final

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from oms.engine import Engine
from oms.log import LogReadError
from oms.replay import main
from tests.fuzz_settings import fuzz
from tests.helpers import ROOT, resealed

# The golden sessions in every line format: version 3 (sealed lines, the format written now),
# version 2 (checksummed lines) and version 1 (read value by value).
SESSIONS: Final = (
    sorted((ROOT / "replay").glob("*.jsonl"))
    + sorted((ROOT / "replay" / "v2").glob("*.jsonl"))
    + sorted((ROOT / "replay" / "v1").glob("*.jsonl"))
)
LOGS: Final = {path.relative_to(ROOT / "replay").as_posix(): path.read_bytes() for path in SESSIONS}

# A JSON token: a string, a number, or a literal.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null')
ODD_VALUES: Final = (
    b"null",
    b"true",
    b"0",
    b"-1",
    b'""',
    b'"0"',
    b'"-0"',
    b'"0E-50"',
    b'"1E-40"',
    b'"9.99E+40"',
    b'"-9.99E+40"',
    b'"1E+41"',
    b'"1E+999999"',
    b'"-1E+999999999999999999"',
    b'"NaN"',
    b'"sNaN"',
    b'"Infinity"',
    b"1E+5000",
    b"1E+1000000",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1" + b"0" * 4000,
    b"1" + b"0" * 5000,
    b'"' + b"9" * 5000 + b'"',
    b"[]",
    b"{}",
    b'"Bid"',
    b'"Ask"',
    b'"Filled"',
    b'"OrderFilled"',
    b'"\\ud800"',
    b'"\\n"',
)


# A decimal string or a bare integer, and replacements the log reader accepts.
_NUMBER = re.compile(rb'"-?\d[\d.E+-]*"|(?<=:)-?\d+(?=[,}])')
_in_range = st.one_of(
    st.decimals(min_value=Decimal("-9.99E+40"), max_value=Decimal("9.99E+40"), allow_nan=False).map(
        lambda d: b'"%s"' % str(d).encode()
    ),
    st.sampled_from([b'"0"', b'"-0"', b'"1E-40"', b'"9.99E+40"', b'"-1E+40"', b'"0E+7"']),
    st.integers(-(2**63), 2**64 - 1).map(lambda n: str(n).encode()),
    st.integers(-3, 40).map(lambda n: str(n).encode()),
)


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"0" + b"]" * depth


@st.composite
def damaged_logs(draw: st.DrawFn) -> tuple[str, bytes]:
    """(name of the session, its bytes after one to three kinds of damage)."""
    name = draw(st.sampled_from(sorted(LOGS)))
    data = LOGS[name]
    for _ in range(draw(st.integers(1, 3))):
        data = draw(_damage(data))
    return name, data


@st.composite
def _damage(draw: st.DrawFn, data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    kind = draw(
        st.sampled_from(
            [
                "flip",
                "insert",
                "delete byte",
                "truncate",
                "duplicate line",
                "delete line",
                "swap lines",
                "token",
                "number",
                "number",
                "deep",
                "drop newline",
                "forge",
            ]
        )
    )
    if not data:
        return draw(st.binary(max_size=64))
    if kind in ("flip", "insert", "delete byte", "truncate"):
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
        if kind == "insert":
            return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        if kind == "delete byte":
            return data[:at] + data[at + 1 :]
        return data[:at]
    if not lines:
        return data
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(0, len(lines) - 1))
    if kind == "duplicate line":
        lines.insert(j, lines[i])
    elif kind == "delete line":
        del lines[i]
    elif kind == "swap lines":
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "drop newline":
        lines[i] = lines[i].rstrip(b"\n")
    elif kind == "token":
        tokens = list(_TOKEN.finditer(lines[i]))
        if tokens:
            token = draw(st.sampled_from(tokens))
            value = draw(st.sampled_from(ODD_VALUES) | st.just(_deep(draw(st.integers(1, 3000)))))
            lines[i] = lines[i][: token.start()] + value + lines[i][token.end() :]
    elif kind == "forge":  # any value, and the line's checksum made to match: decoder and
        # reducer must cope with what a checksum cannot catch (a line written on purpose)
        tokens = list(_TOKEN.finditer(lines[i]))
        if tokens:
            token = draw(st.sampled_from(tokens))
            value = draw(st.sampled_from(ODD_VALUES) | _in_range)
            lines[i] = _resigned(lines[i][: token.start()] + value + lines[i][token.end() :])
    elif kind == "number":  # another figure the reader accepts: the reducer must cope
        numbers = list(_NUMBER.finditer(lines[i]))
        if numbers:
            token = draw(st.sampled_from(numbers))
            lines[i] = _resigned(
                lines[i][: token.start()] + draw(_in_range) + lines[i][token.end() :]
            )
    else:  # deep: a nested value and an extra key after some key of the line
        colons = [m.end() for m in re.finditer(rb'":', lines[i])]
        if colons:
            at = draw(st.sampled_from(colons))
            inject = _deep(draw(st.integers(30, 5000))) + b',"zz":'
            lines[i] = lines[i][:at] + inject + lines[i][at:]
    return b"".join(lines)


def _resigned(line: bytes) -> bytes:
    """A version 2 or 3 line with its checksum or seal made anew for its content (others
    unchanged)."""
    if line.rfind(b',"crc":"') < 0:
        return line
    return resealed(line)


def _replay(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(path), "--json"])
    return code, out.getvalue(), err.getvalue()


def _check_outcome(path: Path, code: int, err: str) -> None:
    assert "Traceback" not in err
    one_line = re.escape(str(path)) + r":\d+: \S[^\n]*\n"
    if code == 0:
        assert err == "" or re.fullmatch(one_line, err), err
        if err:
            assert "torn last line dropped" in err
    else:
        assert code == 1
        assert re.fullmatch(one_line, err), err


@fuzz(400)
@given(damaged_logs())
def test_any_damage_gives_exit_0_or_one_clear_line(sample: tuple[str, bytes]) -> None:
    name, data = sample
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name.replace("/", "_")
        path.write_bytes(data)
        code, _out, err = _replay(path)
        event(f"exit {code}" + (" (torn tail)" if code == 0 and err else ""))
        _check_outcome(path, code, err)
        assert path.read_bytes() == data  # only ever read


# --- the bugs this pins, one by one ------------------------------------------------------------


MARKET_LINE: Final = LOGS["v1/perp_position_lifecycle.jsonl"].splitlines(keepends=True)[1]
assert b'"type":"MarketInfo"' in MARKET_LINE


def _with_line(tmp_path: Path, number: int, line: bytes) -> Path:
    """The perp session with its line `number` (1-based) replaced."""
    lines = LOGS["v1/perp_position_lifecycle.jsonl"].splitlines(keepends=True)
    lines[number - 1] = line
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def _deep_line(seq: int) -> bytes:
    return b'{"seq":%d,"type":"MarketInfo","v":1,"event":%s}\n' % (seq, _deep(1000))


def test_a_line_nested_1000_deep_is_one_clear_line_in_the_cli(tmp_path: Path) -> None:
    path = _with_line(tmp_path, 3, _deep_line(2))
    before = path.read_bytes()
    code, out, err = _replay(path)
    assert (code, out) == (1, "")
    assert err == f"{path}:3: JSON nested too deeply\n"
    assert path.read_bytes() == before


def test_a_line_nested_1000_deep_fails_engine_open_with_the_log_error(tmp_path: Path) -> None:
    path = _with_line(tmp_path, 3, _deep_line(2))
    before = path.read_bytes()
    with pytest.raises(LogReadError) as caught:
        Engine.open(path)
    assert (caught.value.line, caught.value.message) == (3, "JSON nested too deeply")
    assert path.read_bytes() == before  # a corrupt log is not repaired or cut


@pytest.mark.parametrize(
    ("pattern", "value", "reason"),
    [
        (rb'"seq":\d+', b'"seq":2' + b"0" * 4000, "field seq is not a 64-bit integer"),
        (
            rb'"recv_time_us":\d+',
            b'"recv_time_us":1' + b"0" * 30,
            "field recv_time_us is not a 64-bit integer",
        ),
        (rb'"tick_size":"[^"]*"', b'"tick_size":"1E+999999"', "not a decimal in range"),
        (rb'"tick_size":"[^"]*"', b'"tick_size":1E+99999999999999999999', "Invalid decimal"),
        (rb'"recv_time_us":\d+', b'"recv_time_us":1E+5000', "Number out of range"),
    ],
)
def test_huge_numbers_in_a_line_are_one_clear_line(
    tmp_path: Path, pattern: bytes, value: bytes, reason: str
) -> None:
    damaged, count = re.subn(pattern, value.replace(b"\\", b"\\\\"), MARKET_LINE, count=1)
    assert count == 1
    path = _with_line(tmp_path, 2, damaged)
    code, _out, err = _replay(path)
    assert code == 1
    assert re.fullmatch(re.escape(f"{path}:2: ") + r"[^\n]+\n", err), err
    assert reason in err
    assert len(err) < 400  # the number itself is not echoed in full


def test_a_reason_with_a_newline_stays_on_one_line(tmp_path: Path) -> None:
    path = _with_line(tmp_path, 2, MARKET_LINE.replace(b'"event":{', b'"event":{"a\\nb":1,', 1))
    code, _out, err = _replay(path)
    assert code == 1
    assert err == f"{path}:2: MarketInfo: unknown field(s) a\\nb\n"


def test_damaged_logs_as_a_process_show_no_traceback(tmp_path: Path) -> None:
    line3 = LOGS["v1/perp_position_lifecycle.jsonl"].splitlines(keepends=True)[2]
    damaged = {
        "deep": _deep_line(2),
        "huge seq": b'{"seq":1' + b"0" * 5000 + b',"type":"X","v":1,"event":{}}\n',
        "huge exponent": re.sub(rb'"recv_time_us":\d+', b'"recv_time_us":1E+1000000', line3),
    }
    for kind, line in damaged.items():
        path = _with_line(tmp_path, 3, line)
        done = subprocess.run(
            [sys.executable, "-m", "oms.replay", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 1, kind
        assert "Traceback" not in done.stderr, kind
        assert re.fullmatch(re.escape(f"{path}:3: ") + r"[^\n]+\n", done.stderr), done.stderr


def test_a_forged_line_the_reducer_cannot_apply_is_a_log_read_error(tmp_path: Path) -> None:
    # A sealed line (version 3) with a figure no decimal sum can take: the
    # replay CLI and Engine.open each say which line, and neither shows a traceback.
    lines = LOGS["perp_position_lifecycle.jsonl"].splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if b'"type":"OrderFilled"' in line)
    lines[at] = _resigned(re.sub(rb'"price":"[^"]*"', b'"price":"-Infinity"', lines[at], count=1))
    path = tmp_path / "forged.jsonl"
    path.write_bytes(b"".join(lines))
    code, out, err = _replay(path)
    assert (code, out) == (1, "")
    match = re.fullmatch(re.escape(str(path)) + r":(\d+): cannot apply [^\n]+\n", err)
    assert match is not None, err
    line = int(match.group(1))
    assert line > at  # at the forged fill or at a later one that meets its figures
    with pytest.raises(LogReadError) as caught:
        Engine.open(path)
    assert caught.value.line == line
    assert "cannot apply" in caught.value.message
