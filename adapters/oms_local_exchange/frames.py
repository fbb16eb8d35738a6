"""Backpack's wire shapes, built from plain figures: stream frames and REST items.

The one place that knows how a Backpack message is laid out. The local exchange writes every
message through it, and so do the benchmark's synthetic sessions (`oms_backpack.bench`) and
the recorded sessions (`replay/make_sessions.py`), so all three agree on the shape. Pure and
light: standard library, attrs and the exchange's arithmetic; no engine, no client, no I/O.

Conventions (fact sheet shared/backpack/api.md §2, §3):

- decimals are strings in the venue's plain form (`arithmetic.text`: `"150.25"`, `"0"`),
  never JSON numbers; ids of orders are strings, trade ids integers;
- stream payloads carry `E` (when the message was sent) and `T` (when the fact happened at
  the matching engine), both in microseconds, and their keys in sorted order, as real
  payloads have them; `t` is null on every order update but a fill;
- REST order objects carry `createdAt` in milliseconds and explicit nulls; history items
  carry naive ISO times in UTC (`"2025-08-13T17:26:01.197"`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import attrs

from oms_local_exchange.arithmetic import display, multiply, text

__all__ = [
    "ORDER_STREAM",
    "POSITION_STREAM",
    "FillFigures",
    "OrderFields",
    "book_ticker",
    "capital",
    "depth_update",
    "error",
    "fill_item",
    "frame",
    "funding_item",
    "iso_ms",
    "iso_s",
    "kline",
    "mark_price",
    "market_object",
    "open_interest",
    "order_history_item",
    "order_object",
    "order_update",
    "position_item",
    "position_update",
    "ticker",
    "trade",
]

JSON = Any
ORDER_STREAM: Final = "account.orderUpdate"
POSITION_STREAM: Final = "account.positionUpdate"
LIQUIDATION_STREAM: Final = "liquidation"
# The origins (`O`) of the orders the venue places to close a position: their trades are also
# published on the `liquidation` stream. The others (collateral conversion, settlement, the
# backstop liquidity provider taking over a position) are not liquidations of the account.
LIQUIDATION_ORIGINS: Final = frozenset({"LIQUIDATION_AUTOCLOSE", "ADL_AUTOCLOSE"})
_EPOCH: Final = datetime(1970, 1, 1)
_IMF_FUNCTION: Final = {"base": "0.02", "factor": "0.0001", "type": "sqrt"}
_MMF_FUNCTION: Final = {"base": "0.0125", "factor": "0.00006", "type": "sqrt"}
# Keys the venue sends as null on an order object when the order has no trigger or link.
_NULL_EXTRAS: Final = (
    "relatedOrderId", "stopLossLimitPrice", "stopLossTriggerBy", "stopLossTriggerPrice",
    "strategyId", "takeProfitLimitPrice", "takeProfitTriggerBy", "takeProfitTriggerPrice",
    "triggerBy", "triggerPrice", "triggerQuantity", "triggeredAt",
)  # fmt: skip


# How order history names an order the venue placed itself (`systemOrderType`), by origin.
_SYSTEM_ORDER_TYPES: Final = {
    "LIQUIDATION_AUTOCLOSE": "LiquidatePositionOnBook",
    "ADL_AUTOCLOSE": "LiquidatePositionOnAdl",
    "COLLATERAL_CONVERSION": "CollateralConversion",
}


def _opt(value: Decimal | None) -> str | None:
    return None if value is None else text(value)


def frame(stream: str, data: Mapping[str, JSON]) -> str:
    """The text of one stream message: compact JSON `{"data": ..., "stream": ...}`."""
    return json.dumps({"data": data, "stream": stream}, separators=(",", ":"))


def iso_ms(time_us: int) -> str:
    """Naive ISO time in UTC to the millisecond (`2025-08-13T17:26:01.197`)."""
    moment = _EPOCH + timedelta(microseconds=time_us - time_us % 1000)
    return moment.isoformat(timespec="milliseconds")


def iso_s(time_ms: int) -> str:
    """Naive ISO time in UTC to the second (`2025-09-11T20:00:00`)."""
    return (_EPOCH + timedelta(milliseconds=time_ms)).isoformat(timespec="seconds")


def error(code: str, message: str) -> dict[str, str]:
    """The body of a refusal (any 4xx with a JSON body)."""
    return {"code": code, "message": message}


# --- orders ------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class OrderFields:
    """An order as the venue reports it at one moment.

    `order_type` is `Limit` or `Market` (REST spelling; the stream upper-cases it).
    `quote_quantity` is a market order's quote budget, None for orders placed by quantity.
    """

    id: str
    symbol: str
    side: str
    order_type: str
    status: str
    time_in_force: str = "GTC"
    client_id: int | None = None
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    price: Decimal | None = None
    executed_quantity: Decimal = Decimal(0)
    executed_quote_quantity: Decimal = Decimal(0)
    post_only: bool = False
    reduce_only: bool | None = None
    self_trade_prevention: str = "RejectTaker"
    created_us: int = 0
    expiry_reason: str | None = None
    # Who placed it, and its links: a venue strategy's id, an attached exit's parent.
    origin: str = "USER"
    strategy_id: int | None = None
    related_order_id: str | None = None
    # A conditional order's trigger, and the exits attached to an order (each a
    # (trigger price, limit price or None, trigger by or None)).
    trigger_price: Decimal | None = None
    trigger_quantity: str | None = None
    trigger_by: str | None = None
    triggered_us: int | None = None
    stop_loss: tuple[Decimal, Decimal | None, str | None] | None = None
    take_profit: tuple[Decimal, Decimal | None, str | None] | None = None

    @property
    def is_limit(self) -> bool:
        return self.order_type.upper() == "LIMIT"


@attrs.frozen(kw_only=True)
class FillFigures:
    """What an `orderFill` update adds: one trade of the order."""

    trade_id: int
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str
    is_maker: bool


def order_update(
    order: OrderFields,
    event: str,
    *,
    event_time_us: int,
    engine_time_us: int,
    fill: FillFigures | None = None,
) -> dict[str, JSON]:
    """An `account.orderUpdate` payload for `order` as it stands after `event`.

    `q` is left out for an order placed by quote quantity; `p` and `Q` (the limit notional)
    are written for limit orders, `Q` (the quote budget) for market orders placed by quote
    quantity; `l`, `L`, `m`, `n`, `N` only with a fill; `R` only on `orderExpired`.
    """
    data: dict[str, JSON] = {
        "e": event,
        "E": event_time_us,
        "s": order.symbol,
        "S": order.side,
        "o": order.order_type.upper(),
        "f": order.time_in_force,
        "X": order.status,
        "i": order.id,
        "t": None,
        "z": text(order.executed_quantity),
        "Z": text(order.executed_quote_quantity),
        "V": order.self_trade_prevention,
        "T": engine_time_us,
        "O": order.origin,
        "r": bool(order.reduce_only),
        "y": order.post_only,
    }
    _links_and_triggers(data, order)
    if order.client_id is not None:
        data["c"] = order.client_id
    if order.quantity is not None:
        data["q"] = text(order.quantity)
    if order.is_limit and order.price is not None and order.quantity is not None:
        data["p"] = text(order.price)
        data["Q"] = text(multiply(order.price, order.quantity))
    elif order.quote_quantity is not None:
        data["Q"] = text(order.quote_quantity)
    if fill is not None:
        data.update(
            t=fill.trade_id,
            l=text(fill.quantity),
            L=text(fill.price),
            m=fill.is_maker,
            n=text(fill.fee),
            N=fill.fee_asset,
        )
    if event == "orderExpired":
        data["R"] = order.expiry_reason
    return dict(sorted(data.items()))


def _links_and_triggers(data: dict[str, JSON], order: OrderFields) -> None:
    """The stream keys of an order's links and triggers, each only when set (fact sheet §3.3:
    `I` related order, `H` strategy, `P`/`B`/`Y` trigger, `b`/`k`/`g` stop loss, `a`/`j`/`d`
    take profit)."""
    if order.related_order_id is not None:
        data["I"] = order.related_order_id
    if order.strategy_id is not None:
        data["H"] = order.strategy_id
    if order.trigger_price is not None:
        data["P"] = text(order.trigger_price)
        if order.trigger_by is not None:
            data["B"] = order.trigger_by
        if order.trigger_quantity is not None:
            data["Y"] = order.trigger_quantity
    for exit_, price_key, limit_key, by_key in (
        (order.stop_loss, "b", "k", "g"),
        (order.take_profit, "a", "j", "d"),
    ):
        if exit_ is not None:
            data[price_key] = text(exit_[0])
            if exit_[1] is not None:
                data[limit_key] = text(exit_[1])
            if exit_[2] is not None:
                data[by_key] = exit_[2]


def _rest_links_and_triggers(fields: dict[str, JSON], order: OrderFields) -> None:
    """The REST keys of an order's links and triggers (null when unset)."""
    fields["relatedOrderId"] = order.related_order_id
    fields["strategyId"] = order.strategy_id
    fields["triggerPrice"] = _opt(order.trigger_price)
    fields["triggerQuantity"] = order.trigger_quantity
    fields["triggerBy"] = order.trigger_by
    fields["triggeredAt"] = None if order.triggered_us is None else order.triggered_us // 1000
    for exit_, name in ((order.stop_loss, "stopLoss"), (order.take_profit, "takeProfit")):
        if exit_ is not None:
            fields[f"{name}TriggerPrice"] = text(exit_[0])
            fields[f"{name}LimitPrice"] = _opt(exit_[1])
            fields[f"{name}TriggerBy"] = exit_[2]


