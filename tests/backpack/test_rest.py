"""Backpack REST client: signing on the wire, error mapping, retries, rate limit, pagination.

Most tests serve the client from `httpx.MockTransport` handlers that inspect each request;
one runs a real HTTP server on 127.0.0.1. Signatures are checked independently: the test
rebuilds the signing string from what was actually sent and verifies it with the public key.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import random
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import nacl.signing
import pytest
import trio

from oms.core.events import (
    BalanceObserved,
    MarketInfo,
    MessageNotUnderstood,
    OrderFilled,
    OrderSubmitted,
)
from oms.core.state import Market
from oms.core.values import MarketType, OrderType, Side, Source, TimeInForce
from oms_backpack import endpoints
from oms_backpack import rest as rest_module
from oms_backpack.clock import VenueClock
from oms_backpack.rest import (
    BackpackRest,
    BadResponse,
    ClockError,
    MissingCredentials,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    VenueError,
    VenueUnavailable,
)
from oms_backpack.signing import Credentials

# Hummingbot's literal test secret and its public key (fact sheet §1.6).
SECRET = "sKmC5939f6W9/viyhwyaNHa0f7j5wSMvZsysW5BB9L4="
API_KEY = "1dCOvaOfUlYl8m8gNNUUA2cs9VZyaSD9vuwNgi944uM="
URL = "https://api.backpack.test"
SOL = Market(
    symbol="SOL_USDC", base_asset="SOL", quote_asset="USDC", market_type=MarketType.SPOT,
    tick_size=Decimal("0.01"), step_size=Decimal("0.01"), min_quantity=Decimal("0.01"),
)  # fmt: skip
ORDER_OK = {
    "clientId": 123, "createdAt": 1757621440699, "executedQuantity": "0",
    "executedQuoteQuantity": "0", "id": "8284661092", "orderType": "Limit", "postOnly": True,
    "price": "100.5", "quantity": "10", "side": "Bid", "status": "New", "symbol": "SOL_USDC",
    "timeInForce": "GTC",
}  # fmt: skip
DUPLICATE = {"code": "INVALID_ORDER", "message": "Order with client ID already exists: 123"}
EXPIRED = {"code": "INVALID_CLIENT_REQUEST", "message": "Request has expired"}

Handler = Callable[[httpx.Request], httpx.Response]
Step = Handler


def submit(client_id: int = 123) -> OrderSubmitted:
    return OrderSubmitted(
        source=Source.LOCAL, recv_time_us=1, client_id=client_id, symbol="SOL_USDC",
        side=Side.BID, order_type=OrderType.LIMIT_MAKER, quantity=Decimal("10"),
        price=Decimal("100.50"), time_in_force=TimeInForce.GTC,
    )  # fmt: skip


def execute_spec(client_id: int = 123) -> endpoints.RequestSpec:
    return endpoints.execute_order(submit(client_id), SOL)


def rest(handler: Handler, **options: Any) -> BackpackRest:
    options.setdefault("rng", random.Random(7))
    return BackpackRest(URL, Credentials(SECRET), transport=httpx.MockTransport(handler), **options)


def reply(status: int, body: object = None, *, text: str | None = None) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text)
    return httpx.Response(status, json=body)


# --- an independent signature check ------------------------------------------------------------


def _render(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def expected_signing_string(
    instruction: str,
    params: Mapping[str, object] | list[Mapping[str, object]],
    ts: str,
    window: str,
) -> str:
    groups = params if isinstance(params, list) else [params]
    parts = [
        "&".join(
            [f"instruction={instruction}"] + [f"{k}={_render(group[k])}" for k in sorted(group)]
        )
        for group in groups
    ]
    return "&".join(parts) + f"&timestamp={ts}&window={window}"


def verify_signature(request: httpx.Request, instruction: str) -> None:
    """Raise unless the request's X-Signature signs what the request actually carries."""
    params = json.loads(request.content) if request.content else dict(request.url.params)
    message = expected_signing_string(
        instruction, params, request.headers["X-Timestamp"], request.headers["X-Window"]
    )
    assert request.headers["X-API-Key"] == API_KEY
    key = nacl.signing.VerifyKey(base64.b64decode(API_KEY))
    key.verify(message.encode(), base64.b64decode(request.headers["X-Signature"]))


