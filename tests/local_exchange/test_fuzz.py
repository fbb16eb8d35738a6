"""The local exchange against hostile input: every malformed request gets a 4xx, every malformed
WebSocket frame an error frame, and the exchange keeps serving everyone else.

First one regression per input that once stopped the exchange or drew a 500 (a subscription
timestamp in Unicode digits or 5,000 digits long, a frame or body nested 50,000 deep, numbers
past Python's 4,300-digit conversion limit, a `1E+999999` quantity, a resting order priced
near the bound that the market then crosses), each followed by a normal request and a normal
subscription. Then Hypothesis sends malformed REST requests and WebSocket frames built from
hostile values to one running exchange.

The fuzz tests run a few seconds by default; `OMS_FUZZ_EXAMPLES=5000` runs that many examples
of each. Hypothesis runs in a worker thread and sends every example through the test's trio
loop (`trio.from_thread.run`), so one exchange serves all the examples of a test.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio_websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oms.testing.harness import local_exchange
from oms_backpack.signing import Credentials
from oms_local_exchange import DEFAULT_MARKETS, LocalExchange, ManualClock, api
from oms_local_exchange.model import KLINE_INTERVALS
from tests.helpers import next_frame, signed_request

REST_EXAMPLES = int(os.environ.get("OMS_FUZZ_EXAMPLES", "0")) or 250
WS_EXAMPLES = int(os.environ.get("OMS_FUZZ_EXAMPLES", "0")) or 150
STEP_US = 250_000  # the market moves when a test moves the clock by a step
HUGE = "9" * 5000  # past int()'s 4,300-digit limit
DEEP = 50_000


# --- helpers -------------------------------------------------------------------------------------


@attrs.frozen
class Raw:
    """JSON text written as is: a number no Python value renders (`1E+999999`, 5,000 digits)."""

    text: str


def render(value: Any) -> str:
    """`value` as JSON text, `Raw` parts verbatim."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{render(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def signable(value: Any) -> Any:
    """What the exchange will sign for a body value (a `Raw` number becomes a Decimal)."""
    if isinstance(value, Raw):
        try:
            number = Decimal(value.text)
        except ArithmeticError:
            return value.text
        return number if number.is_finite() else value.text
    return value


def sign_body(credentials: Credentials, instruction: str, body: Any, now_ms: int) -> dict[str, str]:
    """Headers signing `body` as the exchange will read it; a valid-looking but wrong signature
    when the body cannot be signed (nested values, not an object)."""
    items = body if isinstance(body, list) else [body]
    flat = all(
        isinstance(item, dict) and not any(isinstance(v, list | dict) for v in item.values())
        for item in items
    )
    if body is None or not flat or not items:
        return credentials.headers(instruction, None, now_ms)
    params = [{k: signable(v) for k, v in item.items()} for item in items]
    return credentials.headers(instruction, params if isinstance(body, list) else params[0], now_ms)


_client_ids = itertools.count(1)


async def assert_serving(exchange: LocalExchange, clock: ManualClock) -> None:
    """A normal request and a normal subscription still work: a fresh account subscribes to
    its order stream, places an order over REST, and sees it accepted on the stream."""
    own = Credentials(exchange.add_account().api_secret)
    now = clock.now_us // 1000
    async with (
        trio_websocket.open_websocket_url(exchange.ws_url) as ws,
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):
        time_reply = await http.get("/api/v1/time")
        assert time_reply.status_code == 200
        await ws.send_message(json.dumps(own.subscribe_frame(["account.orderUpdate"], now)))
        # Frames are handled in order: the answer to this one means the subscription is done.
        await ws.send_message(json.dumps({"id": "ready"}))
        assert (await next_frame(ws))["id"] == "ready"
        client_id = next(_client_ids)
        body = {"symbol": "SOL_USDC", "side": "Bid", "orderType": "Limit", "quantity": "0.01",
                "price": "120", "clientId": client_id}  # fmt: skip
        placed = await http.post(
            "/api/v1/order",
            **signed_request(own, "POST", "/api/v1/order", "orderExecute", now, body=body),
        )
        assert placed.status_code == 200, placed.text
        frame = await next_frame(ws)
        assert frame["stream"] == "account.orderUpdate"
        assert (frame["data"]["e"], frame["data"]["c"]) == ("orderAccepted", client_id)


