"""The NATS wire codec (pure) and the address parser: golden frames both ways."""

from __future__ import annotations

import pytest

from oms.core.errors import ConfigurationError
from oms.ship.client import NatsAddress
from oms.ship.protocol import (
    Err,
    Info,
    Msg,
    Parser,
    Ping,
    Pong,
    ProtocolError,
    pub_frame,
    sub_frame,
)

SERVER_BYTES = (
    b'INFO {"server_id":"x","version":"2.15.1","headers":true}\r\n'
    b"PING\r\n"
    b"MSG oms.local.a.events 7 _INBOX.r.1 5\r\nhello\r\n"
    b"HMSG oms.local.a.events 2 $JS.ACK.OMS.c.1.5.1.0.0 36 41\r\n"
    b"NATS/1.0\r\nNats-Msg-Id: local:a:1\r\n\r\nworld\r\n"
    b"HMSG _INBOX.p 2 28 28\r\nNATS/1.0 404 No Messages\r\n\r\n\r\n"
    b"PONG\r\n"
    b"-ERR 'Authorization Violation'\r\n"
)

EXPECTED = [
    Info({"server_id": "x", "version": "2.15.1", "headers": True}),
    Ping(),
    Msg(subject="oms.local.a.events", sid=7, reply="_INBOX.r.1", headers={}, payload=b"hello"),
    Msg(
        subject="oms.local.a.events",
        sid=2,
        reply="$JS.ACK.OMS.c.1.5.1.0.0",
        headers={"Nats-Msg-Id": "local:a:1"},
        payload=b"world",
    ),
    Msg(
        subject="_INBOX.p",
        sid=2,
        reply=None,
        headers={},
        payload=b"",
        status=404,
        description="No Messages",
    ),
    Pong(),
    Err("Authorization Violation"),
]


def test_server_frames_decode_whole() -> None:
    assert Parser().feed(SERVER_BYTES) == EXPECTED


def test_server_frames_decode_however_the_bytes_are_split() -> None:
    # TCP delivers any split: every cut point in two, and one byte at a time.
    for cut in range(1, len(SERVER_BYTES)):
        parser = Parser()
        assert parser.feed(SERVER_BYTES[:cut]) + parser.feed(SERVER_BYTES[cut:]) == EXPECTED
    parser = Parser()
    frames = [
        frame for i in range(len(SERVER_BYTES)) for frame in parser.feed(SERVER_BYTES[i : i + 1])
    ]
    assert frames == EXPECTED


@pytest.mark.parametrize(
    "data",
    [
        b"MSG a 1 5\r\nhelloX\r\n",  # the payload is longer than its size says
        b"MSG a 1 five\r\nhello\r\n",
        b"HMSG a 1 9 5\r\nNATS/1.0\r\n\r\n",  # headers larger than the whole message
        b"HMSG a 1 12 12\r\nHTTP/1.1\r\n\r\n\r\n",
        b"BOGUS\r\n",
        b"INFO [1]\r\n",
        b"X" * 70_000,  # no line end in sight
    ],
)
def test_what_is_not_nats_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        Parser().feed(data)


def test_client_frames() -> None:
    assert pub_frame("s", b"hi") == b"PUB s 2\r\nhi\r\n"
    assert pub_frame("s", b"hi", reply="r") == b"PUB s r 2\r\nhi\r\n"
    assert pub_frame("s", b"hi", reply="r", headers={"Nats-Msg-Id": "v:a:1"}) == (
        b"HPUB s r 32 34\r\nNATS/1.0\r\nNats-Msg-Id: v:a:1\r\n\r\nhi\r\n"
    )
    assert sub_frame("_INBOX.x.*", 1) == b"SUB _INBOX.x.* 1\r\n"
    # What a server reads back is what was sent.
    (echo,) = Parser().feed(b"HMSG s 1 r 32 34\r\nNATS/1.0\r\nNats-Msg-Id: v:a:1\r\n\r\nhi\r\n")
    assert isinstance(echo, Msg) and echo.headers == {"Nats-Msg-Id": "v:a:1"}


@pytest.mark.parametrize(
    ("subject", "headers"),
    [("a b", {}), ("", {}), ("s", {"X": "1\r\nPUB evil 0"}), ("s", {"A:B": "1"})],
)
def test_a_frame_cannot_smuggle_another(subject: str, headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        pub_frame(subject, b"x", headers=headers)


def test_an_address_keeps_its_password_out_of_sight() -> None:
    address = NatsAddress.parse("nats://ops:s3cret@127.0.0.1:4333/oms.local.a.events")
    assert (address.host, address.port, address.path) == ("127.0.0.1", 4333, "oms.local.a.events")
    assert address.password == "s3cret"
    assert "s3cret" not in str(address) and "s3cret" not in repr(address)
    assert NatsAddress.parse("nats://localhost").port == 4222
    for bad in ("http://127.0.0.1:4222", "tls://h:1", "nats://h:99999", "nats:///x"):
        with pytest.raises(ConfigurationError):
            NatsAddress.parse(bad)
