"""AGC: reaches its target on speech, never passes its cap, and never moves on non-speech."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dsp.agc import AutomaticGain


def _tone(level_dbfs: float, blocks: int) -> np.ndarray:
    t = np.arange(320 * blocks) / 16000
    amp = 10 ** (level_dbfs / 20)  # a sine's RMS re full-scale sine = its peak re full scale
    return (amp * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _run(agc: AutomaticGain, x: np.ndarray, speech: bool) -> np.ndarray:
    return np.concatenate([agc.process(x[i: i + 320], speech).copy() for i in range(0, len(x), 320)])


def test_quiet_talker_brought_to_target() -> None:
    agc = AutomaticGain(target_dbfs=-20, max_gain_db=24)
    y = _run(agc, _tone(-35, 500), speech=True)  # 10 s
    tail = y[-16000:]
    level = 10 * np.log10(np.mean(tail.astype(np.float64) ** 2)) + 3.01
    assert abs(level - (-20)) < 1.0


def test_loud_talker_turned_down() -> None:
    agc = AutomaticGain(target_dbfs=-20)
    _run(agc, _tone(-8, 500), speech=True)
    assert -13 <= agc.gain_db <= -11


def test_gain_frozen_without_speech() -> None:
    agc = AutomaticGain()
    _run(agc, _tone(-35, 100), speech=True)
    before = agc.gain_db
    y = _run(agc, _tone(-60, 200), speech=False)  # a quiet room: no pumping
    assert agc.gain_db == before
    assert np.max(np.abs(y)) <= 10 ** (-60 / 20) * 10 ** (before / 20) * 1.001


@settings(max_examples=50, deadline=None)
@given(st.floats(-90, 0), st.floats(0, 40))
def test_gain_never_exceeds_cap(level: float, cap: float) -> None:
    agc = AutomaticGain(max_gain_db=cap)
    x = _tone(level, 50)
    y = _run(agc, x, speech=True)
    assert agc.gain_db <= cap + 1e-9
    assert np.all(np.abs(y) <= np.abs(x) * 10 ** (cap / 20) * 1.0001 + 1e-12)


def test_gain_changes_are_ramped() -> None:
    agc = AutomaticGain()
    x = np.full(320, 0.01, np.float32)
    agc.process(x, True)
    y = agc.process(x, True)
    steps = np.abs(np.diff(y))
    assert steps.max() < 1e-5  # a ramp, not a jump at the block edge


def test_silence_stays_silent() -> None:
    agc = AutomaticGain()
    assert not np.any(_run(agc, np.zeros(3200, np.float32), speech=True))
