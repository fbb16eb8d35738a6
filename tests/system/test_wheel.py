"""The wheel a user installs: built from this repository, installed in a fresh virtual
environment beside the user's own package named `adapters`, with nothing of the clone in
reach.

What it proves: the wheel installs only import names specific to this project (no top-level
`adapters`, which would shadow or be shadowed by the user's), the engine and the Backpack
adapter import and run without the `exchange` extra, the local exchange imports with it, the
console scripts work, and `oms.__version__` is the distribution's version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import oms
from tests.helpers import ROOT

OUR_NAMES = {"oms", "oms_backpack", "oms_local_exchange"}
SCRIPTS = {"oms-replay", "oms-ship", "oms-run", "oms-bench", "oms-local-exchange"}
GOLDEN = "spot_limit_partial_cancel"


def _run(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=timeout
    )
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_the_wheel_installs_beside_a_user_package_named_adapters(tmp_path: Path) -> None:
    # Nothing from the development environment leaks in: no PYTHONPATH, no active venv.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    elsewhere = tmp_path / "elsewhere"  # the working directory: not the clone
    elsewhere.mkdir()

    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist),
          str(ROOT)], elsewhere, env)  # fmt: skip
    (wheel,) = dist.glob("oms-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    tops = {name.split("/")[0] for name in names}
    assert not any(name.startswith("adapters/") for name in names)
    assert tops - {n for n in tops if n.endswith(".dist-info")} == OUR_NAMES
    assert all(f"{script} =" in scripts for script in SCRIPTS)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], elsewhere, env)
    python = venv / "bin" / "python"
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
             elsewhere, env).stdout.strip()
    )  # fmt: skip
    # The user's own `adapters`, installed first: a wheel that shipped one would overwrite it.
    (site / "adapters").mkdir()
    (site / "adapters" / "__init__.py").write_text('OWNER = "user"\n', encoding="utf-8")

    # Without the extra: an embedding program needs no web server.
    _run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], elsewhere, env)
    check = (
        "import json, adapters, oms, oms_backpack\n"
        "print(json.dumps([adapters.OWNER, oms.__file__, oms_backpack.__file__]))"
    )
    owner, oms_file, backpack_file = json.loads(
        _run([str(python), "-c", check], elsewhere, env).stdout
    )
    assert owner == "user"
    assert Path(oms_file).is_relative_to(site) and Path(backpack_file).is_relative_to(site)
    version = _run([str(python), "-c", "import oms; print(oms.__version__)"], elsewhere, env)
    assert version.stdout.strip() == oms.__version__
    _run([str(venv / "bin" / "oms-replay"), "--help"], elsewhere, env)
    _run([str(python), "-m", "oms_backpack.run", "--help"], elsewhere, env)
    replayed = _run(
        [str(venv / "bin" / "oms-replay"), str(ROOT / "replay" / f"{GOLDEN}.jsonl"), "--json"],
        elsewhere,
        env,
    )
    expected = json.loads((ROOT / "replay" / f"{GOLDEN}.expected.json").read_text("utf-8"))
    assert json.loads(replayed.stdout)["state_hash"] == expected["state_hash"]

    # With the extra: the local exchange imports, and the user's package is still the user's.
    _run([str(python), "-m", "pip", "install", "--quiet", f"{wheel}[exchange]"], elsewhere, env)
    check = (
        "import adapters, oms, oms_backpack, oms_local_exchange\n"
        "assert adapters.OWNER == 'user', adapters\n"
    )
    _run([str(python), "-c", check], elsewhere, env)
    _run([str(venv / "bin" / "oms-local-exchange"), "--help"], elsewhere, env)
