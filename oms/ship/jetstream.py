"""The few JetStream operations the shipper and the consumer need, over `NatsConnection`.

JetStream's API is request/reply on `$JS.API.*` subjects with JSON bodies; a publish to a
subject a stream holds is answered with an acknowledgement (`{"stream":..,"seq":..}`) once
the stream stored it. Every call here is one request (a read is a pull: one request, many
replies); the caller owns the timeouts.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Final

import attrs

from oms.core.errors import ExternalError
from oms.ship.client import NatsConnection
from oms.ship.protocol import Msg, parse_headers

__all__ = [
    "Ack",
    "JetStreamError",
    "Stored",
    "ensure_stream",
    "find_stream",
    "get_message",
    "last_on_subject",
    "publish",
    "read_subject",
]

# JetStream's error codes (`err_code`) that the callers act on.
WRONG_LAST_SEQUENCE: Final = 10071
STREAM_NOT_FOUND: Final = 10059
NO_MESSAGE_FOUND: Final = 10037
_NANOSECONDS: Final = 1_000_000_000


class JetStreamError(ExternalError):
    """JetStream refused a request or a publish: `code` (HTTP-like) and `err_code` (its own
    number; 0 when the refusal came without one), with the server's description."""

    def __init__(self, message: str, *, code: int = 0, err_code: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.err_code = err_code


@attrs.frozen(kw_only=True)
class Ack:
    """A publish stored (or found already stored, `duplicate`) as stream sequence `seq`."""

    stream: str
    seq: int
    duplicate: bool = False


@attrs.frozen(kw_only=True)
class Stored:
    """A message as the stream holds it: its stream sequence, subject, headers and data."""

    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes


def _decode(reply: Msg, what: str) -> dict[str, Any]:
    if reply.status == 503:
        raise JetStreamError(
            f"{what}: no JetStream answers (is JetStream enabled on the server, and does a "
            "stream hold the subject?)",
            code=503,
        )
    if reply.status is not None:
        raise JetStreamError(f"{what}: status {reply.status} {reply.description}".rstrip())
    try:
        document = json.loads(reply.payload)
    except ValueError:
        raise JetStreamError(f"{what}: the answer is not JSON") from None
    if not isinstance(document, dict):
        raise JetStreamError(f"{what}: the answer is not a JSON object")
    error = document.get("error")
    if isinstance(error, dict):
        raise JetStreamError(
            f"{what}: {error.get('description', 'refused')}",
            code=int(error.get("code") or 0),
            err_code=int(error.get("err_code") or 0),
        )
    return document


async def _api(connection: NatsConnection, subject: str, body: Mapping[str, Any]) -> dict[str, Any]:
    reply = await connection.request(subject, json.dumps(dict(body)).encode())
    return _decode(reply, subject)


async def ensure_stream(
    connection: NatsConnection,
    name: str,
    *,
    subjects: list[str],
    replicas: int = 1,
    duplicate_window: float = 120.0,
) -> dict[str, Any]:
    """The stream `name`'s info, creating it first if there is none (file storage, the given
    replicas, kept forever, deletes refused). An existing stream is used as it is."""
    try:
        return await _api(connection, f"$JS.API.STREAM.INFO.{name}", {})
    except JetStreamError as exc:
        if exc.err_code != STREAM_NOT_FOUND:
            raise
    config = {
        "name": name,
        "subjects": subjects,
        "retention": "limits",
        "storage": "file",
        "num_replicas": replicas,
        "discard": "old",
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": 0,
        "duplicate_window": int(duplicate_window * _NANOSECONDS),
        "deny_delete": True,
    }
    return await _api(connection, f"$JS.API.STREAM.CREATE.{name}", config)


async def publish(
    connection: NatsConnection, subject: str, data: bytes, headers: Mapping[str, str]
) -> Ack:
    """Publish to a stream's subject and wait for its acknowledgement."""
    reply = await connection.request(subject, data, headers=headers)
    document = _decode(reply, f"publish to {subject}")
    try:
        return Ack(
            stream=str(document["stream"]),
            seq=int(document["seq"]),
            duplicate=bool(document.get("duplicate", False)),
        )
    except (KeyError, TypeError, ValueError):
        raise JetStreamError(f"publish to {subject}: not an acknowledgement") from None


def _stored(document: dict[str, Any], what: str) -> Stored:
    message = document.get("message")
    try:
        assert isinstance(message, dict)
        raw_headers = base64.b64decode(message.get("hdrs") or "", validate=True)
        data = base64.b64decode(message.get("data") or "", validate=True)
        headers = parse_headers(raw_headers)[2] if raw_headers else {}
        return Stored(
            seq=int(message["seq"]), subject=str(message["subject"]), headers=headers, data=data
        )
    except (AssertionError, KeyError, TypeError, ValueError, binascii.Error, ExternalError):
        raise JetStreamError(f"{what}: not a stored message") from None


async def last_on_subject(connection: NatsConnection, stream: str, subject: str) -> Stored | None:
    """The newest message on `subject` in `stream`, or None if it has none."""
    what = f"the last message on {subject}"
    try:
        document = await _api(
            connection, f"$JS.API.STREAM.MSG.GET.{stream}", {"last_by_subj": subject}
        )
    except JetStreamError as exc:
        if exc.err_code == NO_MESSAGE_FOUND:
            return None
        raise
    return _stored(document, what)


async def get_message(connection: NatsConnection, stream: str, seq: int) -> Stored:
    """The message at stream sequence `seq`."""
    document = await _api(connection, f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": seq})
    return _stored(document, f"message {seq} of {stream}")


async def find_stream(connection: NatsConnection, subject: str) -> str:
    """The name of the stream that holds `subject`."""
    document = await _api(connection, "$JS.API.STREAM.NAMES", {"subject": subject})
    names = document.get("streams") or []
    if not names:
        raise JetStreamError(f"no stream holds {subject}", code=404)
    return str(names[0])


def _stream_seq(reply: str | None) -> int:
    """The stream sequence in a delivered message's acknowledgement subject
    (`$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...`, or with a domain and an
    account hash before the stream in the newer form); 0 where it cannot be read."""
    tokens = (reply or "").split(".")
    index = 5 if len(tokens) == 9 else 7 if len(tokens) >= 11 else -1
    return int(tokens[index]) if index > 0 and tokens[index].isdigit() else 0


async def read_subject(
    connection: NatsConnection,
    stream: str,
    subject: str,
    *,
    after: int = 0,
    follow: bool = False,
    batch: int = 512,
) -> AsyncGenerator[Stored, None]:
    """The messages on `subject` in `stream` after stream sequence `after`, oldest first:
    those it holds when this starts, then (with `follow`) each new one as it arrives, for
    ever.

    Through a temporary pull consumer (in memory, no acknowledgements, removed at the end
    or by the server a minute after it was last used), asking for `batch` at a time and,
    until caught up, never for more than it reported pending: without `follow` no call waits
    for messages that are not there. While following, each pull waits up to 5 seconds.
    """
    config: dict[str, Any] = {
        "ack_policy": "none",
        "filter_subject": subject,
        "inactive_threshold": 60 * _NANOSECONDS,
        "mem_storage": True,
        "num_replicas": 1,
    }
    if after > 0:
        config.update(deliver_policy="by_start_sequence", opt_start_seq=after + 1)
    else:
        config.update(deliver_policy="all")
    what = f"$JS.API.CONSUMER.CREATE.{stream}"
    created = await _api(connection, what, {"stream_name": stream, "config": config})
    try:
        consumer = str(created["name"])
        remaining = int(created.get("num_pending") or 0)
    except (KeyError, TypeError, ValueError):
        raise JetStreamError(f"{what}: not a consumer") from None
    inbox = "_INBOX." + secrets.token_hex(11)
    sid = await connection.subscribe(inbox)
    try:
        while remaining > 0 or follow:
            count = min(batch, remaining) if remaining > 0 else batch
            await connection.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                json.dumps({"batch": count, "expires": 5 * _NANOSECONDS}).encode(),
                reply=inbox,
            )
            got = 0
            while got < count:
                message = await connection.next_for(sid)
                if message.status is None:
                    yield Stored(
                        seq=_stream_seq(message.reply),
                        subject=message.subject,
                        headers=message.headers,
                        data=message.payload,
                    )
                    got += 1
                elif message.status in (404, 408):
                    break  # this pull is over: nothing more now, or its time ran out
                elif message.status != 100:  # not a heartbeat: the consumer is gone
                    raise JetStreamError(
                        f"reading {subject}: {message.status} {message.description}".rstrip(),
                        code=message.status,
                    )
            if remaining > 0 and got < count and not follow:
                break  # fewer than were pending: the stream lost some meanwhile
            remaining = max(remaining - got, 0)
    finally:
        if not connection.broken:
            try:
                await connection.unsubscribe(sid)
                await _api(connection, f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}", {})
            except ExternalError:
                pass  # gone already, or the connection is: the server removes it on its own
