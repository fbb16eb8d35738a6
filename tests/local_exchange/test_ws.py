"""The local exchange's WebSocket server on 127.0.0.1: signed private subscriptions, the frames
our codec reads, the position snapshot, public streams and subscription errors.

The exchange runs on a `ManualClock` that only the tests move (and a mid that steps once a
day unless a test says otherwise), so every price below is the books' opening shape.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import trio
import trio_websocket

from oms.core.events import (
    MessageNotUnderstood,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    PositionObserved,
)
from oms.testing.harness import local_exchange
from oms_backpack import codec
from oms_backpack.signing import Credentials
from oms_local_exchange import LocalExchange, OrderRequest
from tests.helpers import next_frame, subscribe

D = Decimal


@asynccontextmanager
async def connected(exchange: LocalExchange) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    async with trio_websocket.open_websocket_url(exchange.ws_url) as ws:
        yield ws


def events_of(frame: dict[str, Any]) -> list[Any]:
    events = codec.ws_frame(json.dumps(frame), 0)
    assert not [e for e in events if isinstance(e, MessageNotUnderstood)], events
    return events


def place(exchange: LocalExchange, **fields: Any) -> None:
    """Place an order as the funded account, straight on the venue, and send its messages."""
    request = OrderRequest(**fields)
    exchange.venue.place(exchange.api_key, request)
    exchange.dispatch()


async def settle() -> None:
    """Let the exchange process frames already sent to it (subscriptions)."""
    await trio.sleep(0.05)


async def test_order_updates_are_frames_our_codec_understands() -> None:
    async with local_exchange() as (exchange, clock), connected(exchange) as ws:
        await subscribe(ws, exchange, clock, ["account.orderUpdate"])
        await settle()
        place(exchange, symbol="SOL_USDC", side="Bid", order_type="Limit", quantity=D(15),
              price=D("150.01"), time_in_force="IOC", client_id=21)  # fmt: skip
        place(exchange, symbol="SOL_USDC", side="Ask", order_type="Limit", quantity=D(1),
              price=D(160), client_id=22)  # fmt: skip
        exchange.venue.cancel(exchange.api_key, "SOL_USDC", client_id=22)
        exchange.dispatch()
        frames = [await next_frame(ws) for _ in range(5)]
        assert {f["stream"] for f in frames} == {"account.orderUpdate"}
        events = [e for f in frames for e in events_of(f)]
        assert [type(e) for e in events] == [
            OrderAccepted,
            OrderFilled,
            OrderExpired,
            OrderAccepted,
            OrderCancelled,
        ]
        fill = events[1]
        assert isinstance(fill, OrderFilled)
        assert (fill.client_id, fill.quantity, fill.price, fill.fee, fill.fee_asset) == (
            21,
            D(10),
            D("150.01"),
            D("0.01"),
            "SOL",
        )
        assert (fill.maker, fill.cum_quantity, fill.cum_quote) == (False, D(10), D("1500.1"))
        assert isinstance(fill.trade_id, int)
        assert fill.venue_time_us == clock.now_us
        expired = events[2]
        assert isinstance(expired, OrderExpired) and expired.reason == "ImmediateOrCancel"


async def test_a_symbol_subscription_sees_only_that_symbol() -> None:
    async with local_exchange() as (exchange, clock), connected(exchange) as ws:
        await subscribe(ws, exchange, clock, ["account.orderUpdate.ETH_USDC"])
        await settle()
        place(exchange, symbol="SOL_USDC", side="Bid", order_type="Limit", quantity=D(1),
              price=D(120))  # fmt: skip
        place(exchange, symbol="ETH_USDC", side="Bid", order_type="Limit", quantity=D(1),
              price=D(2400))  # fmt: skip
        frame = await next_frame(ws)
        assert frame["stream"] == "account.orderUpdate.ETH_USDC"
        assert (frame["data"]["s"], frame["data"]["e"]) == ("ETH_USDC", "orderAccepted")


async def test_position_stream_sends_the_open_positions_on_subscribe() -> None:
    async with local_exchange() as (exchange, clock), connected(exchange) as ws:
        place(exchange, symbol="SOL_USDC_PERP", side="Ask", order_type="Market", quantity=D(2))
        await subscribe(ws, exchange, clock, ["account.positionUpdate"])
        snapshot = await next_frame(ws)
        data = snapshot["data"]
        assert snapshot["stream"] == "account.positionUpdate" and "e" not in data
        # Short 2 at 149.99; break-even below entry by the fee per unit: 0.14999 / 2 = 0.074995.
        assert (data["q"], data["B"], data["b"], data["M"]) == ("-2", "149.99", "149.915005", "150")
        assert isinstance(data["E"], int) and isinstance(data["i"], int)
        (observed,) = events_of(snapshot)
        assert isinstance(observed, PositionObserved)
        assert (observed.net_quantity, observed.entry_price) == (D(-2), D("149.99"))
        place(exchange, symbol="SOL_USDC_PERP", side="Bid", order_type="Market", quantity=D(2),
              reduce_only=True)  # fmt: skip
        closed = await next_frame(ws)
        assert (closed["data"]["e"], closed["data"]["q"]) == ("positionClosed", "0")
        assert closed["data"]["p"] == "-0.04"  # bought back 2 at 150.01


async def test_public_streams() -> None:
    async with local_exchange(step_us=1_000_000) as (exchange, clock), connected(exchange) as ws:
        streams = [
            "trade.SOL_USDC",
            "depth.SOL_USDC",
            "bookTicker.SOL_USDC",
            "markPrice.SOL_USDC_PERP",
        ]
        await ws.send_message(json.dumps({"method": "SUBSCRIBE", "params": streams}))
        await settle()
        place(exchange, symbol="SOL_USDC", side="Bid", order_type="Market", quantity=D(10))
        frames = {f["stream"]: f["data"] for f in [await next_frame(ws) for _ in range(3)]}
        trade = frames["trade.SOL_USDC"]
        assert (trade["e"], trade["p"], trade["q"], trade["m"]) == ("trade", "150.01", "10", False)
        assert isinstance(trade["t"], int) and isinstance(trade["b"], str)
        depth = frames["depth.SOL_USDC"]
        assert (depth["a"], depth["b"]) == ([["150.01", "0"]], [])
        assert depth["U"] == depth["u"]
        ticker = frames["bookTicker.SOL_USDC"]
        assert (ticker["a"], ticker["b"]) == ("150.03", "149.99")
        for stream, data in frames.items():
            assert events_of({"stream": stream, "data": data}) == []
        clock.advance(30)  # the mid walks: the mark moves with it
        exchange.venue.advance()
        exchange.dispatch()
        for _ in range(10):
            frame = await next_frame(ws)
            if frame["stream"] == "markPrice.SOL_USDC_PERP":
                break
        assert frame["data"]["s"] == "SOL_USDC_PERP"
        assert isinstance(frame["data"]["n"], int) and "f" in frame["data"]


async def test_subscription_errors() -> None:
    async with local_exchange() as (exchange, clock), connected(exchange) as ws:
        await ws.send_message(json.dumps({"method": "SUBSCRIBE", "params": ["nonsense.SOL"]}))
        assert await next_frame(ws) == {
            "id": None,
            "error": {"code": 4006, "message": "Invalid stream"},
        }
        await ws.send_message(
            json.dumps({"method": "SUBSCRIBE", "params": ["account.orderUpdate"], "id": 3})
        )
        unsigned = await next_frame(ws)
        assert unsigned["id"] == 3 and unsigned["error"]["message"] == "Invalid signature"
        stale = clock.now_us // 1000 - 60_000
        await subscribe(ws, exchange, clock, ["account.orderUpdate"], timestamp_ms=stale)
        assert (await next_frame(ws))["error"]["message"] == "Request has expired"
        forged = Credentials(exchange.credentials().api_secret).subscribe_frame(
            ["account.orderUpdate"], clock.now_us // 1000
        )
        signature = forged["signature"]
        assert isinstance(signature, list)
        signature[1] = signature[1][::-1]
        await ws.send_message(json.dumps(forged))
        assert (await next_frame(ws))["error"]["message"] == "Invalid signature"
        # None of those subscribed: the next frame is a public one, not the order's update.
        place(exchange, symbol="SOL_USDC", side="Bid", order_type="Limit", quantity=D(1),
              price=D(120))  # fmt: skip
        await ws.send_message(json.dumps({"method": "SUBSCRIBE", "params": ["trade.SOL_USDC"]}))
        await settle()
        place(exchange, symbol="SOL_USDC", side="Bid", order_type="Market", quantity=D(1))
        assert (await next_frame(ws))["stream"] == "trade.SOL_USDC"


async def test_an_unknown_stream_refuses_only_itself() -> None:
    """ccxt's watch_orders subscribes to account.orderUpdate and account.rfqUpdate in one
    frame: both are served (RFQ silently), and a stream the venue does not know is refused
    alone, the frame's other streams subscribed all the same."""
    async with local_exchange() as (exchange, clock), connected(exchange) as ws:
        streams = ["account.orderUpdate", "account.rfqUpdate", "nonsense.SOL", "liquidation"]
        await subscribe(ws, exchange, clock, streams)
        assert await next_frame(ws) == {
            "id": None,
            "error": {"code": 4006, "message": "Invalid stream"},
        }
        await settle()
        assert exchange.subscribers("account.orderUpdate") == 1
        assert exchange.subscribers("account.rfqUpdate") == 1
        assert exchange.subscribers("liquidation") == 1
        assert exchange.subscribers("nonsense.SOL") == 0
        place(exchange, symbol="SOL_USDC", side="Bid", order_type="Limit", quantity=D(1),
              price=D(120), client_id=5)  # fmt: skip
        frame = await next_frame(ws)
        assert (frame["stream"], frame["data"]["e"]) == ("account.orderUpdate", "orderAccepted")


