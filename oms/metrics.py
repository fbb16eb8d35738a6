"""Prometheus metrics of engines, fed from their event streams (the `metrics` extra).

    registry = CollectorRegistry()
    metrics = EngineMetrics(engine, account="main")      # an engine listener
    registry.register(metrics)
    server = serve_metrics(registry, port=9464)          # 127.0.0.1 by default

Never blocking the writer: the engine listener (`EngineMetrics.observe`) and the log's and REST
client's observers only add to plain integers and lists, under the GIL, and take no lock; the
exposition runs in prometheus_client's own thread, which reads those figures and the engine's
current state (an immutable object: a consistent view without a lock) when scraped. A
figure can be one event behind the writer, never torn, and the writer never waits for a scrape.
docs/status.md lists the metrics.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterator
from typing import Final

import attrs
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from oms.core.account import marked_position
from oms.core.events import CancelRejected, Event, OrderFilled, SubmitRejected
from oms.core.state import State
from oms.engine import Engine

__all__ = ["LATENCY_BUCKETS", "EngineMetrics", "LatencyHistogram", "serve_metrics"]

# Seconds: from a buffered append (microseconds) to a slow fsync or REST call (seconds).
LATENCY_BUCKETS: Final = (
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
)  # fmt: skip


@attrs.define(eq=False)
class LatencyHistogram:
    """Counts per bucket and a sum, added to without a lock (one writer thread)."""

    counts: list[int] = attrs.field(factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (upper bound, count) pairs, `+Inf` last, as the exposition wants."""
        counts = list(self.counts)  # one copy: the figures below agree with each other
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), counts, strict=True):
            running += count
            out.append((bound, running))
        return out


def _copy(table: dict[str, int]) -> dict[str, int]:
    """A copy of a dict another thread may be adding a key to (retried if it was)."""
    while True:
        try:
            return dict(table)
        except RuntimeError:  # changed size during the copy
            continue


