"""The high-pass filter: what it removes, what it keeps, and that blocks join seamlessly."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.dsp.filters import HighPass


def _level_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def _through(f: HighPass, x: np.ndarray, block: int = 320) -> np.ndarray:
    return np.concatenate([f.process(x[i: i + block]).copy() for i in range(0, len(x), block)])


@pytest.mark.parametrize(
    ("freq_hz", "min_db", "max_db"),
    [
        (0.0, -200.0, -60.0),  # DC goes entirely
        (50.0, -200.0, -20.0),  # mains hum loses at least 20 dB
        (100.0, -4.0, -2.0),  # the cutoff: -3 dB
        (300.0, -0.5, 0.1),  # the voice band passes
        (1000.0, -0.1, 0.1),
        (6000.0, -0.1, 0.1),
    ],
)
def test_response(freq_hz: float, min_db: float, max_db: float) -> None:
    t = np.arange(32000) / 16000
    x = (0.5 * np.cos(2 * np.pi * freq_hz * t)).astype(np.float32)
    y = _through(HighPass(100.0), x)
    settled = slice(16000, None)  # after one second
    gain = _level_db(y[settled]) - _level_db(x[settled])
    assert min_db <= gain <= max_db


def test_blocks_join_like_one_pass() -> None:
    x = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    whole = HighPass().process(x)
    pieces = _through(HighPass(), x, block=317)
    np.testing.assert_allclose(pieces, whole, atol=1e-6)


def test_silence_stays_silent() -> None:
    assert not np.any(_through(HighPass(), np.zeros(3200, np.float32)))


@pytest.mark.parametrize("cutoff", [0.0, -5.0, 8000.0])
def test_rejects_impossible_cutoff(cutoff: float) -> None:
    with pytest.raises(ValueError, match="cutoff"):
        HighPass(cutoff)


def test_compiled_cascade_matches_scipy_sosfilt() -> None:
    from scipy.signal import butter, sosfilt

    x = np.random.default_rng(2).standard_normal(16000 * 5).astype(np.float32)
    ours = _through(HighPass(100.0), x)
    reference = sosfilt(butter(4, 100.0, btype="highpass", fs=16000, output="sos"), x)
    assert np.max(np.abs(ours - reference)) < 1e-5
