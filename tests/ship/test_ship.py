"""The shipper and the consumer against a real NATS server on 127.0.0.1 (see conftest.py).

In every case the stream must end up holding each event of the log exactly once, in order,
under its message id, and the state rebuilt from it must hash as the file's does.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import sys
from contextlib import aclosing
from pathlib import Path

import attrs
import pytest
import trio

from oms.core.events import Event
from oms.core.reducer import Fold
from oms.core.serialization import state_hash
from oms.core.state import State
from oms.core.values import Side
from oms.engine import Engine
from oms.log import EventLog, Fsync, LogReadError
from oms.replay import main as replay_main
from oms.replay import replay_file
from oms.ship.client import NatsAddress, open_connection
from oms.ship.jetstream import (
    WRONG_LAST_SEQUENCE,
    JetStreamError,
    ensure_stream,
    last_on_subject,
    publish,
    read_subject,
)
from oms.ship.rebuild import read_events, rebuild
from oms.ship.shipper import ShipConfig, ShipConflict, Shipper
from oms.testing.builders import accept, cancel, fill, markets, submit
from oms.testing.waiting import deadline, wait_for
from tests.helpers import ROOT
from tests.ship.conftest import NatsServer

VENUE = "local"


def session(orders: int, *, first_client_id: int = 1) -> list[Event]:
    """Markets, then per order a submit, its acceptance, a partial fill and a cancel."""
    events: list[Event] = [*markets()]
    for client_id in range(first_client_id, first_client_id + orders):
        venue_id = f"v{client_id}"
        side = Side.BID if client_id % 2 else Side.ASK
        events += [
            submit(client_id, side, "1", "10.00"),
            accept(venue_id, client_id=client_id, side=side, quantity="1", price="10.00"),
            fill(venue_id, client_id, side, "0.5", "10.00", client_id=client_id, cum="0.5"),
            cancel(venue_id=venue_id, client_id=client_id, cum="0.5"),
        ]
    return events


def record(path: Path, events: list[Event]) -> str:
    """Append `events` to the log at `path`; the state hash of the whole file."""
    with EventLog.open(path, fsync=Fsync.never()) as log:
        for event in events:
            log.append(event)
    return state_hash(replay_file(str(path))[0])


def config(server: NatsServer, account: str) -> ShipConfig:
    return attrs.evolve(config_for(server.url), account=account)


def config_for(url: str) -> ShipConfig:
    # Quick retries and short waits: a test never sleeps long for a server that is back.
    return ShipConfig(
        url=url,
        venue=VENUE,
        account="a0",
        request_timeout=2.0,
        retry_min=0.01,
        retry_max=0.2,
        poll=0.02,
    )


async def held(server: NatsServer, subject: str) -> list[tuple[str, int]]:
    """What the stream holds on `subject`: each message's id and the seq in its line."""
    out = []
    async with (
        open_connection(server.url) as connection,
        aclosing(read_subject(connection, "OMS", subject)) as messages,
    ):
        async for stored in messages:
            seq = json.loads(stored.data)["seq"]
            out.append((stored.headers["Nats-Msg-Id"], seq))
    return out


async def assert_exactly_once(server: NatsServer, account: str, count: int) -> None:
    subject = f"oms.{VENUE}.{account}.events"
    expected = [(f"{VENUE}:{account}:{seq}", seq) for seq in range(1, count + 1)]
    with deadline("reading the stream"):
        assert await held(server, subject) == expected


async def rebuilt_hash(server: NatsServer, account: str) -> str:
    with deadline("rebuilding from the stream"):
        state = await rebuild(f"{server.url}/oms.{VENUE}.{account}.events")
    return state_hash(state)


