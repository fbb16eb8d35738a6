"""Which mark prices go into the log: `MarkSampler`. Pure (times arrive with the events).

Backpack pushes a `markPrice.<symbol>` update about once a second per market, whether the mark
moved much or not. Recording every one would make a session's log grow with time alone (86,400
lines a day per market, most of them saying nothing new), so the session keeps a sample:

- the first mark of each market in the session is recorded (the status needs a mark at once);
- after that, a mark is recorded when it moved by at least `move_bps` basis points from the
  last one recorded *and* at least `min_interval_us` passed since then, or when
  `max_interval_us` passed and the mark differs at all.

With the defaults (10 bps, 5 s, 60 s): at most one line per market per 5 s even in a market
moving hard (17,280 a day, about 3.5 MB), and one a minute in a quiet one (1,440 a day). The
recorded mark is never off by 10 bps or more for longer than 5 s, nor stale for longer than a
minute, so unrealized PnL derived from the log is within 0.1 % of the position's notional of
the one at the venue's live mark, minutes old at worst. A replay sees only the recorded
marks: the live status and the replayed one agree because both read the state.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import attrs

from oms.core.errors import ConfigurationError
from oms.core.events import MarkObserved
from oms.core.values import CTX

__all__ = ["DEFAULT_MAX_INTERVAL_US", "DEFAULT_MIN_INTERVAL_US", "DEFAULT_MOVE_BPS", "MarkSampler"]

DEFAULT_MOVE_BPS: Final = Decimal(10)
DEFAULT_MIN_INTERVAL_US: Final = 5_000_000
DEFAULT_MAX_INTERVAL_US: Final = 60_000_000
_BPS: Final = Decimal(10_000)


@attrs.define(eq=False)
class MarkSampler:
    """Decides, mark by mark, whether a `MarkObserved` is recorded (see the module docstring).

    Times are the events' `recv_time_us` (this process's clock). `kept` and `dropped` count
    the decisions.
    """

    move_bps: Decimal = DEFAULT_MOVE_BPS
    min_interval_us: int = DEFAULT_MIN_INTERVAL_US
    max_interval_us: int = DEFAULT_MAX_INTERVAL_US
    kept: int = 0
    dropped: int = 0
    _last: dict[str, tuple[Decimal, int]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        if not self.move_bps > 0:
            raise ConfigurationError(f"move_bps must be positive, not {self.move_bps}")
        if not 0 <= self.min_interval_us <= self.max_interval_us:
            raise ConfigurationError(
                "need 0 <= min_interval_us <= max_interval_us, got "
                f"{self.min_interval_us}, {self.max_interval_us}"
            )

    def keep(self, event: MarkObserved) -> bool:
        """Whether to record `event`; a kept mark becomes the one the next are measured from."""
        last = self._last.get(event.symbol)
        price, now = event.mark_price, event.recv_time_us
        if last is not None:
            last_price, last_time = last
            elapsed = now - last_time
            moved = CTX.multiply(CTX.subtract(price, last_price).copy_abs(), _BPS)
            far = moved >= CTX.multiply(self.move_bps, last_price.copy_abs())
            due = (far and elapsed >= self.min_interval_us) or (
                elapsed >= self.max_interval_us and price != last_price
            )
            if not due:
                self.dropped += 1
                return False
        self._last[event.symbol] = (price, now)
        self.kept += 1
        return True
