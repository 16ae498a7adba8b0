"""SRTP for one talk group (libsrtp through pylibsrtp, AES_CM_128_HMAC_SHA1_80).

:class:`GroupSecurity` holds everything a box knows about one group's keys:

- **sending:** one libsrtp session per local sending port, keyed from the group secret, the port's
  SSRC and a random epoch drawn here (so a restart never repeats a key with an SRTP index);
- **receiving:** one libsrtp session per announced (SSRC, epoch). A sender appears here only through
  a fresh, authenticated announcement (:mod:`gateway.net.announce`); every other datagram is dropped
  and counted by reason: unknown sender, authentication failure, replay, too old, malformed.
  A sender that restarts announces a new epoch; up to :data:`EPOCHS_PER_SENDER` epochs of one SSRC
  stay usable side by side (the most recently good one tried first), and an epoch once retired is
  never accepted again, so replaying its old announcement and packets plays nothing.
- **replay across receiver restarts:** libsrtp's replay window starts empty when a session is
  created, so each accepted announcement carries the sender's next SRTP index and packets below it
  are dropped as replays; a talk spurt captured before the receiver (re)started never plays.

Pure apart from libsrtp: no I/O, time passed in (seconds).
"""

from __future__ import annotations

import collections
import enum
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pylibsrtp

from gateway.net import announce, keys

#: Epochs of one SSRC accepted side by side (a sender that restarted while packets of its previous
#: run are still in flight, or a re-keyed group).
EPOCHS_PER_SENDER = 3
#: Announced senders kept per group; beyond that the least recently heard is forgotten.
MAX_SENDERS = 1024
#: Retired (SSRC, epoch) pairs remembered so they are never accepted again.
MAX_RETIRED = 8192
#: How long a heard nonce is echoed in our announcements.
ECHO_TTL_S = 30.0
#: A sender prepares and announces its next epoch this many packets before its sequence number
#: wraps (10 s at 20 ms frames), so receivers hold the new key when the first packet under it comes.
ROLLOVER_NOTICE = 500
#: How long a box keeps asking for a sender it heard of but couldn't accept (a replayed
#: announcement of a sender that is gone must not make it ask forever).
PENDING_TTL_S = 30.0
#: libsrtp's replay window, in packets (its default is 128).
REPLAY_WINDOW = 1024
SRTP_TAG_BYTES = 10
_MIN_SRTP_BYTES = 12 + 1 + SRTP_TAG_BYTES


class Drop(enum.Enum):
    """Why a voice datagram was dropped after the header check; the value is the counter's name."""

    UNKNOWN_SENDER = "unknown_sender"
    AUTH_FAILURE = "auth_failure"
    REPLAY = "replay"
    TOO_OLD = "too_old"
    MALFORMED = "malformed"


_LIBSRTP_REASON = {
    "authentication failure": Drop.AUTH_FAILURE,
    "replay check failed (bad index)": Drop.REPLAY,
    "replay check failed (index too old)": Drop.TOO_OLD,
    "packet index is too old to consider": Drop.TOO_OLD,
}


@dataclass
class _Outbound:
    epoch: int
    session: pylibsrtp.Session
    next_index: int
    """The SRTP index (= sequence number: the ROC stays 0 in an epoch) of the next packet."""
    following: tuple[int, pylibsrtp.Session] | None = None
    """The epoch (and session) taken when the sequence number wraps, announced ahead of it."""


@dataclass
class _Inbound:
    ssrc: int
    epoch: int
    session: pylibsrtp.Session
    floor: int
    """Packets whose SRTP index is below this were sent before the announcement: replays."""
    last_good_s: float
    packets: int = 0


@dataclass
class SecurityStats:
    """Counters of one group's SRTP and announcements."""

    protected: int = 0
    unprotected: int = 0
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    announcements_sent: int = 0
    announcements_accepted: int = 0
    """Authenticated announcements that added at least one sender."""
    senders_retired: int = 0


def _policy(key: bytes, ssrc_type: int, ssrc: int = 0) -> pylibsrtp.Policy:
    policy = pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, ssrc_value=ssrc,
                              srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    policy.window_size = REPLAY_WINDOW
    return policy


