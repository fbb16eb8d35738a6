"""A perp position manager: open a long, scale it up, then close it with reduce-only orders,
waiting for each order's fills to be counted before the next step.

    python examples/perp_position.py --log perp.jsonl

Reduce-only orders can only shrink the position: if the program's idea of the position were
wrong, the venue would cap the order instead of opening a position the other way.
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path

import trio

from oms import Engine, OrderType, Side
from oms_backpack import BackpackSession, Credentials, open_backpack_session
from oms_local_exchange import open_local_exchange

PERP = "SOL_USDC_PERP"


def net(session: BackpackSession) -> Decimal:
    held = session.engine.state.positions.get(PERP)
    return Decimal(0) if held is None else held.net_quantity


async def trade(session: BackpackSession, side: Side, quantity: Decimal, *, reduce: bool) -> None:
    order = await session.submit(
        PERP, side, OrderType.MARKET, quantity=quantity, reduce_only=reduce
    )
    done = await session.engine.wait_done(client_id=order.client_id)
    held = session.engine.state.positions.get(PERP)
    entry = Decimal(0) if held is None else held.entry_price
    print(
        f"{'reduce ' if reduce else ''}{side.value} {quantity}: {done.status.value}, "
        f"filled {done.filled_quantity}; position {net(session)} at {entry}"
    )


async def main(log: Path) -> None:
    engine = Engine.open(log)
    try:
        async with (
            open_local_exchange(seed=2) as exchange,
            open_backpack_session(
                engine,
                Credentials(exchange.credentials().api_secret),
                venue="backpack_perpetual",
                rest_url=exchange.rest_url,
                ws_url=exchange.ws_url,
                symbols=[PERP],
            ) as session,
        ):
            await trade(session, Side.BID, Decimal("1"), reduce=False)  # open
            await trade(session, Side.BID, Decimal("2"), reduce=False)  # scale up
            await trade(session, Side.ASK, Decimal("1.5"), reduce=True)  # scale down
            # Close whatever is left; asking for more than the position is capped.
            await trade(session, Side.ASK, net(session) + 1, reduce=True)
            held = engine.state.positions[PERP]
            print(f"closed: position {held.net_quantity}, realized PnL {held.realized_pnl}")
    finally:
        engine.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log", type=Path, default=Path("perp.jsonl"))
    trio.run(main, parser.parse_args().log)
