"""Fuzz: the Backpack codec turns any input into events or `MessageNotUnderstood`, never an
exception, and every event it makes is in range and can be logged and read back.

Inputs: arbitrary text and bytes; JSON texts of any shape (huge integers, exponents such as
`1E+5000` and `1E+1000000`, deep nesting, nulls); and real Backpack-shaped messages with one
field replaced, removed, or garbled in the text. `tests/fuzz_settings.py` sets the counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

import attrs
import msgspec
from hypothesis import event, given
from hypothesis import strategies as st

from oms.core.events import EVENT_TYPES, BalanceObserved, Event, MessageNotUnderstood
from oms.core.serialization import decode_line, encode_line
from oms.core.values import ID_LIMIT, Source, decimal_in_range
from oms_backpack import codec
from tests.fuzz_settings import fuzz

RECV: Final = 1_800_000_000_000_000

# --- what every event the codec makes must satisfy ------------------------------------------

_INT_BOUNDS: Final = {
    "client_id": 2**32,
    "trade_id": 2**64,  # real ids below 2**63, synthetic ones from 2**63
    "venue_time_us": ID_LIMIT,
    "recv_time_us": ID_LIMIT,
    "interval_end_us": ID_LIMIT,
}


def check_events(events: list[Event]) -> None:
    for produced in events:
        assert type(produced).__name__ in EVENT_TYPES
        for field in msgspec.structs.fields(type(produced)):
            value = getattr(produced, field.name)
            if isinstance(value, Decimal):
                assert decimal_in_range(value), (field.name, value)
            elif isinstance(value, int) and not isinstance(value, bool):
                assert 0 <= value < _INT_BOUNDS[field.name], (field.name, value)
        if isinstance(produced, BalanceObserved):
            for item in produced.balances:
                for value in (item.available, item.locked, item.staked):
                    assert decimal_in_range(value)
        line = encode_line(7, produced)
        assert decode_line(line) == (7, produced)


# --- JSON text of any shape -------------------------------------------------------------------

ODD_NUMBER_TEXTS: Final = (
    "0",
    "-0",
    "-1",
    "1.5",
    "1E+5000",
    "-1E+5000",
    "1E+1000000",
    "1e-1000000",
    "1E+99999999999999999999",
    "1E+999999999999999999",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551616",
)
# Digit runs just under and over Python's 4,300-digit int conversion limit (built lazily, so
# Hypothesis's reports stay readable).
long_digits = st.sampled_from([30, 4000, 4300, 4301, 5000]).map(lambda n: "9" * n)
ODD_STRINGS: Final = (
    "",
    "NaN",
    "-Infinity",
    "1E+5000",
    "1E+1000000",
    "-5",
    " 42 ",
    "\u0661\u0662",  # Arabic-Indic digits
    "\u00b2",  # superscript two: a digit to str.isdigit, not to int()
    "2025-09-11T20:10:40.699",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59.999999-23:59",
    "1969-12-31T23:59:59",
    "Bid",
    "Ask",
    "Filled",
    "LIMIT",
    "true",
)


def _string_text(text: str) -> str:
    return json.dumps(text)


leaf_texts = st.one_of(
    st.sampled_from(["null", "true", "false", *ODD_NUMBER_TEXTS]),
    long_digits,
    long_digits.map(_string_text),
    st.integers().map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(ODD_STRINGS).map(_string_text),
    st.text(max_size=12).map(_string_text),
    st.sampled_from(['"\\ud800"', '"a\\udfffb"', '"\\u0000"']),
)


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(items: dict[str, str]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in items.items()) + "}"


json_texts = st.recursive(
    leaf_texts,
    lambda inner: (
        st.lists(inner, max_size=4).map(_array)
        | st.dictionaries(st.sampled_from(["e", "s", "t", "i", "data", "stream", "x"]), inner).map(
            _object
        )
    ),
    max_leaves=12,
)
deep_texts = st.builds(
    lambda depth, opener, inside: opener[0] * depth + inside + opener[1] * depth,
    st.integers(1, 5000),
    st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"stream":"account.orderUpdate","data":', "}")]),
    st.sampled_from(["", "0", "1E+5000", "null"]),
)


# --- real message shapes, then one field changed -----------------------------------------------

ORDER_FILL: Final[dict[str, Any]] = {
    "e": "orderFill", "E": 1754939110175879, "s": "ETH_USDC", "c": 42, "S": "Bid",
    "o": "LIMIT", "f": "GTC", "q": "0.0010", "p": "4300", "X": "Filled", "i": "5406825793",
    "t": 2888471, "l": "0.0010", "L": "4299.16", "m": False, "n": "0.000001", "N": "ETH",
    "z": "0.0010", "Z": "4.29916", "T": 1754939110174705, "O": "USER", "Q": "4.30",
    "y": False, "r": False, "P": "4200", "Y": "80%", "R": "PostOnlyTaker",
}  # fmt: skip
ORDER_KINDS: Final = (
    "orderFill",
    "orderAccepted",
    "orderCancelled",
    "orderExpired",
    "orderModified",
    "triggerPlaced",
    "triggerFailed",
)
POSITION: Final[dict[str, Any]] = {
    "e": "positionOpened", "E": 1754943862040486, "s": "ETH_USDC_PERP", "B": "4236.36",
    "b": "4238.479", "M": "4235.88650933", "P": "-0.000473", "Q": "0.0010",
    "T": 1754943862040487, "q": "0.0010", "p": "0", "i": 5411399049,
}  # fmt: skip
FILL_ITEM: Final[dict[str, Any]] = {
    "clientId": "7", "fee": "0.0047325", "feeSymbol": "USDC", "isMaker": False,
    "orderId": "5578417290", "price": "4732.5", "quantity": "0.001", "side": "Ask",
    "symbol": "ETH_USDC", "systemOrderType": None, "timestamp": "2025-08-13T17:26:01.197",
    "tradeId": "2959285",
}  # fmt: skip
ORDER_OBJECT: Final[dict[str, Any]] = {
    "clientId": "55555", "createdAt": "2025-09-11T20:10:40.699", "executedQuantity": "0",
    "executedQuoteQuantity": "0", "expiryReason": "PostOnlyTaker", "id": "8284661092",
    "orderType": "Limit", "postOnly": True, "price": "4000", "quantity": "0.001",
    "quoteQuantity": "4", "side": "Bid", "status": "Expired", "symbol": "ETH_USDC",
    "systemOrderType": None,
}  # fmt: skip
CAPITAL: Final[dict[str, Any]] = {
    "ETH": {"available": "0.0019918", "locked": "0", "staked": "0"},
    "USDC": {"available": "112.847976936", "locked": "1", "staked": "0"},
}
POSITION_ITEM: Final[dict[str, Any]] = {
    "symbol": "ETH_USDC_PERP", "netQuantity": "-0.001", "entryPrice": "3826.88",
    "breakEvenPrice": "3827", "markPrice": "3826", "pnlRealized": "0", "pnlUnrealized": "-0.01",
}  # fmt: skip
FUNDING_ITEM: Final[dict[str, Any]] = {
    "fundingRate": "-0.0000048", "intervalEndTimestamp": "2025-09-11T20:00:00",
    "quantity": "0.000022", "symbol": "ETH_USDC_PERP",
}  # fmt: skip
MARKET: Final[dict[str, Any]] = {
    "symbol": "SOL_USDC_PERP", "baseSymbol": "SOL", "quoteSymbol": "USDC", "marketType": "PERP",
    "filters": {"price": {"tickSize": "0.01"},
                "quantity": {"stepSize": "0.01", "minQuantity": "0.01"}},
}  # fmt: skip
BATCH: Final[list[Any]] = [
    {**ORDER_OBJECT, "operation": "Ok"},
    {"operation": "Err", "code": "INVALID_ORDER", "message": "Invalid order"},
]


@attrs.frozen
class RawNumber:
    """A JSON number written as this exact text (for numbers no Python value prints as)."""

    text: str


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([-1, 2**32, 2**63 - 1, 2**63, 2**64, 10**4000, -(10**4000)]),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.sampled_from([Decimal("1E+5000"), Decimal("1E+1000000"), Decimal("-1E-1000000")]),
    st.sampled_from(ODD_STRINGS),
    st.text(max_size=12),
    long_digits,
    (st.just("1E+99999999999999999999") | long_digits).map(RawNumber),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.none(), max_size=2),
    st.integers(1, 200).map(_nested),
)


@st.composite
def mutated(draw: st.DrawFn, template: Any) -> Any:
    """`template` with one value somewhere in it replaced or removed."""
    if isinstance(template, dict) and template:
        key = draw(st.sampled_from(sorted(template)))
        changed = dict(template)
        action = draw(st.sampled_from(["replace", "delete", "descend"]))
        if action == "delete":
            del changed[key]
        elif action == "descend" and isinstance(template[key], dict | list):
            changed[key] = draw(mutated(template[key]))
        else:
            changed[key] = draw(odd_values)
        return changed
    if isinstance(template, list) and template:
        index = draw(st.integers(0, len(template) - 1))
        changed_list = list(template)
        changed_list[index] = draw(mutated(template[index]) | odd_values)
        return changed_list
    return draw(odd_values)


def dumps(value: Any) -> str:
    """JSON text with decimals and integers as bare numbers, exactly as held."""
    if isinstance(value, RawNumber):
        return value.text
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return _array([dumps(v) for v in value])
    return _object({k: dumps(v) for k, v in value.items()})


def plain(value: Any) -> Any:
    """The value as the REST entry points get it (RawNumber has no Python form: dropped)."""
    if isinstance(value, RawNumber):
        return None
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@st.composite
def order_frames(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["orderFill", *ORDER_KINDS]))  # fills twice as often
    if draw(st.integers(0, 3)) == 0:
        frame = {"stream": "account.positionUpdate", "data": draw(mutated(POSITION))}
    else:
        stream = draw(st.sampled_from(["account.orderUpdate", "account.orderUpdate.ETH_USDC"]))
        frame = {"stream": stream, "data": draw(mutated(dict(ORDER_FILL, e=kind)))}
    return dumps(frame)


@st.composite
def ws_texts(draw: st.DrawFn) -> str:
    """Mostly real frames with a change (where the codec has most to get right), else any
    JSON, deep nesting, any text, or any JSON as an order update's data."""
    choice = draw(st.integers(0, 9))
    if choice < 6:
        return draw(order_frames())
    others: list[st.SearchStrategy[str]] = [
        json_texts,
        deep_texts,
        st.text(),
        json_texts.map(lambda t: '{"stream":"account.orderUpdate","data":' + t + "}"),
    ]
    return draw(others[choice - 6])


