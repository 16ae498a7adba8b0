"""UDP transport: a real stream between two boxes on loopback, with malformed datagrams mixed in."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import GroupSettings, NetworkSettings
from gateway.net import rtp
from gateway.net.srtp import GroupSecurity
from gateway.net.udp import UdpTransport
from tests.rigs.voice import make_rig, talk


def _malformed(pt: int, known_ssrc: int) -> list[tuple[str, bytes]]:
    """One datagram of every malformed kind, with the reason it must be counted under.

    The RTP header is checked first (it is in the clear); what passes goes to SRTP, which knows no
    sender 0xDEAD, so a packet that would be malformed inside (bad padding or extension, empty
    payload) never gets that far: it is an unknown sender, or too short to be SRTP at all.
    """
    good_header = struct.pack("!BBHII", 0x80, pt, 1, 960, 0xDEAD)
    return [
        ("truncated", b""),
        ("truncated", good_header[:7]),
        ("truncated", bytes([0x8F]) + good_header[1:]),  # 15 CSRCs announced, none present
        ("bad_version", struct.pack("!BBHII", 0x40, pt, 1, 960, 0xDEAD) + b"opus"),
        ("bad_version", struct.pack("!BBHII", 0x00, pt, 1, 960, 0xDEAD) + b"opus"),
        ("oversized", good_header + bytes(1600)),
        ("unknown_payload_type", struct.pack("!BBHII", 0x80, 0, 1, 960, 0xDEAD) + b"opus"),
        ("unknown_payload_type", struct.pack("!BBHII", 0x80, 8, 1, 960, 0xDEAD) + b"opus"),
        ("malformed", bytes([0x90]) + good_header[1:] + b"\xbe\xde"),
        ("malformed", bytes([0xA0]) + good_header[1:] + b"opus\x00"),
        ("malformed", good_header),
        ("unknown_sender", bytes([0xA0]) + good_header[1:] + bytes(30) + b"\x40"),
        ("unknown_sender", good_header + os.urandom(60)),
        ("rtcp", struct.pack("!BBHI", 0x80, 201, 1, 0xDEAD)),
        # Random bytes: whatever they parse as, they must be rejected (first byte forces v0).
        ("bad_version", bytes([0x3F]) + os.urandom(100)),
        # Our own SSRC (multicast loopback or a spoof) is never played.
        ("own_packet", struct.pack("!BBHII", 0x80, pt, 9, 960, known_ssrc) + b"\xf8\xff\xfe"),
    ]


def _security() -> dict[str, GroupSecurity]:
    return {"ops": GroupSecurity("ops", b"k" * 32)}


async def test_stream_survives_malformed_datagrams(tmp_path: Path) -> None:
    rig = await make_rig(tmp_path)
    pt = rig.talker.port.uplink.rtp.payload_type
    bad = _malformed(pt, rig.listener.port.ssrc)
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    junk.bind(("127.0.0.23", 0))
    stop = asyncio.Event()

    async def flood() -> None:
        rounds = 0
        while not stop.is_set():
            # The talker's SSRC with a sequence number ahead of it and a forged tag.
            seq = (rig.talker.port.uplink.rtp._seq + 500) & 0xFFFF
            forged = struct.pack("!BBHII", 0x80, pt, seq, 0, rig.talker.port.ssrc) + os.urandom(80)
            for _, data in [*bad, ("auth_failure", forged)]:
                junk.sendto(data, (rig.listener.address, rig.group.port))  # unicast socket
                junk.sendto(data, (rig.group.multicast, rig.group.port))  # multicast socket
            rounds += 1
            await asyncio.sleep(0.02)

    flooder = asyncio.create_task(flood())
    try:
        await talk(rig)
    finally:
        stop.set()
        await flooder
        junk.close()
    rejected = rig.listener.transport.rejected
    expected = {reason for reason, _ in bad} | {"auth_failure"}
    assert expected <= set(rejected), (expected - set(rejected), rejected)
    heard = rig.heard()
    assert heard.pesq is not None and heard.pesq >= 3.5, heard
    assert heard.delay_ms is not None and heard.delay_ms < 150
    stats = rig.listener.port.downlink.totals()
    assert stats.packets_received == rig.talker.port.uplink.rtp.packets_sent
    assert stats.undecodable == 0
    # Only the talker's SSRC ever reached the listener's downlink.
    assert set(rig.listener.port.downlink.senders) == {rig.talker.port.ssrc}


async def test_unicast_peers(tmp_path: Path) -> None:
    rig = await make_rig(tmp_path, multicast=False)
    await talk(rig)
    heard = rig.heard()
    assert heard.pesq is not None and heard.pesq >= 3.5, heard
    assert rig.listener.transport.rejected["own_packet"] == 0


async def test_no_press_sends_nothing(tmp_path: Path) -> None:
    rig = await make_rig(tmp_path)
    await talk(rig, press=False)
    assert rig.talker.port.uplink.rtp.packets_sent == 0
    assert rig.listener.transport.received == 0
    assert rig.heard().delay_ms is None  # the clip is nowhere in what the listener played


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_any_datagram_is_counted_or_delivered(data: bytes) -> None:
    delivered: list[rtp.RtpPacket] = []
    t = UdpTransport(NetworkSettings(), [GroupSettings("ops", multicast="239.255.0.1")], 111,
                     lambda g, p: delivered.append(p), _security(), own_ssrcs={1})
    t.datagram_received("ops", data)
    assert sum(t.rejected.values()) + len(delivered) == 1
    assert t.received == len(delivered)


async def test_bind_failure_names_group() -> None:

    from gateway.errors import TransportError

    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.24", 0))
    port = blocker.getsockname()[1]
    t = UdpTransport(NetworkSettings(bind_address="127.0.0.24"),
                     [GroupSettings("ops", port=port, peers=("127.0.0.25",))], 111, lambda g, p: None,
                     _security())
    try:
        with pytest.raises(TransportError, match="ops"):
            await t.start()
    finally:
        blocker.close()


def test_random_flood_never_raises() -> None:
    t = UdpTransport(NetworkSettings(), [GroupSettings("ops", multicast="239.255.0.1")], 111,
                     lambda g, p: None, _security())
    rng = random.Random(7)
    for _ in range(20000):
        t.datagram_received("ops", rng.randbytes(rng.randrange(0, 200)))
    assert sum(t.rejected.values()) + t.received == 20000


def test_rejections_are_logged_sparingly(caplog: pytest.LogCaptureFixture) -> None:
    t = UdpTransport(NetworkSettings(), [GroupSettings("ops", multicast="239.255.0.1")], 111,
                     lambda g, p: None, _security())
    with caplog.at_level("WARNING", logger="gateway.net.udp"):
        for _ in range(1000):
            t.datagram_received("ops", b"\x00" * 20, ("10.1.2.3", 999))
    assert t.rejected["bad_version"] == 1000
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4  # the 1st, 10th, 100th and 1000th
    assert "dropped 1000 bad_version datagram(s) on talk group 'ops' (latest from 10.1.2.3:999)" in lines
