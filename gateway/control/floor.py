"""Who may talk in a talk group: the floor rules (pure: no clock reads, no I/O; time comes in as ms).

There is no arbiter. Every transmitting port puts its *claim* on each of its voice packets, every box
keeps the claims it hears (and those of its own ports) and ranks them by one total order, so boxes
that have seen the same claims make the same decision, whatever order the packets came in.

**The order** (best first): an emergency claim; then the higher priority (0-7); then the earlier
start of the talk spurt (``start_ms``, the claimer's wall clock); then the lower SSRC, so no two
claims ever tie.

**Modes.** ``half-duplex``: the best claim talks, every other is refused or stopped. ``conference``:
the ``max_talkers`` best claims talk. In both modes an emergency claim takes the group alone: while one
is on the air every other claim is stopped, whatever its priority. Between two emergency calls the same
order applies: the higher priority, then the earlier one, keeps the floor.

**Pressing.** A local press is granted when it ranks among the talkers of the claims this box knows;
the port starts transmitting at once (optimistically). If a claim that ranks higher arrives a few ms
later (someone else pressed at the same moment), the port is *preempted*: it stops and plays the busy
tone. That is how every box converges on the same answer. A refused press plays the busy tone too;
there is no queue: press again when the group is free. A press never claims an earlier start than a
claim already heard (``start_ms`` is raised past it), so a box whose clock is behind (a Pi with no
real-time clock and no NTP) can't break in on an equal-priority talker: clocks only decide between
presses that really were simultaneous, within a network delay, where any agreed answer is fair.
Breaking in takes a higher priority or an emergency.

**Stopping is final for that spurt.** A claim stopped by a higher one never comes back by itself
when that one ends, on any box (its sender stopped): the user presses again, which is a new spurt.
Late or duplicated packets of an ended, stopped or older spurt change nothing. The one exception: a
stopped remote claim whose packets keep coming without a gap for ``claim_timeout_ms`` is a sender that
never heard what beat it (a lossy or split network), so it is ranked again rather than left talking
to nobody.

**Silence.** A remote claim with no packet for more than ``claim_timeout_ms`` stops counting (its
sender went away without the end flag); if its packets come back it counts again, so a network
glitch doesn't take the floor from a talker on some boxes only.

**Time-out (TOT).** A local talker is stopped after ``tot_ms`` of transmitting, with a warning
``tot_warning_ms`` before; an emergency call has its own longer limit, ``emergency_tot_ms`` (5 min by
default, not unlimited: a stuck emergency button must not silence a group forever). Either limit at 0
turns it off. After a time-out the user releases and presses again. Each box times its own ports
only; other boxes see the end flag (or the silence).

**Wire.** 9 bytes, big-endian: flags (version: 2 bits, reserved: 1, end: 1, emergency: 1, priority:
3), spurt (16 bits), start_ms (48 bits). The SSRC is the RTP header's, not repeated.

**The caller.** Put ``Granted.claim`` on every packet of the spurt (:meth:`Claim.encode`, an RTP
header extension element, authenticated by SRTP but not encrypted), with ``end=True`` on the last
one (on release, preemption or time-out; send it two or three times, multicast is lossy). Feed every
received element to :meth:`GroupFloor.heard`, call :meth:`GroupFloor.tick` every frame, and act on
the returned events. Start a sender's spurt counter at a random value per process start
(``spurt_seed``) or :meth:`GroupFloor.forget` a sender that restarted, so that its new spurts are not
taken for late packets of its old ones.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

CLAIM_BYTES = 9
"""Size of an encoded claim: flags, spurt (16 bits), start_ms (48 bits); the SSRC is the packet's."""
CLAIM_VERSION = 0
"""Wire version in the top two flag bits; a box refuses claims of a version it doesn't know."""
SPURT_MEMORY_MS = 10_000
"""An ended, stopped or silent remote spurt is remembered this long after its last packet (late and
duplicate packets come within the jitter buffer's ceiling; SRTP's replay window drops older ones)."""
MAX_START_MS = (1 << 48) - 1

_WIRE = struct.Struct("!BHHI")  # flags, spurt, start_ms high 16 bits, start_ms low 32 bits
_END = 0x10
_EMERGENCY = 0x08
_PRIORITY = 0x07


