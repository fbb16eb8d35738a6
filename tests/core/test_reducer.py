"""The reducer on hand-computed examples: locks, fills, fees, snapshots, positions, anomalies.

Every expected figure below is worked out in the comment next to it, not read off the code.
Markets: SOL_USDC (spot, base SOL, quote USDC) and SOL_USDC_PERP (perp).
"""

from __future__ import annotations

import decimal
from decimal import Decimal

import attrs
import msgspec
import pytest

from oms.core.events import (
    CancelRequested,
    Event,
    MessageNotUnderstood,
    PositionObserved,
    SubmitRejected,
    SubmitUnknown,
)
from oms.core.reducer import apply, replay
from oms.core.serialization import state_hash
from oms.core.state import AnomalyKind, Balance, Position, State
from oms.core.values import (
    SYNTHETIC_TRADE_ID_BASE,
    MarketType,
    OrderOrigin,
    OrderStatus,
    OrderType,
    Side,
    Source,
    VenueStatus,
)
from oms.testing.strategies import (
    PERP,
    SPOT,
    accept,
    balances,
    cancel,
    expire,
    fill,
    funding,
    market,
    observe,
    position,
    submit,
)

D = Decimal
BID, ASK = Side.BID, Side.ASK
SPOT_MARKET = market(SPOT, "SOL", "USDC")
PERP_MARKET = market(PERP, "SOL", "USDC", MarketType.PERP)


def funded(*events: Event) -> State:
    """Spot market, a snapshot of 1000 USDC and 5 SOL, then `events`."""
    return replay([SPOT_MARKET, balances({"USDC": ("1000", "0"), "SOL": ("5", "0")}), *events])


def bal(state: State, asset: str) -> tuple[Decimal, Decimal]:
    balance = state.balances.get(asset, Balance(asset=asset))
    return balance.available, balance.locked


def kinds_at(state: State) -> list[tuple[int, AnomalyKind]]:
    return [(a.seq, a.kind) for a in state.anomalies]


# --- spot locking -------------------------------------------------------------------------------


def test_bid_locks_quote_at_limit_price_on_accept() -> None:
    state = funded(submit(1, BID, "2", "10"))
    # PendingNew is not resting yet: nothing locked.
    assert bal(state, "USDC") == (D(1000), D(0))
    state = apply(state, accept("V1", client_id=1))
    # 2 * 10 = 20 USDC locked.
    assert bal(state, "USDC") == (D(980), D(20))
    assert bal(state, "SOL") == (D(5), D(0))
    order = state.order(client_id=1)
    assert order is not None and (order.locked, order.lock_asset) == (D(20), "USDC")


def test_ask_locks_base_on_accept() -> None:
    state = funded(submit(1, ASK, "3", "12"), accept("V1", client_id=1))
    assert bal(state, "SOL") == (D(2), D(3))
    assert bal(state, "USDC") == (D(1000), D(0))


def test_partial_bid_fill_moves_funds_and_releases_its_share() -> None:
    state = funded(
        submit(1, BID, "2", "10"),
        accept("V1", client_id=1),
        # Filled 0.5 at 9.5 (better than the limit), fee 0.001 SOL (base).
        fill("V1", 1, BID, "0.5", "9.5", fee="0.001", fee_asset="SOL", cum="0.5"),
    )
    # USDC: spent 0.5 * 9.5 = 4.75; still locked 1.5 * 10 = 15; available 1000 - 4.75 - 15.
    assert bal(state, "USDC") == (D("980.25"), D(15))
    # SOL: 5 + 0.5 - 0.001.
    assert bal(state, "SOL") == (D("5.499"), D(0))
    order = state.order(venue_id="V1")
    assert order is not None
    assert order.status is OrderStatus.PARTIALLY_FILLED
    assert order.filled_quantity == D("0.5") and order.filled_quote == D("4.75")
    assert order.fees == (("SOL", D("0.001")),)


def test_cancel_releases_the_rest() -> None:
    state = funded(
        submit(1, BID, "2", "10"),
        accept("V1", client_id=1),
        fill("V1", 1, BID, "0.5", "9.5", cum="0.5"),
        cancel(venue_id="V1", client_id=1, cum="0.5"),
    )
    # Only the fill's 4.75 left the account; nothing is locked.
    assert bal(state, "USDC") == (D("995.25"), D(0))
    assert bal(state, "SOL") == (D("5.5"), D(0))
    order = state.order(client_id=1)
    assert order is not None and order.locked == 0 and order.lock_asset is None


def test_expiry_releases_the_rest() -> None:
    state = funded(
        submit(1, ASK, "3", "12"),
        accept("V1", client_id=1),
        # Sold 1 at 12.5, fee 0.0125 USDC (quote).
        fill("V1", 1, ASK, "1", "12.5", fee="0.0125", fee_asset="USDC"),
    )
    # SOL: 5 - 1 sold, 2 still locked.
    assert bal(state, "SOL") == (D(2), D(2))
    # USDC: 1000 + 12.5 - 0.0125.
    assert bal(state, "USDC") == (D("1012.4875"), D(0))
    state = apply(state, expire(venue_id="V1"))
    assert bal(state, "SOL") == (D(4), D(0))
    order = state.order(client_id=1)
    assert order is not None
    assert order.status is OrderStatus.EXPIRED and order.expiry_reason == "ImmediateOrCancel"


