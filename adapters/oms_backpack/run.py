"""`python -m oms_backpack.run`: the main job.

    python -m oms_backpack.run [--venue local|backpack|backpack_perpetual] [--strategy demo|none]
                      [--record PATH] [--duration SECONDS] [--ship-to URL [--account NAME]]
                      [--metrics-port PORT]
    python -m oms_backpack.run --config ACCOUNTS.toml [--duration SECONDS]

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

With `--config` it runs several accounts in one process, as a TOML file lists them (docs/status.md
has the format): one engine, one log, one session, one set of keys, one set of risk limits and
one kill switch per account, all in one trio run. On the local exchange the first account is the
exchange's funded one and each further account is opened on it (`LocalExchange.add_account`).

With `--limits limits.toml` (or `limits` per account in the config file) every submit is checked
against those limits first (docs/risk.md). `kill -USR1 <pid>` trips the kill switch of every
account: only reduce-only orders are accepted from then on, every open order is cancelled, and
the switch stays tripped in the log until a program resets it.

The live view is `oms.status`'s for every account. `--metrics-port` (or `metrics_port` in the
file) serves Prometheus metrics of every account on 127.0.0.1 (the `metrics` extra).

Exit status: 0 ok (and hashes match), 1 failure (a mismatch, a venue or key problem, a bad
config or limits file), 2 usage.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Literal, NoReturn

import attrs
import trio

from oms.core.errors import ConfigurationError, RiskDenied
from oms.core.reducer import replay
from oms.core.risk import Limits, limits_from_mapping
from oms.core.serialization import state_hash
from oms.core.state import State
from oms.core.values import CTX, OrderType, Side
from oms.engine import Engine
from oms.limits import load_limits, read_toml
from oms.log import Fsync, LogReader, LogReadError, Seconds
from oms.ship import ShipConfig, ShipConflict, Shipper
from oms.status import ReconciliationTracker, render_text, status_document

if TYPE_CHECKING:
    from oms.metrics import EngineMetrics
    from oms_backpack.session import BackpackSession

__all__ = ["AccountConfig", "JobConfig", "load_config", "main", "run_accounts"]

SPOT: Final = "SOL_USDC"
PERP: Final = "SOL_USDC_PERP"
LOCAL_DURATION: Final = 20.0


@attrs.frozen(kw_only=True)
class AccountConfig:
    """One account of the main job: its name (in the status view, the metrics and the NATS
    subject), its log, its strategy, its markets (None: the venue's default) and its keys
    (`key_file`; None: the environment, or the local exchange's) and its risk limits (None:
    none; docs/risk.md)."""

    name: str
    record: Path
    strategy: str
    symbols: tuple[str, ...] | None = None
    key_file: str | None = None
    limits: Limits | None = None


@attrs.frozen(kw_only=True)
class JobConfig:
    """What the main job runs: the venue, the accounts, and what they share."""

    venue: str
    accounts: tuple[AccountConfig, ...]
    duration: Seconds | None = None
    seed: int = 1
    metrics_port: int | None = None
    ship_to: str | None = None


_VENUES: Final = ("local", "backpack", "backpack_perpetual")
_JOB_KEYS: Final = frozenset({"venue", "duration", "seed", "metrics_port", "ship_to", "accounts"})
_ACCOUNT_KEYS: Final = frozenset({"name", "record", "strategy", "symbols", "key_file", "limits"})


def load_config(path: str | os.PathLike[str]) -> JobConfig:
    """Read a TOML file of accounts (docs/status.md). Raises `ConfigurationError` with one
    line naming the file and what is wrong."""
    where = os.fspath(path)
    data = read_toml(where, "config file")

    def fail(what: str) -> NoReturn:
        raise ConfigurationError(f"{where}: {what}")

    unknown = sorted(set(data) - _JOB_KEYS)
    if unknown:
        fail(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_JOB_KEYS))})")
    venue = data.get("venue", "local")
    if venue not in _VENUES:
        fail(f"venue must be one of {', '.join(_VENUES)}, not {venue!r}")
    duration = data.get("duration")
    if duration is not None and (
        not isinstance(duration, int | float) or isinstance(duration, bool) or duration <= 0
    ):
        fail("duration must be a positive number of seconds")
    seed = data.get("seed", 1)
    port = data.get("metrics_port")
    if not isinstance(seed, int) or (
        port is not None and (not isinstance(port, int) or not 0 <= port <= 65535)
    ):
        fail("seed must be an integer and metrics_port a port number")
    ship_to = data.get("ship_to")
    if ship_to is not None and not isinstance(ship_to, str):
        fail("ship_to must be a URL")
    tables = data.get("accounts")
    if not isinstance(tables, list) or not tables:
        fail("no [[accounts]]")
    accounts = []
    for n, table in enumerate(tables, 1):
        if not isinstance(table, dict):
            fail(f"account {n} is not a table")
        unknown = sorted(set(table) - _ACCOUNT_KEYS)
        if unknown:
            fail(
                f"account {n}: unknown key {unknown[0]!r} "
                f"(known: {', '.join(sorted(_ACCOUNT_KEYS))})"
            )
        name = table.get("name")
        if not isinstance(name, str) or not name.isidentifier():
            fail(f"account {n}: name must be a word (letters, digits, _), not {name!r}")
        strategy = table.get("strategy", "demo" if venue == "local" else "none")
        if strategy not in ("demo", "none"):
            fail(f"account {name}: strategy must be demo or none, not {strategy!r}")
        symbols = table.get("symbols")
        if symbols is not None and (
            not isinstance(symbols, list) or not all(isinstance(x, str) for x in symbols)
        ):
            fail(f"account {name}: symbols must be a list of strings")
        key_file = table.get("key_file")
        if key_file is not None and not isinstance(key_file, str):
            fail(f"account {name}: key_file must be a path")
        record = table.get("record", f"sessions/{name}.jsonl")
        if not isinstance(record, str):
            fail(f"account {name}: record must be a path")
        limits = _account_limits(table.get("limits"), name, fail)
        accounts.append(
            AccountConfig(
                name=name,
                record=Path(record),
                strategy=strategy,
                symbols=None if symbols is None else tuple(symbols),
                key_file=key_file,
                limits=limits,
            )
        )
    names = [a.name for a in accounts]
    if len(set(names)) != len(names):
        fail("two accounts with the same name")
    if len({a.record for a in accounts}) != len(accounts):
        fail("two accounts with the same record: one log per account")
    if venue != "local" and sum(a.key_file is None for a in accounts) > 1:
        fail("only one account can take its keys from the environment: give key_file")
    return JobConfig(
        venue=venue,
        accounts=tuple(accounts),
        duration=duration,
        seed=seed,
        metrics_port=port,
        ship_to=ship_to,
    )


def _account_limits(value: object, name: str, fail: Callable[[str], NoReturn]) -> Limits | None:
    """An account's `limits`: a path to a limits file, or the limits as a table."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return load_limits(value)
        if isinstance(value, dict):
            return limits_from_mapping(value)
    except ConfigurationError as exc:
        fail(f"account {name}: limits: {exc}")
    fail(f"account {name}: limits must be a path to a limits file or a table")


@attrs.define(eq=False)
class _Running:
    """One account while the job runs."""

    config: AccountConfig
    engine: Engine
    tracker: ReconciliationTracker
    session: BackpackSession | None = None
    metrics: EngineMetrics | None = None


def _document(account: _Running) -> dict[str, Any]:
    reconciler = None if account.session is None else account.session.reconciler
    return status_document(
        account.engine.state,
        reconciliation=account.tracker,
        last_pass_us=None if reconciler is None else reconciler.last_pass_us,
        last_pass_events=None if reconciler is None else reconciler.last_added,
        source=account.config.name,
        limits=account.config.limits,
        now_us=time.time_ns() // 1000,
    )


def _render(accounts: Sequence[_Running], started: Seconds, out: IO[str], *, tty: bool) -> None:
    elapsed = max(time.monotonic() - started, 1e-9)
    lines = []
    for account in accounts:
        state = account.engine.state
        lines.append(
            f"oms {account.config.name}  events {state.last_seq:,}  "
            f"({state.last_seq / max(elapsed, 1.0):,.1f}/s)  anomalies {state.anomaly_total}  "
            f"elapsed {elapsed:,.0f} s"
            + (f"  KILL SWITCH TRIPPED ({state.risk.trip_reason})" if state.risk.tripped else "")
        )
        if tty:
            lines += ["  " + line for line in render_text(_document(account))[1:]]
    if tty:
        out.write("\033[H\033[J" + "\n".join(lines) + "\n")
    else:
        out.write("\n".join(lines) + "\n")
    out.flush()


async def status_view(accounts: Sequence[_Running], out: IO[str], interval: Seconds) -> None:
    """Redraw the status every `interval` seconds (a line per account and tick when not a
    terminal)."""
    started = time.monotonic()
    tty = out.isatty()
    while True:
        _render(accounts, started, out, tty=tty)
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


async def run_accounts(config: JobConfig, out: IO[str]) -> list[tuple[str, State, Path]]:
    """Run every account of `config` until the duration ends (or forever); returns each
    account's name, live state and log."""
    from oms_backpack.session import (
        DEFAULT_REST_URL,
        DEFAULT_WS_URL,
        load_credentials,
        open_backpack_session,
    )
    from oms_backpack.signing import Credentials
    from oms_local_exchange import open_local_exchange

    running: list[_Running] = []
    async with contextlib.AsyncExitStack() as stack:
        credentials: list[Credentials]
        rest_url, ws_url = DEFAULT_REST_URL, DEFAULT_WS_URL
        venue: Literal["backpack", "backpack_perpetual"] = (
            "backpack" if config.venue == "backpack" else "backpack_perpetual"
        )
        if config.venue == "local":
            exchange = await stack.enter_async_context(open_local_exchange(seed=config.seed))
            pairs = [exchange.credentials()]
            pairs += [exchange.add_account() for _ in config.accounts[1:]]
            credentials = [Credentials(k.api_secret, k.api_key) for k in pairs]
            rest_url, ws_url = exchange.rest_url, exchange.ws_url
        else:
            credentials = [load_credentials(a.key_file) for a in config.accounts]
        for account in config.accounts:
            account.record.parent.mkdir(parents=True, exist_ok=True)
            engine = Engine.open(account.record, fsync=Fsync.group())
            stack.callback(engine.close)
            tracker = ReconciliationTracker()
            stack.callback(engine.subscribe(tracker.observe))
            running.append(_Running(account, engine, tracker))
        stop_metrics = _start_metrics(config, running) if config.metrics_port is not None else None
        if stop_metrics is not None:
            stack.callback(stop_metrics)
        for item, keys in zip(running, credentials, strict=True):
            symbols = item.config.symbols
            if config.venue == "local" and symbols is None:
                symbols = (SPOT, PERP)
            item.session = await stack.enter_async_context(
                open_backpack_session(
                    item.engine,
                    keys,
                    venue=venue,
                    symbols=symbols,
                    rest_url=rest_url,
                    ws_url=ws_url,
                    poll_interval=2.0 if config.venue == "local" else 15.0,
                    cancel_on_shutdown=item.config.strategy == "demo",
                    limits=item.config.limits,
                )
            )
            _watch_session(item)
        await _drive(running, config, out)
    if config.ship_to is not None:
        for item in running:
            await _catch_up(item.config.record, config, item.config.name, out)
    return [(r.config.name, r.engine.state, r.config.record) for r in running]


def _start_metrics(config: JobConfig, running: Sequence[_Running]) -> Callable[[], None]:
    """Serve every account's metrics on 127.0.0.1 (the `metrics` extra)."""
    try:
        from prometheus_client import CollectorRegistry

        from oms.metrics import EngineMetrics, serve_metrics
    except ImportError:
        raise ConfigurationError(
            "--metrics-port needs prometheus_client: pip install 'oms[metrics]'"
        ) from None
    registry = CollectorRegistry()
    collectors = []
    for item in running:
        collector = EngineMetrics(item.engine, item.config.name)
        registry.register(collector)
        collectors.append(collector)
        item.metrics = collector
    assert config.metrics_port is not None
    port, stop = serve_metrics(registry, port=config.metrics_port)
    logging.getLogger("oms_backpack.run").warning("metrics on http://127.0.0.1:%d/metrics", port)

    def close() -> None:
        stop()
        for collector in collectors:
            collector.close()

    return close


def _watch_session(item: _Running) -> None:
    """Feed the session's REST timings and reconnects to the account's metrics."""
    collector = item.metrics
    session = item.session
    if collector is None or session is None:
        return
    session.rest.observer = collector.rest_timing
    stream = session.stream
    if stream is not None:
        collector.reconnects = lambda: stream.reconnects


# The signal that trips the kill switch of the main job (where the platform has it).
KILL_SIGNAL: Final = getattr(signal, "SIGUSR1", None)


async def trip_on_signal(
    sessions: Sequence[BackpackSession], *, task_status: trio.TaskStatus[None]
) -> None:
    """Trip the kill switch of every session on each `KILL_SIGNAL` (SIGUSR1)."""
    if KILL_SIGNAL is None:
        task_status.started()
        return
    with trio.open_signal_receiver(KILL_SIGNAL) as signals:
        task_status.started()
        async for number in signals:
            for session in sessions:
                session.request_trip(f"signal {signal.Signals(number).name}", by="signal")


async def _demo(session: BackpackSession, duration: Seconds, out: IO[str]) -> None:
    try:
        await demo(session, duration, out)
    except RiskDenied as exc:
        out.write(f"demo stopped: {exc}\n")


async def _drive(running: Sequence[_Running], config: JobConfig, out: IO[str]) -> None:
    sessions = [item.session for item in running if item.session is not None]
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: trip_on_signal(sessions, task_status=task_status))
        nursery.start_soon(status_view, running, out, 1.0)
        if config.ship_to is not None:
            for item in running:
                nursery.start_soon(_ship, item.engine, config, item.config.name)
        async with trio.open_nursery() as work:
            for item in running:
                assert item.session is not None
                if item.config.strategy == "demo":
                    work.start_soon(_demo, item.session, config.duration or LOCAL_DURATION, out)
                elif config.duration is not None:
                    work.start_soon(trio.sleep, config.duration)
                else:
                    work.start_soon(trio.sleep_forever)
        nursery.cancel_scope.cancel()


