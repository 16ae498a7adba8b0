"""An adaptive jitter buffer for one sender (pure: no clock reads, no I/O; time comes in as ms).

The caller pushes each packet with its arrival time and pops once per frame with the time the popped
frame will start to play (its device clock, plus whatever audio is queued ahead of the frame). Times are
float milliseconds on one monotonic clock; RTP timestamps are on the sender's clock (48 kHz for Opus,
RFC 7587), 16-bit sequence numbers and 32-bit timestamps wrap.

**Measuring jitter.** Each packet's transit ``d = arrival − timestamp time`` is the network delay plus
an unknown constant. Its *relative delay* ``r = d − min(d over the last 2 s of packets)`` says how much
later than the fastest recent packet it came. Every 500 ms of arrivals the largest ``r`` becomes one
sample, and the jitter estimate ``q`` is the 95th percentile of the last 10 s of samples (and of the
interval in progress). Taking a maximum per interval is NetEQ's trick (webrtc
``neteq/delay_manager.cc``, ``resample_interval_ms``): a single stall or outage is one sample and is
outvoted, jitter that recurs every interval raises the target within about a second, and it is
forgotten 10 s after it stops. So::

    target = clamp(q + margin + 5/8 frame [+ one frame of FEC look-ahead], floor, ceiling)

The look-ahead frame is added while the sender's packets carry in-band FEC and losses are happening
(two or more loss events in the last 10 s): then packet k+1 is usually here when frame k turns out to
be missing, and the caller can rebuild k from it instead of concealing it.

**Playout delay.** The *delay* of the due frame is ``play time − timestamp time − min transit``: how
long the buffer holds audio beyond the fastest path (pop time minus arrival time, for a packet that came
the fastest way). It is min-filtered over the last 16 pops, because a pop can only be late (an audio
tick is seen by the loop after it happened), never early. Pops come once per frame, so a start lands
anywhere in a frame-wide window: playout (re)starts at the first pop where the oldest packet's delay
reaches ``target − frame/2``, which puts the delay within half a frame of the target, and at least
``q + 1/8 frame`` (the 5/8 in the target): the eighth is the margin that lets drift be corrected in a
pause before a packet is ever late. With no jitter the buffer thus adds the floor ± half a frame; with
the floor at 0 it adds 1/8 to 9/8 of a frame (on average 5/8: 12.5 ms at 20 ms frames).

**Starting.** A start happens when not playing (first packet, after a talk spurt, after an outage) and
at a talk-spurt boundary inside the stream (the RTP marker bit, or a timestamp that does not follow on:
the sender's gate closed, or DTX). Packets whose delay is already over the ceiling at that moment (a
backlog released after a network stall) are flushed unplayed; those under it are played, and the excess
is drained as below: a talk spurt never keeps a stale high delay, and no first syllable is thrown away
for a few tens of milliseconds. One exception is deliberate: a spurt whose first packet carries the
marker bit and arrives later than the jitter explains (a hands-free sender's pre-roll, audio from
before its gate opened, sent at once) keeps that lateness as the spurt's *offset*, judged at the first
pop that sees the spurt: it plays ``target`` after the burst came and the spurt is steered to
``target + offset``, so the pre-roll is heard whole instead of being chopped down during speech.

**Loss.** A due frame that is missing while later packets are here is LOST: the next packet's payload
is handed over when it is here, for Opus in-band FEC. A due frame missing with nothing else here is an
*underrun*: the pop says EXPAND (conceal one frame without consuming anything), because the packet may
just be late. If it then comes it is played, one frame later; if later packets come instead, the frames
already concealed stand in for the missing ones. After ``max_conceal_ms`` of concealment in a row the
stream is considered stopped (the talk spurt ended or the network went away): pops return IDLE and the
next packet starts afresh; the gap is counted as lost. Concealment that ran past the last packet is
counted as ``tail_concealed`` (a talk spurt's fade-out), and only moves to ``concealed`` if the same
spurt's audio follows.

**Draining and clock drift.** At each pop the filtered delay is compared with the target. More than
half a frame above it, the buffer asks the caller to DROP the due frame (decode it to keep the decoder in
step, discard the audio, pop again) if the caller says it is playing a pause (``quiet``) and the next
packet is here; more than half a frame below it, it asks for an EXPAND (a frame of concealment inserted
before the due one) in a pause. More than a whole frame above, it starts *draining*: a DROP in speech
too, at most every eighth pop (the caller crossfades over the cut), until the delay is back within half
a frame (every pop while over the ceiling); more than a frame below, it inserts in speech too. So the
delay stays within target ± one frame, and within ± half a frame when the talker pauses now and then.
A step moves the delay by a whole frame, from just past one edge of that band to just inside the
other, so a step *back* waits until the delay is 3/4 of a frame off (:data:`REVERSAL_FRAMES`):
otherwise a delay sitting at an edge, and a target or pop time wavering by a millisecond, would
insert and drop by turns (measured in the end-to-end test: five steps in the first second of a
clean stream, PESQ 3.28 instead of 4.47), each step a cut in the audio.
Whole frames in pauses are the choice rather than continuous time-stretching (WSOLA, NetEQ's
accelerate and preemptive expand) because ±200 ppm of drift is 4 µs per 20 ms frame, one frame every
100 s: speech pauses come far more often than that, and dropping or repeating a frame of near-silence is
inaudible, where a time-stretcher would cost CPU on every frame of a Pi for the rare cases that need it
(draining a delay spike in the middle of a long utterance, which the crossfaded drops cover, at a
cost in quality while they last).

**Stats.** :class:`JitterStats` counts packets and frames; :meth:`AdaptiveJitterBuffer.report` gives the
fraction of frames missing at their turn since the last report and the RFC 3550 interarrival jitter, for
receiver reports that drive the sender's adaptive FEC.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

#: A sequence number more than this ahead of the highest seen is out of the window (a restart?).
RESYNC_JUMP = 1000
#: A sequence number more than this behind the highest seen is out of the window (RFC 3550 A.1).
MAX_MISORDER = 100
#: Transit times of this much recent audio give the fastest path (the base of relative delays).
BASE_WINDOW_MS = 2000.0
#: Relative delays are sampled as their maximum over this much arrival time.
INTERVAL_MS = 500.0
#: Pops over which the playout delay is min-filtered.
DELAY_FILTER_POPS = 16
#: While the delay is under the ceiling, at most one DROP in speech per this many pops (12.5 %).
FORCED_DROP_EVERY = 8
#: After a step one way (DROP or inserted EXPAND), how many frames off the target the delay must be
#: before a step back: more than the half frame a step needs otherwise (see the module docstring).
REVERSAL_FRAMES = 0.75
#: Most lateness a talk spurt's first packet may carry as the spurt's own offset (the sender's
#: pre-roll: config allows up to 1000 ms).
MAX_SPURT_OFFSET_MS = 1000.0
#: Consumed sequence numbers remembered to tell a duplicate from a late packet.
RECENT_SEQUENCES = 512

_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32


class Pop(enum.Enum):
    """What :meth:`AdaptiveJitterBuffer.pop` asks the caller to play."""

    AUDIO = "audio"
    """Decode ``payload`` and play it."""
    LOST = "lost"
    """The due frame never came: rebuild it from ``next_payload`` (FEC) if given, else conceal it."""
    EXPAND = "expand"
    """Play one frame of concealment and consume nothing (an underrun, or a frame inserted in a pause
    to raise the delay)."""
    DROP = "drop"
    """Decode ``payload`` (to keep the decoder in step) but don't play it, and pop again at once: the
    delay is above target."""
    IDLE = "idle"
    """Nothing to play: not started, waiting for a talk spurt's playout time, or stopped."""


