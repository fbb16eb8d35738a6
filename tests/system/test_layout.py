"""The packages import each other in the allowed directions only (docs/architecture.md):

- `oms.core` (the pure core): the standard library, attrs, msgspec, immutables and itself;
- `oms` (the shell: log, engine, replay): `oms.core` and I/O libraries, no adapter; one
  exception, `oms.bench` (the command the speed issue names), which runs `oms_backpack.bench`
  and imports nothing else of the adapter;
- `oms.testing` (the test kit for users' test suites): anything, since it wires the engine,
  the Backpack session and the local exchange together; and no module outside the kit
  imports it, so the engine never loads Hypothesis or the exchange;
- `oms_local_exchange` (an independent oracle for the tests): neither `oms` nor `oms_backpack`,
  so it cannot agree with the engine by sharing its arithmetic or the client's signing;
- `oms_backpack` (the adapter): `oms`, and the local exchange only where the main job and the
  benchmark start or imitate it.

Imports are read from the source (every `import` statement, deferred ones included), not
from what happens to be loaded.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import oms
import oms_backpack
import oms_local_exchange

PACKAGES = {
    "oms": Path(oms.__file__).parent,
    "oms_backpack": Path(oms_backpack.__file__).parent,
    "oms_local_exchange": Path(oms_local_exchange.__file__).parent,
}
OURS = ("oms", "oms_backpack", "oms_local_exchange")
CORE_THIRD_PARTY = {"attrs", "msgspec", "immutables", "isal"}
# Modules of the adapter that start or imitate the local exchange (the main job's embedded
# default, the benchmark's synthetic sessions).
MAY_USE_THE_EXCHANGE = {"oms_backpack.run", "oms_backpack.bench", "oms_backpack.demo"}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out.append((".".join([package, *parts]), path))
    return out


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                package = module.split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
    return found


def _violations(module: str, imported: set[str]) -> list[str]:
    bad: list[str] = []
    if module == "oms.core" or module.startswith("oms.core."):
        allowed = CORE_THIRD_PARTY | {"oms"} | set(sys.stdlib_module_names)
        bad += [name for name in imported if name.split(".")[0] not in allowed]
        bad += [
            name
            for name in imported
            if name.split(".")[0] == "oms" and not name.startswith("oms.core") and name != "oms"
        ]
        bad += [n for n in imported if n.split(".")[0] in {"socket", "asyncio", "ssl", "select"}]
    elif module == "oms.testing" or module.startswith("oms.testing."):
        pass
    elif module.split(".", maxsplit=1)[0] == "oms":
        bad += [
            name
            for name in imported
            if name.split(".")[0] in {"oms_backpack", "oms_local_exchange"}
            and not (module == "oms.bench" and name == "oms_backpack.bench")
        ]
    elif module.split(".", maxsplit=1)[0] == "oms_local_exchange":
        bad += [name for name in imported if name.split(".")[0] in {"oms", "oms_backpack"}]
    elif module.split(".", maxsplit=1)[0] == "oms_backpack" and module not in MAY_USE_THE_EXCHANGE:
        bad += [name for name in imported if name.split(".")[0] == "oms_local_exchange"]
    if not (module == "oms.testing" or module.startswith("oms.testing.")):
        bad += [name for name in imported if name.split(".")[:2] == ["oms", "testing"]]
    return bad


def _cases() -> list[object]:
    return [pytest.param(module, path, id=module) for module, path in _modules()]


@pytest.mark.parametrize(("module", "path"), _cases())
def test_imports_run_in_the_allowed_directions(module: str, path: Path) -> None:
    assert _violations(module, _imports(module, path)) == []


def test_every_package_is_scanned() -> None:
    modules = {m for m, _ in _modules()}
    assert {"oms.core.reducer", "oms.engine", "oms_backpack.session"} <= modules
    assert {"oms_local_exchange.venue"} <= modules


def test_the_check_sees_a_wrong_direction() -> None:
    assert _violations("oms.engine", {"oms_backpack.session"}) == ["oms_backpack.session"]
    assert _violations("oms.core.reducer", {"trio"}) == ["trio"]
    assert _violations("oms.core.reducer", {"oms.engine"}) == ["oms.engine"]
    assert _violations("oms_local_exchange.venue", {"oms.core.values"}) == ["oms.core.values"]
    assert _violations("oms_backpack.session", {"oms_local_exchange"}) == ["oms_local_exchange"]
    assert _violations("oms_backpack.run", {"oms_local_exchange"}) == []
