"""Downlink of one port, in data-flow order: packets -> per-sender adaptive jitter buffer -> Opus decode
(FEC / concealment on loss, frames dropped or inserted to follow the target delay) -> mixer (per-sender
gain, priority ducking, limiter) -> 16 kHz audio for the port to play.

Mix-minus comes from the SSRCs: a port never receives its own packets. The port pulls exactly one
tick of audio each time its device delivers a capture frame, so playback runs on the device's clock.
Arrival and pull times come from an injected monotonic clock (seconds); the jitter buffer itself is
pure (:mod:`gateway.codec.jitter`, whose docstring explains the algorithm).

Each sender's buffer asks for three things besides plain audio, and this module carries them out:
LOST (rebuild the frame from the next packet's in-band FEC, or conceal it), EXPAND (play a frame of
concealment without consuming a packet: an underrun, or a frame inserted in a pause to raise the delay)
and DROP (decode a frame and discard it to lower the delay). The buffer drops in pauses by preference;
when it drops in speech the cut is crossfaded over :data:`DROP_CROSSFADE_SAMPLES`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.audio.bridge import Frame
from gateway.codec.jitter import AdaptiveJitterBuffer, Pop
from gateway.codec.opus import OpusDecoder, has_fec, packet_samples
from gateway.config import PROCESSING_RATE_HZ
from gateway.dsp.mixer import Mixer
from gateway.errors import CodecError
from gateway.net.rtp import RtpPacket

log = logging.getLogger(__name__)

#: A sender heard from in none of this many consecutive pulls is forgotten (its decoder freed).
IDLE_PULLS_BEFORE_FORGET = 500
#: Most talkers mixed into one port at once; beyond that the latest to start are left out (counted).
MAX_MIXED = 32
#: A frame whose RMS is under this (-40 dBFS) is a pause, where the jitter buffer may drop or insert.
QUIET_RMS = 32768 * 10 ** (-40 / 20)
#: A frame dropped in speech is crossfaded into the next one over this many samples (5 ms).
DROP_CROSSFADE_SAMPLES = PROCESSING_RATE_HZ // 200

_FADE_IN = ((np.arange(DROP_CROSSFADE_SAMPLES) + 0.5) / DROP_CROSSFADE_SAMPLES).astype(np.float32)


@dataclass
class SenderStats:
    """What a port heard from one sender (counters, then gauges at the last pull)."""

    group: str
    packets_received: int = 0
    """Packets that arrived (duplicates, late and out-of-window ones excluded)."""
    packets_lost: int = 0
    """Packets whose turn came while they were missing (a late packet counts here and in late)."""
    frames_concealed: int = 0
    """Frames played as Opus concealment inside a talk spurt: lost frames without FEC (an FEC attempt
    whose next packet carried no FEC data included), underruns, undecodable packets."""
    frames_fec_tried: int = 0
    """Lost frames decoded from the next packet with decode_fec (libopus conceals if it has no FEC)."""
    undecodable: int = 0
    """Packets libopus rejected (played as concealment)."""
    frames_fec_recovered: int = 0
    """Of the FEC attempts, those whose next packet carried FEC data (Opus LBRR): real recoveries."""
    packets_late: int = 0
    """Packets that came after their turn (already counted lost) and were dropped."""
    packets_duplicate: int = 0
    frames_dropped: int = 0
    """Frames decoded but not played, to bring the delay down (drift, a delay spike)."""
    frames_inserted: int = 0
    """Frames of concealment inserted in pauses, to bring the delay up (drift)."""
    jitter_ms: float = 0.0
    """RFC 3550 interarrival jitter."""
    delay_ms: float = 0.0
    """Playout delay the jitter buffer adds beyond the fastest network path."""
    target_ms: float = 0.0
    """The jitter buffer's adaptive target delay."""


