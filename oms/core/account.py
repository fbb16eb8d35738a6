"""Marked-to-market figures of positions and of the account. Pure: a function of the state.

Nothing here is kept in the state: unrealized PnL, notional and exposure follow from a
position (net quantity, entry) and the market's mark, so they are computed when asked, from
the same state live or replayed.

- **mark**: the newest recorded `MarkObserved` of the market (`State.marks`); a market with
  none falls back to the mark of the venue's last position report (`Position.observed`).
- **unrealized PnL** = (mark - entry) x net quantity (net signed: long > 0), in the quote
  asset; zero when flat.
- **notional** = |net quantity| x mark; **exposure** = net quantity x mark (signed).
- The account's figures are sums per quote asset: unrealized and realized PnL, gross exposure
  (sum of notionals) and net exposure (sum of exposures).

Comparison with the venue, as for balances (venue minus derived): at the venue's last position
report, our unrealized PnL is computed at *the venue's* mark of that report and compared with
the venue's `unrealized_pnl`, at the venue's precision (our figure rounded, half even, to as
many decimal places as the venue's shows), so only a real difference shows. The quantity drift
is the reducer's (`Position.drift_quantity`). Backpack settles perp PnL into the account now and
then and moves what it settled from unrealized to realized, so on the real venue a PnL drift
can also mean "settled"; the local exchange does not settle, so there it is exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

import msgspec

from oms.core.state import Position, State
from oms.core.values import CTX, ZERO

__all__ = ["AccountTotals", "MarkedPosition", "account_totals", "mark_price", "marked_position"]


class MarkedPosition(msgspec.Struct, frozen=True, kw_only=True):
    """One position marked to market (see the module docstring). `mark_seq` is the seq of the
    `MarkObserved` used (None when the mark came from a venue report, or there is none)."""

    symbol: str
    quote_asset: str | None
    net_quantity: Decimal
    entry_price: Decimal
    mark_price: Decimal | None
    mark_seq: int | None
    unrealized_pnl: Decimal | None
    notional: Decimal | None
    exposure: Decimal | None
    realized_pnl: Decimal
    funding: Decimal
    venue_net_quantity: Decimal | None
    venue_mark_price: Decimal | None
    venue_unrealized_pnl: Decimal | None
    derived_unrealized_at_venue_mark: Decimal | None
    drift_quantity: Decimal
    drift_unrealized_pnl: Decimal | None


class AccountTotals(msgspec.Struct, frozen=True, kw_only=True):
    """Sums over the positions with the same quote asset (`None` if any position of that
    asset has no mark: the sum would be wrong). `unmarked` names positions without a mark."""

    quote_asset: str | None
    unrealized_pnl: Decimal | None
    realized_pnl: Decimal
    funding: Decimal
    gross_exposure: Decimal | None
    net_exposure: Decimal | None
    unmarked: tuple[str, ...]


def _at_precision_of(value: Decimal, shown: Decimal) -> Decimal:
    """`value` rounded (half even) to as many decimal places as `shown` has."""
    exponent = shown.as_tuple().exponent
    if not isinstance(exponent, int) or exponent >= 0:
        exponent = 0
    try:
        return value.quantize(Decimal(1).scaleb(exponent), context=CTX)
    except ArithmeticError:  # beyond the context's digits: compare unrounded
        return value


def mark_price(state: State, symbol: str) -> Decimal | None:
    """The market's mark: the newest recorded one, else the venue's last position report's
    (None when there is neither)."""
    mark = state.marks.get(symbol)
    if mark is not None:
        return mark.price
    position = state.positions.get(symbol)
    if position is not None and position.observed is not None:
        return position.observed.mark_price
    return None


def marked_position(state: State, position: Position) -> MarkedPosition:
    """`position` marked to market with the state's marks."""
    market = state.markets.get(position.symbol)
    mark = state.marks.get(position.symbol)
    observed = position.observed
    mark_seq = None if mark is None else mark.seq
    price = mark_price(state, position.symbol)
    net, entry = position.net_quantity, position.entry_price
    unrealized = notional = exposure = None
    if price is not None:
        unrealized = CTX.multiply(CTX.subtract(price, entry), net) if net else ZERO
        notional = CTX.multiply(net.copy_abs(), price)
        exposure = CTX.multiply(net, price)
    at_venue_mark = drift = None
    if observed is not None and observed.mark_price is not None:
        at_venue_mark = CTX.multiply(CTX.subtract(observed.mark_price, entry), net) if net else ZERO
        if observed.unrealized_pnl is not None:
            at_venue_mark = _at_precision_of(at_venue_mark, observed.unrealized_pnl)
            drift = CTX.subtract(observed.unrealized_pnl, at_venue_mark)
    return MarkedPosition(
        symbol=position.symbol,
        quote_asset=None if market is None else market.quote_asset,
        net_quantity=net,
        entry_price=entry,
        mark_price=price,
        mark_seq=mark_seq,
        unrealized_pnl=unrealized,
        notional=notional,
        exposure=exposure,
        realized_pnl=position.realized_pnl,
        funding=position.funding,
        venue_net_quantity=None if observed is None else observed.net_quantity,
        venue_mark_price=None if observed is None else observed.mark_price,
        venue_unrealized_pnl=None if observed is None else observed.unrealized_pnl,
        derived_unrealized_at_venue_mark=at_venue_mark,
        drift_quantity=position.drift_quantity,
        drift_unrealized_pnl=drift,
    )


def account_totals(state: State) -> tuple[list[MarkedPosition], list[AccountTotals]]:
    """Every position marked to market (by symbol), and the account's sums per quote asset."""
    positions = [marked_position(state, state.positions[s]) for s in sorted(state.positions)]
    groups: dict[str | None, list[MarkedPosition]] = {}
    for figures in positions:
        groups.setdefault(figures.quote_asset, []).append(figures)
    totals = []
    for asset in sorted(groups, key=lambda a: (a is None, a or "")):
        members = groups[asset]
        unmarked = tuple(f.symbol for f in members if f.mark_price is None and f.net_quantity)
        marked = not unmarked
        totals.append(
            AccountTotals(
                quote_asset=asset,
                unrealized_pnl=_sum(f.unrealized_pnl for f in members) if marked else None,
                realized_pnl=_sum(f.realized_pnl for f in members),
                funding=_sum(f.funding for f in members),
                gross_exposure=_sum(f.notional for f in members) if marked else None,
                net_exposure=_sum(f.exposure for f in members) if marked else None,
                unmarked=unmarked,
            )
        )
    return positions, totals


def _sum(values: Iterable[Decimal | None]) -> Decimal:
    total = ZERO
    for value in values:
        if value is not None:
            total = CTX.add(total, value)
    return total
