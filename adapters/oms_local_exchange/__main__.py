"""`python -m oms_local_exchange`: run the local exchange until Ctrl-C.

Prints the REST and WebSocket URLs and the funded account's API key and secret, so that a
client in another terminal can connect. (The secret is printed on purpose: it is a throwaway
key for this run, shown to the operator who started it.)

Exit codes: 0 after Ctrl-C, 1 if the servers cannot start (e.g. a port in use), 2 for usage.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

import trio

from oms_local_exchange.server import open_local_exchange

__all__ = ["main"]


async def _serve(host: str, rest_port: int, ws_port: int, seed: int) -> None:
    async with open_local_exchange(
        seed=seed, host=host, rest_port=rest_port, ws_port=ws_port
    ) as exchange:
        print(f"REST       {exchange.rest_url}")
        print(f"WebSocket  {exchange.ws_url}")
        print(f"API key    {exchange.api_key}")
        print(f"API secret {exchange.api_secret}")
        print("Serving; Ctrl-C to stop.", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m oms_local_exchange",
        description="A local Backpack-compatible exchange (REST + WebSocket) for testing.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--rest-port", type=int, default=0, help="REST port (default: any free)")
    parser.add_argument("--ws-port", type=int, default=0, help="WebSocket port (default: any free)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic markets")
    args = parser.parse_args(argv)
    failed: list[BaseException] = []
    try:
        trio.run(_serve, args.host, args.rest_port, args.ws_port, args.seed)
    except* OSError as group:
        failed.extend(group.exceptions)
    if failed:
        print(f"cannot start the local exchange: {_first_leaf(failed[0])}", file=sys.stderr)
        return 1
    print("Stopped.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
