"""The test kit's session strategy: consistent sessions, and knobs that really perturb them.

These are also the engine's guarantees stated over whole sessions: delivered in any order,
with duplicates, a session converges to what the venue sent.
"""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from oms import Event, OrderFilled, replay_events
from oms.testing.strategies import DrawnSession, sessions

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(sessions())
def test_a_session_as_the_venue_sent_it_raises_no_anomaly(drawn: DrawnSession) -> None:
    assert drawn.delivered == drawn.truth
    state = replay_events(drawn.truth)
    assert not state.anomalies, [(a.kind, a.detail) for a in state.anomalies]
    # Trade ids run in sequence per market.
    for symbol in {e.symbol for e in drawn.truth if isinstance(e, OrderFilled)}:
        ids = [e.trade_id for e in drawn.truth if isinstance(e, OrderFilled) and e.symbol == symbol]
        assert ids == list(range(1, len(ids) + 1))


@FAST
@given(sessions(duplicates=4, reorders=4, delays=4))
def test_duplicated_reordered_and_delayed_messages_converge_to_what_the_venue_sent(
    drawn: DrawnSession,
) -> None:
    sent, got = replay_events(drawn.truth), replay_events(drawn.delivered)
    for key, order in sent.orders.items():
        other = got.orders[key]
        assert (other.status, other.filled_quantity, other.trade_ids, other.fees) == (
            order.status,
            order.filled_quantity,
            order.trade_ids,
            order.fees,
        )
    for symbol, position in sent.positions.items():
        other_position = got.positions[symbol]
        assert (
            other_position.net_quantity,
            other_position.entry_price,
            other_position.realized_pnl,
            other_position.funding,
        ) == (position.net_quantity, position.entry_price, position.realized_pnl, position.funding)
    for asset, balance in sent.balances.items():
        assert (got.balances[asset].available, got.balances[asset].locked) == (
            balance.available,
            balance.locked,
        )


@FAST
@given(sessions(drops=3))
def test_a_dropped_fill_is_missing_and_nothing_is_invented(drawn: DrawnSession) -> None:
    state = replay_events(drawn.delivered)
    delivered = Counter(
        (e.venue_id, e.trade_id) for e in drawn.delivered if isinstance(e, OrderFilled)
    )
    counted = {
        (order.venue_id, trade_id)
        for order in state.orders.values()
        for trade_id in order.trade_ids
    }
    assert counted == set(delivered)


@pytest.mark.parametrize("knob", ["duplicates", "drops", "reorders", "delays"])
def test_each_knob_perturbs_sessions(knob: str) -> None:
    seen: list[DrawnSession] = []

    # Derandomized: a random run could draw too few sessions with two stream messages to
    # reorder (it happened about one run in a few hundred); a fixed draw still fails if a knob
    # stops acting.
    @settings(max_examples=60, deadline=None, database=None, derandomize=True)
    @given(sessions(max_orders=3, **{knob: 2}))  # type: ignore[arg-type]
    def draw(drawn: DrawnSession) -> None:
        seen.append(drawn)

    draw()
    changed = [d for d in seen if d.delivered != d.truth]
    assert len(changed) >= 3, f"{knob} changed {len(changed)} of {len(seen)} sessions"
    for drawn in changed:
        if knob == "duplicates":
            assert len(drawn.delivered) > len(drawn.truth)
        elif knob == "drops":
            assert len(drawn.delivered) + len(drawn.dropped) == len(drawn.truth)
        else:  # the same messages, in another order
            assert sorted(map(_untimed, drawn.delivered)) == sorted(map(_untimed, drawn.truth))


def _untimed(event: Event) -> str:
    return repr(msgspec.structs.replace(event, recv_time_us=0))
