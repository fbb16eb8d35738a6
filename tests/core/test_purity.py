"""The pure core stays pure: no I/O library is imported, and no float holds money."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import types
import typing
from pathlib import Path

import attrs
import msgspec

import oms.core.events
import oms.core.state
import oms.core.values

IO_LIBRARIES = ("trio", "httpx", "nacl", "trio_websocket", "hypercorn", "socket", "asyncio")
CORE_DIR = Path(oms.core.values.__file__).parent
CORE_SOURCES = sorted(CORE_DIR.glob("*.py"))


def test_importing_the_core_imports_no_io_library() -> None:
    # Every module of the `oms.core` package, found by walking it (not listed by hand).
    program = "\n".join(
        [
            "import importlib, json, pkgutil, sys",
            "import oms.core",
            "names = [m.name for m in pkgutil.walk_packages(oms.core.__path__, 'oms.core.')]",
            "for name in names: importlib.import_module(name)",
            f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {IO_LIBRARIES!r})",
            "print(json.dumps([names, loaded]))",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=120
    )
    names, loaded = json.loads(result.stdout)
    assert len(names) == len(CORE_SOURCES) - 1 >= 6  # every module but __init__
    assert loaded == []


def test_the_check_would_see_an_io_import() -> None:
    # The same check, fed an import of trio: proves the subprocess reports what it loads.
    program = (
        "import json, sys, oms.core.values, trio\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {IO_LIBRARIES!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=120
    )
    assert "trio" in json.loads(result.stdout)


def _mentions_float(hint: object) -> bool:
    if hint is float:
        return True
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or args:
        return any(_mentions_float(arg) for arg in args)
    return False


def test_no_event_or_state_field_is_a_float() -> None:
    classes = [
        cls
        for module in (oms.core.events, oms.core.state)
        for cls in vars(module).values()
        if isinstance(cls, type)
        and (attrs.has(cls) or issubclass(cls, msgspec.Struct))
        and cls.__module__ == module.__name__
    ]
    assert len(classes) > 20  # every event and state class, not an empty scan
    for cls in classes:
        for name, hint in typing.get_type_hints(cls).items():
            assert not _mentions_float(hint), f"{cls.__name__}.{name}: {hint}"


def test_mentions_float_sees_floats_inside_unions_and_tuples() -> None:
    assert _mentions_float(float | None)
    assert _mentions_float(tuple[tuple[str, float], ...])
    assert not _mentions_float(tuple[tuple[str, int], ...])


def test_core_sources_have_no_float() -> None:
    for path in CORE_SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            assert not (isinstance(node, ast.Constant) and isinstance(node.value, float)), (
                f"{path}:{getattr(node, 'lineno', '?')}: float literal"
            )
            assert not (isinstance(node, ast.Name) and node.id == "float"), (
                f"{path}:{node.lineno}: float used"
            )
            assert not (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value == "float"
            ), f"{path}:{node.lineno}: 'float' annotation"
