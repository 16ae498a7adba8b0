"""A fixed-depth jitter buffer for one sender (pure: no clock, no I/O; the caller pops once per frame).

Playout starts once the buffer holds ``depth_ms`` of audio beyond the first packet, so arrival jitter
up to that depth never starves playback. Packets that arrive out of order within the buffer are put
back in order; a packet still missing when its turn comes is reported as LOST (the caller conceals it
or recovers it from the next packet's FEC, which :meth:`pop` hands over). Duplicates and packets that
arrive after their turn are dropped and counted. When a talk spurt ends the buffer runs dry, stops,
and the next packet starts a fresh prefill. A later issue replaces this with an adaptive buffer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: A sequence jump larger than this (either way) is a restarted sender, not loss or reordering.
RESYNC_JUMP = 1000


class Pop(enum.Enum):
    """What :meth:`JitterBuffer.pop` found for the frame that is due."""

    AUDIO = "audio"
    """The due packet is here."""
    LOST = "lost"
    """The due packet is missing but later ones are here: conceal (or use FEC) and move on."""
    IDLE = "idle"
    """Nothing to play: not started yet (prefilling) or the sender went quiet."""


@dataclass(frozen=True, slots=True)
class PopResult:
    """The due frame: its kind, payload (AUDIO) and the next packet's payload if it is here (FEC)."""

    kind: Pop
    payload: bytes = b""
    next_payload: bytes = b""


@dataclass
class JitterStats:
    """Counters in the spirit of RFC 3550 receiver statistics."""

    received: int = 0
    duplicates: int = 0
    late: int = 0
    lost: int = 0
    overflow_dropped: int = 0
    resyncs: int = 0


class JitterBuffer:
    """Reorders one sender's packets and releases them one frame at a time."""

    def __init__(self, depth_packets: int, max_packets: int = 50) -> None:
        if depth_packets < 0 or max_packets <= depth_packets:
            raise ValueError("need 0 <= depth_packets < max_packets")
        self.depth_packets = depth_packets
        self.max_packets = max_packets
        self.stats = JitterStats()
        self._packets: dict[int, bytes] = {}
        self._floor: int | None = None  # extended sequence number due next; older ones are late
        self._highest: int | None = None
        self._playing = False

    @property
    def playing(self) -> bool:
        """True between prefill and the buffer running dry."""
        return self._playing

    @property
    def buffered(self) -> int:
        """Packets waiting (the due one included)."""
        return len(self._packets)

    def _extend(self, seq: int) -> int:
        """Unwrap a 16-bit sequence number to the one nearest the highest seen (RFC 3550 A.1)."""
        ref = self._highest if self._highest is not None else seq
        ext = (ref & ~0xFFFF) | seq
        if ext - ref > 0x8000:
            ext -= 0x10000
        elif ref - ext > 0x8000:
            ext += 0x10000
        return ext

    def push(self, sequence: int, payload: bytes) -> bool:
        """Store a packet; False if it was a duplicate or came after its turn (counted)."""
        ext = self._extend(sequence & 0xFFFF)
        if self._highest is not None and abs(ext - self._highest) > RESYNC_JUMP:
            # The sender restarted (fresh random sequence): start over with it. What the old stream
            # still had buffered is dropped unplayed, and counted like an overflow drop.
            self.stats.overflow_dropped += len(self._packets)
            self._reset()
            self.stats.resyncs += 1
        if self._floor is not None and ext < self._floor:
            self.stats.late += 1
            return False
        if ext in self._packets:
            self.stats.duplicates += 1
            return False
        self._packets[ext] = payload
        self.stats.received += 1
        if self._highest is None or ext > self._highest:
            self._highest = ext
        if not self._playing:
            # Prefill (start of a talk spurt): play from the oldest packet held once the newest
            # is depth_packets ahead of it; a reordered earlier one can still slot in meanwhile.
            oldest = min(self._packets)
            if self._highest - oldest >= self.depth_packets:
                self._playing = True
                self._floor = oldest
        elif self._floor is not None:
            while self._highest - self._floor >= self.max_packets:
                # The sender runs ahead of us (clock drift, a stalled loop): drop the oldest.
                if self._packets.pop(self._floor, None) is not None:
                    self.stats.overflow_dropped += 1
                self._floor += 1
        return True

    def pop(self) -> PopResult:
        """The frame due now; call once per frame of the sender's duration."""
        if not self._playing or self._floor is None:
            return PopResult(Pop.IDLE)
        if not self._packets:
            # Ran dry: the talk spurt ended (or the network stalled). The next packet prefills.
            self._playing = False
            return PopResult(Pop.IDLE)
        due = self._floor
        self._floor += 1
        payload = self._packets.pop(due, None)
        if payload is not None:
            return PopResult(Pop.AUDIO, payload)
        self.stats.lost += 1
        return PopResult(Pop.LOST, next_payload=self._packets.get(due + 1, b""))

    def _reset(self) -> None:
        self._packets.clear()
        self._floor = None
        self._highest = None
        self._playing = False
