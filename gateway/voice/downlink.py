"""Downlink of one port, in data-flow order: packets -> per-sender jitter buffer -> Opus decode
(concealment / FEC on loss) -> mixer (per-sender gain, priority ducking, limiter) -> 16 kHz audio
for the port to play.

Mix-minus comes from the SSRCs: a port never receives its own packets. The port pulls exactly one
tick of audio each time its device delivers a capture frame, so playback runs on the device's clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from gateway.audio.bridge import Frame
from gateway.codec.jitter import JitterBuffer, Pop
from gateway.codec.opus import OpusDecoder, packet_samples
from gateway.config import PROCESSING_RATE_HZ
from gateway.dsp.mixer import Mixer
from gateway.errors import CodecError
from gateway.net.rtp import RtpPacket

log = logging.getLogger(__name__)

#: A sender heard from in none of this many consecutive pulls is forgotten (its decoder freed).
IDLE_PULLS_BEFORE_FORGET = 500
#: Most talkers mixed into one port at once; beyond that the latest to start are left out (counted).
MAX_MIXED = 32


@dataclass
class SenderStats:
    """What a port heard from one sender."""

    group: str
    packets_received: int = 0
    """Packets that arrived (duplicates and late ones excluded)."""
    packets_lost: int = 0
    """Packets whose turn came while they were missing."""
    frames_concealed: int = 0
    """Lost (or undecodable) frames that were played as concealment."""
    frames_fec_tried: int = 0
    """Of those, frames rebuilt with the next packet's in-band FEC (when the sender sends it)."""
    undecodable: int = 0


class SenderStream:
    """One remote talker as heard by one port: jitter buffer, decoder and decoded-sample FIFO."""

    def __init__(self, ssrc: int, group: str, depth_ms: int, first_payload: bytes) -> None:
        self.ssrc = ssrc
        self.stats = SenderStats(group)
        frame = packet_samples(first_payload, PROCESSING_RATE_HZ) or PROCESSING_RATE_HZ // 50
        self.frame_samples = frame
        frame_ms = max(1, frame * 1000 // PROCESSING_RATE_HZ)
        self.jitter = JitterBuffer(depth_packets=-(-depth_ms // frame_ms))
        self.decoder = OpusDecoder(PROCESSING_RATE_HZ)
        self._fifo = np.zeros(0, dtype=np.int16)
        self.idle_pulls = 0

    def push(self, packet: RtpPacket) -> None:
        """A packet from this sender arrived."""
        self.jitter.push(packet.sequence, packet.payload)
        j = self.jitter.stats
        self.stats.packets_received = j.received
        self.stats.packets_lost = j.lost + j.overflow_dropped


    def pull(self, n: int) -> Frame | None:
        """``n`` samples of this sender, or None when it has nothing to play."""
        chunks = [self._fifo]
        have = len(self._fifo)
        while have < n:
            got = self._next_frame()
            if got is None:
                break
            chunks.append(got)
            have += len(got)
        if have == 0:
            self.idle_pulls += 1
            self._fifo = self._fifo[:0]
            return None
        self.idle_pulls = 0
        audio = np.concatenate(chunks) if len(chunks) > 1 else self._fifo
        if have < n:  # the talk spurt's tail: pad its last frame with silence
            audio = np.concatenate([audio, np.zeros(n - have, dtype=np.int16)])
        self._fifo = audio[n:]
        return audio[:n]

    def _next_frame(self) -> Frame | None:
        res = self.jitter.pop()
        if res.kind is Pop.AUDIO:
            try:
                pcm = self.decoder.decode(res.payload)
            except CodecError:
                # A valid RTP packet whose Opus payload libopus rejects: play it as lost.
                self.stats.undecodable += 1
                return self._conceal()
            self.frame_samples = len(pcm) or self.frame_samples
            return pcm
        if res.kind is Pop.LOST:
            self.stats.packets_lost = self.jitter.stats.lost + self.jitter.stats.overflow_dropped
            if res.next_payload:
                # decode_fec uses the next packet's LBRR data when the sender enabled FEC and
                # falls back to concealment inside libopus when it has none.
                self.stats.frames_concealed += 1
                self.stats.frames_fec_tried += 1
                return self.decoder.recover(res.next_payload, self.frame_samples)
            return self._conceal()
        return None

    def _conceal(self) -> Frame:
        self.stats.frames_concealed += 1
        return self.decoder.conceal(self.frame_samples)


class Downlink:
    """Everything one port hears: a stream per remote sender, mixed."""

    def __init__(self, groups: tuple[str, ...], depth_ms: int) -> None:
        self.groups = groups
        self.depth_ms = depth_ms
        self.senders: dict[int, SenderStream] = {}
        self.receiving = False
        """True while at least one sender produced audio in the last pull."""
        self.forgotten: dict[int, SenderStats] = {}
        self.gains: dict[int, float] = {}
        """Linear gain per sender SSRC (1.0 when absent): a listener turning one talker down."""
        self.priority: set[int] = set()
        """SSRCs whose audio ducks everyone else's on this port (priority talkers)."""
        self.frames_over_capacity = 0
        """Sender frames left out because more than :data:`MAX_MIXED` talked at once."""
        self._mixer: Mixer | None = None
        self._sources = np.zeros((MAX_MIXED, 0), dtype=np.float32)
        self._remote = np.full(MAX_MIXED, -1, dtype=np.int64)
        self._gain_row = np.ones(MAX_MIXED, dtype=np.float32)
        self._priority_row = np.zeros(MAX_MIXED, dtype=bool)

    def receive(self, group: str, packet: RtpPacket) -> None:
        """A packet for one of this port's groups."""
        if group not in self.groups:
            return
        stream = self.senders.get(packet.ssrc)
        if stream is None:
            stream = SenderStream(packet.ssrc, group, self.depth_ms, packet.payload)
            self.senders[packet.ssrc] = stream
        stream.push(packet)

    def pull(self, n: int) -> Frame:
        """The next ``n`` samples of the mix (silence when nobody talks)."""
        if self._mixer is None or self._sources.shape[1] != n:
            self._mixer = Mixer(1, MAX_MIXED, frame_samples=n)
            self._sources = np.zeros((MAX_MIXED, n), dtype=np.float32)
        active = 0
        for ssrc, stream in list(self.senders.items()):
            audio = stream.pull(n)
            if audio is not None:
                if active == MAX_MIXED:
                    self.frames_over_capacity += 1
                    continue
                np.multiply(audio, np.float32(1 / 32768), out=self._sources[active])
                self._gain_row[active] = self.gains.get(ssrc, 1.0)
                self._priority_row[active] = ssrc in self.priority
                active += 1
            elif stream.idle_pulls > IDLE_PULLS_BEFORE_FORGET:
                self.forgotten[ssrc] = stream.stats
                del self.senders[ssrc]
        self.receiving = active > 0
        mixed = self._mixer.mix(self._sources[:active], self._remote[:active],
                                self._gain_row[:active], self._priority_row[:active])[0]
        out: Frame = (mixed * np.float32(32768)).astype(np.int16)
        return out

    def totals(self) -> SenderStats:
        """Counters summed over every sender heard (current and forgotten)."""
        total = SenderStats(group="*")
        stats = [s.stats for s in self.senders.values()] + list(self.forgotten.values())
        for s in stats:
            total.packets_received += s.packets_received
            total.packets_lost += s.packets_lost
            total.frames_concealed += s.frames_concealed
            total.frames_fec_tried += s.frames_fec_tried
            total.undecodable += s.undecodable
        return total