class SenderStream:
    """One remote talker as heard by one port: jitter buffer, decoder and decoded-sample FIFO."""

    def __init__(self, ssrc: int, group: str, depth_ms: int, first_payload: bytes,
                 max_delay_ms: int = 200) -> None:
        self.ssrc = ssrc
        self.stats = SenderStats(group)
        frame = packet_samples(first_payload, PROCESSING_RATE_HZ) or PROCESSING_RATE_HZ // 50
        self.frame_samples = frame
        ceiling = max(max_delay_ms, depth_ms)
        self.jitter = AdaptiveJitterBuffer(frame * 1000 / PROCESSING_RATE_HZ, min_delay_ms=depth_ms,
                                           max_delay_ms=ceiling)
        self.decoder = OpusDecoder(PROCESSING_RATE_HZ)
        self._fifo = np.zeros(0, dtype=np.int16)
        self._quiet = True  # the last frame played was a pause
        self._dropped: Frame | None = None  # a frame dropped in speech, to crossfade from
        self._undecodable_played = 0
        self.idle_pulls = 0

    def push(self, packet: RtpPacket, arrival_ms: float) -> None:
        """A packet from this sender arrived at ``arrival_ms``."""
        self.jitter.push(packet.sequence, packet.timestamp, packet.marker, packet.payload, arrival_ms,
                         fec=has_fec(packet.payload))
        self._sync_stats()

    def pull(self, n: int, now_ms: float) -> Frame | None:
        """``n`` samples of this sender starting to play at ``now_ms``, or None when it has none."""
        chunks = [self._fifo]
        have = len(self._fifo)
        while have < n:
            # The frame popped now starts playing after what is already gathered for this tick.
            got = self._next_frame(now_ms + have * 1000 / PROCESSING_RATE_HZ)
            if got is None:
                break
            chunks.append(got)
            have += len(got)
        self._sync_stats()
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

    def _next_frame(self, play_ms: float) -> Frame | None:
        while True:
            res = self.jitter.pop(play_ms, quiet=self._quiet and self._dropped is None)
            if res.kind is Pop.DROP:
                # Decode to keep the decoder's history in step, then discard. A loud frame (the buffer
                # was draining in speech) is kept to crossfade into the next one instead of a cut.
                try:
                    pcm = self.decoder.decode(res.payload)
                except CodecError:
                    self.stats.undecodable += 1
                    continue
                if not _is_quiet(pcm):
                    self._dropped = pcm
                continue
            if res.kind is Pop.AUDIO:
                try:
                    pcm = self.decoder.decode(res.payload)
                    self.frame_samples = len(pcm) or self.frame_samples
                except CodecError:
                    # A valid RTP packet whose Opus payload libopus rejects: play it as lost.
                    self.stats.undecodable += 1
                    self._undecodable_played += 1
                    pcm = self.decoder.conceal(self.frame_samples)
            elif res.kind is Pop.LOST and res.next_payload:
                if has_fec(res.next_payload):
                    self.stats.frames_fec_recovered += 1
                pcm = self.decoder.recover(res.next_payload, self.frame_samples)
            elif res.kind in (Pop.LOST, Pop.EXPAND):
                pcm = self.decoder.conceal(self.frame_samples)
            else:  # IDLE
                self._dropped = None
                self._quiet = True
                return None
            if self._dropped is not None:
                pcm = _crossfade(self._dropped, pcm)
                self._dropped = None
            self._quiet = _is_quiet(pcm)
            return pcm

    def _sync_stats(self) -> None:
        j, s = self.jitter.stats, self.stats
        s.packets_received = j.received
        s.packets_lost = j.lost
        s.packets_late = j.late
        s.packets_duplicate = j.duplicates
        s.frames_fec_tried = j.fec_eligible
        s.frames_concealed = (j.concealed + j.fec_eligible - s.frames_fec_recovered
                              + self._undecodable_played)
        s.frames_dropped = j.dropped
        s.frames_inserted = j.inserted
        s.jitter_ms = self.jitter.jitter_ms
        s.delay_ms = self.jitter.delay_ms
        s.target_ms = self.jitter.target_ms


def _is_quiet(pcm: Frame) -> bool:
    if len(pcm) == 0:
        return True
    x = pcm.astype(np.float32)
    return float(np.dot(x, x)) < QUIET_RMS * QUIET_RMS * len(pcm)


def _crossfade(before: Frame, after: Frame) -> Frame:
    """``after`` with its start faded in from the start of ``before`` (which follows on from what was
    played last), so skipping ``before`` leaves no step in the waveform."""
    w = min(DROP_CROSSFADE_SAMPLES, len(before), len(after))
    out = after.copy()
    fade_in = _FADE_IN[:w] if w == DROP_CROSSFADE_SAMPLES else (np.arange(w, dtype=np.float32) + 0.5) / w
    mixed = before[:w] * (1 - fade_in) + after[:w] * fade_in
    out[:w] = np.clip(np.rint(mixed), -32768, 32767).astype(np.int16)
    return out


