"""The local exchange's REST API as pure functions: route, parse, act on the venue, answer.

`ROUTES` maps (method, path) to the endpoint's instruction (None for public endpoints) and
handler. `handle` runs one call against a `Venue` and returns a `Reply`: a status with a
JSON body, a plain-text body (the venue's payload-parse errors), or no body. The HTTP
server (`server.py`) only moves bytes, checks signatures and injects faults around this.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final

import attrs

from oms_local_exchange import inputs, wire
from oms_local_exchange.auth import SignedValue
from oms_local_exchange.model import KLINE_INTERVALS, PERP, SPOT, ApiError, PayloadError
from oms_local_exchange.venue import Venue

__all__ = [
    "ARRAY_PARAMS",
    "ROUTES",
    "Call",
    "Reply",
    "Route",
    "handle",
    "not_found",
    "parse_body",
    "parse_query",
    "signed_params",
]

JSON = Any
MAX_HISTORY: Final = 1000
MAX_BATCH: Final = 50
DEPTH_LIMITS: Final = (5, 10, 20, 50, 100, 500, 1000)
MARKET_TYPES: Final = (SPOT, PERP, "IPERP", "DATED", "PREDICTION", "RFQ")
# Query parameters the venue types as arrays (`marketType=SPOT&marketType=PERP`); any other
# parameter given twice is refused, as a query deserializer with plain fields refuses it.
ARRAY_PARAMS: Final = frozenset({"marketType"})
PRICE_TYPES: Final = ("Last", "Index", "Mark")
# Kline times (epoch seconds) from 9999-01-01 on are refused: a bucket must end in a date.
MAX_KLINE_TIME_S: Final = 253_370_764_800
SETTLEMENT_SOURCES: Final = (
    "BackstopLiquidation", "CulledBorrowInterest", "CulledRealizePnl",
    "CulledRealizePnlBookUtilization", "FundingPayment", "RealizePnl", "TradingFees",
    "TradingFeesSystem",
)  # fmt: skip
MAX_KLINES: Final = 1000
FILL_TYPES: Final = (
    "User", "BookLiquidation", "Adl", "Backstop", "Liquidation", "AllLiquidation",
    "CollateralConversion", "CollateralConversionAndSpotLiquidation",
)  # fmt: skip


@attrs.frozen
class Reply:
    """An answer: `text` (plain) if set, else `body` as JSON, or no body when both are None."""

    status: int
    body: JSON = None
    text: str | None = None

    def encode(self) -> tuple[bytes, str | None]:
        """The body bytes and their content type (None for an empty body)."""
        if self.text is not None:
            return self.text.encode("utf-8"), "text/plain; charset=utf-8"
        if self.body is None:
            return b"", None
        return json.dumps(self.body, separators=(",", ":")).encode("utf-8"), "application/json"


@attrs.frozen
class Call:
    """One parsed request: the authenticated key (None on public endpoints), the decoded query
    (`arrays` holds the values of the array parameters, `ARRAY_PARAMS`, in the order sent),
    the parsed JSON body (None if empty) and the server's time in ms."""

    api_key: str | None
    query: Mapping[str, str]
    body: JSON
    now_ms: int
    arrays: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)


Handler = Callable[[Venue, Call], Reply]


@attrs.frozen
class Route:
    method: str
    path: str
    instruction: str | None
    handler: Handler


def not_found() -> Reply:
    return Reply(404, {"code": "RESOURCE_NOT_FOUND", "message": "Not Found"})


def parse_body(raw: bytes) -> JSON:
    """The JSON body (decimals exact), None if empty; `PayloadError` if it is not JSON, nests
    deeper than `inputs.MAX_JSON_DEPTH` or holds a number beyond any parse."""
    if not raw.strip():
        return None
    try:
        return inputs.load_json(raw)
    except inputs.BadInput as exc:
        raise PayloadError(f"Bad Request parse request payload error: {exc.reason}") from None


def parse_query(
    pairs: list[tuple[str, str]],
) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """The decoded query as (plain parameters, array parameters). An array parameter keeps
    every value given (`marketType=SPOT&marketType=PERP`); a plain one given twice is a
    `PayloadError`, the venue's plain-text 400."""
    query: dict[str, str] = {}
    arrays: dict[str, list[str]] = {}
    for key, value in pairs:
        if key in ARRAY_PARAMS:
            arrays.setdefault(key, []).append(value)
        elif key in query:
            raise _query_error(f"duplicate field `{key}`")
        else:
            query[key] = value
    return query, {key: tuple(values) for key, values in arrays.items()}


