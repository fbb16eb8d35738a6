"""Read a recorded session and print, per symbol: fills, quantity bought and sold, fees by
asset and realized PnL.

    python examples/session_report.py perp.jsonl

Realized PnL: for perps it is the engine's own figure (average entry price, a fill that
crosses zero closes and reopens); for spot, this script works it out the same way from the
fills (average cost of what is held, in the quote asset), fees not included.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

from oms import LogReader, LogReadError, MarketType, OrderFilled, Side, replay_events

ZERO = Decimal(0)


def report(path: Path) -> str:
    if not path.is_file():
        raise OSError(f"{path}: no such file")
    events = list(LogReader(path).events())
    state = replay_events(events)
    counted: set[tuple[str, str, int]] = set()
    fills: dict[str, int] = defaultdict(int)
    bought: dict[str, Decimal] = defaultdict(lambda: ZERO)
    sold: dict[str, Decimal] = defaultdict(lambda: ZERO)
    fees: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(lambda: ZERO))
    held: dict[str, Decimal] = defaultdict(lambda: ZERO)  # spot: quantity held
    cost: dict[str, Decimal] = defaultdict(lambda: ZERO)  # spot: its cost
    spot_pnl: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for event in events:
        if not isinstance(event, OrderFilled):
            continue
        key = (event.symbol, event.venue_id, event.trade_id)
        if key in counted:
            continue  # the same fill delivered twice (the engine counts it once too)
        counted.add(key)
        symbol, quantity, price = event.symbol, event.quantity, event.price
        fills[symbol] += 1
        fees[symbol][event.fee_asset] += event.fee
        if event.side is Side.BID:
            bought[symbol] += quantity
            held[symbol] += quantity
            cost[symbol] += quantity * price
        else:
            sold[symbol] += quantity
            if held[symbol] > 0:
                closing = min(quantity, held[symbol])
                average = cost[symbol] / held[symbol]
                spot_pnl[symbol] += closing * (price - average)
                cost[symbol] -= closing * average
                held[symbol] -= closing
    lines = [f"{'symbol':<16}{'fills':>6}{'bought':>12}{'sold':>12}  {'realized PnL':>14}  fees"]
    for symbol in sorted(fills):
        market = state.markets.get(symbol)
        if market is not None and market.market_type is MarketType.PERP:
            position = state.positions.get(symbol)
            pnl = ZERO if position is None else position.realized_pnl
        else:
            pnl = spot_pnl[symbol]
        fee_text = ", ".join(
            f"{amount.normalize()} {asset}" for asset, amount in fees[symbol].items()
        )
        lines.append(
            f"{symbol:<16}{fills[symbol]:>6}{bought[symbol].normalize()!s:>12}"
            f"{sold[symbol].normalize()!s:>12}  {pnl.quantize(Decimal('0.0001'))!s:>14}  {fee_text}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("session", type=Path)
    try:
        print(report(parser.parse_args().session))
    except (OSError, LogReadError) as exc:
        print(f"session_report: {exc}", file=sys.stderr)
        sys.exit(1)
