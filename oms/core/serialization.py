"""The event-log line format and the canonical form of the state. Pure: no files here.

A log is JSON Lines, UTF-8. The first line is the header `{"format":"oms-event-log",
"version":1}`; each further line is one event:

    {"seq":7,"type":"OrderFilled","v":1,"event":{"source":"ws","recv_time_us":...,
     "venue_time_us":...,"raw":"<venue message text>", ...the event's own fields...}}

Decimals are strings, enums their values, times integers in microseconds. `docs/log-format.md`
describes it in full. Decoding is strict: a missing or mistyped field, an unknown field, an
unknown type or schema version, a non-finite decimal, an integer that does not fit in 64 bits,
nesting too deep for the decoder: each is a `LogFormatError` saying what is wrong, and
`decode_line` raises nothing else, whatever the bytes. Old schema versions are upgraded
through `UPGRADES` (none exist yet).
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

import attrs
import msgspec

from oms.core.errors import ExternalError
from oms.core.events import EVENT_TYPES, AssetBalance, BalanceObserved, Event
from oms.core.state import Balance, Order, Position, State
from oms.core.values import (
    MAX_MAGNITUDE_EXPONENT,
    OrderOrigin,
    canonical_decimal,
    decimal_in_range,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INT_END",
    "INT_MIN",
    "SCHEMA_VERSION",
    "LogFormatError",
    "decode_header",
    "decode_line",
    "encode_header",
    "encode_line",
    "scrub",
    "state_document",
    "state_hash",
]

FORMAT: Final = "oms-event-log"
FORMAT_VERSION: Final = 1
# Schema version of every event type's payload; bump a type's entry when its fields change
# and add an upgrade from the old version.
SCHEMA_VERSION: Final[dict[str, int]] = {name: 1 for name in EVENT_TYPES}
# (type, version) -> function turning an old payload (a dict) into the next version's.
UPGRADES: Final[dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]]] = {}


class LogFormatError(ExternalError, ValueError):
    """A line that is not a valid event-log line. The message says what is wrong."""


class _Header(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    version: int


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    seq: int
    type: str
    v: int
    event: msgspec.Raw


_encoder = msgspec.json.Encoder()
_header_decoder = msgspec.json.Decoder(_Header)
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_keys_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _event_fields(cls: type) -> frozenset[str]:
    return frozenset(a.name for a in attrs.fields(cls))


def _decimal_fields(cls: type) -> tuple[str, ...]:
    hints = typing.get_type_hints(cls)
    return tuple(name for name, hint in hints.items() if hint in (Decimal, Decimal | None))


def _int_fields(cls: type) -> tuple[str, ...]:
    hints = typing.get_type_hints(cls)
    return tuple(name for name, hint in hints.items() if hint in (int, int | None))


# Every integer in a log (seq, times, client and trade ids, including the synthetic trade ids
# of system fills, up to 2**64 - 1) fits in 64 bits, signed or unsigned; a longer one is a
# damaged line, refused before it reaches the reducer or a message.
INT_MIN: Final = -(2**63)
INT_END: Final = 2**64


_DECODERS: Final = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()}
_FIELDS: Final = {name: _event_fields(cls) for name, cls in EVENT_TYPES.items()}
_DECIMALS: Final = {name: _decimal_fields(cls) for name, cls in EVENT_TYPES.items()}
_INTS: Final = {name: _int_fields(cls) for name, cls in EVENT_TYPES.items()}
# What decoding damaged bytes can raise besides msgspec's DecodeError: deep nesting exhausts
# the stack (msgspec recurses per level), and conversions of odd values (a decimal text, an
# upgrade of an old payload) raise the usual value errors.
_INPUT_ERRORS: Final = (
    RecursionError,
    ValueError,
    OverflowError,
    TypeError,
    ArithmeticError,
    msgspec.MsgspecError,
)


def encode_header() -> bytes:
    return _encoder.encode({"format": FORMAT, "version": FORMAT_VERSION}) + b"\n"


def decode_header(line: bytes) -> None:
    """Check the header line. Raises `LogFormatError` (and nothing else) if it is not ours."""
    try:
        header = _header_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise LogFormatError(f"not an oms event log header: {exc}") from None
    except _INPUT_ERRORS as exc:
        raise LogFormatError(f"not an oms event log header: {_unexpected(exc)}") from None
    if header.format != FORMAT:
        raise LogFormatError(f"not an oms event log: format is {header.format!r}")
    if header.version != FORMAT_VERSION:
        raise LogFormatError(
            f"log format version {header.version} is not supported (this is version "
            f"{FORMAT_VERSION})"
        )


def encode_line(seq: int, event: Event) -> bytes:
    """One log line for `event` with sequence number `seq`, newline included.

    Raises `LogFormatError` for an event that cannot be written as UTF-8 JSON (a string with
    a lone surrogate); `scrub` makes such an event writable.
    """
    name = type(event).__name__
    for field in _DECIMALS[name]:
        value = getattr(event, field)
        if value is not None and not decimal_in_range(value):
            # Written, it could never be read back: refuse it before anything is written.
            raise LogFormatError(f"{name}: field {field} is not a decimal in range: {value}")
    for field in _INTS[name]:
        value = getattr(event, field)
        if value is not None and not INT_MIN <= value < INT_END:
            raise LogFormatError(f"{name}: field {field} is not a 64-bit integer: {_digits(value)}")
    try:
        body = _encoder.encode(
            {"seq": seq, "type": name, "v": SCHEMA_VERSION[name], "event": event}
        )
    except (ValueError, TypeError, OverflowError, msgspec.EncodeError) as exc:
        raise LogFormatError(f"{name} cannot be written: {exc}") from None
    return body + b"\n"


def _scrub_text(text: str) -> str:
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def scrub(event: Event) -> Event:
    """The event with every string made valid Unicode (lone surrogates become U+FFFD)."""
    changes: dict[str, Any] = {}
    for a in attrs.fields(type(event)):
        value = getattr(event, a.name)
        if type(value) is str:
            changes[a.name] = _scrub_text(value)
        elif isinstance(value, OrderOrigin) and not value.is_known:
            # An origin the venue added is a member made from its text; it stays a member.
            changes[a.name] = OrderOrigin(_scrub_text(value.value))
    return attrs.evolve(event, **changes)


def decode_line(line: bytes | str) -> tuple[int, Event]:
    """(seq, event) from one log line. Raises `LogFormatError` saying what is wrong, and
    nothing else: any damage to a line, however odd, is that one clear error."""
    try:
        return _decode_line(line)
    except LogFormatError:
        raise
    except UnicodeDecodeError:
        raise LogFormatError("not valid UTF-8") from None
    except _INPUT_ERRORS as exc:
        raise LogFormatError(_unexpected(exc)) from None


def _unexpected(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    return f"{type(exc).__name__}: {exc}"


def _digits(value: int) -> str:
    """An int for a message: a damaged line can hold one thousands of digits long, which
    is neither readable nor (past 4,300 digits) convertible to text."""
    if value.bit_length() <= 128:
        return str(value)
    return f"{'-' if value < 0 else ''}an integer of {value.bit_length()} bits"


def _decode_line(line: bytes | str) -> tuple[int, Event]:
    try:
        envelope = _envelope_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise LogFormatError(_describe(exc)) from None
    if not INT_MIN <= envelope.seq < INT_END:
        raise LogFormatError(f"field seq is not a 64-bit integer: {_digits(envelope.seq)}")
    if not INT_MIN <= envelope.v < INT_END:
        raise LogFormatError(f"field v is not a 64-bit integer: {_digits(envelope.v)}")
    name = envelope.type
    decoder = _DECODERS.get(name)
    if decoder is None:
        raise LogFormatError(f"unknown event type {name!r}")
    payload = envelope.event
    version = SCHEMA_VERSION[name]
    if envelope.v != version:
        payload = _upgrade(name, envelope.v, payload)
    try:
        event = decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise LogFormatError(f"{name}: {_describe(exc)}") from None
    keys = _keys_decoder.decode(payload)
    if len(keys) != len(_FIELDS[name]) or not _FIELDS[name].issuperset(keys):
        # Missing fields with defaults are allowed; anything we don't know is not.
        unknown = sorted(set(keys) - _FIELDS[name])
        if unknown:
            raise LogFormatError(f"{name}: unknown field(s) {', '.join(unknown)}")
    for field in _DECIMALS[name]:
        value = getattr(event, field)
        # decimal_in_range, inlined: this runs for every decimal of every line replayed.
        if value is not None and not (
            value.is_finite() and (not value or _LOW <= value.adjusted() <= _HIGH)
        ):
            raise LogFormatError(f"{name}: field {field} is not a decimal in range: {value}")
    for field in _INTS[name]:
        number = getattr(event, field)
        if number is not None and not INT_MIN <= number < INT_END:
            raise LogFormatError(
                f"{name}: field {field} is not a 64-bit integer: {_digits(number)}"
            )
    if isinstance(event, BalanceObserved):
        _check_balances(event, keys)
    return envelope.seq, event


_HIGH: Final = MAX_MAGNITUDE_EXPONENT
_LOW: Final = -MAX_MAGNITUDE_EXPONENT
_BALANCE_FIELDS: Final = frozenset(a.name for a in attrs.fields(AssetBalance))
_items_decoder = msgspec.json.Decoder(list[dict[str, msgspec.Raw]])


def _check_balances(event: BalanceObserved, keys: dict[str, msgspec.Raw]) -> None:
    for item in _items_decoder.decode(keys["balances"]):
        unknown = sorted(set(item) - _BALANCE_FIELDS)
        if unknown:
            raise LogFormatError(f"BalanceObserved: unknown balance field(s) {', '.join(unknown)}")
    for balance in event.balances:
        for value in (balance.available, balance.locked, balance.staked):
            if not decimal_in_range(value):
                raise LogFormatError(
                    f"BalanceObserved: {balance.asset} is not a decimal in range: {value}"
                )


def _upgrade(name: str, version: int, payload: msgspec.Raw) -> msgspec.Raw:
    current = SCHEMA_VERSION[name]
    if version > current:
        raise LogFormatError(
            f"{name} schema version {version} is newer than this program knows ({current}); "
            "upgrade oms to read this log"
        )
    if version < 1 or (name, version) not in UPGRADES:
        raise LogFormatError(f"{name} schema version {version} is not known")
    data: dict[str, Any] = msgspec.json.decode(payload)
    while version < current:
        step = UPGRADES.get((name, version))
        if step is None:
            raise LogFormatError(f"{name} schema version {version} is not known")
        data = step(data)
        version += 1
    return msgspec.Raw(msgspec.json.encode(data))


def _describe(exc: msgspec.DecodeError) -> str:
    text = str(exc)
    if text.startswith("Expected `object`, got") and "$" not in text:
        return "not a JSON object: " + text
    return text.replace("$.", "field ").replace("`", "")


# --- canonical state -----------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-ready form: Decimals canonical, enums their values, tuples as lists."""
    if isinstance(value, Decimal):
        return canonical_decimal(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, msgspec.Struct):
        return {name: _plain(getattr(value, name)) for name in value.__struct_fields__}
    if attrs.has(type(value)):
        return {a.name: _plain(getattr(value, a.name)) for a in attrs.fields(type(value))}
    if isinstance(value, str):  # StrEnum included
        return str(value)
    return value


