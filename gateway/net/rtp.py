"""RTP packets (RFC 3550) carrying Opus (RFC 7587): parse, validate, build.

Parsing is pure and total: :func:`parse` returns a packet or a :class:`Reject` reason, never raises,
for any bytes at all. Senders use a 48 kHz RTP clock whatever the codec's internal rate (RFC 7587
section 4.1), one SSRC per sending port and the marker bit on the first packet of a talk spurt.

Every packet of a talk spurt carries the sender's floor claim (:mod:`gateway.control.floor`) in an
RFC 8285 one-byte header extension element with ID :data:`CLAIM_EXTENSION_ID`. SRTP authenticates
the header extension (it is not encrypted: the claim is priority and timing, no secret), and
standard players skip elements they don't know.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

RTP_VERSION = 2
RTP_CLOCK_HZ = 48000
HEADER = struct.Struct("!BBHII")
MIN_HEADER_BYTES = HEADER.size
ONE_BYTE_PROFILE = 0xBEDE
"""RFC 8285 section 4.2: the "defined by profile" value of one-byte header extension elements."""
CLAIM_EXTENSION_ID = 1
"""The element ID that carries the floor claim (the IDs are ours: nothing negotiates them)."""


class Reject(enum.Enum):
    """Why a datagram was dropped; the value is the counter's name."""

    TRUNCATED = "truncated"
    BAD_VERSION = "bad_version"
    OVERSIZED = "oversized"
    UNKNOWN_PAYLOAD_TYPE = "unknown_payload_type"
    BAD_PADDING = "bad_padding"
    BAD_EXTENSION = "bad_extension"
    EMPTY_PAYLOAD = "empty_payload"
    OWN_PACKET = "own_packet"
    RTCP = "rtcp"


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One parsed RTP packet (CSRCs and other header extension elements are skipped, not kept)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes
    claim: bytes | None = None
    """The floor claim element's data, as sent (checked by the floor, not here), if any."""


def check_header(data: bytes, payload_type: int, max_bytes: int = 1500) -> Reject | None:
    """The checks that need only the fixed header (which SRTP leaves in the clear): size, version,
    RTCP and payload type. None when they pass; :func:`parse` runs them and the rest."""
    n = len(data)
    if n > max_bytes:
        return Reject.OVERSIZED
    if n < 8:
        return Reject.TRUNCATED
    if data[0] >> 6 != RTP_VERSION:
        return Reject.BAD_VERSION
    if 192 <= data[1] <= 223:
        return Reject.RTCP
    if n < MIN_HEADER_BYTES:
        return Reject.TRUNCATED
    if data[1] & 0x7F != payload_type:
        return Reject.UNKNOWN_PAYLOAD_TYPE
    return None


def parse(data: bytes, payload_type: int, max_bytes: int = 1500) -> RtpPacket | Reject:
    """Validate and parse one datagram; anything that isn't a well-formed Opus RTP packet is a Reject."""
    n = len(data)
    if n > max_bytes:
        return Reject.OVERSIZED
    if n < 8:  # shorter than even an RTCP header
        return Reject.TRUNCATED
    b0, b1 = data[0], data[1]
    if b0 >> 6 != RTP_VERSION:
        return Reject.BAD_VERSION
    # RTCP shares the port when muxed (RFC 5761 section 4): its packet types 192-223 read as
    # RTP marker bit + PT 64-95, which RTP must not use.
    if 192 <= b1 <= 223:
        return Reject.RTCP
    if n < MIN_HEADER_BYTES:
        return Reject.TRUNCATED
    _, _, seq, ts, ssrc = HEADER.unpack_from(data)
    pt = b1 & 0x7F
    if pt != payload_type:
        return Reject.UNKNOWN_PAYLOAD_TYPE
    offset = MIN_HEADER_BYTES + 4 * (b0 & 0x0F)
    if offset > n:
        return Reject.TRUNCATED
    claim = None
    if b0 & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
        if offset + 4 > n:
            return Reject.BAD_EXTENSION
        profile, words = struct.unpack_from("!HH", data, offset)
        start = offset + 4
        offset = start + 4 * words
        if offset > n:
            return Reject.BAD_EXTENSION
        if profile == ONE_BYTE_PROFILE:
            found = _one_byte_element(data, start, offset, CLAIM_EXTENSION_ID)
            if isinstance(found, Reject):
                return found
            claim = found
    end = n
    if b0 & 0x20:  # padding: the last octet counts the padding octets, itself included
        pad = data[-1]
        if pad == 0 or offset + pad > n:
            return Reject.BAD_PADDING
        end -= pad
    if end <= offset:
        return Reject.EMPTY_PAYLOAD
    return RtpPacket(pt, seq, ts, ssrc, bool(b1 & 0x80), bytes(data[offset:end]), claim)


