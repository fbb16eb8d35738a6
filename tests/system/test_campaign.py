"""The campaign's judge counts each kind of difference the e2e comparison reports."""

from __future__ import annotations

import random
from collections import Counter

from tests.campaign import _count, random_script


def test_differences_are_counted_by_kind() -> None:
    figures: Counter[str] = Counter()
    _count(
        [
            "order 5 (client id 1, SOL_USDC): trades missing from the engine [7, 8], extra []",
            "order 6 (client id 2, SOL_USDC): trades missing from the engine [], extra [9]",
            "order 6 (client id 2, SOL_USDC): exchange executed 1, engine filled 2",
            "order 7 (client id 3, SOL_USDC): exchange executed 2, engine filled 1",
            "balance USDC: exchange available/locked 1/0, engine 2/0",
            "position SOL_USDC_PERP: exchange net/entry 1/100, engine 2/100",
            "engine order c4 left InDoubt",
            "engine order c5 (Filled) is unknown to the exchange",
        ],
        figures,
    )
    assert figures == Counter(
        lost=2, doubled=2, lost_quantity=1, drifted=2, in_doubt=1, other_differences=1
    )


def test_scripts_trade_both_markets_both_ways_with_faults() -> None:
    rng = random.Random(5)
    actions = [a for _ in range(200) for a in random_script(rng)]
    orders = {(a[1], a[3]) for a in actions if a[0] == "order"}
    assert orders == {(s, side) for s in ("SOL_USDC", "SOL_USDC_PERP") for side in ("Bid", "Ask")}
    assert any(a[0] == "fault" for a in actions)
