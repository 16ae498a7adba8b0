"""Automatic gain control: speech to a target active level, slowly, never pumping up the noise.

The level it steers by is the active speech level: the energy of 20 ms blocks the voice activity
detector calls speech, averaged in dB with separate time constants up (``attack_ms``) and down
(``release_ms``). The gain follows ``target - level`` within ``[-max_cut_db, max_gain_db]`` and is
frozen whenever there is no speech, so a quiet room or a pause never winds the gain up into the
noise. Gain changes are ramped linearly across each block: no zipper noise. Peaks are the limiter's
job, which comes after this stage.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray


class AutomaticGain:
    """Per-port AGC on blocks of float audio; ``speech`` for each block comes from the VAD."""

    def __init__(
        self,
        target_dbfs: float = -20.0,
        max_gain_db: float = 24.0,
        max_cut_db: float = 12.0,
        attack_ms: float = 500.0,
        release_ms: float = 2000.0,
        block_samples: int = 320,
        rate_hz: int = 16000,
    ) -> None:
        self.target_dbfs = target_dbfs
        self.max_gain_db = max_gain_db
        self.max_cut_db = max_cut_db
        block_ms = 1000 * block_samples / rate_hz
        self._k_up = 1 - math.exp(-block_ms / attack_ms)  # level rising = gain falling (attack)
        self._k_down = 1 - math.exp(-block_ms / release_ms)
        self.level_dbfs = target_dbfs
        """Active speech level estimate (dBFS; a full-scale sine is 0 dB). It starts at the target
        (gain 0 dB), so the first syllable, often a quiet onset, can't throw the gain up."""
        self.gain_db = 0.0
        self._gain = 1.0
        self._ramp = np.arange(1, block_samples + 1, dtype=np.float32) / block_samples
        self._out = np.zeros(block_samples, dtype=np.float32)

    def process(self, x: NDArray[np.float32], speech: bool) -> NDArray[np.float32]:
        """Apply the gain to one block; learn from it only when it is ``speech``."""
        if speech:
            energy = float(np.dot(x, x)) / len(x)
            if energy > 1e-10:
                block_db = 10 * math.log10(energy) + 3.01  # RMS re full-scale sine, like dBFS meters
                k = self._k_up if block_db > self.level_dbfs else self._k_down
                self.level_dbfs += k * (block_db - self.level_dbfs)
                self.gain_db = min(self.max_gain_db,
                                   max(-self.max_cut_db, self.target_dbfs - self.level_dbfs))
        new_gain = 10 ** (self.gain_db / 20)
        out = self._out[: len(x)]
        if new_gain == self._gain:
            np.multiply(x, np.float32(new_gain), out=out)
        else:
            ramp = self._ramp if len(x) == len(self._ramp) else np.linspace(
                1 / len(x), 1, len(x), dtype=np.float32)
            np.multiply(ramp, np.float32(new_gain - self._gain), out=out)
            out += np.float32(self._gain)
            out *= x
            self._gain = new_gain
        return out
