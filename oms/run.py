"""`python -m oms.run`: the main job.

Until the local Backpack-compatible exchange exists (its own issue), the main job replays the
bundled recorded sessions in `replay/` and checks each against its expected final state, so
`make run` shows the engine end to end on a fresh machine with no keys and no network.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from oms.log import LogReadError
from oms.replay import replay_file, summary_document, write_text

__all__ = ["main"]

REPLAY_DIR = Path(__file__).resolve().parent.parent / "replay"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m oms.run",
        description="Run the main job. For now: replay the bundled sessions and verify them.",
    )
    parser.add_argument("--dir", type=Path, default=REPLAY_DIR, help="sessions to replay")
    parser.add_argument("--quiet", action="store_true", help="only the verdict per session")
    args = parser.parse_args(argv)
    sessions = sorted(p for p in args.dir.glob("*.jsonl"))
    if not sessions:
        print(f"{args.dir}: no recorded sessions (*.jsonl)", file=sys.stderr)
        return 1
    failures = 0
    for path in sessions:
        try:
            state, reader = replay_file(str(path))
        except LogReadError as exc:
            print(str(exc), file=sys.stderr)
            failures += 1
            continue
        document = summary_document(state, reader)
        expected_path = path.with_name(path.name.removesuffix(".jsonl") + ".expected.json")
        verdict = "no expected state"
        if expected_path.exists():
            expected = json.loads(expected_path.read_text(encoding="utf-8"))
            same = expected.get("state_hash") == document["state_hash"]
            verdict = "state hash matches expected" if same else "STATE HASH DIFFERS"
            failures += not same
        if not args.quiet:
            print("=" * 78)
            write_text(document, str(path), sys.stdout)
        print(f"{path.name}: {document['events']} events, {verdict}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
