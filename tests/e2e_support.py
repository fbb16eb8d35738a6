"""The vocabulary of random end-to-end sessions, shared by the e2e property test and the
campaign (`tests/campaign.py`): actions, faults and the anomalies each fault explains.

The harness and its judge (`open_harness`, `Harness`, `book_differences`) are the test kit's
(`oms.testing`).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

import trio

from oms.core.state import Anomaly, AnomalyKind
from oms.core.values import Exit, OrderType, Side
from oms.log import LogReader
from oms.testing.books import PERP
from oms.testing.harness import Harness
from oms.testing.waiting import wait_for
from oms_backpack.codec import venue_error_of

__all__ = [
    "EXPLAINED",
    "FAULTS",
    "ORDER_KINDS",
    "REFUSED",
    "TRIGGER_KINDS",
    "Action",
    "act",
    "refused_subscriptions",
]

# --- the vocabulary of random sessions (the e2e property test and the campaign) ------------

# ("order", symbol, kind, side, size) | ("cancel_last",) | ("cancel_all", symbol) |
# ("wait",) | ("fault", name)
Action = tuple[str, ...]
# The conditional kinds (`TRIGGER_KINDS`) always trade the perp, whatever the action's symbol:
# "stop" is a market order that waits until the mark moves a few ticks past the mid in its
# own direction (a breakout stop), "stop_limit" a limit order that waits for the mark to move
# the other way (buy the dip, sell the rally), "stop_close" a reduce-only market stop for the
# whole position (it fails when it fires with nothing to reduce); "bracket" is a market order
# and "bracket_limit" a limit order at the mid, both with a market stop loss and a limit
# take profit a few ticks away, which the venue places once the order has executed.
TRIGGER_KINDS = ("stop", "stop_limit", "stop_close", "bracket", "bracket_limit")
ORDER_KINDS = (
    "market",
    "market_quote",
    "limit_near",
    "limit_far",
    "post_only_near",
    "reduce",
    *TRIGGER_KINDS,
)
FAULTS = ("drop_ws", "drop_fill", "duplicate", "hold_fill", "429", "503", "ws_first", "skew")
# What each fault can legitimately leave among the anomalies, and why:
EXPLAINED: dict[str, set[AnomalyKind]] = {
    # every second copy of a fill is a duplicate
    "duplicate": {AnomalyKind.DUPLICATE_FILL},
    # a later fill overtakes the held one (gap); the held one may come after a reconciliation
    # already counted it (duplicate); position reports run ahead of the held fill (drift)
    "hold_fill": {AnomalyKind.FILL_GAP, AnomalyKind.DUPLICATE_FILL, AnomalyKind.POSITION_DRIFT},
    # the next fill of the order shows the gap; position reports include the lost fill
    "drop_fill": {AnomalyKind.FILL_GAP, AnomalyKind.POSITION_DRIFT},
    # the reconnect's reconciliation runs while resting orders fill as the market moves: its
    # snapshots can run ahead of the stream (balances, positions, executed quantities)
    "drop_ws": {AnomalyKind.FILL_GAP, AnomalyKind.BALANCE_DRIFT, AnomalyKind.POSITION_DRIFT},
    # a jump between sending a subscription and the venue reading it: the venue refuses it
    # (its error frame is recorded) and the stream subscribes again after a resync
    "skew": {AnomalyKind.NOT_UNDERSTOOD},
}
# The code of the error frame with which the venue refuses a subscription whose signature
# timestamp is outside its window (a clock jump).
REFUSED = 4003


def refused_subscriptions(path: Path, anomalies: Iterable[Anomaly]) -> list[bool]:
    """For each `not_understood` anomaly of a session logged at `path`: whether the event that
    caused it is the venue refusing a subscription (an error frame with code `REFUSED`)."""
    wanted = [a.seq for a in anomalies if a.kind is AnomalyKind.NOT_UNDERSTOOD]
    seqs = set(wanted)
    logged = {seq: event for seq, event in LogReader(path) if seq in seqs}
    errors = [venue_error_of(logged[seq]) for seq in wanted]
    return [error is not None and error.code == REFUSED for error in errors]


def _tick(price: Decimal) -> Decimal:
    return price.quantize(Decimal("0.01"))


TICK = Decimal("0.01")
# How far from the mid a trigger waits, in ticks: the mark moves up to 4 ticks a step (a step
# is 50 ms in these sessions), so most triggers fire within the session and some do not.
TRIGGER_TICKS = 1
# How long a ("wait",) action lets the market move: 5 steps of 50 ms.
WAIT_SECONDS = 0.25


async def _conditional(h: Harness, kind: str, side: Side, size: str) -> None:
    """Place one of the `TRIGGER_KINDS` on the perp."""
    mid = h.mid(PERP)
    away = TRIGGER_TICKS * TICK
    up = side is Side.BID  # the way the market moves against a buyer's stop
    if kind == "stop":
        trigger = mid + away if up else mid - away
        await h.session.submit(
            PERP,
            side,
            OrderType.MARKET,
            trigger_price=trigger,
            trigger_quantity=Decimal(size),
            trigger_by="MarkPrice",
        )
    elif kind == "stop_limit":
        trigger = mid - away if up else mid + away
        # Marketable by a tick when it fires: it fills, or rests if the market ran past.
        limit = trigger + TICK if up else trigger - TICK
        await h.session.submit(
            PERP,
            side,
            OrderType.LIMIT,
            price=limit,
            trigger_price=trigger,
            trigger_quantity=Decimal(size),
        )
    elif kind == "stop_close":
        held = h.state.positions.get(PERP)
        against = Side.ASK if held is not None and held.net_quantity > 0 else Side.BID
        trigger = mid - away if against is Side.ASK else mid + away
        await h.session.submit(
            PERP,
            against,
            OrderType.MARKET,
            reduce_only=True,
            trigger_price=trigger,
            trigger_quantity="100%",
        )
    else:  # a bracket: exits on the other side of the mid, a loss below a buyer's entry
        loss = mid - away if up else mid + away
        profit = mid + away if up else mid - away
        market = kind == "bracket"
        await h.session.submit(
            PERP,
            side,
            OrderType.MARKET if market else OrderType.LIMIT,
            quantity=Decimal(size),
            price=None if market else mid,
            stop_loss=Exit(loss),
            take_profit=Exit(profit, limit_price=profit - TICK if up else profit + TICK),
        )


async def act(h: Harness, action: Action) -> None:
    if action[0] == "order":
        _, symbol, kind, side_name, size = action
        side = Side(side_name)
        if kind in TRIGGER_KINDS:
            await _conditional(h, kind, side, size)
            return
        mid = h.mid(symbol)
        if kind == "market":
            await h.submit(symbol, side, OrderType.MARKET, quantity=size)
        elif kind == "market_quote":
            await h.submit(symbol, side, OrderType.MARKET, quote_quantity=str(40 * Decimal(size)))
        elif kind == "limit_near":
            await h.submit(symbol, side, OrderType.LIMIT, quantity=size, price=mid)
        elif kind == "limit_far":
            far = _tick(mid * (Decimal("0.7") if side is Side.BID else Decimal("1.3")))
            await h.submit(symbol, side, OrderType.LIMIT, quantity=size, price=far)
        elif kind == "post_only_near":
            await h.submit(symbol, side, OrderType.LIMIT_MAKER, quantity=size, price=mid)
        else:  # reduce-only against the position we hold (the venue caps it, or refuses it flat)
            held = h.state.positions.get(PERP)
            against = Side.ASK if held is not None and held.net_quantity > 0 else Side.BID
            await h.submit(PERP, against, OrderType.MARKET, quantity=size, reduce_only=True)
    elif action[0] == "cancel_last":
        live = [o for o in h.state.open_orders() if o.client_id is not None]
        if live:
            newest = max(live, key=lambda o: o.created_seq)
            await h.session.cancel(newest.symbol, client_id=newest.client_id)
    elif action[0] == "cancel_all":
        await h.session.cancel_all(action[1])
    elif action[0] == "wait":
        # The market moves on for a few steps: resting orders fill, waiting triggers fire
        # (and the exits of executed orders are placed), under whatever faults are armed.
        await trio.sleep(WAIT_SECONDS)
    else:
        fault = action[1]
        faults = h.faults
        if fault == "drop_ws":
            if faults.drop_websockets(abrupt=True):
                await wait_for(lambda: h.exchange.connections == 0, "the server's side closed")
        elif fault == "drop_fill":
            faults.drop_private(event="orderFill")
        elif fault == "duplicate":
            faults.duplicate_private(count=3)
        elif fault == "hold_fill":
            faults.hold_private(event="orderFill", release_after=2)
        elif fault == "429":
            faults.fail_http(429, method="POST", path="/api/v1/order")
        elif fault == "503":
            faults.fail_http(503, method="POST", path="/api/v1/order", after_execute=True)
        elif fault == "ws_first":
            faults.ws_before_rest = not faults.ws_before_rest
        else:
            faults.clock_skew_ms += 20_000  # the server's clock jumps 4 signature windows
