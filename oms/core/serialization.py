"""The event-log line format and the canonical form of the state. Pure: no files here.

A log is JSON Lines, UTF-8. The first line is the header `{"format":"oms-event-log",
"version":2}`; each further line is one event (format version 2, written since 0.2):

    {"seq":7,"v":1,"event":{"type":"OrderFilled","source":"ws","recv_time_us":...,
     "raw":"<venue message text>", ...the event's own fields...},"crc":"1c291ca3"}

`type` names the event class (the tag the line decodes by, in one pass), `v` its schema
version, and `crc` the CRC-32 of every byte of the line before `,"crc"`, as eight lowercase hex
digits. Fields at their default are not written. Decimals are strings, enums their values,
times integers in microseconds. `docs/log-format.md` describes it in full.

The writer checks every value is in range (decimals, 64-bit integers) before it writes a line;
the reader checks the checksum, which catches any damage to a line, instead of checking each
value again. Version 1 logs (type beside the event, every field written, no checksum) are
still read, with every value checked.

Decoding is strict: a missing or mistyped field, an unknown field, an unknown type or schema
version, a checksum that does not match, an out-of-range value in a version 1 line, nesting too
deep for the decoder: each is a `LogFormatError` saying what is wrong, and `decode_line`
raises nothing else, whatever the bytes. Old schema versions are upgraded through `UPGRADES`
(none exist yet).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final, Union, get_type_hints

import attrs
import msgspec

try:
    # ISA-L's CRC-32 is the same function as zlib's, about six times faster on a log line
    # (it uses the processor's carry-less multiplication).
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - a platform without an isal wheel
    from zlib import crc32 as _crc32

from oms.core.errors import ExternalError
from oms.core.events import (
    EVENT_TYPES,
    BalanceObserved,
    Event,
    Int64,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
)
from oms.core.state import Balance, Order, Position, RiskState, State
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
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "LineDecoder",
    "LogFormatError",
    "check_ranges",
    "decode_header",
    "decode_line",
    "encode_header",
    "encode_line",
    "encode_line_into",
    "line_decoder",
    "risk_document",
    "scrub",
    "state_document",
    "state_hash",
]

FORMAT: Final = "oms-event-log"
# The line format this program writes; it reads every version in READABLE_VERSIONS.
FORMAT_VERSION: Final = 3
READABLE_VERSIONS: Final = (1, 2, 3)
# Schema version of every event type's payload; bump a type's entry when its fields change
# and add an upgrade from the old version.
SCHEMA_VERSION: Final[dict[str, int]] = {name: 1 for name in EVENT_TYPES}
# (type, version) -> function turning an old payload (a dict) into the next version's.
UPGRADES: Final[dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]]] = {}

LineDecoder = Callable[[bytes], tuple[int, Event]]


class LogFormatError(ExternalError, ValueError):
    """A line that is not a valid event-log line. The message says what is wrong."""


class _Header(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    version: int


class _Line(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A version 2 or 3 line, decoded in one pass: the event by its `type` tag. (A seq or version
    beyond 64 bits fails here and is described by the slow path.)"""

    seq: Int64
    v: Int64
    event: Event
    crc: str


class _LineOut(msgspec.Struct):
    """A version 2 or 3 line as the writer encodes it, before its checksum."""

    seq: int
    v: int
    event: Event


class _LineParts(msgspec.Struct, forbid_unknown_fields=True):
    """A version 2 or 3 line with the event left undecoded: the slow path, for upgrades and for
    saying precisely what is wrong with a line the one-pass decoder refused."""

    seq: int
    v: int
    event: msgspec.Raw
    crc: str


class _EnvelopeV1(msgspec.Struct, forbid_unknown_fields=True):
    seq: int
    type: str
    v: int
    event: msgspec.Raw


class _Tag(msgspec.Struct):
    type: str


