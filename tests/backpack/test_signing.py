"""Backpack signing: every published and self-computed vector, and secret hygiene."""

from __future__ import annotations

import base64
import copy
import json
import os
import pickle
import threading
from decimal import Decimal
from typing import Any

import nacl.bindings
import nacl.exceptions
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oms_backpack import signing
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


# --- nonces made ahead (the module doc) ---------------------------------------------------------


def _public(credentials: Credentials) -> bytes:
    return base64.b64decode(credentials.api_key)


def _verifies(credentials: Credentials, message: str, signature_b64: str) -> bool:
    data = message.encode()
    signature = base64.b64decode(signature_b64)
    try:
        return nacl.bindings.crypto_sign_open(signature + data, _public(credentials)) == data
    except nacl.exceptions.BadSignatureError:
        return False


def _b64(seed: bytes) -> str:
    return base64.b64encode(seed).decode()


@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=300))
def test_the_pooled_steps_give_libsodiums_signature_from_libsodiums_nonce(
    seed: bytes, message: bytes
) -> None:
    """`Credentials`' own pooled steps (its scalar, derived from the seed; its public key),
    given the nonce RFC 8032 derives from the message, give byte for byte what libsodium's
    `crypto_sign` gives: the arithmetic is right, and only where the nonce comes from
    differs. (The same check the module runs once at import, for one fixed key.)"""
    assert signing._steps_agree(seed, message)


@given(seed=st.binary(min_size=32, max_size=32), message=st.text(max_size=200))
def test_signatures_from_the_pool_verify_for_any_key(seed: bytes, message: str) -> None:
    credentials = Credentials(_b64(seed))
    assert credentials.add_nonces(1) == 1
    signature = credentials.sign(message)
    assert credentials.nonces_left == 0
    assert _verifies(credentials, message, signature)


def test_the_module_checked_its_steps_at_import() -> None:
    assert signing._POOLED  # this pynacl has the primitives, and they agreed
    assert signing._steps_agree()


def test_pooled_signatures_verify_spend_one_nonce_each_and_never_repeat_one() -> None:
    credentials = Credentials(HB_SECRET)
    vector = VECTORS["hummingbot_test_secret"]["vectors"][3]
    assert credentials.nonces_left == 0
    assert credentials.add_nonces(40) == 40
    pooled = []
    for left in range(39, -1, -1):
        pooled.append(credentials.sign(vector["message"]))
        assert credentials.nonces_left == left
    assert all(_verifies(credentials, vector["message"], sig) for sig in pooled)
    # The same message each time, yet 40 different `R`s: a random nonce per signature.
    assert len({base64.b64decode(sig)[:32] for sig in pooled}) == 40
    assert vector["signature_b64 (X-Signature)"] not in pooled
    # The pool spent: libsodium's deterministic signature, as before the pool existed.
    assert credentials.sign(vector["message"]) == vector["signature_b64 (X-Signature)"]
    assert not _verifies(credentials, vector["message"] + " ", pooled[0])


@pytest.mark.parametrize("how", ["another process id", "another generation"])
def test_nonces_made_in_another_process_are_thrown_away_unused(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A pair made in another process is never used: one with another process id (a fork
    that ran no Python hooks), or one from an earlier generation with the same process id (a
    grandchild given its grandparent's recycled id)."""
    credentials = Credentials(HB_SECRET)
    vector = VECTORS["hummingbot_test_secret"]["vectors"][3]
    credentials.add_nonces(5)
    if how == "another process id":
        real = os.getpid()
        monkeypatch.setattr(signing.os, "getpid", lambda: real + 1)
    else:
        monkeypatch.setattr(signing, "_GENERATION", [signing._Generation()])
    assert credentials.sign(vector["message"]) == vector["signature_b64 (X-Signature)"]
    assert credentials.nonces_left == 0


def test_the_fork_hook_empties_every_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = Credentials(HB_SECRET), Credentials(HB_SECRET)
    first.add_nonces(3)
    second.add_nonces(2)
    monkeypatch.setattr(signing, "_GENERATION", [signing._GENERATION[0]])  # restored after
    before = signing._GENERATION[0]
    signing._after_fork_in_child()
    assert signing._GENERATION[0] is not before
    assert first.nonces_left == second.nonces_left == 0
    first.add_nonces(1)
    assert _verifies(first, "x", first.sign("x"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_signs_with_its_parents_nonces() -> None:
    credentials = Credentials(HB_SECRET)
    vector = VECTORS["hummingbot_test_secret"]["vectors"][3]
    credentials.add_nonces(3)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's side, reported through the pipe
        try:
            os.write(write_end, credentials.sign(vector["message"]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        in_child = pipe.read().decode()
    os.waitpid(child, 0)
    assert in_child == vector["signature_b64 (X-Signature)"]  # made in full
    in_parent = credentials.sign(vector["message"])
    assert credentials.nonces_left == 2  # the parent still spends its own
    assert _verifies(credentials, vector["message"], in_parent)
    assert in_parent != in_child


def test_threads_signing_at_once_never_share_a_nonce() -> None:
    credentials = Credentials(HB_SECRET)
    message = VECTORS["hummingbot_test_secret"]["vectors"][3]["message"]
    credentials.add_nonces(1200)
    found: list[list[str]] = [[] for _ in range(4)]

    def work(into: list[str]) -> None:
        for _ in range(300):
            into.append(credentials.sign(message))

    refill = threading.Thread(target=credentials.add_nonces, args=(200,))
    threads = [threading.Thread(target=work, args=(into,)) for into in found]
    for thread in [refill, *threads]:
        thread.start()
    for thread in [refill, *threads]:
        thread.join()
    signatures = [sig for into in found for sig in into]
    assert credentials.nonces_left == 200
    assert len({base64.b64decode(sig)[:32] for sig in signatures}) == 1200
    assert all(_verifies(credentials, message, sig) for sig in signatures)


def test_a_mismatched_api_key_leaves_no_secret_in_the_traceback() -> None:
    other = VECTORS["rfc8032_test1_seed"]["public_key_b64 (X-API-Key)"]
    with pytest.raises(CredentialsError) as info:
        Credentials(HB_SECRET, api_key=other)
    for entry in info.traceback:
        for value in entry.frame.f_locals.values():
            assert HB_SECRET not in repr(value)
            if isinstance(value, bytes):  # the public key only: no seed, secret key or scalar
                assert value == base64.b64decode(Credentials(HB_SECRET).api_key)


def test_credentials_cannot_be_copied_so_no_copy_shares_the_nonces() -> None:
    credentials = Credentials(HB_SECRET)
    credentials.add_nonces(2)
    for duplicate in (copy.copy, copy.deepcopy):
        with pytest.raises(TypeError):
            duplicate(credentials)
    assert credentials.nonces_left == 2
    assert "nonce" not in repr(credentials)
