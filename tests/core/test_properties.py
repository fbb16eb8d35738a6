"""Properties of the pure core: totality, idempotence, arrival-order convergence, replay
equivalence, conservation of money, log round-trips and the canonical state hash."""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any

import attrs
import msgspec
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from oms.core.events import EVENT_TYPES, AssetBalance, BalanceObserved, Event, OrderFilled
from oms.core.reducer import Fold, apply, replay
from oms.core.serialization import decode_line, encode_line, state_hash
from oms.core.state import POSITION_WINDOW, AnomalyKind, Order, State
from oms.core.values import SYNTHETIC_TRADE_ID_BASE, MarketType, OrderStatus, Side, VenueStatus
from oms.testing.strategies import (
    EVENT_STRATEGIES,
    PERP,
    SPOT,
    accept,
    balances,
    cancel,
    events,
    expire,
    fill,
    histories,
    market,
    observe,
    prices,
    quantities,
    submit,
    trading_event,
)

ZERO = Decimal(0)
STEP = Decimal("0.01")
SOME = settings(max_examples=60, deadline=None)
MANY = settings(max_examples=150, deadline=None)


def _fold(events: list[Event], state: State | None = None) -> State:
    return functools.reduce(apply, events, State() if state is None else state)


# --- totality -----------------------------------------------------------------------------------


@MANY
@given(st.lists(events() | trading_event(), max_size=30), histories(max_size=30))
def test_reducer_never_raises(noise: list[Event], history: list[Event]) -> None:
    # Arbitrary field values (unknown symbols, negative and zero figures, huge and tiny
    # decimals) mixed into realistic trading: anomalies at worst, never an exception.
    state = replay(history + noise + history)
    assert state.last_seq == 2 * len(history) + len(noise)


# --- idempotence ----------------------------------------------------------------------------------


@MANY
@given(histories(max_size=40))
def test_applying_any_event_twice_is_as_once(history: list[Event]) -> None:
    state = State()
    for event in history:
        state = apply(state, event)
        twice = apply(state, event)
        assert twice.orders == state.orders, event
        assert twice.balances == state.balances, event
        assert twice.positions == state.positions, event
        assert twice.by_client == state.by_client and twice.by_venue == state.by_venue


# --- one order's venue reports in any arrival order --------------------------------------------


@attrs.frozen
class Story:
    """One order's life at the venue: the events before it (local) and its venue reports."""

    prefix: list[Event]
    reports: list[Event]
    perp: bool


