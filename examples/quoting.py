"""A quoting loop: keep one post-only bid and one post-only ask around the mid, and requote
when the mid has moved by more than a tick.

Runs against the local exchange, embedded (no keys, no internet):

    python examples/quoting.py --seconds 10 --log quoting.jsonl

The session is recorded to `--log`; replay it with `python -m oms.replay quoting.jsonl`.
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path

import trio

from oms import Engine, Order, OrderStatus, OrderType, Side
from oms_backpack import BackpackSession, Credentials, endpoints, open_backpack_session
from oms_local_exchange import open_local_exchange

SYMBOL = "SOL_USDC"
HALF_SPREAD = Decimal("0.002")  # quote 0.2% either side of the mid
SIZE = Decimal("0.5")


async def mid_price(session: BackpackSession, symbol: str) -> Decimal:
    """The middle of the best bid and ask of the venue's order book."""
    book = await session.rest.call(endpoints.depth(symbol))
    best_bid = max(Decimal(price) for price, _ in book["bids"])
    best_ask = min(Decimal(price) for price, _ in book["asks"])
    return (best_bid + best_ask) / 2


def on_tick(session: BackpackSession, price: Decimal) -> Decimal:
    tick = session.engine.state.markets[SYMBOL].tick_size
    return (price / tick).to_integral_value() * tick


def resting(order: Order | None) -> bool:
    return order is not None and order.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


async def requote(session: BackpackSession, quotes: dict[Side, Order | None]) -> None:
    """Cancel quotes that are off the mid, and place the missing ones."""
    mid = await mid_price(session, SYMBOL)
    wanted = {
        Side.BID: on_tick(session, mid * (1 - HALF_SPREAD)),
        Side.ASK: on_tick(session, mid * (1 + HALF_SPREAD)),
    }
    tick = session.engine.state.markets[SYMBOL].tick_size
    for side, price in wanted.items():
        quote = quotes.get(side)
        if quote is not None:
            quote = session.engine.state.order(client_id=quote.client_id)
        if quote is not None and resting(quote):
            if quote.price is not None and abs(quote.price - price) <= tick:
                continue  # still where it should be
            await session.cancel(SYMBOL, client_id=quote.client_id)
        placed = await session.submit(
            SYMBOL, side, OrderType.LIMIT_MAKER, quantity=SIZE, price=price
        )
        # A post-only order that would have taken liquidity is refused: try next round.
        quotes[side] = placed if resting(placed) else None


async def main(seconds: float, log: Path) -> None:
    engine = Engine.open(log)
    try:
        async with open_local_exchange(seed=1, step_us=200_000) as exchange:
            async with open_backpack_session(
                engine,
                Credentials(exchange.credentials().api_secret),
                rest_url=exchange.rest_url,
                ws_url=exchange.ws_url,
                symbols=[SYMBOL],
                cancel_on_shutdown=True,  # leave nothing resting when the program stops
            ) as session:
                quotes: dict[Side, Order | None] = {}
                with trio.move_on_after(seconds):
                    while True:
                        await requote(session, quotes)
                        await trio.sleep(0.25)
    finally:
        engine.close()
    state = engine.state
    filled = [o for o in state.orders.values() if o.filled_quantity > 0]
    print(f"quoted {len(state.orders)} orders, {len(filled)} filled at least in part")
    print(f"open orders at the end: {len(state.open_orders())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--log", type=Path, default=Path("quoting.jsonl"))
    args = parser.parse_args()
    trio.run(main, args.seconds, args.log)
