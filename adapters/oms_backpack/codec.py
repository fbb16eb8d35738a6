"""Backpack wire messages -> domain events. Pure: no I/O, no clock (times come in).

Tolerant where the venue is inconsistent (fact sheet §2.1, §3.3, §7): integers quoted or
not, microsecond / millisecond / naive-ISO times, explicit nulls, absent optional keys,
decimals as strings or bare numbers. A message it cannot understand becomes a
`MessageNotUnderstood` event that keeps the raw text: the codec never raises on venue input,
so a stream never stops on a surprise. Its `reason` is for people; what a caller acts on is
typed: `decode_ws_frame` returns a WebSocket error frame's `VenueErrorFrame` beside the events,
and `venue_error_of` reads it back from a recorded event's raw text.

Parse venue JSON with `parse_json`: JSON numbers become `Decimal` (never float), so a bare
number such as `"b": 123.45` in a docs example keeps its exact value. It refuses (ValueError)
JSON nested deeper than `MAX_DEPTH` before anything recursive runs, so no frame can exhaust
the stack.

Bounds: every integer read from a message (trade ids, times, funding interval ends, an order
id sent as a number) must be in `0 <= n < oms.core.values.ID_LIMIT` (2**63), and a client id a
uint32; every decimal must pass `oms.core.values.decimal_in_range`. Size is checked before any
conversion, so `1E+1000000` is refused at once rather than expanded. Out of range, the message
is not understood.

Fills without a trade id (system fills: liquidations, ADL; the API types `tradeId` optional;
a trade id of 0 is taken as none) are keyed by `synthetic_trade_id`: `SYNTHETIC_TRADE_ID_BASE`
(2**63) plus the low 63 bits of an 8-byte BLAKE2b digest of the compact ASCII JSON array
`[symbol, order id, side, quantity, price, venue time in milliseconds]` (decimals in canonical
form). The stream gives `T` in microseconds and fill history a naive ISO time in
milliseconds; truncating both to milliseconds gives the same fill the same key from either
source, so it is counted once. A synthetic id is never a real one (real ids are below 2**63).
Two system fills of one order with the same side, quantity and price in the same millisecond
would share a key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final, TypeVar

import attrs
import msgspec

from oms.core.errors import ExternalError
from oms.core.events import (
    AssetBalance,
    BalanceObserved,
    Event,
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
    canonical_decimal,
    decimal_in_range,
)

__all__ = [
    "MAX_DEPTH",
    "BadMessage",
    "VenueErrorFrame",
    "WsFrame",
    "balances",
    "batch_results",
    "compact",
    "decode_ws_frame",
    "fill_history_item",
    "funding_item",
    "market",
    "order_object",
    "order_update",
    "parse_json",
    "position",
    "position_update",
    "synthetic_trade_id",
    "timestamp_us",
    "venue_error_of",
    "venue_int",
    "ws_frame",
]

JSON = Any
_E = TypeVar("_E", bound=StrEnum)


class BadMessage(ExternalError, ValueError):
    """A venue message that does not have the shape the codec needs (internal: the codec
    turns it into a `MessageNotUnderstood` event, it never reaches the caller)."""


# Backpack messages nest fewer than 6 levels; far deeper is garbage or an attack on the stack.
MAX_DEPTH: Final = 64
# A JSON string, or an unterminated one up to the end: never fails once it has started, so
# scanning stays linear on any input.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def parse_json(text: str | bytes) -> JSON:
    """Parse venue JSON with exact decimals. Raises ValueError, and nothing else, on invalid
    JSON, on a number no Decimal or int can hold, and on JSON nested deeper than `MAX_DEPTH`
    (checked before parsing, without recursion).

    A `\\ud800`-style escape of a lone surrogate (valid JSON, not valid Unicode) is replaced
    by U+FFFD, so every string in an event can be written to the log as UTF-8.
    """
    if isinstance(text, bytes):
        # As json.loads would decode it, but here so the depth check sees the same text.
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    _check_depth(text)
    try:
        value = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except RecursionError:
        # Only if the caller's own stack was already nearly full.
        raise ValueError("JSON nested too deeply for the stack left") from None
    except ArithmeticError:
        # InvalidOperation: an exponent beyond what Decimal holds (1E+99999999999999999999).
        raise ValueError("JSON number out of range") from None
    if "\\u" in text or (not text.isascii() and _SURROGATE.search(text)):
        value = _clean(value)
    return value


def _check_depth(text: str) -> None:
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return  # cannot be deeper: skip the scan for every ordinary message
    depth = 0
    for char in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
        else:
            depth -= 1
            if depth < 0:
                raise ValueError("JSON brackets do not balance")


def _clean(value: JSON) -> JSON:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


_encoder = msgspec.json.Encoder()


def compact(value: JSON) -> str:
    """Compact JSON text of an already parsed value (decimals written as strings).

    Never raises: a value `parse_json` could not have produced (an int too long to print, a
    lone surrogate, a foreign type) gives a placeholder naming the problem.
    """
    try:
        return _encoder.encode(value).decode("utf-8")
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
        return f"<not encodable as JSON: {type(exc).__name__}>"


# --- tolerant field readers ----------------------------------------------------------------


def _get(data: Mapping[str, JSON], key: str) -> JSON:
    value = data.get(key)
    if value is None:
        raise BadMessage(f"missing {key!r}")
    return value


def _dec(value: JSON, key: str) -> Decimal:
    if isinstance(value, bool):
        raise BadMessage(f"{key!r} is a boolean, not a number")
    if isinstance(value, Decimal | int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise BadMessage(f"{key!r} is not a decimal: {_show(value)}") from None
    else:
        raise BadMessage(f"{key!r} is not a decimal: {_show(value)}")
    if not decimal_in_range(result):
        raise BadMessage(f"{key!r} is not a decimal in range: {_show(value)}")
    return result


def _dec_req(data: Mapping[str, JSON], key: str) -> Decimal:
    return _dec(_get(data, key), key)


def _dec_opt(data: Mapping[str, JSON], key: str) -> Decimal | None:
    value = data.get(key)
    return None if value is None else _dec(value, key)


# Digits of the largest venue integer (ID_LIMIT - 1); anything longer is refused unread.
_INT_DIGITS: Final = len(str(ID_LIMIT - 1))


def _show(value: JSON) -> str:
    """A short repr for a reason: a refused value can be megabytes long."""
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 256 else "a huge int"
    return text if len(text) <= 40 else text[:37] + "..."


def venue_int(value: JSON, key: str) -> int:
    """A venue integer (a JSON integer, a digit string, or an integral decimal) in
    `0 <= n < ID_LIMIT`. Raises BadMessage otherwise, checking the size before converting."""
    if isinstance(value, bool):
        raise BadMessage(f"{key!r} is a boolean, not an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            raise BadMessage(f"{key!r} is not an integer: {_show(value)}")
        if len(text.lstrip("0")) > _INT_DIGITS:
            raise BadMessage(f"{key!r} is not an integer in range: {_show(value)}")
        number = int(text)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise BadMessage(f"{key!r} is not an integer: {_show(value)}")
        if value and value.adjusted() >= _INT_DIGITS:
            raise BadMessage(f"{key!r} is not an integer in range: {_show(value)}")
        if value != value.to_integral_value():
            raise BadMessage(f"{key!r} is not an integer: {_show(value)}")
        number = int(value)
    else:
        raise BadMessage(f"{key!r} is not an integer: {_show(value)}")
    if not 0 <= number < ID_LIMIT:
        raise BadMessage(f"{key!r} is not an integer in range: {_show(value)}")
    return number


def _int_opt(data: Mapping[str, JSON], key: str) -> int | None:
    value = data.get(key)
    return None if value is None else venue_int(value, key)


def _client_id(data: Mapping[str, JSON], key: str) -> int | None:
    value = _int_opt(data, key)
    if value is not None and not 0 <= value < 2**32:
        raise BadMessage(f"{key!r} is not a uint32: {value}")
    return value


def _str(data: Mapping[str, JSON], key: str) -> str:
    value = _get(data, key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadMessage(f"{key!r} is not a string: {_show(value)}")
    if isinstance(value, int):
        # An id sent as a number: bounded like every venue integer.
        return str(venue_int(value, key))
    return value


def _str_opt(data: Mapping[str, JSON], key: str) -> str | None:
    return None if data.get(key) is None else _str(data, key)


def _bool(data: Mapping[str, JSON], key: str) -> bool:
    value = data.get(key)
    if value is None:
        return False
    if value is True or value is False:
        return bool(value)
    if value in ("true", "false"):
        return bool(value == "true")
    raise BadMessage(f"{key!r} is not a boolean: {value!r}")


def timestamp_us(value: JSON, key: str = "time") -> int:
    """Microseconds since the epoch from any time form Backpack uses, in `0 <= t < ID_LIMIT`.

    Integers (or digit strings) are told apart by size: microseconds (the streams), milliseconds
    (REST `createdAt`, trades) or seconds. Strings with a date are naive ISO times in UTC
    (`2025-09-11T20:10:40.699`, `2025-07-19 13:09:00`). Raises BadMessage otherwise.
    """
    if isinstance(value, str) and not value.strip().isdigit():
        if len(value) > 64:
            raise BadMessage(f"{key!r} is not a time: {_show(value)}")
        try:
            parsed = datetime.fromisoformat(value.strip())
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
        except (ValueError, OverflowError):
            raise BadMessage(f"{key!r} is not a time: {_show(value)}") from None
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        if not 0 <= micros < ID_LIMIT:
            raise BadMessage(f"{key!r} is not a time in range: {_show(value)}")
        return micros
    number = venue_int(value, key)
    # Each branch stays below ID_LIMIT: ms < 1e14 and s < 1e11 scale to < 1e17.
    if number >= 10**14:
        return number
    if number >= 10**11:
        return number * 1_000
    return number * 1_000_000


def _time_opt(data: Mapping[str, JSON], *keys: str) -> int | None:
    for key in keys:
        value = data.get(key)
        if value is not None:
            return timestamp_us(value, key)
    return None


def _enum(data: Mapping[str, JSON], key: str, kind: type[_E], what: str) -> _E:
    value = _get(data, key)
    try:
        return kind(value)
    except ValueError:
        raise BadMessage(f"{key!r} is not {what}: {value!r}") from None


def _side(data: Mapping[str, JSON], key: str) -> Side:
    return _enum(data, key, Side, "a side")


def _side_opt(data: Mapping[str, JSON], key: str) -> Side | None:
    return None if data.get(key) is None else _side(data, key)


def _order_type(data: Mapping[str, JSON], type_key: str, post_only_key: str) -> OrderType | None:
    """`LIMIT`/`MARKET` on the stream, `Limit`/`Market` over REST; post-only limit is
    LIMIT_MAKER. Other types (conditional kinds) are left as None; the raw keeps them."""
    value = data.get(type_key)
    if not isinstance(value, str):
        return None
    upper = value.upper()
    if upper == "MARKET":
        return OrderType.MARKET
    if upper == "LIMIT":
        return OrderType.LIMIT_MAKER if _bool(data, post_only_key) else OrderType.LIMIT
    return None


def _tif(data: Mapping[str, JSON], key: str) -> TimeInForce | None:
    value = data.get(key)
    try:
        return None if value is None else TimeInForce(value)
    except ValueError:
        return None


def _status(data: Mapping[str, JSON], key: str) -> VenueStatus:
    return _enum(data, key, VenueStatus, "a known order status")


def _status_opt(data: Mapping[str, JSON], key: str) -> VenueStatus | None:
    value = data.get(key)
    try:
        return None if value is None else VenueStatus(value)
    except ValueError:
        return None  # an unknown status must not cost us the fill it came with


def synthetic_trade_id(
    *, symbol: str, venue_id: str, side: Side, quantity: Decimal, price: Decimal, time_us: int
) -> int:
    """The key of a fill the venue sent without a trade id (see the module docstring).

    In `[SYNTHETIC_TRADE_ID_BASE, 2**64)`; the same from the stream and from fill history,
    because only the milliseconds of the venue time enter it.
    """
    key = [
        symbol,
        venue_id,
        side.value,
        canonical_decimal(quantity),
        canonical_decimal(price),
        time_us // 1000,
    ]
    text = json.dumps(key, separators=(",", ":"), ensure_ascii=True)
    digest = hashlib.blake2b(text.encode("ascii"), digest_size=8).digest()
    return SYNTHETIC_TRADE_ID_BASE + (int.from_bytes(digest, "big") & (ID_LIMIT - 1))


def _trade_id(
    data: Mapping[str, JSON],
    key: str,
    *,
    symbol: str,
    venue_id: str,
    side: Side,
    quantity: Decimal,
    price: Decimal,
    time_us: int | None,
) -> int:
    value = data.get(key)
    if value is not None:
        number = venue_int(value, key)
        # Zero is the placeholder backstop liquidations carried before 2025-11-12 (fact sheet
        # §2.3): shared by many fills, so it cannot key one.
        if number:
            return number
    if time_us is None:
        raise BadMessage(f"fill without {key!r} and without a time: it cannot be keyed")
    return synthetic_trade_id(
        symbol=symbol,
        venue_id=venue_id,
        side=side,
        quantity=quantity,
        price=price,
        time_us=time_us,
    )


def _guard(
    raw: str, source: Source, recv_time_us: int, build: Callable[[], list[Event]]
) -> list[Event]:
    try:
        return build()
    except (
        BadMessage,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        InvalidOperation,
        OverflowError,
        RecursionError,
    ) as exc:
        reason = str(exc) if isinstance(exc, BadMessage) else f"{type(exc).__name__}: {exc}"
        if len(reason) > 300:
            reason = reason[:297] + "..."
        return [
            MessageNotUnderstood(source=source, recv_time_us=recv_time_us, raw=raw, reason=reason)
        ]


# --- WebSocket -------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class VenueErrorFrame:
    """A WebSocket error frame, `{"id": ..., "error": {"code": 4006, "message": "..."}}`: the
    venue refused something we sent on the stream (a subscription, say).

    `code` is None when the frame carries no integer code; `message` is the venue's text
    (empty if none).
    """

    code: int | None
    message: str

    def __str__(self) -> str:
        return f"venue error {self.code}: {self.message}"


@attrs.frozen(kw_only=True)
class WsFrame:
    """What one WebSocket text frame holds: its events (an error frame is recorded as a
    `MessageNotUnderstood`), and the venue's error if it was an error frame."""

    events: tuple[Event, ...]
    venue_error: VenueErrorFrame | None = None


