"""`python -m oms.ship LOG --to nats://HOST:PORT --venue VENUE --account ACCOUNT [--follow]`:
ship a recorded session's events to NATS JetStream (docs/nats.md).

Without `--follow` it catches the stream up with the file and exits; with it, it goes on
shipping what is appended until interrupted. Exit codes: 0 the stream holds every event of
the file; 1 the stream holds another history for the account (a second writer), the log
cannot be read, or the server could not be reached within `--wait` seconds; 2 usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import trio

from oms.core.errors import ConfigurationError
from oms.log import LogReadError
from oms.ship.shipper import DEFAULT_STREAM, DEFAULT_SUBJECT, ShipConfig, ShipConflict, Shipper

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m oms.ship",
        description="Ship a recorded oms session's events to a NATS JetStream subject.",
        epilog="Exit status: 0 shipped, 1 refused or failed, 2 usage.",
    )
    parser.add_argument("path", help="session log (JSON Lines)")
    parser.add_argument("--to", required=True, metavar="URL", help="nats://HOST:PORT")
    parser.add_argument("--venue", required=True, help="venue name in the subject")
    parser.add_argument("--account", required=True, help="account name in the subject")
    parser.add_argument(
        "--subject",
        default=DEFAULT_SUBJECT,
        metavar="TEMPLATE",
        help=f"subject template with {{venue}} and {{account}} (default {DEFAULT_SUBJECT})",
    )
    parser.add_argument("--stream", default=DEFAULT_STREAM, help="JetStream stream name")
    parser.add_argument(
        "--replicas", type=int, default=1, choices=(1, 3, 5), help="replicas of a new stream"
    )
    parser.add_argument(
        "--follow", action="store_true", help="keep shipping what is appended (until Ctrl-C)"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="without --follow: give up if not caught up after this long (default 30)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.wait <= 0:
        parser.error("--wait must be > 0")
    try:
        config = ShipConfig(
            url=args.to,
            venue=args.venue,
            account=args.account,
            subject_template=args.subject,
            stream=args.stream,
            replicas=args.replicas,
        )
    except ConfigurationError as exc:
        parser.error(str(exc))
    if not os.path.isfile(args.path):
        print(f"{args.path}: no such file", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    shipper = Shipper(args.path, config)

    async def ship() -> bool:
        if args.follow:
            await shipper.run(follow=True)
            return True
        with trio.move_on_after(args.wait):
            await shipper.run(follow=False)
            return True
        return False

    try:
        done = trio.run(ship)
    except (ShipConflict, LogReadError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stats = shipper.statistics()
    if not done:
        print(
            f"{args.path}: not caught up after {args.wait:g} s (stream at event "
            f"{stats.acked_seq}): {stats.last_error or 'too slow'}",
            file=sys.stderr,
        )
        return 1
    print(
        f"{args.path}: events 1..{stats.acked_seq} on {config.subject} in stream "
        f"{config.stream} ({stats.published} published now)"
    )
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(130) from None
