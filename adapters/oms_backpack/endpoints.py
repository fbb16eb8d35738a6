"""Intents -> Backpack request specs. Pure: what to send, not how.

Each function returns a `RequestSpec`: method, path, instruction (None for public
endpoints), and the parameters as the exact strings, integers and booleans that go on the
wire. The signer signs these same values, so what is sent is what is signed.

Order commands are checked against the market's filters first: a price that is not a
multiple of the tick size, a quantity that is not a multiple of the step size or is below
the minimum, a missing price on a limit order: each raises `InvalidOrder` with a clear
message, before anything is logged or sent. Nothing is rounded behind the caller's back.
(`InvalidOrder` is `oms.core.errors.InvalidOrder`, a `ProgramError` and a `ValueError`; it is
re-exported here for the code that imported it from this module.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Final

import attrs

from oms.core.errors import InvalidOrder
from oms.core.events import OrderSubmitted
from oms.core.state import Market
from oms.core.values import CTX, OrderType, Side, decimal_in_range

__all__ = [
    "InvalidOrder",
    "Param",
    "RequestSpec",
    "account",
    "cancel_all",
    "cancel_order",
    "capital",
    "collateral",
    "depth",
    "execute_batch",
    "execute_order",
    "fill_history",
    "format_decimal",
    "funding_history",
    "mark_prices",
    "markets",
    "open_orders",
    "order_history",
    "order_query",
    "positions",
    "server_time",
    "ticker",
    "update_account",
]

Param = str | int | bool
UINT32_MAX: Final = 2**32 - 1


@attrs.frozen(kw_only=True)
class RequestSpec:
    """One REST request. GET and DELETE-with-query carry `query`; POST/DELETE/PATCH a `body`
    (a mapping, or a list of mappings for a batch). `instruction` is None for public calls."""

    method: str
    path: str
    instruction: str | None = None
    query: Mapping[str, Param] = attrs.field(factory=dict)
    body: Mapping[str, Param] | Sequence[Mapping[str, Param]] | None = None

    @property
    def signed_params(self) -> Mapping[str, Param] | Sequence[Mapping[str, Param]]:
        """What the signature covers: the body, or else the query."""
        return self.body if self.body is not None else self.query


def format_decimal(value: Decimal) -> str:
    """Plain decimal text, no exponent (`1E-7` -> `0.0000001`)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _multiple(value: Decimal, unit: Decimal, what: str, symbol: str) -> str:
    if unit > 0 and CTX.remainder(value, unit) != 0:
        raise InvalidOrder(f"{what} {value} is not a multiple of {symbol}'s {what} step {unit}")
    return format_decimal(value)


def _order_body(command: OrderSubmitted, market: Market) -> dict[str, Param]:
    symbol = command.symbol
    for what, value in (
        ("quantity", command.quantity),
        ("price", command.price),
        ("quote quantity", command.quote_quantity),
    ):
        if value is not None and not decimal_in_range(value):
            raise InvalidOrder(f"{what} {value} is out of range")
    if market.symbol != symbol:
        raise InvalidOrder(f"market {market.symbol} given for an order on {symbol}")
    if not 0 <= command.client_id <= UINT32_MAX:
        raise InvalidOrder(f"client id {command.client_id} is not a uint32")
    body: dict[str, Param] = {
        "symbol": symbol,
        "side": "Bid" if command.side is Side.BID else "Ask",
        "clientId": command.client_id,
    }
    quantity = command.quantity
    # A trigger order's trigger quantity stands for its quantity (checked below).
    triggered = command.trigger_quantity is not None
    if quantity is not None:
        if quantity <= 0:
            raise InvalidOrder(f"quantity {quantity} must be positive")
        if quantity < market.min_quantity:
            raise InvalidOrder(
                f"quantity {quantity} is below {symbol}'s minimum {market.min_quantity}"
            )
        body["quantity"] = _multiple(quantity, market.step_size, "quantity", symbol)
    if command.order_type is OrderType.MARKET:
        body["orderType"] = "Market"
        if command.price is not None:
            raise InvalidOrder("a market order takes no price")
        if (quantity is None) == (command.quote_quantity is None) and not triggered:
            raise InvalidOrder("a market order needs exactly one of quantity and quote quantity")
        if command.quote_quantity is not None:
            if command.quote_quantity <= 0:
                raise InvalidOrder(f"quote quantity {command.quote_quantity} must be positive")
            body["quoteQuantity"] = format_decimal(command.quote_quantity)
    else:
        body["orderType"] = "Limit"
        if quantity is None and not triggered:
            raise InvalidOrder("a limit order needs a quantity")
        if command.quote_quantity is not None:
            raise InvalidOrder("quote quantity is for market orders only")
        if command.price is None or command.price <= 0:
            raise InvalidOrder("a limit order needs a positive price")
        body["price"] = _multiple(command.price, market.tick_size, "price", symbol)
        if command.order_type is OrderType.LIMIT_MAKER or command.post_only:
            body["postOnly"] = True
    if command.time_in_force is not None:
        body["timeInForce"] = command.time_in_force.value
    if command.reduce_only:
        if not market.market_type.has_positions:
            raise InvalidOrder(f"reduce-only is for perpetual markets; {symbol} is spot")
        body["reduceOnly"] = True
    _trigger_params(body, command, market)
    return body


