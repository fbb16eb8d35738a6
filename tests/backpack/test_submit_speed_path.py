"""The submit path's fast lane: what it puts on the wire and what it makes of failures.

Order executes go over a connection of their own (`rest._Lane`: h11 over a trio stream, the
whole request in one send) instead of through httpx. These tests hold it to what the httpx path
did: byte-for-byte the same request, the same answers, and the same verdicts when the
connection fails (not sent: retried; maybe sent: `OutcomeUnknown`). They run against a scripted
HTTP/1.1 server on 127.0.0.1 that keeps the raw bytes of every request it receives.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import ssl
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import h11
import httpx
import msgspec
import pytest
import trio
import trio.testing
import trustme
from hypothesis import given
from hypothesis import strategies as st

from oms.core.errors import ConfigurationError
from oms.core.events import OrderSubmitted, SubmitRejected, SubmitUnknown
from oms.core.reducer import replay
from oms.core.serialization import state_hash
from oms.core.state import Market
from oms.core.values import MarketType, OrderStatus, OrderType, Side, Source, TimeInForce
from oms.engine import Engine, EngineFailed
from oms.log import Fsync, LogReader
from oms.testing.books import SPOT
from oms.testing.harness import open_harness, open_session
from oms_backpack import endpoints, rest, signing
from oms_backpack.clock import VenueClock
from oms_backpack.rest import BackpackRest, OutcomeUnknown, VenueUnavailable
from oms_backpack.session import BackpackSession
from oms_backpack.signing import Credentials
from oms_local_exchange import open_local_exchange

SECRET = "sKmC5939f6W9/viyhwyaNHa0f7j5wSMvZsysW5BB9L4="
API_KEY = "1dCOvaOfUlYl8m8gNNUUA2cs9VZyaSD9vuwNgi944uM="
NOW_MS = 1_760_000_000_123
SOL = Market(
    symbol="SOL_USDC", base_asset="SOL", quote_asset="USDC", market_type=MarketType.SPOT,
    tick_size=Decimal("0.01"), step_size=Decimal("0.01"), min_quantity=Decimal("0.01"),
)  # fmt: skip
ORDER_OK = {
    "clientId": 42, "createdAt": 1760000000100, "executedQuantity": "0",
    "executedQuoteQuantity": "0", "id": "8284661092", "orderType": "Limit", "postOnly": True,
    "price": "1", "quantity": "0.01", "side": "Bid", "status": "New", "symbol": "SOL_USDC",
    "timeInForce": "GTC",
}  # fmt: skip


def order(client_id: int = 42) -> OrderSubmitted:
    return OrderSubmitted(
        source=Source.LOCAL, recv_time_us=1, client_id=client_id, symbol="SOL_USDC",
        side=Side.BID, order_type=OrderType.LIMIT_MAKER, quantity=Decimal("0.01"),
        price=Decimal("1.00"), time_in_force=TimeInForce.GTC,
    )  # fmt: skip


def execute(client_id: int = 42) -> endpoints.RequestSpec:
    return endpoints.execute_order(order(client_id), SOL)


# --- a scripted HTTP/1.1 server that keeps the raw requests --------------------------------------

# What the server does with one request: answer it, or one of these.
CLOSE = "close"  # close the connection without answering
HANG = "hang"  # never answer
SLOW = "slow"  # answer after 50 ms


@attrs.frozen
class Pieces:
    """An answer sent a few KiB at a time, with pauses: the client reads it in many parts."""

    data: bytes
    size: int = 4096


Answer = bytes | str | Callable[[], bytes] | Pieces


def response(
    status: int = 200,
    body: object = ORDER_OK,
    *,
    headers: list[tuple[str, str]] | None = None,
    raw_body: bytes | None = None,
) -> bytes:
    """A response's bytes, written by h11."""
    content = raw_body if raw_body is not None else json.dumps(body).encode()
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.next_event()
    conn.next_event()
    fields = headers if headers is not None else [("Content-Type", "application/json")]
    if not any(name.lower() == "transfer-encoding" for name, _ in fields):
        fields = [*fields, ("Content-Length", str(len(content)))]
    head = conn.send(h11.Response(status_code=status, headers=fields))
    data = conn.send(h11.Data(data=content)) if content else b""
    return (head or b"") + (data or b"") + (conn.send(h11.EndOfMessage()) or b"")