def _flat(item: JSON) -> dict[str, SignedValue]:
    if not isinstance(item, dict):
        raise PayloadError("Bad Request parse request payload error: expected an object")
    for key, value in item.items():
        if value is not None and not isinstance(value, str | int | bool | Decimal):
            raise PayloadError(
                f"Bad Request parse request payload error: unexpected nested value for `{key}`"
            )
    return item


def signed_params(
    route: Route,
    query: Mapping[str, str],
    body: JSON,
    arrays: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[str, SignedValue] | list[dict[str, SignedValue]] | None:
    """What the signature covers: the body for writes, else the query (an array parameter
    as each of its values in the order sent)."""
    if route.method == "GET":
        return {**query, **(arrays or {})}
    if body is None:
        return None
    if isinstance(body, list):
        return [_flat(item) for item in body]
    return _flat(body)


def handle(venue: Venue, route: Route, call: Call) -> Reply:
    try:
        return route.handler(venue, call)
    except ApiError as exc:
        return Reply(exc.status, exc.body())
    except PayloadError as exc:
        return Reply(400, text=exc.text)


# --- query parsing ---------------------------------------------------------------------------


def _query_error(detail: str) -> PayloadError:
    return PayloadError(f"Failed to deserialize query string: {detail}")


def _q_int(query: Mapping[str, str], key: str, default: int | None = None) -> int | None:
    value = query.get(key)
    if value is None:
        return default
    try:
        return inputs.parse_int(value)
    except inputs.BadInput as exc:
        raise _query_error(f"{key}: {exc.reason}") from None


def _q_limit(query: Mapping[str, str], default: int = 100) -> tuple[int, int]:
    limit = _q_int(query, "limit", default)
    offset = _q_int(query, "offset", 0)
    assert limit is not None and offset is not None
    if limit > MAX_HISTORY:
        raise ApiError(400, "INVALID_CLIENT_REQUEST", f"Limit must be at most {MAX_HISTORY}")
    return limit, offset


def _q_choice(query: Mapping[str, str], key: str, allowed: tuple[str, ...]) -> str | None:
    value = query.get(key)
    if value is not None and value not in allowed:
        raise _query_error(f"{key}: unknown variant `{value}`")
    return value


def _q_descending(query: Mapping[str, str]) -> bool:
    return _q_choice(query, "sortDirection", ("Asc", "Desc")) != "Asc"


def _q_symbol(venue: Venue, query: Mapping[str, str], required: bool) -> str | None:
    symbol = query.get("symbol")
    if symbol is None:
        if required:
            raise _query_error("missing field `symbol`")
        return None
    if symbol not in venue.markets:
        raise ApiError(400, "INVALID_MARKET", "Market not found")
    return symbol


def _q_market_types(call: Call) -> frozenset[str] | None:
    """The `marketType` array: every value given (None when absent)."""
    values = call.arrays.get("marketType")
    if values is None:
        return None
    for value in values:
        if value not in MARKET_TYPES:
            raise _query_error(f"marketType: unknown variant `{value}`")
    return frozenset(values)


def _q_flag(query: Mapping[str, str], key: str) -> bool | None:
    value = query.get(key)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise _query_error(f"{key}: provided string was not `true` or `false`")
    return value == "true"


def _q_decimal(query: Mapping[str, str], key: str) -> Decimal | None:
    value = query.get(key)
    if value is None:
        return None
    try:
        return inputs.parse_decimal(value)
    except inputs.BadInput as exc:
        raise _query_error(f"{key}: {exc.reason}") from None


# --- public endpoints --------------------------------------------------------------------------


def _time(venue: Venue, call: Call) -> Reply:
    return Reply(200, call.now_ms)


def _ping(venue: Venue, call: Call) -> Reply:
    return Reply(200, text="pong")


def _status(venue: Venue, call: Call) -> Reply:
    return Reply(200, {"status": "Ok", "message": None})


def _markets(venue: Venue, call: Call) -> Reply:
    return Reply(200, venue.market_list(_q_market_types(call)))


def _market(venue: Venue, call: Call) -> Reply:
    symbol = _q_symbol(venue, call.query, required=True)
    return Reply(200, next(m for m in venue.market_list() if m["symbol"] == symbol))


def _depth(venue: Venue, call: Call) -> Reply:
    symbol = _q_symbol(venue, call.query, required=True)
    assert symbol is not None
    limit = _q_int(call.query, "limit", 1000)
    if limit not in DEPTH_LIMITS:
        raise _query_error(f"limit: must be one of {', '.join(map(str, DEPTH_LIMITS))}")
    return Reply(200, venue.depth(symbol, limit))


def _ticker(venue: Venue, call: Call) -> Reply:
    symbol = _q_symbol(venue, call.query, required=True)
    assert symbol is not None
    return Reply(200, venue.ticker(symbol))


def _tickers(venue: Venue, call: Call) -> Reply:
    return Reply(200, [venue.ticker(symbol) for symbol in venue.markets])


def _mark_prices(venue: Venue, call: Call) -> Reply:
    return Reply(200, venue.mark_prices(_q_symbol(venue, call.query, required=False)))


def _funding_rates(venue: Venue, call: Call) -> Reply:
    symbol = _q_symbol(venue, call.query, required=True)
    assert symbol is not None
    limit, offset = _q_limit(call.query)
    return Reply(200, venue.funding_rates(symbol, limit, offset))


def _trades(venue: Venue, call: Call) -> Reply:
    symbol = _q_symbol(venue, call.query, required=True)
    assert symbol is not None
    limit, _ = _q_limit(call.query)
    return Reply(200, venue.recent_trades(symbol, limit))


def _trade_history(venue: Venue, call: Call) -> Reply:
    symbol = _q_symbol(venue, call.query, required=True)
    assert symbol is not None
    limit, offset = _q_limit(call.query)
    return Reply(200, venue.trade_history(symbol, limit, offset))


def _open_interest(venue: Venue, call: Call) -> Reply:
    return Reply(200, venue.open_interest(_q_symbol(venue, call.query, required=False)))


def _klines(venue: Venue, call: Call) -> Reply:
    query = call.query
    symbol = _q_symbol(venue, query, required=True)
    assert symbol is not None
    interval = query.get("interval")
    if interval is None:
        raise _query_error("missing field `interval`")
    if interval not in KLINE_INTERVALS:
        raise _query_error(f"interval: unknown variant `{interval}`")
    start = _q_int(query, "startTime")
    if start is None:
        raise _query_error("missing field `startTime`")
    end = _q_int(query, "endTime")
    for key, value in (("startTime", start), ("endTime", end)):
        if value is not None and value >= MAX_KLINE_TIME_S:
            raise _query_error(f"{key}: out of range for a date")
    _q_choice(query, "priceType", PRICE_TYPES)
    if end is not None and end < start:
        raise ApiError(400, "INVALID_CLIENT_REQUEST", "`endTime` must be after `startTime`")
    return Reply(200, venue.klines(symbol, KLINE_INTERVALS[interval], start, end))


def _assets(venue: Venue, call: Call) -> Reply:
    return Reply(200, venue.assets())


def _collateral_parameters(venue: Venue, call: Call) -> Reply:
    return Reply(200, venue.collateral_parameters())


def _securities(venue: Venue, call: Call) -> Reply:
    # The venue's tokenized stocks (beyond the fact sheet; ccxt's market loading asks for
    # them): the local exchange lists none.
    return Reply(200, [])


# --- signed endpoints --------------------------------------------------------------------------


def _key(call: Call) -> str:
    assert call.api_key is not None  # the server authenticated the call
    return call.api_key


def _account(venue: Venue, call: Call) -> Reply:
    return Reply(200, venue.account_settings(_key(call)))


def _update_account(venue: Venue, call: Call) -> Reply:
    what = "AccountUpdatePayload"
    body = call.body if call.body is not None else {}
    if not isinstance(body, dict):
        raise wire.payload_error("expected an object", what)
    leverage = body.get("leverageLimit")
    limit: Decimal | None = None
    if leverage is not None:
        try:
            limit = inputs.parse_decimal(leverage)
        except inputs.BadInput as exc:
            detail = f'failed to parse "leverageLimit": {exc.reason}'
            raise wire.payload_error(detail, what) from None
    settings: dict[str, bool] = {}
    for key, value in body.items():
        if key == "leverageLimit":
            continue
        if not isinstance(value, bool):
            raise wire.payload_error(f'failed to parse "{key}": expected a boolean', what)
        settings[key] = value
    venue.update_account(_key(call), limit, settings)
    return Reply(200)


def _capital(venue: Venue, call: Call) -> Reply:
    return Reply(200, venue.capital(_key(call)))


def _collateral(venue: Venue, call: Call) -> Reply:
    return Reply(200, venue.collateral(_key(call)))


def _max_order_quantity(venue: Venue, call: Call) -> Reply:
    query = call.query
    symbol = _q_symbol(venue, query, required=True)
    assert symbol is not None
    side = _q_choice(query, "side", ("Bid", "Ask"))
    if side is None:
        raise _query_error("missing field `side`")
    price = _q_decimal(query, "price")
    if price is not None and price <= 0:
        raise ApiError(400, "INVALID_PRICE", "Price must be positive")
    reduce_only = _q_flag(query, "reduceOnly")
    flags = {
        key: _q_flag(query, key) for key in ("autoBorrow", "autoBorrowRepay", "autoLendRedeem")
    }
    quantity = venue.max_order_quantity(_key(call), symbol, side, price, bool(reduce_only))
    body: dict[str, JSON] = {key: value for key, value in flags.items() if value is not None}
    body["maxOrderQuantity"] = wire.dec(quantity)
    if price is not None:
        body["price"] = wire.dec(price)
    if reduce_only is not None:
        body["reduceOnly"] = reduce_only
    body["side"] = side
    body["symbol"] = symbol
    return Reply(200, dict(sorted(body.items())))


def _borrow_lend_positions(venue: Venue, call: Call) -> Reply:
    venue.account(_key(call))
    return Reply(200, [])  # no borrowing or lending here: never an open position


def _settlement_history(venue: Venue, call: Call) -> Reply:
    _q_limit(call.query)
    _q_descending(call.query)
    _q_choice(call.query, "source", SETTLEMENT_SOURCES)
    venue.account(_key(call))
    # Realized PnL, fees and funding are settled into USDC as they happen (they show in the
    # fill and funding histories); the venue's separate settlement records never arise here.
    return Reply(200, [])


def _execute(venue: Venue, call: Call) -> Reply:
    request = wire.parse_order(call.body, venue.markets)
    return Reply(200, wire.order_object(venue.place(_key(call), request)))


def _execute_batch(venue: Venue, call: Call) -> Reply:
    if not isinstance(call.body, list) or not call.body:
        raise wire.payload_error("expected a non-empty array", "Vec<OrderExecutePayload>")
    if len(call.body) > MAX_BATCH:
        raise ApiError(400, "INVALID_CLIENT_REQUEST", f"At most {MAX_BATCH} orders per batch")
    requests = [wire.parse_order(item, venue.markets) for item in call.body]
    results: list[JSON] = []
    for request in requests:
        try:
            order = venue.place(_key(call), request)
        except ApiError as exc:
            results.append({"operation": "Err", "code": exc.code, "message": exc.message})
        else:
            results.append({**wire.order_object(order), "operation": "Ok"})
    return Reply(200, results)


def _order_query(venue: Venue, call: Call) -> Reply:
    symbol, order_id, client_id = wire.parse_order_ref(
        dict(call.query), venue.markets, "OrderQuery"
    )
    venue.advance()
    order = venue.resting_order(_key(call), symbol, order_id=order_id, client_id=client_id)
    return Reply(200, wire.order_object(order))


def _cancel(venue: Venue, call: Call) -> Reply:
    symbol, order_id, client_id = wire.parse_order_ref(
        call.body, venue.markets, "OrderCancelPayload"
    )
    order = venue.cancel(_key(call), symbol, order_id=order_id, client_id=client_id)
    return Reply(200, wire.order_object(order))


def _cancel_all(venue: Venue, call: Call) -> Reply:
    what = "OrderCancelAllPayload"
    body = call.body
    if not isinstance(body, dict):
        raise wire.payload_error("missing field `symbol`", what)
    symbol = body.get("symbol")
    if symbol is None:
        raise wire.payload_error("missing field `symbol`", what)
    if symbol not in venue.markets:
        raise wire.payload_error('failed to parse "MarketSymbol": Invalid market symbol', what)
    kind = body.get("orderType")
    if kind not in (None, "RestingLimitOrder", "ConditionalOrder"):
        raise wire.payload_error(f'failed to parse "orderType": unknown variant {kind!r}', what)
    if kind == "ConditionalOrder":
        return Reply(200, [])
    return Reply(200, [wire.order_object(o) for o in venue.cancel_all(_key(call), symbol)])


def _open_orders(venue: Venue, call: Call) -> Reply:
    symbol = _q_symbol(venue, call.query, required=False)
    orders = venue.open_orders(_key(call), symbol, _q_market_types(call))
    return Reply(200, [wire.order_object(o) for o in orders])


def _positions(venue: Venue, call: Call) -> Reply:
    symbol = _q_symbol(venue, call.query, required=False)
    market_types = _q_market_types(call)
    venue.advance()
    account = venue.account(_key(call))
    items = [
        venue.position_item(account, position)
        for position in venue.open_positions(_key(call), symbol)
        if market_types is None or venue.markets[position.symbol].market_type in market_types
    ]
    return Reply(200, items)


def _order_history(venue: Venue, call: Call) -> Reply:
    query = call.query
    limit, offset = _q_limit(query)
    if query.get("strategyId") is not None:
        return Reply(200, [])
    orders = venue.order_history(
        _key(call),
        order_id=query.get("orderId"),
        symbol=_q_symbol(venue, query, required=False),
        market_types=_q_market_types(call),
        limit=limit,
        offset=offset,
        descending=_q_descending(query),
    )
    return Reply(200, [wire.order_history_item(o) for o in orders])


def _fill_history(venue: Venue, call: Call) -> Reply:
    query = call.query
    limit, offset = _q_limit(query)
    fill_type = _q_choice(query, "fillType", FILL_TYPES)
    if query.get("strategyId") is not None or fill_type not in (None, "User"):
        return Reply(200, [])  # every local fill is a user fill, none of a strategy
    fills = venue.fill_history(
        _key(call),
        order_id=query.get("orderId"),
        symbol=_q_symbol(venue, query, required=False),
        market_types=_q_market_types(call),
        from_ms=_q_int(query, "from"),
        to_ms=_q_int(query, "to"),
        limit=limit,
        offset=offset,
        descending=_q_descending(query),
    )
    return Reply(200, [wire.fill_item(f) for f in fills])


def _funding_history(venue: Venue, call: Call) -> Reply:
    query = call.query
    limit, offset = _q_limit(query)
    payments = venue.funding_history(
        _key(call),
        symbol=_q_symbol(venue, query, required=False),
        limit=limit,
        offset=offset,
        descending=_q_descending(query),
    )
    return Reply(200, [wire.funding_item(p) for p in payments])


_TABLE: Final[tuple[tuple[str, str, str | None, Handler], ...]] = (
    ("GET", "/api/v1/time", None, _time),
    ("GET", "/api/v1/ping", None, _ping),
    ("GET", "/api/v1/status", None, _status),
    ("GET", "/api/v1/markets", None, _markets),
    ("GET", "/api/v1/market", None, _market),
    ("GET", "/api/v1/depth", None, _depth),
    ("GET", "/api/v1/ticker", None, _ticker),
    ("GET", "/api/v1/tickers", None, _tickers),
    ("GET", "/api/v1/markPrices", None, _mark_prices),
    ("GET", "/api/v1/fundingRates", None, _funding_rates),
    ("GET", "/api/v1/trades", None, _trades),
    ("GET", "/api/v1/trades/history", None, _trade_history),
    ("GET", "/api/v1/openInterest", None, _open_interest),
    ("GET", "/api/v1/klines", None, _klines),
    ("GET", "/api/v1/assets", None, _assets),
    ("GET", "/api/v1/collateral", None, _collateral_parameters),
    ("GET", "/api/v1/securities", None, _securities),
    ("GET", "/api/v1/account/limits/order", "maxOrderQuantity", _max_order_quantity),
    ("GET", "/api/v1/borrowLend/positions", "borrowLendPositionQuery", _borrow_lend_positions),
    ("GET", "/api/v1/account", "accountQuery", _account),
    ("PATCH", "/api/v1/account", "accountUpdate", _update_account),
    ("GET", "/api/v1/capital", "balanceQuery", _capital),
    ("GET", "/api/v1/capital/collateral", "collateralQuery", _collateral),
    ("GET", "/api/v1/order", "orderQuery", _order_query),
    ("POST", "/api/v1/order", "orderExecute", _execute),
    ("DELETE", "/api/v1/order", "orderCancel", _cancel),
    ("GET", "/api/v1/orders", "orderQueryAll", _open_orders),
    ("POST", "/api/v1/orders", "orderExecute", _execute_batch),
    ("DELETE", "/api/v1/orders", "orderCancelAll", _cancel_all),
    ("GET", "/api/v1/position", "positionQuery", _positions),
    ("GET", "/wapi/v1/history/orders", "orderHistoryQueryAll", _order_history),
    ("GET", "/wapi/v1/history/fills", "fillHistoryQueryAll", _fill_history),
    ("GET", "/wapi/v1/history/funding", "fundingHistoryQueryAll", _funding_history),
    ("GET", "/wapi/v1/history/settlement", "settlementHistoryQueryAll", _settlement_history),
)

ROUTES: Final[Mapping[tuple[str, str], Route]] = {
    (method, path): Route(method, path, instruction, handler)
    for method, path, instruction, handler in _TABLE
}
