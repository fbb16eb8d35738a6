"""The venue: the one object the server talks to, made of the exchange's parts.

Pure: no I/O; time comes from the injected clock and randomness from the seed, so a run is a
function of both. The parts, each in its own module:

- `matching.Matcher` and its `matching.Book`s: the synthetic books, the price walk and
  funding schedule, orders, matching and trades;
- `accounts.Ledger`: accounts, balances and locks, fees, positions, margin and funding;
- `queries.Queries`: what the REST query endpoints read;
- `outbox.Outbox`: the stream messages produced, until the server drains them.

Every operation first catches the venue up with the clock (steps, crossing, funding, in time
order), then acts, then publishes the book changes, so the REST answer and the stream
messages of one request come from the same state change.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from decimal import Decimal
from functools import partial
from typing import Any

from oms_local_exchange.accounts import Ledger
from oms_local_exchange.matching import Book, Matcher
from oms_local_exchange.model import (
    DEFAULT_MARKETS,
    MARKET,
    Account,
    ApiError,
    Fill,
    FundingPayment,
    MarketSpec,
    Order,
    OrderRequest,
    Outbound,
    Position,
    VenueTime,
)
from oms_local_exchange.outbox import Outbox
from oms_local_exchange.queries import Queries

__all__ = ["Venue"]

JSON = Any


class Venue:
    """A Backpack-like venue: markets, synthetic books, accounts, matching, accounting.

    `clock()` returns epoch microseconds; the venue never reads any other clock, and treats a
    clock that steps back as standing still. Errors a real venue answers with
    `{"code", "message"}` are raised as `ApiError`.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], int],
        seed: int = 0,
        markets: Sequence[MarketSpec] = DEFAULT_MARKETS,
        step_us: int = 250_000,
        spot_fees: tuple[Decimal, Decimal] = (Decimal("0.0008"), Decimal("0.001")),
        perp_fees: tuple[Decimal, Decimal] = (Decimal("0.0002"), Decimal("0.0005")),
    ) -> None:
        if step_us <= 0:
            raise ValueError("step_us must be positive")
        self.seed = seed
        self.step_us = step_us
        self._time = VenueTime(clock)
        self.start_us = self._time.now
        self.markets: dict[str, MarketSpec] = {}
        books: dict[str, Book] = {}
        for spec in markets:
            if spec.symbol in self.markets:
                raise ValueError(f"market {spec.symbol} given twice")
            books[spec.symbol] = Book.open(spec, seed=seed, now_us=self.start_us)
            self.markets[spec.symbol] = spec
        self._books = books
        self._outbox = Outbox()
        self._ledger = Ledger(
            markets=self.markets,
            outbox=self._outbox,
            time=self._time,
            mark_price=self.mark_price,
            spot_fees=spot_fees,
            perp_fees=perp_fees,
        )
        self._matcher = Matcher(
            books=books,
            ledger=self._ledger,
            outbox=self._outbox,
            time=self._time,
            start_us=self.start_us,
            step_us=step_us,
        )
        self._queries = Queries(
            books=books, ledger=self._ledger, outbox=self._outbox, start_us=self.start_us
        )
        self._publish()

    # --- accounts -----------------------------------------------------------------------------

    @property
    def accounts(self) -> dict[str, Account]:
        return self._ledger.accounts

    @property
    def spot_fees(self) -> tuple[Decimal, Decimal]:
        return self._ledger.spot_fees

    @property
    def perp_fees(self) -> tuple[Decimal, Decimal]:
        return self._ledger.perp_fees

    def add_account(self, api_key: str, balances: Mapping[str, Decimal] | None = None) -> Account:
        """Open an account keyed by its API key, funded with `balances` (default: generous)."""
        return self._ledger.add_account(api_key, balances)

    def account(self, api_key: str) -> Account:
        """The account with that key; `ApiError` 401 if there is none."""
        return self._ledger.account(api_key)

    def update_account(
        self, api_key: str, leverage_limit: Decimal | None, settings: Mapping[str, bool]
    ) -> None:
        self._ledger.update_account(api_key, leverage_limit, settings)

    # --- time and the outbox ------------------------------------------------------------------

    def now_us(self) -> int:
        """The venue's time: the clock, never moving backwards."""
        return self._time.read()

    def drain(self) -> list[Outbound]:
        """Take the stream payloads produced since the last drain, oldest first."""
        return self._outbox.drain()

    def advance(self) -> None:
        """Catch up with the clock: every step and funding interval due, in time order."""
        self._matcher.catch_up(self.now_us())
        self._publish()

    def _publish(self) -> None:
        """Stream what changed on every book since the last publication."""
        now = self._time.now
        for symbol, book in self._books.items():
            bids, asks = book.aggregated()
            self._outbox.publish_levels(symbol, bids, asks, now)
            funding = book.next_funding if book.spec.is_perp else None
            self._outbox.publish_mark(symbol, book.mark_price(), now, funding)
            self._outbox.publish_periodic(
                symbol,
                now,
                partial(self._queries.ticker_payload, symbol, now),
                partial(self._queries.open_interest_payload, symbol, now)
                if book.spec.is_perp
                else None,
                partial(book.kline_updates, now),
            )

    # --- orders -------------------------------------------------------------------------------

    def place(self, api_key: str, request: OrderRequest) -> Order:
        """Execute an order: accept, match, rest or expire. Returns the order as it stands.

        Raises `ApiError` for an order the venue refuses outright (nothing is recorded then).
        """
        self.advance()
        order = self._matcher.place(self.account(api_key), request)
        self._publish()
        return order

    def cancel(
        self,
        api_key: str,
        symbol: str,
        *,
        order_id: str | None = None,
        client_id: int | None = None,
    ) -> Order:
        """Cancel a resting order; `ApiError` 404 `RESOURCE_NOT_FOUND` if it is not resting."""
        self.advance()
        order = self.resting_order(api_key, symbol, order_id=order_id, client_id=client_id)
        self._matcher.cancel(order)
        self._publish()
        return order

    def cancel_all(self, api_key: str, symbol: str) -> list[Order]:
        self.advance()
        account = self.account(api_key)
        orders = sorted(
            account.open_orders(lambda o: o.symbol == symbol, triggers=True), key=lambda o: o.seq
        )
        for order in orders:
            self._matcher.cancel(order)
        self._publish()
        return orders

    # --- orders the venue places itself (test hooks) ------------------------------------------

    def liquidate(
        self, api_key: str, symbol: str, *, origin: str = "LIQUIDATION_AUTOCLOSE"
    ) -> Order:
        """Close the account's position on `symbol` with a market order the venue places
        itself (`O` = `origin`: `LIQUIDATION_AUTOCLOSE`, `ADL_AUTOCLOSE`, ...), as a
        liquidation or an auto-deleveraging does. Its trades are public (`trade.<symbol>`)
        and, for those two origins, each is also published on the `liquidation` stream.
        `ApiError` if there is no position."""
        self.advance()
        account = self.account(api_key)
        net = self._ledger.net(account, symbol)
        if not net:
            raise ApiError(400, "INVALID_ORDER", f"no position on {symbol} to liquidate")
        request = OrderRequest(
            symbol=symbol,
            side="Ask" if net > 0 else "Bid",
            order_type=MARKET,
            quantity=net.copy_abs(),
            reduce_only=True,
        )
        order = self._matcher.place_for_venue(account, request, origin=origin)
        self._publish()
        return order

    def run_strategy(
        self, api_key: str, symbol: str, side: str, quantity: Decimal, *, strategy_id: int
    ) -> Order:
        """One market order of a scheduled strategy the venue runs for the account (a TWAP
        slice, say): the order carries the strategy's id (`H`, `strategyId`), no client id."""
        self.advance()
        request = OrderRequest(symbol=symbol, side=side, order_type=MARKET, quantity=quantity)
        order = self._matcher.place_for_venue(
            self.account(api_key), request, strategy_id=strategy_id
        )
        self._publish()
        return order

    def resting_order(
        self,
        api_key: str,
        symbol: str,
        *,
        order_id: str | None = None,
        client_id: int | None = None,
    ) -> Order:
        """The open order (resting, or waiting for its trigger) named by id or client id
        (404 otherwise, as the venue answers)."""
        return self._ledger.resting_order(api_key, symbol, order_id=order_id, client_id=client_id)

    def open_orders(
        self, api_key: str, symbol: str | None = None, market_types: Collection[str] | None = None
    ) -> list[Order]:
        self.advance()
        return self._queries.open_orders(api_key, symbol, market_types)

    # --- derived figures ----------------------------------------------------------------------

    def mark_price(self, symbol: str) -> Decimal:
        return self._books[symbol].mark_price()

    def funding_rate(self, symbol: str, interval_end_ms: int) -> Decimal:
        """The funding rate of the interval ending at `interval_end_ms`: a function of the seed,
        the symbol and the interval only."""
        return self._books[symbol].funding_rate(interval_end_ms)

    def book_levels(self, symbol: str) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        """Aggregated (bids, asks): price -> quantity, synthetic and resting orders together."""
        return self._books[symbol].aggregated()

    def unrealized_pnl(self, symbol: str, position: Position) -> Decimal:
        return self._ledger.unrealized_pnl(symbol, position)

    def break_even_price(self, position: Position) -> Decimal:
        return self._ledger.break_even_price(position)

    def margin_available(self, account: Account) -> Decimal:
        return self._ledger.margin_available(account)

    # --- positions ----------------------------------------------------------------------------

    def position_payload(
        self, account: Account, position: Position, event: str | None
    ) -> dict[str, JSON]:
        """An `account.positionUpdate` payload; `event` None gives the on-subscribe form."""
        return self._ledger.position_payload(account, position, event)

    def open_positions(self, api_key: str, symbol: str | None = None) -> list[Position]:
        return self._queries.open_positions(api_key, symbol)

    def position_snapshot(self, api_key: str, symbol: str | None = None) -> list[dict[str, JSON]]:
        """What `account.positionUpdate` sends on subscribe: open positions without `e`."""
        self.advance()
        return self._queries.position_snapshot(api_key, symbol)

    def position_item(self, account: Account, position: Position) -> dict[str, JSON]:
        """One item of `GET /api/v1/position`."""
        return self._queries.position_item(account, position)

    # --- account queries ----------------------------------------------------------------------

    def capital(self, api_key: str) -> dict[str, JSON]:
        self.advance()
        return self._queries.capital(api_key)

    def collateral(self, api_key: str) -> dict[str, JSON]:
        self.advance()
        return self._queries.collateral(api_key)

    def account_settings(self, api_key: str) -> dict[str, JSON]:
        return self._queries.account_settings(api_key)

    def order_history(
        self,
        api_key: str,
        *,
        order_id: str | None = None,
        symbol: str | None = None,
        market_types: Collection[str] | None = None,
        limit: int = 100,
        offset: int = 0,
        descending: bool = True,
    ) -> list[Order]:
        self.advance()
        return self._queries.order_history(
            api_key,
            order_id=order_id,
            symbol=symbol,
            market_types=market_types,
            limit=limit,
            offset=offset,
            descending=descending,
        )

    def fill_history(
        self,
        api_key: str,
        *,
        order_id: str | None = None,
        symbol: str | None = None,
        market_types: Collection[str] | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        limit: int = 100,
        offset: int = 0,
        descending: bool = True,
    ) -> list[Fill]:
        """Fills with `from_ms <= time <= to_ms` (both optional)."""
        self.advance()
        return self._queries.fill_history(
            api_key,
            order_id=order_id,
            symbol=symbol,
            market_types=market_types,
            from_ms=from_ms,
            to_ms=to_ms,
            limit=limit,
            offset=offset,
            descending=descending,
        )

    def funding_history(
        self,
        api_key: str,
        *,
        symbol: str | None = None,
        limit: int = 100,
        offset: int = 0,
        descending: bool = True,
    ) -> list[FundingPayment]:
        self.advance()
        return self._queries.funding_history(
            api_key, symbol=symbol, limit=limit, offset=offset, descending=descending
        )

    # --- public market data -------------------------------------------------------------------

    def market_list(self, market_types: Collection[str] | None = None) -> list[dict[str, JSON]]:
        return self._queries.market_list(market_types)

    def depth(self, symbol: str, limit: int = 1000) -> dict[str, JSON]:
        """`GET /api/v1/depth`: both sides in ascending price order, as the venue sends them."""
        self.advance()
        return self._queries.depth(symbol, limit, self._time.now)

    def ticker(self, symbol: str) -> dict[str, JSON]:
        self.advance()
        return self._queries.ticker(symbol)

    def mark_prices(self, symbol: str | None = None) -> list[dict[str, JSON]]:
        self.advance()
        return self._queries.mark_prices(symbol)

    def funding_rates(
        self, symbol: str, limit: int = 100, offset: int = 0
    ) -> list[dict[str, JSON]]:
        """`GET /api/v1/fundingRates`: past intervals, newest first."""
        self.advance()
        return self._queries.funding_rates(symbol, limit, offset)

    def recent_trades(self, symbol: str, limit: int = 100) -> list[dict[str, JSON]]:
        """`GET /api/v1/trades`: the latest public trades, oldest first."""
        self.advance()
        return self._queries.recent_trades(symbol, limit)

    def trade_history(
        self, symbol: str, limit: int = 100, offset: int = 0
    ) -> list[dict[str, JSON]]:
        """`GET /api/v1/trades/history`: public trades, newest first."""
        self.advance()
        return self._queries.trade_history(symbol, limit, offset)

    def open_interest(self, symbol: str | None = None) -> list[dict[str, JSON]]:
        self.advance()
        return self._queries.open_interest(symbol, self._time.now // 1000)

    def klines(
        self, symbol: str, interval_s: int, start_s: int, end_s: int | None = None
    ) -> list[dict[str, JSON]]:
        self.advance()
        return self._queries.klines(symbol, interval_s, start_s, end_s)

    def assets(self) -> list[dict[str, JSON]]:
        return self._queries.assets()

    def collateral_parameters(self) -> list[dict[str, JSON]]:
        return self._queries.collateral_parameters()

    def max_order_quantity(
        self,
        api_key: str,
        symbol: str,
        side: str,
        price: Decimal | None = None,
        reduce_only: bool = False,
    ) -> Decimal:
        self.advance()
        return self._queries.max_order_quantity(api_key, symbol, side, price, reduce_only)
