"""The codec's fast path for order-stream frames gives exactly the events of the tolerant
readers, whatever the frame: it may only decline (and let the tolerant path decide).

Frames come from the recorded sessions in replay/, the copied venue samples, and Hypothesis:
order updates with every key the readers look at either absent or drawn from a pool of
values of the right shape and of every wrong one (strings for numbers, numbers for strings,
nulls, out-of-range figures, whitespace, lone surrogates, nesting, extra keys).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Final

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from oms.core.events import OrderFilled
from oms.core.serialization import encode_line
from oms.log import LogReader
from oms_backpack import codec
from tests.fuzz_settings import fuzz
from tests.helpers import DATA, REPLAY_DIR

RECV_US: Final = 1_757_620_800_123_456


def _same(text: str) -> bool:
    """Both paths agree on `text`; returns whether the fast path took it."""
    fast = codec._fast_order_update(text, RECV_US)
    tolerant = codec._decode_tolerant(text, RECV_US)
    assert codec.decode_ws_frame(text, RECV_US) == tolerant
    if fast is not None:
        assert tolerant.events == (fast,) and tolerant.venue_error is None
        # Equal decimals can differ in their digits ("0" and "0.0"): compare as logged too.
        assert encode_line(1, fast) == encode_line(1, tolerant.events[0])
    return fast is not None


def test_recorded_frames_take_the_fast_path_and_agree() -> None:
    taken = 0
    frames = 0
    for path in sorted(REPLAY_DIR.glob("*.jsonl")):
        for recorded in LogReader(path).events():
            if recorded.source.value != "ws" or recorded.raw is None:
                continue
            frames += 1
            taken += _same(recorded.raw)
            # And what was recorded is what either path derives again.
            assert codec.decode_ws_frame(recorded.raw, recorded.recv_time_us).events == (recorded,)
    assert frames > 20
    assert taken >= frames // 2  # fills, accepts and cancels are most of them


def test_venue_samples_agree() -> None:
    document = json.loads((DATA / "backpack" / "ccxt_source_comment_samples.json").read_text())
    for sample in document["ws"]:
        _same(json.dumps(sample["msg"]))


# --- generated frames ---------------------------------------------------------------------------

_ODD: Final[list[Any]] = [
    None,
    True,
    False,
    0,
    -1,
    7,
    2**32,
    2**63,
    2**64,
    10**30,
    1.5,
    1e5,
    "",
    " ",
    "0",
    "7",
    "-3",
    "0.00",
    " 1.5 ",
    "1_000",
    "1E+41",
    "1E-41",
    "9.99E+40",
    "NaN",
    "-Infinity",
    "abc",
    "\ud800",
    "true",
    "false",
    [],
    {},
    [[[[1]]]],
]
_KINDS: Final = [
    "orderFill",
    "orderAccepted",
    "orderCancelled",
    "orderExpired",
    "orderModified",
    "triggerPlaced",
    "triggerFailed",
    "somethingNew",
]
# Keys and values of the right shape, as the venue sends them.
_GOOD: Final[dict[str, st.SearchStrategy[Any]]] = {
    "e": st.sampled_from(_KINDS),
    "s": st.sampled_from(["SOL_USDC", "SOL_USDC_PERP"]),
    "E": st.integers(1_757_620_000_000_000, 1_757_630_000_000_000),
    "T": st.one_of(
        st.integers(1_757_620_000_000_000, 1_757_630_000_000_000),
        st.integers(1_757_620_000_000, 1_757_630_000_000),  # milliseconds: scaled
        st.integers(1_757_620_000, 1_757_630_000),  # seconds
        st.sampled_from([0, 2**63 - 1, 2**63]),
    ),
    "i": st.from_regex(r"[0-9]{6,12}", fullmatch=True),
    "c": st.integers(0, 2**32 - 1) | st.sampled_from([2**32 - 1, 2**32]),
    "o": st.sampled_from(["LIMIT", "MARKET", "Limit", "STOP_LIMIT"]),
    "y": st.booleans(),
    "O": st.sampled_from(["USER", "LIQUIDATION_AUTOCLOSE", "SOMETHING_NEW"]),
    "S": st.sampled_from(["Bid", "Ask"]),
    "f": st.sampled_from(["GTC", "IOC", "FOK", "DAY"]),
    "r": st.booleans(),
    "t": st.integers(0, 2**63 - 1) | st.sampled_from([0, 1, 2**63 - 1, 2**63]),
    "m": st.booleans(),
    "N": st.sampled_from(["USDC", "SOL"]),
    "X": st.sampled_from(["New", "PartiallyFilled", "Filled", "Cancelled", "Expired", "Odd"]),
    "R": st.sampled_from(["PostOnlyTaker", "FillOrKill"]),
    "V": st.just("RejectTaker"),
}
for _key in ("q", "p", "Q", "l", "L", "n", "z", "Z"):
    _GOOD[_key] = st.decimals(
        min_value=0, max_value=10**6, places=4, allow_nan=False, allow_infinity=False
    ).map(str) | st.sampled_from(["0", "0.0", "9.99E+40", "1E+41", "1E-40", "1E-41"])


@st.composite
def order_frames(draw: st.DrawFn) -> str:
    data: dict[str, Any] = {}
    odd = draw(st.sampled_from([0, 1, 3]))  # how many keys get a value of the wrong shape
    odd_keys = set(draw(st.lists(st.sampled_from(sorted(_GOOD)), max_size=odd)))
    for key, good in _GOOD.items():
        if draw(st.integers(0, 14)) == 0:
            continue  # absent
        data[key] = draw(st.sampled_from(_ODD)) if key in odd_keys else draw(good)
    if draw(st.integers(0, 9)) == 0:
        data[draw(st.sampled_from(["x", "zz", "data"]))] = draw(st.sampled_from(_ODD))
    frame: dict[str, Any] = {
        "stream": draw(
            st.sampled_from(
                ["account.orderUpdate", "account.orderUpdate.SOL_USDC", "account.positionUpdate"]
            )
        ),
        "data": data,
    }
    if draw(st.integers(0, 19)) == 0:
        frame[draw(st.sampled_from(["error", "result", "id"]))] = draw(st.sampled_from(_ODD))
    return json.dumps(frame, ensure_ascii=draw(st.booleans()))


@fuzz(600)
@given(order_frames())
def test_generated_frames_agree(text: str) -> None:
    event("fast" if _same(text) else "tolerant")


def test_a_usual_fill_is_taken_by_the_fast_path() -> None:
    text = json.dumps(
        {
            "stream": "account.orderUpdate",
            "data": {
                "e": "orderFill",
                "E": 1757620800100001,
                "T": 1757620800100000,
                "s": "SOL_USDC",
                "c": 7,
                "S": "Bid",
                "o": "LIMIT",
                "f": "GTC",
                "q": "1.50",
                "p": "150.25",
                "X": "PartiallyFilled",
                "i": "8284661101",
                "t": 2888471,
                "l": "0.50",
                "L": "150.25",
                "m": True,
                "n": "0.0005",
                "N": "SOL",
                "z": "0.50",
                "Z": "75.125",
                "O": "USER",
                "y": False,
            },
        }
    )
    fast = codec._fast_order_update(text, RECV_US)
    assert isinstance(fast, OrderFilled)
    assert (fast.quantity, fast.cum_quote, fast.trade_id) == (
        Decimal("0.50"),
        Decimal("75.125"),
        2888471,
    )
    assert _same(text)


def test_repeated_keys_are_read_as_the_tolerant_reader_reads_them() -> None:
    base = (
        '{"stream":"account.orderUpdate","data":{"e":"orderFill","T":1757620800100000,'
        '"s":"SOL_USDC","S":"Bid","i":"8284661101","l":"0.5","L":"150","m":true,%s}}'
    )
    for repeated in ('"t":5,"t":6', '"t":6,"t":null', '"t":"x","t":6', '"l":"1","l":"2","t":6'):
        _same(base % repeated)  # asserts the two paths agree, whichever takes the frame
    assert codec._fast_order_update(base % '"t":5,"t":6', RECV_US) is not None


_CLEAN_FILL: Final = {
    "e": "orderFill",
    "T": 1757620800100000,
    "s": "SOL_USDC",
    "S": "Bid",
    "i": "8284661101",
    "l": "0.5",
    "L": "150",
    "m": True,
    "t": 6,
    "c": 7,
    "n": "0.01",
    "N": "USDC",
}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("c", 2**32 - 1),
        ("c", 2**32),
        ("c", -1),
        ("t", 2**63 - 1),
        ("t", 2**63),
        ("t", 0),
        ("T", 2**63 - 1),
        ("T", 2**63),
        ("T", 1_757_620_800_100),
        ("l", "9.99E+40"),
        ("l", "1E+41"),
        ("L", "1E-41"),
        ("n", "0"),
        ("n", "0.000"),
        ("n", None),
        ("X", "Unheard"),
        ("o", "limit"),
    ],
)
def test_a_fill_at_each_boundary_agrees(key: str, value: Any) -> None:
    _same(json.dumps({"stream": "account.orderUpdate", "data": _CLEAN_FILL | {key: value}}))
