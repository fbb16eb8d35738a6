"""The pre-trade risk check (`oms.core.risk.check`) and the kill switch in the reducer."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import attrs
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oms.core.events import (
    CancelRequested,
    Event,
    KillSwitchReset,
    KillSwitchTripped,
    OrderDenied,
    OrderSubmitted,
    PositionObserved,
)
from oms.core.reducer import apply, replay
from oms.core.risk import (
    ACCEPTED,
    PNL_SAMPLE_SPACING_US,
    AccountLimits,
    Denied,
    LimitName,
    Limits,
    LimitsError,
    SymbolLimits,
    check,
    headroom,
    limits_from_mapping,
    loss,
    loss_breach,
)
from oms.core.serialization import state_document, state_hash
from oms.core.state import State
from oms.core.values import OrderType, Side, Source
from oms.testing.builders import PERP, SPOT, accept, fill, mark, markets
from oms.testing.strategies import histories, prices, quantities

D = Decimal
MARK = D("100")
S = 1_000_000  # one second in microseconds


def fixed_mark(state: State, symbol: str) -> Decimal | None:
    return MARK


def order(
    *,
    client_id: int = 1,
    symbol: str = PERP,
    side: Side = Side.BID,
    quantity: str | None = "1",
    price: str | None = "100",
    reduce_only: bool = False,
    order_type: OrderType = OrderType.LIMIT,
    quote_quantity: str | None = None,
    at: int = 1_000 * S,
) -> OrderSubmitted:
    return OrderSubmitted(
        source=Source.LOCAL,
        recv_time_us=at,
        client_id=client_id,
        symbol=symbol,
        side=side,
        order_type=order_type,
        quantity=None if quantity is None else D(quantity),
        quote_quantity=None if quote_quantity is None else D(quote_quantity),
        price=None if price is None else D(price),
        reduce_only=reduce_only,
    )


def long_position(quantity: str = "5", price: str = "100", mark: str | None = None) -> list[Event]:
    """Markets, then a perp position bought at `price` (and a venue report with `mark`)."""
    events: list[Event] = [
        *markets(),
        order(client_id=900, quantity=quantity, price=price, at=1),
        accept("V900", client_id=900, symbol=PERP),
        fill("V900", 1, Side.BID, quantity, price, client_id=900, symbol=PERP),
    ]
    if mark is not None:
        events.append(
            PositionObserved(
                source=Source.WS,
                recv_time_us=2,
                symbol=PERP,
                net_quantity=D(quantity),
                mark_price=D(mark),
            )
        )
    return events


def trip(reason: str = "test") -> KillSwitchTripped:
    return KillSwitchTripped(source=Source.LOCAL, recv_time_us=5, reason=reason, by="program")


def limit_of(decision: object) -> LimitName:
    assert isinstance(decision, Denied), decision
    return decision.limit


# --- one limit at a time --------------------------------------------------------------------------


def per_symbol(**limits: Any) -> Limits:
    return Limits(symbols={PERP: SymbolLimits(**limits), SPOT: SymbolLimits(**limits)})


@pytest.mark.parametrize(
    ("limits", "command", "expected"),
    [
        (per_symbol(max_order_quantity=D("2")), order(quantity="2"), None),
        (per_symbol(max_order_quantity=D("2")), order(quantity="2.01"), "max_order_quantity"),
        (per_symbol(max_order_notional=D("200")), order(quantity="2"), None),
        (per_symbol(max_order_notional=D("200")), order(quantity="2.5"), "max_order_notional"),
        (
            Limits(account=AccountLimits(max_order_notional=D("99"))),
            order(symbol=SPOT),
            "max_order_notional",
        ),
        # a market order is valued at the mark
        (
            per_symbol(max_order_notional=D("150")),
            order(order_type=OrderType.MARKET, price=None, quantity="2"),
            "max_order_notional",
        ),
        (per_symbol(max_position=D("6")), order(quantity="1"), None),  # 5 + 1
        (per_symbol(max_position=D("6")), order(quantity="1.5"), "max_position"),
        (per_symbol(max_position=D("6")), order(side=Side.ASK, quantity="11"), None),  # -6
        (per_symbol(max_position=D("6")), order(side=Side.ASK, quantity="12"), "max_position"),
        (per_symbol(max_position=D("0")), order(symbol=SPOT, quantity="3"), None),  # spot: none
        (per_symbol(max_price_distance=D("0.05")), order(price="105"), None),
        (per_symbol(max_price_distance=D("0.05")), order(price="94.9"), "max_price_distance"),
        (per_symbol(max_loss=D("50")), order(), None),
    ],
)
def test_each_limit_denies_just_beyond_it(
    limits: Limits, command: OrderSubmitted, expected: str | None
) -> None:
    state = replay(long_position(mark="100"))
    decision = check(state, command, limits, mark=fixed_mark)
    if expected is None:
        assert decision == ACCEPTED
    else:
        assert limit_of(decision) == expected


def test_open_orders_are_counted_per_symbol_and_for_the_account() -> None:
    state = replay([*markets(), order(client_id=1, symbol=SPOT), order(client_id=2)])
    assert check(state, order(client_id=3), per_symbol(max_open_orders=2)) == ACCEPTED
    denied = check(state, order(client_id=3), per_symbol(max_open_orders=1))
    assert isinstance(denied, Denied)
    assert (denied.limit, denied.scope) == (LimitName.MAX_OPEN_ORDERS, PERP)
    account = Limits(account=AccountLimits(max_open_orders=2))
    denied = check(state, order(client_id=3), account)
    assert isinstance(denied, Denied)
    assert (denied.limit, denied.scope) == (LimitName.MAX_OPEN_ORDERS, "account")


def test_a_limit_that_needs_a_mark_denies_when_there_is_none() -> None:
    state = replay(long_position())  # no venue report: no mark
    for limits, command in (
        (per_symbol(max_price_distance=D("0.1")), order()),
        (per_symbol(max_order_notional=D("1000")), order(price=None, order_type=OrderType.MARKET)),
        (per_symbol(max_loss=D("1000")), order()),
    ):
        decision = check(state, command, limits)
        assert isinstance(decision, Denied)
        assert decision.reason.startswith("cannot check")
    # and the observed mark, once reported, is used
    reported = replay(long_position(mark="100"))
    assert check(reported, order(price="101"), per_symbol(max_price_distance=D("0.1"))) == ACCEPTED


def test_the_rate_of_submits_counts_the_window() -> None:
    limits = Limits(account=AccountLimits(max_submits=2, submit_window=D("1")))
    events: list[Event] = [*markets(), order(client_id=1, at=10 * S), order(client_id=2, at=10 * S)]
    state = replay(events)
    assert limit_of(check(state, order(client_id=3, at=10 * S + 999_999), limits)) == "max_submits"
    assert check(state, order(client_id=3, at=11 * S), limits) == ACCEPTED
    # reduce-only orders count and are counted too: a runaway loop is stopped either way
    assert limit_of(check(state, order(client_id=3, at=10 * S, reduce_only=True), limits)) == (
        "max_submits"
    )


def test_loss_is_realized_in_the_window_plus_unrealized_at_the_mark() -> None:
    # long 5 at 100; sell 2 at 90 at t=0 (realized -20), then 5 minutes later the mark is 95
    events: list[Event] = [
        *long_position("5", "100"),
        order(client_id=901, side=Side.ASK, quantity="2", price="90", at=1),
        accept("V901", client_id=901, symbol=PERP),
        fill("V901", 2, Side.ASK, "2", "90", client_id=901, symbol=PERP),
    ]
    state = replay(events)

    def mark(state: State, symbol: str) -> Decimal:
        return D("95")

    now = 300 * S
    # realized -20 since the log began, unrealized 3 x (95 - 100) = -15
    assert loss(state, now, 3600 * S, mark=mark) == D("35")
    # a submit a minute or more later samples realized PnL: a window starting after it sees
    # only the unrealized part
    later = replay([order(client_id=2, at=200 * S)], state)
    assert loss(later, now, 60 * S, mark=mark) == D("15")
    assert loss(later, now, 3600 * S, mark=mark) == D("35")
    limits = Limits(account=AccountLimits(max_loss=D("30"), loss_window=3600))
    decision = check(later, order(client_id=3, at=now), limits, mark=mark)
    assert limit_of(decision) == "max_loss"
    assert loss_breach(later, limits, now, mark=mark) is not None
    short_window = Limits(account=AccountLimits(max_loss=D("30"), loss_window=60))
    assert check(later, order(client_id=3, at=now), short_window, mark=mark) == ACCEPTED
    assert loss_breach(later, short_window, now, mark=mark) is None


def test_pnl_samples_are_a_minute_apart() -> None:
    state = replay(
        [*markets(), *(order(client_id=i, at=i * 10 * S) for i in range(1, 20))]  # 10 s apart
    )
    times = [s.time_us for s in state.risk.pnl_samples]
    assert all(b - a >= PNL_SAMPLE_SPACING_US for a, b in itertools.pairwise(times))
    assert len(times) == 4  # at 10, 70, 130 and 190 s


# --- the kill switch ------------------------------------------------------------------------------


def test_the_kill_switch_latches_until_reset_and_denies_all_but_reduce_only() -> None:
    state = replay([*long_position(mark="100"), trip("too fast")])
    assert state.risk.tripped and state.risk.trip_reason == "too fast"
    decision = check(state, order(), Limits())
    assert limit_of(decision) == "kill_switch"
    assert check(state, order(side=Side.ASK, reduce_only=True), Limits()) == ACCEPTED
    # reduce-only exempts nothing on spot, where the venue does not enforce it
    assert limit_of(check(state, order(symbol=SPOT, reduce_only=True), Limits())) == ("kill_switch")
    cancel = CancelRequested(source=Source.LOCAL, recv_time_us=9, symbol=PERP, client_id=900)
    assert check(state, cancel, Limits()) == ACCEPTED
    # a second trip keeps the first reason (latched); only a reset clears it
    state = apply(state, trip("again"))
    assert state.risk.tripped and state.risk.trip_reason == "too fast"
    assert state.risk.trips == 2
    state = apply(state, KillSwitchReset(source=Source.LOCAL, recv_time_us=10, reason="ok"))
    assert not state.risk.tripped and state.risk.resets == 1
    assert check(state, order(), Limits()) == ACCEPTED


def test_risk_appears_in_the_document_and_hash_only_once_used() -> None:
    plain = replay(long_position(mark="100"))
    assert "risk" not in state_document(plain)
    tripped = apply(plain, trip())
    assert state_document(tripped)["risk"]["kill_switch"]["tripped"] is True
    assert state_hash(tripped) != state_hash(plain)


# --- properties -----------------------------------------------------------------------------------

perp_orders = st.builds(
    order,
    client_id=st.integers(10_000, 20_000),
    symbol=st.sampled_from([PERP, SPOT]),
    side=st.sampled_from(Side),
    quantity=quantities(max_steps=2000).map(str),
    price=prices(max_steps=20_000).map(str),
    reduce_only=st.booleans(),
)
maxima = st.none() | quantities(max_steps=1000)
symbol_limits = st.builds(
    SymbolLimits,
    max_order_quantity=maxima,
    max_order_notional=maxima,
    max_position=maxima,
    max_open_orders=st.none() | st.integers(0, 5),
    max_price_distance=st.none() | st.sampled_from([D("0"), D("0.01"), D("0.5")]),
    max_loss=maxima,
)
any_limits = st.builds(
    Limits,
    account=st.builds(
        AccountLimits,
        max_order_notional=maxima,
        max_open_orders=st.none() | st.integers(0, 5),
        max_loss=maxima,
    ),
    symbols=st.fixed_dictionaries({PERP: symbol_limits, SPOT: symbol_limits}),
)
states = st.builds(
    lambda history, tripped: replay([*history, *([trip()] if tripped else [])]),
    histories(max_size=25),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(state=states, command=perp_orders, limits=any_limits)
def test_reduce_only_is_never_denied_by_exposure_limits(
    state: State, command: OrderSubmitted, limits: Limits
) -> None:
    command = OrderSubmitted(**{**_fields(command), "symbol": PERP, "reduce_only": True})
    # whatever the limits, the kill switch, the marks (none here) and the state
    assert check(state, command, limits) == ACCEPTED


@settings(max_examples=150, deadline=None)
@given(state=states, command=perp_orders, limits=any_limits)
def test_a_denial_changes_nothing_but_the_risk_record(
    state: State, command: OrderSubmitted, limits: Limits
) -> None:
    decision = check(state, command, limits, mark=fixed_mark)
    if not isinstance(decision, Denied):
        return
    denial = OrderDenied(
        source=Source.LOCAL,
        recv_time_us=command.recv_time_us,
        client_id=command.client_id,
        symbol=command.symbol,
        side=command.side,
        order_type=command.order_type,
        limit=decision.limit,
        scope=decision.scope,
        reason=decision.reason,
        quantity=command.quantity,
        price=command.price,
    )
    after = apply(state, denial)
    assert attrs.evolve(after, risk=state.risk, last_seq=state.last_seq) == state
    record = ("denials", "denied_by_limit", "last_denial", "last_denied_client_id")
    unrecorded = msgspec.structs.replace(after.risk, **{n: getattr(state.risk, n) for n in record})
    assert unrecorded == state.risk
    assert after.risk.denials == state.risk.denials + 1
    assert dict(after.risk.denied_by_limit)[decision.limit] >= 1


@settings(max_examples=150, deadline=None)
@given(state=states, command=perp_orders)
def test_an_order_under_every_limit_is_accepted(state: State, command: OrderSubmitted) -> None:
    """Limits set exactly at what the order needs (each one at its boundary) let it through."""
    if state.risk.tripped:
        state = apply(state, KillSwitchReset(source=Source.LOCAL, recv_time_us=1, reason="x"))
    assert command.quantity is not None and command.price is not None
    symbol = command.symbol
    notional = command.quantity * command.price
    position = state.positions.get(symbol)
    held = D(0) if position is None else position.net_quantity
    after = held + (command.quantity if command.side is Side.BID else -command.quantity)
    open_orders = state.open_orders()
    mine = sum(1 for o in open_orders if o.symbol == symbol)
    lost = loss(state, command.recv_time_us, 86_400 * S, mark=fixed_mark)
    assert lost is not None  # the fixed mark is always known
    own = loss(state, command.recv_time_us, 86_400 * S, mark=fixed_mark, symbols=[symbol])
    assert own is not None
    limits = Limits(
        account=AccountLimits(
            max_order_notional=notional,
            max_open_orders=len(open_orders) + 1,
            max_loss=max(lost, D(0)),
            max_submits=1 + sum(1 for t in state.risk.submit_times if t > command.recv_time_us - 1),
            submit_window=D("0.000001"),
        ),
        symbols={
            symbol: SymbolLimits(
                max_order_quantity=command.quantity,
                max_order_notional=notional,
                max_position=abs(after),
                max_open_orders=mine + 1,
                max_price_distance=abs(command.price - MARK) / MARK,
                max_loss=max(own, D(0)),
            )
        },
    )
    assert check(state, command, limits, mark=fixed_mark) == ACCEPTED


def _fields(event: OrderSubmitted) -> dict[str, Any]:
    return {name: getattr(event, name) for name in event.__struct_fields__}


# --- limits from a file ---------------------------------------------------------------------------


def test_limits_from_a_toml_document() -> None:
    import tomllib

    text = """
    [account]
    max_loss = "500"
    loss_window = 3600
    max_submits = 20
    submit_window = "1"
    max_open_orders = 40

    [symbols.SOL_USDC_PERP]
    max_position = "10"
    max_order_quantity = "2"
    max_price_distance = "0.05"

    [symbols.SOL_USDC]
    max_order_notional = 2000
    """
    limits = limits_from_mapping(tomllib.loads(text))
    assert limits.account.max_loss == D("500") and limits.account.max_submits == 20
    assert limits.symbols[PERP].max_position == D("10")
    assert limits.symbols[SPOT].max_order_notional == D("2000")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"acount": {}}, "unknown section(s) acount"),
        ({"account": {"max_los": "1"}}, "account: unknown limit(s) max_los"),
        ({"symbols": {PERP: {"max_position": 1.5}}}, "floats are refused"),
        ({"symbols": {PERP: {"max_position": "-1"}}}, "max_position must be at least 0"),
        ({"account": {"loss_window": 100_000}}, "loss_window is at most 86400"),
        ({"account": {"max_submits": 1000}}, "max_submits is at most 256"),
        ({"symbols": {PERP: {"max_loss": "lots"}}}, "is not a decimal"),
    ],
)
def test_bad_limits_say_which_key(document: dict[str, Any], message: str) -> None:
    with pytest.raises(LimitsError, match=".*".join(map(_escape, message.split(" ")))):
        limits_from_mapping(document)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_a_snapshot_keeps_the_kill_switch_and_the_checks_memory() -> None:
    from oms.core.serialization import encode_line
    from oms.core.snapshot import decode_state, encode_snapshot, read_header

    state = replay([*long_position(mark="100"), order(client_id=5, at=90 * S), trip("kept")])
    line = encode_line(state.last_seq, trip("kept"))
    data = encode_snapshot(state, offset=len(line), line=line, core_digest="x")
    restored = decode_state(data, read_header(data, core_digest="x"))
    assert restored == state
    assert restored.risk.tripped and restored.risk.pnl_samples == state.risk.pnl_samples


def test_the_newest_recorded_mark_comes_before_the_venue_report() -> None:
    limits = per_symbol(max_price_distance=D("0.05"))
    reported = replay(long_position(mark="100"))
    assert limit_of(check(reported, order(price="118"), limits)) == "max_price_distance"
    # A MarkObserved (the markPrice stream) is newer than the position report: it is used.
    marked = apply(reported, mark("120", symbol=PERP))
    assert check(marked, order(price="118"), limits) == ACCEPTED
    assert limit_of(check(marked, order(price="100"), limits)) == "max_price_distance"
    # ... and a spot market, which has no position reports, gets a mark at all.
    spot = per_symbol(max_price_distance=D("0.05"))
    assert limit_of(check(marked, order(symbol=SPOT, price="100"), spot)) == "max_price_distance"
    spot_marked = apply(marked, mark("101", symbol=SPOT))
    assert check(spot_marked, order(symbol=SPOT, price="100"), spot) == ACCEPTED


def test_headroom_is_what_the_check_leaves() -> None:
    limits = Limits(
        account=AccountLimits(max_open_orders=3, max_submits=5, max_loss=D("30")),
        symbols={PERP: SymbolLimits(max_position=D("6"), max_order_quantity=D("2"))},
    )
    state = replay([*long_position(mark="100"), order(client_id=1, at=10 * S)])
    rows = {(r.limit, r.scope): r for r in headroom(state, limits, 10 * S)}
    assert (rows["max_open_orders", "account"].used, rows["max_open_orders", "account"].left) == (
        1,
        2,
    )
    assert rows["max_submits", "account"].used == 1  # the fill's order was long before
    assert (rows["max_position", PERP].used, rows["max_position", PERP].left) == (D(5), D(1))
    assert rows["max_loss", "account"].used == 0  # bought at 100, marked at 100
    assert (
        rows["max_order_quantity", PERP].per_order and rows["max_order_quantity", PERP].used is None
    )
    # What is left is what the check lets through, and no more.
    assert check(state, order(client_id=2, quantity="1", at=10 * S), limits) == ACCEPTED
    denied = check(state, order(client_id=2, quantity="1.5", at=10 * S), limits)
    assert limit_of(denied) == "max_position"
    state = replay([*long_position(mark="100"), *(order(client_id=c, at=10 * S) for c in (1, 2))])
    state = apply(state, order(client_id=3, side=Side.ASK, quantity="1", at=10 * S))
    assert headroom(state, limits, 10 * S)[1].left == 0  # max_open_orders, account
    assert limit_of(check(state, order(client_id=4, side=Side.ASK, at=10 * S), limits)) == (
        "max_open_orders"
    )
    # A loss with no mark is unknown, not zero.
    unmarked = replay(long_position())
    (row,) = headroom(unmarked, Limits(account=AccountLimits(max_loss=D("1"))), S)
    assert (row.used, row.left) == (None, None)