async def close_transport(ws: trio_websocket.WebSocketConnection) -> None:
    """Close the socket under a client connection that the server closed: trio-websocket's
    client waits for the server's TCP close and then leaves its own socket open."""
    await ws._stream.aclose()  # no public handle on the transport


def assert_refusal(response: httpx.Response) -> None:
    """A 4xx in one of the venue's two shapes: `{"code", "message"}` or a plain-text line."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        assert set(body) == {"code", "message"}, body
    else:
        assert response.text


# --- regressions: one hostile WebSocket frame ---------------------------------------------------


def _with_timestamp(stamp: Any) -> Callable[[Credentials, int], str]:
    def frame(own: Credentials, now_ms: int) -> str:
        subscribe = own.subscribe_frame(["account.orderUpdate"], now_ms)
        signature = subscribe["signature"]
        assert isinstance(signature, list)
        signature[2] = stamp
        return render({**subscribe, "id": 7})

    return frame


HOSTILE_FRAMES = {
    # "²".isdigit() is True, int("²") raises: this stopped every server of the exchange.
    "superscript-two timestamp": (_with_timestamp("²"), 7, 4003, "Invalid timestamp header"),
    "5,000-digit timestamp": (_with_timestamp(HUGE), 7, 4003, "Invalid timestamp header"),
    "5,000-digit JSON timestamp": (
        _with_timestamp(Raw(HUGE)), None, 4001, "Invalid request"
    ),
    "frame nested 50,000 deep": (
        lambda own, now: "[" * DEEP + "]" * DEEP, None, 4001, "Invalid request"
    ),
    "subscribe nested 50,000 deep": (
        lambda own, now: '{"id":1,"method":"SUBSCRIBE","params":' + "[" * DEEP + "]" * DEEP + "}",
        None, 4001, "Invalid request",
    ),
    "id of an unsigned shape": (
        lambda own, now: '{"id":[1.5],"method":"SUBSCRIBE","params":["nowhere"]}',
        None, 4006, "Invalid stream",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE_FRAMES, ids=list(HOSTILE_FRAMES))
async def test_a_hostile_frame_gets_an_error_frame_and_the_exchange_keeps_serving(
    case: str,
) -> None:
    build, request_id, code, message = HOSTILE_FRAMES[case]
    async with local_exchange(step_us=STEP_US) as (exchange, clock):
        async with trio_websocket.open_websocket_url(exchange.ws_url) as ws:
            await ws.send_message(
                build(Credentials(exchange.credentials().api_secret), clock.now_us // 1000)
            )
            reply = await next_frame(ws)
            assert reply == {"id": request_id, "error": {"code": code, "message": message}}
            assert exchange.subscribers() == 0
        await assert_serving(exchange, clock)


# --- regressions: one hostile REST request ------------------------------------------------------

Request = dict[str, Any]


def _get(path: str, instruction: str | None, **query: str) -> Callable[[Credentials, int], Request]:
    def build(own: Credentials, now_ms: int) -> Request:
        if instruction is None:
            return {"method": "GET", "url": path, "params": query}
        return {"method": "GET", "url": path,
                **signed_request(own, "GET", path, instruction, now_ms, query=query)}  # fmt: skip

    return build


def _headers(**changed: bytes) -> Callable[[Credentials, int], Request]:
    def build(own: Credentials, now_ms: int) -> Request:
        request = signed_request(own, "GET", "/api/v1/capital", "balanceQuery", now_ms)
        request["headers"].update(changed)
        return {"method": "GET", "url": "/api/v1/capital", **request}

    return build


def _body(
    method: str, path: str, instruction: str, body: Any
) -> Callable[[Credentials, int], Request]:
    def build(own: Credentials, now_ms: int) -> Request:
        headers = sign_body(own, instruction, body, now_ms)
        headers["Content-Type"] = "application/json; charset=utf-8"
        content = body.text if isinstance(body, Raw) else render(body)
        return {"method": method, "url": path, "headers": headers, "content": content}

    return build


ORDER = {"symbol": "SOL_USDC_PERP", "side": "Bid", "orderType": "Limit", "price": "120"}
QUERY_ERROR = "Failed to deserialize query string: "
PAYLOAD_ERROR = "Bad Request parse request payload error: "
HOSTILE_REQUESTS = {
    "superscript-two query integer": (
        _get("/api/v1/depth", None, symbol="SOL_USDC", limit="²"),
        QUERY_ERROR + "limit: invalid digit found in string",
    ),
    "5,000-digit query integer": (
        _get("/api/v1/depth", None, symbol="SOL_USDC", limit=HUGE),
        QUERY_ERROR + "limit: number too large to fit in target type",
    ),
    "5,000-digit signed query integer": (
        _get("/wapi/v1/history/fills", "fillHistoryQueryAll", **{"from": HUGE}),
        QUERY_ERROR + "from: number too large to fit in target type",
    ),
    "kline start past the last date": (
        _get("/api/v1/klines", None, symbol="SOL_USDC", interval="1month",
             startTime=str(2**63 - 1)),
        QUERY_ERROR + "startTime: out of range for a date",
    ),
    "superscript-two client id in a query": (
        _get("/api/v1/order", "orderQuery", symbol="SOL_USDC", clientId="²"),
        PAYLOAD_ERROR + 'failed to parse "clientId": expected a u32 (occurred while parsing '
        '"OrderQuery")',
    ),
    "superscript-two X-Timestamp": (
        _headers(**{"X-Timestamp": "²".encode("latin-1")}),
        {"code": "INVALID_CLIENT_REQUEST", "message": "Invalid X-Timestamp header"},
    ),
    "5,000-digit X-Timestamp": (
        _headers(**{"X-Timestamp": HUGE.encode()}),
        {"code": "INVALID_CLIENT_REQUEST", "message": "Invalid X-Timestamp header"},
    ),
    "5,000-digit X-Window": (
        _headers(**{"X-Window": HUGE.encode()}),
        {"code": "INVALID_CLIENT_REQUEST", "message": "Invalid X-Window header"},
    ),
    "5,000-digit JSON client id": (
        _body("POST", "/api/v1/order", "orderExecute",
              {**ORDER, "quantity": "1", "clientId": Raw(HUGE)}),
        PAYLOAD_ERROR + "number out of range",
    ),
    "1E+999999 quantity as a string": (
        _body("POST", "/api/v1/order", "orderExecute", {**ORDER, "quantity": "1E+999999"}),
        PAYLOAD_ERROR + 'failed to parse "quantity": decimal out of range (occurred while '
        'parsing "OrderExecutePayload")',
    ),
    "1E+999999 quantity as a JSON number": (
        _body("POST", "/api/v1/order", "orderExecute", {**ORDER, "quantity": Raw("1E+999999")}),
        PAYLOAD_ERROR + 'failed to parse "quantity": decimal out of range (occurred while '
        'parsing "OrderExecutePayload")',
    ),
    "Unicode-digit price": (
        _body("POST", "/api/v1/order", "orderExecute",
              {**ORDER, "quantity": "1", "price": "\u0661\u0660\u0660"}),
        PAYLOAD_ERROR + 'failed to parse "price": invalid decimal (occurred while parsing '
        '"OrderExecutePayload")',
    ),
    "body nested 50,000 deep": (
        _body("POST", "/api/v1/order", "orderExecute", Raw("[" * DEEP + "]" * DEEP)),
        PAYLOAD_ERROR + "nesting deeper than 16 levels",
    ),
    "superscript-two order id": (
        _body("DELETE", "/api/v1/order", "orderCancel", {"symbol": "SOL_USDC", "orderId": "²"}),
        PAYLOAD_ERROR + 'failed to parse "orderId": invalid order id (occurred while parsing '
        '"OrderCancelPayload")',
    ),
    "1E+999999 leverage": (
        _body("PATCH", "/api/v1/account", "accountUpdate", {"leverageLimit": "1E+999999"}),
        PAYLOAD_ERROR + 'failed to parse "leverageLimit": decimal out of range (occurred while '
        'parsing "AccountUpdatePayload")',
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE_REQUESTS, ids=list(HOSTILE_REQUESTS))
async def test_a_hostile_request_gets_a_4xx_and_the_exchange_keeps_serving(case: str) -> None:
    build, expected = HOSTILE_REQUESTS[case]
    async with (
        local_exchange(step_us=STEP_US) as (exchange, clock),
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):
        request = build(Credentials(exchange.credentials().api_secret), clock.now_us // 1000)
        response = await http.request(**request)
        if isinstance(expected, dict):
            assert (response.status_code, response.json()) == (401, expected)
        else:
            assert (response.status_code, response.text) == (400, expected)
        await assert_serving(exchange, clock)


async def test_a_resting_order_priced_near_the_bound_fills_when_the_market_crosses_it() -> None:
    """A perp bid at 9E+40 that closes a short: its PnL is a 43-digit figure, which rounding
    to 1e-18 once refused (InvalidOperation in the market's tick, which stopped the exchange).
    The perp's price band is opened wide for it: the default one refuses such a bid."""
    wide = tuple(
        attrs.evolve(spec, max_multiplier=Decimal("1E+45")) if spec.is_perp else spec
        for spec in DEFAULT_MARKETS
    )
    async with (
        local_exchange(step_us=STEP_US, markets=wide) as (exchange, clock),
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):
        own = Credentials(exchange.credentials().api_secret)

        async def order(**fields: str) -> dict[str, Any]:
            body = {"symbol": "SOL_USDC_PERP", **fields}
            now = clock.now_us // 1000
            request = signed_request(own, "POST", "/api/v1/order", "orderExecute", now, body=body)
            response = await http.post("/api/v1/order", **request)
            assert response.status_code == 200, response.text
            placed: dict[str, Any] = response.json()
            return placed

        for _ in range(3):  # a short larger than the book, one book at a time
            await order(side="Ask", orderType="Market", quantity="600")
            clock.advance(STEP_US / 1e6)
        bid = await order(side="Bid", orderType="Limit", quantity="1000", price="9E+40")
        assert bid["status"] == "PartiallyFilled"
        clock.advance(STEP_US / 1e6)  # the next step's asks cross the bid at its own price
        depth = await http.get("/api/v1/depth", params={"symbol": "SOL_USDC_PERP"})
        assert depth.status_code == 200
        fills = exchange.venue.accounts[exchange.api_key].fills
        assert fills[-1].price == Decimal("9E+40") and fills[-1].order_id == bid["id"]
        await assert_serving(exchange, clock)


async def test_a_bug_met_by_one_client_ends_only_that_request_or_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The safety net under the parsers: an exception the exchange did not foresee answers that
    request 500 SERVER_ERROR, or closes that WebSocket with 1011; everyone else is served."""

    def broken(*args: object, **kwargs: object) -> Any:
        raise RuntimeError("a bug")

    async with (
        local_exchange(step_us=STEP_US) as (exchange, clock),
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):
        monkeypatch.setattr(exchange.venue, "ticker", broken)
        monkeypatch.setattr(exchange.venue, "position_snapshot", broken)
        response = await http.get("/api/v1/ticker", params={"symbol": "SOL_USDC"})
        assert (response.status_code, response.json()) == (
            500,
            {"code": "SERVER_ERROR", "message": "Internal server error"},
        )
        async with trio_websocket.open_websocket_url(exchange.ws_url) as ws:
            now = clock.now_us // 1000
            frame = Credentials(exchange.credentials().api_secret).subscribe_frame(
                ["account.positionUpdate"], now
            )
            await ws.send_message(json.dumps(frame))
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await next_frame(ws)
            assert closed.value.reason is not None and closed.value.reason.code == 1011
            await close_transport(ws)
        await assert_serving(exchange, clock)


# --- hostile values ------------------------------------------------------------------------------

_text = st.characters(codec="utf-8")  # no lone surrogates
unicode_digits = st.text(st.characters(categories=("Nd", "No")), min_size=1, max_size=6)
huge_digits = st.integers(4290, 4400).map(lambda n: "9" * n) | st.integers(19, 40).map(
    lambda n: "9" * n
)
exponent_text = st.builds(
    lambda mantissa, exponent: f"{mantissa}E{exponent:+d}",
    st.sampled_from(["1", "-1", "0", "9.99", "1.5", "9"]),
    st.integers(-1_000_000, 1_000_000) | st.integers(-45, 45),
)
odd_numbers = st.sampled_from(
    ["1E+999999", "1e-999999", "NaN", "Infinity", "-Infinity", "sNaN", "1_000", "0x10", " 1",
     "1.", ".5", "+1", "-0", "-1", "1e99999999999999999999", "", "0", "00000000000000000000001",
     "9223372036854775808", "4294967296", "1E+40", "9E+40", "1E-40", "0.01", "150", "600"]
)  # fmt: skip
plain_text = st.sampled_from(
    ["SOL_USDC", "SOL_USDC_PERP", "ETH_USDC", "ETH_USDC_PERP", "DOGE_USDC", "Bid", "Ask",
     "Limit", "Market", "GTC", "IOC", "FOK", "true", "Asc", "Desc", "SPOT", "PERP", "User",
     "RejectMaker", "RejectBoth", "RestingLimitOrder", "ConditionalOrder"]
)  # fmt: skip
hostile_text = st.one_of(
    unicode_digits, huge_digits, exponent_text, odd_numbers, plain_text, st.text(_text, max_size=12)
)
# JSON numbers as written: valid grammar with any magnitude, and integers past every limit.
json_numbers = st.one_of(
    st.from_regex(r"-?(0|[1-9][0-9]{0,5})(\.[0-9]{1,4})?([eE][+-]?[0-9]{1,7})?", fullmatch=True),
    huge_digits,
    st.sampled_from(["1E+40", "9E+40", "1E-40", "4294967296", "9223372036854775808", "600"]),
).map(Raw)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    hostile_text,
    json_numbers,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=6,
)
deep = st.integers(10, 3000).map(lambda n: Raw("[" * n + "]" * n)) | st.integers(10, 3000).map(
    lambda n: Raw('{"a":' * n + "1" + "}" * n)
)

ORDER_KEYS = ["symbol", "side", "orderType", "quantity", "quoteQuantity", "price",
              "timeInForce", "postOnly", "reduceOnly", "clientId", "selfTradePrevention",
              "orderId", "leverageLimit", "autoLend", "triggerPrice", "brokerId"]  # fmt: skip
SYMBOLS = ["SOL_USDC", "SOL_USDC_PERP", "ETH_USDC", "ETH_USDC_PERP"]
# Valid values, some at the bounds: orders made of them reach the venue's matching.
quantities = st.sampled_from(["0.01", "1", "600", "1000", "1E+40", "1E-40", "0.015", "9.99"])
prices = st.sampled_from(["0.01", "100", "149.99", "150", "150.02", "3000", "9E+40", "1E-40"])
client_ids = st.integers(0, 20) | st.integers(0, 2**32 - 1)
# How many fields of a plausible payload are replaced by hostile values (none, half the time).
hostile_fields = st.sampled_from([0, 0, 0, 1, 1, 2])


def spoil(draw: st.DrawFn, body: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """Replace or drop a few fields of a plausible payload."""
    for _ in range(draw(hostile_fields)):
        key = draw(st.sampled_from(keys) | hostile_text)
        if draw(st.integers(0, 4)):
            body[key] = draw(st.one_of(scalars, scalars, json_values))
        else:
            body.pop(key, None)
    return body


@st.composite
def order_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """An order execute payload: mostly valid, so that it reaches the venue."""
    order_type = draw(st.sampled_from(["Limit", "Market"]))
    body: dict[str, Any] = {
        "symbol": draw(st.sampled_from(SYMBOLS)),
        "side": draw(st.sampled_from(["Bid", "Ask"])),
        "orderType": order_type,
    }
    if order_type == "Limit" or draw(st.booleans()):
        body["quantity"] = draw(quantities)
    else:
        body["quoteQuantity"] = draw(prices)
    if order_type == "Limit":
        body["price"] = draw(prices)
        if draw(st.booleans()):
            body["postOnly"] = draw(st.booleans())
    if draw(st.booleans()):
        body["timeInForce"] = draw(st.sampled_from(["GTC", "IOC", "FOK"]))
    if draw(st.booleans()):
        body["reduceOnly"] = draw(st.booleans())
    if draw(st.booleans()):
        body["clientId"] = draw(client_ids)
    return spoil(draw, body, ORDER_KEYS)


@st.composite
def order_refs(draw: st.DrawFn) -> dict[str, Any]:
    """A cancel or order query: a symbol and an order id or client id."""
    body: dict[str, Any] = {"symbol": draw(st.sampled_from(SYMBOLS))}
    if draw(st.booleans()):
        body["clientId"] = draw(client_ids)
    else:
        body["orderId"] = str(draw(st.integers(8_000_000_001, 8_000_000_100)))
    return spoil(draw, body, ["symbol", "orderId", "clientId"])


@st.composite
def account_updates(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if draw(st.booleans()):
        body["leverageLimit"] = draw(st.sampled_from(["1", "10", "100", "101", "0.5"]) | prices)
    if draw(st.booleans()):
        body["autoLend"] = draw(st.booleans())
    return spoil(draw, body, ["leverageLimit", "autoLend", "autoRealizePnl"])


@st.composite
def history_queries(draw: st.DrawFn) -> dict[str, str]:
    query: dict[str, str] = {}
    if draw(st.booleans()):
        query["symbol"] = draw(st.sampled_from(SYMBOLS))
    for key, values in (
        ("limit", st.integers(0, 1000)),
        ("offset", st.integers(0, 50)),
        ("from", st.integers(0, 2**41)),
        ("marketType", st.sampled_from(["SPOT", "PERP"])),
        ("sortDirection", st.sampled_from(["Asc", "Desc"])),
    ):
        if draw(st.booleans()):
            query[key] = str(draw(values))
    for _ in range(draw(hostile_fields)):
        query[draw(st.sampled_from(QUERY_KEYS) | hostile_text)] = draw(hostile_text)
    return query


QUERY_KEYS = ["symbol", "limit", "offset", "from", "to", "orderId", "clientId", "marketType",
              "sortDirection", "fillType", "strategyId"]  # fmt: skip
any_body = st.one_of(
    st.none(),
    order_bodies(),
    st.lists(order_bodies(), max_size=3),
    st.dictionaries(st.sampled_from(ORDER_KEYS) | hostile_text, json_values, max_size=4),
    json_values,
    deep,
    st.binary(max_size=40),
)
any_query = st.dictionaries(st.sampled_from(QUERY_KEYS) | hostile_text, hostile_text, max_size=4)
# What a route expects, most of the time; anything at all otherwise.
BODIES = {
    ("POST", "/api/v1/order"): order_bodies(),
    ("POST", "/api/v1/orders"): st.lists(order_bodies(), min_size=1, max_size=4),
    ("DELETE", "/api/v1/order"): order_refs(),
    ("DELETE", "/api/v1/orders"): st.fixed_dictionaries(
        {"symbol": st.sampled_from(SYMBOLS)}, optional={"orderType": hostile_text}
    ),
    ("PATCH", "/api/v1/account"): account_updates(),
}


def as_query(ref: dict[str, Any]) -> dict[str, str]:
    return {key: value.text if isinstance(value, Raw) else str(value) for key, value in ref.items()}


@st.composite
def kline_queries(draw: st.DrawFn) -> dict[str, str]:
    """A klines query: any interval (and one the venue does not have), times up to int64."""
    times = st.integers(0, 2**41) | st.integers(0, 2**63 - 1)
    query = {
        "symbol": draw(st.sampled_from(SYMBOLS)),
        "interval": draw(st.sampled_from([*KLINE_INTERVALS, "1H"])),
        "startTime": str(draw(times)),
    }
    if draw(st.booleans()):
        query["endTime"] = str(draw(times))
    if draw(st.booleans()):
        query["priceType"] = draw(st.sampled_from(["Last", "Mark", "Index", "last"]))
    for _ in range(draw(hostile_fields)):
        query[draw(st.sampled_from(list(query)) | hostile_text)] = draw(hostile_text)
    return query


@st.composite
def max_order_queries(draw: st.DrawFn) -> dict[str, str]:
    query = {
        "symbol": draw(st.sampled_from(SYMBOLS)),
        "side": draw(st.sampled_from(["Bid", "Ask"])),
    }
    if draw(st.booleans()):
        query["price"] = draw(prices | st.sampled_from(["0", "-1"]))
    if draw(st.booleans()):
        query["reduceOnly"] = draw(st.sampled_from(["true", "false", "True"]))
    for _ in range(draw(hostile_fields)):
        query[draw(st.sampled_from(list(query)) | hostile_text)] = draw(hostile_text)
    return query


QUERIES = {
    ("GET", "/api/v1/order"): order_refs().map(as_query),
    ("GET", "/api/v1/klines"): kline_queries(),
    ("GET", "/api/v1/account/limits/order"): max_order_queries(),
}
# Header values h11 lets through: printable Latin-1 without blanks at the ends.
header_text = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"),
    min_size=1,
    max_size=12,
).filter(lambda t: all(not 0x80 <= ord(c) < 0xA0 for c in t))
header_values = st.one_of(
    unicode_digits.filter(lambda t: all(ord(c) <= 0xFF for c in t)),
    huge_digits,
    header_text,
    st.sampled_from(["-1", "0", "60001", "9223372036854775808"]),
).map(lambda t: t.encode("latin-1"))
hostile_headers = st.dictionaries(
    st.sampled_from(["X-Timestamp", "X-Window", "X-Signature", "X-API-Key"]),
    header_values,
    min_size=1,
    max_size=2,
)
ROUTES = sorted(api.ROUTES)
methods_and_paths = st.one_of(
    st.sampled_from(ROUTES),
    st.sampled_from(sorted(BODIES)),  # the routes that change the venue, more often
    st.tuples(
        st.sampled_from(["GET", "POST", "DELETE", "PATCH", "PUT"]),
        st.sampled_from([path for _, path in ROUTES] + ["/api/v1/nowhere", "/wapi/v1/history"]),
    ),
)


@attrs.frozen
class RestCase:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, bytes]  # replace the signed ones
    advance: bool  # move the clock one market step first


@st.composite
def rest_cases(draw: st.DrawFn) -> RestCase:
    method, path = draw(methods_and_paths)
    fitting = draw(st.integers(0, 3)) > 0
    if method == "GET":
        query_fits = QUERIES.get((method, path), history_queries())
        query = draw(query_fits if fitting else any_query)
        body = None
    else:
        query = {}
        body = draw(BODIES.get((method, path), any_body) if fitting else any_body)
    headers = draw(hostile_headers) if draw(st.integers(0, 5)) == 0 else {}
    return RestCase(method, path, query, body, headers, draw(st.booleans()))


async def send_rest(
    exchange: LocalExchange, clock: ManualClock, http: httpx.AsyncClient, case: RestCase
) -> httpx.Response:
    if case.advance:
        clock.advance(STEP_US / 1e6)
    now = clock.now_us // 1000
    route = api.ROUTES.get((case.method, case.path))
    instruction = route.instruction if route is not None and route.instruction else "none"
    own = Credentials(exchange.credentials().api_secret)
    content: bytes | None = None
    if case.method == "GET":
        signed = own.headers(instruction, case.query, now)
    else:
        signed = sign_body(own, instruction, case.body, now)
        if isinstance(case.body, bytes):
            content = case.body
        elif isinstance(case.body, Raw):
            content = case.body.text.encode()
        elif case.body is not None:
            content = render(case.body).encode()
    headers = {name.encode(): value.encode() for name, value in signed.items()}
    headers.update((name.encode(), value) for name, value in case.headers.items())
    with trio.fail_after(30):
        return await http.request(
            case.method, case.path, params=case.query, content=content, headers=headers
        )


@attrs.define
class Tally:
    examples: int = 0
    statuses: dict[int, int] = attrs.Factory(dict)


async def test_malformed_rest_requests_get_4xx_never_5xx() -> None:
    tally = Tally()
    async with (
        local_exchange(step_us=STEP_US) as (exchange, clock),
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):

        async def one(case: RestCase) -> None:
            response = await send_rest(exchange, clock, http, case)
            tally.examples += 1
            tally.statuses[response.status_code] = tally.statuses.get(response.status_code, 0) + 1
            if response.status_code >= 300:
                assert_refusal(response)

        @settings(
            max_examples=REST_EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(case=rest_cases())
        def fuzz(case: RestCase) -> None:
            trio.from_thread.run(one, case)

        await trio.to_thread.run_sync(fuzz)
        assert tally.examples >= min(REST_EXAMPLES, 20)
        assert not [status for status in tally.statuses if status >= 500], tally.statuses
        await assert_serving(exchange, clock)
    print(f"REST fuzz: {tally.examples} requests, statuses {sorted(tally.statuses.items())}")


# --- WebSocket frames ----------------------------------------------------------------------------

STREAMS = ["account.orderUpdate", "account.positionUpdate", "account.orderUpdate.SOL_USDC",
           "depth.SOL_USDC", "depth.200ms.SOL_USDC", "bookTicker.ETH_USDC", "trade.SOL_USDC",
           "markPrice.SOL_USDC_PERP", "ticker.SOL_USDC", "account.orderUpdate.DOGE",
           ""]  # fmt: skip


@st.composite
def frames(draw: st.DrawFn) -> str | bytes:
    kind = draw(st.sampled_from(["subscribe", "signed", "object", "value", "deep", "bytes"]))
    if kind == "deep":
        return draw(deep).text
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "value":
        return render(draw(json_values))
    frame: dict[str, Any] = {}
    if kind == "object":
        frame = draw(st.dictionaries(st.sampled_from(["id", "method", "params", "signature"])
                                     | hostile_text, json_values, max_size=4))  # fmt: skip
        return render(frame)
    streams = draw(st.lists(st.sampled_from(STREAMS) | hostile_text, max_size=3))
    frame = {"method": draw(st.sampled_from(["SUBSCRIBE", "UNSUBSCRIBE", "subscribe"]) | scalars),
             "params": streams if draw(st.booleans()) else draw(json_values)}  # fmt: skip
    if draw(st.booleans()):
        frame["id"] = draw(scalars)
    if kind == "signed":
        # A real signature with some of its parts replaced by hostile values.
        signature: list[Any] = ["<key>", "<signature>", "<timestamp>", "<window>"]
        for index in draw(st.lists(st.integers(0, 3), max_size=2)):
            signature[index] = draw(scalars)
        if draw(st.booleans()):
            signature = signature[:3]
        frame["signature"] = signature
    else:
        frame["signature"] = draw(st.none() | json_values)
    return render(frame)


def with_signature(text: str, own: Credentials, now_ms: int) -> str:
    """Fill the placeholders of a "signed" frame with a real signature."""
    real = own.subscribe_frame([], now_ms)["signature"]
    assert isinstance(real, list)
    for placeholder, value in zip(
        ['"<key>"', '"<signature>"', '"<timestamp>"', '"<window>"'], real, strict=True
    ):
        text = text.replace(placeholder, json.dumps(value))
    return text


async def send_frames(exchange: LocalExchange, clock: ManualClock, sent: list[str | bytes]) -> int:
    """Send hostile frames on a new connection, then one whose error marks the end; every
    frame before that must be an error frame or a stream message. Returns the error count."""
    own = Credentials(exchange.credentials().api_secret)
    now = clock.now_us // 1000
    errors = 0
    with trio.fail_after(30):
        async with trio_websocket.open_websocket_url(exchange.ws_url) as ws:
            try:
                for frame in sent:
                    signed = with_signature(frame, own, now) if isinstance(frame, str) else frame
                    await ws.send_message(signed)
                await ws.send_message('{"id":"end"}')
                while True:
                    reply = json.loads(await ws.get_message())
                    if reply.get("id") == "end":
                        break
                    if "error" in reply:
                        assert set(reply) == {"id", "error"}, reply
                        assert isinstance(reply["error"]["code"], int), reply
                        assert isinstance(reply["error"]["message"], str), reply
                        errors += 1
                    else:
                        assert set(reply) == {"data", "stream"}, reply
            except trio_websocket.ConnectionClosed as closed:
                # Allowed, but never the close of a frame the exchange failed on.
                assert closed.reason is None or closed.reason.code != 1011, closed.reason
                await close_transport(ws)
    return errors


async def test_malformed_websocket_frames_get_error_frames_never_a_crash() -> None:
    tally = Tally()
    async with local_exchange(step_us=STEP_US) as (exchange, clock):

        async def one(sent: list[str | bytes]) -> None:
            errors = await send_frames(exchange, clock, sent)
            tally.examples += 1
            tally.statuses[errors] = tally.statuses.get(errors, 0) + 1

        @settings(
            max_examples=WS_EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(sent=st.lists(frames(), min_size=1, max_size=3))
        def fuzz(sent: list[str | bytes]) -> None:
            trio.from_thread.run(one, sent)

        await trio.to_thread.run_sync(fuzz)
        assert tally.examples >= min(WS_EXAMPLES, 20)
        await assert_serving(exchange, clock)
    errors = sorted(tally.statuses.items())
    print(f"WebSocket fuzz: {tally.examples} connections, (error frames, count) {errors}")
