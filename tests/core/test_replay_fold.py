"""`ReplayFold` (the fold for replaying logs, with its short path and private drafts) against
the reference, `apply` event by event: the same state, record for record, after every prefix
that is frozen, over random sessions and the recorded ones. And the property is shown to catch
a fold that is wrong in small ways.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from immutables import Map
from msgspec.structs import replace

from oms.core.events import (
    Event,
    KillSwitchReset,
    KillSwitchTripped,
    OrderAccepted,
    OrderDenied,
    OrderFilled,
    OrderSubmitted,
)
from oms.core.reducer import apply
from oms.core.reducer import replay as replay_events
from oms.core.replay_fold import ReplayFold, _PositionDraft
from oms.core.risk import PNL_SAMPLE_SPACING_US, RATE_MEMORY
from oms.core.serialization import (
    FOLD_ONLY,
    FORMAT_VERSION,
    LogFormatError,
    decode_header,
    decode_line,
    encode_line,
    full_event,
    line_decoder,
    scrub,
    state_hash,
)
from oms.core.state import POSITION_WINDOW, Position, State
from oms.core.values import ZERO, OrderType, Side, Source
from oms.log import LogReader
from oms.testing.strategies import (
    PERP,
    events,
    histories,
    markets,
    sessions,
    submit,
    trading_event,
)
from tests.helpers import REPLAY_DIR

CHECKS = settings(max_examples=300, deadline=None)
# A wrong fold has to be caught within this many examples (found, not shrunk).
HUNT = settings(
    max_examples=2_000,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    report_multiple_bugs=False,
)


def _agree(
    fold_class: type[ReplayFold],
    history: Sequence[Event],
    state: State,
    cuts: set[int],
    *,
    fold_only: bool = False,
) -> None:
    """Fold `history` with `fold_class` from `state`, freezing after each index in `cuts` and
    at the end, and check each frozen state against `apply` event by event. With `fold_only`,
    each event goes through a log line first: `apply` takes it as read back, the fold as read
    for folding only."""
    fold = fold_class(state)
    expected = state
    for index, original in enumerate(history):
        event, folded = _as_read(original) if fold_only else (original, original)
        fold.step(folded)
        expected = apply(expected, event)
        if index in cuts:
            assert fold.freeze() == expected, f"after event {index} ({type(event).__name__})"
    final = fold.freeze()
    assert final == expected
    assert state_hash(final) == state_hash(expected)


# Gaps between receive times: the risk check samples PnL at a submit a minute after the last.
_GAPS_US = st.sampled_from([1, 1_000, PNL_SAMPLE_SPACING_US - 1, PNL_SAMPLE_SPACING_US, 10**8])


def _sessions(max_size: int) -> st.SearchStrategy[list[Event]]:
    """Healthy sessions (the short path's usual input) and troubled ones (duplicates, unknown
    orders, forbidden transitions, overfills, drift: `Fold`'s), with arbitrary events of every
    type mixed in; some with receive times restamped up to minutes apart."""
    noise = st.lists(events() | trading_event(), max_size=3)
    healthy = sessions(max_orders=8).map(lambda drawn: list(drawn.delivered))
    troubled = sessions(max_orders=6, duplicates=2, drops=1, reorders=2).map(
        lambda drawn: list(drawn.delivered)
    )
    base = healthy | troubled | histories(max_size=max_size)
    gaps = st.none() | st.lists(_GAPS_US, min_size=1, max_size=8)
    return st.tuples(base, noise, st.randoms(use_true_random=False), gaps).map(
        lambda parts: _mixed(*parts)
    )


def _mixed(
    history: list[Event], noise: list[Event], random: Any, gaps: list[int] | None
) -> list[Event]:
    out = list(history)
    for event in noise:
        out.insert(random.randint(0, len(out)), event)
    if gaps is not None:
        out = _restamped(out, gaps)
    return out


def _restamped(history: Sequence[Event], gaps: Sequence[int]) -> list[Event]:
    """`history` received `gaps` apart (in turn), from 1 s on."""
    out = []
    time = 1_000_000
    for index, event in enumerate(history):
        time += gaps[index % len(gaps)]
        out.append(replace(event, recv_time_us=time))
    return out


def _check(fold_class: type[ReplayFold], *, fold_only: bool = False) -> Callable[[], None]:
    @given(
        history=_sessions(60),
        retain=st.integers(1, 6),
        cuts=st.sets(st.integers(0, 70), max_size=4),
    )
    def check(history: list[Event], retain: int, cuts: set[int]) -> None:
        # A small retention, so that finished orders are dropped as the session goes.
        _agree(fold_class, history, State(retain_finished=retain), cuts, fold_only=fold_only)

    return check


test_replay_fold_is_apply = CHECKS(_check(ReplayFold))


_read_fold_only = line_decoder(FORMAT_VERSION, fold_only=True)


def _as_read(event: Event) -> tuple[Event, Event]:
    """(the event as a log gives it back, the same line read for folding only): the usual
    reports come back as their fold-only classes. An event no log can hold (a value out of
    range) is returned as it is, twice."""
    for candidate in (event, scrub(event)):
        try:
            line = encode_line(1, candidate)
        except LogFormatError:
            continue
        return decode_line(line)[1], _read_fold_only(line)[1]
    return event, event


# Replays read the usual reports into fold-only classes (`raw` undecoded): folded from those,
# the state is the state `apply` gives from the events themselves, the slow path included.
test_replay_fold_of_fold_only_events_is_apply = CHECKS(_check(ReplayFold, fold_only=True))


def test_fold_only_events_are_their_events_without_the_venue_text() -> None:
    for path in sorted(REPLAY_DIR.glob("*.jsonl")):
        with path.open("rb") as handle:
            header, *lines = handle.readlines()
        version = decode_header(header)
        read_fold_only = line_decoder(version, fold_only=True)
        for line in lines:
            seq, event = decode_line(line, version)
            lean_seq, lean = read_fold_only(line)
            assert lean_seq == seq
            assert isinstance(lean, type(event)) and type(lean).__name__ == type(event).__name__
            if type(event) in FOLD_ONLY:
                assert type(lean) is FOLD_ONLY[type(event)]
                assert full_event(lean) == replace(event, raw=None)
            else:
                assert lean == event


def _perp_fill(trade_id: int, quantity: Decimal, price: Decimal, side: Side) -> OrderFilled:
    """A fill of order 1 (submitted for more than all of them) on the perp market."""
    return OrderFilled(
        source=Source.WS,
        recv_time_us=trade_id,
        venue_time_us=trade_id,
        symbol=PERP,
        venue_id="V1",
        client_id=1,
        trade_id=trade_id,
        side=side,
        quantity=quantity,
        price=price,
        fee=Decimal("0.01"),
        fee_asset="USDC",
        maker=False,
    )


@settings(max_examples=60, deadline=None)
@given(
    moves=st.lists(
        st.tuples(st.sampled_from(Side), st.integers(1, 300), st.integers(9_000, 11_000)),
        min_size=POSITION_WINDOW + 1,
        max_size=POSITION_WINDOW + 40,
    ),
    late=st.lists(st.integers(0, POSITION_WINDOW + 40), max_size=3),
    cuts=st.sets(st.integers(0, POSITION_WINDOW + 50), max_size=3),
)
def test_replay_fold_is_apply_past_the_position_window(
    moves: list[tuple[Side, int, int]], late: list[int], cuts: set[int]
) -> None:
    # More perp fills than the window holds, so the checkpoint moves; a few of them arrive
    # late (Fold's path) among the fills in order (the short path).
    fills = [
        _perp_fill(1_000 + i, Decimal(q).scaleb(-2), Decimal(p).scaleb(-2), side)
        for i, (side, q, p) in enumerate(moves)
    ]
    for index in late:
        if index < len(fills):
            fills.append(fills.pop(index))
    order = submit(1, Side.BID, Decimal(10**9), Decimal(100), symbol=PERP)
    history: list[Event] = [*markets(), order, *fills]
    _agree(ReplayFold, history, State(), cuts)


# One submit of a long session: the gap before it, its side and price in cents, how many
# fills it gets, and what else comes with it (see `_long_session`).
_Step = tuple[int, Side, int, int, int]
_long_plans = st.lists(
    st.tuples(
        _GAPS_US,
        st.sampled_from(Side),
        st.integers(9_000, 11_000),
        st.integers(0, 2),
        st.integers(0, 29),
    ),
    min_size=RATE_MEMORY + 1,
    max_size=RATE_MEMORY + 30,
)


def _long_session(plan: Sequence[_Step]) -> list[Event]:
    """More submits than the risk check remembers (`RATE_MEMORY`), received from a
    microsecond to minutes apart (so PnL samples are taken), with perp fills between them
    that move the position a sample reads, and the risk events (`Fold`'s) mixed in: some
    denials, trips and resets, and submits that reuse a client id."""
    history: list[Event] = list(markets())
    time = 1_000_000
    trade_id = 0
    for client_id, (gap, side, cents, fills, other) in enumerate(plan, start=1):
        time += gap + (PNL_SAMPLE_SPACING_US if client_id % 64 == 0 else 0)
        price = Decimal(cents).scaleb(-2)
        order = submit(client_id, side, Decimal(5), price, symbol=PERP)
        history.append(replace(order, recv_time_us=time))
        for _ in range(fills):
            trade_id += 1
            fill = _perp_fill(trade_id, Decimal(1), price, side)
            history.append(replace(fill, client_id=client_id, venue_id=f"V{client_id}"))
        if other == 0:
            history.append(_denied(client_id + 10_000, time))
        elif other == 1:
            history.append(
                KillSwitchTripped(
                    source=Source.LOCAL, recv_time_us=time, reason="test", by="program"
                )
            )
        elif other == 2:
            history.append(KillSwitchReset(source=Source.LOCAL, recv_time_us=time, reason="test"))
        elif other == 3:
            history.append(replace(order, recv_time_us=time + 1))  # the same client id again
    return history


def _denied(client_id: int, time: int) -> OrderDenied:
    return OrderDenied(
        source=Source.LOCAL,
        recv_time_us=time,
        client_id=client_id,
        symbol=PERP,
        side=Side.BID,
        order_type=OrderType.LIMIT,
        limit="max_submits",
        scope="account",
        reason="test",
    )


def _long_check(fold_class: type[ReplayFold]) -> Callable[[], None]:
    @given(plan=_long_plans, cuts=st.sets(st.integers(0, 3 * RATE_MEMORY), max_size=3))
    def check(plan: list[_Step], cuts: set[int]) -> None:
        _agree(fold_class, _long_session(plan), State(), cuts)

    return check


test_replay_fold_is_apply_past_the_rate_memory = settings(max_examples=25, deadline=None)(
    _long_check(ReplayFold)
)


@settings(max_examples=3, deadline=None)
@given(plan=_long_plans)
def test_long_sessions_wrap_the_rate_memory_and_take_samples(plan: list[_Step]) -> None:
    # What the check above relies on: the submit times wrap, and samples are taken.
    history = _long_session(plan)
    state = ReplayFold(State())
    for event in history:
        state.step(event)
    risk = state.freeze().risk
    assert sum(isinstance(event, OrderSubmitted) for event in history) > RATE_MEMORY
    assert len(risk.submit_times) == RATE_MEMORY
    assert len(risk.pnl_samples) >= 4


@pytest.mark.parametrize(
    "path",
    sorted(REPLAY_DIR.glob("*.jsonl")) + sorted((REPLAY_DIR / "v1").glob("*.jsonl")),
    ids=lambda path: f"{path.parent.name}/{path.name}",
)
def test_recorded_sessions_fold_alike(path: Any) -> None:
    history = list(LogReader(path).events())
    assert history
    _agree(ReplayFold, history, State(), set(range(len(history))))
    # As a replay reads them (the usual reports without their venue text).
    lean = list(LogReader(path, fold_only=True).events())
    fold = ReplayFold(State())
    for event in lean:
        fold.step(event)
    assert fold.freeze() == replay_events(history)


# --- the property catches a fold that is wrong in small ways --------------------------------


class _AcceptedWithoutTime(ReplayFold):
    """An accept that does not move the order's venue time."""

    def _accepted(self, event: OrderAccepted) -> None:
        super()._accepted(event.__class__(**{**_fields(event), "venue_time_us": None}))


class _StaleWindow(ReplayFold):
    """Writes a position back with the window it started from."""

    def _write_back(self) -> None:
        for draft in self._position_drafts.values():
            draft.recent.clear()
            draft.recent.extend(draft.record.recent)
        super()._write_back()


class _KeepsItsDrafts(ReplayFold):
    """Hands events to `Fold` without writing the balance drafts back first."""

    def _slow(self, event: Event) -> None:
        drafts = self._balance_drafts
        self._balance_drafts = {}
        super()._slow(event)
        self._balance_drafts.update(drafts)


class _FeeOnce(ReplayFold):
    """Counts a fill's fee in its position only for the position's first fill."""

    def _position_in_order(self, event: OrderFilled) -> Decimal | None:
        if self._position_drafts.get(event.symbol) is not None:
            event = event.__class__(**{**_fields(event), "fee": ZERO})
        return super()._position_in_order(event)


class _ShortRateMemory(ReplayFold):
    """Remembers one submit time fewer than the risk check keeps."""

    def _submitted(self, event: OrderSubmitted) -> None:
        if self._submit_times is None:
            self._submit_times = deque(self.risk.submit_times, maxlen=RATE_MEMORY - 1)
        super()._submitted(event)


class _StaleSample(ReplayFold):
    """Takes a PnL sample from the positions as last written back (not the drafts)."""

    def _positions_now(self) -> Map[str, Position]:
        return self._frozen_positions()


class _TimesKeptFromFold(ReplayFold):
    """Writes the submit times back only when frozen, not before `Fold`'s handlers."""

    def _slow(self, event: Event) -> None:
        times = self._submit_times
        self._submit_times = None
        super()._slow(event)
        self._submit_times = times


def _fields(event: Event) -> dict[str, Any]:
    return {name: getattr(event, name) for name in event.__struct_fields__}


@pytest.mark.parametrize("wrong", [_AcceptedWithoutTime, _StaleWindow, _KeepsItsDrafts, _FeeOnce])
def test_the_property_catches_a_wrong_fold(wrong: type[ReplayFold]) -> None:
    with pytest.raises(AssertionError):
        HUNT(_check(wrong))()


@pytest.mark.parametrize("wrong", [_ShortRateMemory, _StaleSample, _TimesKeptFromFold])
def test_the_long_sessions_catch_a_wrong_risk_memory(wrong: type[ReplayFold]) -> None:
    # Every long session wraps the memory and takes samples, and almost every one reuses a
    # client id several times (one submit in 30): a few examples suffice.
    with pytest.raises(AssertionError):
        settings(HUNT, max_examples=50)(_long_check(wrong))()


def test_a_position_draft_freezes_to_its_record() -> None:
    record = Position(symbol=PERP, funding=Decimal("1.5"))
    assert _PositionDraft(record).freeze() == record
