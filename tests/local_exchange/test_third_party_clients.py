"""Third-party Backpack clients, unchanged, against the local exchange: ccxt's `backpack` (REST
and its `ccxt.pro` WebSocket side) and `bpx-py`, each over the surface it offers.

ccxt pins exact versions of libraries the project also uses (attrs, idna, urllib3, ...), so
it lives in its own environment, `.venv-ccxt`, which `make ccxt-env` (part of `make test`,
and so of `.ci/run`) creates from `tests/local_exchange/ccxt-requirements.txt`. The test
runs `ccxt_driver.py` there as a subprocess, pointed at an exchange served from this test's
trio run, and reads one JSON line per call. `OMS_CCXT_PYTHON` names another interpreter with
ccxt. Without one the ccxt test is skipped, except under CI (`CI=true`), where it fails.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from oms_local_exchange import open_local_exchange

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DRIVER = HERE / "ccxt_driver.py"

# Calls that fail because of ccxt itself, against the real venue as much as against this one.
CCXT_DEFECTS = {
    # `safe_integer(response, 0)` on the bare number `/api/v1/time` answers: the first digit.
    "fetch_time": "1",
    # The method reads an option ccxt's backpack class never defines.
    "create_market_buy_order_with_cost": "KeyError: 'createMarketBuyOrderRequiresPrice'",
}
CCXT_CALLS = (
    "load_markets", "fetch_markets(marketType=[spot, swap])", "fetch_time", "fetch_status",
    "fetch_currencies", "fetch_ticker", "fetch_tickers", "fetch_order_book", "fetch_balance",
    "create_order(limit, post-only, clientOrderId)", "fetch_open_order", "fetch_open_orders",
    "cancel_order", "create_order(post-only that would take)", "create_order(market buy)",
    "create_order(market buy by cost)", "create_market_buy_order_with_cost",
    "create_order(market sell)", "create_order(limit IOC, crossing)",
    "create_order(limit FOK, crossing)", "create_order(limit outside the price band)",
    "create_orders(batch)", "cancel_all_orders", "fetch_orders", "fetch_my_trades",
    "fetch_trades", "fetch_ohlcv", "create_order(perp market buy)",
    "create_order(perp reduce-only market sell)", "fetch_positions", "fetch_funding_rate",
    "fetch_funding_rate_history", "fetch_funding_history", "fetch_open_interest",
    "watch_order_book", "watch_ticker", "watch_bids_asks", "watch_trades", "watch_ohlcv",
    "watch_orders", "watch_positions",
)  # fmt: skip


def _ccxt_python() -> Path | None:
    named = os.environ.get("OMS_CCXT_PYTHON")
    if named:
        return Path(named)
    made = ROOT / ".venv-ccxt" / "bin" / "python"
    return made if made.exists() else None


@pytest.mark.slow
async def test_ccxt_backpack_client_works_against_the_exchange() -> None:
    python = _ccxt_python()
    if python is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no ccxt environment: `make ccxt-env` should have made .venv-ccxt")
        pytest.skip("no ccxt environment: run `make ccxt-env` (or set OMS_CCXT_PYTHON)")
    # A fast walk: ccxt waits for about ten book updates before it asks for the snapshot.
    async with open_local_exchange(seed=11, step_us=50_000, tick_interval=0.02) as exchange:
        keys = exchange.credentials()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "LOCAL_REST_URL": exchange.rest_url,
            "LOCAL_WS_URL": exchange.ws_url,
            "LOCAL_API_KEY": keys.api_key,
            "LOCAL_API_SECRET": keys.api_secret,
        }
        with trio.fail_after(120):
            done = await trio.run_process(
                [str(python), str(DRIVER)], env=env, capture_stdout=True, capture_stderr=True
            )
    lines = done.stdout.decode().splitlines()
    results = {r["call"]: r for r in (json.loads(line) for line in lines if line.startswith("{"))}
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert list(results) == list(CCXT_CALLS)
    failed = {call: r["detail"] for call, r in results.items() if not r["ok"]}
    assert failed == CCXT_DEFECTS


async def test_bpx_py_client_works_against_the_exchange() -> None:
    bpx_account = pytest.importorskip("bpx.account")
    bpx_public = pytest.importorskip("bpx.public")
    async with open_local_exchange(seed=3) as exchange:

        class LocalAccount(bpx_account.Account):  # type: ignore[misc,name-defined]
            BPX_API_URL = exchange.rest_url + "/"

        class LocalPublic(bpx_public.Public):  # type: ignore[misc,name-defined]
            BASE_URL = exchange.rest_url + "/"

        no_proxy = {"http": "", "https": ""}
        client = LocalAccount(exchange.api_key, exchange.api_secret, proxy=no_proxy)
        public = LocalPublic(proxy=no_proxy)

        def session() -> dict[str, Any]:
            seen: dict[str, Any] = {
                "assets": public.get_assets(),
                "collateral parameters": public.get_collateral(),
                "markets": public.get_markets(),
                "ticker": public.get_ticker("SOL_USDC"),
                "tickers": public.get_tickers(),
                "depth": public.get_depth("SOL_USDC"),
                "status": public.get_status(),
                "time": public.get_time(),
                "funding rates": public.get_funding_interval_rates("SOL_USDC_PERP"),
                "balances": client.get_balances(),
                "account": client.get_account(),
                "collateral": client.get_collateral(),
            }
            seen["placed"] = client.execute_order(
                symbol="SOL_USDC", side="Bid", order_type="Limit", quantity="1", price="140",
                time_in_force="GTC", client_id=42, post_only=True,
            )  # fmt: skip
            seen["open order"] = client.get_open_order("SOL_USDC", client_id=42)
            seen["open orders"] = client.get_open_orders(symbol="SOL_USDC")
            seen["cancelled"] = client.cancel_order(symbol="SOL_USDC", client_id=42)
            seen["bought"] = client.execute_order(
                symbol="SOL_USDC", side="Bid", order_type="Market", quantity="2"
            )
            seen["perp bought"] = client.execute_order(
                symbol="SOL_USDC_PERP", side="Bid", order_type="Market", quantity="3"
            )
            client.execute_order(
                symbol="SOL_USDC", side="Ask", order_type="Limit", quantity="1", price="160",
                post_only=True,
            )  # fmt: skip
            seen["cancelled all"] = client.cancel_all_orders("SOL_USDC")
            seen["fills"] = client.get_fill_history(symbol="SOL_USDC")
            seen["orders"] = client.get_order_history(symbol="SOL_USDC")
            seen["positions"] = client.get_open_positions()
            seen["funding"] = client.get_funding_payments()
            seen["max ask"] = client.get_max_order_quantity("SOL_USDC", "Ask")
            seen["borrow lend"] = client.get_borrow_lend_positions()
            seen["settlements"] = client.get_settlements_history()
            seen["recent trades"] = public.get_recent_trades("SOL_USDC")
            seen["trade history"] = public.get_history_trades("SOL_USDC")
            seen["open interest"] = public.get_open_interest("SOL_USDC_PERP")
            seen["klines"] = public.get_klines("SOL_USDC", "1d", 0)
            seen["balances after"] = client.get_balances()
            return seen

        seen = await trio.to_thread.run_sync(session)
    assert {a["symbol"] for a in seen["assets"]} == {"ETH", "SOL", "USDC"}
    assert {c["symbol"] for c in seen["collateral parameters"]} == {"ETH", "SOL", "USDC"}
    assert len(seen["markets"]) == 4 and len(seen["tickers"]) == 4
    assert seen["ticker"]["symbol"] == "SOL_USDC" and seen["depth"]["bids"]
    assert seen["status"]["status"] == "Ok" and isinstance(seen["time"], int)
    assert seen["balances"]["USDC"]["available"] == "1000000"
    assert seen["account"]["leverageLimit"] == "10" and "netEquity" in seen["collateral"]
    placed = seen["placed"]
    assert (placed["status"], placed["clientId"], placed["postOnly"]) == ("New", 42, True)
    assert seen["open order"]["id"] == placed["id"]
    assert [o["id"] for o in seen["open orders"]] == [placed["id"]]
    assert (seen["cancelled"]["id"], seen["cancelled"]["status"]) == (placed["id"], "Cancelled")
    assert seen["bought"]["status"] == "Filled" and seen["perp bought"]["status"] == "Filled"
    assert [o["status"] for o in seen["cancelled all"]] == ["Cancelled"]
    assert len(seen["fills"]) >= 1 and len(seen["orders"]) == 3
    (position,) = seen["positions"]
    assert (position["symbol"], position["netQuantity"]) == ("SOL_USDC_PERP", "3")
    assert seen["funding"] == [] and seen["borrow lend"] == [] and seen["settlements"] == []
    sol = Decimal(seen["balances after"]["SOL"]["available"])
    assert sol == Decimal("1001.998")  # 1000, plus 2 bought less the 0.1 % taker fee in SOL
    assert seen["max ask"]["maxOrderQuantity"] == "1001.99"  # the step is 0.01
    trades = seen["trade history"]
    assert trades == sorted(trades, key=lambda t: -t["id"])
    assert [t["id"] for t in seen["recent trades"]] == sorted(t["id"] for t in trades)
    assert seen["open interest"] == [
        {
            "symbol": "SOL_USDC_PERP",
            "openInterest": "3",
            "timestamp": seen["open interest"][0]["timestamp"],
        }
    ]
    (candle,) = seen["klines"]
    assert int(candle["trades"]) == len(trades)
