"""The local exchange's wire formats: venue records -> Backpack JSON, request payloads -> records.

Pure. Field names, types and units follow the fact sheet (shared/backpack/api.md):

- decimals are strings (`"0.0047325"`, zero is `"0"`), never JSON numbers;
- REST order objects carry `createdAt` as integer milliseconds and explicit nulls;
- order and fill history carry naive ISO times in UTC (`"2025-08-13T17:26:01.197"`), fills
  carry `clientId` as a string and `tradeId` as an integer;
- stream payloads carry microsecond `E`/`T`, upper-case order types and `t: null` on every
  order event but fills; position payloads carry `B` = entry and `b` = break-even.

Payload parsing mirrors the venue's two kinds of refusal: a payload of the wrong shape or
type is a `PayloadError` (the venue answers those in plain text), a well-formed but
unacceptable one is an `ApiError` with `{"code", "message"}`. Every number goes through the
exchange's strict parsers (`inputs`): ASCII digits, bounded magnitude and digit count.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from oms.core.values import CTX, canonical_decimal
from oms_local_exchange import inputs
from oms_local_exchange.inputs import UINT32_MAX
from oms_local_exchange.model import (
    LIMIT,
    MARKET,
    ApiError,
    Fill,
    FundingPayment,
    MarketSpec,
    Order,
    OrderRequest,
    PayloadError,
)

__all__ = [
    "dec",
    "fill_item",
    "funding_item",
    "iso_ms",
    "iso_s",
    "market_object",
    "order_history_item",
    "order_object",
    "order_update",
    "parse_order",
    "parse_order_ref",
    "payload_error",
]

JSON = Any
_EPOCH: Final = datetime(1970, 1, 1)
_SIDES: Final = ("Bid", "Ask")
_ORDER_TYPES: Final = (LIMIT, MARKET)
_TIFS: Final = ("GTC", "IOC", "FOK")
_STPS: Final = ("RejectTaker", "RejectMaker", "RejectBoth")
_ORDER_KEYS: Final = frozenset(
    {
        "symbol", "side", "orderType", "quantity", "quoteQuantity", "price", "timeInForce",
        "postOnly", "reduceOnly", "clientId", "selfTradePrevention", "brokerId",
        "autoLend", "autoLendRedeem", "autoBorrow", "autoBorrowRepay",
        "slippageTolerance", "slippageToleranceType",
    }
)  # fmt: skip
_TRIGGER_KEYS: Final = frozenset(
    {
        "triggerPrice", "triggerQuantity", "triggerBy", "stopLossTriggerPrice",
        "stopLossLimitPrice", "stopLossTriggerBy", "takeProfitTriggerPrice",
        "takeProfitLimitPrice", "takeProfitTriggerBy",
    }
)  # fmt: skip


def dec(value: Decimal) -> str:
    """A decimal as the venue writes it: plain digits, no exponent, no trailing zeros."""
    return canonical_decimal(value)


def _dec_opt(value: Decimal | None) -> str | None:
    return None if value is None else dec(value)


def iso_ms(time_us: int) -> str:
    """Naive ISO time in UTC with milliseconds (`2025-08-13T17:26:01.197`)."""
    moment = _EPOCH + timedelta(microseconds=time_us - time_us % 1000)
    return moment.isoformat(timespec="milliseconds")


def iso_s(time_ms: int) -> str:
    """Naive ISO time in UTC to the second (`2025-09-11T20:00:00`)."""
    return (_EPOCH + timedelta(milliseconds=time_ms)).isoformat(timespec="seconds")


# --- REST objects -----------------------------------------------------------------------------

_NULL_EXTRAS: Final = (
    "relatedOrderId", "stopLossLimitPrice", "stopLossTriggerBy", "stopLossTriggerPrice",
    "strategyId", "takeProfitLimitPrice", "takeProfitTriggerBy", "takeProfitTriggerPrice",
    "triggerBy", "triggerPrice", "triggerQuantity", "triggeredAt",
)  # fmt: skip


def _order_fields(order: Order) -> dict[str, JSON]:
    fields: dict[str, JSON] = {
        "clientId": order.client_id,
        "executedQuantity": dec(order.executed_quantity),
        "executedQuoteQuantity": dec(order.executed_quote_quantity),
        "id": order.id,
        "orderType": order.order_type,
        "reduceOnly": order.reduce_only,
        "selfTradePrevention": order.self_trade_prevention,
        "side": order.side,
        "status": order.status,
        "symbol": order.symbol,
        "timeInForce": order.time_in_force,
    }
    if order.order_type == LIMIT:
        fields["postOnly"] = order.post_only
        fields["price"] = _dec_opt(order.price)
        fields["quantity"] = _dec_opt(order.quantity)
    else:
        quantity = order.quantity if order.quantity is not None else order.executed_quantity
        quote = order.quote_quantity
        if quote is None:
            quote = order.executed_quote_quantity
        fields["quantity"] = dec(quantity)
        fields["quoteQuantity"] = dec(quote)
    for key in _NULL_EXTRAS:
        fields[key] = None
    return fields


def order_object(order: Order) -> dict[str, JSON]:
    """The REST order object (execute, cancel, order query, open orders)."""
    fields = _order_fields(order)
    fields["createdAt"] = order.created_us // 1000
    return dict(sorted(fields.items()))


def order_history_item(order: Order) -> dict[str, JSON]:
    """One item of `/wapi/v1/history/orders`: naive ISO `createdAt`, plus `expiryReason`,
    `systemOrderType` and the order's notional as `quoteQuantity` for limit orders."""
    fields = _order_fields(order)
    fields["createdAt"] = iso_ms(order.created_us)
    fields["expiryReason"] = order.expiry_reason
    fields["systemOrderType"] = None
    if order.order_type == LIMIT and order.price is not None and order.quantity is not None:
        fields["quoteQuantity"] = dec(CTX.multiply(order.price, order.quantity))
    return dict(sorted(fields.items()))


