"""`python -m oms.status SESSION.jsonl [--json]`: where the account stands, at a glance.

The same view the main job shows live (`oms_backpack.run`): open orders, orders waiting for
fills or in doubt, the orders the venue placed (liquidation, ADL, its strategies) with their
origin, positions marked to market (entry, mark, unrealized and realized PnL,
notional, exposure, the venue's figures and the drift), balances derived beside the venue's
with their drift, fees by asset, funding, the kill switch and the risk denials, the headroom
left under each risk limit (given `--limits`), the newest reconciliation finding, anomalies.
`--json` prints the same as one document, whose schema is docs/status.md (`format`
`oms.status/1`).

Exit codes: 0 ok; 1 bad input (one line `PATH:LINE: what is wrong` on stderr, no
traceback); 2 usage. The input is only ever read.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

import attrs

from oms.core.account import AccountTotals, MarkedPosition, account_totals
from oms.core.errors import ConfigurationError
from oms.core.events import Event
from oms.core.reducer import Fold
from oms.core.risk import Headroom, Limits, headroom
from oms.core.serialization import risk_document
from oms.core.state import Balance, Order, State
from oms.core.values import CTX, OrderStatus, Source, canonical_decimal
from oms.limits import load_limits
from oms.log import LogReader, LogReadError

__all__ = ["STATUS_FORMAT", "ReconciliationTracker", "main", "render_text", "status_document"]

STATUS_FORMAT: Final = "oms.status/1"
IN_DOUBT: Final = OrderStatus.IN_DOUBT


@attrs.define(eq=False)
class ReconciliationTracker:
    """Follows the events for the newest reconciliation finding: an engine listener
    (`engine.subscribe(tracker.observe)`), or fed by hand while folding a log.

    A reconciliation pass records only what is news (a pass that finds nothing records
    nothing), so the log shows what a pass found, not every pass: a *finding* is a run of
    consecutive events from reconciliation (`source` `reconcile`). `first_seq`..`last_seq`
    is the newest run, `time_us` the local time of its last event. The live engine knows when
    the last pass ran even if it found nothing: `status_document(last_pass_us=...)`.
    """

    first_seq: int | None = None
    last_seq: int | None = None
    events: int = 0
    time_us: int | None = None
    by_type: dict[str, int] = attrs.field(factory=dict)

    def observe(self, event: Event, state: State) -> None:
        """Engine listener: `event` was just applied, giving `state`."""
        self.note(event, state.last_seq)

    def note(self, event: Event, seq: int) -> None:
        """`event` was applied with seq `seq`."""
        if event.source is not Source.RECONCILE:
            return
        if self.last_seq is None or seq != self.last_seq + 1:
            self.first_seq, self.events, self.by_type = seq, 0, {}
        self.last_seq = seq
        self.events += 1
        self.time_us = event.recv_time_us
        name = type(event).__name__
        self.by_type[name] = self.by_type.get(name, 0) + 1


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else canonical_decimal(value)


def _order(order: Order) -> dict[str, Any]:
    return {
        "key": order.key,
        "client_id": order.client_id,
        "venue_id": order.venue_id,
        "symbol": order.symbol,
        "side": None if order.side is None else str(order.side),
        "order_type": None if order.order_type is None else str(order.order_type),
        "status": str(order.status),
        "price": _dec(order.price),
        "quantity": _dec(order.quantity),
        "filled_quantity": _dec(order.filled_quantity),
        "venue_executed": _dec(order.venue_executed),
        "reduce_only": order.reduce_only,
        "cancel_requested": order.cancel_requested,
        "created_seq": order.created_seq,
        "updated_seq": order.updated_seq,
        "origin": str(order.origin),
        "placed_by_venue": order.placed_by_venue,
        "strategy_id": order.strategy_id,
        "related_order_id": order.related_order_id,
    }


def _position(state: State, marked: MarkedPosition) -> dict[str, Any]:
    position = state.positions[marked.symbol]
    return {
        "symbol": marked.symbol,
        "quote_asset": marked.quote_asset,
        "net_quantity": _dec(marked.net_quantity),
        "entry_price": _dec(marked.entry_price),
        "mark_price": _dec(marked.mark_price),
        "mark_seq": marked.mark_seq,
        "unrealized_pnl": _dec(marked.unrealized_pnl),
        "realized_pnl": _dec(marked.realized_pnl),
        "funding": _dec(marked.funding),
        "fees": {asset: _dec(amount) for asset, amount in position.fees},
        "notional": _dec(marked.notional),
        "exposure": _dec(marked.exposure),
        "venue": None
        if position.observed is None
        else {
            "net_quantity": _dec(marked.venue_net_quantity),
            "mark_price": _dec(marked.venue_mark_price),
            "unrealized_pnl": _dec(marked.venue_unrealized_pnl),
            "derived_unrealized_pnl": _dec(marked.derived_unrealized_at_venue_mark),
        },
        "drift": {
            "quantity": _dec(marked.drift_quantity),
            "unrealized_pnl": _dec(marked.drift_unrealized_pnl),
        },
    }


def _account(totals: AccountTotals) -> dict[str, Any]:
    return {
        "quote_asset": totals.quote_asset,
        "unrealized_pnl": _dec(totals.unrealized_pnl),
        "realized_pnl": _dec(totals.realized_pnl),
        "funding": _dec(totals.funding),
        "gross_exposure": _dec(totals.gross_exposure),
        "net_exposure": _dec(totals.net_exposure),
        "unmarked": list(totals.unmarked),
    }


def _balance(balance: Balance) -> dict[str, Any]:
    observed = balance.observed
    return {
        "asset": balance.asset,
        "derived": {
            "available": _dec(balance.available),
            "locked": _dec(balance.locked),
            "total": _dec(balance.total),
        },
        "venue": None
        if observed is None
        else {
            "available": _dec(observed.available),
            "locked": _dec(observed.locked),
            "staked": _dec(observed.staked),
        },
        "drift": {"available": _dec(balance.drift_available), "locked": _dec(balance.drift_locked)},
    }


def _sum_by_asset(pairs: Sequence[tuple[str, Decimal]]) -> dict[str, str]:
    totals: dict[str, Decimal] = {}
    for asset, amount in pairs:
        totals[asset] = CTX.add(totals.get(asset, Decimal(0)), amount)
    return {asset: canonical_decimal(totals[asset]) for asset in sorted(totals)}


def status_document(
    state: State,
    *,
    reconciliation: ReconciliationTracker | None = None,
    last_pass_us: int | None = None,
    last_pass_events: int | None = None,
    source: str | None = None,
    limits: Limits | None = None,
    now_us: int | None = None,
) -> dict[str, Any]:
    """The status of `state` as one JSON-ready document (docs/status.md).

    `reconciliation` is the tracker that followed the events; `last_pass_us` and
    `last_pass_events`, when known (live), the local time the last reconciliation pass
    completed and how many events it recorded; `source` names where the state came from (a
    path, an account); `limits`, the risk limits to show the headroom of, as of `now_us` (the
    rate of submits and the loss window end then; default: the newest submit's time).
    """
    orders = sorted(state.orders.values(), key=lambda o: o.created_seq)
    live = [o for o in orders if not o.status.is_terminal]
    waiting = [o for o in orders if o.awaiting_fills]
    by_venue = [o for o in orders if o.placed_by_venue]
    marked, totals = account_totals(state)
    fees: list[tuple[str, Decimal]] = [pair for o in state.orders.values() for pair in o.fees]
    funding: list[tuple[str, Decimal]] = []
    for position in state.positions.values():
        market = state.markets.get(position.symbol)
        if position.funding_intervals and market is not None:
            funding.append((market.quote_asset, position.funding))
    found: dict[str, Any] | None = None
    if reconciliation is not None and reconciliation.last_seq is not None:
        first, last = reconciliation.first_seq, reconciliation.last_seq
        assert first is not None
        kinds: dict[str, int] = {}
        for anomaly in state.anomalies:
            if first <= anomaly.seq <= last:
                kinds[str(anomaly.kind)] = kinds.get(str(anomaly.kind), 0) + 1
        found = {
            "first_seq": first,
            "last_seq": last,
            "time_us": reconciliation.time_us,
            "events": reconciliation.events,
            "by_type": dict(sorted(reconciliation.by_type.items())),
            "anomalies": dict(sorted(kinds.items())),
        }
    return {
        "format": STATUS_FORMAT,
        "source": source,
        "last_seq": state.last_seq,
        "orders": {
            "open": [_order(o) for o in live if o.status.is_open],
            "pending": [
                _order(o) for o in live if not o.status.is_open and o.status is not IN_DOUBT
            ],
            "in_doubt": [_order(o) for o in live if o.status is IN_DOUBT],
            "waiting_for_fills": [_order(o) for o in waiting],
            "placed_by_venue": [_order(o) for o in by_venue],
        },
        "positions": [_position(state, m) for m in marked],
        "account": [_account(t) for t in totals],
        "balances": [_balance(state.balances[a]) for a in sorted(state.balances.keys())],
        "fees": {
            "by_asset": _sum_by_asset(fees),
            # Fees are summed over the orders the state keeps: complete until the first
            # finished order is dropped by retention.
            "complete": state.finished_head == 0,
        },
        "funding": {"by_asset": _sum_by_asset(funding)},
        "marks": [
            {
                "symbol": m.symbol,
                "price": _dec(m.price),
                "seq": m.seq,
                "recv_time_us": m.recv_time_us,
                "venue_time_us": m.venue_time_us,
            }
            for m in (state.marks[s] for s in sorted(state.marks.keys()))
        ],
        "risk": _risk(state, limits, now_us),
        "reconciliation": {
            "baseline_seq": state.baseline_seq,
            "last_pass_us": last_pass_us,
            "last_pass_events": last_pass_events,
            "last_finding": found,
        },
        "anomalies": {
            "total": state.anomaly_total,
            "by_kind": {str(k): state.anomaly_counts[k] for k in sorted(state.anomaly_counts)},
        },
    }


def _number(value: Decimal | int | None) -> str | int | None:
    return value if value is None or isinstance(value, int) else canonical_decimal(value)


def _limit(row: Headroom) -> dict[str, Any]:
    return {
        "limit": str(row.limit),
        "scope": row.scope,
        "most": _number(row.most),
        "used": _number(row.used),
        "left": _number(row.left),
        "per_order": row.per_order,
    }


def _risk(state: State, limits: Limits | None, now_us: int | None) -> dict[str, Any]:
    risk = state.risk
    if limits is not None and now_us is None:
        now_us = risk.submit_times[-1] if risk.submit_times else 0
    return {
        **risk_document(risk),
        "limits": None
        if limits is None or now_us is None
        else {"as_of_us": now_us, "rows": [_limit(r) for r in headroom(state, limits, now_us)]},
    }


def _show(value: object) -> str:
    return "-" if value is None else str(value)


def _when(time_us: int | None) -> str:
    """A time in microseconds as UTC, to the millisecond."""
    if time_us is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(time_us / 1_000_000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _order_line(o: dict[str, Any]) -> str:
    """One order of the status document as a line; an order the user did not place shows
    where it came from (its origin, the venue strategy that placed it)."""
    line = (
        f"  {o['key']:<14} {o['symbol']:<14} {_show(o['side']):<4} "
        f"{_show(o['order_type']):<11} {o['status']:<16} {_show(o['price']):>12} "
        f"{o['filled_quantity']}/{_show(o['quantity'])}"
    )
    if o["venue_executed"] not in (None, o["filled_quantity"]):
        line += f" (venue {o['venue_executed']})"
    if o["placed_by_venue"]:
        line += f"  origin {o['origin']}"
        if o["strategy_id"] is not None:
            line += f" strategy {o['strategy_id']}"
    return line


def render_text(doc: dict[str, Any], *, max_orders: int = 10) -> list[str]:
    """The status document as lines for a terminal."""
    lines = [
        f"status of {_show(doc['source'])} at seq {doc['last_seq']:,}  "
        f"anomalies {doc['anomalies']['total']}"
    ]
    orders = doc["orders"]
    for title, key in (
        ("open orders", "open"),
        ("pending (sent, no answer yet)", "pending"),
        ("in doubt", "in_doubt"),
        ("waiting for fills", "waiting_for_fills"),
    ):
        listed = orders[key]
        if not listed and key != "open":
            continue
        lines.append(f"{title}: {len(listed)}")
        lines += [_order_line(o) for o in listed[:max_orders]]
        if len(listed) > max_orders:
            lines.append(f"  ... {len(listed) - max_orders} more")
    by_venue = orders["placed_by_venue"]
    if by_venue:
        # The newest matter most here: a liquidation that just happened.
        lines.append(f"placed by the venue (kept, any status): {len(by_venue)}")
        if len(by_venue) > max_orders:
            lines.append(f"  ... {len(by_venue) - max_orders} earlier")
        lines += [_order_line(o) for o in by_venue[-max_orders:]]
    lines.append("positions:")
    lines += [
        f"  {p['symbol']:<14} net {p['net_quantity']:>10}  entry {p['entry_price']}  "
        f"mark {_show(p['mark_price'])}  unrealized {_show(p['unrealized_pnl'])}  "
        f"realized {p['realized_pnl']}  funding {p['funding']}  notional {_show(p['notional'])}"
        + (
            ""
            if p["venue"] is None
            else f"  | venue net {p['venue']['net_quantity']} unrealized "
            f"{_show(p['venue']['unrealized_pnl'])} drift qty {p['drift']['quantity']} "
            f"pnl {_show(p['drift']['unrealized_pnl'])}"
        )
        for p in doc["positions"]
    ] or ["  (none)"]
    for total in doc["account"]:
        lines.append(
            f"account ({_show(total['quote_asset'])}): unrealized "
            f"{_show(total['unrealized_pnl'])}  realized {total['realized_pnl']}  funding "
            f"{total['funding']}  gross exposure {_show(total['gross_exposure'])}  net "
            f"{_show(total['net_exposure'])}"
            + (f"  (no mark: {', '.join(total['unmarked'])})" if total["unmarked"] else "")
        )
    lines.append("balances (derived | venue | drift):")
    lines += [
        f"  {b['asset']:<6} available {b['derived']['available']:>16} locked "
        f"{b['derived']['locked']:>12} | "
        + (
            "not reported"
            if b["venue"] is None
            else f"{b['venue']['available']} / {b['venue']['locked']}"
        )
        + f" | {b['drift']['available']} / {b['drift']['locked']}"
        for b in doc["balances"]
    ] or ["  (none)"]
    fees = doc["fees"]
    lines.append(
        "fees: "
        + (", ".join(f"{v} {k}" for k, v in fees["by_asset"].items()) or "none")
        + ("" if fees["complete"] else " (over the orders kept)")
    )
    lines.append(
        "funding: "
        + (", ".join(f"{v} {k}" for k, v in doc["funding"]["by_asset"].items()) or "none")
    )
    lines += _risk_lines(doc["risk"])
    recon = doc["reconciliation"]
    finding = recon["last_finding"]
    text = (
        "nothing found in this log"
        if finding is None
        else f"seq {finding['first_seq']}..{finding['last_seq']} at {_when(finding['time_us'])}: "
        f"{finding['events']} events "
        + ", ".join(f"{n} {t}" for t, n in finding["by_type"].items())
        + (
            "; anomalies " + ", ".join(f"{n} {k}" for k, n in finding["anomalies"].items())
            if finding["anomalies"]
            else ""
        )
    )
    last_pass = (
        ""
        if recon["last_pass_us"] is None
        else f"last pass at {_when(recon['last_pass_us'])} recorded "
        f"{recon['last_pass_events']} events; "
    )
    lines.append(f"reconciliation: {last_pass}newest finding: {text}")
    return lines


def _risk_lines(risk: dict[str, Any]) -> list[str]:
    switch = risk["kill_switch"]
    lines = [
        (
            f"KILL SWITCH TRIPPED at seq {switch['seq']} ({_when(switch['time_us'])}) by "
            f"{switch['by']}: {switch['reason']}"
            if switch["tripped"]
            else "kill switch: not tripped"
        )
        + (f"  (trips {switch['trips']}, resets {switch['resets']})" if switch["trips"] else "")
    ]
    denials = risk["denials"]
    if denials["total"]:
        lines.append(
            f"risk denials: {denials['total']} ("
            + ", ".join(f"{n} {k}" for k, n in denials["by_limit"].items())
            + f"); last: {denials['last']}"
        )
    table = risk["limits"]
    if table is not None:
        lines.append(f"risk limits (as of {_when(table['as_of_us'])}):")
        lines += [
            f"  {r['limit']:<20} {r['scope']:<14} "
            + (
                f"at most {r['most']} per order"
                if r["per_order"]
                else f"used {_show(r['used'])} of {r['most']}, left {_show(r['left'])}"
                + ("  BROKEN" if r["left"] is not None and Decimal(r["left"]) < 0 else "")
            )
            for r in table["rows"]
        ] or ["  (none set)"]
    return lines


def status_of_file(path: str) -> tuple[State, ReconciliationTracker, LogReader, int | None]:
    """Fold the whole log at `path`, following reconciliation; also the local time of its last
    event. Raises `LogReadError`."""
    reader = LogReader(path)
    fold = Fold(State())
    tracker = ReconciliationTracker()
    last_us = None
    for _seq, event in reader:
        fold.step(event)
        tracker.note(event, fold.seq)
        last_us = event.recv_time_us
    return fold.freeze(), tracker, reader, last_us


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m oms.status",
        description="Where the account of a recorded session stands.",
        epilog="Exit status: 0 ok, 1 bad input, 2 usage. Schema of --json: docs/status.md.",
    )
    parser.add_argument("path", help="a session log (JSON Lines)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--limits", default=None, metavar="TOML",
                        help="risk limits (docs/risk.md): show the headroom left under each, "
                        "as of the log's last event")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path: str = args.path
    if os.path.isdir(path):
        print(f"{path}: is a directory", file=sys.stderr)
        return 1
    if not os.path.exists(path):
        print(f"{path}: no such file", file=sys.stderr)
        return 1
    limits = None
    if args.limits is not None:
        try:
            limits = load_limits(args.limits)
        except ConfigurationError as exc:
            print(str(exc), file=sys.stderr)
            return 1
    try:
        state, tracker, reader, last_us = status_of_file(path)
    except LogReadError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if reader.torn is not None:
        print(
            f"{path}:{reader.torn.line}: torn last line dropped ({reader.torn.length} bytes): "
            f"{reader.torn.reason}",
            file=sys.stderr,
        )
    doc = status_document(state, reconciliation=tracker, source=path, limits=limits, now_us=last_us)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(render_text(doc)))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(130) from None