# --- the properties -------------------------------------------------------------------------


@fuzz(400)
@given(ws_texts())
def test_ws_frames_never_raise(text: str) -> None:
    events = codec.ws_frame(text, RECV)
    check_events(events)
    for produced in events:
        event(type(produced).__name__)
        if isinstance(produced, MessageNotUnderstood):
            assert produced.raw == text


RestEntry = Callable[[Any, Source, int], Event]
REST: Final[list[tuple[RestEntry, Any]]] = [
    (codec.fill_history_item, FILL_ITEM),
    (codec.order_object, ORDER_OBJECT),
    (codec.balances, CAPITAL),
    (codec.position, POSITION_ITEM),
    (codec.funding_item, FUNDING_ITEM),
    (codec.market, MARKET),
]


def _batch(body: Any, source: Source, recv: int) -> list[Event]:
    return codec.batch_results(body, [11, 12], ["ETH_USDC", "SOL_USDC"], source, recv)


@st.composite
def rest_inputs(draw: st.DrawFn) -> tuple[int, Any]:
    """(which entry point, its argument): a template with a change, or any JSON value."""
    index = draw(st.integers(0, len(REST)))  # len(REST) is the batch answer
    template = BATCH if index == len(REST) else REST[index][1]
    choice = draw(st.integers(0, 5))
    if choice == 0:
        value = template
    elif choice == 1:
        value = draw(odd_values)
    else:
        value = draw(mutated(template))
    if draw(st.booleans()):
        try:  # through the parser, as the REST client sends it
            return index, codec.parse_json(dumps(value).encode("utf-8"))
        except ValueError:
            pass
    return index, plain(value)


@fuzz(400)
@given(rest_inputs(), st.sampled_from([Source.REST, Source.RECONCILE]))
def test_rest_items_never_raise(sample: tuple[int, Any], source: Source) -> None:
    index, value = sample
    if index == len(REST):
        events = _batch(value, source, RECV)
        assert len(events) in (1, 2)
    else:
        events = [REST[index][0](value, source, RECV)]
    for produced in events:
        event(type(produced).__name__)
    check_events(events)


@fuzz(400)
@given(st.one_of(st.binary(), json_texts.map(str.encode), deep_texts.map(str.encode)))
def test_parse_json_raises_only_value_error(body: bytes) -> None:
    try:
        value = codec.parse_json(body)
    except ValueError:
        return
    # Whatever parsed feeds every REST entry point without an exception.
    for convert, _template in REST:
        check_events([convert(value, Source.REST, RECV)])
    check_events(_batch(value, Source.REST, RECV))
