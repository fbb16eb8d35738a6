"""The Prometheus endpoint (`oms.metrics`), on 127.0.0.1 only."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from oms import metrics_bench
from oms.core.events import Event, SubmitRejected
from oms.core.values import Side, Source
from oms.engine import Engine
from oms.log import Fsync
from oms.metrics import EngineMetrics, serve_metrics
from oms.testing.builders import accept, balances, fill, markets, submit


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text: str = answer.read().decode()
        return text


def test_two_accounts_are_served_from_their_event_streams(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    engines = {
        name: Engine.open(tmp_path / f"{name}.jsonl", fsync=Fsync.every_event()) for name in "ab"
    }
    collectors = {name: EngineMetrics(engine, name) for name, engine in engines.items()}
    for collector in collectors.values():
        registry.register(collector)
    port, stop = serve_metrics(registry, port=0)
    try:
        a = engines["a"]
        recorded: list[Event] = [
            *markets(),
            balances({"USDC": ("100", "0")}),
            submit(1, Side.BID, "2", "10"),
            accept("V1", client_id=1),
            fill("V1", 1, Side.BID, "1", "10", client_id=1),
            submit(2, Side.BID, "2", "10"),
            SubmitRejected(
                source=Source.REST,
                recv_time_us=1,
                symbol="SOL_USDC",
                client_id=2,
                code="INVALID_ORDER",
                message="no",
            ),
            balances({"USDC": ("80", "10"), "SOL": ("0.5", "0")}),  # SOL: 0.5 short of ours
        ]
        for event in recorded:
            a.record(event)
        collectors["a"].rest_timing("/api/v1/order", 0.02, None)
        collectors["a"].rest_timing("/api/v1/order", 0.5, "503")
        text = scrape(port)
    finally:
        stop()
        for engine in engines.values():
            engine.close()
    assert 'oms_events_total{account="a",type="OrderFilled"} 1.0' in text
    assert 'oms_fills_total{account="a"} 1.0' in text
    assert 'oms_rejects_total{account="a",reason="SubmitRejected:INVALID_ORDER"} 1.0' in text
    assert 'oms_orders{account="a",status="PartiallyFilled"} 1.0' in text
    assert 'oms_orders{account="a",status="Rejected"} 1.0' in text
    assert 'oms_anomalies_total{account="a",kind="balance_drift"} 1.0' in text
    assert 'oms_balance_drift{account="a",asset="SOL",part="available"} -0.5' in text
    assert 'oms_balance_drift{account="a",asset="USDC",part="available"} 0.0' in text
    assert 'oms_rest_errors_total{account="a",error="503",path="/api/v1/order"} 1.0' in text
    assert 'oms_rest_request_seconds_count{account="a",path="/api/v1/order"} 2.0' in text
    # Every append was timed, and (fsync every event) every fsync.
    assert 'oms_log_append_seconds_count{account="a"} 10.0' in text
    assert 'oms_log_fsync_seconds_count{account="a"} 10.0' in text
    assert 'oms_last_seq{account="b"} 0.0' in text


def test_the_benchmark_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert metrics_bench.main(["--events", "30", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "alone" in out and "metrics+scrape" in out


def test_a_scrape_that_hangs_does_not_hold_up_the_writer(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    engine = Engine.open(tmp_path / "w.jsonl", fsync=Fsync.never())
    collector = EngineMetrics(engine, "w")
    registry.register(collector)
    inside, release = threading.Event(), threading.Event()

    class Stuck(Collector):
        def collect(self) -> Iterator[Metric]:
            inside.set()
            release.wait(10)  # a scrape stuck half way, after our collector was read
            return iter(())

    registry.register(Stuck())
    scraper = threading.Thread(target=generate_latest, args=(registry,), daemon=True)
    scraper.start()
    try:
        assert inside.wait(5)
        events: list[Event] = [
            *markets(),
            submit(1, Side.BID, "1", "10"),
            accept("V1", client_id=1),
        ]
        for event in events:
            engine.record(event)  # would wait here if the writer waited for the scrape
        assert collector.events["OrderAccepted"] == 1
        assert scraper.is_alive()  # recorded while the scrape is still stuck
    finally:
        release.set()
        scraper.join(5)
        engine.close()
