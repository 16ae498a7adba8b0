"""Voice activity: a decision per 10 ms hop, with hangover, and the pre-roll a hands-free gate needs.

The detector decides on the statistic the noise suppressor already computes for every hop: the log
likelihood ratio of speech, averaged over each of five sub-bands from 200 Hz to 4 kHz (the best
sub-band counts), under Gaussian speech and noise models with the decision-directed a-priori SNR
(Sohn, Kim & Sung, "A statistical model-based voice activity detection", IEEE SPL 6(1), 1999),
against a noise estimate that tracks non-stationary noise. So the decision is relative to the noise
that is actually there: a generator, pump or fan raises the floor, not the detector's output. The
ratio is smoothed with a recursive average (speech persists over hops, noise flukes don't).
Speech starts when the smoothed ratio stays above ``threshold`` for two consecutive hops and lasts
until it falls below the lower ``release`` (word tails are quieter than their onsets), plus
``hangover_ms``.

Two gates keep a hands-free channel from hanging open on what follows a talker rather than on the
talker: a hop only counts as speech while its level above the noise is within ``range_db`` of the
talker's recent peak (a room's echo and a word's decay, 35 dB down, are not speech) and at least
``snr_min_db`` above the noise in the same 200 Hz-4 kHz span. On the benchmark's quick material
(white, pink, hum at 0-20 dB) they took the worst false-alarm rate from 13.5 % (hum, 20 dB; most of
it in the 150 ms after speech) to under 5 %, with speech missed at 20 dB SNR still under 5 %; the
price is weak speech in loud noise (at 0 dB SNR about a third of the speech hops are missed, mostly
quiet ones inside words, which the talk gate's hold bridges).

A third gate is for noise that starts or swells (a generator, a pump): until the noise estimate has
caught up (about 3 s) the new noise reads as loud "speech", but its level above the old noise is
steady from hop to hop, where a talker's rises and falls with every syllable. A hop whose level
has spread less than ``steady_db`` (1.5 dB) over the last 0.5 s is not speech: after a 20 dB noise
step a hands-free port now transmits 1.1 s instead of 4.2 s, with accuracy, misses and false alarms
on the benchmark's quick material unchanged (a 2 dB limit began to miss speech at 20 dB SNR).

:class:`PreRoll` keeps the last ``preroll_ms`` of uplink audio, so when the detector opens the talk
gate the transmission starts with the syllable that opened it, not after it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from gateway.dsp.compiled import compiled

HOP_MS = 10
#: How fast the remembered peak of the talker's level sinks (dB per hop), 2 dB/s: a talker up to
#: ``range_db`` quieter than the last one is heard at once, one 43 dB quieter after 5 s.
_PEAK_DECAY_DB = 0.02
#: Hops (0.5 s) over which a level as steady as machinery (spread under ``steady_db``) is not a talker.
_STEADY_HOPS = 50
#: The level the steadiness window starts from: nothing heard yet.
_QUIET_DB = -100.0


#: Slots of the detector's state array; the steadiness ring follows them.
_SMOOTHED, _RUN, _ACTIVE, _HOLD, _PEAK, _RING_AT, _RING_SUM, _RING_SQ, _RING = range(9)


@compiled("void(float64[:], float64[:], float64[:], boolean, float64[:], float64[:], boolean[:])")
def _decide(llrs: np.ndarray, levels: np.ndarray, snrs: np.ndarray, gated: bool, state: np.ndarray,
            params: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """The detector's rules over a block's hops (see :class:`VoiceActivityDetector`), compiled: in
    Python they were 10-14 µs of a 20 ms frame. ``gated``: levels and SNRs are given."""
    threshold, release, hangover, a = params[0], params[1], params[2], params[3]
    range_db, snr_min, steady = params[4], params[5], params[6]
    shut = release - 1e-6
    for i in range(llrs.shape[0]):
        s = a * state[_SMOOTHED] + (1.0 - a) * llrs[i]
        state[_SMOOTHED] = s
        if gated:
            level = levels[i]
            at = int(state[_RING_AT])
            old = state[_RING + at]
            state[_RING + at] = level
            state[_RING_AT] = (at + 1) % _STEADY_HOPS
            state[_RING_SUM] += level - old
            state[_RING_SQ] += level * level - old * old
            mean = state[_RING_SUM] / _STEADY_HOPS
            spread = math.sqrt(max(state[_RING_SQ] / _STEADY_HOPS - mean * mean, 0.0))
            state[_PEAK] -= _PEAK_DECAY_DB
            if spread < steady or level < state[_PEAK] - range_db or snrs[i] < snr_min:
                s = min(s, shut)  # machinery-steady, far below the talker, or lost in the noise
        state[_RUN] = state[_RUN] + 1.0 if s > threshold else 0.0
        if state[_RUN] >= 2:
            state[_ACTIVE] = 1.0
        elif state[_ACTIVE] > 0 and s < release:
            state[_ACTIVE] = 0.0
            state[_HOLD] = hangover
        if state[_ACTIVE] > 0:
            if gated:
                state[_PEAK] = max(state[_PEAK], levels[i])
            out[i] = True
        elif state[_HOLD] > 0:
            state[_HOLD] -= 1.0
            out[i] = True
        else:
            out[i] = False


class VoiceActivityDetector:
    """Speech/non-speech per 10 ms hop from the noise suppressor's per-hop likelihood ratios."""

    def __init__(
        self,
        threshold: float = 1.0,
        release: float = 0.5,
        hangover_ms: int = 20,
        smoothing: float = 0.8,
        range_db: float = 33.0,
        snr_min_db: float = -5.0,
        steady_db: float = 1.5,
    ) -> None:
        # The rules read their settings from here (fixed at construction).
        self._params = np.array([threshold, release, max(0, hangover_ms // HOP_MS), smoothing,
                                 range_db, snr_min_db, steady_db], np.float64)
        self._state = np.zeros(_RING + _STEADY_HOPS)
        self._state[_PEAK] = -np.inf  # the talker's recent peak hop level: none heard yet
        self._state[_RING:] = _QUIET_DB  # the steadiness window starts from silence
        self._state[_RING_SUM] = _QUIET_DB * _STEADY_HOPS
        self._state[_RING_SQ] = _QUIET_DB * _QUIET_DB * _STEADY_HOPS
        self._out = np.zeros(2, np.bool_)
        self._none = np.zeros(2)
        self.decisions: list[bool] = [False, False]
        """The decision for each hop of the last block (oldest first)."""

    @property
    def speech(self) -> bool:
        """The latest decision."""
        return self.decisions[-1]

    def update(self, hop_llr: Sequence[float] | NDArray[np.float64],
               hop_level: Sequence[float] | NDArray[np.float64] | None = None,
               hop_snr: Sequence[float] | NDArray[np.float64] | None = None) -> list[bool]:
        """Decide each hop from its mean log likelihood ratio and (when given) its level and SNR
        above the noise; return the decisions."""
        n = len(hop_llr)
        if len(self._out) != n:  # blocks of one hop (10 ms frames)
            self._out = np.zeros(n, np.bool_)
            self._none = np.zeros(n)
        llrs = np.asarray(hop_llr, np.float64)
        gated = hop_level is not None
        levels = np.asarray(hop_level, np.float64) if hop_level is not None else self._none
        if hop_snr is not None:
            snrs = np.asarray(hop_snr, np.float64)
        else:
            snrs = self._none + np.inf if gated else self._none
        _decide(llrs, levels, snrs, gated, self._state, self._params, self._out)
        self.decisions = self._out.tolist()
        return self.decisions


class PreRoll:
    """A delay line of up to ``capacity`` samples that a closed talk gate keeps audio in.

    While the gate is shut, :meth:`push` keeps the most recent ``capacity`` samples and hands back
    what falls out (the uplink consumes it to keep its RTP clock on audio time). When the gate
    opens, :meth:`drain` releases the held audio, oldest first, so the transmission starts
    ``capacity`` samples before the detection and the timestamps stay continuous.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._buf = np.zeros(capacity + 8192, dtype=np.int16)
        self._fill = 0

    def push(self, chunk: NDArray[np.int16]) -> NDArray[np.int16]:
        """Append ``chunk``; return the oldest samples beyond ``capacity`` (possibly none)."""
        n = len(chunk)
        if self._fill + n > len(self._buf):  # a huge chunk: grow once rather than fail
            self._buf = np.concatenate([self._buf[: self._fill], np.zeros(n, dtype=np.int16)])
        self._buf[self._fill: self._fill + n] = chunk
        self._fill += n
        excess = self._fill - self.capacity
        if excess <= 0:
            return self._buf[:0]
        out = self._buf[:excess].copy()
        self._buf[: self.capacity] = self._buf[excess: self._fill]
        self._fill = self.capacity
        return out

    def drain(self) -> NDArray[np.int16]:
        """Everything held, oldest first; the line is empty afterwards."""
        out = self._buf[: self._fill].copy()
        self._fill = 0
        return out

    def __len__(self) -> int:
        return self._fill
