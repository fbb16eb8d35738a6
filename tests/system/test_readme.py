"""The README's promises: its embedding example runs, its commands exist, and its examples
use only the public API (what `oms` and `oms_backpack` list in `__all__`)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import oms
import oms_backpack
from tests.helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_the_run_and_test_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands[:2] == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci


def test_embedding_example_runs_and_records_the_session(tmp_path: Path) -> None:
    block = re.search(r"```python\n(.*?)```", README, re.S)
    assert block is not None
    script = tmp_path / "example.py"
    script.write_text(block.group(1), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OrderSubmitted 1"
    replayed = subprocess.run(
        [sys.executable, "-m", "oms.replay", str(tmp_path / "session.jsonl"), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert replayed.returncode == 0, replayed.stderr
    assert '"status": "PendingNew"' in replayed.stdout


PUBLIC = {"oms": set(oms.__all__), "oms_backpack": set(oms_backpack.__all__)}
OURS = ("oms", "oms_backpack", "oms_local_exchange")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def _private_imports(source: str) -> list[str]:
    """Each import in `source` that reaches past the public API of our packages."""
    bad: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            bad += [
                f"import {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] in OURS and alias.name not in PUBLIC
            ]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level or module.split(".")[0] not in OURS:
                continue  # the standard library, trio, ...
            public = PUBLIC.get(module, set())
            bad += [
                f"from {module} import {alias.name}"
                for alias in node.names
                if alias.name not in public
            ]
    return bad


def test_readme_has_python_examples_for_both_packages() -> None:
    assert len(PYTHON_BLOCKS) >= 2
    modules = {
        node.module
        for block in PYTHON_BLOCKS
        for node in ast.walk(ast.parse(block))
        if isinstance(node, ast.ImportFrom)
    }
    assert {"oms", "oms_backpack"} <= modules


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.splitlines()[0][:40])
def test_readme_examples_import_only_public_names(block: str) -> None:
    assert _private_imports(block) == []


def test_the_check_sees_a_private_import() -> None:
    assert _private_imports("from oms.engine import Engine") == ["from oms.engine import Engine"]
    assert _private_imports("from oms import Fold") == ["from oms import Fold"]
    assert _private_imports("import oms.core.values") == ["import oms.core.values"]
    assert _private_imports("from oms_local_exchange import Venue") != []
    assert _private_imports("from decimal import Decimal\nimport oms\nimport trio") == []


def test_the_backpack_example_trades_on_the_local_exchange(tmp_path: Path) -> None:
    # The README's Backpack program, unchanged, against `python -m oms_local_exchange`: its keys
    # come from the environment as the README says, and only the venue's URLs are pointed at
    # the local exchange (a two-line prelude; the example names no URL).
    example = next(b for b in PYTHON_BLOCKS if "open_backpack_session" in b)
    exchange = subprocess.Popen(
        [sys.executable, "-m", "oms_local_exchange"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert exchange.stdout is not None
        shown: dict[str, str] = {}
        for line in exchange.stdout:
            if line.startswith("Serving"):
                break
            found = re.match(r"(REST|WebSocket|API key|API secret)\s+(\S+)$", line.strip())
            if found:
                shown[found.group(1)] = found.group(2)
        prelude = (
            "import functools, oms_backpack\n"
            "oms_backpack.open_backpack_session = functools.partial(\n"
            f"    oms_backpack.open_backpack_session, rest_url={shown['REST']!r},\n"
            f"    ws_url={shown['WebSocket']!r})\n"
        )
        script = tmp_path / "trade.py"
        script.write_text(prelude + example, encoding="utf-8")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BACKPACK_")},
            "BACKPACK_API_KEY": shown["API key"],
            "BACKPACK_API_SECRET": shown["API secret"],
        }
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        exchange.terminate()
        exchange.communicate(timeout=30)  # reads what is left and closes the pipe
    assert result.returncode == 0, result.stderr
    # A post-only bid well under the market rests (New), then the example cancels it.
    assert result.stdout.strip() == "New"
    replayed = subprocess.run(
        [sys.executable, "-m", "oms.replay", str(tmp_path / "backpack.jsonl"), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert replayed.returncode == 0, replayed.stderr
    assert '"status": "Cancelled"' in replayed.stdout
