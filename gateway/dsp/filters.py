"""High-pass filtering: DC, handling rumble and mains hum below the voice band go first.

A 4th-order Butterworth high-pass at ``cutoff_hz`` (default 100 Hz): 24 dB per octave, so 50 Hz
mains hum loses about 24 dB and DC goes entirely, while a low male voice (fundamental from ~85 Hz)
keeps its harmonics, which carry the pitch. It runs as a cascade of biquads (second-order sections,
transposed direct form II, float64 state carried between blocks), compiled with numba: scipy's
``sosfilt`` costs 37 µs per 20 ms block in its Python-side checks and ``lfilter`` 7.5-25, against
about 1 µs for the loop. Minimum phase, so it adds no latency worth stating (group delay ~1 ms near
the cutoff, well under 0.1 ms in the voice band).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.signal import butter

from gateway.dsp.compiled import compiled


@compiled("void(float32[:], float64[:, :], float64[:, :], float32[:])")
def _sos_filter(x: np.ndarray, sos: np.ndarray, state: np.ndarray, out: np.ndarray) -> None:
    """Filter ``x`` into ``out`` through the sections of ``sos`` (b0 b1 b2 a0 a1 a2, a0 = 1)."""
    for n in range(x.shape[0]):  # pragma: no cover - compiled
        y = np.float64(x[n])
        for s in range(sos.shape[0]):
            v = y
            y = sos[s, 0] * v + state[s, 0]
            state[s, 0] = sos[s, 1] * v - sos[s, 4] * y + state[s, 1]
            state[s, 1] = sos[s, 2] * v - sos[s, 5] * y
        out[n] = y


class HighPass:
    """Streaming high-pass filter for float32 audio."""

    def __init__(self, cutoff_hz: float = 100.0, rate_hz: int = 16000, order: int = 4) -> None:
        if not 0 < cutoff_hz < rate_hz / 2:
            raise ValueError(f"cutoff must be between 0 and {rate_hz // 2} Hz, got {cutoff_hz}")
        self.sos = np.ascontiguousarray(butter(order, cutoff_hz, btype="highpass", fs=rate_hz, output="sos"),
                                        dtype=np.float64)
        self._state = np.zeros((len(self.sos), 2))
        self._out = np.zeros(0, np.float32)

    def process(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Filter the next block, carrying the filter state across calls. The result is the filter's
        own buffer, overwritten by the next call."""
        if len(self._out) != len(x):
            self._out = np.zeros(len(x), np.float32)
        _sos_filter(np.ascontiguousarray(x, dtype=np.float32), self.sos, self._state, self._out)
        return self._out
