"""`python -m oms_backpack.bench_submit [--samples N] [--quick]`: how long a submit takes to
reach the socket.

One figure per order: from just before `BackpackSession.submit(...)` is called to the return
of the `send` system call that hands the last byte of its `POST /api/v1/order` to the kernel.
Everything the real submit does before its bytes leave is inside that span: the reconciliation
gate, the order's checks, the `OrderSubmitted` appended to the engine's log (under
`Fsync.group()`), the signature, and the HTTP client writing the request, with the session's
other tasks (WebSocket reader, poller, fill chaser, the engine's group-commit timer, the
task that makes signing nonces ahead) running as they do for a user. How many samples were
signed with a nonce made ahead (`oms_backpack.signing`) is printed with the figures.

The venue is the local exchange in a process of its own (`python -m oms_local_exchange` on
127.0.0.1), so its work never runs on this process's trio loop, as a remote venue's would not.
Orders are post-only bids far below the market (they rest and never fill) and are cancelled
every `_CANCEL_EVERY` orders, outside the timed spans. After each submit the bench waits for
the order's stream report and for every task of this process to block, so each sample starts
from a quiet process and carries nothing of the previous order.

The end of the span is observed at the socket: while measuring, trio's socket `send` and the
order lane's own `write` (`rest._Lane._send_now`, which a plain TCP lane makes first) are
wrapped so that the REST connection's sends are timestamped right after the system call
returns (before any scheduling point that follows it). The breakdown comes from the same
samples: the time inside `Engine.record_pending` for the `OrderSubmitted` (its append), the
time spent signing, and the rest of the HTTP client up to the last byte ("HTTP layer"); "before
record" is the gate, the checks and the request spec. The submit applies the `OrderSubmitted`
to the state and calls the engine's listeners just after the write (`Engine.settle`): that
time is printed too, as what it is, outside the span.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import trio
import trio.testing

from oms.core.events import Event, OrderAccepted, SubmitRejected, SubmitUnknown
from oms.core.state import State
from oms.core.values import OrderType, Side
from oms.engine import Engine
from oms.log import Fsync
from oms_backpack import rest, signing
from oms_backpack.session import BackpackSession, open_backpack_session
from oms_backpack.signing import Credentials

__all__ = ["QUICK_SAMPLES", "TARGET_P50_US", "main", "measure_after_pause", "measure_submit"]

TARGET_P50_US: Final = 200.0
DEFAULT_SAMPLES: Final = 2_000
QUICK_SAMPLES: Final = 500
SYMBOL: Final = "SOL_USDC"
# Well below the local exchange's SOL_USDC (about 150), so the bids rest, but inside its price
# band (0.75 to 1.25 times the mark), which refuses a bid further off.
PRICE: Final = Decimal("120.00")
QUANTITY: Final = Decimal("0.01")
_WARMUP: Final = 200
_CANCEL_EVERY: Final = 250
_REPORT_WAIT_S: Final = 2.0
# After each order: the exchange runs on the same two cores, and its tail (the stream report,
# hypercorn's bookkeeping) must not compete with the next sample.
_SETTLE_S: Final = 0.001
_EXCHANGE_START_S: Final = 30.0

_clock = time.perf_counter_ns


# --- the probe at the socket ------------------------------------------------------------------


class _SendProbe:
    """Timestamps every `send` (or the order lane's `write`) system call on sockets connected
    to `port` (the REST server):
    `last_ns` is when the latest one returned, `sends` and `sent` count calls and bytes."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.last_ns = 0
        self.sends = 0
        self.sent = 0
        self._ours: weakref.WeakKeyDictionary[socket.socket, bool] = weakref.WeakKeyDictionary()

    def _is_ours(self, sock: socket.socket) -> bool:
        ours = self._ours.get(sock)
        if ours is None:
            try:
                peer = sock.getpeername()
            except OSError:
                return False
            ours = self._ours[sock] = isinstance(peer, tuple) and peer[1] == self.port
        return ours

    @contextmanager
    def installed(self) -> Iterator[None]:
        # trio's socket `send` is `_nonblocking_helper(wait_writable, socket.send, ...)`: the
        # system call, then a scheduling point. The replacement runs the same helper with the
        # system call wrapped, so the time is taken before that scheduling point.
        from trio import _socket as trio_socket_module

        cls: Any = trio_socket_module._SocketType
        original = cls.__dict__["send"]
        if not hasattr(cls, "_nonblocking_helper"):
            raise RuntimeError("this trio has no _SocketType._nonblocking_helper to wrap")
        std_send = socket.socket.send
        wait_writable = trio.lowlevel.wait_writable
        probe = self

        def timed(sock: socket.socket, *args: Any) -> int:
            sent: int = std_send(sock, *args)
            now = _clock()
            if probe._is_ours(sock):
                probe.last_ns = now
                probe.sends += 1
                probe.sent += sent
            return sent

        async def send(self: Any, *args: Any) -> int:
            result: int = await self._nonblocking_helper(wait_writable, timed, *args)
            return result

        # The order lane writes a request's bytes itself (`_Lane._send_now`, one `write` on a
        # plain TCP socket) and calls trio's `send` only for what that left: timed alike.
        lane_cls: Any = rest._Lane
        original_now = lane_cls.__dict__["_send_now"]

        def send_now(lane: Any, data: bytes) -> int:
            sent: int = original_now(lane, data)
            now = _clock()
            if sent and probe.port == lane._port:
                probe.last_ns = now
                probe.sends += 1
                probe.sent += sent
            return sent

        cls.send = send
        lane_cls._send_now = send_now
        try:
            yield
        finally:
            cls.send = original
            lane_cls._send_now = original_now


# --- breakdown hooks --------------------------------------------------------------------------


class _Marks:
    """Timestamps the hooks leave for the sample in progress."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.record_start = 0
        self.record_end = 0
        self.pending = False  # the OrderSubmitted is logged and not applied yet
        self.settle_start = 0
        self.settle = 0
        self.signing = 0
        self.pooled = False


class _TimedCredentials(Credentials):
    """The same key, with the time spent signing added to `marks.signing`."""

    __slots__ = ("marks",)

    def __init__(self, secret: str, marks: _Marks) -> None:
        super().__init__(secret)
        self.marks = marks

    def headers(
        self,
        instruction: str,
        params: Any,
        timestamp_ms: int,
        window_ms: int = signing.DEFAULT_WINDOW_MS,
    ) -> dict[str, str]:
        left = self.nonces_left
        begin = _clock()
        result = super().headers(instruction, params, timestamp_ms, window_ms)
        self.marks.signing += _clock() - begin
        self.marks.pooled = self.nonces_left < left
        return result


def _time_record(engine: Engine, marks: _Marks) -> None:
    """Wrap `engine.record_pending` (the session's call to it: the `OrderSubmitted`'s append)
    and `engine.settle` (its apply, after the send) to mark the time each takes."""
    record_pending = engine.record_pending
    settle = engine.settle

    def timed(event: Event) -> None:
        marks.record_start = _clock()
        record_pending(event)
        marks.record_end = _clock()
        marks.pending = True

    def timed_settle() -> None:
        # Every settle comes here (the engine's own calls look the method up on the object):
        # the one that applies the OrderSubmitted is timed.
        if not marks.pending:
            settle()
            return
        marks.pending = False
        marks.settle_start = _clock()
        settle()
        marks.settle = _clock() - marks.settle_start

    setattr(engine, "record_pending", timed)  # noqa: B010 (mypy refuses assigning to a method)
    setattr(engine, "settle", timed_settle)  # noqa: B010


# --- the local exchange in its own process ----------------------------------------------------


class _Exchange:
    def __init__(self, rest_url: str, ws_url: str, secret: str) -> None:
        self.rest_url = rest_url
        self.ws_url = ws_url
        self.secret = secret


@contextmanager
def _local_exchange() -> Iterator[_Exchange]:
    """`python -m oms_local_exchange` on 127.0.0.1 (ports chosen by the OS) until the end of
    the block; its throwaway key is read from what it prints and never printed here."""
    process = subprocess.Popen(
        [sys.executable, "-m", "oms_local_exchange"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        found: dict[str, str] = {}
        started = time.monotonic()
        for line in process.stdout:
            name, _, value = line.strip().partition(" ")
            if name in ("REST", "WebSocket"):
                found[name] = value.strip()
            elif line.startswith("API secret"):
                found["secret"] = line.removeprefix("API secret").strip()
            elif line.startswith("Serving"):
                break
            if time.monotonic() - started > _EXCHANGE_START_S:
                break
        if set(found) != {"REST", "WebSocket", "secret"}:
            raise RuntimeError(f"the local exchange did not start (exit code {process.poll()})")
        yield _Exchange(found["REST"], found["WebSocket"], found["secret"])
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


# --- the measurement --------------------------------------------------------------------------


class _Samples:
    def __init__(self) -> None:
        self.total: list[int] = []
        self.before_record: list[int] = []
        self.record: list[int] = []
        self.settle: list[int] = []
        self.applied_after_write = 0  # samples whose OrderSubmitted was applied after the write
        self.signing: list[int] = []
        self.http: list[int] = []
        self.sends: list[int] = []
        self.request_bytes: list[int] = []
        self.pooled = 0  # samples signed with a nonce made ahead (`signing` module doc)
        self.failed = 0


class _Reports:
    """Client ids whose `OrderAccepted` (the stream's report) has been recorded, and how many
    submits ended refused or in doubt (each a sign the bench did not measure what it says)."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.failed = 0
        self._arrived = trio.Event()

    def __call__(self, event: Event, state: State) -> None:
        if isinstance(event, OrderAccepted) and event.client_id is not None:
            self.seen.add(event.client_id)
            self._arrived.set()
        elif isinstance(event, SubmitRejected | SubmitUnknown):
            self.failed += 1

    async def quiet_after(self, client_id: int) -> None:
        """Wait for the order's stream report, give the exchange's process a moment to finish
        its side, then wait for every task of this process to block."""
        with trio.move_on_after(_REPORT_WAIT_S):
            while client_id not in self.seen:
                self._arrived = trio.Event()
                await self._arrived.wait()
        await trio.sleep(_SETTLE_S)
        await trio.testing.wait_all_tasks_blocked()


async def _cancel_all(session: BackpackSession) -> None:
    await session.cancel_all(SYMBOL)
    with trio.move_on_after(_REPORT_WAIT_S):
        await session.engine.wait_until(
            lambda state: not any(o.symbol == SYMBOL for o in state.open_orders())
        )
    await trio.testing.wait_all_tasks_blocked()


async def _measure(exchange: _Exchange, samples: int, warmup: int) -> _Samples:
    marks = _Marks()
    credentials = _TimedCredentials(exchange.secret, marks)
    port = urlsplit(exchange.rest_url).port
    if port is None:
        raise RuntimeError(f"no port in {exchange.rest_url}")
    probe = _SendProbe(port)
    result = _Samples()
    reports = _Reports()

    with tempfile.TemporaryDirectory(prefix="oms-bench-submit-") as scratch:
        engine = Engine.open(Path(scratch) / "session.jsonl", fsync=Fsync.group())
        try:
            async with open_backpack_session(
                engine,
                credentials,
                rest_url=exchange.rest_url,
                ws_url=exchange.ws_url,
                symbols=[SYMBOL],
            ) as session:
                engine.subscribe(reports)
                # The client keeps under 2,000 requests a minute, which would hold the bench's
                # 2,001st order of the minute for most of a minute. The same limiter, with a
                # limit the bench cannot reach, still runs its code for every request.
                limiter: Any = session.rest._limiter
                limiter._limit = 10**9
                _time_record(engine, marks)
                call = session.rest.call
                call_start = 0

                async def timed_call(spec: Any, **options: Any) -> Any:
                    nonlocal call_start
                    call_start = _clock()
                    return await call(spec, **options)

                setattr(session.rest, "call", timed_call)  # noqa: B010
                with probe.installed():
                    for index in range(warmup + samples):
                        if index and index % _CANCEL_EVERY == 0:
                            await _cancel_all(session)
                        marks.reset()
                        sends, sent = probe.sends, probe.sent
                        begin = _clock()
                        order = await session.submit(
                            SYMBOL,
                            Side.BID,
                            OrderType.LIMIT_MAKER,
                            quantity=QUANTITY,
                            price=PRICE,
                        )
                        end = probe.last_ns
                        if index >= warmup:
                            if probe.sends == sends or end < begin:
                                raise RuntimeError("the probe saw no send for this submit")
                            result.total.append(end - begin)
                            result.before_record.append(marks.record_start - begin)
                            result.record.append(marks.record_end - marks.record_start)
                            result.settle.append(marks.settle)
                            result.applied_after_write += marks.settle_start >= end
                            result.signing.append(marks.signing)
                            result.http.append(end - call_start - marks.signing)
                            result.sends.append(probe.sends - sends)
                            result.request_bytes.append(probe.sent - sent)
                            result.pooled += marks.pooled
                        assert order.client_id is not None
                        await reports.quiet_after(order.client_id)
                    await _cancel_all(session)
                result.failed = reports.failed
        finally:
            engine.close()
    return result


def _percentile(values: Sequence[int], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] / 1000.0


def measure_submit(samples: int = DEFAULT_SAMPLES) -> dict[str, float]:
    """Time `samples` submits (after a warm-up) against a local exchange started for the
    purpose; figures in µs. Keys: `p50_us`, `p99_us` (the whole span), the p50 of each part
    (`before_record_p50_us`, `record_p50_us`, `signing_p50_us`, `http_p50_us`; they need not
    add up to the whole's p50), `applied_after_send_p50_us` (the `OrderSubmitted` applied and
    the listeners called, after the span) and `applied_after_write` (how many samples had it
    applied after their write, not before), `sends_per_request` and `request_bytes` (medians),
    `samples`,
    `pooled_signatures` (samples signed with a nonce the session made ahead), and
    `failed_submits` (submits recorded as refused or in doubt, warm-up included: 0 when the
    run went as intended).
    Blocking: runs its own `trio.run` and subprocess; about 3 s plus 2 ms per sample."""
    if samples < 1:
        raise ValueError("samples must be at least 1")
    warmup = min(_WARMUP, max(20, samples // 5))
    with _local_exchange() as exchange:
        found = trio.run(_measure, exchange, samples, warmup)
    return {
        "p50_us": _percentile(found.total, 0.5),
        "p99_us": _percentile(found.total, 0.99),
        "before_record_p50_us": _percentile(found.before_record, 0.5),
        "record_p50_us": _percentile(found.record, 0.5),
        "applied_after_send_p50_us": _percentile(found.settle, 0.5),
        "applied_after_write": float(found.applied_after_write),
        "signing_p50_us": _percentile(found.signing, 0.5),
        "http_p50_us": _percentile(found.http, 0.5),
        "sends_per_request": _percentile(found.sends, 0.5) * 1000.0,
        "request_bytes": _percentile(found.request_bytes, 0.5) * 1000.0,
        "samples": float(len(found.total)),
        "pooled_signatures": float(found.pooled),
        "failed_submits": float(found.failed),
    }


@contextmanager
def _timed_connects(into: list[int]) -> Iterator[None]:
    """Append the duration of every order lane connect (`rest._Lane._connect`) to `into`."""
    lane_cls: Any = rest._Lane
    original = lane_cls.__dict__["_connect"]

    async def connect(lane: Any) -> None:
        begin = _clock()
        try:
            await original(lane)
        finally:
            into.append(_clock() - begin)

    lane_cls._connect = connect
    try:
        yield
    finally:
        lane_cls._connect = original


async def _after_pause(
    exchange: _Exchange, samples: int, pause: float
) -> dict[str, tuple[list[int], list[int]]]:
    """Submits each made after `pause` seconds without a request, on two sessions in turn: one
    that keeps its connections warm (the default) and one that does not. Per session: the
    spans, and the durations of the lane connects made inside them."""
    port = urlsplit(exchange.rest_url).port
    if port is None:
        raise RuntimeError(f"no port in {exchange.rest_url}")
    probe = _SendProbe(port)
    found: dict[str, tuple[list[int], list[int]]] = {"warm": ([], []), "cold": ([], [])}
    credentials = Credentials(exchange.secret)
    with tempfile.TemporaryDirectory(prefix="oms-bench-pause-") as scratch:
        engines = [
            Engine.open(Path(scratch) / f"{name}.jsonl", fsync=Fsync.group()) for name in found
        ]
        try:
            async with (
                open_backpack_session(
                    engines[0], credentials, rest_url=exchange.rest_url,
                    ws_url=exchange.ws_url, symbols=[SYMBOL], keep_warm=True,
                ) as warm,
                open_backpack_session(
                    engines[1], credentials, rest_url=exchange.rest_url,
                    ws_url=exchange.ws_url, symbols=[SYMBOL], keep_warm=False,
                ) as cold,
            ):  # fmt: skip
                with probe.installed():
                    for _ in range(samples):
                        for name, session in (("warm", warm), ("cold", cold)):
                            spans, connects = found[name]
                            await trio.sleep(pause)
                            sends = probe.sends
                            begin = _clock()
                            with _timed_connects(connects):
                                await session.submit(
                                    SYMBOL, Side.BID, OrderType.LIMIT_MAKER, quantity=QUANTITY,
                                    price=PRICE,
                                )  # fmt: skip
                            if probe.sends == sends or probe.last_ns < begin:
                                raise RuntimeError("the probe saw no send for this submit")
                            spans.append(probe.last_ns - begin)
                for session in (warm, cold):
                    await _cancel_all(session)
        finally:
            for engine in engines:
                engine.close()
    return found


def measure_after_pause(samples: int) -> dict[str, float]:
    """Time `samples` submits made after a pause longer than the lane's keep-alive limit,
    with the connections kept warm and without (alternately), in µs: for each, the p50 and
    maximum of the span, and the connects made inside the spans (count, p50 duration).
    Blocking, about 2 x `samples` x 6 s."""
    if samples < 1:
        raise ValueError("samples must be at least 1")
    pause = rest.KEEPALIVE_EXPIRY + 1.0
    with _local_exchange() as exchange:
        found = trio.run(_after_pause, exchange, samples, pause)
    figures = {"pause_s": pause, "samples": float(samples)}
    for name, (spans, connects) in found.items():
        figures[f"{name}_p50_us"] = _percentile(spans, 0.5)
        figures[f"{name}_max_us"] = max(spans) / 1000.0
        figures[f"{name}_connects"] = float(len(connects))
        figures[f"{name}_connect_p50_us"] = _percentile(connects, 0.5) if connects else 0.0
    return figures


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m oms_backpack.bench_submit",
        description="Time submit() -> request bytes written to the socket, against a local "
        "exchange in its own process.",
        epilog="Exit status: 0 (whatever the figures), 2 usage.",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=DEFAULT_SAMPLES,
        metavar="N",
        help=f"timed submits (default {DEFAULT_SAMPLES:,})",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SAMPLES:,} samples (a few seconds)"
    )
    parser.add_argument(
        "--after-pause",
        type=int,
        metavar="N",
        help="instead: N submits after a pause past the keep-alive limit, with the "
        "connections kept warm and without (about 12 s each pair)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    samples: int = QUICK_SAMPLES if args.quick else args.samples
    if samples < 1:
        parser.error("--samples must be at least 1")
    if args.after_pause is not None:
        if args.after_pause < 1:
            parser.error("--after-pause must be at least 1")
        paused = measure_after_pause(args.after_pause)
        print(f"submit -> socket, each after {paused['pause_s']:.0f} s without a request:")
        for name, label in (("warm", "kept warm (default)"), ("cold", "not kept warm")):
            connects = int(paused[f"{name}_connects"])
            print(
                f"  lane {label}: p50 {paused[f'{name}_p50_us']:,.1f} µs, "
                f"max {paused[f'{name}_max_us']:,.1f} µs ({args.after_pause} orders); "
                f"{connects} connects inside the spans"
                + (f", p50 {paused[f'{name}_connect_p50_us']:,.1f} µs" if connects else "")
            )
        return 0
    figures = measure_submit(samples)
    verdict = "PASS" if figures["p50_us"] < TARGET_P50_US else "MISS"
    rows = [
        (
            f"submit -> request bytes at the socket, p50 ({int(figures['samples']):,} orders)",
            f"{figures['p50_us']:,.1f} µs",
            f"< {TARGET_P50_US:.0f} µs",
            verdict,
        ),
        ("submit -> request bytes at the socket, p99", f"{figures['p99_us']:,.1f} µs", "", ""),
        ("  gate, checks, request spec, p50", f"{figures['before_record_p50_us']:,.1f} µs", "", ""),
        ("  engine log append, p50", f"{figures['record_p50_us']:,.1f} µs", "", ""),
        ("  signing, p50", f"{figures['signing_p50_us']:,.1f} µs", "", ""),
        (
            "  signed with a nonce made ahead",
            f"{figures['pooled_signatures']:,.0f} of {figures['samples']:,.0f}",
            "",
            "",
        ),
        ("  HTTP layer to the last byte, p50", f"{figures['http_p50_us']:,.1f} µs", "", ""),
        (
            "  after the span: the order applied, listeners, p50",
            f"{figures['applied_after_send_p50_us']:,.1f} µs",
            "",
            "",
        ),
        (
            "  applied after the write",
            f"{figures['applied_after_write']:,.0f} of {figures['samples']:,.0f}",
            "",
            "",
        ),
        (
            "  send calls / bytes per request",
            f"{figures['sends_per_request']:.0f} / {figures['request_bytes']:.0f}",
            "",
            "",
        ),
    ]
    if figures["failed_submits"]:
        failed = f"{figures['failed_submits']:.0f}"
        rows.append(("  submits refused or in doubt (not expected)", failed, "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("  " + "  ".join(cells).rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
