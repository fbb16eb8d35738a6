"""The recorded sessions in replay/: each replays to its expected document, and the figures
that matter are checked against numbers worked out by hand here (not copied from a replay),
so an expected.json written by a faulty reducer cannot pass.

The sessions are built by replay/make_sessions.py; these tests import it to get the events.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest

from oms.core.events import (
    BalanceObserved,
    CancelRequested,
    Event,
    FundingPaid,
    MarketInfo,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderObserved,
    OrderSubmitted,
    PositionObserved,
    SubmitRejected,
)
from oms.core.reducer import replay
from oms.core.serialization import state_hash
from oms.core.state import AnomalyKind, Order, State
from oms.core.values import OrderStatus, OrderType, Side, Source, VenueStatus
from oms.engine import Engine
from oms.log import Fsync, LogReader
from oms.replay import main as replay_main
from oms_backpack import codec
from tests.helpers import REPLAY_DIR

NAMES = [
    "spot_limit_partial_cancel",
    "spot_market_buy_multi_fill",
    "post_only_rejected",
    "perp_position_lifecycle",
    "reordered_duplicates_converge",
]
D = Decimal


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "oms_replay_make_sessions", REPLAY_DIR / "make_sessions.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


GENERATOR = _load_generator()


def session_events(name: str) -> list[Event]:
    build: Callable[[], list[Event]] = GENERATOR.SESSIONS[name]
    return build()


def log_path(name: str) -> Path:
    return REPLAY_DIR / f"{name}.jsonl"


def expected(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (REPLAY_DIR / f"{name}.expected.json").read_text(encoding="utf-8")
    )
    return document


def replayed(name: str) -> State:
    return replay(LogReader(log_path(name)).events())


def only_order(state: State, client_id: int) -> Order:
    order = state.order(client_id=client_id)
    assert order is not None
    return order


def balance(state: State, asset: str) -> tuple[Decimal, Decimal]:
    b = state.balances[asset]
    assert b.total == b.available + b.locked
    return b.available, b.locked


# --- every session --------------------------------------------------------------------------


def test_the_five_sessions_are_there() -> None:
    assert set(GENERATOR.SESSIONS) >= set(NAMES)
    for name in GENERATOR.SESSIONS:
        assert log_path(name).is_file()
        assert (REPLAY_DIR / f"{name}.expected.json").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_cli_json_equals_expected_document(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert replay_main([str(log_path(name)), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == expected(name)
    assert out == (REPLAY_DIR / f"{name}.expected.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", NAMES)
def test_expected_hash_is_the_reducer_replay_of_the_file_and_of_the_events(name: str) -> None:
    document = expected(name)
    from_file = replayed(name)
    assert state_hash(from_file) == document["state_hash"]
    assert state_hash(replay(session_events(name))) == document["state_hash"]
    assert document["events"] == document["last_seq"] == len(session_events(name))
    assert document["torn_tail"] is None


@pytest.mark.parametrize("name", NAMES)
def test_live_engine_writes_the_same_log_and_reaches_the_same_state(
    name: str, tmp_path: Path
) -> None:
    path = tmp_path / f"{name}.jsonl"
    engine = Engine.open(path, fsync=Fsync.never())
    for event in session_events(name):
        engine.record(event)
    live_hash = state_hash(engine.state)
    engine.close()
    assert live_hash == expected(name)["state_hash"]
    assert live_hash == state_hash(replay(LogReader(path).events()))
    assert path.read_bytes() == log_path(name).read_bytes()


def test_regenerating_the_sessions_changes_nothing(tmp_path: Path) -> None:
    assert GENERATOR.main(["--out", str(tmp_path)]) == 0
    for name in GENERATOR.SESSIONS:
        for suffix in (".jsonl", ".expected.json"):
            fresh = (tmp_path / f"{name}{suffix}").read_bytes()
            assert fresh == (REPLAY_DIR / f"{name}{suffix}").read_bytes(), f"{name}{suffix}"


# --- raw venue messages agree with the events --------------------------------------------------

# Every key of these frames is one letter (fact sheet §3.3, §3.4).
ORDER_UPDATE_KEYS = set("eEscSofqQpXRitlLmnNzZVTOry")
POSITION_KEYS = set("eEsbBfMmqQnilpPT")
MICROS_2025 = (1_735_689_600_000_000, 1_767_225_600_000_000)  # 2025 in microseconds


def _micros(value: object) -> int:
    assert isinstance(value, int)
    assert MICROS_2025[0] <= value < MICROS_2025[1], f"{value} is not microseconds in 2025"
    return value


def _naive_iso_us(text: str) -> int:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is None
    return (moment - datetime(1970, 1, 1)) // timedelta(microseconds=1)


def _dec_text(value: object) -> Decimal:
    assert isinstance(value, str), f"{value!r} should be a decimal string"
    return Decimal(value)


def _wire_type(order_type: OrderType | None) -> str:
    return "MARKET" if order_type is OrderType.MARKET else "LIMIT"


def _check_order_frame(event: Any, data: dict[str, Any], kind: str, status: str) -> None:
    assert set(data) <= ORDER_UPDATE_KEYS
    assert data["e"] == kind
    assert data["X"] == status
    assert _micros(data["T"]) == event.venue_time_us  # engine time, as the codec takes it
    assert _micros(data["E"]) >= data["T"]
    assert data["s"] == event.symbol
    assert data["c"] == event.client_id
    assert data["i"] == event.venue_id and isinstance(data["i"], str)
    assert data["O"] == "USER" and data["V"] == "RejectTaker" and data["f"] == "GTC"
    assert isinstance(data["r"], bool) and isinstance(data["y"], bool)
    _dec_text(data["z"])
    _dec_text(data["Z"])
    if kind != "orderFill":
        assert data["t"] is None
        assert event.side == Side(data["S"])
        assert _wire_type(event.order_type) == data["o"]
        assert event.quantity == _dec_text(data["q"])
        assert event.price == (None if "p" not in data else _dec_text(data["p"]))


def _check_rest_order(event: OrderObserved, body: dict[str, Any]) -> None:
    assert body["status"] == event.status.value
    assert body["id"] == event.venue_id and body["clientId"] == event.client_id
    assert body["symbol"] == event.symbol and Side(body["side"]) == event.side
    assert body["orderType"] == ("Market" if event.order_type is OrderType.MARKET else "Limit")
    assert _dec_text(body["quantity"]) == event.quantity
    assert (None if body.get("price") is None else _dec_text(body["price"])) == event.price
    assert _dec_text(body["executedQuantity"]) == event.executed_quantity
    assert _dec_text(body["executedQuoteQuantity"]) == event.executed_quote_quantity
    created = body["createdAt"]
    assert isinstance(created, int) and created < 10**13  # milliseconds
    assert created * 1000 == event.venue_time_us


def check_raw(event: Event) -> None:
    """The event says what its raw Backpack message says."""
    if event.source is Source.LOCAL:
        assert event.raw is None
        return
    assert event.raw is not None
    assert event.raw == json.dumps(json.loads(event.raw), separators=(",", ":")), "not compact"
    message = json.loads(event.raw)
    assert _micros(event.recv_time_us) >= (event.venue_time_us or 0)
    match event:
        case OrderFilled(source=Source.WS):
            assert message["stream"] == "account.orderUpdate"
            data = message["data"]
            _check_order_frame(event, data, "orderFill", str(event.status))
            assert data["t"] == event.trade_id
            assert _dec_text(data["l"]) == event.quantity
            assert _dec_text(data["L"]) == event.price
            assert _dec_text(data["n"]) == event.fee and data["N"] == event.fee_asset
            assert data["m"] is event.maker
            assert _dec_text(data["z"]) == event.cum_quantity
            assert _dec_text(data["Z"]) == event.cum_quote
            assert _dec_text(data["q"]) == event.order_quantity
            assert event.side == Side(data["S"])
            assert _wire_type(event.order_type) == data["o"]
        case OrderFilled(source=Source.RECONCILE):
            item = message  # one item of the fill history
            assert item["tradeId"] == event.trade_id
            assert item["orderId"] == event.venue_id and item["clientId"] == str(event.client_id)
            assert _dec_text(item["quantity"]) == event.quantity
            assert _dec_text(item["price"]) == event.price
            assert _dec_text(item["fee"]) == event.fee and item["feeSymbol"] == event.fee_asset
            assert item["isMaker"] is event.maker and Side(item["side"]) == event.side
            assert _naive_iso_us(item["timestamp"]) == event.venue_time_us
            assert event.cum_quantity is None and event.status is None
        case OrderAccepted(source=Source.WS):
            _check_order_frame(event, message["data"], "orderAccepted", "New")
            assert message["data"]["y"] is event.post_only
        case OrderObserved(source=Source.REST):
            _check_rest_order(event, message)
        case OrderCancelled(source=Source.WS):
            _check_order_frame(event, message["data"], "orderCancelled", "Cancelled")
            assert _dec_text(message["data"]["z"]) == event.cum_quantity
        case OrderExpired(source=Source.WS):
            _check_order_frame(event, message["data"], "orderExpired", "Expired")
            assert message["data"]["R"] == event.reason
            assert _dec_text(message["data"]["z"]) == event.cum_quantity
        case SubmitRejected(source=Source.REST):
            assert message == {"code": event.code, "message": event.message}
        case BalanceObserved():
            assert message == {
                b.asset: {
                    "available": str(b.available),
                    "locked": str(b.locked),
                    "staked": str(b.staked),
                }
                for b in event.balances
            }
        case MarketInfo(source=Source.REST):
            assert message["symbol"] == event.symbol
            assert message["baseSymbol"] == event.base_asset
            assert message["quoteSymbol"] == event.quote_asset
            assert message["marketType"] == event.market_type.value
            assert _dec_text(message["filters"]["price"]["tickSize"]) == event.tick_size
            assert _dec_text(message["filters"]["quantity"]["stepSize"]) == event.step_size
            assert _dec_text(message["filters"]["quantity"]["minQuantity"]) == event.min_quantity
        case FundingPaid():
            item = message  # one item of the funding history
            assert item["symbol"] == event.symbol
            assert _naive_iso_us(item["intervalEndTimestamp"]) == event.interval_end_us
            assert _dec_text(item["quantity"]) == event.amount
            assert _dec_text(item["fundingRate"]) == event.rate
        case PositionObserved(source=Source.WS):
            assert message["stream"] == "account.positionUpdate"
            data = message["data"]
            assert set(data) <= POSITION_KEYS
            assert _micros(data["T"]) == event.venue_time_us and data["T"] <= data["E"]
            assert data["s"] == event.symbol
            assert _dec_text(data["q"]) == event.net_quantity
            assert _dec_text(data["B"]) == event.entry_price  # B is the entry price
            assert _dec_text(data["b"]) == event.break_even_price  # b is break-even
            assert _dec_text(data["M"]) == event.mark_price
            assert _dec_text(data["p"]) == event.realized_pnl
            assert _dec_text(data["P"]) == event.unrealized_pnl
        case _:
            pytest.fail(f"no raw check for {type(event).__name__} from {event.source}")


@pytest.mark.parametrize("name", NAMES)
def test_raw_messages_agree_with_the_events(name: str) -> None:
    events = list(LogReader(log_path(name)).events())
    assert events == session_events(name)
    for event in events:
        check_raw(event)
        if hasattr(event, "symbol"):
            assert event.symbol in {"SOL_USDC", "ETH_USDC", "SOL_USDC_PERP"}


def rederive(event: Event) -> list[Event]:
    """What the adapter's codec makes of the event's raw message."""
    assert event.raw is not None
    if event.source is Source.WS:
        return codec.ws_frame(event.raw, event.recv_time_us)
    body = codec.parse_json(event.raw)
    match event:
        case MarketInfo():
            return [codec.market(body, event.source, event.recv_time_us)]
        case BalanceObserved():
            return [codec.balances(body, event.source, event.recv_time_us)]
        case FundingPaid():
            return [codec.funding_item(body, event.source, event.recv_time_us)]
        case OrderFilled():
            return [codec.fill_history_item(body, event.source, event.recv_time_us)]
        case OrderObserved():
            return [codec.order_object(body, event.source, event.recv_time_us)]
        case _:
            raise AssertionError(f"no codec function for {type(event).__name__}")


@pytest.mark.parametrize("name", NAMES)
def test_the_adapter_codec_derives_each_event_from_its_raw_message(name: str) -> None:
    """A fixed codec can re-derive old sessions: here it gives back the very events."""
    for event in session_events(name):
        # Error answers (SubmitRejected) are built by the session from the HTTP error.
        if event.raw is not None and not isinstance(event, SubmitRejected):
            assert rederive(event) == [event]


# --- hand-computed figures ------------------------------------------------------------------


def test_spot_limit_partial_cancel_by_hand() -> None:
    events = session_events("spot_limit_partial_cancel")
    fills = [e for e in events if isinstance(e, OrderFilled)]
    assert [(f.quantity, f.fee, f.fee_asset) for f in fills] == [
        (D("1.5"), D("0.0012"), "SOL"),
        (D("1"), D("0.0008"), "SOL"),
    ]
    # Just before the cancel: 1.5 of 4 @ 150.25 still rests, so 225.375 USDC is locked and
    # the available USDC is 1000 - 4 * 150.25 = 399 (fills were paid from the lock).
    before_cancel = replay(
        events[: next(i for i, e in enumerate(events) if isinstance(e, CancelRequested))]
    )
    assert balance(before_cancel, "USDC") == (D("399"), D("225.375"))
    assert only_order(before_cancel, 1001).status is OrderStatus.PARTIALLY_FILLED
    # Derived balances before the final snapshot: SOL 1.5 + 2.5 - 0.002; USDC 1000 - 2.5 * 150.25.
    before_snapshot = replay(events[:-1])
    assert balance(before_snapshot, "SOL") == (D("3.998"), D(0))
    assert balance(before_snapshot, "USDC") == (D("624.375"), D(0))

    state = replayed("spot_limit_partial_cancel")
    order = only_order(state, 1001)
    assert order.status is OrderStatus.CANCELLED
    assert order.filled_quantity == D("2.5")
    assert order.filled_quote == D("375.625")
    assert order.fees == (("SOL", D("0.002")),)
    assert order.locked == 0
    assert balance(state, "SOL") == (D("3.998"), D(0))
    assert balance(state, "USDC") == (D("624.375"), D(0))
    for asset in ("SOL", "USDC"):
        assert state.balances[asset].drift_available == 0
        assert state.balances[asset].drift_locked == 0
    assert state.anomaly_total == 0


def test_spot_market_buy_multi_fill_by_hand() -> None:
    events = session_events("spot_market_buy_multi_fill")
    fills = [e for e in events if isinstance(e, OrderFilled)]
    assert len(fills) >= 3 and len({f.price for f in fills}) == len(fills)
    # Cumulative z/Z after each fill: 0.5 * 3120.10 = 1560.05; + 0.4 * 3120.50 = 1248.2;
    # + 0.3 * 3121 = 936.3.
    assert [(f.cum_quantity, f.cum_quote, f.status) for f in fills] == [
        (D("0.5"), D("1560.05"), VenueStatus.PARTIALLY_FILLED),
        (D("0.9"), D("2808.25"), VenueStatus.PARTIALLY_FILLED),
        (D("1.2"), D("3744.55"), VenueStatus.FILLED),
    ]
    assert {f.fee_asset for f in fills} == {"ETH"}

    state = replayed("spot_market_buy_multi_fill")
    order = only_order(state, 2001)
    assert order.order_type is OrderType.MARKET and order.side is Side.BID
    assert order.status is OrderStatus.FILLED
    assert order.filled_quantity == D("1.2")
    assert order.filled_quote == D("3744.55")
    assert order.fees == (("ETH", D("0.0012")),)
    # ETH 0.0019918 + 1.2 - 0.0012 fees; USDC 5000 - 3744.55.
    before_snapshot = replay(events[:-1])
    assert balance(before_snapshot, "ETH") == (D("1.2007918"), D(0))
    assert balance(before_snapshot, "USDC") == (D("1255.45"), D(0))
    assert balance(state, "ETH") == (D("1.2007918"), D(0))
    assert state.anomaly_total == 0


def test_post_only_rejected_by_hand() -> None:
    events = session_events("post_only_rejected")
    rejected = next(e for e in events if isinstance(e, SubmitRejected))
    assert (rejected.code, rejected.message) == (
        "INVALID_ORDER",
        "Order would immediately match and take",
    )
    submits = [e for e in events if isinstance(e, OrderSubmitted)]
    assert all(s.order_type is OrderType.LIMIT_MAKER and s.post_only for s in submits)

    # While the second order rested it locked 2 * 150.90 USDC.
    accepted_at = next(i for i, e in enumerate(events) if isinstance(e, OrderAccepted))
    resting = replay(events[: accepted_at + 1])
    assert balance(resting, "USDC") == (D("698.2"), D("301.8"))

    state = replayed("post_only_rejected")
    first = only_order(state, 3001)
    assert first.status is OrderStatus.REJECTED
    assert first.reject_code == "INVALID_ORDER"
    assert first.reject_message == "Order would immediately match and take"
    assert first.venue_id is None
    second = only_order(state, 3002)
    assert second.status is OrderStatus.EXPIRED
    assert second.expiry_reason == "PostOnlyTaker"
    assert second.filled_quantity == 0
    assert balance(state, "USDC") == (D("1000"), D(0))
    assert state.anomaly_total == 0


def test_perp_position_lifecycle_by_hand() -> None:
    events = session_events("perp_position_lifecycle")
    assert all(
        e.fee_asset == "USDC" and e.order_type is OrderType.MARKET
        for e in events
        if isinstance(e, OrderFilled)
    )
    payments = [e for e in events if isinstance(e, FundingPaid)]
    assert len(payments) == 2
    assert {p.interval_end_us % 3_600_000_000 for p in payments} == {0}  # hourly interval ends
    assert sorted(p.amount > 0 for p in payments) == [False, True]

    # (net, entry, realized) derived just before each venue report, by hand:
    #   buy 2 @ 150                  -> long 2 @ 150
    #   buy 1 @ 153                  -> long 3 @ (300 + 153) / 3 = 151
    #   sell 1 @ 155                 -> long 2 @ 151, realized 1 * (155 - 151) = 4
    #   sell 3 @ 148, sell 1 @ 147   -> closes 2: 2 * (148 - 151) = -6; short 1 @ 148, then
    #                                   short 2 @ (148 + 147) / 2 = 147.5; realized -2
    #   buy 2 @ 146                  -> flat, realized -2 + 2 * (147.5 - 146) = 1
    expected_at_reports = [
        (D(2), D(150), D(0)),
        (D(3), D(151), D(0)),
        (D(-2), D("147.5"), D(-2)),
        (D(0), D(0), D(1)),
    ]
    reports = [i for i, e in enumerate(events) if isinstance(e, PositionObserved)]
    assert len(reports) == len(expected_at_reports)
    for index, (net, entry, realized) in zip(reports, expected_at_reports, strict=True):
        derived = replay(events[:index]).positions["SOL_USDC_PERP"]
        assert (derived.net_quantity, derived.entry_price, derived.realized_pnl) == (
            net,
            entry,
            realized,
        )
        report = events[index]
        assert isinstance(report, PositionObserved)
        assert (report.net_quantity, report.entry_price) == (net, entry)

    reduce_at = next(
        i
        for i, e in enumerate(events)
        if isinstance(e, OrderFilled) and e.side is Side.ASK and e.price == 155
    )
    after_reduce = replay(events[: reduce_at + 1]).positions["SOL_USDC_PERP"]
    assert (after_reduce.net_quantity, after_reduce.realized_pnl) == (D(2), D(4))

    state = replayed("perp_position_lifecycle")
    position = state.positions["SOL_USDC_PERP"]
    assert position.net_quantity == 0
    assert position.entry_price == 0
    assert position.realized_pnl == D(1)
    # 0.05% of 300, 153, 155, 444, 147, 292
    assert position.fees == (("USDC", D("0.7455")),)
    # -3 * 152 * 0.0000125 + 2 * 147.5 * 0.00002
    assert position.funding == D("0.0002")
    assert position.drift_quantity == 0
    # Perps settle in USDC as they go: realized PnL in, fees out, funding in or out.
    assert state.balances["USDC"].available == D(1) - D("0.7455") + D("0.0002")
    assert [only_order(state, c).status for c in range(5001, 5006)] == [OrderStatus.FILLED] * 5
    assert only_order(state, 5004).fees == (("USDC", D("0.2955")),)
    assert state.anomaly_total == 0


def _order_facts(order: Order) -> dict[str, Any]:
    """What must converge: everything but the seq of the last change."""
    facts = msgspec.structs.asdict(order)
    del facts["updated_seq"]
    return facts


def test_reordered_duplicates_converge_by_hand() -> None:
    arrived = session_events("reordered_duplicates_converge")
    natural: list[Event] = GENERATOR.reordered_natural_order()

    # The file holds the arrival order: a fill before the accept, a fill after the
    # cancel, and fills delivered twice.
    kinds = [type(e).__name__ for e in arrived]
    accept = next(
        i
        for i, e in enumerate(arrived)
        if isinstance(e, OrderObserved) and e.status is VenueStatus.NEW
    )
    assert "OrderAccepted" not in kinds  # the execute response is the only accept
    assert kinds.index("OrderFilled") < accept
    assert "OrderFilled" in kinds[kinds.index("OrderCancelled") :]
    trade_ids = [e.trade_id for e in arrived if isinstance(e, OrderFilled)]
    assert len(trade_ids) > len(set(trade_ids))
    # The natural order is the same facts, each once, in venue order.
    assert all(e in arrived for e in natural)
    assert sorted(e.trade_id for e in natural if isinstance(e, OrderFilled)) == sorted(
        set(trade_ids)
    )
    assert [type(e).__name__ for e in natural] != kinds

    converged = replayed("reordered_duplicates_converge")
    assert state_hash(converged) == state_hash(replay(arrived))
    reference = replay(natural)
    assert _order_facts(only_order(converged, 4001)) == _order_facts(only_order(reference, 4001))
    assert dict(converged.balances) == dict(reference.balances)
    assert reference.anomaly_total == 0

    # By hand: sold 1 + 0.5 + 1.5 = 3 of 4 SOL @ 152 = 456 USDC, maker fees 0.08% in USDC
    # (0.1216 + 0.0608 + 0.1824 = 0.3648); cancelled with 1 unfilled, nothing left locked.
    order = only_order(converged, 4001)
    assert order.status is OrderStatus.CANCELLED
    assert order.filled_quantity == D(3)
    assert order.filled_quote == D(456)
    assert order.fees == (("USDC", D("0.3648")),)
    assert order.trade_ids == frozenset(trade_ids)
    assert order.locked == 0
    assert balance(converged, "SOL") == (D(2), D(0))
    assert balance(converged, "USDC") == (D("555.6352"), D(0))
    # The arrival order is visible only as anomalies: t3's and the cancel's cumulative 3
    # while 2.5 was counted (t2 missing then), and the two duplicates from the history.
    assert dict(converged.anomaly_counts) == {
        AnomalyKind.FILL_GAP: 2,
        AnomalyKind.DUPLICATE_FILL: 2,
    }


def test_every_prefix_of_the_reordered_session_keeps_balances_whole() -> None:
    """total = available + locked at every step, and locked never goes negative."""
    events: Sequence[Event] = session_events("reordered_duplicates_converge")
    for end in range(1, len(events) + 1):
        state = replay(events[:end])
        for b in state.balances.values():
            assert b.locked >= 0 and b.available >= 0


# --- logs of older formats still replay: version 1 (written before 0.2), version 2 ----------
# (checksummed lines, written before the seal of version 3). Each is appended to in its own
# format.


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_older_format_sessions_replay_to_their_expected_hashes(
    name: str, version: int, capsys: pytest.CaptureFixture[str]
) -> None:
    old = REPLAY_DIR / f"v{version}" / f"{name}.jsonl"
    header = b'{"format":"oms-event-log","version":%d}\n' % version
    assert old.read_bytes().startswith(header)
    reader = LogReader(old)
    events = list(reader.events())
    assert reader.version == version
    assert events == session_events(name)
    assert state_hash(replay(events)) == expected(name)["state_hash"]
    assert replay_main([str(old), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state_hash"] == expected(name)["state_hash"]


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_format_log_is_appended_to_in_its_format(tmp_path: Path, version: int) -> None:
    name = NAMES[0]
    old = (REPLAY_DIR / f"v{version}" / f"{name}.jsonl").read_bytes()
    events = session_events(name)
    path = tmp_path / "old.jsonl"
    path.write_bytes(old)
    engine = Engine.open(path, fsync=Fsync.never())
    engine.record(events[-1])  # a repeat: recorded again, and harmless
    engine.close()
    written = path.read_bytes()
    assert written.startswith(old)
    added = written[len(old) :]
    if version == 1:
        assert b'"type":' in added and b'"crc"' not in added
    else:  # eight hex digits of a checksum, not nine characters of a seal
        assert re.search(rb',"crc":"[0-9a-f]{8}"\}\n$', added)
    reader = LogReader(path)
    assert list(reader.events()) == [*events, events[-1]]
    assert reader.version == version
