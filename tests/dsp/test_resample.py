"""Streaming resampler: steady output per chunk, small fixed delay, clean passband, no aliasing."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.dsp.resample import Resampler

PAIRS = [(8000, 16000), (16000, 8000), (48000, 16000), (16000, 48000), (32000, 16000),
         (16000, 32000), (44100, 16000), (16000, 44100)]


def _tone(freq: float, rate: int, seconds: float, amp: float = 8000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _run(r: Resampler, x: np.ndarray, chunk: int) -> list[np.ndarray]:
    return [r.process(x[i: i + chunk]) for i in range(0, len(x) - chunk + 1, chunk)]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_every_chunk_yields_its_duration(a: int, b: int) -> None:
    """A 20 ms chunk gives 20 ms out at once (soxr's bursts are what this module avoids)."""
    chunk = a // 50
    outs = _run(Resampler(a, b), np.zeros(chunk * 200, np.int16), chunk)
    lengths = [len(o) for o in outs[2:]]
    assert max(lengths) <= b // 50 + 2
    assert min(lengths) >= b // 50 - 2
    assert abs(sum(len(o) for o in outs) - 200 * b // 50) <= b // 50


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_passband_tone_is_clean(a: int, b: int) -> None:
    chunk = a // 50
    y = np.concatenate(_run(Resampler(a, b), _tone(700, a, 2.0), chunk)).astype(float)[b // 2:]
    t = np.arange(len(y)) / b
    basis = np.stack([np.sin(2 * np.pi * 700 * t), np.cos(2 * np.pi * 700 * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    residual = y - basis @ coef
    assert np.hypot(*coef) == pytest.approx(8000, rel=0.01)
    assert 10 * np.log10(np.sum((basis @ coef) ** 2) / np.sum(residual**2)) > 60


@pytest.mark.parametrize(("a", "b"), [(16000, 8000), (48000, 16000), (32000, 16000)])
def test_no_aliasing_when_downsampling(a: int, b: int) -> None:
    chunk = a // 50
    y = np.concatenate(_run(Resampler(a, b), _tone(b / 2 * 1.15, a, 1.0), chunk))[b // 4:]
    assert 20 * np.log10(8000 / (np.sqrt(2) * y.astype(float).std() + 1e-9)) > 60


@pytest.mark.parametrize(("a", "b"), [(8000, 16000), (16000, 8000), (48000, 16000), (16000, 48000)])
def test_delay_is_what_it_says(a: int, b: int) -> None:
    chunk = a // 50
    x = np.zeros(chunk * 20, np.int16)
    x[chunk * 5] = 30000
    r = Resampler(a, b)
    y = np.concatenate(_run(r, x, chunk)).astype(float)
    peak = np.argmax(np.abs(y)) / b
    assert peak - chunk * 5 / a == pytest.approx(r.delay_ms / 1000, abs=1.5 / b)
    assert r.delay_ms < 6


def test_same_rate_is_identity() -> None:
    x = _tone(440, 16000, 0.1)
    assert Resampler(16000, 16000).process(x) is x
