"""Uplink: talk gate, framing, RTP marker and clock."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.config import CodecSettings
from gateway.net import rtp
from gateway.voice.uplink import Uplink


def _speechlike(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (3000 * np.sin(2 * np.pi * 220 * t) + rng.normal(0, 500, n)).astype(np.int16)


@pytest.mark.parametrize("frame_ms", [10, 20])
def test_gate_marker_and_clock(frame_ms: int) -> None:
    sent: list[bytes] = []
    up = Uplink(CodecSettings(frame_ms=frame_ms), ssrc=42, send=sent.append,
                initial_sequence=65534, initial_timestamp=2**32 - 960)
    step = 48 * frame_ms
    frame = 16 * frame_ms
    audio = _speechlike(frame * 10)
    up.process(audio[: frame * 2])  # gate closed: nothing sent, clock runs
    assert sent == []
    up.set_gate(True)
    up.process(audio[frame * 2: frame * 5])
    up.set_gate(False)
    up.process(audio[frame * 5: frame * 7])
    up.set_gate(True)
    up.process(audio[frame * 7:])
    pkts = [rtp.parse(d, 111) for d in sent]
    assert all(isinstance(p, rtp.RtpPacket) for p in pkts)
    packets = [p for p in pkts if isinstance(p, rtp.RtpPacket)]
    assert len(packets) == 6
    assert [p.marker for p in packets] == [True, False, False, True, False, False]
    assert [p.sequence for p in packets] == [65534, 65535, 0, 1, 2, 3]  # wraps, no gap
    ts0 = (2**32 - 960 + 2 * step) % 2**32
    expected_ts = [(ts0 + k * step) % 2**32 for k in (0, 1, 2, 5, 6, 7)]  # silence is time
    assert [p.timestamp for p in packets] == expected_ts
    assert {p.ssrc for p in packets} == {42}


def test_odd_chunk_sizes_are_reframed() -> None:
    sent: list[bytes] = []
    up = Uplink(CodecSettings(), ssrc=1, send=sent.append)
    up.set_gate(True)
    audio = _speechlike(320 * 20)
    pos = 0
    for size in [1, 319, 333, 7, 640, 1000] * 10:
        up.process(audio[pos: pos + size])
        pos += size
        if pos >= len(audio):
            break
    assert len(sent) == min(pos, len(audio)) // 320


def test_dtx_suppresses_silence() -> None:
    sent: list[bytes] = []
    up = Uplink(CodecSettings(dtx=True), ssrc=1, send=sent.append)
    up.set_gate(True)
    up.process(np.zeros(320 * 50, np.int16))
    assert up.frames_encoded == 50
    assert up.frames_suppressed > 30
    assert len(sent) == 50 - up.frames_suppressed