def test_fee_in_a_third_asset() -> None:
    state = funded(
        submit(1, BID, "1", "10"),
        accept("V1", client_id=1),
        fill("V1", 1, BID, "1", "10", fee="0.3", fee_asset="BPX", status=VenueStatus.FILLED),
    )
    assert bal(state, "BPX") == (D("-0.3"), D(0))
    assert bal(state, "USDC") == (D(990), D(0))
    assert bal(state, "SOL") == (D(6), D(0))
    order = state.order(client_id=1)
    assert order is not None and order.status is OrderStatus.FILLED and order.locked == 0


def test_total_is_available_plus_locked() -> None:
    state = funded(submit(1, BID, "2", "10"), accept("V1", client_id=1))
    usdc = state.balances["USDC"]
    assert usdc.total == D(1000)


# --- balance snapshots --------------------------------------------------------------------------


def test_first_snapshot_is_a_baseline_then_drift_is_recorded() -> None:
    # Events before any snapshot: derived USDC is -20 available, 20 locked.
    state = replay([SPOT_MARKET, submit(1, BID, "2", "10"), accept("V1", client_id=1)])
    assert bal(state, "USDC") == (D(-20), D(20))
    state = apply(state, balances({"USDC": ("980", "20")}))
    usdc = state.balances["USDC"]
    assert (usdc.available, usdc.locked) == (D(980), D(20))
    assert (usdc.drift_available, usdc.drift_locked) == (D(0), D(0))
    assert state.anomaly_total == 0
    state = apply(state, fill("V1", 1, BID, "2", "10", status=VenueStatus.FILLED))
    # Spent 20 from the locked 20: 980 available, 0 locked.
    assert bal(state, "USDC") == (D(980), D(0))
    state = apply(state, balances({"USDC": ("979", "0.5"), "SOL": ("2", "0")}))
    usdc = state.balances["USDC"]
    assert (usdc.drift_available, usdc.drift_locked) == (D(-1), D("0.5"))
    # Compared, not adopted: the derived figures stay what the events imply.
    assert (usdc.available, usdc.locked) == (D(980), D(0))
    assert usdc.observed is not None and usdc.observed.available == D(979)
    # SOL: derived 2 from the fill, venue 2: no drift.
    assert state.balances["SOL"].drift_available == 0
    assert kinds_at(state) == [(state.last_seq, AnomalyKind.BALANCE_DRIFT)]


def test_a_poll_ahead_of_a_fill_in_flight_does_not_count_it_twice() -> None:
    # The venue's snapshot already includes a fill whose message is still on its way.
    state = funded(submit(1, BID, "2", "10"), accept("V1", client_id=1))
    state = apply(state, balances({"USDC": ("980", "0"), "SOL": ("7", "0")}))  # ahead
    assert bal(state, "SOL") == (D(5), D(0))
    state = apply(state, fill("V1", 1, BID, "2", "10", status=VenueStatus.FILLED))
    assert bal(state, "SOL") == (D(7), D(0))  # the fill once, not twice
    assert bal(state, "USDC") == (D(980), D(0))
    # The next snapshot agrees: the drift is gone.
    state = apply(state, balances({"USDC": ("980", "0"), "SOL": ("7", "0.0")}))
    assert state.balances["SOL"].drift_available == 0


def test_same_snapshot_twice_changes_nothing() -> None:
    state = funded()
    again = apply(state, balances({"USDC": ("1000", "0"), "SOL": ("5", "0")}))
    assert again.balances == state.balances
    assert again.anomaly_total == 0


def test_asset_missing_from_a_snapshot_is_zero() -> None:
    state = apply(funded(), balances({"USDC": ("1000", "0")}))
    assert bal(state, "SOL") == (D(5), D(0))  # derived unchanged
    sol = state.balances["SOL"]
    assert sol.drift_available == D(-5)
    assert sol.observed is not None and sol.observed.available == 0
    assert kinds_at(state) == [(state.last_seq, AnomalyKind.BALANCE_DRIFT)]


def test_asset_first_met_after_a_snapshot_is_compared_not_rebased() -> None:
    # Regression: the second snapshot used to take SOL (absent from the first, so observed
    # as zero) as a fresh baseline and missed the drift.
    state = replay(
        [
            SPOT_MARKET,
            balances({"USDC": ("100", "0")}),
            submit(1, BID, "2", "10"),
            fill("V1", 1, BID, "2", "10", client_id=1, status=VenueStatus.FILLED),
            balances({"USDC": ("80", "0"), "SOL": ("3", "0")}),
        ]
    )
    # Derived SOL was 2 (0 at the first snapshot + 2 bought); the venue says 3.
    assert state.balances["SOL"].drift_available == D(1)
    assert kinds_at(state) == [(state.last_seq, AnomalyKind.BALANCE_DRIFT)]


# --- perp positions -----------------------------------------------------------------------------


def perp_fills(*fills: tuple[Side, str, str]) -> list[Event]:
    """One venue order per fill (venue-originated, so no unknown-order noise)."""
    return [
        PERP_MARKET,
        *(
            fill(
                f"P{n}",
                n,
                side,
                qty,
                price,
                symbol=PERP,
                fee="0.1",
                origin=OrderOrigin.LIQUIDATION_AUTOCLOSE,
            )
            for n, (side, qty, price) in enumerate(fills, start=1)
        ),
    ]


