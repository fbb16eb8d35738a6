"""Reconciliation: after every (re)connect, bring the engine's state level with the venue's.

The WebSocket stream can miss messages while a connection is down. A reconciliation pass
asks REST for what the venue knows (fills since the last one seen; open orders; the history
of every order the engine believes live or in doubt; positions; funding; balances) and
turns every difference into events with source `reconcile`.

Only news is recorded (`Engine.record_news`): a candidate is kept only if it changes an
order, a balance, a position or a market, or records an anomaly not already recorded. So a
pass over a state that already agrees adds nothing, and running a pass twice in a row adds
nothing the second time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import msgspec

from oms.core.events import (
    Event,
    FundingPaid,
    MessageNotUnderstood,
    OrderFilled,
    OrderObserved,
    PositionObserved,
    SubmitRejected,
)
from oms.core.state import Order, State
from oms.core.values import ZERO, OrderStatus, Source
from oms.engine import Engine
from oms_backpack.clock import VenueClock

__all__ = ["ReconcileSource", "Reconciler"]

# Fills are fetched from a little before the newest order activity we know of: a fill may be
# reported with an engine time slightly before a later event of the same order.
FILL_LOOKBACK_US = 5 * 60 * 1_000_000
# Times the baseline snapshots are taken again while fills keep arriving between them and a
# second look at the fill history.
BRACKET_TRIES = 5


class ReconcileSource(Protocol):
    """What a pass needs from the REST client (oms_backpack.rest.BackpackRest)."""

    async def open_orders(self, symbol: str | None = None, *, source: Source) -> list[Event]: ...

    async def order_history(
        self, *, venue_id: str | None = None, symbol: str | None = None, source: Source
    ) -> list[Event]: ...

    async def recent_orders(self, *, symbol: str, source: Source) -> list[Event]: ...

    async def fill_history(
        self, *, symbol: str | None = None, from_ms: int | None = None, source: Source
    ) -> list[Event]: ...

    async def capital(self, *, source: Source) -> Event: ...

    async def positions(self, *, source: Source) -> list[Event]: ...

    async def funding_history(
        self, *, symbol: str | None = None, source: Source
    ) -> list[Event]: ...


def _fill_keys(events: Iterable[Event]) -> set[tuple[str, str, int]]:
    return {(e.symbol, e.venue_id, e.trade_id) for e in events if isinstance(e, OrderFilled)}


class Reconciler:
    """Runs reconciliation passes for one account of `engine` (its state and its
    `record_news`, which records only the candidates that are news)."""

    def __init__(
        self,
        rest: ReconcileSource,
        engine: Engine,
        *,
        perpetual: bool,
        clock: VenueClock,
    ) -> None:
        self.rest = rest
        self.engine = engine
        self.perpetual = perpetual
        self.clock = clock
        self.passes = 0
        # The fill window is asked in the venue's time; events are stamped in ours.
        self.started_us = clock.venue_us()
        self.synced_us: int | None = None  # when the last completed pass started
        # Our local time when the last pass completed, and how many events it added (the
        # status view: a pass that finds nothing records nothing in the log).
        self.last_pass_us: int | None = None
        self.last_added = 0
        # Fills and funding payments the engine has recorded: a baseline is adopted only if
        # none was recorded while its snapshots were being taken.
        self._moved = 0
        self.close = engine.subscribe(self._count_moves)  # call when the session ends
        # Venue ids of executed orders with attached exits already looked for in the history.
        self._exits_sought: set[str] = set()

    def state(self) -> State:
        return self.engine.state

    def _send(self, candidates: Iterable[Event]) -> int:
        # Synchronous: the state each candidate is judged by is the state it is recorded in,
        # and no other task records between two of them.
        return len(self.engine.record_news(candidates))

    def _count_moves(self, event: Event, state: State) -> None:
        """Engine listener: counts the recorded fills and funding payments (by anyone)."""
        if isinstance(event, OrderFilled | FundingPaid):
            self._moved += 1

    async def _positions(self, source: Source) -> list[Event]:
        """The venue's positions; a symbol we hold that it no longer lists is flat there."""
        reported = await self.rest.positions(source=source)
        listed = {e.symbol for e in reported if isinstance(e, PositionObserved)}
        flat = [
            PositionObserved(
                source=source, recv_time_us=self.clock.local_us(), symbol=symbol, net_quantity=ZERO
            )
            for symbol, position in sorted(self.state().positions.items())
            if symbol not in listed and position.net_quantity
        ]
        return [*reported, *flat]

    async def _link_unknown(
        self, fills: list[Event], source: Source
    ) -> tuple[list[Event], list[Event]]:
        """Fills of orders the engine does not know carry no parent link (the fill history
        has no `relatedOrderId`): ask each such order's history once and copy its parent and
        strategy onto its fills, so that an attached exit first seen by its fill is recorded
        as the exit it is, not as an order we know nothing of. Returns the fills and the
        orders as the history shows them, to be recorded after the fills (their trigger,
        reduce-only flag and status; their executed quantity is then no gap)."""
        state = self.state()
        unknown = {
            e.venue_id
            for e in fills
            if isinstance(e, OrderFilled)
            and e.related_order_id is None
            and e.strategy_id is None
            and state.order(client_id=e.client_id, venue_id=e.venue_id) is None
        }
        described: list[Event] = []
        links: dict[str, tuple[str | None, int | None]] = {}
        for venue_id in sorted(unknown):
            for seen in await self.rest.order_history(venue_id=venue_id, source=source):
                if isinstance(seen, OrderObserved) and seen.venue_id == venue_id:
                    links[venue_id] = (seen.related_order_id, seen.strategy_id)
                    described.append(seen)
        if not links:
            return fills, described
        linked = [
            msgspec.structs.replace(
                e, related_order_id=links[e.venue_id][0], strategy_id=links[e.venue_id][1]
            )
            if isinstance(e, OrderFilled) and e.venue_id in links
            else e
            for e in fills
        ]
        return linked, described

    async def _missing_exits(self, source: Source) -> list[Event]:
        """The attached exits of our executed, finished orders that the engine has not seen,
        from the newest orders of their markets' history (one page each, newest first: an
        exit is placed when its parent executes, so it is recent). Each parent is looked for
        once: the history has its exits by the time it has finished."""
        state = self.state()
        known: dict[str, int] = {}
        parents: list[Order] = []
        for order in state.orders.values():
            if order.related_order_id is not None:
                known[order.related_order_id] = known.get(order.related_order_id, 0) + 1
            elif (
                order.venue_id is not None
                and order.venue_id not in self._exits_sought
                and (
                    order.stop_loss_trigger_price is not None
                    or order.take_profit_trigger_price is not None
                )
                and order.filled_quantity > ZERO
                and order.status.is_terminal
            ):
                parents.append(order)
        wanted: dict[str, set[str]] = {}
        for parent in parents:
            assert parent.venue_id is not None
            self._exits_sought.add(parent.venue_id)
            attached = (parent.stop_loss_trigger_price is not None) + (
                parent.take_profit_trigger_price is not None
            )
            if known.get(parent.venue_id, 0) < attached:
                wanted.setdefault(parent.symbol, set()).add(parent.venue_id)
        found: list[Event] = []
        for symbol in sorted(wanted):
            for seen in await self.rest.recent_orders(symbol=symbol, source=source):
                if (
                    isinstance(seen, OrderObserved)
                    and seen.related_order_id in wanted[symbol]
                    and self.state().order(venue_id=seen.venue_id) is None
                ):
                    found.append(seen)
        return found

    async def run_pass(self) -> int:
        """One full pass; returns how many events it added."""
        source = Source.RECONCILE
        added = 0
        # 1. Fills since the last activity we know of.
        started_us = self.clock.venue_us()
        state = self.state()
        if self.synced_us is not None:
            # Everything up to the start of the last completed pass was reconciled then.
            since_us = self.synced_us - FILL_LOOKBACK_US
        else:
            times = [o.venue_time_us for o in state.orders.values() if o.venue_time_us is not None]
            since_us = (max(times) if times else self.started_us) - FILL_LOOKBACK_US
        fills = await self.rest.fill_history(from_ms=max(since_us, 0) // 1000, source=source)
        fills, described = await self._link_unknown(fills, source)
        # Items the codec could not read are sent too: recorded once as not understood.
        added += self._send(e for e in fills if isinstance(e, OrderFilled | MessageNotUnderstood))
        added += self._send(described)
        # 2. What rests on the book now.
        open_now = await self.rest.open_orders(source=source)
        added += self._send(open_now)
        resting = {e.venue_id for e in open_now if isinstance(e, OrderObserved) and e.venue_id}
        resting_clients = {
            e.client_id
            for e in open_now
            if isinstance(e, OrderObserved) and e.client_id is not None
        }
        # 3. Orders we believe live or in doubt that are not resting: ask their history.
        state = self.state()
        for order in state.open_orders():
            if order.venue_id in resting or order.client_id in resting_clients:
                continue
            if order.status is OrderStatus.PENDING_NEW:
                continue  # its submit is still in flight; its own answer resolves it
            if order.venue_id is not None:
                history = await self.rest.order_history(venue_id=order.venue_id, source=source)
            else:
                history = [
                    e
                    for e in await self.rest.order_history(symbol=order.symbol, source=source)
                    if isinstance(e, OrderObserved) and e.client_id == order.client_id
                ]
            found = [e for e in history if isinstance(e, OrderObserved)]
            added += self._send(e for e in history if isinstance(e, MessageNotUnderstood))
            if found:
                added += self._send(found)
            elif order.status is OrderStatus.IN_DOUBT and order.client_id is not None:
                # Not resting and not in the venue's history: the submit never took effect.
                added += self._send(
                    [
                        SubmitRejected(
                            source=source,
                            recv_time_us=self.clock.local_us(),
                            symbol=order.symbol,
                            client_id=order.client_id,
                            code="NOT_FOUND",
                            message="not open and not in the venue's order history",
                        )
                    ]
                )
        # 3b. Exits the venue attached to our executed orders that the engine has not seen
        # (placed and cancelled while the stream was down: no fill and no longer open).
        added += self._send(await self._missing_exits(source))
        # 4-6. Funding, then positions and balances. Snapshots count every fill and payment up
        # to the moment they were taken. Until the account has a baseline (its first balance
        # snapshot) they are adopted, so they must agree with what the engine has counted: a
        # fill or payment that happened while they were taken would be counted twice (in the
        # snapshot and when it arrives) or lost (counted, then overwritten). So they are
        # adopted only if a second look at the fill (and funding) history shows nothing the
        # first did not, and nothing moved the engine's fills or funding meanwhile (the
        # stream keeps recording while this pass awaits); otherwise what is new is recorded
        # and the snapshots are taken again. They are then recorded together, with no await
        # in between. If the account never goes quiet, the baseline waits for the next pass.
        if self.perpetual:
            added += self._send(await self.rest.funding_history(source=source))
        seen = _fill_keys(fills)
        snapshots: list[Event] = []
        # Fills before the first look's window were not looked at: a baseline includes them.
        looked_from_us = max(since_us, 0) // 1000 * 1000
        for _ in range(BRACKET_TRIES):
            moved = self._moved
            snapshots = await self._positions(source) if self.perpetual else []
            snapshots.append(await self.rest.capital(source=source))
            if self.state().baseline_seq is not None:
                break  # compared, not adopted: nothing to bracket
            snapshots = [
                msgspec.structs.replace(e, covers_fills_before_us=looked_from_us)
                if isinstance(e, PositionObserved)
                else e
                for e in snapshots
            ]
            again = await self.rest.fill_history(from_ms=max(since_us, 0) // 1000, source=source)
            paid: list[Event] = []
            if self.perpetual:
                paid = await self.rest.funding_history(source=source)
            quiet = _fill_keys(again) <= seen and self._moved == moved
            seen |= _fill_keys(again)
            added += self._send(e for e in again if isinstance(e, OrderFilled))
            if self._send(paid):
                quiet = False
            if quiet:
                break
            snapshots = []
        # Balances last: the snapshot then covers every fill and payment above.
        added += self._send(snapshots)
        self.passes += 1
        self.synced_us = started_us
        self.last_pass_us = self.clock.local_us()
        self.last_added = added
        return added
