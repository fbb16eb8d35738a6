"""`python -m oms.replay PATH [--json] [--until SEQ] [--full]`: the state a recorded session
implies. PATH may be `nats://HOST:PORT/SUBJECT`: the events a JetStream stream holds there.

Exit codes: 0 ok; 1 bad input (one line `PATH:LINE: what is wrong` on stderr, no
traceback); 2 usage. The input is only ever read. A torn last line (a crash mid-write) is
dropped, reported on stderr, and is not an error. The CLI resumes from the newest valid
snapshot the engine left beside the log (docs/snapshots.md) and reads only the events after
it; a snapshot passed over is reported on stderr (not an error); `--full` reads the whole log.
It never writes a snapshot.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

from oms.core.events import Event
from oms.core.replay_fold import ReplayFold
from oms.core.serialization import state_document, state_hash
from oms.core.state import DEFAULT_RETAIN_FINISHED, State
from oms.log import LogReader, LogReadError, _one_line
from oms.snapshot import IgnoredSnapshot, Resume, find_snapshot

__all__ = ["main", "replay_file", "summary_document"]

RECENT_FINISHED = 20
RECENT_ANOMALIES = 20
_PROGRESS_EVERY = 65536
_snapshot_log = logging.getLogger("oms.snapshot")


class _Progress:
    """A one-line progress indicator on a terminal; silent otherwise."""

    def __init__(self, stream: IO[str], total_bytes: int) -> None:
        self.stream = stream
        self.total = max(total_bytes, 1)
        self.enabled = stream.isatty() and total_bytes > 8 * 1024 * 1024
        self.started = time.monotonic()
        self.shown = False

    def update(self, events: int, offset: int) -> None:
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.stream.write(
            f"\rreplaying: {100 * offset // self.total:3d}%  {events:,} events  "
            f"{events / elapsed:,.0f}/s"
        )
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def replay_file(
    path: str,
    *,
    until: int | None = None,
    retain_finished: int = DEFAULT_RETAIN_FINISHED,
    progress: IO[str] | None = None,
    use_snapshots: bool = False,
) -> tuple[State, LogReader]:
    """Replay the log at `path` (up to and including seq `until`). Raises LogReadError.

    By default every event is read. With `use_snapshots`, the replay resumes from the
    newest valid snapshot (up to `until`) and reads the events after it; the state is the
    same. Snapshots passed over are logged as warnings on logger `oms.snapshot`.

    The cyclic garbage collector is paused while the log folds (a replay makes no cycles;
    about 3% of its time went to the collector's walks) and restored as it was after, also on
    an error: other threads of the process run without cycle collection meanwhile.
    """
    state, reader, ignored = _replay_file(
        path,
        until=until,
        retain_finished=retain_finished,
        progress=progress,
        use_snapshots=use_snapshots,
    )
    for item in ignored:
        _snapshot_log.warning("%s", item)
    return state, reader


def _replay_file(
    path: str,
    *,
    until: int | None,
    retain_finished: int,
    progress: IO[str] | None,
    use_snapshots: bool,
) -> tuple[State, LogReader, list[IgnoredSnapshot]]:
    """`replay_file`, with the snapshots passed over."""
    if not use_snapshots:
        return (*_replay(path, until, retain_finished, progress, None), [])
    resume, ignored = find_snapshot(path, retain_finished=retain_finished, until=until)
    if resume is not None:
        try:
            return (*_replay(path, until, retain_finished, progress, resume), ignored)
        except (LogReadError, OSError):
            raise  # the log is bad after the snapshot: reading all of it fails the same way
        except Exception as exc:
            # Valid when checked, yet the log does not go on from it (changed meanwhile) or
            # its state trips the reducer: read the whole log instead.
            reason = f"resuming from it failed: {type(exc).__name__}: {exc}"
            ignored.append(IgnoredSnapshot(resume.path, _one_line(reason)))
    return (*_replay(path, until, retain_finished, progress, None), ignored)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a replay folds, then as it was.

    A replay makes no reference cycles, but every order it keeps holds a few objects the
    collector tracks (its set of trade ids, its tuple of fees), so the collector would walk
    the young ones every few hundred orders: about 3% of a replay's time. Reference counting
    frees memory as usual meanwhile; only the search for cycles waits."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _replay(
    path: str,
    until: int | None,
    retain_finished: int,
    progress: IO[str] | None,
    resume: Resume | None,
) -> tuple[State, LogReader]:
    # The fold reads no event's venue text: it is left undecoded.
    if resume is None:
        reader = LogReader(path, fold_only=True)
        fold = ReplayFold(State(retain_finished=retain_finished))
    else:
        reader = LogReader(path, start=resume.mark, fold_only=True)
        fold = ReplayFold(resume.state)
    step = fold.step
    meter = _Progress(progress, _size(path)) if progress is not None else None
    if meter is not None and not meter.enabled:
        meter = None  # nothing to show (not a terminal, or a small log)

    event: Event | None = None
    with _collector_paused():
        try:
            if until is None and meter is None:
                # The usual case, with nothing else to do per event.
                reader.feed(step)
            else:
                for seq, event in reader:
                    if until is not None and seq > until:
                        break
                    step(event)
                    if meter is not None and seq % _PROGRESS_EVERY == 0:
                        meter.update(seq, reader.end_offset)
        except (LogReadError, OSError):
            raise
        except Exception as exc:
            if event is None:
                event = fold.failed  # the event `step` was folding
            if resume is not None or event is None:
                raise  # perhaps the snapshot's fault: the caller reads the whole log
            # The reducer is total on what the reader accepts; should that ever fail, the user
            # still gets the line to look at, not a traceback. The event being applied is the
            # last one read; seq n is on line n + 1.
            raise LogReadError(
                path,
                reader.last_seq + 1,
                f"cannot apply {type(event).__name__}: {type(exc).__name__}: {exc}",
            ) from exc
        finally:
            if meter is not None:
                meter.done()
        return fold.freeze(), reader


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def summary_document(state: State, reader: LogReader | None = None) -> dict[str, Any]:
    """What `--json` prints (schema: docs/replay.md)."""
    torn = None if reader is None or reader.torn is None else reader.torn
    document: dict[str, Any] = {
        "format": "oms-replay",
        "version": 1,
        "events": state.last_seq,
        "last_seq": state.last_seq,
        "state_hash": state_hash(state),
        "torn_tail": None
        if torn is None
        else {"line": torn.line, "offset": torn.offset, "length": torn.length},
    }
    body = state_document(state, finished_limit=RECENT_FINISHED)
    body["anomalies"]["recent"] = body["anomalies"]["recent"][-RECENT_ANOMALIES:]
    document.update(body)
    return document


def _table(rows: Sequence[Sequence[str]], out: IO[str], indent: str = "  ") -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write(indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        out.write("\n")


def _s(value: Any) -> str:
    return "-" if value is None else str(value)


def _filled(order: dict[str, Any]) -> str:
    """Fills counted; while the venue reports more executed, that figure too."""
    if order.get("awaiting_fills"):
        return f"{order['filled_quantity']} (venue {order['venue_executed']}: awaiting fills)"
    return str(order["filled_quantity"])


def _orders(title: str, orders: list[dict[str, Any]], out: IO[str]) -> None:
    out.write(f"\n{title}\n")
    if not orders:
        out.write("  (none)\n")
        return
    header = ["key", "symbol", "side", "type", "status", "price", "quantity", "filled", "fees"]
    rows = [header]
    for o in orders:
        fees = ", ".join(f"{amount} {asset}" for asset, amount in o["fees"].items())
        rows.append(
            [
                o["key"],
                o["symbol"],
                _s(o["side"]),
                _s(o["order_type"]),
                o["status"],
                _s(o["price"]),
                _s(o["quantity"] if o["quantity"] is not None else o["quote_quantity"]),
                _filled(o),
                fees or "-",
            ]
        )
    _table(rows, out)


def write_text(document: dict[str, Any], path: str, out: IO[str]) -> None:
    out.write(f"{path}: {document['events']} events, last seq {document['last_seq']}\n")
    out.write(f"state hash: {document['state_hash']}\n")
    _orders(f"Open orders ({len(document['orders']['open'])})", document["orders"]["open"], out)
    _orders(
        f"Recently finished orders (newest first, up to {RECENT_FINISHED})",
        document["orders"]["finished"],
        out,
    )
    out.write("\nBalances (derived | venue at last snapshot, drift = venue - derived then)\n")
    if document["balances"]:
        rows = [["asset", "available", "locked", "total", "venue avail", "venue locked", "drift"]]
        for b in document["balances"]:
            observed = b["observed"] or {}
            rows.append(
                [
                    b["asset"],
                    b["available"],
                    b["locked"],
                    b["total"],
                    _s(observed.get("available")),
                    _s(observed.get("locked")),
                    f"{b['drift_available']}/{b['drift_locked']}",
                ]
            )
        _table(rows, out)
    else:
        out.write("  (none)\n")
    out.write("\nPositions (derived | venue at last report)\n")
    if document["positions"]:
        rows = [
            ["symbol", "net", "entry", "realized", "funding", "fees", "venue net", "venue entry"]
        ]
        for p in document["positions"]:
            observed = p["observed"] or {}
            fees = ", ".join(f"{amount} {asset}" for asset, amount in p["fees"].items())
            rows.append(
                [
                    p["symbol"],
                    p["net_quantity"],
                    p["entry_price"],
                    p["realized_pnl"],
                    p["funding"],
                    fees or "-",
                    _s(observed.get("net_quantity")),
                    _s(observed.get("entry_price")),
                ]
            )
        _table(rows, out)
    else:
        out.write("  (none)\n")
    anomalies = document["anomalies"]
    out.write(f"\nAnomalies: {anomalies['total']}\n")
    for kind, count in anomalies["by_kind"].items():
        out.write(f"  {kind}: {count}\n")
    for a in anomalies["recent"]:
        out.write(f"  seq {a['seq']} {a['kind']}: {a['detail']}\n")
    risk = document.get("risk")
    if risk is not None:  # only once the kill switch or the risk check recorded something
        switch, denials = risk["kill_switch"], risk["denials"]
        state = "TRIPPED" if switch["tripped"] else "not tripped"
        out.write(f"\nKill switch: {state}")
        if switch["seq"] is not None:
            verb = "tripped" if switch["tripped"] else "last tripped"
            out.write(f" ({verb} at seq {switch['seq']} by {switch['by']}: {switch['reason']})")
        out.write(f"; trips {switch['trips']}, resets {switch['resets']}\n")
        out.write(f"Risk denials: {denials['total']}\n")
        for limit, count in denials["by_limit"].items():
            out.write(f"  {limit}: {count}\n")
        if denials["last"] is not None:
            out.write(f"  last: {denials['last']}\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m oms.replay",
        description="Replay a recorded oms session and print the state it implies.",
        epilog="Exit status: 0 ok, 1 bad input, 2 usage.",
    )
    parser.add_argument(
        "path",
        help="session log (JSON Lines), or nats://HOST:PORT/SUBJECT for the events a NATS "
        "JetStream stream holds on that subject (docs/nats.md)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--until", type=int, metavar="SEQ", help="stop after the event with this seq"
    )
    parser.add_argument(
        "--retain-finished",
        type=int,
        default=DEFAULT_RETAIN_FINISHED,
        metavar="N",
        help=f"finished orders kept in state (default {DEFAULT_RETAIN_FINISHED})",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="read the whole log, ignoring snapshots (by default the replay resumes from the "
        "newest valid one)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="from a stream: give up after this long (default 60)",
    )
    return parser


def _replay_stream(url: str, args: argparse.Namespace) -> int:
    """`main` for `nats://HOST:PORT/SUBJECT`: the events the stream holds on that subject."""
    import trio

    from oms.core.errors import ExternalError
    from oms.ship.rebuild import rebuild

    async def read() -> State:
        with trio.fail_after(args.timeout):
            return await rebuild(url, until=args.until, retain_finished=args.retain_finished)

    try:
        state = trio.run(read)
    except ExternalError as exc:  # the address, the server, the stream or an event in it
        print(_one_line(str(exc)), file=sys.stderr)
        return 1
    except trio.TooSlowError:
        print(f"{url}: not read within {args.timeout:g} s", file=sys.stderr)
        return 1
    return _print(summary_document(state), url, args.json)


def _print(document: dict[str, Any], path: str, as_json: bool) -> int:
    try:
        if as_json:
            json.dump(document, sys.stdout, indent=2, sort_keys=False)
            sys.stdout.write("\n")
        else:
            write_text(document, path, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`); nothing more to say.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.until is not None and args.until < 0:
        parser.error("--until must be >= 0")
    if args.retain_finished < 0:
        parser.error("--retain-finished must be >= 0")
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    path: str = args.path
    if path.startswith("nats://"):
        return _replay_stream(path, args)
    if os.path.isdir(path):
        print(f"{path}: is a directory", file=sys.stderr)
        return 1
    if not os.path.exists(path):
        print(f"{path}: no such file", file=sys.stderr)
        return 1
    try:
        state, reader, ignored = _replay_file(
            path,
            until=args.until,
            retain_finished=args.retain_finished,
            progress=sys.stderr,
            use_snapshots=not args.full,
        )
    except LogReadError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for item in ignored:
        print(str(item), file=sys.stderr)
    if reader.torn is not None:
        print(
            f"{path}:{reader.torn.line}: torn last line dropped ({reader.torn.length} bytes): "
            f"{reader.torn.reason}",
            file=sys.stderr,
        )
    return _print(summary_document(state, reader), path, args.json)


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(130) from None
