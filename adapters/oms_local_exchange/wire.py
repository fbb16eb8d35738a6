"""The local exchange's wire formats: venue records -> Backpack JSON, request payloads -> records.

Pure. The shapes themselves are `frames`' (shared with the benchmark and the recorded
sessions); this module hands it the figures of the venue's own records.

Payload parsing mirrors the venue's two kinds of refusal: a payload of the wrong shape or
type is a `PayloadError` (the venue answers those in plain text), a well-formed but
unacceptable one is an `ApiError` with `{"code", "message"}`. Every number goes through the
exchange's strict parsers (`inputs`): ASCII digits, bounded magnitude and digit count.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from oms_local_exchange import frames, inputs
from oms_local_exchange.arithmetic import text
from oms_local_exchange.inputs import UINT32_MAX
from oms_local_exchange.model import (
    LIMIT,
    MARKET,
    ApiError,
    Exit,
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
    "market_object",
    "order_fields",
    "order_history_item",
    "order_object",
    "order_update",
    "parse_order",
    "parse_order_ref",
    "payload_error",
]

JSON = Any
_SIDES: Final = ("Bid", "Ask")
_ORDER_TYPES: Final = (LIMIT, MARKET)
_TIFS: Final = ("GTC", "IOC", "FOK")
_STPS: Final = ("RejectTaker", "RejectMaker", "RejectBoth")
_TRIGGER_BY: Final = ("LastPrice", "MarkPrice", "IndexPrice")
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
    return text(value)


# --- venue records as wire objects ------------------------------------------------------------


def order_fields(order: Order) -> frames.OrderFields:
    """What the venue reports of `order` now."""
    return frames.OrderFields(
        id=order.id,
        symbol=order.symbol,
        side=order.side,
        order_type=order.order_type,
        status=order.status,
        time_in_force=order.time_in_force,
        client_id=order.client_id,
        # A conditional order shows quantity 0 until it triggers (fact sheet §2.4).
        quantity=order.quantity
        if order.quantity is not None or order.trigger_price is None
        else Decimal(0),
        quote_quantity=order.quote_quantity,
        price=order.price,
        executed_quantity=order.executed_quantity,
        executed_quote_quantity=order.executed_quote_quantity,
        post_only=order.post_only,
        reduce_only=order.reduce_only,
        self_trade_prevention=order.self_trade_prevention,
        created_us=order.created_us,
        expiry_reason=order.expiry_reason,
        origin=order.origin,
        strategy_id=order.strategy_id,
        related_order_id=order.related_order_id,
        trigger_price=order.trigger_price,
        trigger_quantity=order.trigger_quantity,
        trigger_by=order.trigger_by,
        triggered_us=order.triggered_us,
        stop_loss=_exit(order.stop_loss),
        take_profit=_exit(order.take_profit),
    )


def _exit(exit_: Exit | None) -> tuple[Decimal, Decimal | None, str | None] | None:
    return None if exit_ is None else (exit_.trigger_price, exit_.limit_price, exit_.trigger_by)


def order_object(order: Order) -> dict[str, JSON]:
    """The REST order object (execute, cancel, order query, open orders)."""
    return frames.order_object(order_fields(order))


def order_history_item(order: Order) -> dict[str, JSON]:
    """One item of `/wapi/v1/history/orders`."""
    return frames.order_history_item(order_fields(order))


def fill_item(fill: Fill) -> dict[str, JSON]:
    """One item of `/wapi/v1/history/fills`."""
    return frames.fill_item(
        trade_id=fill.trade_id,
        order_id=fill.order_id,
        client_id=fill.client_id,
        symbol=fill.symbol,
        side=fill.side,
        price=fill.price,
        quantity=fill.quantity,
        fee=fill.fee,
        fee_asset=fill.fee_asset,
        is_maker=fill.is_maker,
        time_us=fill.time_us,
    )


def funding_item(payment: FundingPayment) -> dict[str, JSON]:
    """One item of `/wapi/v1/history/funding`."""
    return frames.funding_item(
        symbol=payment.symbol,
        interval_end_ms=payment.interval_end_ms,
        rate=payment.rate,
        amount=payment.amount,
        user_id=payment.user_id,
    )


def market_object(spec: MarketSpec, created_us: int) -> dict[str, JSON]:
    """One item of `/api/v1/markets`."""
    return frames.market_object(
        symbol=spec.symbol,
        base=spec.base,
        quote=spec.quote,
        market_type=spec.market_type,
        tick_size=spec.tick_size,
        step_size=spec.step_size,
        min_quantity=spec.min_quantity,
        created_us=created_us,
        funding_interval_ms=spec.funding_interval_ms,
        min_multiplier=spec.min_multiplier,
        max_multiplier=spec.max_multiplier,
    )


def order_update(
    order: Order, event: str, time_us: int, fill: Fill | None = None
) -> dict[str, JSON]:
    """An `account.orderUpdate` payload for `order` as it is after `event` at `time_us` (the
    engine time `T`; the message is sent a microsecond later, `E`)."""
    figures = None
    if fill is not None:
        figures = frames.FillFigures(
            trade_id=fill.trade_id,
            quantity=fill.quantity,
            price=fill.price,
            fee=fill.fee,
            fee_asset=fill.fee_asset,
            is_maker=fill.is_maker,
        )
    return frames.order_update(
        order_fields(order), event, event_time_us=time_us + 1, engine_time_us=time_us, fill=figures
    )


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
        trigger_price=_decimal(data, "triggerPrice", what),
        trigger_quantity=_trigger_quantity(data, what),
        trigger_by=_choice(data, "triggerBy", _TRIGGER_BY, what),
        stop_loss=_exit_of(data, "stopLoss", what),
        take_profit=_exit_of(data, "takeProfit", what),
    )


def _trigger_quantity(data: Mapping[str, JSON], what: str) -> str | None:
    """`triggerQuantity`: a decimal, or a percentage (`"80%"`), kept as the venue's text."""
    value = data.get("triggerQuantity")
    if value is None:
        return None
    if isinstance(value, str) and value.endswith("%"):
        try:
            inputs.parse_decimal(value[:-1])
        except inputs.BadInput as exc:
            raise payload_error(f'failed to parse "triggerQuantity": {exc.reason}', what) from None
        return value
    number = _decimal(data, "triggerQuantity", what)
    assert number is not None
    return dec(number)


def _exit_of(data: Mapping[str, JSON], name: str, what: str) -> Exit | None:
    """An attached stop loss or take profit (`<name>TriggerPrice`, `...LimitPrice`,
    `...TriggerBy`); None when no trigger price is given."""
    trigger = _decimal(data, f"{name}TriggerPrice", what)
    limit = _decimal(data, f"{name}LimitPrice", what)
    by = _choice(data, f"{name}TriggerBy", _TRIGGER_BY, what)
    if trigger is None:
        if limit is not None or by is not None:
            raise ApiError(
                400, "INVALID_CLIENT_REQUEST", f"`{name}TriggerPrice` is required with `{name}*`"
            )
        return None
    return Exit(trigger_price=trigger, limit_price=limit, trigger_by=by)


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