# --- lines read only to be folded into a state -------------------------------------------
#
# No reducer reads `raw`, the venue's message text: for replaying, the reports that carry one
# decode into subclasses of their event class (same name, same tag, same fields) whose `raw` is
# a `msgspec.Raw`, the JSON string still escaped, never built into a `str` (0.37 µs of a fill
# line's 2.5). They are meant for `ReplayFold` alone, which turns one back into its own class
# (`full_event`, `raw` left out) before `Fold`'s general handlers see it.
def _fold_only(cls: type[Event]) -> type[Event]:
    lean: type[Event] = msgspec.defstruct(  # type: ignore[assignment]
        cls.__name__,
        [("raw", msgspec.Raw, msgspec.Raw())],
        bases=(cls,),
        tag=cls.__name__,
        module=__name__,
    )
    return lean


# The usual reports (fills, accepts, cancels): every other class decodes as itself.
FOLD_ONLY: Final[dict[type[Event], type[Event]]] = {
    cls: _fold_only(cls) for cls in (OrderFilled, OrderAccepted, OrderCancelled)
}
# Each fold-only class, to its event class.
FULL_CLASS: Final[dict[type[Event], type[Event]]] = {lean: cls for cls, lean in FOLD_ONLY.items()}


_FoldEvent = Union[tuple(FOLD_ONLY.get(cls, cls) for cls in EVENT_TYPES.values())]  # type: ignore[valid-type]  # noqa: UP007


class _FoldLine(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """`_Line`, with the usual reports as their fold-only classes."""

    seq: Int64
    v: Int64
    event: _FoldEvent  # type: ignore[valid-type]
    crc: str


def full_event(event: Event) -> Event:
    """`event` as its own class: a fold-only event (see `FOLD_ONLY`) becomes an instance of
    the event class it stands for, with the same fields and no `raw`; any other is returned."""
    cls = FULL_CLASS.get(type(event))
    if cls is None:
        return event
    fields = {name: getattr(event, name) for name in cls.__struct_fields__ if name != "raw"}
    return cls(**fields)


_encoder = msgspec.json.Encoder()
_header_decoder = msgspec.json.Decoder(_Header)
_line_decoder = msgspec.json.Decoder(_Line)
_fold_line_decoder = msgspec.json.Decoder(_FoldLine)
_parts_decoder = msgspec.json.Decoder(_LineParts)
_v1_decoder = msgspec.json.Decoder(_EnvelopeV1)
_tag_decoder = msgspec.json.Decoder(_Tag)


def _typed_fields(cls: type, *types: object) -> tuple[str, ...]:
    hints = get_type_hints(cls)
    return tuple(name for name in cls.__struct_fields__ if hints[name] in types)  # type: ignore[attr-defined]


# Every integer in a log (seq, times, client and trade ids, including the synthetic trade ids
# of system fills, up to 2**64 - 1) fits in 64 bits, signed or unsigned; a longer one is a
# damaged line, refused before it reaches the reducer or a message.
INT_MIN: Final = -(2**63)
INT_END: Final = 2**64

_DECODERS: Final = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()}
# Per event class: the names of its Decimal and int fields, and its schema version.
_DECIMALS: Final = {
    cls: _typed_fields(cls, Decimal, Decimal | None) for cls in EVENT_TYPES.values()
}
_INTS: Final = {cls: _typed_fields(cls, int, int | None) for cls in EVENT_TYPES.values()}
# Times and client ids are signed 64-bit (`oms.core.events.Int64`); trade ids may also be
# unsigned 64-bit (synthetic ids go up to 2**64 - 1).
_INT_END_OF: Final = {"trade_id": INT_END}
_INT64_END: Final = 2**63
_VERSION_OF: Final = {cls: SCHEMA_VERSION[name] for name, cls in EVENT_TYPES.items()}
_VERSION_OF.update({lean: _VERSION_OF[cls] for cls, lean in FOLD_ONLY.items()})
# The classes whose trade id is checked against 64 bits when a line is read.
_TRADE_ID_CLASSES: Final = frozenset({OrderFilled, FOLD_ONLY[OrderFilled]})
_HIGH: Final = MAX_MAGNITUDE_EXPONENT
_LOW: Final = -MAX_MAGNITUDE_EXPONENT
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
# `,"crc":"` + 8 hex digits + `"}`: the fixed tail of a version 2 line.
_CRC_TAIL: Final = 18
_CRC_KEY: Final = b',"crc":"'
_CRC_FIELD: Final = b',"crc":"%08x"}\n'

