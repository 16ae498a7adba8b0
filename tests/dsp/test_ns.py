"""Noise suppression: reconstruction, latency, how much noise goes, how little speech goes, tracking."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from gateway.audio.wav import read_wav
from gateway.dsp.ns import BLOCK, HOP, OVERLAP, NoiseSuppressor, _window
from tests.rigs.voice import SPEECH


def _run(ns: NoiseSuppressor, x: np.ndarray) -> np.ndarray:
    b = ns.block
    n = len(x) // b * b
    return np.concatenate([ns.process(x[i: i + b]).copy() for i in range(0, n, b)])


#: Both block sizes: two hops a call (20 ms frames) and one (10 ms frames) must behave alike.
hops = pytest.mark.parametrize("hops", [2, 1])


def _db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def _speech_16k() -> np.ndarray:
    pcm, rate = read_wav(SPEECH)
    x = pcm.astype(np.float32) / 32768
    return soxr.resample(x, rate, 16000).astype(np.float32) if rate != 16000 else x


def test_window_reconstructs_exactly() -> None:
    w = _window()
    assert len(w) == OVERLAP + HOP
    np.testing.assert_allclose(w[:OVERLAP] ** 2 + w[HOP:] ** 2, 1.0, atol=1e-12)
    np.testing.assert_allclose(w[OVERLAP:HOP], 1.0)


@hops
def test_speech_passes_nearly_untouched_and_a_overlap_late(hops: int) -> None:
    x = _speech_16k()
    y = _run(NoiseSuppressor(20.0, hops=hops), x)
    n = len(y)
    lag = int(np.argmax(np.correlate(y[:n], x[:n], mode="full")[n - 1: n - 1 + 400]))
    assert lag == OVERLAP  # 128 samples = 8 ms
    active = slice(OVERLAP + 4000, n)  # after the estimator has seen the clip's quiet start
    loss = _db(x[active.start - OVERLAP: n - OVERLAP]) - _db(y[active])
    assert loss < 1.0


@hops
def test_strength_bounds_how_far_noise_goes_down(hops: int) -> None:
    """Steady white noise: never turned down by more than the strength, and by at least 85 % of it
    up to 10 dB (the presence ramp starts low, at -13 dB, to keep weak speech: a bin of steady noise
    is now and then taken for speech, so the noise settles about 1 dB short of a 10 dB strength,
    and near 22 dB at the default 30)."""
    noise = (np.random.default_rng(3).standard_normal(16000 * 3) * 0.03).astype(np.float32)
    for strength in (0.0, 6.0, 10.0, 20.0, 40.0):
        y = _run(NoiseSuppressor(strength, hops=hops), noise)
        settled = slice(16000, len(y))
        drop = _db(noise[settled]) - _db(y[settled])
        assert 0.85 * min(strength, 10.0) <= drop <= strength + 0.5, (strength, drop)


@hops
def test_silence_in_silence_out(hops: int) -> None:
    assert not np.any(_run(NoiseSuppressor(hops=hops), np.zeros(BLOCK * 20, np.float32)))


@hops
def test_follows_a_generator_starting(hops: int) -> None:
    """A 20 dB step in the noise: the estimate is back within 3 dB of the new level inside 3 s."""
    rng = np.random.default_rng(4)
    quiet = rng.standard_normal(16000 * 2) * 0.003
    loud = rng.standard_normal(16000 * 5) * 0.03
    ns = NoiseSuppressor(hops=hops)
    _run(ns, quiet.astype(np.float32))
    reference = NoiseSuppressor(hops=hops)
    _run(reference, loud.astype(np.float32))  # what the estimate settles to in the loud noise
    _run(ns, loud[: 16000 * 3].astype(np.float32))
    ratio_db = 10 * np.log10(ns.noise_psd[10:120].sum() / reference.noise_psd[10:120].sum())
    assert abs(ratio_db) < 3, ratio_db


@hops
def test_suppress_off_passes_audio_through_without_delay(hops: int) -> None:
    x = (np.random.default_rng(5).standard_normal(BLOCK * 10) * 0.1).astype(np.float32)
    y = _run(NoiseSuppressor(suppress=False, hops=hops), x)
    np.testing.assert_array_equal(y, x)


def test_fft_shortcut_matches_numpy_fft() -> None:
    from gateway.dsp import ns

    frames = np.random.default_rng(6).standard_normal((2, 256)).astype(np.float32)
    if ns._rfft_gufunc is None:
        pytest.skip("this numpy has no FFT gufuncs; the public functions are used")
    spectra = np.empty((2, 129), np.complex64)
    ns._rfft_gufunc(frames, 1.0, out=spectra)
    np.testing.assert_allclose(spectra, np.fft.rfft(frames), rtol=1e-5, atol=1e-4)
    back = np.empty((2, 256), np.float32)
    ns._irfft_gufunc(spectra, 1.0 / 256, out=back)
    np.testing.assert_allclose(back, frames, atol=1e-5)


def test_one_hop_and_two_hop_blocks_give_the_same_audio_and_analysis() -> None:
    """The arithmetic runs hop by hop, so 10 ms codec frames get exactly what 20 ms frames get."""
    x = _speech_16k()[: 16000 * 2]
    x = x + (np.random.default_rng(8).standard_normal(len(x)) * 0.01).astype(np.float32)
    one, two = NoiseSuppressor(hops=1), NoiseSuppressor(hops=2)
    llr_one: list[float] = []
    llr_two: list[float] = []
    out_one, out_two = [], []
    for i in range(0, len(x) // BLOCK * BLOCK, BLOCK):
        for j in (i, i + HOP):
            out_one.append(one.process(x[j: j + HOP]).copy())
            llr_one += list(one.hop_llr)
        out_two.append(two.process(x[i: i + BLOCK]).copy())
        llr_two += list(two.hop_llr)
    np.testing.assert_array_equal(np.concatenate(out_one), np.concatenate(out_two))
    np.testing.assert_array_equal(llr_one, llr_two)