def _ship_config(config: JobConfig, account: str) -> ShipConfig:
    return ShipConfig(url=config.ship_to or "", venue=config.venue, account=account)


async def _ship(engine: Engine, config: JobConfig, account: str) -> None:
    """Ship the session's events to NATS JetStream beside the engine (docs/nats.md)."""
    assert engine.log is not None
    await Shipper(engine.log.path, _ship_config(config, account)).run_beside(engine)


async def _catch_up(record: Path, config: JobConfig, account: str, out: IO[str]) -> None:
    """After the session: ship what the live shipper had not (the shutdown's own events)."""
    ship = _ship_config(config, account)
    shipper = Shipper(record, ship)
    try:
        with trio.move_on_after(10):
            await shipper.run(follow=False)
    except (ShipConflict, LogReadError, OSError) as exc:
        out.write(f"shipping to NATS stopped: {exc}\n")
        return
    stats = shipper.statistics()
    out.write(
        f"shipped to NATS: events 1..{stats.acked_seq} on {ship.subject}"
        + ("" if stats.last_error is None else f" (then: {stats.last_error})")
        + "\n"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m oms_backpack.run",
        description="Run the engine against the local exchange (default) or Backpack.",
        epilog="Exit status: 0 ok, 1 failure, 2 usage.",
    )
    parser.add_argument("--venue", choices=_VENUES, default="local")
    parser.add_argument("--strategy", choices=("demo", "none"), default=None,
                        help="default: demo on the local exchange, none on Backpack")  # fmt: skip
    parser.add_argument("--record", default=None, metavar="PATH",
                        help="session log (default: sessions/<venue>-<time>.jsonl)")  # fmt: skip
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help=f"how long to run (default {LOCAL_DURATION:.0f} s locally, "
                        "until Ctrl-C on Backpack)")  # fmt: skip
    parser.add_argument("--key-file", default=None, help="JSON file with api_key, api_secret")
    parser.add_argument("--seed", type=int, default=None, help="local exchange seed (default 1)")
    parser.add_argument("--ship-to", default=None, metavar="URL",
                        help="also ship every event to NATS JetStream at nats://HOST:PORT "
                        "(docs/nats.md)")  # fmt: skip
    parser.add_argument("--limits", default=None, metavar="PATH",
                        help="pre-trade risk limits, a TOML file (docs/risk.md); SIGUSR1 "
                        "trips the kill switch")  # fmt: skip
    parser.add_argument("--account", default="main",
                        help="the account's name in the NATS subject (default main)")  # fmt: skip
    parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve Prometheus metrics on 127.0.0.1:PORT "
                        "(the metrics extra)")  # fmt: skip
    parser.add_argument("--config", default=None, metavar="TOML",
                        help="run the accounts this file lists (docs/status.md); --duration, "
                        "--seed and --metrics-port override it")  # fmt: skip
    return parser


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _job(
    args: argparse.Namespace, parser: argparse.ArgumentParser, limits: Limits | None
) -> JobConfig:
    """The job the command line asks for (a config file, or one account from the flags, with
    the limits of `--limits`)."""
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be positive")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        parser.error("--metrics-port must be a port number")
    if args.config is not None:
        single = ("--record", "--key-file", "--strategy", "--ship-to", "--limits")
        given = [flag for flag in single if getattr(args, flag[2:].replace("-", "_")) is not None]
        if given:
            parser.error(f"{given[0]} is per account: set it in the config file")
        config = load_config(args.config)
        overrides: dict[str, Any] = {}
        if args.duration is not None:
            overrides["duration"] = args.duration
        if args.seed is not None:
            overrides["seed"] = args.seed
        if args.metrics_port is not None:
            overrides["metrics_port"] = args.metrics_port
        config = attrs.evolve(config, **overrides)
    else:
        if args.record is None:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            args.record = f"sessions/{args.venue}-{stamp}.jsonl"
        account = AccountConfig(
            name=args.account,
            record=Path(args.record),
            strategy=args.strategy or ("demo" if args.venue == "local" else "none"),
            key_file=args.key_file,
            limits=limits,
        )
        config = JobConfig(
            venue=args.venue,
            accounts=(account,),
            duration=args.duration,
            seed=1 if args.seed is None else args.seed,
            metrics_port=args.metrics_port,
            ship_to=args.ship_to,
        )
    if config.duration is None and config.venue == "local":
        config = attrs.evolve(config, duration=LOCAL_DURATION)
    if config.ship_to is not None:
        for account in config.accounts:
            _ship_config(config, account.name)  # raises ConfigurationError
    return config


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    limits = None
    if args.limits is not None and args.config is None:
        try:
            limits = load_limits(args.limits)
        except ConfigurationError as exc:
            print(f"oms_backpack.run: {exc}", file=sys.stderr)
            return 1
    try:
        config = _job(args, parser, limits)
    except ConfigurationError as exc:
        if args.config is not None:
            print(f"oms_backpack.run: {exc}", file=sys.stderr)
            return 1
        parser.error(str(exc))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = sys.stdout
    try:
        results = trio.run(run_accounts, config, out)
    except (KeyboardInterrupt, Exception, BaseExceptionGroup) as exc:
        # The one top-level place for whatever the session raised: a line each, no traceback.
        leaves = _leaves(exc)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            print("interrupted", file=sys.stderr)
        for leaf in leaves:
            if not isinstance(leaf, KeyboardInterrupt):
                print(f"oms_backpack.run: {type(leaf).__name__}: {leaf}", file=sys.stderr)
        return 1
    failed = False
    for name, live, record in results:
        try:
            replayed = replay(LogReader(record).events())
        except LogReadError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        live_hash, replay_hash = state_hash(live), state_hash(replayed)
        prefix = "" if len(results) == 1 else f"{name}: "
        print(f"{prefix}recorded {record}: {live.last_seq} events, {live.anomaly_total} anomalies")
        print(f"{prefix}live state hash     {live_hash}")
        print(f"{prefix}replayed state hash {replay_hash}")
        if live_hash != replay_hash:
            print(
                f"{prefix}MISMATCH: the recorded session does not replay to the live state",
                file=sys.stderr,
            )
            failed = True
        else:
            print(f"{prefix}replay matches the live state")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
