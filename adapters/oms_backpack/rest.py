"""Backpack REST client: the thin trio shell around the pure request specs and codec.

`BackpackRest.call(spec)` sends one `RequestSpec` (from `oms_backpack.endpoints`) and
returns the parsed JSON body (numbers as `Decimal`), or None for an empty body. It signs,
rate-limits, retries and maps errors. The query helpers (`markets`, `capital`, `positions`,
`open_orders`, `order_history`, `fill_history`, `funding_history`) also pass the body through
the pure codec and return the events it yields (`MessageNotUnderstood` for an item it cannot
read). The client only returns events; it never records them and keeps no order or account
state: recording is the caller's (the session's, the reconciler's).

What a caller can rely on:

- **Signed exactly as sent.** A JSON body is the spec's own values serialised compactly; the
  signature covers those same values (`Credentials.headers`), so nothing is re-formatted in
  between. `X-Timestamp` is the venue's time as the session's `VenueClock` knows it (the
  local wall clock plus the offset `sync_clock()` measures).
- **Never a guess about an order.** A POST (order execute) is retried only when the venue
  certainly did not act on it: HTTP 429, a clock rejection, or a connection that could not
  be opened. A timeout, a connection lost after sending, a 5xx, or a "client ID already
  exists" rejection on a retry raise `OutcomeUnknown`: the order may or may not be live, and
  only a venue report (stream or reconciliation) can say which.
- **Idempotent calls retry.** GET, DELETE (cancels) and PATCH (account settings are absolute
  values) are retried on 429, 5xx and transport errors with exponential backoff and jitter.
  If a DELETE or PATCH may have taken effect and the retries run out, that is `OutcomeUnknown`
  too.
- **Rate limit.** At most `max_requests_per_minute` attempts start in any rolling 60 s of
  `trio.current_time()`; further attempts wait.
- **No secret leaks.** Exception messages and log records name the method, path, status and
  the venue's code and message, never request headers or key material.

Callers own timeouts (`trio.fail_after` around the call). The transport timeout below only
guards against a dead socket; if a caller's cancel scope interrupts an execute, its outcome
is unknown to the caller in the same way.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self

import attrs
import httpx
import msgspec
import trio

from oms.core.errors import ConfigurationError, ExternalError
from oms.core.events import Event, MarketInfo, MessageNotUnderstood
from oms.core.values import Source
from oms_backpack import codec, endpoints
from oms_backpack.clock import VenueClock
from oms_backpack.endpoints import Param, RequestSpec
from oms_backpack.signing import MAX_WINDOW_MS, Credentials

__all__ = [
    "BackpackRest",
    "BadResponse",
    "ClockError",
    "MissingCredentials",
    "NotFound",
    "OutcomeUnknown",
    "RateLimited",
    "RestError",
    "VenueError",
    "VenueUnavailable",
    "venue_error",
]

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"
TRANSPORT_TIMEOUT: Final = httpx.Timeout(10.0)
RATE_PERIOD_S: Final = 60.0
_MAX_MESSAGE: Final = 500
# Failures raised before any byte of the request left this process: the venue never saw it.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_EXECUTE_PATHS: Final = frozenset({"/api/v1/order", "/api/v1/orders"})


# --- errors -------------------------------------------------------------------------------------


class RestError(ExternalError):
    """Base of the errors this client raises about the venue or the connection: the
    outside world's, so an `oms.core.errors.ExternalError`."""