@attrs.define(eq=False)
class EngineMetrics(Collector):
    """One account's metrics. Subscribes to `engine` at once (and to its log's timings);
    `watch_rest` and `reconnects` add the venue client's. Register it in a registry.

    `close()` unsubscribes.
    """

    engine: Engine
    account: str
    reconnects: Callable[[], int] | None = None
    events: dict[str, int] = attrs.field(factory=dict, init=False)
    rejects: dict[str, int] = attrs.field(factory=dict, init=False)
    fills: int = attrs.field(default=0, init=False)
    append: LatencyHistogram = attrs.field(factory=LatencyHistogram, init=False)
    fsync: LatencyHistogram = attrs.field(factory=LatencyHistogram, init=False)
    rest: dict[str, LatencyHistogram] = attrs.field(factory=dict, init=False)
    rest_errors: dict[str, int] = attrs.field(factory=dict, init=False)
    _unsubscribe: Callable[[], None] | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self._unsubscribe = self.engine.subscribe(self.observe)
        if self.engine.log is not None:
            self.engine.log.observer = self._log_timing

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.engine.log is not None and self.engine.log.observer == self._log_timing:
            self.engine.log.observer = None

    # --- feeding (the writer's thread; no locks) ----------------------------------------------

    def observe(self, event: Event, state: State) -> None:
        """Engine listener."""
        name = type(event).__name__
        events = self.events
        events[name] = events.get(name, 0) + 1
        if type(event) is OrderFilled:
            self.fills += 1
        elif type(event) is SubmitRejected or type(event) is CancelRejected:
            reason = f"{name}:{event.code}"
            self.rejects[reason] = self.rejects.get(reason, 0) + 1

    def _log_timing(self, what: str, seconds: float) -> None:
        (self.append if what == "append" else self.fsync).observe(seconds)

    def rest_timing(self, path: str, seconds: float, error: str | None) -> None:
        """The REST client's observer (`BackpackRest.observer`)."""
        histogram = self.rest.get(path)
        if histogram is None:
            histogram = self.rest[path] = LatencyHistogram()
        histogram.observe(seconds)
        if error is not None:
            key = f"{path}\0{error}"
            self.rest_errors[key] = self.rest_errors.get(key, 0) + 1

    # --- exposition (the server's thread) -------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        account = self.account
        state = self.engine.state  # one immutable state for every figure below
        labels = ["account"]

        events = CounterMetricFamily(
            "oms_events", "Events recorded, by type", labels=[*labels, "type"]
        )
        for name, count in sorted(_copy(self.events).items()):
            events.add_metric([account, name], count)
        yield events

        fills = CounterMetricFamily("oms_fills", "Fills recorded", labels=labels)
        fills.add_metric([account], self.fills)
        yield fills

        rejects = CounterMetricFamily(
            "oms_rejects", "Refusals by the venue, by event and code", labels=[*labels, "reason"]
        )
        for reason, count in sorted(_copy(self.rejects).items()):
            rejects.add_metric([account, reason], count)
        yield rejects

        orders = GaugeMetricFamily(
            "oms_orders", "Orders the state keeps, by status", labels=[*labels, "status"]
        )
        by_status: dict[str, int] = {}
        for order in state.orders.values():
            by_status[str(order.status)] = by_status.get(str(order.status), 0) + 1
        for status, count in sorted(by_status.items()):
            orders.add_metric([account, status], count)
        yield orders

        anomalies = CounterMetricFamily(
            "oms_anomalies", "Anomalies recorded, by kind", labels=[*labels, "kind"]
        )
        for kind in sorted(state.anomaly_counts):
            anomalies.add_metric([account, str(kind)], state.anomaly_counts[kind])
        yield anomalies

        last = GaugeMetricFamily("oms_last_seq", "Seq of the newest event", labels=labels)
        last.add_metric([account], state.last_seq)
        yield last

        if self.reconnects is not None:
            reconnects = CounterMetricFamily(
                "oms_ws_reconnects", "WebSocket reconnections", labels=labels
            )
            reconnects.add_metric([account], self.reconnects())
            yield reconnects

        for name, histogram, what in (
            ("oms_log_append_seconds", self.append, "Appending one event (with its fsync, if due)"),
            ("oms_log_fsync_seconds", self.fsync, "One fsync of the log"),
        ):
            family = HistogramMetricFamily(name, what, labels=labels)
            family.add_metric([account], histogram.buckets(), histogram.total)
            yield family

        rest = HistogramMetricFamily(
            "oms_rest_request_seconds", "REST attempts, by path", labels=[*labels, "path"]
        )
        for path, histogram in sorted(dict(self.rest).items()):
            rest.add_metric([account, path], histogram.buckets(), histogram.total)
        yield rest
        errors = CounterMetricFamily(
            "oms_rest_errors", "REST attempts that failed", labels=[*labels, "path", "error"]
        )
        for key, count in sorted(_copy(self.rest_errors).items()):
            path, error = key.split("\0", 1)
            errors.add_metric([account, path, error], count)
        yield errors

        balance = GaugeMetricFamily(
            "oms_balance_drift",
            "Venue minus derived balance at the last venue snapshot",
            labels=[*labels, "asset", "part"],
        )
        for asset in sorted(state.balances.keys()):
            record = state.balances[asset]
            balance.add_metric([account, asset, "available"], float(record.drift_available))
            balance.add_metric([account, asset, "locked"], float(record.drift_locked))
        yield balance

        position = GaugeMetricFamily(
            "oms_position_drift",
            "Venue minus derived position at the last venue report",
            labels=[*labels, "symbol", "part"],
        )
        for symbol in sorted(state.positions.keys()):
            figures = marked_position(state, state.positions[symbol])
            position.add_metric([account, symbol, "quantity"], float(figures.drift_quantity))
            if figures.drift_unrealized_pnl is not None:
                position.add_metric(
                    [account, symbol, "unrealized_pnl"], float(figures.drift_unrealized_pnl)
                )
        yield position


def serve_metrics(
    registry: CollectorRegistry, *, port: int, host: str = "127.0.0.1"
) -> tuple[int, Callable[[], None]]:
    """Serve `registry` at http://host:port/metrics from a daemon thread of its own; returns
    the port (useful with port 0) and a function that stops the server."""
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    assert isinstance(thread, threading.Thread)
    return server.server_port, stop
