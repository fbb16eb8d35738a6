"""The pytest plugin's fixtures, used as a program's test suite would use them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest

from oms import Engine, OrderFilled, OrderStatus, OrderType, Side, Source
from oms_backpack import BackpackSession
from oms_local_exchange import Faults, LocalExchange

Books = Callable[..., Awaitable[None]]


async def test_a_session_on_the_local_exchange_agrees_with_its_books(
    oms_session: BackpackSession, oms_engine: Engine, oms_books: Books
) -> None:
    bid = await oms_session.submit(
        "SOL_USDC", Side.BID, OrderType.LIMIT, quantity=Decimal("1"), price=Decimal("130")
    )
    taken = await oms_session.submit(
        "SOL_USDC_PERP", Side.BID, OrderType.MARKET, quantity=Decimal("0.5")
    )
    await oms_books()
    assert oms_engine.state.order(client_id=bid.client_id).status is OrderStatus.NEW
    after = oms_engine.state.order(client_id=taken.client_id)
    assert after is not None and after.status is OrderStatus.FILLED
    assert oms_engine.state.positions["SOL_USDC_PERP"].net_quantity == Decimal("0.5")


async def test_fault_knobs_act_on_the_fixture_exchange(
    oms_session: BackpackSession, oms_faults: Faults, oms_exchange: LocalExchange, oms_books: Books
) -> None:
    oms_faults.duplicate_private(count=None)
    await oms_session.submit("SOL_USDC", Side.ASK, OrderType.MARKET, quantity=Decimal("2"))
    await oms_books()
    assert oms_exchange.faults is oms_faults
    # Every fill came twice; each was counted once.
    assert oms_session.engine.state.anomaly_counts.get("duplicate_fill", 0) >= 1


async def test_the_books_fixture_names_each_difference(
    oms_session: BackpackSession, oms_engine: Engine, oms_books: Books
) -> None:
    order = await oms_session.submit(
        "SOL_USDC", Side.BID, OrderType.LIMIT, quantity=Decimal("1"), price=Decimal("130")
    )
    assert order.venue_id is not None
    # A fill the exchange never made.
    oms_engine.record(
        OrderFilled(
            source=Source.WS,
            recv_time_us=1,
            symbol="SOL_USDC",
            venue_id=order.venue_id,
            client_id=order.client_id,
            trade_id=999_999,
            side=Side.BID,
            quantity=Decimal("0.4"),
            price=Decimal("1"),
            fee=Decimal(0),
            fee_asset="USDC",
            maker=True,
        )
    )
    with pytest.raises(AssertionError) as caught:
        await oms_books(0.2)
    text = str(caught.value)
    assert "extra [999999]" in text
    assert "engine filled 0.4" in text


@pytest.mark.oms_exchange(seed=11, balances={"USDC": Decimal("50"), "SOL": Decimal("0")})
@pytest.mark.oms_symbols("SOL_USDC")
async def test_markers_configure_the_exchange_and_the_session(
    oms_session: BackpackSession, oms_engine: Engine
) -> None:
    assert sorted(oms_engine.state.markets) == ["SOL_USDC"]
    assert oms_engine.state.balances["USDC"].available == Decimal("50")


USER_TEST = """
from decimal import Decimal

from hypothesis import given, settings
from oms import OrderType, Side, replay_events
from oms.testing.strategies import sessions


@settings(max_examples=5, deadline=None)
@given(sessions())
def test_replay_never_raises(drawn):
    replay_events(drawn.delivered)


async def test_market_order(oms_session, oms_books):
    await oms_session.submit("SOL_USDC", Side.BID, OrderType.MARKET, quantity=Decimal("1"))
    await oms_books()
"""


def test_a_user_project_gets_the_kit_from_the_installed_package(tmp_path: Path) -> None:
    """A project of its own (with a `tests` package, which once broke importing the
    strategies), no conftest: the plugin comes from the entry point."""
    tests = tmp_path / "project" / "tests"
    tests.mkdir(parents=True)
    (tests / "__init__.py").write_text("")
    (tests / "test_user.py").write_text(textwrap.dedent(USER_TEST))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "trio_mode=true"],
        cwd=tmp_path / "project",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
