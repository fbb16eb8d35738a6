"""The log line format (oms.core.serialization): round trips, strictness, canonical state."""

from __future__ import annotations

import json
import re
import types
import typing
import zlib
from decimal import Decimal
from enum import Enum
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oms.core.events import (
    EVENT_TYPES,
    AssetBalance,
    BalanceObserved,
    CancelRejected,
    CancelRequested,
    Event,
    FundingPaid,
    KillSwitchReset,
    KillSwitchTripped,
    MarketInfo,
    MarkObserved,
    MessageNotUnderstood,
    OrderAccepted,
    OrderCancelled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderModified,
    OrderObserved,
    OrderSubmitted,
    PositionObserved,
    SubmitRejected,
    SubmitUnknown,
    TriggerFailed,
    TriggerPlaced,
)
from oms.core.reducer import replay
from oms.core.serialization import (
    FORMAT,
    FORMAT_VERSION,
    LogFormatError,
    decode_header,
    decode_line,
    encode_header,
    encode_line,
    encode_line_into,
    line_decoder,
    state_document,
    state_hash,
)
from oms.core.serialization import _crc32 as log_crc32
from oms.core.values import (
    MarketType,
    OrderType,
    Side,
    Source,
    TimeInForce,
    VenueStatus,
    decimal_in_range,
)
from tests.helpers import resealed

D = Decimal
T0 = 1_757_620_800_000_000

