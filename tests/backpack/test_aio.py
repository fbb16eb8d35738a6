"""The asyncio face: the same session from inside `asyncio.run`, against the local exchange.

The exchange runs in a thread of its own (its own trio run), so that the program under test
is a plain asyncio (or a plain trio) program.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from oms import Engine, OrderStatus, OrderType, Side, State, replay_events, state_hash
from oms.log import Fsync, LogReader
from oms.testing.harness import DAY_US, venue_clock
from oms_backpack.aio import AsyncioSession, open_session
from oms_backpack.session import BackpackSession, open_backpack_session
from oms_backpack.signing import Credentials
from oms_local_exchange import LocalExchange, ManualClock, open_local_exchange

SPOT = "SOL_USDC"
PERP = "SOL_USDC_PERP"


@contextmanager
def exchange_in_a_thread() -> Iterator[tuple[LocalExchange, ManualClock]]:
    """The local exchange (manual clock, seed 5) in its own thread's trio run."""
    clock = ManualClock(1_760_000_000_000_000)
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with open_local_exchange(clock=clock, seed=5, step_us=DAY_US) as exchange:
            box["exchange"] = exchange
            box["token"] = trio.lowlevel.current_trio_token()
            box["stop"] = stop = trio.Event()
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert ready.wait(20), "the exchange did not start"
    try:
        yield box["exchange"], clock
    finally:
        trio.from_thread.run_sync(box["stop"].set, trio_token=box["token"])
        thread.join(20)


def _options(exchange: LocalExchange, clock: ManualClock, **more: Any) -> dict[str, Any]:
    return {
        "rest_url": exchange.rest_url,
        "ws_url": exchange.ws_url,
        "symbols": [SPOT, PERP],
        "clock": venue_clock(clock),
        "poll_interval": 3600.0,
        **more,
    }


# The scenario, written once against either face (they have the same methods).
Session = BackpackSession | AsyncioSession


async def scenario(session: Session, wait_done: Callable[..., Awaitable[Any]]) -> None:
    resting = await session.submit(
        SPOT, Side.BID, OrderType.LIMIT, quantity=Decimal("2"), price=Decimal("130"), client_id=11
    )
    assert resting.status is OrderStatus.NEW
    await session.submit(PERP, Side.ASK, OrderType.MARKET, quantity=Decimal("1.5"), client_id=12)
    await wait_done(client_id=12)
    await session.cancel(SPOT, client_id=11)
    await wait_done(client_id=11)


def _record(path: Path) -> list[tuple[str, Any]]:
    """The recorded events without their receive times (the two runs share the exchange's
    manual clock, but a receive time counts microseconds of the wall clock).

    Compared as multisets: which of two sockets (a REST answer, a stream frame) is read first
    is the operating system's choice, in either face."""
    return [(type(event).__name__, _without_times(event)) for _, event in LogReader(path)]


def _without_times(event: Any) -> dict[str, Any]:
    return {
        name: getattr(event, name)
        for name in event.__struct_fields__
        if name not in ("recv_time_us", "raw")
    }


def _run(face: str, path: Path) -> tuple[list[Any], State]:
    """The scenario through `face` ("trio" or "asyncio"): its events and final state."""
    with exchange_in_a_thread() as (exchange, clock):
        # Stream messages wait 0.3 s before they are written, so that the REST answer to
        # each request is recorded before the stream's report of it in both runs.
        exchange.faults.private_delay = 0.3
        engine = Engine.open(path, fsync=Fsync.never())
        credentials = Credentials(exchange.credentials().api_secret)
        options = _options(exchange, clock)

        async def run_trio() -> None:
            async with open_backpack_session(engine, credentials, **options) as s:
                await scenario(s, engine.wait_done)

        async def run_asyncio() -> None:
            async with open_session(engine, credentials, **options) as s:
                await scenario(s, s.wait_done)

        if face == "trio":
            trio.run(run_trio)
        else:
            asyncio.run(run_asyncio())
        engine.close()
    replayed = replay_events(LogReader(path).events())
    assert state_hash(replayed) == state_hash(engine.state)
    return _record(path), engine.state


# What the scenario itself causes, one event each in either face. The rest (the venue's
# snapshots, a fill chased over REST when its stream report is late) depends on timing: a
# loaded machine can add an observation in one run and not the other, so those are compared
# through the outcome they lead to (`_outcome`), not one by one.
_CAUSED = ("OrderSubmitted", "OrderAccepted", "OrderFilled", "CancelRequested", "OrderCancelled")


def _outcome(state: State) -> list[tuple[Any, ...]]:
    orders = sorted(
        (o.client_id, o.status, o.filled_quantity, tuple(sorted(o.trade_ids)))
        for o in state.orders.values()
    )
    positions = sorted((p.symbol, p.net_quantity, p.entry_price) for p in state.positions.values())
    balances = sorted((b.asset, b.available, b.locked) for b in state.balances.values())
    return [*orders, *positions, *balances]


