"""The local exchange's matching and accounting core. Pure: no I/O; time comes from the
injected clock and randomness from the seed, so a run is a function of both.

Theory of operation
-------------------
Each market has a *synthetic* book: `levels` price levels each side of a mid price, renewed
at every step (`step_us` of clock time). The mid is a seeded random walk in whole ticks; step
k happens at `start + k * step_us` whatever the times at which the venue is asked, so the
price path depends only on the seed and the clock. Liquidity taken from a level during a step
is gone until the next step.

Accounts' orders rest on the book alongside the synthetic levels, with price priority and,
at one price, ahead of the synthetic level. An incoming order takes from the best of both. At
every step, after the mid moved, synthetic levels that now cross a resting order trade with
it at the resting order's price: that is how a resting order becomes a maker fill when the
market moves through it.

Every operation first catches the venue up with the clock (`advance`: steps, crossing, hourly
funding, in time order), then acts, then publishes the book changes. Each change of an order,
position or book appends the exact Backpack stream payload to an outbox that the shell drains
(`drain`), so the REST answers and the stream messages come from the same state change.

Accounting (fact sheet §2.3, §2.4): spot bids lock quote at the limit price, asks lock the
base; fills release the lock for the filled part and move base and quote; spot buys pay the
fee in the base asset, sells in the quote asset. Perps: one-way net positions, no locks, fees,
realized PnL and funding settle in the quote asset (USDC) at once.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import attrs

from oms.core.values import CTX, PNL_QUANTUM, ZERO
from oms_local_exchange import wire
from oms_local_exchange.model import (
    DEFAULT_BALANCES,
    DEFAULT_MARKETS,
    LIMIT,
    MARKET,
    PERP,
    SPOT,
    Account,
    ApiError,
    Fill,
    FundingPayment,
    MarketSpec,
    Order,
    OrderRequest,
    Outbound,
    Position,
)

__all__ = ["Venue"]

JSON = Any
ORDER_STREAM: Final = "account.orderUpdate"
POSITION_STREAM: Final = "account.positionUpdate"
_FIRST_ORDER_ID: Final = 8_000_000_001
_FIRST_TRADE_ID: Final = 1_000_001
_FIRST_POSITION_ID: Final = 5_000_000_001
_FIRST_USER_ID: Final = 1_000_001
# More steps than this in one catch-up (a clock that jumped by days) are skipped, not walked.
_MAX_CATCH_UP: Final = 100_000
_DISPLAY: Final = Decimal("0.00000001")
IMF: Final = Decimal("0.02")
MMF: Final = Decimal("0.0125")


def _add(a: Decimal, b: Decimal) -> Decimal:
    return CTX.add(a, b)


def _sub(a: Decimal, b: Decimal) -> Decimal:
    return CTX.subtract(a, b)


def _mul(a: Decimal, b: Decimal) -> Decimal:
    return CTX.multiply(a, b)


def _round(value: Decimal, quantum: Decimal) -> Decimal:
    """`value` rounded to a multiple of `quantum`, half even.

    A value whose last digit already lies above the quantum is a multiple of it and is kept
    as it is: quantizing it would need more digits than `CTX` holds (a PnL of 1e42 to 1e-18
    is 61 digits), which `quantize` refuses with InvalidOperation instead of rounding.
    """
    exponent, unit = value.as_tuple().exponent, quantum.as_tuple().exponent
    if isinstance(exponent, int) and isinstance(unit, int) and exponent >= unit:
        return value
    return CTX.quantize(value, quantum)


def _display(value: Decimal) -> Decimal:
    """A derived figure (break-even, unrealized PnL, notional) rounded for display."""
    return _round(value, _DISPLAY)


def _floor_to(value: Decimal, unit: Decimal) -> Decimal:
    return _mul(CTX.divide_int(value, unit), unit)


def _multiple_of(value: Decimal, unit: Decimal) -> bool:
    return CTX.remainder(value, unit) == 0


@attrs.define(kw_only=True)
class _Maker:
    """One source of liquidity an incoming order can take from: an account's resting order,
    or a synthetic level (`order` None, `ticks` its price in ticks)."""

    price: Decimal
    available: Decimal
    order: Order | None = None
    ticks: int = 0


@attrs.define(kw_only=True)
class _Plan:
    takes: list[tuple[_Maker, Decimal]] = attrs.Factory(list)
    quantity: Decimal = ZERO
    notional: Decimal = ZERO
    stp_makers: list[Order] = attrs.Factory(list)
    stp_stop: bool = False
    complete: bool = False


@attrs.define(kw_only=True)
class _Stats:
    first_price: Decimal
    last_price: Decimal
    high: Decimal
    low: Decimal
    volume: Decimal = ZERO
    quote_volume: Decimal = ZERO
    trades: int = 0


@attrs.define(kw_only=True)
class _Book:
    spec: MarketSpec
    rng: random.Random
    mid_ticks: int
    floor_ticks: int
    step_index: int = 0
    consumed: dict[tuple[str, int], Decimal] = attrs.Factory(dict)
    bids: list[Order] = attrs.Factory(list)
    asks: list[Order] = attrs.Factory(list)
    update_id: int = 0
    published: dict[str, dict[Decimal, Decimal]] = attrs.Factory(lambda: {"Bid": {}, "Ask": {}})
    bbo: tuple[Decimal | None, Decimal | None] = (None, None)
    next_trade_id: int = _FIRST_TRADE_ID
    next_funding_ms: int = 0
    funding_rates: list[tuple[int, Decimal]] = attrs.Factory(list)
    trades: deque[dict[str, JSON]] = attrs.Factory(lambda: deque(maxlen=1000))
    stats: _Stats | None = None
    published_mark: Decimal | None = None


class Venue:
    """A Backpack-like venue: markets, synthetic books, accounts, matching, accounting.

    `clock()` returns epoch microseconds; the venue never reads any other clock, and treats a
    clock that steps back as standing still. Errors a real venue answers with
    `{"code", "message"}` are raised as `ApiError`.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], int],
        seed: int = 0,
        markets: Sequence[MarketSpec] = DEFAULT_MARKETS,
        step_us: int = 250_000,
        spot_fees: tuple[Decimal, Decimal] = (Decimal("0.0008"), Decimal("0.001")),
        perp_fees: tuple[Decimal, Decimal] = (Decimal("0.0002"), Decimal("0.0005")),
    ) -> None:
        if step_us <= 0:
            raise ValueError("step_us must be positive")
        self._clock = clock
        self.seed = seed
        self.step_us = step_us
        self.spot_fees = spot_fees
        self.perp_fees = perp_fees
        self._now = clock()
        self.start_us = self._now
        self.markets: dict[str, MarketSpec] = {}
        self._books: dict[str, _Book] = {}
        self.accounts: dict[str, Account] = {}
        self._outbox: list[Outbound] = []
        self._next_order_id = _FIRST_ORDER_ID
        self._next_position_id = _FIRST_POSITION_ID
        self._next_seq = 1
        for spec in markets:
            self._add_market(spec)
        self._publish()

    # --- set-up -------------------------------------------------------------------------------

    def _add_market(self, spec: MarketSpec) -> None:
        if spec.symbol in self.markets:
            raise ValueError(f"market {spec.symbol} given twice")
        if spec.market_type not in (SPOT, PERP):
            raise ValueError(f"market type {spec.market_type!r} is not SPOT or PERP")
        if not _multiple_of(spec.initial_price, spec.tick_size):
            raise ValueError(f"{spec.symbol}: initial price is not a multiple of the tick")
        self.markets[spec.symbol] = spec
        mid = spec.ticks(spec.initial_price)
        book = _Book(
            spec=spec,
            rng=random.Random(f"{self.seed}/{spec.symbol}"),
            mid_ticks=mid,
            floor_ticks=max(mid // 10, spec.half_spread_ticks + spec.levels * spec.level_gap_ticks),
        )
        interval = spec.funding_interval_ms
        book.next_funding_ms = (self._now // 1000 // interval + 1) * interval
        price = spec.initial_price
        book.stats = _Stats(first_price=price, last_price=price, high=price, low=price)
        self._books[spec.symbol] = book

    def add_account(self, api_key: str, balances: Mapping[str, Decimal] | None = None) -> Account:
        """Open an account keyed by its API key, funded with `balances` (default: generous)."""
        if api_key in self.accounts:
            raise ValueError("an account with this API key exists")
        account = Account(api_key=api_key, user_id=_FIRST_USER_ID + len(self.accounts))
        for asset, amount in (DEFAULT_BALANCES if balances is None else balances).items():
            account.balance(asset).available = Decimal(amount)
        self.accounts[api_key] = account
        return account

    def account(self, api_key: str) -> Account:
        account = self.accounts.get(api_key)
        if account is None:
            raise ApiError(401, "UNAUTHORIZED", "Invalid API key")
        return account

    # --- time ---------------------------------------------------------------------------------

    def now_us(self) -> int:
        """The venue's time: the clock, never moving backwards."""
        now = self._clock()
        self._now = max(self._now, now)
        return self._now

    def drain(self) -> list[Outbound]:
        """Take the stream payloads produced since the last drain, oldest first."""
        out, self._outbox = self._outbox, []
        return out

    def advance(self) -> None:
        """Catch up with the clock: every step and funding interval due, in time order."""
        now = self.now_us()
        for book in self._books.values():
            self._catch_up(book, now)
        self._publish()

    def _catch_up(self, book: _Book, now: int) -> None:
        target = (now - self.start_us) // self.step_us
        if target - book.step_index > _MAX_CATCH_UP:
            book.step_index = target - _MAX_CATCH_UP
        while True:
            step_at = self.start_us + (book.step_index + 1) * self.step_us
            funding_at = book.next_funding_ms * 1000
            if min(step_at, funding_at) > now:
                return
            if funding_at <= step_at:
                self._funding(book, funding_at)
            else:
                self._step(book, step_at)

    def _step(self, book: _Book, at_us: int) -> None:
        spec = book.spec
        book.step_index += 1
        move = book.rng.randint(-spec.max_move_ticks, spec.max_move_ticks)
        mid = book.mid_ticks + move
        if mid < book.floor_ticks:
            mid = book.floor_ticks + abs(move)
        book.mid_ticks = mid
        book.consumed.clear()
        stats = book.stats
        assert stats is not None
        stats.high = max(stats.high, self.mark_price(spec.symbol))
        stats.low = min(stats.low, self.mark_price(spec.symbol))
        self._cross(book, at_us)

    # --- the synthetic book -------------------------------------------------------------------

    def _levels(self, book: _Book, side: str) -> list[tuple[int, Decimal]]:
        """The synthetic levels of one side as (ticks, quantity left), best first."""
        spec = book.spec
        sign = 1 if side == "Ask" else -1
        levels = []
        for i in range(spec.levels):
            ticks = book.mid_ticks + sign * (spec.half_spread_ticks + i * spec.level_gap_ticks)
            if ticks <= 0:
                break
            full = _mul(spec.level_quantity, Decimal(i + 1))
            left = _sub(full, book.consumed.get((side, ticks), ZERO))
            if left > 0:
                levels.append((ticks, left))
        return levels

    def _makers(self, book: _Book, taker_side: str) -> list[_Maker]:
        """Liquidity an order on `taker_side` can take, in priority order."""
        side = "Ask" if taker_side == "Bid" else "Bid"
        resting = book.asks if side == "Ask" else book.bids
        ranked: list[tuple[tuple[Decimal, int, int], _Maker]] = []
        sign = 1 if side == "Ask" else -1
        for order in resting:
            assert order.price is not None
            maker = _Maker(price=order.price, available=order.remaining, order=order)
            ranked.append(((order.price * sign, 0, order.seq), maker))
        for ticks, left in self._levels(book, side):
            price = book.spec.price(ticks)
            ranked.append(((price * sign, 1, 0), _Maker(price=price, available=left, ticks=ticks)))
        ranked.sort(key=lambda item: item[0])
        return [maker for _, maker in ranked]

    def _plan(
        self,
        book: _Book,
        *,
        account: str,
        side: str,
        limit: Decimal | None,
        quantity: Decimal | None,
        budget: Decimal | None,
        stp: str,
    ) -> _Plan:
        """What an incoming order would take, without taking it."""
        step = book.spec.step_size
        plan = _Plan()
        remaining = quantity
        left = budget
        for maker in self._makers(book, side):
            if limit is not None and (
                maker.price > limit if side == "Bid" else maker.price < limit
            ):
                break
            if maker.order is not None and maker.order.account == account:
                if stp == "RejectMaker":
                    plan.stp_makers.append(maker.order)
                    continue
                if stp == "RejectBoth":
                    plan.stp_makers.append(maker.order)
                plan.stp_stop = True
                break
            take = maker.available
            if remaining is not None:
                take = min(take, remaining)
            if left is not None:
                take = min(take, _floor_to(CTX.divide(left, maker.price), step))
            if take <= 0:
                plan.complete = left is not None
                break
            plan.takes.append((maker, take))
            plan.quantity = _add(plan.quantity, take)
            cost = _mul(take, maker.price)
            plan.notional = _add(plan.notional, cost)
            if remaining is not None:
                remaining = _sub(remaining, take)
                if not remaining:
                    plan.complete = True
                    break
            if left is not None:
                left = _sub(left, cost)
                if take < maker.available or not left:
                    plan.complete = True
                    break
        return plan

    def _would_take(self, book: _Book, side: str, price: Decimal) -> bool:
        makers = self._makers(book, side)
        if not makers:
            return False
        best = makers[0].price
        return best <= price if side == "Bid" else best >= price

    def _cross(self, book: _Book, at_us: int) -> None:
        """Resting orders that the synthetic book now crosses trade at their own price."""
        for order in list(book.bids):
            assert order.price is not None
            for ticks, left in self._levels(book, "Ask"):
                price = book.spec.price(ticks)
                if price > order.price or not order.is_resting:
                    break
                take = min(left, order.remaining)
                self._consume(book, "Ask", ticks, take)
                self._trade(book, order.price, take, maker=order, taker=None, side="Ask")
        for order in list(book.asks):
            assert order.price is not None
            for ticks, left in self._levels(book, "Bid"):
                price = book.spec.price(ticks)
                if price < order.price or not order.is_resting:
                    break
                take = min(left, order.remaining)
                self._consume(book, "Bid", ticks, take)
                self._trade(book, order.price, take, maker=order, taker=None, side="Bid")

    def _consume(self, book: _Book, side: str, ticks: int, quantity: Decimal) -> None:
        key = (side, ticks)
        book.consumed[key] = _add(book.consumed.get(key, ZERO), quantity)

    # --- orders -------------------------------------------------------------------------------

    def _new_order_id(self) -> str:
        order_id = self._next_order_id
        self._next_order_id += 1
        return str(order_id)

    def _fees(self, spec: MarketSpec) -> tuple[Decimal, Decimal]:
        return self.perp_fees if spec.is_perp else self.spot_fees

    def _check(self, account: Account, spec: MarketSpec, request: OrderRequest) -> None:
        """The venue's refusals that need no book: shapes, filters, ids."""

        def client(message: str) -> ApiError:
            return ApiError(400, "INVALID_CLIENT_REQUEST", message)

        if request.order_type == LIMIT:
            if request.price is None:
                raise client("Limit orders must specify a `price`")
            if request.quantity is None:
                raise client("Limit orders must specify a `quantity`")
            if request.quote_quantity is not None:
                raise client("`quoteQuantity` is only supported for market orders")
        else:
            if request.price is not None:
                raise client("Market orders must not specify a `price`")
            if request.quantity is None and request.quote_quantity is None:
                raise client("Market orders must specify a `quantity` or `quoteQuantity`")
            if request.quantity is not None and request.quote_quantity is not None:
                raise client("Market orders must specify only one of `quantity` or `quoteQuantity`")
            if request.post_only:
                raise ApiError(400, "INVALID_ORDER", "Post only is only supported for limit orders")
        if request.price is not None:
            if request.price <= 0:
                raise ApiError(400, "INVALID_PRICE", "Price must be positive")
            if not _multiple_of(request.price, spec.tick_size):
                raise client("Price decimal too long")
        if request.quantity is not None:
            if request.quantity <= 0:
                raise ApiError(400, "INVALID_QUANTITY", "Quantity must be positive")
            if not _multiple_of(request.quantity, spec.step_size):
                raise client("Quantity decimal too long")
            if request.quantity < spec.min_quantity:
                raise ApiError(
                    400,
                    "INVALID_QUANTITY",
                    f"Quantity is below the minimum of {wire.dec(spec.min_quantity)}",
                )
        if request.quote_quantity is not None and request.quote_quantity <= 0:
            raise ApiError(400, "INVALID_QUANTITY", "Quote quantity must be positive")
        if request.reduce_only and not spec.is_perp:
            raise ApiError(400, "INVALID_ORDER", "Reduce only is not supported on spot markets")
        if request.client_id is not None and request.client_id in account.client_ids:
            raise ApiError(
                400, "INVALID_ORDER", f"Order with client ID already exists: {request.client_id}"
            )

    def place(self, api_key: str, request: OrderRequest) -> Order:
        """Execute an order: accept, match, rest or expire. Returns the order as it stands.

        Raises `ApiError` for an order the venue refuses outright (nothing is recorded then).
        """
        self.advance()
        account = self.account(api_key)
        spec = self.markets.get(request.symbol)
        if spec is None:
            raise ApiError(400, "INVALID_MARKET", f"Market {request.symbol} not found")
        book = self._books[spec.symbol]
        self._check(account, spec, request)
        side = request.side
        tif = request.time_in_force or "GTC"
        limit = request.price if request.order_type == LIMIT else None
        if request.post_only and limit is not None and self._would_take(book, side, limit):
            raise ApiError(400, "INVALID_ORDER", "Order would immediately match and take.")
        quantity = request.quantity
        cap = quantity
        if spec.is_perp and request.reduce_only:
            net = self._net(account, spec.symbol)
            if not (net > 0 if side == "Ask" else net < 0):
                raise ApiError(400, "INVALID_ORDER", "Reduce only order not reduced")
            cap = net.copy_abs() if cap is None else min(cap, net.copy_abs())
            if quantity is not None:
                quantity = cap
        plan = self._plan(
            book,
            account=api_key,
            side=side,
            limit=limit,
            quantity=cap,
            budget=request.quote_quantity,
            stp=request.self_trade_prevention,
        )
        self._check_funds(account, spec, request, quantity, plan)
        order = Order(
            id=self._new_order_id(),
            seq=self._next_seq,
            account=api_key,
            symbol=spec.symbol,
            side=side,
            order_type=request.order_type,
            client_id=request.client_id,
            quantity=quantity,
            quote_quantity=request.quote_quantity,
            price=limit,
            time_in_force=tif,
            post_only=request.post_only,
            reduce_only=request.reduce_only,
            self_trade_prevention=request.self_trade_prevention,
            created_us=self._now,
        )
        self._next_seq += 1
        account.orders[order.id] = order
        if order.client_id is not None:
            account.client_ids[order.client_id] = order.id
        self._order_event(order, "orderAccepted")
        if tif == "FOK" and not plan.complete:
            self._expire(order, "FillOrKill")
        else:
            for index, (maker, take) in enumerate(plan.takes):
                last = index == len(plan.takes) - 1
                done = last and plan.complete and quantity is None
                if maker.order is None:
                    self._consume(book, _opposite(side), maker.ticks, take)
                self._trade(
                    book, maker.price, take, maker=maker.order, taker=order, side=side, done=done
                )
            for other in plan.stp_makers:
                self._expire(other, "SelfTradePrevention")
            if order.is_resting:
                if plan.stp_stop:
                    self._expire(order, "SelfTradePrevention")
                elif order.order_type == MARKET:
                    self._expire(order, "InsufficientLiquidity")
                elif tif == "IOC":
                    self._expire(order, "ImmediateOrCancel")
                elif tif == "FOK":
                    self._expire(order, "FillOrKill")
                else:
                    self._rest(book, order)
        self._publish()
        return order

    def _check_funds(
        self,
        account: Account,
        spec: MarketSpec,
        request: OrderRequest,
        quantity: Decimal | None,
        plan: _Plan,
    ) -> None:
        if spec.is_perp:
            self._check_margin(account, spec, request, quantity, plan)
            return
        if request.side == "Bid":
            if request.order_type == LIMIT:
                assert request.price is not None and quantity is not None
                need = _mul(quantity, request.price)
            elif request.quote_quantity is not None:
                need = request.quote_quantity
            else:
                need = plan.notional
            have = account.balance(spec.quote).available
        else:
            need = quantity if quantity is not None else plan.quantity
            have = account.balance(spec.base).available
        if need > have:
            raise ApiError(400, "INSUFFICIENT_FUNDS", "Insufficient funds")

    def _check_margin(
        self,
        account: Account,
        spec: MarketSpec,
        request: OrderRequest,
        quantity: Decimal | None,
        plan: _Plan,
    ) -> None:
        """A simple initial-margin check: the exposure an order adds, over the leverage limit,
        must fit in the collateral not yet used by positions and open orders."""
        if request.reduce_only:
            return
        if request.order_type == LIMIT:
            assert request.price is not None and quantity is not None
            notional = _mul(quantity, request.price)
        else:
            notional = plan.notional if quantity is not None else request.quote_quantity or ZERO
        net = self._net(account, spec.symbol)
        reducing = net > 0 if request.side == "Ask" else net < 0
        if reducing:
            size = quantity if quantity is not None else plan.quantity
            if size <= net.copy_abs():
                return
        need = CTX.divide(notional, account.leverage_limit)
        if need > self.margin_available(account):
            raise ApiError(400, "INSUFFICIENT_MARGIN", "Insufficient margin")

    def _rest(self, book: _Book, order: Order) -> None:
        spec = book.spec
        account = self.accounts[order.account]
        if not spec.is_perp:
            if order.side == "Bid":
                assert order.price is not None
                asset, amount = spec.quote, _mul(order.remaining, order.price)
            else:
                asset, amount = spec.base, order.remaining
            balance = account.balance(asset)
            balance.available = _sub(balance.available, amount)
            balance.locked = _add(balance.locked, amount)
            order.lock_asset, order.locked = asset, amount
        resting = book.bids if order.side == "Bid" else book.asks
        resting.append(order)
        sign = -1 if order.side == "Bid" else 1
        resting.sort(key=lambda o: (o.price * sign if o.price is not None else ZERO, o.seq))
        if spec.is_perp and order.reduce_only:
            self._clip_reduce_only(account, spec.symbol)

    def _unrest(self, order: Order) -> None:
        """Take an order off the book and release what it still locks."""
        book = self._books[order.symbol]
        resting = book.bids if order.side == "Bid" else book.asks
        if order in resting:
            resting.remove(order)
        if order.lock_asset is not None and order.locked:
            balance = self.accounts[order.account].balance(order.lock_asset)
            balance.locked = _sub(balance.locked, order.locked)
            balance.available = _add(balance.available, order.locked)
            order.locked = ZERO

    def _expire(self, order: Order, reason: str) -> None:
        self._unrest(order)
        order.status = "Expired"
        order.expiry_reason = reason
        self._order_event(order, "orderExpired")

    def _order_event(self, order: Order, event: str, fill: Fill | None = None) -> None:
        data = wire.order_update(order, event, self._now, fill)
        self._outbox.append(Outbound(stream=ORDER_STREAM, data=data, account=order.account))

    def cancel(
        self,
        api_key: str,
        symbol: str,
        *,
        order_id: str | None = None,
        client_id: int | None = None,
    ) -> Order:
        """Cancel a resting order; `ApiError` 404 `RESOURCE_NOT_FOUND` if it is not resting."""
        self.advance()
        order = self.resting_order(api_key, symbol, order_id=order_id, client_id=client_id)
        self._cancel(order)
        self._publish()
        return order

    def _cancel(self, order: Order) -> None:
        self._unrest(order)
        order.status = "Cancelled"
        self._order_event(order, "orderCancelled")

    def cancel_all(self, api_key: str, symbol: str) -> list[Order]:
        self.advance()
        account = self.account(api_key)
        orders = sorted(account.open_orders(lambda o: o.symbol == symbol), key=lambda o: o.seq)
        for order in orders:
            self._cancel(order)
        self._publish()
        return orders

    def resting_order(
        self,
        api_key: str,
        symbol: str,
        *,
        order_id: str | None = None,
        client_id: int | None = None,
    ) -> Order:
        """The resting order named by id or client id (404 otherwise, as the venue answers)."""
        account = self.account(api_key)
        if client_id is not None:
            order_id = account.client_ids.get(client_id)
        order = account.orders.get(order_id) if order_id is not None else None
        if order is None or order.symbol != symbol or not order.is_resting:
            raise ApiError(404, "RESOURCE_NOT_FOUND", "Not Found")
        return order

    def open_orders(
        self, api_key: str, symbol: str | None = None, market_type: str | None = None
    ) -> list[Order]:
        self.advance()
        account = self.account(api_key)
        orders = account.open_orders(
            lambda o: (
                (symbol is None or o.symbol == symbol)
                and (market_type is None or self.markets[o.symbol].market_type == market_type)
            )
        )
        return sorted(orders, key=lambda o: o.seq)

    # --- trades and accounting ----------------------------------------------------------------

    def _trade(
        self,
        book: _Book,
        price: Decimal,
        quantity: Decimal,
        *,
        maker: Order | None,
        taker: Order | None,
        side: str,
        done: bool = False,
    ) -> None:
        """One trade of `quantity` at `price`; `side` is the taker's side. A None order is the
        synthetic book. `done` marks a quote-quantity order's last fill."""
        trade_id = book.next_trade_id
        book.next_trade_id += 1
        if taker is not None:
            self._fill(taker, price, quantity, trade_id, is_maker=False, done=done)
        if maker is not None:
            self._fill(maker, price, quantity, trade_id, is_maker=True)
        ids = {
            side: taker.id if taker is not None else self._new_order_id(),
            _opposite(side): maker.id if maker is not None else self._new_order_id(),
        }
        stats = book.stats
        assert stats is not None
        stats.last_price = price
        stats.high = max(stats.high, price)
        stats.low = min(stats.low, price)
        stats.volume = _add(stats.volume, quantity)
        stats.quote_volume = _add(stats.quote_volume, _mul(quantity, price))
        stats.trades += 1
        data: dict[str, JSON] = {
            "e": "trade",
            "E": self._now + 1,
            "s": book.spec.symbol,
            "p": wire.dec(price),
            "q": wire.dec(quantity),
            "b": ids["Bid"],
            "a": ids["Ask"],
            "t": trade_id,
            "T": self._now,
            "m": side == "Ask",
        }
        book.trades.append(data)
        self._outbox.append(Outbound(stream=f"trade.{book.spec.symbol}", data=data))

    def _fill(
        self,
        order: Order,
        price: Decimal,
        quantity: Decimal,
        trade_id: int,
        *,
        is_maker: bool,
        done: bool = False,
    ) -> None:
        spec = self.markets[order.symbol]
        account = self.accounts[order.account]
        maker_rate, taker_rate = self._fees(spec)
        rate = maker_rate if is_maker else taker_rate
        notional = _mul(quantity, price)
        base, quote = account.balance(spec.base), account.balance(spec.quote)
        if order.lock_asset is not None:
            # Release the lock of the filled part (at the limit price for bids).
            assert order.price is not None
            release = _mul(quantity, order.price) if order.side == "Bid" else quantity
            release = min(release, order.locked)
            held = account.balance(order.lock_asset)
            held.locked = _sub(held.locked, release)
            held.available = _add(held.available, release)
            order.locked = _sub(order.locked, release)
        if spec.is_perp:
            fee, fee_asset = _mul(notional, rate), spec.quote
            quote.available = _sub(quote.available, fee)
        elif order.side == "Bid":
            fee, fee_asset = _mul(quantity, rate), spec.base
            quote.available = _sub(quote.available, notional)
            base.available = _add(base.available, _sub(quantity, fee))
        else:
            fee, fee_asset = _mul(notional, rate), spec.quote
            base.available = _sub(base.available, quantity)
            quote.available = _add(quote.available, _sub(notional, fee))
        order.executed_quantity = _add(order.executed_quantity, quantity)
        order.executed_quote_quantity = _add(order.executed_quote_quantity, notional)
        if order.quantity is not None:
            order.status = "Filled" if not order.remaining else "PartiallyFilled"
        else:
            order.status = "Filled" if done else "PartiallyFilled"
        if order.status == "Filled":
            self._unrest(order)
        fill = Fill(
            trade_id=trade_id,
            order_id=order.id,
            client_id=order.client_id,
            account=order.account,
            symbol=order.symbol,
            side=order.side,
            price=price,
            quantity=quantity,
            fee=fee,
            fee_asset=fee_asset,
            is_maker=is_maker,
            time_us=self._now,
        )
        account.fills.append(fill)
        self._order_event(order, "orderFill", fill)
        if spec.is_perp:
            self._position_fill(account, spec, fill)

    def _net(self, account: Account, symbol: str) -> Decimal:
        position = account.positions.get(symbol)
        return position.net_quantity if position is not None else ZERO

    def _position_fill(self, account: Account, spec: MarketSpec, fill: Fill) -> None:
        position = account.positions.get(spec.symbol)
        if position is None or not position.net_quantity:
            position = Position(symbol=spec.symbol, position_id=self._next_position_id)
            self._next_position_id += 1
            account.positions[spec.symbol] = position
        old = position.net_quantity
        delta = fill.quantity if fill.side == "Bid" else fill.quantity.copy_negate()
        new = _add(old, delta)
        quote = account.balance(spec.quote)
        events: list[tuple[Position, str]] = []
        if not old or (old > 0) == (delta > 0):
            position.open_cost = _add(position.open_cost, _mul(fill.quantity, fill.price))
            position.net_quantity = new
            position.entry_price = CTX.divide(position.open_cost, new.copy_abs())
            position.fees = _add(position.fees, fill.fee)
            events.append((position, "positionOpened" if not old else "positionAdjusted"))
        else:
            closed = min(fill.quantity, old.copy_abs())
            # Rounded per fill as the engine does (oms.core.values.PNL_QUANTUM); a real venue rounds
            # to its own settlement precision, which the engine would see as small drift.
            pnl = _round(_mul(closed, _sub(fill.price, position.entry_price)), PNL_QUANTUM)
            if old < 0:
                pnl = pnl.copy_negate()
            position.realized_pnl = _add(position.realized_pnl, pnl)
            total = account.realized_pnl.get(spec.symbol, ZERO)
            account.realized_pnl[spec.symbol] = _add(total, pnl)
            quote.available = _add(quote.available, pnl)
            if not new or (new > 0) != (old > 0):
                position.net_quantity = position.entry_price = position.open_cost = ZERO
                if not new:
                    position.fees = _add(position.fees, fill.fee)
                events.append((position, "positionClosed"))
            if new and (new > 0) != (old > 0):
                # Through zero: the remainder opens a new position at the fill price.
                opened = Position(
                    symbol=spec.symbol,
                    position_id=self._next_position_id,
                    net_quantity=new,
                    entry_price=fill.price,
                    open_cost=_mul(fill.price, new.copy_abs()),
                    fees=fill.fee,
                )
                self._next_position_id += 1
                account.positions[spec.symbol] = opened
                events.append((opened, "positionOpened"))
            elif new:
                position.open_cost = _mul(position.entry_price, new.copy_abs())
                position.net_quantity = new
                position.fees = _add(position.fees, fill.fee)
                events.append((position, "positionAdjusted"))
        for changed, event in events:
            self._outbox.append(
                Outbound(
                    stream=POSITION_STREAM,
                    data=self.position_payload(account, changed, event),
                    account=account.api_key,
                )
            )
        self._clip_reduce_only(account, spec.symbol)

    def _clip_reduce_only(self, account: Account, symbol: str) -> None:
        """Resting reduce-only orders never exceed the position they reduce: each one larger
        than the position is cut to it (`orderModified`), and one that can no longer reduce
        anything expires."""
        net = self._net(account, symbol)
        book = self._books[symbol]
        on_book = [o for o in book.bids + book.asks if o.account == account.api_key]
        for order in sorted(on_book, key=lambda o: o.seq):
            if not order.reduce_only:
                continue
            reduces = net > 0 if order.side == "Ask" else net < 0
            allowed = net.copy_abs() if reduces else ZERO
            if not allowed:
                self._expire(order, "ReduceOnlyNotReduced")
            elif order.remaining > allowed:
                order.quantity = _add(order.executed_quantity, allowed)
                self._order_event(order, "orderModified")

    def _funding(self, book: _Book, at_us: int) -> None:
        spec = book.spec
        interval_end = book.next_funding_ms
        book.next_funding_ms += spec.funding_interval_ms
        if not spec.is_perp:
            return
        rate = self.funding_rate(spec.symbol, interval_end)
        book.funding_rates.append((interval_end, rate))
        mark = self.mark_price(spec.symbol)
        for account in self.accounts.values():
            position = account.positions.get(spec.symbol)
            if position is None or not position.net_quantity:
                continue
            amount = _mul(_mul(position.net_quantity, mark), rate).copy_negate()
            position.funding = _add(position.funding, amount)
            quote = account.balance(spec.quote)
            quote.available = _add(quote.available, amount)
            account.funding.append(
                FundingPayment(
                    account=account.api_key,
                    user_id=account.user_id,
                    symbol=spec.symbol,
                    interval_end_ms=interval_end,
                    rate=rate,
                    amount=amount,
                )
            )

    def funding_rate(self, symbol: str, interval_end_ms: int) -> Decimal:
        """The funding rate of the interval ending at `interval_end_ms`: a function of the seed,
        the symbol and the interval only (between -0.00005 and 0.00015)."""
        draw = random.Random(f"{self.seed}/{symbol}/funding/{interval_end_ms}").randint(-50, 150)
        return CTX.scaleb(Decimal(draw), -6)

    # --- derived figures ----------------------------------------------------------------------

    def mark_price(self, symbol: str) -> Decimal:
        book = self._books[symbol]
        return book.spec.price(book.mid_ticks)

    def unrealized_pnl(self, symbol: str, position: Position) -> Decimal:
        if not position.net_quantity:
            return ZERO
        mark = self.mark_price(symbol)
        return _display(_mul(_sub(mark, position.entry_price), position.net_quantity))

    def break_even_price(self, position: Position) -> Decimal:
        """Entry moved by the position's fees and net funding paid, per unit held."""
        qty = position.net_quantity
        if not qty:
            return ZERO
        cost = CTX.divide(_sub(position.fees, position.funding), qty.copy_abs())
        return _display(
            _add(position.entry_price, cost) if qty > 0 else _sub(position.entry_price, cost)
        )

    def margin_available(self, account: Account) -> Decimal:
        """Collateral free for new perp exposure: USDC available plus unrealized PnL, less the
        initial margin (notional over the leverage limit) of positions and open perp orders."""
        free = account.balance("USDC").available
        for symbol, position in account.positions.items():
            if not position.net_quantity:
                continue
            free = _add(free, self.unrealized_pnl(symbol, position))
            notional = _mul(position.net_quantity.copy_abs(), self.mark_price(symbol))
            free = _sub(free, CTX.divide(notional, account.leverage_limit))
        for order in account.open_orders(lambda o: self.markets[o.symbol].is_perp):
            if order.price is not None and not order.reduce_only:
                notional = _mul(order.remaining, order.price)
                free = _sub(free, CTX.divide(notional, account.leverage_limit))
        return free

    def position_payload(
        self, account: Account, position: Position, event: str | None
    ) -> dict[str, JSON]:
        """An `account.positionUpdate` payload; `event` None gives the on-subscribe snapshot
        form (no `e`). `B` is the entry price, `b` the break-even price."""
        mark = self.mark_price(position.symbol)
        net = position.net_quantity
        exposure = net.copy_abs()
        data: dict[str, JSON] = {
            "B": wire.dec(position.entry_price),
            "E": self._now + 1,
            "M": wire.dec(mark),
            "P": wire.dec(self.unrealized_pnl(position.symbol, position)),
            "Q": wire.dec(exposure),
            "T": self._now,
            "b": wire.dec(self.break_even_price(position)),
            "f": wire.dec(IMF),
            "i": position.position_id,
            "l": "0",
            "m": wire.dec(MMF),
            "n": wire.dec(_display(_mul(exposure, mark))),
            "p": wire.dec(position.realized_pnl),
            "q": wire.dec(net),
            "s": position.symbol,
        }
        if event is not None:
            data["e"] = event
        return dict(sorted(data.items()))

    def open_positions(self, api_key: str, symbol: str | None = None) -> list[Position]:
        account = self.account(api_key)
        return [
            p
            for s, p in sorted(account.positions.items())
            if p.net_quantity and (symbol is None or s == symbol)
        ]

    def position_snapshot(self, api_key: str, symbol: str | None = None) -> list[dict[str, JSON]]:
        """What `account.positionUpdate` sends on subscribe: open positions without `e`."""
        self.advance()
        account = self.account(api_key)
        return [
            self.position_payload(account, p, None) for p in self.open_positions(api_key, symbol)
        ]

    def position_item(self, account: Account, position: Position) -> dict[str, JSON]:
        """One item of `GET /api/v1/position`."""
        mark = self.mark_price(position.symbol)
        net = position.net_quantity
        return {
            "breakEvenPrice": wire.dec(self.break_even_price(position)),
            "cumulativeFundingPayment": wire.dec(position.funding),
            "cumulativeInterest": "0",
            "entryPrice": wire.dec(position.entry_price),
            "estLiquidationPrice": "0",
            "imf": wire.dec(IMF),
            "imfFunction": {"base": "0.02", "factor": "0.0001", "type": "sqrt"},
            "markPrice": wire.dec(mark),
            "mmf": wire.dec(MMF),
            "mmfFunction": {"base": "0.0125", "factor": "0.00006", "type": "sqrt"},
            "netCost": wire.dec(
                position.open_cost if net > 0 else position.open_cost.copy_negate()
            ),
            "netExposureNotional": wire.dec(_display(_mul(net.copy_abs(), mark))),
            "netExposureQuantity": wire.dec(net.copy_abs()),
            "netQuantity": wire.dec(net),
            "pnlRealized": wire.dec(position.realized_pnl),
            "pnlUnrealized": wire.dec(self.unrealized_pnl(position.symbol, position)),
            "positionId": str(position.position_id),
            "subaccountId": None,
            "symbol": position.symbol,
            "userId": account.user_id,
        }

    # --- account queries ----------------------------------------------------------------------

    def capital(self, api_key: str) -> dict[str, JSON]:
        """`GET /api/v1/capital`: `{asset: {available, locked, staked}}`."""
        self.advance()
        account = self.account(api_key)
        return {
            asset: {
                "available": wire.dec(b.available),
                "locked": wire.dec(b.locked),
                "staked": wire.dec(b.staked),
            }
            for asset, b in sorted(account.balances.items())
        }

    def _asset_price(self, asset: str) -> Decimal:
        if asset == "USDC":
            return Decimal(1)
        for spec in self.markets.values():
            if spec.base == asset and spec.quote == "USDC" and not spec.is_perp:
                return self.mark_price(spec.symbol)
        return ZERO

    def collateral(self, api_key: str) -> dict[str, JSON]:
        """`GET /api/v1/capital/collateral`: plausible figures from balances and positions."""
        self.advance()
        account = self.account(api_key)
        items = []
        assets_value = ZERO
        locked_value = ZERO
        for asset, balance in sorted(account.balances.items()):
            price = self._asset_price(asset)
            weight = Decimal(1) if asset == "USDC" else Decimal("0.9")
            notional = _mul(balance.total, price)
            assets_value = _add(assets_value, notional)
            locked_value = _add(locked_value, _mul(balance.locked, price))
            items.append(
                {
                    "symbol": asset,
                    "assetMarkPrice": wire.dec(price),
                    "totalQuantity": wire.dec(balance.total),
                    "balanceNotional": wire.dec(_display(notional)),
                    "collateralWeight": wire.dec(weight),
                    "collateralValue": wire.dec(_display(_mul(notional, weight))),
                    "openOrderQuantity": wire.dec(balance.locked),
                    "lendQuantity": "0",
                    "availableQuantity": wire.dec(balance.available),
                }
            )
        unrealized = ZERO
        exposure = ZERO
        for symbol, position in account.positions.items():
            if position.net_quantity:
                unrealized = _add(unrealized, self.unrealized_pnl(symbol, position))
                mark = self.mark_price(symbol)
                exposure = _add(exposure, _mul(position.net_quantity.copy_abs(), mark))
        net_equity = _add(assets_value, unrealized)
        available = min(self.margin_available(account), _sub(net_equity, locked_value))
        imf = CTX.divide(Decimal(1), account.leverage_limit)
        return {
            "assetsValue": wire.dec(_display(assets_value)),
            "borrowLiability": "0",
            "collateral": items,
            "imf": wire.dec(_display(imf)),
            "liabilitiesValue": "0",
            "marginFraction": (
                wire.dec(_display(CTX.divide(net_equity, exposure))) if exposure else None
            ),
            "mmf": wire.dec(MMF),
            "netEquity": wire.dec(_display(net_equity)),
            "netEquityAvailable": wire.dec(_display(available)),
            "netEquityLocked": wire.dec(_display(_sub(net_equity, available))),
            "netExposureFutures": wire.dec(_display(exposure)),
            "pnlUnrealized": wire.dec(unrealized),
            "unsettledEquity": wire.dec(unrealized),
        }

    def account_settings(self, api_key: str) -> dict[str, JSON]:
        """`GET /api/v1/account`; fees in basis points."""
        account = self.account(api_key)
        bps = Decimal(10_000)
        return {
            **account.settings,
            "borrowLimit": "1000000",
            "futuresMakerFee": wire.dec(_mul(self.perp_fees[0], bps)),
            "futuresTakerFee": wire.dec(_mul(self.perp_fees[1], bps)),
            "leverageLimit": wire.dec(account.leverage_limit),
            "limitOrders": len(account.open_orders()),
            "liquidating": False,
            "positionLimit": "1000000",
            "spotMakerFee": wire.dec(_mul(self.spot_fees[0], bps)),
            "spotTakerFee": wire.dec(_mul(self.spot_fees[1], bps)),
            "triggerOrders": 0,
        }

    def update_account(
        self, api_key: str, leverage_limit: Decimal | None, settings: Mapping[str, bool]
    ) -> None:
        account = self.account(api_key)
        if leverage_limit is not None:
            if not 1 <= leverage_limit <= 100:
                raise ApiError(400, "INVALID_CLIENT_REQUEST", "Leverage limit must be 1 to 100")
            account.leverage_limit = leverage_limit
        for key, value in settings.items():
            if key not in account.settings:
                raise ApiError(400, "INVALID_CLIENT_REQUEST", f"Unknown setting {key}")
            account.settings[key] = value

    # --- history ------------------------------------------------------------------------------

    def order_history(
        self,
        api_key: str,
        *,
        order_id: str | None = None,
        symbol: str | None = None,
        market_type: str | None = None,
        limit: int = 100,
        offset: int = 0,
        descending: bool = True,
    ) -> list[Order]:
        self.advance()
        account = self.account(api_key)
        orders = [
            o
            for o in account.orders.values()
            if (order_id is None or o.id == order_id)
            and (symbol is None or o.symbol == symbol)
            and (market_type is None or self.markets[o.symbol].market_type == market_type)
        ]
        orders.sort(key=lambda o: o.seq, reverse=descending)
        return orders[offset : offset + limit]

    def fill_history(
        self,
        api_key: str,
        *,
        order_id: str | None = None,
        symbol: str | None = None,
        market_type: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        limit: int = 100,
        offset: int = 0,
        descending: bool = True,
    ) -> list[Fill]:
        """Fills with `from_ms <= time <= to_ms` (both optional)."""
        self.advance()
        account = self.account(api_key)
        fills = [
            f
            for f in account.fills
            if (order_id is None or f.order_id == order_id)
            and (symbol is None or f.symbol == symbol)
            and (market_type is None or self.markets[f.symbol].market_type == market_type)
            and (from_ms is None or f.time_us // 1000 >= from_ms)
            and (to_ms is None or f.time_us // 1000 <= to_ms)
        ]
        if descending:
            fills.reverse()
        return fills[offset : offset + limit]

    def funding_history(
        self,
        api_key: str,
        *,
        symbol: str | None = None,
        limit: int = 100,
        offset: int = 0,
        descending: bool = True,
    ) -> list[FundingPayment]:
        self.advance()
        account = self.account(api_key)
        payments = [p for p in account.funding if symbol is None or p.symbol == symbol]
        if descending:
            payments.reverse()
        return payments[offset : offset + limit]

    # --- public market data -------------------------------------------------------------------

    def market_list(self, market_type: str | None = None) -> list[dict[str, JSON]]:
        return [
            wire.market_object(spec, self.start_us)
            for spec in self.markets.values()
            if market_type is None or spec.market_type == market_type
        ]

    def book_levels(self, symbol: str) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        """Aggregated (bids, asks): price -> quantity, synthetic and resting orders together."""
        book = self._books[symbol]
        sides: dict[str, dict[Decimal, Decimal]] = {"Bid": {}, "Ask": {}}
        for side, resting in (("Bid", book.bids), ("Ask", book.asks)):
            levels = sides[side]
            for ticks, left in self._levels(book, side):
                price = book.spec.price(ticks)
                levels[price] = _add(levels.get(price, ZERO), left)
            for order in resting:
                assert order.price is not None
                levels[order.price] = _add(levels.get(order.price, ZERO), order.remaining)
        return sides["Bid"], sides["Ask"]

    def depth(self, symbol: str, limit: int = 1000) -> dict[str, JSON]:
        """`GET /api/v1/depth`: both sides in ascending price order, as the venue sends them."""
        self.advance()
        bids, asks = self.book_levels(symbol)
        best_bids = sorted(bids, reverse=True)[:limit]
        best_asks = sorted(asks)[:limit]
        return {
            "asks": [[wire.dec(p), wire.dec(asks[p])] for p in best_asks],
            "bids": [[wire.dec(p), wire.dec(bids[p])] for p in sorted(best_bids)],
            "lastUpdateId": str(self._books[symbol].update_id),
            "timestamp": self._now,
        }

    def ticker(self, symbol: str) -> dict[str, JSON]:
        self.advance()
        stats = self._books[symbol].stats
        assert stats is not None
        change = _sub(stats.last_price, stats.first_price)
        percent = _round(CTX.divide(change, stats.first_price), Decimal("0.000001"))
        return {
            "symbol": symbol,
            "firstPrice": wire.dec(stats.first_price),
            "lastPrice": wire.dec(stats.last_price),
            "priceChange": wire.dec(change),
            "priceChangePercent": wire.dec(percent),
            "high": wire.dec(stats.high),
            "low": wire.dec(stats.low),
            "volume": wire.dec(stats.volume),
            "quoteVolume": wire.dec(stats.quote_volume),
            "trades": str(stats.trades),
        }

    def mark_prices(self, symbol: str | None = None) -> list[dict[str, JSON]]:
        self.advance()
        items = []
        for spec in self.markets.values():
            if (symbol is None and not spec.is_perp) or (
                symbol is not None and spec.symbol != symbol
            ):
                continue
            item: dict[str, JSON] = {
                "symbol": spec.symbol,
                "markPrice": wire.dec(self.mark_price(spec.symbol)),
                "indexPrice": wire.dec(self.mark_price(spec.symbol)),
            }
            if spec.is_perp:
                book = self._books[spec.symbol]
                item["fundingRate"] = wire.dec(self.funding_rate(spec.symbol, book.next_funding_ms))
                item["nextFundingTimestamp"] = book.next_funding_ms
            items.append(item)
        return items

    def funding_rates(
        self, symbol: str, limit: int = 100, offset: int = 0
    ) -> list[dict[str, JSON]]:
        """`GET /api/v1/fundingRates`: past intervals, newest first."""
        self.advance()
        rates = list(reversed(self._books[symbol].funding_rates))[offset : offset + limit]
        return [
            {"symbol": symbol, "intervalEndTimestamp": wire.iso_s(end), "fundingRate": wire.dec(r)}
            for end, r in rates
        ]

    def recent_trades(self, symbol: str, limit: int = 100) -> list[dict[str, JSON]]:
        """`GET /api/v1/trades`: the latest public trades, oldest first."""
        self.advance()
        trades = list(self._books[symbol].trades)[-limit:]
        return [
            {
                "id": t["t"],
                "price": t["p"],
                "quantity": t["q"],
                "quoteQuantity": wire.dec(_mul(Decimal(t["p"]), Decimal(t["q"]))),
                "timestamp": t["T"] // 1000,
                "isBuyerMaker": t["m"],
            }
            for t in trades
        ]

    # --- publishing ---------------------------------------------------------------------------

    def _publish(self) -> None:
        """Stream what changed on every book since the last publication."""
        for symbol, book in self._books.items():
            bids, asks = self.book_levels(symbol)
            changes: dict[str, list[list[str]]] = {"Bid": [], "Ask": []}
            for side, now in (("Bid", bids), ("Ask", asks)):
                before = book.published[side]
                for price in sorted(set(before) | set(now)):
                    if before.get(price) != now.get(price):
                        changes[side].append([wire.dec(price), wire.dec(now.get(price, ZERO))])
                book.published[side] = now
            if changes["Bid"] or changes["Ask"]:
                book.update_id += 1
                self._outbox.append(
                    Outbound(
                        stream=f"depth.{symbol}",
                        data={
                            "e": "depth",
                            "E": self._now + 1,
                            "s": symbol,
                            "a": changes["Ask"],
                            "b": sorted(
                                changes["Bid"], key=lambda lv: Decimal(lv[0]), reverse=True
                            ),
                            "U": book.update_id,
                            "u": book.update_id,
                            "T": self._now,
                        },
                    )
                )
            bbo = (max(bids) if bids else None, min(asks) if asks else None)
            if bbo != book.bbo:
                book.bbo = bbo
                best_bid, best_ask = bbo
                self._outbox.append(
                    Outbound(
                        stream=f"bookTicker.{symbol}",
                        data={
                            "e": "bookTicker",
                            "E": self._now + 1,
                            "s": symbol,
                            "a": None if best_ask is None else wire.dec(best_ask),
                            "A": None if best_ask is None else wire.dec(asks[best_ask]),
                            "b": None if best_bid is None else wire.dec(best_bid),
                            "B": None if best_bid is None else wire.dec(bids[best_bid]),
                            "u": str(book.update_id),
                            "T": self._now,
                        },
                    )
                )
            mark = self.mark_price(symbol)
            if mark != book.published_mark:
                book.published_mark = mark
                data: dict[str, JSON] = {
                    "e": "markPrice",
                    "E": self._now + 1,
                    "s": symbol,
                    "p": wire.dec(mark),
                    "i": wire.dec(mark),
                    "T": self._now,
                }
                if book.spec.is_perp:
                    data["f"] = wire.dec(self.funding_rate(symbol, book.next_funding_ms))
                    data["n"] = book.next_funding_ms
                self._outbox.append(Outbound(stream=f"markPrice.{symbol}", data=data))


def _opposite(side: str) -> str:
    return "Ask" if side == "Bid" else "Bid"
