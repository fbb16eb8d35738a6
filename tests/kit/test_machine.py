"""The test kit's state machine, run as a user's test suite would run it."""

from __future__ import annotations

from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from oms.testing.machine import EngineMachine

SMALL = settings(max_examples=3, stateful_step_count=6, deadline=None)


def test_the_engine_keeps_its_guarantees_under_random_rules() -> None:
    run_state_machine_as_test(EngineMachine, settings=SMALL)
