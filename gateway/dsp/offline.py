"""The uplink chain file to file, for installers and the benchmark (``gateway dsp``, ``gateway vad``).

A recording at any rate is converted to 16 kHz (soxr, whole file: no streaming bursts to worry
about), run through the same block stages a port runs, and converted back to its own rate. The
output is shifted by the chain's known latency so it lines up with the input sample for sample.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import soxr
from numpy.typing import NDArray

from gateway.config import PROCESSING_RATE_HZ, DspSettings
from gateway.dsp.chain import UplinkChain
from gateway.dsp.ns import HOP

Audio = NDArray[np.float32]


def _to_16k(x: Audio, rate_hz: int) -> Audio:
    x = np.asarray(x, dtype=np.float32)
    if rate_hz == PROCESSING_RATE_HZ:
        return x
    y: Audio = soxr.resample(x, rate_hz, PROCESSING_RATE_HZ, quality="VHQ").astype(np.float32)
    return y


def _run_blocks(chain: UplinkChain, pcm: Audio, tail: int = 0) -> Iterator[tuple[int, Audio]]:
    """Feed ``pcm`` plus ``tail`` samples of silence through the chain's block stages, zero-padded
    to whole blocks; yield each block's start and output."""
    block = chain.block
    padded = np.zeros(-(-(len(pcm) + tail) // block) * block, dtype=np.float32)
    padded[: len(pcm)] = pcm
    for i in range(0, len(padded), block):
        yield i, chain.run_block(padded[i: i + block])


def process_array(x: Audio, rate_hz: int, settings: DspSettings, block_ms: int = 20) -> Audio:
    """Run the uplink chain (no talk gate) over a whole recording; same rate and length out."""
    chain = UplinkChain(settings, PROCESSING_RATE_HZ, block_ms)
    pcm = _to_16k(x, rate_hz)
    delay = chain.latency_samples
    n = chain.block
    out = np.empty(-(-(len(pcm) + delay) // n) * n, dtype=np.float32)
    for i, block in _run_blocks(chain, pcm, tail=delay):
        out[i: i + n] = block
    y = out[delay: delay + len(pcm)]
    if rate_hz != PROCESSING_RATE_HZ:
        y = soxr.resample(y, PROCESSING_RATE_HZ, rate_hz, quality="VHQ").astype(np.float32)
        y = np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]
    return y


def vad_array(x: Audio, rate_hz: int, settings: DspSettings, block_ms: int = 20) -> list[int]:
    """The voice detector's decision (0/1) for every whole 10 ms of a recording, without pre-roll."""
    chain = UplinkChain(settings, PROCESSING_RATE_HZ, block_ms)
    pcm = _to_16k(x, rate_hz)
    decisions: list[int] = []
    for _ in _run_blocks(chain, pcm):
        decisions += [int(d) for d in chain.vad.decisions]
    return decisions[: len(pcm) // HOP]