def _order_fields(order: OrderFields) -> dict[str, JSON]:
    fields: dict[str, JSON] = {
        "clientId": order.client_id,
        "executedQuantity": text(order.executed_quantity),
        "executedQuoteQuantity": text(order.executed_quote_quantity),
        "id": order.id,
        "orderType": order.order_type,
        "reduceOnly": order.reduce_only,
        "selfTradePrevention": order.self_trade_prevention,
        "side": order.side,
        "status": order.status,
        "symbol": order.symbol,
        "timeInForce": order.time_in_force,
    }
    if order.is_limit:
        fields["postOnly"] = order.post_only
        fields["price"] = _opt(order.price)
        fields["quantity"] = _opt(order.quantity)
    else:
        # A market order shows what it was placed with, or what it came to.
        quantity = order.quantity if order.quantity is not None else order.executed_quantity
        quote = order.quote_quantity
        if quote is None:
            quote = order.executed_quote_quantity
        fields["quantity"] = text(quantity)
        fields["quoteQuantity"] = text(quote)
    for key in _NULL_EXTRAS:
        fields[key] = None
    _rest_links_and_triggers(fields, order)
    return fields


def order_object(order: OrderFields) -> dict[str, JSON]:
    """The REST order object (execute, cancel, order query, open orders)."""
    fields = _order_fields(order)
    fields["createdAt"] = order.created_us // 1000
    return dict(sorted(fields.items()))


