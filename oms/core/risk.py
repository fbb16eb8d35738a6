"""Pre-trade risk checks and the kill switch's bookkeeping. Pure: no clock, no I/O.

    decision = check(state, command, limits)     # ACCEPTED, or Denied(limit, scope, reason)

`check` judges a command against the state before it is logged or sent. Its time is the
command's own `recv_time_us`, so the same state, command and limits always give the same
decision. What it needs from the past (the times of recent submits, realized PnL at the
start of a loss window) is kept in `State.risk` by the reducer, through `after_event`.

Rules (docs/risk.md has them with examples):

- A cancel is never denied.
- A reduce-only order on a market with positions is denied by nothing but the rate of
  submits: a position must always be closable, whatever the exposure limits or the kill
  switch say. (On spot, `reduce_only` means nothing to the venue, so it exempts nothing.)
- Every other order is denied while the kill switch is tripped, and by the first limit it
  would break, in this order: the account's rate of submits; the symbol's largest order
  quantity; the symbol's and the account's largest order notional; the symbol's largest
  position; the symbol's and the account's most open orders; the symbol's price distance from
  the mark; the symbol's and the account's loss over the window.
- A limit that needs a figure the state does not have (a mark for a notional, a distance or
  an unrealized PnL; a quantity for a quote-quantity market order) denies: a limit that was
  set but cannot be checked must not let the order through.

Marks come from a `MarkSource`: a function `(state, symbol) -> Decimal | None`. The default,
`oms.core.account.mark_price`, is the newest recorded mark of the market (`MarkObserved`,
`State.marks`), else the mark of the venue's latest position report for the symbol (`None`
when neither is known). `observed_mark` is the report's mark only. A program may pass its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

import msgspec
from msgspec.structs import replace

from oms.core.account import mark_price
from oms.core.errors import ConfigurationError
from oms.core.events import (
    CancelRequested,
    KillSwitchReset,
    KillSwitchTripped,
    OrderDenied,
    OrderSubmitted,
)
from oms.core.state import Market, PnlSample, Position, RiskState, State
from oms.core.values import CTX, ZERO, Side

__all__ = [
    "ACCEPTED",
    "MAX_LOSS_WINDOW_S",
    "PNL_SAMPLES_KEPT",
    "PNL_SAMPLE_SPACING_US",
    "RATE_MEMORY",
    "AccountLimits",
    "Accepted",
    "Decision",
    "Denied",
    "LimitName",
    "Limits",
    "LimitsError",
    "MarkSource",
    "SymbolLimits",
    "Headroom",
    "after_event",
    "check",
    "headroom",
    "limits_from_mapping",
    "loss",
    "loss_breach",
    "observed_mark",
    "pnl_sample_due",
    "realized",
    "with_pnl_sample",
]

# The newest submit times kept for the rate limit: `max_submits` may not exceed it.
RATE_MEMORY: Final = 256
# Realized PnL is sampled at a submit at most once a minute; a day and a bit is kept, so a
# loss window of up to a day always has a sample at or before its start.
PNL_SAMPLE_SPACING_US: Final = 60_000_000
PNL_SAMPLES_KEPT: Final = 1_500
MAX_LOSS_WINDOW_S: Final = 86_400

_US: Final = 1_000_000


class LimitName(StrEnum):
    """What denied an order: the `limit` of `Denied` and of `OrderDenied`."""

    KILL_SWITCH = "kill_switch"
    MAX_SUBMITS = "max_submits"
    MAX_ORDER_QUANTITY = "max_order_quantity"
    MAX_ORDER_NOTIONAL = "max_order_notional"
    MAX_POSITION = "max_position"
    MAX_OPEN_ORDERS = "max_open_orders"
    MAX_PRICE_DISTANCE = "max_price_distance"
    MAX_LOSS = "max_loss"


class LimitsError(ConfigurationError):
    """Limits that cannot work (a negative maximum, an unknown key, a window out of range);
    the message names the limit at fault."""


def _positive(name: str, value: Decimal | int | None, *, zero: bool = True) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise LimitsError(f"{name} must be a number, not {type(value).__name__}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise LimitsError(f"{name} must be finite, not {value}")
    if value < 0 or (not zero and value == 0):
        raise LimitsError(f"{name} must be {'at least 0' if zero else 'above 0'}, not {value}")


class SymbolLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Limits on one symbol; `None` is no limit.

    - `max_order_quantity`: largest quantity of one order (base units).
    - `max_order_notional`: largest quantity x price of one order (quote units; a market
      order is valued at the mark, or at its `quote_quantity`).
    - `max_position`: largest |net position| once the order filled completely (markets with
      positions only: on spot the holding is a balance).
    - `max_open_orders`: most orders open on the symbol, this one included.
    - `max_price_distance`: largest |price - mark| / mark of a priced order (0.05 = 5%).
    - `max_loss`: largest loss on the symbol over the account's `loss_window`: realized PnL
      since the window started plus the position's unrealized PnL at the mark (quote units).
    """

    max_order_quantity: Decimal | None = None
    max_order_notional: Decimal | None = None
    max_position: Decimal | None = None
    max_open_orders: int | None = None
    max_price_distance: Decimal | None = None
    max_loss: Decimal | None = None

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            _positive(name, getattr(self, name))


class AccountLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Limits on the whole account; `None` is no limit.

    - `max_order_notional`: largest notional of one order on any symbol.
    - `max_open_orders`: most orders open on all symbols together, this one included.
    - `max_loss`: largest loss over `loss_window` seconds on all positions together;
      breaking it also trips the kill switch.
    - `max_submits` per `submit_window` seconds: the rate of submits (reduce-only included),
      at most `RATE_MEMORY`.
    """

    max_order_notional: Decimal | None = None
    max_open_orders: int | None = None
    max_loss: Decimal | None = None
    loss_window: int = MAX_LOSS_WINDOW_S
    max_submits: int | None = None
    submit_window: Decimal = Decimal(1)

    def __post_init__(self) -> None:
        for name in ("max_order_notional", "max_open_orders", "max_loss", "max_submits"):
            _positive(name, getattr(self, name))
        _positive("loss_window", self.loss_window, zero=False)
        _positive("submit_window", self.submit_window, zero=False)
        if self.loss_window > MAX_LOSS_WINDOW_S:
            raise LimitsError(f"loss_window is at most {MAX_LOSS_WINDOW_S} s (a day)")
        if self.max_submits is not None and self.max_submits > RATE_MEMORY:
            raise LimitsError(f"max_submits is at most {RATE_MEMORY}")


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Every limit of one account: `account`, and `symbols` by symbol. `Limits()` limits
    nothing (the kill switch still works)."""

    account: AccountLimits = AccountLimits()
    symbols: Mapping[str, SymbolLimits] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        for symbol, value in self.symbols.items():
            if not isinstance(value, SymbolLimits):
                raise LimitsError(f"limits for {symbol} must be SymbolLimits")

    @property
    def empty(self) -> bool:
        return self.account == AccountLimits() and not any(
            v != SymbolLimits() for v in self.symbols.values()
        )


_SYMBOL_KEYS: Final = frozenset(SymbolLimits.__struct_fields__)
_ACCOUNT_KEYS: Final = frozenset(AccountLimits.__struct_fields__)


def limits_from_mapping(data: Mapping[str, Any]) -> Limits:
    """Limits from a parsed TOML (or JSON) document:

        [account]
        max_loss = "500"          # decimals as strings (or integers); floats are refused
        max_submits = 20
        [symbols.SOL_USDC_PERP]
        max_position = "10"

    Raises `LimitsError` naming the key at fault."""
    unknown = sorted(set(data) - {"account", "symbols"})
    if unknown:
        raise LimitsError(f"unknown section(s) {', '.join(unknown)} (expected account, symbols)")
    account_fields = _section(data.get("account", {}), "account", _ACCOUNT_KEYS)
    try:
        account = AccountLimits(**account_fields)
    except LimitsError as exc:
        raise LimitsError(f"account: {exc}") from None
    symbols_data = data.get("symbols", {})
    if not isinstance(symbols_data, Mapping):
        raise LimitsError("symbols must be a table of tables, one per symbol")
    symbols = {}
    for symbol, table in symbols_data.items():
        where = f"symbols.{symbol}"
        fields = _section(table, where, _SYMBOL_KEYS)
        try:
            symbols[symbol] = SymbolLimits(**fields)
        except LimitsError as exc:
            raise LimitsError(f"{where}: {exc}") from None
    return Limits(account=account, symbols=symbols)


