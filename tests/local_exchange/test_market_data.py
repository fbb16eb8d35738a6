"""The local exchange's REST endpoints beyond order management, over HTTP on 127.0.0.1: assets,
collateral parameters, public trades, open interest, klines, the maximum order quantity,
borrow-lend positions and settlements, array query parameters, the price band and the entry
price as the venue shows it. Shapes follow the fact sheet (shared/backpack/api.md §2.2, §2.4)
and the ccxt samples in tests/data/backpack/.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from oms.testing.harness import local_exchange
from oms_backpack.signing import Credentials
from oms_local_exchange import LocalExchange, ManualClock, OrderRequest
from oms_local_exchange.arithmetic import VENUE, wire_decimal
from tests.helpers import signed_request

D = Decimal
SAMPLES = json.loads(
    (Path(__file__).parent.parent / "data/backpack/ccxt_source_comment_samples.json").read_text()
)["rest"]


def trade(exchange: LocalExchange, symbol: str, side: str, quantity: str) -> None:
    exchange.venue.place(
        exchange.api_key,
        OrderRequest(symbol=symbol, side=side, order_type="Market", quantity=D(quantity)),
    )
    exchange.dispatch()


async def signed_get(
    http: httpx.AsyncClient,
    exchange: LocalExchange,
    clock: ManualClock,
    path: str,
    *,
    instruction: str,
    query: dict[str, str] | None = None,
) -> httpx.Response:
    own = Credentials(exchange.credentials().api_secret)
    request = signed_request(own, "GET", path, instruction, clock.now_us // 1000, query=query or {})
    return await http.get(path, **request)


def same_keys(item: dict[str, Any], sample: dict[str, Any]) -> None:
    assert sorted(item) == sorted(sample)


async def test_assets_and_collateral_parameters_list_every_asset_of_the_markets() -> None:
    async with (
        local_exchange() as (exchange, _),
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):
        assets = (await http.get("/api/v1/assets")).json()
        collateral = (await http.get("/api/v1/collateral")).json()
    assert [a["symbol"] for a in assets] == ["ETH", "SOL", "USDC"]
    sample = SAMPLES["GET /api/v1/assets (fetchCurrencies comment)"][0]
    same_keys(assets[1], sample)
    token = {k: v for k, v in sample["tokens"][0].items() if k != "contractAddress"}
    same_keys(assets[1]["tokens"][0], token)
    assert assets[1]["tokens"][0]["blockchain"] == "Solana"
    by_asset = {c["symbol"]: c for c in collateral}
    assert set(by_asset) == {"ETH", "SOL", "USDC"}
    assert by_asset["USDC"]["haircutFunction"] == {"weight": "1", "kind": {"type": "identity"}}
    assert by_asset["SOL"]["haircutFunction"]["weight"] == "0.9"
    assert by_asset["SOL"]["imfFunction"]["type"] == "sqrt"


async def test_trade_history_is_newest_first_and_pages_back_from_the_newest() -> None:
    async with (
        local_exchange() as (exchange, _),
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):
        for quantity in ("1", "2", "3"):
            trade(exchange, "SOL_USDC", "Bid", quantity)
        recent = (await http.get("/api/v1/trades", params={"symbol": "SOL_USDC"})).json()
        history = (await http.get("/api/v1/trades/history", params={"symbol": "SOL_USDC"})).json()
        page = await http.get(
            "/api/v1/trades/history", params={"symbol": "SOL_USDC", "limit": "1", "offset": "1"}
        )
        missing = await http.get("/api/v1/trades/history")
    same_keys(history[0], SAMPLES["GET /api/v1/trades (parseTrade comment)"][0])
    assert [t["quantity"] for t in history] == ["3", "2", "1"]
    assert history == list(reversed(recent))
    assert [t["quantity"] for t in page.json()] == ["2"]
    assert missing.status_code == 400
    assert missing.text == "Failed to deserialize query string: missing field `symbol`"


async def test_open_interest_is_the_accounts_long_positions_per_perp() -> None:
    async with (
        local_exchange() as (exchange, clock),
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):
        other = exchange.add_account()
        trade(exchange, "SOL_USDC_PERP", "Bid", "3")
        exchange.venue.place(
            other.api_key,
            OrderRequest(symbol="SOL_USDC_PERP", side="Ask", order_type="Market", quantity=D(2)),
        )
        one = (await http.get("/api/v1/openInterest", params={"symbol": "SOL_USDC_PERP"})).json()
        every = (await http.get("/api/v1/openInterest")).json()
        spot = (await http.get("/api/v1/openInterest", params={"symbol": "SOL_USDC"})).json()
    assert one == [
        {"symbol": "SOL_USDC_PERP", "openInterest": "3", "timestamp": clock.now_us // 1000}
    ]
    same_keys(one[0], SAMPLES["GET /api/v1/openInterest (parseOpenInterest comment)"][0])
    assert [(i["symbol"], i["openInterest"]) for i in every] == [
        ("SOL_USDC_PERP", "3"),
        ("ETH_USDC_PERP", "0"),
    ]
    assert spot == []


async def test_klines_bucket_the_public_trades_by_interval() -> None:
    async with (
        local_exchange() as (exchange, clock),
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):
        clock.now_us += 60_000_000 - clock.now_us % 60_000_000  # the next minute starts
        start_s = clock.now_us // 1_000_000
        trade(exchange, "SOL_USDC", "Bid", "1")  # takes the best ask, 150.01
        trade(exchange, "SOL_USDC", "Bid", "10")  # the rest of 150.01, then 150.03
        clock.advance(60)
        trade(exchange, "SOL_USDC", "Ask", "2")  # the best bid, 149.99

        async def klines(**query: str) -> httpx.Response:
            return await http.get("/api/v1/klines", params={"symbol": "SOL_USDC", **query})

        minutes = (await klines(interval="1m", startTime=str(start_s))).json()
        hour = (await klines(interval="1h", startTime=str(start_s))).json()
        later = (await klines(interval="1m", startTime=str(start_s + 60))).json()
        before = (await klines(interval="1m", startTime="0", endTime=str(start_s))).json()
        bad_interval = await klines(interval="1H", startTime=str(start_s))
        no_start = await klines(interval="1m")
    same_keys(minutes[0], SAMPLES["GET /api/v1/klines (parseOHLCV comment)"][0])
    first, second = minutes
    assert (first["open"], first["high"], first["low"], first["close"]) == (
        "150.01", "150.03", "150.01", "150.03"
    )  # fmt: skip
    assert (first["volume"], first["trades"]) == ("11", "3")
    assert first["quoteVolume"] == str(D("150.01") * 10 + D("150.03"))
    assert (second["open"], second["volume"], second["trades"]) == ("149.99", "2", "1")
    assert second["start"][-2:] == "00" and second["end"] > second["start"]
    if (start_s + 60) % 3600:
        assert [c["trades"] for c in hour] == ["4"]
    else:  # the second minute starts an hour
        assert [c["trades"] for c in hour] == ["3", "1"]
    assert later == [second] and before == []
    assert bad_interval.status_code == 400 and "unknown variant `1H`" in bad_interval.text
    assert no_start.text == "Failed to deserialize query string: missing field `startTime`"


async def test_max_order_quantity_is_what_the_funds_or_margin_check_would_pass() -> None:
    async with (
        local_exchange(balances={"USDC": D(1000), "SOL": D("2.345")}) as (exchange, clock),
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):

        async def limit(**query: str) -> dict[str, Any]:
            reply = await signed_get(
                http, exchange, clock, "/api/v1/account/limits/order",
                instruction="maxOrderQuantity", query=query,
            )  # fmt: skip
            assert reply.status_code == 200, reply.text
            body: dict[str, Any] = reply.json()
            return body

        ask = await limit(symbol="SOL_USDC", side="Ask")
        bid = await limit(symbol="SOL_USDC", side="Bid", price="120")
        best = await limit(symbol="SOL_USDC", side="Bid")
        perp = await limit(symbol="SOL_USDC_PERP", side="Bid", price="125")
        trade(exchange, "SOL_USDC_PERP", "Bid", "2")
        closing_only = await limit(symbol="SOL_USDC_PERP", side="Ask", reduceOnly="true")
        wrong_side = await limit(symbol="SOL_USDC_PERP", side="Bid", reduceOnly="true")
        no_side = await signed_get(
            http, exchange, clock, "/api/v1/account/limits/order",
            instruction="maxOrderQuantity", query={"symbol": "SOL_USDC"},
        )  # fmt: skip
    assert ask == {"maxOrderQuantity": "2.34", "side": "Ask", "symbol": "SOL_USDC"}
    assert bid == {"maxOrderQuantity": "8.33", "price": "120", "side": "Bid", "symbol": "SOL_USDC"}
    assert best["maxOrderQuantity"] == "6.66"  # 1000 / 150.01, by the step of 0.01
    assert perp["maxOrderQuantity"] == "80"  # 1000 x leverage 10 / 125
    assert closing_only == {
        "maxOrderQuantity": "2", "reduceOnly": True, "side": "Ask", "symbol": "SOL_USDC_PERP"
    }  # fmt: skip
    assert wrong_side["maxOrderQuantity"] == "0"
    assert no_side.text == "Failed to deserialize query string: missing field `side`"


async def test_borrow_lend_positions_and_settlements_are_empty_and_signed() -> None:
    async with (
        local_exchange() as (exchange, clock),
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):
        trade(exchange, "SOL_USDC_PERP", "Bid", "1")
        borrow = await signed_get(
            http, exchange, clock, "/api/v1/borrowLend/positions",
            instruction="borrowLendPositionQuery",
        )  # fmt: skip
        settled = await signed_get(
            http, exchange, clock, "/wapi/v1/history/settlement",
            instruction="settlementHistoryQueryAll", query={"limit": "10", "source": "RealizePnl"},
        )  # fmt: skip
        bad_source = await signed_get(
            http, exchange, clock, "/wapi/v1/history/settlement",
            instruction="settlementHistoryQueryAll", query={"source": "Nonsense"},
        )  # fmt: skip
        unsigned = await http.get("/wapi/v1/history/settlement")
    assert (borrow.status_code, borrow.json()) == (200, [])
    assert (settled.status_code, settled.json()) == (200, [])
    assert bad_source.status_code == 400 and "unknown variant `Nonsense`" in bad_source.text
    assert unsigned.status_code == 401


async def test_market_type_is_an_array_parameter_and_others_may_not_repeat() -> None:
    async with (
        local_exchange() as (exchange, clock),
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):
        trade(exchange, "SOL_USDC", "Bid", "1")
        trade(exchange, "SOL_USDC_PERP", "Bid", "1")
        both = await http.get(
            "/api/v1/markets", params=[("marketType", "SPOT"), ("marketType", "PERP")]
        )
        perps = await http.get("/api/v1/markets", params={"marketType": "PERP"})
        twice = await http.get(
            "/api/v1/depth", params=[("symbol", "SOL_USDC"), ("symbol", "ETH_USDC")]
        )
        unknown = await http.get(
            "/api/v1/markets", params=[("marketType", "SPOT"), ("marketType", "X")]
        )
        # Signed: each value of the array as `&marketType=<value>`, in the order sent.
        own = Credentials(exchange.credentials().api_secret)
        now = clock.now_us // 1000
        text = (
            "instruction=fillHistoryQueryAll&marketType=SPOT&marketType=PERP"
            f"&timestamp={now}&window=5000"
        )
        headers = {
            "X-API-Key": own.api_key, "X-Signature": own.sign(text),
            "X-Timestamp": str(now), "X-Window": "5000",
        }  # fmt: skip
        fills = await http.get(
            "/wapi/v1/history/fills",
            params=[("marketType", "SPOT"), ("marketType", "PERP")],
            headers=headers,
        )
        only_last = await http.get(
            "/wapi/v1/history/fills", params={"marketType": "PERP"}, headers=headers
        )
    assert [m["symbol"] for m in both.json()] == [
        "SOL_USDC", "ETH_USDC", "SOL_USDC_PERP", "ETH_USDC_PERP"
    ]  # fmt: skip
    assert [m["symbol"] for m in perps.json()] == ["SOL_USDC_PERP", "ETH_USDC_PERP"]
    assert twice.status_code == 400
    assert twice.text == "Failed to deserialize query string: duplicate field `symbol`"
    assert unknown.status_code == 400 and "unknown variant `X`" in unknown.text
    assert fills.status_code == 200, fills.text
    assert sorted(f["symbol"] for f in fills.json()) == ["SOL_USDC", "SOL_USDC_PERP"]
    assert only_last.status_code == 401  # signed for two values, sent with one


@pytest.mark.parametrize(
    ("symbol", "side", "price", "accepted"),
    [
        ("SOL_USDC", "Bid", "112.5", True),  # 0.75 x 150: on the band's edge
        ("SOL_USDC", "Bid", "112.49", False),
        ("SOL_USDC", "Bid", "1.5", False),  # 1 % of the mid
        ("SOL_USDC", "Ask", "187.5", True),  # 1.25 x 150
        ("SOL_USDC", "Ask", "187.51", False),
        ("ETH_USDC_PERP", "Bid", "2249.99", False),
        ("ETH_USDC_PERP", "Ask", "3750.01", False),
    ],
)
async def test_a_limit_price_outside_the_band_is_refused(
    symbol: str, side: str, price: str, accepted: bool
) -> None:
    async with (
        local_exchange() as (exchange, clock),
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):
        own = Credentials(exchange.credentials().api_secret)
        body = {"symbol": symbol, "side": side, "orderType": "Limit", "quantity": "0.1",
                "price": price}  # fmt: skip
        now = clock.now_us // 1000
        placed = await http.post(
            "/api/v1/order",
            **signed_request(own, "POST", "/api/v1/order", "orderExecute", now, body=body),
        )
    if accepted:
        assert placed.status_code == 200, placed.text
        assert placed.json()["status"] == "New"
    else:
        assert placed.status_code == 400
        assert placed.json() == {"code": "INVALID_PRICE", "message": "Price out of bounds"}
        assert exchange.venue.accounts[exchange.api_key].orders == {}


async def test_the_entry_price_is_shown_with_the_venues_precision() -> None:
    async with (
        local_exchange() as (exchange, clock),
        httpx.AsyncClient(base_url=exchange.rest_url) as http,
    ):
        # 10 at 150.01 and 1 at 150.03 on the perp: an entry of 1650.13 / 11, which does not end.
        trade(exchange, "SOL_USDC_PERP", "Bid", "11")
        positions = await signed_get(
            http, exchange, clock, "/api/v1/position", instruction="positionQuery"
        )
    position = exchange.venue.accounts[exchange.api_key].positions["SOL_USDC_PERP"]
    assert position.entry_price == VENUE.divide(D("1650.13"), D(11))  # the books keep 60 digits
    assert len(str(position.entry_price).split(".")[1]) == 57
    (item,) = positions.json()
    assert item["entryPrice"] == "150.01181818181818181818181818"
    assert item["entryPrice"] == str(wire_decimal(position.entry_price))
    account = exchange.venue.accounts[exchange.api_key]
    assert exchange.venue.position_payload(account, position, None)["B"] == item["entryPrice"]


def test_wire_decimals_hold_at_most_28_places_and_96_bits() -> None:
    third = VENUE.divide(D(1), D(3))
    # The fact sheet's sample position: 34442 / 9 as the venue shows it.
    assert str(wire_decimal(VENUE.divide(D(34442), D(9)))) == "3826.8888888888888888888888889"
    assert str(wire_decimal(third)) == "0." + "3" * 28
    assert str(wire_decimal(VENUE.add(D(8), third))) == "8." + "3" * 27  # 29 digits pass 2**96
    assert wire_decimal(D("150.25")) == D("150.25")
    assert wire_decimal(D("9E+40")) == D("9E+40")
    big = VENUE.multiply(VENUE.divide(D(2), D(3)), D(10) ** 27)
    assert wire_decimal(big) == D("666666666666666666666666666.67")
