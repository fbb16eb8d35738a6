"""The reducer against a small reference model, driven by a Hypothesis state machine.

The model is written from the rules in docs and design (plain dicts, exact Decimals), not
from the reducer's code:

- an order rests once accepted or partly filled, until it is filled, cancelled or expired;
  those three are final, but a late fill on a final order still counts;
- a resting spot bid locks remaining * limit price of the quote, a resting ask the remaining
  base; a fill moves base and quote at the fill price and takes the fee in its own asset;
- a perp fill moves the signed position (average-cost entry) and settles in the quote asset:
  the PnL it realizes comes in, its fee goes out;
- the account's first balance snapshot sets each asset's total (absent assets are zero) and
  its locked figure; later lock changes move the locked figure from there; later snapshots
  are only compared (they never move the derived figures).
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from oms.core.events import Event, OrderFilled
from oms.core.reducer import apply
from oms.core.state import AnomalyKind, State
from oms.core.values import OrderStatus, Side, VenueStatus
from oms.testing.strategies import (
    ETH_SOL,
    PERP,
    SPOT,
    accept,
    balances,
    cancel,
    expire,
    fill,
    markets,
    submit,
)

ZERO = Decimal(0)
STEP = Decimal("0.01")
# symbol -> (base, quote, is spot)
MARKETS: dict[str, tuple[str, str, bool]] = {
    SPOT: ("SOL", "USDC", True),
    ETH_SOL: ("ETH", "SOL", True),
    PERP: ("SOL", "USDC", False),
}
ASSETS = ("SOL", "USDC", "ETH", "BPX")
_C60 = decimal.Context(prec=60)  # the documented precision of the average entry
FINAL = ("filled", "cancelled", "expired")


class ReducerMachine(RuleBasedStateMachine):
    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        # The model's own sums run at the reducer's documented precision (60 digits, half
        # even), so realized PnL with a 60-digit entry adds up the same way in both.
        self._saved_context = decimal.getcontext()
        decimal.setcontext(decimal.Context(prec=60))
        self.state = State()
        # Reference model.
        self.model: dict[int, dict[str, Any]] = {}
        self.totals: dict[str, Decimal] = {}
        self.locked_base: dict[str, Decimal] = {}  # snapshot locked minus model locks then
        self.net: dict[str, Decimal] = {}
        self.open_cost: dict[str, Decimal] = {}  # exact cost of each perp position's open side
        self.fills: list[OrderFilled] = []
        self.duplicates = 0
        self.next_client_id = 1
        self.next_trade_id = 1

    def teardown(self) -> None:
        decimal.setcontext(self._saved_context)

    def feed(self, event: Event) -> None:
        self.state = apply(self.state, event)

    # --- model ------------------------------------------------------------------------------

    def model_locks(self) -> dict[str, Decimal]:
        locks: dict[str, Decimal] = {}
        for order in self.model.values():
            base, quote, spot = MARKETS[order["symbol"]]
            remaining = order["qty"] - order["filled"]
            if not spot or order["status"] != "open" or remaining <= 0:
                continue
            if order["side"] is Side.BID:
                locks[quote] = locks.get(quote, ZERO) + remaining * order["price"]
            else:
                locks[base] = locks.get(base, ZERO) + remaining
        return locks

    def model_status(self, order: dict[str, Any]) -> OrderStatus:
        if order["status"] == "pending":
            return OrderStatus.PENDING_NEW
        if order["status"] == "open":
            return OrderStatus.PARTIALLY_FILLED if order["filled"] else OrderStatus.NEW
        return {
            "filled": OrderStatus.FILLED,
            "cancelled": OrderStatus.CANCELLED,
            "expired": OrderStatus.EXPIRED,
        }[order["status"]]

    # --- rules ------------------------------------------------------------------------------

    @initialize()
    def setup_markets(self) -> None:
        for info in markets():
            self.feed(info)

    @rule(
        target=orders,
        symbol=st.sampled_from(sorted(MARKETS)),
        side=st.sampled_from(Side),
        steps=st.integers(1, 500),
        price_steps=st.integers(1, 10_000),
    )
    def submit(self, symbol: str, side: Side, steps: int, price_steps: int) -> int:
        client_id = self.next_client_id
        self.next_client_id += 1
        qty, price = steps * STEP, price_steps * STEP
        self.feed(submit(client_id, side, qty, price, symbol=symbol))
        self.model[client_id] = {
            "symbol": symbol,
            "side": side,
            "qty": qty,
            "price": price,
            "status": "pending",
            "filled": ZERO,
            "venue_known": False,  # accepted or filled: reports may name only the venue id
        }
        return client_id

    @rule(client_id=orders)
    def accept(self, client_id: int) -> None:
        order = self.model[client_id]
        self.feed(accept(f"V{client_id}", client_id=client_id, symbol=order["symbol"]))
        order["venue_known"] = True
        if order["status"] == "pending":
            order["status"] = "open"

    @rule(
        client_id=orders,
        share=st.integers(1, 100),
        overfill=st.integers(0, 9).map(lambda n: n == 0),
        improvement=st.integers(0, 5),
        fee=st.sampled_from([ZERO, Decimal("0.01"), Decimal("0.0003")]),
        fee_choice=st.integers(0, 2),
    )
    def fill(
        self,
        *,
        client_id: int,
        share: int,
        overfill: bool,
        improvement: int,
        fee: Decimal,
        fee_choice: int,
    ) -> None:
        order = self.model[client_id]
        base, quote, spot = MARKETS[order["symbol"]]
        remaining = order["qty"] - order["filled"]
        if overfill or remaining <= 0:
            qty = max(remaining, ZERO) + share * STEP
        else:
            # share% of the remainder, on the 0.01 grid, at least one step.
            qty = max((remaining * share / 100).quantize(STEP), STEP)
            qty = min(qty, remaining)
        # Fills happen at the limit or better.
        sign = -1 if order["side"] is Side.BID else 1
        price = max(order["price"] + sign * improvement * STEP, STEP)
        fee_asset = (base, quote, "BPX")[fee_choice]
        filled = order["filled"] + qty
        event = fill(
            f"V{client_id}",
            self.next_trade_id,
            order["side"],
            qty,
            price,
            fee=fee,
            fee_asset=fee_asset,
            client_id=client_id,
            cum=filled,
            status=VenueStatus.FILLED if filled >= order["qty"] else VenueStatus.PARTIALLY_FILLED,
            symbol=order["symbol"],
        )
        self.next_trade_id += 1
        self.feed(event)
        self.fills.append(event)

        order["filled"] = filled
        order["venue_known"] = True
        if order["status"] in ("pending", "open"):
            order["status"] = "filled" if filled >= order["qty"] else "open"
        signed = qty if order["side"] is Side.BID else -qty
        if spot:
            self.totals[base] = self.totals.get(base, ZERO) + signed
            self.totals[quote] = self.totals.get(quote, ZERO) - signed * price
            self.totals[fee_asset] = self.totals.get(fee_asset, ZERO) - fee
        else:
            symbol = order["symbol"]
            net, cost = self.net.get(symbol, ZERO), self.open_cost.get(symbol, ZERO)
            new = net + signed
            if not net or (net > 0) == (signed > 0):
                cost += qty * price
            else:
                entry = _C60.divide(cost, abs(net))
                closed = min(qty, abs(net))
                realized = _C60.multiply(closed, _C60.subtract(price, entry)).quantize(
                    Decimal("1E-18"), context=_C60
                )
                self.totals[quote] = _C60.add(
                    self.totals.get(quote, ZERO),
                    realized if net > 0 else realized.copy_negate(),
                )
                if not new:
                    cost = ZERO
                elif (new > 0) != (net > 0):
                    cost = abs(new) * price
                else:
                    cost = _C60.multiply(entry, abs(new))
            self.net[symbol], self.open_cost[symbol] = new, cost
            self.totals[fee_asset] = self.totals.get(fee_asset, ZERO) - fee

    @rule(client_id=orders)
    def cancel(self, client_id: int) -> None:
        order = self.model[client_id]
        self.feed(
            cancel(
                venue_id=f"V{client_id}",
                client_id=client_id,
                symbol=order["symbol"],
                cum=order["filled"],
            )
        )
        if order["status"] not in FINAL:
            order["status"] = "cancelled"

    @rule(client_id=orders)
    def expire(self, client_id: int) -> None:
        order = self.model[client_id]
        self.feed(
            expire(
                venue_id=f"V{client_id}",
                client_id=None if order["venue_known"] else client_id,
                symbol=order["symbol"],
                cum=order["filled"],
            )
        )
        if order["status"] not in FINAL:
            order["status"] = "expired"

    @precondition(lambda self: bool(self.fills))
    @rule(data=st.data())
    def duplicate_fill(self, data: st.DataObject) -> None:
        self.feed(data.draw(st.sampled_from(self.fills)))
        self.duplicates += 1

    @rule(
        snapshot=st.dictionaries(
            st.sampled_from(ASSETS),
            st.tuples(st.integers(0, 10**7), st.integers(0, 10**5)),
            max_size=len(ASSETS),
        )
    )
    def snapshot(self, snapshot: dict[str, tuple[int, int]]) -> None:
        figures = {
            asset: (str(available * STEP), str(locked * STEP))
            for asset, (available, locked) in snapshot.items()
        }
        # The account's first snapshot (even an empty one) is its baseline.
        first = self.state.baseline_seq is None
        self.feed(balances(figures))
        if not first:
            return  # later snapshots are compared, never adopted: the model does not move
        locks = self.model_locks()
        for asset in ASSETS:
            available, locked = (
                (Decimal(figures[asset][0]), Decimal(figures[asset][1]))
                if asset in figures
                else (ZERO, ZERO)
            )
            self.totals[asset] = available + locked
            self.locked_base[asset] = locked - locks.get(asset, ZERO)

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def orders_match_the_model(self) -> None:
        overfilled = {a.order_key for a in self.state.anomalies if a.kind is AnomalyKind.OVERFILL}
        for client_id, expected in self.model.items():
            order = self.state.order(client_id=client_id)
            assert order is not None
            assert order.filled_quantity == expected["filled"]
            assert order.status is self.model_status(expected)
            assert order.quantity is not None
            assert order.filled_quantity >= 0
            if order.filled_quantity > order.quantity:
                assert order.key in overfilled, order

    @invariant()
    def balances_match_the_model(self) -> None:
        locks = self.model_locks()
        assets = set(self.totals) | set(locks) | set(self.state.balances.keys())
        for asset in assets:
            balance = self.state.balances.get(asset)
            available = ZERO if balance is None else balance.available
            locked = ZERO if balance is None else balance.locked
            want_locked = self.locked_base.get(asset, ZERO) + locks.get(asset, ZERO)
            want_total = self.totals.get(asset, ZERO)
            assert locked == want_locked, (asset, locked, want_locked)
            assert available + locked == want_total, (asset, available + locked, want_total)
            if balance is not None:
                assert balance.total == available + locked

    @invariant()
    def positions_are_the_signed_sum_of_fills(self) -> None:
        for symbol, (_, _, spot) in MARKETS.items():
            if spot:
                continue
            held = self.state.positions.get(symbol)
            net = ZERO if held is None else held.net_quantity
            assert net == self.net.get(symbol, ZERO)
            if held is not None and not net:
                assert held.entry_price == 0

    @invariant()
    def duplicates_are_counted_once(self) -> None:
        assert self.state.anomaly_counts.get(AnomalyKind.DUPLICATE_FILL, 0) == self.duplicates
        # Everything the machine sends names a known order on a known market.
        assert self.state.anomaly_counts.get(AnomalyKind.UNKNOWN_ORDER, 0) == 0
        assert self.state.anomaly_counts.get(AnomalyKind.UNKNOWN_MARKET, 0) == 0


ReducerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestReducerMachine = ReducerMachine.TestCase