def pos(state: State) -> Position:
    return state.positions[PERP]


def test_long_open_increase_reduce_flip_and_close() -> None:
    events = perp_fills(
        (BID, "2", "100"),  # open long 2 @ 100
        (BID, "1", "130"),  # increase: entry (2*100 + 1*130) / 3 = 110
        (ASK, "1", "120"),  # reduce 1: pnl (120 - 110) * 1 = 10
        (ASK, "5", "90"),  # close 2: pnl (90 - 110) * 2 = -40 (total -30); short 3 @ 90
        (ASK, "1", "94"),  # increase short: entry (3*90 + 94) / 4 = 91
        (BID, "2", "85"),  # reduce short 2: pnl (91 - 85) * 2 = 12 (total -18)
        (BID, "2", "100"),  # close short 2: pnl (91 - 100) * 2 = -18 (total -36); flat
    )
    expected = [
        (D(2), D(100), D(0)),
        (D(3), D(110), D(0)),
        (D(2), D(110), D(10)),
        (D(-3), D(90), D(-30)),
        (D(-4), D(91), D(-30)),
        (D(-2), D(91), D(-18)),
        (D(0), D(0), D(-36)),
    ]
    state = replay(events[:1])
    for event, (net, entry, realized) in zip(events[1:], expected, strict=True):
        state = apply(state, event)
        p = pos(state)
        assert (p.net_quantity, p.entry_price, p.realized_pnl) == (net, entry, realized)
    p = pos(state)
    # Flat is exactly zero, with zero entry; 7 fills of 0.1 fee.
    assert p.net_quantity == 0 and not p.net_quantity.is_signed()
    assert p.fees == (("USDC", D("0.7")),)
    # Perp fills move the position, not spot balances.
    assert state.balances.get("SOL") is None
    assert state.anomaly_total == 0


def test_short_side_is_symmetric() -> None:
    state = replay(
        perp_fills(
            (ASK, "2", "100"),  # short 2 @ 100
            (ASK, "2", "80"),  # short 4 @ 90
            (BID, "1", "70"),  # cover 1: pnl (90 - 70) * 1 = 20; short 3 @ 90
            (BID, "5", "95"),  # cover 3: pnl (90 - 95) * 3 = -15 (total 5); long 2 @ 95
        )
    )
    p = pos(state)
    assert (p.net_quantity, p.entry_price, p.realized_pnl) == (D(2), D(95), D(5))


def test_close_to_exactly_zero_with_decimal_noise() -> None:
    # 0.1 + 0.2 bought, 0.30 sold: flat, exactly; entry 0.
    state = replay(perp_fills((BID, "0.1", "10"), (BID, "0.2", "10"), (ASK, "0.30", "11")))
    p = pos(state)
    assert p.net_quantity == 0 and p.entry_price == 0
    # pnl (11 - 10) * 0.3.
    assert p.realized_pnl == D("0.3")


def test_funding_accumulates_and_an_interval_counts_once() -> None:
    state = replay(
        [
            *perp_fills((BID, "1", "100")),
            funding(3_600_000_000, "-1.5"),
            funding(7_200_000_000, "0.25"),
            funding(3_600_000_000, "-1.5"),
        ]
    )
    p = pos(state)
    assert p.funding == D("-1.25")
    assert p.funding_intervals == frozenset({3_600_000_000, 7_200_000_000})
    assert kinds_at(state) == [(state.last_seq, AnomalyKind.DUPLICATE_FUNDING)]


def test_position_report_baseline_then_drift() -> None:
    state = replay(perp_fills((BID, "2", "100")))
    # A report that agrees with the fills: no drift. Then the account's first balance
    # snapshot, after which reports are compared, never adopted.
    state = apply(state, position("2", entry="100"))
    state = apply(state, balances({"USDC": ("1000", "0")}))
    assert pos(state).drift_quantity == 0 and state.anomaly_total == 0
    state = apply(
        state, fill("P2", 2, ASK, "0.5", "100", symbol=PERP, origin=OrderOrigin.ADL_AUTOCLOSE)
    )  # derived 1.5
    state = apply(state, position("1.25", entry="100"))
    p = pos(state)
    # Venue 1.25 against derived 1.5: recorded as drift, but the fills stay authoritative (the
    # report may have raced a fill in flight) and one report is no anomaly yet.
    assert (p.net_quantity, p.drift_quantity) == (D("1.5"), D("-0.25"))
    assert p.observed is not None and p.observed.net_quantity == D("1.25")
    assert state.anomaly_total == 0
    # The same report again is nothing new.
    assert apply(state, position("1.25", entry="100")) == replace_seq(state)
    # A fresh report showing the same difference: now it is an anomaly.
    later = msgspec.structs.replace(position("1.25", entry="100"), mark_price=D("101"))
    state = apply(state, later)
    assert kinds_at(state) == [(state.last_seq, AnomalyKind.POSITION_DRIFT)]
    assert pos(state).net_quantity == D("1.5")
    # The difference persisting is not news again: reports whose mark alone moves add nothing,
    # and a changed report that shows the same difference records no second anomaly.
    for mark in ("102", "103"):
        moved = apply(state, msgspec.structs.replace(later, mark_price=D(mark)))
        assert moved == replace_seq(state)
    state = apply(state, msgspec.structs.replace(later, entry_price=D("100.5")))
    assert state.anomaly_counts[AnomalyKind.POSITION_DRIFT] == 1
    # A report that agrees again clears the drift.
    state = apply(state, position("1.5", entry="100"))
    assert pos(state).drift_quantity == 0 and pos(state).drift_reported == 0


