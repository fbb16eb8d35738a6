"""Backpack codec: golden tables from the samples and the fact sheet, and tolerance."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from oms.core.events import (
    BalanceObserved,
    FundingPaid,
    MarketInfo,
    MarkObserved,
    MessageNotUnderstood,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderModified,
    OrderObserved,
    PositionObserved,
    SubmitRejected,
    TriggerFailed,
    TriggerPlaced,
)
from oms.core.reducer import replay
from oms.core.serialization import decode_line, encode_line
from oms.core.state import AnomalyKind
from oms.core.values import (
    ID_LIMIT,
    SYNTHETIC_TRADE_ID_BASE,
    MarketType,
    OrderOrigin,
    OrderType,
    Side,
    Source,
    TimeInForce,
    VenueStatus,
)
from oms.log import EventLog, Fsync, LogReader
from oms_backpack import codec
from tests.helpers import DATA

SAMPLES = DATA / "backpack"  # see tests/data/README.md
RUST: list[dict[str, Any]] = json.loads(
    (SAMPLES / "bpx_api_client_rust_tests.json").read_text(encoding="utf-8")
)["samples"]
CCXT: dict[str, Any] = json.loads(
    (SAMPLES / "ccxt_source_comment_samples.json").read_text(encoding="utf-8")
)
RECV = 1_800_000_000_000_000


def frame(stream: str, data: dict[str, Any]) -> str:
    return json.dumps({"stream": stream, "data": data}, separators=(",", ":"))


def only(events: list[Any]) -> Any:
    assert len(events) == 1, events
    return events[0]


def rust(kind: str) -> dict[str, Any]:
    return next(s["json"] for s in RUST if s["json"].get("e") == kind)


def ccxt_ws(handler_prefix: str) -> dict[str, Any]:
    return next(s["msg"] for s in CCXT["ws"] if s["handler"].startswith(handler_prefix))


def test_real_order_accepted_limit() -> None:
    text = frame("account.orderUpdate", rust("orderAccepted"))
    event = only(codec.ws_frame(text, RECV))
    assert event == OrderAccepted(
        source=Source.WS,
        recv_time_us=RECV,
        venue_time_us=1748288615133255,  # T, the engine time, in microseconds
        raw=text,
        symbol="SOL_USDC",
        venue_id="114575842681290753",
        client_id=None,
        side=Side.ASK,
        order_type=OrderType.LIMIT,
        quantity=Decimal("20.03"),
        quote_quantity=None,  # Q on a limit order is not a quote-quantity order
        price=Decimal("178.15"),
        time_in_force=TimeInForce.GTC,
        post_only=False,
        reduce_only=False,
        origin=OrderOrigin.USER,
    )


def test_real_trigger_placed_keeps_trigger_fields() -> None:
    event = only(codec.ws_frame(frame("account.orderUpdate", rust("triggerPlaced")), RECV))
    assert isinstance(event, TriggerPlaced)
    assert event.trigger_price == Decimal("178.05")
    assert event.trigger_quantity == "20.03"
    assert event.price == Decimal("178.15")
    assert event.venue_id == "114575813313101824"


def test_real_cancel_of_a_percentage_trigger_order() -> None:
    event = only(codec.ws_frame(frame("account.orderUpdate", rust("orderCancelled")), RECV))
    assert isinstance(event, OrderCancelled)
    assert event.order_type is OrderType.MARKET
    assert event.cum_quantity == Decimal(0)
    assert event.venue_id == "114575904705282048"


def test_ccxt_order_fill_with_quoted_times() -> None:
    data = ccxt_ws("parseWsOrder")
    event = only(codec.ws_frame(frame("account.orderUpdate.ETH_USDC", data), RECV))
    assert isinstance(event, OrderFilled)
    assert (event.trade_id, event.quantity, event.price) == (
        2888471,
        Decimal("0.0010"),
        Decimal("4299.16"),
    )
    assert (event.fee, event.fee_asset, event.maker) == (Decimal("0.000001"), "ETH", False)
    assert (event.cum_quantity, event.cum_quote) == (Decimal("0.0010"), Decimal("4.299160"))
    assert event.status is VenueStatus.FILLED
    assert event.venue_time_us == 1754939110174705
    assert event.side is Side.BID
    assert event.order_type is OrderType.MARKET


def test_ccxt_market_order_accepted_keeps_quote_quantity() -> None:
    msg = ccxt_ws("handleOrder (")
    event = only(codec.ws_frame(json.dumps(msg), RECV))
    assert isinstance(event, OrderAccepted)
    assert event.quote_quantity == Decimal("4.30")
    assert event.quantity == Decimal("0.0010")


def test_docs_all_fields_example_maps_client_id_and_post_only() -> None:
    data = {
        "e": "orderAccepted", "E": 1694687692980000, "s": "SOL_USD", "c": 123, "S": "Bid",
        "o": "LIMIT", "f": "GTC", "q": "32123", "Q": "32123", "p": "20", "P": "21",
        "B": "LastPrice", "a": "30", "b": "10", "j": "30", "k": "10", "d": "MarkPrice",
        "g": "IndexPrice", "Y": "10", "X": "New", "R": "PRICE_BAND", "i": "1111343026172067",
        "t": 567, "l": "1.23", "z": "321", "Z": "123", "L": "20", "m": True, "n": "23",
        "N": "USD", "V": "RejectTaker", "T": 1694687692989999, "O": "USER",
        "I": "1111343026156135", "H": 6023471188, "y": True,
    }  # fmt: skip
    event = only(codec.ws_frame(frame("account.orderUpdate", data), RECV))
    assert isinstance(event, OrderAccepted)
    assert event.client_id == 123
    assert event.order_type is OrderType.LIMIT_MAKER
    assert event.post_only is True


@pytest.mark.parametrize(
    ("kind", "extra", "cls"),
    [
        ("orderExpired", {"R": "PostOnlyTaker"}, OrderExpired),
        ("orderModified", {"q": "3.5"}, OrderModified),
        ("triggerFailed", {}, TriggerFailed),
    ],
)
def test_other_order_events(kind: str, extra: dict[str, Any], cls: type[Any]) -> None:
    data = {"e": kind, "E": 1694687692980000, "s": "SOL_USDC_PERP", "c": "2200123", "i": "8886774",
            "S": "Bid", "X": "Expired", "z": "0", "T": 1694687692980001, **extra}  # fmt: skip
    event: Any = only(codec.ws_frame(frame("account.orderUpdate", data), RECV))
    assert isinstance(event, cls)
    assert event.client_id == 2200123  # quoted integer accepted
    if kind == "orderExpired":
        assert event.reason == "PostOnlyTaker"
    if kind == "orderModified":
        assert event.quantity == Decimal("3.5")


def test_position_opened_entry_is_B_and_break_even_is_b() -> None:
    msg = ccxt_ws("handlePositions")
    event = only(codec.ws_frame(json.dumps(msg), RECV))
    assert isinstance(event, PositionObserved)
    assert event.entry_price == Decimal("4236.36")
    assert event.break_even_price == Decimal("4238.479")
    assert event.net_quantity == Decimal("0.0010")
    assert event.unrealized_pnl == Decimal("-0.000473")


def test_position_snapshot_without_event_type_and_short_quantity() -> None:
    data = {"B": "126.97", "E": 1769366599828079, "M": "120.96", "P": "0.0009", "Q": "0.01",
            "T": 1769366599828078, "b": "126.9307", "f": "0.02", "i": 28563667732, "l": "0",
            "m": "0.0135", "n": "1.2096", "p": "0.0592", "q": "-0.01",
            "s": "SOL_USDC_PERP"}  # fmt: skip
    event = only(codec.ws_frame(frame("account.positionUpdate", data), RECV))
    assert isinstance(event, PositionObserved)
    assert event.net_quantity == Decimal("-0.01")
    assert event.realized_pnl == Decimal("0.0592")


def test_docs_position_with_bare_numbers_stays_exact() -> None:
    text = ('{"stream":"account.positionUpdate","data":{"e":"positionOpened","E":1694687692980000,'
            '"s":"SOL_USDC_PERP","b":123,"B":122,"f":0.5,"M":122,"m":0.01,"q":5,"Q":6,"n":732,'
            '"i":"1111343026172067","p":"-1","P":"0","T":1694687692989999}}')  # fmt: skip
    event = only(codec.ws_frame(text, RECV))
    assert isinstance(event, PositionObserved)
    assert (event.net_quantity, event.entry_price, event.break_even_price) == (
        Decimal(5),
        Decimal(122),
        Decimal(123),
    )
    assert isinstance(event.net_quantity, Decimal)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"id":null,"error":{"code":4006,"message":"Invalid stream"}}', "4006"),
        (
            frame("account.orderUpdate", {"e": "orderTeleported", "s": "SOL_USDC"}),
            "orderTeleported",
        ),
        (
            frame("account.orderUpdate", {"e": "orderFill", "s": "SOL_USDC", "i": "1", "t": 5}),
            "'S'",
        ),
        (
            frame(
                "account.orderUpdate",
                {
                    "e": "orderFill",
                    "s": "SOL_USDC",
                    "i": "1",
                    "t": 5,
                    "S": "Bid",
                    "l": "NaN",
                    "L": "1",
                },
            ),
            "in range",
        ),
        (
            # Far beyond any venue figure: refused so the reducer can never overflow.
            frame(
                "account.orderUpdate",
                {
                    "e": "orderFill",
                    "s": "SOL_USDC",
                    "i": "1",
                    "t": 5,
                    "S": "Bid",
                    "l": "1E+999999",
                    "L": "1",
                },
            ),
            "in range",
        ),
        ("{not json", "JSONDecodeError"),
        ("[1, 2]", "not a JSON object"),
        (frame("account.balanceUpdate", {"x": 1}), "not consumed"),
    ],
)
def test_messages_it_cannot_understand_are_kept_not_raised(text: str, reason: str) -> None:
    event = only(codec.ws_frame(text, RECV))
    assert isinstance(event, MessageNotUnderstood)
    assert event.raw == text
    assert reason in event.reason


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ('{"id":null,"error":{"code":4006,"message":"Invalid stream"}}', 4006, "Invalid stream"),
        ('{"id":1,"error":{"code":"4003","message":"Expired"}}', 4003, "Expired"),
        ('{"id":1,"error":{"message":"no code"}}', None, "no code"),
        ('{"id":1,"error":{"code":4003}}', 4003, ""),
        ('{"id":1,"error":"Invalid stream"}', None, "Invalid stream"),
        ('{"id":1,"error":["odd"]}', None, '["odd"]'),
    ],
)
def test_an_error_frame_is_recorded_and_its_venue_error_is_typed(
    text: str, code: int | None, message: str
) -> None:
    decoded = codec.decode_ws_frame(text, RECV)
    assert decoded.venue_error == codec.VenueErrorFrame(code=code, message=message)
    recorded = only(list(decoded.events))
    assert isinstance(recorded, MessageNotUnderstood) and recorded.raw == text
    assert codec.ws_frame(text, RECV) == [recorded]
    # Read back from the event alone (as a test or a tool reads a log): the same error.
    assert codec.venue_error_of(recorded) == decoded.venue_error


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"id":1,"error":null,"result":null}',
        frame("account.balanceUpdate", {"x": 1}),
        # A data frame whose text merely mentions an error is not an error frame.
        frame("account.orderUpdate", {"e": "orderTeleported", "error": {"code": 1}}),
    ],
)
def test_other_frames_carry_no_venue_error(text: str) -> None:
    decoded = codec.decode_ws_frame(text, RECV)
    assert decoded.venue_error is None
    assert all(codec.venue_error_of(e) is None for e in decoded.events)


def test_only_a_stream_frame_not_understood_names_a_venue_error() -> None:
    text = '{"id":null,"error":{"code":4006,"message":"Invalid stream"}}'
    recorded = only(codec.ws_frame(text, RECV))
    assert codec.venue_error_of(msgspec.structs.replace(recorded, source=Source.REST)) is None
    accepted = only(codec.ws_frame(frame("account.orderUpdate", rust("orderAccepted")), RECV))
    assert codec.venue_error_of(accepted) is None


def test_acks_and_other_public_streams_give_no_events() -> None:
    assert codec.ws_frame('{"result":null,"id":1}', RECV) == []
    ticker = {"e": "bookTicker", "s": "SOL_USDC", "a": "150.1", "b": "150.0"}
    assert codec.ws_frame(frame("bookTicker.SOL_USDC", ticker), RECV) == []


def test_a_mark_price_update_is_a_mark_observed() -> None:
    mark = next(s["json"] for s in RUST if s["json"].get("e") == "markPrice")
    text = frame("markPrice.SOL_USDC_PERP", mark)
    event = only(codec.ws_frame(text, RECV))
    assert isinstance(event, MarkObserved)
    assert (event.symbol, event.mark_price, event.index_price, event.funding_rate) == (
        mark["s"],
        Decimal(mark["p"]),
        Decimal(mark["i"]),
        Decimal(mark["f"]),
    )
    assert event.source is Source.WS and event.raw == text and event.recv_time_us == RECV


@pytest.mark.parametrize("price", ["0", "-1", "x", None])
def test_a_mark_price_that_is_not_a_positive_number_is_not_understood(price: object) -> None:
    data = {"e": "markPrice", "s": "SOL_USDC_PERP", "p": price, "E": 1}
    assert isinstance(
        only(codec.ws_frame(frame("markPrice.SOL_USDC_PERP", data), RECV)), MessageNotUnderstood
    )


def test_a_fill_with_an_unknown_status_still_counts() -> None:
    data = dict(ccxt_ws("parseWsOrder"), X="Triggered")
    event, unknown = codec.ws_frame(frame("account.orderUpdate", data), RECV)
    assert isinstance(event, OrderFilled)
    assert event.status is None
    # The status itself is recorded as not understood, with the frame.
    assert isinstance(unknown, MessageNotUnderstood) and unknown.raw == event.raw


# --- REST --------------------------------------------------------------------------------


def test_rest_order_objects_become_observations() -> None:
    filled = CCXT["rest"]["order response: market order Filled (parseOrder comment)"]
    event = codec.order_object(filled, Source.REST, RECV)
    assert isinstance(event, OrderObserved)
    assert event.status is VenueStatus.FILLED
    assert event.executed_quantity == Decimal("0.001")
    assert event.executed_quote_quantity == Decimal("3.81428")
    assert event.venue_time_us == 1753624283415 * 1000  # createdAt is milliseconds
    open_post_only = CCXT["rest"][
        "GET /api/v1/orders item: open post-only limit with clientId (parseOrder comment)"
    ]
    event = codec.order_object(open_post_only, Source.RECONCILE, RECV)
    assert isinstance(event, OrderObserved)
    assert (event.client_id, event.order_type, event.status) == (
        123456789, OrderType.LIMIT_MAKER, VenueStatus.NEW,
    )  # fmt: skip


def test_order_history_item_with_naive_iso_time_and_quoted_client_id() -> None:
    item = {"clientId": "55555", "createdAt": "2025-09-11T20:10:40.699", "executedQuantity": "0",
            "executedQuoteQuantity": "0", "expiryReason": "PostOnlyTaker", "id": "8284661092",
            "orderType": "Limit", "postOnly": True, "price": "4000", "quantity": "0.001",
            "side": "Bid", "status": "Expired", "symbol": "ETH_USDC",
            "systemOrderType": None}  # fmt: skip
    event = codec.order_object(item, Source.RECONCILE, RECV)
    assert isinstance(event, OrderObserved)
    assert event.venue_time_us == 1757621440699000
    assert event.client_id == 55555
    assert event.expiry_reason == "PostOnlyTaker"


def test_fill_history_item() -> None:
    item = {"clientId": None, "fee": "0.0047325", "feeSymbol": "USDC", "isMaker": False,
            "orderId": "5578417290", "price": "4732.5", "quantity": "0.001", "side": "Ask",
            "symbol": "ETH_USDC", "systemOrderType": None, "timestamp": "2025-08-13T17:26:01.197",
            "tradeId": "2959285"}  # fmt: skip
    event = codec.fill_history_item(item, Source.RECONCILE, RECV)
    assert isinstance(event, OrderFilled)
    assert (event.trade_id, event.venue_id, event.side) == (2959285, "5578417290", Side.ASK)
    assert event.venue_time_us == 1755105961197000
    assert event.cum_quantity is None


def test_capital_position_funding_and_market() -> None:
    body = {"ETH": {"available": "0.0019918", "locked": "0", "staked": "0"},
            "USDC": {"available": "112.847976936", "locked": "0", "staked": "0"}}  # fmt: skip
    snapshot = codec.balances(body, Source.REST, RECV)
    assert isinstance(snapshot, BalanceObserved)
    assert [(b.asset, b.available) for b in snapshot.balances] == [
        ("ETH", Decimal("0.0019918")),
        ("USDC", Decimal("112.847976936")),
    ]
    pos = codec.position(
        CCXT["rest"]["GET /api/v1/position (parsePosition comment)"], Source.REST, RECV
    )
    assert isinstance(pos, PositionObserved)
    assert pos.entry_price == Decimal("3826.8888888888888888888888889")
    funding = codec.funding_item(
        {"fundingRate": "-0.0000048", "intervalEndTimestamp": "2025-09-11T20:00:00",
         "quantity": "0.000022", "subaccountId": "0", "symbol": "ETH_USDC_PERP",
         "userId": "1813870"},
        Source.RECONCILE, RECV,
    )  # fmt: skip
    assert isinstance(funding, FundingPaid)
    assert (funding.interval_end_us, funding.amount) == (1757620800000000, Decimal("0.000022"))
    markets = next(v for k, v in CCXT["rest"].items() if k.startswith("GET /api/v1/markets"))
    perp = codec.market(markets[1], Source.REST, RECV)
    assert isinstance(perp, MarketInfo)
    assert (perp.symbol, perp.market_type, perp.tick_size) == (
        "SOL_USDC_PERP",
        MarketType.PERP,
        Decimal("0.01"),
    )


def test_rest_garbage_becomes_not_understood() -> None:
    assert isinstance(codec.order_object([1], Source.REST, RECV), MessageNotUnderstood)
    bad = codec.order_object({"symbol": "X", "status": "Teleported"}, Source.REST, RECV)
    assert isinstance(bad, MessageNotUnderstood)
    assert "Teleported" in bad.reason
    assert isinstance(
        codec.balances({"USDC": {"available": "x"}}, Source.REST, RECV), MessageNotUnderstood
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1748288615134547, 1748288615134547),
        ("1748288615134547", 1748288615134547),
        (1753624283415, 1753624283415000),
        (1753624283, 1753624283000000),
        ("2025-09-11T20:00:00", 1757620800000000),
        ("2025-07-19 13:09:00", 1752930540000000),
    ],
)
def test_timestamps_in_every_unit(value: object, expected: int) -> None:
    assert codec.timestamp_us(value) == expected


def test_batch_results_pair_items_with_the_orders_sent() -> None:
    ok = dict(CCXT["rest"]["order response: market order Filled (parseOrder comment)"])
    ok["operation"] = "Ok"
    err = {"operation": "Err", "code": "INVALID_ORDER", "message": "Invalid order"}
    events = codec.batch_results([ok, err], [11, 12], ["ETH_USDC", "SOL_USDC"], Source.REST, RECV)
    assert isinstance(events[0], OrderObserved) and events[0].status is VenueStatus.FILLED
    rejected = events[1]
    assert isinstance(rejected, SubmitRejected)
    assert (rejected.client_id, rejected.symbol, rejected.code) == (12, "SOL_USDC", "INVALID_ORDER")
    short = codec.batch_results([ok], [11, 12], ["ETH_USDC", "SOL_USDC"], Source.REST, RECV)
    assert len(short) == 1 and isinstance(short[0], MessageNotUnderstood)


# --- hostile input: bounded integers, deep nesting (issue 7) -----------------------------------


def fill_frame(t: str) -> str:
    """A real orderFill frame with the trade id `t` spliced in as JSON text."""
    data = dict(ccxt_ws("parseWsOrder"))
    text = frame("account.orderUpdate", {**data, "t": "T_HERE"})
    return text.replace('"t":"T_HERE"', f'"t":{t}')


@pytest.mark.parametrize(
    "t", ["1E+5000", "1E+1000000", "9223372036854775808", "-1", '"99999999999999999999"', "1.5"]
)
def test_a_trade_id_out_of_range_is_not_understood_and_can_be_logged(t: str) -> None:
    text = fill_frame(t)
    event = only(codec.ws_frame(text, RECV))
    assert isinstance(event, MessageNotUnderstood)
    assert "'t' is not an integer" in event.reason
    assert event.raw == text
    # The session goes on: the event is written and read back like any other.
    assert decode_line(encode_line(1, event)) == (1, event)


def test_the_largest_trade_id_is_accepted() -> None:
    event = only(codec.ws_frame(fill_frame(str(ID_LIMIT - 1)), RECV))
    assert isinstance(event, OrderFilled)
    assert event.trade_id == ID_LIMIT - 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("c", "4294967296"),  # one past uint32
        ("T", "1E+1000000"),
        ("E", '"9999999999999999999999"'),
        ("i", "1" + "0" * 4000),  # an order id sent as a number
    ],
)
def test_other_integers_out_of_range_are_not_understood(field: str, value: str) -> None:
    data = {**ccxt_ws("parseWsOrder"), field: 0}
    if field == "E":
        data.pop("T")
    text = frame("account.orderUpdate", data).replace(f'"{field}":0', f'"{field}":{value}')
    event = only(codec.ws_frame(text, RECV))
    assert isinstance(event, MessageNotUnderstood)
    assert f"'{field}' is not" in event.reason
    assert len(event.reason) < 200


def test_funding_interval_and_rest_times_are_bounded() -> None:
    item = {"intervalEndTimestamp": "1E+1000000", "quantity": "1", "symbol": "SOL_USDC_PERP"}
    bad = codec.funding_item(item, Source.RECONCILE, RECV)
    assert isinstance(bad, MessageNotUnderstood)
    assert "intervalEndTimestamp" in bad.reason
    before_epoch = dict(item, intervalEndTimestamp="1969-12-31T23:00:00")
    assert isinstance(
        codec.funding_item(before_epoch, Source.RECONCILE, RECV), MessageNotUnderstood
    )
    parsed = codec.parse_json('{"createdAt": 1E+1000000, "symbol": "X", "status": "New"}')
    assert isinstance(codec.order_object(parsed, Source.REST, RECV), MessageNotUnderstood)


@pytest.mark.parametrize("depth", [990, 1000, 100_000])
def test_a_deeply_nested_frame_is_not_understood(depth: int) -> None:
    for text in (
        "[" * depth + "]" * depth,
        '{"stream":"account.orderUpdate","data":' + '{"a":' * depth + "0" + "}" * depth + "}",
    ):
        event = only(codec.ws_frame(text, RECV))
        assert isinstance(event, MessageNotUnderstood)
        assert "JSON nested deeper than 64 levels" in event.reason


def test_nesting_is_counted_outside_strings_only() -> None:
    brackets = "[" * 200
    value = codec.parse_json('{"a": "' + brackets + '", "b": [[["\\"["]]]}')
    assert value == {"a": brackets, "b": [[['"[']]]}
    assert codec.parse_json("[" * 64 + "]" * 64) is not None
    with pytest.raises(ValueError, match="deeper than 64"):
        codec.parse_json("[" * 65 + "]" * 65)


@pytest.mark.parametrize(
    "text", ['{"a":1E+99999999999999999999}', '{"a":' + "9" * 5000 + "}", "]" * 70 + "[" * 70]
)
def test_parse_json_refuses_with_value_error_only(text: str) -> None:
    with pytest.raises(ValueError):  # the one type the REST client catches
        codec.parse_json(text)
    with pytest.raises(ValueError):
        codec.parse_json(text.encode())


# --- fills without a trade id (system fills) ----------------------------------------------------


ADL_STREAM = {
    "e": "orderFill", "E": 1757621440700001, "s": "SOL_USDC_PERP", "S": "Ask", "o": "MARKET",
    "X": "Filled", "i": "8284661999", "t": None, "l": "1.50", "L": "150.10", "m": False,
    "n": "0", "N": "USDC", "z": "1.5", "Z": "225.15", "T": 1757621440699123,
    "O": "ADL_AUTOCLOSE",
}  # fmt: skip
ADL_HISTORY = {
    "clientId": None, "fee": "0", "feeSymbol": "USDC", "isMaker": False,
    "orderId": "8284661999", "price": "150.1", "quantity": "1.5", "side": "Ask",
    "symbol": "SOL_USDC_PERP", "systemOrderType": "LiquidatePositionOnAdl",
    "timestamp": "2025-09-11T20:10:40.699", "tradeId": None,
}  # fmt: skip


def test_a_fill_without_trade_id_gets_the_documented_synthetic_key() -> None:
    event = only(codec.ws_frame(frame("account.orderUpdate", ADL_STREAM), RECV))
    assert isinstance(event, OrderFilled)
    # The key as docs/events.md states it, computed here independently of the codec.
    key = b'["SOL_USDC_PERP","8284661999","Ask","1.5","150.1",1757621440699]'
    digest = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    assert event.trade_id == SYNTHETIC_TRADE_ID_BASE + (digest & (2**63 - 1))
    assert SYNTHETIC_TRADE_ID_BASE <= event.trade_id < 2**64
    assert event.origin == "ADL_AUTOCLOSE"


def test_stream_and_history_copies_of_a_system_fill_share_one_key() -> None:
    streamed = only(codec.ws_frame(frame("account.orderUpdate", ADL_STREAM), RECV))
    absent = {k: v for k, v in ADL_HISTORY.items() if k != "tradeId"}
    from_history = codec.fill_history_item(ADL_HISTORY, Source.RECONCILE, RECV)
    from_history_absent = codec.fill_history_item(absent, Source.RECONCILE, RECV)
    assert isinstance(streamed, OrderFilled) and isinstance(from_history, OrderFilled)
    assert isinstance(from_history_absent, OrderFilled)
    assert streamed.trade_id == from_history.trade_id == from_history_absent.trade_id
    # A different fill of the same order (another millisecond) is another key.
    later = codec.fill_history_item(
        dict(ADL_HISTORY, timestamp="2025-09-11T20:10:40.700"), Source.RECONCILE, RECV
    )
    assert isinstance(later, OrderFilled) and later.trade_id != streamed.trade_id


def test_a_system_fill_reported_twice_moves_the_position_once() -> None:
    streamed = only(codec.ws_frame(frame("account.orderUpdate", ADL_STREAM), RECV))
    from_history = codec.fill_history_item(ADL_HISTORY, Source.RECONCILE, RECV)
    perp = codec.market(
        {"symbol": "SOL_USDC_PERP", "baseSymbol": "SOL", "quoteSymbol": "USDC",
         "marketType": "PERP", "filters": {"price": {"tickSize": "0.01"},
                                           "quantity": {"stepSize": "0.01"}}},
        Source.REST, RECV,
    )  # fmt: skip
    state = replay([perp, streamed, from_history])
    assert state.positions["SOL_USDC_PERP"].net_quantity == Decimal("-1.5")
    assert state.anomaly_counts.get(AnomalyKind.DUPLICATE_FILL) == 1


def test_a_zero_trade_id_is_a_placeholder_keyed_like_none() -> None:
    # Backstop liquidations carried tradeId 0 until 2025-11-12: many fills, one "id".
    streamed = only(codec.ws_frame(frame("account.orderUpdate", ADL_STREAM), RECV))
    zero = codec.fill_history_item(dict(ADL_HISTORY, tradeId="0"), Source.RECONCILE, RECV)
    assert isinstance(streamed, OrderFilled) and isinstance(zero, OrderFilled)
    assert zero.trade_id == streamed.trade_id >= SYNTHETIC_TRADE_ID_BASE


def test_a_fill_without_trade_id_or_time_is_not_understood() -> None:
    no_time = {k: v for k, v in ADL_HISTORY.items() if k != "timestamp"}
    event = codec.fill_history_item(no_time, Source.RECONCILE, RECV)
    assert isinstance(event, MessageNotUnderstood)
    assert "cannot be keyed" in event.reason


# --- origins ----------------------------------------------------------------------------------


def test_history_names_a_system_order_by_the_streams_origin() -> None:
    streamed = only(codec.ws_frame(frame("account.orderUpdate", ADL_STREAM), RECV))
    from_history = codec.fill_history_item(ADL_HISTORY, Source.RECONCILE, RECV)
    assert streamed.origin is from_history.origin is OrderOrigin.ADL_AUTOCLOSE
    for venue, origin in [
        ("LiquidatePositionOnBook", OrderOrigin.LIQUIDATION_AUTOCLOSE),
        ("CollateralConversion", OrderOrigin.COLLATERAL_CONVERSION),
        (None, OrderOrigin.USER),
    ]:
        event = codec.fill_history_item(
            dict(ADL_HISTORY, systemOrderType=venue), Source.RECONCILE, RECV
        )
        assert isinstance(event, OrderFilled) and event.origin is origin


def test_an_origin_the_venue_adds_later_is_kept_and_logged_as_sent() -> None:
    streamed = only(
        codec.ws_frame(frame("account.orderUpdate", dict(ADL_STREAM, O="FUTURE_ORIGIN")), RECV)
    )
    history = codec.order_object(
        {"id": "8284661999", "symbol": "SOL_USDC_PERP", "status": "Filled",
         "systemOrderType": "OrderBookClosed"},
        Source.RECONCILE, RECV,
    )  # fmt: skip
    assert isinstance(streamed, OrderFilled) and isinstance(history, OrderObserved)
    assert (streamed.origin, history.origin) == ("FUTURE_ORIGIN", "OrderBookClosed")
    assert isinstance(streamed.origin, OrderOrigin) and not streamed.origin.is_known
    assert OrderOrigin.USER.is_known and streamed.origin not in list(OrderOrigin)
    line = encode_line(1, streamed)
    assert b'"origin":"FUTURE_ORIGIN"' in line
    assert decode_line(line) == (1, streamed)
    # Not the user's: the venue's order is created without an unknown-order anomaly.
    state = replay([streamed])
    assert state.orders["v8284661999"].origin == "FUTURE_ORIGIN"
    assert AnomalyKind.UNKNOWN_ORDER not in state.anomaly_counts


def test_a_synthetic_trade_id_survives_the_log(tmp_path: Path) -> None:
    event = codec.fill_history_item(ADL_HISTORY, Source.RECONCILE, RECV)
    assert isinstance(event, OrderFilled) and event.trade_id >= 2**63
    top = msgspec.structs.replace(event, trade_id=2**64 - 1)
    with EventLog.open(tmp_path / "s.jsonl", fsync=Fsync.never()) as log:
        log.append(event)
        log.append(top)
    assert list(LogReader(tmp_path / "s.jsonl")) == [(1, event), (2, top)]