@st.composite
def stories(draw: st.DrawFn) -> Story:
    perp = draw(st.booleans())
    symbol = PERP if perp else SPOT
    side = draw(st.sampled_from(Side))
    steps = draw(st.integers(2, 400))
    qty = steps * STEP
    price = draw(prices(10_000))
    # Perp fills from flat: at most two, so that the average entry is rounded at most once
    # whatever the order (see test_perp_entry_price_depends_on_arrival_order_at_60_digits).
    count = draw(st.integers(1, min(2 if perp else 4, steps - 1)))
    complete = draw(st.booleans())
    # Cumulative steps at each fill, strictly increasing, ending at `steps` if complete.
    inner = range(1, steps)
    cuts = sorted(draw(st.sets(st.sampled_from(inner), min_size=count, max_size=count)))
    if complete:
        cuts[-1] = steps
        cuts = sorted(set(cuts))
    sign = -1 if side is Side.BID else 1
    reports: list[Event] = [
        msgspec.structs.replace(
            accept("V1", client_id=1, symbol=symbol, side=side, quantity=qty, price=price),
            venue_time_us=1_000,
        )
    ]
    done = 0
    for n, cut in enumerate(cuts, start=1):
        improvement = draw(st.integers(0, 3)) * STEP
        reports.append(
            msgspec.structs.replace(
                fill(
                    "V1",
                    100 + n,
                    side,
                    (cut - done) * STEP,
                    max(price + sign * improvement, STEP),
                    fee=draw(st.sampled_from(["0", "0.01", "0.0007"])),
                    fee_asset=draw(st.sampled_from(["SOL", "USDC", "BPX"])),
                    client_id=1,
                    cum=cut * STEP,
                    status=VenueStatus.FILLED if cut == steps else VenueStatus.PARTIALLY_FILLED,
                    symbol=symbol,
                ),
                venue_time_us=1_000 + n,
            )
        )
        done = cut
    ending = None if done == steps else draw(st.sampled_from([None, cancel, expire]))
    if ending is not None:
        reports.append(
            msgspec.structs.replace(
                ending(venue_id="V1", client_id=1, symbol=symbol, cum=done * STEP),
                venue_time_us=2_000,
            )
        )
    # Reconciliation may also report the order as REST shows it, at some point of its life.
    if draw(st.booleans()):
        seen = draw(st.integers(0, len(cuts)))
        executed = cuts[seen - 1] * STEP if seen else ZERO
        if ending is not None and seen == len(cuts) and draw(st.booleans()):
            status = VenueStatus.CANCELLED if ending is cancel else VenueStatus.EXPIRED
        elif executed == qty:
            status = VenueStatus.FILLED
        else:
            status = VenueStatus.PARTIALLY_FILLED if executed else VenueStatus.NEW
        reports.append(
            observe(status, venue_id="V1", client_id=1, symbol=symbol, executed=executed)
        )
    prefix: list[Event] = [
        market(SPOT, "SOL", "USDC"),
        market(PERP, "SOL", "USDC", MarketType.PERP),
        balances({"USDC": ("1000000", "0"), "SOL": ("10000", "0"), "BPX": ("5", "0")}),
        submit(1, side, qty, price, symbol=symbol),
    ]
    return Story(prefix, reports, perp)


# Bookkeeping that records *when* (in log seq) the order last changed, not what it is.
_SEQ_FIELDS = ("created_seq", "updated_seq")


def _essence(order: Order | None) -> dict[str, Any]:
    assert order is not None
    return {k: v for k, v in msgspec.structs.asdict(order).items() if k not in _SEQ_FIELDS}


@MANY
@given(stories(), st.data())
def test_any_arrival_order_converges(story: Story, data: st.DataObject) -> None:
    reference = replay(story.prefix + story.reports)
    shuffled = data.draw(st.permutations(story.reports))
    state = replay(story.prefix + shuffled)
    assert _essence(state.order(client_id=1)) == _essence(reference.order(client_id=1))
    assert state.balances == reference.balances
    assert state.positions == reference.positions
    order = reference.order(client_id=1)
    assert order is not None
    # In venue order the story is consistent: no anomaly at all.
    assert reference.anomaly_total == 0
    if order.status is OrderStatus.FILLED or not order.status.is_open:
        assert all(not b.locked for b in state.balances.values())


def test_perp_entry_price_does_not_depend_on_arrival_order() -> None:
    # Three fills opening a position: the entry is the exact open cost over the quantity,
    # divided once, so every arrival order gives the same 60-digit figure.
    fills = [
        fill("V1", 1, Side.BID, "0.01", "0.01", symbol=PERP, origin="ADL_AUTOCLOSE"),
        fill("V1", 2, Side.BID, "0.01", "0.01", symbol=PERP, origin="ADL_AUTOCLOSE"),
        fill("V1", 3, Side.BID, "1.17", "21.66", symbol=PERP, origin="ADL_AUTOCLOSE"),
    ]
    perp = market(PERP, "SOL", "USDC", MarketType.PERP)
    one = replay([perp, *fills])
    other = replay([perp, fills[2], fills[0], fills[1]])
    assert one.positions[PERP].entry_price == other.positions[PERP].entry_price


@st.composite
def perp_fill_sets(draw: st.DrawFn, max_size: int = 30) -> list[OrderFilled]:
    """Fills on PERP in the venue's matching order (ascending trade ids), both sides, so the
    position opens, grows, reduces, flips and closes; some orders fill more than once."""
    count = draw(st.integers(min_value=1, max_value=max_size))
    trade_ids = sorted(draw(st.sets(st.integers(1, 10_000), min_size=count, max_size=count)))
    out = []
    for trade_id in trade_ids:
        out.append(
            fill(
                f"V{draw(st.integers(1, 6))}",
                trade_id,
                draw(st.sampled_from(Side)),
                draw(quantities(max_steps=500)),
                draw(prices(max_steps=20_000)),
                fee=draw(st.sampled_from(("0", "0.01", "0.0003"))),
                symbol=PERP,
                origin="LIQUIDATION_AUTOCLOSE",
            )
        )
    return out