class VenueError(RestError):
    """The venue answered with an error status. `code` is the venue's error code (for a
    plain-text body, `HTTP_<status>`); `message` is its text."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.code}: {self.message}"

    @property
    def duplicate_client_id(self) -> bool:
        """The venue already has an order with the client id this request used."""
        return self.code == "INVALID_ORDER" and "already exists" in self.message.lower()


class NotFound(VenueError):
    """404 / RESOURCE_NOT_FOUND: for an order, it is not resting (finished or never placed)."""


class RateLimited(VenueError):
    """429: the venue refused the request without acting on it."""


class ClockError(VenueError):
    """The venue rejected the timestamp (expired request or clock skew)."""


class BadResponse(VenueError):
    """A success status whose body is not JSON."""


class OutcomeUnknown(RestError):
    """The request may or may not have taken effect (timeout, connection lost after sending,
    5xx on a non-idempotent call, duplicate client id on a retry). Only a later venue report
    can tell; do not resend blindly."""

    def __init__(self, method: str, path: str, reason: str) -> None:
        super().__init__(f"{method} {path}: outcome unknown: {reason}")
        self.method = method
        self.path = path
        self.reason = reason


class VenueUnavailable(RestError):
    """No answer after all retries, and the request cannot have taken effect."""


class MissingCredentials(ConfigurationError, RuntimeError):
    """A signed endpoint was called on a client built without credentials: the program's
    mistake (a `ConfigurationError`; still a `RuntimeError`, as it was before)."""


def _is_clock_error(code: str, message: str) -> bool:
    text = message.lower()
    return code == "INVALID_CLIENT_REQUEST" and (
        "request has expired" in text or "timestamp" in text
    )


def venue_error(status: int, body: str) -> VenueError:
    """The error for one non-success response. JSON `{"code", "message"}` bodies keep the
    venue's code; anything else becomes code `HTTP_<status>` with the text as the message."""
    code = f"HTTP_{status}"
    message = body.strip()
    try:
        data = codec.parse_json(body) if message else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        if isinstance(data.get("code"), str) and data["code"]:
            code = data["code"]
        for key in ("message", "msg"):
            if isinstance(data.get(key), str):
                message = data[key]
                break
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    if status == 404 or code == "RESOURCE_NOT_FOUND":
        return NotFound(status, code, message)
    if status == 429 or code == "TOO_MANY_REQUESTS":
        return RateLimited(status, code, message)
    if _is_clock_error(code, message):
        return ClockError(status, code, message)
    return VenueError(status, code, message)


# --- wire helpers -------------------------------------------------------------------------------


def _check_value(key: str, value: object) -> None:
    # Only str/int/bool render identically in the JSON body and the signing string; a float or
    # Decimal would be written one way and signed another.
    if not isinstance(value, str | int):
        raise TypeError(f"request parameter {key!r} has type {type(value).__name__}")


def _present(params: Mapping[str, Param | None]) -> dict[str, Param]:
    """The parameters that are sent; None values are left out, as the signer leaves them out."""
    result: dict[str, Param] = {}
    for key, value in params.items():
        if value is not None:
            _check_value(key, value)
            result[key] = value
    return result


_encode_json = msgspec.json.Encoder().encode


def _json_body(body: Mapping[str, Param] | Sequence[Mapping[str, Param]]) -> bytes:
    # Compact UTF-8 JSON, byte for byte what `json.dumps(payload, separators=(",", ":"),
    # ensure_ascii=False).encode()` gives for str/int/bool values, at a tenth of the cost.
    payload = _present(body) if isinstance(body, Mapping) else [_present(i) for i in body]
    return _encode_json(payload)


def _query_params(query: Mapping[str, Param]) -> httpx.QueryParams:
    # Rendered here, not by httpx, so the URL carries the very text the signer signed.
    return httpx.QueryParams(
        [
            (key, ("true" if value else "false") if isinstance(value, bool) else str(value))
            for key, value in _present(query).items()
        ]
    )


@attrs.frozen
class _Reply:
    status: int
    content: bytes
    text: str
    sent_ms: int
    received_ms: int


