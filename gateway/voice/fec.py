"""Adaptive FEC: a sender protects its voice with Opus in-band FEC only while its listeners lose it.

Opus's in-band FEC (LBRR) re-sends a coarse copy of each frame inside the next packet; the decoder
rebuilds a lost frame from it. It costs bits that the primary encoding no longer gets, so with
nothing lost it only lowers quality (bench/network.py measures how much), and the encoder's
``expected_loss_pct`` hint sets how many bits it spends. So the sender follows what its listeners
report (reception reports ride the group's announcements, :mod:`gateway.net.announce`):

- on when the worst recent report shows at least :data:`ON_LOSS` loss, with the hint set a little
  above that loss (the FEC then covers it, libopus spends more on it the higher the hint);
- the hint follows the worst report up at once and down slowly;
- off again only after every report has shown less than :data:`OFF_LOSS` for :data:`CLEAN_HOLD_S`,
  so a link that loses in bursts doesn't toggle it on every report.

Pure: time passed in, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ON_LOSS = 0.01
"""Worst listener loss (fraction) that turns FEC on."""
OFF_LOSS = 0.005
"""Below this everywhere for CLEAN_HOLD_S, FEC goes off again."""
CLEAN_HOLD_S = 10.0
HINT_MARGIN_PCT = 5
"""The loss hint is the worst loss seen plus this, in percent (capped at MAX_HINT_PCT)."""
MIN_HINT_PCT = 10
MAX_HINT_PCT = 40
HINT_DECAY_PER_S = 1.0
"""How fast (percentage points per second) the hint comes down after the loss does."""


@dataclass(frozen=True)
class Protection:
    """What the encoder should do."""

    fec: bool
    expected_loss_pct: int


class FecPolicy:
    """Turns listeners' loss reports into the encoder's FEC setting for one sender."""

    def __init__(self, initial: Protection = Protection(False, 0)) -> None:
        self.current = initial
        self._hint = float(initial.expected_loss_pct)
        self._clean_since: float | None = None
        self._last_s: float | None = None

    def update(self, worst_loss: float | None, now_s: float) -> Protection:
        """The setting after a look at the worst loss any listener reports now (None: no reports,
        e.g. nobody heard us lately: keep what we have)."""
        elapsed = 0.0 if self._last_s is None else max(0.0, now_s - self._last_s)
        self._last_s = now_s
        if worst_loss is None:
            return self.current
        if worst_loss >= ON_LOSS:
            self._clean_since = None
            wanted = min(MAX_HINT_PCT, max(MIN_HINT_PCT, math.ceil(worst_loss * 100) + HINT_MARGIN_PCT))
            self._hint = max(wanted, self._hint - HINT_DECAY_PER_S * elapsed)
            self.current = Protection(True, round(self._hint))
        elif self.current.fec:
            if worst_loss < OFF_LOSS:
                if self._clean_since is None:
                    self._clean_since = now_s
                elif now_s - self._clean_since >= CLEAN_HOLD_S:
                    self._hint = 0.0
                    self._clean_since = None
                    self.current = Protection(False, 0)
                    return self.current
            else:
                self._clean_since = None
            self._hint = max(MIN_HINT_PCT, self._hint - HINT_DECAY_PER_S * elapsed)
            self.current = Protection(True, round(self._hint))
        return self.current
