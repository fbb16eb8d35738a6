"""The perp position manager of `perp_position.py`, as an asyncio program.

    python examples/perp_position_asyncio.py --log perp.jsonl

`oms_backpack.aio.open_session` runs the engine's trio session as a guest on the asyncio
loop: the same session, awaited from asyncio. The local exchange is a trio server, so this
example starts it in a thread of its own (a real venue needs none of that).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio

from oms import Engine, OrderType, Side
from oms_backpack import Credentials
from oms_backpack.aio import AsyncioSession, open_session
from oms_local_exchange import open_local_exchange

PERP = "SOL_USDC_PERP"


def net(session: AsyncioSession) -> Decimal:
    held = session.state.positions.get(PERP)
    return Decimal(0) if held is None else held.net_quantity


async def trade(session: AsyncioSession, side: Side, quantity: Decimal, *, reduce: bool) -> None:
    order = await session.submit(
        PERP, side, OrderType.MARKET, quantity=quantity, reduce_only=reduce
    )
    done = await session.wait_done(client_id=order.client_id)
    print(f"{side.value} {quantity}: {done.status.value}; position {net(session)}")


async def manage(log: Path, exchange: Any) -> None:
    engine = Engine.open(log)
    try:
        async with open_session(
            engine,
            Credentials(exchange.credentials().api_secret),
            venue="backpack_perpetual",
            rest_url=exchange.rest_url,
            ws_url=exchange.ws_url,
            symbols=[PERP],
        ) as session:
            await trade(session, Side.BID, Decimal("1"), reduce=False)
            await trade(session, Side.BID, Decimal("2"), reduce=False)
            await trade(session, Side.ASK, net(session), reduce=True)
            held = session.state.positions[PERP]
            print(f"closed: position {held.net_quantity}, realized PnL {held.realized_pnl}")
    finally:
        engine.close()


def exchange_thread() -> tuple[Any, threading.Event, threading.Thread]:
    """The local exchange in a thread (its own trio run) until the returned event is set."""
    started, stop = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with open_local_exchange(seed=2) as exchange:
            box["exchange"] = exchange
            started.set()
            while not stop.is_set():  # noqa: ASYNC110 (a thread's event)
                await trio.sleep(0.05)

    thread = threading.Thread(target=trio.run, args=(serve,))
    thread.start()
    started.wait(30)
    return box["exchange"], stop, thread


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log", type=Path, default=Path("perp.jsonl"))
    exchange, stop, thread = exchange_thread()
    try:
        asyncio.run(manage(parser.parse_args().log, exchange))
    finally:
        stop.set()
        thread.join()
