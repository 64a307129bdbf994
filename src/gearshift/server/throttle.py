"""Warnings that could repeat for every packet or connection, let through at a bounded rate."""

from __future__ import annotations

import time


class LogThrottle:
    """Lets a log line through at most once per ``interval`` seconds; counts the rest."""

    __slots__ = ("interval", "_at", "_held")

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._at = -1e9
        self._held = 0

    def ready(self) -> int | None:
        """None while the interval runs (this call is counted as held back); otherwise
        how many calls were held back since the last line let through."""
        now = time.monotonic()
        if now - self._at < self.interval:
            self._held += 1
            return None
        self._at = now
        held, self._held = self._held, 0
        return held
