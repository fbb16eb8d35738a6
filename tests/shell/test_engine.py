"""The engine, the single writer: log each event, then apply it; reopen; drain a channel."""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oms import engine as engine_module
from oms.core.events import (
    Event,
    MarketInfo,
    MessageNotUnderstood,
    OrderFilled,
    OrderObserved,
    OrderSubmitted,
)
from oms.core.reducer import replay
from oms.core.serialization import state_hash
from oms.core.state import Order, State
from oms.core.values import MarketType, OrderStatus, OrderType, Side, Source, VenueStatus
from oms.engine import Engine, EngineFailed
from oms.log import EventLog, Fsync, LogReader
from tests.helpers import REPLAY_DIR


def session(name: str) -> list[Event]:
    return list(LogReader(REPLAY_DIR / f"{name}.jsonl").events())


def replay_file(path: Path) -> State:
    return replay(LogReader(path).events())


def note(n: int) -> MessageNotUnderstood:
    return MessageNotUnderstood(source=Source.WS, recv_time_us=n, raw=f"frame {n}", reason="test")


def test_record_close_reopen_continues(tmp_path: Path) -> None:
    events = session("spot_limit_partial_cancel")
    path = tmp_path / "s.jsonl"
    engine = Engine.open(path, fsync=Fsync.never())
    assert engine.state.last_seq == 0
    for event in events[:5]:
        engine.record(event)
    after_five = engine.state
    engine.close()

    reopened = Engine.open(path, fsync=Fsync.never())
    assert reopened.torn is None
    assert reopened.state.last_seq == 5
    assert state_hash(reopened.state) == state_hash(after_five)
    order = reopened.state.order(client_id=1001)
    assert order is not None and order.status is OrderStatus.PARTIALLY_FILLED
    for event in events[5:]:
        reopened.record(event)
    reopened.close()

    assert [seq for seq, _ in LogReader(path)] == list(range(1, len(events) + 1))
    assert state_hash(reopened.state) == state_hash(replay(events))
    assert state_hash(replay_file(path)) == state_hash(reopened.state)


def test_reopen_after_a_torn_write(tmp_path: Path) -> None:
    events = session("spot_market_buy_multi_fill")
    path = tmp_path / "s.jsonl"
    engine = Engine.open(path, fsync=Fsync.never())
    for event in events:
        engine.record(event)
    engine.close()
    data = path.read_bytes()
    path.write_bytes(data[:-30])  # a crash in the middle of the last line

    engine = Engine.open(path, fsync=Fsync.never())
    assert engine.torn is not None
    assert engine.state.last_seq == len(events) - 1
    assert state_hash(engine.state) == state_hash(replay(events[:-1]))
    engine.record(events[-1])
    engine.close()
    assert path.read_bytes() == data


