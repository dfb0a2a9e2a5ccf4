"""Where the ACD's "now" comes from.

By default the scripts read the Redis server's own clock (TIME), so every process on
every machine agrees on when an offer or a wrap-up ends, whatever their own clocks say.
Tests inject a `ManualClock` and move time forward by hand: no sleeping.
"""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], int]
"""Milliseconds since the Unix epoch."""

SERVER_CLOCK: Clock | None = None
"""Passing no clock means: the Redis server's."""


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00Z
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float = 0, ms: int = 0) -> int:
        self.now_ms += round(seconds * 1000) + ms
        return self.now_ms