# --- signing on the wire -----------------------------------------------------------------------


async def test_execute_sends_the_signed_body_and_the_published_signature() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply(200, ORDER_OK)

    async with rest(
        handler, clock=VenueClock(local_ns=lambda: (1614550000000) * 1_000_000)
    ) as client:
        result = await client.call(execute_spec())
    [request] = seen
    assert (request.method, request.url.path) == ("POST", "/api/v1/order")
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert request.headers["X-Timestamp"] == "1614550000000"
    assert request.headers["X-Window"] == "5000"
    # Fact sheet §1.6, self-computed vector for this exact order (not produced by our code).
    assert request.headers["X-Signature"] == (
        "TTn5ry/LF0isjvZYrlnUFdoawI3IaQEw65Vxm7I13/tCF/GgaPD5iEPECbDbbTcQCiYubusd1lJ3adVhfTG7AQ=="
    )
    # The JSON sent carries the signed strings verbatim: "100.5", never 100.5 or "100.50".
    assert json.loads(request.content) == {
        "symbol": "SOL_USDC", "side": "Bid", "clientId": 123, "quantity": "10",
        "orderType": "Limit", "price": "100.5", "postOnly": True, "timeInForce": "GTC",
    }  # fmt: skip
    assert b'"price":"100.5"' in request.content
    assert result["id"] == "8284661092"


async def test_cancel_and_batch_bodies_verify_against_the_public_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply(200, [] if request.url.path == "/api/v1/orders" else ORDER_OK)

    batch = endpoints.execute_batch([(submit(1), SOL), (submit(2), SOL)])
    async with rest(handler) as client:
        await client.call(endpoints.cancel_order("SOL_USDC", venue_id="8284661092"))
        await client.call(batch)
    cancel, batch_request = seen
    assert cancel.method == "DELETE"
    assert json.loads(cancel.content) == {"symbol": "SOL_USDC", "orderId": "8284661092"}
    verify_signature(cancel, "orderCancel")
    assert [item["clientId"] for item in json.loads(batch_request.content)] == [1, 2]
    verify_signature(batch_request, "orderExecute")


async def test_signed_query_verifies_and_the_timestamp_carries_the_clock_offset() -> None:
    now = [1_000_000]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/api/v1/time":
            now[0] += 100  # the round trip takes 100 ms of local time
            return httpx.Response(200, text="1700000000000")
        return reply(200, [])

    async with rest(
        handler, clock=VenueClock(local_ns=lambda: (now[0]) * 1_000_000), window_ms=60000
    ) as client:
        offset = await client.sync_clock()
        await client.fill_history(symbol="SOL_USDC", from_ms=1, page_size=50)
    # Sent at 1_000_000, received at 1_000_100: the venue's 1_700_000_000_000 is the midpoint.
    assert offset == 1_700_000_000_000 - 1_000_050
    fills = seen[1]
    assert "X-Signature" not in seen[0].headers  # /time is public
    assert fills.headers["X-Timestamp"] == str(1_000_100 + offset) == "1700000000050"
    assert fills.headers["X-Window"] == "60000"
    assert dict(fills.url.params) == {
        "symbol": "SOL_USDC", "from": "1", "limit": "50", "offset": "0", "sortDirection": "Asc"
    }  # fmt: skip
    verify_signature(fills, "fillHistoryQueryAll")


async def test_patch_account_sends_the_leverage_string_and_an_empty_reply_is_none() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    async with rest(handler) as client:
        assert await client.call(endpoints.update_account(leverage_limit=Decimal("5.0"))) is None
    [request] = seen
    assert (request.method, request.content) == ("PATCH", b'{"leverageLimit":"5"}')
    verify_signature(request, "accountUpdate")