def order_history_item(order: OrderFields) -> dict[str, JSON]:
    """One item of `/wapi/v1/history/orders`: an ISO `createdAt`, `expiryReason`,
    `systemOrderType`, and a limit order's notional as `quoteQuantity`."""
    fields = _order_fields(order)
    fields["createdAt"] = iso_ms(order.created_us)
    fields["expiryReason"] = order.expiry_reason
    fields["systemOrderType"] = _SYSTEM_ORDER_TYPES.get(order.origin)
    if order.is_limit and order.price is not None and order.quantity is not None:
        fields["quoteQuantity"] = text(multiply(order.price, order.quantity))
    return dict(sorted(fields.items()))


def fill_item(
    *,
    trade_id: int,
    order_id: str,
    client_id: int | None,
    symbol: str,
    side: str,
    price: Decimal,
    quantity: Decimal,
    fee: Decimal,
    fee_asset: str,
    is_maker: bool,
    time_us: int,
) -> dict[str, JSON]:
    """One item of `/wapi/v1/history/fills` (its `clientId` is a string there)."""
    return {
        "clientId": None if client_id is None else str(client_id),
        "fee": text(fee),
        "feeSymbol": fee_asset,
        "isMaker": is_maker,
        "orderId": order_id,
        "price": text(price),
        "quantity": text(quantity),
        "side": side,
        "symbol": symbol,
        "systemOrderType": None,
        "timestamp": iso_ms(time_us),
        "tradeId": trade_id,
    }


# --- account ----------------------------------------------------------------------------------


def capital(balances: Iterable[tuple[str, Decimal, Decimal, Decimal]]) -> dict[str, JSON]:
    """`GET /api/v1/capital` from (asset, available, locked, staked), by asset."""
    return {
        asset: {"available": text(available), "locked": text(locked), "staked": text(staked)}
        for asset, available, locked, staked in sorted(balances)
    }


def funding_item(
    *, symbol: str, interval_end_ms: int, rate: Decimal, amount: Decimal, user_id: int
) -> dict[str, JSON]:
    """One item of `/wapi/v1/history/funding`; `amount` > 0 was received."""
    return {
        "fundingRate": text(rate),
        "intervalEndTimestamp": iso_s(interval_end_ms),
        "quantity": text(amount),
        "subaccountId": None,
        "symbol": symbol,
        "userId": user_id,
    }