class Venue:
    """Accepts connections on 127.0.0.1; reads each request with h11, keeps its raw bytes in
    `requests` (and which connection carried it in `connections`), and does what the next
    item of `script` says (the default answer is `response()`)."""

    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.requests: list[bytes] = []
        self.connections: list[int] = []
        self.accepted = 0
        self.url = ""
        self._open: set[trio.abc.Stream] = set()

    async def close_all(self) -> None:
        """Close every connection the venue holds (as a server does with idle ones)."""
        for stream in list(self._open):
            await trio.aclose_forcefully(stream)
        await trio.testing.wait_all_tasks_blocked()

    async def _serve(self, stream: trio.abc.Stream) -> None:
        self.accepted += 1
        self._open.add(stream)
        try:
            async with stream:
                await self._converse(stream, self.accepted)
        finally:
            self._open.discard(stream)

    async def _converse(self, stream: trio.abc.Stream, number: int) -> None:
        conn = h11.Connection(h11.SERVER)
        raw = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not data:
                    return
                raw += data
                conn.receive_data(data)
                continue
            if not isinstance(event, h11.EndOfMessage):
                continue
            self.requests.append(raw)
            self.connections.append(number)
            raw = b""
            answer = self.script.pop(0) if self.script else response()
            if answer == CLOSE:
                return
            if answer == HANG:
                await trio.sleep_forever()
            if answer == SLOW:
                await trio.sleep(0.05)
                answer = response()
            if isinstance(answer, Pieces):
                for at in range(0, len(answer.data), answer.size):
                    await stream.send_all(answer.data[at : at + answer.size])
                    await trio.sleep(0.002)
                conn = h11.Connection(h11.SERVER)
                continue
            payload = answer() if callable(answer) else answer
            assert isinstance(payload, bytes)
            await stream.send_all(payload)
            if b"connection: close" in payload.lower():
                return
            conn = h11.Connection(h11.SERVER)

    @asynccontextmanager
    async def running(self, tls: ssl.SSLContext | None = None) -> AsyncIterator[Venue]:
        async with trio.open_nursery() as nursery:
            if tls is None:
                serve = partial(trio.serve_tcp, self._serve, 0, host="127.0.0.1")
            else:
                serve = partial(trio.serve_ssl_over_tcp, self._serve, 0, tls, host="127.0.0.1")
            listeners = await nursery.start(serve)
            socket = listeners[0].socket if tls is None else listeners[0].transport_listener.socket
            port = socket.getsockname()[1]
            self.url = f"{'http' if tls is None else 'https'}://127.0.0.1:{port}"
            yield self
            nursery.cancel_scope.cancel()


@pytest.fixture
async def venue() -> AsyncIterator[Venue]:
    async with Venue().running() as running:
        yield running


def client(url: str, **options: Any) -> BackpackRest:
    options.setdefault("clock", VenueClock(local_ns=lambda: NOW_MS * 1_000_000))
    options.setdefault("rng", random.Random(7))
    options.setdefault("backoff_initial", 0.01)
    options.setdefault("backoff_max", 0.05)
    return BackpackRest(url, Credentials(SECRET), **options)


def expected_execute(port: int) -> bytes:
    """The bytes the httpx client sent for `execute()` before the lane existed (captured then),
    with the parts that follow the installed httpx: its version and the encodings it accepts."""
    defaults = httpx.AsyncClient().headers
    return (
        b"POST /api/v1/order HTTP/1.1\r\n"
        b"Host: 127.0.0.1:%d\r\n"
        b"Accept: */*\r\n"
        b"Accept-Encoding: %s\r\n"
        b"Connection: keep-alive\r\n"
        b"User-Agent: %s\r\n"
        b"X-API-Key: 1dCOvaOfUlYl8m8gNNUUA2cs9VZyaSD9vuwNgi944uM=\r\n"
        b"X-Signature: Q5hg/IKgYs0P5PquUuTGPRJiuOo2dJIpx5eHVLQhU204ZJBdcSVlbnO1CXTdkhScLY6foXHuQj"
        b"QlSwb7GojkCw==\r\n"
        b"X-Timestamp: 1760000000123\r\n"
        b"X-Window: 5000\r\n"
        b"Content-Type: application/json; charset=utf-8\r\n"
        b"Content-Length: 134\r\n"
        b"\r\n"
        b'{"symbol":"SOL_USDC","side":"Bid","clientId":42,"quantity":"0.01","orderType":"Limit",'
        b'"price":"1","postOnly":true,"timeInForce":"GTC"}'
    ) % (
        port,
        defaults["Accept-Encoding"].encode(),
        defaults["User-Agent"].encode(),
    )


def port_of(url: str) -> int:
    return httpx.URL(url).port or 80


# --- the bytes on the wire ---------------------------------------------------------------------


async def test_an_execute_puts_the_same_bytes_on_the_wire_as_before(venue: Venue) -> None:
    async with client(venue.url) as api:
        answer = await api.call(execute())
    assert venue.requests == [expected_execute(port_of(venue.url))]
    assert answer["id"] == "8284661092"
    assert answer["price"] == "1"


async def test_the_lane_and_httpx_put_the_same_bytes_on_the_wire(venue: Venue) -> None:
    # An explicit transport keeps every request on httpx: the old path, side by side.
    async with (
        client(venue.url) as lane,
        client(venue.url, transport=httpx.AsyncHTTPTransport()) as plain,
    ):
        await lane.call(execute(7))
        await plain.call(execute(7))
        batch = endpoints.execute_batch([(order(8), SOL), (order(9), SOL)])
        venue.script[:] = [response(body=[ORDER_OK, ORDER_OK])] * 2
        await lane.call(batch)
        await plain.call(batch)
    assert venue.requests[0] == venue.requests[1]
    assert venue.requests[2] == venue.requests[3]
    assert venue.requests[2].startswith(b"POST /api/v1/orders HTTP/1.1\r\n")
    # Four requests, two connections: each client kept its one connection alive.
    assert venue.connections == [1, 2, 1, 2]


@pytest.mark.parametrize("takes", [0, 1, 100, None])
async def test_what_the_direct_write_leaves_is_sent_by_trio(
    venue: Venue, monkeypatch: pytest.MonkeyPatch, takes: int | None
) -> None:
    # A plain TCP lane writes the request itself, once, without waiting; a socket that takes
    # none of it or part of it (a full send buffer) leaves the rest to trio's `send_all`
    # under the write timeout. Either way the venue gets the same bytes, once.
    writes: list[int] = []
    original = rest._Lane._send_now

    def send_now(self: rest._Lane, data: bytes) -> int:
        written = original(self, data[:takes]) if takes != 0 else 0  # [:None]: all of it
        writes.append(written)
        return written

    monkeypatch.setattr(rest._Lane, "_send_now", send_now)
    async with client(venue.url) as api:
        answer = await api.call(execute())
        await api.call(execute())
    expected = expected_execute(port_of(venue.url))
    assert venue.requests == [expected, expected]
    assert answer["id"] == "8284661092"
    assert writes == [len(expected) if takes is None else takes] * 2
    assert venue.connections == [1, 1]


