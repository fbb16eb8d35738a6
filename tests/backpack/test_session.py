"""A whole session against a scripted venue: REST through httpx's MockTransport, the
WebSocket through a real trio-websocket server on 127.0.0.1.

The central promise: a connection dropped mid-stream loses no fill once the reconnect's
reconciliation has run, and counts none twice.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketRequest, serve_websocket

from oms import ConfigurationError
from oms.core.reducer import replay
from oms.core.serialization import state_hash
from oms.core.state import AnomalyKind
from oms.core.values import OrderStatus, OrderType, Side
from oms.engine import Engine
from oms.log import Fsync, LogReader
from oms.testing.waiting import wait_for, wait_state
from oms_backpack.endpoints import InvalidOrder
from oms_backpack.rest import BackpackRest
from oms_backpack.session import BackpackSession, load_credentials, open_backpack_session
from oms_backpack.signing import Credentials, CredentialsError

SECRET = "sKmC5939f6W9/viyhwyaNHa0f7j5wSMvZsysW5BB9L4="
T0_MS = 1_760_000_000_000


class ScriptedVenue:
    """Just enough of Backpack for one SOL_USDC limit buy: REST answers and stream frames."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.fills: list[dict[str, Any]] = []
        self.capital = {"USDC": {"available": "1000", "locked": "0", "staked": "0"}}
        self.requests: list[str] = []
        self.subscriptions = 0
        self.connections: list[trio.MemorySendChannel[str]] = []
        self.execute_status = 200
        self.positions: list[dict[str, Any]] = []
        self.streams = ["account.orderUpdate"]

    # --- REST --------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(f"{request.method} {path}")
        if path == "/api/v1/time":
            return httpx.Response(200, json=T0_MS)
        if path == "/api/v1/markets":
            return httpx.Response(200, json=[{
                "symbol": symbol, "baseSymbol": "SOL", "quoteSymbol": "USDC",
                "marketType": kind, "filters": {
                    "price": {"tickSize": "0.01", "minPrice": "0.01"},
                    "quantity": {"stepSize": "0.01", "minQuantity": "0.01"}},
            } for symbol, kind in (("SOL_USDC", "SPOT"), ("SOL_USDC_PERP", "PERP"))])  # fmt: skip
        if path == "/api/v1/orders" and request.method == "DELETE":
            symbol = json.loads(request.content)["symbol"]
            cancelled = []
            for order in self.orders.values():
                if order["symbol"] == symbol and order["status"] in ("New", "PartiallyFilled"):
                    order["status"] = "Cancelled"
                    cancelled.append(order)
            return httpx.Response(200, json=cancelled)
        if path == "/wapi/v1/history/funding":
            return httpx.Response(200, json=[])
        if path == "/api/v1/position":
            return httpx.Response(200, json=self.positions)
        assert request.headers.get("X-API-Key"), "signed endpoints must be signed"
        if path == "/api/v1/capital":
            return httpx.Response(200, json=self.capital)
        if path == "/api/v1/orders" and request.method == "GET":
            resting = [o for o in self.orders.values() if o["status"] in ("New", "PartiallyFilled")]
            return httpx.Response(200, json=resting)
        if path == "/wapi/v1/history/orders":
            wanted = request.url.params.get("orderId")
            found = [o for o in self.orders.values() if wanted in (None, o["id"])]
            return httpx.Response(200, json=found)
        if path == "/wapi/v1/history/fills":
            return httpx.Response(200, json=self.fills)
        if path == "/api/v1/order" and request.method == "POST":
            if self.execute_status != 200:
                return httpx.Response(self.execute_status, text="Service Unavailable")
            body = json.loads(request.content)
            order = {
                "id": "111", "clientId": body["clientId"], "createdAt": T0_MS,
                "executedQuantity": "0", "executedQuoteQuantity": "0", "orderType": "Limit",
                "postOnly": False, "price": body["price"], "quantity": body["quantity"],
                "side": body["side"], "status": "New", "symbol": body["symbol"],
                "timeInForce": "GTC",
            }  # fmt: skip
            self.orders[order["id"]] = order
            hold = Decimal(body["quantity"]) * Decimal(body["price"])
            self._move("USDC", -hold, hold)
            return httpx.Response(200, json=order)
        return httpx.Response(404, json={"code": "RESOURCE_NOT_FOUND", "message": "Not Found"})

    def _move(self, asset: str, available: Decimal, locked: Decimal) -> None:
        entry = self.capital.setdefault(asset, {"available": "0", "locked": "0", "staked": "0"})
        entry["available"] = str(Decimal(entry["available"]) + available)
        entry["locked"] = str(Decimal(entry["locked"]) + locked)

    # --- the stream ----------------------------------------------------------------------

    def fill(self, trade_id: int, qty: str, price: str) -> dict[str, Any]:
        """Fill the one order: update the venue's books and return the stream payload."""
        order = self.orders["111"]
        done = Decimal(order["executedQuantity"]) + Decimal(qty)
        quote = Decimal(order["executedQuoteQuantity"]) + Decimal(qty) * Decimal(price)
        order["executedQuantity"], order["executedQuoteQuantity"] = str(done), str(quote)
        held = Decimal(qty) * Decimal(order["price"])
        self._move("USDC", held - Decimal(qty) * Decimal(price), -held)
        self._move("SOL", Decimal(qty) - Decimal("0.001"), Decimal(0))
        order["status"] = "Filled" if done == Decimal(order["quantity"]) else "PartiallyFilled"
        self.fills.append({
            "clientId": str(order["clientId"]), "fee": "0.001", "feeSymbol": "SOL",
            "isMaker": True, "orderId": "111", "price": price, "quantity": qty, "side": "Bid",
            "symbol": "SOL_USDC", "timestamp": "2025-10-09T08:53:20.000", "tradeId": trade_id,
        })  # fmt: skip
        return {
            "e": "orderFill", "E": T0_MS * 1000 + trade_id, "T": T0_MS * 1000 + trade_id,
            "s": "SOL_USDC", "c": order["clientId"], "S": "Bid", "o": "LIMIT", "f": "GTC",
            "q": order["quantity"], "p": order["price"], "X": order["status"], "i": "111",
            "t": trade_id, "l": qty, "L": price, "m": True, "n": "0.001", "N": "SOL",
            "z": str(done), "Z": str(quote), "O": "USER",
        }  # fmt: skip

    async def ws_handler(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        subscribe = json.loads(await ws.get_message())
        assert subscribe["method"] == "SUBSCRIBE"
        assert subscribe["params"] == self.streams
        self.subscriptions += 1
        send, receive = trio.open_memory_channel[str](100)
        self.connections.append(send)
        async with receive:
            async for text in receive:
                if text == "DROP":
                    await ws.aclose()
                    return
                await ws.send_message(text)


def scripted_session(
    engine: Engine, *, venue_script: ScriptedVenue, ws_url: str, **options: Any
) -> Any:
    """`open_backpack_session` on the scripted venue: its REST through MockTransport, the
    stream at `ws_url`, no periodic pass unless asked."""
    options.setdefault("poll_interval", 3600)
    return open_backpack_session(
        engine,
        Credentials(SECRET),
        rest_url="http://venue.test",
        ws_url=ws_url,
        transport=httpx.MockTransport(venue_script.handle),
        **options,
    )


async def _session(venue: ScriptedVenue, engine: Engine, nursery: trio.Nursery) -> tuple[str, Any]:
    server = await nursery.start(serve_websocket, venue.ws_handler, "127.0.0.1", 0, None)
    return f"ws://127.0.0.1:{server.port}", server


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_a_dropped_stream_loses_no_fill_once_reconciled(tmp_path: Path) -> None:
    venue = ScriptedVenue()
    path = tmp_path / "session.jsonl"
    engine = Engine.open(path, fsync=Fsync.never())
    try:
        await _dropped_stream_scenario(venue, engine)
    finally:
        engine.close()
    # The recorded session replays to the live state, bit for bit.
    assert state_hash(replay(LogReader(path).events())) == state_hash(engine.state)


async def _dropped_stream_scenario(venue: ScriptedVenue, engine: Engine) -> None:
    async with trio.open_nursery() as nursery:
        ws_url, _server = await _session(venue, engine, nursery)
        async with scripted_session(
            engine,
            venue_script=venue,
            ws_url=ws_url,
        ) as session:
            assert isinstance(session, BackpackSession)
            await wait_for(lambda: venue.subscriptions == 1, "subscribe")
            order = await session.submit(
                "SOL_USDC", Side.BID, OrderType.LIMIT, quantity=Decimal("2"), price=Decimal("100")
            )
            assert order.status is OrderStatus.NEW
            assert engine.state.balances["USDC"].locked == Decimal("200")
            # One fill on the stream, then the connection drops; the second fill happens
            # while we are away and is never sent on the stream.
            first = venue.fill(1, "0.5", "100")
            await venue.connections[0].send(
                json.dumps({"stream": "account.orderUpdate", "data": first})
            )
            await wait_state(
                engine,
                lambda state: (
                    (o := state.order(client_id=order.client_id)) is not None
                    and o.filled_quantity == Decimal("0.5")
                ),
                "first fill",
            )
            venue.fill(2, "1.5", "99.5")
            await venue.connections[0].send("DROP")
            await wait_for(lambda: venue.subscriptions == 2, "re-subscribe")
            await wait_state(
                engine,
                lambda state: (
                    (o := state.order(client_id=order.client_id)) is not None
                    and o.status is OrderStatus.FILLED
                ),
                "reconciled",
            )
            final = engine.state.order(client_id=order.client_id)
            assert final is not None
            assert final.filled_quantity == Decimal("2")
            assert final.trade_ids == frozenset({1, 2})
            assert final.locked == 0
            # Nothing counted twice, and the venue's balances agree with the derived ones.
            assert engine.state.anomaly_total == 0, engine.state.anomalies
            # Spent 0.5*100 + 1.5*99.5 = 199.25 USDC; got 2 SOL less 0.002 SOL fees.
            assert engine.state.balances["USDC"].available == Decimal("800.75")
            assert engine.state.balances["SOL"].available == Decimal("1.998")
            # A further pass finds nothing new. (The first call also waits for the pass the
            # reconnect started, which may still be fetching balances.)
            await session.reconcile()
            seq = engine.state.last_seq
            assert await session.reconcile() == 0
            assert engine.state.last_seq == seq
        nursery.cancel_scope.cancel()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_submit_outcomes_are_recorded_not_guessed(tmp_path: Path) -> None:
    venue = ScriptedVenue()
    engine = Engine()
    async with trio.open_nursery() as nursery:
        ws_url, _server = await _session(venue, engine, nursery)
        async with scripted_session(
            engine,
            venue_script=venue,
            ws_url=ws_url,
        ) as session:
            with pytest.raises(InvalidOrder, match="not a multiple"):
                await session.submit(
                    "SOL_USDC", Side.BID, OrderType.LIMIT, quantity=Decimal("1"),
                    price=Decimal("100.001"),
                )  # fmt: skip
            assert engine.state.last_client_id is None  # nothing logged for a refused order
            venue.execute_status = 503
            order = await session.submit(
                "SOL_USDC", Side.BID, OrderType.LIMIT, quantity=Decimal("1"), price=Decimal("100")
            )
            assert order.status is OrderStatus.IN_DOUBT
            assert venue.requests.count("POST /api/v1/order") == 1  # never retried blindly
            # The next reconciliation finds nothing resting and nothing in the history.
            await session.reconcile()
            resolved = engine.state.order(client_id=order.client_id)
            assert resolved is not None and resolved.status is OrderStatus.REJECTED
        nursery.cancel_scope.cancel()


async def test_balances_are_polled_on_the_interval(autojump_clock: trio.abc.Clock) -> None:
    venue = ScriptedVenue()
    engine = Engine()
    async with BackpackRest(
        "http://venue.test", Credentials(SECRET), transport=httpx.MockTransport(venue.handle)
    ) as rest:
        session = BackpackSession(engine, rest, perpetual=False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.poll, 15.0)
            await trio.sleep(15.5)
            assert venue.requests.count("GET /api/v1/capital") == 1
            assert engine.state.balances["USDC"].available == Decimal("1000")
            venue.capital["USDC"]["available"] = "990"  # moved by something we did not see
            await trio.sleep(30)
            assert venue.requests.count("GET /api/v1/capital") == 3
            usdc = engine.state.balances["USDC"]
            # Compared, not adopted: the derived figure stays what the events imply, and the
            # venue's lower figure is drift, reported once as an anomaly.
            assert usdc.observed is not None and usdc.observed.available == Decimal("990")
            assert (usdc.available, usdc.drift_available) == (Decimal("1000"), Decimal("-10"))
            assert engine.state.anomaly_counts.get(AnomalyKind.BALANCE_DRIFT) == 1
            # An unchanged snapshot adds no event.
            seq = engine.state.last_seq
            await trio.sleep(15)
            assert engine.state.last_seq == seq
            nursery.cancel_scope.cancel()


def test_keys_come_from_the_environment_or_a_key_file(tmp_path: Path) -> None:
    public = Credentials(SECRET).api_key
    from_env = load_credentials(environ={"BACKPACK_API_SECRET": SECRET, "BACKPACK_API_KEY": public})
    assert from_env.api_key == public
    key_file = tmp_path / "keys.json"
    key_file.write_text(json.dumps({"api_key": public, "api_secret": SECRET}), encoding="utf-8")
    assert load_credentials(key_file).api_key == public
    with pytest.raises(CredentialsError, match="BACKPACK_API_SECRET is not set"):
        load_credentials(environ={})
    key_file.write_text('{"api_secret": 5}', encoding="utf-8")
    with pytest.raises(CredentialsError) as info:
        load_credentials(key_file)
    assert SECRET not in str(info.value)
    with pytest.raises(CredentialsError, match="does not belong"):
        load_credentials(environ={"BACKPACK_API_SECRET": SECRET, "BACKPACK_API_KEY": "x" * 44})


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_the_perpetual_connector_follows_positions() -> None:
    venue = ScriptedVenue()
    venue.streams = ["account.orderUpdate", "account.positionUpdate"]
    venue.positions = [
        {"symbol": "SOL_USDC_PERP", "netQuantity": "-0.01", "entryPrice": "126.97",
         "breakEvenPrice": "126.9307", "markPrice": "120.96", "pnlRealized": "0.0592",
         "pnlUnrealized": "0.0009", "positionId": "28563667732"}
    ]  # fmt: skip
    engine = Engine()
    async with trio.open_nursery() as nursery:
        ws_url, _server = await _session(venue, engine, nursery)
        async with scripted_session(
            engine,
            venue_script=venue,
            ws_url=ws_url,
            venue="backpack_perpetual",
        ) as session:
            await session.reconcile()
            assert sorted(engine.state.markets.keys()) == ["SOL_USDC_PERP"]  # perps only
            position = engine.state.positions["SOL_USDC_PERP"]
            assert position.net_quantity == Decimal("-0.01")
            assert position.entry_price == Decimal("126.97")
            # The on-subscribe snapshot (no "e") and later updates arrive on the stream. (This
            # one realizes more PnL: a report where only the mark moved is no news.)
            await venue.connections[0].send(json.dumps({
                "stream": "account.positionUpdate",
                "data": {"B": "126.97", "E": 1769366599828079, "M": "121.5", "P": "-0.0045",
                         "Q": "0.01", "T": 1769366599828078, "b": "126.9307", "f": "0.02",
                         "i": 28563667732, "l": "0", "m": "0.0135", "n": "1.215", "p": "0.0650",
                         "q": "-0.01", "s": "SOL_USDC_PERP"}}))  # fmt: skip
            await wait_state(
                engine,
                lambda state: (
                    (o := state.positions["SOL_USDC_PERP"].observed) is not None
                    and (o.mark_price, o.realized_pnl) == (Decimal("121.5"), Decimal("0.065"))
                ),
                "position update",
            )
            assert engine.state.anomaly_total == 0
        # The session leaves no listener behind on the engine (a program may open another).
        assert engine._listeners == []
        nursery.cancel_scope.cancel()


async def test_a_failing_reconciliation_is_retried_not_fatal(
    autojump_clock: trio.abc.Clock,
) -> None:
    venue = ScriptedVenue()
    engine = Engine()
    failures = {"left": 2}

    def flaky(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/orders" and failures["left"]:
            failures["left"] -= 1
            return httpx.Response(400, json={"code": "INVALID_CLIENT_REQUEST", "message": "no"})
        return venue.handle(request)

    async with BackpackRest(
        "http://venue.test", Credentials(SECRET), transport=httpx.MockTransport(flaky)
    ) as rest:
        session = BackpackSession(engine, rest, perpetual=False)
        with trio.fail_after(60):
            await session.on_connect()
        assert session.errors == 2
        assert session.reconciled.is_set()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_named_symbols_across_spot_and_perp_follow_positions_too() -> None:
    venue = ScriptedVenue()
    venue.streams = ["account.orderUpdate", "account.positionUpdate"]
    engine = Engine()
    async with trio.open_nursery() as nursery:
        ws_url, _server = await _session(venue, engine, nursery)
        async with open_backpack_session(
            engine,
            Credentials(SECRET),
            symbols=["SOL_USDC", "SOL_USDC_PERP"],
            rest_url="http://venue.test",
            ws_url=ws_url,
            transport=httpx.MockTransport(venue.handle),
            poll_interval=3600,
        ) as session:
            await session.reconcile()
            assert sorted(engine.state.markets.keys()) == ["SOL_USDC", "SOL_USDC_PERP"]
            assert session.perpetual
            await wait_for(lambda: venue.subscriptions == 1, "subscribe")
        nursery.cancel_scope.cancel()
    with pytest.raises(ConfigurationError, match="no market BTC_USDC"):
        async with open_backpack_session(
            Engine(),
            Credentials(SECRET),
            symbols=["BTC_USDC"],
            rest_url="http://venue.test",
            ws_url="ws://127.0.0.1:9",
            transport=httpx.MockTransport(venue.handle),
        ):
            pass


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_shutdown_cancels_open_orders_and_records_the_requests_first() -> None:
    venue = ScriptedVenue()
    engine = Engine()
    async with trio.open_nursery() as nursery:
        ws_url, _server = await _session(venue, engine, nursery)
        async with scripted_session(
            engine,
            venue_script=venue,
            ws_url=ws_url,
            cancel_on_shutdown=True,
        ) as session:
            order = await session.submit(
                "SOL_USDC", Side.BID, OrderType.LIMIT, quantity=Decimal("1"), price=Decimal("90")
            )
            assert order.status is OrderStatus.NEW
        nursery.cancel_scope.cancel()
    final = engine.state.order(client_id=order.client_id)
    assert final is not None
    assert final.status is OrderStatus.CANCELLED
    assert final.cancel_requested  # the request was recorded before it was sent
    assert "DELETE /api/v1/orders" in venue.requests