_TRIGGER_BY: Final = ("LastPrice", "MarkPrice", "IndexPrice")


def _trigger_by(value: str | None, what: str) -> str | None:
    if value is not None and value not in _TRIGGER_BY:
        raise InvalidOrder(f"{what} {value!r} is not one of {', '.join(_TRIGGER_BY)}")
    return value


def _price(value: Decimal, market: Market, what: str) -> str:
    if not decimal_in_range(value) or value <= 0:
        raise InvalidOrder(f"{what} {value} must be a positive price")
    return _multiple(value, market.tick_size, "price", market.symbol)


def _trigger_params(body: dict[str, Param], command: OrderSubmitted, market: Market) -> None:
    """A conditional order's trigger (its trigger quantity replaces `quantity`) and the exits
    attached to an order, as the venue's parameters."""
    if (command.trigger_price is None) != (command.trigger_quantity is None):
        raise InvalidOrder("a trigger order needs both a trigger price and a trigger quantity")
    if command.trigger_price is not None and command.trigger_quantity is not None:
        if command.quantity is not None or command.quote_quantity is not None:
            raise InvalidOrder(
                "a trigger order takes a trigger quantity, not a quantity or quote quantity"
            )
        body["triggerPrice"] = _price(command.trigger_price, market, "trigger price")
        body["triggerQuantity"] = _trigger_quantity(command.trigger_quantity, market)
        by = _trigger_by(command.trigger_by, "trigger by")
        if by is not None:
            body["triggerBy"] = by
    elif command.trigger_by is not None:
        raise InvalidOrder("trigger by is for trigger orders")
    for name, trigger, limit, by in (
        (
            "stopLoss",
            command.stop_loss_trigger_price,
            command.stop_loss_limit_price,
            command.stop_loss_trigger_by,
        ),
        (
            "takeProfit",
            command.take_profit_trigger_price,
            command.take_profit_limit_price,
            command.take_profit_trigger_by,
        ),
    ):
        if trigger is None:
            if limit is not None or by is not None:
                raise InvalidOrder(f"{name} needs a trigger price")
            continue
        if not market.market_type.has_positions:
            raise InvalidOrder(
                f"stop loss and take profit are for perpetual markets; {market.symbol} is spot"
            )
        body[f"{name}TriggerPrice"] = _price(trigger, market, f"{name} trigger price")
        if limit is not None:
            body[f"{name}LimitPrice"] = _price(limit, market, f"{name} limit price")
        watched = _trigger_by(by, f"{name} trigger by")
        if watched is not None:
            body[f"{name}TriggerBy"] = watched


def _trigger_quantity(text: str, market: Market) -> str:
    """A quantity (a multiple of the step size, at least the minimum) or a percentage in
    (0, 100] such as `80%`."""
    number_text = text[:-1] if text.endswith("%") else text
    try:
        number = Decimal(number_text)
    except ArithmeticError:
        raise InvalidOrder(f"trigger quantity {text!r} is not a quantity or a percentage") from None
    if not decimal_in_range(number) or number <= 0:
        raise InvalidOrder(f"trigger quantity {text!r} must be positive")
    if text.endswith("%"):
        if number > 100:
            raise InvalidOrder(f"trigger quantity {text!r} is more than 100%")
        return format_decimal(number) + "%"
    if number < market.min_quantity:
        raise InvalidOrder(
            f"trigger quantity {number} is below {market.symbol}'s minimum {market.min_quantity}"
        )
    return _multiple(number, market.step_size, "quantity", market.symbol)


def execute_order(command: OrderSubmitted, market: Market) -> RequestSpec:
    """`POST /api/v1/order` for an `OrderSubmitted`."""
    return RequestSpec(
        method="POST",
        path="/api/v1/order",
        instruction="orderExecute",
        body=_order_body(command, market),
    )


def execute_batch(orders: Sequence[tuple[OrderSubmitted, Market]]) -> RequestSpec:
    """`POST /api/v1/orders`: several orders in one request (signed once per order)."""
    if not orders:
        raise InvalidOrder("a batch needs at least one order")
    return RequestSpec(
        method="POST",
        path="/api/v1/orders",
        instruction="orderExecute",
        body=[_order_body(command, market) for command, market in orders],
    )


