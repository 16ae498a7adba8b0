"""Receive cost for the network benchmark (:mod:`bench.network`): many senders into one box.

In this process, without sockets: one receiving :class:`~gateway.net.udp.UdpTransport` with its
:class:`~gateway.net.srtp.GroupSecurity`, :data:`SENDERS` senders each on its own ``GroupSecurity``
(one box per sender) and accepted through the real announcement handshake, and SRTP packets built
beforehand from real Opus payloads (speech at the codec defaults, 20 ms frames). Every 20 ms of a
simulated clock each sender's next packet goes through ``UdpTransport.datagram_received`` (header
check, SRTP unprotect, RTP parse) into the sink; then, once per frame, what the playout side does.
Measured cumulatively, each stage with fresh senders and receiver (SRTP refuses replays):

- ``receive+unprotect``: the sink drops the packet;
- ``+ jitter push``: the sink is :meth:`gateway.voice.downlink.Downlink.receive` (one port listening);
- ``+ jitter pop``: also one ``AdaptiveJitterBuffer.pop`` per sender per frame, without decoding;
- ``+ decode + mix``: ``Downlink.pull`` per frame instead (pops, Opus decode of every sender, the
  mixer, which mixes at most ``MAX_MIXED`` of them).

µs per packet = wall time of the timed frames / packets; core share at :data:`SENDERS` × 50 packets/s
= µs per packet × packets per second / 10⁶. The garbage collector is off while timing.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gateway.codec.opus import OpusEncoder
from gateway.config import PROCESSING_RATE_HZ, CodecSettings, GroupSettings, NetworkSettings
from gateway.net import rtp
from gateway.net.srtp import GroupSecurity
from gateway.net.udp import UdpTransport
from gateway.voice.downlink import Downlink

SENDERS = 200
FRAME_MS = 20
WARMUP_FRAMES = 25
TIMED_FRAMES = 60
REPEATS = 5
"""Each stage is timed this many times (fresh senders each time, the stages interleaved); the median
is reported, and the minimum beside it."""
SECRET = b"network benchmark group secret, 40 chars"
GROUP = "ops"
FIRST_SEQUENCE = 1000

STAGES = ("receive+unprotect", "+ jitter push", "+ jitter pop", "+ decode + mix")


def opus_payloads(clip: Path, count: int) -> list[bytes]:
    """``count`` Opus packets of real speech (the clip looped), at the codec defaults."""
    from gateway.audio.wav import read_wav

    data, rate = read_wav(clip)
    if rate != PROCESSING_RATE_HZ:
        import soxr

        data = soxr.resample(data, rate, PROCESSING_RATE_HZ).astype(np.int16)
    c = CodecSettings()
    enc = OpusEncoder(PROCESSING_RATE_HZ, FRAME_MS, c.bitrate_bps, c.complexity, False, 0, False)
    n = enc.frame_samples
    frames = len(data) // n
    return [enc.encode(data[(i % frames) * n: (i % frames + 1) * n]) for i in range(count)]


class _Setup:
    """Senders accepted by a fresh receiver, and their packets for every frame, protected."""

    def __init__(self, payloads: list[bytes], frames: int, sink: Callable[[str, rtp.RtpPacket], None],
                 pt: int) -> None:
        self.receiver = GroupSecurity(GROUP, SECRET)
        self.transport = UdpTransport(NetworkSettings(), [GroupSettings(GROUP, multicast="239.1.2.3")], pt,
                                      sink, {GROUP: self.receiver})
        self.packets: list[list[bytes]] = [[] for _ in range(frames)]
        for i in range(SENDERS):
            ssrc = 0x1000_0000 + i
            sender = GroupSecurity(GROUP, SECRET)
            sender.add_sender(ssrc, FIRST_SEQUENCE)
            for _ in range(3):  # what the announcers do on a LAN: each hears the other
                sender.on_announcement(self.receiver.announcement(0.0), 0.0)
                self.receiver.on_announcement(sender.announcement(0.0), 0.0)
            if not self.receiver.knows(ssrc):
                raise RuntimeError(f"sender {i} was not accepted")
            step = PROCESSING_RATE_HZ * FRAME_MS // 1000 * 3  # 48 kHz RTP clock
            for k in range(frames):
                payload = payloads[(i * 7 + k) % len(payloads)]
                packet = rtp.RtpPacket(pt, FIRST_SEQUENCE + k, 12345 + k * step, ssrc, k == 0, payload)
                self.packets[k].append(sender.protect(rtp.build(packet)))


def _time_stage(stage: str, payloads: list[bytes]) -> tuple[float, dict[str, Any]]:
    """µs per packet of one stage over :data:`TIMED_FRAMES` frames, and a sanity summary."""
    pt = CodecSettings().payload_type
    now = [0.0]
    downlink = Downlink((GROUP,), 0, max_delay_ms=200, clock=lambda: now[0])
    received = [0]

    def drop(group: str, packet: rtp.RtpPacket) -> None:
        received[0] += 1

    def push(group: str, packet: rtp.RtpPacket) -> None:
        received[0] += 1
        downlink.receive(group, packet)

    frames = WARMUP_FRAMES + TIMED_FRAMES
    setup = _Setup(payloads, frames, drop if stage == STAGES[0] else push, pt)
    feed = setup.transport.datagram_received
    tick = PROCESSING_RATE_HZ * FRAME_MS // 1000
    pops = 0
    gc.collect()
    gc.disable()
    try:
        for k in range(frames):
            if k == WARMUP_FRAMES:
                started = time.perf_counter_ns()
            now[0] = k * FRAME_MS / 1000
            for datagram in setup.packets[k]:
                feed(GROUP, datagram)
            now[0] += 0.005  # playout 5 ms after the frame's packets came (over the start threshold)
            if stage == STAGES[2]:
                for stream in downlink.senders.values():
                    stream.jitter.pop(now[0] * 1000)
                    pops += 1
            elif stage == STAGES[3]:
                downlink.pull(tick)
                pops += len(downlink.senders)
        elapsed = time.perf_counter_ns() - started
    finally:
        gc.enable()
    packets = TIMED_FRAMES * SENDERS
    rejected = sum(setup.transport.rejected.values())
    return elapsed / 1000 / packets, {"received": received[0], "rejected": rejected,
                                      "senders_in_downlink": len(downlink.senders)}


def run_cost(clip: Path) -> dict[str, Any]:
    """Every stage's µs per packet (median of :data:`REPEATS`) and core share at the full rate."""
    payloads = opus_payloads(clip, 250)
    rate = SENDERS * 1000 // FRAME_MS
    runs: dict[str, list[tuple[float, dict[str, Any]]]] = {stage: [] for stage in STAGES}
    for _ in range(REPEATS):  # stage by stage within a repeat: a busy moment hits every stage alike
        for stage in STAGES:
            runs[stage].append(_time_stage(stage, payloads))
    stages: dict[str, Any] = {}
    for stage, got in runs.items():
        us = statistics.median(r[0] for r in got)
        stages[stage] = {"us_per_packet": us, "min_us_per_packet": min(r[0] for r in got),
                         "all_us_per_packet": [round(r[0], 3) for r in got],
                         "core_fraction": us * rate / 1e6, **got[-1][1]}
    return {
        "senders": SENDERS, "frame_ms": FRAME_MS, "packets_per_s": rate, "timed_frames": TIMED_FRAMES,
        "warmup_frames": WARMUP_FRAMES, "repeats": REPEATS,
        "mean_payload_bytes": float(np.mean([len(p) for p in payloads])), "stages": stages,
        "method": "in-process, no sockets: UdpTransport.datagram_received (header check, SRTP unprotect, "
                  "RTP parse) -> Downlink; simulated clock, all senders' packets of a frame at once, "
                  "playout 5 ms later; gc off while timing",
    }