def decode_ws_frame(text: str, recv_time_us: int) -> WsFrame:
    """The events of one WebSocket text frame, and its venue error if it is an error frame.
    Never raises.

    Data frames are `{"stream": ..., "data": {...}}`. Subscribe acknowledgements and public
    streams the engine does not consume give no events; error frames and anything
    unrecognised give a `MessageNotUnderstood` with the frame.

    The order stream's usual frames take a fast path (`_fast_order_update`); anything it does
    not take gives the same events through the tolerant readers.
    """
    event = _fast_order_update(text, recv_time_us)
    if event is not None:
        return WsFrame(events=(event,))
    return _decode_tolerant(text, recv_time_us)


# --- the fast path for the order stream --------------------------------------------------------
#
# Fills, accepts, cancels and expiries on `account.orderUpdate` are most of what a session
# receives. Their usual shape (decimals as strings, integers as numbers, nothing missing) is
# decoded by msgspec in one typed pass, and the event is built with the same rules as
# `order_update`. Anything else (a field of another type or out of range, a key the tolerant
# reader needs and the frame lacks, a fill without a trade id, another event kind, an extra
# top-level key such as `error`) makes the fast path return None, and the tolerant readers
# decide: so the fast path can only ever give the events the tolerant path gives, which
# `tests/backpack/test_codec_fast_path.py` checks on generated and recorded frames.