def fill_item(fill: Fill) -> dict[str, JSON]:
    """One item of `/wapi/v1/history/fills`."""
    return {
        "clientId": None if fill.client_id is None else str(fill.client_id),
        "fee": dec(fill.fee),
        "feeSymbol": fill.fee_asset,
        "isMaker": fill.is_maker,
        "orderId": fill.order_id,
        "price": dec(fill.price),
        "quantity": dec(fill.quantity),
        "side": fill.side,
        "symbol": fill.symbol,
        "systemOrderType": None,
        "timestamp": iso_ms(fill.time_us),
        "tradeId": fill.trade_id,
    }


def funding_item(payment: FundingPayment) -> dict[str, JSON]:
    """One item of `/wapi/v1/history/funding`."""
    return {
        "fundingRate": dec(payment.rate),
        "intervalEndTimestamp": iso_s(payment.interval_end_ms),
        "quantity": dec(payment.amount),
        "subaccountId": None,
        "symbol": payment.symbol,
        "userId": payment.user_id,
    }


def market_object(spec: MarketSpec, created_us: int) -> dict[str, JSON]:
    """One item of `/api/v1/markets`."""
    price_filter: dict[str, JSON] = {
        "minPrice": dec(spec.tick_size),
        "maxPrice": None,
        "tickSize": dec(spec.tick_size),
        "maxMultiplier": "1.25",
        "minMultiplier": "0.75",
    }
    item: dict[str, JSON] = {
        "symbol": spec.symbol,
        "baseSymbol": spec.base,
        "quoteSymbol": spec.quote,
        "marketType": spec.market_type,
        "filters": {
            "price": price_filter,
            "quantity": {
                "minQuantity": dec(spec.min_quantity),
                "maxQuantity": None,
                "stepSize": dec(spec.step_size),
            },
        },
        "imfFunction": None,
        "mmfFunction": None,
        "fundingInterval": None,
        "fundingRateUpperBound": None,
        "fundingRateLowerBound": None,
        "openInterestLimit": None,
        "orderBookState": "Open",
        "createdAt": iso_ms(created_us),
        "visible": True,
    }
    if spec.is_perp:
        item["imfFunction"] = {"base": "0.02", "factor": "0.0001", "type": "sqrt"}
        item["mmfFunction"] = {"base": "0.0125", "factor": "0.00006", "type": "sqrt"}
        item["fundingInterval"] = spec.funding_interval_ms
        item["fundingRateUpperBound"] = "100"
        item["fundingRateLowerBound"] = "-100"
        item["openInterestLimit"] = "0"
    return item


# --- stream payloads ---------------------------------------------------------------------------


def order_update(
    order: Order, event: str, time_us: int, fill: Fill | None = None
) -> dict[str, JSON]:
    """An `account.orderUpdate` payload for `order` as it is after `event`.

    `q` is the order's quantity (left out for orders placed by quote quantity), `Q` the
    quote quantity (the limit notional, or a market order's quote budget), `p` the limit
    price; `l`, `L`, `m`, `n`, `N` only on fills, `R` only on `orderExpired`.
    """
    data: dict[str, JSON] = {
        "e": event,
        "E": time_us + 1,
        "s": order.symbol,
        "S": order.side,
        "o": order.order_type.upper(),
        "f": order.time_in_force,
        "X": order.status,
        "i": order.id,
        "t": None,
        "z": dec(order.executed_quantity),
        "Z": dec(order.executed_quote_quantity),
        "V": order.self_trade_prevention,
        "T": time_us,
        "O": "USER",
        "r": bool(order.reduce_only),
        "y": order.post_only,
    }
    if order.client_id is not None:
        data["c"] = order.client_id
    if order.quantity is not None:
        data["q"] = dec(order.quantity)
    if order.order_type == LIMIT and order.price is not None and order.quantity is not None:
        data["p"] = dec(order.price)
        data["Q"] = dec(CTX.multiply(order.price, order.quantity))
    elif order.quote_quantity is not None:
        data["Q"] = dec(order.quote_quantity)
    if fill is not None:
        data.update(
            t=fill.trade_id,
            l=dec(fill.quantity),
            L=dec(fill.price),
            m=fill.is_maker,
            n=dec(fill.fee),
            N=fill.fee_asset,
        )
    if event == "orderExpired":
        data["R"] = order.expiry_reason
    return dict(sorted(data.items()))


