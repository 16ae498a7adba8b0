"""Contact-bounce filter for one button: a pure core, time passed in.

A mechanical contact chatters for a few milliseconds when it closes or opens. :class:`Debouncer`
takes every raw level the pin reports, with the time it was seen, and lets a level count only once
it has held for ``debounce_ms`` without changing. No I/O, no clock reads, no asyncio: the caller
(:class:`gateway.gpio.panel.Panel`) feeds it levels and asks again at :attr:`Debouncer.due_ms`.

Times are milliseconds on any monotonic clock and must not go backwards. Levels are plain
booleans (for a push-to-talk button: True = pressed); the stable level changes only by alternating.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Change:
    """The stable level became ``level`` at ``at_ms`` (when the raw level had held long enough)."""

    level: bool
    """The new stable level."""
    at_ms: float
    """When it started to count: the raw change that led to it plus ``debounce_ms``."""


class Debouncer:
    """Turns raw, bouncing level changes into stable ones."""

    def __init__(self, debounce_ms: float, initial: bool = False) -> None:
        if debounce_ms < 0:
            raise ValueError(f"debounce_ms must be >= 0, got {debounce_ms}")
        self.debounce_ms = debounce_ms
        self._stable = initial
        self._raw = initial
        self._raw_since_ms: float | None = None
        """When the raw level last changed; None until the first change."""

    @property
    def stable(self) -> bool:
        """The stable level as of the last :meth:`feed` or :meth:`poll`."""
        return self._stable

    @property
    def due_ms(self) -> float | None:
        """When the pending raw level will count if it holds; None when nothing is pending."""
        if self._raw == self._stable or self._raw_since_ms is None:
            return None
        return self._raw_since_ms + self.debounce_ms

    def state_at(self, now_ms: float) -> bool:
        """The stable level at ``now_ms``, without changing anything."""
        due = self.due_ms
        return self._raw if due is not None and now_ms >= due else self._stable

    def feed(self, level: bool, now_ms: float) -> Change | None:
        """Record the raw level seen at ``now_ms``; return the change it completes, if any.

        A pending level that had already held long enough before ``now_ms`` is committed first, so a
        late caller loses no press. A repeated level (an edge missed in between) changes nothing.
        """
        change = self.poll(now_ms)
        if level != self._raw:
            self._raw = level
            self._raw_since_ms = now_ms
            if change is None:
                # With debounce_ms == 0 the new level counts at once.
                change = self.poll(now_ms)
        return change

    def poll(self, now_ms: float) -> Change | None:
        """Commit the pending level if it has held ``debounce_ms`` by ``now_ms``."""
        due = self.due_ms
        if due is None or now_ms < due:
            return None
        self._stable = self._raw
        return Change(self._stable, due)