async def test_bare_json_numbers_arrive_as_exact_decimals() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text='{"symbol":"SOL_USDC","lastPrice":0.1,"trades":12}')

    async with rest(handler) as client:
        body = await client.call(endpoints.ticker("SOL_USDC"))
    assert body["lastPrice"] == Decimal("0.1")
    assert isinstance(body["lastPrice"], Decimal)
    assert body["trades"] == 12


async def test_signed_call_without_credentials_is_refused_before_sending() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply(200, [])

    async with BackpackRest(URL, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(MissingCredentials, match="balanceQuery"):
            await client.capital()
        assert seen == []
        await client.markets()  # public endpoints need no key
    assert "X-API-Key" not in seen[0].headers


# --- error mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "kind", "code", "message"),
    [
        (400, '{"code":"INVALID_ORDER","message":"Invalid order"}', VenueError, "INVALID_ORDER",
         "Invalid order"),
        (404, '{"code":"RESOURCE_NOT_FOUND","message":"Not Found"}', NotFound,
         "RESOURCE_NOT_FOUND", "Not Found"),
        (404, "", NotFound, "HTTP_404", ""),
        (400, 'Bad Request parse request payload error: failed to parse "MarketSymbol"',
         VenueError, "HTTP_400", 'Bad Request parse request payload error: failed to parse '
         '"MarketSymbol"'),
        # A signature problem is not a clock problem: no resync, no retry.
        (400, '{"code":"INVALID_CLIENT_REQUEST","message":"Invalid signature"}', VenueError,
         "INVALID_CLIENT_REQUEST", "Invalid signature"),
        (429, "Too many requests", RateLimited, "HTTP_429", "Too many requests"),
        (401, '{"code":"UNAUTHORIZED","msg":"bad key"}', VenueError, "UNAUTHORIZED", "bad key"),
    ],
)  # fmt: skip
async def test_error_bodies_map_to_status_code_and_message(
    status: int, body: str, kind: type[VenueError], code: str, message: str
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, text=body)

    async with rest(handler, max_retries=0) as client:
        with pytest.raises(VenueError) as caught:
            await client.call(endpoints.account())
    assert type(caught.value) is kind
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        status,
        code,
        message,
    )
    assert len(seen) == 1


async def test_clock_error_resyncs_once_and_retries(autojump_clock: trio.abc.Clock) -> None:
    now = [5_000]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/api/v1/time":
            return httpx.Response(200, text="9000")
        if len(seen) == 1:
            return reply(400, EXPIRED)
        return reply(200, ORDER_OK)

    async with rest(handler, clock=VenueClock(local_ns=lambda: (now[0]) * 1_000_000)) as client:
        await client.call(execute_spec())
        assert client.clock.offset_ms == 4_000
    assert [r.url.path for r in seen] == ["/api/v1/order", "/api/v1/time", "/api/v1/order"]
    assert (seen[0].headers["X-Timestamp"], seen[2].headers["X-Timestamp"]) == ("5000", "9000")
    verify_signature(seen[2], "orderExecute")


async def test_a_second_clock_error_is_raised(autojump_clock: trio.abc.Clock) -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/api/v1/time":
            return httpx.Response(200, text="9000")
        return reply(400, {"code": "INVALID_CLIENT_REQUEST", "message": "Invalid timestamp"})

    async with rest(handler) as client:
        with pytest.raises(ClockError):
            await client.capital()
    assert paths == ["/api/v1/capital", "/api/v1/time", "/api/v1/capital"]


# --- retries -----------------------------------------------------------------------------------


async def test_429_is_retried_with_growing_backoff(autojump_clock: trio.abc.Clock) -> None:
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        if len(times) <= 3:
            return reply(429, text="Too many requests")
        return reply(200, {"USDC": {"available": "1.5", "locked": "0", "staked": "0"}})

    async with rest(handler, backoff_initial=0.5, backoff_max=8.0) as client:
        balances = await client.capital(source=Source.RECONCILE)
    assert isinstance(balances, BalanceObserved)
    assert balances.source is Source.RECONCILE
    assert balances.balances[0].available == Decimal("1.5")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3
    for retry, gap in enumerate(gaps):
        ceiling = 0.5 * 2**retry  # 0.5, 1, 2 s: each wait is between half and all of it
        assert ceiling / 2 <= gap <= ceiling
    assert gaps[0] < gaps[1] < gaps[2]