@dataclass(frozen=True, slots=True)
class PopResult:
    """One pop: what to do, for which sequence number (-1 for EXPAND and IDLE), with which payloads."""

    kind: Pop
    sequence: int = -1
    payload: bytes = b""
    next_payload: bytes = b""


@dataclass
class JitterStats:
    """Counters (RFC 3550 receiver statistics in spirit; frames and packets are one to one)."""

    received: int = 0
    """Packets accepted (duplicates, late and out-of-window ones excluded)."""
    duplicates: int = 0
    """Packets already received (buffered, played or flushed)."""
    late: int = 0
    """Packets that came after their turn (counted lost at that turn) and were refused."""
    strays: int = 0
    """Packets far outside the sequence window, refused (one of two in a row starts a restart)."""
    lost: int = 0
    """Sequence numbers whose turn came (or that a restart skipped over) without the packet."""
    fec_eligible: int = 0
    """LOST pops that handed over the next packet's payload for FEC."""
    concealed: int = 0
    """Frames the caller had to conceal inside a talk spurt: LOST without a next payload, and underrun
    EXPANDs that audio followed."""
    tail_concealed: int = 0
    """Underrun EXPANDs after the last packet so far: past the end of a talk spurt (or into an outage)
    until audio follows, when they move to ``concealed``."""
    inserted: int = 0
    """EXPANDs asked for to raise the delay (the due packet was here)."""
    dropped: int = 0
    """DROPs asked for to lower the delay."""
    flushed: int = 0
    """Received packets discarded unplayed: stale at a start, overflow, or a sender restart."""
    spurts: int = 0
    """Playout starts: talk spurts, and resumptions after an outage."""
    restarts: int = 0
    """Sender restarts (a sequence jump confirmed by two packets, or one with the marker bit)."""