class _FastOrderData(msgspec.Struct):
    """The keys of an order update that `order_update` reads (others are ignored by both)."""

    e: str
    s: str
    E: int | None = None
    T: int | None = None
    i: str | None = None
    c: int | None = None
    o: str | None = None
    y: bool | None = None
    O: str | None = None  # noqa: E741 (the venue's key)
    S: Side | None = None
    q: Decimal | None = None
    p: Decimal | None = None
    Q: Decimal | None = None
    f: str | None = None
    r: bool | None = None
    t: int | None = None
    l: Decimal | None = None  # noqa: E741 (the venue's key)
    L: Decimal | None = None
    n: Decimal | None = None
    N: str | None = None
    m: bool | None = None
    z: Decimal | None = None
    Z: Decimal | None = None
    X: str | None = None
    R: str | None = None
    I: str | None = None  # noqa: E741 (the venue's key)
    H: int | None = None


class _FastFrame(msgspec.Struct, forbid_unknown_fields=True):
    stream: str
    data: _FastOrderData


_fast_decoder = msgspec.json.Decoder(_FastFrame)
_FAST_KINDS: Final = frozenset({"orderFill", "orderAccepted", "orderCancelled", "orderExpired"})
_STATUS_OF: Final = {status.value: status for status in VenueStatus}
_TIF_OF: Final = {tif.value: tif for tif in TimeInForce}