async def test_over_tls_the_lane_never_writes_to_the_socket_itself(
    ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TLS records are trio's to write: the direct write is for plain TCP only.
    def send_now(self: rest._Lane, data: bytes) -> int:
        raise AssertionError("a TLS lane wrote to its socket directly")

    monkeypatch.setattr(rest._Lane, "_send_now", send_now)
    carried = spy_on_lane(monkeypatch)
    async with Venue().running(server_context(ca)) as venue, client(venue.url) as api:
        answer = await api.call(execute())
    assert answer["id"] == "8284661092"
    assert len(carried) == len(venue.requests) == 1


def spy_on_lane(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record the body of every request the lane carries."""
    carried: list[bytes] = []
    original = rest._Lane.request

    async def request(self: rest._Lane, head: Any, headers: Any, body: bytes, *rest: Any) -> Any:
        carried.append(body)
        return await original(self, head, headers, body, *rest)

    monkeypatch.setattr(rest._Lane, "request", request)
    return carried


async def test_only_order_executes_take_the_lane(
    venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    carried = spy_on_lane(monkeypatch)
    async with client(venue.url) as api:
        await api.call(execute(1))
        venue.script[:] = [response(body=[])]
        await api.call(endpoints.open_orders("SOL_USDC"))
        await api.call(endpoints.cancel_order("SOL_USDC", client_id=1))
        await api.call(execute(2))
    assert [json.loads(body)["clientId"] for body in carried] == [1, 2]
    assert [r.split(b" ", 2)[:2] for r in venue.requests] == [
        [b"POST", b"/api/v1/order"],
        [b"GET", b"/api/v1/orders?symbol=SOL_USDC"],
        [b"DELETE", b"/api/v1/order"],
        [b"POST", b"/api/v1/order"],
    ]
    # The lane's connection (1) carried both executes; httpx's (2) the rest.
    assert venue.connections == [1, 2, 2, 1]


async def test_a_proxy_in_the_environment_or_a_transport_keeps_executes_on_httpx(
    venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    carried = spy_on_lane(monkeypatch)
    async with client(venue.url, transport=httpx.AsyncHTTPTransport()) as api:
        await api.call(execute())
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    async with client(venue.url) as api:
        assert api._lane is None  # httpx would go through the proxy for https://
    assert carried == []
    assert len(venue.requests) == 1


@pytest.fixture
def ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    """A certificate authority our clients trust (httpx reads SSL_CERT_FILE)."""
    authority = trustme.CA()
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return authority


def server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_over_tls_the_lane_sends_what_httpx_sends(
    ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    carried = spy_on_lane(monkeypatch)
    async with Venue().running(server_context(ca)) as venue:
        async with client(venue.url) as api:
            await api.call(execute(5))
            await api.call(execute(5))
        async with client(venue.url, transport=httpx.AsyncHTTPTransport()) as api:
            await api.call(execute(5))
    assert len(carried) == 2
    assert venue.requests[0] == venue.requests[1] == venue.requests[2]
    assert venue.requests[0].startswith(b"POST /api/v1/order HTTP/1.1\r\nHost: 127.0.0.1:")
    assert venue.connections == [1, 1, 2]


async def test_over_tls_a_certificate_not_trusted_means_nothing_was_sent(
    ca: trustme.CA,
) -> None:
    stranger = trustme.CA()  # signs the server's certificate; our clients do not trust it
    async with Venue().running(server_context(stranger)) as venue:
        for options in ({}, {"transport": httpx.AsyncHTTPTransport()}):
            async with client(venue.url, max_retries=1, **options) as api:
                with pytest.raises(VenueUnavailable, match=r"2 attempts \(ConnectError\)"):
                    await api.call(execute())
    assert venue.requests == []


# --- answers -----------------------------------------------------------------------------------


async def test_answers_are_read_as_httpx_reads_them(venue: Venue) -> None:
    packed = gzip.compress(json.dumps(ORDER_OK).encode())
    venue.script[:] = [
        response(raw_body=packed, headers=[("Content-Encoding", "gzip")]),
        response(headers=[("Transfer-Encoding", "chunked")]),
        # A plain-text refusal in Latin-1: the message is the text as httpx decodes it.
        response(400, raw_body="Non autorisé".encode("latin-1"),
                 headers=[("Content-Type", "text/plain; charset=latin-1")]),
    ]  # fmt: skip
    async with client(venue.url) as api:
        assert (await api.call(execute(1)))["id"] == "8284661092"
        assert (await api.call(execute(2)))["id"] == "8284661092"
        with pytest.raises(rest.VenueError) as refused:
            await api.call(execute(3))
    assert (refused.value.status, refused.value.code) == (400, "HTTP_400")
    assert refused.value.message == "Non autorisé"
    assert venue.connections == [1, 1, 1]


async def test_a_connection_the_server_closes_is_not_reused(venue: Venue) -> None:
    venue.script[:] = [response(headers=[("Connection", "close")])]
    async with client(venue.url) as api:
        await api.call(execute(1))  # answered with "Connection: close": a new connection next
        await api.call(execute(2))
        await api.call(execute(3))
        # The server drops the idle connection (its own keep-alive limit): the lane sees it
        # closed before sending and opens a fresh one, without an unknown outcome.
        await venue.close_all()
        await api.call(execute(4))
    assert venue.connections == [1, 2, 2, 3]


# --- failures: the same verdicts as httpx ------------------------------------------------------


async def test_a_request_dropped_unanswered_is_in_doubt_and_not_resent(venue: Venue) -> None:
    venue.script[:] = [CLOSE]
    async with client(venue.url) as api:
        with pytest.raises(OutcomeUnknown, match="RemoteProtocolError after the request may"):
            await api.call(execute(1))
        assert len(venue.requests) == 1
        await api.call(execute(2))  # on a new connection
    assert venue.connections == [1, 2]


async def test_a_request_never_answered_is_in_doubt(
    venue: Venue, autojump_clock: trio.abc.Clock
) -> None:
    venue.script[:] = [HANG]
    async with client(venue.url) as api:
        with pytest.raises(OutcomeUnknown, match="ReadTimeout after the request may"):
            await api.call(execute())
    assert len(venue.requests) == 1


async def test_a_connection_never_made_is_retried_then_unavailable() -> None:
    with trio.socket.socket() as probe:  # a port with nothing listening
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with client(f"http://127.0.0.1:{port}", max_retries=2) as api:
        with pytest.raises(VenueUnavailable, match=r"3 attempts \(ConnectError\)"):
            await api.call(execute())


async def test_status_answers_keep_their_verdicts(venue: Venue) -> None:
    venue.script[:] = [
        response(429, {"code": "TOO_MANY_REQUESTS", "message": "slow down"}),
        response(),
        response(503, {"code": "SERVICE_UNAVAILABLE", "message": "down"}),
        response(400, {"code": "INVALID_ORDER", "message": "Invalid price"}),
    ]
    async with client(venue.url) as api:
        assert (await api.call(execute(1)))["status"] == "New"  # 429: retried
        with pytest.raises(OutcomeUnknown, match="SERVICE_UNAVAILABLE"):
            await api.call(execute(2))
        with pytest.raises(rest.VenueError, match="Invalid price"):
            await api.call(execute(3))
    assert len(venue.requests) == 4
    assert venue.connections == [1, 1, 1, 1]


async def test_a_cancelled_execute_leaves_no_half_used_connection(
    venue: Venue, autojump_clock: trio.abc.Clock
) -> None:
    venue.script[:] = [HANG]
    async with client(venue.url) as api:
        with trio.move_on_after(1):
            await api.call(execute(1))
        assert (await api.call(execute(2)))["id"] == "8284661092"
    assert venue.connections == [1, 2]


async def test_concurrent_executes_share_nothing(
    venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    carried = spy_on_lane(monkeypatch)
    venue.script[:] = [SLOW, SLOW]
    answers: list[Any] = []
    async with client(venue.url) as api:

        async def place(client_id: int) -> None:
            answers.append(await api.call(execute(client_id)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(place, 1)
            nursery.start_soon(place, 2)
    assert len(answers) == 2
    assert len(carried) == 1  # the lane was busy: the other went through httpx
    assert sorted(venue.connections) == [1, 2]
    assert sorted(json.loads(r.partition(b"\r\n\r\n")[2])["clientId"] for r in venue.requests) == [
        1,
        2,
    ]


# --- keeping the connections warm ------------------------------------------------------------


def pings(venue: Venue, *, lane: bool) -> list[int]:
    """The connection each `GET /api/v1/ping` came on: the lane's (which, like all its
    requests, carry a Content-Length) or httpx's pool's (which do not, on a GET)."""
    return [
        number
        for raw, number in zip(venue.requests, venue.connections, strict=True)
        if raw.startswith(b"GET /api/v1/ping HTTP/1.1\r\n")
        and (b"\r\nContent-Length: 0\r\n" in raw) == lane
    ]


def carried(venue: Venue, start: bytes) -> list[int]:
    """The connection each request starting with `start` came on."""
    return [
        n for raw, n in zip(venue.requests, venue.connections, strict=True) if raw.startswith(start)
    ]


EXECUTE = b"POST /api/v1/order "
TIME = b"GET /api/v1/time "


async def test_connections_kept_warm_carry_requests_after_a_pause(
    venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pause longer than the keep-alive limit: without the task the order and the query
    after it each open a new connection (a handshake inside their latency); with it, both
    connections were open before the first request and carry everything."""
    monkeypatch.setattr(rest, "KEEPALIVE_EXPIRY", 0.6)
    async with client(venue.url) as api:
        await api.call(execute(1))
        await api.call(endpoints.server_time())
        await trio.sleep(1.2)
        await api.call(execute(2))
        await api.call(endpoints.server_time())
    # The pause expired both connections: four requests, four connections.
    assert sorted(venue.connections) == [1, 2, 3, 4]

    warm = Venue()
    async with warm.running(), client(warm.url) as api, trio.open_nursery() as nursery:
        nursery.start_soon(partial(api.keep_warm, idle=0.2))
        await trio.testing.wait_all_tasks_blocked()
        assert warm.accepted == 2  # the lane and the pool, connected before any request
        await api.call(execute(1))
        await api.call(endpoints.server_time())
        await trio.sleep(1.2)
        await api.call(execute(2))
        await api.call(endpoints.server_time())
        nursery.cancel_scope.cancel()
    assert warm.accepted == 2
    lane = set(pings(warm, lane=True))
    pool = set(pings(warm, lane=False))
    assert len(lane) == len(pool) == 1 and lane != pool
    assert set(carried(warm, EXECUTE)) == lane and set(carried(warm, TIME)) == pool
    assert len(pings(warm, lane=True)) >= 3  # at the start, then after each 0.2 s unused


async def test_a_connection_in_use_is_not_pinged(venue: Venue) -> None:
    async with client(venue.url) as api, trio.open_nursery() as nursery:
        nursery.start_soon(partial(api.keep_warm, idle=0.5))
        await trio.testing.wait_all_tasks_blocked()
        for client_id in range(1, 21):  # an order and a query every 50 ms for a second
            await api.call(execute(client_id))
            await api.call(endpoints.server_time())
            await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    # Only the pings that opened the two connections.
    assert len(pings(venue, lane=True)) == len(pings(venue, lane=False)) == 1
    assert venue.accepted == 2


async def test_a_failed_ping_is_tried_again_and_raises_nothing(
    venue: Venue, caplog: pytest.LogCaptureFixture
) -> None:
    """The server drops both connections on their first ping (as on a restart): the next
    pings open new ones, and the order after them goes out on the lane's new one."""
    venue.script[:] = [CLOSE, CLOSE]
    seen: list[tuple[str, str | None]] = []
    async with client(venue.url) as api, trio.open_nursery() as nursery:
        api.observer = lambda path, _seconds, error: seen.append((path, error))
        nursery.start_soon(partial(api.keep_warm, idle=0.1))
        await trio.sleep(0.35)
        await api.call(execute(1))
        nursery.cancel_scope.cancel()
    assert sorted(pings(venue, lane=True)[:1] + pings(venue, lane=False)[:1]) == [1, 2]
    assert carried(venue, EXECUTE) == pings(venue, lane=True)[1:2] and venue.accepted >= 4
    assert seen[:2] == [("/api/v1/ping", "RemoteProtocolError")] * 2
    assert ("/api/v1/ping", None) in seen and ("/api/v1/order", None) in seen
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_pings_take_no_room_an_order_needs(
    venue: Venue, autojump_clock: trio.abc.Clock
) -> None:
    """One request a minute, spent: a ping does not queue for the next room ahead of the
    order that comes while the window is full, which goes out as soon as there is room."""
    async with client(venue.url, max_requests_per_minute=1) as api, trio.open_nursery() as nursery:
        await api.call(execute(1))
        full_since = trio.current_time()
        nursery.start_soon(partial(api.keep_warm, idle=0.1))
        await trio.sleep(1)
        await api.call(execute(2))
        assert trio.current_time() - full_since < 61  # when the window had room again
        nursery.cancel_scope.cancel()
    assert len(carried(venue, EXECUTE)) == 2


async def test_with_no_venue_to_reach_the_warming_task_waits_and_raises_nothing() -> None:
    with trio.socket.socket() as unused:  # a port with nothing listening
        await unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with client(f"http://127.0.0.1:{port}") as api:
        with trio.move_on_after(0.35):
            await api.keep_warm(idle=0.1)  # failed connects on both sides, nothing raised


async def test_where_executes_do_not_take_the_lane_there_is_nothing_to_keep_warm(
    venue: Venue,
) -> None:
    transport = httpx.AsyncHTTPTransport()
    async with client(venue.url, transport=transport) as api:
        with trio.fail_after(1):
            await api.keep_warm()  # returns at once
    assert venue.requests == []


async def test_a_session_keeps_its_connections_warm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`open_backpack_session` keeps the lane warm by default: its first order, and an order
    after a pause past the keep-alive limit, go out without connecting inside the submit."""
    monkeypatch.setattr(rest, "KEEPALIVE_EXPIRY", 0.9)
    monkeypatch.setattr(rest, "WARM_IDLE_S", 0.3)  # the task's default idle, read at its call
    connects: list[float] = []
    connected = trio.Event()
    original = rest._Lane._connect

    async def connect(lane: Any) -> None:
        connects.append(trio.current_time())
        await original(lane)
        connected.set()

    monkeypatch.setattr(rest._Lane, "_connect", connect)
    with trio.fail_after(30):
        async with open_harness(tmp_path / "s.jsonl") as h:
            await connected.wait()
            await trio.sleep(0.1)  # the first ping answered
            before = len(connects)
            await h.submit(SPOT, Side.BID, OrderType.LIMIT, quantity="0.1", price="100")
            await trio.sleep(1.8)
            await h.submit(SPOT, Side.BID, OrderType.LIMIT, quantity="0.1", price="100")
            assert len(connects) == before == 1
            await h.finish()


async def test_a_session_signs_with_nonces_made_ahead_and_keeps_them_stocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`open_backpack_session` fills the credentials' nonce pool at once and refills it
    whenever a signed request leaves it low; the venue accepts what is signed with them."""
    monkeypatch.setattr(rest, "NONCE_POOL", 6)
    monkeypatch.setattr(rest, "NONCE_LOW", 3)
    made: list[int] = []
    original = Credentials.add_nonces

    def add_nonces(credentials: Credentials, count: int) -> int:
        made.append(original(credentials, count))
        return made[-1]

    monkeypatch.setattr(Credentials, "add_nonces", add_nonces)
    with trio.fail_after(30):
        async with open_harness(tmp_path / "s.jsonl") as h:
            credentials = h.session.rest._credentials
            assert credentials is not None
            # The first fill, in a worker thread: nothing to wait on but the count. (A
            # subscription signed since may have taken one of them already.)
            while not made:  # noqa: ASYNC110
                await trio.sleep(0.01)
            for _ in range(8):
                # A bid that rests (inside the venue's price band, below the market).
                order = await h.submit(SPOT, Side.BID, OrderType.LIMIT, quantity="0.1", price="120")
                assert order.status is OrderStatus.NEW  # a bad signature is refused
            await trio.sleep(0.2)
            # Every order took a nonce: the first fill's 6, then refills of 4 each.
            assert sum(made) - credentials.nonces_left >= 8
            assert made[0] == 6 and len(made) >= 3
            assert credentials.nonces_left >= 3  # refilled whenever it fell below 3
            await h.finish()


async def test_the_nonce_task_fills_the_pool_then_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = Credentials(SECRET)
    api = BackpackRest("http://127.0.0.1:9", credentials)  # never opened: nothing is sent
    with trio.move_on_after(0.5) as waited:
        await api.keep_nonces()
    assert waited.cancelled_caught  # it waits for requests to spend them
    assert credentials.nonces_left == rest.NONCE_POOL
    # A pynacl without the primitives: the task ends rather than spin on a pool it cannot fill.
    monkeypatch.setattr(signing, "_POOLED", False)
    other = Credentials(SECRET)
    with trio.fail_after(5):
        await BackpackRest("http://127.0.0.1:9", other).keep_nonces()
    assert other.nonces_left == 0
    # Nor does a client without credentials have anything to fill.
    with trio.fail_after(5):
        await BackpackRest("http://127.0.0.1:9").keep_nonces()


async def test_a_failure_to_make_nonces_is_logged_and_never_reaches_the_session(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(credentials: Credentials, count: int) -> int:
        raise OSError("no randomness")

    monkeypatch.setattr(Credentials, "add_nonces", broken)
    credentials = Credentials(SECRET)
    with caplog.at_level(logging.WARNING), trio.fail_after(5):
        await BackpackRest("http://127.0.0.1:9", credentials).keep_nonces()  # returns
    assert "making signing nonces ahead failed (OSError)" in caplog.text
    assert SECRET not in caplog.text
    assert credentials.sign("x")  # made in full


async def test_a_session_can_sign_without_nonces_made_ahead(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            open_local_exchange() as exchange,
            open_session(exchange, tmp_path / "t.jsonl", nonces_ahead=False) as h2,
        ):
            order = await h2.submit(SPOT, Side.BID, OrderType.LIMIT, quantity="0.1", price="120")
            assert order.status is OrderStatus.NEW
            credentials = h2.session.rest._credentials
            assert credentials is not None and credentials.nonces_left == 0
            await h2.finish()


@pytest.mark.parametrize("idle", [0, -1, rest.KEEPALIVE_EXPIRY, 60])
async def test_an_idle_time_the_connections_would_outlive_is_refused(
    venue: Venue, idle: float
) -> None:
    async with client(venue.url) as api:
        with pytest.raises(ConfigurationError, match="idle must be"):
            await api.keep_warm(idle=idle)


# --- the session's submit ----------------------------------------------------------------------


def spot_engine(path: Path | None = None) -> Engine:
    """An engine (logged to `path`, if given) that knows the SOL_USDC market."""
    engine = Engine(None) if path is None else Engine.open(path, fsync=Fsync.group())
    engine.record(
        rest.codec.market(
            {"symbol": "SOL_USDC", "baseSymbol": "SOL", "quoteSymbol": "USDC",
             "marketType": "SPOT", "filters": {"price": {"tickSize": "0.01"},
             "quantity": {"stepSize": "0.01", "minQuantity": "0.01"}}},
            Source.REST, 1,
        )
    )  # fmt: skip
    return engine


async def submit_42(engine: Engine, url: str, **options: Any) -> Any:
    """One `submit` (a post-only bid, client id 42) through a session of `engine` on `url`."""
    async with client(url, **options) as api:
        session = BackpackSession(engine, api, perpetual=False)
        session.reconciled.set()
        try:
            return await session.submit(
                "SOL_USDC", Side.BID, OrderType.LIMIT_MAKER, quantity=Decimal("0.01"),
                price=Decimal("1"), client_id=42,
            )  # fmt: skip
        finally:
            session.reconciler.close()


async def submit_and_record(url: str, path: Path, **options: Any) -> tuple[Any, list[Any]]:
    """One `submit` through a session on `url`; the order and the events logged after the
    market, with receive times left out."""
    engine = spot_engine(path)
    try:
        placed = await submit_42(engine, url, **options)
    finally:
        engine.close()
    events = [msgspec.structs.replace(e, recv_time_us=0) for _, e in LogReader(path)][1:]
    return placed, events


async def test_a_submit_logs_its_order_before_the_bytes_leave_and_applies_it_right_after(
    venue: Venue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.jsonl"
    engine = spot_engine(path)
    timeline: list[tuple[str, int]] = []
    engine.subscribe(lambda event, state: timeline.append((type(event).__name__, state.last_seq)))
    write = rest._Lane._send_now

    def send_now(lane: rest._Lane, data: bytes) -> int:
        assert engine.log is not None
        timeline.append(("write", engine.log.last_seq))
        return write(lane, data)

    monkeypatch.setattr(rest._Lane, "_send_now", send_now)
    placed = await submit_42(engine, venue.url)
    engine.close()
    # In the log (seq 2) before the write; applied, and the listeners told, just after it,
    # before the venue's answer (seq 3).
    assert timeline == [("write", 2), ("OrderSubmitted", 2), ("OrderObserved", 3)]
    assert placed.status is OrderStatus.NEW
    assert state_hash(replay(e for _, e in LogReader(path))) == state_hash(engine.state)


async def test_a_submit_cancelled_before_its_bytes_leave_still_applies_what_it_logged(
    venue: Venue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def connect_forever(lane: rest._Lane) -> None:
        await trio.sleep_forever()

    monkeypatch.setattr(rest._Lane, "_connect", connect_forever)
    path = tmp_path / "log.jsonl"
    engine = spot_engine(path)
    seen: list[str] = []
    engine.subscribe(lambda event, state: seen.append(type(event).__name__))
    with trio.move_on_after(0.05) as scope:
        await submit_42(engine, venue.url)
    assert scope.cancelled_caught
    # Applied on the way out of the cancelled submit, not left for the next reader.
    assert seen == ["OrderSubmitted"]
    engine.close()
    order = engine.state.order(client_id=42)
    assert order is not None and order.status is OrderStatus.PENDING_NEW
    assert venue.requests == []
    assert state_hash(replay(e for _, e in LogReader(path))) == state_hash(engine.state)


async def test_a_submit_whose_order_cannot_be_applied_after_the_send_stops_the_engine(
    venue: Venue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oms import engine as engine_module

    real_apply = engine_module.apply

    def failing(state: Any, event: Any) -> Any:  # a stand-in for a reducer bug
        if isinstance(event, OrderSubmitted):
            raise ArithmeticError("injected")
        return real_apply(state, event)

    path = tmp_path / "log.jsonl"
    engine = spot_engine(path)
    monkeypatch.setattr(engine_module, "apply", failing)
    with pytest.raises(EngineFailed, match=r"seq 2 \(OrderSubmitted\)"):
        await submit_42(engine, venue.url)
    await trio.testing.wait_all_tasks_blocked()
    # The order was sent and logged (the write-ahead held); the engine says so and stops,
    # instead of recording what follows onto a state that lacks it.
    assert len(venue.requests) == 1
    assert [type(e).__name__ for _, e in LogReader(path)] == ["MarketInfo", "OrderSubmitted"]
    assert engine.failed is not None and engine.state.last_seq == 1
    with pytest.raises(EngineFailed):
        engine.record(order(43))
    engine.close()


# With an answer whose body does not decode (a bad Content-Encoding), httpx leaves its
# stream's async generators to the garbage collector, and trio warns when it collects them.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "answer",
    [
        CLOSE,
        response(503, {"code": "X", "message": "down"}),
        # The request reached the venue: in doubt, not an exception out of submit.
        response(raw_body=b"abcde", headers=[("Content-Encoding", "gzip")]),
    ],
)
async def test_a_lost_submit_records_what_the_httpx_path_recorded(
    venue: Venue, tmp_path: Path, answer: Answer
) -> None:
    venue.script[:] = [answer, answer]
    fast = await submit_and_record(venue.url, tmp_path / "lane.jsonl")
    old = await submit_and_record(
        venue.url, tmp_path / "httpx.jsonl", transport=httpx.AsyncHTTPTransport()
    )
    assert fast == old
    placed, events = fast
    assert placed.status is OrderStatus.IN_DOUBT
    assert [type(e) for e in events] == [OrderSubmitted, SubmitUnknown]
    assert venue.requests[0] == venue.requests[1]


async def test_a_refused_submit_records_the_refusal(venue: Venue, tmp_path: Path) -> None:
    venue.script[:] = [response(400, {"code": "INVALID_ORDER", "message": "Invalid price"})]
    placed, events = await submit_and_record(venue.url, tmp_path / "log.jsonl")
    assert placed.status is OrderStatus.REJECTED
    assert events[-1] == SubmitRejected(
        source=Source.REST, recv_time_us=0, symbol="SOL_USDC", client_id=42,
        code="INVALID_ORDER", message="Invalid price",
    )  # fmt: skip


async def test_a_submit_cancelled_before_it_starts_records_and_sends_nothing(
    venue: Venue, tmp_path: Path
) -> None:
    engine = spot_engine()
    async with client(venue.url) as api:
        session = BackpackSession(engine, api, perpetual=False)
        session.reconciled.set()
        with trio.CancelScope() as scope:
            scope.cancel()
            await session.submit(
                "SOL_USDC", Side.BID, OrderType.LIMIT, quantity=Decimal("1"), price=Decimal("1")
            )
        session.reconciler.close()
    assert scope.cancelled_caught
    assert engine.state.last_seq == 1  # the market only
    assert venue.requests == []


async def test_a_cancelled_caller_takes_no_room_in_the_rate_window(
    venue: Venue, autojump_clock: trio.abc.Clock
) -> None:
    async with client(venue.url, max_requests_per_minute=1) as api:
        with trio.CancelScope() as scope:
            scope.cancel()
            await api.call(execute(1))
        start = trio.current_time()
        await api.call(execute(2))
        assert trio.current_time() == start  # the one request of the minute was still free
    assert len(venue.requests) == 1


# --- secrets -----------------------------------------------------------------------------------


async def test_lane_failures_carry_no_secret_and_no_signature(
    venue: Venue, autojump_clock: trio.abc.Clock
) -> None:
    venue.script[:] = [CLOSE, HANG]
    failures: list[BaseException] = []
    async with client(venue.url) as api:
        for _ in range(2):
            try:
                await api.call(execute())
            except OutcomeUnknown as exc:
                failures.append(exc)
        shown = repr(api._lane) + repr(api._lane_heads) + repr(api)
    assert len(failures) == 2
    text = shown + "".join("".join(traceback.format_exception(exc)) for exc in failures)
    signatures = [
        line.split(b": ", 1)[1].decode()
        for request in venue.requests
        for line in request.split(b"\r\n")
        if line.startswith(b"X-Signature: ")
    ]
    assert len(signatures) == 2
    for hidden in (SECRET, *signatures):
        assert hidden not in text


# --- the pieces ----------------------------------------------------------------------------------

PARAM = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
)


@given(st.dictionaries(st.text(max_size=10), PARAM, max_size=8))
def test_the_json_body_is_what_json_dumps_wrote(body: dict[str, Any]) -> None:
    try:
        expected = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: neither can send it
        with pytest.raises(UnicodeEncodeError):
            rest._json_body(body)
        return
    assert rest._json_body(body) == expected
    assert rest._json_body([body, body]) == b"[%s,%s]" % (expected, expected)


FIXED = [(b"Host", b"api.backpack.exchange"), (b"Accept", b"*/*"), (b"User-Agent", b"x/1")]
NAME = st.from_regex(r"\AX-[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}\Z")
VALUE = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=6),  # printable
    st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=6),
)