class Mode(enum.StrEnum):
    """How many may talk at once in a group."""

    HALF_DUPLEX = "half-duplex"
    CONFERENCE = "conference"


@dataclass(frozen=True, slots=True)
class FloorSettings:
    """The floor rules of one talk group (every box of the group must use the same)."""

    mode: Mode = Mode.HALF_DUPLEX
    """``half-duplex`` (one talker) or ``conference`` (up to ``max_talkers``)."""
    max_talkers: int = 3
    """Conference mode: most simultaneous talkers (1-16); half-duplex is always 1."""
    tot_ms: int = 60_000
    """A local talker is stopped after this long (0 = no limit)."""
    tot_warning_ms: int = 5_000
    """Warning tone this long before the time-out (0 = none)."""
    emergency_tot_ms: int = 300_000
    """Time-out of an emergency call (0 = no limit)."""
    claim_timeout_ms: int = 1_000
    """A remote claim with no packet for longer than this stops counting. Opus DTX sends one packet
    per 400 ms in pauses, so this must stay well above 400."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_talkers <= 16:
            raise ValueError(f"max_talkers must be 1-16, got {self.max_talkers}")
        for name in ("tot_ms", "tot_warning_ms", "emergency_tot_ms", "claim_timeout_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Claim:
    """One talk spurt's claim on the floor, as carried on each of its packets."""

    ssrc: int
    priority: int
    emergency: bool
    start_ms: int
    spurt: int

    def __post_init__(self) -> None:
        for name, top in (("ssrc", 0xFFFFFFFF), ("priority", 7), ("start_ms", MAX_START_MS),
                          ("spurt", 0xFFFF)):
            value = getattr(self, name)
            if not 0 <= value <= top:
                raise ValueError(f"claim {name} must be 0-{top}, got {value}")

    @property
    def rank(self) -> tuple[bool, int, int, int]:
        """Sort key, smaller wins: emergency, higher priority, earlier start, lower SSRC."""
        return (not self.emergency, -self.priority, self.start_ms, self.ssrc)

    def encode(self, end: bool = False) -> bytes:
        """The claim as a 9-byte header extension element; ``end`` marks the spurt's last packet."""
        flags = (CLAIM_VERSION << 6) | (_END if end else 0) | (_EMERGENCY if self.emergency else 0)
        return _WIRE.pack(flags | self.priority, self.spurt, self.start_ms >> 32,
                          self.start_ms & 0xFFFFFFFF)

    @classmethod
    def decode(cls, data: bytes, ssrc: int) -> tuple[Claim, bool]:
        """``(claim, end)`` from an element sent by ``ssrc``; ValueError if it is malformed."""
        if len(data) != CLAIM_BYTES:
            raise ValueError(f"floor claim must be {CLAIM_BYTES} bytes, got {len(data)}")
        flags, spurt, high, low = _WIRE.unpack(data)
        if flags >> 6 != CLAIM_VERSION:
            raise ValueError(f"floor claim version {flags >> 6} is not supported (this box: 0)")
        # Bit 5 is reserved and ignored: a later version may use it for a hint that doesn't change
        # the order. Anything that changes the order must change the version instead.
        claim = cls(ssrc, flags & _PRIORITY, bool(flags & _EMERGENCY), (high << 32) | low, spurt)
        return claim, bool(flags & _END)


@dataclass(frozen=True, slots=True)
class Granted:
    """A local press got the floor: transmit, with ``claim`` on every packet."""

    claim: Claim


@dataclass(frozen=True, slots=True)
class Denied:
    """A local press was refused (busy tone): ``by`` are the talkers that outrank it."""

    ssrc: int
    by: tuple[Claim, ...]

    @property
    def emergency(self) -> bool:
        """Refused because an emergency call is on the air."""
        return any(c.emergency for c in self.by)


@dataclass(frozen=True, slots=True)
class Preempted:
    """A local talker must stop now (busy tone): ``by`` is the claim that outranked it."""

    claim: Claim
    by: Claim

    @property
    def emergency(self) -> bool:
        """Stopped by an emergency call."""
        return self.by.emergency


@dataclass(frozen=True, slots=True)
class TotWarning:
    """A local talker will be timed out in ``remaining_ms`` (warning tone)."""

    claim: Claim
    remaining_ms: float


