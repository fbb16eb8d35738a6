"""The local exchange's HTTP server on 127.0.0.1, mostly through our own `BackpackRest`.

Using our client for most calls proves the client and the exchange agree on paths,
instructions, signing and shapes. Raw `httpx` requests check what the client never sends:
bad signatures, stale timestamps, malformed bodies. The exchange runs on a `ManualClock`
started at the wall-clock time, so books do not move unless a test moves the clock; the
client reads the same clock, and the synthetic mid steps only once a day.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from oms.core.events import (
    BalanceObserved,
    FundingPaid,
    MarketInfo,
    OrderFilled,
    OrderObserved,
    OrderSubmitted,
    PositionObserved,
)
from oms.core.state import Market
from oms.core.values import MarketType, OrderType, Side, Source, TimeInForce, VenueStatus
from oms.testing.harness import venue_clock
from oms_backpack import endpoints
from oms_backpack.rest import BackpackRest, NotFound, VenueError
from oms_backpack.signing import Credentials
from tests.helpers import local_exchange_and_rest, signed_request

D = Decimal
SOL = Market(
    symbol="SOL_USDC", base_asset="SOL", quote_asset="USDC", market_type=MarketType.SPOT,
    tick_size=D("0.01"), step_size=D("0.01"), min_quantity=D("0.01"),
)  # fmt: skip
SOL_PERP = Market(
    symbol="SOL_USDC_PERP", base_asset="SOL", quote_asset="USDC", market_type=MarketType.PERP,
    tick_size=D("0.01"), step_size=D("0.01"), min_quantity=D("0.01"),
)  # fmt: skip


def order(  # noqa: PLR0917 (reads as the order line it builds)
    market: Market,
    client_id: int,
    side: Side,
    order_type: OrderType,
    quantity: str,
    price: str | None = None,
    /,
    **kwargs: Any,
) -> endpoints.RequestSpec:
    command = OrderSubmitted(
        source=Source.LOCAL,
        recv_time_us=0,
        client_id=client_id,
        symbol=market.symbol,
        side=side,
        order_type=order_type,
        quantity=D(quantity),
        price=None if price is None else D(price),
        **kwargs,
    )
    return endpoints.execute_order(command, market)


# --- our client against the exchange -----------------------------------------------------------


async def test_orders_round_trip_through_our_client() -> None:
    async with local_exchange_and_rest() as (exchange, _, rest):
        markets = await rest.markets()
        assert {m.symbol for m in markets if isinstance(m, MarketInfo)} == {
            "SOL_USDC", "ETH_USDC", "SOL_USDC_PERP", "ETH_USDC_PERP",
        }  # fmt: skip
        placed = await rest.call(order(SOL, 11, Side.BID, OrderType.LIMIT, "2", "149"))
        assert placed["status"] == "New"
        assert isinstance(placed["createdAt"], int) and isinstance(placed["id"], str)
        assert placed["clientId"] == 11 and placed["price"] == "149"
        found = await rest.call(endpoints.order_query("SOL_USDC", client_id=11))
        assert found["id"] == placed["id"]
        assert [o.venue_id for o in await rest.open_orders() if isinstance(o, OrderObserved)] == [
            placed["id"]
        ]
        capital = await rest.capital()
        assert isinstance(capital, BalanceObserved)
        usdc = next(b for b in capital.balances if b.asset == "USDC")
        assert (usdc.available, usdc.locked) == (D(1_000_000) - 298, D(298))

        cancelled = await rest.call(endpoints.cancel_order("SOL_USDC", client_id=11))
        assert cancelled["status"] == "Cancelled"
        with pytest.raises(NotFound) as missing:
            await rest.call(endpoints.order_query("SOL_USDC", client_id=11))
        assert (missing.value.status, missing.value.code, missing.value.message) == (
            404,
            "RESOURCE_NOT_FOUND",
            "Not Found",
        )
        with pytest.raises(NotFound):
            await rest.call(endpoints.cancel_order("SOL_USDC", venue_id=placed["id"]))

        batch = endpoints.execute_batch(
            [
                (_submitted(12, Side.ASK, "1", "151"), SOL),
                (_submitted(11, Side.ASK, "1", "152"), SOL),  # 11 was used already
                (_submitted(13, Side.ASK, "1", "153"), SOL),
            ]
        )
        results = await rest.call(batch)
        assert [r["operation"] for r in results] == ["Ok", "Err", "Ok"]
        assert results[1] == {
            "operation": "Err",
            "code": "INVALID_ORDER",
            "message": "Order with client ID already exists: 11",
        }
        swept = await rest.call(endpoints.cancel_all("SOL_USDC"))
        assert sorted(o["clientId"] for o in swept) == [12, 13]
        assert all(o["status"] == "Cancelled" for o in swept)
        assert exchange.venue.open_orders(exchange.api_key) == []


def _submitted(client_id: int, side: Side, quantity: str, price: str) -> OrderSubmitted:
    return OrderSubmitted(
        source=Source.LOCAL,
        recv_time_us=0,
        client_id=client_id,
        symbol="SOL_USDC",
        side=side,
        order_type=OrderType.LIMIT,
        quantity=D(quantity),
        price=D(price),
    )


async def test_order_and_fill_history_filters() -> None:
    async with local_exchange_and_rest() as (_, clock, rest):
        first = await rest.call(order(SOL, 1, Side.BID, OrderType.MARKET, "15"))
        clock.advance(2)
        second = await rest.call(
            order(SOL, 2, Side.ASK, OrderType.LIMIT, "1", "140", time_in_force=TimeInForce.IOC)
        )
        third = await rest.call(order(SOL, 3, Side.BID, OrderType.LIMIT, "1", "120"))
        history = await rest.order_history()
        assert [(o.venue_id, o.status) for o in history if isinstance(o, OrderObserved)] == [
            (first["id"], VenueStatus.FILLED),
            (second["id"], VenueStatus.FILLED),
            (third["id"], VenueStatus.NEW),
        ]
        raw = await rest.call(endpoints.order_history(limit=1, offset=1, sort_direction="Desc"))
        assert [item["id"] for item in raw] == [second["id"]]
        assert raw[0]["createdAt"].count(":") == 2 and "T" in raw[0]["createdAt"]  # naive ISO
        only = await rest.call(endpoints.order_history(venue_id=first["id"]))
        assert [item["id"] for item in only] == [first["id"]]

        # 15 bought from 10 at 150.01 and 5 at 150.03; the IOC sold 1 at 149.99.
        fills = await rest.fill_history()
        assert [
            (f.venue_id, f.quantity, f.price, f.fee_asset)
            for f in fills
            if isinstance(f, OrderFilled)
        ] == [
            (first["id"], D(10), D("150.01"), "SOL"),
            (first["id"], D(5), D("150.03"), "SOL"),
            (second["id"], D(1), D("149.99"), "USDC"),
        ]
        by_order = await rest.fill_history(venue_id=second["id"])
        assert len(by_order) == 1
        later_ms = clock.now_us // 1000
        assert len(await rest.fill_history(from_ms=later_ms)) == 1
        assert len(await rest.fill_history(to_ms=later_ms - 1)) == 2
        raw_fills = await rest.call(
            endpoints.fill_history(limit=2, offset=1, sort_direction="Desc")
        )
        assert [(f["quantity"], f["clientId"]) for f in raw_fills] == [("5", "1"), ("10", "1")]
        assert isinstance(raw_fills[0]["tradeId"], int)
        assert await rest.fill_history(symbol="ETH_USDC") == []


async def test_perp_positions_funding_account_and_collateral() -> None:
    async with local_exchange_and_rest() as (exchange, clock, rest):
        await rest.call(order(SOL_PERP, 1, Side.BID, OrderType.MARKET, "2"))
        (position,) = await rest.positions()
        assert isinstance(position, PositionObserved)
        assert (position.net_quantity, position.entry_price, position.mark_price) == (
            D(2),
            D("150.01"),
            D(150),
        )
        assert position.unrealized_pnl == D("-0.02")
        # Cross the next hourly funding boundary.
        now_ms = clock.now_us // 1000
        clock.now_us = ((now_ms // 3_600_000 + 1) * 3_600_000 + 1) * 1000
        funding = await rest.funding_history()
        assert len(funding) == 1 and isinstance(funding[0], FundingPaid)
        rate = funding[0].rate
        assert rate is not None
        mark = exchange.venue.mark_price("SOL_USDC_PERP")
        assert funding[0].amount == -(2 * mark * rate)

        settings = await rest.call(endpoints.account())
        assert settings["leverageLimit"] == "10" and settings["futuresTakerFee"] == "5"
        assert (
            await rest.call(endpoints.update_account(leverage_limit=D(5))) is None
        )  # 200, no body
        assert (await rest.call(endpoints.account()))["leverageLimit"] == "5"
        collateral = await rest.call(endpoints.collateral())
        assert {"netEquity", "netEquityAvailable", "collateral", "pnlUnrealized"} <= set(collateral)
        assert D(collateral["netEquityAvailable"]) < D(collateral["netEquity"])


async def test_public_market_data() -> None:
    async with local_exchange_and_rest() as (_, clock, rest):
        assert isinstance(await rest.call(endpoints.server_time()), int)
        assert await rest.call(endpoints.server_time()) == clock.now_us // 1000
        depth = await rest.call(endpoints.depth("SOL_USDC", 5))
        assert depth["asks"][0] == ["150.01", "10"] and depth["bids"][-1] == ["149.99", "10"]
        assert len(depth["asks"]) == 5 and isinstance(depth["lastUpdateId"], str)
        ticker = await rest.call(endpoints.ticker("SOL_USDC"))
        assert ticker["symbol"] == "SOL_USDC" and ticker["trades"] == "0"
        (mark,) = await rest.call(endpoints.mark_prices("ETH_USDC_PERP"))
        assert mark["markPrice"] == "3000" and isinstance(mark["nextFundingTimestamp"], int)


# --- authentication and error shapes -----------------------------------------------------------


async def test_signatures_and_timestamps_are_checked_like_the_venue() -> None:
    async with (
        local_exchange_and_rest() as (exchange, clock, _),
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):
        own = Credentials(exchange.credentials().api_secret)
        now = clock.now_us // 1000

        async def get(request: dict[str, Any], path: str = "/api/v1/capital") -> httpx.Response:
            return await http.get(path, **request)

        good = await get(signed_request(own, "GET", "/api/v1/capital", "balanceQuery", now))
        assert good.status_code == 200 and "USDC" in good.json()

        impostor = Credentials("sKmC5939f6W9/viyhwyaNHa0f7j5wSMvZsysW5BB9L4=")
        forged = signed_request(impostor, "GET", "/api/v1/capital", "balanceQuery", now)
        forged["headers"]["X-API-Key"] = own.api_key
        bad = await get(forged)
        assert (bad.status_code, bad.json()) == (
            401,
            {"code": "INVALID_CLIENT_REQUEST", "message": "Invalid signature"},
        )
        wrong_instruction = await get(
            signed_request(own, "GET", "/api/v1/account", "balanceQuery", now), "/api/v1/account"
        )
        assert wrong_instruction.json()["message"] == "Invalid signature"

        expired = await get(
            signed_request(own, "GET", "/api/v1/capital", "balanceQuery", now - 6000)
        )
        assert (expired.status_code, expired.json()) == (
            401,
            {"code": "INVALID_CLIENT_REQUEST", "message": "Request has expired"},
        )
        # A wider window (up to 60000) lets the same timestamp through.
        wide = signed_request(
            own, "GET", "/api/v1/capital", "balanceQuery", now - 6000, window=10000
        )
        assert (await get(wide)).status_code == 200

        missing = await http.get("/api/v1/capital")
        assert missing.status_code == 401
        assert set(missing.json()) == {"code", "message"}

        unknown = await get(signed_request(impostor, "GET", "/api/v1/capital", "balanceQuery", now))
        assert unknown.status_code == 401 and unknown.json()["code"] == "UNAUTHORIZED"

        # The body is what is signed: changing it after signing breaks the signature.
        body = {"orderType": "Limit", "price": "120", "quantity": "1", "side": "Bid",
                "symbol": "SOL_USDC"}  # fmt: skip
        tampered = signed_request(own, "POST", "/api/v1/order", "orderExecute", now, body=body)
        tampered["content"] = tampered["content"].replace('"1"', '"2"')
        response = await http.post("/api/v1/order", **tampered)
        assert response.json()["message"] == "Invalid signature"
        assert exchange.venue.accounts[exchange.api_key].orders == {}


async def test_our_client_resyncs_after_an_expired_timestamp() -> None:
    async with local_exchange_and_rest() as (exchange, clock, _):
        late = BackpackRest(
            exchange.rest_url,
            Credentials(exchange.credentials().api_secret),
            clock=venue_clock(clock, behind_ms=20_000),
        )
        async with late:
            capital = await late.capital()
        assert isinstance(capital, BalanceObserved)
        assert list(exchange.requests) == [
            ("GET", "/api/v1/capital", 401),
            ("GET", "/api/v1/time", 200),
            ("GET", "/api/v1/capital", 200),
        ]


async def test_unknown_paths_and_unparseable_payloads() -> None:
    async with (
        local_exchange_and_rest() as (exchange, clock, _),
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):
        own = Credentials(exchange.credentials().api_secret)
        now = clock.now_us // 1000
        nowhere = await http.get("/api/v1/nowhere")
        assert (nowhere.status_code, nowhere.json()) == (
            404,
            {"code": "RESOURCE_NOT_FOUND", "message": "Not Found"},
        )

        request = signed_request(own, "POST", "/api/v1/order", "orderExecute", now, body={})
        request["content"] = '{"symbol": "SOL_USDC",'
        broken = await http.post("/api/v1/order", **request)
        assert broken.status_code == 400
        assert broken.headers["content-type"].startswith("text/plain")
        assert broken.text.startswith("Bad Request parse request payload error: ")

        body = {"symbol": "DOGE_USDC", "side": "Bid", "orderType": "Market", "quantity": "1"}
        unknown = await http.post(
            "/api/v1/order",
            **signed_request(own, "POST", "/api/v1/order", "orderExecute", now, body=body),
        )
        assert unknown.status_code == 400
        assert 'failed to parse "MarketSymbol": Invalid market symbol' in unknown.text

        cancel_all = await http.request(
            "DELETE",
            "/api/v1/orders",
            **signed_request(own, "DELETE", "/api/v1/orders", "orderCancelAll", now, body={}),
        )
        assert (cancel_all.status_code, cancel_all.text) == (
            400,
            "Bad Request parse request payload error: missing field `symbol` "
            '(occurred while parsing "OrderCancelAllPayload")',
        )
        neither = {"symbol": "SOL_USDC"}
        response = await http.request(
            "DELETE",
            "/api/v1/order",
            **signed_request(own, "DELETE", "/api/v1/order", "orderCancel", now, body=neither),
        )
        assert response.json() == {
            "code": "INVALID_CLIENT_REQUEST",
            "message": "Must specify either `clientId` or `orderId`",
        }


async def test_post_only_rejection_reaches_our_client_as_a_venue_error() -> None:
    async with local_exchange_and_rest() as (_, _clock, rest):
        spec = order(SOL, 5, Side.BID, OrderType.LIMIT_MAKER, "1", "150.01")
        with pytest.raises(VenueError) as refused:
            await rest.call(spec)
        assert (refused.value.status, refused.value.code) == (400, "INVALID_ORDER")
        assert "Order would immediately match and take" in refused.value.message
