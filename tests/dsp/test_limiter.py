"""Soft limiter: never reaches full scale, transparent below the threshold, smooth and stateful."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.dsp.limiter import CEILING, SoftLimiter

RATE = 16000
BLOCK = 320


def _tone(amp: float, freq_hz: float, seconds: float, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (amp * np.sin(2 * np.pi * freq_hz * t + phase)).astype(np.float32)


def _run(lim: SoftLimiter, x: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Feed ``x`` (samples on the last axis) in blocks; the concatenated output."""
    return np.concatenate(
        [lim.process(x[..., i: i + block]).copy() for i in range(0, x.shape[-1], block)], axis=-1
    )


def _thd_db(y: np.ndarray, freq_hz: float) -> float:
    """Everything but the fundamental, relative to it (dB), over a Hann-windowed stretch."""
    spectrum = np.abs(np.fft.rfft(y.astype(np.float64) * np.hanning(len(y)))) ** 2
    k = round(freq_hz * len(y) / RATE)
    fundamental = spectrum[k - 3: k + 4].sum()
    return float(10 * np.log10((spectrum.sum() - fundamental) / fundamental))


finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 3 * BLOCK)), elements=finite_f32),
    st.floats(-20, 0),
)
def test_never_reaches_full_scale(x: np.ndarray, threshold_dbfs: float) -> None:
    lim = SoftLimiter(RATE, threshold_dbfs, channels=x.shape[0])
    for _ in range(2):  # fresh, then with the state the first pass left
        y = _run(lim, x, block=BLOCK)
        assert y.shape == x.shape
        assert np.all(np.abs(y) < 1.0)
        assert np.all(np.abs(y) <= np.float32(CEILING) * (1 + 1e-6))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1e-3, 3e38), min_size=1, max_size=6), st.integers(0, 2**32 - 1))
