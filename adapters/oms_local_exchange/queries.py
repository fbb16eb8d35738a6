"""What the venue's REST query endpoints read: balances, collateral, settings, history,
positions and public market data. Read-only: nothing here changes the books or accounts.

The caller (`Venue`) catches the venue up with the clock first, so answers reflect every
step and funding interval due.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from oms_local_exchange import frames, wire
from oms_local_exchange.accounts import IMF, MMF, Ledger
from oms_local_exchange.arithmetic import (
    VENUE,
    ZERO,
    add,
    display,
    floor_to,
    multiply,
    round_to,
    subtract,
)
from oms_local_exchange.matching import Book
from oms_local_exchange.model import (
    Account,
    Fill,
    FundingPayment,
    Order,
    Position,
    kline_end,
    kline_start,
)
from oms_local_exchange.outbox import Outbox

__all__ = ["Queries"]

JSON = Any
_PERCENT_QUANTUM: Final = Decimal("0.000001")
_BPS: Final = Decimal(10_000)
_EPOCH: Final = datetime(1970, 1, 1)
# What `/api/v1/assets` says of the assets it knows: display name, CoinGecko id, the chain.
_ASSETS: Final = {
    "BTC": ("Bitcoin", "bitcoin", "Bitcoin"),
    "ETH": ("Ether", "ethereum", "Ethereum"),
    "SOL": ("Solana", "solana", "Solana"),
    "USDC": ("USD Coin", "usd-coin", "Solana"),
}


def collateral_weight(asset: str) -> Decimal:
    """The haircut weight of an asset held as collateral (the quote asset counts in full)."""
    return Decimal(1) if asset == "USDC" else Decimal("0.9")


def _kline_time(time_s: int) -> str:
    return (_EPOCH + timedelta(seconds=time_s)).strftime("%Y-%m-%d %H:%M:%S")


class Queries:
    def __init__(
        self,
        *,
        books: Mapping[str, Book],
        ledger: Ledger,
        outbox: Outbox,
        start_us: int,
    ) -> None:
        self._books = books
        self._ledger = ledger
        self._outbox = outbox
        self._start_us = start_us

    def _market_type(self, symbol: str) -> str:
        return self._books[symbol].spec.market_type

    # --- account ------------------------------------------------------------------------------

    def capital(self, api_key: str) -> dict[str, JSON]:
        """`GET /api/v1/capital`: `{asset: {available, locked, staked}}`."""
        account = self._ledger.account(api_key)
        return frames.capital(
            (asset, b.available, b.locked, b.staked) for asset, b in account.balances.items()
        )

    def _asset_price(self, asset: str) -> Decimal:
        if asset == "USDC":
            return Decimal(1)
        for book in self._books.values():
            spec = book.spec
            if spec.base == asset and spec.quote == "USDC" and not spec.is_perp:
                return book.mark_price()
        return ZERO

    def collateral(self, api_key: str) -> dict[str, JSON]:
        """`GET /api/v1/capital/collateral`: plausible figures from balances and positions."""
        account = self._ledger.account(api_key)
        items = []
        assets_value = ZERO
        locked_value = ZERO
        for asset, balance in sorted(account.balances.items()):
            price = self._asset_price(asset)
            weight = collateral_weight(asset)
            notional = multiply(balance.total, price)
            assets_value = add(assets_value, notional)
            locked_value = add(locked_value, multiply(balance.locked, price))
            items.append(
                {
                    "symbol": asset,
                    "assetMarkPrice": wire.dec(price),
                    "totalQuantity": wire.dec(balance.total),
                    "balanceNotional": wire.dec(display(notional)),
                    "collateralWeight": wire.dec(weight),
                    "collateralValue": wire.dec(display(multiply(notional, weight))),
                    "openOrderQuantity": wire.dec(balance.locked),
                    "lendQuantity": "0",
                    "availableQuantity": wire.dec(balance.available),
                }
            )
        unrealized = ZERO
        exposure = ZERO
        for symbol, position in account.positions.items():
            if position.net_quantity:
                unrealized = add(unrealized, self._ledger.unrealized_pnl(symbol, position))
                mark = self._books[symbol].mark_price()
                exposure = add(exposure, multiply(position.net_quantity.copy_abs(), mark))
        net_equity = add(assets_value, unrealized)
        available = min(self._ledger.margin_available(account), subtract(net_equity, locked_value))
        imf = VENUE.divide(Decimal(1), account.leverage_limit)
        return {
            "assetsValue": wire.dec(display(assets_value)),
            "borrowLiability": "0",
            "collateral": items,
            "imf": wire.dec(display(imf)),
            "liabilitiesValue": "0",
            "marginFraction": (
                wire.dec(display(VENUE.divide(net_equity, exposure))) if exposure else None
            ),
            "mmf": wire.dec(MMF),
            "netEquity": wire.dec(display(net_equity)),
            "netEquityAvailable": wire.dec(display(available)),
            "netEquityLocked": wire.dec(display(subtract(net_equity, available))),
            "netExposureFutures": wire.dec(display(exposure)),
            "pnlUnrealized": wire.dec(unrealized),
            "unsettledEquity": wire.dec(unrealized),
        }

    def account_settings(self, api_key: str) -> dict[str, JSON]:
        """`GET /api/v1/account`; fees in basis points."""
        account = self._ledger.account(api_key)
        spot, perp = self._ledger.spot_fees, self._ledger.perp_fees
        return {
            **account.settings,
            "borrowLimit": "1000000",
            "futuresMakerFee": wire.dec(multiply(perp[0], _BPS)),
            "futuresTakerFee": wire.dec(multiply(perp[1], _BPS)),
            "leverageLimit": wire.dec(account.leverage_limit),
            "limitOrders": len(account.open_orders()),
            "liquidating": False,
            "positionLimit": "1000000",
            "spotMakerFee": wire.dec(multiply(spot[0], _BPS)),
            "spotTakerFee": wire.dec(multiply(spot[1], _BPS)),
            "triggerOrders": len(account.open_orders(triggers=True)) - len(account.open_orders()),
        }

    def _of_types(self, symbol: str, market_types: Collection[str] | None) -> bool:
        return market_types is None or self._market_type(symbol) in market_types

    def open_orders(
        self, api_key: str, symbol: str | None = None, market_types: Collection[str] | None = None
    ) -> list[Order]:
        account = self._ledger.account(api_key)
        orders = account.open_orders(
            lambda o: (
                (symbol is None or o.symbol == symbol) and self._of_types(o.symbol, market_types)
            ),
            triggers=True,
        )
        return sorted(orders, key=lambda o: o.seq)

    # --- history ------------------------------------------------------------------------------

    def order_history(
        self,
        api_key: str,
        *,
        order_id: str | None,
        symbol: str | None,
        market_types: Collection[str] | None,
        limit: int,
        offset: int,
        descending: bool,
    ) -> list[Order]:
        account = self._ledger.account(api_key)
        orders = [
            o
            for o in account.orders.values()
            if (order_id is None or o.id == order_id)
            and (symbol is None or o.symbol == symbol)
            and self._of_types(o.symbol, market_types)
        ]
        orders.sort(key=lambda o: o.seq, reverse=descending)
        return orders[offset : offset + limit]

    def fill_history(
        self,
        api_key: str,
        *,
        order_id: str | None,
        symbol: str | None,
        market_types: Collection[str] | None,
        from_ms: int | None,
        to_ms: int | None,
        limit: int,
        offset: int,
        descending: bool,
    ) -> list[Fill]:
        """Fills with `from_ms <= time <= to_ms` (both optional)."""
        account = self._ledger.account(api_key)
        fills = [
            f
            for f in account.fills
            if (order_id is None or f.order_id == order_id)
            and (symbol is None or f.symbol == symbol)
            and self._of_types(f.symbol, market_types)
            and (from_ms is None or f.time_us // 1000 >= from_ms)
            and (to_ms is None or f.time_us // 1000 <= to_ms)
        ]
        if descending:
            fills.reverse()
        return fills[offset : offset + limit]

    def funding_history(
        self, api_key: str, *, symbol: str | None, limit: int, offset: int, descending: bool
    ) -> list[FundingPayment]:
        account = self._ledger.account(api_key)
        payments = [p for p in account.funding if symbol is None or p.symbol == symbol]
        if descending:
            payments.reverse()
        return payments[offset : offset + limit]

    # --- positions ----------------------------------------------------------------------------

    def open_positions(self, api_key: str, symbol: str | None = None) -> list[Position]:
        account = self._ledger.account(api_key)
        return [
            p
            for s, p in sorted(account.positions.items())
            if p.net_quantity and (symbol is None or s == symbol)
        ]

    def position_snapshot(self, api_key: str, symbol: str | None = None) -> list[dict[str, JSON]]:
        """What `account.positionUpdate` sends on subscribe: open positions without `e`."""
        account = self._ledger.account(api_key)
        return [
            self._ledger.position_payload(account, p, None)
            for p in self.open_positions(api_key, symbol)
        ]

    def position_item(self, account: Account, position: Position) -> dict[str, JSON]:
        """One item of `GET /api/v1/position`."""
        return self._ledger.position_item(account, position)

    # --- public market data -------------------------------------------------------------------

    def market_list(self, market_types: Collection[str] | None = None) -> list[dict[str, JSON]]:
        """`GET /api/v1/markets`: by default the spot and perp markets (all of ours)."""
        return [
            wire.market_object(book.spec, self._start_us)
            for book in self._books.values()
            if market_types is None or book.spec.market_type in market_types
        ]

    def depth(self, symbol: str, limit: int, now_us: int) -> dict[str, JSON]:
        """`GET /api/v1/depth`: both sides in ascending price order, as the venue sends them."""
        bids, asks = self._books[symbol].aggregated()
        best_bids = sorted(bids, reverse=True)[:limit]
        best_asks = sorted(asks)[:limit]
        return {
            "asks": [[wire.dec(p), wire.dec(asks[p])] for p in best_asks],
            "bids": [[wire.dec(p), wire.dec(bids[p])] for p in sorted(best_bids)],
            "lastUpdateId": str(self._outbox.update_id(symbol)),
            "timestamp": now_us,
        }

    def ticker(self, symbol: str) -> dict[str, JSON]:
        stats = self._books[symbol].stats
        change = subtract(stats.last_price, stats.first_price)
        percent = round_to(VENUE.divide(change, stats.first_price), _PERCENT_QUANTUM)
        return {
            "symbol": symbol,
            "firstPrice": wire.dec(stats.first_price),
            "lastPrice": wire.dec(stats.last_price),
            "priceChange": wire.dec(change),
            "priceChangePercent": wire.dec(percent),
            "high": wire.dec(stats.high),
            "low": wire.dec(stats.low),
            "volume": wire.dec(stats.volume),
            "quoteVolume": wire.dec(stats.quote_volume),
            "trades": str(stats.trades),
        }

    def ticker_payload(self, symbol: str, now_us: int) -> dict[str, JSON]:
        """A `ticker.<symbol>` stream payload: the REST ticker's figures."""
        stats = self._books[symbol].stats
        return frames.ticker(
            symbol=symbol,
            first=stats.first_price,
            last=stats.last_price,
            high=stats.high,
            low=stats.low,
            volume=stats.volume,
            quote_volume=stats.quote_volume,
            trades=stats.trades,
            time_us=now_us,
        )

    def open_interest_payload(self, symbol: str, now_us: int) -> dict[str, JSON]:
        """An `openInterest.<symbol>` stream payload."""
        (item,) = self.open_interest(symbol, now_us // 1000)
        return frames.open_interest(
            symbol=symbol, quantity=Decimal(item["openInterest"]), time_us=now_us
        )

    def mark_prices(self, symbol: str | None = None) -> list[dict[str, JSON]]:
        """Spot and perp marks for one symbol; without one, the spot markets'."""
        items = []
        for book in self._books.values():
            spec = book.spec
            if (symbol is None and not spec.is_perp) or (
                symbol is not None and spec.symbol != symbol
            ):
                continue
            mark = book.mark_price()
            item: dict[str, JSON] = {
                "symbol": spec.symbol,
                "markPrice": wire.dec(mark),
                "indexPrice": wire.dec(mark),
            }
            if spec.is_perp:
                item["fundingRate"] = wire.dec(book.funding_rate(book.next_funding_ms))
                item["nextFundingTimestamp"] = book.next_funding_ms
            items.append(item)
        return items

    def funding_rates(self, symbol: str, limit: int, offset: int) -> list[dict[str, JSON]]:
        """`GET /api/v1/fundingRates`: past intervals, newest first."""
        rates = list(reversed(self._books[symbol].funding_rates))[offset : offset + limit]
        return [
            {
                "symbol": symbol,
                "intervalEndTimestamp": frames.iso_s(end),
                "fundingRate": wire.dec(rate),
            }
            for end, rate in rates
        ]

    def recent_trades(self, symbol: str, limit: int) -> list[dict[str, JSON]]:
        """`GET /api/v1/trades`: the latest public trades, oldest first."""
        trades = list(self._books[symbol].trades)[-limit:] if limit else []
        return [_public_trade(t) for t in trades]

    def trade_history(self, symbol: str, limit: int, offset: int) -> list[dict[str, JSON]]:
        """`GET /api/v1/trades/history`: public trades newest first, paged by `offset` back
        from the newest (only the latest 1,000 of a market are kept)."""
        trades = list(reversed(self._books[symbol].trades))[offset : offset + limit]
        return [_public_trade(t) for t in trades]

    def open_interest(self, symbol: str | None, now_ms: int) -> list[dict[str, JSON]]:
        """`GET /api/v1/openInterest`: per perp market, the sum of the long positions of every
        account (equal to the shorts' on the real venue; here the synthetic book is the other
        side), in the base asset. A spot market has none: an empty list."""
        items = []
        for book in self._books.values():
            spec = book.spec
            if not spec.is_perp or (symbol is not None and spec.symbol != symbol):
                continue
            total = ZERO
            for account in self._ledger.accounts.values():
                position = account.positions.get(spec.symbol)
                if position is not None and position.net_quantity > 0:
                    total = add(total, position.net_quantity)
            items.append(
                {"symbol": spec.symbol, "openInterest": wire.dec(total), "timestamp": now_ms}
            )
        return items

    def klines(
        self, symbol: str, interval_s: int, start_s: int, end_s: int | None
    ) -> list[dict[str, JSON]]:
        """`GET /api/v1/klines`: candles of the public trades kept (the latest 1,000), one per
        interval that had a trade, oldest first; a candle starts within [start_s, end_s)."""
        candles: dict[int, dict[str, JSON]] = {}
        for trade in self._books[symbol].trades:
            time_s = trade["T"] // 1_000_000
            start = kline_start(time_s, interval_s)
            if start < kline_start(start_s, interval_s) or (end_s is not None and start >= end_s):
                continue
            price, quantity = Decimal(trade["p"]), Decimal(trade["q"])
            candle = candles.get(start)
            if candle is None:
                candle = candles[start] = {
                    "open": price, "high": price, "low": price, "close": price,
                    "volume": ZERO, "quoteVolume": ZERO, "trades": 0,
                }  # fmt: skip
            candle["high"] = max(candle["high"], price)
            candle["low"] = min(candle["low"], price)
            candle["close"] = price
            candle["volume"] = add(candle["volume"], quantity)
            candle["quoteVolume"] = add(candle["quoteVolume"], multiply(price, quantity))
            candle["trades"] += 1
        return [
            {
                "start": _kline_time(start),
                "end": _kline_time(kline_end(start, interval_s)),
                "open": wire.dec(c["open"]),
                "high": wire.dec(c["high"]),
                "low": wire.dec(c["low"]),
                "close": wire.dec(c["close"]),
                "volume": wire.dec(c["volume"]),
                "quoteVolume": wire.dec(c["quoteVolume"]),
                "trades": str(c["trades"]),
            }
            for start, c in sorted(candles.items())
        ]

    def _assets(self) -> list[str]:
        names = {book.spec.base for book in self._books.values()}
        names |= {book.spec.quote for book in self._books.values()}
        return sorted(names)

    def assets(self) -> list[dict[str, JSON]]:
        """`GET /api/v1/assets`: every asset of the markets, with one token each (deposits
        and withdrawals are shown enabled; the local exchange has neither)."""
        items = []
        for asset in self._assets():
            name, coingecko, chain = _ASSETS.get(asset, (asset, None, "Solana"))
            item: dict[str, JSON] = {"symbol": asset, "displayName": name}
            if coingecko is not None:
                item["coingeckoId"] = coingecko
            item["tokens"] = [
                {
                    "blockchain": chain,
                    "depositEnabled": True,
                    "displayName": name,
                    "maximumWithdrawal": None,
                    "minimumDeposit": "0",
                    "minimumWithdrawal": "0",
                    "withdrawEnabled": True,
                    "withdrawalFee": "0",
                }
            ]
            items.append(item)
        return items

    def collateral_parameters(self) -> list[dict[str, JSON]]:
        """`GET /api/v1/collateral`: each asset's margin functions and collateral haircut."""
        return [
            {
                "symbol": asset,
                "imfFunction": {"type": "sqrt", "base": wire.dec(IMF), "factor": "0"},
                "mmfFunction": {"type": "sqrt", "base": wire.dec(MMF), "factor": "0"},
                "haircutFunction": {
                    "weight": wire.dec(collateral_weight(asset)),
                    "kind": {"type": "identity"},
                },
            }
            for asset in self._assets()
        ]

    def max_order_quantity(
        self, api_key: str, symbol: str, side: str, price: Decimal | None, reduce_only: bool
    ) -> Decimal:
        """`GET /api/v1/account/limits/order`: the largest quantity (a multiple of the step)
        an order of `side` at `price` (default: the best opposite price for spot, the mark
        for perps) would pass the funds or margin check with; what closes a perp position
        always fits, a reduce-only order only that."""
        account = self._ledger.account(api_key)
        book = self._books[symbol]
        spec = book.spec
        step = spec.step_size
        if not spec.is_perp:
            if side == "Ask":
                return floor_to(account.balance(spec.base).available, step)
            if price is None:
                asks = book.makers("Bid")
                price = asks[0].price if asks else book.mark_price()
            return floor_to(VENUE.divide(account.balance(spec.quote).available, price), step)
        net = self._ledger.net(account, symbol)
        closing = net.copy_abs() if (net > 0 if side == "Ask" else net < 0) else ZERO
        if reduce_only:
            return closing
        if price is None:
            price = book.mark_price()
        free = self._ledger.margin_available(account)
        opening = ZERO
        if free > 0:
            opening = floor_to(VENUE.divide(multiply(free, account.leverage_limit), price), step)
        return add(closing, opening)


def _public_trade(trade: Mapping[str, JSON]) -> dict[str, JSON]:
    """A public trade payload as an item of `/api/v1/trades` (timestamp in ms)."""
    return {
        "id": trade["t"],
        "price": trade["p"],
        "quantity": trade["q"],
        "quoteQuantity": wire.dec(multiply(Decimal(trade["p"]), Decimal(trade["q"]))),
        "timestamp": trade["T"] // 1000,
        "isBuyerMaker": trade["m"],
    }
