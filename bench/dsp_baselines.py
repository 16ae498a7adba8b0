"""The DSP benchmark's baselines, run file to file at 16 kHz on 10 ms frames of int16.

- speexdsp's preprocessor through ``pyspeex-noise`` (noise suppression and AGC, its defaults:
  ``auto_gain=4000``, ``noise_suppression=-30`` dB);
- WebRTC's noise suppressor through ``webrtc-noise-gain`` (AGC off, suppression levels 1-4);
- WebRTC's voice detector through ``webrtcvad-wheels`` (modes 0-3).

Each processor's own delay is measured (:func:`measure_delay`, cross-correlation of output against
input on speech in light noise) and taken out (:func:`align`) before anything is scored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from bench.dsp_material import FRAME, RATE_HZ
from gateway.sim.metrics import delay_samples

__all__ = ["align", "delay_samples", "measure_delay", "speex", "speex_no_agc", "webrtc_ns", "webrtc_vad"]

Audio = npt.NDArray[np.float64]
Processor = Callable[[Audio], Audio]

SPEEX_AUTO_GAIN = 4000
SPEEX_NOISE_SUPPRESSION_DB = -30
WEBRTC_NS_LEVELS = (1, 2, 3, 4)
WEBRTC_VAD_MODES = (0, 1, 2, 3)


def to_pcm(x: Audio) -> bytes:
    """Float samples (full scale 1.0) as little-endian int16 bytes, rounded and clipped."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2").tobytes()


def from_pcm(data: bytes) -> Audio:
    """Little-endian int16 bytes as float samples (full scale 1.0)."""
    return np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0


def _frames(x: Audio) -> tuple[bytes, int]:
    """``x`` as int16 bytes padded to whole 10 ms frames, and its frame count."""
    n = -(-len(x) // FRAME)
    padded = np.zeros(n * FRAME)
    padded[: len(x)] = x
    return to_pcm(padded), n


def speex(x: Audio, auto_gain: float = SPEEX_AUTO_GAIN) -> Audio:
    """speexdsp's preprocessor (denoise + AGC) over ``x``; same length out, not delay-compensated."""
    from pyspeex_noise import AudioProcessor

    proc = AudioProcessor(auto_gain, SPEEX_NOISE_SUPPRESSION_DB)
    pcm, n = _frames(x)
    step = 2 * FRAME
    out = b"".join(proc.process_10ms(pcm[i * step: (i + 1) * step]) for i in range(n))
    return from_pcm(out)[: len(x)]


def speex_no_agc(x: Audio) -> Audio:
    """speexdsp's preprocessor with its AGC off (pyspeex-noise 2.x's AGC is broken: see bench.dsp)."""
    return speex(x, auto_gain=0)


def webrtc_ns(level: int) -> Processor:
    """WebRTC's noise suppressor at ``level`` (AGC off) as a processor."""

    def run(x: Audio) -> Audio:
        from webrtc_noise_gain import AudioProcessor

        proc = AudioProcessor(0, level)
        pcm, n = _frames(x)
        step = 2 * FRAME
        out = b"".join(proc.Process10ms(pcm[i * step: (i + 1) * step]).audio for i in range(n))
        return from_pcm(out)[: len(x)]

    return run


def webrtc_vad(x: Audio, mode: int) -> list[int]:
    """WebRTC VAD's decision (0/1) for every whole 10 ms frame of ``x``."""
    import webrtcvad

    vad = webrtcvad.Vad(mode)
    n = len(x) // FRAME
    pcm = to_pcm(x[: n * FRAME])
    step = 2 * FRAME
    return [int(vad.is_speech(pcm[i * step: (i + 1) * step], RATE_HZ)) for i in range(n)]


def measure_delay(processor: Processor, probe: Audio, max_lag: int = 800) -> tuple[int, float]:
    """Delay in samples (negative: output early) the processor adds, and the correlation found.

    ``probe`` should be something the processor passes: speech in light noise, not an impulse
    (a suppressor may treat a lone click as noise).
    """
    out = processor(probe)
    late, corr_late = delay_samples(probe, out, max_lag)
    early, corr_early = delay_samples(out, probe, max_lag)
    return (late, corr_late) if corr_late >= corr_early else (-early, corr_early)


def align(y: Audio, delay: int) -> Audio:
    """``y`` moved ``delay`` samples earlier (later if negative), same length, zero-filled."""
    if delay == 0:
        return y
    out = np.zeros_like(y)
    if delay > 0:
        out[: len(y) - delay] = y[delay:]
    else:
        out[-delay:] = y[: len(y) + delay]
    return out