def test_engine_refuses_a_state_that_does_not_match_its_log(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with EventLog.open(path, fsync=Fsync.never()) as log:
        log.append(note(1))
    with EventLog.open(path, fsync=Fsync.never()) as log, pytest.raises(ValueError, match="seq"):
        Engine(log, State())


def test_without_a_log_it_only_applies() -> None:
    engine = Engine()
    engine.record(note(1))
    assert engine.log is None and engine.torn is None
    assert engine.state.last_seq == 1
    engine.close()


def test_listeners_see_every_event_with_the_state_after_it(tmp_path: Path) -> None:
    events = session("perp_position_lifecycle")
    engine = Engine.open(tmp_path / "s.jsonl", fsync=Fsync.never())
    seen: list[tuple[Event, int]] = []
    also: list[Event] = []
    engine.subscribe(lambda event, state: seen.append((event, state.last_seq)))
    unsubscribe = engine.subscribe(lambda event, state: also.append(event))
    for event in events[:3]:
        engine.record(event)
    unsubscribe()
    for event in events[3:]:
        engine.record(event)
    engine.close()
    assert seen == [(event, n) for n, event in enumerate(events, start=1)]
    assert also == events[:3]


async def test_run_drains_a_channel_from_several_producers(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    engine = Engine.open(path, fsync=Fsync.group(max_events=8, max_delay=0.01))
    first = session("spot_limit_partial_cancel")
    second = session("perp_position_lifecycle")
    send, receive = trio.open_memory_channel[Event](0)

    async def produce(channel: trio.MemorySendChannel[Event], events: list[Event]) -> None:
        async with channel:
            for event in events:
                await channel.send(event)
                await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.run, receive)
        async with send:
            nursery.start_soon(produce, send.clone(), first)
            nursery.start_soon(produce, send.clone(), second)
    # run() returned: every sender closed and everything was applied and synced.
    engine.close()

    logged = [event for _, event in LogReader(path)]
    assert sorted(map(repr, logged)) == sorted(map(repr, first + second))
    assert [e for e in logged if e in first] == first  # each producer's order is kept
    assert engine.state.last_seq == len(first) + len(second)
    assert state_hash(engine.state) == state_hash(replay_file(path))


async def test_run_syncs_a_quiet_stream_on_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    log = EventLog.open(
        tmp_path / "s.jsonl",
        fsync=Fsync.group(max_events=1000, max_delay=0.5),
        clock=trio.current_time,
    )
    engine = Engine(log)
    send, receive = trio.open_memory_channel[Event](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.run, receive)
        await send.send(note(1))
        await trio.sleep(0.2)
        assert log.syncs == 0  # waiting for company
        await trio.sleep(0.5)
        assert log.syncs == 1  # no more events came: synced by the timer
        await send.aclose()
    engine.close()
    assert engine.state.last_seq == 1


def test_a_lone_surrogate_is_repaired_and_replay_still_matches(tmp_path: Path) -> None:
    # A venue's "\ud800" escape decodes to a string UTF-8 cannot hold. The engine repairs the
    # text before logging and applying, and leaves enum fields (Side.BID is a str) alone.
    from decimal import Decimal

    from oms.core.events import MarketInfo, OrderFilled
    from oms.core.values import MarketType, Side

    path = tmp_path / "s.jsonl"
    engine = Engine.open(path, fsync=Fsync.never())
    engine.record(
        MarketInfo(source=Source.REST, recv_time_us=1, symbol="ETH_USDC", base_asset="ETH",
                   quote_asset="USDC", market_type=MarketType.SPOT, tick_size=Decimal("0.01"),
                   step_size=Decimal("0.001"), min_quantity=Decimal("0.001"))
    )  # fmt: skip
    engine.record(
        OrderFilled(source=Source.WS, recv_time_us=2, raw='{"note":"\ud800"}', symbol="ETH_USDC",
                    venue_id="9", trade_id=1, side=Side.BID, quantity=Decimal("1"),
                    price=Decimal("10"), fee=Decimal(0), fee_asset="ETH", maker=True,
                    origin="USER\ud800")
    )  # fmt: skip
    engine.close()
    assert engine.state.balances["ETH"].available == Decimal(1)  # a buy, not a sell
    assert state_hash(replay(LogReader(path).events())) == state_hash(engine.state)


def test_a_decimal_that_could_never_be_read_back_is_refused_before_writing(
    tmp_path: Path,
) -> None:
    from decimal import Decimal

    from oms.core.events import OrderSubmitted
    from oms.core.serialization import LogFormatError
    from oms.core.values import OrderType, Side

    path = tmp_path / "s.jsonl"
    engine = Engine.open(path, fsync=Fsync.never())
    with pytest.raises(LogFormatError, match="not a decimal in range"):
        engine.record(
            OrderSubmitted(source=Source.LOCAL, recv_time_us=1, client_id=1, symbol="X_Y",
                           side=Side.BID, order_type=OrderType.LIMIT, quantity=Decimal("1E+50"),
                           price=Decimal("1"))
        )  # fmt: skip
    engine.close()
    assert engine.state.last_seq == 0
    assert list(LogReader(path)) == []  # nothing written; the log still opens


class ListenerBug(Exception):
    """What a faulty callback of the embedding program raises."""


def test_a_listener_that_raises_cannot_stop_the_recording(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = session("spot_limit_partial_cancel")
    path = tmp_path / "s.jsonl"
    engine = Engine.open(path, fsync=Fsync.never())
    before: list[int] = []
    after: list[int] = []

    def faulty(event: Event, state: State) -> None:
        if state.last_seq == 2:
            raise ListenerBug("the program's callback is broken")

    engine.subscribe(lambda event, state: before.append(state.last_seq))
    engine.subscribe(faulty)
    engine.subscribe(lambda event, state: after.append(state.last_seq))
    with caplog.at_level("ERROR", logger="oms.engine"):
        for event in events[:4]:
            engine.record(event)
    engine.close()

    # The event the listener choked on and the ones after it are logged and applied.
    assert engine.state.last_seq == 4
    assert [event for _, event in LogReader(path)] == events[:4]
    assert state_hash(replay_file(path)) == state_hash(engine.state)
    # The listeners around the faulty one still saw every event.
    assert before == after == [1, 2, 3, 4]
    # The failure is counted, kept and reported with its traceback.
    assert engine.listener_errors == 1
    assert isinstance(engine.last_listener_error, ListenerBug)
    [record] = [r for r in caplog.records if r.name == "oms.engine"]
    assert record.levelname == "ERROR"
    assert record.exc_info is not None and record.exc_info[0] is ListenerBug
    assert "faulty" in record.getMessage() and "seq 2" in record.getMessage()


async def test_a_running_session_outlives_a_listener_that_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.jsonl"
    engine = Engine.open(path, fsync=Fsync.never())

    def always_fails(event: Event, state: State) -> None:
        raise ListenerBug(f"cannot handle seq {state.last_seq}")

    engine.subscribe(always_fails)
    send, receive = trio.open_memory_channel[Event](0)
    with caplog.at_level("ERROR", logger="oms.engine"), trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.run, receive)
            async with send:
                for n in range(1, 6):
                    await send.send(note(n))
    # run() drained the channel to the end instead of dying on the first event.
    engine.close()
    assert engine.state.last_seq == 5
    assert [event for _, event in LogReader(path)] == [note(n) for n in range(1, 6)]
    assert engine.listener_errors == 5
    assert len([r for r in caplog.records if r.name == "oms.engine"]) == 5


async def test_the_group_commit_timer_sleeps_until_the_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Events recorded directly (no channel): the timer syncs them max_delay after the first,
    # and a quiet engine does not wake at all (no periodic polling of the log).
    log = EventLog.open(
        tmp_path / "s.jsonl",
        fsync=Fsync.group(max_events=1000, max_delay=0.5),
        clock=trio.current_time,
    )
    engine = Engine(log)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.run)
        await trio.sleep(3600)
        assert log.syncs == 0
        engine.record(note(1))
        engine.record(note(2))
        await trio.sleep(0.4)
        assert log.syncs == 0
        await trio.sleep(0.2)
        assert log.syncs == 1
        before = trio.current_time()
        await trio.sleep(3600)  # nothing to sync: the clock jumps straight to the end
        assert log.syncs == 1 and trio.current_time() - before == pytest.approx(3600)
        nursery.cancel_scope.cancel()
    engine.close()


