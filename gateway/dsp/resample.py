"""Streaming resampling between a device's rate and the 16 kHz processing rate.

A voice path needs a resampler that turns every 20 ms chunk into 20 ms of output at once, with a
small constant delay, in a few tens of microseconds. soxr's streaming API can't, with any setting
python-soxr 1.1 (libsoxr 0.1.3) reaches (the five qualities, and through its ``soxr_ext.CSoxr``
the other recipes, phase responses, int16 or float32 and ``vr``). Measured with 20 ms chunks in:

- The filtering engine ("cr") convolves by FFT in blocks of at least 1024 points (libsoxr's
  ``log2_min_dft_size``; python-soxr passes no runtime spec, so it can't be lowered) and releases
  output a block at a time: 8 -> 16 kHz "MQ" gives nothing for five chunks, then 1732 samples
  (108 ms); 48 -> 16 kHz "MQ" alternates 0 and 526, "LQ" gives 300 or 600 instead of 320. A FIFO
  that returns exactly 20 ms per call must first hold the worst deficit: at 48 kHz 20 ms (LQ),
  37-38 ms (MQ, HQ), 76 ms (VHQ); at 44.1 kHz 22-84 ms; at 8 kHz 61-118 ms. Other recipes, phase
  responses and dtypes change the block, not the bursts. Bursts starve the receiver's jitter buffer
  and overflow the playback queue (a 8 kHz port scored PESQ 1.6 through them).
- The variable-rate engine (``vr=True``) is steady but holds back 12.5-15 ms per conversion (30 ms
  at 8 -> 16 kHz) and costs 80-95 µs per chunk from 48 or 44.1 kHz.
- "QQ" (cubic interpolation) is steady and adds no delay, but filters nothing: 48 -> 16 kHz drops
  samples (a 9.2 kHz tone aliases at full level), and 7 kHz comes out 4.6 dB down.
- "LQ" happens to be steady at 16 -> 44.1 kHz (1.3 ms), but its passband ends near 6 kHz (7 kHz is
  12.8 dB down), and the steadiness is an accident of the stages libsoxr picks for that ratio.

So streaming conversion here is a rational polyphase FIR (Kaiser-windowed sinc) computed as matrix
products; soxr stays the tool for whole-file conversion (WAV inputs, measurements), where bursts
don't matter.

Filter. Flat to within 0.003 dB up to 87.5 % of the lower rate's Nyquist frequency (7 kHz at 16
kHz, 3.5 kHz at 8 kHz), 70 dB down from 112.5 % of it. The only aliases are of input between the
Nyquist frequency and the stopband edge, and they land above the passband (7-8 kHz; 3.5-4 kHz at
8 kHz), 6 to 70 dB down. This transition band is what keeps the filter short: 35 taps per output
upsampling, 70-104 downsampling, and 1.1 ms of delay at 32, 44.1 and 48 kHz, 2.2 ms at 8 kHz.

Speed. Output ``n`` is phase ``n*down % up`` of the filter dotted with the newest inputs, so outputs
come in periods of ``up`` that advance ``down`` inputs with the same coefficients. A call copies the
input windows of the periods it completes into one matrix (one copy out of a strided view) and
multiplies it by a fixed coefficient matrix: one float32 BLAS call for the chunk. A period of many
outputs (441 at 16 -> 44.1 kHz) is split into groups whose windows start a fixed stride apart, or
most of the product would be zeros; periods of few outputs (one at 48 -> 16 kHz) are joined, or the
product would be too thin. A 20 ms chunk costs 9-20 µs on the development VM, against 65-220 µs
for the per-output loop this replaced. Every output whose inputs have arrived comes out in the call
that completed them: a 20 ms chunk yields exactly 20 ms at every supported rate, any chunk yields
its duration to within a sample, and the delay is the filter's, from the first sample to the last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

from gateway.audio.bridge import Frame

#: Stopband attenuation of the anti-aliasing / anti-imaging filter (dB).
STOPBAND_DB = 70.0
#: Passband edge and stopband edge, as fractions of the lower rate's Nyquist frequency.
PASSBAND_EDGE = 0.875
STOPBAND_EDGE = 1.125
#: Chunk length the buffers are sized for up front (a longer chunk reallocates them, once).
_PREALLOCATED_MS = 40
#: Periods of few outputs are joined up to this many outputs; a group has at most _MAX_GROUP.
_MAX_JOINED = 64
_MAX_GROUP = 160
#: Costs, in multiply-adds, of one BLAS call and of copying one window, for choosing a grouping.
_CALL_COST = 1500
_ROW_COST = 200

_Array = npt.NDArray[np.float32]


def _design(in_rate: int, out_rate: int, up: int) -> npt.NDArray[np.float64]:
    """Kaiser-windowed sinc at ``in_rate * up`` (gain ``up``), a whole number of taps per phase."""
    high = in_rate * up
    nyquist_low = min(in_rate, out_rate) / 2
    width = 2 * math.pi * nyquist_low * (STOPBAND_EDGE - PASSBAND_EDGE) / high  # rad/sample
    taps = math.ceil((STOPBAND_DB - 7.95) / (2.285 * width))
    taps = -(-taps // up) * up
    cutoff = nyquist_low * (PASSBAND_EDGE + STOPBAND_EDGE) / 2 / (high / 2)
    n = np.arange(taps) - (taps - 1) / 2
    h: npt.NDArray[np.float64] = cutoff * np.sinc(cutoff * n)
    h *= np.kaiser(taps, 0.1102 * (STOPBAND_DB - 8.7))
    h *= up / h.sum()
    return h


@dataclass(frozen=True)
class _Plan:
    """How outputs are grouped into matrix products (see the module docstring)."""

    period_out: int
    """Outputs per (super-)period, ``r * up``."""
    period_in: int
    """Inputs a (super-)period advances, ``r * down``."""
    group: int
    """Outputs per group: a period is ``period_out // group`` groups."""
    stride: int
    """Inputs between the windows of consecutive groups."""
    window: int
    """Inputs one group's window spans."""

    @property
    def groups(self) -> int:
        """Groups per period."""
        return self.period_out // self.group