def h11_bytes(headers: list[tuple[str, str]], body: bytes) -> bytes:
    conn = h11.Connection(h11.CLIENT)
    fields = [*FIXED, *[(n.encode(), v.encode()) for n, v in headers]]
    fields.append((b"Content-Length", b"%d" % len(body)))
    out = conn.send(h11.Request(method=b"POST", target=b"/api/v1/order", headers=fields))
    return (out or b"") + (conn.send(h11.Data(data=body)) or b"")


@given(st.lists(st.tuples(NAME, VALUE), max_size=5, unique_by=lambda h: h[0].lower()),
       st.binary(max_size=40))  # fmt: skip
def test_the_lane_writes_what_h11_writes_or_refuses_what_h11_refuses(
    headers: list[tuple[str, str]], body: bytes
) -> None:
    # Given Host second, as h11 does the lane writes it first.
    head = rest._Head(b"POST", b"/api/v1/order", [FIXED[1], FIXED[0], FIXED[2]])
    head.encode({name: "known" for name, _ in headers}, b"")  # names known: the quick check
    try:
        expected = h11_bytes(headers, body)
    except h11.LocalProtocolError:
        with pytest.raises(httpx.LocalProtocolError):
            head.encode(dict(headers), body)
        return
    assert head.encode(dict(headers), body) == expected