def test_a_first_report_on_an_untouched_position_is_adopted() -> None:
    # A position opened before this log began: its first report is the baseline.
    state = replay([PERP_MARKET, position("-0.01", entry="126.97")])
    p = pos(state)
    assert (p.net_quantity, p.entry_price, p.drift_quantity) == (D("-0.01"), D("126.97"), D(0))
    assert p.open_cost == D("1.2697")
    # Later fills move it from there: buying back 0.01 at 120 realizes 0.0697.
    state = apply(
        state, fill("P1", 1, BID, "0.01", "120", symbol=PERP, origin=OrderOrigin.ADL_AUTOCLOSE)
    )
    assert (pos(state).net_quantity, pos(state).realized_pnl) == (D(0), D("0.0697"))


def test_a_flat_report_on_a_held_position_is_drift_not_adopted() -> None:
    state = replay([*perp_fills((BID, "2", "100")), position("2"), balances({}), position("0")])
    p = pos(state)
    assert (p.net_quantity, p.entry_price, p.drift_quantity) == (D(2), D(100), D(-2))


def replace_seq(state: State) -> State:
    """`state` as it is after one more event that changes nothing but the seq."""
    return attrs.evolve(state, last_seq=state.last_seq + 1)


def test_extreme_perp_figures_do_not_raise() -> None:
    # Regression: rounding a realized PnL near 1e81 to 1e-18 needed 99 digits and trapped.
    state = replay(perp_fills((BID, "9E+40", "9E+40"), (ASK, "9E+40", "1E-40")))
    assert pos(state).net_quantity == 0
    assert pos(state).realized_pnl < 0


def test_zero_quantity_fill_on_a_flat_position_does_not_raise() -> None:
    # Regression: 0 / 0 in the average entry trapped InvalidOperation; the reducer is total.
    state = replay(perp_fills((BID, "0", "100")))
    p = pos(state)
    assert (p.net_quantity, p.entry_price) == (D(0), D(0))


# --- what a submit records ---------------------------------------------------------------------

_TRIGGER_FIELDS = {
    "trigger_price": D("151"),
    "trigger_quantity": "50%",
    "trigger_by": "MarkPrice",
    "stop_loss_trigger_price": D("140"),
    "stop_loss_limit_price": D("139.5"),
    "take_profit_trigger_price": D("160"),
    "take_profit_limit_price": D("160.5"),
}


@pytest.mark.parametrize("name", sorted(_TRIGGER_FIELDS))
def test_a_submit_keeps_each_trigger_and_exit_field_on_the_order(name: str) -> None:
    # Each field alone (the order is built in two steps when any is set), then all together.
    for fields in ({name: _TRIGGER_FIELDS[name]}, _TRIGGER_FIELDS):
        state = funded(msgspec.structs.replace(submit(1, BID, "2", "150"), **fields))
        order = state.order(client_id=1)
        assert order is not None
        assert {key: getattr(order, key) for key in _TRIGGER_FIELDS} == {
            key: fields.get(key) for key in _TRIGGER_FIELDS
        }
        assert (order.price, order.quantity, order.created_seq) == (D(150), D(2), 3)


# --- finding orders -----------------------------------------------------------------------------


def test_orders_found_by_client_id_and_by_venue_id() -> None:
    state = funded(
        submit(1, BID, "1", "10"),
        submit(2, ASK, "1", "20"),
        accept("V1", client_id=1),
        accept("V2", client_id=2),
        # Fill and cancel reports that name the order only by one of its ids.
        fill("V1", 1, BID, "1", "10", status=VenueStatus.FILLED),
        cancel(client_id=2),
    )
    one, two = state.order(client_id=1), state.order(client_id=2)
    assert one is not None and two is not None
    assert state.order(venue_id="V1") is one and state.order(venue_id="V2") is two
    assert one.status is OrderStatus.FILLED and one.filled_quantity == 1
    assert two.status is OrderStatus.CANCELLED
    assert state.order(client_id=3) is None and state.order(venue_id="V3") is None
    assert state.anomaly_total == 0


def test_venue_originated_order_is_created_without_anomaly() -> None:
    state = replay(
        [
            PERP_MARKET,
            fill(
                "L1",
                9,
                ASK,
                "3",
                "50",
                symbol=PERP,
                origin=OrderOrigin.LIQUIDATION_AUTOCLOSE,
                order_quantity="3",
            ),
        ]
    )
    order = state.order(venue_id="L1")
    assert order is not None
    assert order.key == "vL1" and order.client_id is None
    assert order.origin is OrderOrigin.LIQUIDATION_AUTOCLOSE
    assert order.status is OrderStatus.FILLED  # 3 of 3
    assert state.anomaly_total == 0
    assert pos(state).net_quantity == D(-3)


