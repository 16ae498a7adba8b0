"""RTP parsing and building (pure): round trips, a table of malformed datagrams, and the sender's clock."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.net import rtp
from gateway.net.rtp import Reject, RtpPacket, RtpSender, build, parse

PT = 111
SSRC = 0x1234ABCD
OPUS = b"\xf8\xff\xfe"  # a 20 ms CELT frame of silence: any non-empty payload would do


def _header(b0: int = 0x80, b1: int = PT, seq: int = 7, ts: int = 960, ssrc: int = SSRC) -> bytes:
    return struct.pack("!BBHII", b0, b1, seq, ts, ssrc)


# -- round trip ---------------------------------------------------------------------------------

# PT 64-95 with the marker set reads as RTCP 192-223 (RFC 5761 section 4), so RTP never uses them.
_rtp_payload_types = st.integers(0, 63) | st.integers(96, 127)


@given(
    pt=_rtp_payload_types,
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    marker=st.booleans(),
    payload=st.binary(min_size=1, max_size=1500 - rtp.MIN_HEADER_BYTES),
)
def test_build_then_parse_gives_the_same_packet(
    pt: int, seq: int, ts: int, ssrc: int, marker: bool, payload: bytes
) -> None:
    packet = RtpPacket(pt, seq, ts, ssrc, marker, payload)
    data = build(packet)
    assert len(data) == rtp.MIN_HEADER_BYTES + len(payload)
    assert data[0] >> 6 == rtp.RTP_VERSION
    assert parse(data, pt) == packet


def test_build_writes_the_rfc3550_header_layout() -> None:
    data = build(RtpPacket(PT, 0x0102, 0x03040506, 0x0708090A, True, b"op"))
    assert data == bytes([0x80, 0x80 | PT, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) + b"op"


def test_parse_skips_csrcs_extension_and_padding() -> None:
    csrcs = struct.pack("!II", 1, 2)
    extension = struct.pack("!HH", 0xBEDE, 2) + bytes(8)  # profile, 2 words of data
    padding = bytes([0, 0, 3])  # 3 octets of padding, the count included
    data = _header(b0=0x80 | 0x20 | 0x10 | 2, b1=0x80 | PT) + csrcs + extension + OPUS + padding
    packet = parse(data, PT)
    assert packet == RtpPacket(PT, 7, 960, SSRC, True, OPUS)


@given(claim=st.binary(min_size=1, max_size=16), payload=st.binary(min_size=1, max_size=200),
       marker=st.booleans())
def test_a_claim_travels_in_a_one_byte_header_extension(claim: bytes, marker: bool,
                                                          payload: bytes) -> None:
    packet = RtpPacket(PT, 9, 960, SSRC, marker, payload, claim)
    data = build(packet)
    assert data[0] & 0x10 and data[12:14] == b"\xbe\xde" and (len(data) - len(payload)) % 4 == 0
    assert parse(data, PT) == packet


def test_a_claim_is_found_among_other_elements_and_padding() -> None:
    elements = bytes([0x21, 0xAA, 0xBB, 0x00, 0x00, 0x12, 1, 2, 3, 0x00])  # ID 2, pads, ID 1 (3 B)
    elements += bytes(-len(elements) % 4)
    data = _header(b0=0x90) + struct.pack("!HH", 0xBEDE, len(elements) // 4) + elements + OPUS
    packet = parse(data, PT)
    assert isinstance(packet, RtpPacket) and packet.claim == bytes([1, 2, 3]) and packet.payload == OPUS
    # A two-byte-header profile (RFC 8285 4.3) or another profile: skipped, no claim.
    other = _header(b0=0x90) + struct.pack("!HH", 0x1000, 1) + bytes([1, 3, 1, 2]) + OPUS
    assert parse(other, PT) == RtpPacket(PT, 7, 960, SSRC, False, OPUS)
    with pytest.raises(ValueError):
        build(RtpPacket(PT, 1, 1, 1, False, OPUS, bytes(17)))


def test_parse_accepts_a_datagram_of_exactly_max_bytes() -> None:
    data = _header() + bytes(100 - rtp.MIN_HEADER_BYTES)
    assert isinstance(parse(data, PT, max_bytes=100), RtpPacket)
    assert parse(data + b"x", PT, max_bytes=100) is Reject.OVERSIZED


# -- malformed datagrams ------------------------------------------------------------------------

_rng = random.Random(20240611)  # fixed seed: the table is the same on every run
_GOOD = _header() + OPUS

MALFORMED: list[tuple[str, bytes, Reject]] = [
    ("empty", b"", Reject.TRUNCATED),
    *[(f"header cut to {n} bytes", _GOOD[:n], Reject.TRUNCATED) for n in range(rtp.MIN_HEADER_BYTES)],
    # Random bytes behind a first octet that fixes what they are judged on.
    ("random, version 0", bytes([0x3F]) + _rng.randbytes(200), Reject.BAD_VERSION),
    ("random, version 1", bytes([0x7F]) + _rng.randbytes(200), Reject.BAD_VERSION),
    ("random, version 3", bytes([0xC0]) + _rng.randbytes(200), Reject.BAD_VERSION),
    ("random, too long", _rng.randbytes(1501), Reject.OVERSIZED),
    ("random, short", _rng.randbytes(7), Reject.TRUNCATED),
    ("version 0", _header(b0=0x00) + OPUS, Reject.BAD_VERSION),
    ("version 1", _header(b0=0x40) + OPUS, Reject.BAD_VERSION),
    ("version 3", _header(b0=0xC0) + OPUS, Reject.BAD_VERSION),
    ("oversized", _header() + bytes(1500), Reject.OVERSIZED),
    ("oversized even when truncated-looking", bytes(1501), Reject.OVERSIZED),
    ("payload type 0 (PCMU)", _header(b1=0) + OPUS, Reject.UNKNOWN_PAYLOAD_TYPE),
    ("payload type 110", _header(b1=110) + OPUS, Reject.UNKNOWN_PAYLOAD_TYPE),
    ("payload type 112 with marker", _header(b1=0x80 | 112) + OPUS, Reject.UNKNOWN_PAYLOAD_TYPE),
    ("1 CSRC announced, none present", _header(b0=0x81), Reject.TRUNCATED),
    ("15 CSRCs announced, 2 present", _header(b0=0x8F) + bytes(8), Reject.TRUNCATED),
    ("2 CSRCs present, no payload", _header(b0=0x82) + bytes(8), Reject.EMPTY_PAYLOAD),
    ("extension header cut short", _header(b0=0x90) + b"\xbe\xde", Reject.BAD_EXTENSION),
    ("extension flag, nothing after header", _header(b0=0x90), Reject.BAD_EXTENSION),
    ("extension length past the end",
     _header(b0=0x90) + struct.pack("!HH", 0xBEDE, 3) + bytes(8), Reject.BAD_EXTENSION),
    ("extension after a CSRC, past the end",
     _header(b0=0x91) + bytes(4) + struct.pack("!HH", 0xBEDE, 1), Reject.BAD_EXTENSION),
    ("extension fills the packet", _header(b0=0x90) + struct.pack("!HH", 0xBEDE, 1) + bytes(4),
     Reject.EMPTY_PAYLOAD),
    ("one-byte element runs past its block",
     _header(b0=0x90) + struct.pack("!HH", 0xBEDE, 1) + bytes([0x18, 1, 2, 3]) + OPUS,
     Reject.BAD_EXTENSION),
    ("padding count 0", _header(b0=0xA0) + OPUS + b"\x00", Reject.BAD_PADDING),
    ("padding larger than the packet", _header(b0=0xA0) + b"op\xff", Reject.BAD_PADDING),
    ("padding reaches into the header", _header(b0=0xA0) + b"op\x04", Reject.BAD_PADDING),
    ("padding eats the whole payload", _header(b0=0xA0) + b"op\x03", Reject.EMPTY_PAYLOAD),
    ("header only", _header(), Reject.EMPTY_PAYLOAD),
    ("header only, with marker", _header(b1=0x80 | PT), Reject.EMPTY_PAYLOAD),
    *[
        (f"RTCP packet type {rtcp_pt}", struct.pack("!BBHI", 0x80, rtcp_pt, 6, SSRC) + bytes(20),
         Reject.RTCP)
        for rtcp_pt in (200, 201, 202, 203, 204)
    ],
    # An RTCP receiver report with no blocks is only 8 bytes: still RTCP, not a truncated RTP header.
    ("RTCP RR, 8 bytes", struct.pack("!BBHI", 0x80, 201, 1, SSRC), Reject.RTCP),
    ("RTCP BYE with a count", struct.pack("!BBHI", 0x81, 203, 1, SSRC), Reject.RTCP),
]


@pytest.mark.parametrize(
    ("data", "reason"), [(d, r) for _, d, r in MALFORMED], ids=[name for name, _, _ in MALFORMED]
)
def test_malformed_datagram_is_rejected_with_its_reason(data: bytes, reason: Reject) -> None:
    assert parse(data, PT, max_bytes=1500) is reason


def test_the_table_covers_every_reason_parse_can_give() -> None:
    # OWN_PACKET is decided by the transport (it knows our SSRCs), never by parse().
    assert {r for _, _, r in MALFORMED} == set(Reject) - {Reject.OWN_PACKET}


def test_a_well_formed_packet_parses() -> None:
    assert parse(_GOOD, PT) == RtpPacket(PT, 7, 960, SSRC, False, OPUS)


@given(st.binary(max_size=2000), st.integers(0, 127), st.integers(0, 2000))
def test_parse_of_any_bytes_returns_a_packet_or_a_reject(data: bytes, pt: int, max_bytes: int) -> None:
    result = parse(data, pt, max_bytes)
    assert isinstance(result, RtpPacket | Reject)
    if isinstance(result, RtpPacket):
        assert result.payload_type == pt
        assert result.payload  # never an empty payload
        assert len(data) <= max_bytes
        assert result.payload in data


@given(
    flags=st.integers(0, 0x3F),
    b1=st.integers(0, 255),
    tail=st.binary(max_size=80),
)
def test_parse_of_any_version_2_header_never_raises(flags: int, b1: int, tail: bytes) -> None:
    # Random bytes mostly fail the version check; this explores CSRC/extension/padding arithmetic.
    data = _header(b0=0x80 | flags, b1=b1) + tail
    result = parse(data, b1 & 0x7F)
    assert isinstance(result, RtpPacket | Reject)


# -- sender -------------------------------------------------------------------------------------


def _parsed(data: bytes) -> RtpPacket:
    packet = parse(data, PT)
    assert isinstance(packet, RtpPacket), packet
    return packet


def test_marker_only_on_the_first_packet_of_each_spurt() -> None:
    sender = RtpSender(SSRC, PT, initial_sequence=100, initial_timestamp=5000)
    markers = [_parsed(sender.packetize(OPUS, 960)).marker for _ in range(3)]
    sender.start_spurt()
    markers += [_parsed(sender.packetize(OPUS, 960)).marker for _ in range(3)]
    assert markers == [True, False, False, True, False, False]


def test_sender_stamps_its_ssrc_payload_type_and_counts() -> None:
    sender = RtpSender(SSRC, PT, initial_sequence=1, initial_timestamp=2)
    packets = [_parsed(sender.packetize(b"x" * n, 960)) for n in (3, 5)]
    assert {(p.ssrc, p.payload_type) for p in packets} == {(SSRC, PT)}
    assert [p.payload for p in packets] == [b"xxx", b"xxxxx"]
    assert (sender.packets_sent, sender.octets_sent) == (2, 8)


def test_sequence_wraps_at_2_16_and_timestamp_at_2_32() -> None:
    sender = RtpSender(SSRC, PT, initial_sequence=0xFFFE, initial_timestamp=0xFFFFFFFF - 959)
    packets = [_parsed(sender.packetize(OPUS, 960)) for _ in range(4)]
    assert [p.sequence for p in packets] == [0xFFFE, 0xFFFF, 0, 1]
    assert [p.timestamp for p in packets] == [0xFFFFFFFF - 959, 0, 960, 1920]


def test_initial_values_are_reduced_to_their_field_widths() -> None:
    sender = RtpSender(SSRC, PT, initial_sequence=0x1_0005, initial_timestamp=0x1_0000_0007)
    packet = _parsed(sender.packetize(OPUS, 960))
    assert (packet.sequence, packet.timestamp) == (5, 7)


def test_skip_advances_the_timestamp_only() -> None:
    sender = RtpSender(SSRC, PT, initial_sequence=10, initial_timestamp=0xFFFFFF00)
    first = _parsed(sender.packetize(OPUS, 960))
    sender.skip(48000)  # a second of silence between spurts
    sender.skip(0x100)
    sender.start_spurt()
    second = _parsed(sender.packetize(OPUS, 960))
    assert second.sequence == first.sequence + 1  # no sequence gap: nothing was lost
    assert second.timestamp == (0xFFFFFF00 + 960 + 48000 + 0x100) & 0xFFFFFFFF
    assert second.marker
    assert (sender.packets_sent, sender.octets_sent) == (2, 2 * len(OPUS))


@given(
    seq0=st.integers(0, 0xFFFF),
    ts0=st.integers(0, 0xFFFFFFFF),
    steps=st.lists(st.sampled_from([480, 960, 1920]), min_size=1, max_size=40),
)
def test_sender_sequence_and_timestamp_advance_modulo(seq0: int, ts0: int, steps: list[int]) -> None:
    sender = RtpSender(SSRC, PT, seq0, ts0)
    ts = ts0
    for i, samples in enumerate(steps):
        packet = _parsed(sender.packetize(OPUS, samples))
        assert packet.sequence == (seq0 + i) & 0xFFFF
        assert packet.timestamp == ts & 0xFFFFFFFF
        assert packet.marker == (i == 0)
        ts += samples
