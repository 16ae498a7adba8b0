"""Delay and PESQ measurement used by the demo, the tests and the benchmarks."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.audio.wav import read_wav
from gateway.sim.metrics import delay_samples, score_recording
from tests.rigs.voice import SPEECH


@pytest.mark.parametrize("lag", [0, 1, 160, 1234, 7999])
def test_delay_of_a_shifted_copy(lag: int) -> None:
    rng = np.random.default_rng(lag)
    sent = rng.normal(0, 1000, 16000)
    heard = np.concatenate([np.zeros(lag), sent])[: len(sent)]
    found, corr = delay_samples(sent, heard, 8000)
    assert found == lag
    assert corr > 0.5


@pytest.mark.parametrize("late_s", [-0.05, 0.0, 0.013, 0.2])
def test_score_recording_puts_the_listener_on_the_talkers_clock(late_s: float) -> None:
    clip, rate = read_wav(SPEECH)
    lead = rate // 2
    said = np.concatenate([np.zeros(lead, np.int16), clip, np.zeros(rate, np.int16)])
    delay = 1120  # 70 ms
    on_talker_clock = np.concatenate([np.zeros(delay, np.int16), said])
    start = round(late_s * rate)
    heard = on_talker_clock[start:] if start >= 0 else np.concatenate(
        [np.zeros(-start, np.int16), on_talker_clock])
    result = score_recording(said, heard, rate, late_s, lead, len(clip))
    assert result.delay_ms == pytest.approx(70.0, abs=0.1)
    assert result.pesq is not None and result.pesq > 4.4  # identical audio


def test_nothing_heard_scores_none() -> None:
    clip, rate = read_wav(SPEECH)
    said = np.concatenate([np.zeros(rate // 2, np.int16), clip, np.zeros(rate, np.int16)])
    result = score_recording(said, np.zeros(len(said), np.int16), rate, 0.0, rate // 2, len(clip))
    assert result.delay_ms is None and result.pesq is None
