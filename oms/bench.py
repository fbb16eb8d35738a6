"""`python -m oms.bench`: the speed figures, each beside its target (docs/speed.md).

The figures need a venue's shapes: a Backpack session's events and WebSocket frames, and the
local exchange for the submits. So the bench lives in the Backpack adapter, and this module,
the name the speed issue gives, runs `oms_backpack.bench` with the same arguments
(`python -m oms.bench --quick` is `python -m oms_backpack.bench --quick`, or `oms-bench`).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    from oms_backpack.bench import main as bench_main

    return bench_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
