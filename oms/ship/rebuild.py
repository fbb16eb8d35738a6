"""The consumer: an account's state rebuilt from its JetStream subject, with the same reducer.

The stream holds each event's log line as written, so the state is the one `python -m
oms.replay` gives from the file, and so is its hash. The events must run 1, 2, 3, ... from the
first message on the subject; anything else is a `StreamReadError` that says where.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import trio

from oms.core.errors import ExternalError
from oms.core.events import Event
from oms.core.reducer import Fold
from oms.core.serialization import LogFormatError, line_decoder
from oms.core.state import DEFAULT_RETAIN_FINISHED, State
from oms.log import Seconds, _one_line
from oms.ship.client import ConnectionLost, NatsAddress, ServerError, open_connection
from oms.ship.jetstream import JetStreamError, find_stream, read_subject
from oms.ship.protocol import ProtocolError
from oms.ship.shipper import FORMAT_HEADER

__all__ = ["StreamReadError", "read_events", "rebuild"]


class StreamReadError(ExternalError):
    """The stream does not hold an account's events as the shipper writes them."""


async def read_events(
    address: NatsAddress,
    subject: str,
    *,
    stream: str | None = None,
    follow: bool = False,
    retry: Seconds = 1.0,
) -> AsyncGenerator[tuple[int, Event], None]:
    """`(seq, event)` for every event on `subject`, oldest first, checked to run 1, 2, 3...
    (`stream`: the stream holding it; by default the one the server names for it).

    Without `follow` it ends with the last event the stream held when it started, and a
    failure is raised. With `follow` it goes on with each new event as it is stored, for
    ever; when the connection breaks or the server is away it tries again every `retry`
    seconds and resumes after the last event it yielded. Use it with `aclosing`.
    """
    where = f"{address}/{subject}"
    expected, after = 1, 0
    while True:
        try:
            async with open_connection(address, name="oms-rebuild") as connection:
                if stream is None:
                    stream = await find_stream(connection, subject)
                messages = read_subject(connection, stream, subject, after=after, follow=follow)
                async with aclosing(messages):
                    async for stored in messages:
                        try:
                            version = int(stored.headers.get(FORMAT_HEADER, "2"))
                            seq, event = line_decoder(version)(stored.data)
                        except (LogFormatError, ValueError) as exc:
                            raise StreamReadError(
                                f"{where}: stream seq {stored.seq}: {_one_line(str(exc))}"
                            ) from None
                        if seq != expected:
                            raise StreamReadError(
                                f"{where}: stream seq {stored.seq}: expected event {expected}, "
                                f"found {seq}"
                            )
                        expected, after = expected + 1, stored.seq
                        yield seq, event
            return
        except (ConnectionLost, ServerError, ProtocolError, JetStreamError):
            if not follow:
                raise
        await trio.sleep(retry)


async def rebuild(
    url: str,
    *,
    subject: str | None = None,
    stream: str | None = None,
    until: int | None = None,
    retain_finished: int = DEFAULT_RETAIN_FINISHED,
) -> State:
    """The state the events on `subject` imply (up to and including seq `until`). `url` is
    `nats://HOST:PORT/SUBJECT`, or give `subject` apart. Raises `StreamReadError`,
    `oms.ship.jetstream.JetStreamError` or `oms.ship.client.ConnectionLost` (the caller
    owns the timeout)."""
    address = NatsAddress.parse(url)
    subject = subject or address.path
    if not subject:
        raise StreamReadError(f"{address}: name the subject (nats://HOST:PORT/SUBJECT)")
    fold = Fold(State(retain_finished=retain_finished))
    async with aclosing(read_events(address, subject, stream=stream)) as events:
        async for seq, event in events:
            if until is not None and seq > until:
                break
            fold.step(event)
    return fold.freeze()