_INT_KEYS: Final = frozenset({"max_open_orders", "max_submits", "loss_window"})


def _section(table: object, where: str, keys: frozenset[str]) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise LimitsError(f"{where} must be a table")
    unknown = sorted(set(table) - keys)
    if unknown:
        raise LimitsError(
            f"{where}: unknown limit(s) {', '.join(unknown)} (known: {', '.join(sorted(keys))})"
        )
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in _INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise LimitsError(f"{where}: {key} must be an integer, not {value!r}")
            out[key] = value
        elif isinstance(value, str | int) and not isinstance(value, bool):
            try:
                out[key] = Decimal(value)
            except ArithmeticError:
                raise LimitsError(f"{where}: {key} is not a decimal: {value!r}") from None
        else:
            raise LimitsError(
                f"{where}: {key} must be a decimal string or an integer, not {value!r} "
                '(floats are refused: write "0.1", not 0.1)'
            )
    return out


# --- marks ---------------------------------------------------------------------------------------

MarkSource = Callable[[State, str], Decimal | None]


def observed_mark(state: State, symbol: str) -> Decimal | None:
    """The mark price of the venue's latest report of the symbol's position (`None` if no
    report gave one: spot markets, and perps before the first report)."""
    position = state.positions.get(symbol)
    if position is None or position.observed is None:
        return None
    return position.observed.mark_price


# --- decisions ----------------------------------------------------------------------------------


class Accepted(msgspec.Struct, frozen=True):
    """The command may be logged and sent."""


ACCEPTED: Final = Accepted()


class Denied(msgspec.Struct, frozen=True, kw_only=True):
    """The command must not be logged or sent: `limit` would be broken, set at `scope`
    (`account` or the symbol); `reason` says how, with the figures."""

    limit: LimitName
    scope: str
    reason: str


Decision = Accepted | Denied


def check(
    state: State,
    command: OrderSubmitted | CancelRequested,
    limits: Limits,
    *,
    mark: MarkSource = mark_price,
) -> Decision:
    """Judge `command` against `state` and `limits` (the rules are in the module docstring)."""
    if isinstance(command, CancelRequested):
        return ACCEPTED
    symbol = command.symbol
    market = state.markets.get(symbol)
    reducing = command.reduce_only and market is not None and market.market_type.has_positions
    account = limits.account
    now = command.recv_time_us
    if not reducing and state.risk.tripped:
        return Denied(
            limit=LimitName.KILL_SWITCH,
            scope="account",
            reason=f"the kill switch is tripped ({state.risk.trip_reason}); only reduce-only "
            "orders are accepted until it is reset",
        )
    if account.max_submits is not None:
        since = now - int(account.submit_window * _US)
        recent = sum(1 for t in state.risk.submit_times if t > since)
        if recent + 1 > account.max_submits:
            return Denied(
                limit=LimitName.MAX_SUBMITS,
                scope="account",
                reason=f"{recent} submits in the last {account.submit_window} s; at most "
                f"{account.max_submits}",
            )
    if reducing:
        return ACCEPTED
    own = limits.symbols.get(symbol, _NO_LIMITS)
    denied = _exposure(state, command, own=own, account=account, market=market, mark=mark)
    if denied is not None:
        return denied
    return _losses(state, symbol, own=own, account=account, now_us=now, mark=mark) or ACCEPTED


_NO_LIMITS: Final = SymbolLimits()


def _unknown(limit: LimitName, scope: str, what: str) -> Denied:
    return Denied(limit=limit, scope=scope, reason=f"cannot check: {what}")