class _NotFast(Exception):
    """The frame is not one the fast path takes."""


def _in_range(value: Decimal | None) -> Decimal | None:
    if value is not None and not decimal_in_range(value):
        raise _NotFast
    return value


def _fast_order_update(text: str, recv_time_us: int) -> Event | None:
    try:
        frame = _fast_decoder.decode(text)
    except Exception:  # any failure means: not the usual shape
        return None
    data = frame.data
    kind = data.e
    if kind not in _FAST_KINDS or not frame.stream.startswith("account.orderUpdate"):
        return None
    try:
        return _fast_event(data, kind, text, recv_time_us)
    except (_NotFast, BadMessage):
        return None


def _fast_event(data: _FastOrderData, kind: str, raw: str, recv_time_us: int) -> Event:
    if data.X is not None and data.X not in _STATUS_OF:
        raise _NotFast  # the tolerant path records the unknown status too
    # As `order_update` reads them, in the same order of precedence.
    time = data.T if data.T is not None else data.E
    venue_time_us = None if time is None else timestamp_us(time, "T" if data.T is not None else "E")
    client_id = data.c
    if client_id is not None and not 0 <= client_id < 2**32:
        raise _NotFast
    order_type: OrderType | None = None
    if data.o is not None:
        upper = data.o.upper()
        if upper == "MARKET":
            order_type = OrderType.MARKET
        elif upper == "LIMIT":
            order_type = OrderType.LIMIT_MAKER if data.y else OrderType.LIMIT
    origin = OrderOrigin(data.O or OrderOrigin.USER)
    if data.H is not None and not 0 <= data.H < ID_LIMIT:
        raise _NotFast
    # A conditional order reports quantity 0 until it triggers: no quantity yet.
    order_quantity = _in_range(data.q) or None
    if kind == "orderFill":
        trade_id = data.t
        venue_id, side, quantity, price = data.i, data.S, _in_range(data.l), _in_range(data.L)
        if (
            venue_id is None
            or side is None
            or quantity is None
            or price is None
            or not trade_id  # none, or the old placeholder 0: the tolerant path keys it
            or not 0 < trade_id < ID_LIMIT
        ):
            raise _NotFast
        status = data.X
        return OrderFilled(
            source=Source.WS,
            recv_time_us=recv_time_us,
            venue_time_us=venue_time_us,
            raw=raw,
            symbol=data.s,
            venue_id=venue_id,
            client_id=client_id,
            trade_id=trade_id,
            side=side,
            quantity=quantity,
            price=price,
            fee=_in_range(data.n) or Decimal(0),
            fee_asset=data.N or "",
            maker=bool(data.m),
            cum_quantity=_in_range(data.z),
            cum_quote=_in_range(data.Z),
            status=None if status is None else _STATUS_OF.get(status),
            order_type=order_type,
            order_quantity=order_quantity,
            order_price=_in_range(data.p),
            origin=origin,
            related_order_id=data.I,
            strategy_id=data.H,
        )
    if kind == "orderAccepted":
        if data.i is None:
            raise _NotFast
        tif = data.f
        return OrderAccepted(
            source=Source.WS,
            recv_time_us=recv_time_us,
            venue_time_us=venue_time_us,
            raw=raw,
            symbol=data.s,
            venue_id=data.i,
            client_id=client_id,
            side=data.S,
            order_type=order_type,
            quantity=order_quantity,
            quote_quantity=_in_range(data.Q) if order_type is OrderType.MARKET else None,
            price=_in_range(data.p),
            time_in_force=None if tif is None else _TIF_OF.get(tif),
            post_only=bool(data.y),
            reduce_only=bool(data.r),
            origin=origin,
            related_order_id=data.I,
            strategy_id=data.H,
        )
    # A cancel and an expiry read the same keys (an expiry its reason too).
    ended: dict[str, Any] = {
        "source": Source.WS,
        "recv_time_us": recv_time_us,
        "venue_time_us": venue_time_us,
        "raw": raw,
        "symbol": data.s,
        "venue_id": data.i,
        "client_id": client_id,
        "side": data.S,
        "order_type": order_type,
        "quantity": order_quantity,
        "price": _in_range(data.p),
        "cum_quantity": _in_range(data.z),
        "origin": origin,
        "related_order_id": data.I,
        "strategy_id": data.H,
    }
    if kind == "orderCancelled":
        return OrderCancelled(**ended)
    return OrderExpired(**ended, reason=data.R)