def test_record_news_records_only_news_and_applies_each_event_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = Engine()
    market = MarketInfo(
        source=Source.REST, recv_time_us=1, symbol="SOL_USDC", base_asset="SOL",
        quote_asset="USDC", market_type=MarketType.SPOT, tick_size=Decimal("0.01"),
        step_size=Decimal("0.01"), min_quantity=Decimal("0.01"),
    )  # fmt: skip
    calls = 0
    real_apply = engine_module.apply

    def counting_apply(state: State, event: Event) -> State:
        nonlocal calls
        calls += 1
        return real_apply(state, event)

    monkeypatch.setattr(engine_module, "apply", counting_apply)
    assert engine.record_news([market, market]) == [market]
    assert engine.state.last_seq == 1
    assert calls == 2  # one trial each; the kept trial is the state, not applied again
    assert engine.record_news([market]) == []


def _submitted(client_id: int) -> OrderSubmitted:
    return OrderSubmitted(
        source=Source.LOCAL, recv_time_us=1, client_id=client_id, symbol="SOL_USDC",
        side=Side.BID, order_type=OrderType.MARKET, quantity=Decimal("2"),
    )  # fmt: skip


def _answer(client_id: int, status: VenueStatus, executed: str) -> OrderObserved:
    return OrderObserved(
        source=Source.REST, recv_time_us=2, symbol="SOL_USDC", status=status, venue_id="V1",
        client_id=client_id, executed_quantity=Decimal(executed),
    )  # fmt: skip


def _fill(trade_id: int, quantity: str) -> OrderFilled:
    return OrderFilled(
        source=Source.WS, recv_time_us=3, symbol="SOL_USDC", venue_id="V1", client_id=7,
        trade_id=trade_id, side=Side.BID, quantity=Decimal(quantity), price=Decimal("100"),
        fee=Decimal(0), fee_asset="USDC", maker=False,
    )  # fmt: skip


