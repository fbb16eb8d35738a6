"""Every fault knob of the local exchange, seen from a client on 127.0.0.1.

Write order on the server side is read from `exchange.wire_log` (what went out, in order), not
from timing: two sockets give no order guarantee at the client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
import trio
import trio_websocket

from oms.core.events import BalanceObserved, OrderAccepted, OrderSubmitted
from oms.core.state import Market
from oms.core.values import MarketType, OrderType, Side, Source, TimeInForce
from oms.testing.harness import venue_clock
from oms.testing.waiting import wait_for
from oms_backpack import endpoints
from oms_backpack.rest import OutcomeUnknown
from oms_backpack.signing import Credentials
from oms_backpack.ws import BackpackStream
from oms_local_exchange import LocalExchange, ManualClock
from tests.helpers import Inbox, local_exchange_and_rest, subscribe

D = Decimal
SOL = Market(
    symbol="SOL_USDC", base_asset="SOL", quote_asset="USDC", market_type=MarketType.SPOT,
    tick_size=D("0.01"), step_size=D("0.01"), min_quantity=D("0.01"),
)  # fmt: skip


def ioc(client_id: int, side: Side = Side.BID) -> endpoints.RequestSpec:
    """15 SOL IOC at the touch (150.01 to buy, 149.99 to sell): takes the 10 there and expires
    the rest. Each side's touch is good for one such order: the books hold still."""
    return endpoints.execute_order(
        OrderSubmitted(
            source=Source.LOCAL,
            recv_time_us=0,
            client_id=client_id,
            symbol="SOL_USDC",
            side=side,
            order_type=OrderType.LIMIT,
            quantity=D(15),
            price=D("150.01") if side is Side.BID else D("149.99"),
            time_in_force=TimeInForce.IOC,
        ),
        SOL,
    )


def resting_bid(client_id: int) -> endpoints.RequestSpec:
    return endpoints.execute_order(
        OrderSubmitted(
            source=Source.LOCAL,
            recv_time_us=0,
            client_id=client_id,
            symbol="SOL_USDC",
            side=Side.BID,
            order_type=OrderType.LIMIT,
            quantity=D(1),
            price=D(140),
        ),
        SOL,
    )


