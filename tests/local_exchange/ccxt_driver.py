"""Drive ccxt's `backpack` client (REST and its `ccxt.pro` WebSocket side) against a running
local exchange, and print one JSON line per call: `{"call", "ok", "detail"}`.

Run by `test_third_party_clients.py` in ccxt's own environment (`.venv-ccxt`, made by
`make ccxt-env`: ccxt pins exact versions of attrs, idna, urllib3 and more, which would fight
the project's own), as `python ccxt_driver.py`, with the exchange's addresses and the funded
account's key in the environment: `LOCAL_REST_URL`, `LOCAL_WS_URL`, `LOCAL_API_KEY`,
`LOCAL_API_SECRET`. Standard library and ccxt only; it imports nothing of the project.

ccxt talks to the hosts in its `urls` table; pointing it at the local exchange is its
documented override of that table: `exchange.urls["api"] = {"public": rest, "private": rest,
"ws": {"public": ws, "private": ws}}`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import ccxt.pro as ccxtpro

SPOT = "SOL/USDC"
PERP = "SOL/USDC:USDC"
CALL_TIMEOUT = 10.0


class Driver:
    def __init__(self, exchange: Any) -> None:
        self.exchange = exchange
        self.results: list[dict[str, Any]] = []

    def record(self, call: str, ok: bool, detail: str = "") -> None:
        line = {"call": call, "ok": ok, "detail": detail[:400]}
        self.results.append(line)
        print(json.dumps(line), flush=True)

    async def check(
        self,
        call: str,
        run: Callable[[], Awaitable[Any]],
        expect: Callable[[Any], str | None] = lambda _: None,
    ) -> Any:
        """Await `run()`; the call passes if it returns in time and `expect(result)` finds no
        problem (a string says what is wrong)."""
        try:
            result = await asyncio.wait_for(run(), CALL_TIMEOUT)
        except Exception as exc:
            self.record(call, False, f"{type(exc).__name__}: {exc}")
            return None
        try:
            problem = expect(result)
        except Exception as exc:
            problem = f"unexpected result ({type(exc).__name__}: {exc}): {result!r}"
        self.record(call, problem is None, problem or "")
        return result

    async def check_refused(
        self, call: str, run: Callable[[], Awaitable[Any]], needle: str
    ) -> None:
        """The call passes if the exchange refuses it with an error whose text holds `needle`."""
        try:
            result = await asyncio.wait_for(run(), CALL_TIMEOUT)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            self.record(call, needle in detail, detail)
        else:
            self.record(call, False, f"accepted: {result!r}")


def _when(condition: bool, problem: str) -> str | None:
    return None if condition else problem


async def rest(d: Driver) -> None:
    ex = d.exchange
    await d.check(
        "load_markets", ex.load_markets, lambda m: _when(SPOT in m and PERP in m, str(list(m)))
    )
    await d.check(
        "fetch_markets(marketType=[spot, swap])",
        lambda: ex.fetch_markets({"marketType": ["spot", "swap"]}),
        lambda m: _when({x["symbol"] for x in m} >= {SPOT, PERP}, str([x["symbol"] for x in m])),
    )
    await d.check("fetch_time", ex.fetch_time, lambda t: _when(t > 1_600_000_000_000, str(t)))
    await d.check("fetch_status", ex.fetch_status, lambda s: _when(s["status"] == "ok", str(s)))
    await d.check(
        "fetch_currencies",
        ex.fetch_currencies,
        lambda c: _when({"SOL", "USDC"} <= set(c), str(list(c))),
    )
    ticker = await d.check(
        "fetch_ticker", lambda: ex.fetch_ticker(SPOT), lambda t: _when(t["last"] > 0, str(t))
    )
    await d.check(
        "fetch_tickers",
        lambda: ex.fetch_tickers([SPOT, PERP]),
        lambda t: _when({SPOT, PERP} <= set(t), str(list(t))),
    )
    book = await d.check(
        "fetch_order_book",
        lambda: ex.fetch_order_book(SPOT),
        lambda b: _when(b["bids"] and b["asks"] and b["bids"][0][0] < b["asks"][0][0], str(b)),
    )
    await d.check(
        "fetch_balance",
        ex.fetch_balance,
        lambda b: _when(
            b["USDC"]["free"] == 1_000_000 and b["SOL"]["free"] == 1000, str(b["free"])
        ),
    )
    if ticker is None or book is None:
        return
    bid = float(book["bids"][0][0])
    ask = float(book["asks"][0][0])
    low = ex.price_to_precision(SPOT, bid * 0.9)

    # every order type
    resting = await d.check(
        "create_order(limit, post-only, clientOrderId)",
        lambda: ex.create_order(
            SPOT, "limit", "buy", 1, low, {"postOnly": True, "clientOrderId": "101"}
        ),
        lambda o: _when(o["status"] == "open" and o["clientOrderId"] == "101", str(o)),
    )
    if resting is not None:
        await d.check(
            "fetch_open_order",
            lambda: ex.fetch_open_order(resting["id"], SPOT),
            lambda o: _when(o["id"] == resting["id"] and o["status"] == "open", str(o)),
        )
        await d.check(
            "fetch_open_orders",
            lambda: ex.fetch_open_orders(SPOT),
            lambda os_: _when([o["id"] for o in os_] == [resting["id"]], str(os_)),
        )
        await d.check(
            "cancel_order",
            lambda: ex.cancel_order(resting["id"], SPOT),
            lambda o: _when(o["status"] == "canceled", str(o)),
        )
    await d.check_refused(
        "create_order(post-only that would take)",
        lambda: ex.create_order(
            SPOT, "limit", "buy", 1, ex.price_to_precision(SPOT, ask * 1.01), {"postOnly": True}
        ),
        "Order would immediately match and take",
    )
    await d.check(
        "create_order(market buy)",
        lambda: ex.create_order(SPOT, "market", "buy", 0.5),
        lambda o: _when(o["status"] == "closed" and o["filled"] == 0.5, str(o)),
    )
    await d.check(
        "create_order(market buy by cost)",
        lambda: ex.create_order(SPOT, "market", "buy", None, None, {"cost": 30}),
        lambda o: _when(o["status"] == "closed" and 0 < o["cost"] <= 30, str(o)),
    )
    await d.check(
        "create_market_buy_order_with_cost",
        lambda: ex.create_market_buy_order_with_cost(SPOT, 30),
        lambda o: _when(o["status"] == "closed" and 0 < o["cost"] <= 30, str(o)),
    )
    await d.check(
        "create_order(market sell)",
        lambda: ex.create_order(SPOT, "market", "sell", 0.5),
        lambda o: _when(o["status"] == "closed" and o["filled"] == 0.5, str(o)),
    )
    await d.check(
        "create_order(limit IOC, crossing)",
        lambda: ex.create_order(
            SPOT,
            "limit",
            "buy",
            0.3,
            ex.price_to_precision(SPOT, ask * 1.01),
            {"timeInForce": "IOC"},
        ),
        lambda o: _when(o["status"] == "closed" and o["filled"] == 0.3, str(o)),
    )
    await d.check(
        "create_order(limit FOK, crossing)",
        lambda: ex.create_order(
            SPOT,
            "limit",
            "sell",
            0.3,
            ex.price_to_precision(SPOT, bid * 0.99),
            {"timeInForce": "FOK"},
        ),
        lambda o: _when(o["status"] == "closed" and o["filled"] == 0.3, str(o)),
    )
    await d.check_refused(
        "create_order(limit outside the price band)",
        lambda: ex.create_order(SPOT, "limit", "buy", 1, ex.price_to_precision(SPOT, bid * 0.01)),
        "Price out of bounds",
    )
    batch = await d.check(
        "create_orders(batch)",
        lambda: ex.create_orders(
            [
                {
                    "symbol": SPOT,
                    "type": "limit",
                    "side": "buy",
                    "amount": 1,
                    "price": low,
                    "params": {"postOnly": True},
                },
                {
                    "symbol": SPOT,
                    "type": "limit",
                    "side": "buy",
                    "amount": 2,
                    "price": low,
                    "params": {"postOnly": True},
                },
            ]
        ),
        lambda os_: _when(len(os_) == 2 and all(o["status"] == "open" for o in os_), str(os_)),
    )
    await d.check(
        "cancel_all_orders",
        lambda: ex.cancel_all_orders(SPOT),
        lambda os_: _when(
            batch is not None and sorted(o["id"] for o in os_) == sorted(o["id"] for o in batch),
            str(os_),
        ),
    )
    await d.check(
        "fetch_orders",
        lambda: ex.fetch_orders(SPOT),
        lambda os_: _when(
            len(os_) >= 7 and {"closed", "canceled"} <= {o["status"] for o in os_}, str(os_)
        ),
    )
    await d.check(
        "fetch_my_trades",
        lambda: ex.fetch_my_trades(SPOT),
        lambda ts: _when(len(ts) >= 4 and all(t["fee"] is not None for t in ts), str(ts)),
    )
    await d.check(
        "fetch_trades",
        lambda: ex.fetch_trades(SPOT),
        lambda ts: _when(len(ts) >= 4 and ts == sorted(ts, key=lambda t: t["timestamp"]), str(ts)),
    )
    await d.check(
        "fetch_ohlcv",
        lambda: ex.fetch_ohlcv(SPOT, "1m"),
        lambda cs: _when(len(cs) >= 1 and all(c[5] > 0 for c in cs), str(cs)),
    )

    # perps
    await d.check(
        "create_order(perp market buy)",
        lambda: ex.create_order(PERP, "market", "buy", 2),
        lambda o: _when(o["status"] == "closed" and o["filled"] == 2, str(o)),
    )
    await d.check(
        "create_order(perp reduce-only market sell)",
        lambda: ex.create_order(PERP, "market", "sell", 0.5, None, {"reduceOnly": True}),
        lambda o: _when(o["status"] == "closed" and o["filled"] == 0.5, str(o)),
    )
    await d.check(
        "fetch_positions",
        lambda: ex.fetch_positions([PERP]),
        lambda ps: _when(
            len(ps) == 1
            and float(ps[0]["contracts"]) == 1.5
            and ps[0]["side"] == "long"
            and float(ps[0]["entryPrice"]) > 0,
            str(ps),
        ),
    )
    await d.check(
        "fetch_funding_rate",
        lambda: ex.fetch_funding_rate(PERP),
        lambda f: _when(f["fundingRate"] is not None and f["markPrice"] > 0, str(f)),
    )
    await d.check(
        "fetch_funding_rate_history",
        lambda: ex.fetch_funding_rate_history(PERP),
        lambda h: _when(isinstance(h, list), str(h)),
    )
    await d.check(
        "fetch_funding_history",
        lambda: ex.fetch_funding_history(PERP),
        lambda h: _when(isinstance(h, list), str(h)),
    )
    await d.check(
        "fetch_open_interest",
        lambda: ex.fetch_open_interest(PERP),
        lambda oi: _when(oi["info"]["openInterest"] == "1.5", str(oi)),
    )


async def first(
    watch: Callable[[], Awaitable[Any]], trigger: Callable[[], Awaitable[Any]] | None = None
) -> Any:
    """Start a watch, let it subscribe, cause an update if asked, and return the first result.

    The watch says nothing when its subscription is in place: an update caused before that
    is not seen. So the update is caused again every second until the watch returns (the
    caller's `CALL_TIMEOUT` bounds it), which a slow, busy machine needs."""
    task = asyncio.ensure_future(watch())
    try:
        await asyncio.sleep(0.3)
        while trigger is not None and not task.done():
            await trigger()
            await asyncio.wait({task}, timeout=1.0)
        return await task
    finally:
        task.cancel()


async def streams(d: Driver) -> None:
    ex = d.exchange
    await d.check(
        "watch_order_book",
        lambda: ex.watch_order_book(SPOT),
        lambda b: _when(b["bids"] and b["asks"] and b["bids"][0][0] < b["asks"][0][0], str(b)),
    )
    await d.check(
        "watch_ticker", lambda: ex.watch_ticker(SPOT), lambda t: _when(t["last"] > 0, str(t))
    )
    await d.check(
        "watch_bids_asks",
        lambda: ex.watch_bids_asks([SPOT]),
        lambda t: _when(t[SPOT]["bid"] > 0, str(t)),
    )
    await d.check(
        "watch_trades",
        lambda: first(
            lambda: ex.watch_trades(SPOT), lambda: ex.create_order(SPOT, "market", "buy", 0.2)
        ),
        lambda ts: _when(len(ts) >= 1 and ts[-1]["amount"] > 0, str(ts)),
    )
    await d.check(
        "watch_ohlcv",
        lambda: first(
            lambda: ex.watch_ohlcv(SPOT, "1m"), lambda: ex.create_order(SPOT, "market", "buy", 0.2)
        ),
        lambda cs: _when(len(cs) >= 1 and cs[-1][5] > 0, str(cs)),
    )
    low = ex.price_to_precision(SPOT, float((await ex.fetch_order_book(SPOT))["bids"][0][0]) * 0.9)
    await d.check(
        "watch_orders",
        lambda: first(
            lambda: ex.watch_orders(SPOT),
            lambda: ex.create_order(
                SPOT, "limit", "buy", 1, low, {"postOnly": True, "clientOrderId": "202"}
            ),
        ),
        lambda os_: _when(
            any(o["clientOrderId"] == "202" and o["status"] == "open" for o in os_), str(os_)
        ),
    )
    await d.check(
        "watch_positions",
        lambda: first(
            lambda: ex.watch_positions([PERP]), lambda: ex.create_order(PERP, "market", "buy", 1)
        ),
        lambda ps: _when(
            len(ps) >= 1 and ps[-1]["symbol"] == PERP and float(ps[-1]["contracts"]) > 0, str(ps)
        ),
    )
    await ex.cancel_all_orders(SPOT)


async def main() -> int:
    rest_url, ws_url = os.environ["LOCAL_REST_URL"], os.environ["LOCAL_WS_URL"]
    exchange = ccxtpro.backpack(
        {"apiKey": os.environ["LOCAL_API_KEY"], "secret": os.environ["LOCAL_API_SECRET"]}
    )
    exchange.urls["api"] = {
        "public": rest_url,
        "private": rest_url,
        "ws": {"public": ws_url, "private": ws_url},
    }
    driver = Driver(exchange)
    try:
        await rest(driver)
        await streams(driver)
    finally:
        await exchange.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