_PERP_START = [
    market(PERP, "SOL", "USDC", MarketType.PERP),
    balances({"USDC": ("1000", "0")}),
]


@MANY
@given(perp_fill_sets(), st.data())
def test_a_perp_position_is_a_function_of_the_set_of_its_fills(
    fills: list[OrderFilled], data: st.DataObject
) -> None:
    # Any arrival order (late fills recovered by reconciliation, reordered streams) gives the
    # position, realized PnL, fees and the quote balance of the venue's matching order.
    reference = replay(_PERP_START + fills)
    shuffled = data.draw(st.permutations(fills))
    state = replay(_PERP_START + shuffled)
    assert state.positions[PERP] == reference.positions[PERP]
    assert state.balances == reference.balances
    assert state.anomaly_total == 0
    # Duplicates on top change nothing.
    again = replay(_PERP_START + shuffled + data.draw(st.permutations(fills)))
    assert again.positions[PERP] == reference.positions[PERP]
    assert again.balances == reference.balances


def test_late_fills_beyond_the_checkpoint_still_land_at_their_place() -> None:
    # More fills than the window keeps: the oldest are folded into the checkpoint; a late fill
    # among the newest still takes its place in matching order.
    fills = [
        fill("V1", n, Side.BID if n % 3 else Side.ASK, "1", str(100 + n % 17), symbol=PERP,
             origin="LIQUIDATION_AUTOCLOSE")
        for n in range(1, POSITION_WINDOW + 60)
    ]  # fmt: skip
    reference = replay(_PERP_START + fills)
    late = fills[-30]
    state = replay(_PERP_START + [f for f in fills if f is not late] + [late])
    assert state.positions[PERP] == reference.positions[PERP]
    assert state.balances == reference.balances
    assert len(state.positions[PERP].recent) == POSITION_WINDOW
    # One older than the window counts (quantity and fees are exact sums) and is reported.
    old = fills[5]
    state = replay(_PERP_START + [f for f in fills if f is not old] + [old])
    assert state.positions[PERP].net_quantity == reference.positions[PERP].net_quantity
    assert state.positions[PERP].fees == reference.positions[PERP].fees
    assert dict(state.anomaly_counts) == {AnomalyKind.FILL_OUT_OF_ORDER: 1}


def test_a_fill_without_a_trade_id_is_placed_after_the_newest_counted() -> None:
    system = fill("L1", SYNTHETIC_TRADE_ID_BASE + 12345, Side.ASK, "2", "90", symbol=PERP,
                  origin="LIQUIDATION_AUTOCLOSE")  # fmt: skip
    opened = fill("V1", 10, Side.BID, "3", "100", symbol=PERP, origin="LIQUIDATION_AUTOCLOSE")
    later = fill("V2", 20, Side.BID, "1", "110", symbol=PERP, origin="LIQUIDATION_AUTOCLOSE")
    state = replay([*_PERP_START, opened, system, later])
    position = state.positions[PERP]
    # Long 3 at 100, liquidated 2 at 90 (realized -20), then 1 more at 110: long 2 at 105.
    assert (position.net_quantity, position.entry_price) == (Decimal(2), Decimal(105))
    assert position.realized_pnl == Decimal(-20)
    assert state.balances["USDC"].available == Decimal(980)


# --- replay, apply and Fold agree -----------------------------------------------------------------


