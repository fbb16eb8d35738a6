"""A small NATS client for trio: one connection, driven by its caller.

There is no background task. `request` writes a message and reads frames until its reply
arrives, answering the server's `PING`s on the way; `next_for` reads the messages to a request
that has several (a JetStream pull). So the connection needs no nursery, a failure surfaces
in the call that meets it (as `ConnectionLost` or `ServerError`), and the caller owns every
timeout (`trio.fail_after` around the call). A connection that failed, or whose call was
cancelled half-way, is not used again: close it and open another.

Why a client of our own rather than the maintained one (an asyncio library): see
docs/nats.md, "Why a small trio client".
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs
import trio

from oms import __version__
from oms.core.errors import ConfigurationError, ExternalError
from oms.ship.protocol import (
    PING,
    PONG,
    Err,
    Frame,
    Info,
    Msg,
    Parser,
    Ping,
    Pong,
    ProtocolError,
    connect_frame,
    pub_frame,
    sub_frame,
    unsub_frame,
)

__all__ = [
    "ConnectionLost",
    "NatsAddress",
    "NatsConnection",
    "ServerError",
    "connect",
    "open_connection",
]

DEFAULT_PORT = 4222
_INBOX_SID = 1


class ConnectionLost(ExternalError):
    """The server could not be reached, or the connection to it broke."""


class ServerError(ExternalError):
    """The server refused something with `-ERR` (it closes the connection after most)."""


@attrs.frozen(kw_only=True)
class NatsAddress:
    """Where a server is: from `nats://[user:password@]host[:port][/path]`. The password
    never appears in `str()` or `repr()`; `path` is what follows the address (a subject)."""

    host: str
    port: int = DEFAULT_PORT
    user: str | None = attrs.field(default=None, repr=False)
    password: str | None = attrs.field(default=None, repr=False)
    path: str = ""

    @classmethod
    def parse(cls, url: str) -> NatsAddress:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigurationError(f"not a NATS address: {exc}") from None
        if parts.scheme != "nats" or not parts.hostname:
            raise ConfigurationError(
                "a NATS address looks like nats://HOST[:PORT][/SUBJECT] (no TLS: tls:// is not "
                "supported)"
            )
        return cls(
            host=parts.hostname,
            port=DEFAULT_PORT if port is None else port,
            user=None if parts.username is None else unquote(parts.username),
            password=None if parts.password is None else unquote(parts.password),
            path=unquote(parts.path.lstrip("/")),
        )

    def __str__(self) -> str:
        return f"nats://{self.host}:{self.port}"


@attrs.define(eq=False)
class NatsConnection:
    """One open connection (see the module's docstring). Use `open_connection`."""

    stream: trio.SocketStream
    info: dict[str, Any]
    address: NatsAddress
    _parser: Parser
    _frames: list[Frame] = attrs.field(factory=list)
    _inbox: str = attrs.field(factory=lambda: "_INBOX." + secrets.token_hex(11))
    _next_token: int = 0
    _next_sid: int = _INBOX_SID
    broken: bool = False

    def new_inbox(self) -> str:
        """A reply subject of this connection's own, never used before."""
        self._next_token += 1
        return f"{self._inbox}.{self._next_token}"

    async def send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.broken = True
            raise ConnectionLost(f"{self.address}: the connection broke: {exc}") from None

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        await self.send(pub_frame(subject, payload, reply=reply, headers=headers))

    async def next_message(self) -> Msg:
        """The next message delivered to this connection (answering `PING`s meanwhile)."""
        while True:
            while self._frames:
                frame = self._frames.pop(0)
                if isinstance(frame, Msg):
                    return frame
                if isinstance(frame, Ping):
                    await self.send(PONG)
                elif isinstance(frame, Err):
                    self.broken = True
                    raise ServerError(f"{self.address}: the server refused: {frame.text}")
            await self._receive()

    async def _receive(self) -> None:
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.broken = True
            raise ConnectionLost(f"{self.address}: the connection broke: {exc}") from None
        if not data:
            self.broken = True
            raise ConnectionLost(f"{self.address}: the server closed the connection")
        try:
            self._frames.extend(self._parser.feed(data))
        except ProtocolError as exc:
            self.broken = True
            raise ProtocolError(f"{self.address}: {exc}") from None

    async def request(
        self, subject: str, payload: bytes, *, headers: Mapping[str, str] | None = None
    ) -> Msg:
        """Publish with a reply subject and return the reply (a status message too: a 503
        says nobody listens on `subject`). Messages for earlier replies are dropped."""
        inbox = self.new_inbox()
        await self.publish(subject, payload, reply=inbox, headers=headers)
        while True:
            message = await self.next_message()
            if message.subject == inbox:
                return message

    async def subscribe(self, subject: str) -> int:
        """Subscribe to `subject`; returns the subscription's id for `next_for`."""
        self._next_sid += 1
        await self.send(sub_frame(subject, self._next_sid))
        return self._next_sid

    async def unsubscribe(self, sid: int) -> None:
        await self.send(unsub_frame(sid))

    async def next_for(self, sid: int) -> Msg:
        """The next message delivered to subscription `sid` (a JetStream pull's deliveries
        keep their own subjects, so they are told apart by subscription); others are
        dropped."""
        while True:
            message = await self.next_message()
            if message.sid == sid:
                return message

    async def ping(self) -> None:
        """A round trip to the server: proves the connection is alive."""
        await self.send(PING)
        while True:
            while self._frames:
                frame = self._frames.pop(0)
                if isinstance(frame, Pong):
                    return
                if isinstance(frame, Ping):
                    await self.send(PONG)
                elif isinstance(frame, Err):
                    self.broken = True
                    raise ServerError(f"{self.address}: the server refused: {frame.text}")
                # a stray message (a late reply) is dropped
            await self._receive()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.stream.aclose()


async def connect(address: NatsAddress | str, *, name: str = "oms") -> NatsConnection:
    """Connect, introduce ourselves, and check with a round trip that the server took it.
    Raises `ConnectionLost` when the server cannot be reached, `ServerError` when it refuses
    (bad credentials, for instance). The caller owns the timeout and closes the connection
    (`aclose`); `open_connection` does both."""
    if isinstance(address, str):
        address = NatsAddress.parse(address)
    try:
        stream = await trio.open_tcp_stream(address.host, address.port)
    except OSError as exc:
        raise ConnectionLost(f"{address}: cannot connect: {exc.strerror or exc}") from None
    connection = NatsConnection(stream=stream, info={}, address=address, parser=Parser())
    try:
        try:
            while not connection._frames:
                await connection._receive()
        except ProtocolError as exc:
            raise ConnectionLost(f"not a NATS server ({exc})") from None
        first = connection._frames.pop(0)
        if not isinstance(first, Info):
            raise ConnectionLost(f"{address}: not a NATS server (no INFO first)")
        connection.info = first.fields
        options: dict[str, Any] = {
            "verbose": False,
            "pedantic": False,
            "headers": True,
            "no_responders": True,
            "protocol": 1,
            "lang": "python-trio-oms",
            "version": __version__,
            "name": name,
        }
        if address.user is not None:
            options["user"] = address.user
            options["pass"] = address.password or ""
        await connection.send(
            connect_frame(options) + sub_frame(connection._inbox + ".*", _INBOX_SID)
        )
        await connection.ping()
    except BaseException:
        await connection.aclose()
        raise
    return connection


@asynccontextmanager
async def open_connection(
    address: NatsAddress | str, *, name: str = "oms"
) -> AsyncIterator[NatsConnection]:
    """`connect`, closing the connection at the end of the block."""
    connection = await connect(address, name=name)
    try:
        yield connection
    finally:
        await connection.aclose()
