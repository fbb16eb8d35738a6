"""The submit benchmark: it runs against a local exchange of its own and prints every figure.

Speed is never asserted; only that the figures are there and measured where the bench says
(at the socket: one send per order, the whole request).
"""

from __future__ import annotations

import re

import pytest

from oms_backpack.bench_submit import main, measure_submit

NUMBER = r"\d[\d,]*(?:\.\d+)?"


def test_measure_submit_times_each_order_to_its_last_byte_at_the_socket() -> None:
    figures = measure_submit(30)
    assert figures["samples"] == 30
    assert 0 < figures["p50_us"] <= figures["p99_us"]
    for part in ("before_record", "record", "signing", "http"):
        assert 0 < figures[f"{part}_p50_us"] < figures["p99_us"]
    # The order is applied to the state (and the listeners called) after its bytes left.
    assert figures["applied_after_write"] == 30
    assert figures["applied_after_send_p50_us"] > 0
    # One send carries the whole request: its headers and the order's JSON body.
    assert figures["sends_per_request"] == 1
    assert 400 < figures["request_bytes"] < 1000
    assert figures["failed_submits"] == 0  # every order was placed
    # Signed as a user's session signs: with the nonces its task makes ahead.
    assert 0 < figures["pooled_signatures"] <= 30


def test_main_prints_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--samples", "25"]) == 0
    out = capsys.readouterr().out
    expected = [
        rf"submit -> request bytes at the socket, p50 \(25 orders\)\s+{NUMBER} µs\s+< 200 µs\s+"
        r"(PASS|MISS)",
        rf"submit -> request bytes at the socket, p99\s+{NUMBER} µs",
        rf"gate, checks, request spec, p50\s+{NUMBER} µs",
        rf"engine log append, p50\s+{NUMBER} µs",
        rf"signing, p50\s+{NUMBER} µs",
        r"signed with a nonce made ahead\s+\d+ of 25",
        rf"HTTP layer to the last byte, p50\s+{NUMBER} µs",
        rf"after the span: the order applied, listeners, p50\s+{NUMBER} µs",
        r"applied after the write\s+25 of 25",
        r"send calls / bytes per request\s+1 / \d+",
    ]
    for pattern in expected:
        assert re.search(pattern, out), f"missing {pattern!r} in:\n{out}"


def test_samples_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--samples", "0"])
    assert exit_.value.code == 2
    with pytest.raises(ValueError, match="at least 1"):
        measure_submit(0)