# Version 3 seals a line instead: its `crc` field holds nine characters (`@` to `O`: 0x40 plus
# four free bits each), chosen so that the CRC-32 of the whole line, newline included, is
# `_SEAL_RESIDUE`. A reader checks a line with one CRC over the bytes it has, no slice of
# them and no number parsed: 0.54 µs a line less than version 2's check (docs/speed.md).
# A CRC-32 is affine in the bits of its input, so the nine characters' 36 free bits move the
# line's CRC by a linear map; `_seal_tables` inverts it once, as four tables by byte.
_SEAL_RESIDUE: Final = 0x6F6D7333
_SEAL_CHARS: Final = 9
_SEAL_BLANK: Final = _CRC_KEY + b"@" * _SEAL_CHARS + b'"}\n'
_SEAL_AT: Final = 3 + _SEAL_CHARS  # the characters start this many bytes before the end
_SEAL_TAIL: Final = len(_SEAL_BLANK) - 1  # `,"crc":"` + the characters + `"}`


def _seal_tables() -> tuple[list[int], list[int], list[int], list[int]]:
    """Four tables, by byte of the CRC of a line's bytes before its seal's tail: the nine
    characters of the seal (their bytes as a little-endian integer) that the tables of the
    four bytes give when XORed together."""
    blank = _SEAL_BLANK
    free = [(char, bit) for char in range(_SEAL_CHARS) for bit in range(4)]
    # What each free bit of the characters does to the CRC of the tail, from any start.
    at = len(blank) - _SEAL_AT
    effects = []
    for char, bit in free:
        flipped = bytearray(blank)
        flipped[at + char] ^= 1 << bit
        effects.append(_crc32(flipped) ^ _crc32(blank))
    # Gauss-Jordan over GF(2): for each CRC bit, a set of free bits that flips it alone.
    pivots: dict[int, tuple[int, int]] = {}  # CRC bit -> (effect, free bits as a mask)
    for index, flips in enumerate(effects):
        effect, bits = flips, 1 << index
        for top in range(31, -1, -1):
            if not effect >> top & 1:
                continue
            if top not in pivots:
                pivots[top] = (effect, bits)
                break
            effect ^= pivots[top][0]
            bits ^= pivots[top][1]
    if len(pivots) != 32:  # a property of the CRC and the layout, checked once
        raise RuntimeError("the seal's characters cannot reach every CRC")
    alone: dict[int, int] = {}
    for top in sorted(pivots):
        effect, bits = pivots[top]
        for lower in range(top):
            if effect >> lower & 1:
                effect ^= 1 << lower
                bits ^= alone[lower]
        alone[top] = bits

    def solve(change: int) -> int:
        """The characters' bits (in place in their bytes) that change the CRC by `change`."""
        bits = 0
        for crc_bit in range(32):
            if change >> crc_bit & 1:
                bits ^= alone[crc_bit]
        out = 0
        for index, (char, bit) in enumerate(free):
            if bits >> index & 1:
                out |= 1 << (8 * char + bit)
        return out

    # The CRC of the blank tail after a prefix whose CRC is `c` is affine in `c`, and so is
    # the seal: a constant (the seal after a prefix of CRC 0, with the `@`s) and a part
    # linear in `c`, tabled by byte.
    after_zero = _crc32(blank, 0)
    constant = int.from_bytes(b"@" * _SEAL_CHARS, "little") ^ solve(after_zero ^ _SEAL_RESIDUE)
    column = [solve(_crc32(blank, 1 << bit) ^ after_zero) for bit in range(32)]
    tables = []
    for byte in range(4):
        table = []
        for value in range(256):
            seal = constant if byte == 0 else 0
            for bit in range(8):
                if value >> bit & 1:
                    seal ^= column[8 * byte + bit]
            table.append(seal)
        tables.append(table)
    return tables[0], tables[1], tables[2], tables[3]