def _decode_tolerant(text: str, recv_time_us: int) -> WsFrame:
    """`decode_ws_frame` through the tolerant readers only."""
    venue_error: VenueErrorFrame | None = None

    def build() -> list[Event]:
        nonlocal venue_error
        frame = parse_json(text)
        if not isinstance(frame, dict):
            raise BadMessage("frame is not a JSON object")
        if frame.get("error") is not None:
            error = frame["error"]
            venue_error = _error_frame(error)
            if isinstance(error, dict):
                raise BadMessage(f"venue error {error.get('code')}: {error.get('message')}")
            raise BadMessage(f"venue error {error!r}")
        stream = frame.get("stream")
        data = frame.get("data")
        if stream is None and "result" in frame:
            return []  # a subscribe acknowledgement
        if not isinstance(stream, str) or not isinstance(data, dict):
            raise BadMessage("not a data frame (no stream/data)")
        if stream.startswith("account.orderUpdate"):
            return [
                order_update(data, text, recv_time_us),
                *_unknown_status(data, text, recv_time_us),
            ]
        if stream.startswith("account.positionUpdate"):
            return [position_update(data, text, recv_time_us)]
        if stream.startswith("account."):
            raise BadMessage(f"private stream {stream!r} is not consumed")
        if stream.startswith("markPrice."):
            return [mark_price(data, text, recv_time_us)]
        return []

    events = _guard(text, Source.WS, recv_time_us, build)
    return WsFrame(events=tuple(events), venue_error=venue_error)


def _unknown_status(data: Mapping[str, JSON], raw: str, recv_time_us: int) -> list[Event]:
    """An order update whose status `X` the codec does not know (the venue adds new ones): its
    event is read without the status (a fill still counts, nothing moves backwards), and
    the status is recorded as not understood, with the message."""
    status = data.get("X")
    if status is None or status in _STATUS_OF:
        return []
    return [
        MessageNotUnderstood(
            source=Source.WS,
            recv_time_us=recv_time_us,
            raw=raw,
            reason=f"unknown order status {_show(status)} in {_show(data.get('e'))} "
            f"of order {_show(data.get('i'))}: read without it",
        )
    ]


def ws_frame(text: str, recv_time_us: int) -> list[Event]:
    """The events of one WebSocket text frame (`decode_ws_frame` without the venue error).
    Never raises."""
    return list(decode_ws_frame(text, recv_time_us).events)


def venue_error_of(event: Event) -> VenueErrorFrame | None:
    """The venue error a recorded event reports: for a `MessageNotUnderstood` from the
    WebSocket whose raw text is an error frame, that error (read from the frame, as
    `decode_ws_frame` reads it); None for any other event. Never raises."""
    if not isinstance(event, MessageNotUnderstood) or event.source is not Source.WS:
        return None
    try:
        frame = parse_json(event.raw or "")
    except ValueError:
        return None
    if not isinstance(frame, dict) or frame.get("error") is None:
        return None
    return _error_frame(frame["error"])


def _error_frame(error: JSON) -> VenueErrorFrame:
    """The `error` member of an error frame, whatever its shape."""
    if not isinstance(error, dict):
        return VenueErrorFrame(code=None, message=_text(error))
    try:
        code: int | None = venue_int(error.get("code"), "code")
    except BadMessage:
        code = None
    message = error.get("message")
    return VenueErrorFrame(code=code, message="" if message is None else _text(message))


def _text(value: JSON) -> str:
    return value if isinstance(value, str) else compact(value)


_ORDER_EVENTS: Final = frozenset(
    {
        "orderAccepted",
        "orderCancelled",
        "orderExpired",
        "orderFill",
        "orderModified",
        "triggerPlaced",
        "triggerFailed",
    }
)


