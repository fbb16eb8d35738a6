"""Shared test configuration.

The tests mirror the packages: `core/` (`oms.core`), `shell/` (the `oms` shell: engine, log,
replay), `backpack/` (`oms_backpack`), `local_exchange/` (`oms_local_exchange`) and `system/`
(end to end, the docs, the layout, the public face, the wheel). What they share lives here at
the root and is imported, never copied: `helpers` (paths, waiting, the local exchange on a
manual clock with our clients on it), `strategies` (events and Hypothesis strategies),
`e2e_support` (the engine against the local exchange, and its judge), `fuzz_settings`, and
`data/`.

Hypothesis runs without a deadline everywhere: the machine is shared, so per-example timings
are noise, and no test asserts a wall-clock time. Example counts are set per test.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("oms", deadline=None)
settings.load_profile("oms")
