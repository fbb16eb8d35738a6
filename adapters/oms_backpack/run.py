"""`python -m oms_backpack.run`: the main job.

    python -m oms_backpack.run [--venue local|backpack|backpack_perpetual] [--strategy demo|none]
                      [--record PATH] [--duration SECONDS] [--ship-to URL [--account NAME]]

Default: start the local Backpack-compatible exchange on 127.0.0.1, trade a small demo on one
spot and one perp symbol (post-only, limit and market orders, cancels, a position that flips),
show a live status view, record the session, and at the end replay the recorded file and say
whether its state hash matches the live one.

With `--ship-to nats://HOST:PORT` every event also goes to NATS JetStream as it is recorded
(subject `oms.<venue>.<account>.events`, `--account` naming the account), and what is left
at the end is caught up before the command exits (docs/nats.md).

With `--venue backpack` or `backpack_perpetual` it connects to the real exchange with keys from
`BACKPACK_API_KEY` / `BACKPACK_API_SECRET` (or `--key-file`); without `--strategy demo` it
only follows the account and places no order.

With `--limits limits.toml` every submit is checked against the limits in that file first
(docs/risk.md). `kill -USR1 <pid>` trips the kill switch: only reduce-only orders are accepted
from then on, every open order is cancelled, and the switch stays tripped in the log until a
program resets it.

Exit status: 0 ok (and hashes match), 1 failure (a mismatch, a venue or key problem, a bad
limits file), 2 usage.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
import tomllib
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO, Final

import trio

from oms.core.errors import ConfigurationError, RiskDenied
from oms.core.reducer import replay
from oms.core.risk import Limits, limits_from_mapping
from oms.core.serialization import state_hash
from oms.core.state import State
from oms.core.values import CTX, OrderType, Side
from oms.engine import Engine
from oms.log import Fsync, LogReader, LogReadError, Seconds
from oms.ship import ShipConfig, ShipConflict, Shipper

__all__ = ["main"]

SPOT: Final = "SOL_USDC"
PERP: Final = "SOL_USDC_PERP"
LOCAL_DURATION: Final = 20.0


def _render(state: State, started: Seconds, out: IO[str], *, tty: bool) -> None:
    elapsed = max(time.monotonic() - started, 1e-9)
    lines = [
        f"oms  events {state.last_seq:,}  ({state.last_seq / max(elapsed, 1.0):,.1f}/s)  "
        f"anomalies {state.anomaly_total}  elapsed {elapsed:,.0f} s"
        + (f"  KILL SWITCH TRIPPED ({state.risk.trip_reason})" if state.risk.tripped else ""),
        "open orders:",
    ]
    opened = state.open_orders()
    lines += [
        f"  {o.key:<14} {o.symbol:<14} {o.side or '-':<4} {o.order_type or '-':<11} "
        f"{o.status:<16} {o.price or '-':>10} {o.filled_quantity}/{o.quantity or '-'}"
        for o in opened[:10]
    ] or ["  (none)"]
    lines.append("balances:")
    lines += [
        f"  {b.asset:<6} available {b.available:>16}  locked {b.locked:>14}"
        for b in sorted(state.balances.values(), key=lambda b: b.asset)
    ] or ["  (none)"]
    lines.append("positions:")
    lines += [
        f"  {p.symbol:<14} net {p.net_quantity:>10}  entry {p.entry_price:.6f}  "
        f"realized {p.realized_pnl:.6f}  funding {p.funding}"
        for p in sorted(state.positions.values(), key=lambda p: p.symbol)
    ] or ["  (none)"]
    if tty:
        out.write("\033[H\033[J" + "\n".join(lines) + "\n")
    else:
        out.write(lines[0] + "\n")
    out.flush()


async def status_view(engine: Engine, out: IO[str], interval: Seconds) -> None:
    """Redraw the status every `interval` seconds (a line per tick when not a terminal)."""
    started = time.monotonic()
    tty = out.isatty()
    while True:
        _render(engine.state, started, out, tty=tty)
        await trio.sleep(interval if tty else max(interval, 5.0))


async def demo(session: object, duration: Seconds, out: IO[str]) -> None:
    """A small scripted strategy: every order type, cancels, and a perp position that flips."""
    from oms_backpack import endpoints
    from oms_backpack.session import BackpackSession

    assert isinstance(session, BackpackSession)
    deadline = trio.current_time() + duration

    async def mid(symbol: str) -> Decimal:
        book = await session.rest.call(endpoints.depth(symbol))
        bid = max(Decimal(level[0]) for level in book["bids"])
        ask = min(Decimal(level[0]) for level in book["asks"])
        return CTX.divide(CTX.add(bid, ask), Decimal(2))

    def tick(symbol: str, price: Decimal) -> Decimal:
        market = session.engine.state.markets[symbol]
        return (
            price.quantize(market.tick_size)
            if market.tick_size >= 1
            else (CTX.multiply(CTX.divide_int(price, market.tick_size), market.tick_size))
        )

    step = max(duration / 10, 0.2)
    spot_mid = await mid(SPOT)
    # 1. A post-only bid well below the market rests on the book; cancel it later.
    resting = await session.submit(
        SPOT, Side.BID, OrderType.LIMIT_MAKER, quantity=Decimal("1"),
        price=tick(SPOT, CTX.multiply(spot_mid, Decimal("0.98"))),
    )  # fmt: skip
    out.write(f"demo: post-only bid {resting.key} {resting.status}\n")
    # 2. A limit bid just under the mid: the moving market may fill it.
    near = await session.submit(
        SPOT, Side.BID, OrderType.LIMIT, quantity=Decimal("0.5"),
        price=tick(SPOT, CTX.multiply(spot_mid, Decimal("0.999"))),
    )  # fmt: skip
    # 3. Market orders: buy, then sell some back.
    await session.submit(SPOT, Side.BID, OrderType.MARKET, quantity=Decimal("0.3"))
    await trio.sleep(step)
    await session.submit(SPOT, Side.ASK, OrderType.MARKET, quantity=Decimal("0.2"))
    # 4. A perp position: long 1, flip to short 1, then close with a reduce-only buy.
    await session.submit(PERP, Side.BID, OrderType.MARKET, quantity=Decimal("1"))
    await trio.sleep(step)
    await session.submit(PERP, Side.ASK, OrderType.MARKET, quantity=Decimal("2"))
    await trio.sleep(step)
    await session.cancel(SPOT, client_id=resting.client_id)
    await trio.sleep(step)
    await session.submit(PERP, Side.BID, OrderType.MARKET, quantity=Decimal("1"), reduce_only=True)
    out.write(f"demo: near bid {near.key}; perp flipped and closed\n")
    await trio.sleep_until(deadline)
    await session.cancel_open_orders()


async def run_session(args: argparse.Namespace, out: IO[str]) -> tuple[State, Path]:
    from oms_backpack.session import load_credentials, open_backpack_session
    from oms_backpack.signing import Credentials
    from oms_local_exchange import open_local_exchange

    record = Path(args.record)
    record.parent.mkdir(parents=True, exist_ok=True)
    engine = Engine.open(record, fsync=Fsync.group())
    try:
        if args.venue == "local":
            async with open_local_exchange(seed=args.seed) as exchange:
                keys = exchange.credentials()
                credentials = Credentials(keys.api_secret, keys.api_key)
                async with open_backpack_session(
                    engine,
                    credentials,
                    venue="backpack_perpetual",
                    rest_url=exchange.rest_url,
                    ws_url=exchange.ws_url,
                    symbols=[SPOT, PERP],
                    poll_interval=2.0,
                    cancel_on_shutdown=True,
                    limits=args.limits_loaded,
                ) as session:
                    await _drive(session, engine, args, out)
        else:
            async with open_backpack_session(
                engine,
                load_credentials(args.key_file),
                venue=args.venue,
                cancel_on_shutdown=args.strategy == "demo",
                limits=args.limits_loaded,
            ) as session:
                await _drive(session, engine, args, out)
    finally:
        engine.close()
    if args.ship_to is not None:
        await _catch_up(record, args, out)
    return engine.state, record


def load_limits(path: str | Path) -> Limits:
    """The risk limits in a TOML file (docs/risk.md). Raises `ConfigurationError` with one
    line naming the file and what is wrong."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the limits file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    try:
        return limits_from_mapping(data)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None


