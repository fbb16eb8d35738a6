"""The vocabulary of random end-to-end sessions, shared by the e2e property test and the
campaign (`tests/campaign.py`): actions, faults and the anomalies each fault explains.

The harness and its judge (`open_harness`, `Harness`, `book_differences`) are the test kit's
(`oms.testing`).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

from oms.core.state import Anomaly, AnomalyKind
from oms.core.values import OrderType, Side
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
    "Action",
    "act",
    "refused_subscriptions",
]

# --- the vocabulary of random sessions (the e2e property test and the campaign) ------------

# ("order", symbol, kind, side, size) | ("cancel_last",) | ("cancel_all", symbol) |
# ("fault", name)
Action = tuple[str, ...]
ORDER_KINDS = ("market", "market_quote", "limit_near", "limit_far", "post_only_near", "reduce")
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


async def act(h: Harness, action: Action) -> None:
    if action[0] == "order":
        _, symbol, kind, side_name, size = action
        side = Side(side_name)
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