def position_update(
    event: str | None,
    *,
    event_time_us: int,
    engine_time_us: int,
    symbol: str,
    position_id: int,
    net_quantity: Decimal,
    entry_price: Decimal,
    break_even_price: Decimal,
    mark_price: Decimal,
    realized_pnl: Decimal,
    unrealized_pnl: Decimal,
    imf: Decimal,
    mmf: Decimal,
) -> dict[str, JSON]:
    """An `account.positionUpdate` payload; `event` None gives the form sent on subscribe
    (no `e`). `B` is the entry price, `b` the break-even, `q` signed, `Q` and `n` unsigned."""
    size = net_quantity.copy_abs()
    data: dict[str, JSON] = {
        "B": text(entry_price),
        "E": event_time_us,
        "M": text(mark_price),
        "P": text(unrealized_pnl),
        "Q": text(size),
        "T": engine_time_us,
        "b": text(break_even_price),
        "f": text(imf),
        "i": position_id,
        "l": "0",
        "m": text(mmf),
        "n": text(display(multiply(size, mark_price))),
        "p": text(realized_pnl),
        "q": text(net_quantity),
        "s": symbol,
    }
    if event is not None:
        data["e"] = event
    return dict(sorted(data.items()))


def position_item(
    *,
    symbol: str,
    position_id: int,
    user_id: int,
    net_quantity: Decimal,
    entry_price: Decimal,
    break_even_price: Decimal,
    mark_price: Decimal,
    open_cost: Decimal,
    realized_pnl: Decimal,
    unrealized_pnl: Decimal,
    funding: Decimal,
    imf: Decimal,
    mmf: Decimal,
) -> dict[str, JSON]:
    """One item of `GET /api/v1/position`; `netCost` carries the sign of the position."""
    size = net_quantity.copy_abs()
    return {
        "breakEvenPrice": text(break_even_price),
        "cumulativeFundingPayment": text(funding),
        "cumulativeInterest": "0",
        "entryPrice": text(entry_price),
        "estLiquidationPrice": "0",
        "imf": text(imf),
        "imfFunction": dict(_IMF_FUNCTION),
        "markPrice": text(mark_price),
        "mmf": text(mmf),
        "mmfFunction": dict(_MMF_FUNCTION),
        "netCost": text(open_cost if net_quantity > 0 else open_cost.copy_negate()),
        "netExposureNotional": text(display(multiply(size, mark_price))),
        "netExposureQuantity": text(size),
        "netQuantity": text(net_quantity),
        "pnlRealized": text(realized_pnl),
        "pnlUnrealized": text(unrealized_pnl),
        "positionId": str(position_id),
        "subaccountId": None,
        "symbol": symbol,
        "userId": user_id,
    }


# --- markets ----------------------------------------------------------------------------------


def market_object(
    *,
    symbol: str,
    base: str,
    quote: str,
    market_type: str,
    tick_size: Decimal,
    step_size: Decimal,
    min_quantity: Decimal,
    created_us: int,
    funding_interval_ms: int = 3_600_000,
    min_multiplier: Decimal = Decimal("0.75"),
    max_multiplier: Decimal = Decimal("1.25"),
) -> dict[str, JSON]:
    """One item of `/api/v1/markets`; perp figures only when `market_type` is `PERP`."""
    perp = market_type == "PERP"
    return {
        "symbol": symbol,
        "baseSymbol": base,
        "quoteSymbol": quote,
        "marketType": market_type,
        "filters": {
            "price": {
                "minPrice": text(tick_size),
                "maxPrice": None,
                "tickSize": text(tick_size),
                "maxMultiplier": text(max_multiplier),
                "minMultiplier": text(min_multiplier),
            },
            "quantity": {
                "minQuantity": text(min_quantity),
                "maxQuantity": None,
                "stepSize": text(step_size),
            },
        },
        "imfFunction": dict(_IMF_FUNCTION) if perp else None,
        "mmfFunction": dict(_MMF_FUNCTION) if perp else None,
        "fundingInterval": funding_interval_ms if perp else None,
        "fundingRateUpperBound": "100" if perp else None,
        "fundingRateLowerBound": "-100" if perp else None,
        "openInterestLimit": "0" if perp else None,
        "orderBookState": "Open",
        "createdAt": iso_ms(created_us),
        "visible": True,
    }


