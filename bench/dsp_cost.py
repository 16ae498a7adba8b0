"""Cost and latency for the DSP benchmark (:mod:`bench.dsp`), measured in the main process.

Cost: µs per 20 ms frame (median over :data:`TIMED_FRAMES` frames after :data:`WARMUP_FRAMES` of
warm-up, fed noisy speech), every item timed on frame i before any on frame i+1 so that a busy
moment of the machine hits ours and the baselines alike. Latency: speech in light noise streamed
through ``UplinkChain`` at 16 and 48 kHz, delay = peak of the output/input cross-correlation.
"""

from __future__ import annotations

import functools
import gc
import importlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

from bench import dsp_baselines as base
from bench import dsp_material as mat

TIMED_FRAMES = 500
WARMUP_FRAMES = 50
BLOCK = 320
"""20 ms at 16 kHz: what the chain's stages after the resampler take."""
SPEECH_CLIPS = ("speech.wav", "or105.wav", "or109.wav")
"""The clips the timing feeds through every system (noisy speech, not silence)."""

Audio = npt.NDArray[np.float64]
Record = dict[str, Any]

def _summary_us(samples_ns: list[int]) -> dict[str, float]:
    a = np.asarray(samples_ns[WARMUP_FRAMES:], dtype=np.float64) / 1000
    return {"median_us": float(np.median(a)), "p90_us": float(np.percentile(a, 90))}


Timed = tuple[Callable[[Any], object], list[Any]]


class _StageClock:
    """Runs each stage of a chain on the previous stage's output, timing each one."""

    def __init__(self, chain: Any) -> None:
        self.stages: list[tuple[str, Any]] = list(chain.stages)
        self.times: dict[str, list[int]] = {name: [] for name, _ in self.stages}

    def __call__(self, frame: npt.NDArray[np.int16]) -> None:
        x: Any = frame
        for name, stage in self.stages:
            t0 = time.perf_counter_ns()
            x = stage.process(x)
            self.times[name].append(time.perf_counter_ns() - t0)
            if name == "resample" and len(x) != BLOCK:  # 44.1 kHz-style remainders: keep blocks whole
                x = np.resize(x, BLOCK).astype(np.float32)


def _time_interleaved(timed: dict[str, Timed], frames: int) -> dict[str, list[int]]:
    """Call every item on frame 0, then every item on frame 1, ...: machine load hits all alike."""
    times: dict[str, list[int]] = {name: [] for name in timed}
    gc.disable()
    try:
        for i in range(frames):
            for name, (call, inputs) in timed.items():
                t0 = time.perf_counter_ns()
                call(inputs[i])
                times[name].append(time.perf_counter_ns() - t0)
    finally:
        gc.enable()
    return times