def test_an_origin_the_venue_added_later_is_not_taken_for_ours() -> None:
    # A new venue origin is still the venue's: its order is created without an anomaly, and
    # only an unknown USER order is one.
    state = replay(
        [
            PERP_MARKET,
            fill("N1", 1, ASK, "1", "50", symbol=PERP, origin=OrderOrigin("NEW_KIND")),
            fill("U1", 2, ASK, "1", "50", symbol=PERP),
        ]
    )
    new = state.order(venue_id="N1")
    assert new is not None and new.origin == "NEW_KIND" and not new.origin.is_known
    assert [(a.kind, a.order_key) for a in state.anomalies] == [(AnomalyKind.UNKNOWN_ORDER, "vU1")]


def test_user_report_on_an_unknown_order_is_an_anomaly() -> None:
    state = replay([SPOT_MARKET, accept("V9", client_id=99)])
    assert kinds_at(state) == [(2, AnomalyKind.UNKNOWN_ORDER)]
    assert state.anomalies[0].order_key == "c99"
    # The report is kept: the order exists from now on.
    order = state.order(venue_id="V9")
    assert order is not None and order.status is OrderStatus.NEW


def test_command_for_an_unknown_order_is_an_anomaly_and_creates_nothing() -> None:
    request = CancelRequested(source=Source.LOCAL, recv_time_us=1, symbol=SPOT, client_id=5)
    state = replay([SPOT_MARKET, request])
    assert kinds_at(state) == [(2, AnomalyKind.UNKNOWN_ORDER)]
    assert len(state.orders) == 0 and state.order(client_id=5) is None


def test_last_client_id_is_the_largest_submitted() -> None:
    state = replay([SPOT_MARKET, submit(7, BID, "1", "1"), submit(3, BID, "1", "1")])
    assert state.last_client_id == 7


# --- anomalies carry the seq of the event that caused them -----------------------------------


def test_overfill_fill_gap_cum_mismatch_and_duplicate_fill() -> None:
    events: list[Event] = [
        SPOT_MARKET,  # seq 1
        submit(1, BID, "5", "10"),  # 2
        accept("V1", client_id=1),  # 3
        fill("V1", 1, BID, "1", "10", cum="1"),  # 4: fine
        fill("V1", 2, BID, "0.5", "10", cum="3"),  # 5: venue says 3, we counted 1.5: gap
        fill("V1", 3, BID, "2", "10", cum="3"),  # 6: the newest report says 3, we counted 3.5
        fill("V1", 2, BID, "0.5", "10", cum="3"),  # 7: trade 2 again
        fill("V1", 4, BID, "2", "10"),  # 8: 5.5 of 5
    ]
    state = replay(events)
    assert kinds_at(state) == [
        (5, AnomalyKind.FILL_GAP),
        (6, AnomalyKind.CUM_MISMATCH),
        (7, AnomalyKind.DUPLICATE_FILL),
        (8, AnomalyKind.OVERFILL),
    ]
    assert all(a.order_key == "c1" for a in state.anomalies)
    order = state.order(client_id=1)
    assert order is not None
    assert order.filled_quantity == D("5.5")
    assert order.venue_executed == D(3)
    assert order.status is OrderStatus.FILLED
    # 5.5 bought at 10: 55 spent, each trade once; nothing left locked.
    assert bal(state, "USDC") == (D("-55"), D(0))
    assert bal(state, "SOL") == (D("5.5"), D(0))


def test_an_older_cumulative_report_arriving_late_is_not_a_mismatch() -> None:
    # Fills reordered on the way: trade 2 (cumulative 1) arrives before trade 1
    # (cumulative 0.5). Trade 1's report counts fewer than we have, but it is older.
    events: list[Event] = [
        SPOT_MARKET,
        submit(1, BID, "1", "10"),
        accept("V1", client_id=1),
        fill("V1", 2, BID, "0.5", "10", cum="1"),  # 4: a gap, for now
        fill("V1", 1, BID, "0.5", "10", cum="0.5"),  # 5: closes it
    ]
    state = replay(events)
    assert kinds_at(state) == [(4, AnomalyKind.FILL_GAP)]


def test_duplicate_fill_leaves_state_as_after_once() -> None:
    once = funded(submit(1, BID, "2", "10"), accept("V1", client_id=1))
    once = apply(once, fill("V1", 1, BID, "1", "10", fee="0.01", fee_asset="USDC"))
    twice = apply(once, fill("V1", 1, BID, "1", "10", fee="0.01", fee_asset="USDC"))
    assert twice.orders == once.orders
    assert twice.balances == once.balances
    assert kinds_at(twice) == [(twice.last_seq, AnomalyKind.DUPLICATE_FILL)]


def test_message_not_understood_is_recorded() -> None:
    state = replay([MessageNotUnderstood(source=Source.WS, recv_time_us=1, raw="{", reason="bad")])
    assert kinds_at(state) == [(1, AnomalyKind.NOT_UNDERSTOOD)]


# --- retention of finished orders ---------------------------------------------------------------