async def test_backoff_is_capped(autojump_clock: trio.abc.Clock) -> None:
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        return reply(429, text="Too many requests")

    async with rest(handler, backoff_initial=1.0, backoff_max=2.0, max_retries=4) as client:
        with pytest.raises(RateLimited):
            await client.call(endpoints.account())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 5
    assert all(gap <= 2.0 for gap in gaps)
    assert all(gap >= 1.0 for gap in gaps[1:])


async def test_get_503_twice_then_200_is_retried(autojump_clock: trio.abc.Clock) -> None:
    count = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        count[0] += 1
        if count[0] <= 2:
            return reply(503, text="System under maintenance")
        return reply(200, {"symbol": "SOL_USDC", "markPrice": "101.25"})

    async with rest(handler) as client:
        body = await client.call(endpoints.mark_prices("SOL_USDC"))
    assert body["markPrice"] == "101.25"
    assert count[0] == 3


async def test_get_that_never_answers_is_unavailable(autojump_clock: trio.abc.Clock) -> None:
    count = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        count[0] += 1
        raise httpx.ReadTimeout("timed out", request=request)

    async with rest(handler, max_retries=2) as client:
        with pytest.raises(VenueUnavailable, match="3 attempts"):
            await client.call(endpoints.depth("SOL_USDC"))
    assert count[0] == 3


async def test_execute_503_is_outcome_unknown_without_retry(
    autojump_clock: trio.abc.Clock,
) -> None:
    count = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        count[0] += 1
        return reply(503, {"code": "SERVER_ERROR", "message": "Unknown error"})

    async with rest(handler) as client:
        with pytest.raises(OutcomeUnknown, match="SERVER_ERROR"):
            await client.call(execute_spec())
    assert count[0] == 1


@pytest.mark.parametrize(
    "failure", [httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.RemoteProtocolError]
)
async def test_execute_lost_after_sending_is_outcome_unknown(
    failure: type[httpx.TransportError], autojump_clock: trio.abc.Clock
) -> None:
    count = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        count[0] += 1
        raise failure("lost", request=request)

    async with rest(handler) as client:
        with pytest.raises(OutcomeUnknown, match=failure.__name__):
            await client.call(execute_spec())
    assert count[0] == 1


async def test_execute_that_could_not_connect_is_retried(autojump_clock: trio.abc.Clock) -> None:
    count = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        count[0] += 1
        if count[0] == 1:
            raise httpx.ConnectError("refused", request=request)
        return reply(200, ORDER_OK)

    async with rest(handler) as client:
        assert (await client.call(execute_spec()))["status"] == "New"
    assert count[0] == 2


async def test_execute_429_then_duplicate_is_outcome_unknown(
    autojump_clock: trio.abc.Clock,
) -> None:
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        if len(bodies) == 1:
            return reply(429, text="Too many requests")
        return reply(400, DUPLICATE)

    async with rest(handler) as client:
        with pytest.raises(OutcomeUnknown, match="duplicate"):
            await client.call(execute_spec())
    assert len(bodies) == 2
    assert json.loads(bodies[0])["clientId"] == json.loads(bodies[1])["clientId"] == 123


async def test_duplicate_on_the_first_attempt_is_a_rejection() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return reply(400, DUPLICATE)

    async with rest(handler) as client:
        with pytest.raises(VenueError) as caught:
            await client.call(execute_spec())
    assert type(caught.value) is VenueError
    assert caught.value.duplicate_client_id


