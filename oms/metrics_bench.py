"""`python -m oms.metrics_bench [--events N] [--rounds R]`: what the metrics cost the writer.

CPU time of `Engine.record` per event (fsync never, so the disk does not blur the figures),
for three setups run in turn within each round (interleaved, so a slower machine moment hits
all alike), medians over the rounds:

- `alone`: an engine with no listener;
- `metrics`: with `EngineMetrics` attached (its listener and the log's timing hook);
- `metrics+scrape`: the same while another thread scrapes the registry in a loop.

Prints the figures; asserts nothing (exit status 0). Needs the `metrics` extra.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from oms.core.events import Event, MarketInfo, OrderAccepted, OrderFilled, OrderSubmitted
from oms.core.values import MarketType, OrderType, Side, Source
from oms.engine import Engine
from oms.log import Fsync
from oms.metrics import EngineMetrics

__all__ = ["main"]

SYMBOL = "SOL_USDC"


def _events(count: int) -> list[Event]:
    """Spot orders, each submitted, accepted and filled (its own events: the shell does not
    import the test kit)."""
    one, price = Decimal(1), Decimal(100)
    out: list[Event] = [
        MarketInfo(
            source=Source.REST, recv_time_us=1, symbol=SYMBOL, base_asset="SOL",
            quote_asset="USDC", market_type=MarketType.SPOT, tick_size=Decimal("0.01"),
            step_size=Decimal("0.01"), min_quantity=Decimal("0.01"),
        )
    ]  # fmt: skip
    client = 0
    while len(out) < count:
        client += 1
        venue, now = f"V{client}", 1_000 + client
        out += [
            OrderSubmitted(
                source=Source.LOCAL, recv_time_us=now, client_id=client, symbol=SYMBOL,
                side=Side.BID, order_type=OrderType.LIMIT, quantity=one, price=price,
            ),
            OrderAccepted(
                source=Source.WS, recv_time_us=now, symbol=SYMBOL, venue_id=venue,
                client_id=client,
            ),
            OrderFilled(
                source=Source.WS, recv_time_us=now, symbol=SYMBOL, venue_id=venue,
                trade_id=client, side=Side.BID, quantity=one, price=price,
                fee=Decimal("0.01"), fee_asset="USDC", maker=True, client_id=client,
                cum_quantity=one,
            ),
        ]  # fmt: skip
    return out[:count]


def _round(events: list[Event], setup: str, folder: Path) -> float:
    path = folder / f"{setup}-{time.monotonic_ns()}.jsonl"
    engine = Engine.open(path, fsync=Fsync.never())
    stop = threading.Event()
    scraper: threading.Thread | None = None
    collector: EngineMetrics | None = None
    if setup != "alone":
        registry = CollectorRegistry()
        collector = EngineMetrics(engine, "bench")
        registry.register(collector)
        if setup == "metrics+scrape":

            def scrape() -> None:
                while not stop.is_set():
                    generate_latest(registry)

            scraper = threading.Thread(target=scrape, daemon=True)
            scraper.start()
    try:
        started = time.thread_time()  # this thread's CPU time: the writer's, not the scraper's
        for event in events:
            engine.record(event)
        spent = time.thread_time() - started
    finally:
        stop.set()
        if scraper is not None:
            scraper.join()
        if collector is not None:
            collector.close()
        engine.close()
        path.unlink()
    return spent / len(events)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oms.metrics_bench", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.events < 10 or args.rounds < 1:
        parser.error("--events must be >= 10 and --rounds >= 1")
    events = _events(args.events)
    setups = ("alone", "metrics", "metrics+scrape")
    figures: dict[str, list[float]] = {name: [] for name in setups}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for name in setups:
                figures[name].append(_round(events, name, Path(folder)))
    print(
        f"Engine.record CPU time per event (writer thread), {args.events:,} events, "
        f"{args.rounds} interleaved rounds, medians:"
    )
    base = statistics.median(figures["alone"])
    for name in setups:
        median = statistics.median(figures[name])
        print(f"  {name:<15} {median * 1e6:7.2f} us  ({median / base:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
