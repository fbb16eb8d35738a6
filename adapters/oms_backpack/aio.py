"""The asyncio face of a Backpack session: the same session, from inside `asyncio.run`.

    import asyncio
    from oms import Engine, OrderType, Side
    from oms_backpack import load_credentials
    from oms_backpack.aio import open_session

    async def main() -> None:
        engine = Engine.open("session.jsonl")
        try:
            async with open_session(engine, load_credentials(), venue="backpack") as session:
                order = await session.submit("SOL_USDC", Side.BID, OrderType.LIMIT,
                                             quantity=Decimal("1"), price=Decimal("100"))
                await session.wait_done(client_id=order.client_id)
        finally:
            engine.close()

    asyncio.run(main())

How: the engine and the session are trio code, and this module runs them unchanged as a
trio *guest* on the running asyncio loop (`trio.lowlevel.start_guest_run`): trio's scheduler
takes turns on asyncio's loop, in the same thread, so there is one implementation of the
session, its reconnects and its shutdown, and no thread hand-off on the order path. Each call
of `AsyncioSession` starts a trio task for it and awaits its outcome as an asyncio future.

Semantics, as for `oms_backpack.open_backpack_session`:
- leaving the block normally runs the session's shutdown (a final reconciliation pass, and
  `cancel_on_shutdown` if asked);
- cancelling the asyncio task inside the block (or any exception leaving it) shuts the
  session down as an exception leaving the trio block would: open orders are cancelled when
  `cancel_on_shutdown` is set, and the cancellation or exception then goes on;
- cancelling one awaited call cancels its trio task;
- an error on the trio side (the log cannot be written, the stream's `record` raised) fails
  every pending call and interrupts the block: it reaches the asyncio caller as that one
  exception (unwrapped from trio's exception groups), not as a hang.

Read `session.state` or `session.engine.state` freely (the state is immutable). Record
events and call trio code only through the session's methods or `session.run`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from decimal import Decimal
from typing import Any, TypeVar

import outcome
import trio

from oms.core.state import Order, State
from oms.core.values import Exit, OrderType, Side, TimeInForce
from oms.engine import Engine, Listener
from oms_backpack.session import BackpackSession, open_backpack_session
from oms_backpack.signing import Credentials

__all__ = ["AsyncioSession", "SessionFailed", "open_session"]

T = TypeVar("T")


class SessionFailed(RuntimeError):
    """The session's trio side ended while a call was waiting on it (for a call made after
    it had closed, or when it ended without an error of its own)."""


class _BodyLeft(Exception):
    """Raised inside the trio block when the asyncio block was left by an exception, so that
    the session shuts down as after a failed body (no final pass)."""


def _one(exc: BaseException) -> BaseException:
    """The exception inside a chain of single-member exception groups (trio's nurseries
    wrap what they raise); a group of several stays a group."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class AsyncioSession:
    """`BackpackSession`'s order API, awaitable from asyncio. Made by `open_session`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._session: BackpackSession | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._calls: trio.Nursery | None = None
        self._closing: trio.Event | None = None
        self._pending: dict[asyncio.Future[Any], trio.CancelScope | None] = {}
        self._failure: BaseException | None = None
        self._ended = False

    # --- reading -----------------------------------------------------------------------

    @property
    def session(self) -> BackpackSession:
        """The trio session itself (for reading its counters; call it through `run`)."""
        if self._session is None:
            raise SessionFailed("the session is not open")
        return self._session

    @property
    def engine(self) -> Engine:
        return self.session.engine

    @property
    def state(self) -> State:
        return self.session.engine.state

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(event, new_state)` after every event (on the loop's thread, as
        the engine records it); returns an unsubscribe. See `Engine.subscribe`."""
        return self.engine.subscribe(listener)

    # --- calls -------------------------------------------------------------------------

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `await fn(*args)` as a trio task beside the session and return its result;
        cancelling this call cancels that task."""
        if self._ended or self._token is None:
            raise SessionFailed("the session has closed") from self._failure
        future: asyncio.Future[T] = self._loop.create_future()
        self._pending[future] = None
        self._token.run_sync_soon(self._start, future, fn, args)
        try:
            return await future
        except asyncio.CancelledError:
            scope = self._pending.get(future)
            if scope is not None and not self._ended:
                self._token.run_sync_soon(scope.cancel)
            raise
        finally:
            self._pending.pop(future, None)

    def _start(
        self, future: asyncio.Future[Any], fn: Callable[..., Awaitable[Any]], args: Any
    ) -> None:
        if self._calls is None or future.done():
            if not future.done():
                future.set_exception(SessionFailed("the session has closed"))
            return
        self._calls.start_soon(self._call, future, fn, args)

    async def _call(
        self, future: asyncio.Future[Any], fn: Callable[..., Awaitable[Any]], args: Any
    ) -> None:
        with trio.CancelScope() as scope:
            if future in self._pending:
                self._pending[future] = scope
            try:
                result = await fn(*args)
            except trio.Cancelled:
                if not future.done():
                    future.set_exception(SessionFailed("the session closed during the call"))
                raise
            except Exception as exc:
                # The caller's error (a refused order, a venue error): it goes to the caller
                # and does not touch the session.
                if not future.done():
                    future.set_exception(exc)
                return
            if not future.done():
                future.set_result(result)

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
        """`BackpackSession.submit`."""

        async def submit() -> Order:
            return await self.session.submit(
                symbol,
                side,
                order_type,
                quantity=quantity,
                price=price,
                quote_quantity=quote_quantity,
                time_in_force=time_in_force,
                reduce_only=reduce_only,
                client_id=client_id,
                trigger_price=trigger_price,
                trigger_quantity=trigger_quantity,
                trigger_by=trigger_by,
                stop_loss=stop_loss,
                take_profit=take_profit,
            )

        return await self.run(submit)

    async def cancel(
        self, symbol: str, *, client_id: int | None = None, venue_id: str | None = None
    ) -> Order | None:
        """`BackpackSession.cancel`."""

        async def cancel() -> Order | None:
            return await self.session.cancel(symbol, client_id=client_id, venue_id=venue_id)

        return await self.run(cancel)

    async def cancel_all(self, symbol: str) -> bool:
        """`BackpackSession.cancel_all`."""
        return await self.run(self.session.cancel_all, symbol)

    async def trip(self, reason: str, *, by: str = "program") -> None:
        """`BackpackSession.trip`: trip the kill switch and cancel every open order."""

        async def trip() -> None:
            await self.session.trip(reason, by=by)

        await self.run(trip)

    async def reset_kill_switch(self, reason: str) -> bool:
        """`BackpackSession.reset_kill_switch`."""

        async def reset() -> bool:
            return self.session.reset_kill_switch(reason)

        return await self.run(reset)

    async def reconcile(self) -> int:
        """One reconciliation pass (`BackpackSession.reconcile`)."""
        return await self.run(self.session.reconcile)

    async def wait_until(self, predicate: Callable[[State], bool]) -> State:
        """`Engine.wait_until`: until `predicate` holds for the state (no polling)."""
        return await self.run(self.engine.wait_until, predicate)

    async def wait_acknowledged(
        self, *, client_id: int | None = None, venue_id: str | None = None
    ) -> Order:
        async def wait() -> Order:
            return await self.engine.wait_acknowledged(client_id=client_id, venue_id=venue_id)

        return await self.run(wait)

    async def wait_done(
        self, *, client_id: int | None = None, venue_id: str | None = None
    ) -> Order:
        async def wait() -> Order:
            return await self.engine.wait_done(client_id=client_id, venue_id=venue_id)

        return await self.run(wait)

    # --- the trio side -----------------------------------------------------------------

    def _fail_pending(self, error: BaseException) -> None:
        for future in list(self._pending):
            if not future.done():
                future.set_exception(error)


@asynccontextmanager
async def open_session(
    engine: Engine, credentials: Credentials, **options: Any
) -> AsyncIterator[AsyncioSession]:
    """`open_backpack_session(engine, credentials, **options)` for asyncio programs: connect,
    load markets, subscribe, reconcile; yield the session; shut down as the trio one does.
    Must be entered from a task of the running asyncio loop."""
    loop = asyncio.get_running_loop()
    host = asyncio.current_task()
    face = AsyncioSession(loop)
    ready: asyncio.Future[None] = loop.create_future()
    finished: asyncio.Future[None] = loop.create_future()
    interrupted = False
    left_by: list[BaseException] = []

    async def trio_main() -> None:
        face._token = trio.lowlevel.current_trio_token()
        face._closing = trio.Event()
        try:
            async with open_backpack_session(engine, credentials, **options) as session:
                face._session = session
                async with trio.open_nursery() as calls:
                    face._calls = calls
                    if not ready.done():
                        ready.set_result(None)
                    await face._closing.wait()
                    calls.cancel_scope.cancel()
                face._calls = None
                if left_by:
                    raise _BodyLeft
        except* _BodyLeft:
            pass  # the asyncio block's own exception goes on there

    def done(result: outcome.Outcome[None]) -> None:
        nonlocal interrupted
        face._ended = True
        error = result.error if isinstance(result, outcome.Error) else None
        if error is not None:
            error = _one(error)
            face._failure = error
            face._fail_pending(error)
            if not ready.done():
                ready.set_exception(error)
            elif host is not None and not host.done() and not finished.done():
                # The block is still running: interrupt it; `__aexit__` raises the error.
                interrupted = True
                host.cancel()
        else:
            face._fail_pending(SessionFailed("the session has closed"))
            if not ready.done():
                ready.set_exception(SessionFailed("the session closed before it opened"))
        if not finished.done():
            finished.set_result(None)

    trio.lowlevel.start_guest_run(
        trio_main,
        run_sync_soon_threadsafe=loop.call_soon_threadsafe,
        run_sync_soon_not_threadsafe=loop.call_soon,
        done_callback=done,
        host_uses_signal_set_wakeup_fd=True,
    )
    try:
        await asyncio.shield(ready)
    except asyncio.CancelledError:
        _close(face, left=True, left_by=left_by)
        await asyncio.shield(finished)
        raise
    try:
        yield face
    except BaseException as exc:
        left_by.append(exc)
        _close(face, left=True, left_by=left_by)
        with suppress(asyncio.CancelledError):
            await asyncio.shield(finished)
        if interrupted and face._failure is not None:
            if host is not None:
                host.uncancel()
            raise face._failure from None
        raise
    _close(face, left=False, left_by=left_by)
    await asyncio.shield(finished)
    if face._failure is not None:
        raise face._failure


def _close(face: AsyncioSession, *, left: bool, left_by: list[BaseException]) -> None:
    """Ask the trio side to leave the session's block (as after an exception if `left`)."""
    if face._ended or face._token is None:
        return
    if left and not left_by:
        left_by.append(asyncio.CancelledError())
    closing = face._closing
    if closing is not None:
        face._token.run_sync_soon(closing.set)