class GroupSecurity:
    """SRTP sessions and announcement state of one talk group on one box."""

    def __init__(self, group: str, secret: bytes, nonce: bytes | None = None) -> None:
        self.group = group
        self._secret = secret
        self._announce_key = keys.announce_key(secret, group)
        self.nonce = nonce or secrets.token_bytes(announce.NONCE_BYTES)
        self.stats = SecurityStats()
        self._out: dict[int, _Outbound] = {}
        self._in: dict[int, list[_Inbound]] = {}
        self._retired: collections.OrderedDict[tuple[int, int], None] = collections.OrderedDict()
        self._heard: collections.OrderedDict[bytes, float] = collections.OrderedDict()
        self.pending: dict[int, float] = {}
        """SSRCs heard announced but not yet freshly (when first heard): we keep asking for them."""
        self.want_announce = True
        """Set when something we heard needs an answer soon (the announcer clears it)."""
        self.reports: Callable[[], Sequence[announce.Report]] = tuple
        """What our announcements report about the senders we hear (set by the box)."""
        self._heard_reports: dict[int, dict[bytes, tuple[announce.Report, float]]] = {}
        self.wake: Callable[[], None] | None = None
        """Called when we want to announce because of something we did (a new sender, a new epoch)."""

    def uses_secret(self, secret: bytes) -> bool:
        """True if this group's keys come from ``secret`` (compared in constant time)."""
        return hmac.compare_digest(self._secret, secret)

    # -- sending ---------------------------------------------------------------------------------

    def add_sender(self, ssrc: int, initial_sequence: int, epoch: int | None = None) -> int:
        """Start sending as ``ssrc`` (a fresh epoch unless given); returns the epoch."""
        epoch, session = self._outbound_session(ssrc, epoch)
        self._out[ssrc] = _Outbound(epoch, session, initial_sequence & 0xFFFF)
        self._ask_to_announce()
        return epoch

    def _outbound_session(self, ssrc: int, epoch: int | None = None) -> tuple[int, pylibsrtp.Session]:
        epoch = keys.new_epoch() if epoch is None else epoch
        key = keys.srtp_key(self._secret, self.group, ssrc, epoch)
        return epoch, pylibsrtp.Session(_policy(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))

    def _ask_to_announce(self) -> None:
        self.want_announce = True
        if self.wake is not None:
            self.wake()

    def sender_epoch(self, ssrc: int) -> int | None:
        """The epoch a local sender uses now (None if it doesn't send on this group)."""
        out = self._out.get(ssrc)
        return out.epoch if out else None

    def protect(self, rtp_packet: bytes) -> bytes:
        """Encrypt and authenticate one of our own RTP packets (consecutive sequence numbers).

        An epoch never outlives its sequence numbers: when they wrap, the sender moves to the next
        epoch (a new key, announced ahead), so the SRTP rollover counter is always 0. A receiver
        that joins late therefore needs no rollover counter, which libsrtp can't be told through
        pylibsrtp (no ``srtp_set_stream_roc``), and a (key, index) pair can't repeat.
        """
        ssrc = int.from_bytes(rtp_packet[8:12], "big")
        out = self._out[ssrc]
        seq = int.from_bytes(rtp_packet[2:4], "big")
        if seq < out.next_index - 0x8000:  # wrapped
            out.epoch, out.session = out.following or self._outbound_session(ssrc)
            out.following = None
            self._ask_to_announce()
        out.next_index = seq + 1
        if seq >= 0x10000 - ROLLOVER_NOTICE and out.following is None:
            out.following = self._outbound_session(ssrc)
            self._ask_to_announce()
        self.stats.protected += 1
        return out.session.protect(rtp_packet)

    def listener_reports(self, ssrc: int, now_s: float, window_s: float) -> list[announce.Report]:
        """What each box that heard our sender ``ssrc`` reported within the last ``window_s``."""
        got = self._heard_reports.get(ssrc, {})
        for nonce, (_, at) in list(got.items()):
            if now_s - at > window_s:
                del got[nonce]
        return [report for report, _ in got.values()]

    # -- receiving -------------------------------------------------------------------------------

    def knows(self, ssrc: int) -> bool:
        """True if an announced sender uses ``ssrc``."""
        return ssrc in self._in

    def senders(self) -> list[tuple[int, int]]:
        """(SSRC, epoch) of every accepted sender, its newest epoch only."""
        return [(ssrc, max(streams, key=lambda s: s.last_good_s).epoch)
                for ssrc, streams in self._in.items()]

    def export_key(self, ssrc: int, epoch: int) -> bytes:
        """The SRTP master key + salt of an accepted sender, for a monitoring player's SDP.

        Whoever holds it can decrypt that sender's epoch, and forge packets as that sender: it is
        handed only to a local operator (``gateway sdp``), never sent anywhere.
        """
        if not any(s.epoch == epoch for s in self._in.get(ssrc, [])):
            raise KeyError(f"no accepted sender {ssrc:#010x} in epoch {epoch:#x}")
        return keys.srtp_key(self._secret, self.group, ssrc, epoch)

    def unprotect(self, data: bytes, now_s: float) -> bytes | Drop:
        """The plain RTP packet, or why ``data`` must not be played."""
        if len(data) < _MIN_SRTP_BYTES or data[0] >> 6 != 2:
            return self._drop(Drop.MALFORMED)
        ssrc = int.from_bytes(data[8:12], "big")
        streams = self._in.get(ssrc)
        if not streams:
            return self._drop(Drop.UNKNOWN_SENDER)
        seq = int.from_bytes(data[2:4], "big")  # = the SRTP index: the ROC is 0 in every epoch
        reason: Drop | None = None
        for stream in streams:
            if seq < stream.floor:
                reason = reason or Drop.REPLAY
                continue
            try:
                plain = stream.session.unprotect(data)
            except pylibsrtp.Error as exc:
                reason = reason or _LIBSRTP_REASON.get(str(exc), Drop.MALFORMED)
                continue
            stream.last_good_s = now_s
            stream.packets += 1
            if stream is not streams[0]:
                streams.remove(stream)
                streams.insert(0, stream)
            self.stats.unprotected += 1
            return plain
        return self._drop(reason or Drop.AUTH_FAILURE)

    def _drop(self, reason: Drop) -> Drop:
        self.stats.dropped[reason.value] += 1
        return reason

    # -- announcements ---------------------------------------------------------------------------

    def announcement(self, now_s: float) -> bytes:
        """Our announcement now: our senders, and the nonces we have heard lately (newest first)."""
        for nonce, heard in list(self._heard.items()):
            if now_s - heard > ECHO_TTL_S:
                del self._heard[nonce]
        echoes = tuple(reversed(self._heard))[: announce.MAX_ECHOES]
        senders = [announce.SenderEntry(ssrc, o.epoch, o.next_index) for ssrc, o in self._out.items()]
        senders += [announce.SenderEntry(ssrc, o.following[0], 0)
                    for ssrc, o in self._out.items() if o.following is not None]
        for ssrc, since in list(self.pending.items()):
            if now_s - since > PENDING_TTL_S:
                del self.pending[ssrc]  # a replayed or long-gone sender: stop asking
        self.want_announce = False
        self.stats.announcements_sent += 1
        return announce.build(self._announce_key, self.group, announce.Announcement(
            self.nonce, tuple(senders), echoes, tuple(self.pending)[: announce.MAX_WANTS],
            tuple(self.reports())[: announce.MAX_REPORTS]))

    def on_announcement(self, data: bytes, now_s: float) -> announce.Refused | None:
        """Take an announcement heard on the group; sets ``want_announce`` when it needs an answer."""
        ann = announce.parse(self._announce_key, self.group, data)
        if isinstance(ann, announce.Refused):
            self.stats.dropped[ann.value] += 1
            return ann
        if ann.nonce == self.nonce:
            return None  # our own, looped back
        if ann.nonce not in self._heard:
            self.want_announce = True  # a box we haven't echoed yet: let it hear its nonce
        self._heard[ann.nonce] = now_s
        self._heard.move_to_end(ann.nonce)
        while len(self._heard) > 4 * announce.MAX_ECHOES:
            self._heard.popitem(last=False)
        for report in ann.reports:
            if report.ssrc in self._out:
                self._heard_reports.setdefault(report.ssrc, {})[ann.nonce] = (report, now_s)
        if any(ssrc in self._out for ssrc in ann.wants):
            self.want_announce = True  # a box asks for our fresh announcement (its last was lost)
        fresh = self.nonce in ann.echoes
        added = False
        for entry in ann.senders:
            if entry.ssrc in self._out or (entry.ssrc, entry.epoch) in self._retired:
                continue
            streams = self._in.get(entry.ssrc, [])
            if any(s.epoch == entry.epoch for s in streams):
                continue
            if not fresh:
                # An unknown sender in an announcement that doesn't echo us: it may be a replay.
                # Announce (and keep asking), so the sender hears our nonce and answers freshly.
                self.want_announce = True
                self.pending.setdefault(entry.ssrc, now_s)
                continue
            self._accept(entry, now_s)
            self.pending.pop(entry.ssrc, None)
            added = True
        if added:
            self.stats.announcements_accepted += 1
        return None

    def _accept(self, entry: announce.SenderEntry, now_s: float) -> None:
        key = keys.srtp_key(self._secret, self.group, entry.ssrc, entry.epoch)
        session = pylibsrtp.Session(_policy(key, pylibsrtp.Policy.SSRC_SPECIFIC, entry.ssrc))
        stream = _Inbound(entry.ssrc, entry.epoch, session, entry.next_index, now_s)
        streams = self._in.setdefault(entry.ssrc, [])
        streams.insert(0, stream)
        if len(streams) > EPOCHS_PER_SENDER:
            oldest = min(streams[1:], key=lambda s: s.last_good_s)
            streams.remove(oldest)
            self._retire(oldest)
        if len(self._in) > MAX_SENDERS:
            stale = min(self._in, key=lambda k: max(s.last_good_s for s in self._in[k]))
            for s in self._in.pop(stale):
                self._retire(s)

    def _retire(self, stream: _Inbound) -> None:
        self._retired[(stream.ssrc, stream.epoch)] = None
        while len(self._retired) > MAX_RETIRED:
            self._retired.popitem(last=False)
        self.stats.senders_retired += 1
