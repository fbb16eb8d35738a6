"""Marks from the local exchange's `markPrice` stream: sampled into the log, and unrealized PnL
derived from them agrees with the venue's position report. Metrics of a live session."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from oms.core.account import marked_position
from oms.core.events import MarkObserved
from oms.core.reducer import replay
from oms.core.serialization import state_hash
from oms.core.values import OrderStatus, OrderType, Side
from oms.log import LogReader
from oms.metrics import EngineMetrics
from oms.status import status_document
from oms.testing.books import PERP, SPOT
from oms.testing.harness import open_harness
from oms.testing.waiting import wait_state


async def test_marks_are_sampled_and_the_venue_agrees_on_unrealized_pnl(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    async with open_harness(path, step_us=20_000, tick_interval=0.02) as h:
        order = await h.submit(PERP, Side.BID, OrderType.MARKET, quantity="2")
        await h.until(order, lambda o: o.status is OrderStatus.FILLED, "the perp buy to fill")
        await wait_state(
            h.engine,
            lambda s: PERP in s.marks and SPOT in s.marks,
            "a mark of each market",
        )
        await h.session.reconcile(gate=False)  # the venue's position report, with its mark
        state = h.state
        figures = marked_position(state, state.positions[PERP])
        assert figures.net_quantity == Decimal("2") and figures.venue_mark_price is not None
        assert figures.drift_quantity == 0 and figures.drift_unrealized_pnl == 0
        assert figures.unrealized_pnl == (state.marks[PERP].price - figures.entry_price) * 2
        doc = status_document(state)
        assert doc["positions"][0]["mark_price"] == str(state.marks[PERP].price)
        sampler = h.session.marks
        assert sampler is not None
        await h.finish()
    recorded = [e for e in LogReader(path).events() if isinstance(e, MarkObserved)]
    # The market moves every 20 ms and pushes a mark each time: most are not recorded.
    assert len(recorded) == sampler.kept and sampler.dropped > sampler.kept
    assert state_hash(replay(LogReader(path).events())) == state_hash(h.state)


async def test_a_live_session_feeds_the_rest_and_log_metrics(tmp_path: Path) -> None:
    async with open_harness(tmp_path / "x.jsonl") as h:
        metrics = EngineMetrics(h.engine, "main")
        h.session.rest.observer = metrics.rest_timing
        try:
            order = await h.submit(SPOT, Side.BID, OrderType.MARKET, quantity="0.1")
            await h.until(order, lambda o: o.status is OrderStatus.FILLED, "the buy to fill")
            await h.session.reconcile(gate=False)
        finally:
            metrics.close()
        await h.finish()
    assert sum(sum(hist.counts) for hist in metrics.rest.values()) >= 2
    assert "/api/v1/order" in metrics.rest  # the submit itself was timed
    assert sum(metrics.append.counts) >= 3  # submitted, answered, filled at least
    assert metrics.fills >= 1