def _plan(up: int, down: int, per_phase: int, outputs: int) -> _Plan:
    """The grouping with the least estimated work for chunks of ``outputs`` outputs.

    The estimate (multiply-adds, zeros included; a product narrower than 16 outputs costs as if 16
    wide; a cost per BLAS call and per window copied) was fitted to timings of every grouping of
    the 8-48 kHz pairs, where the best few time alike.
    """
    best: tuple[float, _Plan] | None = None
    for r in range(1, max(1, _MAX_JOINED // up) + 1):
        period_out, period_in = r * up, r * down
        for group in range(1, min(period_out, _MAX_GROUP) + 1):
            if period_out % group:
                continue
            groups = period_out // group
            stride = group * down // up
            # Output i's window-relative inputs: i*down//up - g*stride (>= 0) and per_phase - 1 on.
            window = per_phase + max(
                ((g + 1) * group - 1) * down // up - g * stride for g in range(groups)
            )
            rows = outputs / period_out * groups
            cost = rows * (window * max(group, 16) + _ROW_COST) + groups * _CALL_COST
            if best is None or cost < best[0]:
                best = (cost, _Plan(period_out, period_in, group, stride, window))
    assert best is not None
    return best[1]


class _Polyphase:
    """Resampling by ``up / down`` (coprime) with the input history carried between chunks."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        g = math.gcd(in_rate, out_rate)
        self.up, self.down = out_rate // g, in_rate // g
        h = _design(in_rate, out_rate, self.up)
        self.delay_ms = (len(h) - 1) / 2 / (in_rate * self.up) * 1000
        self.per_phase = len(h) // self.up
        plan = self.plan = _plan(self.up, self.down, self.per_phase, out_rate // 50)
        # coefs[g, k, j]: weight of window input k in output j of group g. Output i of a period
        # uses phase i*down % up (reversed: windows hold the oldest input first) on the inputs
        # ending at floor(i*down/up).
        phases = h.reshape(self.per_phase, self.up).T[:, ::-1]
        coefs = np.zeros((plan.groups, plan.window, plan.group), np.float32)
        for i in range(plan.period_out):
            grp, j = divmod(i, plan.group)
            first = i * self.down // self.up - grp * plan.stride
            coefs[grp, first: first + self.per_phase, j] = phases[i * self.down % self.up]
        self._coefs = coefs
        self._inputs = 0  # input samples consumed so far
        self._outputs = 0  # output samples produced so far
        # The buffer starts at the first input of the first period not yet finished, minus the
        # history a window reaches back: inputs before the stream are silence.
        self._filled = self.per_phase - 1
        self._buffers: tuple[_Array, _Array] = (np.zeros(self._filled, np.float32),) * 2
        self._current = 0  # which of the two buffers holds the stream (the other is the next one)
        self._lo, self._hi = np.float32(-32768), np.float32(32767)
        self._allocate(in_rate * _PREALLOCATED_MS // 1000)

    def _allocate(self, chunk: int) -> None:
        """Buffers for chunks of up to ``chunk`` inputs, carrying what the current buffer holds."""
        plan = self.plan
        # Held between calls: the history plus under a period (and a rounding sample).
        held = self.per_phase + plan.period_in + self.down
        periods = (held + chunk) // plan.period_in + 2
        capacity = (periods - 1) * plan.period_in + (plan.groups - 1) * plan.stride + plan.window
        capacity = max(capacity, held + chunk)
        held_now = self._buffers[self._current][: self._filled]
        self._buffers = (np.zeros(capacity, np.float32), np.zeros(capacity, np.float32))
        self._buffers[0][: self._filled] = held_now
        self._current = 0
        # Every group's window in every period, read in place; copying them into _windows is what
        # a BLAS product needs (the windows overlap).
        size = self._buffers[0].itemsize
        shape = (periods, plan.groups, plan.window)
        strides = (plan.period_in * size, plan.stride * size, size)
        self._views = tuple(as_strided(b, shape, strides, writeable=False) for b in self._buffers)
        self._windows = np.empty(shape, np.float32)
        self._products = np.empty((periods, plan.groups, plan.group), np.float32)

    def process(self, chunk: Frame) -> Frame:
        """Every output whose newest input is in this chunk or before, as int16."""
        y = self._convolve(chunk)
        np.rint(y, out=y)
        np.minimum(y, self._hi, out=y)
        np.maximum(y, self._lo, out=y)
        return y.astype(np.int16)

    def process_float(self, chunk: Frame, scale: float) -> _Array:
        """As :meth:`process`, as float32 times ``scale``, unrounded and unclipped."""
        y: _Array = self._convolve(chunk) * np.float32(scale)
        return y

    def _convolve(self, chunk: Frame) -> _Array:
        """The new outputs, unrounded: a view of a buffer the next call overwrites."""
        n = len(chunk)
        plan = self.plan
        self._inputs += n
        # Output n needs inputs up to floor(n*down/up): produce every output whose newest input is in.
        last = (self._inputs * self.up - 1) // self.down
        first = self._outputs
        period = first // plan.period_out
        periods = last // plan.period_out - period + 1
        if self._filled + n > len(self._buffers[0]) or periods > len(self._windows):
            self._allocate(n)
        buf = self._buffers[self._current]
        buf[self._filled: self._filled + n] = chunk
        self._filled += n
        if last < first:
            return np.empty(0, np.float32)
        # The last period's windows may reach past the newest input (into stale, finite samples):
        # only its outputs not yet computable read there, and they are cut off below.
        windows = self._windows[:periods]
        np.copyto(windows, self._views[self._current][:periods])
        products = self._products[:periods]
        np.matmul(windows.transpose(1, 0, 2), self._coefs, out=products.transpose(1, 0, 2))
        start = first - period * plan.period_out
        y: _Array = products.reshape(-1)[start: start + last + 1 - first]
        self._outputs = last + 1
        # Drop the periods now finished, keeping the history the next period's windows reach back.
        drop = ((last + 1) // plan.period_out - period) * plan.period_in
        keep = self._filled - drop
        self._current ^= 1
        self._buffers[self._current][:keep] = buf[drop: self._filled]
        self._filled = keep
        return y


class Resampler:
    """Converts a stream chunk by chunk with a fixed, small delay; a no-op when the rates match."""

    def __init__(self, in_rate_hz: int, out_rate_hz: int) -> None:
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self._poly = None if in_rate_hz == out_rate_hz else _Polyphase(in_rate_hz, out_rate_hz)
        self.delay_ms = 0.0 if self._poly is None else self._poly.delay_ms
        """Group delay the conversion adds."""

    def process(self, chunk: Frame) -> Frame:
        """Resample the next chunk: its duration comes out now (to the sample, if a whole number)."""
        if self._poly is None:
            return chunk
        return self._poly.process(chunk)

    def process_float(self, chunk: Frame, scale: float) -> _Array:
        """As :meth:`process`, but float32 times ``scale``, unrounded (one pass fewer for a float
        consumer such as the uplink chain)."""
        if self._poly is None:
            return chunk * np.float32(scale)
        return self._poly.process_float(chunk, scale)