async def test_a_bad_signature_refuses_the_private_streams_not_the_public_ones() -> None:
    async with local_exchange() as (exchange, _), connected(exchange) as ws:
        frame = {"method": "SUBSCRIBE", "params": ["account.orderUpdate", "trade.SOL_USDC"]}
        await ws.send_message(json.dumps(frame))
        assert (await next_frame(ws))["error"] == {"code": 4003, "message": "Invalid signature"}
        await settle()
        assert exchange.subscribers("trade.SOL_USDC") == 1
        assert exchange.subscribers("account.orderUpdate") == 0


async def test_ticker_each_second_and_open_interest_each_minute() -> None:
    async with local_exchange() as (exchange, clock), connected(exchange) as ws:
        streams = ["ticker.SOL_USDC", "openInterest.SOL_USDC_PERP"]
        await ws.send_message(json.dumps({"method": "SUBSCRIBE", "params": streams}))
        await settle()
        place(exchange, symbol="SOL_USDC_PERP", side="Bid", order_type="Market", quantity=D(2))
        place(exchange, symbol="SOL_USDC", side="Bid", order_type="Market", quantity=D(1))
        seen: list[dict[str, Any]] = []
        for _ in range(60):  # a minute of venue time, a second at a time
            clock.advance(1)
            exchange.venue.advance()
            exchange.dispatch()
        with trio.move_on_after(0.5):
            while True:
                seen.append(await next_frame(ws))
    tickers = [f["data"] for f in seen if f["stream"] == "ticker.SOL_USDC"]
    interest = [f["data"] for f in seen if f["stream"] == "openInterest.SOL_USDC_PERP"]
    assert 59 <= len(tickers) <= 61
    ticker = tickers[-1]
    assert sorted(ticker) == sorted(["e", "E", "s", "o", "c", "h", "l", "v", "V", "n"])
    assert (ticker["e"], ticker["s"], ticker["c"], ticker["v"], ticker["n"]) == (
        "ticker", "SOL_USDC", "150.01", "1", 1
    )  # fmt: skip
    assert 1 <= len(interest) <= 2
    assert interest[-1] == {
        "e": "openInterest", "E": interest[-1]["E"], "s": "SOL_USDC_PERP", "o": "2"
    }  # fmt: skip