def _exposure(
    state: State,
    command: OrderSubmitted,
    *,
    own: SymbolLimits,
    account: AccountLimits,
    market: Market | None,
    mark: MarkSource,
) -> Denied | None:
    symbol = command.symbol
    mark_price: Decimal | None = None
    if own.max_price_distance is not None or command.price is None:
        mark_price = mark(state, symbol)
    price = command.price if command.price is not None else mark_price
    quantity = command.quantity
    if quantity is None and command.quote_quantity is not None and price:
        quantity = CTX.divide(command.quote_quantity, price)
    notional: Decimal | None = command.quote_quantity
    if notional is None and quantity is not None and price is not None:
        notional = CTX.multiply(quantity, price)

    if own.max_order_quantity is not None:
        limit = LimitName.MAX_ORDER_QUANTITY
        if quantity is None:
            return _unknown(limit, symbol, "no quantity (a quote-quantity order with no mark)")
        if quantity > own.max_order_quantity:
            return Denied(
                limit=limit,
                scope=symbol,
                reason=f"quantity {quantity} is above {own.max_order_quantity}",
            )
    for scope, most in ((symbol, own.max_order_notional), ("account", account.max_order_notional)):
        if most is None:
            continue
        limit = LimitName.MAX_ORDER_NOTIONAL
        if notional is None:
            return _unknown(limit, scope, f"no price and no mark for {symbol}")
        if notional > most:
            return Denied(limit=limit, scope=scope, reason=f"notional {notional} is above {most}")
    if own.max_position is not None and market is not None and market.market_type.has_positions:
        limit = LimitName.MAX_POSITION
        if quantity is None:
            return _unknown(limit, symbol, "no quantity (a quote-quantity order with no mark)")
        position = state.positions.get(symbol)
        held = ZERO if position is None else position.net_quantity
        delta = quantity if command.side is Side.BID else -quantity
        after = CTX.add(held, delta)
        if abs(after) > own.max_position:
            return Denied(
                limit=limit,
                scope=symbol,
                reason=f"position {held} would become {after} if the order filled; at most "
                f"{own.max_position} either way",
            )
    if own.max_open_orders is not None or account.max_open_orders is not None:
        open_orders = state.open_orders()
        counts: tuple[tuple[str, int | None, int], ...] = (
            (symbol, own.max_open_orders, sum(1 for o in open_orders if o.symbol == symbol)),
            ("account", account.max_open_orders, len(open_orders)),
        )
        for scope, most_orders, count in counts:
            if most_orders is not None and count + 1 > most_orders:
                return Denied(
                    limit=LimitName.MAX_OPEN_ORDERS,
                    scope=scope,
                    reason=f"{count} orders open; at most {most_orders}",
                )
    if own.max_price_distance is not None and command.price is not None:
        limit = LimitName.MAX_PRICE_DISTANCE
        if not mark_price:
            return _unknown(limit, symbol, f"no mark price for {symbol}")
        distance = CTX.divide(abs(CTX.subtract(command.price, mark_price)), mark_price)
        if distance > own.max_price_distance:
            return Denied(
                limit=limit,
                scope=symbol,
                reason=f"price {command.price} is {distance:.4%} from the mark {mark_price}; at "
                f"most {own.max_price_distance:%}",
            )
    return None


def _losses(
    state: State,
    symbol: str,
    *,
    own: SymbolLimits,
    account: AccountLimits,
    now_us: int,
    mark: MarkSource,
) -> Denied | None:
    window_us = account.loss_window * _US
    for scope, most, symbols in (
        (symbol, own.max_loss, (symbol,)),
        ("account", account.max_loss, None),
    ):
        if most is None:
            continue
        lost = loss(state, now_us, window_us, mark=mark, symbols=symbols)
        if lost is None:
            return _unknown(LimitName.MAX_LOSS, scope, "a position with no mark price")
        if lost > most:
            return Denied(
                limit=LimitName.MAX_LOSS,
                scope=scope,
                reason=f"loss {lost} over the last {account.loss_window} s is above {most}",
            )
    return None


def loss_breach(
    state: State, limits: Limits, now_us: int, *, mark: MarkSource = mark_price
) -> Denied | None:
    """The account loss limit, if it is broken now (`None` also when a mark is missing:
    tripping the switch needs a loss that is known). The session trips the kill switch on
    it as events arrive."""
    account = limits.account
    if account.max_loss is None:
        return None
    lost = loss(state, now_us, account.loss_window * _US, mark=mark)
    if lost is None or lost <= account.max_loss:
        return None
    return Denied(
        limit=LimitName.MAX_LOSS,
        scope="account",
        reason=f"loss {lost} over the last {account.loss_window} s is above {account.max_loss}",
    )