def test_retention_drops_the_oldest_finished_orders_and_their_indexes() -> None:
    events: list[Event] = [SPOT_MARKET]
    for n in (1, 2, 3, 4):
        events += [submit(n, BID, "1", "10"), accept(f"V{n}", client_id=n)]
    # Finish 2, then 1, then 3; 4 stays open.
    events += [
        cancel(venue_id="V2"),
        fill("V1", 1, BID, "1", "10", status=VenueStatus.FILLED),
        expire(venue_id="V3"),
    ]
    state = replay(events, State(retain_finished=2))
    assert sorted(state.orders.keys()) == ["c1", "c3", "c4"]
    assert state.order(client_id=2) is None and state.order(venue_id="V2") is None
    assert 2 not in state.by_client and "V2" not in state.by_venue
    assert [state.finished[i] for i in range(state.finished_head, state.finished_tail)] == [
        "c1",
        "c3",
    ]
    # The open order keeps its lock; the finished ones hold nothing.
    assert bal(state, "USDC") == (D(-20), D(10))


def test_retention_keeps_an_order_reopened_by_the_venue() -> None:
    # Regression: a rejected order the venue then accepts was still queued as finished and
    # got dropped while open, leaving its lock orphaned.
    events: list[Event] = [
        SPOT_MARKET,
        submit(1, BID, "2", "10"),
        submit(2, BID, "1", "10"),
        submit(3, BID, "1", "10"),
    ]
    events += [
        SubmitRejected(
            source=Source.REST, recv_time_us=1, symbol=SPOT, client_id=1, code="X", message=""
        ),
        accept("V1", client_id=1),  # reopened: New, 20 locked
        cancel(client_id=2),
        cancel(client_id=3),
    ]
    state = replay(events, State(retain_finished=1))
    order = state.order(client_id=1)
    assert order is not None and order.status is OrderStatus.NEW
    assert bal(state, "USDC") == (D(-20), D(20))


def test_report_that_only_adds_a_venue_id_keeps_order_and_index_consistent() -> None:
    # Regression: an absorbed report (an accept after the cancel) indexed the venue id
    # without storing it on the order; once retention dropped the order, a late fill naming
    # that venue id raised KeyError.
    events: list[Event] = [
        SPOT_MARKET,
        submit(1, BID, "2", "10"),
        cancel(client_id=1),
        accept("V1", client_id=1, side=BID, quantity="2", price="10"),
    ]
    order = replay(events).order(client_id=1)
    assert order is not None and order.venue_id == "V1"
    events += [submit(2, BID, "1", "10"), cancel(client_id=2)]
    state = replay(events, State(retain_finished=1))
    assert "c1" not in state.orders and "V1" not in state.by_venue
    late = apply(state, fill("V1", 1, BID, "1", "10"))
    assert late.order(venue_id="V1") is not None


# --- the embedding program's decimal context does not matter -------------------------------


def test_same_result_under_a_low_precision_context() -> None:
    events: list[Event] = [
        SPOT_MARKET,
        PERP_MARKET,
        balances({"USDC": ("100000.123456", "0"), "SOL": ("12.3456789", "0")}),
        submit(1, BID, "1.2345", "101.37"),
        accept("V1", client_id=1),
        fill("V1", 1, BID, "0.1234", "101.29", fee="0.00012345", fee_asset="SOL"),
        *perp_fills((BID, "1.23456", "150.123"), (BID, "2.5", "149.987"))[1:],
    ]
    reference = replay(events)
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        ctx.rounding = decimal.ROUND_DOWN
        low = replay(events)
        stepwise = State()
        for event in events:
            stepwise = apply(stepwise, event)
        low_hash = state_hash(low)
    assert low == reference and stepwise == reference
    assert low_hash == state_hash(reference)
    # By hand: locked 1.1111 * 101.37 = 112.632207; spent 0.1234 * 101.29 = 12.499186.
    # The two perp fills (opening a long) realize nothing; each takes its 0.1 USDC fee.
    assert bal(reference, "USDC") == (
        D("100000.123456") - D("112.632207") - D("12.499186") - D("0.2"),
        D("112.632207"),
    )
    assert bal(reference, "SOL") == (D("12.3456789") + D("0.1234") - D("0.00012345"), D(0))
    # Entry: (1.23456 * 150.123 + 2.5 * 149.987) / 3.73456, rounded to 60 digits.
    p = pos(reference)
    assert p.net_quantity == D("3.73456")
    cost = D("1.23456") * D("150.123") + D("2.5") * D("149.987")
    assert cost == D("560.30335088")
    assert p.entry_price == decimal.Context(prec=60).divide(cost, D("3.73456"))


# --- repeated and late reports ------------------------------------------------------------------


def test_a_repeated_expiry_or_reject_changes_nothing() -> None:
    # Regression: each repeat rebuilt the order with the same reason or code and counted as
    # a change (updated_seq moved), so applying them twice differed from once.
    rejected = SubmitRejected(
        source=Source.REST, recv_time_us=1, symbol=SPOT, client_id=2, code="X", message="no"
    )
    state = funded(
        submit(1, BID, "1", "10"),
        accept("V1", client_id=1),
        expire(venue_id="V1"),
        submit(2, BID, "1", "10"),
        rejected,
    )
    again = apply(apply(state, expire(venue_id="V1")), rejected)
    assert again.orders == state.orders