async def test_kline_stream_pushes_changed_candles_then_the_closed_one() -> None:
    async with local_exchange() as (exchange, clock), connected(exchange) as ws:
        clock.now_us += 60_000_000 - clock.now_us % 60_000_000  # the next minute starts
        start_s = clock.now_us // 1_000_000
        streams = ["kline.1m.SOL_USDC", "kline.7m.SOL_USDC"]
        await ws.send_message(json.dumps({"method": "SUBSCRIBE", "params": streams}))
        assert (await next_frame(ws))["error"]["code"] == 4006  # no 7m interval
        await settle()
        place(exchange, symbol="SOL_USDC", side="Bid", order_type="Market", quantity=D(11))
        clock.advance(1)
        exchange.venue.advance()
        exchange.dispatch()
        first = await next_frame(ws)
        place(exchange, symbol="SOL_USDC", side="Ask", order_type="Market", quantity=D(2))
        for _ in range(60):  # to the end of the minute and past it
            clock.advance(1)
            exchange.venue.advance()
            exchange.dispatch()
        seen = []
        with trio.move_on_after(0.5):
            while True:
                seen.append(await next_frame(ws))
    assert first["stream"] == "kline.1m.SOL_USDC"
    assert first["data"] == {
        "e": "kline", "E": first["data"]["E"], "s": "SOL_USDC",
        "t": first["data"]["t"], "T": first["data"]["T"], "o": "150.01", "c": "150.03",
        "h": "150.03", "l": "150.01", "v": "11", "n": 2, "X": False,
    }  # fmt: skip
    assert first["data"]["t"].endswith(":00") and first["data"]["t"] < first["data"]["T"]
    data = [f["data"] for f in seen]  # one update (the sell), then the bucket's final message
    assert [(d["c"], d["l"], d["v"], d["n"], d["X"]) for d in data] == [
        ("149.99", "149.99", "13", 3, False),
        ("149.99", "149.99", "13", 3, True),
    ]
    assert {d["t"] for d in data} == {first["data"]["t"]} and start_s % 60 == 0


