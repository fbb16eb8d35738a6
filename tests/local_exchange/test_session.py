"""The engine, driven by our Backpack session, against the local exchange: what the engine
derives from the venue's messages must equal the exchange's own books. Also the command
line entry point, run as an operator would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from decimal import Decimal

import httpx
import trio

from oms.core.state import AnomalyKind, State
from oms.core.values import OrderStatus, OrderType, Side
from oms.engine import Engine
from oms.testing.harness import local_exchange
from oms.testing.waiting import wait_state
from oms_backpack.session import open_backpack_session
from oms_backpack.signing import Credentials
from tests.helpers import ROOT

D = Decimal


async def test_the_engine_agrees_with_the_exchange_books() -> None:
    async with local_exchange() as (exchange, _):
        engine = Engine()
        async with open_backpack_session(
            engine,
            Credentials(exchange.credentials().api_secret),
            rest_url=exchange.rest_url,
            ws_url=exchange.ws_url,
            poll_interval=0.2,
        ) as session:
            bought = await session.submit("SOL_USDC", Side.BID, OrderType.MARKET, quantity=D(3))
            resting = await session.submit(
                "SOL_USDC", Side.BID, OrderType.LIMIT, quantity=D(2), price=D(149)
            )
            sold = await session.submit(
                "SOL_USDC", Side.ASK, OrderType.LIMIT, quantity=D(1), price=D("149.99")
            )
            await session.cancel("SOL_USDC", client_id=resting.client_id)

            def settled(state: State) -> bool:
                orders = [state.order(client_id=o.client_id) for o in (bought, resting, sold)]
                return all(o is not None and o.status.is_terminal for o in orders) and all(
                    b.observed is not None for b in state.balances.values()
                )

            await wait_state(engine, settled, "orders final and balances polled")
            await trio.sleep(0.3)  # one more poll after the last change
            state = engine.state
            account = exchange.venue.accounts[exchange.api_key]
            for venue_order in account.orders.values():
                ours = state.order(client_id=venue_order.client_id)
                assert ours is not None
                assert (ours.venue_id, ours.status.value, ours.filled_quantity) == (
                    venue_order.id,
                    venue_order.status,
                    venue_order.executed_quantity,
                )
            final = state.order(client_id=bought.client_id)
            assert final is not None and final.status is OrderStatus.FILLED
            for asset in ("SOL", "USDC"):
                ours_balance = state.balances[asset]
                theirs = account.balances[asset]
                assert (ours_balance.available, ours_balance.locked) == (
                    theirs.available,
                    theirs.locked,
                )
            kinds = {a.kind for a in state.anomalies}
            assert AnomalyKind.BALANCE_DRIFT not in kinds
            assert AnomalyKind.NOT_UNDERSTOOD not in kinds


def test_the_command_line_serves_until_interrupted() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "oms_local_exchange", "--seed", "4"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    watchdog = threading.Timer(30, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        lines: dict[str, str] = {}
        for line in process.stdout:
            if line.startswith("Serving"):
                break
            name, _, value = line.rstrip("\n").rpartition(" ")
            lines[name.strip()] = value
        assert lines["REST"].startswith("http://127.0.0.1:")
        assert lines["WebSocket"].startswith("ws://127.0.0.1:")
        # The printed secret is the printed key's.
        assert Credentials(lines["API secret"]).api_key == lines["API key"]
        answer = httpx.get(lines["REST"] + "/api/v1/time", timeout=10)
        assert answer.status_code == 200 and isinstance(answer.json(), int)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert "Traceback" not in err
    assert out.strip() == "Stopped."
