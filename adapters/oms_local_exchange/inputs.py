"""Strict parsers for what clients send: integers, decimals and JSON documents.

Pure, standard library only. Every number and document a client sends reaches the exchange
through these functions, so hostile input stops here with a `BadInput` naming the reason,
and the caller answers with the venue's refusal for that place (a 400 body, a 401, a
WebSocket error frame). Nothing downstream sees a value these parsers did not bound:

- integers are ASCII digits only (`str.isdigit` also accepts "²" and other Unicode digits,
  which `int` then refuses), at most 19 of them, and at most `maximum` (ids and timestamps
  fit int64, client ids uint32), so `int` never meets its 4,300-digit limit;
- decimals are finite, with at most `MAX_DECIMAL_DIGITS` significant digits and an adjusted
  exponent within +-`MAX_DECIMAL_EXPONENT`, so sums, products and roundings of two of them
  stay far inside the venue's arithmetic context;
- JSON documents nest at most `MAX_JSON_DEPTH` deep, checked by a flat scan before the
  (recursive) decoder runs; floats become exact `Decimal`s; NaN and Infinity are refused.

This module is the exchange's own: it must not import the engine (`oms`) or the client
modules, so that the exchange stays an independent judge of them.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Final

__all__ = [
    "INT64_MAX",
    "MAX_DECIMAL_DIGITS",
    "MAX_DECIMAL_EXPONENT",
    "MAX_JSON_DEPTH",
    "UINT32_MAX",
    "BadInput",
    "int_value",
    "load_json",
    "parse_decimal",
    "parse_int",
]

JSON = Any
INT64_MAX: Final = 2**63 - 1
UINT32_MAX: Final = 2**32 - 1
MAX_DECIMAL_EXPONENT: Final = 40
MAX_DECIMAL_DIGITS: Final = 50
MAX_JSON_DEPTH: Final = 16
# Longer text cannot be a decimal within the bounds above (digits, point, sign, exponent).
_MAX_DECIMAL_TEXT: Final = 128
_MAX_INT_DIGITS: Final = len(str(INT64_MAX))

# `[0-9]`, not `\d`: in a str pattern `\d` matches every Unicode decimal digit.
_INT: Final = re.compile(r"[0-9]+")
_DECIMAL: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# The depth scan drops every string (to its closing quote, or to the end if it never
# closes, so that the scan stays linear), then everything but brackets, all at C speed.
_STRING: Final = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_SQUARE: Final = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET: Final = bytes(set(range(256)) - set(b"[]{}"))


class BadInput(ValueError):
    """A value or document the exchange refuses; `reason` says why, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_int(text: str, maximum: int = INT64_MAX) -> int:
    """A non-negative integer written in ASCII digits, at most `maximum` (<= int64)."""
    if not text:
        raise BadInput("cannot parse integer from empty string")
    if not _INT.fullmatch(text):
        raise BadInput("invalid digit found in string")
    significant = text.lstrip("0") or "0"
    if len(significant) > _MAX_INT_DIGITS or int(significant) > maximum:
        raise BadInput("number too large to fit in target type")
    return int(significant)


def int_value(value: JSON, maximum: int = INT64_MAX) -> int:
    """A JSON integer (not a boolean) in 0..`maximum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput("expected an integer")
    if value < 0:
        raise BadInput("invalid digit found in string")
    if value > maximum:
        raise BadInput("number too large to fit in target type")
    return value


def parse_decimal(value: JSON) -> Decimal:
    """A decimal sent as a string (ASCII, `-1.5`, `2E+3`), a JSON number or an integer,
    finite and within the bounds of this module."""
    if isinstance(value, bool):
        raise BadInput("expected a decimal")
    if isinstance(value, str):
        if len(value) > _MAX_DECIMAL_TEXT or not _DECIMAL.fullmatch(value):
            raise BadInput("invalid decimal")
        try:
            number = Decimal(value)
        except InvalidOperation:  # an exponent beyond what Decimal can hold at all
            raise BadInput("decimal out of range") from None
    elif isinstance(value, int):
        if value.bit_length() > 160:  # far beyond 1e41, and cheap to test
            raise BadInput("decimal out of range")
        number = Decimal(value)
    elif isinstance(value, Decimal):
        number = value
    else:
        raise BadInput("expected a decimal")
    if not number.is_finite():
        raise BadInput("invalid decimal")
    digits = number.as_tuple().digits
    if len(digits) > MAX_DECIMAL_DIGITS:
        raise BadInput("decimal has too many digits")
    if number and abs(number.adjusted()) > MAX_DECIMAL_EXPONENT:
        raise BadInput("decimal out of range")
    return number if number else Decimal(0)  # a zero with any exponent is plain zero


def _check_depth(text: str, max_depth: int) -> None:
    if text.count("[") + text.count("{") <= max_depth:
        return  # cannot nest deeper than it has brackets
    raw = text.encode("utf-8", "surrogatepass")
    brackets = _STRING.sub(b"", raw).translate(_SQUARE, _NOT_BRACKET)
    # Each pass removes the innermost pairs: `max_depth` passes empty a balanced text that
    # nests no deeper. What remains then is deeper nesting, or unbalanced brackets of which
    # the decoder could still open many before it fails.
    for _ in range(max_depth):
        inner_removed = brackets.replace(b"[]", b"")
        if inner_removed == brackets:
            break
        brackets = inner_removed
    if b"[]" in brackets or brackets.count(b"[") > max_depth:
        raise BadInput(f"nesting deeper than {max_depth} levels")


def _json_decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        # An exponent beyond what Decimal can hold at all.
        raise BadInput("number out of range") from None


def _json_constant(text: str) -> None:
    raise BadInput(f"{text} is not a JSON value")


def load_json(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> JSON:
    """One JSON document, UTF-8 if bytes; `BadInput` for anything else."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput("invalid UTF-8") from None
    else:
        text = raw
    _check_depth(text, max_depth)
    try:
        return json.loads(text, parse_float=_json_decimal, parse_constant=_json_constant)
    except BadInput:
        raise
    except json.JSONDecodeError as exc:
        raise BadInput(f"{exc.msg}: line {exc.lineno} column {exc.colno}") from None
    except ValueError:
        # An integer beyond Python's conversion limit (4,300 digits).
        raise BadInput("number out of range") from None
    except RecursionError:  # unreachable after the depth check; kept as a last guard
        raise BadInput(f"nesting deeper than {max_depth} levels") from None