# The signal that trips the kill switch of the main job (where the platform has it).
KILL_SIGNAL: Final = getattr(signal, "SIGUSR1", None)


async def trip_on_signal(session: object, *, task_status: trio.TaskStatus[None]) -> None:
    """Trip the session's kill switch on every `KILL_SIGNAL` (SIGUSR1)."""
    from oms_backpack.session import BackpackSession

    assert isinstance(session, BackpackSession)
    if KILL_SIGNAL is None:
        task_status.started()
        return
    with trio.open_signal_receiver(KILL_SIGNAL) as signals:
        task_status.started()
        async for number in signals:
            session.request_trip(f"signal {signal.Signals(number).name}", by="signal")


async def _drive(session: object, engine: Engine, args: argparse.Namespace, out: IO[str]) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: trip_on_signal(session, task_status=task_status))
        nursery.start_soon(status_view, engine, out, 1.0)
        if args.ship_to is not None:
            nursery.start_soon(_ship, engine, args)
        if args.strategy == "demo":
            try:
                await demo(session, args.duration, out)
            except RiskDenied as exc:
                out.write(f"demo stopped: {exc}\n")
        elif args.duration is not None:
            await trio.sleep(args.duration)
        else:
            await trio.sleep_forever()
        nursery.cancel_scope.cancel()