def _order_ref(symbol: str, client_id: int | None, venue_id: str | None) -> dict[str, Param]:
    if (client_id is None) == (venue_id is None):
        raise ValueError("name the order by exactly one of client id and venue id")
    ref: dict[str, Param] = {"symbol": symbol}
    if client_id is not None:
        ref["clientId"] = client_id
    else:
        assert venue_id is not None
        ref["orderId"] = venue_id
    return ref


def cancel_order(
    symbol: str, *, client_id: int | None = None, venue_id: str | None = None
) -> RequestSpec:
    return RequestSpec(
        method="DELETE",
        path="/api/v1/order",
        instruction="orderCancel",
        body=_order_ref(symbol, client_id, venue_id),
    )


def cancel_all(symbol: str) -> RequestSpec:
    return RequestSpec(
        method="DELETE",
        path="/api/v1/orders",
        instruction="orderCancelAll",
        body={"symbol": symbol},
    )


def order_query(
    symbol: str, *, client_id: int | None = None, venue_id: str | None = None
) -> RequestSpec:
    """`GET /api/v1/order`: only resting orders are found (404 for finished ones)."""
    return RequestSpec(
        method="GET",
        path="/api/v1/order",
        instruction="orderQuery",
        query=_order_ref(symbol, client_id, venue_id),
    )


def _query(**params: Param | None) -> dict[str, Param]:
    return {key: value for key, value in params.items() if value is not None}


def open_orders(symbol: str | None = None, market_type: str | None = None) -> RequestSpec:
    return RequestSpec(
        method="GET",
        path="/api/v1/orders",
        instruction="orderQueryAll",
        query=_query(symbol=symbol, marketType=market_type),
    )


def order_history(
    *,
    venue_id: str | None = None,
    symbol: str | None = None,
    limit: int = 1000,
    offset: int = 0,
    sort_direction: str | None = None,
) -> RequestSpec:
    return RequestSpec(
        method="GET",
        path="/wapi/v1/history/orders",
        instruction="orderHistoryQueryAll",
        query=_query(
            orderId=venue_id,
            symbol=symbol,
            limit=limit,
            offset=offset,
            sortDirection=sort_direction,
        ),
    )


def fill_history(
    *,
    venue_id: str | None = None,
    symbol: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    limit: int = 1000,
    offset: int = 0,
    sort_direction: str | None = "Asc",
) -> RequestSpec:
    """`GET /wapi/v1/history/fills`, all fill types (liquidations and ADL fills move positions
    too, so reconciliation wants them)."""
    return RequestSpec(
        method="GET",
        path="/wapi/v1/history/fills",
        instruction="fillHistoryQueryAll",
        query=_query(
            orderId=venue_id,
            symbol=symbol,
            **{"from": from_ms, "to": to_ms},
            limit=limit,
            offset=offset,
            sortDirection=sort_direction,
        ),
    )


def funding_history(
    *, symbol: str | None = None, limit: int = 1000, offset: int = 0
) -> RequestSpec:
    return RequestSpec(
        method="GET",
        path="/wapi/v1/history/funding",
        instruction="fundingHistoryQueryAll",
        query=_query(symbol=symbol, limit=limit, offset=offset, sortDirection="Desc"),
    )


def capital() -> RequestSpec:
    return RequestSpec(method="GET", path="/api/v1/capital", instruction="balanceQuery")


def collateral() -> RequestSpec:
    return RequestSpec(
        method="GET", path="/api/v1/capital/collateral", instruction="collateralQuery"
    )


def positions(symbol: str | None = None) -> RequestSpec:
    return RequestSpec(
        method="GET",
        path="/api/v1/position",
        instruction="positionQuery",
        query=_query(symbol=symbol),
    )


def account() -> RequestSpec:
    return RequestSpec(method="GET", path="/api/v1/account", instruction="accountQuery")


def update_account(*, leverage_limit: Decimal | None = None) -> RequestSpec:
    """`PATCH /api/v1/account`; leverage is one account-wide limit, not per symbol."""
    body: dict[str, Param] = {}
    if leverage_limit is not None:
        if leverage_limit <= 0:
            raise ValueError("leverage must be positive")
        body["leverageLimit"] = format_decimal(leverage_limit)
    return RequestSpec(
        method="PATCH", path="/api/v1/account", instruction="accountUpdate", body=body
    )


def markets() -> RequestSpec:
    return RequestSpec(method="GET", path="/api/v1/markets")


def depth(symbol: str, limit: int | None = None) -> RequestSpec:
    return RequestSpec(method="GET", path="/api/v1/depth", query=_query(symbol=symbol, limit=limit))


def ticker(symbol: str) -> RequestSpec:
    return RequestSpec(method="GET", path="/api/v1/ticker", query={"symbol": symbol})


def mark_prices(symbol: str | None = None) -> RequestSpec:
    return RequestSpec(method="GET", path="/api/v1/markPrices", query=_query(symbol=symbol))


def server_time() -> RequestSpec:
    return RequestSpec(method="GET", path="/api/v1/time")