def _order_doc(order: Order) -> dict[str, Any]:
    doc: dict[str, Any] = _plain(order)
    doc["fees"] = {asset: canonical_decimal(amount) for asset, amount in order.fees}
    # The venue reports more executed than the fills counted: fills are on their way (or lost).
    doc["awaiting_fills"] = order.awaiting_fills
    return doc


def _balance_doc(balance: Balance) -> dict[str, Any]:
    doc: dict[str, Any] = _plain(balance)
    doc["total"] = canonical_decimal(balance.total)
    return doc


# A position's bookkeeping for re-deriving it in matching order: in the hash, not the document.
_POSITION_BOOKS = (
    "checkpoint",
    "recent",
    "baseline_key",
    "synthetic_fills",
    "baseline_before_us",
)


def _position_doc(position: Position) -> dict[str, Any]:
    doc: dict[str, Any] = _plain(position)
    doc["fees"] = {asset: canonical_decimal(amount) for asset, amount in position.fees}
    for name in _POSITION_BOOKS:
        del doc[name]
    return doc


def state_document(state: State, *, finished_limit: int | None = None) -> dict[str, Any]:
    """The state as one JSON-ready document (the schema of `docs/replay.md`).

    Open orders by seq of creation; finished orders newest first, at most `finished_limit`
    of them (all retained ones when None).
    """
    orders = sorted(state.orders.values(), key=lambda o: o.created_seq)
    open_orders = [_order_doc(o) for o in orders if not o.status.is_terminal]
    finished: list[dict[str, Any]] = []
    for index in range(state.finished_tail - 1, state.finished_head - 1, -1):
        if finished_limit is not None and len(finished) >= finished_limit:
            break
        order = state.orders.get(state.finished[index])
        # An order that finished, reopened and finished again is listed at its newest place;
        # one that reopened and is open now is listed with the open orders.
        if order is not None and order.finished_at == index and order.status.is_terminal:
            finished.append(_order_doc(order))
    return {
        "last_seq": state.last_seq,
        "last_client_id": state.last_client_id,
        "orders": {"open": open_orders, "finished": finished},
        "balances": [_balance_doc(state.balances[a]) for a in sorted(state.balances.keys())],
        "positions": [_position_doc(state.positions[s]) for s in sorted(state.positions.keys())],
        "markets": [_plain(state.markets[s]) for s in sorted(state.markets.keys())],
        "anomalies": {
            "total": state.anomaly_total,
            "by_kind": {str(k): state.anomaly_counts[k] for k in sorted(state.anomaly_counts)},
            "recent": [_plain(a) for a in state.anomalies],
        },
    }


def state_hash(state: State) -> str:
    """sha256 (hex) of the canonical JSON of the whole state: equal states, equal hashes.

    Covers every retained order, balance, position, market, the kept anomalies and their
    counts, and the sequence position. Decimals enter in canonical form, so `1.50` and `1.5`
    hash alike.
    """
    document = state_document(state)
    document["position_books"] = {
        symbol: {name: _plain(getattr(position, name)) for name in _POSITION_BOOKS}
        for symbol, position in sorted(state.positions.items())
    }
    document["baseline_seq"] = state.baseline_seq
    document["retention"] = {
        "head": state.finished_head,
        "tail": state.finished_tail,
        "retain": state.retain_finished,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()
