"""The engine: the single writer that logs each event, then applies it.

Log order is apply order, so `replay(log)` gives exactly the live state. Every producer
(WebSocket reader, reconciler, the embedding program's commands) hands its events to the one
`Engine`; under trio, send them into a memory channel that one task drains with `run`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import trio

from oms.core.events import Event
from oms.core.reducer import Fold, apply
from oms.core.serialization import LogFormatError, scrub
from oms.core.state import DEFAULT_RETAIN_FINISHED, State
from oms.log import EventLog, Fsync, Seconds, TornTail

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
        if self.log is not None:
            try:
                self.log.append(event)
            except LogFormatError:
                # A string that is not valid Unicode (a lone surrogate from a venue's \u
                # escape): log and apply the same repaired event, so replay stays exact.
                event = scrub(event)
                self.log.append(event)
        self.state = apply(self.state, event)
        for listener in list(self._listeners):
            try:
                listener(event, self.state)
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
                    self.state.last_seq,
                    exc_info=exc,
                )
        return self.state

    async def run(self, events: trio.MemoryReceiveChannel[Event], poll: Seconds = 0.05) -> None:
        """Drain `events` into the log and state until every sender is closed.

        Also drives the group-commit timer, so a quiet stream is still synced on time.
        """
        async with events:
            while True:
                with trio.move_on_after(poll):
                    try:
                        event = await events.receive()
                    except trio.EndOfChannel:
                        break
                    self.record(event)
                if self.log is not None:
                    self.log.poll()
        if self.log is not None:
            self.log.sync()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def _name(listener: Listener) -> str:
    # The qualified name, not the repr: a bound method's repr shows its object, and what
    # that object prints is the program's business, not the log's.
    return str(getattr(listener, "__qualname__", type(listener).__qualname__))