def order_update(data: Mapping[str, JSON], raw: str, recv_time_us: int) -> Event:
    """One `account.orderUpdate` payload (the `data` object) as an event.

    Raises BadMessage (or ValueError/KeyError) when it cannot; `ws_frame` turns that into
    `MessageNotUnderstood`.
    """
    kind = data.get("e")
    if kind not in _ORDER_EVENTS:
        raise BadMessage(f"unknown order update event {kind!r}")
    meta: dict[str, Any] = {
        "source": Source.WS,
        "recv_time_us": recv_time_us,
        "venue_time_us": _time_opt(data, "T", "E"),
        "raw": raw,
    }
    symbol = _str(data, "s")
    venue_id = _str_opt(data, "i")
    client_id = _client_id(data, "c")
    order_type = _order_type(data, "o", "y")
    origin = OrderOrigin(_str_opt(data, "O") or OrderOrigin.USER)
    links: dict[str, Any] = {
        "related_order_id": _str_opt(data, "I"),
        "strategy_id": _int_opt(data, "H"),
    }
    # A conditional order reports quantity 0 until it triggers: no quantity yet.
    quantity_q = _dec_opt(data, "q") or None
    if kind == "orderFill":
        fill_venue_id = _str(data, "i")
        side = _side(data, "S")
        quantity = _dec_req(data, "l")
        price = _dec_req(data, "L")
        return OrderFilled(
            **meta,
            symbol=symbol,
            venue_id=fill_venue_id,
            client_id=client_id,
            trade_id=_trade_id(
                data,
                "t",
                symbol=symbol,
                venue_id=fill_venue_id,
                side=side,
                quantity=quantity,
                price=price,
                time_us=meta["venue_time_us"],
            ),
            side=side,
            quantity=quantity,
            price=price,
            fee=_dec_opt(data, "n") or Decimal(0),
            fee_asset=_str_opt(data, "N") or "",
            maker=_bool(data, "m"),
            cum_quantity=_dec_opt(data, "z"),
            cum_quote=_dec_opt(data, "Z"),
            status=_status_opt(data, "X"),
            order_type=order_type,
            order_quantity=quantity_q,
            order_price=_dec_opt(data, "p"),
            origin=origin,
            **links,
        )
    if kind == "orderAccepted":
        return OrderAccepted(
            **meta,
            symbol=symbol,
            venue_id=_str(data, "i"),
            client_id=client_id,
            side=_side_opt(data, "S"),
            order_type=order_type,
            quantity=quantity_q,
            quote_quantity=_dec_opt(data, "Q") if order_type is OrderType.MARKET else None,
            price=_dec_opt(data, "p"),
            time_in_force=_tif(data, "f"),
            post_only=_bool(data, "y"),
            reduce_only=_bool(data, "r"),
            origin=origin,
            **links,
        )
    common: dict[str, Any] = {"symbol": symbol, "venue_id": venue_id, "client_id": client_id}
    if kind == "orderCancelled":
        return OrderCancelled(
            **meta,
            **common,
            side=_side_opt(data, "S"),
            order_type=order_type,
            quantity=quantity_q,
            price=_dec_opt(data, "p"),
            cum_quantity=_dec_opt(data, "z"),
            origin=origin,
            **links,
        )
    if kind == "orderExpired":
        return OrderExpired(
            **meta,
            **common,
            reason=_str_opt(data, "R"),
            side=_side_opt(data, "S"),
            order_type=order_type,
            quantity=quantity_q,
            price=_dec_opt(data, "p"),
            cum_quantity=_dec_opt(data, "z"),
            origin=origin,
            **links,
        )
    if kind == "orderModified":
        return OrderModified(
            **meta, **common, quantity=_dec_req(data, "q"), price=_dec_opt(data, "p")
        )
    if kind == "triggerPlaced":
        trigger_quantity = data.get("Y")
        return TriggerPlaced(
            **meta,
            **common,
            side=_side_opt(data, "S"),
            order_type=order_type,
            trigger_price=_dec_opt(data, "P"),
            trigger_quantity=None if trigger_quantity is None else str(trigger_quantity),
            price=_dec_opt(data, "p"),
            trigger_by=_str_opt(data, "B"),
            reduce_only=_bool(data, "r"),
            **links,
        )
    return TriggerFailed(**meta, **common, **links)


def position_update(data: Mapping[str, JSON], raw: str, recv_time_us: int) -> Event:
    """One `account.positionUpdate` payload: an event (`e` set) or the on-subscribe snapshot
    (no `e`). `B` is the entry price, `b` the break-even price (fact sheet §3.4)."""
    kind = data.get("e")
    if kind not in (None, "positionOpened", "positionAdjusted", "positionClosed"):
        raise BadMessage(f"unknown position update event {kind!r}")
    net = _dec_opt(data, "q")
    if net is None:
        if kind != "positionClosed":
            raise BadMessage("missing 'q'")
        net = Decimal(0)
    return PositionObserved(
        source=Source.WS,
        recv_time_us=recv_time_us,
        venue_time_us=_time_opt(data, "T", "E"),
        raw=raw,
        symbol=_str(data, "s"),
        net_quantity=net,
        entry_price=_dec_opt(data, "B"),
        break_even_price=_dec_opt(data, "b"),
        mark_price=_dec_opt(data, "M"),
        realized_pnl=_dec_opt(data, "p"),
        unrealized_pnl=_dec_opt(data, "P"),
    )