@dataclass(frozen=True, slots=True)
class ReceptionReport:
    """What a receiver report needs, for the interval since the previous report."""

    loss_fraction: float
    """Frames missing at their turn / frames whose turn came (0.0 when none came). Unlike RFC 3550's
    fraction lost, a packet that came too late counts as lost: it is what the decoder missed."""
    frames: int
    """Frames whose turn came in the interval (played, dropped or lost)."""
    lost: int
    jitter_ms: float
    """RFC 3550 interarrival jitter (section 6.4.1, A.8), in milliseconds."""
    delay_ms: float
    target_ms: float


class _Held(NamedTuple):
    ts: int  # extended RTP timestamp
    marker: bool
    payload: bytes
    transit: float  # arrival time minus timestamp time, ms


_Raw = tuple[int, int, bool, bytes, float, bool]  # sequence, timestamp, marker, payload, arrival, fec


class AdaptiveJitterBuffer:
    """Reorders one sender's packets and releases them one frame per pop at an adaptive delay.

    ``frame_ms`` is the sender's frame duration; ``min_delay_ms`` and ``max_delay_ms`` bound the target
    (the floor is what a clean network costs); ``clock_hz`` is the RTP timestamp clock; ``quantile`` of
    the relative-delay samples over ``history_ms`` sets the target, plus ``margin_ms``; after
    ``max_conceal_ms`` of concealment in a row the stream is taken as stopped.
    """

    def __init__(
        self,
        frame_ms: float,
        min_delay_ms: float = 0.0,
        max_delay_ms: float = 200.0,
        *,
        clock_hz: int = 48000,
        quantile: float = 0.95,
        margin_ms: float = 0.0,
        history_ms: float = 10000.0,
        max_conceal_ms: float = 100.0,
    ) -> None:
        if not frame_ms > 0 or not 0 <= min_delay_ms <= max_delay_ms or clock_hz <= 0:
            raise ValueError("need frame_ms > 0, 0 <= min_delay_ms <= max_delay_ms and clock_hz > 0")
        if not 0 < quantile <= 1 or margin_ms < 0 or history_ms < INTERVAL_MS or max_conceal_ms < 0:
            raise ValueError("need 0 < quantile <= 1, margin_ms >= 0, history_ms >= 500, "
                             "max_conceal_ms >= 0")
        self.frame_ms = float(frame_ms)
        self.min_delay_ms = float(min_delay_ms)
        self.max_delay_ms = float(max_delay_ms)
        self.quantile = quantile
        self.margin_ms = margin_ms
        self.history_ms = history_ms
        self.stats = JitterStats()
        self._khz = clock_hz / 1000
        self._frame_ts = round(self.frame_ms * self._khz)
        self._max_conceal = max(1, math.ceil(max_conceal_ms / self.frame_ms))
        self._max_packets = max(64, math.ceil(4 * max(self.max_delay_ms, 1000.0) / self.frame_ms))
        # packets and sequence state (sequence numbers and timestamps extended past their wraps)
        self._packets: dict[int, _Held] = {}
        self._highest: int | None = None
        self._ref_ts: int | None = None
        self._candidate: _Raw | None = None
        self._recent: set[int] = set()
        self._recent_order: deque[int] = deque()
        self._playing = False
        self._next_seq: int | None = None  # due next; anything older is late
        self._next_ts = 0  # the timestamp the due frame should have if the stream runs on
        # arrival measurements
        self._base_window = max(2, math.ceil(BASE_WINDOW_MS / self.frame_ms))
        self._transits: deque[tuple[int, float]] = deque()  # (index, transit), increasing transits
        self._transit_count = 0
        self._base = 0.0  # the fastest transit of the recent packets
        self._samples: deque[float] = deque(maxlen=math.ceil(history_ms / INTERVAL_MS))
        self._interval_start: float | None = None
        self._interval_max = 0.0
        self._jitter_q = 0.0
        self._rfc_jitter = 0.0
        self._last_transit: float | None = None
        self._fec_seen_ms: float | None = None
        self._last_arrival_ms = 0.0
        self._loss_events: deque[float] = deque()
        # playout
        self._pop_e: deque[float] = deque(maxlen=DELAY_FILTER_POPS)
        self._skew = 0.0  # frames inserted minus dropped since the start, in ms (filter correction)
        self._delay = 0.0
        self._offset = 0.0  # the current talk spurt's own lateness (pre-roll), kept while it lasts
        self._offset_seq: int | None = None  # the spurt start the next offset was judged for
        self._offset_seen = 0.0
        self._pending = 0  # underrun EXPANDs not yet matched by a played or skipped frame
        self._run = 0  # concealment pops in a row
        self._tail = 0  # underrun EXPANDs in the current run
        self._in_loss = False
        self._draining = False
        self._last_step = 0  # +1 after an inserted frame, -1 after a drop, 0 since the start
        self._since_forced = FORCED_DROP_EVERY
        self._report_frames = 0
        self._report_lost = 0

    # -- state ---------------------------------------------------------------------------------

    @property
    def playing(self) -> bool:
        """True from a playout start until the stream stops (spurt boundary, outage)."""
        return self._playing

    @property
    def buffered(self) -> int:
        """Packets held."""
        return len(self._packets)

    @property
    def buffered_ms(self) -> float:
        """Audio held, in ms."""
        return len(self._packets) * self.frame_ms

    @property
    def target_ms(self) -> float:
        """The playout delay aimed at now."""
        look = self.frame_ms if self._lookahead() else 0.0
        want = self._jitter_q + self.margin_ms + look + 5 * self.frame_ms / 8
        return min(max(want, self.min_delay_ms), self.max_delay_ms)

    @property
    def delay_ms(self) -> float:
        """The filtered playout delay at the last pop (0.0 when not playing)."""
        return self._delay if self._playing else 0.0

    @property
    def offset_ms(self) -> float:
        """Lateness the current talk spurt started with beyond the jitter (a sender's pre-roll),
        kept on top of the target while the spurt lasts."""
        return self._offset if self._playing else 0.0

    @property
    def jitter_ms(self) -> float:
        """RFC 3550 interarrival jitter, in ms."""
        return self._rfc_jitter

    def report(self) -> ReceptionReport:
        """Loss and jitter since the previous call (for a receiver report)."""
        frames, lost = self._report_frames, self._report_lost
        self._report_frames = self._report_lost = 0
        return ReceptionReport(lost / frames if frames else 0.0, frames, lost, self._rfc_jitter,
                               self.delay_ms, self.target_ms)

    # -- push ----------------------------------------------------------------------------------

    def push(self, sequence: int, timestamp: int, marker: bool, payload: bytes, arrival_ms: float,
             fec: bool = False) -> bool:
        """Store a packet that arrived at ``arrival_ms``; False if it was refused (and counted).

        ``fec``: the packet carries in-band FEC for the frame before it (Opus LBRR); it lets the target
        keep one frame of look-ahead while losses happen.
        """
        raw: _Raw = (sequence & 0xFFFF, timestamp & 0xFFFFFFFF, marker, payload, arrival_ms, fec)
        if self._highest is not None:
            delta = self._unwrap_seq(raw[0]) - self._highest
            if delta > RESYNC_JUMP or delta < -MAX_MISORDER:
                # Out of the window: a stray, or the first packets of a restarted sender (fresh random
                # sequence and timestamp). Like RFC 3550 A.1, believe a restart when two packets in a
                # row follow on from each other out there, or at once for a talk spurt's first packet.
                candidate = self._candidate
                follows = candidate is not None and (raw[0] - candidate[0]) & 0xFFFF == 1
                if not (marker or follows):
                    self._candidate = raw
                    self.stats.strays += 1
                    return False
                self._restart()
                if follows and candidate is not None:
                    self.stats.strays -= 1
                    self._accept(candidate)
                return self._accept(raw)
        self._candidate = None
        return self._accept(raw)

    def _accept(self, raw: _Raw) -> bool:
        seq16, ts32, marker, payload, arrival_ms, fec = raw
        ext = seq16 if self._highest is None else self._unwrap_seq(seq16)
        if ext in self._packets or ext in self._recent:
            self.stats.duplicates += 1
            return False
        if self._ref_ts is None:
            ts = ts32
        else:
            ts = self._ref_ts + ((ts32 - self._ref_ts + (_TS_MOD >> 1)) % _TS_MOD) - (_TS_MOD >> 1)
        self._ref_ts = ts
        transit = self._measure(ts, arrival_ms)  # a late packet is evidence about the network too
        self._last_arrival_ms = arrival_ms
        if fec:
            self._fec_seen_ms = arrival_ms
        if self._next_seq is not None and ext < self._next_seq:
            self.stats.late += 1
            return False
        self._packets[ext] = _Held(ts, marker, payload, transit)
        self.stats.received += 1
        if self._highest is None or ext > self._highest:
            self._highest = ext
        if len(self._packets) > self._max_packets:
            # The sender runs far ahead of playout (or nobody pops): keep the newest, start over.
            keep = sorted(self._packets)[-self._max_packets // 2:]
            for old in [s for s in self._packets if s < keep[0]]:
                self._flush(old)
            self._stop()
        return True

    def _unwrap_seq(self, seq16: int) -> int:
        """The extended sequence number nearest the highest seen (RFC 3550 A.1)."""
        ref = self._highest if self._highest is not None else seq16
        return ref + ((seq16 - ref + (_SEQ_MOD >> 1)) % _SEQ_MOD) - (_SEQ_MOD >> 1)

    def _measure(self, ts: int, arrival_ms: float) -> float:
        transit = arrival_ms - ts / self._khz
        if self._last_transit is not None:
            self._rfc_jitter += (abs(transit - self._last_transit) - self._rfc_jitter) / 16
        self._last_transit = transit
        # Sliding minimum of the transit over the last BASE_WINDOW_MS of packets (monotonic deque).
        index = self._transit_count
        self._transit_count += 1
        q = self._transits
        while q and q[-1][1] >= transit:
            q.pop()
        q.append((index, transit))
        while q[0][0] <= index - self._base_window:
            q.popleft()
        self._base = q[0][1]
        relative = min(transit - self._base, self.max_delay_ms)
        if self._interval_start is None or arrival_ms - self._interval_start >= INTERVAL_MS:
            if self._interval_start is not None:
                self._samples.append(self._interval_max)
            self._interval_start = arrival_ms
            self._interval_max = relative
        elif relative > self._interval_max:
            self._interval_max = relative
        ranked = sorted([*self._samples, self._interval_max])
        self._jitter_q = ranked[int(self.quantile * (len(ranked) - 1))]
        return transit

    def _lookahead(self) -> bool:
        return (self._fec_seen_ms is not None and len(self._loss_events) >= 2
                and self._last_arrival_ms - self._fec_seen_ms <= self.history_ms)

    # -- pop -----------------------------------------------------------------------------------

    def pop(self, now_ms: float, quiet: bool = False) -> PopResult:
        """The frame to play at ``now_ms``; call once per frame (and again at once after a DROP).

        ``quiet``: the audio played just before is a pause (low energy), where the buffer may drop or
        insert a frame to follow the target; away from pauses it only does so beyond one frame off.
        """
        while self._loss_events and now_ms - self._loss_events[0] > self.history_ms:
            self._loss_events.popleft()
        self._since_forced += 1
        if not self._playing or self._next_seq is None:
            return self._start(now_ms)
        if self._pending and self._packets and self._next_seq not in self._packets:
            # Packets came after an underrun: the frames concealed meanwhile stand in for missing ones.
            skip = min(self._pending, min(self._packets) - self._next_seq)
            self._pending -= skip
            self._skip_lost(skip, now_ms)
        due = self._next_seq
        held = self._packets.get(due)
        if held is not None and (held.marker or abs(held.ts - self._next_ts) > self._frame_ts // 2):
            self._stop()  # a talk spurt begins here: it gets its own start
            return self._start(now_ms)
        e = now_ms - (held.ts if held is not None else self._next_ts) / self._khz
        self._pop_e.append(e - self._skew)
        self._delay = min(self._pop_e) + self._skew - self._base
        if held is not None:
            self._audio_follows()
            self._pending = self._run = 0
            self._in_loss = False
            return self._steer(due, held, now_ms, quiet)
        if self._run >= self._max_conceal:
            self._stop()  # the talk spurt ended, or the network went away: the next packet restarts
            return PopResult(Pop.IDLE)
        self._run += 1
        if self._packets:
            self._audio_follows()
            self._skip_lost(1, now_ms)
            nxt = self._packets.get(due + 1)
            if nxt is None:
                self.stats.concealed += 1
                return PopResult(Pop.LOST, due & 0xFFFF)
            self.stats.fec_eligible += 1
            return PopResult(Pop.LOST, due & 0xFFFF, next_payload=nxt.payload)
        # Underrun: nothing here at all. Conceal without consuming; the packet may just be late.
        self._pending += 1
        self._tail += 1
        self._skew += self.frame_ms
        self.stats.tail_concealed += 1  # until audio follows: it may be the end of the talk spurt
        return PopResult(Pop.EXPAND)

    def _steer(self, due: int, held: _Held, now_ms: float, quiet: bool) -> PopResult:
        """The due packet is here: play it, or drop / insert a frame to follow the target."""
        excess = self._delay - self._offset - self.target_ms
        half = self.frame_ms / 2
        back = self.frame_ms * REVERSAL_FRAMES
        if excess > self.frame_ms:
            self._draining = True  # a spike (or long drift without a pause): drain in speech too
        elif excess <= half:
            self._draining = False
        if excess > (back if self._last_step > 0 else half) and self._follows(due, held):
            over_ceiling = self._delay - self._offset > self.max_delay_ms + self.frame_ms
            forced = over_ceiling or (self._draining and self._since_forced >= FORCED_DROP_EVERY)
            if quiet or forced:
                if not quiet:
                    self._since_forced = 0
                self._consume(due, held)
                self._skew -= self.frame_ms
                self._last_step = -1
                self.stats.dropped += 1
                return PopResult(Pop.DROP, due & 0xFFFF, held.payload)
        elif (excess < -(back if self._last_step < 0 else half)
              and (quiet or excess < -self.frame_ms)):
            self._skew += self.frame_ms
            self._last_step = 1
            self.stats.inserted += 1
            return PopResult(Pop.EXPAND)
        self._consume(due, held)
        return PopResult(Pop.AUDIO, due & 0xFFFF, held.payload)

    def _follows(self, due: int, held: _Held) -> bool:
        """The packet after ``due`` is here and continues the same talk spurt (safe to drop ``due``)."""
        nxt = self._packets.get(due + 1)
        return (nxt is not None and not nxt.marker
                and abs(nxt.ts - held.ts - self._frame_ts) <= self._frame_ts // 2)

    def _start(self, now_ms: float) -> PopResult:
        """Start playout with the oldest packet once its delay reaches the target (minus half a frame)."""
        if not self._packets:
            return PopResult(Pop.IDLE)
        order = sorted(self._packets)
        threshold = self.target_ms - self.frame_ms / 2
        first = order[0]
        offset = 0.0
        if self._packets[first].marker:
            # The sender's own talk spurt: lateness the jitter doesn't explain is its pre-roll (sent
            # at once when a hands-free gate opens) and stays as the spurt's offset. It is judged at
            # the first pop that sees the spurt, when a pre-roll burst is all here, and then kept:
            # packets that come later in real time can't add to it.
            if self._offset_seq != first:
                lateness = self._packets[first].transit - self._base
                self._offset_seq = first
                self._offset_seen = min(max(0.0, lateness - self._jitter_q), MAX_SPURT_OFFSET_MS)
            offset = self._offset_seen
        if self._delay_of(first, now_ms) - offset < threshold:
            return PopResult(Pop.IDLE)
        for seq in order[1:]:
            # Past the ceiling already (a backlog released after a stall): too stale to be worth
            # playing while a newer packet is here.
            if self._delay_of(first, now_ms) - offset <= self.max_delay_ms:
                break
            self._flush(first)
            first = seq
        if self._next_seq is not None and first > self._next_seq:
            gap = sum(1 for s in range(self._next_seq, first) if s not in self._recent)
            self.stats.lost += gap
            self._report_frames += gap
            self._report_lost += gap
        held = self._packets[first]
        self._offset = offset
        self._playing = True
        self._next_seq = first
        self._next_ts = held.ts
        self._pop_e.clear()
        self._skew = 0.0
        self._pending = self._run = self._tail = 0
        self._in_loss = self._draining = False
        self._last_step = 0
        self._pop_e.append(now_ms - held.ts / self._khz)
        self._delay = self._pop_e[0] - self._base
        self.stats.spurts += 1
        self._consume(first, held)
        return PopResult(Pop.AUDIO, first & 0xFFFF, held.payload)

    def _delay_of(self, seq: int, now_ms: float) -> float:
        return now_ms - self._packets[seq].ts / self._khz - self._base

    # -- bookkeeping ---------------------------------------------------------------------------

    def _consume(self, seq: int, held: _Held) -> None:
        del self._packets[seq]
        self._remember(seq)
        self._next_seq = seq + 1
        self._next_ts = held.ts + self._frame_ts
        self._report_frames += 1

    def _skip_lost(self, count: int, now_ms: float) -> None:
        """Count ``count`` missing frames from the due one as lost and move past them."""
        if count <= 0 or self._next_seq is None:
            return
        if not self._in_loss:
            self._loss_events.append(now_ms)
            self._in_loss = True
        self.stats.lost += count
        self._report_frames += count
        self._report_lost += count
        self._next_seq += count
        self._next_ts += count * self._frame_ts

    def _flush(self, seq: int) -> None:
        del self._packets[seq]
        self._remember(seq)
        self.stats.flushed += 1

    def _remember(self, seq: int) -> None:
        self._recent.add(seq)
        self._recent_order.append(seq)
        if len(self._recent_order) > RECENT_SEQUENCES:
            self._recent.discard(self._recent_order.popleft())

    def _audio_follows(self) -> None:
        """The stream goes on: the underrun concealment before this was inside the talk spurt."""
        self.stats.concealed += self._tail
        self.stats.tail_concealed -= self._tail
        self._tail = 0

    def _stop(self) -> None:
        """Stop playing (concealment that ran past the last packet stays counted as a tail)."""
        self._playing = False
        self._pending = self._run = self._tail = 0

    def _restart(self) -> None:
        """The sender restarted: forget its old stream (what it had buffered is flushed, counted)."""
        self.stats.flushed += len(self._packets)
        self.stats.restarts += 1
        self._packets.clear()
        self._recent.clear()
        self._recent_order.clear()
        self._stop()
        self._highest = self._ref_ts = self._next_seq = self._offset_seq = None
        self._candidate = None
        # A new timestamp origin: transits are not comparable with the old ones.
        self._transits.clear()
        self._last_transit = None