async def test_waiting_for_an_order_to_be_answered_filled_and_done() -> None:
    engine = Engine()
    engine.record(_submitted(7))
    seen: list[str] = []

    async def waiter(name: str, wait: Callable[..., Awaitable[Order]]) -> None:
        order = await wait(client_id=7)
        seen.append(f"{name} {order.status.value} {order.filled_quantity.normalize()}")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, "answered", engine.wait_acknowledged)
            nursery.start_soon(waiter, "counted", engine.wait_fills_counted)
            nursery.start_soon(waiter, "done", engine.wait_done)
            await trio.testing.wait_all_tasks_blocked()
            assert seen == []
            # The REST answer says Filled before any fill: answered, not yet counted or done.
            engine.record(_answer(7, VenueStatus.FILLED, "2"))
            await trio.testing.wait_all_tasks_blocked()
            assert seen == ["answered Filled 0"]
            engine.record(_fill(1, "1.5"))
            await trio.testing.wait_all_tasks_blocked()
            assert seen == ["answered Filled 0"]
            engine.record(_fill(2, "0.5"))
    assert sorted(seen[1:]) == ["counted Filled 2", "done Filled 2"]
    # Already true: returns at once.
    with trio.fail_after(1):
        assert (await engine.wait_done(client_id=7)).filled_quantity == 2


async def test_a_wait_times_out_where_the_caller_says_and_a_bad_predicate_raises_there() -> None:
    engine = Engine()
    with trio.move_on_after(0.05) as scope:
        await engine.wait_acknowledged(client_id=99)
    assert scope.cancelled_caught
    assert engine._waiters == []  # a cancelled wait leaves nothing behind

    def broken(state: State) -> bool:
        if state.last_seq:
            raise KeyError("bug in the predicate")
        return False

    async with trio.open_nursery() as nursery:
        failures: list[BaseException] = []

        async def wait() -> None:
            try:
                await engine.wait_until(broken)
            except KeyError as exc:
                failures.append(exc)

        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        engine.record(_submitted(1))  # the writer is not disturbed
    assert engine.state.last_seq == 1 and len(failures) == 1


# --- an event logged now, applied after (`record_pending`, `settle`) ----------------------------

GOLDEN = sorted(path.stem for path in REPLAY_DIR.glob("*.jsonl"))


@given(
    name=st.sampled_from(GOLDEN),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["record", "pending", "news"]),
            st.sampled_from(["nothing", "read", "settle"]),
        ),
        min_size=1,
        max_size=400,
    ),
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_events_logged_first_and_applied_later_are_applied_in_log_order(
    tmp_path: Path, name: str, steps: list[tuple[str, str]]
) -> None:
    """Whatever mix of `record`, `record_pending` and `record_news` a session's events come
    through, and whatever reads the state in between, the listeners see the log's events in
    the log's order, each with the state after it, and the state is the log's replay."""
    events = session(name)
    path = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}.jsonl"
    engine = Engine.open(path, fsync=Fsync.never(), snapshots=None)
    seen: list[tuple[Event, int]] = []
    engine.subscribe(lambda event, state: seen.append((event, state.last_seq)))
    for event, (how, then) in zip(events, steps * len(events), strict=False):
        if how == "record":
            engine.record(event)
        elif how == "pending":
            engine.record_pending(event)
        else:
            engine.record_news([event])
        if then == "read":
            assert engine.state.last_seq == engine.log.last_seq  # type: ignore[union-attr]
        elif then == "settle":
            engine.settle()
    engine.close()
    logged = list(LogReader(path))
    assert [(event, seq) for seq, event in logged] == seen
    assert engine.state.last_seq == len(logged)
    assert state_hash(engine.state) == state_hash(replay(event for _, event in logged))


def test_a_pending_event_is_logged_at_once_and_applied_before_anything_else() -> None:
    events = session("spot_limit_partial_cancel")
    engine = Engine()
    seen: list[Event] = []
    engine.subscribe(lambda event, state: seen.append(event))
    engine.record(events[0])
    engine.record_pending(events[1])
    assert seen == [events[0]]  # not applied, no listener called
    engine.record(events[2])  # another record applies it first
    assert seen == events[:3]
    engine.record_pending(events[3])
    engine.record_pending(events[4])  # so does another pending one
    assert seen == events[:4]
    assert engine.state.last_seq == 5  # and a read of the state
    assert seen == events[:5]
    engine.settle()  # nothing left: nothing happens
    assert seen == events[:5]
    assert state_hash(engine.state) == state_hash(replay(events[:5]))


