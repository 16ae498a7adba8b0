"""Streaming resampler: every chunk's duration out at once, constant small delay, clean passband."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dsp.resample import Resampler

DEVICE_RATES = [8000, 32000, 44100, 48000]
PAIRS = [(r, 16000) for r in DEVICE_RATES] + [(16000, r) for r in DEVICE_RATES]
#: Round trip device rate -> 16 kHz -> device rate: the worst measured SNR over the passband is
#: 69 dB (near 7 kHz, where the upsampler's image sits at the stopband edge); 80 dB at 8 kHz.
ROUND_TRIP_SNR_DB = 60


def _tone(freq: float, rate: int, seconds: float, amp: float = 8000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _run(r: Resampler, x: np.ndarray, chunk: int) -> list[np.ndarray]:
    return [r.process(x[i: i + chunk]) for i in range(0, len(x) - chunk + 1, chunk)]


def _sine_fit(y: np.ndarray, freq: float, rate: int) -> tuple[float, float]:
    """Amplitude of the best-fitting sine and the SNR of ``y`` against it (dB)."""
    t = np.arange(len(y)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    fitted = basis @ coef
    return float(np.hypot(*coef)), float(10 * np.log10(np.sum(fitted**2) / np.sum((y - fitted) ** 2)))


@pytest.mark.parametrize(("a", "b"), PAIRS)
@pytest.mark.parametrize("frame_ms", [10, 20])
def test_every_frame_yields_its_duration(a: int, b: int, frame_ms: int) -> None:
    """A device frame gives exactly its duration out, from the first call (soxr's bursts don't)."""
    chunk = a * frame_ms // 1000
    x = (np.random.default_rng(0).standard_normal(chunk * 300) * 5000).astype(np.int16)
    lengths = {len(o) for o in _run(Resampler(a, b), x, chunk)}
    assert lengths == {b * frame_ms // 1000}


@pytest.mark.parametrize(("a", "b"), PAIRS)
@settings(max_examples=20, deadline=None)
@given(chunks=st.lists(st.integers(0, 2000), min_size=1, max_size=40))
def test_any_chunking_is_steady_and_gives_the_same_stream(a: int, b: int, chunks: list[int]) -> None:
    """Chunks of any length: each yields its duration to within a sample, the running total is
    exact (every output whose inputs are in), and the stream doesn't depend on the cut."""
    x = (np.random.default_rng(1).standard_normal(sum(chunks)) * 5000).astype(np.int16)
    r = Resampler(a, b)
    outs, fed = [], 0
    for n in chunks:
        outs.append(r.process(x[fed: fed + n]))
        fed += n
        assert abs(len(outs[-1]) - n * b / a) < 1
        assert sum(len(o) for o in outs) == -(-fed * b // a)
    whole = Resampler(a, b).process(x)
    # Float32 products summed in another order can round the odd sample the other way.
    np.testing.assert_allclose(np.concatenate(outs), whole, rtol=0, atol=1)


@pytest.mark.parametrize("device", DEVICE_RATES)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_round_trip_keeps_a_passband_sine(device: int, data: st.DataObject) -> None:
    """Device rate -> 16 kHz -> device rate, as a port does both ways: gain and SNR kept."""
    freq = data.draw(st.floats(100, 3400 if device == 8000 else 7000))
    chunk = device // 50
    down, up = Resampler(device, 16000), Resampler(16000, device)
    y = np.concatenate([up.process(o) for o in _run(down, _tone(freq, device, 0.5), chunk)])
    amp, snr = _sine_fit(y[device // 20:].astype(float), freq, device)  # past the first 50 ms
    assert amp == pytest.approx(8000, rel=0.002)
    assert snr > ROUND_TRIP_SNR_DB


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_passband_tone_is_clean(a: int, b: int) -> None:
    chunk = a // 50
    y = np.concatenate(_run(Resampler(a, b), _tone(700, a, 2.0), chunk)).astype(float)[b // 2:]
    amp, snr = _sine_fit(y, 700, b)
    assert amp == pytest.approx(8000, rel=0.001)
    assert snr > 60


@pytest.mark.parametrize(("a", "b"), [(16000, 8000), (48000, 16000), (44100, 16000), (32000, 16000)])
def test_no_aliasing_when_downsampling(a: int, b: int) -> None:
    """A tone 15 % above the output's Nyquist frequency (past the stopband edge) is 60 dB down."""
    chunk = a // 50
    y = np.concatenate(_run(Resampler(a, b), _tone(b / 2 * 1.15, a, 1.0), chunk))[b // 4:]
    assert 20 * np.log10(8000 / (np.sqrt(2) * y.astype(float).std() + 1e-9)) > 60


def _lag(y: np.ndarray, ref: np.ndarray, rate: int, band_hz: float) -> float:
    """Samples ``y`` lags ``ref`` by: the cross-correlation peak, refined by the slope of the
    cross-spectrum's phase over ``band_hz`` (a pure delay turns the phase linearly)."""
    whole = int(np.argmax(np.correlate(y, ref, mode="full"))) - (len(ref) - 1)
    y, ref = y[whole:], ref[: len(ref) - whole]
    freqs = np.fft.rfftfreq(len(y), 1 / rate)
    cross = np.fft.rfft(y) * np.conj(np.fft.rfft(ref))
    band = (freqs > 100) & (freqs < band_hz)
    phase = np.unwrap(np.angle(cross[band]))
    slope = np.polyfit(2 * np.pi * freqs[band] / rate, phase, 1, w=np.abs(cross[band]))[0]
    return whole - float(slope)


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_delay_is_small_constant_and_what_it_says(a: int, b: int) -> None:
    """Against soxr's offline conversion (no delay), the lag is ``delay_ms`` in the first 100 ms
    and still so 20 s later."""
    rng = np.random.default_rng(2)
    x = (soxr.resample(rng.standard_normal(a * 21), a, min(a, b)) * 4000)
    x = soxr.resample(x, min(a, b), a)[: a * 21].astype(np.int16)  # band-limited noise at ``a``
    r = Resampler(a, b)
    y = np.concatenate(_run(r, x, a // 50)).astype(float)
    ref = soxr.resample(x.astype(float), a, b, quality="VHQ")
    expected = r.delay_ms * b / 1000
    span = b // 10
    for start in (0, b * 20):
        lag = _lag(y[start: start + span], ref[start: start + span], b, min(a, b) * 0.4)
        assert lag == pytest.approx(expected, abs=0.02)
    assert r.delay_ms <= 2.5


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_silence_in_is_silence_out(a: int, b: int) -> None:
    outs = _run(Resampler(a, b), np.zeros(a, np.int16), a // 50)
    assert all(o.dtype == np.int16 and not o.any() for o in outs)


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_full_scale_saturates_instead_of_wrapping(a: int, b: int) -> None:
    """A full-scale square wave overshoots (Gibbs): where twice the half-scale output would
    leave the int16 range, the output sits at the rail instead of wrapping to the other sign."""
    half = np.where(_tone(200, a, 0.2) >= 0, 16383, -16383).astype(np.int16)
    y_half = np.concatenate(_run(Resampler(a, b), half, a // 50)).astype(int)
    y_full = np.concatenate(_run(Resampler(a, b), half * 2, a // 50)).astype(int)
    assert np.abs(2 * y_half).max() > 32768  # the overshoot is there
    np.testing.assert_allclose(y_full, np.clip(2 * y_half, -32768, 32767), atol=2)


def test_same_rate_is_identity() -> None:
    x = _tone(440, 16000, 0.1)
    r = Resampler(16000, 16000)
    assert r.process(x) is x
    assert r.delay_ms == 0