_SEAL_T0, _SEAL_T1, _SEAL_T2, _SEAL_T3 = _seal_tables()
_SEAL_END: Final = b'"}\n'


def _seal(line: bytearray) -> None:
    """Append version 3's sealed tail to `line` (an encoded envelope without its closing
    brace): `,"crc":"<nine characters>"}` and the newline."""
    crc = _crc32(line)
    line += _CRC_KEY
    line += (
        _SEAL_T0[crc & 255]
        ^ _SEAL_T1[crc >> 8 & 255]
        ^ _SEAL_T2[crc >> 16 & 255]
        ^ _SEAL_T3[crc >> 24]
    ).to_bytes(_SEAL_CHARS, "little")
    line += _SEAL_END


def _check_seal(line: bytes) -> None:
    """Raise unless `line` is sealed as version 3 seals lines (a last line may lack its
    newline): saying what is wrong."""
    whole = line if line.endswith(b"\n") else line + b"\n"
    end = len(whole) - 1 - _SEAL_TAIL
    if whole[end : end + 8] != _CRC_KEY:
        raise LogFormatError(
            "the checksum is not where the writer puts it (the line was rewritten?)"
        )
    if _crc32(whole) != _SEAL_RESIDUE:
        raise LogFormatError("checksum mismatch: the line is damaged")