async def test_a_shipped_session_rebuilds_to_the_same_state_hash(
    nats_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "session.jsonl"
    events = session(60)
    file_hash = record(path, events)
    shipper = Shipper(path, config(nats_server, "a1"))
    with deadline("shipping"):
        await shipper.run(follow=False)
    assert shipper.statistics().acked_seq == len(events)
    await assert_exactly_once(nats_server, "a1", len(events))
    assert await rebuilt_hash(nats_server, "a1") == file_hash

    # `python -m oms.replay` takes the stream as its source: the same document as the file's.
    url = f"{nats_server.url}/oms.{VENUE}.a1.events"
    assert await trio.to_thread.run_sync(replay_main, [url, "--json"]) == 0
    from_stream = json.loads(capsys.readouterr().out)
    assert replay_main([str(path), "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert from_stream == from_file
    assert from_stream["state_hash"] == file_hash
    assert await trio.to_thread.run_sync(replay_main, [url, "--until", "3"]) == 0
    assert "3 events, last seq 3" in capsys.readouterr().out

    # Shipping the same file again stores nothing twice.
    again = Shipper(path, config(nats_server, "a1"))
    with deadline("shipping again"):
        await again.run(follow=False)
    assert again.statistics().published == 0
    await assert_exactly_once(nats_server, "a1", len(events))


async def test_the_engine_trades_on_while_the_server_is_killed_and_restarted(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    path = tmp_path / "live.jsonl"
    events = session(150)
    engine = Engine.open(path, fsync=Fsync.group(max_events=8, max_delay=0.005), snapshots=None)
    shipper = Shipper(path, config(nats_server, "a2"))
    shipper.follow_engine(engine)
    # A process that follows the account from the stream, through the restart as well.
    follower = Fold(State())

    async def follow() -> None:
        address = NatsAddress.parse(nats_server.url)
        subject = f"oms.{VENUE}.a2.events"
        async with aclosing(read_events(address, subject, follow=True, retry=0.05)) as stream:
            async for _seq, event in stream:
                follower.step(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.run)
        nursery.start_soon(shipper.run)
        nursery.start_soon(follow)
        killed_at = 0
        for number, event in enumerate(events, 1):
            engine.record(event)  # never waits for NATS
            if number == len(events) // 3:
                await wait_for(lambda: shipper.statistics().acked_seq > 0, "the first acks")
                await nats_server.kill()  # mid-stream: events keep coming
                # Acks read before the kill may still be handled: count from when the
                # shipper has seen the connection break.
                await wait_for(lambda: shipper.statistics().failures > 0, "the broken connection")
                killed_at = shipper.statistics().acked_seq
            if number == 2 * len(events) // 3:
                # The engine went on recording while the server was away.
                assert engine.state.last_seq == number
                assert shipper.statistics().acked_seq <= killed_at
                await nats_server.start()
            await trio.sleep(0.001)
        await wait_for(lambda: shipper.statistics().acked_seq == len(events), "catching up")
        await wait_for(lambda: follower.seq == len(events), "the follower")
        nursery.cancel_scope.cancel()
    engine.close()
    assert state_hash(follower.freeze()) == state_hash(engine.state)
    assert 0 < killed_at < len(events)
    assert shipper.statistics().failures > 0
    await assert_exactly_once(nats_server, "a2", len(events))
    assert await rebuilt_hash(nats_server, "a2") == state_hash(engine.state)


async def test_a_killed_shipper_restarted_ships_the_rest_once(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    path = tmp_path / "big.jsonl"
    events = session(1000)
    file_hash = record(path, events)
    subject = f"oms.{VENUE}.a3.events"
    command = [sys.executable, "-m", "oms.ship", str(path), "--to", nats_server.url]
    command += ["--venue", VENUE, "--account", "a3"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await trio.lowlevel.open_process([*command, "--follow"], env=env)
    try:
        async with open_connection(nats_server.url) as connection:
            await ensure_stream(connection, "OMS", subjects=["oms.*.*.events"])
            with deadline("the shipper's first events"):
                while await last_on_subject(connection, "OMS", subject) is None:  # noqa: ASYNC110
                    await trio.sleep(0.005)
            process.send_signal(signal.SIGKILL)  # mid-stream, no goodbye
            await process.wait()
            last = await last_on_subject(connection, "OMS", subject)
        assert last is not None
        shipped = json.loads(last.data)["seq"]
        assert 0 < shipped < len(events)
    finally:
        process.kill()
    result = await trio.run_process(command, env=env, capture_stdout=True, check=False)
    assert result.returncode == 0
    assert f"events 1..{len(events)}" in result.stdout.decode()
    assert f"({len(events) - shipped} published now)" in result.stdout.decode()
    await assert_exactly_once(nats_server, "a3", len(events))
    assert await rebuilt_hash(nats_server, "a3") == file_hash


async def test_a_second_writer_on_the_account_is_refused(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    first, other = tmp_path / "first.jsonl", tmp_path / "other.jsonl"
    events = session(10)
    record(first, events)
    record(other, session(12, first_client_id=500))
    with deadline("shipping"):
        await Shipper(first, config(nats_server, "a4")).run(follow=False)
    second = Shipper(other, config(nats_server, "a4"))
    with deadline("the second writer"), pytest.raises(ShipConflict, match="another writer"):
        await second.run(follow=False)
    assert second.statistics().published == 0
    assert second.statistics().stopped is not None
    await assert_exactly_once(nats_server, "a4", len(events))

    # The stream itself refuses what does not follow its last event: a gap, or a writer that
    # did not see the last one. The shipper's fence is not a courtesy.
    async with open_connection(nats_server.url) as connection:
        last = await last_on_subject(connection, "OMS", "oms.local.a4.events")
        assert last is not None
        line = other.read_bytes().splitlines()[len(events) + 1]
        for fence in (last.seq - 1, last.seq + 1):
            headers = {"Nats-Msg-Id": "x", "Nats-Expected-Last-Subject-Sequence": str(fence)}
            with pytest.raises(JetStreamError) as refused:
                await publish(connection, "oms.local.a4.events", line, headers)
            assert refused.value.err_code == WRONG_LAST_SEQUENCE
    await assert_exactly_once(nats_server, "a4", len(events))

    # The command says so and exits 1.
    command = [str(other), "--to", nats_server.url, "--venue", VENUE, "--account", "a4"]
    from oms.ship.__main__ import main as ship_main

    assert await trio.to_thread.run_sync(ship_main, command) == 1


async def test_two_shippers_of_one_log_store_each_event_once(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    path = tmp_path / "session.jsonl"
    events = session(100)
    file_hash = record(path, events)
    shippers = [Shipper(path, config(nats_server, "a5")) for _ in range(2)]
    async with trio.open_nursery() as nursery:
        for shipper in shippers:
            nursery.start_soon(
                functools.partial(shipper.run, follow=False)
            )  # returns when caught up
    assert [s.statistics().acked_seq for s in shippers] == [len(events)] * 2
    assert sum(s.statistics().published for s in shippers) == len(events)
    await assert_exactly_once(nats_server, "a5", len(events))
    assert await rebuilt_hash(nats_server, "a5") == file_hash


async def test_a_damaged_log_stops_the_shipper_at_the_bad_line(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    path = tmp_path / "session.jsonl"
    events = session(3)
    record(path, events)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[5] = lines[5].replace(b'"10.00"', b'"10.01"', 1)  # the checksum no longer matches
    path.write_bytes(b"".join(lines))
    shipper = Shipper(path, config(nats_server, "a6"))
    with deadline("shipping"), pytest.raises(LogReadError, match=r"session.jsonl:6:"):
        await shipper.run(follow=False)
    await assert_exactly_once(nats_server, "a6", 4)


async def test_a_server_that_is_not_nats_never_reaches_the_engine(tmp_path: Path) -> None:
    async def not_nats(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, not_nats, 0, host="127.0.0.1")
        (listener,) = await nursery.start(serve)
        port = listener.socket.getsockname()[1]
        path = tmp_path / "live.jsonl"
        engine = Engine.open(path, snapshots=None)
        try:
            shipper = Shipper(path, config_for(f"nats://127.0.0.1:{port}"))
            await nursery.start(shipper.run_beside, engine)
            for event in session(5):
                engine.record(event)
                await trio.sleep(0.01)
            await wait_for(lambda: shipper.statistics().failures >= 2, "a few tries")
            assert engine.state.last_seq == len(session(5))
            stats = shipper.statistics()
            assert (stats.acked_seq, stats.stopped) == (0, None)
            assert "not a NATS server" in (stats.last_error or "")
            nursery.cancel_scope.cancel()
        finally:
            engine.close()


async def test_a_conflict_beside_the_engine_stops_shipping_not_trading(
    nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record(tmp_path / "earlier.jsonl", session(3, first_client_id=900))
    with deadline("shipping"):
        await Shipper(tmp_path / "earlier.jsonl", config(nats_server, "a8")).run(follow=False)
    path = tmp_path / "live.jsonl"
    engine = Engine.open(path, snapshots=None)
    shipper = Shipper(path, config(nats_server, "a8"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(shipper.run_beside, engine)
        for event in session(20):
            engine.record(event)
            await trio.sleep(0.001)
        await wait_for(lambda: shipper.statistics().stopped is not None, "the conflict")
        nursery.cancel_scope.cancel()
    engine.close()
    assert engine.state.last_seq == len(session(20))
    assert "another writer" in (shipper.statistics().stopped or "")
    assert any("shipping" in r.message and r.levelname == "ERROR" for r in caplog.records)
    await assert_exactly_once(nats_server, "a8", len(session(3)))


async def test_beside_the_engine_only_synced_events_are_shipped(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    # A power loss may take what the log has not fsynced: the stream must never hold it.
    path = tmp_path / "live.jsonl"
    engine = Engine.open(path, fsync=Fsync.group(max_events=10_000, max_delay=3600), snapshots=None)
    shipper = Shipper(path, config(nats_server, "a9"))
    events = session(5)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(shipper.run_beside, engine)
            for event in events[:10]:
                engine.record(event)
            await wait_for(lambda: shipper.statistics().connections > 0, "the shipper's start")
            await trio.sleep(0.3)  # time enough to ship, had it been allowed to
            assert (engine.log is not None) and engine.log.synced_seq == 0
            assert shipper.statistics().acked_seq == 0
            engine.log.sync()
            await wait_for(lambda: shipper.statistics().acked_seq == 10, "the synced events")
            for event in events[10:]:
                engine.record(event)
            engine.log.sync()
            await wait_for(lambda: shipper.statistics().acked_seq == len(events), "the rest")
            nursery.cancel_scope.cancel()
    finally:
        engine.close()
    await assert_exactly_once(nats_server, "a9", len(events))


async def test_the_commands_say_what_is_wrong_in_one_line(
    nats_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from oms.ship.__main__ import main as ship_main

    path = tmp_path / "session.jsonl"
    record(path, session(2))
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        nobody = f"nats://127.0.0.1:{probe.getsockname()[1]}"
    ship = ["--venue", VENUE, "--account", "a10"]

    async def ship_exit(*argv: str) -> tuple[int, str]:
        try:
            code = await trio.to_thread.run_sync(ship_main, [*argv, *ship])
        except SystemExit as exc:  # argparse: usage
            code = int(exc.code or 0)
        return code, capsys.readouterr().err

    code, err = await ship_exit(str(tmp_path / "missing.jsonl"), "--to", nats_server.url)
    assert (code, err) == (1, f"{tmp_path / 'missing.jsonl'}: no such file\n")
    code, err = await ship_exit(str(path), "--to", "http://127.0.0.1:1")
    assert code == 2 and "nats://HOST" in err
    code, err = await ship_exit(str(path), "--to", nobody, "--wait", "0.3")
    assert code == 1 and "not caught up after 0.3 s" in err and "cannot connect" in err
    assert len(err.splitlines()) == 1

    async def replay_exit(*argv: str) -> tuple[int, str]:
        code = await trio.to_thread.run_sync(replay_main, list(argv))
        return code, capsys.readouterr().err

    code, err = await replay_exit(f"{nobody}/oms.local.a10.events")
    assert code == 1 and err.startswith(f"{nobody}: cannot connect") and err.count("\n") == 1
    code, err = await replay_exit(f"{nats_server.url}/elsewhere.events")
    assert (code, err) == (1, "no stream holds elsewhere.events\n")
    code, err = await replay_exit(nats_server.url)
    assert code == 1 and "name the subject" in err
