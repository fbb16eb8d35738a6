"""One exception root, split by whose fault it is (`oms.core.errors`).

A program catches `oms.OmsError` for anything this project raises, `ProgramError` for its own
mistakes (raised before anything is logged or sent) and `ExternalError` for the outside
world's. The classes that existed before the root keep their old built-in bases, so an
`except ValueError` written for them still works.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

import oms
import oms_backpack
from oms import (
    ConfigurationError,
    DuplicateClientId,
    Engine,
    ExternalError,
    InvalidOrder,
    MarketInfo,
    MarketType,
    OmsError,
    OrderStatus,
    OrderSubmitted,
    OrderType,
    ProgramError,
    Side,
    Source,
    UnknownMarket,
)
from oms_backpack import BackpackSession, Credentials, open_backpack_session
from oms_backpack.rest import BackpackRest

SECRET = "sKmC5939f6W9/viyhwyaNHa0f7j5wSMvZsysW5BB9L4="
T0_MS = 1_760_000_000_000
SOL_USDC = MarketInfo(
    source=Source.REST,
    recv_time_us=T0_MS * 1000,
    symbol="SOL_USDC",
    base_asset="SOL",
    quote_asset="USDC",
    market_type=MarketType.SPOT,
    tick_size=Decimal("0.01"),
    step_size=Decimal("0.01"),
    min_quantity=Decimal("0.01"),
)


# --- the hierarchy ------------------------------------------------------------------------------

PROGRAM_ERRORS = [
    (InvalidOrder, ValueError),
    (UnknownMarket, InvalidOrder),
    (DuplicateClientId, ValueError),
    (ConfigurationError, ValueError),
    (oms_backpack.CredentialsError, ConfigurationError),
    (oms_backpack.CredentialsError, ValueError),
    (oms_backpack.MissingCredentials, ConfigurationError),
    (oms_backpack.MissingCredentials, RuntimeError),
]
EXTERNAL_ERRORS = [
    oms.LogReadError,
    oms_backpack.RestError,
    oms_backpack.VenueError,
    oms_backpack.NotFound,
    oms_backpack.RateLimited,
    oms_backpack.ClockError,
    oms_backpack.BadResponse,
    oms_backpack.OutcomeUnknown,
    oms_backpack.VenueUnavailable,
]


def test_one_root_with_the_programs_mistakes_and_the_outside_worlds_below_it() -> None:
    assert issubclass(ProgramError, OmsError) and issubclass(ExternalError, OmsError)
    assert not issubclass(ProgramError, ExternalError)
    assert not issubclass(ExternalError, ProgramError)


@pytest.mark.parametrize(("cls", "also"), PROGRAM_ERRORS, ids=lambda c: c.__name__)
def test_the_programs_mistakes_are_program_errors_and_keep_their_old_bases(
    cls: type[Exception], also: type[Exception]
) -> None:
    assert issubclass(cls, ProgramError)
    assert not issubclass(cls, ExternalError)
    assert issubclass(cls, also)


@pytest.mark.parametrize("cls", EXTERNAL_ERRORS, ids=lambda c: c.__name__)
def test_the_venues_and_the_inputs_errors_are_external(cls: type[Exception]) -> None:
    assert issubclass(cls, ExternalError)
    assert not issubclass(cls, ProgramError)


def test_a_log_that_cannot_be_read_is_caught_as_an_external_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text("not a log\n", encoding="utf-8")
    with pytest.raises(ExternalError, match=r"broken\.jsonl:1:"):
        oms.replay_file(str(path))


def test_duplicate_client_id_names_the_id_and_survives_pickling() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(DuplicateClientId(42)))
    assert error.client_id == 42
    assert str(error) == "client id 42 is already used in this log"


# --- a reused client id: raised at once, nothing recorded ----------------------------------


class Venue:
    """The REST answers a session needs to place one order; counts order requests."""

    def __init__(self) -> None:
        self.executes = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/time":
            return httpx.Response(200, json=T0_MS)
        if path == "/api/v1/markets":
            return httpx.Response(
                200,
                json=[
                    {
                        "symbol": "SOL_USDC",
                        "baseSymbol": "SOL",
                        "quoteSymbol": "USDC",
                        "marketType": "SPOT",
                        "filters": {
                            "price": {"tickSize": "0.01", "minPrice": "0.01"},
                            "quantity": {"stepSize": "0.01", "minQuantity": "0.01"},
                        },
                    }
                ],
            )
        if path == "/api/v1/order" and request.method == "POST":
            self.executes += 1
            body = json.loads(request.content)
            return httpx.Response(
                200,
                json={
                    "id": str(self.executes),
                    "clientId": body["clientId"],
                    "createdAt": T0_MS,
                    "executedQuantity": "0",
                    "executedQuoteQuantity": "0",
                    "orderType": "Limit",
                    "postOnly": False,
                    "price": body["price"],
                    "quantity": body["quantity"],
                    "side": body["side"],
                    "status": "New",
                    "symbol": body["symbol"],
                    "timeInForce": "GTC",
                },
            )
        return httpx.Response(404, json={"code": "RESOURCE_NOT_FOUND", "message": "Not Found"})


def _rest(venue: Venue) -> BackpackRest:
    return BackpackRest(
        "http://venue.test", Credentials(SECRET), transport=httpx.MockTransport(venue.handle)
    )


async def test_a_client_id_already_in_the_log_is_refused_before_anything_is_recorded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "session.jsonl"
    engine = Engine.open(path)
    venue = Venue()
    try:
        engine.record(SOL_USDC)
        async with _rest(venue) as rest:
            session = BackpackSession(engine, rest, perpetual=False)
            session.reconciled.set()  # as after the connect's reconciliation
            first = await session.submit(
                "SOL_USDC",
                Side.BID,
                OrderType.LIMIT,
                quantity=Decimal("1"),
                price=Decimal("100"),
                client_id=7,
            )
            assert (first.client_id, first.status) == (7, OrderStatus.NEW)
            seq, size, executes = engine.state.last_seq, path.stat().st_size, venue.executes

            with pytest.raises(DuplicateClientId) as info:
                await session.submit(
                    "SOL_USDC",
                    Side.ASK,
                    OrderType.LIMIT,
                    quantity=Decimal("1"),
                    price=Decimal("120"),
                    client_id=7,
                )
            assert info.value.client_id == 7
            assert isinstance(info.value, ProgramError)
            # Nothing logged, nothing applied, nothing sent; the first order is untouched.
            assert engine.state.last_seq == seq
            assert path.stat().st_size == size
            assert venue.executes == executes
            order = engine.state.order(client_id=7)
            assert order is not None and order.side is Side.BID
            assert engine.state.anomaly_total == 0

            # Without a client id the session picks one above every id used.
            second = await session.submit(
                "SOL_USDC", Side.ASK, OrderType.LIMIT, quantity=Decimal("1"), price=Decimal("120")
            )
            assert second.client_id is not None and second.client_id > 7
    finally:
        engine.close()


async def test_a_client_id_of_an_order_the_venue_reported_is_refused_too() -> None:
    # Used "in the log" means any order the state knows by that id, however it got there.
    engine = Engine()
    engine.record(SOL_USDC)
    engine.record(
        OrderSubmitted(
            source=Source.LOCAL,
            recv_time_us=T0_MS * 1000,
            client_id=99,
            symbol="SOL_USDC",
            side=Side.BID,
            order_type=OrderType.LIMIT,
            quantity=Decimal("1"),
            price=Decimal("100"),
        )
    )
    venue = Venue()
    async with _rest(venue) as rest:
        session = BackpackSession(engine, rest, perpetual=False)
        session.reconciled.set()
        seq = engine.state.last_seq
        with pytest.raises(DuplicateClientId):
            await session.submit(
                "SOL_USDC",
                Side.BID,
                OrderType.LIMIT,
                quantity=Decimal("1"),
                price=Decimal("100"),
                client_id=99,
            )
        assert engine.state.last_seq == seq and venue.executes == 0


async def test_an_unknown_market_is_a_program_error_raised_before_recording() -> None:
    engine = Engine()
    venue = Venue()
    async with _rest(venue) as rest:
        session = BackpackSession(engine, rest, perpetual=False)
        session.reconciled.set()
        with pytest.raises(UnknownMarket, match="unknown market BTC_USDC"):
            await session.submit(
                "BTC_USDC", Side.BID, OrderType.LIMIT, quantity=Decimal("1"), price=Decimal("1")
            )
    assert engine.state.last_seq == 0 and venue.executes == 0


# --- configuration errors -------------------------------------------------------------------


async def test_a_symbol_the_venue_does_not_list_is_a_configuration_error() -> None:
    engine = Engine()
    with pytest.raises(ConfigurationError, match="the venue has no market BTC_USDC"):
        async with open_backpack_session(
            engine,
            Credentials(SECRET),
            symbols=["SOL_USDC", "BTC_USDC"],
            rest_url="http://venue.test",
            ws_url="ws://127.0.0.1:9",  # never reached: the check comes first
            transport=httpx.MockTransport(Venue().handle),
        ):
            pytest.fail("the session must not open")
    assert engine.state.last_seq == 0  # not even the markets were recorded


def test_missing_keys_and_bad_settings_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="BACKPACK_API_SECRET is not set"):
        oms_backpack.load_credentials(environ={})
    with pytest.raises(ConfigurationError, match="window_ms"):
        BackpackRest("http://venue.test", window_ms=0)
    # Still the ValueError it was before the root existed.
    with pytest.raises(ValueError, match="max_retries"):
        BackpackRest("http://venue.test", max_retries=-1)


async def test_a_signed_call_without_keys_is_a_configuration_error() -> None:
    async with BackpackRest(
        "http://venue.test", transport=httpx.MockTransport(Venue().handle)
    ) as rest:
        with pytest.raises(ConfigurationError, match="balanceQuery"):
            await rest.capital()