def test_order_venue_time_is_the_latest_reported_not_the_last_to_arrive() -> None:
    accepted = msgspec.structs.replace(accept("V1", client_id=1), venue_time_us=1_000)
    # Stream reports on our orders carry our client id as well.
    filled = msgspec.structs.replace(
        fill("V1", 1, BID, "1", "10", client_id=1), venue_time_us=1_500
    )
    cancelled = msgspec.structs.replace(cancel(venue_id="V1", client_id=1), venue_time_us=2_000)
    arrivals: list[list[Event]] = [[accepted, filled, cancelled], [cancelled, filled, accepted]]
    for reports in arrivals:
        state = funded(submit(1, BID, "2", "10"), *reports)
        order = state.order(client_id=1)
        assert order is not None
        assert order.venue_time_us == 2_000
        assert order.status is OrderStatus.CANCELLED and order.filled_quantity == 1


def test_a_fill_older_than_the_adopted_position_does_not_move_it() -> None:
    # Fill 10 counted, then the venue's position adopted as the baseline (it includes fill 10
    # and everything before it). A fill with an older trade id that turns up later is inside
    # that report: its order counts it, the position does not move again.
    state = replay([*perp_fills((BID, "1", "100")), position("5", entry="98")])
    assert (pos(state).net_quantity, pos(state).baselined) == (D(5), True)
    older = fill("P0", 0, BID, "2", "90", symbol=PERP, origin=OrderOrigin.ADL_AUTOCLOSE)
    state = apply(state, older)
    assert (pos(state).net_quantity, pos(state).entry_price) == (D(5), D(98))
    assert kinds_at(state) == [(state.last_seq, AnomalyKind.FILL_OUT_OF_ORDER)]
    order = state.order(venue_id="P0")
    assert order is not None and order.filled_quantity == 2
    # A newer fill moves it as usual.
    state = apply(
        state, fill("P2", 11, ASK, "1", "100", symbol=PERP, origin=OrderOrigin.ADL_AUTOCLOSE)
    )
    assert (pos(state).net_quantity, pos(state).realized_pnl) == (D(4), D(2))


def test_fills_without_a_trade_id_keep_their_arrival_order_after_a_baseline() -> None:
    # Their derived ids are hashes, in no order: a later one with a smaller hash must still
    # come after the earlier one, and after a baseline that counted the earlier one.
    hi, lo = SYNTHETIC_TRADE_ID_BASE + 1000, SYNTHETIC_TRADE_ID_BASE + 10
    events = [
        PERP_MARKET,
        fill("P1", 5, BID, "1", "100", symbol=PERP, origin="ADL_AUTOCLOSE"),
        fill("L1", hi, BID, "1", "100", symbol=PERP, origin="LIQUIDATION_AUTOCLOSE"),
        position("2", entry="100"),
        balances({"USDC": ("1000", "0")}),
        fill("L2", lo, ASK, "1", "110", symbol=PERP, origin="LIQUIDATION_AUTOCLOSE"),
    ]
    state = replay(events)
    assert (pos(state).net_quantity, pos(state).realized_pnl) == (D(1), D(10))
    assert state.balances["USDC"].available == D(1010)
    assert state.anomaly_total == 0
    # Without a baseline too: the second is placed after the first, whatever their hashes.
    state = replay([*events[:3], events[-1]])
    assert [f.key[1] for f in pos(state).recent] == [0, 1, 2]


def test_a_drift_reported_before_the_baseline_does_not_hide_one_after_it() -> None:
    def stream(quantity: str, entry: str) -> PositionObserved:
        return msgspec.structs.replace(position(quantity, entry=entry), source=Source.WS)

    state = replay(
        [
            PERP_MARKET,
            stream("1", "100"),
            stream("1", "101"),  # a drift of 1, two reports running: reported
            position("5", entry="100"),  # the baseline
            balances({"USDC": ("1000", "0")}),
            position("6", entry="100"),
            position("6", entry="102"),  # a new drift of 1, two reports running
        ]
    )
    assert state.anomaly_counts[AnomalyKind.POSITION_DRIFT] == 2
    assert pos(state).drift_reported == 1


def test_a_fill_from_before_the_baseline_window_does_not_move_the_position_or_balance() -> None:
    # The baseline came from a pass whose fill history looked back to 1,000 µs: the venue's
    # report includes every older fill. One such fill turning up later (the chaser finding an
    # old partial fill of an order resting since before the log) is counted on its order only.
    baseline = msgspec.structs.replace(position("1", entry="100"), covers_fills_before_us=1_000)
    state = replay([PERP_MARKET, baseline, balances({"USDC": ("1000", "0")})])
    old = msgspec.structs.replace(
        fill("P0", 3, BID, "1", "90", symbol=PERP, fee="0.5", origin="ADL_AUTOCLOSE"),
        venue_time_us=999,
    )
    state = apply(state, old)
    assert (pos(state).net_quantity, state.balances["USDC"].available) == (D(1), D(1000))
    assert kinds_at(state) == [(state.last_seq, AnomalyKind.FILL_OUT_OF_ORDER)]
    order = state.order(venue_id="P0")
    assert order is not None and order.filled_quantity == 1
    # A fill from inside the window moves both, as usual (sells 1 at 110: +10, fee 0.5).
    new = msgspec.structs.replace(
        fill("P1", 4, ASK, "1", "110", symbol=PERP, fee="0.5", origin="ADL_AUTOCLOSE"),
        venue_time_us=1_000,
    )
    state = apply(state, new)
    assert (pos(state).net_quantity, state.balances["USDC"].available) == (D(0), D("1009.5"))