# --- payload parsing ---------------------------------------------------------------------------


def payload_error(detail: str, what: str) -> PayloadError:
    """The venue's plain-text 400 for a payload it cannot parse."""
    return PayloadError(
        f'Bad Request parse request payload error: {detail} (occurred while parsing "{what}")'
    )


def _decimal(data: Mapping[str, JSON], key: str, what: str) -> Decimal | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        return inputs.parse_decimal(value)
    except inputs.BadInput as exc:
        raise payload_error(f'failed to parse "{key}": {exc.reason}', what) from None


def _choice(data: Mapping[str, JSON], key: str, allowed: tuple[str, ...], what: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise payload_error(f'failed to parse "{key}": unknown variant {value!r}', what)
    return value


def _flag(data: Mapping[str, JSON], key: str, what: str) -> bool | None:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise payload_error(f'failed to parse "{key}": expected a boolean', what)


def _client_id(data: Mapping[str, JSON], key: str, what: str, *, text: bool = False) -> int | None:
    """A client id: a JSON integer, or (with `text`) ASCII digits as a query string has it."""
    value = data.get(key)
    if value is None:
        return None
    try:
        if text and isinstance(value, str):
            return inputs.parse_int(value, UINT32_MAX)
        return inputs.int_value(value, UINT32_MAX)
    except inputs.BadInput:
        raise payload_error(f'failed to parse "{key}": expected a u32', what) from None


def _symbol(data: Mapping[str, JSON], markets: Mapping[str, MarketSpec], what: str) -> str:
    value = data.get("symbol")
    if value is None:
        raise payload_error("missing field `symbol`", what)
    if not isinstance(value, str) or value not in markets:
        raise payload_error('failed to parse "MarketSymbol": Invalid market symbol', what)
    return value


def parse_order(data: JSON, markets: Mapping[str, MarketSpec]) -> OrderRequest:
    """An `orderExecute` payload as an `OrderRequest`; the market filters are checked later."""
    what = "OrderExecutePayload"
    if not isinstance(data, dict):
        raise payload_error("expected an object", what)
    symbol = _symbol(data, markets, what)
    side = _choice(data, "side", _SIDES, what)
    if side is None:
        raise payload_error("missing field `side`", what)
    order_type = _choice(data, "orderType", _ORDER_TYPES, what)
    if order_type is None:
        raise payload_error("missing field `orderType`", what)
    if any(data.get(key) is not None for key in _TRIGGER_KEYS):
        raise ApiError(
            400, "NOT_IMPLEMENTED", "Conditional orders are not supported by the local exchange"
        )
    unknown = sorted(key for key in data if key not in _ORDER_KEYS | _TRIGGER_KEYS)
    if unknown:
        raise payload_error(f"unknown field `{unknown[0]}`", what)
    stp = _choice(data, "selfTradePrevention", _STPS, what)
    return OrderRequest(
        symbol=symbol,
        side=side,
        order_type=order_type,
        quantity=_decimal(data, "quantity", what),
        quote_quantity=_decimal(data, "quoteQuantity", what),
        price=_decimal(data, "price", what),
        time_in_force=_choice(data, "timeInForce", _TIFS, what),
        post_only=bool(_flag(data, "postOnly", what)),
        reduce_only=_flag(data, "reduceOnly", what),
        client_id=_client_id(data, "clientId", what),
        self_trade_prevention=stp or "RejectTaker",
    )


def parse_order_ref(
    data: JSON, markets: Mapping[str, MarketSpec], what: str
) -> tuple[str, str | None, int | None]:
    """`{symbol, orderId | clientId}` (cancel, order query): exactly one of the two ids.

    `orderId` may come as a string (the spec) or a number (as ccxt sends it).
    """
    if not isinstance(data, dict):
        raise payload_error("expected an object", what)
    symbol = _symbol(data, markets, what)
    raw_id = data.get("orderId")
    order_id: str | None = None
    if raw_id is not None:
        try:
            number = (
                inputs.parse_int(raw_id) if isinstance(raw_id, str) else inputs.int_value(raw_id)
            )
        except inputs.BadInput:
            raise payload_error('failed to parse "orderId": invalid order id', what) from None
        order_id = str(number)
    client_id = _client_id(data, "clientId", what, text=True)
    if order_id is None and client_id is None:
        raise ApiError(400, "INVALID_CLIENT_REQUEST", "Must specify either `clientId` or `orderId`")
    if order_id is not None and client_id is not None:
        raise ApiError(
            400, "INVALID_CLIENT_REQUEST", "Must specify only one of `clientId` or `orderId`"
        )
    return symbol, order_id, client_id