# One example of every event type, with optional fields set where it matters.
EXAMPLES: list[Event] = [
    OrderSubmitted(
        source=Source.LOCAL,
        recv_time_us=T0,
        client_id=4_294_967_295,
        symbol="SOL_USDC",
        side=Side.BID,
        order_type=OrderType.LIMIT_MAKER,
        quantity=D("0.010"),
        price=D("150.25"),
        time_in_force=TimeInForce.GTC,
        post_only=True,
    ),
    CancelRequested(source=Source.LOCAL, recv_time_us=T0, symbol="SOL_USDC", venue_id="8284661101"),
    SubmitRejected(
        source=Source.REST,
        recv_time_us=T0,
        raw='{"code":"INVALID_ORDER","message":"Order would immediately match and take"}',
        symbol="SOL_USDC",
        client_id=7,
        code="INVALID_ORDER",
        message="Order would immediately match and take",
    ),
    SubmitUnknown(
        source=Source.REST, recv_time_us=T0, symbol="ETH_USDC", client_id=8, reason="503"
    ),
    CancelRejected(
        source=Source.REST,
        recv_time_us=T0,
        raw='{"code":"RESOURCE_NOT_FOUND","message":"Not Found"}',
        symbol="ETH_USDC",
        code="RESOURCE_NOT_FOUND",
        message="Not Found",
        client_id=8,
    ),
    OrderAccepted(
        source=Source.WS,
        recv_time_us=T0 + 5,
        venue_time_us=T0,
        raw='{"stream":"account.orderUpdate","data":{"e":"orderAccepted"}}',
        symbol="SOL_USDC_PERP",
        venue_id="114575842681290753",
        quote_quantity=D("3568.3445"),
        reduce_only=True,
        origin="LIQUIDATION_AUTOCLOSE",
    ),
    OrderFilled(
        source=Source.WS,
        recv_time_us=T0 + 5,
        venue_time_us=T0,
        raw='{"stream":"account.orderUpdate","data":{"e":"orderFill","n":"0.000001"}}',
        symbol="ETH_USDC",
        venue_id="5406825793",
        trade_id=2_888_471,
        side=Side.BID,
        quantity=D("0.0010"),
        price=D("4299.16"),
        fee=D("0.000001"),
        fee_asset="ETH",
        maker=False,
        cum_quantity=D("0.0010"),
        cum_quote=D("4.299160"),
        status=VenueStatus.FILLED,
        order_type=OrderType.MARKET,
    ),
    OrderCancelled(
        source=Source.REST, recv_time_us=T0, symbol="ETH_USDC", client_id=9, cum_quantity=D(0)
    ),
    OrderExpired(
        source=Source.WS, recv_time_us=T0, symbol="SOL_USDC", venue_id="1", reason="PostOnlyTaker"
    ),
    OrderModified(source=Source.WS, recv_time_us=T0, symbol="SOL_USDC_PERP", quantity=D("1.5")),
    TriggerPlaced(
        source=Source.WS,
        recv_time_us=T0,
        symbol="SOL_USDC",
        trigger_price=D("178.05"),
        trigger_quantity="80%",
    ),
    TriggerFailed(source=Source.WS, recv_time_us=T0, symbol="SOL_USDC", venue_id="8886774"),
    OrderObserved(
        source=Source.RECONCILE,
        recv_time_us=T0,
        symbol="ETH_USDC",
        status=VenueStatus.EXPIRED,
        venue_id="8284661092",
        executed_quantity=D("0"),
        expiry_reason="ImmediateOrCancel",
    ),
    BalanceObserved(
        source=Source.RECONCILE,
        recv_time_us=T0,
        raw='{"USDC":{"available":"112.847976936","locked":"0","staked":"0"}}',
        balances=(
            AssetBalance(asset="USDC", available=D("112.847976936"), locked=D(0)),
            AssetBalance(asset="kPEPE", available=D("1E+3"), locked=D("2"), staked=D("0.5")),
        ),
    ),
    PositionObserved(
        source=Source.WS,
        recv_time_us=T0,
        symbol="SOL_USDC_PERP",
        net_quantity=D("-0.01"),
        entry_price=D("126.97"),
        break_even_price=D("126.9307"),
    ),
    FundingPaid(
        source=Source.RECONCILE,
        recv_time_us=T0,
        symbol="ETH_USDC_PERP",
        interval_end_us=T0,
        amount=D("-0.000022"),
        rate=D("-0.0000048"),
    ),
    MarketInfo(
        source=Source.REST,
        recv_time_us=T0,
        symbol="SOL_USDC_PERP",
        base_asset="SOL",
        quote_asset="USDC",
        market_type=MarketType.PERP,
        tick_size=D("0.01"),
        step_size=D("0.01"),
        min_quantity=D("0.01"),
    ),
    MessageNotUnderstood(
        source=Source.WS, recv_time_us=T0, raw='{"weird":\n"frame \u00e9\u2028"}', reason="no e"
    ),
    OrderDenied(
        source=Source.LOCAL,
        recv_time_us=T0,
        client_id=42,
        symbol="SOL_USDC_PERP",
        side=Side.BID,
        order_type=OrderType.LIMIT,
        limit="max_position",
        scope="SOL_USDC_PERP",
        reason="position 9 would become 11 if the order filled; at most 10 either way",
        quantity=D("2"),
        price=D("150.25"),
    ),
    KillSwitchTripped(source=Source.LOCAL, recv_time_us=T0, reason="SIGUSR1", by="signal"),
    KillSwitchReset(source=Source.LOCAL, recv_time_us=T0, reason="checked by hand"),
    MarkObserved(
        source=Source.WS,
        recv_time_us=T0,
        venue_time_us=T0 - 3,
        raw='{"stream":"markPrice.SOL_USDC_PERP","data":{"e":"markPrice","p":"150.1"}}',
        symbol="SOL_USDC_PERP",
        mark_price=D("150.1"),
        index_price=D("150.05"),
        funding_rate=D("0.0000125"),
    ),
]


