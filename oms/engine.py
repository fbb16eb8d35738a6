"""The engine: the single writer that logs each event, then applies it.

Log order is apply order, so `replay(log)` gives exactly the live state. Every producer (the
WebSocket reader, reconciliation, the answers to commands, the embedding program's own
commands) records through the engine's synchronous entries, `record` (a fact to record),
`record_news` (facts that are recorded only if they are news to the state) and
`record_pending` (a command logged before it is sent, applied once its bytes are on their way).
Under trio there is one thread, and no entry awaits, so no two records interleave: the engine
is the single writer without a task of its own. `run` keeps a group-commit log synced on time (and
can drain a memory channel for programs that prefer to hand events over that way).

Snapshots (docs/snapshots.md): `open` resumes from the newest valid snapshot beside the log
and reads only the events after it. Writing one takes time (encoding the state, fsyncs), so
`record` never does: it only notes that one is due, every `SnapshotPolicy.every` events.
`run` then writes it from a worker thread (the state is immutable, so the writer goes on
meanwhile); a program that does not run `run` calls `write_snapshot` when `snapshot_due`
says so, and `close` writes one that is due.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import trio

from oms.core.errors import OmsError
from oms.core.events import Event
from oms.core.reducer import apply, is_news
from oms.core.replay_fold import ReplayFold
from oms.core.serialization import LogFormatError, scrub
from oms.core.state import DEFAULT_RETAIN_FINISHED, Order, State
from oms.core.values import OrderStatus
from oms.log import EventLog, Fsync, LogReadError, TornTail, _one_line
from oms.snapshot import (
    DEFAULT_KEEP,
    IgnoredSnapshot,
    SnapshotPolicy,
    find_snapshot,
    remove_files,
    stray_files,
    write_snapshot,
)

__all__ = ["Engine", "EngineFailed", "IgnoredSnapshot", "SnapshotPolicy"]

Listener = Callable[[Event, State], None]
_log = logging.getLogger(__name__)
_snapshot_log = logging.getLogger("oms.snapshot")
_NEVER = sys.maxsize  # no snapshot due at any seq
_DEFAULT_SNAPSHOTS = SnapshotPolicy()


class EngineFailed(OmsError, RuntimeError):
    """An event is in the log, but applying it raised: a bug, since the reducer is total on
    every input its tests give it. Only an event logged ahead of its apply can get there
    (`Engine.record_pending`: `record` applies first and logs nothing that fails). The state
    no longer follows the log, so the engine records nothing more: every record raises this.
    The log holds everything recorded; a version with the bug fixed replays it."""


class Engine:
    """Holds the state and (optionally) the log it is recorded in.

    `listener_errors` counts the exceptions raised by listeners (see `subscribe`);
    `last_listener_error` is the most recent one, with its traceback.

    Snapshots (set by `open`): `snapshots` is the policy (None: none read or written);
    `resumed_from` the snapshot the state was resumed from (None: the whole log was read);
    `replayed_at_open` the events read from the log at open (after that snapshot);
    `snapshot_report` the snapshots passed over at open, each with the reason;
    `last_snapshot` the newest written; `snapshot_errors` and `last_snapshot_error` count and
    keep the failures to write one (a failure is logged and the engine goes on).

    `failed` is the `EngineFailed` once an event logged ahead of its apply could not be
    applied (see `record_pending`), else None. The engine is used from one thread (trio's);
    only `state` may be read from another.
    """

    def __init__(self, log: EventLog | None = None, state: State | None = None) -> None:
        self.log = log
        self._state = state if state is not None else State()
        if log is not None and log.last_seq != self._state.last_seq:
            raise ValueError(
                f"log {log.path} ends at seq {log.last_seq} but the state is at "
                f"seq {self._state.last_seq}"
            )
        # An event logged by `record_pending` and not yet applied, and the thread that
        # logged it (the only one that may apply it).
        self._pending: Event | None = None
        self._pending_thread = 0
        self.failed: EngineFailed | None = None
        self._listeners: list[Listener] = []
        self._unsynced = trio.Event()  # set when the log holds events not yet synced
        self._waiters: list[_Waiter] = []
        self.listener_errors = 0
        self.last_listener_error: Exception | None = None
        self.snapshots: SnapshotPolicy | None = None
        self.resumed_from: Path | None = None
        self.replayed_at_open = 0
        self.snapshot_report: list[IgnoredSnapshot] = []
        self.last_snapshot: Path | None = None
        self.snapshot_errors = 0
        self.last_snapshot_error: Exception | None = None
        self._snapshot_seq = 0  # the seq of the newest snapshot (resumed from or written)
        self._snapshot_next = _NEVER  # the seq at which `record` marks one due
        self._snapshot_wanted = trio.Event()  # set when one is due: `run` writes it
        self._snapshot_writing = False

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        fsync: Fsync | None = None,
        retain_finished: int = DEFAULT_RETAIN_FINISHED,
        snapshots: SnapshotPolicy | None = _DEFAULT_SNAPSHOTS,
    ) -> Engine:
        """Open or create a recorded session: replay what is in it, then append to it.

        Resumes from the newest valid snapshot in `PATH.snapshots/` and reads only the
        events after it; a snapshot that is not valid for this log is passed over (see
        `snapshot_report`), and without one the whole log is read. The state is the same
        either way. `snapshots` says when to write them (default: every 100,000 events,
        keeping 2); None reads and writes none. A bad log raises `LogReadError` as before;
        a bad snapshot never raises.
        """
        path = Path(path)
        resume, ignored = (
            (None, [])
            if snapshots is None
            else find_snapshot(path, retain_finished=retain_finished)
        )
        for item in ignored:
            _snapshot_log.warning("%s", item)
        log: EventLog | None = None
        state = State(retain_finished=retain_finished)
        if resume is not None:
            draft = ReplayFold(resume.state)
            try:
                log = EventLog.open(
                    path, fsync=fsync, on_event=draft.step, start=resume.mark, fold_only=True
                )
            except (LogReadError, OSError):
                # A bad line after the snapshot, or a log that cannot be read or opened for
                # writing: reading all of it fails the same way.
                raise
            except Exception as exc:
                # It passed every check, yet the log does not go on from it (changed since
                # the check), or its state trips the reducer: trust none of it.
                reason = f"resuming from it failed: {type(exc).__name__}: {exc}"
                item = IgnoredSnapshot(resume.path, _one_line(reason))
                ignored.append(item)
                _snapshot_log.warning("%s; replaying the full log", item)
                resume = None
            else:
                state = draft.freeze()
        if log is None:
            draft = ReplayFold(state)
            try:
                log = EventLog.open(path, fsync=fsync, on_event=draft.step, fold_only=True)
            except (ArithmeticError, ValueError) as exc:
                if draft.seq == state.last_seq:
                    raise  # not from the reducer
                # A line the reducer cannot apply (its checksum matches, so it was written
                # on purpose with a figure out of range): the log's fault, said as such.
                raise LogReadError(
                    path, draft.seq + 1, f"cannot apply seq {draft.seq}: {type(exc).__name__}"
                ) from None
            state = draft.freeze()
        engine = cls(log, state)
        engine.snapshot_report = ignored
        if resume is not None:
            engine.resumed_from = resume.path
            engine._snapshot_seq = resume.mark.seq
        engine.replayed_at_open = state.last_seq - engine._snapshot_seq
        if snapshots is not None:
            engine._start_snapshots(snapshots, ignored)
        return engine

    def _start_snapshots(self, policy: SnapshotPolicy, ignored: list[IgnoredSnapshot]) -> None:
        self.snapshots = policy
        if policy.every == 0 or self.log is None:
            return
        # The writer keeps the directory tidy: a snapshot passed over can never serve this log
        # (it only grows from here), and a temporary file is a write a crash cut short.
        remove_files([item.path for item in ignored] + stray_files(self.log.path))
        self._schedule_snapshot()

    def _schedule_snapshot(self) -> None:
        """Mark a snapshot due now, or note the seq at which `record` should."""
        policy = self.snapshots
        if policy is None or policy.every == 0:
            return
        self._snapshot_next = self._snapshot_seq + policy.every
        if self.state.last_seq >= self._snapshot_next:
            self._snapshot_next = _NEVER
            self._snapshot_wanted.set()

    @property
    def snapshot_due(self) -> bool:
        """At least `snapshots.every` events were recorded since the newest snapshot."""
        policy = self.snapshots
        return (
            policy is not None
            and policy.every > 0
            and self.log is not None
            and not self.log.closed
            and self.state.last_seq - self._snapshot_seq >= policy.every
        )

    def write_snapshot(self) -> Path | None:
        """Write a snapshot of the state now, in the calling thread; returns its path (None
        if there is nothing to cover: no log, no event, or a snapshot of this seq already;
        or if the state lags the log: called from another thread while an event logged by
        `record_pending` waits to be applied, or after `failed`).

        It syncs the log first (a snapshot never names a position the disk may not hold),
        then encodes the state and writes the file atomically: tens of milliseconds to about
        a second for a large state. For a program that does not run `Engine.run`; `run`
        writes due snapshots from a worker thread itself. Raises what writing raises.
        """
        log = self.log
        state = self.state
        mark = None if log is None else log.mark()
        if log is None or mark is None or mark.seq == self._snapshot_seq:
            return None
        if mark.seq != state.last_seq:
            # Called from another thread while an event is logged and not yet applied.
            return None
        log.sync()
        keep = DEFAULT_KEEP if self.snapshots is None else self.snapshots.keep
        path = write_snapshot(log.path, state, mark, keep=keep)
        self._snapshot_written(path, mark.seq)
        return path

    def _snapshot_written(self, path: Path, seq: int) -> None:
        self.last_snapshot = path
        self._snapshot_seq = max(self._snapshot_seq, seq)
        self._schedule_snapshot()

    def _snapshot_failed(self, exc: Exception) -> None:
        self.snapshot_errors += 1
        self.last_snapshot_error = exc
        _snapshot_log.warning(
            "writing a snapshot of %s failed (%s: %s); the engine goes on, and tries again "
            "after another %s events",
            None if self.log is None else self.log.path,
            type(exc).__name__,
            exc,
            None if self.snapshots is None else self.snapshots.every,
        )
        if self.snapshots is not None and self.snapshots.every > 0:
            # Not at the next event: a full disk would be hammered with large writes.
            self._snapshot_next = self.state.last_seq + self.snapshots.every

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

    @property
    def state(self) -> State:
        """The state with every recorded event applied (an immutable object).

        An event logged by `record_pending` and not applied yet is applied first (see
        `settle`), on the thread that logged it. Another thread (a metrics scraper, say)
        reads the state as it was before that event: consistent, one event behind. Reading
        never raises: after a failure to apply (`failed`), it is the last state applied.
        """
        if self._pending is not None and threading.get_ident() == self._pending_thread:
            # A failure is logged, kept in `failed` and raised by every record from now on.
            with contextlib.suppress(EngineFailed):
                self.settle()
        return self._state

    def record(self, event: Event) -> State:
        """Append `event` to the log (durable per the fsync policy), then apply it."""
        if self._pending is not None or self.failed is not None:
            self._catch_up()
        self._commit(event, apply(self._state, event))
        return self._state

    def record_news(self, events: Iterable[Event]) -> list[Event]:
        """Record each of `events` that is news to the state (`oms.core.reducer.is_news`),
        judged after the ones recorded before it; returns those recorded.

        For facts the engine may have already: reconciliation, a venue's answer to our own
        command. Each event is applied once: the state it was judged by is the one kept.
        """
        if self._pending is not None or self.failed is not None:
            self._catch_up()
        recorded: list[Event] = []
        for event in events:
            after = apply(self._state, event)
            if is_news(self._state, after):
                recorded.append(self._commit(event, after))
        return recorded

    def record_pending(self, event: Event) -> None:
        """Append `event` to the log now; apply it (and call the listeners) at `settle`.

        For a command that must be in the log before it is sent (the write-ahead) but need
        not be applied before its bytes leave: a submit appends its `OrderSubmitted`, sends,
        then settles, so applying the order and the listeners are not in the order's way to
        the venue. The log's order stays the order of application, on every path: every
        other record, and every read of `state` on this thread, settles first. Nothing
        happens between the append and the settle but what the caller does without a
        scheduling point, or what settles first.

        The event is applied after it is logged, where `record` applies before: if applying
        it raised (a bug: the reducer is total on every input its tests give it), the log
        would hold an event the state lacks. The engine then stops recording (`failed`,
        `EngineFailed`) rather than let the state drift from its log.
        """
        if self._pending is not None or self.failed is not None:
            self._catch_up()
        self._pending = self._append(event)
        self._pending_thread = threading.get_ident()

    def settle(self) -> None:
        """Apply the event `record_pending` logged, if any, and call the listeners.

        Raises `EngineFailed` if applying it raises (and from then on, every record does).
        """
        event = self._pending
        if event is None:
            return
        self._pending = None
        try:
            after = apply(self._state, event)
        except Exception as exc:
            seq = self._state.last_seq + 1
            self.failed = EngineFailed(
                f"seq {seq} ({type(event).__name__}) is in the log, but applying it raised "
                f"{type(exc).__name__}: {_one_line(str(exc))}; the state no longer follows "
                "the log, so the engine records nothing more"
            )
            _log.critical("%s", self.failed, exc_info=exc)
            raise self.failed from exc
        self._adopt(event, after)

    def _catch_up(self) -> None:
        """Before a record: apply a pending event; refuse if the engine has failed."""
        self.settle()
        if self.failed is not None:
            raise EngineFailed(str(self.failed)) from self.failed

    def _commit(self, event: Event, after: State) -> Event:
        """Log `event`, then make `after` (the state with it applied) the state."""
        logged = self._append(event)
        if logged is not event:
            after = apply(self._state, logged)
        self._adopt(logged, after)
        return logged

    def _append(self, event: Event) -> Event:
        """Log `event`; returns the event logged (`event`, or its repaired copy)."""
        if self.log is not None:
            try:
                self.log.append(event)
            except LogFormatError:
                # A string that is not valid Unicode (a lone surrogate from a venue's \u
                # escape): log and apply the same repaired event, so replay stays exact.
                event = scrub(event)
                self.log.append(event)
            if self.log.unsynced:
                self._unsynced.set()
        return event

    def _adopt(self, event: Event, after: State) -> None:
        """Make `after` (the state with the logged `event` applied) the state; tell the
        snapshot writer, the waiters and the listeners."""
        self._state = after
        if after.last_seq >= self._snapshot_next:
            self._snapshot_next = _NEVER  # until this one is written
            self._snapshot_wanted.set()
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
            if self.snapshots is not None and self.snapshots.every > 0:
                nursery.start_soon(self._keep_snapshots)
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

    async def _keep_snapshots(self) -> None:
        """Write each snapshot that falls due, from a worker thread."""
        while True:
            await self._snapshot_wanted.wait()
            self._snapshot_wanted = trio.Event()
            log = self.log
            state = self.state  # immutable: the writer goes on while it is encoded
            mark = None if log is None or log.closed else log.mark()
            if log is None or mark is None or not self.snapshot_due:
                continue
            keep = DEFAULT_KEEP if self.snapshots is None else self.snapshots.keep
            self._snapshot_writing = True
            try:
                # The log is fsynced up to the mark before the snapshot is written, in the
                # worker, through a descriptor of its own (the log may be closed meanwhile).
                log.flush()
                fd = os.dup(log.fileno())
                try:
                    path = await trio.to_thread.run_sync(
                        functools.partial(
                            write_snapshot, log.path, state, mark, keep=keep, sync_log_fd=fd
                        )
                    )
                finally:
                    os.close(fd)
            except Exception as exc:
                self._snapshot_failed(exc)
            else:
                self._snapshot_written(path, mark.seq)
            finally:
                self._snapshot_writing = False

    def close(self) -> None:
        """Close the log, writing a snapshot first if one is due, or if at least
        `snapshots.at_close` events came after the newest (a failure to write it is logged
        and counted, and the log is closed all the same)."""
        state = self.state  # with an event `record_pending` logged applied
        if self.log is None:
            return
        policy = self.snapshots
        at_close = (
            policy is not None
            and policy.every > 0
            and policy.at_close > 0
            and state.last_seq - self._snapshot_seq >= policy.at_close
        )
        try:
            if (self.snapshot_due or at_close) and not self._snapshot_writing:
                try:
                    self.write_snapshot()
                except Exception as exc:
                    self._snapshot_failed(exc)
        finally:
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
