"""The venue's markets and matching: synthetic books, the price walk, orders and trades.

Pure: time comes in, randomness comes from the seed, so a run is a function of both.

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
market moves through it. Funding falls due at the market's interval boundaries, in time
order with the steps.

Money is the ledger's (`accounts.Ledger`): the matcher asks it whether an order can be paid
for, to lock and release what resting orders hold, and to settle each fill. Every change of
an order is written to the outbox as it happens.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import attrs

from oms_local_exchange import wire
from oms_local_exchange.accounts import Ledger
from oms_local_exchange.arithmetic import (
    VENUE,
    ZERO,
    add,
    floor_to,
    multiple_of,
    multiply,
    subtract,
)
from oms_local_exchange.frames import LIQUIDATION_ORIGINS
from oms_local_exchange.frames import kline as kline_payload
from oms_local_exchange.frames import liquidation as liquidation_payload
from oms_local_exchange.frames import trade as trade_payload
from oms_local_exchange.model import (
    KLINE_INTERVALS,
    LIMIT,
    MARKET,
    PERP,
    SPOT,
    TRIGGER_PENDING,
    Account,
    ApiError,
    Fill,
    MarketSpec,
    Order,
    OrderRequest,
    VenueTime,
    kline_end,
    kline_start,
)
from oms_local_exchange.outbox import Outbox

__all__ = ["Book", "Candle", "Matcher", "Stats"]

JSON = Any
_FIRST_ORDER_ID: Final = 8_000_000_001
_FIRST_TRADE_ID: Final = 1_000_001
# More steps than this in one catch-up (a clock that jumped by days) are skipped, not walked.
_MAX_CATCH_UP: Final = 100_000


def _opposite(side: str) -> str:
    return "Ask" if side == "Bid" else "Bid"


def _priority(price: Decimal, side: str) -> Decimal:
    """A sort key putting the best price of `side` first (exact: no context involved)."""
    return price.copy_negate() if side == "Bid" else price


@attrs.define(kw_only=True)
class Stats:
    """A market's figures since the venue opened (the REST ticker)."""

    first_price: Decimal
    last_price: Decimal
    high: Decimal
    low: Decimal
    volume: Decimal = ZERO
    quote_volume: Decimal = ZERO
    trades: int = 0


@attrs.define(kw_only=True)
class Candle:
    """One kline bucket [start_s, end_s) of a market's trades; `changed` since last sent."""

    start_s: int
    end_s: int
    first: Decimal
    last: Decimal
    high: Decimal
    low: Decimal
    volume: Decimal = ZERO
    trades: int = 0
    changed: bool = True

    def payload(self, symbol: str, closed: bool, time_us: int) -> dict[str, JSON]:
        return kline_payload(
            symbol=symbol, start_s=self.start_s, end_s=self.end_s, first=self.first,
            last=self.last, high=self.high, low=self.low, volume=self.volume,
            trades=self.trades, closed=closed, time_us=time_us,
        )  # fmt: skip


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
    """What an incoming order would take, worked out before anything moves."""

    takes: list[tuple[_Maker, Decimal]] = attrs.Factory(list)
    quantity: Decimal = ZERO
    notional: Decimal = ZERO
    stp_makers: list[Order] = attrs.Factory(list)
    stp_stop: bool = False
    complete: bool = False


