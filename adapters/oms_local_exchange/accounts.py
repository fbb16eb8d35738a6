"""The venue's ledger: accounts, balances and locks, fees, perp positions, margin, funding.

Pure; money follows the venue's rules in `arithmetic` (docs/local-exchange.md, "Arithmetic
and rounding"). Fact sheet §2.3, §2.4:

- Spot: a resting bid locks quote at its limit price, a resting ask its base; a fill releases
  the lock of the filled part and moves base and quote. Buys pay the fee in the base asset,
  sells in the quote asset.
- Perps: one-way net positions and no locks. Fees, realized PnL and funding settle in the
  quote asset (USDC) at once. Margin is a simple initial-margin check (no liquidation).

The ledger does not know the book: it asks `mark_price(symbol)` for marks, and the matching
engine tells it what traded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final

from oms_local_exchange import frames
from oms_local_exchange.arithmetic import (
    VENUE,
    ZERO,
    add,
    display,
    entry_price,
    multiply,
    realized_pnl,
    subtract,
    wire_decimal,
)
from oms_local_exchange.model import (
    DEFAULT_BALANCES,
    LIMIT,
    Account,
    ApiError,
    Fill,
    FundingPayment,
    MarketSpec,
    Order,
    OrderRequest,
    Position,
    VenueTime,
)
from oms_local_exchange.outbox import Outbox

__all__ = ["IMF", "MMF", "Ledger"]

JSON = Any
IMF: Final = Decimal("0.02")
MMF: Final = Decimal("0.0125")
_FIRST_POSITION_ID: Final = 5_000_000_001
_FIRST_USER_ID: Final = 1_000_001


class Ledger:
    """Every account of the venue and what it holds. Errors the venue answers with
    `{"code", "message"}` are raised as `ApiError`."""

    def __init__(
        self,
        *,
        markets: Mapping[str, MarketSpec],
        outbox: Outbox,
        time: VenueTime,
        mark_price: Callable[[str], Decimal],
        spot_fees: tuple[Decimal, Decimal],
        perp_fees: tuple[Decimal, Decimal],
    ) -> None:
        self.markets = markets
        self.spot_fees = spot_fees
        self.perp_fees = perp_fees
        self.accounts: dict[str, Account] = {}
        self._outbox = outbox
        self._time = time
        self._mark_price = mark_price
        self._next_position_id = _FIRST_POSITION_ID

    # --- accounts -----------------------------------------------------------------------------

    def add_account(self, api_key: str, balances: Mapping[str, Decimal] | None = None) -> Account:
        """Open an account keyed by its API key, funded with `balances` (default: generous)."""
        if api_key in self.accounts:
            raise ValueError("an account with this API key exists")
        account = Account(api_key=api_key, user_id=_FIRST_USER_ID + len(self.accounts))
        for asset, amount in (DEFAULT_BALANCES if balances is None else balances).items():
            account.balance(asset).available = Decimal(amount)
        self.accounts[api_key] = account
        return account

    def account(self, api_key: str) -> Account:
        account = self.accounts.get(api_key)
        if account is None:
            raise ApiError(401, "UNAUTHORIZED", "Invalid API key")
        return account

    def resting_order(
        self,
        api_key: str,
        symbol: str,
        *,
        order_id: str | None = None,
        client_id: int | None = None,
    ) -> Order:
        """The resting order named by id or client id (404 otherwise, as the venue answers)."""
        account = self.account(api_key)
        if client_id is not None:
            order_id = account.client_ids.get(client_id)
        order = account.orders.get(order_id) if order_id is not None else None
        if order is None or order.symbol != symbol or not order.is_open:
            raise ApiError(404, "RESOURCE_NOT_FOUND", "Not Found")
        return order

    def update_account(
        self, api_key: str, leverage_limit: Decimal | None, settings: Mapping[str, bool]
    ) -> None:
        account = self.account(api_key)
        if leverage_limit is not None:
            if not 1 <= leverage_limit <= 100:
                raise ApiError(400, "INVALID_CLIENT_REQUEST", "Leverage limit must be 1 to 100")
            account.leverage_limit = leverage_limit
        for key, value in settings.items():
            if key not in account.settings:
                raise ApiError(400, "INVALID_CLIENT_REQUEST", f"Unknown setting {key}")
            account.settings[key] = value

    # --- funds before an order ----------------------------------------------------------------

    def fees(self, spec: MarketSpec) -> tuple[Decimal, Decimal]:
        """(maker, taker) fee rates of the market."""
        return self.perp_fees if spec.is_perp else self.spot_fees

    def check_funds(
        self,
        account: Account,
        spec: MarketSpec,
        request: OrderRequest,
        quantity: Decimal | None,
        *,
        planned_quantity: Decimal,
        planned_notional: Decimal,
    ) -> None:
        """Refuse an order the account cannot pay for. `quantity` is the order's quantity
        after any reduce-only cap; `planned_*` is what it would take from the book now."""
        if spec.is_perp:
            self._check_margin(
                account,
                spec,
                request,
                quantity,
                planned_quantity=planned_quantity,
                planned_notional=planned_notional,
            )
            return
        if request.side == "Bid":
            if request.order_type == LIMIT:
                assert request.price is not None and quantity is not None
                need = multiply(quantity, request.price)
            elif request.quote_quantity is not None:
                need = request.quote_quantity
            else:
                need = planned_notional
            have = account.balance(spec.quote).available
        else:
            need = quantity if quantity is not None else planned_quantity
            have = account.balance(spec.base).available
        if need > have:
            raise ApiError(400, "INSUFFICIENT_FUNDS", "Insufficient funds")

    def _check_margin(
        self,
        account: Account,
        spec: MarketSpec,
        request: OrderRequest,
        quantity: Decimal | None,
        *,
        planned_quantity: Decimal,
        planned_notional: Decimal,
    ) -> None:
        """The exposure an order adds, over the leverage limit, must fit in the collateral not
        yet used by positions and open orders; an order that only reduces always fits."""
        if request.reduce_only:
            return
        if request.order_type == LIMIT:
            assert request.price is not None and quantity is not None
            notional = multiply(quantity, request.price)
        else:
            notional = planned_notional if quantity is not None else request.quote_quantity or ZERO
        net = self.net(account, spec.symbol)
        reducing = net > 0 if request.side == "Ask" else net < 0
        if reducing:
            size = quantity if quantity is not None else planned_quantity
            if size <= net.copy_abs():
                return
        need = VENUE.divide(notional, account.leverage_limit)
        if need > self.margin_available(account):
            raise ApiError(400, "INSUFFICIENT_MARGIN", "Insufficient margin")

    # --- locks and fills ----------------------------------------------------------------------

    def lock(self, order: Order, spec: MarketSpec) -> None:
        """A spot order going on the book locks what its remainder can spend."""
        if spec.is_perp:
            return
        if order.side == "Bid":
            assert order.price is not None
            asset, amount = spec.quote, multiply(order.remaining, order.price)
        else:
            asset, amount = spec.base, order.remaining
        balance = self.accounts[order.account].balance(asset)
        balance.available = subtract(balance.available, amount)
        balance.locked = add(balance.locked, amount)
        order.lock_asset, order.locked = asset, amount

    def release(self, order: Order) -> None:
        """An order leaving the book frees what it still locks."""
        if order.lock_asset is not None and order.locked:
            balance = self.accounts[order.account].balance(order.lock_asset)
            balance.locked = subtract(balance.locked, order.locked)
            balance.available = add(balance.available, order.locked)
            order.locked = ZERO

    def settle(
        self, order: Order, spec: MarketSpec, price: Decimal, quantity: Decimal, *, is_maker: bool
    ) -> tuple[Decimal, str]:
        """Move the money of one fill of `order`; returns the fee and its asset."""
        account = self.accounts[order.account]
        maker_rate, taker_rate = self.fees(spec)
        rate = maker_rate if is_maker else taker_rate
        notional = multiply(quantity, price)
        base, quote = account.balance(spec.base), account.balance(spec.quote)
        if order.lock_asset is not None:
            # Release the lock of the filled part (at the limit price for bids).
            assert order.price is not None
            release = multiply(quantity, order.price) if order.side == "Bid" else quantity
            release = min(release, order.locked)
            held = account.balance(order.lock_asset)
            held.locked = subtract(held.locked, release)
            held.available = add(held.available, release)
            order.locked = subtract(order.locked, release)
        if spec.is_perp:
            fee, fee_asset = multiply(notional, rate), spec.quote
            quote.available = subtract(quote.available, fee)
        elif order.side == "Bid":
            fee, fee_asset = multiply(quantity, rate), spec.base
            quote.available = subtract(quote.available, notional)
            base.available = add(base.available, subtract(quantity, fee))
        else:
            fee, fee_asset = multiply(notional, rate), spec.quote
            base.available = subtract(base.available, quantity)
            quote.available = add(quote.available, subtract(notional, fee))
        return fee, fee_asset

    # --- positions ----------------------------------------------------------------------------

    def net(self, account: Account, symbol: str) -> Decimal:
        position = account.positions.get(symbol)
        return position.net_quantity if position is not None else ZERO

    def position_fill(self, account: Account, spec: MarketSpec, fill: Fill) -> None:
        """Count a perp fill in the account's position, settle its realized PnL and write the
        position updates (a fill through zero closes one position and opens another)."""
        position = account.positions.get(spec.symbol)
        if position is None or not position.net_quantity:
            position = Position(symbol=spec.symbol, position_id=self._new_position_id())
            account.positions[spec.symbol] = position
        old = position.net_quantity
        delta = fill.quantity if fill.side == "Bid" else fill.quantity.copy_negate()
        new = add(old, delta)
        quote = account.balance(spec.quote)
        events: list[tuple[Position, str]] = []
        if not old or (old > 0) == (delta > 0):
            position.open_cost = add(position.open_cost, multiply(fill.quantity, fill.price))
            position.net_quantity = new
            position.entry_price = entry_price(position.open_cost, new)
            position.fees = add(position.fees, fill.fee)
            events.append((position, "positionOpened" if not old else "positionAdjusted"))
        else:
            closed = min(fill.quantity, old.copy_abs())
            pnl = realized_pnl(closed, fill.price, position.entry_price, long=old > 0)
            position.realized_pnl = add(position.realized_pnl, pnl)
            total = account.realized_pnl.get(spec.symbol, ZERO)
            account.realized_pnl[spec.symbol] = add(total, pnl)
            quote.available = add(quote.available, pnl)
            if not new or (new > 0) != (old > 0):
                position.net_quantity = position.entry_price = position.open_cost = ZERO
                if not new:
                    position.fees = add(position.fees, fill.fee)
                events.append((position, "positionClosed"))
            if new and (new > 0) != (old > 0):
                # Through zero: the remainder opens a new position at the fill price.
                opened = Position(
                    symbol=spec.symbol,
                    position_id=self._new_position_id(),
                    net_quantity=new,
                    entry_price=fill.price,
                    open_cost=multiply(fill.price, new.copy_abs()),
                    fees=fill.fee,
                )
                account.positions[spec.symbol] = opened
                events.append((opened, "positionOpened"))
            elif new:
                # Reducing keeps the entry; the open cost follows the quantity.
                position.open_cost = multiply(position.entry_price, new.copy_abs())
                position.net_quantity = new
                position.fees = add(position.fees, fill.fee)
                events.append((position, "positionAdjusted"))
        for changed, event in events:
            self._outbox.position_update(
                account.api_key, self.position_payload(account, changed, event)
            )

    def _new_position_id(self) -> int:
        position_id = self._next_position_id
        self._next_position_id += 1
        return position_id

    def pay_funding(self, spec: MarketSpec, interval_end_ms: int, rate: Decimal) -> None:
        """Settle one funding interval for every open position in the market: longs pay
        net x mark x rate (shorts receive it) when the rate is positive."""
        mark = self._mark_price(spec.symbol)
        for account in self.accounts.values():
            position = account.positions.get(spec.symbol)
            if position is None or not position.net_quantity:
                continue
            amount = multiply(multiply(position.net_quantity, mark), rate).copy_negate()
            position.funding = add(position.funding, amount)
            quote = account.balance(spec.quote)
            quote.available = add(quote.available, amount)
            account.funding.append(
                FundingPayment(
                    account=account.api_key,
                    user_id=account.user_id,
                    symbol=spec.symbol,
                    interval_end_ms=interval_end_ms,
                    rate=rate,
                    amount=amount,
                )
            )

    # --- derived figures ----------------------------------------------------------------------

    def unrealized_pnl(self, symbol: str, position: Position) -> Decimal:
        if not position.net_quantity:
            return ZERO
        mark = self._mark_price(symbol)
        return display(multiply(subtract(mark, position.entry_price), position.net_quantity))

    def break_even_price(self, position: Position) -> Decimal:
        """Entry moved by the position's fees and net funding paid, per unit held."""
        qty = position.net_quantity
        if not qty:
            return ZERO
        cost = VENUE.divide(subtract(position.fees, position.funding), qty.copy_abs())
        return display(
            add(position.entry_price, cost) if qty > 0 else subtract(position.entry_price, cost)
        )

    def margin_available(self, account: Account) -> Decimal:
        """Collateral free for new perp exposure: USDC available plus unrealized PnL, less the
        initial margin (notional over the leverage limit) of positions and open perp orders."""
        free = account.balance("USDC").available
        for symbol, position in account.positions.items():
            if not position.net_quantity:
                continue
            free = add(free, self.unrealized_pnl(symbol, position))
            notional = multiply(position.net_quantity.copy_abs(), self._mark_price(symbol))
            free = subtract(free, VENUE.divide(notional, account.leverage_limit))
        for order in account.open_orders(lambda o: self.markets[o.symbol].is_perp):
            if order.price is not None and not order.reduce_only:
                notional = multiply(order.remaining, order.price)
                free = subtract(free, VENUE.divide(notional, account.leverage_limit))
        return free

    def position_payload(
        self, account: Account, position: Position, event: str | None
    ) -> dict[str, JSON]:
        """An `account.positionUpdate` payload; `event` None gives the on-subscribe form."""
        now = self._time.now
        return frames.position_update(
            event,
            event_time_us=now + 1,
            engine_time_us=now,
            symbol=position.symbol,
            position_id=position.position_id,
            net_quantity=position.net_quantity,
            entry_price=wire_decimal(position.entry_price),
            break_even_price=self.break_even_price(position),
            mark_price=self._mark_price(position.symbol),
            realized_pnl=position.realized_pnl,
            unrealized_pnl=self.unrealized_pnl(position.symbol, position),
            imf=IMF,
            mmf=MMF,
        )

    def position_item(self, account: Account, position: Position) -> dict[str, JSON]:
        """One item of `GET /api/v1/position`."""
        return frames.position_item(
            symbol=position.symbol,
            position_id=position.position_id,
            user_id=account.user_id,
            net_quantity=position.net_quantity,
            entry_price=wire_decimal(position.entry_price),
            break_even_price=self.break_even_price(position),
            mark_price=self._mark_price(position.symbol),
            open_cost=position.open_cost,
            realized_pnl=position.realized_pnl,
            unrealized_pnl=self.unrealized_pnl(position.symbol, position),
            funding=position.funding,
            imf=IMF,
            mmf=MMF,
        )