def test_loud_bursts_of_any_size_stay_inside(levels: list[float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    lim = SoftLimiter(RATE)
    for level in levels:
        x = (rng.uniform(-1, 1, BLOCK) * level).astype(np.float32)
        y = lim.process(x)
        assert np.all(np.isfinite(y))
        assert np.max(np.abs(y)) < 1.0


@pytest.mark.parametrize("threshold_dbfs", [-1.0, -6.0, -20.0])
@pytest.mark.parametrize("channels", [1, 3])
def test_transparent_below_threshold(threshold_dbfs: float, channels: int) -> None:
    rng = np.random.default_rng(1)
    peak = 10 ** (threshold_dbfs / 20)
    x = rng.uniform(-peak, peak, (channels, 50 * BLOCK)).astype(np.float32)
    x[:, 1000] = np.float32(peak)  # right at the threshold
    lim = SoftLimiter(RATE, threshold_dbfs, channels=channels)
    y = _run(lim, x if channels > 1 else x[0])
    np.testing.assert_array_equal(y, x if channels > 1 else x[0])


def test_transparent_again_once_released() -> None:
    lim = SoftLimiter(RATE)
    _run(lim, _tone(4.0, 300, 0.2))
    quiet = _tone(0.5, 300, 2.0)
    y = _run(lim, quiet)
    assert np.max(np.abs(y[:BLOCK] - quiet[:BLOCK])) > 0.01  # still releasing at first
    np.testing.assert_array_equal(y[-RATE // 2:], quiet[-RATE // 2:])


@pytest.mark.parametrize("channels", [1, 4])
def test_silence_in_silence_out(channels: int) -> None:
    lim = SoftLimiter(RATE, channels=channels)
    zeros = np.zeros((channels, BLOCK), np.float32)
    assert not np.any(lim.process(zeros))
    lim.process(np.full((channels, BLOCK), 100.0, np.float32))  # deep in limiting...
    assert not np.any(lim.process(zeros))  # ...still exactly silent


@pytest.mark.parametrize("freq_hz", [100.0, 440.0, 1000.0, 3000.0])
@pytest.mark.parametrize("amp", [1.0, 2.0, 10.0])
def test_loud_sine_held_at_threshold_with_low_distortion(freq_hz: float, amp: float) -> None:
    lim = SoftLimiter(RATE, threshold_dbfs=-1.0)
    y = _run(lim, _tone(amp, freq_hz, 1.0))
    tail = y[RATE // 2:]  # after the attack
    peak_dbfs = 20 * np.log10(np.max(np.abs(tail)))
    assert -1.2 < peak_dbfs < -0.9
    assert _thd_db(tail, freq_hz) < -60  # the hold keeps the gain still between peaks


def test_onset_is_caught_within_a_millisecond() -> None:
    lim = SoftLimiter(RATE)
    x = np.concatenate([_tone(0.1, 440, 0.02), _tone(8.0, 440, 0.02, phase=1.0)])
    y = _run(lim, x)
    onset = BLOCK
    assert np.max(np.abs(y)) < CEILING + 1e-6
    assert np.max(np.abs(y[onset + lim.sub_block:])) < 10 ** (-1 / 20) * 1.001


def test_gain_changes_are_ramped_not_stepped() -> None:
    """During release the gain moves every sample by a small amount, never in steps."""
    lim = SoftLimiter(RATE)
    lim.process(np.full(BLOCK, 4.0, np.float32))
    dc = np.full(BLOCK, 0.5, np.float32)  # output = gain * 0.5
    y = _run(lim, np.tile(dc, 20))
    steps = np.abs(np.diff(y))
    assert np.all(np.diff(y) >= -1e-7)  # only ever releasing (to float rounding)
    assert steps.max() < 0.5 * 0.004  # no jumps: < 0.4 % of gain per sample at 50 ms release


def test_release_carries_across_calls() -> None:
    lim = SoftLimiter(RATE, release_ms=50.0)
    lim.process(np.full(BLOCK, 4.0, np.float32))
    start_db = float(lim.gain_db[0])
    assert start_db == pytest.approx(-20 * np.log10(4.0 / 10 ** (-1 / 20)), abs=0.01)
    quiet = np.full(BLOCK, 0.1, np.float32)
    gains = []
    for _ in range(10):
        lim.process(quiet)
        gains.append(float(lim.gain_db[0]))
    assert all(a < b for a, b in itertools.pairwise(gains))  # released, block after block
    # exponential in dB: 8 ms held, then e**-1 per 50 ms
    assert gains[4] == pytest.approx(start_db * np.exp(-(5 * 20 - lim.hold_ms) / 50), rel=0.03)


def test_block_size_does_not_change_the_result() -> None:
    x = np.concatenate([_tone(0.3, 200, 0.1), _tone(3.0, 200, 0.2), _tone(0.5, 200, 0.3)])
    a = _run(SoftLimiter(RATE), x, block=320)
    b = _run(SoftLimiter(RATE), x, block=160)
    c = _run(SoftLimiter(RATE), x, block=640)
    np.testing.assert_allclose(a, b, atol=2e-6)
    np.testing.assert_allclose(a, c, atol=2e-6)


def test_channels_are_independent() -> None:
    rng = np.random.default_rng(2)
    loud = _tone(5.0, 300, 0.3)
    quiet = (rng.uniform(-0.5, 0.5, loud.size)).astype(np.float32)
    both = np.stack([loud, quiet, np.zeros_like(loud)])
    y = _run(SoftLimiter(RATE, channels=3), both)
    np.testing.assert_array_equal(y[1], quiet)
    assert not np.any(y[2])
    alone = _run(SoftLimiter(RATE), loud)
    np.testing.assert_allclose(y[0], alone, atol=1e-6)


def test_input_untouched_and_output_shaped_like_it() -> None:
    lim = SoftLimiter(RATE, channels=1)
    x = _tone(3.0, 500, 0.02)
    before = x.copy()
    y = lim.process(x)
    np.testing.assert_array_equal(x, before)
    assert y.shape == x.shape and y.dtype == np.float32
    assert lim.process(x.reshape(1, -1)).shape == (1, x.size)


@pytest.mark.parametrize("shape", [(3, BLOCK), (BLOCK, 2), (2, 2, BLOCK), ()])
def test_wrong_shape_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expected shape"):
        SoftLimiter(RATE, channels=2).process(np.zeros(shape, np.float32))


def test_nan_does_not_wedge_the_envelope() -> None:
    lim = SoftLimiter(RATE)
    x = _tone(0.5, 440, 0.02)
    bad = x.copy()
    bad[17] = np.nan
    y = lim.process(bad)
    assert np.isnan(y[17]) and np.all(np.isfinite(np.delete(y, 17)))
    np.testing.assert_array_equal(lim.process(x), x)


def test_zero_length_block() -> None:
    lim = SoftLimiter(RATE, channels=2)
    assert lim.process(np.zeros((2, 0), np.float32)).shape == (2, 0)


def test_threshold_at_full_scale_still_stays_inside() -> None:
    lim = SoftLimiter(RATE, threshold_dbfs=0.0)
    y = _run(lim, _tone(1.5, 440, 0.2))
    assert np.max(np.abs(y)) < 1.0
    np.testing.assert_array_equal(SoftLimiter(RATE, 0.0).process(_tone(0.98, 440, 0.02)),
                                  _tone(0.98, 440, 0.02))


def test_reset_forgets() -> None:
    lim = SoftLimiter(RATE)
    lim.process(np.full(BLOCK, 4.0, np.float32))
    lim.reset()
    x = _tone(0.5, 440, 0.02)
    np.testing.assert_array_equal(lim.process(x), x)