@attrs.define(kw_only=True, eq=False)
class Book:
    """One market: its synthetic liquidity, the accounts' resting orders, its trades and its
    funding schedule."""

    spec: MarketSpec
    seed: int
    rng: random.Random
    mid_ticks: int
    floor_ticks: int
    stats: Stats
    step_index: int = 0
    consumed: dict[tuple[str, int], Decimal] = attrs.Factory(dict)
    bids: list[Order] = attrs.Factory(list)
    asks: list[Order] = attrs.Factory(list)
    next_trade_id: int = _FIRST_TRADE_ID
    next_funding_ms: int = 0
    funding_rates: list[tuple[int, Decimal]] = attrs.Factory(list)
    trades: deque[dict[str, JSON]] = attrs.Factory(lambda: deque(maxlen=1000))
    # The open kline bucket of each interval, and buckets that ended before their final
    # message was sent (the `kline` streams).
    candles: dict[str, Candle] = attrs.Factory(dict)
    ended: list[tuple[str, Candle]] = attrs.Factory(list)
    # Conditional orders waiting for their trigger, in arrival order.
    triggers: list[Order] = attrs.Factory(list)

    @classmethod
    def open(cls, spec: MarketSpec, *, seed: int, now_us: int) -> Book:
        if spec.market_type not in (SPOT, PERP):
            raise ValueError(f"market type {spec.market_type!r} is not SPOT or PERP")
        if not multiple_of(spec.initial_price, spec.tick_size):
            raise ValueError(f"{spec.symbol}: initial price is not a multiple of the tick")
        mid = spec.ticks(spec.initial_price)
        price = spec.initial_price
        interval = spec.funding_interval_ms
        return cls(
            spec=spec,
            seed=seed,
            rng=random.Random(f"{seed}/{spec.symbol}"),
            mid_ticks=mid,
            floor_ticks=max(mid // 10, spec.half_spread_ticks + spec.levels * spec.level_gap_ticks),
            stats=Stats(first_price=price, last_price=price, high=price, low=price),
            next_funding_ms=(now_us // 1000 // interval + 1) * interval,
        )

    def mark_price(self) -> Decimal:
        """Mark (and index) price: the mid."""
        return self.spec.price(self.mid_ticks)

    def funding_rate(self, interval_end_ms: int) -> Decimal:
        """The funding rate of the interval ending at `interval_end_ms`: a function of the seed,
        the symbol and the interval only (between -0.00005 and 0.00015)."""
        draw = random.Random(f"{self.seed}/{self.spec.symbol}/funding/{interval_end_ms}")
        return VENUE.scaleb(Decimal(draw.randint(-50, 150)), -6)

    def next_funding(self) -> tuple[Decimal, int]:
        """The rate of the funding interval now running, and when it ends (epoch ms)."""
        return self.funding_rate(self.next_funding_ms), self.next_funding_ms

    def walk(self) -> None:
        """One step of the mid's random walk; the synthetic liquidity is renewed."""
        spec = self.spec
        self.step_index += 1
        move = self.rng.randint(-spec.max_move_ticks, spec.max_move_ticks)
        mid = self.mid_ticks + move
        if mid < self.floor_ticks:
            mid = self.floor_ticks + abs(move)
        self.mid_ticks = mid
        self.consumed.clear()
        mark = self.mark_price()
        self.stats.high = max(self.stats.high, mark)
        self.stats.low = min(self.stats.low, mark)

    def levels(self, side: str) -> list[tuple[int, Decimal]]:
        """The synthetic levels of one side as (ticks, quantity left), best first."""
        spec = self.spec
        sign = 1 if side == "Ask" else -1
        levels = []
        for i in range(spec.levels):
            ticks = self.mid_ticks + sign * (spec.half_spread_ticks + i * spec.level_gap_ticks)
            if ticks <= 0:
                break
            full = multiply(spec.level_quantity, Decimal(i + 1))
            left = subtract(full, self.consumed.get((side, ticks), ZERO))
            if left > 0:
                levels.append((ticks, left))
        return levels

    def consume(self, side: str, ticks: int, quantity: Decimal) -> None:
        key = (side, ticks)
        self.consumed[key] = add(self.consumed.get(key, ZERO), quantity)

    def add_to_candles(self, price: Decimal, quantity: Decimal, time_us: int) -> None:
        """Count a trade in the open bucket of every kline interval."""
        time_s = time_us // 1_000_000
        for name, seconds in KLINE_INTERVALS.items():
            candle = self.candles.get(name)
            if candle is not None and time_s >= candle.end_s:
                self.ended.append((name, candle))
                candle = None
            if candle is None:
                start = kline_start(time_s, seconds)
                candle = self.candles[name] = Candle(
                    start_s=start, end_s=kline_end(start, seconds),
                    first=price, last=price, high=price, low=price,
                )  # fmt: skip
            candle.last = price
            candle.high = max(candle.high, price)
            candle.low = min(candle.low, price)
            candle.volume = add(candle.volume, quantity)
            candle.trades += 1
            candle.changed = True

    def kline_updates(self, now_us: int) -> list[tuple[str, dict[str, JSON]]]:
        """(interval, payload) of each candle that changed since the last call, and the final
        message (`X` true) of each bucket that has ended since."""
        now_s = now_us // 1_000_000
        symbol = self.spec.symbol
        updates = [(name, c.payload(symbol, True, now_us)) for name, c in self.ended]
        self.ended.clear()
        for name, candle in list(self.candles.items()):
            if now_s >= candle.end_s:
                updates.append((name, candle.payload(symbol, True, now_us)))
                del self.candles[name]
            elif candle.changed:
                candle.changed = False
                updates.append((name, candle.payload(symbol, False, now_us)))
        return updates

    def makers(self, taker_side: str) -> list[_Maker]:
        """Liquidity an order on `taker_side` can take, in priority order."""
        side = _opposite(taker_side)
        resting = self.asks if side == "Ask" else self.bids
        ranked: list[tuple[tuple[Decimal, int, int], _Maker]] = []
        for order in resting:
            assert order.price is not None
            maker = _Maker(price=order.price, available=order.remaining, order=order)
            ranked.append(((_priority(order.price, side), 0, order.seq), maker))
        for ticks, left in self.levels(side):
            price = self.spec.price(ticks)
            maker = _Maker(price=price, available=left, ticks=ticks)
            ranked.append(((_priority(price, side), 1, 0), maker))
        ranked.sort(key=lambda item: item[0])
        return [maker for _, maker in ranked]

    def aggregated(self) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        """(bids, asks): price -> quantity, synthetic levels and resting orders together."""
        sides: dict[str, dict[Decimal, Decimal]] = {"Bid": {}, "Ask": {}}
        for side, resting in (("Bid", self.bids), ("Ask", self.asks)):
            levels = sides[side]
            for ticks, left in self.levels(side):
                price = self.spec.price(ticks)
                levels[price] = add(levels.get(price, ZERO), left)
            for order in resting:
                assert order.price is not None
                levels[order.price] = add(levels.get(order.price, ZERO), order.remaining)
        return sides["Bid"], sides["Ask"]


class Matcher:
    """Places, matches, rests, cancels and expires orders on the books, and moves the books
    with time. Errors the venue answers with `{"code", "message"}` are raised as `ApiError`."""

    def __init__(
        self,
        *,
        books: Mapping[str, Book],
        ledger: Ledger,
        outbox: Outbox,
        time: VenueTime,
        start_us: int,
        step_us: int,
    ) -> None:
        self.books = books
        self._ledger = ledger
        self._outbox = outbox
        self._time = time
        self._start_us = start_us
        self._step_us = step_us
        self._next_order_id = _FIRST_ORDER_ID
        self._next_seq = 1

    # --- time ---------------------------------------------------------------------------------

    def catch_up(self, now: int) -> None:
        """Every step and funding interval due by `now`, in time order, market by market."""
        for book in self.books.values():
            target = (now - self._start_us) // self._step_us
            if target - book.step_index > _MAX_CATCH_UP:
                book.step_index = target - _MAX_CATCH_UP
            while True:
                step_at = self._start_us + (book.step_index + 1) * self._step_us
                funding_at = book.next_funding_ms * 1000
                if min(step_at, funding_at) > now:
                    break
                if funding_at <= step_at:
                    self._funding(book)
                else:
                    book.walk()
                    self._cross(book)
                    self.fire_triggers(book)

    def _funding(self, book: Book) -> None:
        spec = book.spec
        interval_end = book.next_funding_ms
        book.next_funding_ms += spec.funding_interval_ms
        if not spec.is_perp:
            return
        rate = book.funding_rate(interval_end)
        book.funding_rates.append((interval_end, rate))
        self._ledger.pay_funding(spec, interval_end, rate)

    def _cross(self, book: Book) -> None:
        """Resting orders that the synthetic book now crosses trade at their own price."""
        for order in list(book.bids):
            assert order.price is not None
            for ticks, left in book.levels("Ask"):
                price = book.spec.price(ticks)
                if price > order.price or not order.is_resting:
                    break
                take = min(left, order.remaining)
                book.consume("Ask", ticks, take)
                self._trade(book, order.price, take, maker=order, taker=None, side="Ask")
        for order in list(book.asks):
            assert order.price is not None
            for ticks, left in book.levels("Bid"):
                price = book.spec.price(ticks)
                if price < order.price or not order.is_resting:
                    break
                take = min(left, order.remaining)
                book.consume("Bid", ticks, take)
                self._trade(book, order.price, take, maker=order, taker=None, side="Bid")

    # --- placing ------------------------------------------------------------------------------

    def _new_order_id(self) -> str:
        order_id = self._next_order_id
        self._next_order_id += 1
        return str(order_id)

    def place(self, account: Account, request: OrderRequest) -> Order:
        """Execute an order: accept, match, rest or expire; a conditional order waits for
        its trigger. Returns the order as it stands.

        Raises `ApiError` for an order the venue refuses outright (nothing is recorded then).
        """
        book = self.books.get(request.symbol)
        if book is None:
            raise ApiError(400, "INVALID_MARKET", f"Market {request.symbol} not found")
        if (request.stop_loss or request.take_profit) and not book.spec.is_perp:
            raise ApiError(
                400, "INVALID_ORDER", "Stop loss and take profit are only supported on futures"
            )
        if request.trigger_price is not None or request.trigger_quantity is not None:
            order = self._place_trigger(account, book, request)
        else:
            order = self._execute(account, book, request)
        self.fire_triggers(book)
        return order

    def place_for_venue(
        self,
        account: Account,
        request: OrderRequest,
        *,
        origin: str = "USER",
        strategy_id: int | None = None,
    ) -> Order:
        """An order the venue places on the account for its own reasons: a liquidation
        (`origin`), or one of its scheduled strategies (`strategy_id`)."""
        book = self.books[request.symbol]
        order = self._execute(account, book, request, origin=origin, strategy_id=strategy_id)
        self.fire_triggers(book)
        return order

    def _execute(
        self,
        account: Account,
        book: Book,
        request: OrderRequest,
        *,
        pending: Order | None = None,
        origin: str = "USER",
        strategy_id: int | None = None,
    ) -> Order:
        """Accept, match, rest or expire an order: a new one, or (`pending`) a conditional
        order that has just triggered, which keeps its id."""
        spec = book.spec
        _check(account, spec, request)
        side = request.side
        tif = request.time_in_force or "GTC"
        limit = request.price if request.order_type == LIMIT else None
        if limit is not None:
            _check_band(spec, limit, book.mark_price())
        if request.post_only and limit is not None and _would_take(book, side, limit):
            raise ApiError(400, "INVALID_ORDER", "Order would immediately match and take.")
        quantity = request.quantity
        cap = quantity
        if spec.is_perp and request.reduce_only:
            net = self._ledger.net(account, spec.symbol)
            if not (net > 0 if side == "Ask" else net < 0):
                raise ApiError(400, "INVALID_ORDER", "Reduce only order not reduced")
            cap = net.copy_abs() if cap is None else min(cap, net.copy_abs())
            if quantity is not None:
                quantity = cap
        plan = _plan(
            book,
            account=account.api_key,
            side=side,
            limit=limit,
            quantity=cap,
            budget=request.quote_quantity,
            stp=request.self_trade_prevention,
        )
        self._ledger.check_funds(
            account,
            spec,
            request,
            quantity,
            planned_quantity=plan.quantity,
            planned_notional=plan.notional,
        )
        if pending is not None:
            order = pending
            order.quantity = quantity
            order.status = "New"
        else:
            order = Order(
                id=self._new_order_id(),
                seq=self._next_seq,
                account=account.api_key,
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
                created_us=self._time.now,
                origin=origin,
                strategy_id=strategy_id,
                stop_loss=request.stop_loss,
                take_profit=request.take_profit,
            )
            self._next_seq += 1
            account.orders[order.id] = order
            if order.client_id is not None:
                account.client_ids[order.client_id] = order.id
        self._outbox.order_update(order, "orderAccepted", self._time.now)
        if tif == "FOK" and not plan.complete:
            self.expire(order, "FillOrKill")
            return order
        for index, (maker, take) in enumerate(plan.takes):
            last = index == len(plan.takes) - 1
            done = last and plan.complete and quantity is None
            if maker.order is None:
                book.consume(_opposite(side), maker.ticks, take)
            self._trade(
                book, maker.price, take, maker=maker.order, taker=order, side=side, done=done
            )
        for other in plan.stp_makers:
            self.expire(other, "SelfTradePrevention")
        if order.is_resting:
            if plan.stp_stop:
                self.expire(order, "SelfTradePrevention")
            elif order.order_type == MARKET:
                self.expire(order, "InsufficientLiquidity")
            elif tif == "IOC":
                self.expire(order, "ImmediateOrCancel")
            elif tif == "FOK":
                self.expire(order, "FillOrKill")
            else:
                self._rest(book, account, order)
        return order

    # --- conditional orders -------------------------------------------------------------------

    def _place_trigger(self, account: Account, book: Book, request: OrderRequest) -> Order:
        """A conditional order: checked as far as it can be now, then it waits for its trigger
        (`triggerPlaced`, status `TriggerPending`); nothing is locked while it waits."""
        spec = book.spec
        if request.trigger_price is None or request.trigger_quantity is None:
            raise ApiError(
                400,
                "INVALID_CLIENT_REQUEST",
                "Must specify both `triggerPrice` and `triggerQuantity` or neither",
            )
        if request.quantity is not None or request.quote_quantity is not None:
            raise ApiError(
                400,
                "INVALID_CLIENT_REQUEST",
                "Trigger orders take `triggerQuantity`, not `quantity` or `quoteQuantity`",
            )
        if request.trigger_price <= 0 or not multiple_of(request.trigger_price, spec.tick_size):
            raise ApiError(400, "INVALID_PRICE", "Invalid trigger price")
        fixed = None if request.trigger_quantity.endswith("%") else request.trigger_quantity
        if fixed is None:
            share = Decimal(request.trigger_quantity[:-1])
            if not 0 < share <= 100:
                raise ApiError(400, "INVALID_QUANTITY", "Trigger quantity percentage out of range")
        # The order as it will be executed, checked now for everything but funds and band.
        _check(
            account,
            spec,
            attrs.evolve(
                request,
                quantity=spec.min_quantity if fixed is None else Decimal(fixed),
                trigger_price=None,
                trigger_quantity=None,
            ),
        )
        reference = _reference(book, request.trigger_by)
        order = Order(
            id=self._new_order_id(),
            seq=self._next_seq,
            account=account.api_key,
            symbol=spec.symbol,
            side=request.side,
            order_type=request.order_type,
            client_id=request.client_id,
            quantity=None,
            quote_quantity=None,
            price=request.price if request.order_type == LIMIT else None,
            time_in_force=request.time_in_force or "GTC",
            post_only=request.post_only,
            reduce_only=request.reduce_only,
            self_trade_prevention=request.self_trade_prevention,
            created_us=self._time.now,
            status=TRIGGER_PENDING,
            trigger_price=request.trigger_price,
            trigger_quantity=request.trigger_quantity,
            trigger_by=request.trigger_by,
            trigger_rises=request.trigger_price > reference,
            stop_loss=request.stop_loss,
            take_profit=request.take_profit,
        )
        self._wait_for_trigger(account, book, order)
        return order

    def _wait_for_trigger(self, account: Account, book: Book, order: Order) -> None:
        self._next_seq += 1
        account.orders[order.id] = order
        if order.client_id is not None:
            account.client_ids[order.client_id] = order.id
        book.triggers.append(order)
        self._outbox.order_update(order, "triggerPlaced", self._time.now)

    def fire_triggers(self, book: Book) -> None:
        """Execute every conditional order of `book` whose watched price has reached its
        trigger, oldest first, until none is due (an execution's trades move the last price)."""
        while True:
            due = [order for order in book.triggers if _due(book, order)]
            if not due:
                return
            for order in sorted(due, key=lambda o: o.seq):
                if order in book.triggers:
                    self._fire(book, order)

    def _fire(self, book: Book, order: Order) -> None:
        book.triggers.remove(order)
        order.triggered_us = self._time.now
        account = self._ledger.accounts[order.account]
        partner = account.orders.get(order.partner_id) if order.partner_id else None
        if partner is not None and partner.status == TRIGGER_PENDING:
            self.cancel(partner)  # one exit of a pair triggering cancels the other
        try:
            quantity = self._trigger_quantity(account, book, order)
            request = OrderRequest(
                symbol=order.symbol,
                side=order.side,
                order_type=order.order_type,
                quantity=quantity,
                price=order.price,
                time_in_force=order.time_in_force,
                post_only=order.post_only,
                reduce_only=order.reduce_only,
                self_trade_prevention=order.self_trade_prevention,
            )
            self._execute(account, book, request, pending=order)
        except ApiError:
            order.status = "TriggerFailed"
            self._outbox.order_update(order, "triggerFailed", self._time.now)

    def _trigger_quantity(self, account: Account, book: Book, order: Order) -> Decimal:
        """A trigger quantity as a quantity: as given, or a percentage of the position (perp)
        or of what the account holds to sell or pay with (spot), down to the step size."""
        text_quantity = order.trigger_quantity
        assert text_quantity is not None
        if not text_quantity.endswith("%"):
            return Decimal(text_quantity)
        share = VENUE.divide(Decimal(text_quantity[:-1]), Decimal(100))
        spec = book.spec
        if spec.is_perp:
            base = self._ledger.net(account, spec.symbol).copy_abs()
        elif order.side == "Ask":
            base = account.balance(spec.base).available
        else:
            price = order.price if order.price is not None else book.mark_price()
            base = VENUE.divide(account.balance(spec.quote).available, price)
        quantity = floor_to(multiply(base, share), spec.step_size)
        if quantity < spec.min_quantity:
            raise ApiError(400, "INVALID_QUANTITY", "Trigger quantity is below the minimum")
        return quantity

    def _place_exits(self, order: Order) -> None:
        """An order with an attached stop loss or take profit has ended having executed
        something: each exit becomes a reduce-only conditional order on the opposite side for
        the quantity executed, linked to it (`relatedOrderId`); one triggering cancels the
        other."""
        if not order.executed_quantity or (order.stop_loss is None and order.take_profit is None):
            return
        account = self._ledger.accounts[order.account]
        book = self.books[order.symbol]
        long = order.side == "Bid"
        exits: list[Order] = []
        # A long's stop loss fires on a fall and its take profit on a rise; a short's the
        # other way round.
        for exit_, rises in ((order.stop_loss, not long), (order.take_profit, long)):
            if exit_ is None:
                continue
            child = Order(
                id=self._new_order_id(),
                seq=self._next_seq,
                account=order.account,
                symbol=order.symbol,
                side=_opposite(order.side),
                order_type=MARKET if exit_.limit_price is None else LIMIT,
                client_id=None,
                quantity=None,
                quote_quantity=None,
                price=exit_.limit_price,
                time_in_force="GTC",
                post_only=False,
                reduce_only=True,
                self_trade_prevention=order.self_trade_prevention,
                created_us=self._time.now,
                status=TRIGGER_PENDING,
                related_order_id=order.id,
                trigger_price=exit_.trigger_price,
                trigger_quantity=wire.dec(order.executed_quantity),
                trigger_by=exit_.trigger_by,
                trigger_rises=rises,
            )
            self._wait_for_trigger(account, book, child)
            exits.append(child)
        if len(exits) == 2:
            exits[0].partner_id, exits[1].partner_id = exits[1].id, exits[0].id

    def _rest(self, book: Book, account: Account, order: Order) -> None:
        self._ledger.lock(order, book.spec)
        resting = book.bids if order.side == "Bid" else book.asks
        resting.append(order)
        resting.sort(key=lambda o: (_priority(o.price or ZERO, o.side), o.seq))
        if book.spec.is_perp and order.reduce_only:
            self._clip_reduce_only(account, book.spec.symbol)

    def _unrest(self, order: Order) -> None:
        """Take an order off the book and release what it still locks."""
        book = self.books[order.symbol]
        resting = book.bids if order.side == "Bid" else book.asks
        if order in resting:
            resting.remove(order)
        self._ledger.release(order)

    def expire(self, order: Order, reason: str) -> None:
        self._unrest(order)
        order.status = "Expired"
        order.expiry_reason = reason
        self._outbox.order_update(order, "orderExpired", self._time.now)
        self._place_exits(order)

    def cancel(self, order: Order) -> None:
        """Cancel a resting order, or a conditional one before it triggers."""
        book = self.books[order.symbol]
        if order in book.triggers:
            book.triggers.remove(order)
        self._unrest(order)
        order.status = "Cancelled"
        self._outbox.order_update(order, "orderCancelled", self._time.now)
        self._place_exits(order)

    # --- trades -------------------------------------------------------------------------------

    def _trade(
        self,
        book: Book,
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
        stats.last_price = price
        stats.high = max(stats.high, price)
        stats.low = min(stats.low, price)
        stats.volume = add(stats.volume, quantity)
        stats.quote_volume = add(stats.quote_volume, multiply(quantity, price))
        stats.trades += 1
        data = trade_payload(
            symbol=book.spec.symbol,
            trade_id=trade_id,
            price=price,
            quantity=quantity,
            bid_order_id=ids["Bid"],
            ask_order_id=ids["Ask"],
            buyer_is_maker=side == "Ask",
            time_us=self._time.now,
        )
        book.trades.append(data)
        book.add_to_candles(price, quantity, self._time.now)
        self._outbox.trade(book.spec.symbol, data)
        for order in (taker, maker):
            if order is not None and order.origin in LIQUIDATION_ORIGINS:
                self._outbox.liquidation(
                    liquidation_payload(
                        symbol=book.spec.symbol,
                        side=order.side,
                        price=price,
                        quantity=quantity,
                        time_us=self._time.now,
                    )
                )

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
        spec = self.books[order.symbol].spec
        account = self._ledger.accounts[order.account]
        fee, fee_asset = self._ledger.settle(order, spec, price, quantity, is_maker=is_maker)
        order.executed_quantity = add(order.executed_quantity, quantity)
        order.executed_quote_quantity = add(
            order.executed_quote_quantity, multiply(quantity, price)
        )
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
            time_us=self._time.now,
        )
        account.fills.append(fill)
        self._outbox.order_update(order, "orderFill", self._time.now, fill)
        if spec.is_perp:
            self._ledger.position_fill(account, spec, fill)
            self._clip_reduce_only(account, spec.symbol)
        if order.status == "Filled":
            self._place_exits(order)

    def _clip_reduce_only(self, account: Account, symbol: str) -> None:
        """Resting reduce-only orders never exceed the position they reduce: each one larger
        than the position is cut to it (`orderModified`), and one that can no longer reduce
        anything expires."""
        net = self._ledger.net(account, symbol)
        book = self.books[symbol]
        on_book = [o for o in book.bids + book.asks if o.account == account.api_key]
        for order in sorted(on_book, key=lambda o: o.seq):
            if not order.reduce_only:
                continue
            reduces = net > 0 if order.side == "Ask" else net < 0
            allowed = net.copy_abs() if reduces else ZERO
            if not allowed:
                self.expire(order, "ReduceOnlyNotReduced")
            elif order.remaining > allowed:
                order.quantity = add(order.executed_quantity, allowed)
                self._outbox.order_update(order, "orderModified", self._time.now)


def _check(account: Account, spec: MarketSpec, request: OrderRequest) -> None:
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
        if not multiple_of(request.price, spec.tick_size):
            raise client("Price decimal too long")
    if request.quantity is not None:
        if request.quantity <= 0:
            raise ApiError(400, "INVALID_QUANTITY", "Quantity must be positive")
        if not multiple_of(request.quantity, spec.step_size):
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


def _reference(book: Book, trigger_by: str | None) -> Decimal:
    """The price a trigger watches: the last trade's price, or the mark (the index price is
    the mark here: both are the mid). Unset means the mark price."""
    return book.stats.last_price if trigger_by == "LastPrice" else book.mark_price()


def _due(book: Book, order: Order) -> bool:
    assert order.trigger_price is not None
    reference = _reference(book, order.trigger_by)
    if order.trigger_rises:
        return reference >= order.trigger_price
    return reference <= order.trigger_price


def _check_band(spec: MarketSpec, price: Decimal, mark: Decimal) -> None:
    """A limit price outside the market's band around the mark price is refused (the
    venue's expiry reason for it is `PriceOutOfBounds`)."""
    if price < multiply(mark, spec.min_multiplier) or price > multiply(mark, spec.max_multiplier):
        raise ApiError(400, "INVALID_PRICE", "Price out of bounds")


def _plan(
    book: Book,
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
    for maker in book.makers(side):
        if limit is not None and (maker.price > limit if side == "Bid" else maker.price < limit):
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
            take = min(take, floor_to(VENUE.divide(left, maker.price), step))
        if take <= 0:
            plan.complete = left is not None
            break
        plan.takes.append((maker, take))
        plan.quantity = add(plan.quantity, take)
        cost = multiply(take, maker.price)
        plan.notional = add(plan.notional, cost)
        if remaining is not None:
            remaining = subtract(remaining, take)
            if not remaining:
                plan.complete = True
                break
        if left is not None:
            left = subtract(left, cost)
            if take < maker.available or not left:
                plan.complete = True
                break
    return plan


def _would_take(book: Book, side: str, price: Decimal) -> bool:
    makers = book.makers(side)
    if not makers:
        return False
    best = makers[0].price
    return best <= price if side == "Bid" else best >= price