@dataclass(frozen=True, slots=True)
class TotExpired:
    """A local talker reached the time-out and must stop now."""

    claim: Claim


@dataclass(frozen=True, slots=True)
class TalkersChanged:
    """Who talks in the group now, best first (local and remote): RX LEDs, alerts, mixing."""

    talkers: tuple[Claim, ...]


Event = Granted | Denied | Preempted | TotWarning | TotExpired | TalkersChanged


class _State(enum.Enum):
    LIVE = "live"  # counts: one of the talkers (every live claim is, after each call)
    SILENT = "silent"  # remote, no packet for claim_timeout_ms: doesn't count, may come back
    LOST = "lost"  # remote, outranked: stopped for good unless its sender evidently never knew
    ENDED = "ended"  # remote, end flag seen: late packets of the spurt are ignored


@dataclass(slots=True)
class _Track:
    """The latest spurt of one SSRC."""

    claim: Claim
    local: bool
    state: _State
    heard_ms: float  # last packet (remote)
    since_ms: float  # grant time (local, for the TOT) or when it was outranked (remote)
    warned: bool = False


def _newer(spurt: int, than: int) -> bool:
    """Serial-number order of 16-bit spurt counters (RFC 1982): ``spurt`` came after ``than``."""
    return 0 < (spurt - than) & 0xFFFF < 0x8000


