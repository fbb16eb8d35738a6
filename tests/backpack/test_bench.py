"""The benchmark command: it runs, prints every figure, and its session is sound.

Speed is never asserted here; only that the figures are there and the synthetic session is
what the bench claims to measure (deterministic, Backpack-shaped, consistent).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from oms.core.events import (
    BalanceObserved,
    CancelRequested,
    FundingPaid,
    MarketInfo,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderSubmitted,
)
from oms.core.reducer import replay
from oms.core.values import MarketType, Source, VenueStatus
from oms.replay import replay_file
from oms_backpack.bench import main, session_events

NUMBER = r"\d[\d,]*(?:\.\d+)?"


def test_main_prints_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kept = tmp_path / "session.jsonl"
    assert main(["--events", "2000", "--seed", "5", "--keep", str(kept)]) == 0
    out = capsys.readouterr().out

    expected = [
        rf"replay \(read\+decode\+reduce\)\s+{NUMBER} events/s\s+>= 100,000\s+(PASS|MISS)",
        rf"json\.loads per line\s+{NUMBER} lines/s",
        rf"ratio replay / json\s+{NUMBER}\s+>= 0\.8\s+(PASS|MISS)",
        rf"replay peak RSS\s+{NUMBER} MB\s+< 100 MB\s+(PASS|MISS)",
        rf"live: frame -> applied\+appended p50 \({NUMBER} frames\)\s+{NUMBER} µs\s+"
        r"< 50 µs\s+(PASS|MISS)",
        rf"live: frame -> applied\+appended p99\s+{NUMBER} µs\s+< 150 µs\s+(PASS|MISS)",
        rf"append, Fsync\.every_event\(\) \(2,000 events\)\s+{NUMBER} events/s",
        rf"append, Fsync\.group\(\) \(2,000 events, median of 3 runs\)\s+{NUMBER} events/s\s+"
        r">= 200,000\s+(PASS|MISS)",
        rf"append, Fsync\.group\(\), each run: {NUMBER} / {NUMBER} / {NUMBER} events/s",
        rf"append, Fsync\.never\(\) \(2,000 events\)\s+{NUMBER} events/s",
        rf"file size\s+{NUMBER} MB",
        rf"bytes per event\s+{NUMBER}",
    ]
    for pattern in expected:
        assert re.search(pattern, out), f"missing {pattern!r} in:\n{out}"

    # The group figure is the median of the runs printed under the table.
    runs = re.search(rf"Fsync\.group\(\), each run: ({NUMBER}) / ({NUMBER}) / ({NUMBER})", out)
    figure = re.search(rf"median of 3 runs\)\s+({NUMBER}) events/s", out)
    assert runs is not None and figure is not None
    rates = sorted(int(rate.replace(",", "")) for rate in runs.groups())
    assert int(figure.group(1).replace(",", "")) == rates[1]

    # --keep leaves a complete log of exactly N events, and the printed size matches it.
    state, reader = replay_file(str(kept))
    assert reader.torn is None
    assert state.last_seq == 2000
    size = kept.stat().st_size
    match = re.search(r"bytes per event\s+(\d[\d,]*)", out)
    assert match is not None
    assert int(match.group(1).replace(",", "")) == round(size / 2000)
    assert "anomalies 0" in out


def test_too_few_events_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--events", "10"])
    assert exit_info.value.code == 2
    assert "--events" in capsys.readouterr().err


def test_python_m_oms_bench_is_the_bench() -> None:
    # The speed issue names `python -m oms.bench`: it runs the adapter's bench, arguments and
    # all (here a usage error, which the bench itself reports).
    result = subprocess.run(
        [sys.executable, "-m", "oms.bench", "--events", "10"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--events must be at least" in result.stderr
    assert "Traceback" not in result.stderr


def test_session_is_deterministic_per_seed() -> None:
    first = list(session_events(3000, seed=11))
    assert list(session_events(3000, seed=11)) == first
    assert list(session_events(3000, seed=12)) != first
    assert len(first) == 3000


def test_session_has_the_promised_mix_and_replays_without_anomalies() -> None:
    events = list(session_events(30_000, seed=3))

    markets = [e for e in events[:6] if isinstance(e, MarketInfo)]
    assert len(markets) == 6
    assert {m.market_type for m in markets} == {MarketType.SPOT, MarketType.PERP}
    assert isinstance(events[6], BalanceObserved)

    kinds = Counter(type(e).__name__ for e in events)
    for cls in (
        OrderSubmitted,
        OrderAccepted,
        OrderFilled,
        CancelRequested,
        OrderCancelled,
        BalanceObserved,
        FundingPaid,
    ):
        assert kinds[cls.__name__] > 0, cls.__name__
    assert kinds["OrderFilled"] > kinds["OrderSubmitted"]  # fill-heavy
    assert kinds["BalanceObserved"] >= 5  # a snapshot every few thousand events

    # The balance snapshots and the venue's cumulative figures agree with the events:
    # any disagreement would be a drift, fill-gap or mismatch anomaly.
    state = replay(events)
    assert state.anomaly_total == 0
    assert state.last_seq == 30_000
    assert any(p.net_quantity for p in state.positions.values())
    assert all(p.funding for p in state.positions.values() if p.funding_intervals)


def test_venue_events_carry_matching_backpack_messages() -> None:
    expected_kind = {
        OrderAccepted: "orderAccepted",
        OrderFilled: "orderFill",
        OrderCancelled: "orderCancelled",
    }
    filled: dict[str, Decimal] = {}
    checked = Counter[str]()
    for event in session_events(5000, seed=8):
        if event.source is Source.LOCAL:
            assert event.raw is None
            continue
        assert event.raw is not None
        message = json.loads(event.raw)
        if not isinstance(event, OrderAccepted | OrderFilled | OrderCancelled):
            continue
        assert message["stream"] == "account.orderUpdate"
        data = message["data"]
        assert data["e"] == expected_kind[type(event)]
        assert data["s"] == event.symbol
        assert data["i"] == event.venue_id
        assert data["c"] == event.client_id
        assert data["T"] == event.venue_time_us  # the engine time, as the codec reads it
        assert data["E"] > data["T"]
        assert event.venue_id is not None
        so_far = filled.get(event.venue_id, Decimal(0))
        if isinstance(event, OrderFilled):
            assert data["t"] == event.trade_id
            assert Decimal(data["l"]) == event.quantity
            assert Decimal(data["L"]) == event.price
            assert Decimal(data["n"]) == event.fee
            assert data["N"] == event.fee_asset
            # z is the running total of this order's fills; X says whether it is complete.
            so_far = filled[event.venue_id] = so_far + event.quantity
            assert event.cum_quantity == so_far
            assert Decimal(data["z"]) == so_far
            complete = so_far == event.order_quantity
            assert data["X"] == ("Filled" if complete else "PartiallyFilled")
            assert event.status is (
                VenueStatus.FILLED if complete else VenueStatus.PARTIALLY_FILLED
            )
        elif isinstance(event, OrderCancelled):
            assert data["X"] == "Cancelled"
            assert Decimal(data["z"]) == so_far == event.cum_quantity
        else:
            assert data["X"] == "New"
        checked[data["e"]] += 1
    assert set(checked) == set(expected_kind.values())