class Downlink:
    """Everything one port hears: a stream per remote sender, mixed.

    ``depth_ms`` is the floor of each sender's adaptive jitter-buffer target (what a clean network
    costs), ``max_delay_ms`` its ceiling (raised to the floor if lower); ``clock`` returns monotonic
    seconds and stamps arrivals and pulls.
    """

    def __init__(self, groups: tuple[str, ...], depth_ms: int, *, max_delay_ms: int = 200,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.groups = groups
        self.depth_ms = depth_ms
        self.max_delay_ms = max_delay_ms
        self._clock = clock
        self.senders: dict[int, SenderStream] = {}
        self.receiving = False
        """True while at least one sender produced audio in the last pull."""
        self.forgotten: dict[int, SenderStats] = {}
        self.gains: dict[int, float] = {}
        """Linear gain per sender SSRC (1.0 when absent): a listener turning one talker down."""
        self.priority: set[int] = set()
        """SSRCs whose audio ducks everyone else's on this port (priority talkers)."""
        self.urgent: set[str] = set()
        """Groups with an emergency call on the air: heard ahead of every other group."""
        self.frames_held = 0
        """Sender frames not played because a group earlier on the scan list (or an emergency) was
        heard at the same time."""
        self._rank = {g: i + 1 for i, g in enumerate(groups)}
        self.frames_over_capacity = 0
        """Sender frames left out because more than :data:`MAX_MIXED` talked at once."""
        self._mixer: Mixer | None = None
        self._sources = np.zeros((MAX_MIXED, 0), dtype=np.float32)
        self._remote = np.full(MAX_MIXED, -1, dtype=np.int64)
        self._gain_row = np.ones(MAX_MIXED, dtype=np.float32)
        self._priority_row = np.zeros(MAX_MIXED, dtype=bool)
        self._ranks = [0] * MAX_MIXED

    def receive(self, group: str, packet: RtpPacket) -> None:
        """A packet for one of this port's groups (its arrival time is taken now)."""
        if group not in self.groups:
            return
        arrival_ms = self._clock() * 1000
        stream = self.senders.get(packet.ssrc)
        if stream is None:
            stream = SenderStream(packet.ssrc, group, self.depth_ms, packet.payload, self.max_delay_ms)
            self.senders[packet.ssrc] = stream
        stream.push(packet, arrival_ms)

    def pull(self, n: int) -> Frame:
        """The next ``n`` samples of the mix (silence when nobody talks)."""
        if self._mixer is None or self._sources.shape[1] != n:
            self._mixer = Mixer(1, MAX_MIXED, frame_samples=n)
            self._sources = np.zeros((MAX_MIXED, n), dtype=np.float32)
        now_ms = self._clock() * 1000
        active = 0
        ranks = self._ranks
        for ssrc, stream in list(self.senders.items()):
            audio = stream.pull(n, now_ms)
            if audio is not None:
                if active == MAX_MIXED:
                    self.frames_over_capacity += 1
                    continue
                np.multiply(audio, np.float32(1 / 32768), out=self._sources[active])
                self._gain_row[active] = self.gains.get(ssrc, 1.0)
                self._priority_row[active] = ssrc in self.priority
                group = stream.stats.group
                ranks[active] = 0 if group in self.urgent else self._rank.get(group, len(self._rank))
                active += 1
            elif stream.idle_pulls > IDLE_PULLS_BEFORE_FORGET:
                self.forgotten[ssrc] = stream.stats
                del self.senders[ssrc]
        if active > 1 and len(self._rank) > 1:
            # Scan list: only the most important group heard now plays (the streams of the others
            # keep running, so they resume in step when it goes quiet).
            best = min(ranks[:active])
            for i in range(active):
                if ranks[i] != best:
                    self._gain_row[i] = 0.0
                    self.frames_held += 1
        self.receiving = active > 0
        mixed = self._mixer.mix(self._sources[:active], self._remote[:active],
                                self._gain_row[:active], self._priority_row[:active])[0]
        out: Frame = (mixed * np.float32(32768)).astype(np.int16)
        return out

    def totals(self) -> SenderStats:
        """Counters summed over every sender heard (current and forgotten); the gauges (jitter,
        delay, target) are the largest among the current senders."""
        total = SenderStats(group="*")
        stats = [s.stats for s in self.senders.values()] + list(self.forgotten.values())
        for s in stats:
            total.packets_received += s.packets_received
            total.packets_lost += s.packets_lost
            total.frames_concealed += s.frames_concealed
            total.frames_fec_tried += s.frames_fec_tried
            total.undecodable += s.undecodable
            total.frames_fec_recovered += s.frames_fec_recovered
            total.packets_late += s.packets_late
            total.packets_duplicate += s.packets_duplicate
            total.frames_dropped += s.frames_dropped
            total.frames_inserted += s.frames_inserted
        for s in (st.stats for st in self.senders.values()):
            total.jitter_ms = max(total.jitter_ms, s.jitter_ms)
            total.delay_ms = max(total.delay_ms, s.delay_ms)
            total.target_ms = max(total.target_ms, s.target_ms)
        return total

    def reception_report(self) -> dict[int, dict[str, Any]]:
        """Per current sender SSRC: ``loss_fraction`` of its frames missing at their turn since the
        previous call, ``frames`` and ``lost`` behind it, RFC 3550 ``jitter_ms``, and the buffer's
        ``delay_ms`` and ``target_ms`` (for receiver reports driving the sender's adaptive FEC)."""
        out: dict[int, dict[str, Any]] = {}
        for ssrc, stream in self.senders.items():
            r = stream.jitter.report()
            out[ssrc] = {"loss_fraction": r.loss_fraction, "frames": r.frames, "lost": r.lost,
                         "jitter_ms": r.jitter_ms, "delay_ms": r.delay_ms, "target_ms": r.target_ms}
        return out
