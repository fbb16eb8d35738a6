"""The venue's outbox: every stream message a state change produced, in order, until the
server takes them (`drain`).

The venue writes each message at the moment of the change it reports, so the REST answer
and the stream messages of one request come from the same state. Private messages carry
the API key of the account they belong to; public ones none. Book publication is by
difference: `publish_levels` and `publish_mark` remember what they last sent per market and
write only what changed since.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final

import attrs

from oms_local_exchange import frames, wire
from oms_local_exchange.arithmetic import ZERO
from oms_local_exchange.model import Fill, Order, Outbound

__all__ = ["TICKER_PERIOD_US", "OPEN_INTEREST_PERIOD_US", "Outbox"]

JSON = Any
# How often the venue pushes `ticker.<symbol>` and `openInterest.<symbol>` (fact sheet §3.2).
TICKER_PERIOD_US: Final = 1_000_000
OPEN_INTEREST_PERIOD_US: Final = 60_000_000


@attrs.define
class _Published:
    """What the public streams last said about one market."""

    levels: dict[str, dict[Decimal, Decimal]] = attrs.Factory(lambda: {"Bid": {}, "Ask": {}})
    bbo: tuple[Decimal | None, Decimal | None] = (None, None)
    mark: Decimal | None = None
    update_id: int = 0
    ticker_due_us: int = 0
    open_interest_due_us: int = 0


class Outbox:
    def __init__(self) -> None:
        self._messages: list[Outbound] = []
        self._published: dict[str, _Published] = {}

    def drain(self) -> list[Outbound]:
        """The messages written since the last drain, oldest first."""
        out, self._messages = self._messages, []
        return out

    # --- private streams ----------------------------------------------------------------------

    def order_update(self, order: Order, event: str, now_us: int, fill: Fill | None = None) -> None:
        data = wire.order_update(order, event, now_us, fill)
        self._messages.append(
            Outbound(stream=frames.ORDER_STREAM, data=data, account=order.account)
        )

    def position_update(self, api_key: str, data: dict[str, JSON]) -> None:
        self._messages.append(Outbound(stream=frames.POSITION_STREAM, data=data, account=api_key))

    # --- public streams -----------------------------------------------------------------------

    def trade(self, symbol: str, data: dict[str, JSON]) -> None:
        self._messages.append(Outbound(stream=f"trade.{symbol}", data=data))

    def liquidation(self, data: dict[str, JSON]) -> None:
        """A `liquidation` payload: one stream for every market."""
        self._messages.append(Outbound(stream=frames.LIQUIDATION_STREAM, data=data))

    def update_id(self, symbol: str) -> int:
        """The id of the latest depth update of `symbol` (0 before the first)."""
        published = self._published.get(symbol)
        return 0 if published is None else published.update_id

    def publish_levels(
        self,
        symbol: str,
        bids: Mapping[Decimal, Decimal],
        asks: Mapping[Decimal, Decimal],
        now_us: int,
    ) -> None:
        """Write a depth update for the levels that changed, and the best bid and offer if
        they moved. `bids` and `asks` map price to the whole quantity at that price."""
        published = self._published.setdefault(symbol, _Published())
        changes: dict[str, list[tuple[Decimal, Decimal]]] = {"Bid": [], "Ask": []}
        for side, now in (("Bid", bids), ("Ask", asks)):
            before = published.levels[side]
            for price in sorted(set(before) | set(now)):
                if before.get(price) != now.get(price):
                    changes[side].append((price, now.get(price, ZERO)))
            published.levels[side] = dict(now)
        if changes["Bid"] or changes["Ask"]:
            published.update_id += 1
            data = frames.depth_update(
                symbol=symbol,
                asks=changes["Ask"],
                bids=changes["Bid"],
                update_id=published.update_id,
                time_us=now_us,
            )
            self._messages.append(Outbound(stream=f"depth.{symbol}", data=data))
        bbo = (max(bids) if bids else None, min(asks) if asks else None)
        if bbo != published.bbo:
            published.bbo = bbo
            best_bid, best_ask = bbo
            data = frames.book_ticker(
                symbol=symbol,
                best_ask=None if best_ask is None else (best_ask, asks[best_ask]),
                best_bid=None if best_bid is None else (best_bid, bids[best_bid]),
                update_id=published.update_id,
                time_us=now_us,
            )
            self._messages.append(Outbound(stream=f"bookTicker.{symbol}", data=data))

    def publish_mark(
        self,
        symbol: str,
        mark: Decimal,
        now_us: int,
        funding: Callable[[], tuple[Decimal, int]] | None = None,
    ) -> None:
        """Write a mark price update if the mark moved; `funding()` gives a perp's current
        (rate, next funding time in ms), asked only when there is something to write."""
        published = self._published.setdefault(symbol, _Published())
        if mark == published.mark:
            return
        published.mark = mark
        rate, next_ms = funding() if funding is not None else (None, None)
        data = frames.mark_price(
            symbol=symbol, mark=mark, time_us=now_us, funding_rate=rate, next_funding_ms=next_ms
        )
        self._messages.append(Outbound(stream=f"markPrice.{symbol}", data=data))

    def publish_periodic(
        self,
        symbol: str,
        now_us: int,
        ticker: Callable[[], dict[str, JSON]],
        open_interest: Callable[[], dict[str, JSON]] | None = None,
        klines: Callable[[], list[tuple[str, dict[str, JSON]]]] | None = None,
    ) -> None:
        """Write the `ticker` payload and the klines that changed (`klines()` gives them as
        (interval, payload)) once per `TICKER_PERIOD_US` of venue time and, for a perp, the
        `openInterest` payload once per `OPEN_INTEREST_PERIOD_US`; the payloads are built
        only when due."""
        published = self._published.setdefault(symbol, _Published())
        if now_us >= published.ticker_due_us:
            published.ticker_due_us = now_us - now_us % TICKER_PERIOD_US + TICKER_PERIOD_US
            self._messages.append(Outbound(stream=f"ticker.{symbol}", data=ticker()))
            for interval, data in klines() if klines is not None else ():
                self._messages.append(Outbound(stream=f"kline.{interval}.{symbol}", data=data))
        if open_interest is not None and now_us >= published.open_interest_due_us:
            period = OPEN_INTEREST_PERIOD_US
            published.open_interest_due_us = now_us - now_us % period + period
            self._messages.append(Outbound(stream=f"openInterest.{symbol}", data=open_interest()))