def test_examples_cover_every_event_type() -> None:
    assert {type(e).__name__ for e in EXAMPLES} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip_keeps_every_field_and_decimal_text(event: Event) -> None:
    line = encode_line(42, event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one event, one line
    seq, back = decode_line(line)
    assert seq == 42
    assert back == event
    assert type(back) is type(event)
    # Exactly equal is not enough for Decimals: 0.010 must stay 0.010 (the venue's text).
    for field in msgspec.structs.fields(type(event)):
        value = getattr(event, field.name)
        if isinstance(value, Decimal):
            assert str(getattr(back, field.name)) == str(value)
    assert decode_line(line.decode("utf-8")) == (42, event)  # text lines too


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_line_layout(event: Event, version: int) -> None:
    line = encode_line(3, event, version)
    document = json.loads(line)
    assert list(document) == ["seq", "v", "event", "crc"]
    assert document["seq"] == 3
    assert document["v"] == 1
    payload = document["event"]
    assert payload["type"] == type(event).__name__
    assert payload["source"] == event.source.value
    assert isinstance(payload["recv_time_us"], int)
    for field in msgspec.structs.fields(type(event)):
        value = getattr(event, field.name)
        if field.name not in payload:
            assert value == field.default  # only defaults are left out
        elif isinstance(value, Decimal):
            assert payload[field.name] == str(value)  # decimals are strings, never numbers
        elif isinstance(value, Enum):
            assert payload[field.name] == value.value
    if version == 2:
        # The checksum covers every byte before `,"crc"`.
        covered = line[: line.rindex(b',"crc":"')]
        assert document["crc"] == f"{zlib.crc32(covered):08x}"
    else:
        # The seal: nine characters from `@` to `O` that make the CRC-32 of the whole line,
        # newline included, 0x6F6D7333 (the number is the format: never change it).
        assert re.fullmatch("[@-O]{9}", document["crc"])
        assert zlib.crc32(line) == 0x6F6D7333
        assert line.endswith(b'"}\n')
        assert resealed(line) == line  # the tests' resealing is the writer's
    assert decode_line(line, version) == (3, event)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.integers(0, 2**32 - 1))
def test_the_log_checksum_is_zlibs_crc32(data: bytes, start: int) -> None:
    # ISA-L's CRC-32 where it is installed: the same function as zlib's, on any bytes, from
    # any starting value, and on a bytearray as on bytes.
    assert log_crc32(data) == zlib.crc32(data)
    assert log_crc32(data, start) == zlib.crc32(data, start)
    assert log_crc32(bytearray(data)) == zlib.crc32(data)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_a_line_encoded_into_a_buffer_is_the_line(event: Event) -> None:
    # Whatever the buffer held before (a longer line included) is replaced.
    buffer = bytearray(b"x" * 5000)
    encode_line_into(7, event, buffer)
    assert bytes(buffer) == encode_line(7, event)
    encode_line_into(8, event, buffer, version=1)
    assert bytes(buffer) == encode_line(8, event, version=1)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_version_1_lines_still_read(event: Event) -> None:
    line = encode_line(3, event, version=1)
    document = json.loads(line)
    assert list(document) == ["seq", "type", "v", "event"]
    assert document["type"] == type(event).__name__
    assert set(document["event"]) == set(event.__struct_fields__)  # every field written
    assert decode_line(line, version=1) == (3, event)
    with pytest.raises(LogFormatError):
        decode_line(line)  # not a version 2 line


def test_header() -> None:
    header = encode_header()
    assert json.loads(header) == {"format": FORMAT, "version": FORMAT_VERSION}
    assert FORMAT_VERSION == 3
    assert header.endswith(b"\n")
    assert decode_header(header) == 3
    assert decode_header(encode_header(2)) == 2
    assert decode_header(encode_header(1)) == 1
    with pytest.raises(LogFormatError, match="not an oms event log"):
        decode_header(b'{"format":"something-else","version":1}\n')
    with pytest.raises(LogFormatError, match="version 4 is not supported"):
        decode_header(b'{"format":"oms-event-log","version":4}\n')
    with pytest.raises(LogFormatError):
        decode_header(b"hello\n")
    with pytest.raises(LogFormatError):
        decode_header(b'{"format":"oms-event-log","version":2,"extra":true}\n')


# --- strict decoding ------------------------------------------------------------------------