def test_the_same_scenario_under_trio_and_asyncio_records_the_same(tmp_path: Path) -> None:
    trio_events, trio_state = _run("trio", tmp_path / "trio.jsonl")
    asyncio_events, asyncio_state = _run("asyncio", tmp_path / "asyncio.jsonl")

    def caused(events: list[tuple[str, Any]]) -> tuple[list[str], set[tuple[Any, ...]]]:
        # The program's own commands exactly; the venue's reports of them as facts (a report
        # can come twice, by the stream and by REST, when the stream is late).
        commands = sorted(repr(e) for e in events if e[0] in ("OrderSubmitted", "CancelRequested"))
        reports = {
            (name, f.get("client_id"), f.get("venue_id"), f.get("trade_id"), f.get("quantity"))
            for name, f in events
            if name in _CAUSED and name not in ("OrderSubmitted", "CancelRequested")
        }
        return commands, reports

    commands, reports = caused(trio_events)
    assert len(commands) == 3 and len(reports) >= 3
    assert caused(asyncio_events) == (commands, reports)
    assert _outcome(asyncio_state) == _outcome(trio_state)


def test_cancelling_the_asyncio_task_shuts_down_and_cancels_open_orders(tmp_path: Path) -> None:
    with exchange_in_a_thread() as (exchange, clock):
        engine = Engine.open(tmp_path / "s.jsonl", fsync=Fsync.never())
        credentials = Credentials(exchange.credentials().api_secret)
        options = _options(exchange, clock, cancel_on_shutdown=True)
        placed = asyncio.Event()

        async def program() -> None:
            async with open_session(engine, credentials, **options) as s:
                await s.submit(
                    SPOT, Side.BID, OrderType.LIMIT, quantity=Decimal("1"), price=Decimal("130")
                )
                placed.set()
                await asyncio.sleep(60)

        async def main() -> None:
            task = asyncio.create_task(program())
            await placed.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 20)

        asyncio.run(main())
        engine.close()
        account = exchange.venue.accounts[exchange.api_key]
        assert [o.status for o in account.orders.values()] == ["Cancelled"]
        assert [o.status for o in engine.state.orders.values()] == [OrderStatus.CANCELLED]


def test_an_error_on_the_trio_side_reaches_the_asyncio_caller_as_one_exception(
    tmp_path: Path,
) -> None:
    with exchange_in_a_thread() as (exchange, clock):
        engine = Engine.open(tmp_path / "s.jsonl", fsync=Fsync.never())
        credentials = Credentials(exchange.credentials().api_secret)
        options = _options(exchange, clock)

        async def main() -> None:
            async with open_session(engine, credentials, **options) as s:
                await s.submit(SPOT, Side.BID, OrderType.MARKET, quantity=Decimal("1"))

                assert engine.log is not None
                engine.log.close()  # the next event the stream records cannot be written
                await s.reconcile()  # records through the closed log: fails on trio's side
                await asyncio.sleep(30)  # must not be reached, and must not hang

        with pytest.raises(ValueError, match="closed file"):
            asyncio.run(asyncio.wait_for(main(), 20))


def test_asyncio_programs_get_the_risk_check_and_the_kill_switch(tmp_path: Path) -> None:
    from oms import AccountLimits, Limits, RiskDenied

    with exchange_in_a_thread() as (exchange, clock):
        engine = Engine.open(tmp_path / "s.jsonl", fsync=Fsync.never())
        credentials = Credentials(exchange.credentials().api_secret)
        limits = Limits(account=AccountLimits(max_order_notional=Decimal("1000")))
        options = _options(exchange, clock, limits=limits)

        async def main() -> None:
            async with open_session(engine, credentials, **options) as s:
                with pytest.raises(RiskDenied, match="max_order_notional"):
                    await s.submit(
                        SPOT, Side.BID, OrderType.LIMIT, quantity=Decimal("10"),
                        price=Decimal("130"),
                    )  # fmt: skip
                await s.submit(
                    SPOT, Side.BID, OrderType.LIMIT, quantity=Decimal("2"), price=Decimal("130"),
                    client_id=21,
                )  # fmt: skip
                await s.trip("from asyncio")
                assert s.state.risk.tripped
                with pytest.raises(RiskDenied, match="kill_switch"):
                    await s.submit(
                        SPOT, Side.BID, OrderType.LIMIT, quantity=Decimal("1"),
                        price=Decimal("130"),
                    )  # fmt: skip
                assert await s.reset_kill_switch("done")

        asyncio.run(main())
        engine.close()
    order = engine.state.order(client_id=21)
    assert order is not None and order.status is OrderStatus.CANCELLED
    assert not engine.state.risk.tripped and engine.state.risk.denials == 2
