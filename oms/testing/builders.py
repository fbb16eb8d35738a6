"""Builders: one event each, with sensible defaults, for example-based tests.

Every builder makes a complete, valid event for the markets below (`SPOT`, `ETH_SOL`,
`PERP`); a test passes explicitly every figure it relies on. They need nothing but the
engine's core: no Hypothesis, no I/O.

    from oms import Side, replay_events
    from oms.testing.builders import accept, fill, markets, submit

    state = replay_events([
        *markets(),
        submit(1, Side.BID, "2", "100"),
        accept("V1", client_id=1),
        fill("V1", 1, Side.BID, "2", "99.5", client_id=1),
    ])
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from oms.core.events import (
    AssetBalance,
    BalanceObserved,
    FundingPaid,
    MarketInfo,
    MarkObserved,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderObserved,
    OrderSubmitted,
    PositionObserved,
)
from oms.core.values import (
    MarketType,
    OrderOrigin,
    OrderType,
    Side,
    Source,
    TimeInForce,
    VenueStatus,
)

__all__ = [
    "ETH_SOL",
    "ORIGINS",
    "PERP",
    "SPOT",
    "accept",
    "balances",
    "cancel",
    "expire",
    "fill",
    "funding",
    "market",
    "mark",
    "markets",
    "observe",
    "position",
    "submit",
]

# --- markets used by the builders and the trading strategies ----------------------------------

SPOT: Final = "SOL_USDC"  # base SOL, quote USDC
ETH_SOL: Final = "ETH_SOL"  # base ETH, quote SOL: SOL is locked by bids here, asks there
PERP: Final = "SOL_USDC_PERP"
ORIGINS: Final = tuple(OrderOrigin)  # USER first


def market(
    symbol: str = SPOT,
    base: str = "SOL",
    quote: str = "USDC",
    market_type: MarketType = MarketType.SPOT,
) -> MarketInfo:
    return MarketInfo(
        source=Source.REST,
        recv_time_us=1,
        symbol=symbol,
        base_asset=base,
        quote_asset=quote,
        market_type=market_type,
        tick_size=Decimal("0.01"),
        step_size=Decimal("0.01"),
        min_quantity=Decimal("0.01"),
    )


def markets() -> list[MarketInfo]:
    """MarketInfo for SPOT, ETH_SOL and PERP."""
    return [
        market(SPOT, "SOL", "USDC"),
        market(ETH_SOL, "ETH", "SOL"),
        market(PERP, "SOL", "USDC", MarketType.PERP),
    ]


# --- builders -----------------------------------------------------------------------------------


def submit(
    client_id: int,
    side: Side,
    quantity: Decimal | str,
    price: Decimal | str | None,
    *,
    symbol: str = SPOT,
    order_type: OrderType = OrderType.LIMIT,
) -> OrderSubmitted:
    return OrderSubmitted(
        source=Source.LOCAL,
        recv_time_us=10,
        client_id=client_id,
        symbol=symbol,
        side=side,
        order_type=order_type,
        quantity=Decimal(quantity),
        price=None if price is None else Decimal(price),
        time_in_force=TimeInForce.GTC,
    )


def accept(
    venue_id: str,
    *,
    client_id: int | None = None,
    symbol: str = SPOT,
    side: Side | None = None,
    quantity: Decimal | str | None = None,
    price: Decimal | str | None = None,
    origin: OrderOrigin | str = OrderOrigin.USER,
) -> OrderAccepted:
    return OrderAccepted(
        source=Source.WS,
        recv_time_us=20,
        venue_time_us=19,
        symbol=symbol,
        venue_id=venue_id,
        client_id=client_id,
        side=side,
        order_type=None if side is None else OrderType.LIMIT,
        quantity=None if quantity is None else Decimal(quantity),
        price=None if price is None else Decimal(price),
        origin=OrderOrigin(origin),
    )


def fill(
    venue_id: str,
    trade_id: int,
    side: Side,
    quantity: Decimal | str,
    price: Decimal | str,
    *,
    fee: Decimal | str = "0",
    fee_asset: str = "USDC",
    client_id: int | None = None,
    cum: Decimal | str | None = None,
    status: VenueStatus | None = None,
    symbol: str = SPOT,
    origin: OrderOrigin | str = OrderOrigin.USER,
    order_quantity: Decimal | str | None = None,
    order_price: Decimal | str | None = None,
) -> OrderFilled:
    return OrderFilled(
        source=Source.WS,
        recv_time_us=30,
        venue_time_us=29,
        symbol=symbol,
        venue_id=venue_id,
        trade_id=trade_id,
        side=side,
        quantity=Decimal(quantity),
        price=Decimal(price),
        fee=Decimal(fee),
        fee_asset=fee_asset,
        maker=False,
        client_id=client_id,
        cum_quantity=None if cum is None else Decimal(cum),
        status=status,
        origin=OrderOrigin(origin),
        order_quantity=None if order_quantity is None else Decimal(order_quantity),
        order_price=None if order_price is None else Decimal(order_price),
    )


def cancel(
    *,
    venue_id: str | None = None,
    client_id: int | None = None,
    symbol: str = SPOT,
    cum: Decimal | str | None = None,
) -> OrderCancelled:
    return OrderCancelled(
        source=Source.WS,
        recv_time_us=40,
        symbol=symbol,
        venue_id=venue_id,
        client_id=client_id,
        cum_quantity=None if cum is None else Decimal(cum),
    )


def expire(
    *,
    venue_id: str | None = None,
    client_id: int | None = None,
    symbol: str = SPOT,
    cum: Decimal | str | None = None,
    reason: str | None = "ImmediateOrCancel",
) -> OrderExpired:
    return OrderExpired(
        source=Source.WS,
        recv_time_us=50,
        symbol=symbol,
        venue_id=venue_id,
        client_id=client_id,
        reason=reason,
        cum_quantity=None if cum is None else Decimal(cum),
    )


def observe(
    status: VenueStatus,
    *,
    venue_id: str | None = None,
    client_id: int | None = None,
    symbol: str = SPOT,
    executed: Decimal | str | None = None,
) -> OrderObserved:
    return OrderObserved(
        source=Source.RECONCILE,
        recv_time_us=60,
        symbol=symbol,
        status=status,
        venue_id=venue_id,
        client_id=client_id,
        executed_quantity=None if executed is None else Decimal(executed),
    )


def balances(figures: dict[str, tuple[str, str]]) -> BalanceObserved:
    """A snapshot from {asset: (available, locked)}."""
    return BalanceObserved(
        source=Source.REST,
        recv_time_us=70,
        balances=tuple(
            AssetBalance(asset=asset, available=Decimal(available), locked=Decimal(locked))
            for asset, (available, locked) in figures.items()
        ),
    )


def position(
    net_quantity: Decimal | str, *, symbol: str = PERP, entry: str | None = None
) -> PositionObserved:
    return PositionObserved(
        source=Source.REST,
        recv_time_us=80,
        symbol=symbol,
        net_quantity=Decimal(net_quantity),
        entry_price=None if entry is None else Decimal(entry),
    )


def funding(interval_end_us: int, amount: Decimal | str, *, symbol: str = PERP) -> FundingPaid:
    return FundingPaid(
        source=Source.REST,
        recv_time_us=90,
        symbol=symbol,
        interval_end_us=interval_end_us,
        amount=Decimal(amount),
    )


def mark(price: Decimal | str, *, symbol: str = PERP, recv_time_us: int = 100) -> MarkObserved:
    return MarkObserved(
        source=Source.WS, recv_time_us=recv_time_us, symbol=symbol, mark_price=Decimal(price)
    )