async def test_liquidations_are_published_with_their_trades() -> None:
    """`Venue.liquidate` closes a position with an order of the venue's own: each of its trades
    is a public trade and a `liquidation` message (`S` the closing order's side); a user's
    trade or a venue strategy's is a trade only."""
    perp = "SOL_USDC_PERP"
    async with local_exchange() as (exchange, clock), connected(exchange) as ws:
        streams = ["liquidation", f"trade.{perp}"]
        await ws.send_message(json.dumps({"method": "SUBSCRIBE", "params": streams}))
        await settle()
        venue, key = exchange.venue, exchange.api_key
        place(exchange, symbol=perp, side="Bid", order_type="Market", quantity=D(2))
        liquidated = venue.liquidate(key, perp)  # sells the long 2
        exchange.dispatch()
        place(exchange, symbol=perp, side="Ask", order_type="Market", quantity=D(1))
        deleveraged = venue.liquidate(key, perp, origin="ADL_AUTOCLOSE")  # buys the short 1
        exchange.dispatch()
        venue.run_strategy(key, perp, "Ask", D(1), strategy_id=7)
        exchange.dispatch()
        place(exchange, symbol=perp, side="Bid", order_type="Market", quantity=D(1))
        frames = [await next_frame(ws) for _ in range(8)]
        with trio.move_on_after(0.1):
            raise AssertionError(f"one frame too many: {await next_frame(ws)}")
    assert [f["stream"] for f in frames] == [
        f"trade.{perp}",
        f"trade.{perp}",
        "liquidation",
        f"trade.{perp}",
        f"trade.{perp}",
        "liquidation",
        f"trade.{perp}",
        f"trade.{perp}",
    ]
    now = clock.now_us
    for trade, closing, order, side in (
        (frames[1]["data"], frames[2]["data"], liquidated, "Ask"),
        (frames[4]["data"], frames[5]["data"], deleveraged, "Bid"),
    ):
        assert closing == {
            "e": "liquidation",
            "E": now + 1,
            "q": trade["q"],
            "p": trade["p"],
            "S": side,
            "s": perp,
            "T": now,
        }
        assert trade["b" if side == "Bid" else "a"] == order.id
        assert events_of({"stream": "liquidation", "data": closing}) == []
    assert (frames[1]["data"]["q"], frames[1]["data"]["p"]) == ("2", "149.99")
    assert (frames[4]["data"]["q"], frames[4]["data"]["p"]) == ("1", "150.01")
