"""Sender announcements: which (SSRC, epoch) pairs a box sends with, authenticated and fresh.

A receiver derives a sender's SRTP key only from an announcement it has authenticated (HMAC-SHA256
with the group's announcement key, :func:`gateway.net.keys.announce_key`) and that is *fresh*: it
echoes the receiver's own nonce, drawn at random when the receiver started. So an announcement
captured earlier and replayed later is useless: after a restart the receiver has a new nonce that
no old announcement carries, and a replayed talk spurt is never accepted again (the announcement also
carries the sender's next SRTP index, below which the receiver drops everything).

Every box announces on each group now and then, at start, and whenever it hears a nonce it hasn't
echoed yet or a sender it hasn't accepted yet (rate-limited), so a new box gets every sender's
fresh announcement within a round trip. A box that has heard of senders it couldn't accept yet
lists their SSRCs as *wants* and repeats its announcement a few times a second; a sender that hears
one of its SSRCs wanted answers at once, so a lost answer on a lossy link costs a retry, not the
2 s announcement period.

Announcements also carry the box's *reception reports* (RTCP receiver-report style: loss fraction
and interarrival jitter per sender it heard lately), so a sender learns what its listeners get and
turns Opus in-band FEC on only while someone loses packets (:mod:`gateway.voice.fec`), with or
without a broker. The same datagram travels in-band on the group's UDP socket
(its first byte can't be RTP: the version bits read 1) and on MQTT.

Wire format (big-endian)::

    "GWA" 0x01 | box nonce (8) | n senders (1) | n x [ssrc (4) | epoch (8) | next index (6)]
               | n echoes (1) | n x [nonce (8)] | n wants (1) | n x [ssrc (4)]
               | n reports (1) | n x [ssrc (4) | loss fraction x 255 (1) | jitter ms (2)]
               | tag (16) = HMAC-SHA256(key, group "\\0" rest)[:16]

Parsing is pure and total: :func:`parse` returns an :class:`Announcement` or a :class:`Refused`
reason, never raises, for any bytes at all.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from dataclasses import dataclass

MAGIC = b"GWA\x01"
NONCE_BYTES = 8
TAG_BYTES = 16
MAX_SENDERS = 16
MAX_ECHOES = 64
MAX_WANTS = 64
MAX_REPORTS = 64
_SENDER = struct.Struct("!IQ6s")
_REPORT = struct.Struct("!IBH")
MAX_BYTES = (len(MAGIC) + NONCE_BYTES + 4 + MAX_SENDERS * _SENDER.size + MAX_ECHOES * 8
             + MAX_WANTS * 4 + MAX_REPORTS * _REPORT.size + TAG_BYTES)


class Refused(enum.Enum):
    """Why an announcement was dropped; the value is the counter's name."""

    MALFORMED = "announce_malformed"
    AUTH_FAILURE = "announce_auth_failure"


@dataclass(frozen=True, slots=True)
class SenderEntry:
    """One sending port: its SSRC, the epoch its key comes from, and its next SRTP packet index."""

    ssrc: int
    epoch: int
    next_index: int


@dataclass(frozen=True, slots=True)
class Report:
    """A reception report about one sender: loss fraction (0-1, in 1/255 steps) and jitter."""

    ssrc: int
    loss: float
    jitter_ms: float


@dataclass(frozen=True, slots=True)
class Announcement:
    """What one box says on one group."""

    nonce: bytes
    senders: tuple[SenderEntry, ...]
    echoes: tuple[bytes, ...]
    wants: tuple[int, ...] = ()
    """SSRCs the box has heard announced but not yet from a fresh announcement."""
    reports: tuple[Report, ...] = ()
    """How well the box lately received each sender it heard."""


def is_announcement(data: bytes) -> bool:
    """True if ``data`` claims to be an announcement (not yet checked)."""
    return data[:4] == MAGIC


