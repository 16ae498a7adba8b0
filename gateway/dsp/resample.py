"""Streaming resampling between a device's rate and the 16 kHz processing rate.

A voice path needs a resampler that turns every 20 ms chunk into 20 ms of output at once. soxr's
streaming API (python-soxr 1.1) doesn't: it releases output in bursts. Measured here, chunk outputs
for 20 ms chunks in: at 8 -> 16 kHz "LQ" gives 0, 0, 0, 940, 0, 0, 940 and "MQ" gives nothing for
five chunks and then 1732 samples (108 ms) at once; 48 -> 16 kHz "MQ" alternates 0 and 526; 44.1 ->
16 kHz "LQ" gives 325-327 with an occasional 0. Bursts like these starve the receiver's jitter
buffer and overflow the playback queue (a 8 kHz port scored PESQ 1.6 through them).

So streaming conversion here is a rational polyphase FIR in numpy (Kaiser-windowed sinc, 70 dB
stopband, passband to 90 % of the lower Nyquist), which yields every chunk's duration at once with a
fixed delay of a few milliseconds; soxr stays the tool for whole-file conversion (WAV inputs,
measurements), where bursts don't matter.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from gateway.audio.bridge import Frame

#: Stopband attenuation of the anti-aliasing / anti-imaging filter (dB).
STOPBAND_DB = 70.0
#: Up to this many phases, outputs are computed phase by phase (strided products); beyond, gathered.
GROUPED_MAX_UP = 8
#: Transition band as a fraction of the lower rate's Nyquist frequency.
TRANSITION = 0.1


class _Polyphase:
    """Resampling by ``up / down`` (coprime) with the input history carried between chunks."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        g = math.gcd(in_rate, out_rate)
        self.up, self.down = out_rate // g, in_rate // g
        high = in_rate * self.up  # rate of the (virtual) zero-stuffed stream
        nyquist_low = min(in_rate, out_rate) / 2
        width = 2 * math.pi * nyquist_low * TRANSITION / high  # rad/sample at ``high``
        taps = math.ceil((STOPBAND_DB - 7.95) / (2.285 * width))
        taps = -(-taps // self.up) * self.up  # whole taps per phase
        cutoff = nyquist_low * (1 - TRANSITION / 2) / (high / 2)
        n = np.arange(taps) - (taps - 1) / 2
        h = cutoff * np.sinc(cutoff * n) * np.kaiser(taps, 0.1102 * (STOPBAND_DB - 8.7))
        h *= self.up / h.sum()
        # phases[p][k] = h[p + k*up]; each output sample uses one phase against the newest inputs.
        self.per_phase = taps // self.up
        self.phases = h.reshape(self.per_phase, self.up).T.copy()
        self.delay_ms = (taps - 1) / 2 / high * 1000
        self._history = np.zeros(self.per_phase - 1)
        self._inputs = 0  # input samples consumed so far
        self._outputs = 0  # output samples produced so far
        self._reversed = self.phases[:, ::-1].copy()  # windows hold oldest first

    def process(self, chunk: Frame) -> Frame:
        buf = np.concatenate([self._history, chunk.astype(np.float64)])
        self._inputs += len(chunk)
        # Output n sits at position n*down on the zero-stuffed grid; it needs inputs up to
        # (n*down)//up, so every output whose newest input has arrived is produced now.
        last = (self._inputs * self.up - 1) // self.down  # newest output index computable
        n = np.arange(self._outputs, last + 1)
        self._outputs = last + 1
        pos = n * self.down
        first = pos // self.up - (self._inputs - len(buf)) - (self.per_phase - 1)  # window starts
        windows = sliding_window_view(buf, self.per_phase)
        if self.up > GROUPED_MAX_UP:
            # Many phases (44.1 kHz: 160 or 441), each used once or twice a chunk: gather.
            y = np.einsum("ij,ij->i", self._reversed[pos % self.up], windows[first])
            self._history = buf[len(buf) - len(self._history):]
            gathered: Frame = np.clip(np.rint(y), -32768, 32767).astype(np.int16)
            return gathered
        y = np.empty(len(n))
        # Outputs n and n+up use the same phase and windows ``down`` inputs apart: one strided
        # matrix-vector product per phase instead of a gather per output (7x faster at 48 kHz).
        for g in range(min(self.up, len(n))):
            rows = first[g:: self.up]
            if len(rows):
                block = windows[rows[0]: rows[-1] + 1: self.down]
                y[g:: self.up] = block @ self._reversed[pos[g] % self.up]
        self._history = buf[len(buf) - len(self._history):]
        out: Frame = np.clip(np.rint(y), -32768, 32767).astype(np.int16)
        return out


class Resampler:
    """Converts a stream chunk by chunk with a fixed, small delay; a no-op when the rates match."""

    def __init__(self, in_rate_hz: int, out_rate_hz: int) -> None:
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self._poly = None if in_rate_hz == out_rate_hz else _Polyphase(in_rate_hz, out_rate_hz)
        self.delay_ms = 0.0 if self._poly is None else self._poly.delay_ms
        """Group delay the conversion adds."""

    def process(self, chunk: Frame) -> Frame:
        """Resample the next chunk: its duration comes out now (to within a sample)."""
        if self._poly is None:
            return chunk
        return self._poly.process(chunk)


