"""The test kit's state machine, run as a user's test suite would run it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import invariant, rule, run_state_machine_as_test

from oms import Order, OrderType, Side, State
from oms.testing.machine import EngineMachine
from oms_backpack import BackpackSession

SMALL = settings(max_examples=3, stateful_step_count=6, deadline=None)


def test_the_engine_keeps_its_guarantees_under_random_rules() -> None:
    run_state_machine_as_test(EngineMachine, settings=SMALL)


class Quoter:
    """A user's strategy: one post-only bid and one post-only ask, 0.2% around the mid."""

    factors = (Decimal("0.998"), Decimal("1.002"))

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.mine: set[int] = set()  # the client ids of its own quotes

    async def step(self, session: BackpackSession, mid: Decimal) -> None:
        for order in self.open(session.engine.state):
            await session.cancel(self.symbol, client_id=order.client_id)
        await self.quote(session, mid)

    async def quote(self, session: BackpackSession, mid: Decimal) -> None:
        for side, factor in zip((Side.BID, Side.ASK), self.factors, strict=True):
            price = (mid * factor).quantize(Decimal("0.01"))
            order = await session.submit(
                self.symbol, side, OrderType.LIMIT_MAKER, quantity=Decimal("0.5"), price=price
            )
            assert order.client_id is not None
            self.mine.add(order.client_id)

    def open(self, state: State) -> list[Order]:
        return [o for o in state.open_orders() if o.client_id in self.mine]


class QuoterMachine(EngineMachine):
    symbols = ("SOL_USDC",)

    def __init__(self) -> None:
        super().__init__()
        self.quoter = self.make_quoter()

    def make_quoter(self) -> Quoter:
        return Quoter("SOL_USDC")

    @rule()
    def requote(self) -> None:
        async def step() -> None:
            await self.quoter.step(self.session, self.harness.mid("SOL_USDC"))

        self.call(step)
        self.settle()

    @invariant()
    def at_most_one_quote_a_side(self) -> None:
        for side in Side:
            quotes = [o for o in self.quoter.open(self.state) if o.side is side]
            assert len(quotes) <= 1, (side, quotes)


def test_a_users_quoting_strategy_as_a_state_machine() -> None:
    run_state_machine_as_test(QuoterMachine, settings=SMALL)


class ForgetfulQuoter(Quoter):
    """Forgets to cancel its quotes before quoting again."""

    factors = (Decimal("0.99"), Decimal("1.01"))  # far enough to rest

    async def step(self, session: BackpackSession, mid: Decimal) -> None:
        await self.quote(session, mid)


class CarelessQuoterMachine(QuoterMachine):
    def make_quoter(self) -> Quoter:
        return ForgetfulQuoter("SOL_USDC")


def test_the_machine_finds_a_broken_strategy() -> None:
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            CarelessQuoterMachine,
            # Finding is enough here: no shrinking (each step costs a round trip).
            settings=settings(
                max_examples=25,
                stateful_step_count=12,
                deadline=None,
                database=None,
                phases=[Phase.generate],
            ),
        )