class GroupFloor:
    """The floor of one talk group as this box sees it; every method returns the events it caused."""

    def __init__(self, settings: FloorSettings | None = None, spurt_seed: int = 0) -> None:
        self.settings = settings or FloorSettings()
        self._seed = spurt_seed & 0xFFFF
        self._tracks: dict[int, _Track] = {}
        self._next_spurt: dict[int, int] = {}  # local SSRCs (every one that ever pressed)
        self._talkers: tuple[Claim, ...] = ()

    # -- queries -------------------------------------------------------------------------------

    def talkers(self) -> tuple[Claim, ...]:
        """Who talks now, best first, as of the last call (call :meth:`tick` every frame)."""
        return self._talkers

    def may_transmit(self, ssrc: int) -> bool:
        """Local port ``ssrc`` holds the floor."""
        t = self._tracks.get(ssrc)
        return t is not None and t.local and t.state is _State.LIVE

    # -- local ports ---------------------------------------------------------------------------

    def request(self, ssrc: int, priority: int, emergency: bool, now_ms: float,
                wall_ms: int | None = None) -> list[Event]:
        """A local press: Granted or Denied first, then what it caused; ``wall_ms`` defaults to now."""
        old = self._tracks.get(ssrc)
        if old is not None and old.local:
            del self._tracks[ssrc]  # pressing again while talking starts a new spurt
        others = [t.claim for t in self._tracks.values()
                  if t.state in (_State.LIVE, _State.SILENT) and t.claim.ssrc != ssrc]
        start = int(now_ms if wall_ms is None else wall_ms)
        if others:
            # Never earlier than a claim already heard: a slow clock must not jump the queue.
            start = max(start, max(c.start_ms for c in others) + 1)
        spurt = self._next_spurt.get(ssrc, self._seed)
        self._next_spurt[ssrc] = (spurt + 1) & 0xFFFF
        claim = Claim(ssrc, priority, emergency, min(start, MAX_START_MS), spurt)
        ranked = sorted([*(t.claim for t in self._live()), claim], key=lambda c: c.rank)
        top = ranked[: self._capacity(ranked[0])]
        if claim not in top:
            return [Denied(ssrc, tuple(top)), *self._changed()]
        self._tracks[ssrc] = _Track(claim, True, _State.LIVE, now_ms, now_ms)
        return [Granted(claim), *self._settle(claim, now_ms)]

    def release(self, ssrc: int, now_ms: float) -> list[Event]:
        """A local port stopped talking (button up); send its end flag."""
        t = self._tracks.get(ssrc)
        if t is None or not t.local:
            return []
        del self._tracks[ssrc]
        return self._changed()

    # -- remote senders ------------------------------------------------------------------------

    def heard(self, claim: Claim, now_ms: float, end: bool = False) -> list[Event]:
        """A remote packet's claim arrived (``end``: the spurt's last packet)."""
        if claim.ssrc in self._next_spurt:
            return []  # our own packet, looped back by multicast
        t = self._tracks.get(claim.ssrc)
        if t is not None and claim.spurt != t.claim.spurt:
            if not _newer(claim.spurt, t.claim.spurt):
                return []  # a late or duplicated packet of an older spurt
            t = None  # a new spurt replaces whatever the sender had before
        if t is None:
            state = _State.ENDED if end else _State.LIVE
            self._tracks[claim.ssrc] = _Track(claim, False, state, now_ms, now_ms)
            return self._changed() if end else self._settle(claim, now_ms)
        # The same spurt: its first claim stands (a sender changes its claim by starting a new spurt).
        gap = now_ms - t.heard_ms
        t.heard_ms = now_ms
        if t.state is _State.ENDED:
            return []
        if end:
            t.state = _State.ENDED
            return self._changed()
        if t.state is _State.SILENT:
            t.state = _State.LIVE
            return self._settle(t.claim, now_ms)
        if t.state is _State.LOST:
            timeout = self.settings.claim_timeout_ms
            if gap > timeout:
                t.since_ms = now_ms  # a stray late packet, not a sender that kept going
            elif now_ms - t.since_ms >= timeout:
                # Still sending a whole timeout after it lost: its box never saw what beat it.
                t.state = _State.LIVE
                t.since_ms = now_ms
                return self._settle(t.claim, now_ms)
        return []

    def forget(self, ssrc: int, now_ms: float) -> list[Event]:
        """Drop a remote sender's state (it left, or restarted with a new key epoch)."""
        t = self._tracks.get(ssrc)
        if t is None or t.local:
            return []
        del self._tracks[ssrc]
        return self._changed()

    # -- time ----------------------------------------------------------------------------------

    def tick(self, now_ms: float) -> list[Event]:
        """Time passes: time-outs of local talkers, silent remote claims, forgetting old spurts."""
        s = self.settings
        events: list[Event] = []
        for ssrc, t in list(self._tracks.items()):
            if t.local:
                events += self._time_out(t, now_ms)
            elif t.state is _State.LIVE:
                if now_ms - t.heard_ms > s.claim_timeout_ms:
                    t.state = _State.SILENT
            elif now_ms - t.heard_ms > SPURT_MEMORY_MS:
                del self._tracks[ssrc]
        return events + self._changed()

    def _time_out(self, t: _Track, now_ms: float) -> list[Event]:
        s = self.settings
        limit = s.emergency_tot_ms if t.claim.emergency else s.tot_ms
        if limit <= 0:
            return []
        held = now_ms - t.since_ms
        if held >= limit:
            del self._tracks[t.claim.ssrc]
            return [TotExpired(t.claim)]
        if not t.warned and s.tot_warning_ms > 0 and held >= limit - s.tot_warning_ms:
            # One tick past both times gives the expiry alone: a warning too late to act on is noise.
            t.warned = True
            return [TotWarning(t.claim, limit - held)]
        return []

    # -- the decision --------------------------------------------------------------------------

    def _live(self) -> list[_Track]:
        return [t for t in self._tracks.values() if t.state is _State.LIVE]

    def _capacity(self, best: Claim) -> int:
        if self.settings.mode is Mode.HALF_DUPLEX or best.emergency:
            return 1  # an emergency call has the group to itself
        return self.settings.max_talkers

    def _settle(self, newcomer: Claim, now_ms: float) -> list[Event]:
        """``newcomer`` just counted: stop every claim it pushed out of the talkers."""
        live = sorted(self._live(), key=lambda t: t.claim.rank)
        events: list[Event] = []
        for t in live[self._capacity(live[0].claim):]:
            if t.local:
                del self._tracks[t.claim.ssrc]
                events.append(Preempted(t.claim, newcomer))
            else:
                # Its own box stops it the same way; it must not come back when the newcomer ends.
                t.state = _State.LOST
                t.since_ms = now_ms
        return events + self._changed()

    def _changed(self) -> list[Event]:
        """TalkersChanged if the talkers differ from the last ones reported."""
        talkers = tuple(sorted((t.claim for t in self._live()), key=lambda c: c.rank))
        if talkers == self._talkers:
            return []
        self._talkers = talkers
        return [TalkersChanged(talkers)]
