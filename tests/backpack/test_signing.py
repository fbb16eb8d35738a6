"""Backpack signing: every published and self-computed vector, and secret hygiene."""

from __future__ import annotations

import json
import pickle
from decimal import Decimal
from typing import Any

import pytest

from oms_backpack.signing import Credentials, CredentialsError, signing_string
from tests.helpers import DATA

SAMPLES = DATA / "backpack"  # see tests/data/README.md
VECTORS: dict[str, Any] = json.loads(
    (SAMPLES / "self_computed_signature_vectors.json").read_text(encoding="utf-8")
)
KEYSETS = [name for name in VECTORS if not name.startswith("_")]
HB_SECRET = VECTORS["hummingbot_test_secret"]["secret_seed_b64"]
TS = 1614550000000


@pytest.mark.parametrize(
    ("keyset", "index"),
    [(k, i) for k in KEYSETS for i in range(len(VECTORS[k]["vectors"]))],
)
def test_every_vector_signs_to_the_expected_signature(keyset: str, index: int) -> None:
    data = VECTORS[keyset]
    vector = data["vectors"][index]
    credentials = Credentials(data["secret_seed_b64"])
    assert credentials.api_key == data["public_key_b64 (X-API-Key)"]
    assert credentials.sign(vector["message"]) == vector["signature_b64 (X-Signature)"]


def test_cancel_example_from_the_docs() -> None:
    # Body {"orderId": 28, "symbol": "BTC_USDT"}: params sorted, instruction first.
    text = signing_string("orderCancel", {"symbol": "BTC_USDT", "orderId": 28}, TS)
    assert (
        text
        == "instruction=orderCancel&orderId=28&symbol=BTC_USDT&timestamp=1614550000000&window=5000"
    )


def test_order_execute_lowercases_booleans_and_keeps_decimal_strings_exact() -> None:
    body: dict[str, str | int | bool | Decimal | None] = {
        "symbol": "SOL_USDC",
        "side": "Bid",
        "orderType": "Limit",
        "quantity": "10",
        "price": "100.5",
        "postOnly": True,
        "timeInForce": "GTC",
        "clientId": 123,
        "reduceOnly": None,  # absent values are left out, never signed as null
    }
    text = signing_string("orderExecute", body, TS)
    assert text == VECTORS["hummingbot_test_secret"]["vectors"][3]["message"]
    assert "reduceOnly" not in text
    trailing_zeros = signing_string("orderExecute", {"price": "100.50"}, TS)
    assert "&price=100.50&" in trailing_zeros


def test_batch_repeats_the_instruction_per_order_and_signs_once() -> None:
    orders = [
        {
            "symbol": "SOL_USDC_PERP",
            "side": "Bid",
            "orderType": "Limit",
            "price": "141",
            "quantity": "12",
        },
        {
            "symbol": "SOL_USDC_PERP",
            "side": "Bid",
            "orderType": "Limit",
            "price": "140",
            "quantity": "11",
        },
    ]
    text = signing_string("orderExecute", orders, 1750793021519)
    assert text == VECTORS["hummingbot_test_secret"]["vectors"][5]["message"]
    assert text.count("timestamp=") == 1


def test_no_params_signs_instruction_timestamp_and_window() -> None:
    assert signing_string("balanceQuery", None, TS, 5000) == (
        "instruction=balanceQuery&timestamp=1614550000000&window=5000"
    )


def test_headers_carry_key_signature_timestamp_and_window() -> None:
    credentials = Credentials(HB_SECRET)
    headers = credentials.headers("balanceQuery", {}, TS, 5000)
    assert headers == {
        "X-API-Key": "1dCOvaOfUlYl8m8gNNUUA2cs9VZyaSD9vuwNgi944uM=",
        "X-Signature": VECTORS["hummingbot_test_secret"]["vectors"][2][
            "signature_b64 (X-Signature)"
        ],
        "X-Timestamp": "1614550000000",
        "X-Window": "5000",
    }


def test_subscribe_frame_is_signed_with_the_subscribe_instruction() -> None:
    frame = Credentials(HB_SECRET).subscribe_frame(["account.orderUpdate"], TS)
    assert frame == {
        "method": "SUBSCRIBE",
        "params": ["account.orderUpdate"],
        "signature": [
            "1dCOvaOfUlYl8m8gNNUUA2cs9VZyaSD9vuwNgi944uM=",
            VECTORS["hummingbot_test_secret"]["vectors"][1]["signature_b64 (X-Signature)"],
            "1614550000000",
            "5000",
        ],
    }


def test_a_64_byte_secret_signs_with_its_first_32_bytes() -> None:
    data = VECTORS["ccxt_static_test_secret"]
    assert Credentials(data["secret_seed_b64"]).api_key == data["public_key_b64 (X-API-Key)"]


def test_the_secret_never_shows_in_repr_str_or_pickle() -> None:
    credentials = Credentials(HB_SECRET)
    for text in (repr(credentials), str(credentials), f"{credentials}"):
        assert HB_SECRET not in text
        assert "hidden" in text
    with pytest.raises(TypeError):
        pickle.dumps(credentials)


@pytest.mark.parametrize(
    "secret",
    ["not base64!!", "c2hvcnQ=", HB_SECRET[:-4]],
)
def test_bad_secrets_fail_clearly_without_echoing_them(secret: str) -> None:
    with pytest.raises(CredentialsError) as info:
        Credentials(secret)
    assert secret not in str(info.value)
    assert info.value.__cause__ is None


def test_an_api_key_that_does_not_match_the_secret_is_refused() -> None:
    other = VECTORS["rfc8032_test1_seed"]["public_key_b64 (X-API-Key)"]
    with pytest.raises(CredentialsError, match="does not belong"):
        Credentials(HB_SECRET, api_key=other)
