"""High-pass filtering: DC, handling rumble and mains hum below the voice band go first.

A 4th-order Butterworth high-pass at ``cutoff_hz`` (default 100 Hz): 24 dB per octave, so 50 Hz
mains hum loses about 24 dB and DC goes entirely, while a low male voice (fundamental from ~85 Hz)
keeps its harmonics, which carry the pitch. It runs as scipy's ``lfilter`` in float64 with its state
carried between blocks: ``sosfilt`` would be the textbook form, but its Python-side checks cost
37 µs per 20 ms block here against lfilter's 7.5, and at 100 Hz / 16 kHz the direct form is well
conditioned in float64 (a test checks it against the biquad cascade). Minimum phase, so it adds no
latency worth stating (group delay ~1 ms near the cutoff, well under 0.1 ms in the voice band).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.signal import butter, lfilter, lfilter_zi


class HighPass:
    """Streaming high-pass filter for float32 audio."""

    def __init__(self, cutoff_hz: float = 100.0, rate_hz: int = 16000, order: int = 4) -> None:
        if not 0 < cutoff_hz < rate_hz / 2:
            raise ValueError(f"cutoff must be between 0 and {rate_hz // 2} Hz, got {cutoff_hz}")
        self.b, self.a = butter(order, cutoff_hz, btype="highpass", fs=rate_hz)
        self._zi = lfilter_zi(self.b, self.a) * 0.0

    def process(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Filter the next block, carrying the filter state across calls."""
        y, self._zi = lfilter(self.b, self.a, x, zi=self._zi)
        return y.astype(np.float32)  # type: ignore[no-any-return]
