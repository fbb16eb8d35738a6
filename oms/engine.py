"""The engine: the single writer that logs each event, then applies it.

Log order is apply order, so `replay(log)` gives exactly the live state. Every producer (the
WebSocket reader, reconciliation, the answers to commands, the embedding program's own
commands) records through the engine's two synchronous entries, `record` (a fact to record)
and `record_news` (facts that are recorded only if they are news to the state). Under trio
there is one thread, and neither entry awaits, so no two records interleave: the engine is the
single writer without a task of its own. `run` keeps a group-commit log synced on time (and
can drain a memory channel for programs that prefer to hand events over that way).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

import trio

from oms.core.events import Event
from oms.core.reducer import Fold, apply, is_news
from oms.core.serialization import LogFormatError, scrub
from oms.core.state import DEFAULT_RETAIN_FINISHED, Order, State
from oms.core.values import OrderStatus
from oms.log import EventLog, Fsync, TornTail

__all__ = ["Engine"]

Listener = Callable[[Event, State], None]
_log = logging.getLogger(__name__)


class Engine:
    """Holds the state and (optionally) the log it is recorded in.

    `listener_errors` counts the exceptions raised by listeners (see `subscribe`);
    `last_listener_error` is the most recent one, with its traceback.
    """

    def __init__(self, log: EventLog | None = None, state: State | None = None) -> None:
        self.log = log
        self.state = state if state is not None else State()
        if log is not None and log.last_seq != self.state.last_seq:
            raise ValueError(
                f"log {log.path} ends at seq {log.last_seq} but the state is at "
                f"seq {self.state.last_seq}"
            )
        self._listeners: list[Listener] = []
        self._unsynced = trio.Event()  # set when the log holds events not yet synced
        self._waiters: list[_Waiter] = []
        self.listener_errors = 0
        self.last_listener_error: Exception | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        fsync: Fsync | None = None,
        retain_finished: int = DEFAULT_RETAIN_FINISHED,
    ) -> Engine:
        """Open or create a recorded session: replay what is in it, then append to it."""
        draft = Fold(State(retain_finished=retain_finished))
        log = EventLog.open(path, fsync=fsync, on_event=draft.step)
        return cls(log, draft.freeze())

    @property
    def torn(self) -> TornTail | None:
        """A torn last line dropped when the log was opened, if any."""
        return None if self.log is None else self.log.torn

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(event, new_state)` after every event; returns an unsubscribe.

        Listeners run after the event is logged and applied, in the order they subscribed.
        A listener that raises (an `Exception`) does not undo or stop anything: the error
        and its traceback are logged (logger `oms.engine`, level ERROR), counted in
        `listener_errors` and kept in `last_listener_error`; the other listeners are still
        called, and the engine goes on recording. A bug in the embedding program's callback
        must not end the recording of a session.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def record(self, event: Event) -> State:
        """Append `event` to the log (durable per the fsync policy), then apply it."""
        self._commit(event, apply(self.state, event))
        return self.state

    def record_news(self, events: Iterable[Event]) -> list[Event]:
        """Record each of `events` that is news to the state (`oms.core.reducer.is_news`),
        judged after the ones recorded before it; returns those recorded.

        For facts the engine may have already: reconciliation, a venue's answer to our own
        command. Each event is applied once: the state it was judged by is the one kept.
        """
        recorded: list[Event] = []
        for event in events:
            after = apply(self.state, event)
            if is_news(self.state, after):
                recorded.append(self._commit(event, after))
        return recorded

    def _commit(self, event: Event, after: State) -> Event:
        """Log `event`, then make `after` (the state with it applied) the state."""
        if self.log is not None:
            try:
                self.log.append(event)
            except LogFormatError:
                # A string that is not valid Unicode (a lone surrogate from a venue's \u
                # escape): log and apply the same repaired event, so replay stays exact.
                event = scrub(event)
                after = apply(self.state, event)
                self.log.append(event)
            if self.log.unsynced:
                self._unsynced.set()
        self.state = after
        if self._waiters:
            self._wake(after)
        for listener in list(self._listeners):
            try:
                listener(event, after)
            except Exception as exc:
                # The event is already in the log and the state: isolate the listener's
                # failure rather than let it stop the writer (and with it the session).
                self.listener_errors += 1
                self.last_listener_error = exc
                _log.error(
                    "listener %s raised on %s (seq %d); the event is recorded and the "
                    "engine goes on",
                    _name(listener),
                    type(event).__name__,
                    after.last_seq,
                    exc_info=exc,
                )
        return event

    # --- waiting for outcomes (the caller owns the timeout: wrap in trio.fail_after) -------

    async def wait_until(self, predicate: Callable[[State], bool]) -> State:
        """Wait until `predicate(state)` holds; returns that state.

        Checked now and after every event recorded, so no state in between is missed. An
        exception from `predicate` is raised here, in the waiter, never in the writer.
        """
        if predicate(self.state):
            return self.state
        waiter = _Waiter(predicate)
        self._waiters.append(waiter)
        try:
            await waiter.done.wait()
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        if waiter.error is not None:
            raise waiter.error
        assert waiter.state is not None
        return waiter.state

    async def wait_acknowledged(
        self, *, client_id: int | None = None, venue_id: str | None = None
    ) -> Order:
        """Wait until the venue has answered the order: it has left PendingNew and InDoubt
        (accepted, filled, or refused: check `status`)."""
        return await self._wait_order(client_id, venue_id, lambda o: o.status not in _UNANSWERED)

    async def wait_fills_counted(
        self, *, client_id: int | None = None, venue_id: str | None = None
    ) -> Order:
        """Wait until the fills counted reach the quantity the venue reports executed (no
        longer `awaiting_fills`), once the venue has reported one."""
        return await self._wait_order(
            client_id,
            venue_id,
            lambda o: o.venue_executed is not None and not o.awaiting_fills,
        )

    async def wait_done(
        self, *, client_id: int | None = None, venue_id: str | None = None
    ) -> Order:
        """Wait until the order is finished (Filled, Cancelled, Expired or Rejected) with
        every fill the venue reported counted."""
        return await self._wait_order(
            client_id, venue_id, lambda o: o.status.is_terminal and not o.awaiting_fills
        )

    async def _wait_order(
        self, client_id: int | None, venue_id: str | None, done: Callable[[Order], bool]
    ) -> Order:
        if client_id is None and venue_id is None:
            raise ValueError("name the order: client_id or venue_id")

        def holds(state: State) -> bool:
            order = state.order(client_id=client_id, venue_id=venue_id)
            return order is not None and done(order)

        state = await self.wait_until(holds)
        order = state.order(client_id=client_id, venue_id=venue_id)
        assert order is not None
        return order

    def _wake(self, state: State) -> None:
        for waiter in list(self._waiters):
            try:
                met = waiter.predicate(state)
            except Exception as exc:
                waiter.error = exc
                met = True
            if met:
                waiter.state = state
                self._waiters.remove(waiter)
                waiter.done.set()

    async def run(self, events: trio.MemoryReceiveChannel[Event] | None = None) -> None:
        """Keep the log's group commit on time until cancelled; with `events`, also record
        what arrives on that channel, and return once every sender has closed it.

        A group commit syncs on an append that finds the oldest waiting event due; when the
        stream goes quiet, this task syncs it `max_delay` after it was appended. It sleeps
        until then: no periodic wake-up.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_synced)
            if events is not None:
                async with events:
                    async for event in events:
                        self.record(event)
                nursery.cancel_scope.cancel()
        if self.log is not None:
            self.log.sync()

    async def _keep_synced(self) -> None:
        while True:
            await self._unsynced.wait()
            self._unsynced = trio.Event()
            if self.log is None:
                continue
            await trio.sleep(self.log.fsync.max_delay)
            self.log.sync()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


_UNANSWERED = frozenset({OrderStatus.PENDING_NEW, OrderStatus.IN_DOUBT})


class _Waiter:
    def __init__(self, predicate: Callable[[State], bool]) -> None:
        self.predicate = predicate
        self.done = trio.Event()
        self.state: State | None = None
        self.error: Exception | None = None


def _name(listener: Listener) -> str:
    # The qualified name, not the repr: a bound method's repr shows its object, and what
    # that object prints is the program's business, not the log's.
    return str(getattr(listener, "__qualname__", type(listener).__qualname__))
