"""A randomized fault campaign: many random sessions against the local exchange, judged by the
exchange's own books, with the figures printed at the end.

    .venv/bin/python -m tests.campaign --sessions 1000 --seed 1

Each session starts a fresh exchange and a recorded engine, plays a random script of orders
(spot and perps, both sides: opens, reductions, flips, closes; conditional orders on the perp
that the market's moves trigger, and perp orders with an attached stop loss and take profit),
waits, cancels and faults (dropped, duplicated and held private messages, WebSocket drops, 429
and 503 answers, a 503 on an execute that was placed, clock skew), then ends as
`Harness.finish` does: quiet, one more reconciliation, and the engine's books compared with
the exchange's. Instead of stopping at the first difference it counts them:

- lost: trade ids the exchange has for an order and the engine does not;
- doubled: trade ids the engine counts that the exchange does not, or fills counted twice
  (filled quantity above the exchange's executed quantity);
- drifted: balances, positions or funding that differ from the exchange's;
- in doubt: orders left PendingNew or InDoubt;
- hash mismatches: the log replayed to another state than the live one;
- unexplained anomalies: anomaly kinds that none of the session's faults explains;
- crashes: a session that raised (printed with its script, so it can be replayed).

It also prints, not judged, what became of the conditional orders on the exchange (attached
exits included): triggered, failed when triggered, cancelled before triggering (an exit whose
partner fired is one), still waiting at the end.

The tests run a few such sessions (tests/system/test_e2e.py); this runs as many as asked.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import trio

from oms.core.reducer import replay
from oms.core.serialization import state_hash
from oms.core.values import OrderStatus
from oms.log import LogReader
from oms.replay import replay_file
from oms.testing.books import PERP, SPOT, book_differences
from oms.testing.harness import open_session
from oms_local_exchange import LocalExchange, open_local_exchange
from tests.e2e_support import EXPLAINED, FAULTS, ORDER_KINDS, Action, act

__all__ = ["main", "random_script", "run_session"]

SESSION_LIMIT = 120  # seconds: a session that hangs counts as a crash


def random_script(
    rng: random.Random, max_actions: int = 8, fault_share: float = 0.0
) -> list[Action]:
    """A script drawn like the e2e property test's: two order actions to one other; with
    `fault_share`, that share of the actions are faults on top."""
    script: list[Action] = []
    for _ in range(rng.randint(0, max_actions)):
        if rng.random() < fault_share:
            script.append(("fault", rng.choice(FAULTS)))
        elif rng.random() < 2 / 3:
            script.append(
                (
                    "order",
                    rng.choice((SPOT, PERP)),
                    rng.choice(ORDER_KINDS),
                    rng.choice(("Bid", "Ask")),
                    rng.choice(("0.5", "1", "3", "12")),
                )
            )
        else:
            script.append(
                rng.choice(
                    (
                        ("cancel_last",),
                        ("cancel_all", rng.choice((SPOT, PERP))),
                        ("wait",),
                        ("fault", rng.choice(FAULTS)),
                    )
                )
            )
    return script


def _count(differences: list[str], figures: Counter[str]) -> None:
    for line in differences:
        if "trades missing from the engine" in line:
            missing, _, extra = line.partition("trades missing from the engine ")[2].partition(
                ", extra "
            )
            figures["lost"] += missing.count(",") + 1 if missing != "[]" else 0
            figures["doubled"] += extra.count(",") + 1 if extra != "[]" else 0
        elif "engine filled" in line:
            figures["doubled" if _over(line) else "lost_quantity"] += 1
        elif line.startswith(("balance ", "position ", "funding ")):
            figures["drifted"] += 1
        elif "left PendingNew" in line or "left InDoubt" in line:
            figures["in_doubt"] += 1
        else:
            figures["other_differences"] += 1


def _over(line: str) -> bool:
    """`... exchange executed X, engine filled Y`: Y above X is a fill counted twice."""
    executed = line.split("exchange executed ")[1].split(",", maxsplit=1)[0]
    filled = line.split("engine filled ")[1]
    return Decimal(filled) > Decimal(executed)


def _conditional_outcomes(exchange: LocalExchange) -> Counter[str]:
    """What became of the conditional orders of the exchange's funded account: triggered,
    failed when triggered, cancelled (or still waiting at the end) before the trigger; and
    how many were attached exits."""
    account = exchange.venue.accounts[exchange.api_key]
    out: Counter[str] = Counter()
    for order in account.orders.values():
        if order.trigger_price is None:
            continue
        out["conditional"] += 1
        out["exits"] += order.related_order_id is not None
        if order.status == "TriggerFailed":
            out["trigger_failed"] += 1
        elif order.triggered_us is not None:
            out["triggered"] += 1
        elif order.status == "TriggerPending":
            out["trigger_pending_at_end"] += 1
        else:
            out["cancelled_untriggered"] += 1
    return out


async def run_session(
    path: Path, script: list[Action], seed: int
) -> tuple[list[str], bool, set[str], Counter[str]]:
    """Play `script`; returns the book differences, whether replay equals live, the anomaly
    kinds no fault of the script explains, and what became of its conditional orders."""
    with trio.fail_after(SESSION_LIMIT):
        return await _play(path, script, seed)


async def _play(
    path: Path, script: list[Action], seed: int
) -> tuple[list[str], bool, set[str], Counter[str]]:
    async with (
        open_local_exchange(seed=seed, step_us=50_000, tick_interval=0.05) as exchange,
        open_session(exchange, path, check=False) as h,
    ):
        for action in script:
            await act(h, action)
        if any(o.status is OrderStatus.TRIGGER_PENDING for o in h.state.open_orders()):
            # Triggers still waiting get a moment of market moves (faults still armed) before
            # the ending cancels them: more of them fire within a session.
            await act(h, ("wait",))
        h.faults.release_held()
        skew = h.faults.clock_skew_ms
        h.faults.clear()
        h.faults.clock_skew_ms = skew
        for symbol in sorted({o.symbol for o in h.state.open_orders()}):
            await h.session.cancel_all(symbol)
        await h.quiet()
        await h.session.reconcile()
        await h.quiet(0.1)
        differences = book_differences(h.state, h.exchange)
        allowed: set[str] = set()
        for action in script:
            if action[0] == "fault":
                allowed |= {k.value for k in EXPLAINED.get(action[1], set())}
        unexplained = {k.value for k in h.state.anomaly_counts} - allowed
        outcomes = _conditional_outcomes(h.exchange)
    # After the session has closed: a clean exit records a final reconciliation pass.
    live = state_hash(h.engine.state)
    # Both folds: the reference (`replay`, made of `apply`'s step) and the one `oms.replay`
    # and `Engine.open` use (`ReplayFold`, with its short path).
    same = (
        state_hash(replay(LogReader(path).events())) == live
        and state_hash(replay_file(str(path))[0]) == live
    )
    return differences, same, unexplained, outcomes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-actions", type=int, default=8)
    parser.add_argument(
        "--fault-share", type=float, default=0.0, help="extra share of actions that are faults"
    )
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    figures: Counter[str] = Counter()
    conditional: Counter[str] = Counter()  # not judged: how much the triggers were exercised
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.sessions):
            script = random_script(rng, args.max_actions, args.fault_share)
            figures["sessions"] += 1
            figures["faults"] += sum(1 for a in script if a[0] == "fault")
            figures["orders"] += sum(1 for a in script if a[0] == "order")
            path = Path(tmp) / f"s{n}.jsonl"
            try:
                differences, same, unexplained, outcomes = trio.run(run_session, path, script, n)
            except Exception:
                figures["crashes"] += 1
                print(f"session {n} crashed; script {script!r}", file=sys.stderr)
                traceback.print_exc()
                continue
            _count(differences, figures)
            conditional.update(outcomes)
            figures["hash_mismatches"] += not same
            figures["unexplained_anomalies"] += bool(unexplained)
            if differences or not same or unexplained:
                print(f"session {n}: script {script!r}", file=sys.stderr)
                for line in differences:
                    print(f"  {line}", file=sys.stderr)
                if not same:
                    print("  replay differs from live", file=sys.stderr)
                if unexplained:
                    print(f"  unexplained anomalies {sorted(unexplained)}", file=sys.stderr)
            path.unlink(missing_ok=True)
    elapsed = time.monotonic() - started
    keys = (
        "sessions", "orders", "faults", "lost", "lost_quantity", "doubled", "drifted",
        "in_doubt", "hash_mismatches", "unexplained_anomalies", "other_differences", "crashes",
    )  # fmt: skip
    print(
        f"campaign seed {args.seed}, max actions {args.max_actions}, fault share "
        f"{args.fault_share}, {elapsed:.0f} s"
    )
    for key in keys:
        print(f"  {key:22} {figures[key]}")
    print("conditional orders (exchange side; exits included)")
    for key in (
        "conditional", "exits", "triggered", "trigger_failed", "cancelled_untriggered",
        "trigger_pending_at_end",
    ):  # fmt: skip
        print(f"  {key:22} {conditional[key]}")
    bad = sum(figures[k] for k in keys[3:])
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