def _one_byte_element(data: bytes, pos: int, end: int, wanted: int) -> bytes | Reject | None:
    """The data of element ``wanted`` in RFC 8285 one-byte elements ``data[pos:end]`` (None if
    absent); an element running past the block is malformed."""
    while pos < end:
        head = data[pos]
        if head == 0:  # padding between elements
            pos += 1
            continue
        ident, length = head >> 4, (head & 0x0F) + 1
        if ident == 15:  # reserved: stop parsing (RFC 8285 section 4.2)
            return None
        if pos + 1 + length > end:
            return Reject.BAD_EXTENSION
        if ident == wanted:
            return bytes(data[pos + 1: pos + 1 + length])
        pos += 1 + length
    return None


def build(packet: RtpPacket) -> bytes:
    """Serialise a packet with no CSRCs or padding; a claim goes in a one-byte header extension."""
    b0 = RTP_VERSION << 6
    b1 = (0x80 if packet.marker else 0) | (packet.payload_type & 0x7F)
    extension = b""
    if packet.claim is not None:
        if not 1 <= len(packet.claim) <= 16:
            raise ValueError(f"a one-byte header extension element holds 1-16 bytes, not {len(packet.claim)}")
        element = bytes([CLAIM_EXTENSION_ID << 4 | (len(packet.claim) - 1)]) + packet.claim
        element += bytes(-len(element) % 4)
        extension = struct.pack("!HH", ONE_BYTE_PROFILE, len(element) // 4) + element
        b0 |= 0x10
    return HEADER.pack(
        b0, b1, packet.sequence & 0xFFFF, packet.timestamp & 0xFFFFFFFF, packet.ssrc & 0xFFFFFFFF,
    ) + extension + packet.payload


class RtpSender:
    """Sequence numbers, timestamps and the marker bit for one sending port (SSRC)."""

    def __init__(self, ssrc: int, payload_type: int, initial_sequence: int, initial_timestamp: int):
        self.ssrc = ssrc
        self.payload_type = payload_type
        self._seq = initial_sequence & 0xFFFF
        self._ts = initial_timestamp & 0xFFFFFFFF
        self._spurt_start = True
        self.packets_sent = 0
        self.octets_sent = 0

    @property
    def next_sequence(self) -> int:
        """The sequence number the next packet will carry."""
        return self._seq

    def start_spurt(self) -> None:
        """The next packet begins a talk spurt (marker bit set, RFC 3551 section 4.1)."""
        self._spurt_start = True

    def skip(self, samples_48k: int) -> None:
        """Advance the timestamp over time in which nothing was sent (between talk spurts)."""
        self._ts = (self._ts + samples_48k) & 0xFFFFFFFF

    def packetize(self, payload: bytes, samples_48k: int, claim: bytes | None = None) -> bytes:
        """The next packet carrying ``payload`` (and the floor ``claim``, if any) that covers
        ``samples_48k`` of RTP clock."""
        data = build(RtpPacket(self.payload_type, self._seq, self._ts, self.ssrc,
                               self._spurt_start, payload, claim))
        self._spurt_start = False
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + samples_48k) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return data