FILL_V1 = encode_line(5, EXAMPLES[6], version=1).decode()
FILL_V2 = encode_line(5, EXAMPLES[6], version=2).decode()
FILL_V3 = encode_line(5, EXAMPLES[6]).decode()


def _signed(document: dict[str, Any], version: int = 2) -> str:
    """A version 2 line written as the writer writes it, with a checksum that matches (or,
    with `version=3`, sealed as version 3 seals lines)."""
    body = {key: value for key, value in document.items() if key != "crc"}
    head = json.dumps(body, separators=(",", ":"))[:-1]
    if version == 3:
        return resealed(f'{head},"crc":"{"@" * 9}"}}'.encode()).decode()
    return f'{head},"crc":"{zlib.crc32(head.encode()):08x}"}}'


def _edit(
    payload_change: dict[str, Any], drop: tuple[str, ...] = (), **envelope: Any
) -> tuple[str, str, str]:
    """The fill line edited, as (version 1 line, version 2 line with a valid checksum,
    version 3 line with a valid seal)."""
    lines: list[str] = []
    for version, line in enumerate((FILL_V1, FILL_V2, FILL_V3), start=1):
        document = json.loads(line)
        document["event"].update(payload_change)
        for name in drop:
            del document["event"][name]
        if "type" in envelope and "type" not in document:
            document["event"]["type"] = envelope["type"]
            others = {k: v for k, v in envelope.items() if k != "type"}
            lines.append(_signed(document | others, version))
            continue
        document.update(envelope)
        lines.append(json.dumps(document) if version == 1 else _signed(document, version))
    return lines[0], lines[1], lines[2]


_BAD_EDITS: list[tuple[tuple[str, ...], str]] = [
    (("{not json",) * 3, "malformed"),
    (("[1, 2]",) * 3, "object"),
    (('"just a string"',) * 3, "object"),
    (_edit({}, type="OrderTeleported"), "unknown event type 'OrderTeleported'"),
    (_edit({}, v=2), "schema version 2 is newer"),
    (_edit({}, v=0), "schema version 0 is not known"),
    (_edit({}, drop=("trade_id",)), "missing required field trade_id"),
    (_edit({}, drop=("source",)), "missing required field source"),
    (_edit({"trade_id": "2888471"}), "trade_id"),
    (_edit({"maker": "false"}), "maker"),
    (_edit({"side": "Buy"}), "side"),
    (_edit({"quantity": "lots"}), "quantity"),
    (_edit({"colour": "red"}), "unknown field(s) colour"),
    (_edit({}, seq="5"), "seq"),
    (_edit({}, extra=1), "extra"),
    (
        (
            json.dumps({"seq": 1, "type": "OrderFilled", "v": 1}),
            json.dumps({"seq": 1, "v": 1, "crc": "00000000"}),
            json.dumps({"seq": 1, "v": 1, "crc": "@" * 9}),
        ),
        "event",
    ),
    (_edit({}, event=5), "object"),
]
# Values out of range: a version 1 line is checked value by value; in version 2 the writer
# checks them and the checksum guards the line, so a damaged one fails its checksum.
_OUT_OF_RANGE: list[tuple[dict[str, Any], str]] = [
    ({"price": "NaN"}, "price is not a decimal in range"),
    ({"cum_quantity": "Infinity"}, "cum_quantity is not a decimal in range"),
    ({"fee": "-sNaN"}, "fee is not a decimal in range"),
    ({"price": "1E+41"}, "price is not a decimal in range"),
    ({"quantity": "1E-41"}, "quantity is not a decimal in range"),
    ({"trade_id": 2**64}, "trade_id is not a 64-bit integer"),
]


@pytest.mark.parametrize(("lines", "message"), _BAD_EDITS)
@pytest.mark.parametrize("version", [1, 2, 3])
def test_bad_lines_say_what_is_wrong(
    lines: tuple[str, str, str], message: str, version: int
) -> None:
    with pytest.raises(LogFormatError, match="(?i)" + re.escape(message)):
        decode_line(lines[version - 1], version)


