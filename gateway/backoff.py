"""Jittered exponential backoff, shared by every supervised dependency (ALSA devices, the broker)."""

from __future__ import annotations

import random


class Backoff:
    """Jittered exponential delays: the n-th is uniform in [min_s, min(max_s, min_s * 2**n)].

    Jitter keeps a site's boxes from reconnecting in lockstep after their broker restarts. Pure:
    the randomness is injected, so a seeded ``random.Random`` makes the sequence a table.
    """

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError(f"need 0 < min_s <= max_s, got {min_s}, {max_s}")
        self.min_s = min_s
        self.max_s = max_s
        self._rng = rng or random.Random()
        self._ceiling = min_s

    def next(self) -> float:
        """The delay before the next attempt."""
        self._ceiling = min(self.max_s, self._ceiling * 2)
        return self._rng.uniform(self.min_s, self._ceiling)

    def reset(self) -> None:
        """Start again from the shortest delays (after a successful connection)."""
        self._ceiling = self.min_s