async def test_a_pending_event_is_applied_before_a_waiter_or_a_snapshot_sees_the_state(
    tmp_path: Path,
) -> None:
    events = session("spot_limit_partial_cancel")
    engine = Engine.open(tmp_path / "s.jsonl", fsync=Fsync.never())
    for event in events[:-1]:
        engine.record(event)
    engine.record_pending(events[-1])
    # A waiter checks the state when it starts: with the pending event applied.
    state = await engine.wait_until(lambda s: s.last_seq == len(events))
    assert state.last_seq == len(events)
    engine.record_pending(note(1))
    path = engine.write_snapshot()
    assert path is not None
    engine.close()
    reopened = Engine.open(tmp_path / "s.jsonl", fsync=Fsync.never())
    assert reopened.resumed_from == path
    assert reopened.replayed_at_open == 0
    assert state_hash(reopened.state) == state_hash(engine.state)
    reopened.close()


def test_another_thread_reads_the_state_before_a_pending_event_and_applies_nothing() -> None:
    events = session("spot_limit_partial_cancel")
    engine = Engine()
    threads_seen: list[str] = []
    engine.subscribe(lambda event, state: threads_seen.append(threading.current_thread().name))
    engine.record(events[0])
    engine.record_pending(events[1])
    read: list[State] = []
    other = threading.Thread(target=lambda: read.append(engine.state), name="scraper")
    other.start()
    other.join()
    assert read[0].last_seq == 1  # consistent, one event behind
    assert threads_seen == ["MainThread"]  # the scraper applied nothing
    assert engine.state.last_seq == 2  # this thread's read applies it
    assert threads_seen == ["MainThread", "MainThread"]


def test_closing_applies_a_pending_event(tmp_path: Path) -> None:
    events = session("spot_limit_partial_cancel")
    path = tmp_path / "s.jsonl"
    engine = Engine.open(path, fsync=Fsync.never(), snapshots=None)
    seen: list[Event] = []
    engine.subscribe(lambda event, state: seen.append(event))
    for event in events[:-1]:
        engine.record(event)
    engine.record_pending(events[-1])
    engine.close()
    assert seen == events
    assert state_hash(replay_file(path)) == state_hash(engine._state)


def _apply_failing_on(
    monkeypatch: pytest.MonkeyPatch, kind: type[Event]
) -> Callable[[State, Event], State]:
    """Make the engine's `apply` raise on events of `kind` (a stand-in for a reducer bug)."""
    real_apply = engine_module.apply

    def failing(state: State, event: Event) -> State:
        if isinstance(event, kind):
            raise ArithmeticError("injected")
        return real_apply(state, event)

    monkeypatch.setattr(engine_module, "apply", failing)
    return real_apply


def test_an_event_logged_ahead_that_cannot_be_applied_stops_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.jsonl"
    engine = Engine.open(path, fsync=Fsync.never(), snapshots=None)
    engine.record(note(1))
    _apply_failing_on(monkeypatch, OrderSubmitted)
    # `record` applies first: a failure logs nothing, and the engine goes on.
    with pytest.raises(ArithmeticError):
        engine.record(_submitted(7))
    assert engine.failed is None and engine.log is not None and engine.log.last_seq == 1
    # Logged ahead, the event is in the log before the failure shows.
    engine.record_pending(_submitted(7))
    assert engine.log.last_seq == 2
    with caplog.at_level(logging.CRITICAL, logger="oms.engine"):
        before = engine.state  # reading never raises: the last state applied
    assert before.last_seq == 1
    assert isinstance(engine.failed, EngineFailed)
    assert "seq 2 (OrderSubmitted)" in str(engine.failed)
    assert "records nothing more" in caplog.text
    # Nothing more is recorded: the state would drift from the log.
    for attempt in (
        lambda: engine.record(note(3)),
        lambda: engine.record_news([note(3)]),
        lambda: engine.record_pending(note(3)),
    ):
        with pytest.raises(EngineFailed, match="seq 2"):
            attempt()
    assert engine.log.last_seq == 2
    engine.close()  # closes the log all the same
    assert engine.log.closed
    assert [type(e) for _, e in LogReader(path)] == [MessageNotUnderstood, OrderSubmitted]


def test_the_first_settle_after_a_failed_apply_raises_it(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine()
    _apply_failing_on(monkeypatch, OrderSubmitted)
    engine.record_pending(_submitted(7))
    with pytest.raises(EngineFailed) as raised:
        engine.settle()
    assert isinstance(raised.value.__cause__, ArithmeticError)
    engine.settle()  # nothing pending any more
    assert engine.state.last_seq == 0