def _noisy_speech(seconds: float) -> Audio:
    """Real noisy speech for timing: the clips mixed with pink noise at 10 dB, looped to ``seconds``."""
    folder = mat.speech_dir()
    parts = []
    for i, clip in enumerate(SPEECH_CLIPS):
        sig = mat.speech_signal(folder, clip)
        mix, _ = mat.mix_at_snr(sig.clean, mat.noise("pink", len(sig.clean), i, folder, clip), sig.truth, 10)
        parts.append(mix)
    x = np.concatenate(parts)
    return np.tile(x, -(-round(seconds * mat.RATE_HZ) // len(x)))


def _twice(call: Callable[[bytes], object]) -> Callable[[bytes], None]:
    """A 20 ms frame through a 10 ms API: two calls, as a port would make them."""

    def run(pcm: bytes) -> None:
        call(pcm[:320])
        call(pcm[320:])

    return run


def run_cost(passthrough: bool) -> Record:
    """µs per 20 ms frame of our chain, its stages, the mixer and the baselines, timed interleaved."""
    import webrtcvad
    from pyspeex_noise import AudioProcessor as Speex
    from webrtc_noise_gain import AudioProcessor as WebRtc

    n = WARMUP_FRAMES + TIMED_FRAMES
    x16 = _noisy_speech(n * 0.02 + 1)
    pcm16 = [base.to_pcm(x16[i * BLOCK: (i + 1) * BLOCK]) for i in range(n)]
    cost: Record = {"frames": TIMED_FRAMES, "warmup_frames": WARMUP_FRAMES, "input": "noisy speech "
                    "(speech.wav, or105, or109 in pink noise at 10 dB SNR)", "items": {}, "notes": []}
    timed: dict[str, Timed] = {}
    stage_clock = None
    if passthrough:
        cost["notes"].append("our chain not timed (--ours-passthrough)")
    else:
        try:
            from gateway.config import DspSettings
            from gateway.dsp.chain import UplinkChain
        except ImportError as exc:
            cost["notes"].append(f"our chain not timed: {exc}")
        else:
            x48 = np.asarray(soxr.resample(x16, mat.RATE_HZ, 48000, quality="VHQ"))
            pcm48 = np.clip(np.round(x48 * 32768), -32768, 32767).astype(np.int16)
            frames48 = [pcm48[i * 960: (i + 1) * 960] for i in range(n)]
            frames16 = [np.frombuffer(p, dtype="<i2").copy() for p in pcm16]
            timed["ours: chain from 48 kHz"] = (UplinkChain(DspSettings(), 48000).process, frames48)
            timed["ours: chain from 16 kHz"] = (UplinkChain(DspSettings(), 16000).process, frames16)
            stage_clock = _StageClock(UplinkChain(DspSettings(), 48000))
            timed["_stages"] = (stage_clock, frames48)
    timed["speex preprocessor (AGC 4000)"] = (
        _twice(Speex(base.SPEEX_AUTO_GAIN, base.SPEEX_NOISE_SUPPRESSION_DB).process_10ms), pcm16)
    timed["speex preprocessor (no AGC)"] = (
        _twice(Speex(0, base.SPEEX_NOISE_SUPPRESSION_DB).process_10ms), pcm16)
    for level in base.WEBRTC_NS_LEVELS:
        timed[f"webrtc NS level {level}"] = (_twice(WebRtc(0, level).Process10ms), pcm16)
    for mode in base.WEBRTC_VAD_MODES:
        is_speech = functools.partial(webrtcvad.Vad(mode).is_speech, sample_rate=mat.RATE_HZ)
        timed[f"webrtc VAD mode {mode}"] = (_twice(is_speech), pcm16)
    mixer = _mixer_call()
    if isinstance(mixer, str):
        cost["notes"].append(mixer)
    else:
        timed["mixer 32 sources × 8 ports"] = (mixer, list(range(n)))
    times = _time_interleaved(timed, n)
    items = {name: _summary_us(t) for name, t in times.items() if name != "_stages"}
    if stage_clock is not None:
        stages = {f"ours: stage {name}": _summary_us(t) for name, t in stage_clock.times.items()}
        order = list(items)
        items = {k: items[k] for k in order[:2]} | stages | {k: items[k] for k in order[2:]}
    cost["items"] = items
    chain = items.get("ours: chain from 48 kHz")
    if chain is not None:
        cost["chain_48k_over"] = {k: chain["median_us"] / v["median_us"] for k, v in items.items()}
    return cost


def _mixer_call() -> Callable[[int], object] | str:
    """One 32 × 8 mix per call (frame ``i`` of eight prepared source sets), or why not."""
    try:
        # By name: the mixer is written in parallel, and a static import fails type-checking without it.
        mixer_module = importlib.import_module("gateway.dsp.mixer")
    except ImportError as exc:
        return f"mixer not timed: {exc}"
    rng = np.random.default_rng(7)
    mixer = mixer_module.Mixer(8, 32, 320)
    sources = [(0.1 * rng.standard_normal((32, 320))).astype(np.float32) for _ in range(8)]
    port = rng.integers(-1, 8, 32)
    gains = np.full(32, 0.5, dtype=np.float32)
    priority = rng.random(32) < 0.1

    def mix(i: int) -> object:
        return mixer.mix(sources[i % 8], port, gains, priority)

    return mix


def run_latency(passthrough: bool) -> Record:
    """Delay of our chain streamed at 16 and 48 kHz, by cross-correlating speech through it."""
    probe_desc = "speech.wav (0.8 s silence each side) in white noise at 30 dB SNR, streamed in 20 ms frames"
    out: Record = {"probe": probe_desc, "method": "peak of output/input cross-correlation at 16 kHz"}
    if passthrough:
        out["note"] = "not measured (--ours-passthrough)"
        return out
    try:
        from gateway.config import DspSettings
        from gateway.dsp.chain import UplinkChain
    except ImportError as exc:
        out["note"] = f"not measured: {exc}"
        return out
    folder = mat.speech_dir()
    sig = mat.speech_signal(folder, "speech.wav")
    noise = mat.noise("white", len(sig.clean), 99, folder, "speech.wav")
    x16, _ = mat.mix_at_snr(sig.clean, noise, sig.truth, 30)
    x16 = np.concatenate([x16, np.zeros(mat.RATE_HZ // 5)])
    for rate in (16000, 48000):
        x = x16 if rate == mat.RATE_HZ else np.asarray(soxr.resample(x16, mat.RATE_HZ, rate, quality="VHQ"))
        pcm = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
        chain = UplinkChain(DspSettings(), rate)
        step = rate // 50
        y = np.concatenate([chain.process(pcm[i: i + step]) for i in range(0, len(pcm) - step + 1, step)])
        lag, corr = base.delay_samples(x16[: len(y)], y.astype(np.float64) / 32768, mat.RATE_HZ // 20)
        out[f"from_{rate // 1000}k"] = {"delay_ms": lag * 1000 / mat.RATE_HZ, "correlation": round(corr, 3)}
    return out