@pytest.mark.parametrize(("change", "message"), _OUT_OF_RANGE)
def test_version_1_values_out_of_range_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(LogFormatError, match=re.escape(message)):
        decode_line(_edit(change)[0], 1)


@pytest.mark.parametrize(("change", "message"), _OUT_OF_RANGE)
def test_the_writer_refuses_values_out_of_range(change: dict[str, Any], message: str) -> None:
    ((name, value),) = change.items()
    raw = Decimal(value) if isinstance(value, str) else value
    event = msgspec.structs.replace(EXAMPLES[6], **{name: raw})
    with pytest.raises(LogFormatError, match=re.escape(message)):
        encode_line(1, event)


@pytest.mark.parametrize("version", [2, 3])
def test_any_damage_to_a_checksummed_line_fails_its_checksum(version: int) -> None:
    text = FILL_V2 if version == 2 else FILL_V3
    line = text.encode()
    for at in range(len(line)):
        for replacement in (b"0", b"7", b"x", b" ", b"@", b"O"):
            damaged = line[:at] + replacement + line[at + 1 :]
            if damaged == line:
                continue
            with pytest.raises(LogFormatError):
                decode_line(damaged, version)
    price = text.replace('"price":"4299.16"', '"price":"4299.17"')
    assert price != text
    with pytest.raises(LogFormatError, match="checksum mismatch"):
        decode_line(price, version)
    # Every single bit flipped anywhere in the line is caught (a CRC-32 catches them all).
    # Version 2 reads its checksum's hex digits in either case, so `a` -> `A` passes there.
    for at in range(len(line) if version == 3 else line.rindex(b',"crc":"')):
        for bit in range(8):
            flipped = bytearray(line)
            flipped[at] ^= 1 << bit
            with pytest.raises(LogFormatError):
                decode_line(bytes(flipped), version)


def test_non_finite_balance_is_rejected() -> None:
    document = json.loads(encode_line(1, EXAMPLES[13], version=1))
    document["event"]["balances"][1]["locked"] = "Infinity"
    with pytest.raises(LogFormatError, match="kPEPE is not a decimal in range"):
        decode_line(json.dumps(document), 1)
    event = EXAMPLES[13]
    assert isinstance(event, BalanceObserved)
    infinite = msgspec.structs.replace(event.balances[1], locked=Decimal("Infinity"))
    with pytest.raises(LogFormatError, match="kPEPE is not a decimal in range"):
        encode_line(1, msgspec.structs.replace(event, balances=(event.balances[0], infinite)))


@pytest.mark.parametrize("version", [1, 2, 3])
def test_every_schema_version_is_known(version: int) -> None:
    # Each type decodes at the version encode_line writes; nothing else is silently read.
    for event in EXAMPLES:
        document = json.loads(encode_line(1, event, version))
        document["v"] += 1
        line = json.dumps(document) if version == 1 else _signed(document, version)
        with pytest.raises(LogFormatError, match="newer than this program knows"):
            decode_line(line, version)


# --- property: any event round-trips ------------------------------------------------------

_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
_DECIMALS = st.decimals(allow_nan=False, allow_infinity=False).filter(decimal_in_range)


def _strategy(hint: Any) -> st.SearchStrategy[Any]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return st.one_of([_strategy(arm) for arm in typing.get_args(hint)])
    if hint is type(None):
        return st.none()
    if hint is Decimal:
        return _DECIMALS
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(min_value=0, max_value=2**63 - 1)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return st.sampled_from(list(hint))
    if hint is str:
        return _TEXT
    if typing.get_origin(hint) is tuple:
        (item, _ellipsis) = typing.get_args(hint)
        return st.lists(_strategy(item), max_size=3).map(tuple)
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        return _builds(hint)
    raise AssertionError(f"no strategy for {hint!r}")


def _builds(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: _strategy(hints[f.name]) for f in msgspec.structs.fields(cls)})