def mark_price(data: Mapping[str, JSON], raw: str, recv_time_us: int) -> Event:
    """One `markPrice.<symbol>` payload (fact sheet §4: `p` mark, `i` index, `f` estimated
    funding rate; `f` and `i` may be absent) as a `MarkObserved`. The session samples them
    before recording (`oms_backpack.marks`)."""
    if data.get("e") != "markPrice":
        raise BadMessage(f"not a mark price update: {data.get('e')!r}")
    mark = _dec_req(data, "p")
    if not mark > 0:
        raise BadMessage(f"mark price {_show(data.get('p'))} is not positive")
    return MarkObserved(
        source=Source.WS,
        recv_time_us=recv_time_us,
        venue_time_us=_time_opt(data, "T", "E"),
        raw=raw,
        symbol=_str(data, "s"),
        mark_price=mark,
        index_price=_dec_opt(data, "i"),
        funding_rate=_dec_opt(data, "f"),
    )


# --- REST --------------------------------------------------------------------------------------

# REST names a venue-placed order by `systemOrderType`, in words of its own; those that are
# plainly one of the stream's origins are read as it, so a fill's order has one origin whichever
# copy arrives first. The others (FutureExpiry, LiquidatePositionOnBackstop, OrderBookClosed)
# keep the venue's text.
_SYSTEM_ORDER_ORIGINS: Final = {
    "CollateralConversion": OrderOrigin.COLLATERAL_CONVERSION,
    "LiquidatePositionOnAdl": OrderOrigin.ADL_AUTOCLOSE,
    "LiquidatePositionOnBook": OrderOrigin.LIQUIDATION_AUTOCLOSE,
}


def _system_origin(data: Mapping[str, JSON], key: str) -> OrderOrigin:
    value = _str_opt(data, key)
    if not value:
        return OrderOrigin.USER
    return _SYSTEM_ORDER_ORIGINS.get(value) or OrderOrigin(value)


def _rest_guard(
    item: JSON, source: Source, recv_time_us: int, build: Callable[[Mapping[str, JSON], str], Event]
) -> Event:
    raw = compact(item)
    if not isinstance(item, dict):
        return MessageNotUnderstood(
            source=source, recv_time_us=recv_time_us, raw=raw, reason="item is not a JSON object"
        )
    return _guard(raw, source, recv_time_us, lambda: [build(item, raw)])[0]


def order_object(item: JSON, source: Source, recv_time_us: int) -> Event:
    """An order object (execute, cancel, order query, open orders, order history, batch items
    with `operation: Ok`) as an `OrderObserved`: the venue's status and executed figures."""

    def build(data: Mapping[str, JSON], raw: str) -> Event:
        return OrderObserved(
            source=source,
            recv_time_us=recv_time_us,
            venue_time_us=_time_opt(data, "createdAt"),
            raw=raw,
            symbol=_str(data, "symbol"),
            status=_status(data, "status"),
            venue_id=_str_opt(data, "id"),
            client_id=_client_id(data, "clientId"),
            side=_side_opt(data, "side"),
            order_type=_order_type(data, "orderType", "postOnly"),
            # A conditional order shows quantity 0 until it triggers: no quantity yet.
            quantity=_dec_opt(data, "quantity") or None,
            quote_quantity=_dec_opt(data, "quoteQuantity"),
            price=_dec_opt(data, "price"),
            executed_quantity=_dec_opt(data, "executedQuantity"),
            executed_quote_quantity=_dec_opt(data, "executedQuoteQuantity"),
            expiry_reason=_str_opt(data, "expiryReason"),
            origin=_system_origin(data, "systemOrderType"),
            trigger_price=_dec_opt(data, "triggerPrice"),
            trigger_quantity=_str_opt(data, "triggerQuantity"),
            related_order_id=_str_opt(data, "relatedOrderId"),
            strategy_id=_int_opt(data, "strategyId"),
            reduce_only=_bool(data, "reduceOnly"),
        )

    return _rest_guard(item, source, recv_time_us, build)


def batch_results(
    body: JSON, client_ids: list[int], symbols: list[str], source: Source, recv_time_us: int
) -> list[Event]:
    """The answer to `POST /api/v1/orders`, item by item, for the orders sent in that order.

    An item with `"operation": "Ok"` (or none) is an order object (`OrderObserved`); an item
    with `"operation": "Err"` refuses the order at the same position (`SubmitRejected` with its
    code and message). A body that is not a list of the right length is not understood.
    """
    if not isinstance(body, list) or len(body) != len(client_ids):
        return [
            MessageNotUnderstood(
                source=source,
                recv_time_us=recv_time_us,
                raw=compact(body),
                reason=f"batch answer is not a list of {len(client_ids)} items",
            )
        ]
    events: list[Event] = []
    for item, client_id, symbol in zip(body, client_ids, symbols, strict=True):
        if isinstance(item, dict) and item.get("operation") == "Err":
            events.append(
                SubmitRejected(
                    source=source,
                    recv_time_us=recv_time_us,
                    raw=compact(item),
                    symbol=symbol,
                    client_id=client_id,
                    code=str(item.get("code") or "UNKNOWN"),
                    message=str(item.get("message") or ""),
                )
            )
        else:
            events.append(order_object(item, source, recv_time_us))
    return events