@asynccontextmanager
async def subscribed(
    exchange: LocalExchange, clock: ManualClock
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    async with trio_websocket.open_websocket_url(exchange.ws_url) as ws:
        await subscribe(ws, exchange, clock, ["account.orderUpdate"])
        await wait_for(lambda: exchange.subscribers() == 1, "the subscription")
        yield ws


async def updates(ws: trio_websocket.WebSocketConnection, count: int) -> list[tuple[str, Any]]:
    """The next `count` order updates as (event, client id)."""
    out = []
    with trio.fail_after(5):
        for _ in range(count):
            data: dict[str, Any] = json.loads(await ws.get_message())["data"]
            out.append((data["e"], data.get("c")))
    return out


# --- WebSocket faults ------------------------------------------------------------------------


async def test_dropped_connections_make_our_stream_reconnect() -> None:
    async with local_exchange_and_rest() as (exchange, clock, rest):
        stream = BackpackStream(
            exchange.ws_url,
            Credentials(exchange.credentials().api_secret),
            backoff_initial=0.01,
            backoff_max=0.02,
            clock=venue_clock(clock),
        )
        inbox = Inbox()
        async with trio.open_nursery() as nursery:
            await nursery.start(stream.run, inbox)
            await wait_for(
                lambda: exchange.connections == 1 and exchange.subscribers() == 1, "the stream"
            )
            assert exchange.faults.drop_websockets() == 1
            await wait_for(
                lambda: stream.connects == 2 and exchange.subscribers() == 1, "a reconnect"
            )
            assert exchange.faults.drop_websockets(abrupt=True) == 1
            await wait_for(
                lambda: stream.connects == 3 and exchange.subscribers() == 1, "a second reconnect"
            )
            await rest.call(resting_bid(77))
            with trio.fail_after(5):
                event = await inbox.receive()
            assert isinstance(event, OrderAccepted) and event.client_id == 77
            nursery.cancel_scope.cancel()


async def test_dropped_and_duplicated_private_messages() -> None:
    async with (
        local_exchange_and_rest() as (exchange, clock, rest),
        subscribed(exchange, clock) as ws,
    ):
        exchange.faults.drop_private(event="orderFill")
        await rest.call(ioc(1))
        assert await updates(ws, 2) == [("orderAccepted", 1), ("orderExpired", 1)]
        assert [m.data["e"] for m in exchange.faults.dropped] == ["orderFill"]

        exchange.faults.duplicate_private(client_id=2, count=None)
        await rest.call(ioc(2, Side.ASK))
        await rest.call(resting_bid(3))
        assert await updates(ws, 7) == [
            ("orderAccepted", 2),
            ("orderAccepted", 2),
            ("orderFill", 2),
            ("orderFill", 2),
            ("orderExpired", 2),
            ("orderExpired", 2),
            ("orderAccepted", 3),
        ]


async def test_held_private_messages_arrive_out_of_order() -> None:
    async with (
        local_exchange_and_rest() as (exchange, clock, rest),
        subscribed(exchange, clock) as ws,
    ):
        exchange.faults.hold_private(event="orderFill")
        await rest.call(ioc(1))
        assert await updates(ws, 2) == [("orderAccepted", 1), ("orderExpired", 1)]
        assert [m.data["e"] for m in exchange.faults.held] == ["orderFill"]
        assert exchange.faults.release_held() == 1
        assert await updates(ws, 1) == [("orderFill", 1)]

        # Released by itself after one later message.
        exchange.faults.hold_private(event="orderAccepted", client_id=2, release_after=1)
        await rest.call(ioc(2, Side.ASK))
        assert await updates(ws, 3) == [
            ("orderFill", 2),
            ("orderAccepted", 2),
            ("orderExpired", 2),
        ]


async def test_the_fill_can_be_written_before_the_rest_answer() -> None:
    async with (
        local_exchange_and_rest() as (exchange, clock, rest),
        subscribed(exchange, clock) as ws,
    ):
        exchange.faults.private_delay = 0.2
        await rest.call(ioc(1))
        await updates(ws, 3)
        # Delayed stream, no coordination: the answer goes out first.
        assert [kind for kind, _ in exchange.wire_log][-4:] == ["http", "ws", "ws", "ws"]

        exchange.faults.ws_before_rest = True
        await rest.call(ioc(2, Side.ASK))
        await updates(ws, 3)
        assert list(exchange.wire_log)[-4:] == [
            ("ws", "account.orderUpdate orderAccepted"),
            ("ws", "account.orderUpdate orderFill"),
            ("ws", "account.orderUpdate orderExpired"),
            ("http", "POST /api/v1/order 200"),
        ]


# --- HTTP faults ---------------------------------------------------------------------------------


async def test_rate_limited_requests_are_retried_by_our_client() -> None:
    async with local_exchange_and_rest() as (exchange, _, rest):
        exchange.faults.fail_http(429, path="/api/v1/capital", count=2)
        assert isinstance(await rest.capital(), BalanceObserved)
        assert list(exchange.requests) == [("GET", "/api/v1/capital", s) for s in (429, 429, 200)]
        body = await _raw_status(exchange, 429, "/api/v1/markets")
        assert body == {"code": "TOO_MANY_REQUESTS", "message": "Too many requests"}


async def _raw_status(exchange: LocalExchange, status: int, path: str) -> Any:
    import httpx

    exchange.faults.fail_http(status, method="GET", path=path, skip=1)
    async with httpx.AsyncClient(base_url=exchange.rest_url) as http:
        first = await http.get(path)
        second = await http.get(path)
    assert (first.status_code, second.status_code) == (200, status)
    return second.json()


async def test_a_503_may_hide_an_order_that_was_placed() -> None:
    async with (
        local_exchange_and_rest() as (exchange, clock, rest),
        subscribed(exchange, clock) as ws,
    ):
        exchange.faults.fail_http(503, method="POST", path="/api/v1/order", after_execute=True)
        with pytest.raises(OutcomeUnknown):
            await rest.call(resting_bid(5))
        # Placed all the same: the venue has it and the stream says so.
        (placed,) = exchange.venue.open_orders(exchange.api_key)
        assert (placed.client_id, placed.status) == (5, "New")
        assert await updates(ws, 1) == [("orderAccepted", 5)]
        assert exchange.requests[-1] == ("POST", "/api/v1/order", 503)

        # Without after_execute the request never reaches the venue.
        exchange.faults.fail_http(503, method="POST", path="/api/v1/order")
        with pytest.raises(OutcomeUnknown):
            await rest.call(resting_bid(6))
        assert [o.client_id for o in exchange.venue.open_orders(exchange.api_key)] == [5]


async def test_a_skewed_server_clock() -> None:
    async with local_exchange_and_rest() as (exchange, clock, rest):
        exchange.faults.clock_skew_ms = 30_000
        assert await rest.call(endpoints.server_time()) == clock.now_us // 1000 + 30_000
        capital = await rest.capital()  # rejected as expired once, then resynced
        assert isinstance(capital, BalanceObserved)
        assert rest.clock.offset_ms == 30_000
        assert [status for _, path, status in exchange.requests if path == "/api/v1/capital"] == [
            401,
            200,
        ]
