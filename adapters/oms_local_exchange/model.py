"""The local exchange's records: markets, orders, fills, funding, positions, accounts.

Pure data, no I/O. Records that change over an order's life (`Order`, `Position`, `Balance`)
are mutable and owned by the `Venue`; fills and funding payments are immutable facts.
Every price, quantity, fee and PnL is a `Decimal`; times are epoch microseconds (`*_us`) or
milliseconds (`*_ms`) as named.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import attrs

from oms_local_exchange.arithmetic import VENUE, ZERO

__all__ = [
    "DEFAULT_BALANCES",
    "KLINE_INTERVALS",
    "DEFAULT_MARKETS",
    "TRIGGER_PENDING",
    "LIMIT",
    "MARKET",
    "PERP",
    "SPOT",
    "Account",
    "ApiError",
    "Balance",
    "Exit",
    "Fill",
    "FundingPayment",
    "ManualClock",
    "MarketSpec",
    "Order",
    "OrderRequest",
    "Outbound",
    "PayloadError",
    "Position",
    "VenueTime",
    "kline_end",
    "kline_start",
]

SPOT: Final = "SPOT"
PERP: Final = "PERP"
LIMIT: Final = "Limit"
MARKET: Final = "Market"
TRIGGER_PENDING: Final = "TriggerPending"

JSON = Any
# The venue's kline intervals and their length in seconds (`1month` is a calendar month).
KLINE_INTERVALS: Final = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600,
    "2h": 7200, "4h": 14_400, "6h": 21_600, "8h": 28_800, "12h": 43_200, "1d": 86_400,
    "3d": 259_200, "1w": 604_800, "1month": 2_592_000,
}  # fmt: skip
_MONTH: Final = KLINE_INTERVALS["1month"]
_EPOCH: Final = datetime(1970, 1, 1)


def kline_start(time_s: int, interval_s: int) -> int:
    """The start (epoch seconds) of the kline bucket holding `time_s`; months are calendar
    months in UTC."""
    if interval_s != _MONTH:
        return time_s - time_s % interval_s
    moment = _EPOCH + timedelta(seconds=time_s)
    return int((datetime(moment.year, moment.month, 1) - _EPOCH).total_seconds())


def kline_end(start_s: int, interval_s: int) -> int:
    """The end (epoch seconds, exclusive) of the bucket starting at `start_s`."""
    if interval_s != _MONTH:
        return start_s + interval_s
    moment = _EPOCH + timedelta(seconds=start_s)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return int((datetime(year, month, 1) - _EPOCH).total_seconds())


class ApiError(Exception):
    """A refusal the venue sends as `{"code", "message"}` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.code}: {self.message}"

    def body(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class PayloadError(Exception):
    """A request the venue cannot even parse: answered 400 with a plain-text body."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ManualClock:
    """A clock for tests: epoch microseconds that move only when told."""

    def __init__(self, start_us: int = 1_750_000_000_000_000) -> None:
        self.now_us = start_us

    def __call__(self) -> int:
        return self.now_us

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a manual clock only moves forward")
        self.now_us += round(seconds * 1_000_000)


class VenueTime:
    """The venue's time, read from an injected clock (epoch microseconds) and never moving
    backwards: a clock that steps back is taken as standing still. `now` is the time of the
    latest read, which every record and message of one operation carries."""

    def __init__(self, clock: Callable[[], int]) -> None:
        self._clock = clock
        self.now = clock()

    def read(self) -> int:
        self.now = max(self.now, self._clock())
        return self.now


@attrs.frozen(kw_only=True)
class MarketSpec:
    """One market and the shape of its synthetic book.

    The synthetic book is `levels` price levels each side of the mid, the best one
    `half_spread_ticks` from it and the others `level_gap_ticks` apart; level i (0 = best)
    holds `(i + 1) * level_quantity`. Every `step` the mid moves by a whole number of ticks
    drawn uniformly from `-max_move_ticks..max_move_ticks`, and the liquidity is renewed.
    """

    symbol: str
    base: str
    quote: str
    market_type: str
    tick_size: Decimal
    step_size: Decimal
    min_quantity: Decimal
    initial_price: Decimal
    level_quantity: Decimal
    levels: int = 10
    level_gap_ticks: int = 2
    half_spread_ticks: int = 1
    max_move_ticks: int = 4
    funding_interval_ms: int = 3_600_000
    # The price band (the market's `minMultiplier`/`maxMultiplier`): a limit price must lie
    # within these multiples of the mark price.
    min_multiplier: Decimal = Decimal("0.75")
    max_multiplier: Decimal = Decimal("1.25")

    @property
    def is_perp(self) -> bool:
        return self.market_type == PERP

    def ticks(self, price: Decimal) -> int:
        return int(VENUE.divide(price, self.tick_size))

    def price(self, ticks: int) -> Decimal:
        return VENUE.multiply(Decimal(ticks), self.tick_size)


def _d(text: str) -> Decimal:
    return Decimal(text)


DEFAULT_MARKETS: Final = (
    MarketSpec(
        symbol="SOL_USDC", base="SOL", quote="USDC", market_type=SPOT,
        tick_size=_d("0.01"), step_size=_d("0.01"), min_quantity=_d("0.01"),
        initial_price=_d("150"), level_quantity=_d("10"),
    ),
    MarketSpec(
        symbol="ETH_USDC", base="ETH", quote="USDC", market_type=SPOT,
        tick_size=_d("0.01"), step_size=_d("0.0001"), min_quantity=_d("0.0001"),
        initial_price=_d("3000"), level_quantity=_d("1"), max_move_ticks=20,
        level_gap_ticks=10,
    ),
    MarketSpec(
        symbol="SOL_USDC_PERP", base="SOL", quote="USDC", market_type=PERP,
        tick_size=_d("0.01"), step_size=_d("0.01"), min_quantity=_d("0.01"),
        initial_price=_d("150"), level_quantity=_d("10"),
    ),
    MarketSpec(
        symbol="ETH_USDC_PERP", base="ETH", quote="USDC", market_type=PERP,
        tick_size=_d("0.01"), step_size=_d("0.0001"), min_quantity=_d("0.0001"),
        initial_price=_d("3000"), level_quantity=_d("1"), max_move_ticks=20,
        level_gap_ticks=10,
    ),
)  # fmt: skip

DEFAULT_BALANCES: Final[Mapping[str, Decimal]] = {
    "USDC": Decimal(1_000_000),
    "SOL": Decimal(1_000),
    "ETH": Decimal(100),
}


@attrs.frozen(kw_only=True)
class Exit:
    """A stop-loss or take-profit attached to an order (`stopLoss*` / `takeProfit*`): a trigger
    price, a limit price (None: the exit is a market order) and the price it watches
    (`triggerBy`, None: the mark price)."""

    trigger_price: Decimal
    limit_price: Decimal | None = None
    trigger_by: str | None = None


@attrs.frozen(kw_only=True)
class OrderRequest:
    """An order execute as the venue understands it, after parsing the payload."""

    symbol: str
    side: str
    order_type: str
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    price: Decimal | None = None
    time_in_force: str | None = None
    post_only: bool = False
    reduce_only: bool | None = None
    client_id: int | None = None
    self_trade_prevention: str = "RejectTaker"
    # A conditional order: waits until the price `trigger_by` watches reaches
    # `trigger_price`; `trigger_quantity` is its quantity, or a percentage such as "80%".
    trigger_price: Decimal | None = None
    trigger_quantity: str | None = None
    trigger_by: str | None = None
    stop_loss: Exit | None = None
    take_profit: Exit | None = None


@attrs.define(kw_only=True, eq=False)
class Order:
    """One order as the venue keeps it. `seq` orders orders by arrival (time priority)."""

    id: str
    seq: int
    account: str
    symbol: str
    side: str
    order_type: str
    client_id: int | None
    quantity: Decimal | None
    quote_quantity: Decimal | None
    price: Decimal | None
    time_in_force: str
    post_only: bool
    reduce_only: bool | None
    self_trade_prevention: str
    created_us: int
    status: str = "New"
    executed_quantity: Decimal = ZERO
    executed_quote_quantity: Decimal = ZERO
    expiry_reason: str | None = None
    lock_asset: str | None = None
    locked: Decimal = ZERO
    # Who placed it (`O` on the stream): USER, or the venue for its own reasons; a venue
    # strategy's orders carry its id. `related_order_id` links an attached exit to its parent.
    origin: str = "USER"
    strategy_id: int | None = None
    related_order_id: str | None = None
    # Conditional orders: `trigger_rises` says which way the watched price must cross.
    trigger_price: Decimal | None = None
    trigger_quantity: str | None = None
    trigger_by: str | None = None
    trigger_rises: bool = True
    triggered_us: int | None = None
    stop_loss: Exit | None = None
    take_profit: Exit | None = None
    # An attached exit's partner (the other exit of the same parent): one cancels the other.
    partner_id: str | None = None

    @property
    def remaining(self) -> Decimal:
        """Quantity still to fill (zero for an order placed by quote quantity once done)."""
        if self.quantity is None:
            return ZERO
        return VENUE.subtract(self.quantity, self.executed_quantity)

    @property
    def is_resting(self) -> bool:
        return self.status in ("New", "PartiallyFilled")

    @property
    def is_open(self) -> bool:
        """Resting, or waiting for its trigger: what the open-order queries list and a
        cancel can reach."""
        return self.status in ("New", "PartiallyFilled", TRIGGER_PENDING)


@attrs.frozen(kw_only=True)
class Fill:
    trade_id: int
    order_id: str
    client_id: int | None
    account: str
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_asset: str
    is_maker: bool
    time_us: int


@attrs.frozen(kw_only=True)
class FundingPayment:
    """`amount` > 0 was received, < 0 paid."""

    account: str
    user_id: int
    symbol: str
    interval_end_ms: int
    rate: Decimal
    amount: Decimal


@attrs.define(kw_only=True)
class Balance:
    available: Decimal = ZERO
    locked: Decimal = ZERO
    staked: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        return VENUE.add(VENUE.add(self.available, self.locked), self.staked)


@attrs.define(kw_only=True, eq=False)
class Position:
    """A one-way position: `open_cost` is the exact sum of quantity x price of the fills that
    opened it, `entry_price` is that over the quantity (`arithmetic.entry_price`) and stays
    put while the position is reduced (the cost then follows the quantity). `realized_pnl` is
    the gross trading PnL of this position; `fees` and `funding` (> 0 received) are the
    position's own, in the quote asset."""

    symbol: str
    position_id: int
    net_quantity: Decimal = ZERO
    entry_price: Decimal = ZERO
    open_cost: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    funding: Decimal = ZERO


@attrs.define(kw_only=True, eq=False)
class Account:
    api_key: str
    user_id: int
    balances: dict[str, Balance] = attrs.Factory(dict)
    orders: dict[str, Order] = attrs.Factory(dict)
    client_ids: dict[int, str] = attrs.Factory(dict)
    fills: list[Fill] = attrs.Factory(list)
    funding: list[FundingPayment] = attrs.Factory(list)
    positions: dict[str, Position] = attrs.Factory(dict)
    realized_pnl: dict[str, Decimal] = attrs.Factory(dict)
    leverage_limit: Decimal = Decimal(10)
    settings: dict[str, bool] = attrs.Factory(
        lambda: {
            "autoBorrowSettlements": True,
            "autoLend": False,
            "autoRealizePnl": True,
            "autoRepayBorrows": True,
        }
    )

    def balance(self, asset: str) -> Balance:
        balance = self.balances.get(asset)
        if balance is None:
            balance = self.balances[asset] = Balance()
        return balance

    def open_orders(
        self, predicate: Callable[[Order], bool] | None = None, *, triggers: bool = False
    ) -> list[Order]:
        """Resting orders, and with `triggers` the orders waiting for their trigger too."""
        return [
            o
            for o in self.orders.values()
            if (o.is_open if triggers else o.is_resting) and (predicate is None or predicate(o))
        ]


@attrs.frozen(kw_only=True)
class Outbound:
    """One WebSocket payload the venue produced.

    `stream` is the stream's base name: `account.orderUpdate` or `account.positionUpdate` for
    private messages (then `account` is the API key they belong to), or a public name such as
    `depth.SOL_USDC` (then `account` is None). `data` is the exact wire `data` object.
    """

    stream: str
    data: dict[str, JSON]
    account: str | None = None

    @property
    def private(self) -> bool:
        return self.account is not None