def trade(
    *,
    symbol: str,
    trade_id: int,
    price: Decimal,
    quantity: Decimal,
    bid_order_id: str,
    ask_order_id: str,
    buyer_is_maker: bool,
    time_us: int,
) -> dict[str, JSON]:
    """A public `trade.<symbol>` payload."""
    return {
        "e": "trade",
        "E": time_us + 1,
        "s": symbol,
        "p": text(price),
        "q": text(quantity),
        "b": bid_order_id,
        "a": ask_order_id,
        "t": trade_id,
        "T": time_us,
        "m": buyer_is_maker,
    }


def liquidation(
    *, symbol: str, side: str, price: Decimal, quantity: Decimal, time_us: int
) -> dict[str, JSON]:
    """A public `liquidation` payload: one trade of an order the venue placed to close a
    position (`side` is that order's, `Ask` when a long is closed)."""
    return {
        "e": "liquidation",
        "E": time_us + 1,
        "q": text(quantity),
        "p": text(price),
        "S": side,
        "s": symbol,
        "T": time_us,
    }


def depth_update(
    *,
    symbol: str,
    asks: Sequence[tuple[Decimal, Decimal]],
    bids: Sequence[tuple[Decimal, Decimal]],
    update_id: int,
    time_us: int,
) -> dict[str, JSON]:
    """A public `depth.<symbol>` payload: changed levels (quantity 0 = gone), asks
    ascending, bids descending."""
    return {
        "e": "depth",
        "E": time_us + 1,
        "s": symbol,
        "a": [[text(p), text(q)] for p, q in sorted(asks)],
        "b": [[text(p), text(q)] for p, q in sorted(bids, reverse=True)],
        "U": update_id,
        "u": update_id,
        "T": time_us,
    }


def book_ticker(
    *,
    symbol: str,
    best_ask: tuple[Decimal, Decimal] | None,
    best_bid: tuple[Decimal, Decimal] | None,
    update_id: int,
    time_us: int,
) -> dict[str, JSON]:
    """A public `bookTicker.<symbol>` payload: best (price, quantity) each side, or nulls."""
    return {
        "e": "bookTicker",
        "E": time_us + 1,
        "s": symbol,
        "a": None if best_ask is None else text(best_ask[0]),
        "A": None if best_ask is None else text(best_ask[1]),
        "b": None if best_bid is None else text(best_bid[0]),
        "B": None if best_bid is None else text(best_bid[1]),
        "u": str(update_id),
        "T": time_us,
    }


def mark_price(
    *,
    symbol: str,
    mark: Decimal,
    time_us: int,
    funding_rate: Decimal | None = None,
    next_funding_ms: int | None = None,
) -> dict[str, JSON]:
    """A public `markPrice.<symbol>` payload; perps add the funding rate and its time."""
    data: dict[str, JSON] = {
        "e": "markPrice",
        "E": time_us + 1,
        "s": symbol,
        "p": text(mark),
        "i": text(mark),
        "T": time_us,
    }
    if funding_rate is not None:
        data["f"] = text(funding_rate)
        data["n"] = next_funding_ms
    return data


def ticker(
    *,
    symbol: str,
    first: Decimal,
    last: Decimal,
    high: Decimal,
    low: Decimal,
    volume: Decimal,
    quote_volume: Decimal,
    trades: int,
    time_us: int,
) -> dict[str, JSON]:
    """A public `ticker.<symbol>` payload: the market's figures over the period the REST
    ticker covers (`n` the number of trades, an integer)."""
    return {
        "e": "ticker",
        "E": time_us,
        "s": symbol,
        "o": text(first),
        "c": text(last),
        "h": text(high),
        "l": text(low),
        "v": text(volume),
        "V": text(quote_volume),
        "n": trades,
    }


def open_interest(*, symbol: str, quantity: Decimal, time_us: int) -> dict[str, JSON]:
    """A public `openInterest.<symbol>` payload (`o` in the base asset)."""
    return {"e": "openInterest", "E": time_us, "s": symbol, "o": text(quantity)}


def kline(
    *,
    symbol: str,
    start_s: int,
    end_s: int,
    first: Decimal,
    last: Decimal,
    high: Decimal,
    low: Decimal,
    volume: Decimal,
    trades: int,
    closed: bool,
    time_us: int,
) -> dict[str, JSON]:
    """A public `kline.<interval>.<symbol>` payload: the candle of the bucket [start, end)
    (naive ISO times in UTC), `X` true on the bucket's final message."""
    return {
        "e": "kline",
        "E": time_us,
        "s": symbol,
        "t": iso_s(start_s * 1000),
        "T": iso_s(end_s * 1000),
        "o": text(first),
        "c": text(last),
        "h": text(high),
        "l": text(low),
        "v": text(volume),
        "n": trades,
        "X": closed,
    }
