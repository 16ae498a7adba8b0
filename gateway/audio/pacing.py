"""A period clock for devices that don't pace themselves (WAV files, ALSA file/null PCMs)."""

from __future__ import annotations

import threading
import time


class Pacer:
    """Wakes a device thread once per period on an absolute grid, so waits never accumulate drift.

    If the thread falls more than ``max_late`` periods behind (a stalled machine), the grid is
    moved forward instead of bursting to catch up; ``skips`` counts how often.
    """

    def __init__(self, period_s: float, start_at: float | None = None, max_late: int = 5) -> None:
        self.period_s = period_s
        self.started_at = time.monotonic() if start_at is None else start_at
        self._tick = 0
        self._max_late = max_late
        self.skips = 0

    def wait(self, stop: threading.Event) -> bool:
        """Sleep until the next period; False when ``stop`` was set meanwhile."""
        self._tick += 1
        due = self.started_at + self._tick * self.period_s
        delay = due - time.monotonic()
        if delay < -self._max_late * self.period_s:
            self.skips += 1
            self.started_at += -delay
            delay = 0.0
        if delay > 0:
            return not stop.wait(delay)
        return not stop.is_set()