def _tag(key: bytes, group: str, body: bytes) -> bytes:
    return hmac.new(key, group.encode() + b"\x00" + body, hashlib.sha256).digest()[:TAG_BYTES]


def build(key: bytes, group: str, ann: Announcement) -> bytes:
    """Serialise and authenticate an announcement (senders and echoes beyond the limits are cut)."""
    if len(ann.nonce) != NONCE_BYTES:
        raise ValueError("nonce must be 8 bytes")
    senders = ann.senders[:MAX_SENDERS]
    echoes = ann.echoes[:MAX_ECHOES]
    parts = [MAGIC, ann.nonce, bytes([len(senders)])]
    for s in senders:
        parts.append(_SENDER.pack(s.ssrc & 0xFFFFFFFF, s.epoch & (2**64 - 1),
                                  (s.next_index & (2**48 - 1)).to_bytes(6, "big")))
    echoes = tuple(e for e in echoes if len(e) == NONCE_BYTES)
    parts.append(bytes([len(echoes)]))
    parts.extend(echoes)
    wants = ann.wants[:MAX_WANTS]
    parts.append(bytes([len(wants)]))
    parts.extend((w & 0xFFFFFFFF).to_bytes(4, "big") for w in wants)
    reports = ann.reports[:MAX_REPORTS]
    parts.append(bytes([len(reports)]))
    parts.extend(_REPORT.pack(r.ssrc & 0xFFFFFFFF, round(min(max(r.loss, 0.0), 1.0) * 255),
                              round(min(max(r.jitter_ms, 0.0), 65535.0))) for r in reports)
    body = b"".join(parts)
    return body + _tag(key, group, body)


def parse(key: bytes, group: str, data: bytes) -> Announcement | Refused:
    """Check the layout, then the tag; an announcement only if both hold."""
    n = len(data)
    if n > MAX_BYTES or n < len(MAGIC) + NONCE_BYTES + 2 + TAG_BYTES or not is_announcement(data):
        return Refused.MALFORMED
    pos = len(MAGIC) + NONCE_BYTES
    count = data[pos]
    pos += 1
    if count > MAX_SENDERS or pos + count * _SENDER.size + 1 > n - TAG_BYTES:
        return Refused.MALFORMED
    sender_at = pos
    pos += count * _SENDER.size
    echoes = data[pos]
    pos += 1
    if echoes > MAX_ECHOES or pos + echoes * NONCE_BYTES + 1 > n - TAG_BYTES:
        return Refused.MALFORMED
    wants_at = pos + echoes * NONCE_BYTES + 1
    wants = data[wants_at - 1]
    if wants > MAX_WANTS or wants_at + wants * 4 + 1 > n - TAG_BYTES:
        return Refused.MALFORMED
    reports_at = wants_at + wants * 4 + 1
    reports = data[reports_at - 1]
    if reports > MAX_REPORTS or reports_at + reports * _REPORT.size != n - TAG_BYTES:
        return Refused.MALFORMED
    body, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
    if not hmac.compare_digest(_tag(key, group, body), tag):
        return Refused.AUTH_FAILURE
    senders = []
    for i in range(count):
        ssrc, epoch, index = _SENDER.unpack_from(data, sender_at + i * _SENDER.size)
        senders.append(SenderEntry(ssrc, epoch, int.from_bytes(index, "big")))
    nonces = tuple(data[pos + i * NONCE_BYTES: pos + (i + 1) * NONCE_BYTES] for i in range(echoes))
    wanted = tuple(int.from_bytes(data[wants_at + 4 * i: wants_at + 4 * i + 4], "big")
                   for i in range(wants))
    reported = []
    for i in range(reports):
        ssrc, loss, jitter = _REPORT.unpack_from(data, reports_at + i * _REPORT.size)
        reported.append(Report(ssrc, loss / 255, float(jitter)))
    return Announcement(bytes(data[len(MAGIC): len(MAGIC) + NONCE_BYTES]), tuple(senders), nonces,
                        wanted, tuple(reported))
