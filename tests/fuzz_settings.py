"""Example counts for the fuzz tests: small by default, so CI stays quick; larger on request.

    OMS_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/backpack/test_codec_fuzz.py \
        tests/shell/test_log_fuzz.py

runs every fuzz test with that many examples instead of its default.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["fuzz"]

_VARIABLE = "OMS_FUZZ_EXAMPLES"


def _examples_from_environment() -> int | None:
    text = os.environ.get(_VARIABLE, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{_VARIABLE} must be a positive integer, not {text!r}")
    return int(text)


def fuzz(default_examples: int) -> settings:
    """Settings for one fuzz test: `default_examples`, or `OMS_FUZZ_EXAMPLES` when set."""
    examples = _examples_from_environment() or default_examples
    return settings(
        max_examples=examples,
        deadline=None,
        # Generated inputs are large on purpose (deep nesting, long numbers).
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