def fill_history_item(item: JSON, source: Source, recv_time_us: int) -> Event:
    """One item of `GET /wapi/v1/history/fills` as an `OrderFilled` (no cumulative figures)."""

    def build(data: Mapping[str, JSON], raw: str) -> Event:
        venue_time_us = _time_opt(data, "timestamp")
        symbol = _str(data, "symbol")
        venue_id = _str(data, "orderId")
        side = _side(data, "side")
        quantity = _dec_req(data, "quantity")
        price = _dec_req(data, "price")
        return OrderFilled(
            source=source,
            recv_time_us=recv_time_us,
            venue_time_us=venue_time_us,
            raw=raw,
            symbol=symbol,
            venue_id=venue_id,
            client_id=_client_id(data, "clientId"),
            trade_id=_trade_id(
                data,
                "tradeId",
                symbol=symbol,
                venue_id=venue_id,
                side=side,
                quantity=quantity,
                price=price,
                time_us=venue_time_us,
            ),
            side=side,
            quantity=quantity,
            price=price,
            fee=_dec_opt(data, "fee") or Decimal(0),
            fee_asset=_str_opt(data, "feeSymbol") or "",
            maker=_bool(data, "isMaker"),
            origin=_system_origin(data, "systemOrderType"),
        )

    return _rest_guard(item, source, recv_time_us, build)


def balances(body: JSON, source: Source, recv_time_us: int) -> Event:
    """`GET /api/v1/capital` (`{"<asset>": {"available", "locked", "staked"}}`) as one snapshot."""
    raw = compact(body)

    def build() -> list[Event]:
        if not isinstance(body, dict):
            raise BadMessage("capital response is not a JSON object")
        items = []
        for asset in sorted(body):
            entry = body[asset]
            if not isinstance(entry, dict):
                raise BadMessage(f"balance of {asset!r} is not an object")
            items.append(
                AssetBalance(
                    asset=asset,
                    available=_dec_req(entry, "available"),
                    locked=_dec_opt(entry, "locked") or Decimal(0),
                    staked=_dec_opt(entry, "staked") or Decimal(0),
                )
            )
        return [
            BalanceObserved(
                source=source, recv_time_us=recv_time_us, raw=raw, balances=tuple(items)
            )
        ]

    return _guard(raw, source, recv_time_us, build)[0]


def position(item: JSON, source: Source, recv_time_us: int) -> Event:
    """One item of `GET /api/v1/position` as a `PositionObserved`."""

    def build(data: Mapping[str, JSON], raw: str) -> Event:
        return PositionObserved(
            source=source,
            recv_time_us=recv_time_us,
            raw=raw,
            symbol=_str(data, "symbol"),
            net_quantity=_dec_req(data, "netQuantity"),
            entry_price=_dec_opt(data, "entryPrice"),
            break_even_price=_dec_opt(data, "breakEvenPrice"),
            mark_price=_dec_opt(data, "markPrice"),
            realized_pnl=_dec_opt(data, "pnlRealized"),
            unrealized_pnl=_dec_opt(data, "pnlUnrealized"),
        )

    return _rest_guard(item, source, recv_time_us, build)


def funding_item(item: JSON, source: Source, recv_time_us: int) -> Event:
    """One item of `GET /wapi/v1/history/funding` as a `FundingPaid`."""

    def build(data: Mapping[str, JSON], raw: str) -> Event:
        end = timestamp_us(_get(data, "intervalEndTimestamp"), "intervalEndTimestamp")
        return FundingPaid(
            source=source,
            recv_time_us=recv_time_us,
            venue_time_us=end,
            raw=raw,
            symbol=_str(data, "symbol"),
            interval_end_us=end,
            amount=_dec_req(data, "quantity"),
            rate=_dec_opt(data, "fundingRate"),
        )

    return _rest_guard(item, source, recv_time_us, build)


def market(item: JSON, source: Source, recv_time_us: int) -> Event:
    """One item of `GET /api/v1/markets` as a `MarketInfo`."""

    def build(data: Mapping[str, JSON], raw: str) -> Event:
        filters = _get(data, "filters")
        price = _get(filters, "price")
        quantity = _get(filters, "quantity")
        market_type = _str(data, "marketType")
        try:
            kind = MarketType(market_type)
        except ValueError:
            raise BadMessage(f"unknown market type {market_type!r}") from None
        return MarketInfo(
            source=source,
            recv_time_us=recv_time_us,
            raw=raw,
            symbol=_str(data, "symbol"),
            base_asset=_str(data, "baseSymbol"),
            quote_asset=_str(data, "quoteSymbol"),
            market_type=kind,
            tick_size=_dec_req(price, "tickSize"),
            step_size=_dec_req(quantity, "stepSize"),
            min_quantity=_dec_opt(quantity, "minQuantity") or Decimal(0),
        )

    return _rest_guard(item, source, recv_time_us, build)