ANY_EVENT: st.SearchStrategy[Event] = st.one_of([_builds(cls) for cls in EVENT_TYPES.values()])


@settings(max_examples=300, deadline=None)
@given(seq=st.integers(min_value=1, max_value=2**63 - 1), event=ANY_EVENT)
def test_any_event_round_trips(seq: int, event: Event) -> None:
    assert decode_line(encode_line(seq, event)) == (seq, event)


# --- canonical state ------------------------------------------------------------------------


def _state_with(quantity: str, price: str) -> Any:
    market = EXAMPLES[16]
    assert isinstance(market, MarketInfo)
    spot = msgspec.structs.replace(market, symbol="SOL_USDC", market_type=MarketType.SPOT)
    first = EXAMPLES[0]
    assert isinstance(first, OrderSubmitted)
    submit = msgspec.structs.replace(first, quantity=D(quantity), price=D(price))
    return replay([spot, submit])


def test_state_hash_depends_on_values_not_on_how_they_were_written() -> None:
    assert state_hash(_state_with("1.50", "150.250")) == state_hash(_state_with("1.5", "150.25"))
    assert state_hash(_state_with("1.5", "150.25")) != state_hash(_state_with("1.5", "150.26"))


def test_state_document_is_json_with_canonical_decimals() -> None:
    document = state_document(_state_with("1.50", "150.250"))
    assert json.loads(json.dumps(document)) == document
    (order,) = document["orders"]["open"]
    assert order["quantity"] == "1.5" and order["price"] == "150.25"
    assert set(document) >= {"last_seq", "orders", "balances", "positions", "anomalies"}


@pytest.mark.parametrize("field", ["recv_time_us", "venue_time_us", "client_id"])
def test_the_writer_refuses_an_int64_field_in_the_unsigned_half(field: str) -> None:
    # The reader refuses these above 2**63 - 1; the writer must not write what it cannot read.
    with pytest.raises(LogFormatError, match=f"field {field} is not a 64-bit integer"):
        encode_line(1, msgspec.structs.replace(EXAMPLES[6], **{field: 2**63}))
    top = msgspec.structs.replace(EXAMPLES[6], **{field: 2**63 - 1})
    assert decode_line(encode_line(1, top)) == (1, top)
    wide = msgspec.structs.replace(EXAMPLES[6], trade_id=2**64 - 1)  # a synthetic trade id
    assert decode_line(encode_line(1, wide)) == (1, wide)


# --- fold-only reading ----------------------------------------------------------------------


def _with_checksum(body: bytes) -> bytes:
    """A line made of `body` (the envelope up to `,"crc":"`), sealed as the writer does."""
    return resealed(body + b',"crc":"@@@@@@@@@"}\n')


@pytest.mark.parametrize("raw", [b"5", b"{}", b"[1]", b"true", b"-0.5"])
def test_fold_only_reading_refuses_a_raw_the_full_reader_refuses(raw: bytes) -> None:
    # A line checksummed as the writer does but with `raw` not a string: the fold-only
    # decoder, which does not build the text, still refuses it, with the same words.
    from oms.testing.builders import fill

    event = msgspec.structs.replace(fill("8", 9, Side.BID, "1", "150"), raw="x")
    line = encode_line(9, event)
    body = line[: line.rindex(b',"crc":"')].replace(b'"raw":"x"', b'"raw":' + raw)
    crafted = _with_checksum(body)
    with pytest.raises(LogFormatError) as full:
        decode_line(crafted)
    with pytest.raises(LogFormatError) as lean:
        line_decoder(FORMAT_VERSION, fold_only=True)(crafted)
    assert str(lean.value) == str(full.value)
    # A string or null is read by both.
    for accepted in (b'"{\\"a\\":1}"', b"null"):
        good = _with_checksum(
            line[: line.rindex(b',"crc":"')].replace(b'"raw":"x"', b'"raw":' + accepted)
        )
        assert decode_line(good)[0] == line_decoder(FORMAT_VERSION, fold_only=True)(good)[0] == 9