async def test_cancel_retries_and_reports_not_found_after_a_lost_reply(
    autojump_clock: trio.abc.Clock,
) -> None:
    count = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        count[0] += 1
        if count[0] == 1:
            raise httpx.ReadTimeout("lost", request=request)
        return reply(404, {"code": "RESOURCE_NOT_FOUND", "message": "Not Found"})

    async with rest(handler) as client:
        with pytest.raises(NotFound):
            await client.call(endpoints.cancel_order("SOL_USDC", client_id=7))
    assert count[0] == 2


async def test_cancel_that_never_gets_an_answer_is_outcome_unknown(
    autojump_clock: trio.abc.Clock,
) -> None:
    count = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        count[0] += 1
        return reply(502, text="Bad Gateway")

    async with rest(handler, max_retries=2) as client:
        with pytest.raises(OutcomeUnknown, match="Bad Gateway"):
            await client.call(endpoints.cancel_all("SOL_USDC"))
    assert count[0] == 3


# --- rate limit --------------------------------------------------------------------------------


async def test_rate_limiter_holds_the_sixth_request_for_a_minute(
    autojump_clock: trio.abc.Clock,
) -> None:
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        return reply(200, {"symbol": "SOL_USDC"})

    start = trio.current_time()
    async with rest(handler, max_requests_per_minute=5) as client:
        for _ in range(6):
            await client.call(endpoints.ticker("SOL_USDC"))
    assert trio.current_time() - start >= 60
    assert all(t == start for t in times[:5])
    assert times[5] - start >= 60


async def test_rate_limiter_is_shared_by_concurrent_callers(
    autojump_clock: trio.abc.Clock,
) -> None:
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        return reply(200, {})

    start = trio.current_time()
    async with rest(handler, max_requests_per_minute=3) as client, trio.open_nursery() as nursery:
        for _ in range(7):
            nursery.start_soon(client.call, endpoints.ticker("SOL_USDC"))
    # 7 requests at 3 a minute: 3 now, 3 a minute later, 1 two minutes later.
    assert sorted(round(t - start) for t in times) == [0, 0, 0, 60, 60, 60, 120]


async def test_room_that_may_be_skipped_is_taken_only_when_nobody_waits(
    autojump_clock: trio.abc.Clock,
) -> None:
    """`try_acquire` (the warming pings) takes room only when the window has some and no
    request is queued for it, and never waits."""
    window = rest_module._SlidingWindow(2, 60.0)
    assert window.try_acquire()
    await window.acquire()
    assert not window.try_acquire()  # full: refused at once, and nothing recorded
    got: list[float] = []
    async with trio.open_nursery() as nursery:

        async def wait_for_room() -> None:
            await window.acquire()
            got.append(trio.current_time())

        start = trio.current_time()
        nursery.start_soon(wait_for_room)
        await trio.sleep(30)
        assert not window.try_acquire()  # a request is queued: it goes first
    assert got == [start + 60]  # the refused attempts took no room from it
    await trio.sleep(60)
    assert window.try_acquire()


# --- domain helpers ----------------------------------------------------------------------------


def fill(trade_id: int) -> dict[str, object]:
    return {
        "clientId": "123", "fee": "0.0047325", "feeSymbol": "USDC", "isMaker": False,
        "orderId": "5578417290", "price": "4732.5", "quantity": "0.001", "side": "Ask",
        "symbol": "ETH_USDC", "systemOrderType": None, "timestamp": "2025-08-13T17:26:01.197",
        "tradeId": trade_id,
    }  # fmt: skip


@pytest.mark.parametrize(("total", "pages"), [(5, 3), (4, 3), (0, 1)])
async def test_fill_history_pages_until_a_short_page(total: int, pages: int) -> None:
    fills = [fill(trade_id) for trade_id in range(1, total + 1)]
    offsets: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        verify_signature(request, "fillHistoryQueryAll")
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        offsets.append(offset)
        return reply(200, fills[offset : offset + limit])

    async with rest(handler) as client:
        events = await client.fill_history(symbol="ETH_USDC", page_size=2, source=Source.RECONCILE)
    assert offsets == [0, 2, 4][:pages]
    assert all(isinstance(e, OrderFilled) and e.source is Source.RECONCILE for e in events)
    assert [e.trade_id for e in events if isinstance(e, OrderFilled)] == list(range(1, total + 1))
    assert all(
        e.price == Decimal("4732.5") and e.client_id == 123
        for e in events
        if isinstance(e, OrderFilled)
    )


