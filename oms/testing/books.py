"""The judge of end-to-end tests: does the engine's state agree with the exchange's books?

`book_differences` lists, as readable lines, every way the engine's state disagrees with
what the local exchange holds for an account; `assert_books_agree` fails with those lines.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from decimal import Decimal

from oms.core.state import Order, State
from oms.core.values import ZERO, OrderStatus
from oms_local_exchange import LocalExchange
from oms_local_exchange import Order as VenueOrder

__all__ = ["NO_POLLING", "PERP", "SPOT", "assert_books_agree", "book_differences"]

SPOT = "SOL_USDC"
PERP = "SOL_USDC_PERP"
# Reconciliation is repeated by the session only at this interval: far beyond any test, so
# that the only snapshots are those of the passes after a (re)connect. (Tests that want the
# periodic pass ask for a shorter interval.)
NO_POLLING = 3600.0

_VENUE_STATUS: Mapping[str, OrderStatus] = {
    "New": OrderStatus.NEW,
    "PartiallyFilled": OrderStatus.PARTIALLY_FILLED,
    "Filled": OrderStatus.FILLED,
    "Cancelled": OrderStatus.CANCELLED,
    "Expired": OrderStatus.EXPIRED,
    "TriggerPending": OrderStatus.TRIGGER_PENDING,
    "TriggerFailed": OrderStatus.TRIGGER_FAILED,
}


def _fees(items: Sequence[tuple[str, Decimal]]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for asset, amount in items:
        out[asset] += amount
    return {asset: amount for asset, amount in out.items() if amount}


def _engine_order(state: State, venue: VenueOrder) -> Order | None:
    if venue.client_id is not None:
        found = state.order(client_id=venue.client_id)
        if found is not None:
            return found
    return state.order(venue_id=venue.id)


def book_differences(
    state: State, exchange: LocalExchange, api_key: str | None = None
) -> list[str]:
    """Every way `state` disagrees with the exchange's books for one account (the funded
    account by default), as readable lines; empty when they agree.

    Compared: each exchange order (found by client id, else venue id) for venue id, side,
    reduce-only flag, trigger price and quantity, status, origin, strategy id and parent
    (`related_order_id`),
    executed quantity and quote, its fills' trade ids (each counted once, no others) and fees;
    engine orders the exchange never saw (only a refused submit may be one) and orders left
    PendingNew or InDoubt; available and locked balances of every asset; net quantity and
    entry price of every perp position; funding received per symbol.
    """
    account = exchange.venue.accounts[api_key if api_key is not None else exchange.api_key]
    out: list[str] = []
    fills_by_order: dict[str, list[tuple[int, Decimal, Decimal, str, Decimal]]] = defaultdict(list)
    for fill in account.fills:
        fills_by_order[fill.order_id].append(
            (fill.trade_id, fill.quantity, fill.price, fill.fee_asset, fill.fee)
        )
    matched: set[str] = set()
    for venue in sorted(account.orders.values(), key=lambda o: o.seq):
        name = f"order {venue.id} (client id {venue.client_id}, {venue.symbol})"
        ours = _engine_order(state, venue)
        if ours is None:
            out.append(f"{name}: missing from the engine")
            continue
        matched.add(ours.key)
        if ours.venue_id != venue.id:
            out.append(f"{name}: engine has venue id {ours.venue_id}")
        if venue.quantity is not None and ours.quantity != venue.quantity:
            out.append(f"{name}: exchange quantity {venue.quantity}, engine {ours.quantity}")
        if ours.side is not None and ours.side.value != venue.side:
            out.append(f"{name}: exchange side {venue.side}, engine {ours.side.value}")
        if ours.reduce_only != bool(venue.reduce_only):
            out.append(
                f"{name}: exchange reduce-only {bool(venue.reduce_only)}, engine {ours.reduce_only}"
            )
        trigger = (venue.trigger_price, venue.trigger_quantity)
        if trigger != (ours.trigger_price, ours.trigger_quantity):
            out.append(
                f"{name}: exchange trigger price/quantity {trigger[0]}/{trigger[1]}, "
                f"engine {ours.trigger_price}/{ours.trigger_quantity}"
            )
        expected = _VENUE_STATUS.get(venue.status)
        if expected is None or ours.status is not expected:
            out.append(f"{name}: exchange status {venue.status}, engine {ours.status.value}")
        links = (str(ours.origin), ours.strategy_id, ours.related_order_id)
        if links != (venue.origin, venue.strategy_id, venue.related_order_id):
            out.append(
                f"{name}: exchange origin/strategy/parent {venue.origin}/{venue.strategy_id}/"
                f"{venue.related_order_id}, engine {'/'.join(map(str, links))}"
            )
        fills = fills_by_order.get(venue.id, [])
        trade_ids = [f[0] for f in fills]
        if sorted(ours.trade_ids) != sorted(trade_ids):
            missing = sorted(set(trade_ids) - ours.trade_ids)
            extra = sorted(ours.trade_ids - set(trade_ids))
            out.append(f"{name}: trades missing from the engine {missing}, extra {extra}")
        fill_sum = sum((f[1] for f in fills), ZERO)
        if fill_sum != venue.executed_quantity:
            out.append(
                f"{name}: exchange fills sum to {fill_sum}, executed {venue.executed_quantity}"
            )
        if ours.filled_quantity != venue.executed_quantity:
            out.append(
                f"{name}: exchange executed {venue.executed_quantity}, "
                f"engine filled {ours.filled_quantity}"
            )
        if ours.filled_quote != venue.executed_quote_quantity:
            out.append(
                f"{name}: exchange executed quote {venue.executed_quote_quantity}, "
                f"engine {ours.filled_quote}"
            )
        venue_fees = _fees([(f[3], f[4]) for f in fills])
        if _fees(list(ours.fees)) != venue_fees:
            out.append(f"{name}: exchange fees {venue_fees}, engine {dict(ours.fees)}")
    for order in sorted(state.orders.values(), key=lambda o: o.key):
        if order.status in (OrderStatus.PENDING_NEW, OrderStatus.IN_DOUBT):
            out.append(f"engine order {order.key} left {order.status.value}")
        elif order.key not in matched and order.status is not OrderStatus.REJECTED:
            out.append(
                f"engine order {order.key} ({order.status.value}) is unknown to the exchange"
            )
    for asset in sorted(set(account.balances) | set(state.balances)):
        theirs = account.balances.get(asset)
        ours_balance = state.balances.get(asset)
        venue_pair = (theirs.available, theirs.locked) if theirs else (ZERO, ZERO)
        engine_pair = (
            (ours_balance.available, ours_balance.locked) if ours_balance else (ZERO, ZERO)
        )
        if venue_pair != engine_pair:
            out.append(
                f"balance {asset}: exchange available/locked {venue_pair[0]}/{venue_pair[1]}, "
                f"engine {engine_pair[0]}/{engine_pair[1]}"
            )
    funding: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for payment in account.funding:
        funding[payment.symbol] += payment.amount
    for symbol in sorted(set(account.positions) | set(state.positions) | set(funding)):
        venue_position = account.positions.get(symbol)
        ours_position = state.positions.get(symbol)
        venue_figures = (
            (venue_position.net_quantity, venue_position.entry_price)
            if venue_position is not None
            else (ZERO, ZERO)
        )
        engine_figures = (
            (ours_position.net_quantity, ours_position.entry_price)
            if ours_position is not None
            else (ZERO, ZERO)
        )
        if venue_figures != engine_figures:
            out.append(
                f"position {symbol}: exchange net/entry {venue_figures[0]}/{venue_figures[1]}, "
                f"engine {engine_figures[0]}/{engine_figures[1]}"
            )
        engine_funding = ours_position.funding if ours_position is not None else ZERO
        if engine_funding != funding.get(symbol, ZERO):
            out.append(
                f"funding {symbol}: exchange paid {funding.get(symbol, ZERO)}, "
                f"engine {engine_funding}"
            )
    return out


def assert_books_agree(state: State, exchange: LocalExchange, api_key: str | None = None) -> None:
    """Fail with every difference `book_differences` finds, one a line."""
    differences = book_differences(state, exchange, api_key)
    if differences:
        raise AssertionError(
            "the engine disagrees with the exchange:\n  " + "\n  ".join(differences)
        )