@MANY
@given(histories(max_size=40), st.data())
def test_replay_equals_apply_one_by_one_and_a_paused_fold(
    history: list[Event], data: st.DataObject
) -> None:
    whole = replay(history)
    assert _fold(history) == whole
    assert state_hash(_fold(history)) == state_hash(whole)

    cut = data.draw(st.integers(0, len(history)))
    draft = Fold(State())
    for event in history[:cut]:
        draft.step(event)
    middle = draft.freeze()
    middle_hash = state_hash(middle)
    for event in history[cut:]:
        draft.step(event)
    assert draft.freeze() == whole
    # Freezing took a snapshot: going on did not change it.
    assert state_hash(middle) == middle_hash
    assert middle == replay(history[:cut])
    # And a replay can start from any state.
    assert replay(history[cut:], middle) == whole


# --- money is conserved ---------------------------------------------------------------------------


@MANY
@given(
    st.lists(
        st.tuples(
            st.sampled_from(Side),
            st.lists(
                st.tuples(
                    quantities(300),
                    prices(5_000),
                    st.sampled_from([ZERO, Decimal("0.001"), Decimal("0.25")]),
                    st.sampled_from(["SOL", "USDC"]),
                ),
                min_size=1,
                max_size=4,
            ),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_spot_fills_conserve_money(
    orders: list[tuple[Side, list[tuple[Decimal, Decimal, Decimal, str]]]],
) -> None:
    start = {"SOL": Decimal(1000), "USDC": Decimal(100000)}
    events: list[Event] = [
        market(SPOT, "SOL", "USDC"),
        balances({asset: (str(amount), "0") for asset, amount in start.items()}),
    ]
    trade_id = 0
    for client_id, (side, fills) in enumerate(orders, start=1):
        total = sum((q for q, _, _, _ in fills), ZERO)
        limit = (
            max(p for _, p, _, _ in fills) if side is Side.BID else min(p for _, p, _, _ in fills)
        )
        # Order a little more than is filled, so that the cancel releases a real lock.
        events += [
            submit(client_id, side, total + 1, limit),
            accept(f"V{client_id}", client_id=client_id),
        ]
        for qty, price, fee, fee_asset in fills:
            trade_id += 1
            events.append(
                fill(f"V{client_id}", trade_id, side, qty, price, fee=fee, fee_asset=fee_asset)
            )
        events.append(cancel(venue_id=f"V{client_id}"))
    state = replay(events)

    base_in = quote_out = ZERO
    fees = {"SOL": ZERO, "USDC": ZERO}
    for side, fills in orders:
        sign = 1 if side is Side.BID else -1
        for qty, price, fee, fee_asset in fills:
            base_in += sign * qty
            quote_out += sign * qty * price
            fees[fee_asset] += fee
    sol, usdc = state.balances["SOL"], state.balances["USDC"]
    assert sol.total - start["SOL"] == base_in - fees["SOL"]
    assert start["USDC"] - usdc.total == quote_out + fees["USDC"]
    # Every order is finished: nothing stays locked.
    assert sol.locked == 0 and usdc.locked == 0
    for client_id, (_, fills) in enumerate(orders, start=1):
        order = state.order(client_id=client_id)
        assert order is not None
        assert order.filled_quote == sum((q * p for q, p, _, _ in fills), ZERO)


# --- the log line format --------------------------------------------------------------------------


def test_a_strategy_for_every_event_type() -> None:
    assert set(EVENT_STRATEGIES) == set(EVENT_TYPES.values())


@pytest.mark.parametrize("cls", list(EVENT_STRATEGIES), ids=lambda c: c.__name__)
@SOME
@given(data=st.data())
def test_every_event_type_round_trips(cls: type[Event], data: st.DataObject) -> None:
    event = data.draw(EVENT_STRATEGIES[cls])
    seq = data.draw(st.integers(1, 2**62))
    line = encode_line(seq, event)
    # One line per event: whatever the text fields hold, the only newline ends it.
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_line(line) == (seq, event)
    back_seq, back = decode_line(line.decode("utf-8"))
    assert back_seq == seq and type(back) is cls
    # Not only equal values: the same text for every decimal (1.50 stays 1.50, 1E-18 stays).
    assert repr(back) == repr(event)


def test_extreme_decimals_round_trip_exactly() -> None:
    for text in ("1E-18", "123456789012345678.123456789", "-0", "1.50", "0E-10"):
        event = BalanceObserved(
            source=balances({}).source,
            recv_time_us=1,
            balances=(AssetBalance(asset="Ω", available=Decimal(text), locked=Decimal(text)),),
        )
        _, back = decode_line(encode_line(1, event))
        assert isinstance(back, BalanceObserved)
        assert str(back.balances[0].available) == text


# --- the canonical state hash ---------------------------------------------------------------------


def _respell(event: Event) -> Event:
    """The same event with every decimal written with three more trailing zeros."""

    def longer(value: Any) -> Any:
        if isinstance(value, Decimal):
            return value.quantize(Decimal(1).scaleb(value.as_tuple().exponent - 3))  # type: ignore[operator]
        if isinstance(value, AssetBalance):
            return msgspec.structs.replace(
                value,
                available=longer(value.available),
                locked=longer(value.locked),
                staked=longer(value.staked),
            )
        if isinstance(value, tuple):
            return tuple(longer(v) for v in value)
        return value

    changes = {a.name: longer(getattr(event, a.name)) for a in msgspec.structs.fields(type(event))}
    return msgspec.structs.replace(event, **changes)


def _nudge(event: Event) -> Event | None:
    """The event with its first decimal figure moved by 0.01, or None if it has none."""
    for a in msgspec.structs.fields(type(event)):
        value = getattr(event, a.name)
        if isinstance(value, Decimal):
            changes: dict[str, Any] = {a.name: value + STEP}
            return msgspec.structs.replace(event, **changes)
    return None


@MANY
@given(histories(max_size=30), st.data())
def test_state_hash_equal_states_equal_hashes_and_different_differ(
    history: list[Event], data: st.DataObject
) -> None:
    state = replay(history)
    assert state_hash(replay(history)) == state_hash(state)
    # Spelling: 1.5 and 1.500 are the same figure, hence the same state and hash.
    respelled = replay([_respell(e) for e in history])
    assert respelled.orders == state.orders
    assert respelled.balances == state.balances
    assert respelled.positions == state.positions
    # Anomaly texts quote the figures as the venue spelled them, so only without anomalies
    # is the whole state (and so the hash) independent of spelling.
    assert (state_hash(respelled) == state_hash(state)) == (respelled == state)
    if not state.anomalies:
        assert state_hash(respelled) == state_hash(state)
    # One figure moved: the hash changes exactly when the state does.
    index = data.draw(st.integers(0, len(history) - 1))
    nudged = _nudge(history[index])
    assume(nudged is not None)
    assert nudged is not None
    other = replay([*history[:index], nudged, *history[index + 1 :]])
    assert (state_hash(other) == state_hash(state)) == (other == state)


def test_state_hash_sees_a_single_fill_quantity() -> None:
    base: list[Event] = [market(), submit(1, Side.BID, "2", "10")]
    one = replay([*base, fill("V1", 1, Side.BID, "1", "10", client_id=1)])
    other = replay([*base, fill("V1", 1, Side.BID, "1.01", "10", client_id=1)])
    assert one != other and state_hash(one) != state_hash(other)


def test_fill_is_keyed_by_trade_id_not_by_content() -> None:
    # Two distinct trades with identical figures both count.
    base: list[Event] = [market(), submit(1, Side.BID, "2", "10")]
    first = fill("V1", 1, Side.BID, "1", "10", client_id=1)
    second: OrderFilled = msgspec.structs.replace(first, trade_id=2)
    state = replay([*base, first, second])
    order = state.order(client_id=1)
    assert order is not None and order.filled_quantity == 2


def test_state_hash_ignores_decimal_spelling() -> None:
    events: list[Event] = [
        market(),
        balances({"USDC": ("100", "0")}),
        submit(1, Side.BID, "2", "10"),
        accept("V1", client_id=1),
        fill("V1", 1, Side.BID, "1", "9.5", fee="0.01", fee_asset="USDC", cum="1"),
    ]
    plain = replay(events)
    respelled = replay([_respell(e) for e in events])
    assert plain.anomaly_total == 0
    assert respelled == plain
    assert state_hash(respelled) == state_hash(plain)
