"""The test kit's state machine, run as a user's test suite would run it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import invariant, rule, run_state_machine_as_test

from oms import OrderType, Side
from oms.testing.machine import EngineMachine
from oms_backpack import BackpackSession

SMALL = settings(max_examples=3, stateful_step_count=6, deadline=None)


def test_the_engine_keeps_its_guarantees_under_random_rules() -> None:
    run_state_machine_as_test(EngineMachine, settings=SMALL)


class Quoter:
    """A user's strategy: one post-only bid and one post-only ask, 0.2% around the mid."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol

    async def step(self, session: BackpackSession, mid: Decimal) -> None:
        state = session.engine.state
        mine = [o for o in state.open_orders() if o.symbol == self.symbol]
        for order in mine:
            await session.cancel(self.symbol, client_id=order.client_id)
        for side, factor in ((Side.BID, Decimal("0.998")), (Side.ASK, Decimal("1.002"))):
            price = (mid * factor).quantize(Decimal("0.01"))
            await session.submit(
                self.symbol, side, OrderType.LIMIT_MAKER, quantity=Decimal("0.5"), price=price
            )


class QuoterMachine(EngineMachine):
    symbols = ("SOL_USDC",)

    def __init__(self) -> None:
        super().__init__()
        self.quoter = Quoter("SOL_USDC")

    @rule()
    def requote(self) -> None:
        async def step() -> None:
            await self.quoter.step(self.session, self.harness.mid("SOL_USDC"))

        self.call(step)
        self.settle()

    @invariant()
    def at_most_one_quote_a_side(self) -> None:
        for side in Side:
            quotes = [o for o in self.state.open_orders() if o.side is side]
            assert len(quotes) <= 1 + self.other_orders(side), (side, quotes)

    def other_orders(self, side: Side) -> int:
        """Orders the base class's own rules placed (not the quoter's post-only ones)."""
        return sum(1 for o in self.state.open_orders() if o.side is side and not o.post_only)


def test_a_users_quoting_strategy_as_a_state_machine() -> None:
    run_state_machine_as_test(QuoterMachine, settings=SMALL)


class CarelessQuoter(QuoterMachine):
    """Forgets to cancel before quoting again: its invariant must catch it."""

    def __init__(self) -> None:
        super().__init__()
        self.quoter = ForgetfulQuoter("SOL_USDC")


class ForgetfulQuoter(Quoter):
    async def step(self, session: BackpackSession, mid: Decimal) -> None:
        for side, factor in ((Side.BID, Decimal("0.99")), (Side.ASK, Decimal("1.01"))):
            price = (mid * factor).quantize(Decimal("0.01"))
            await session.submit(
                self.symbol, side, OrderType.LIMIT_MAKER, quantity=Decimal("0.5"), price=price
            )


def test_the_machine_finds_a_broken_strategy() -> None:
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            CarelessQuoter,
            # Finding is enough here: no shrinking (each step costs a round trip).
            settings=settings(
                max_examples=10,
                stateful_step_count=6,
                deadline=None,
                database=None,
                phases=[Phase.generate],
            ),
        )
