"""Fault injection for the local exchange: what a test (or an operator) can make go wrong.

A `Faults` object is plain configuration plus a little bookkeeping; the running exchange
consults it for every HTTP request and every private stream message, and attaches two hooks
so that `drop_websockets()` and `release_held()` act at once. All methods are synchronous and
may be called from any trio task of the exchange's run, before or after it starts.

Knobs:

- `clock_skew_ms`: added to the server clock (signature windows, `/api/v1/time`).
- `ws_before_rest`: an order execute answers only after its stream messages were written to
  the subscribed connections (the fill arrives before the REST response).
- `private_delay`: seconds every private stream message waits before it is written.
- `drop_websockets(abrupt=False)`: close every WebSocket connection now (a Close frame, or
  with `abrupt=True` the TCP connection without one).
- `drop_private(...)`, `duplicate_private(...)`, `hold_private(...)`: act on the next `count`
  private messages that match (`event`, `stream`, `symbol`, `client_id`, `where`); held
  messages wait in `held` until `release_held()`, or until `release_after` further private
  messages were delivered, so they arrive out of order.
- `fail_http(status, ...)`: answer `status` (e.g. 429, 503) to the next `count` requests that
  match `method` and `path` (after letting `skip` of them through); with `after_execute=True`
  the request is carried out first and only its answer is replaced (an order that was placed
  while the client sees 503).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from oms_local_exchange.model import Outbound

__all__ = ["Faults", "HttpFault"]

JSON = Any
Predicate = Callable[[Mapping[str, JSON]], bool]

_DEFAULT_BODIES: dict[int, dict[str, str]] = {
    429: {"code": "TOO_MANY_REQUESTS", "message": "Too many requests"},
    500: {"code": "SERVER_ERROR", "message": "Internal server error"},
    503: {
        "code": "SERVER_ERROR",
        "message": "Unknown error, please check your request or try again later.",
    },
}


@attrs.define(kw_only=True)
class _PrivateRule:
    action: str
    event: str | None
    stream: str | None
    symbol: str | None
    client_id: int | None
    where: Predicate | None
    remaining: int | None
    release_after: int | None = None

    def matches(self, message: Outbound) -> bool:
        data = message.data
        return (
            (self.event is None or data.get("e") == self.event)
            and (self.stream is None or message.stream == self.stream)
            and (self.symbol is None or data.get("s") == self.symbol)
            and (self.client_id is None or data.get("c") == self.client_id)
            and (self.where is None or self.where(data))
        )


@attrs.define(kw_only=True)
class HttpFault:
    """One configured HTTP failure; `remaining` None means every matching request."""

    status: int
    method: str | None
    path: str | None
    skip: int
    remaining: int | None
    after_execute: bool
    body: dict[str, str] | None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or self.path == path
        )


@attrs.define(kw_only=True)
class _Held:
    message: Outbound
    countdown: int | None


class Faults:
    """What to break, and what was broken (`dropped`, `held`, `http_failures`)."""

    def __init__(self) -> None:
        self.clock_skew_ms = 0
        self.ws_before_rest = False
        self.private_delay = 0.0
        self.dropped: list[Outbound] = []
        self.http_failures: list[tuple[str, str, int]] = []
        self._rules: list[_PrivateRule] = []
        self._http: list[HttpFault] = []
        self._held: list[_Held] = []
        self._deliver: Callable[[Outbound], None] | None = None
        self._drop: Callable[[bool], int] | None = None

    def __repr__(self) -> str:
        return (
            f"Faults(clock_skew_ms={self.clock_skew_ms}, ws_before_rest={self.ws_before_rest}, "
            f"private_rules={len(self._rules)}, http_rules={len(self._http)}, "
            f"held={len(self._held)})"
        )

    # --- hooks for the server -----------------------------------------------------------------

    def attach(self, deliver: Callable[[Outbound], None], drop: Callable[[bool], int]) -> None:
        """Called by the exchange: how to deliver a private message, how to drop connections."""
        self._deliver = deliver
        self._drop = drop

    def detach(self) -> None:
        self._deliver = None
        self._drop = None

    # --- WebSocket ----------------------------------------------------------------------------

    def drop_websockets(self, *, abrupt: bool = False) -> int:
        """Close every WebSocket connection now; returns how many there were."""
        return self._drop(abrupt) if self._drop is not None else 0

    def _rule(
        self,
        action: str,
        *,
        event: str | None,
        stream: str | None,
        symbol: str | None,
        client_id: int | None,
        where: Predicate | None,
        count: int | None,
        release_after: int | None = None,
    ) -> None:
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or None for every message)")
        self._rules.append(
            _PrivateRule(
                action=action,
                event=event,
                stream=stream,
                symbol=symbol,
                client_id=client_id,
                where=where,
                remaining=count,
                release_after=release_after,
            )
        )

    def drop_private(
        self,
        *,
        event: str | None = None,
        stream: str | None = None,
        symbol: str | None = None,
        client_id: int | None = None,
        where: Predicate | None = None,
        count: int | None = 1,
    ) -> None:
        """Never deliver the next `count` matching private messages (None: all of them)."""
        self._rule(
            "drop",
            event=event,
            stream=stream,
            symbol=symbol,
            client_id=client_id,
            where=where,
            count=count,
        )

    def duplicate_private(
        self,
        *,
        event: str | None = None,
        stream: str | None = None,
        symbol: str | None = None,
        client_id: int | None = None,
        where: Predicate | None = None,
        count: int | None = 1,
    ) -> None:
        """Deliver the next `count` matching private messages twice in a row."""
        self._rule(
            "duplicate",
            event=event,
            stream=stream,
            symbol=symbol,
            client_id=client_id,
            where=where,
            count=count,
        )

    def hold_private(
        self,
        *,
        event: str | None = None,
        stream: str | None = None,
        symbol: str | None = None,
        client_id: int | None = None,
        where: Predicate | None = None,
        count: int | None = 1,
        release_after: int | None = None,
    ) -> None:
        """Hold back the next `count` matching private messages: until `release_held()`, or
        until `release_after` later private messages have been delivered."""
        if release_after is not None and release_after < 1:
            raise ValueError("release_after must be at least 1")
        self._rule(
            "hold",
            event=event,
            stream=stream,
            symbol=symbol,
            client_id=client_id,
            where=where,
            count=count,
            release_after=release_after,
        )

    @property
    def held(self) -> list[Outbound]:
        return [h.message for h in self._held]

    def release_held(self) -> int:
        """Deliver every held message now, in the order they were held."""
        held, self._held = self._held, []
        for item in held:
            self._send(item.message)
        return len(held)

    def _send(self, message: Outbound) -> None:
        if self._deliver is not None:
            self._deliver(message)

    def route_private(self, message: Outbound) -> list[Outbound]:
        """What to deliver now for one private message that has a recipient: nothing, it,
        or it twice; then any held message whose countdown ran out."""
        out = [message]
        for rule in self._rules:
            if not rule.matches(message):
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            if rule.action == "drop":
                self.dropped.append(message)
                out = []
            elif rule.action == "duplicate":
                out = [message, message]
            else:
                self._held.append(_Held(message=message, countdown=rule.release_after))
                out = []
            break
        self._rules = [r for r in self._rules if r.remaining is None or r.remaining > 0]
        if out:
            for item in list(self._held):
                if item.countdown is None:
                    continue
                item.countdown -= 1
                if item.countdown <= 0:
                    self._held.remove(item)
                    out.append(item.message)
        return out

    # --- HTTP ---------------------------------------------------------------------------------

    def fail_http(
        self,
        status: int,
        *,
        method: str | None = None,
        path: str | None = None,
        count: int | None = 1,
        skip: int = 0,
        after_execute: bool = False,
        body: dict[str, str] | None = None,
    ) -> None:
        """Answer `status` to the next `count` matching requests (None: all of them), after
        letting `skip` matching requests through. `body` replaces the default error body."""
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or None for every request)")
        self._http.append(
            HttpFault(
                status=status,
                method=method.upper() if method is not None else None,
                path=path,
                skip=skip,
                remaining=count,
                after_execute=after_execute,
                body=body,
            )
        )

    def take_http(self, method: str, path: str) -> HttpFault | None:
        """The fault this request meets, if any (consuming one of its count)."""
        for rule in self._http:
            if not rule.matches(method, path):
                continue
            if rule.skip > 0:
                rule.skip -= 1
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._http.remove(rule)
            self.http_failures.append((method, path, rule.status))
            return rule
        return None

    @staticmethod
    def error_body(fault: HttpFault) -> dict[str, str]:
        if fault.body is not None:
            return fault.body
        return _DEFAULT_BODIES.get(fault.status, {"code": "SERVER_ERROR", "message": "Error"})

    def clear(self) -> None:
        """Forget every rule and release nothing: held messages are discarded."""
        self._rules.clear()
        self._http.clear()
        self._held.clear()
        self.clock_skew_ms = 0
        self.ws_before_rest = False
        self.private_delay = 0.0
