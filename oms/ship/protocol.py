"""The NATS client protocol as pure functions: frames to bytes, bytes to frames. No I/O.

Only what the shipper and the rebuilding consumer use: the server's `INFO`, `MSG`, `HMSG`,
`PING`, `PONG`, `+OK` and `-ERR`, and our `CONNECT`, `PUB`, `HPUB`, `SUB`, `UNSUB`, `PING` and
`PONG`. The wire format is text control lines ending in CRLF; a message's control line gives
the byte counts of its headers and payload, which follow it, each message ending in CRLF.
Headers are an HTTP-like block whose first line is `NATS/1.0`, optionally followed by a
status code and a description (`NATS/1.0 503`, `NATS/1.0 404 No Messages`).

`Parser.feed(data)` takes whatever bytes arrived and returns the complete frames in them,
keeping a partial one for the next call. A frame it cannot understand raises
`ProtocolError`: the connection is then useless, and the caller drops it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import attrs

from oms.core.errors import ExternalError

__all__ = [
    "PING",
    "PONG",
    "Err",
    "Frame",
    "Info",
    "Msg",
    "Ok",
    "Parser",
    "Ping",
    "Pong",
    "ProtocolError",
    "connect_frame",
    "pub_frame",
    "sub_frame",
    "unsub_frame",
]

PING: Final = b"PING\r\n"
PONG: Final = b"PONG\r\n"
_HEADER_LINE: Final = b"NATS/1.0"
# A control line longer than this without its CRLF is not NATS: stop buffering it.
MAX_CONTROL_LINE: Final = 64 * 1024


class ProtocolError(ExternalError):
    """The server sent something this client cannot understand."""


@attrs.frozen
class Info:
    """The server's `INFO`: its identity and limits (`max_payload`, `jetstream`, ...)."""

    fields: dict[str, Any]


@attrs.frozen(kw_only=True)
class Msg:
    """A message delivered to one of our subscriptions. `status` is the code of a status
    message (`503` no responders, `404`/`408` from a pull request), None for a plain one."""

    subject: str
    sid: int
    reply: str | None
    headers: dict[str, str]
    payload: bytes
    status: int | None = None
    description: str = ""


@attrs.frozen
class Ping:
    pass


@attrs.frozen
class Pong:
    pass


@attrs.frozen
class Ok:
    pass


@attrs.frozen
class Err:
    """`-ERR '<text>'`: the server refuses something, and usually closes the connection."""

    text: str


Frame = Info | Msg | Ping | Pong | Ok | Err


def _check_token(kind: str, value: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"a NATS {kind} must be non-empty without spaces: {value!r}")


def connect_frame(options: Mapping[str, Any]) -> bytes:
    """`CONNECT {...}` with the given options (name, headers, user, pass, ...)."""
    return b"CONNECT " + json.dumps(dict(options), separators=(",", ":")).encode() + b"\r\n"


def _header_block(headers: Mapping[str, str]) -> bytes:
    lines = [_HEADER_LINE]
    for key, value in headers.items():
        if not key or ":" in key or any(c in key + value for c in "\r\n"):
            raise ValueError(f"a header must be one line with a name without ':': {key!r}")
        lines.append(f"{key}: {value}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


def pub_frame(
    subject: str,
    payload: bytes,
    *,
    reply: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """`PUB` (no headers) or `HPUB` (with headers) of `payload` to `subject`."""
    _check_token("subject", subject)
    target = subject if reply is None else f"{subject} {reply}"
    if reply is not None:
        _check_token("reply subject", reply)
    if not headers:
        return b"PUB %s %d\r\n%s\r\n" % (target.encode(), len(payload), payload)
    block = _header_block(headers)
    return b"HPUB %s %d %d\r\n%s%s\r\n" % (
        target.encode(),
        len(block),
        len(block) + len(payload),
        block,
        payload,
    )


def sub_frame(subject: str, sid: int) -> bytes:
    _check_token("subject", subject)
    return b"SUB %s %d\r\n" % (subject.encode(), sid)


def unsub_frame(sid: int) -> bytes:
    return b"UNSUB %d\r\n" % sid


def parse_headers(block: bytes) -> tuple[int | None, str, dict[str, str]]:
    """A header block's status code (None if it has none), its description and its headers
    (a repeated name keeps its last value: the shipper sets each name once)."""
    text = block.decode("utf-8", "replace")
    lines = text.split("\r\n")
    first = lines[0]
    if not first.startswith("NATS/1.0"):
        raise ProtocolError(f"a header block must start with NATS/1.0, not {first[:40]!r}")
    status: int | None = None
    description = ""
    rest = first[len("NATS/1.0") :].strip()
    if rest:
        code, _, description = rest.partition(" ")
        if not (code.isdigit() and len(code) == 3):
            raise ProtocolError(f"bad status in a header block: {first[:40]!r}")
        status = int(code)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ProtocolError(f"bad header line: {line[:40]!r}")
        headers[name.strip()] = value.strip()
    return status, description.strip(), headers


def _int(text: bytes, what: str) -> int:
    if not text.isdigit():
        raise ProtocolError(f"bad {what} in a message line: {text[:20]!r}")
    return int(text)


class Parser:
    """Frames from a byte stream (see the module's docstring)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        start = 0
        while True:
            end = buffer.find(b"\r\n", start)
            if end < 0:
                if len(buffer) - start > MAX_CONTROL_LINE:
                    raise ProtocolError("a control line without its end is too long")
                break
            line = bytes(buffer[start:end])
            op, _, args = line.partition(b" ")
            op = op.upper()
            if op in (b"MSG", b"HMSG"):
                parts = args.split()
                with_headers = op == b"HMSG"
                counts = 2 if with_headers else 1
                if len(parts) not in (2 + counts, 3 + counts):
                    raise ProtocolError(f"bad {op.decode()} line: {line[:80]!r}")
                total = _int(parts[-1], "size")
                header_size = _int(parts[-2], "header size") if with_headers else 0
                if header_size > total:
                    raise ProtocolError(f"header size exceeds message size: {line[:80]!r}")
                body_start = end + 2
                body_end = body_start + total
                if len(buffer) < body_end + 2:
                    break  # the rest of this message has not arrived yet
                if buffer[body_end : body_end + 2] != b"\r\n":
                    raise ProtocolError("a message does not end where its size says")
                body = bytes(buffer[body_start:body_end])
                status, description, headers = (
                    parse_headers(body[:header_size]) if with_headers else (None, "", {})
                )
                has_reply = len(parts) == 3 + counts
                frames.append(
                    Msg(
                        subject=parts[0].decode("utf-8", "replace"),
                        sid=_int(parts[1], "sid"),
                        reply=parts[2].decode("utf-8", "replace") if has_reply else None,
                        headers=headers,
                        payload=body[header_size:],
                        status=status,
                        description=description,
                    )
                )
                start = body_end + 2
                continue
            start = end + 2
            if op == b"PING":
                frames.append(Ping())
            elif op == b"PONG":
                frames.append(Pong())
            elif op == b"+OK":
                frames.append(Ok())
            elif op == b"-ERR":
                frames.append(Err(args.decode("utf-8", "replace").strip().strip("'")))
            elif op == b"INFO":
                try:
                    fields = json.loads(args)
                except ValueError:
                    raise ProtocolError("INFO is not JSON") from None
                if not isinstance(fields, dict):
                    raise ProtocolError("INFO is not a JSON object")
                frames.append(Info(fields))
            elif line:
                raise ProtocolError(f"unknown operation from the server: {line[:40]!r}")
        del buffer[:start]
        return frames
