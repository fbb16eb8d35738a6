"""The one clock of a Backpack session: this process's wall clock and the venue's.

Backpack checks every signed request and subscription against its own clock (a request is
refused once `timestamp + window` has passed), and answers fill-history queries in its own
time, while events record when *we* received them. So a session needs both: the local wall
clock for receive times, and the venue's time, estimated as local time plus an offset measured
from a round trip to the venue's time endpoint. The REST client, the WebSocket client and the
session share one `VenueClock`, so a resync after a refused signature moves them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

__all__ = ["VenueClock"]


@attrs.define(eq=False)
class VenueClock:
    """Local wall-clock time, and the venue's time as this process best knows it.

    `local_ns` reads the wall clock in nanoseconds since the epoch (tests pass their own);
    `offset_ms` is venue minus local time, 0 until `measure` has run.
    """

    local_ns: Callable[[], int] = time.time_ns
    offset_ms: int = 0

    def local_us(self) -> int:
        return self.local_ns() // 1_000

    def local_ms(self) -> int:
        return self.local_ns() // 1_000_000

    def venue_ms(self) -> int:
        return self.local_ms() + self.offset_ms

    def venue_us(self) -> int:
        return self.local_us() + self.offset_ms * 1_000

    def measure(self, *, sent_ms: int, venue_ms: int, received_ms: int) -> int:
        """Take the offset from one round trip: the venue's time is assumed to have been read
        halfway between sending and receiving. Returns the new offset."""
        self.offset_ms = venue_ms - (sent_ms + received_ms) // 2
        return self.offset_ms