def _ship_config(args: argparse.Namespace) -> ShipConfig:
    return ShipConfig(url=args.ship_to, venue=args.venue, account=args.account)


async def _ship(engine: Engine, args: argparse.Namespace) -> None:
    """Ship the session's events to NATS JetStream beside the engine (docs/nats.md)."""
    assert engine.log is not None
    await Shipper(engine.log.path, _ship_config(args)).run_beside(engine)


async def _catch_up(record: Path, args: argparse.Namespace, out: IO[str]) -> None:
    """After the session: ship what the live shipper had not (the shutdown's own events)."""
    config = _ship_config(args)
    shipper = Shipper(record, config)
    try:
        with trio.move_on_after(10):
            await shipper.run(follow=False)
    except (ShipConflict, LogReadError, OSError) as exc:
        out.write(f"shipping to NATS stopped: {exc}\n")
        return
    stats = shipper.statistics()
    out.write(
        f"shipped to NATS: events 1..{stats.acked_seq} on {config.subject}"
        + ("" if stats.last_error is None else f" (then: {stats.last_error})")
        + "\n"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m oms_backpack.run",
        description="Run the engine against the local exchange (default) or Backpack.",
        epilog="Exit status: 0 ok, 1 failure, 2 usage.",
    )
    parser.add_argument("--venue", choices=("local", "backpack", "backpack_perpetual"),
                        default="local")  # fmt: skip
    parser.add_argument("--strategy", choices=("demo", "none"), default=None,
                        help="default: demo on the local exchange, none on Backpack")  # fmt: skip
    parser.add_argument("--record", default=None, metavar="PATH",
                        help="session log (default: sessions/<venue>-<time>.jsonl)")  # fmt: skip
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help=f"how long to run (default {LOCAL_DURATION:.0f} s locally, "
                        "until Ctrl-C on Backpack)")  # fmt: skip
    parser.add_argument("--key-file", default=None, help="JSON file with api_key, api_secret")
    parser.add_argument("--seed", type=int, default=1, help="local exchange seed")
    parser.add_argument("--ship-to", default=None, metavar="URL",
                        help="also ship every event to NATS JetStream at nats://HOST:PORT "
                        "(docs/nats.md)")  # fmt: skip
    parser.add_argument("--limits", default=None, metavar="PATH",
                        help="pre-trade risk limits, a TOML file (docs/risk.md); SIGUSR1 "
                        "trips the kill switch")  # fmt: skip
    parser.add_argument("--account", default="main",
                        help="the account's name in the NATS subject (default main)")  # fmt: skip
    return parser


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.strategy is None:
        args.strategy = "demo" if args.venue == "local" else "none"
    if args.duration is None and args.venue == "local":
        args.duration = LOCAL_DURATION
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be positive")
    if args.ship_to is not None:
        try:
            _ship_config(args)
        except ConfigurationError as exc:
            parser.error(str(exc))
    args.limits_loaded = None
    if args.limits is not None:
        try:
            args.limits_loaded = load_limits(args.limits)
        except ConfigurationError as exc:
            print(f"oms_backpack.run: {exc}", file=sys.stderr)
            return 1
    if args.record is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        args.record = f"sessions/{args.venue}-{stamp}.jsonl"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = sys.stdout
    try:
        live, record = trio.run(run_session, args, out)
    except (KeyboardInterrupt, Exception, BaseExceptionGroup) as exc:
        # The one top-level place for whatever the session raised: a line each, no traceback.
        leaves = _leaves(exc)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            print("interrupted", file=sys.stderr)
        for leaf in leaves:
            if not isinstance(leaf, KeyboardInterrupt):
                print(f"oms_backpack.run: {type(leaf).__name__}: {leaf}", file=sys.stderr)
        return 1
    try:
        replayed = replay(LogReader(record).events())
    except LogReadError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    live_hash, replay_hash = state_hash(live), state_hash(replayed)
    print(f"recorded {record}: {live.last_seq} events, {live.anomaly_total} anomalies")
    print(f"live state hash     {live_hash}")
    print(f"replayed state hash {replay_hash}")
    if live_hash != replay_hash:
        print("MISMATCH: the recorded session does not replay to the live state", file=sys.stderr)
        return 1
    print("replay matches the live state")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
