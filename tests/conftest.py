"""Shared test configuration.

Hypothesis runs without a deadline everywhere: the machine is shared, so per-example timings
are noise, and no test asserts a wall-clock time. Example counts are set per test.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("oms", deadline=None)
settings.load_profile("oms")
