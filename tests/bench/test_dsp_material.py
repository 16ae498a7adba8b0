"""The DSP benchmark's material: SNR mixing, seeded noises and the ground-truth rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import dsp_material as mat

SPEECH_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "speech"
needs_speech = pytest.mark.skipif(not (SPEECH_DIR / "speech.wav").is_file(), reason="no shared speech clips")


def bursts(spec: list[tuple[float, int]]) -> np.ndarray:
    """A synthetic "clip": (level dBFS or -inf for digital silence, milliseconds) pieces of noise."""
    rng = np.random.default_rng(0)
    parts = []
    for level, ms in spec:
        n = ms * mat.RATE_HZ // 1000
        rms = 0.0 if level == -np.inf else 10 ** ((level - 3.01) / 20)
        parts.append(rms * rng.standard_normal(n))
    return np.concatenate(parts)


def test_ground_truth_rule_on_a_synthetic_signal() -> None:
    x = bursts([
        (-np.inf, 200),  # digital silence: never speech
        (-20, 300),      # speech
        (-70, 50),       # a 50 ms pause: filled
        (-20, 300),
        (-70, 150),      # a 150 ms pause: kept
        (-60, 200),      # 40 dB below the loudest frame: not speech
        (-20, 20),       # a 20 ms click on its own: removed
        (-70, 200),
        (-30, 100),      # quieter speech, within 35 dB: speech
        (-np.inf, 100),
    ])
    truth = mat.speech_frames(x)
    expected = np.concatenate([
        np.zeros(20), np.ones(30 + 5 + 30), np.zeros(15 + 20 + 2 + 20), np.ones(10), np.zeros(10),
    ]).astype(bool)
    assert truth.tolist() == expected.tolist()


def test_ground_truth_needs_the_absolute_floor() -> None:
    assert not mat.speech_frames(bursts([(-65, 300), (-80, 300)])).any()
    assert not mat.speech_frames(np.zeros(1600)).any()


@pytest.mark.parametrize("kind", ["white", "pink", "hum"])
@pytest.mark.parametrize("snr", mat.SNRS_DB)
def test_mixing_gives_the_requested_snr(kind: str, snr: float) -> None:
    clean = bursts([(-np.inf, 500), (-26, 800), (-70, 300), (-22, 600), (-np.inf, 500)])
    truth = mat.speech_frames(clean)
    noise = mat.noise(kind, len(clean), 0, SPEECH_DIR, "none")
    mix, ref = mat.mix_at_snr(clean, noise, truth, snr)
    assert abs(mat.snr_db(ref, mix, truth) - snr) < 0.1
    assert np.max(np.abs(mix)) <= 10 ** (mat.PEAK_LIMIT_DBFS / 20) + 1e-12


@needs_speech
@pytest.mark.parametrize("snr", [0.0, 20.0])
def test_babble_mix_of_a_real_clip_gives_the_requested_snr(snr: float) -> None:
    sig = mat.speech_signal(SPEECH_DIR, "speech.wav")
    assert abs(mat.active_level_dbfs(sig.clean, sig.truth) - mat.ACTIVE_LEVEL_DBFS) < 0.1
    noise = mat.noise("babble", len(sig.clean), 0, SPEECH_DIR, "speech.wav")
    mix, ref = mat.mix_at_snr(sig.clean, noise, sig.truth, snr)
    assert abs(mat.snr_db(ref, mix, sig.truth) - snr) < 0.1


@pytest.mark.parametrize("kind", ["white", "pink", "hum"])
def test_noises_are_seeded(kind: str) -> None:
    a = mat.noise(kind, 16000, 3, SPEECH_DIR, "x")
    b = mat.noise(kind, 16000, 3, SPEECH_DIR, "x")
    c = mat.noise(kind, 16000, 4, SPEECH_DIR, "x")
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.std(a) == pytest.approx(1.0, rel=0.01)


@needs_speech
def test_babble_is_seeded_and_leaves_out_the_clip_under_test() -> None:
    a = mat.noise("babble", 32000, 1, SPEECH_DIR, "or105.wav")
    assert np.array_equal(a, mat.noise("babble", 32000, 1, SPEECH_DIR, "or105.wav"))
    assert "or105.wav" in mat.available_clips(SPEECH_DIR)
    assert "speech_bab_0dB.wav" not in mat.available_clips(SPEECH_DIR)


def _band_power(x: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / mat.RATE_HZ)
    return float(spectrum[(freqs >= lo) & (freqs < hi)].sum())


def test_pink_noise_has_equal_power_per_octave() -> None:
    x = mat.pink_noise(4 * mat.RATE_HZ, np.random.default_rng(1))
    low, high = _band_power(x, 200, 400), _band_power(x, 3200, 6400)
    assert 10 * np.log10(low / high) == pytest.approx(0.0, abs=1.0)


def test_hum_is_mostly_harmonics_of_50_hz() -> None:
    x = mat.hum_noise(4 * mat.RATE_HZ, np.random.default_rng(1))
    near = sum(_band_power(x, 50 * k - 2, 50 * k + 2) for k in range(1, 41))
    assert near / _band_power(x, 0, 8000) > 0.9


def test_ground_truth_ignores_a_hissy_recording_floor() -> None:
    # Hiss 33 dB under the loudest frame: within 35 dB of it, but only a recording's noise floor.
    x = bursts([(-np.inf, 100), (-45, 1000), (-12, 300), (-45, 1000), (-np.inf, 100)])
    truth = mat.speech_frames(x)
    assert truth.tolist() == [False] * 110 + [True] * 30 + [False] * 110