# --- headroom -----------------------------------------------------------------------------------


class Headroom(msgspec.Struct, frozen=True, kw_only=True):
    """How much of one limit is used now, for a status report.

    `used` is the figure the limit bounds as the state stands (`None` when it cannot be known:
    a loss with a position that has no mark); `left` is `most - used` (negative when the limit
    is already broken, which a fill or a mark can do after the check let an order through).
    A per-order limit (largest order quantity or notional, price distance) bounds no standing
    figure: `used` and `left` are `None`, `per_order` is true.
    """

    limit: LimitName
    scope: str
    most: Decimal | int
    used: Decimal | int | None = None
    left: Decimal | int | None = None
    per_order: bool = False


def _room(
    limit: LimitName, scope: str, most: Decimal | int, used: Decimal | int | None
) -> Headroom:
    left = None if used is None else most - used
    return Headroom(limit=limit, scope=scope, most=most, used=used, left=left)


def headroom(
    state: State, limits: Limits, now_us: int, *, mark: MarkSource = mark_price
) -> list[Headroom]:
    """Every limit that is set, with how much of it the state uses at `now_us`: the account's
    limits first, then each symbol's (by symbol), in the order `check` tries them."""
    rows: list[Headroom] = []
    account = limits.account
    open_orders = state.open_orders()
    if account.max_submits is not None:
        since = now_us - int(account.submit_window * _US)
        recent = sum(1 for t in state.risk.submit_times if t > since)
        rows.append(_room(LimitName.MAX_SUBMITS, "account", account.max_submits, recent))
    if account.max_order_notional is not None:
        rows.append(
            Headroom(
                limit=LimitName.MAX_ORDER_NOTIONAL,
                scope="account",
                most=account.max_order_notional,
                per_order=True,
            )
        )
    if account.max_open_orders is not None:
        rows.append(
            _room(LimitName.MAX_OPEN_ORDERS, "account", account.max_open_orders, len(open_orders))
        )
    window_us = account.loss_window * _US
    if account.max_loss is not None:
        lost = loss(state, now_us, window_us, mark=mark)
        rows.append(_room(LimitName.MAX_LOSS, "account", account.max_loss, lost))
    for symbol in sorted(limits.symbols):
        own = limits.symbols[symbol]
        for name, most in (
            (LimitName.MAX_ORDER_QUANTITY, own.max_order_quantity),
            (LimitName.MAX_ORDER_NOTIONAL, own.max_order_notional),
        ):
            if most is not None:
                rows.append(Headroom(limit=name, scope=symbol, most=most, per_order=True))
        if own.max_position is not None:
            position = state.positions.get(symbol)
            held = ZERO if position is None else abs(position.net_quantity)
            rows.append(_room(LimitName.MAX_POSITION, symbol, own.max_position, held))
        if own.max_open_orders is not None:
            count = sum(1 for o in open_orders if o.symbol == symbol)
            rows.append(_room(LimitName.MAX_OPEN_ORDERS, symbol, own.max_open_orders, count))
        if own.max_price_distance is not None:
            rows.append(
                Headroom(
                    limit=LimitName.MAX_PRICE_DISTANCE,
                    scope=symbol,
                    most=own.max_price_distance,
                    per_order=True,
                )
            )
        if own.max_loss is not None:
            lost = loss(state, now_us, window_us, mark=mark, symbols=(symbol,))
            rows.append(_room(LimitName.MAX_LOSS, symbol, own.max_loss, lost))
    return rows


# --- PnL --------------------------------------------------------------------------------------


def realized(position: Position, market: Market | None) -> Decimal:
    """What a position has realized: PnL of reductions, funding, less fees paid in the
    market's quote asset (fees in other assets are not money in the same unit)."""
    total = CTX.add(position.realized_pnl, position.funding)
    if market is not None:
        for asset, fee in position.fees:
            if asset == market.quote_asset:
                total = CTX.subtract(total, fee)
    return total