@pytest.mark.parametrize("name", ["Host", "content-length", "Transfer-Encoding", "Connection"])
def test_the_lane_takes_no_framing_header_from_its_caller(name: str) -> None:
    head = rest._Head(b"POST", b"/api/v1/order", FIXED)
    with pytest.raises(httpx.LocalProtocolError, match="sets"):
        head.encode({name: "1"}, b"{}")


# --- found in review ---------------------------------------------------------------------------


async def test_a_cookie_the_venue_sets_is_sent_by_neither_path(venue: Venue) -> None:
    # The client keeps no cookies: a CDN's would be frozen into the lane's headers and go
    # stale, while httpx would send the fresh one. Neither path sends one.
    venue.script[:] = [response(headers=[("Set-Cookie", "__cf_bm=v1; Path=/")])] * 4
    async with client(venue.url) as api:
        await api.call(execute(1))
        await api.call(execute(2))
    async with client(venue.url, transport=httpx.AsyncHTTPTransport()) as api:
        await api.call(execute(3))
        await api.call(execute(4))
    assert all(b"cookie:" not in request.lower() for request in venue.requests)


async def test_an_answer_with_a_large_head_is_read(venue: Venue) -> None:
    # httpx reads up to 100 KiB of response head; h11 alone would stop at 16 KiB, and a placed
    # order would be taken as in doubt.
    big = response(headers=[("Content-Type", "application/json"), ("X-Padding", "x" * 40_000)])
    venue.script[:] = [Pieces(big)]
    async with client(venue.url) as api:
        assert (await api.call(execute(1)))["id"] == "8284661092"


