"""A port's uplink chain, built from its ``[ports.NAME.dsp]`` settings, in data-flow order:

    device audio (int16, device rate) -> resample to 16 kHz -> high-pass -> noise suppression
    (its analysis also feeds) -> voice activity -> AGC (frozen without speech) -> limiter -> int16

The stages after resampling run on blocks of the codec's frame (20 ms, or 10 ms when the codec sends
10 ms frames: a 20 ms block would hold the first half back 10 ms and send packets in pairs);
whatever the resampler hands over is cut into blocks here, so a device whose frame isn't a whole
number of 16 kHz samples (44.1 kHz) still works. Each stage can be switched off in config; the
analysis the voice detector needs runs whenever the chain runs (with suppression off it only
listens and passes audio through unchanged).
Latency: the resampler's ~1 ms (2 ms from 8 kHz) plus 8 ms of the noise suppressor's overlap-add;
measured through the whole chain with speech: 7.8 ms from 16 kHz, 8.9 ms from 48 kHz (bench/dsp.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.config import PROCESSING_RATE_HZ, DspSettings
from gateway.dsp.agc import AutomaticGain
from gateway.dsp.compiled import compiled
from gateway.dsp.filters import HighPass
from gateway.dsp.limiter import SoftLimiter
from gateway.dsp.ns import HOP, NoiseSuppressor
from gateway.dsp.resample import Resampler
from gateway.dsp.vad import VoiceActivityDetector

Block = NDArray[np.float32]
_SCALE = 1 / 32768


@compiled("void(float32[:], int16[:])")
def _to_int16(y: np.ndarray, out: np.ndarray) -> None:
    """Full scale 1.0 to int16, clipped, truncated toward zero (numpy's float-to-int cast), in one
    compiled pass: as three numpy operations it was 8 µs of a 20 ms frame."""
    for i in range(y.shape[0]):  # pragma: no cover - compiled
        v = min(max(y[i] * np.float32(32768), np.float32(-32768)), np.float32(32767))
        out[i] = np.int16(v)


class _Stage:
    """A named stage made of a bound method: ``process`` takes a block and returns one."""

    def __init__(self, process: Callable[[Any], Block]) -> None:
        self.process = process


class UplinkChain:
    """The uplink processing of one port, from device frames to 16 kHz int16 for the encoder."""

    def __init__(self, settings: DspSettings, device_rate_hz: int, block_ms: int = 20) -> None:
        if block_ms not in (10, 20):
            raise ValueError(f"block_ms must be 10 or 20, got {block_ms}")
        self.settings = settings
        self.device_rate_hz = device_rate_hz
        self.block = block_ms * PROCESSING_RATE_HZ // 1000
        """Samples (16 kHz) per block of the stages after the resampler."""
        self.resampler = Resampler(device_rate_hz, PROCESSING_RATE_HZ)
        self.highpass = HighPass(settings.highpass_hz) if settings.highpass_hz > 0 else None
        self.ns = NoiseSuppressor(settings.ns_max_attenuation_db, suppress=settings.noise_suppression,
                                  hops=self.block // HOP)
        self.vad = VoiceActivityDetector(
            settings.vad_threshold, settings.vad_release, settings.vad_hangover_ms,
            range_db=settings.vad_range_db, snr_min_db=settings.vad_min_snr_db,
        )
        self.agc = (
            AutomaticGain(
                settings.agc_target_dbfs, settings.agc_max_gain_db, attack_ms=settings.agc_attack_ms,
                release_ms=settings.agc_release_ms, block_samples=self.block,
            )
            if settings.agc else None
        )
        self.limiter = (
            SoftLimiter(PROCESSING_RATE_HZ, settings.limiter_threshold_dbfs) if settings.limiter else None
        )
        self.block_speech = False
        """True when the voice detector called any hop speech in the audio the last call to
        :meth:`process` returned (or, inside :meth:`run_block`, in the block being processed)."""
        self._fifo = np.zeros(4 * self.block, dtype=np.float32)
        self._fill = 0
        self.stages: list[tuple[str, object]] = [("resample", _Stage(self._resample))]
        if self.highpass is not None:
            self.stages.append(("highpass", self.highpass))
        self.stages += [("ns", self.ns), ("vad", _Stage(self._vad))]
        if self.agc is not None:
            self.stages.append(("agc", _Stage(self._agc)))
        if self.limiter is not None:
            self.stages.append(("limiter", self.limiter))
        self._block_stages = [s for name, s in self.stages if name != "resample"]

    @property
    def latency_samples(self) -> int:
        """Delay the block stages add at 16 kHz (the resampler's own comes on top)."""
        return self.ns.latency_samples if self.settings.noise_suppression else 0

    def process(self, frame: NDArray[np.int16]) -> NDArray[np.int16]:
        """One device frame in; the 16 kHz audio that completed whole blocks out (int16)."""
        fresh = self._resample(frame)
        block = self.block
        if self._fill == 0 and len(fresh) == block:  # every device rate but 44.1 kHz
            return self._to_int16(self.run_block(fresh))
        need = self._fill + len(fresh)
        if need > len(self._fifo):
            self._fifo = np.concatenate([self._fifo[: self._fill], np.zeros(need, dtype=np.float32)])
        self._fifo[self._fill: need] = fresh
        self._fill = need
        blocks = self._fill // block
        out = np.empty(blocks * block, dtype=np.int16)
        speech = False  # a call may complete two blocks (or none): speech in any of them counts
        for b in range(blocks):
            out[b * block: (b + 1) * block] = self._to_int16(
                self.run_block(self._fifo[b * block: (b + 1) * block]))
            speech = speech or self.block_speech
        self.block_speech = speech
        rest = self._fill - blocks * block
        if blocks and rest:
            self._fifo[:rest] = self._fifo[blocks * block: self._fill]
        self._fill = rest
        return out

    @staticmethod
    def _to_int16(y: Block) -> NDArray[np.int16]:
        out = np.empty(len(y), np.int16)
        _to_int16(y, out)
        return out

    def run_block(self, block: Block) -> Block:
        """Run the 16 kHz stages on one block of :attr:`block` float samples (full scale 1.0)."""
        x = block
        for stage in self._block_stages:
            x = stage.process(x)  # type: ignore[attr-defined]
        return x

    def _resample(self, frame: NDArray[np.int16]) -> Block:
        return self.resampler.process_float(frame, _SCALE)

    def _vad(self, x: Block) -> Block:
        decisions = self.vad.update(self.ns.hop_llr, self.ns.hop_level, self.ns.hop_snr)
        self.block_speech = any(decisions)
        return x

    def _agc(self, x: Block) -> Block:
        assert self.agc is not None
        return self.agc.process(x, self.block_speech)