async def test_order_history_pages_oldest_first() -> None:
    orders = [{**ORDER_OK, "id": str(n), "status": "Filled"} for n in range(3)]
    queries: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        queries.append(dict(request.url.params))
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        return reply(200, orders[offset : offset + limit])

    async with rest(handler) as client:
        events = await client.order_history(symbol="SOL_USDC", page_size=2)
    assert [q["offset"] for q in queries] == ["0", "2"]
    assert {q["sortDirection"] for q in queries} == {"Asc"}
    assert [getattr(e, "venue_id", None) for e in events] == ["0", "1", "2"]


async def test_markets_keep_items_the_codec_cannot_read() -> None:
    good = {
        "symbol": "SOL_USDC_PERP", "baseSymbol": "SOL", "quoteSymbol": "USDC",
        "marketType": "PERP", "visible": True,
        "filters": {"price": {"minPrice": "0.01", "tickSize": "0.01"},
                    "quantity": {"minQuantity": "0.01", "stepSize": "0.01"}},
    }  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        assert "X-Signature" not in request.headers
        return reply(200, [good, {"symbol": "BROKEN"}])

    async with rest(handler) as client:
        perp, broken = await client.markets()
    assert isinstance(perp, MarketInfo)
    assert (perp.symbol, perp.market_type, perp.tick_size) == (
        "SOL_USDC_PERP",
        MarketType.PERP,
        Decimal("0.01"),
    )
    assert isinstance(broken, MessageNotUnderstood)
    assert "BROKEN" in (broken.raw or "")


