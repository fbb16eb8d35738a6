"""The risk check and the kill switch in a session against the local exchange (127.0.0.1):
denials recorded and raised, a trip that cancels every open order on spot and perps through
failing cancel requests, and a restart on the same log that comes back tripped."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import pytest
import trio

from oms.core.errors import ProgramError, RiskDenied
from oms.core.events import KillSwitchReset, KillSwitchTripped, OrderDenied, OrderSubmitted
from oms.core.risk import AccountLimits, Limits, SymbolLimits
from oms.core.state import AnomalyKind, Order
from oms.core.values import OrderStatus, OrderType, Side, Source
from oms.log import LogReader
from oms.testing.books import PERP, SPOT
from oms.testing.harness import Harness, open_session
from oms.testing.waiting import wait_for
from oms_local_exchange import open_local_exchange

D = Decimal
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
LIMIT = 40  # seconds, for any one scenario


def away(h: Harness, symbol: str, factor: str) -> Decimal:
    """A price `factor` times the mid, on the tick: far enough not to fill, inside the band."""
    return (h.mid(symbol) * D(factor)).quantize(D("0.01"), rounding=ROUND_DOWN)


async def rest_orders(h: Harness) -> list[Order]:
    placed = []
    for symbol, side, quantity, factor in (
        (SPOT, Side.BID, "1", "0.9"),
        (SPOT, Side.ASK, "1", "1.1"),
        (PERP, Side.BID, "1", "0.9"),
        (PERP, Side.ASK, "2", "1.1"),
    ):
        price = away(h, symbol, factor)
        placed.append(
            await h.submit(symbol, side, OrderType.LIMIT_MAKER, quantity=quantity, price=price)
        )
    assert all(o.status is OrderStatus.NEW for o in placed)
    return placed


def events_of(path: Path, kind: type) -> list[object]:
    return [e for e in LogReader(path).events() if isinstance(e, kind)]


async def test_a_denied_order_is_recorded_raised_and_never_sent(tmp_path: Path) -> None:
    path = tmp_path / "deny.jsonl"
    limits = Limits(
        account=AccountLimits(max_open_orders=3),
        symbols={PERP: SymbolLimits(max_order_quantity=D("2"))},
    )
    with trio.fail_after(LIMIT):
        async with (
            open_local_exchange(seed=7, step_us=250_000, tick_interval=0.05) as exchange,
            open_session(exchange, path, limits=limits) as h,
        ):
            with pytest.raises(RiskDenied) as caught:
                await h.submit(PERP, Side.BID, OrderType.MARKET, quantity="2.5")
            assert isinstance(caught.value, ProgramError)
            assert (caught.value.limit, caught.value.scope) == ("max_order_quantity", PERP)
            denied_id = caught.value.client_id
            assert h.state.order(client_id=denied_id) is None  # no order, nothing sent
            venue_account = exchange.venue.accounts[exchange.api_key]
            assert denied_id not in venue_account.client_ids  # the exchange never saw it
            for price_factor in ("0.9", "0.91", "0.92"):
                await h.submit(SPOT, Side.BID, OrderType.LIMIT_MAKER, quantity="1",
                               price=away(h, SPOT, price_factor))  # fmt: skip
            with pytest.raises(RiskDenied, match="max_open_orders"):
                await h.submit(SPOT, Side.BID, OrderType.LIMIT_MAKER, quantity="1",
                               price=away(h, SPOT, "0.93"))  # fmt: skip
            assert h.state.risk.denials == 2
            await h.finish()
    denials = events_of(path, OrderDenied)
    assert [d.limit for d in denials] == ["max_order_quantity", "max_open_orders"]  # type: ignore[attr-defined]
    assert denied_id not in {e.client_id for e in events_of(path, OrderSubmitted)}  # type: ignore[attr-defined]


async def test_a_trip_cancels_everything_through_failing_cancels_and_outlives_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kill.jsonl"
    with trio.fail_after(LIMIT):
        async with open_local_exchange(seed=7, step_us=250_000, tick_interval=0.05) as exchange:
            account = exchange.venue.accounts
            async with open_session(exchange, path) as h:
                await rest_orders(h)
                # a position to close later with a reduce-only order
                bought = await h.submit(PERP, Side.BID, OrderType.MARKET, quantity="1")
                await h.until(bought, lambda o: o.status is OrderStatus.FILLED, "the perp buy")
                assert len(exchange.venue.open_orders(exchange.api_key)) == 4
                # Cancel-all fails: first past the REST client's own retries (five 503s), then
                # three refusals; so does the first look at the open orders. Round 1 cancels
                # nothing, round 2 finds both symbols still open and fails again, round 3 ends.
                h.faults.fail_http(503, method="DELETE", path="/api/v1/orders", count=5)
                h.faults.fail_http(400, method="DELETE", path="/api/v1/orders", count=3)
                h.faults.fail_http(400, method="GET", path="/api/v1/orders", count=1)
                await h.session.trip("test: stop everything")
                assert exchange.venue.open_orders(exchange.api_key) == []
                failed = [f for f in h.faults.http_failures if f[0] == "DELETE"]
                assert len(failed) == 8
                assert h.session.kill_confirmations == 1
                with pytest.raises(RiskDenied, match="kill_switch"):
                    await h.submit(SPOT, Side.BID, OrderType.MARKET, quantity="1")
                await h.finish(allowed={AnomalyKind.FORBIDDEN_TRANSITION})
            assert account  # the exchange lives on for the restart
            # The same log, a new engine and session: still tripped.
            async with open_session(exchange, path) as h:
                assert h.state.risk.tripped
                assert h.state.risk.trip_reason == "test: stop everything"
                with pytest.raises(RiskDenied, match="kill_switch"):
                    await h.submit(PERP, Side.BID, OrderType.MARKET, quantity="1")
                # a position can always be closed
                closed = await h.submit(
                    PERP, Side.ASK, OrderType.MARKET, quantity="1", reduce_only=True
                )
                await h.until(closed, lambda o: o.status is OrderStatus.FILLED, "the close")
                assert h.session.reset_kill_switch("checked by hand")
                assert not h.session.reset_kill_switch("again")  # not tripped: nothing recorded
                again = await h.submit(SPOT, Side.BID, OrderType.MARKET, quantity="1")
                await h.until(again, lambda o: o.status is OrderStatus.FILLED, "a new order")
                await h.finish(allowed={AnomalyKind.FORBIDDEN_TRANSITION})
    assert len(events_of(path, KillSwitchTripped)) == 1
    assert len(events_of(path, KillSwitchReset)) == 1


async def test_the_account_loss_limit_trips_the_switch(tmp_path: Path) -> None:
    path = tmp_path / "loss.jsonl"
    # Any loss at all: the fee of one market buy breaks it.
    limits = Limits(account=AccountLimits(max_loss=D("0")))
    with trio.fail_after(LIMIT):
        async with (
            open_local_exchange(seed=7, step_us=250_000, tick_interval=0.05) as exchange,
            open_session(exchange, path, limits=limits) as h,
        ):
            resting = await h.submit(
                SPOT, Side.BID, OrderType.LIMIT_MAKER, quantity="1", price=away(h, SPOT, "0.9")
            )
            bought = await h.submit(PERP, Side.BID, OrderType.MARKET, quantity="1")
            await h.until(bought, lambda o: o.status is OrderStatus.FILLED, "the perp buy")
            await h.engine.wait_until(lambda s: s.risk.tripped)
            assert h.state.risk.trip_by == "limit"
            await h.until(resting, lambda o: o.status is OrderStatus.CANCELLED, "the cancel")
            await h.finish(allowed={AnomalyKind.FORBIDDEN_TRANSITION})


async def test_a_session_on_a_tripped_log_cancels_what_was_left_open(tmp_path: Path) -> None:
    path = tmp_path / "left.jsonl"
    with trio.fail_after(LIMIT):
        async with open_local_exchange(seed=7, step_us=250_000, tick_interval=0.05) as exchange:
            async with open_session(exchange, path) as h:
                await rest_orders(h)
                # Tripped by a program that recorded it and stopped before cancelling.
                h.engine.record(
                    KillSwitchTripped(
                        source=Source.LOCAL, recv_time_us=1, reason="stopped early", by="program"
                    )
                )
                await h.finish(cancel=False)
            assert len(exchange.venue.open_orders(exchange.api_key)) == 4
            async with open_session(exchange, path) as h:
                await wait_for(
                    lambda: h.session.kill_confirmations == 1, "the guard's cancels confirmed"
                )
                assert exchange.venue.open_orders(exchange.api_key) == []
                await h.finish(allowed={AnomalyKind.FORBIDDEN_TRANSITION})