class _SlidingWindow:
    """At most `limit` acquisitions in any `period` seconds of trio time; FIFO under a lock."""

    def __init__(self, limit: int, period: float) -> None:
        self._limit = limit
        self._period = period
        self._starts: deque[float] = deque()
        self._lock = trio.Lock()

    async def acquire(self) -> None:
        if not self._lock.locked():
            # Nobody is queued: with room in the window, take it at once. No scheduling point
            # here (a submit's bytes should not wait behind other tasks), but a cancelled
            # caller still stops before its request starts.
            now = trio.current_time()
            while self._starts and self._starts[0] <= now - self._period:
                self._starts.popleft()
            if len(self._starts) < self._limit:
                await trio.lowlevel.checkpoint_if_cancelled()
                self._starts.append(now)
                return
        async with self._lock:
            while True:
                now = trio.current_time()
                while self._starts and self._starts[0] <= now - self._period:
                    self._starts.popleft()
                if len(self._starts) < self._limit:
                    self._starts.append(now)
                    return
                await trio.sleep(self._starts[0] + self._period - now)


# --- the client ---------------------------------------------------------------------------------


class BackpackRest:
    """One Backpack REST session. Use as `async with BackpackRest(url, creds) as rest:`."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | None = None,
        *,
        window_ms: int = 5000,
        transport: httpx.AsyncBaseTransport | None = None,
        max_requests_per_minute: int = 2000,
        max_retries: int = 4,
        backoff_initial: float = 0.25,
        backoff_max: float = 8.0,
        clock: VenueClock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < window_ms <= MAX_WINDOW_MS:
            raise ConfigurationError(f"window_ms must be in 1..{MAX_WINDOW_MS}, not {window_ms}")
        if max_requests_per_minute < 1:
            raise ConfigurationError("max_requests_per_minute must be at least 1")
        if max_retries < 0:
            raise ConfigurationError("max_retries must not be negative")
        if not 0 < backoff_initial <= backoff_max:
            raise ConfigurationError("backoff needs 0 < backoff_initial <= backoff_max")
        self._base_url = base_url
        self._credentials = credentials
        self._window_ms = window_ms
        self._transport = transport
        self._max_retries = max_retries
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self.clock = clock if clock is not None else VenueClock()
        self._rng = rng if rng is not None else random.Random()
        self._limiter = _SlidingWindow(max_requests_per_minute, RATE_PERIOD_S)
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        if self._client is not None:
            raise RuntimeError("this BackpackRest is already open")
        self._client = httpx.AsyncClient(
            base_url=self._base_url, transport=self._transport, timeout=TRANSPORT_TIMEOUT
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _now_us(self) -> int:
        return self.clock.local_us()

    # --- core --------------------------------------------------------------------------------

    async def call(self, spec: RequestSpec) -> Any:
        """Send `spec`; return its parsed JSON (Decimal numbers), or None for an empty body.

        Raises `VenueError` (or a subclass) when the venue refuses, `OutcomeUnknown` when the
        request may or may not have taken effect, `VenueUnavailable` when it got no answer and
        cannot have taken effect, `MissingCredentials` for a signed spec without credentials.
        """
        return (await self._call(spec)).body

    async def sync_clock(self) -> int:
        """Measure the venue clock (`GET /api/v1/time`); store and return the offset in ms:
        venue time minus the midpoint of the local send and receive times."""
        reply = await self._call(endpoints.server_time())
        try:
            # Bounded before it is converted: `1E+1000000` must not become a million digits.
            server_ms = codec.venue_int(reply.body, "server time")
        except codec.BadMessage as exc:
            raise BadResponse(200, "BAD_RESPONSE", f"server time is not a number: {exc}") from None
        offset = self.clock.measure(
            sent_ms=reply.sent_ms, venue_ms=server_ms, received_ms=reply.received_ms
        )
        log.info("Backpack clock offset %+d ms", offset)
        return offset

    def _delay(self, retry: int) -> float:
        # Exponential, capped, with "equal jitter": half fixed, half random, so successive
        # delays never shrink while concurrent clients still spread out.
        ceiling = min(self._backoff_max, self._backoff_initial * 2.0**retry)
        return ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)

    async def _backoff(self, spec: RequestSpec, retry: int, why: str) -> None:
        delay = self._delay(retry)
        log.warning(
            "%s %s: %s; retry %d of %d in %.2f s",
            spec.method,
            spec.path,
            why,
            retry + 1,
            self._max_retries,
            delay,
        )
        await trio.sleep(delay)

    async def _send(self, spec: RequestSpec) -> _Reply:
        client = self._client
        if client is None:
            raise RuntimeError("BackpackRest is not open: use `async with BackpackRest(...)`")
        await self._limiter.acquire()
        headers: dict[str, str] = {}
        if spec.instruction is not None:
            assert self._credentials is not None  # checked by _call
            timestamp = self.clock.venue_ms()
            headers.update(
                self._credentials.headers(
                    spec.instruction, spec.signed_params, timestamp, self._window_ms
                )
            )
        content = None
        if spec.body is not None:
            content = _json_body(spec.body)
            headers["Content-Type"] = JSON_CONTENT_TYPE
        params = _query_params(spec.query) if spec.query else None
        sent_ms = self.clock.local_ms()
        response = await client.request(
            spec.method, spec.path, params=params, content=content, headers=headers
        )
        received_ms = self.clock.local_ms()
        return _Reply(response.status_code, response.content, response.text, sent_ms, received_ms)

    async def _call(self, spec: RequestSpec) -> _Result:
        if spec.instruction is not None and self._credentials is None:
            raise MissingCredentials(
                f"{spec.method} {spec.path} ({spec.instruction}) is signed, but this client "
                "has no credentials"
            )
        method = spec.method.upper()
        # POST creates something (an order); GET reads; DELETE and PATCH set an end state
        # that repeating cannot change.
        idempotent = method != "POST"
        is_execute = method == "POST" and spec.path in _EXECUTE_PATHS
        retries = 0
        sent_count = 0
        resynced = False
        may_have_acted = False  # an earlier attempt of an idempotent write may have landed

        def unknown(reason: str) -> OutcomeUnknown:
            return OutcomeUnknown(spec.method, spec.path, reason)

        while True:
            sent_count += 1
            try:
                reply = await self._send(spec)
            except httpx.TransportError as exc:
                what = type(exc).__name__
                reached = not isinstance(exc, _NOT_SENT)
                if reached and not idempotent:
                    raise unknown(f"{what} after the request may have been sent") from exc
                if reached and method != "GET":
                    may_have_acted = True
                if retries < self._max_retries:
                    await self._backoff(spec, retries, what)
                    retries += 1
                    continue
                if may_have_acted:
                    raise unknown(f"{what}; an earlier attempt may have taken effect") from exc
                raise VenueUnavailable(
                    f"{spec.method} {spec.path}: no answer after {sent_count} attempts ({what})"
                ) from exc

            if 200 <= reply.status < 300:
                if not reply.content.strip():
                    return _Result(None, reply.sent_ms, reply.received_ms)
                try:
                    body = codec.parse_json(reply.content)
                except ValueError:
                    bad = BadResponse(
                        reply.status, "BAD_RESPONSE", f"body is not JSON: {reply.text[:200]!r}"
                    )
                    if method != "GET":
                        raise unknown(str(bad)) from bad
                    raise bad from None
                return _Result(body, reply.sent_ms, reply.received_ms)

            error = venue_error(reply.status, reply.text)
            if isinstance(error, ClockError) and spec.instruction is not None and not resynced:
                resynced = True
                log.warning("%s %s: %s; resyncing the clock", spec.method, spec.path, error)
                await self.sync_clock()
                continue
            if is_execute and sent_count > 1 and error.duplicate_client_id:
                # The client id is ours; on a retry, the likeliest owner is our first attempt.
                raise unknown(f"retry rejected as a duplicate ({error})") from error
            if isinstance(error, RateLimited) or (reply.status >= 500 and idempotent):
                if reply.status >= 500 and method != "GET":
                    may_have_acted = True
                if retries < self._max_retries:
                    await self._backoff(spec, retries, f"HTTP {reply.status} {error.code}")
                    retries += 1
                    continue
            if reply.status >= 500 and not idempotent:
                raise unknown(str(error)) from error
            if may_have_acted and not isinstance(error, NotFound):
                raise unknown(f"{error}; an earlier attempt may have taken effect") from error
            raise error

    # --- domain helpers ----------------------------------------------------------------------

    async def markets(
        self, *, source: Source = Source.REST
    ) -> list[MarketInfo | MessageNotUnderstood]:
        """All markets as `MarketInfo` (or `MessageNotUnderstood` for items the codec cannot
        read, keeping the raw item)."""
        body = await self.call(endpoints.markets())
        recv = self._now_us()
        result: list[MarketInfo | MessageNotUnderstood] = []
        for event in self._items(body, "markets", source, recv, codec.market):
            assert isinstance(event, MarketInfo | MessageNotUnderstood)
            result.append(event)
        return result

    async def capital(self, *, source: Source = Source.REST) -> Event:
        """Spot balances as one `BalanceObserved`."""
        body = await self.call(endpoints.capital())
        return codec.balances(body, source, self._now_us())

    async def positions(
        self, symbol: str | None = None, *, source: Source = Source.REST
    ) -> list[Event]:
        body = await self.call(endpoints.positions(symbol))
        return self._items(body, "positions", source, self._now_us(), codec.position)

    async def open_orders(
        self, symbol: str | None = None, *, source: Source = Source.REST
    ) -> list[Event]:
        """Resting orders as `OrderObserved` events."""
        body = await self.call(endpoints.open_orders(symbol))
        return self._items(body, "open orders", source, self._now_us(), codec.order_object)

    async def order_history(
        self,
        *,
        venue_id: str | None = None,
        symbol: str | None = None,
        page_size: int = 1000,
        source: Source = Source.REST,
    ) -> list[Event]:
        """Every matching order of the history (oldest first), fetched page by page."""

        def page(offset: int) -> RequestSpec:
            return endpoints.order_history(
                venue_id=venue_id,
                symbol=symbol,
                limit=page_size,
                offset=offset,
                sort_direction="Asc",
            )

        return await self._paginate(page, page_size, "order history", source, codec.order_object)

    async def fill_history(
        self,
        *,
        venue_id: str | None = None,
        symbol: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        page_size: int = 1000,
        source: Source = Source.REST,
    ) -> list[Event]:
        """Every matching fill (oldest first) as `OrderFilled`, fetched page by page."""

        def page(offset: int) -> RequestSpec:
            return endpoints.fill_history(
                venue_id=venue_id,
                symbol=symbol,
                from_ms=from_ms,
                to_ms=to_ms,
                limit=page_size,
                offset=offset,
                sort_direction="Asc",
            )

        return await self._paginate(
            page, page_size, "fill history", source, codec.fill_history_item
        )

    async def funding_history(
        self,
        *,
        symbol: str | None = None,
        limit: int = 1000,
        offset: int = 0,
        source: Source = Source.REST,
    ) -> list[Event]:
        """One page of funding payments, newest first (the history has no time filter, so the
        caller chooses how far back to page)."""
        spec = endpoints.funding_history(symbol=symbol, limit=limit, offset=offset)
        body = await self.call(spec)
        return self._items(body, "funding history", source, self._now_us(), codec.funding_item)

    def _items(
        self,
        body: Any,
        what: str,
        source: Source,
        recv_time_us: int,
        convert: Callable[[Any, Source, int], Event],
    ) -> list[Event]:
        if not isinstance(body, list):
            return [
                MessageNotUnderstood(
                    source=source,
                    recv_time_us=recv_time_us,
                    raw=codec.compact(body),
                    reason=f"{what} response is not a JSON array",
                )
            ]
        return [convert(item, source, recv_time_us) for item in body]

    async def _paginate(
        self,
        page: Callable[[int], RequestSpec],
        page_size: int,
        what: str,
        source: Source,
        convert: Callable[[Any, Source, int], Event],
    ) -> list[Event]:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        events: list[Event] = []
        offset = 0
        while True:
            body = await self.call(page(offset))
            events.extend(self._items(body, what, source, self._now_us(), convert))
            if not isinstance(body, list) or len(body) < page_size:
                return events
            offset += len(body)


@attrs.frozen
class _Result:
    body: Any
    sent_ms: int
    received_ms: int