async def test_open_orders_and_positions_become_observations() -> None:
    position = {"symbol": "SOL_USDC_PERP", "netQuantity": "-0.5", "entryPrice": "150.25"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/position":
            verify_signature(request, "positionQuery")
            return reply(200, [position])
        verify_signature(request, "orderQueryAll")
        return reply(200, [ORDER_OK])

    async with rest(handler) as client:
        [order] = await client.open_orders("SOL_USDC")
        [pos] = await client.positions(source=Source.RECONCILE)
    assert getattr(order, "venue_id", None) == "8284661092"
    assert order.source is Source.REST
    assert getattr(pos, "net_quantity", None) == Decimal("-0.5")
    assert pos.source is Source.RECONCILE


# --- secret hygiene ----------------------------------------------------------------------------


async def test_the_secret_never_reaches_exceptions_or_logs(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.abc.Clock
) -> None:
    caplog.set_level(logging.DEBUG)
    signatures: list[str] = []
    script: list[Step] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if "X-Signature" in request.headers:
            signatures.append(request.headers["X-Signature"])
        if request.url.path == "/api/v1/time":
            return httpx.Response(200, text="1")
        return script.pop(0)(request)

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    def answer(status: int, body: object) -> Step:
        return lambda request: reply(status, body)

    failures: list[BaseException] = []
    async with rest(handler, max_retries=1) as client:
        cases: list[tuple[list[Step], Callable[[], Awaitable[object]]]] = [
            (
                [answer(429, "slow down"), answer(503, "down")],
                lambda: client.call(execute_spec()),
            ),
            ([timeout], lambda: client.call(execute_spec())),
            ([answer(400, EXPIRED), answer(400, EXPIRED)], client.capital),
            ([answer(400, DUPLICATE)], lambda: client.call(execute_spec())),
            ([timeout, timeout], lambda: client.call(endpoints.account())),
        ]
        for steps, call in cases:
            script[:] = steps
            try:
                await call()
            except Exception as exc:
                failures.append(exc)
    assert len(failures) == 5
    text = "\n".join(
        "".join(traceback.format_exception(exc)) + repr(exc) for exc in failures
    ) + "\n".join(record.getMessage() for record in caplog.records)
    seed = base64.b64decode(SECRET)
    for secret_form in (SECRET, seed.hex(), repr(seed)):
        assert secret_form not in text
    assert signatures
    for signature in signatures:
        assert signature not in text
    assert API_KEY not in text


# --- a real server -----------------------------------------------------------------------------


class _VenueHandler(BaseHTTPRequestHandler):
    """A tiny stand-in venue that checks signatures like the real one."""

    def do_GET(self) -> None:
        if self.path == "/api/v1/time":
            self._send(200, b"1614550000000")
        else:
            self._send(404, b'{"code":"RESOURCE_NOT_FOUND","message":"Not Found"}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        message = expected_signing_string(
            "orderExecute", json.loads(body), self.headers["X-Timestamp"], self.headers["X-Window"]
        )
        try:
            nacl.signing.VerifyKey(base64.b64decode(self.headers["X-API-Key"])).verify(
                message.encode(), base64.b64decode(self.headers["X-Signature"])
            )
        except Exception:
            self._send(400, b'{"code":"INVALID_CLIENT_REQUEST","message":"Invalid signature"}')
            return
        self._send(200, json.dumps({**ORDER_OK, "ts": self.headers["X-Timestamp"]}).encode())

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def venue_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _VenueHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_round_trip_against_a_real_http_server(venue_url: str) -> None:
    local = [1614549999000]
    async with BackpackRest(
        venue_url, Credentials(SECRET), clock=VenueClock(local_ns=lambda: (local[0]) * 1_000_000)
    ) as api:
        # A frozen local clock 1 s behind the venue: the offset is exactly 1000 ms.
        assert await api.sync_clock() == 1000
        placed = await api.call(execute_spec())
        with pytest.raises(NotFound):
            await api.call(endpoints.markets())
    assert placed["ts"] == "1614550000000"
    assert placed["price"] == "100.5"


# --- hostile bodies (issue 7) -------------------------------------------------------------------

DEEP = "[" * 990 + "]" * 990


@pytest.mark.parametrize(
    "body",
    [DEEP, "[" * 100_000, '{"a":1E+99999999999999999999}', '{"a":' + "9" * 5000 + "}"],
    ids=["990 deep", "100000 deep", "exponent beyond Decimal", "5000-digit int"],
)
async def test_a_hostile_success_body_is_a_bad_response(body: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=body)

    async with rest(handler) as client:
        with pytest.raises(BadResponse, match="body is not JSON"):
            await client.call(endpoints.account())
        with pytest.raises(OutcomeUnknown, match="body is not JSON"):
            await client.call(execute_spec())


async def test_a_deeply_nested_error_body_keeps_the_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, text=DEEP)

    async with rest(handler, max_retries=0) as client:
        with pytest.raises(VenueError) as caught:
            await client.call(endpoints.account())
    assert (caught.value.status, caught.value.code) == (400, "HTTP_400")


@pytest.mark.parametrize("body", ["1E+1000000", '"99999999999999999999999"', "-5", "[]"])
async def test_a_server_time_out_of_range_is_a_bad_response(body: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=body)

    async with rest(handler) as client:
        with pytest.raises(BadResponse, match="server time is not a number"):
            await client.sync_clock()
        assert client.clock.offset_ms == 0


async def test_fill_history_items_with_a_huge_trade_id_are_kept_as_not_understood() -> None:
    item = ('{"fee":"0","feeSymbol":"USDC","isMaker":false,"orderId":"1","price":"1",'
            '"quantity":"1","side":"Bid","symbol":"SOL_USDC","timestamp":"2025-08-13T17:26:01.197",'
            '"tradeId":1E+1000000}')  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=f"[{item}]")

    async with rest(handler) as client:
        [event] = await client.fill_history(symbol="SOL_USDC")
    assert isinstance(event, MessageNotUnderstood)
    assert "'tradeId' is not an integer in range" in event.reason