def loss(
    state: State,
    now_us: int,
    window_us: int,
    *,
    mark: MarkSource = mark_price,
    symbols: Iterable[str] | None = None,
) -> Decimal | None:
    """The loss (positive; a gain is negative) over the window ending at `now_us`: realized
    PnL since the window's start, plus the unrealized PnL of the open positions at the mark.

    The window starts at the newest PnL sample at or before `now_us - window_us` (samples
    are taken at submits, at least a minute apart), or at the log's start (realized PnL
    zero) when there is none: the window seen is never shorter than asked. `None` when an
    open position has no mark."""
    start = now_us - window_us
    reference: Mapping[str, Decimal] = {}
    for sample in reversed(state.risk.pnl_samples):
        if sample.time_us <= start:
            reference = dict(sample.realized)
            break
    names = state.positions.keys() if symbols is None else symbols
    total = ZERO
    for name in names:
        position = state.positions.get(name)
        if position is None:
            continue
        total = CTX.add(total, CTX.subtract(realized(position, state.markets.get(name)),
                                            reference.get(name, ZERO)))  # fmt: skip
        if position.net_quantity:
            price = mark(state, name)
            if price is None:
                return None
            moved = CTX.subtract(price, position.entry_price)
            total = CTX.add(total, CTX.multiply(moved, position.net_quantity))
    return -total


# --- the reducer's part -------------------------------------------------------------------------


def pnl_sample_due(samples: tuple[PnlSample, ...], now_us: int) -> bool:
    """Whether a submit at `now_us` takes a PnL sample: the first one, or a minute after the
    newest."""
    return not samples or now_us - samples[-1].time_us >= PNL_SAMPLE_SPACING_US


def with_pnl_sample(
    samples: tuple[PnlSample, ...],
    now_us: int,
    positions: Mapping[str, Position],
    markets: Mapping[str, Market],
) -> tuple[PnlSample, ...]:
    """`samples` and one more, taken at `now_us` (the oldest dropped beyond
    `PNL_SAMPLES_KEPT`)."""
    figures = tuple(sorted((s, realized(p, markets.get(s))) for s, p in positions.items()))
    if len(samples) >= PNL_SAMPLES_KEPT:
        samples = samples[len(samples) - PNL_SAMPLES_KEPT + 1 :]
    return (*samples, PnlSample(time_us=now_us, realized=figures))


def after_event(
    risk: RiskState,
    event: OrderSubmitted | OrderDenied | KillSwitchTripped | KillSwitchReset,
    seq: int,
    positions: Callable[[], Mapping[str, Position]],
    markets: Mapping[str, Market],
) -> RiskState:
    """The risk state after `event` (seq `seq`): the reducer calls it for these four types.
    `positions` gives the positions, asked for only when a PnL sample is due."""
    if isinstance(event, OrderSubmitted):
        now = event.recv_time_us
        times = risk.submit_times
        if len(times) >= RATE_MEMORY:
            times = times[len(times) - RATE_MEMORY + 1 :]
        samples = risk.pnl_samples
        if pnl_sample_due(samples, now):
            samples = with_pnl_sample(samples, now, positions(), markets)
        return replace(risk, submit_times=(*times, now), pnl_samples=samples)
    if isinstance(event, OrderDenied):
        counts = dict(risk.denied_by_limit)
        counts[event.limit] = counts.get(event.limit, 0) + 1
        return replace(
            risk,
            denials=risk.denials + 1,
            denied_by_limit=tuple(sorted(counts.items())),
            last_denial=f"seq {seq}: {event.limit} ({event.scope}): {event.reason}",
            last_denied_client_id=event.client_id,
        )
    if isinstance(event, KillSwitchTripped):
        if risk.tripped:
            return replace(risk, trips=risk.trips + 1)  # already latched: keep the first trip
        return replace(
            risk,
            tripped=True,
            trip_reason=event.reason,
            trip_by=event.by,
            trip_seq=seq,
            trip_time_us=event.recv_time_us,
            trips=risk.trips + 1,
        )
    return replace(risk, tripped=False, resets=risk.resets + 1)
