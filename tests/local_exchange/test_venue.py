"""The local exchange's matching and accounting core, driven directly (no I/O).

A `ManualClock` that nobody advances keeps every synthetic book at its opening shape, so
prices in these tests are worked out by hand from `DEFAULT_MARKETS`: SOL books open at mid
150.00 with asks 150.01 (10), 150.03 (20), 150.05 (30), ... and bids 149.99 (10),
149.97 (20), ...; ETH books at mid 3000.00 with asks 3000.01 (1), 3000.11 (2), ...
Fees: spot maker 0.08% / taker 0.1%, perp maker 0.02% / taker 0.05%.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oms.core.values import CTX, PNL_QUANTUM
from oms_local_exchange import ApiError, ManualClock, OrderRequest, Venue
from oms_local_exchange.model import Outbound

KEY = "account-a"
OTHER = "account-b"
D = Decimal
ORDER_UPDATE_KEYS = {*"eEscSofqQpXitzZVTOry"}
FILL_KEYS = ORDER_UPDATE_KEYS | {*"lLmnN"}


def make_venue(**kwargs: Any) -> tuple[Venue, ManualClock]:
    clock = ManualClock()
    venue = Venue(clock=clock, seed=kwargs.pop("seed", 7), **kwargs)
    venue.add_account(KEY)
    venue.add_account(OTHER)
    venue.drain()
    return venue, clock


def limit(symbol: str, side: str, quantity: str, price: str, **kwargs: Any) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        side=side,
        order_type="Limit",
        quantity=D(quantity),
        price=D(price),
        **kwargs,
    )


def market(symbol: str, side: str, quantity: str | None = None, **kwargs: Any) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        side=side,
        order_type="Market",
        quantity=None if quantity is None else D(quantity),
        **kwargs,
    )


def refusal(venue: Venue, request: OrderRequest, key: str = KEY) -> ApiError:
    with pytest.raises(ApiError) as caught:
        venue.place(key, request)
    return caught.value


def balance(venue: Venue, asset: str, key: str = KEY) -> tuple[Decimal, Decimal]:
    b = venue.accounts[key].balance(asset)
    return b.available, b.locked


def order_events(messages: list[Outbound]) -> list[tuple[str, str]]:
    return [(m.data["e"], m.data["X"]) for m in messages if m.stream == "account.orderUpdate"]


# --- refusals --------------------------------------------------------------------------------


def test_post_only_that_would_take_is_rejected_and_one_that_rests_is_accepted() -> None:
    venue, _ = make_venue()
    error = refusal(venue, limit("SOL_USDC", "Bid", "1", "150.01", post_only=True))
    assert (error.status, error.code) == (400, "INVALID_ORDER")
    assert error.message.startswith("Order would immediately match and take")
    assert venue.accounts[KEY].orders == {}  # nothing recorded
    order = venue.place(KEY, limit("SOL_USDC", "Bid", "1", "150.00", post_only=True))
    assert (order.status, order.executed_quantity) == ("New", D(0))
    assert order_events(venue.drain()) == [("orderAccepted", "New")]


def test_duplicate_client_id_is_refused_with_the_venue_message() -> None:
    venue, _ = make_venue()
    venue.place(KEY, limit("SOL_USDC", "Bid", "1", "140", client_id=123456739))
    error = refusal(venue, limit("SOL_USDC", "Ask", "1", "160", client_id=123456739))
    assert error.body() == {
        "code": "INVALID_ORDER",
        "message": "Order with client ID already exists: 123456739",
    }
    # The id belongs to the account: another account may use it.
    assert venue.place(OTHER, limit("SOL_USDC", "Ask", "1", "160", client_id=123456739))


def test_price_and_quantity_off_the_tick_and_step_are_refused() -> None:
    venue, _ = make_venue()
    assert refusal(venue, limit("SOL_USDC", "Bid", "1", "150.005")).body() == {
        "code": "INVALID_CLIENT_REQUEST",
        "message": "Price decimal too long",
    }
    assert refusal(venue, limit("SOL_USDC", "Bid", "1.001", "150")).body() == {
        "code": "INVALID_CLIENT_REQUEST",
        "message": "Quantity decimal too long",
    }
    assert refusal(venue, limit("ETH_USDC", "Bid", "0.00005", "3000")).message == (
        "Quantity decimal too long"
    )
    assert refusal(venue, market("SOL_USDC", "Bid")).message == (
        "Market orders must specify a `quantity` or `quoteQuantity`"
    )


def test_an_order_beyond_the_balance_is_refused() -> None:
    venue, _ = make_venue()
    venue.add_account("poor", {"USDC": D("120")})
    assert refusal(venue, limit("SOL_USDC", "Bid", "1", "120.01"), "poor").code == (
        "INSUFFICIENT_FUNDS"
    )
    assert refusal(venue, market("SOL_USDC", "Ask", "0.01"), "poor").code == "INSUFFICIENT_FUNDS"
    assert venue.place("poor", limit("SOL_USDC", "Bid", "1", "120")).status == "New"


# --- time in force ---------------------------------------------------------------------------


def test_ioc_fills_what_it_can_and_expires_the_rest() -> None:
    venue, _ = make_venue()
    order = venue.place(KEY, limit("SOL_USDC", "Bid", "15", "150.01", time_in_force="IOC"))
    # Only the 10 at 150.01 are within the limit.
    assert (order.status, order.executed_quantity, order.expiry_reason) == (
        "Expired",
        D("10"),
        "ImmediateOrCancel",
    )
    messages = venue.drain()
    assert order_events(messages) == [
        ("orderAccepted", "New"),
        ("orderFill", "PartiallyFilled"),
        ("orderExpired", "Expired"),
    ]
    expired = next(m.data for m in messages if m.data.get("e") == "orderExpired")
    assert expired["R"] == "ImmediateOrCancel"
    assert expired["z"] == "10"
    # An IOC never rests, so it locks nothing.
    assert balance(venue, "USDC")[1] == 0


def test_fok_is_all_or_nothing() -> None:
    venue, _ = make_venue()
    before = balance(venue, "USDC")
    order = venue.place(KEY, limit("SOL_USDC", "Bid", "15", "150.01", time_in_force="FOK"))
    assert (order.status, order.executed_quantity, order.expiry_reason) == (
        "Expired",
        D(0),
        "FillOrKill",
    )
    assert balance(venue, "USDC") == before
    assert order_events(venue.drain()) == [("orderAccepted", "New"), ("orderExpired", "Expired")]
    order = venue.place(KEY, limit("SOL_USDC", "Bid", "30", "150.03", time_in_force="FOK"))
    assert order.status == "Filled"
    fills = venue.accounts[KEY].fills
    assert [(f.price, f.quantity) for f in fills] == [(D("150.01"), D(10)), (D("150.03"), D(20))]


def test_market_order_by_quote_quantity_spends_at_most_the_budget() -> None:
    venue, _ = make_venue()
    order = venue.place(
        KEY, OrderRequest(symbol="SOL_USDC", side="Bid", order_type="Market", quote_quantity=D(100))
    )
    # 100 / 150.01 = 0.6666..., down to the 0.01 step: 0.66 for 99.0066.
    assert (order.status, order.executed_quantity, order.executed_quote_quantity) == (
        "Filled",
        D("0.66"),
        D("99.0066"),
    )


def test_self_trade_prevention_expires_the_taker_by_default() -> None:
    venue, _ = make_venue()
    resting = venue.place(KEY, limit("SOL_USDC", "Ask", "1", "150.00"))
    taker = venue.place(KEY, market("SOL_USDC", "Bid", "1"))
    assert (taker.status, taker.expiry_reason, taker.executed_quantity) == (
        "Expired",
        "SelfTradePrevention",
        D(0),
    )
    assert resting.status == "New"


# --- fees, locks and releases ------------------------------------------------------------------


def test_spot_fees_buyer_pays_in_base_seller_in_quote() -> None:
    venue, _ = make_venue()
    venue.place(KEY, market("SOL_USDC", "Bid", "1"))  # taker at 150.01
    assert balance(venue, "SOL") == (D("1000") + D(1) - D("0.001"), D(0))
    assert balance(venue, "USDC") == (D("1000000") - D("150.01"), D(0))
    venue.place(KEY, market("SOL_USDC", "Ask", "1"))  # taker at 149.99
    assert balance(venue, "SOL") == (D("1000") - D("0.001"), D(0))
    assert balance(venue, "USDC") == (D("1000000") - D("150.01") + D("149.99") - D("0.14999"), D(0))
    fills = venue.accounts[KEY].fills
    assert [(f.side, f.fee, f.fee_asset, f.is_maker) for f in fills] == [
        ("Bid", D("0.001"), "SOL", False),
        ("Ask", D("0.14999"), "USDC", False),
    ]


def test_limit_orders_lock_on_accept_and_release_on_fill_and_cancel() -> None:
    venue, _ = make_venue()
    bid = venue.place(KEY, limit("SOL_USDC", "Bid", "2", "149"))
    assert balance(venue, "USDC") == (D("1000000") - 298, D("298"))
    venue.cancel(KEY, "SOL_USDC", order_id=bid.id)
    assert balance(venue, "USDC") == (D("1000000"), D(0))

    # An ask inside the spread rests at 150.00, ahead of the synthetic ask at 150.01.
    ask = venue.place(KEY, limit("SOL_USDC", "Ask", "3", "150.00", client_id=9))
    assert balance(venue, "SOL") == (D("997"), D("3"))
    venue.place(OTHER, market("SOL_USDC", "Bid", "1"))
    assert (ask.status, ask.executed_quantity) == ("PartiallyFilled", D(1))
    # Maker: 0.08% of 150 = 0.12 USDC, taken from the proceeds.
    assert balance(venue, "SOL") == (D("997"), D("2"))
    assert balance(venue, "USDC") == (D("1000000") + D(150) - D("0.12"), D(0))
    # The buyer paid the maker's price and its fee in SOL (0.1% of 1).
    assert balance(venue, "SOL", OTHER) == (D("1000") + D(1) - D("0.001"), D(0))
    assert balance(venue, "USDC", OTHER) == (D("1000000") - D(150), D(0))
    venue.cancel(KEY, "SOL_USDC", client_id=9)
    assert balance(venue, "SOL") == (D("999"), D(0))
    assert ask.status == "Cancelled"
    with pytest.raises(ApiError) as gone:
        venue.cancel(KEY, "SOL_USDC", client_id=9)
    assert (gone.value.status, gone.value.body()) == (
        404,
        {"code": "RESOURCE_NOT_FOUND", "message": "Not Found"},
    )


def test_resting_orders_become_maker_fills_when_the_market_moves_through_them() -> None:
    venue, clock = make_venue(step_us=1_000_000)
    bid = venue.place(KEY, limit("SOL_USDC", "Bid", "5", "149.98"))
    ask = venue.place(KEY, limit("SOL_USDC", "Ask", "5", "150.02"))
    for _ in range(5000):
        if bid.executed_quantity and ask.executed_quantity:
            break
        clock.advance(1)
        venue.advance()
    fills = venue.accounts[KEY].fills
    assert {(f.order_id, f.price, f.is_maker) for f in fills} == {
        (bid.id, D("149.98"), True),
        (ask.id, D("150.02"), True),
    }
    # Maker fees, and the book is never left crossed.
    assert all(f.fee == CTX.multiply(f.quantity if f.side == "Bid" else f.quantity * f.price,
                                     D("0.0008")) for f in fills)  # fmt: skip
    bids, asks = venue.book_levels("SOL_USDC")
    assert max(bids) < min(asks)


# --- perpetuals --------------------------------------------------------------------------------


def test_perp_entry_realized_pnl_fees_and_position_events() -> None:
    venue, _ = make_venue()
    venue.place(KEY, market("SOL_USDC_PERP", "Bid", "2"))  # 2 at 150.01
    position = venue.accounts[KEY].positions["SOL_USDC_PERP"]
    assert (position.net_quantity, position.entry_price) == (D(2), D("150.01"))
    venue.place(KEY, market("SOL_USDC_PERP", "Bid", "10"))  # 8 at 150.01, 2 at 150.03
    assert position.entry_price == CTX.divide(D("1800.16"), D(12))  # (10*150.01 + 2*150.03)/12
    entry = position.entry_price
    venue.place(KEY, market("SOL_USDC_PERP", "Ask", "4", reduce_only=True))  # 4 at 149.99
    assert position.net_quantity == 8
    assert position.entry_price == entry  # reducing keeps the entry
    assert position.realized_pnl == CTX.multiply(D(4), CTX.subtract(D("149.99"), entry)).quantize(
        PNL_QUANTUM, context=CTX
    )
    # Taker fees 0.05% in USDC; realized PnL settles in USDC.
    fees = [f.fee for f in venue.accounts[KEY].fills]
    assert fees == [D("0.15001"), D("0.60004"), D("0.15003"), D("0.29998")]
    assert all(f.fee_asset == "USDC" for f in venue.accounts[KEY].fills)
    expected_usdc = CTX.add(D("1000000") - sum(fees), position.realized_pnl)
    assert balance(venue, "USDC") == (expected_usdc, D(0))

    venue.drain()
    # Sell 10 into bids 149.99 (6 left this step) and 149.97: long 8 -> 2, then 2 -> short 2.
    venue.place(KEY, market("SOL_USDC_PERP", "Ask", "10"))
    events = [m.data for m in venue.drain() if m.stream == "account.positionUpdate"]
    assert [(e["e"], e["q"]) for e in events] == [
        ("positionAdjusted", "2"),
        ("positionClosed", "0"),
        ("positionOpened", "-2"),
    ]
    short = venue.accounts[KEY].positions["SOL_USDC_PERP"]
    assert short.net_quantity == -2
    assert short.position_id != position.position_id
    assert events[-1]["B"] == str(short.entry_price)


def test_reduce_only_never_flips_a_position() -> None:
    venue, _ = make_venue()
    error = refusal(venue, market("SOL_USDC_PERP", "Ask", "1", reduce_only=True))
    assert (error.code, error.message) == ("INVALID_ORDER", "Reduce only order not reduced")
    venue.place(KEY, market("SOL_USDC_PERP", "Bid", "3"))
    # Larger than the position: cut to it.
    order = venue.place(KEY, market("SOL_USDC_PERP", "Ask", "5", reduce_only=True))
    assert (order.quantity, order.executed_quantity, order.status) == (D(3), D(3), "Filled")
    assert venue.accounts[KEY].positions["SOL_USDC_PERP"].net_quantity == 0

    venue.place(KEY, market("SOL_USDC_PERP", "Bid", "3"))
    resting = venue.place(KEY, limit("SOL_USDC_PERP", "Ask", "3", "151", reduce_only=True))
    venue.drain()
    venue.place(KEY, market("SOL_USDC_PERP", "Ask", "2"))  # long 3 -> 1
    assert resting.quantity == 1
    modified = [m.data for m in venue.drain() if m.data.get("e") == "orderModified"]
    assert [(m["i"], m["q"], m["X"]) for m in modified] == [(resting.id, "1", "New")]
    venue.place(KEY, market("SOL_USDC_PERP", "Ask", "1"))  # flat: nothing left to reduce
    assert (resting.status, resting.expiry_reason) == ("Expired", "ReduceOnlyNotReduced")


def test_hourly_funding_is_paid_by_longs_when_the_rate_is_positive() -> None:
    venue, clock = make_venue(step_us=10 * 3_600_000_000)  # the mid stays at 150
    venue.place(KEY, market("SOL_USDC_PERP", "Bid", "2"))
    venue.place(OTHER, market("SOL_USDC_PERP", "Ask", "2"))
    usdc_long, usdc_short = balance(venue, "USDC")[0], balance(venue, "USDC", OTHER)[0]
    interval = 3_600_000
    first_end = (clock.now_us // 1000 // interval + 1) * interval
    clock.now_us = (first_end + interval) * 1000 + 1  # two interval ends passed
    venue.advance()
    payments = venue.funding_history(KEY, descending=False)
    assert [p.interval_end_ms for p in payments] == [first_end, first_end + interval]
    for payment in payments:
        assert payment.rate == venue.funding_rate("SOL_USDC_PERP", payment.interval_end_ms)
        assert payment.amount == -(2 * D(150) * payment.rate)
    paid = sum(p.amount for p in payments)
    assert balance(venue, "USDC")[0] == usdc_long + paid
    assert balance(venue, "USDC", OTHER)[0] == usdc_short - paid
    assert venue.accounts[KEY].positions["SOL_USDC_PERP"].funding == paid


# --- wire payloads and determinism -------------------------------------------------------------


def test_order_updates_carry_the_venue_keys_and_microsecond_times() -> None:
    venue, clock = make_venue()
    venue.place(KEY, limit("SOL_USDC", "Bid", "15", "150.01", time_in_force="IOC", client_id=5))
    updates = [m.data for m in venue.drain() if m.stream == "account.orderUpdate"]
    accepted, fill, expired = updates
    assert set(accepted) == ORDER_UPDATE_KEYS
    assert set(fill) == FILL_KEYS
    assert set(expired) == ORDER_UPDATE_KEYS | {"R"}
    assert accepted["t"] is None and isinstance(fill["t"], int)
    assert (fill["l"], fill["L"], fill["N"], fill["m"], fill["o"]) == (
        "10",
        "150.01",
        "SOL",
        False,
        "LIMIT",
    )
    assert fill["T"] == clock.now_us  # microseconds
    assert (accepted["q"], accepted["p"], accepted["Q"], accepted["c"]) == (
        "15",
        "150.01",
        "2250.15",
        5,
    )


def test_the_same_seed_and_clock_give_the_same_run() -> None:
    def run(seed: int) -> list[Outbound]:
        venue, clock = make_venue(seed=seed, step_us=100_000)
        venue.place(KEY, limit("SOL_USDC", "Bid", "1", "149.95"))
        out = []
        for _ in range(200):
            clock.advance(0.1)
            venue.advance()
            out.extend(venue.drain())
        return out

    assert run(3) == run(3)
    assert run(3) != run(4)


# --- ledger invariants under random activity ----------------------------------------------------

ACTIONS = st.one_of(
    st.tuples(
        st.just("limit"),
        st.sampled_from([KEY, OTHER]),
        st.sampled_from(["Bid", "Ask"]),
        st.integers(1, 2500),  # quantity in steps of 0.01
        st.integers(-30, 30),  # price in ticks from 150.00
        st.sampled_from([None, "IOC", "FOK"]),
    ),
    st.tuples(
        st.just("market"),
        st.sampled_from([KEY, OTHER]),
        st.sampled_from(["Bid", "Ask"]),
        st.integers(1, 5000),
    ),
    st.tuples(st.just("cancel"), st.sampled_from([KEY, OTHER]), st.integers(0, 20)),
    st.tuples(st.just("wait"), st.integers(1, 8)),  # in steps of the walk
)


@settings(max_examples=40, deadline=None)
@given(actions=st.lists(ACTIONS, max_size=40), seed=st.integers(0, 3))
def test_spot_ledgers_stay_consistent(actions: list[tuple[Any, ...]], seed: int) -> None:
    """Whatever is traded: balances equal the opening balances moved by the account's own
    fills (fees in the asset the venue named), locks equal what resting orders hold, every
    order's status matches its figures, and the book is never crossed."""
    venue, clock = make_venue(seed=seed, step_us=250_000)
    tick, step = D("0.01"), D("0.01")
    for action in actions:
        kind = action[0]
        try:
            if kind == "limit":
                _, key, side, qty, ticks, tif = action
                price = D(150) + ticks * tick
                venue.place(key, limit("SOL_USDC", side, str(qty * step), str(price),
                                       time_in_force=tif))  # fmt: skip
            elif kind == "market":
                _, key, side, qty = action
                venue.place(key, market("SOL_USDC", side, str(qty * step)))
            elif kind == "cancel":
                _, key, index = action
                open_orders = venue.open_orders(key)
                if open_orders:
                    venue.cancel(key, "SOL_USDC", order_id=open_orders[index % len(open_orders)].id)
            else:
                clock.advance(action[1] * 0.25)
                venue.advance()
        except ApiError as refused:
            assert refused.code == "INSUFFICIENT_FUNDS", refused
        venue.drain()
        bids, asks = venue.book_levels("SOL_USDC")
        assert not bids or not asks or max(bids) < min(asks)
    for key in (KEY, OTHER):
        account = venue.accounts[key]
        expected = {"SOL": D(1000), "USDC": D(1_000_000)}
        for fill in account.fills:
            notional = fill.quantity * fill.price
            if fill.side == "Bid":
                expected["SOL"] += fill.quantity
                expected["USDC"] -= notional
            else:
                expected["SOL"] -= fill.quantity
                expected["USDC"] += notional
            expected[fill.fee_asset] -= fill.fee
        locks = {"SOL": D(0), "USDC": D(0)}
        for order in account.orders.values():
            assert order.quantity is not None
            assert 0 <= order.executed_quantity <= order.quantity
            assert (order.status == "Filled") == (order.executed_quantity == order.quantity)
            if order.is_resting and order.lock_asset is not None:
                locks[order.lock_asset] += order.locked
                assert order.price is not None
                held = order.remaining * order.price if order.side == "Bid" else order.remaining
                assert order.locked == held
            elif not order.is_resting:
                assert order.locked == 0
        for asset in ("SOL", "USDC"):
            available, locked = balance(venue, asset, key)
            assert available + locked == expected[asset]
            assert locked == locks[asset]
            assert available >= 0
