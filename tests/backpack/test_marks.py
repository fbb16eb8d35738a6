"""The rule that decides which marks are recorded (`oms_backpack.marks.MarkSampler`)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from oms.core.errors import ConfigurationError
from oms.core.events import MarkObserved
from oms.core.values import Source
from oms_backpack.marks import MarkSampler

S = 1_000_000


def at(seconds: float, price: str, symbol: str = "SOL_USDC_PERP") -> MarkObserved:
    return MarkObserved(
        source=Source.WS,
        recv_time_us=int(seconds * S),
        symbol=symbol,
        mark_price=Decimal(price),
    )


def test_the_first_mark_of_each_market_is_recorded() -> None:
    sampler = MarkSampler()
    assert sampler.keep(at(0, "100"))
    assert sampler.keep(at(0, "50", symbol="SOL_USDC"))


def test_a_small_move_waits_for_the_longest_interval() -> None:
    sampler = MarkSampler()
    assert sampler.keep(at(0, "100"))
    # 9 bps is below the 10 bps step: not recorded until 60 s have passed.
    assert not sampler.keep(at(10, "100.09"))
    assert not sampler.keep(at(59.9, "100.09"))
    assert sampler.keep(at(60, "100.09"))
    # Unchanged for a long time: nothing to record.
    assert not sampler.keep(at(600, "100.09"))


def test_a_large_move_is_recorded_but_at_most_once_per_shortest_interval() -> None:
    sampler = MarkSampler()
    assert sampler.keep(at(0, "100"))
    assert not sampler.keep(at(1, "100.10"))  # 10 bps, but only 1 s later
    assert sampler.keep(at(5, "100.10"))  # 10 bps and 5 s
    assert not sampler.keep(at(6, "99"))
    assert sampler.keep(at(10, "99"))
    assert (sampler.kept, sampler.dropped) == (3, 2)


def test_one_a_second_for_a_day_in_a_wild_market_stays_within_the_bound() -> None:
    sampler = MarkSampler()
    kept = sum(sampler.keep(at(second, "100" if second % 2 else "200")) for second in range(86_400))
    assert kept == 86_400 // 5


def test_a_bad_rule_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        MarkSampler(move_bps=Decimal(0))
    with pytest.raises(ConfigurationError):
        MarkSampler(min_interval_us=10, max_interval_us=5)