class _Gather(trio.abc.Stream):
    """A TCP stream that can hold what is sent and pass it on in one send: two TLS records
    then reach the client in one segment."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.holding = False
        self.held = b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.holding:
            self.held += bytes(data)
        else:
            await self.stream.send_all(data)

    async def release(self) -> None:
        data, self.held, self.holding = self.held, b"", False
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def test_over_tls_bytes_after_the_answer_mean_a_new_connection(ca: trustme.CA) -> None:
    # An answer nothing asked for, in its own TLS record right behind the real one, waits in
    # the TLS layer where neither the socket nor h11 sees it: the connection must not be
    # reused, or the next order would take that answer for its own.
    stray = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    context = server_context(ca)
    connections = 0

    async def serve(tcp: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        gather = _Gather(tcp)
        stream = trio.SSLStream(gather, context, server_side=True, https_compatible=True)
        conn = h11.Connection(h11.SERVER)
        first = connections == 1
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.EndOfMessage):
                    gather.holding = first
                    await stream.send_all(response())
                    if first:
                        await stream.send_all(stray)
                        await gather.release()
                    conn = h11.Connection(h11.SERVER)
                    first = False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        url = f"https://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        async with client(url, max_retries=0) as api:
            assert (await api.call(execute(1)))["id"] == "8284661092"
            await trio.sleep(0.05)  # the stray record has arrived
            assert (await api.call(execute(2)))["id"] == "8284661092"  # not the stray "{}"
        nursery.cancel_scope.cancel()
    assert connections == 2
