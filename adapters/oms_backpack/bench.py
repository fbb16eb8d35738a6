"""`python -m oms_backpack.bench [--events N] [--keep PATH] [--seed S]`: log and replay speed.

Writes a synthetic, fill-heavy Backpack session of N events (default 1,000,000) with
`EventLog` and `Fsync.never()`, then measures on that one file:

- replay: `oms.replay.replay_file` over the file (read, decode, reduce), events/s;
- the baseline: `json.loads` on every line of the same file, read the same way, lines/s,
  and the ratio of the two rates; the two are timed alternately, 3 rounds (5 with `--quick`),
  and each rate is taken from the median CPU time of its runs;
- the peak RSS of a replay in a fresh process (`python -m oms.replay FILE --json`);
- append rates for each fsync policy, and the file's size per event;
- `Engine.open` of a session twice as long as N against one a tenth of that (2,000,000 vs
  200,000 events by default; 500,000 vs 50,000 with `--quick`), each recorded through the
  engine with its snapshot policy (a snapshot every twentieth of the longer session, written
  as the engine writes them), as the median CPU time of alternating opens: resuming from a
  snapshot should make an open cost about the same whatever the log's length;
- `submit()` to the request's last byte handed to the socket, p50 and p99 over 2,000 orders
  (500 with `--quick`) on a real session against the local exchange in its own process
  (`oms_backpack.bench_submit`, which says exactly what the span holds).

The session is deterministic given the seed: markets first, a balance snapshot as the
baseline, then orders (submit, accept, fills with the venue's cumulative figures, often a
cancel) on spot and perp markets, interleaved a few at a time, a balance snapshot every few
thousand events and funding payments at each hourly boundary. Every venue event carries the
Backpack message text it would have come from, built by the local exchange's own frame
builder (`oms_local_exchange.frames`), so the bench reads what the venue would send. The
balances the snapshots report are those the events imply, so a correct replay records no
anomaly.

Timings use floats; money in the session is Decimal throughout. The targets are shown with
PASS/MISS for information; the exit status is 0 whatever the figures (2 on a usage error).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Final, TextIO

import attrs
import trio

from oms.core.events import (
    AssetBalance,
    BalanceObserved,
    CancelRequested,
    Event,
    FundingPaid,
    MarketInfo,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderSubmitted,
)
from oms.core.state import State
from oms.core.values import (
    CTX,
    PNL_QUANTUM,
    ZERO,
    MarketType,
    OrderType,
    Side,
    Source,
    TimeInForce,
    VenueStatus,
)
from oms.engine import Engine
from oms.log import READ_BUFFER_BYTES, EventLog, Fsync
from oms.replay import replay_file
from oms.snapshot import SnapshotPolicy, snapshot_dir
from oms_backpack import codec
from oms_backpack.bench_submit import DEFAULT_SAMPLES as SUBMIT_SAMPLES
from oms_backpack.bench_submit import QUICK_SAMPLES as SUBMIT_QUICK_SAMPLES
from oms_backpack.bench_submit import TARGET_P50_US as SUBMIT_TARGET_P50_US
from oms_backpack.bench_submit import measure_submit
from oms_backpack.session import FillChaser
from oms_local_exchange import frames

__all__ = ["main", "session_events"]

DEFAULT_EVENTS: Final = 1_000_000
DEFAULT_SEED: Final = 1
MIN_EVENTS: Final = 100

# Targets of the speed issue (9); informational only: the exit status ignores them.
TARGET_REPLAY_RATE: Final = 100_000.0  # events/s
TARGET_RATIO: Final = 0.8  # replay rate / json.loads rate
TARGET_RSS_MB: Final = 100.0  # peak RSS of a replay of 1,000,000 events
TARGET_GROUP_APPEND: Final = 200_000.0  # events/s
TARGET_LIVE_P50_US: Final = 50.0  # a WebSocket frame in hand -> applied and appended
TARGET_LIVE_P99_US: Final = 150.0
TARGET_OPEN_RATIO: Final = 1.5  # Engine.open of a 10x longer log, relative
QUICK_EVENTS: Final = 100_000
LIVE_FRAMES: Final = 20_000  # frames timed on the live path

EVERY_EVENT_COUNT: Final = 2_000  # fsync per event is slow: a smaller sample
GROUP_COUNT: Final = 200_000
# Group-commit appends are timed this many times (events made anew each time, outside the
# timing), the figure the median run: one run of about a second moves 10-20% with the
# machine, and every run is printed.
GROUP_ROUNDS: Final = 3
# Replay and its json.loads baseline are timed in rounds, alternating, each figure the median
# CPU time of its runs (the machine is shared: alternating spreads its moods over both, and
# CPU time leaves out the time another process had the core).
RATIO_ROUNDS: Final = 3
RATIO_ROUNDS_QUICK: Final = 5
GENERATION_NOTE_SECONDS: Final = 60.0
OPEN_RUNS: Final = 5  # opens of each session for the Engine.open figure (3 with --quick)
# --quick's sizes for it: the smaller session must be long enough that finished-order
# retention already caps the state (about 51,000 events of this session at the default
# 10,000), as it does at 200,000; below that, a longer log also means a larger state.
QUICK_OPEN_SMALL: Final = 50_000

_CHUNK: Final = 4_096
_MAX_LIVE_ORDERS: Final = 6
_HOUR_US: Final = 3_600_000_000
# 2025-08-11T19:59:00Z: the first funding boundary comes a minute into the session.
_START_US: Final = 1_754_942_340_000_000
_MAKER_FEE: Final = Decimal("0.0002")
_TAKER_FEE: Final = Decimal("0.001")
_PERP_FEE_ASSET: Final = "USDC"
_INITIAL_BALANCES: Final = (
    ("BTC", Decimal("5")),
    ("ETH", Decimal("100")),
    ("SOL", Decimal("5000")),
    ("USDC", Decimal("1000000")),
)

_USER_ID: Final = 1_813_870

_add = CTX.add
_sub = CTX.subtract
_mul = CTX.multiply


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


@attrs.frozen
class _MarketSpec:
    symbol: str
    base: str
    quote: str
    market_type: MarketType
    tick_places: int  # tick size 10**-tick_places
    step_places: int  # step size 10**-step_places
    start_ticks: int  # starting price in ticks
    max_steps: int  # largest order quantity in steps

    @property
    def is_spot(self) -> bool:
        return self.market_type is MarketType.SPOT

    def price(self, ticks: int) -> Decimal:
        return Decimal(ticks).scaleb(-self.tick_places)

    def quantity(self, steps: int) -> Decimal:
        return Decimal(steps).scaleb(-self.step_places)


_MARKETS: Final = (
    _MarketSpec("SOL_USDC", "SOL", "USDC", MarketType.SPOT, 2, 2, 15_000, 500),
    _MarketSpec("ETH_USDC", "ETH", "USDC", MarketType.SPOT, 2, 4, 430_000, 500),
    _MarketSpec("BTC_USDC", "BTC", "USDC", MarketType.SPOT, 1, 5, 1_100_000, 200),
    _MarketSpec("SOL_USDC_PERP", "SOL", "USDC", MarketType.PERP, 2, 2, 15_000, 500),
    _MarketSpec("ETH_USDC_PERP", "ETH", "USDC", MarketType.PERP, 2, 3, 430_000, 100),
    _MarketSpec("BTC_USDC_PERP", "BTC", "USDC", MarketType.PERP, 1, 4, 1_100_000, 50),
)


class _Live:
    """What the generator needs to know of an order still in play (for balance locks)."""

    __slots__ = ("filled", "is_open", "market", "price", "quantity", "side")

    def __init__(
        self, market: _MarketSpec, side: Side, quantity: Decimal, price: Decimal | None
    ) -> None:
        self.market = market
        self.side = side
        self.quantity = quantity
        self.price = price
        self.filled = ZERO
        self.is_open = False  # accepted and not finished: its funds are locked

    def lock(self) -> tuple[str, Decimal] | None:
        """The asset and amount the reducer holds locked for this order right now."""
        if not self.is_open or not self.market.is_spot:
            return None
        remaining = _sub(self.quantity, self.filled)
        if self.side is Side.ASK:
            return self.market.base, remaining
        if self.price is None:
            return None
        return self.market.quote, _mul(remaining, self.price)


class _Session:
    """The synthetic session: an endless, seeded stream of events (cut with `islice`)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = _START_US
        self.next_funding = (_START_US // _HOUR_US + 1) * _HOUR_US
        self.client_id = 0
        self.venue_id = 8_284_661_000
        self.trade_id = 2_888_471_000
        self.mid = {m.symbol: m.start_ticks for m in _MARKETS}
        self.totals = dict(_INITIAL_BALANCES)
        self.net = {m.symbol: ZERO for m in _MARKETS if not m.is_spot}
        self.open_cost = {m.symbol: ZERO for m in _MARKETS if not m.is_spot}
        self.live: dict[int, _Live] = {}

    # --- clock -------------------------------------------------------------------------------

    def _tick(self) -> int:
        """Advance the local clock (about 10 events a second) and return it."""
        self.now += self.rng.randrange(1_000, 200_000)
        return self.now

    def _venue_time(self) -> int:
        return self.now - self.rng.randrange(300, 4_000)

    # --- the stream --------------------------------------------------------------------------

    def events(self) -> Iterator[Event]:
        for market in _MARKETS:
            yield self._market_info(market)
        yield self._balances()
        rng = self.rng
        scripts: list[Iterator[Event]] = []
        until_snapshot = rng.randrange(2_000, 5_000)
        while True:
            if self.now >= self.next_funding:
                yield from self._funding()
            if until_snapshot == 0:
                until_snapshot = rng.randrange(2_000, 5_000)
                yield self._balances()
                continue
            if not scripts or (len(scripts) < _MAX_LIVE_ORDERS and rng.random() < 0.3):
                scripts.append(self._order())
            index = rng.randrange(len(scripts))
            event = next(scripts[index], None)
            if event is None:
                scripts.pop(index)
                continue
            until_snapshot -= 1
            yield event

    def _market_info(self, market: _MarketSpec) -> MarketInfo:
        document = frames.market_object(
            symbol=market.symbol,
            base=market.base,
            quote=market.quote,
            market_type=market.market_type.value,
            tick_size=market.price(1),
            step_size=market.quantity(1),
            min_quantity=market.quantity(1),
            created_us=_START_US,
        )
        return MarketInfo(
            source=Source.REST,
            recv_time_us=self._tick(),
            raw=_json(document),
            symbol=market.symbol,
            base_asset=market.base,
            quote_asset=market.quote,
            market_type=market.market_type,
            tick_size=market.price(1),
            step_size=market.quantity(1),
            min_quantity=market.quantity(1),
        )

    def _balances(self) -> BalanceObserved:
        """A `GET /api/v1/capital` answer agreeing with what the events so far imply."""
        locked = dict.fromkeys(self.totals, ZERO)
        for order in self.live.values():
            lock = order.lock()
            if lock is not None:
                locked[lock[0]] = _add(locked[lock[0]], lock[1])
        items = []
        for asset in sorted(self.totals):
            available = _sub(self.totals[asset], locked[asset])
            items.append(AssetBalance(asset=asset, available=available, locked=locked[asset]))
        body = frames.capital((b.asset, b.available, b.locked, ZERO) for b in items)
        return BalanceObserved(
            source=Source.REST,
            recv_time_us=self._tick(),
            raw=_json(body),
            balances=tuple(items),
        )

    def _funding(self) -> Iterator[Event]:
        """Funding for every open perp position at the hourly boundary just passed."""
        end = self.next_funding
        self.next_funding += _HOUR_US
        for market in _MARKETS:
            net = self.net.get(market.symbol, ZERO)
            if market.is_spot or not net:
                continue
            rate = Decimal(self.rng.randrange(-60, 61) or 1).scaleb(-7)
            mark = market.price(self.mid[market.symbol])
            amount = (
                _mul(_mul(net, mark), rate).copy_negate().quantize(Decimal("0.000001"), context=CTX)
            )
            if not amount:
                continue
            self._move(market.quote, amount)
            item = frames.funding_item(
                symbol=market.symbol,
                interval_end_ms=end // 1000,
                rate=rate,
                amount=amount,
                user_id=_USER_ID,
            )
            yield FundingPaid(
                source=Source.REST,
                recv_time_us=self._tick(),
                raw=_json(item),
                symbol=market.symbol,
                interval_end_us=end,
                amount=amount,
                rate=rate,
            )

    # --- one order's life --------------------------------------------------------------------

    def _side(self, market: _MarketSpec) -> Side:
        """Lean towards the side that brings inventory back to where it started."""
        if market.is_spot:
            start = dict(_INITIAL_BALANCES)[market.base]
            short = self.totals[market.base] < start
        else:
            short = self.net[market.symbol] < 0
        return Side.BID if (self.rng.random() < 0.6) == short else Side.ASK

    def _order(self) -> Iterator[Event]:
        rng = self.rng
        market = _MARKETS[rng.randrange(len(_MARKETS))]
        symbol = market.symbol
        self.client_id += 1
        client_id = self.client_id
        self.venue_id += rng.randrange(1, 40)
        venue_id = str(self.venue_id)
        side = self._side(market)
        steps = rng.randrange(1, market.max_steps + 1)
        quantity = market.quantity(steps)
        mid = self.mid[symbol] = max(self.mid[symbol] + rng.randrange(-4, 5), 100)
        is_market = rng.random() < 0.3
        post_only = False
        price: Decimal | None = None
        if is_market:
            order_type, wire_type = OrderType.MARKET, "Market"
        else:
            offset = rng.randrange(0, 20)
            price = market.price(mid - offset if side is Side.BID else mid + offset)
            post_only = rng.random() < 0.3
            order_type = OrderType.LIMIT_MAKER if post_only else OrderType.LIMIT
            wire_type = "Limit"
        tif = TimeInForce.GTC
        live = _Live(market, side, quantity, price)
        self.live[client_id] = live

        yield OrderSubmitted(
            source=Source.LOCAL,
            recv_time_us=self._tick(),
            client_id=client_id,
            symbol=symbol,
            side=side,
            order_type=order_type,
            quantity=quantity,
            price=price,
            time_in_force=tif,
            post_only=post_only,
        )

        def update(
            kind: str,
            venue_time: int,
            status: VenueStatus,
            cum_quote: Decimal,
            fill: frames.FillFigures | None = None,
        ) -> str:
            """The `account.orderUpdate` frame of this order: `T` is the venue time."""
            fields = frames.OrderFields(
                id=venue_id,
                symbol=symbol,
                side=side.value,
                order_type=wire_type,
                status=status.value,
                time_in_force=tif.value,
                client_id=client_id,
                quantity=quantity,
                price=price,
                executed_quantity=live.filled,
                executed_quote_quantity=cum_quote,
                post_only=post_only,
                reduce_only=False,
            )
            data = frames.order_update(
                fields, kind, event_time_us=venue_time + 1, engine_time_us=venue_time, fill=fill
            )
            return frames.frame(frames.ORDER_STREAM, data)

        now = self._tick()
        venue_time = self._venue_time()
        live.is_open = True
        yield OrderAccepted(
            source=Source.WS,
            recv_time_us=now,
            venue_time_us=venue_time,
            raw=update("orderAccepted", venue_time, VenueStatus.NEW, ZERO),
            symbol=symbol,
            venue_id=venue_id,
            client_id=client_id,
            side=side,
            order_type=OrderType.MARKET if is_market else OrderType.LIMIT,
            quantity=quantity,
            price=price,
            time_in_force=tif,
            post_only=post_only,
        )

        # How much fills, in how many pieces; whatever does not fill is cancelled.
        to_fill = steps if is_market or rng.random() < 0.55 else rng.randrange(0, steps)
        pieces = min(rng.randrange(1, 5), to_fill)
        cuts = sorted(rng.sample(range(1, to_fill), pieces - 1)) if pieces > 1 else []
        sizes = [b - a for a, b in zip([0, *cuts], [*cuts, to_fill], strict=True)] if pieces else []
        cancel = to_fill < steps
        # Now and then the cancel request races the last fill.
        cancel_at = len(sizes) - 1 if cancel and sizes and rng.random() < 0.2 else len(sizes)

        filled_steps = 0
        cum_quote = ZERO
        for number, size in enumerate(sizes):
            if number == cancel_at:
                yield self._cancel_request(symbol, client_id, venue_id)
            filled_steps += size
            fill_quantity = market.quantity(size)
            if price is None:
                fill_price = market.price(max(mid + rng.randrange(-5, 6), 1))
                maker = False
            else:
                fill_price = price
                maker = post_only or rng.random() < 0.8
            notional = _mul(fill_quantity, fill_price)
            live.filled = _add(live.filled, fill_quantity)
            cum_quote = _add(cum_quote, notional)
            rate = _MAKER_FEE if maker else _TAKER_FEE
            if not market.is_spot:
                fee_asset, fee = _PERP_FEE_ASSET, _mul(notional, rate)
                self._perp_fill(market, side, fill_quantity, fill_price)
                self._move(fee_asset, fee.copy_negate())
            elif side is Side.BID:
                fee_asset, fee = market.base, _mul(fill_quantity, rate)
                self._move(market.base, fill_quantity)
                self._move(market.quote, notional.copy_negate())
            else:
                fee_asset, fee = market.quote, _mul(notional, rate)
                self._move(market.base, fill_quantity.copy_negate())
                self._move(market.quote, notional)
            if market.is_spot:
                self._move(fee_asset, fee.copy_negate())
            complete = filled_steps == steps
            status = VenueStatus.FILLED if complete else VenueStatus.PARTIALLY_FILLED
            if complete:
                live.is_open = False
                del self.live[client_id]
            self.trade_id += rng.randrange(1, 50)
            now = self._tick()
            venue_time = self._venue_time()
            figures = frames.FillFigures(
                trade_id=self.trade_id,
                quantity=fill_quantity,
                price=fill_price,
                fee=fee,
                fee_asset=fee_asset,
                is_maker=maker,
            )
            yield OrderFilled(
                source=Source.WS,
                recv_time_us=now,
                venue_time_us=venue_time,
                raw=update("orderFill", venue_time, status, cum_quote, figures),
                symbol=symbol,
                venue_id=venue_id,
                trade_id=self.trade_id,
                side=side,
                quantity=fill_quantity,
                price=fill_price,
                fee=fee,
                fee_asset=fee_asset,
                maker=maker,
                client_id=client_id,
                cum_quantity=live.filled,
                cum_quote=cum_quote,
                status=status,
                order_type=OrderType.MARKET if is_market else OrderType.LIMIT,
                order_quantity=quantity,
                order_price=price,
            )
        if not cancel:
            return
        if cancel_at == len(sizes):
            yield self._cancel_request(symbol, client_id, venue_id)
        live.is_open = False
        del self.live[client_id]
        now = self._tick()
        venue_time = self._venue_time()
        yield OrderCancelled(
            source=Source.WS,
            recv_time_us=now,
            venue_time_us=venue_time,
            raw=update("orderCancelled", venue_time, VenueStatus.CANCELLED, cum_quote),
            symbol=symbol,
            venue_id=venue_id,
            client_id=client_id,
            side=side,
            order_type=OrderType.MARKET if is_market else OrderType.LIMIT,
            quantity=quantity,
            price=price,
            cum_quantity=live.filled,
        )

    def _cancel_request(self, symbol: str, client_id: int, venue_id: str) -> CancelRequested:
        return CancelRequested(
            source=Source.LOCAL,
            recv_time_us=self._tick(),
            symbol=symbol,
            client_id=client_id,
            venue_id=venue_id,
        )

    def _move(self, asset: str, amount: Decimal) -> None:
        self.totals[asset] = _add(self.totals[asset], amount)

    def _perp_fill(
        self, market: _MarketSpec, side: Side, quantity: Decimal, price: Decimal
    ) -> None:
        """Keep the position and settle realized PnL in the quote asset, as a venue does
        (average entry; the PnL rounded to `PNL_QUANTUM`), so balance snapshots agree."""
        symbol = market.symbol
        net, cost = self.net[symbol], self.open_cost[symbol]
        delta = quantity if side is Side.BID else quantity.copy_negate()
        new = _add(net, delta)
        if not net or (net > 0) == (delta > 0):
            cost = _add(cost, _mul(quantity, price))
        else:
            entry = CTX.divide(cost, net.copy_abs())
            pnl = _mul(min(quantity, net.copy_abs()), _sub(price, entry)).quantize(
                PNL_QUANTUM, context=CTX
            )
            self._move(market.quote, pnl if net > 0 else pnl.copy_negate())
            if not new:
                cost = ZERO
            elif (new > 0) != (net > 0):
                cost = _mul(new.copy_abs(), price)
            else:
                cost = _mul(entry, new.copy_abs())
        self.net[symbol], self.open_cost[symbol] = new, cost


def session_events(count: int, seed: int = DEFAULT_SEED) -> Iterator[Event]:
    """The first `count` events of the synthetic session for `seed` (the same every time)."""
    return itertools.islice(_Session(seed).events(), count)


# --- measurements ----------------------------------------------------------------------------


@attrs.frozen
class _Append:
    label: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def _settle() -> None:
    """Have the kernel write what the earlier figures left dirty (the session file, the logs
    of the Engine.open figure: hundreds of MB) before a figure that writes, fsyncs or waits
    on the machine, so that it does not pay for another figure's files."""
    os.sync()


def _append(path: Path, events: Iterable[Event], fsync: Fsync, label: str) -> tuple[_Append, float]:
    """Append `events` to a new log at `path`; (append timing, total seconds incl. making them).

    Events are made in chunks outside the timed part, so the rate is the log's alone.
    """
    if path.exists():
        path.unlink()
    started = time.perf_counter()
    spent = 0.0
    count = 0
    log = EventLog.open(path, fsync=fsync)
    try:
        iterator = iter(events)
        while chunk := list(itertools.islice(iterator, _CHUNK)):
            append = log.append
            begin = time.perf_counter()
            for event in chunk:
                append(event)
            spent += time.perf_counter() - begin
            count += len(chunk)
    finally:
        begin = time.perf_counter()
        log.close()
        spent += time.perf_counter() - begin
    return _Append(label, count, spent), time.perf_counter() - started


class _NoFillHistory:
    """The chaser's REST side: never called here (nothing runs the chaser's loop)."""

    async def fill_history(
        self,
        *,
        venue_id: str | None = None,
        symbol: str | None = None,
        from_ms: int | None = None,
        source: Source,
    ) -> list[Event]:
        raise AssertionError("the bench does not chase fills")


def _live_path(path: Path, events: Iterable[Event], frames_wanted: int) -> list[int]:
    """Nanoseconds from a WebSocket frame in hand to its events applied and appended (group
    commit), one figure per frame: the session's own path, `codec.decode_ws_frame` then
    `Engine.record` for each event, with the listeners a Backpack session subscribes (the fill
    chaser's, and a counter like the reconciler's), inside trio as a session runs. The
    session's other events are recorded untimed, so each frame meets the state it would meet
    live."""
    if path.exists():
        path.unlink()
    return trio.run(_live_path_in_trio, path, events, frames_wanted)


async def _live_path_in_trio(path: Path, events: Iterable[Event], frames_wanted: int) -> list[int]:
    engine = Engine.open(path, fsync=Fsync.group())
    chaser = FillChaser(engine, _NoFillHistory())
    moved = [0]

    def count_moves(event: Event, state: State) -> None:
        if isinstance(event, OrderFilled | FundingPaid):
            moved[0] += 1

    engine.subscribe(chaser.notice)
    engine.subscribe(count_moves)
    clock = time.perf_counter_ns
    timings: list[int] = []
    try:
        for event in events:
            if event.source is Source.WS and event.raw is not None:
                begin = clock()
                for decoded in codec.decode_ws_frame(event.raw, event.recv_time_us).events:
                    engine.record(decoded)
                timings.append(clock() - begin)
                if len(timings) >= frames_wanted:
                    break
            else:
                engine.record(event)
    finally:
        engine.close()
    return timings


@attrs.frozen
class _Opened:
    """One `Engine.open`: CPU seconds, and what it started from."""

    seconds: float
    resumed: bool
    read: int  # events read from the log at open
    last_seq: int


@attrs.frozen
class _OpenFigure:
    small: int
    large: int
    every: int
    small_open: _Opened
    large_open: _Opened

    @property
    def ratio(self) -> float:
        return self.large_open.seconds / max(self.small_open.seconds, 1e-9)


def _record_sessions(
    small_path: Path, large_path: Path, *, small: int, large: int, seed: int, policy: SnapshotPolicy
) -> None:
    """Record the first `large` events of the session through the engine at `large_path`,
    writing each snapshot when due as a program without `Engine.run` does; a copy of the log
    and its snapshots as they were after `small` events goes to `small_path` (what a user
    who stopped there would have: the same session, shorter)."""
    for path in (small_path, large_path):
        path.unlink(missing_ok=True)
        shutil.rmtree(snapshot_dir(path), ignore_errors=True)
    engine = Engine.open(large_path, fsync=Fsync.never(), snapshots=policy)
    try:
        for number, event in enumerate(session_events(large, seed), start=1):
            engine.record(event)
            if engine.snapshot_due:
                engine.write_snapshot()
            if number == small:
                assert engine.log is not None
                engine.log.flush()
                shutil.copyfile(large_path, small_path)
                if snapshot_dir(large_path).is_dir():
                    shutil.copytree(snapshot_dir(large_path), snapshot_dir(small_path))
    finally:
        engine.close()


def _open_once(path: Path) -> _Opened:
    gc.collect()
    begin = time.process_time()
    # Resume as the engine does, but write nothing (not even a due snapshot at close): every
    # open must find the files as recording left them.
    engine = Engine.open(path, fsync=Fsync.never(), snapshots=SnapshotPolicy(every=0))
    seconds = time.process_time() - begin
    try:
        return _Opened(
            seconds, engine.resumed_from is not None, engine.replayed_at_open, engine.state.last_seq
        )
    finally:
        engine.close()


def _open_figure(scratch: Path, small: int, seed: int, runs: int) -> _OpenFigure:
    """`Engine.open` of a session of 10 x `small` events against one of `small` (the same
    session, cut), each with the snapshots the engine wrote while recording it (every
    `small / 2` events): median CPU seconds of `runs` opens of each, alternating so that
    both see the same machine."""
    large = 10 * small
    policy = SnapshotPolicy(every=max(small // 2, 1))
    small_path, large_path = scratch / "open-small.jsonl", scratch / "open-large.jsonl"
    _record_sessions(small_path, large_path, small=small, large=large, seed=seed, policy=policy)
    opened: dict[Path, list[_Opened]] = {small_path: [], large_path: []}
    for _ in range(runs):
        for path in (small_path, large_path):
            opened[path].append(_open_once(path))

    def median(path: Path) -> _Opened:
        runs_of = opened[path]
        middle = statistics.median(o.seconds for o in runs_of)
        return attrs.evolve(
            runs_of[-1],
            seconds=middle,
            resumed=all(o.resumed for o in runs_of),
            read=max(o.read for o in runs_of),
        )

    return _OpenFigure(small, large, policy.every, median(small_path), median(large_path))


def _short(count: int) -> str:
    """2,000,000 as 2M, 200,000 as 200k."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if count >= size and count % size == 0:
            return f"{count // size}{suffix}"
    return f"{count:,}"


def _percentile(values: Sequence[int], share: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(share * len(ordered)))])


def _interleaved(rounds: int, works: Sequence[Callable[[], object]]) -> list[tuple[float, float]]:
    """Run each of `works` once per round, in turn, for `rounds` rounds; for each, the median
    (CPU seconds of this process, wall seconds) of its runs."""
    cpu: list[list[float]] = [[] for _ in works]
    wall: list[list[float]] = [[] for _ in works]
    for _ in range(rounds):
        for index, work in enumerate(works):
            wall_begin, cpu_begin = time.perf_counter(), time.process_time()
            work()
            cpu[index].append(time.process_time() - cpu_begin)
            wall[index].append(time.perf_counter() - wall_begin)
    return [
        (statistics.median(cpu[index]), statistics.median(wall[index]))
        for index in range(len(works))
    ]


def _json_lines(path: Path) -> int:
    """Parse every line with the standard json module, reading as `LogReader` does."""
    loads = json.loads
    count = 0
    with path.open("rb", buffering=READ_BUFFER_BYTES) as handle:
        for line in handle:
            loads(line)
            count += 1
    return count


# Runs `python ARGS` (stdout discarded) and prints its peak RSS in KiB. On Linux a child's
# ru_maxrss includes the RSS of the process it was forked from (the high-water mark survives
# exec), so measuring from this process, grown by generating and replaying, would report our
# own size. This small fresh interpreter is the parent instead.
_RSS_HELPER: Final = """
import resource, subprocess, sys
done = subprocess.run([sys.executable, *sys.argv[1:]], stdout=subprocess.DEVNULL)
if done.returncode:
    sys.exit(done.returncode)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _child_peak_rss_mb(args: Sequence[str]) -> float:
    """Peak RSS in MB of `python ARGS` run in a fresh process (via `_RSS_HELPER`)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-c", _RSS_HELPER, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"python {' '.join(args)} exited with {done.returncode}: {done.stderr.strip()}"
        )
    return int(done.stdout) / 1024


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _write_table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        out.write("  " + "  ".join(cells).rstrip() + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m oms_backpack.bench",
        description="Benchmark the event log and replay on a synthetic Backpack session.",
        epilog="Exit status: 0 (whatever the figures), 2 usage.",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=DEFAULT_EVENTS,
        metavar="N",
        help=f"events in the session (default {DEFAULT_EVENTS:,})",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="PATH",
        help="write the session here and keep it (overwritten if it exists)",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"session seed (default {DEFAULT_SEED})"
    )
    parser.add_argument(
        "--submit-samples",
        type=int,
        metavar="N",
        help=f"orders timed for the submit figure (default {SUBMIT_SAMPLES:,}; "
        f"{SUBMIT_QUICK_SAMPLES:,} with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_EVENTS:,} events, {RATIO_ROUNDS_QUICK} rounds of replay and json.loads "
        "(under a minute; the RSS target is for 1,000,000 events)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    count: int = QUICK_EVENTS if args.quick else args.events
    seed: int = args.seed
    if count < MIN_EVENTS:
        parser.error(f"--events must be at least {MIN_EVENTS}")
    if args.submit_samples is not None and args.submit_samples < 1:
        parser.error("--submit-samples must be at least 1")
    out = sys.stdout
    with tempfile.TemporaryDirectory(prefix="oms-bench-") as scratch_name:
        scratch = Path(scratch_name)
        path: Path = args.keep if args.keep is not None else scratch / "session.jsonl"
        rounds = RATIO_ROUNDS_QUICK if args.quick else RATIO_ROUNDS
        out.write(f"oms bench: {count:,} events, seed {seed}\n")
        out.write(f"session file: {path}{'' if args.keep else ' (temporary)'}\n")
        out.flush()

        # Submits first, in a process that has done nothing else yet, like a trading program
        # that has just opened its session. Timed after the other figures (gigabytes of
        # events made, replayed and freed), the same code took 195-268 µs p50 where a fresh
        # process took 166-185 within minutes (docs/speed.md).
        submit = measure_submit(
            args.submit_samples or (SUBMIT_QUICK_SAMPLES if args.quick else SUBMIT_SAMPLES)
        )

        never, generated = _append(path, session_events(count, seed), Fsync.never(), "never()")
        making = generated - never.seconds
        out.write(
            f"generated in {generated:.1f} s ({making:.1f} s making events, "
            f"{never.seconds:.1f} s appending)\n"
        )
        if generated > GENERATION_NOTE_SECONDS:
            out.write(f"note: generation took more than {GENERATION_NOTE_SECONDS:.0f} s\n")
        out.flush()

        size = path.stat().st_size
        results: list[State] = []

        def run_replay() -> None:
            results[:] = [replay_file(str(path))[0]]

        lines = [0]

        def run_json() -> None:
            lines[0] = _json_lines(path)

        out.write(f"timing replay and json.loads alternately, {rounds} rounds (median CPU time)\n")
        out.flush()
        (replay_seconds, replay_wall), (json_seconds, json_wall) = _interleaved(
            rounds, [run_replay, run_json]
        )
        state = results[-1]
        replayed = (
            f"replayed state: last seq {state.last_seq:,}, {len(state.orders):,} orders kept "
            f"({len(state.open_orders()):,} open), anomalies {state.anomaly_total}\n"
        )
        # The figures after this one time sessions of their own: the replayed state (tens of
        # MB of objects) goes first, as other figures' files go before them (`_settle`). Kept,
        # it made every part of a submit slower, by about 15% (docs/speed.md).
        del state
        results.clear()
        gc.collect()
        replay_rate = count / replay_seconds
        json_rate = lines[0] / json_seconds
        ratio = replay_rate / json_rate

        rss_mb = _child_peak_rss_mb(["-m", "oms.replay", str(path), "--json"])
        base_mb = _child_peak_rss_mb(["-c", "import oms.replay"])

        every, _ = _append(
            scratch / "every.jsonl",
            session_events(min(count, EVERY_EVENT_COUNT), seed),
            Fsync.every_event(),
            "every_event()",
        )
        groups = []
        for _ in range(GROUP_ROUNDS):
            _settle()
            run, _ = _append(
                scratch / "group.jsonl",
                session_events(min(count, GROUP_COUNT), seed),
                Fsync.group(),
                "group()",
            )
            groups.append(run)
        group = sorted(groups, key=lambda run: run.rate)[len(groups) // 2]

        _settle()
        live = _live_path(
            scratch / "live.jsonl", session_events(count, seed), min(count, LIVE_FRAMES)
        )
        live_p50 = _percentile(live, 0.5) / 1000
        live_p99 = _percentile(live, 0.99) / 1000

        open_small = QUICK_OPEN_SMALL if args.quick else max(count // 5, MIN_EVENTS)
        out.write(
            f"recording {10 * open_small:,} events through the engine for the Engine.open figure\n"
        )
        out.flush()
        opening = _open_figure(scratch, open_small, seed, 3 if args.quick else OPEN_RUNS)

        rows = [
            ["figure", "value", "target", ""],
            [
                "replay (read+decode+reduce)",
                f"{replay_rate:,.0f} events/s",
                f">= {TARGET_REPLAY_RATE:,.0f}",
                _verdict(replay_rate >= TARGET_REPLAY_RATE),
            ],
            ["json.loads per line", f"{json_rate:,.0f} lines/s", "", ""],
            [
                "ratio replay / json",
                f"{ratio:.2f}",
                f">= {TARGET_RATIO}",
                _verdict(ratio >= TARGET_RATIO),
            ],
            [
                "replay peak RSS",
                f"{rss_mb:.1f} MB",
                f"< {TARGET_RSS_MB:.0f} MB",
                _verdict(rss_mb < TARGET_RSS_MB),
            ],
            ["  python + oms imports alone", f"{base_mb:.1f} MB", "", ""],
        ]
        rows.append(
            [
                f"live: frame -> applied+appended p50 ({len(live):,} frames)",
                f"{live_p50:,.1f} µs",
                f"< {TARGET_LIVE_P50_US:.0f} µs",
                _verdict(live_p50 < TARGET_LIVE_P50_US),
            ]
        )
        rows.append(
            [
                "live: frame -> applied+appended p99",
                f"{live_p99:,.1f} µs",
                f"< {TARGET_LIVE_P99_US:.0f} µs",
                _verdict(live_p99 < TARGET_LIVE_P99_US),
            ]
        )
        for item in (every, group, never):
            target, verdict, runs = "", "", ""
            if item is group:
                target = f">= {TARGET_GROUP_APPEND:,.0f}"
                verdict = _verdict(item.rate >= TARGET_GROUP_APPEND)
                runs = f", median of {GROUP_ROUNDS} runs"
            rows.append(
                [
                    f"append, Fsync.{item.label} ({item.events:,} events{runs})",
                    f"{item.rate:,.0f} events/s",
                    target,
                    verdict,
                ]
            )
        open_label = f"Engine.open {_short(opening.large)} vs {_short(opening.small)} events"
        if args.quick:
            open_label += " (--quick sizes; default run: 2M vs 200k)"
        rows.append(
            [
                open_label,
                f"{opening.large_open.seconds:.3f} s / {opening.small_open.seconds:.3f} s = "
                f"{opening.ratio:.2f}x",
                f"<= {TARGET_OPEN_RATIO}x",
                _verdict(opening.ratio <= TARGET_OPEN_RATIO),
            ]
        )
        submit_label = f"submit() -> request bytes at the socket p50 ({submit['samples']:,.0f})"
        if submit["failed_submits"]:
            submit_label += f", {submit['failed_submits']:,.0f} NOT PLACED"
        rows.append(
            [
                submit_label,
                f"{submit['p50_us']:,.1f} µs",
                f"< {SUBMIT_TARGET_P50_US:.0f} µs",
                _verdict(submit["p50_us"] < SUBMIT_TARGET_P50_US and not submit["failed_submits"]),
            ]
        )
        rows.append(["submit() -> socket p99", f"{submit['p99_us']:,.1f} µs", "", ""])
        rows.append(["file size", f"{size / 1e6:,.1f} MB", "", ""])
        rows.append(["bytes per event", f"{size / count:,.0f}", "", ""])
        out.write("\n")
        _write_table(rows, out)
        out.write(
            f"\nreplay: {replay_seconds:.2f} s CPU ({replay_wall:.2f} s wall) for {count:,} "
            f"events; json: {json_seconds:.2f} s CPU ({json_wall:.2f} s wall) for "
            f"{lines[0]:,} lines (medians of {rounds} alternating rounds)\n"
            f"{replayed}"
            f"append, Fsync.group(), each run: "
            f"{' / '.join(f'{run.rate:,.0f}' for run in groups)} events/s\n"
        )
        for opened in (opening.large_open, opening.small_open):
            start = "resumed from a snapshot" if opened.resumed else "NO SNAPSHOT USED"
            out.write(
                f"Engine.open of {opened.last_seq:,} events: {opened.seconds:.3f} s CPU "
                f"(median), {start}, {opened.read:,} events read from the log\n"
            )
        out.write(
            f"  (snapshots every {opening.every:,} events, written while recording; "
            f"median of {3 if args.quick else OPEN_RUNS} alternating opens)\n"
        )
        out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
