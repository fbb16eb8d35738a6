"""The exchange's own signature checking and key pairs (`oms_local_exchange.auth`).

The exchange rebuilds the signed text from the request on its side, independently of the
client's signer; these tests pin it to the fact sheet's worked examples and self-computed
vectors (tests/data/backpack), and check that the two independent builders agree on any
parameters a client can send.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oms_backpack.signing import Credentials
from oms_backpack.signing import signing_string as client_signing_string
from oms_local_exchange import ApiError, KeyPair
from oms_local_exchange.auth import (
    check_request,
    check_subscription,
    signature_valid,
    signing_string,
)
from tests.helpers import DATA

VECTORS: dict[str, Any] = json.loads(
    (DATA / "backpack" / "self_computed_signature_vectors.json").read_text(encoding="utf-8")
)
HUMMINGBOT = VECTORS["hummingbot_test_secret"]
STAMP = 1_614_550_000_000


def test_the_signed_text_is_rebuilt_as_the_docs_examples_show() -> None:
    # A cancel body (fact sheet §1.6): the instruction first, then the sorted parameters.
    assert signing_string("orderCancel", {"symbol": "BTC_USDT", "orderId": 28}, STAMP, 5000) == (
        "instruction=orderCancel&orderId=28&symbol=BTC_USDT&timestamp=1614550000000&window=5000"
    )
    # A batch: instruction and parameters per order, the timestamp and window once.
    batch = [
        {"symbol": "SOL_USDC_PERP", "side": "Bid", "orderType": "Limit", "price": Decimal(141),
         "quantity": Decimal(12)},
        {"symbol": "SOL_USDC_PERP", "side": "Bid", "orderType": "Limit", "price": Decimal(140),
         "quantity": Decimal(11)},
    ]  # fmt: skip
    assert signing_string("orderExecute", batch, 1_750_793_021_519, 5000) == (
        "instruction=orderExecute&orderType=Limit&price=141&quantity=12&side=Bid"
        "&symbol=SOL_USDC_PERP&instruction=orderExecute&orderType=Limit&price=140&quantity=11"
        "&side=Bid&symbol=SOL_USDC_PERP&timestamp=1750793021519&window=5000"
    )
    # Booleans lowercase, numbers as written, nulls left out; no parameters at all.
    body = {"symbol": "SOL_USDC", "postOnly": True, "price": Decimal("100.5"), "clientId": 123,
            "reduceOnly": None}  # fmt: skip
    assert signing_string("orderExecute", body, STAMP, 5000) == (
        "instruction=orderExecute&clientId=123&postOnly=true&price=100.5&symbol=SOL_USDC"
        "&timestamp=1614550000000&window=5000"
    )
    assert signing_string("subscribe", None, STAMP, 5000) == (
        "instruction=subscribe&timestamp=1614550000000&window=5000"
    )


@pytest.mark.parametrize("name", ["hummingbot_test_secret", "ccxt_static_test_secret",
                                  "rfc8032_test1_seed"])  # fmt: skip
def test_self_computed_vectors_verify_and_the_key_is_derived_from_the_secret(name: str) -> None:
    entry = VECTORS[name]
    keys = KeyPair.from_secret(entry["secret_seed_b64"])  # a 64-byte secret: its first 32
    assert keys.api_key == entry["public_key_b64 (X-API-Key)"]
    for vector in entry["vectors"]:
        signature = vector["signature_b64 (X-Signature)"]
        assert signature_valid(keys.api_key, signature, vector["message"])
        assert not signature_valid(keys.api_key, signature, vector["message"] + " ")


def test_a_key_pair_hides_its_secret_and_the_client_derives_the_same_key() -> None:
    keys = KeyPair.generate()
    assert keys.api_secret not in repr(keys)
    assert Credentials(keys.api_secret).api_key == keys.api_key
    with pytest.raises(ValueError, match="base64"):
        KeyPair.from_secret("not base64!")
    with pytest.raises(ValueError, match="bytes"):
        KeyPair.from_secret("c2hvcnQ=")


def test_a_request_and_a_subscription_signed_by_the_client_are_accepted() -> None:
    client = Credentials(HUMMINGBOT["secret_seed_b64"])
    known = {client.api_key}.__contains__
    params = {"symbol": "SOL_USDC", "clientId": "123"}
    headers = {k.lower(): v for k, v in client.headers("orderQuery", params, STAMP).items()}
    assert check_request(headers, "orderQuery", params, STAMP, known) == client.api_key
    frame = client.subscribe_frame(["account.orderUpdate"], STAMP)
    assert check_subscription(frame["signature"], STAMP, known) == client.api_key
    # Signed for one instruction, presented for another: refused.
    with pytest.raises(ApiError, match="Invalid signature"):
        check_request(headers, "orderCancel", params, STAMP, known)


_KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1,
                max_size=12)  # fmt: skip
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=0, max_value=2**63 - 1),
    st.decimals(allow_nan=False, allow_infinity=False, places=6),
    st.text(alphabet=st.characters(codec="ascii", exclude_characters="&="), max_size=12),
)
_PARAMS = st.dictionaries(_KEYS, _VALUES, max_size=8)


@given(
    params=st.one_of(st.none(), _PARAMS, st.lists(_PARAMS, min_size=1, max_size=3)),
    timestamp=st.integers(min_value=0, max_value=2**63 - 1),
    window=st.integers(min_value=1, max_value=60_000),
)
def test_the_exchange_and_the_client_build_the_same_text(
    params: dict[str, Any] | list[dict[str, Any]] | None, timestamp: int, window: int
) -> None:
    """Two builders written apart agree: a disagreement would be a bug in one of them."""
    assert signing_string("orderExecute", params, timestamp, window) == client_signing_string(
        "orderExecute", params, timestamp, window
    )