def decode_header(line: bytes) -> int:
    """Check the header line and return its format version. Raises `LogFormatError` (and
    nothing else) if it is not ours, or of a version this program cannot read."""
    try:
        header = _header_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise LogFormatError(f"not an oms event log header: {exc}") from None
    except _INPUT_ERRORS as exc:
        raise LogFormatError(f"not an oms event log header: {_unexpected(exc)}") from None
    if header.format != FORMAT:
        raise LogFormatError(f"not an oms event log: format is {header.format!r}")
    if header.version not in READABLE_VERSIONS:
        raise LogFormatError(
            f"log format version {_digits(header.version)} is not supported (this program "
            f"reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    return header.version


def check_ranges(event: Event) -> None:
    """Raise `LogFormatError` unless every decimal of `event` is in the range the log holds
    (finite; zero or an adjusted exponent within +-40) and every integer fits in 64 bits.

    The writer runs it on every event, so a log never holds a line it could not read back,
    and the reducer never meets a figure its fixed context cannot add or multiply exactly.
    """
    _CHECKERS[type(event)](event)


def _refuse(event: Event) -> None:
    """Raise the error for the first field of `event` that is out of range, if any."""
    cls = type(event)
    for field in _DECIMALS[cls]:
        value = getattr(event, field)
        if value is not None and not decimal_in_range(value):
            raise LogFormatError(
                f"{cls.__name__}: field {field} is not a decimal in range: {value}"
            )
    for field in _INTS[cls]:
        number = getattr(event, field)
        if number is not None and not INT_MIN <= number < _INT_END_OF.get(field, _INT64_END):
            raise LogFormatError(
                f"{cls.__name__}: field {field} is not a 64-bit integer: {_digits(number)}"
            )


def _refuse_balances(event: BalanceObserved) -> None:
    for balance in event.balances:
        for value in (balance.available, balance.locked, balance.staked):
            if not decimal_in_range(value):
                raise LogFormatError(
                    f"BalanceObserved: {balance.asset} is not a decimal in range: {value}"
                )


def _checker(cls: type[Event]) -> Callable[[Event], None]:
    """`check_ranges` for one event class: a test of each of its fields, written out (this
    runs on every append, and a loop over the fields costs twice as much). A value out of
    the quick tests goes to `_refuse`, which raises for the first field out of its own range
    (a trade id may use the unsigned half) and otherwise returns: then all are in range."""
    lines = [f"def check_{cls.__name__}(event):"]
    for name in _DECIMALS[cls]:
        lines += [
            f"    value = event.{name}",
            "    if value is not None and not (",
            "        value.is_finite() and (_LOW <= value.adjusted() <= _HIGH or not value)",
            "    ):",
            "        return _refuse(event)",
        ]
    for name in _INTS[cls]:
        lines += [
            f"    number = event.{name}",
            "    if number is not None and not INT_MIN <= number < _INT64_END:",
            "        return _refuse(event)",
        ]
    if cls is BalanceObserved:
        lines.append("    _refuse_balances(event)")
    lines.append("    return None")
    scope: dict[str, Any] = {
        "_LOW": _LOW,
        "_HIGH": _HIGH,
        "INT_MIN": INT_MIN,
        "_INT64_END": _INT64_END,
        "_refuse": _refuse,
        "_refuse_balances": _refuse_balances,
    }
    exec("\n".join(lines), scope)  # the names are our own classes' field names
    checker: Callable[[Event], None] = scope[f"check_{cls.__name__}"]
    return checker


_CHECKERS: Final = {cls: _checker(cls) for cls in EVENT_TYPES.values()}


def encode_header(version: int = FORMAT_VERSION) -> bytes:
    """The header line of a new log of format `version`, newline included."""
    return _encoder.encode({"format": FORMAT, "version": version}) + b"\n"


def encode_line(seq: int, event: Event, version: int = FORMAT_VERSION) -> bytes:
    """One log line for `event` with sequence number `seq`, newline included, in format
    `version` (a log is appended to in the format its header names).

    Raises `LogFormatError`, and writes nothing, for an event with a value out of range
    (`check_ranges`) or one that cannot be written as UTF-8 JSON (a string with a lone
    surrogate); `scrub` makes the latter writable.
    """
    line = bytearray()
    encode_line_into(seq, event, line, version)
    return bytes(line)


def encode_line_into(
    seq: int, event: Event, line: bytearray, version: int = FORMAT_VERSION
) -> None:
    """`encode_line`, written into `line` in place of what it held: a writer that appends
    many lines reuses one buffer. On `LogFormatError` what `line` holds is undefined."""
    _CHECKERS[type(event)](event)  # `check_ranges`
    if not INT_MIN <= seq < INT_END:
        raise LogFormatError(f"seq is not a 64-bit integer: {_digits(seq)}")
    try:
        if version == 1:
            line[:] = _encode_v1(seq, event)
            return
        # `{"seq":..,"v":..,"event":{..}}` in one pass; the closing brace makes way for the
        # checksum (version 2: of everything before it) or the seal (version 3).
        _encoder.encode_into(_LineOut(seq, _VERSION_OF[type(event)], event), line)
    except (ValueError, TypeError, OverflowError, msgspec.EncodeError) as exc:
        raise LogFormatError(f"{type(event).__name__} cannot be written: {exc}") from None
    del line[-1]
    if version == 3:
        _seal(line)
    else:
        line += _CRC_FIELD % _crc32(line)


def _encode_v1(seq: int, event: Event) -> bytes:
    """A version 1 line: the type beside the event, every field written, no checksum."""
    payload = {name: getattr(event, name) for name in event.__struct_fields__}
    name = type(event).__name__
    document = {"seq": seq, "type": name, "v": SCHEMA_VERSION[name], "event": payload}
    return _encoder.encode(document) + b"\n"


def _scrub_text(text: str) -> str:
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def scrub(event: Event) -> Event:
    """The event with every string made valid Unicode (lone surrogates become U+FFFD)."""
    changes: dict[str, Any] = {}
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if type(value) is str:
            changes[name] = _scrub_text(value)
        elif isinstance(value, OrderOrigin) and not value.is_known:
            # An origin the venue added is a member made from its text; it stays a member.
            changes[name] = OrderOrigin(_scrub_text(value.value))
    return msgspec.structs.replace(event, **changes)


def line_decoder(version: int, *, fold_only: bool = False) -> LineDecoder:
    """The decoder for lines of a log whose header says `version` (see `decode_header`).

    With `fold_only`, lines of version 2 or 3 decode the usual reports into their fold-only
    classes (`FOLD_ONLY`: `raw` left undecoded), for `ReplayFold` alone; the checks are the
    same."""
    if version == 1:
        return _decode_v1
    if version == 2:
        return _decode_v2_fold_only if fold_only else _decode_v2
    if version == 3:
        return _decode_v3_fold_only if fold_only else _decode_v3
    raise LogFormatError(f"log format version {_digits(version)} is not supported")


def decode_line(line: bytes | str, version: int = FORMAT_VERSION) -> tuple[int, Event]:
    """(seq, event) from one log line of a log of format `version`. Raises `LogFormatError`
    saying what is wrong, and nothing else: any damage to a line, however odd, is that one
    clear error."""
    data = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line
    return line_decoder(version)(data)


def _v2_decoder(
    decode: Callable[[bytes], _Line], *, fold_only: bool = False, version: int = 2
) -> LineDecoder:
    """A version 2 (or, with `version=3`, sealed) line decoder whose one-pass decode is
    `decode` (`_FoldLine`'s with `fold_only`): one body for the full and the fold-only decoder
    of each version, with no call more per line."""
    sealed = version == 3
    decode_parts = _decode_v3_parts if sealed else _decode_v2_parts

    def decode_v2(line: bytes) -> tuple[int, Event]:
        try:
            decoded = decode(line)
        except _INPUT_ERRORS:
            # Say precisely what is wrong (or upgrade an old schema version): the slow path.
            return _guarded(decode_parts, line)
        event = decoded.event
        cls = type(event)
        if decoded.v != 1 and decoded.v != _VERSION_OF[cls]:  # every type is at version 1 today
            return _guarded(decode_parts, line)
        if fold_only and cls in FULL_CLASS:
            # The fold-only `raw` takes any JSON value: refuse what the full decoder refuses
            # (a string or null, its first byte a quote or an `n`), as that decoder says it.
            raw: msgspec.Raw = event.raw  # type: ignore[assignment]
            if raw and memoryview(raw)[0] != 34 and bytes(raw) != b"null":
                return _guarded(decode_parts, line)
        if sealed:
            # The seal: one CRC of the line as read (`_check_seal` says what is wrong).
            if _crc32(line) != _SEAL_RESIDUE:
                _check_seal(line)
        else:
            # The checksum (`_check_crc`, inlined: this runs for every line replayed). The
            # line is not empty: it decoded.
            end = len(line) - (19 if line[-1] == 10 else 18)
            try:
                matches = line[end : end + 8] == _CRC_KEY and int(decoded.crc, 16) == _crc32(
                    line[:end]
                )
            except ValueError:
                matches = False
            if not matches:
                _check_crc(line, decoded.crc)
        if cls in _TRADE_ID_CLASSES and not INT_MIN <= event.trade_id < INT_END:  # type: ignore[union-attr]
            # The one integer field wider than the decoder's own int64 check (`Int64`).
            raise LogFormatError(
                f"OrderFilled: field trade_id is not a 64-bit integer: {_digits(event.trade_id)}"  # type: ignore[union-attr]
            )
        return decoded.seq, event

    return decode_v2


def _check_crc(line: bytes, crc: str) -> None:
    """Raise unless `crc` is the CRC-32 of the line's bytes before `,"crc":"`."""
    end = len(line) - (1 if line.endswith(b"\n") else 0) - _CRC_TAIL
    if line[end : end + 8] != _CRC_KEY:
        raise LogFormatError(
            "the checksum is not where the writer puts it (the line was rewritten?)"
        )
    try:
        # Compared as numbers: parsing the eight digits is cheaper than formatting the sum.
        matches = int(crc, 16) == _crc32(memoryview(line)[:end])
    except ValueError:
        matches = False
    if not matches:
        raise LogFormatError(f"checksum mismatch (line says {crc}): the line is damaged")


def _guarded(decode: LineDecoder, line: bytes) -> tuple[int, Event]:
    try:
        return decode(line)
    except LogFormatError:
        raise
    except UnicodeDecodeError:
        raise LogFormatError("not valid UTF-8") from None
    except _INPUT_ERRORS as exc:
        raise LogFormatError(_unexpected(exc)) from None


def _decode_v2_parts(line: bytes) -> tuple[int, Event]:
    return _decode_parts(line, 2)


def _decode_v3_parts(line: bytes) -> tuple[int, Event]:
    return _decode_parts(line, 3)


def _decode_parts(line: bytes, version: int) -> tuple[int, Event]:
    try:
        parts = _parts_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise LogFormatError(_describe(exc)) from None
    _check_envelope_ints(parts.seq, parts.v)
    try:
        name = _tag_decoder.decode(parts.event).type
    except msgspec.DecodeError as exc:
        raise LogFormatError(f"event: {_describe(exc)}") from None
    event = _decode_payload(name, parts.v, parts.event)
    if version == 3:
        _check_seal(line)
    else:
        _check_crc(line, parts.crc)
    if parts.v != SCHEMA_VERSION[name]:
        # An upgraded payload was written by an older program: check it as a version 1 line.
        check_ranges(event)
    return parts.seq, event


_decode_v2 = _v2_decoder(_line_decoder.decode)
_decode_v2_fold_only = _v2_decoder(_fold_line_decoder.decode, fold_only=True)  # type: ignore[arg-type]
_decode_v3 = _v2_decoder(_line_decoder.decode, version=3)
_decode_v3_fold_only = _v2_decoder(_fold_line_decoder.decode, fold_only=True, version=3)  # type: ignore[arg-type]


def _decode_v1(line: bytes) -> tuple[int, Event]:
    return _guarded(_decode_v1_unguarded, line)


def _decode_v1_unguarded(line: bytes) -> tuple[int, Event]:
    try:
        envelope = _v1_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise LogFormatError(_describe(exc)) from None
    _check_envelope_ints(envelope.seq, envelope.v)
    event = _decode_payload(envelope.type, envelope.v, envelope.event)
    # Version 1 lines carry no checksum: every value is checked as it is read.
    check_ranges(event)
    return envelope.seq, event


def _check_envelope_ints(seq: int, v: int) -> None:
    if not INT_MIN <= seq < INT_END:
        raise LogFormatError(f"field seq is not a 64-bit integer: {_digits(seq)}")
    if not INT_MIN <= v < INT_END:
        raise LogFormatError(f"field v is not a 64-bit integer: {_digits(v)}")


def _decode_payload(name: str, version: int, payload: msgspec.Raw) -> Event:
    decoder = _DECODERS.get(name)
    if decoder is None:
        raise LogFormatError(f"unknown event type {name!r}")
    if version != SCHEMA_VERSION[name]:
        payload = _upgrade(name, version, payload)
    try:
        return decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise LogFormatError(f"{name}: {_describe(exc)}") from None


def _unexpected(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    return f"{type(exc).__name__}: {exc}"


def _digits(value: int) -> str:
    """An int for a message: a damaged line can hold one thousands of digits long, which
    is neither readable nor (past 4,300 digits) convertible to text."""
    if value.bit_length() <= 128:
        return str(value)
    return f"{'-' if value < 0 else ''}an integer of {value.bit_length()} bits"


def _upgrade(name: str, version: int, payload: msgspec.Raw) -> msgspec.Raw:
    current = SCHEMA_VERSION[name]
    if version > current:
        raise LogFormatError(
            f"{name} schema version {_digits(version)} is newer than this program knows "
            f"({current}); upgrade oms to read this log"
        )
    if version < 1 or (name, version) not in UPGRADES:
        raise LogFormatError(f"{name} schema version {_digits(version)} is not known")
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
    if text.startswith("Object contains unknown field"):
        # "Object contains unknown field `x` - at `$.balances[0]`"
        field = text.split("`")[1] if "`" in text else "?"
        where = text.split("- at `", 1)[1].rstrip("`") if "- at `" in text else "$"
        if where.startswith("$.balances"):
            return f"unknown balance field(s) {field}"
        return f"unknown field(s) {field}"
    if text.startswith(("Expected `int` <=", "Expected `int` >=")) and "- at `$." in text:
        # The decoder's own int64 check (`oms.core.events.Int64`).
        return f"field {text.split('- at `$.', 1)[1].rstrip('`')} is not a 64-bit integer"
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


# Order fields added with conditional orders: written only when set, so the state documents
# and hashes of sessions without them are what they were.
_ORDER_OPTIONAL: Final = (
    "trigger_price",
    "trigger_quantity",
    "trigger_by",
    "stop_loss_trigger_price",
    "stop_loss_limit_price",
    "take_profit_trigger_price",
    "take_profit_limit_price",
    "related_order_id",
    "strategy_id",
)


def _order_doc(order: Order) -> dict[str, Any]:
    doc: dict[str, Any] = _plain(order)
    for name in _ORDER_OPTIONAL:
        if doc[name] is None:
            del doc[name]
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


def _position_books(position: Position) -> dict[str, Any]:
    books = {name: _plain(getattr(position, name)) for name in _POSITION_BOOKS}
    # Each fill's `after` figures follow from the checkpoint and the fills: not hashed.
    books["recent"] = [
        {"key": _plain(fill.key), "delta": _plain(fill.delta), "price": _plain(fill.price)}
        for fill in position.recent
    ]
    return books


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
    document: dict[str, Any] = {
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
        **_risk_doc(state),
    }
    if state.marks:
        # Only when the log recorded marks: a log without any keeps the document (and the
        # state hash) it had before marks were recorded.
        document["marks"] = [_plain(state.marks[s]) for s in sorted(state.marks.keys())]
    return document


def _risk_doc(state: State) -> dict[str, Any]:
    """The kill switch and the denials, once either was ever used (so the documents and
    hashes of logs that never used them are as before). The check's bookkeeping (submit times,
    PnL samples) is left out: it only serves the next decision."""
    if not state.risk.used:
        return {}
    return {"risk": risk_document(state.risk)}


def risk_document(risk: RiskState) -> dict[str, Any]:
    """The kill switch and the denials as a JSON-ready document (the state document's `risk`
    section, and the status view's)."""
    return {
        "kill_switch": {
            "tripped": risk.tripped,
            "reason": risk.trip_reason,
            "by": risk.trip_by,
            "seq": risk.trip_seq,
            "time_us": risk.trip_time_us,
            "trips": risk.trips,
            "resets": risk.resets,
        },
        "denials": {
            "total": risk.denials,
            "by_limit": dict(risk.denied_by_limit),
            "last": risk.last_denial,
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
        symbol: _position_books(position) for symbol, position in sorted(state.positions.items())
    }
    document["baseline_seq"] = state.baseline_seq
    document["retention"] = {
        "head": state.finished_head,
        "tail": state.finished_tail,
        "retain": state.retain_finished,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()