# --- what apply leaves alone -------------------------------------------------------------------


def test_apply_keeps_every_map_an_event_does_not_touch_as_the_same_object() -> None:
    # `is_news` and the engine's listeners rely on identity to see that nothing changed: a
    # fold that copied an untouched map would make every reconciliation pass look like news.
    state = funded(submit(1, BID, "2", "10"))
    request = CancelRequested(source=Source.LOCAL, recv_time_us=50, symbol=SPOT, client_id=1)
    after = apply(state, request)  # only the order's cancel flag moves
    assert after.orders is not state.orders
    for name in ("balances", "positions", "markets", "by_client", "by_venue", "finished"):
        assert getattr(after, name) is getattr(state, name), name
    again = apply(after, request)  # the same request again changes nothing
    assert again.orders is after.orders
    assert again.balances is after.balances


# --- reduce-only, in the venue's words -----------------------------------------------------------


def test_an_order_the_venue_reports_reduce_only_is_reduce_only_and_stays_so() -> None:
    # A liquidation first seen by its accept, an exit first seen by reconciliation: the
    # reports say reduce-only, so the records are; a later report without the flag (a fill,
    # an observation that leaves it out) does not take it away.
    liquidation = msgspec.structs.replace(
        accept("L1", symbol=PERP, side=ASK, quantity="2", origin="LIQUIDATION_AUTOCLOSE"),
        reduce_only=True,
    )
    exit_ = msgspec.structs.replace(
        observe(VenueStatus.CANCELLED, venue_id="X1", symbol=PERP, executed="0"),
        reduce_only=True,
    )
    state = replay([PERP_MARKET, liquidation, exit_])
    assert state.orders["vL1"].reduce_only and state.orders["vX1"].reduce_only
    later = observe(VenueStatus.CANCELLED, venue_id="X1", symbol=PERP, executed="0")
    assert apply(state, later).orders["vX1"].reduce_only
    # Our own order, not reduce-only: a report without the flag leaves it so.
    ours = replay([PERP_MARKET, submit(7, BID, "1", "100", symbol=PERP), accept("O7", client_id=7)])
    assert not ours.orders["c7"].reduce_only


# --- exits reported before their parent ---------------------------------------------------------


def _exit(venue_id: str, parent: str) -> Event:
    """The venue's report of a stop-loss exit it attached to order `parent`, cancelled."""
    return msgspec.structs.replace(
        observe(VenueStatus.CANCELLED, venue_id=venue_id, symbol=PERP),
        related_order_id=parent,
        reduce_only=True,
        trigger_price=D("140"),
    )


@pytest.mark.parametrize("answered", [False, True])
def test_an_exit_of_an_order_still_without_its_venue_id_is_no_anomaly(answered: bool) -> None:
    # A bracket order's submit got no answer (or its answer has not been recorded yet): its
    # venue id is unknown, and the venue's report of one of its exits names that id as its
    # parent. The exit is ours; it is kept, with no unknown-order anomaly.
    bracket = msgspec.structs.replace(
        submit(7, ASK, "3", None, symbol=PERP, order_type=OrderType.MARKET),
        stop_loss_trigger_price=D("150"),
    )
    events: list[Event] = [PERP_MARKET, bracket]
    if not answered:
        events.append(
            SubmitUnknown(
                source=Source.REST, recv_time_us=20, symbol=PERP, client_id=7, reason="503"
            )
        )
    state = replay([*events, _exit("8000000007", "8000000006")])
    assert state.anomaly_counts.get(AnomalyKind.UNKNOWN_ORDER) is None
    exit_order = state.order(venue_id="8000000007")
    assert exit_order is not None and exit_order.related_order_id == "8000000006"
    # The parent's own report comes later and finds its order by client id.
    state = apply(state, accept("8000000006", client_id=7, symbol=PERP))
    parent = state.order(client_id=7)
    assert parent is not None and parent.venue_id == "8000000006"
    assert state.anomaly_counts.get(AnomalyKind.UNKNOWN_ORDER) is None


@pytest.mark.parametrize(
    "ours",
    [
        [],  # no order of ours at all
        [submit(7, ASK, "3", None, symbol=PERP, order_type=OrderType.MARKET)],  # no exits asked
        [  # exits asked, on another market
            msgspec.structs.replace(
                submit(7, ASK, "3", "150", symbol=SPOT), stop_loss_trigger_price=D("140")
            )
        ],
        [  # exits asked, but the order already has its venue id
            msgspec.structs.replace(
                submit(7, ASK, "3", None, symbol=PERP, order_type=OrderType.MARKET),
                stop_loss_trigger_price=D("150"),
            ),
            accept("8000000001", client_id=7, symbol=PERP),
        ],
    ],
)
def test_an_exit_no_order_of_ours_can_own_is_an_unknown_order(ours: list[Event]) -> None:
    state = replay([SPOT_MARKET, PERP_MARKET, *ours, _exit("8000000007", "8000000006")])
    assert state.anomaly_counts.get(AnomalyKind.UNKNOWN_ORDER) == 1
