"""A trading session on Backpack: the WebSocket, reconciliation, polling and the order API.

    async with open_backpack_session(engine, credentials, venue="backpack") as session:
        order = await session.submit("SOL_USDC", Side.BID, OrderType.LIMIT,
                                     quantity=Decimal("1"), price=Decimal("150"))

One nursery holds: the engine's group-commit timer (`Engine.run`), the WebSocket task
(subscribe, read, reconnect), the balance/position poller and the fill chaser.
Every connect and reconnect runs a reconciliation pass; new submits wait until it has
completed. An order the venue reports executed beyond the fills counted is chased in the
venue's fill history after a short grace period (`FillChaser`), and a clean exit runs one more
pass, so fills still in flight at shutdown are in the log.

Every command is recorded before it is sent (`OrderSubmitted`, `CancelRequested`), and its
outcome is recorded after: the venue's answer (`OrderObserved`), a refusal
(`SubmitRejected`, `CancelRejected`) or, when the outcome is unknown (timeout, 5xx),
`SubmitUnknown`: the order then stays in doubt until a venue report or reconciliation
resolves it. Nothing is guessed.

Every producer records through the engine's synchronous entries: the stream and our commands
with `Engine.record`, reconciliation, the answers to commands and the chaser with
`Engine.record_news`. Neither awaits, so under trio each event is logged and applied
atomically, in one order, whichever task produced it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import httpx
import msgspec
import trio

from oms.core import risk
from oms.core.account import mark_price
from oms.core.errors import ConfigurationError, DuplicateClientId, RiskDenied, UnknownMarket
from oms.core.events import (
    CancelRejected,
    CancelRequested,
    Event,
    FundingPaid,
    KillSwitchReset,
    KillSwitchTripped,
    MarketInfo,
    MarkObserved,
    MessageNotUnderstood,
    OrderCancelled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderObserved,
    OrderSubmitted,
    PositionObserved,
    SubmitRejected,
    SubmitUnknown,
)
from oms.core.risk import Limits, MarkSource
from oms.core.state import Order, State
from oms.core.values import (
    Exit,
    OrderStatus,
    OrderType,
    Side,
    Source,
    TimeInForce,
    VenueStatus,
)
from oms.engine import Engine
from oms_backpack import codec, endpoints
from oms_backpack.clock import VenueClock
from oms_backpack.marks import MarkSampler
from oms_backpack.reconcile import Reconciler
from oms_backpack.rest import (
    BackpackRest,
    OutcomeUnknown,
    RestError,
    VenueError,
    VenueUnavailable,
)
from oms_backpack.signing import Credentials, CredentialsError
from oms_backpack.ws import BackpackStream

__all__ = [
    "DEFAULT_FILL_ATTEMPTS",
    "DEFAULT_FILL_GRACE",
    "DEFAULT_REST_URL",
    "DEFAULT_WS_URL",
    "BackpackSession",
    "FillChaser",
    "load_credentials",
    "open_backpack_session",
]

DEFAULT_REST_URL: Final = "https://api.backpack.exchange"
DEFAULT_WS_URL: Final = "wss://ws.backpack.exchange"
UINT32: Final = 2**32
# An order's fill messages normally follow the venue's answer within milliseconds; only an
# order still short of its fills after this long (seconds) is looked up in the fill history.
DEFAULT_FILL_GRACE: Final = 2.0
# Looks at the fill history per order before its gap is recorded as an anomaly. The venue's
# history can lag its matching engine, so the looks are spaced out: 1 s, 2 s, 4 s after the
# first (`FILL_RETRY_BACKOFF`, doubling).
DEFAULT_FILL_ATTEMPTS: Final = 4
FILL_RETRY_BACKOFF: Final = 1.0
# The kill switch asks the venue again after a failed cancel or an order still open: first
# after this long (seconds), doubling up to KILL_RETRY_MAX.
KILL_RETRY_INITIAL: Final = 0.2
KILL_RETRY_MAX: Final = 5.0
# Without the venue's order id, fills are looked up by symbol from this long before the
# order's latest venue time (a fill can carry a time a little before a later report).
FILL_LOOKBACK_US: Final = 5 * 60 * 1_000_000

Venue = Literal["backpack", "backpack_perpetual"]
_log = logging.getLogger(__name__)


def load_credentials(
    key_file: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> Credentials:
    """Keys from `BACKPACK_API_KEY` / `BACKPACK_API_SECRET`, or from a key file holding
    `{"api_key": "...", "api_secret": "..."}`. Error messages never contain the secret."""
    env = os.environ if environ is None else environ
    if key_file is not None:
        path = Path(key_file)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CredentialsError(
                f"{path}: cannot read the key file ({type(exc).__name__})"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("api_secret"), str):
            raise CredentialsError(f"{path}: expected a JSON object with api_key and api_secret")
        api_key = data.get("api_key")
        return Credentials(data["api_secret"], api_key if isinstance(api_key, str) else None)
    secret = env.get("BACKPACK_API_SECRET")
    if not secret:
        raise CredentialsError("BACKPACK_API_SECRET is not set (or give a key file)")
    return Credentials(secret, env.get("BACKPACK_API_KEY") or None)


def _refusal(exc: VenueError | VenueUnavailable) -> tuple[str, str]:
    """(code, message) to record for a request the venue certainly did not carry out."""
    if isinstance(exc, VenueError):
        return exc.code, exc.message
    return "UNAVAILABLE", str(exc)


class FillSource(Protocol):
    """What the chaser needs from the REST client (`BackpackRest.fill_history`)."""

    async def fill_history(
        self,
        *,
        venue_id: str | None = None,
        symbol: str | None = None,
        from_ms: int | None = None,
        source: Source,
    ) -> list[Event]: ...


# The order statuses a venue report can state as they are (the rest are ours alone).
_AS_REPORTED: Final = {
    s: VenueStatus(s.value) for s in OrderStatus if s.value in {v.value for v in VenueStatus}
}


class _Chase:
    def __init__(self, due: float) -> None:
        self.due = due  # trio time of the next look
        self.looks = 0


class FillChaser:
    """Finds the fills of orders the venue reports executed beyond the fills counted.

    A venue answer or report can run ahead of the order's fill messages (a MARKET order's
    REST answer says `Filled` before any `orderFill`), and a fill message can be lost. Such an
    order is `awaiting_fills`. It is noticed as its events are recorded (`notice` is an
    engine listener; `run` also picks up orders a replayed log left waiting). After `grace`
    seconds, if it still waits, the venue's fill history is asked for that order's fills
    and the novel ones are recorded (source `reconcile`); then again after 1, 2, 4 s ... up
    to `attempts` looks. If the fills still fall short, the venue's executed figure is
    recorded once more as a `reconcile` observation, which the reducer records as a
    `fill_gap` anomaly, and the order is left alone until the venue reports even more.

    Counters: `recovered` (fills found and recorded), `gaps` (orders given up on),
    `errors` (fill history requests that failed; they count as looks).
    """

    def __init__(
        self,
        engine: Engine,
        rest: FillSource,
        *,
        grace: float = DEFAULT_FILL_GRACE,
        attempts: int = DEFAULT_FILL_ATTEMPTS,
        backoff: float = FILL_RETRY_BACKOFF,
        clock: VenueClock | None = None,
    ) -> None:
        if not grace >= 0 or attempts < 1 or not backoff > 0:
            raise ValueError(
                f"need grace >= 0, attempts >= 1, backoff > 0: {grace, attempts, backoff}"
            )
        self.engine = engine
        self.rest = rest
        self.grace = grace
        self.attempts = attempts
        self.backoff = backoff
        self.clock = clock if clock is not None else VenueClock()
        self.recovered = 0
        self.gaps = 0
        self.errors = 0
        self._chasing: dict[str, _Chase] = {}
        # Orders given up on, with the executed figure at the time: chased again only if
        # the venue later reports more.
        self._given_up: dict[str, Decimal] = {}
        self._wake = trio.Event()

    def notice(self, event: Event, state: State) -> None:
        """Engine listener: start or stop chasing the order `event` is about."""
        if isinstance(event, OrderObserved | OrderFilled | OrderCancelled | OrderExpired):
            order = state.order(client_id=event.client_id, venue_id=event.venue_id)
            if order is not None:
                self._watch(order)

    def _watch(self, order: Order) -> None:
        if not order.awaiting_fills:
            self._chasing.pop(order.key, None)
            self._given_up.pop(order.key, None)
            return
        assert order.venue_executed is not None  # awaiting fills says so
        given_up = self._given_up.get(order.key)
        if order.key in self._chasing or (
            given_up is not None and order.venue_executed <= given_up
        ):
            return
        self._chasing[order.key] = _Chase(trio.current_time() + self.grace)
        self._wake.set()

    async def run(self) -> None:
        """Chase until cancelled."""
        for order in self.engine.state.orders.values():
            self._watch(order)
        while True:
            now = trio.current_time()
            for key, chase in list(self._chasing.items()):
                if chase.due <= now and self._chasing.get(key) is chase:
                    await self._look_again(key, chase)
            self._wake = trio.Event()
            with trio.move_on_at(min((c.due for c in self._chasing.values()), default=math.inf)):
                await self._wake.wait()

    async def _look_again(self, key: str, chase: _Chase) -> None:
        order = self.engine.state.orders.get(key)
        if order is not None and order.awaiting_fills:
            await self.look(order)
            order = self.engine.state.orders.get(key)
        if self._chasing.get(key) is not chase:
            return  # the order's events changed it meanwhile; `_watch` decided
        if order is None or not order.awaiting_fills:
            del self._chasing[key]
            return
        chase.looks += 1
        if chase.looks < self.attempts:
            chase.due = trio.current_time() + self.backoff * 2 ** (chase.looks - 1)
            return
        del self._chasing[key]
        self._give_up(order)

    async def look(self, order: Order) -> int:
        """Ask the venue's fill history for `order`'s fills; record the novel ones.

        Returns how many fills were recorded. A REST failure is logged and counted, not
        raised (the caller decides whether to look again)."""
        try:
            if order.venue_id is not None:
                found = await self.rest.fill_history(
                    venue_id=order.venue_id, symbol=order.symbol, source=Source.RECONCILE
                )
            else:
                since_us = (order.venue_time_us or self.clock.venue_us()) - FILL_LOOKBACK_US
                found = [
                    e
                    for e in await self.rest.fill_history(
                        symbol=order.symbol,
                        from_ms=max(since_us, 0) // 1000,
                        source=Source.RECONCILE,
                    )
                    if not isinstance(e, OrderFilled) or e.client_id == order.client_id
                ]
        except RestError as exc:
            self.errors += 1
            _log.warning("fill history for order %s failed: %s", order.key, exc)
            return 0
        # Unreadable items are recorded too (once), as reconciliation does.
        candidates = [e for e in found if isinstance(e, OrderFilled | MessageNotUnderstood)]
        fills = 0
        # No await between judging and recording: nothing else can record in between.
        for event in self.engine.record_news(candidates):
            fills += isinstance(event, OrderFilled)
        if fills:
            self.recovered += fills
            _log.info("order %s: %d fill(s) found in the venue's history", order.key, fills)
        return fills

    async def look_at_all(self) -> int:
        """One look for every order waiting for fills, now (the final pass of a session)."""
        waiting = [o for o in self.engine.state.orders.values() if o.awaiting_fills]
        found = 0
        for order in waiting:
            found += await self.look(order)
        return found

    def _give_up(self, order: Order) -> None:
        assert order.venue_executed is not None
        self._given_up[order.key] = order.venue_executed
        self.gaps += 1
        _log.error(
            "order %s: the venue reports %s executed, the fills found add up to %s after %d "
            "looks at its fill history; recorded as a fill gap",
            order.key,
            order.venue_executed,
            order.filled_quantity,
            self.attempts,
        )
        status = _AS_REPORTED.get(order.status)
        if status is None:
            return  # not a status a venue report could restate; the log line must do
        restated = OrderObserved(
            source=Source.RECONCILE,
            recv_time_us=self.clock.local_us(),
            symbol=order.symbol,
            status=status,
            venue_id=order.venue_id,
            client_id=order.client_id,
            executed_quantity=order.venue_executed,
        )
        self.engine.record_news([restated])


def _exit_fields(name: str, exit_: Exit | None) -> dict[str, Any]:
    if exit_ is None:
        return {}
    return {
        f"{name}_trigger_price": exit_.trigger_price,
        f"{name}_limit_price": exit_.limit_price,
        f"{name}_trigger_by": exit_.trigger_by,
    }


class BackpackSession:
    """The order API of one connected account. Made by `open_backpack_session`."""

    def __init__(
        self,
        engine: Engine,
        rest: BackpackRest,
        *,
        perpetual: bool,
        fill_grace: float = DEFAULT_FILL_GRACE,
        fill_attempts: int = DEFAULT_FILL_ATTEMPTS,
        limits: Limits | None = None,
        mark_source: MarkSource = mark_price,
    ) -> None:
        self.engine = engine
        self.rest = rest
        self.perpetual = perpetual
        # The pre-trade check's limits and where it finds mark prices (docs/risk.md); both
        # may be replaced at any time (the next submit uses them).
        self.limits = limits if limits is not None else Limits()
        self.mark_source = mark_source
        self.kill_confirmations = 0  # times the venue confirmed nothing open after a trip
        self._trip_request: tuple[str, str] | None = None
        self._guard_wake = trio.Event()
        self.clock = rest.clock  # one clock for REST, the stream and the session
        self.chaser = FillChaser(
            engine, rest, grace=fill_grace, attempts=fill_attempts, clock=self.clock
        )
        self.stream: BackpackStream | None = None
        self.marks: MarkSampler | None = None  # the rule marks are recorded by
        self.errors = 0  # REST failures of reconciliation and polling (retried)
        self.reconciled = trio.Event()
        self._reconcile_lock = trio.Lock()
        self.reconciler = Reconciler(
            rest,
            engine,
            perpetual=perpetual,
            clock=self.clock,
        )

    async def resync_clock(self) -> None:
        """Measure the venue's clock again (before a reconnect signs its subscription)."""
        try:
            await self.rest.sync_clock()
        except RestError as exc:
            self.errors += 1
            _log.warning("clock resync failed (%s); signing with the last offset", exc)

    async def on_connect(self) -> None:
        """Called by the WebSocket task after every (re)connect: reconcile, retrying with
        backoff while REST fails (submits keep waiting meanwhile; callers own timeouts)."""
        delay = 1.0
        while True:
            try:
                await self.reconcile()
                return
            except RestError as exc:
                self.errors += 1
                _log.warning("reconciliation failed (%s); retrying in %.0f s", exc, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def reconcile(self, *, gate: bool = True) -> int:
        """One reconciliation pass (serialised). With `gate`, submits wait until it has
        succeeded (after a (re)connect); the periodic pass of `poll` leaves them alone.

        Raises the REST client's errors; a closed gate then stays closed."""
        async with self._reconcile_lock:
            if gate and self.reconciled.is_set():
                self.reconciled = trio.Event()
            added = await self.reconciler.run_pass()
            self.reconciled.set()
            return added

    def next_client_id(self) -> int:
        """A uint32 never used in this account's log: above the last one used (by an order or
        a denial), and above the current time in seconds, so a lost log after a restart does
        not reuse recent ids."""
        state = self.engine.state
        used = [
            i for i in (state.last_client_id, state.risk.last_denied_client_id) if i is not None
        ]
        last = max(used) if used else None
        candidate = max(0 if last is None else last + 1, int(self.clock.local_us() // 1_000_000))
        return candidate % UINT32

    async def submit(
        self,
        symbol: str,
        side: Side,
        order_type: OrderType,
        *,
        quantity: Decimal | None = None,
        price: Decimal | None = None,
        quote_quantity: Decimal | None = None,
        time_in_force: TimeInForce | None = None,
        reduce_only: bool = False,
        client_id: int | None = None,
        trigger_price: Decimal | None = None,
        trigger_quantity: Decimal | str | None = None,
        trigger_by: str | None = None,
        stop_loss: Exit | None = None,
        take_profit: Exit | None = None,
    ) -> Order:
        """Place an order; returns it as the engine sees it after the venue's answer.

        A conditional order gives `trigger_price` and `trigger_quantity` (a quantity, or a
        percentage such as `"80%"`) instead of `quantity`; it waits in `TriggerPending` until
        the price `trigger_by` names (`LastPrice`, `MarkPrice`, `IndexPrice`) reaches the
        trigger, then lives on as an order with the same ids (or ends `TriggerFailed`).
        `stop_loss` / `take_profit` (perpetuals) attach exits: once the order has executed,
        the venue places each as a reduce-only conditional order of its own, which the engine
        tracks with `related_order_id` set to this order's venue id.

        `client_id` (a uint32) names the order; by default `next_client_id()` picks one.
        Raises, before anything is logged or sent, a `ProgramError`: `InvalidOrder` for an
        order the market cannot represent (`UnknownMarket` for a market the engine does not
        know), `DuplicateClientId` for a client id an order in the state already has (an
        order dropped by finished-order retention is no longer known, so its id is not
        caught), `RiskDenied` for an order the pre-trade check refuses (`self.limits`, the
        kill switch; the denial is recorded as an `OrderDenied` event, and an account loss
        limit broken trips the kill switch). A venue refusal is recorded, not raised: check
        `order.status`.
        """
        if self.reconciled.is_set():
            # The gate is open: go on without a scheduling point (other tasks' work would run
            # inside the order's latency), but a cancelled caller still records nothing.
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            await self.reconciled.wait()
        market = self.engine.state.markets.get(symbol)
        if market is None:
            raise UnknownMarket(f"unknown market {symbol}")
        if client_id is None:
            client_id = self.next_client_id()
        command = OrderSubmitted(
            source=Source.LOCAL,
            recv_time_us=self.clock.local_us(),
            client_id=client_id,
            symbol=symbol,
            side=side,
            order_type=order_type,
            quantity=quantity,
            quote_quantity=quote_quantity,
            price=price,
            time_in_force=time_in_force,
            post_only=order_type is OrderType.LIMIT_MAKER,
            reduce_only=reduce_only,
        )
        if (
            trigger_price is not None
            or trigger_quantity is not None
            or trigger_by is not None
            or stop_loss is not None
            or take_profit is not None
        ):
            # A second call for the trigger and exit fields (every other order skips it: a
            # call with this many keywords builds a dictionary first).
            command = msgspec.structs.replace(
                command,
                trigger_price=trigger_price,
                trigger_quantity=None if trigger_quantity is None else str(trigger_quantity),
                trigger_by=trigger_by,
                **_exit_fields("stop_loss", stop_loss),
                **_exit_fields("take_profit", take_profit),
            )
        spec = endpoints.execute_order(command, market)  # raises before anything is logged
        # Checked last, with no await before `record`: no other task can take the id between.
        if self.engine.state.order(client_id=client_id) is not None:
            raise DuplicateClientId(client_id)
        decision = risk.check(self.engine.state, command, self.limits, mark=self.mark_source)
        if isinstance(decision, risk.Denied):
            self._deny(command, decision)
        # Logged before it is sent (the write-ahead); applied, and the listeners called, once
        # its bytes are on their way (`Engine.record_pending`): the order's path to the venue
        # carries no more than it must. Anything else that touches the engine applies it first.
        engine = self.engine
        engine.record_pending(command)
        try:
            body = await self.rest.call(spec, sent=engine.settle)
        except OutcomeUnknown as exc:
            self.engine.record(
                SubmitUnknown(
                    source=Source.REST,
                    recv_time_us=self.clock.local_us(),
                    symbol=symbol,
                    client_id=command.client_id,
                    reason=str(exc),
                )
            )
        except (VenueError, VenueUnavailable) as exc:
            # A refusal, or no connection ever made: either way the order was not placed.
            code, message = _refusal(exc)
            self.engine.record(
                SubmitRejected(
                    source=Source.REST,
                    recv_time_us=self.clock.local_us(),
                    symbol=symbol,
                    client_id=command.client_id,
                    code=code,
                    message=message,
                )
            )
        else:
            answer = codec.order_object(body, Source.REST, self.clock.local_us())
            self.engine.record_news([answer])
        finally:
            engine.settle()  # on every path, a cancelled caller's included
        order = self.engine.state.order(client_id=command.client_id)
        assert order is not None
        return order

    def _deny(self, command: OrderSubmitted, decision: risk.Denied) -> None:
        """Record the denial, trip the switch if the account's loss limit is broken, raise."""
        self.engine.record(
            OrderDenied(
                source=Source.LOCAL,
                recv_time_us=command.recv_time_us,
                client_id=command.client_id,
                symbol=command.symbol,
                side=command.side,
                order_type=command.order_type,
                limit=decision.limit.value,
                scope=decision.scope,
                reason=decision.reason,
                quantity=command.quantity,
                quote_quantity=command.quote_quantity,
                price=command.price,
                reduce_only=command.reduce_only,
            )
        )
        if decision.limit is risk.LimitName.MAX_LOSS and decision.scope == "account":
            self.request_trip(f"account loss limit: {decision.reason}", by="limit")
        raise RiskDenied(decision.limit.value, decision.scope, decision.reason, command.client_id)

    # --- the kill switch ------------------------------------------------------------------------

    @property
    def tripped(self) -> bool:
        """Whether the kill switch is tripped (it is part of the state, so a restart keeps it)."""
        return self.engine.state.risk.tripped

    async def trip(self, reason: str, *, by: str = "program") -> None:
        """Trip the kill switch: record it (`KillSwitchTripped`; from then on only reduce-only
        orders are accepted), then cancel every open order on every symbol, asking again
        until the venue shows none open (see `cancel_everything`). Tripping a tripped switch
        records nothing and cancels again. `by` says who: `program`, `limit` or `signal`."""
        if not self.tripped:
            self.engine.record(
                KillSwitchTripped(
                    source=Source.LOCAL, recv_time_us=self.clock.local_us(), reason=reason, by=by
                )
            )
            _log.warning("kill switch tripped by %s: %s", by, reason)
        await self.cancel_everything()

    def request_trip(self, reason: str, *, by: str = "program") -> None:
        """`trip` from synchronous code (an engine listener, a signal handler): the session's
        guard task records the trip and cancels, as soon as it runs."""
        if self._trip_request is None:
            self._trip_request = (reason, by)
        self._guard_wake.set()

    def reset_kill_switch(self, reason: str) -> bool:
        """Reset a tripped kill switch (recorded as `KillSwitchReset`); new orders are checked
        against the limits again. Returns False (and records nothing) if it was not tripped."""
        if not self.tripped:
            return False
        self.engine.record(
            KillSwitchReset(source=Source.LOCAL, recv_time_us=self.clock.local_us(), reason=reason)
        )
        _log.warning("kill switch reset: %s", reason)
        return True

    async def cancel_everything(self) -> int:
        """Cancel every open order on every symbol until the venue confirms none is left.

        Backpack's cancel-all needs a symbol, and it has no cancel-on-disconnect. Each round
        asks the venue for its open orders on all symbols (one request) and records them (so
        orders the engine did not know are seen too); if there are none, the venue has
        confirmed and this returns the number of rounds. Otherwise it sends cancel-all for each
        symbol with an order open (the venue's, or the engine's when the query failed), and
        goes round again, after 0.2 s, 0.4 s, ... up to 5 s when a request failed or from the
        second round on. It does not give up: the caller bounds the time."""
        pending = {o.symbol for o in self.engine.state.open_orders()}
        delay = KILL_RETRY_INITIAL
        rounds = 0
        while True:
            rounds += 1
            try:
                open_now = await self.rest.open_orders(source=Source.RECONCILE)
            except RestError as exc:
                self.errors += 1
                _log.warning("kill switch: open orders query failed (%s)", exc)
                failed = True
                pending |= {o.symbol for o in self.engine.state.open_orders()}
            else:
                failed = False
                self.engine.record_news(open_now)
                pending = {e.symbol for e in open_now if isinstance(e, OrderObserved)}
                if not pending:
                    self.kill_confirmations += 1
                    _log.warning("kill switch: the venue shows no open order (round %d)", rounds)
                    return rounds
            for symbol in sorted(pending):
                failed = not await self.cancel_all(symbol) or failed
            if failed or rounds > 1:
                await trio.sleep(delay)
                delay = min(delay * 2, KILL_RETRY_MAX)

    def watch_risk(self, event: Event, state: State) -> None:
        """Engine listener: trip the switch when the account's loss limit breaks as fills,
        marks, position reports and funding arrive, not only at the next submit."""
        if (
            self.limits.account.max_loss is None
            or state.risk.tripped
            or not isinstance(event, OrderFilled | MarkObserved | PositionObserved | FundingPaid)
        ):
            return
        breach = risk.loss_breach(state, self.limits, event.recv_time_us, mark=self.mark_source)
        if breach is not None:
            self.request_trip(f"account loss limit: {breach.reason}", by="limit")

    async def guard(self) -> None:
        """The kill switch's task: on start, a switch the log left tripped cancels again
        (orders may have been left open when the last session stopped); then every requested
        trip is carried out."""
        if self.tripped:
            await self.reconciled.wait()
            await self.cancel_everything()
        while True:
            await self._guard_wake.wait()
            self._guard_wake = trio.Event()
            request, self._trip_request = self._trip_request, None
            if request is not None:
                await self.trip(request[0], by=request[1])

    async def cancel(
        self, symbol: str, *, client_id: int | None = None, venue_id: str | None = None
    ) -> Order | None:
        """Ask the venue to cancel an order; returns the order as the engine then sees it."""
        spec = endpoints.cancel_order(symbol, client_id=client_id, venue_id=venue_id)
        self.engine.record(
            CancelRequested(
                source=Source.LOCAL,
                recv_time_us=self.clock.local_us(),
                symbol=symbol,
                client_id=client_id,
                venue_id=venue_id,
            )
        )
        try:
            body = await self.rest.call(spec)
        except (VenueError, VenueUnavailable) as exc:
            code, message = _refusal(exc)
            self.engine.record(
                CancelRejected(
                    source=Source.REST,
                    recv_time_us=self.clock.local_us(),
                    symbol=symbol,
                    client_id=client_id,
                    venue_id=venue_id,
                    code=code,
                    message=message,
                )
            )
        except OutcomeUnknown:
            # The cancel may or may not have happened; the stream or reconciliation will say.
            pass
        else:
            if isinstance(body, dict):  # 202 Accepted has no order: the stream will tell
                answer = codec.order_object(body, Source.REST, self.clock.local_us())
                self.engine.record_news([answer])
        return self.engine.state.order(client_id=client_id, venue_id=venue_id)

    async def cancel_all(self, symbol: str) -> bool:
        """Cancel every open order on `symbol` (one request; the venue reports each cancel).

        A cancel request is recorded first for every order the engine has open there.
        Returns whether the venue answered (a failure is logged and counted, not raised)."""
        for order in self.engine.state.open_orders():
            if order.symbol == symbol:
                self.engine.record(
                    CancelRequested(
                        source=Source.LOCAL,
                        recv_time_us=self.clock.local_us(),
                        symbol=symbol,
                        client_id=order.client_id,
                        venue_id=None if order.client_id is not None else order.venue_id,
                    )
                )
        try:
            body = await self.rest.call(endpoints.cancel_all(symbol))
        except RestError as exc:
            # The stream or the next reconciliation says what happened to each order.
            self.errors += 1
            _log.warning("cancel all on %s failed: %s", symbol, exc)
            return False
        if isinstance(body, list):
            answers = [
                codec.order_object(item, Source.REST, self.clock.local_us()) for item in body
            ]
            self.engine.record_news(answers)
        return True

    async def cancel_open_orders(self) -> None:
        symbols = sorted({o.symbol for o in self.engine.state.open_orders()})
        for symbol in symbols:
            await self.cancel_all(symbol)

    async def final_pass(self) -> None:
        """Before a clean shutdown: one more reconciliation pass, then one look at the fill
        history of every order still waiting for fills, so that fills whose messages are
        still in flight are in the log. REST failures are logged and counted, not raised;
        the caller bounds the time (`open_backpack_session` does, under a shield)."""
        try:
            await self.reconcile(gate=False)
        except RestError as exc:
            self.errors += 1
            _log.warning("final reconciliation failed (%s)", exc)
        await self.chaser.look_at_all()

    async def poll(self, interval: float) -> None:
        """A full reconciliation pass every `interval` seconds: balances and positions have no
        stream, and a private message the venue dropped without closing the connection is
        found in the fill and order history (nothing waits for a reconnect)."""
        while True:
            await trio.sleep(interval)
            try:
                await self.reconcile(gate=False)
            except RestError as exc:
                self.errors += 1
                _log.warning("periodic reconciliation failed (%s); next in %.0f s", exc, interval)


@asynccontextmanager
async def open_backpack_session(
    engine: Engine,
    credentials: Credentials,
    *,
    venue: Venue = "backpack",
    rest_url: str = DEFAULT_REST_URL,
    ws_url: str = DEFAULT_WS_URL,
    poll_interval: float = 15.0,
    cancel_on_shutdown: bool = False,
    shutdown_timeout: float = 5.0,
    window_ms: int = 5000,
    transport: httpx.AsyncBaseTransport | None = None,
    heartbeat_interval: float = 30.0,
    symbols: Sequence[str] | None = None,
    fill_grace: float = DEFAULT_FILL_GRACE,
    fill_attempts: int = DEFAULT_FILL_ATTEMPTS,
    clock: VenueClock | None = None,
    limits: Limits | None = None,
    mark_source: MarkSource = mark_price,
    marks: MarkSampler | None = None,
    keep_warm: bool = True,
    nonces_ahead: bool = True,
) -> AsyncIterator[BackpackSession]:
    """Connect, load markets, subscribe, reconcile; yield the session; shut down cleanly.

    `venue` picks the markets (spot for `backpack`, perpetuals for `backpack_perpetual`)
    unless `symbols` names them (a symbol the venue does not list raises `ConfigurationError`
    before anything is recorded); positions are followed when any perpetual is traded.
    `transport` replaces httpx's network transport (tests); everything else is real.
    `fill_grace` and `fill_attempts` tune the fill chaser (see `FillChaser`). `clock` is the
    session's one clock (`VenueClock`: the wall clock and the measured venue offset), shared
    by the REST client, the stream and the session; tests pass one with a clock of their own.
    `limits` are the pre-trade risk limits and `mark_source` where the check finds mark prices
    (docs/risk.md; by default the newest recorded mark, else the venue's last position report);
    a kill switch the log left tripped cancels every open order again once the session has
    reconciled.

    The session follows the mark price of every market it trades (`markPrice.<symbol>`) and
    records a sample of them as `MarkObserved` (`marks`: the rule, `MarkSampler()` by
    default; see `oms_backpack.marks`).

    With `keep_warm` (the default) the connection orders are sent on is opened at once, and
    it and httpx's (cancels, queries) are kept open through quiet spells by a ping after 4 s
    without a request (`BackpackRest.keep_warm`), so that no order or cancel waits for a
    handshake.

    With `nonces_ahead` (the default) requests are signed with nonces made ahead in a worker
    thread (`BackpackRest.keep_nonces`; about 2 µs a signature instead of 20). Turn it off
    where the process may be restored from a snapshot (a virtual machine's, a checkpoint
    tool's): a restored pool would spend its nonces a second time (`oms_backpack.signing`).

    On the way out, within `shutdown_timeout` seconds and shielded from cancellation: open
    orders are cancelled if `cancel_on_shutdown`; then, only when the body exited normally,
    a final pass (`BackpackSession.final_pass`) records fills still in flight.
    """
    perpetual = venue == "backpack_perpetual"
    async with BackpackRest(
        rest_url, credentials, window_ms=window_ms, transport=transport, clock=clock
    ) as rest:
        await rest.sync_clock()
        markets = await rest.markets()
        if symbols is None:
            wanted = [
                m
                for m in markets
                if isinstance(m, MarketInfo) and m.market_type.has_positions == perpetual
            ]
        else:
            wanted = [m for m in markets if isinstance(m, MarketInfo) and m.symbol in symbols]
            missing = sorted(set(symbols) - {m.symbol for m in wanted})
            if missing:
                raise ConfigurationError(f"the venue has no market {', '.join(missing)}")
            perpetual = perpetual or any(m.market_type.has_positions for m in wanted)
        streams = ["account.orderUpdate", *(["account.positionUpdate"] if perpetual else [])]
        engine.record_news(wanted)
        session = BackpackSession(
            engine,
            rest,
            perpetual=perpetual,
            fill_grace=fill_grace,
            fill_attempts=fill_attempts,
            limits=limits,
            mark_source=mark_source,
        )
        sampler = MarkSampler() if marks is None else marks
        stream = BackpackStream(
            ws_url,
            credentials,
            private_streams=streams,
            public_streams=[f"markPrice.{m.symbol}" for m in wanted],
            window_ms=window_ms,
            heartbeat_interval=heartbeat_interval,
            # Sign subscriptions with the venue's clock, as REST requests are.
            clock=rest.clock,
        )
        session.stream = stream
        session.marks = sampler

        def record(event: Event) -> None:
            # Marks arrive about once a second per market: only a sample is recorded.
            if type(event) is not MarkObserved or sampler.keep(event):
                engine.record(event)

        unsubscribe = engine.subscribe(session.chaser.notice)
        unwatch = engine.subscribe(session.watch_risk)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(engine.run)  # keeps the group commit on time
                await nursery.start(
                    lambda task_status=trio.TASK_STATUS_IGNORED: stream.run(
                        record,
                        on_connect=session.on_connect,
                        before_connect=session.resync_clock,
                        task_status=task_status,
                    )
                )
                nursery.start_soon(session.poll, poll_interval)
                nursery.start_soon(session.chaser.run)
                nursery.start_soon(session.guard)
                if nonces_ahead:
                    nursery.start_soon(rest.keep_nonces)
                if keep_warm:
                    nursery.start_soon(rest.keep_warm)
                clean = False
                try:
                    yield session
                    clean = True
                finally:
                    with trio.move_on_after(shutdown_timeout) as cleanup:
                        cleanup.shield = True
                        if cancel_on_shutdown:
                            await session.cancel_open_orders()
                        if clean:
                            await session.final_pass()
                    if cleanup.cancelled_caught:
                        _log.warning(
                            "shutdown work did not finish within %s s; the next session's "
                            "reconciliation covers what is left",
                            shutdown_timeout,
                        )
                    nursery.cancel_scope.cancel()
        finally:
            unwatch()
            unsubscribe()
            session.reconciler.close()
