"""libFuzzer harness (atheris) over everything a stranger can put in front of a gateway: one datagram
on a talk group's socket (RTP header check, announcement parsing, SRTP unprotect, the RTP parse of
what decrypts) and one MQTT announcement topic.

Invariants: no exception escapes, and nothing reaches the port sink that the test's own sender
didn't protect (a mutated packet must never authenticate). Run by tests/fuzz/test_fuzz.py for a
bounded time; by hand: ``.venv/bin/python tests/fuzz/fuzz_receive.py -max_total_time=60 CORPUS``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from gateway.config import GroupSettings, NetworkSettings
    from gateway.control.topics import Topics
    from gateway.net import rtp
    from gateway.net.srtp import GroupSecurity
    from gateway.net.udp import UdpTransport

SECRET = b"fuzzing secret, fuzzing secret, fuzzing"
PT = 111
TALKER = 0x0A0B0C0D

sender = GroupSecurity("ops", SECRET)
sender.add_sender(TALKER, 1)
receiver = GroupSecurity("ops", SECRET)
for _ in range(3):
    receiver.on_announcement(sender.announcement(0), 0)
    sender.on_announcement(receiver.announcement(0), 0)
assert receiver.knows(TALKER)
PLAIN = [rtp.build(rtp.RtpPacket(PT, 1 + i, 960 * i, TALKER, i == 0, bytes([0xF8, i, 0xFE])))
         for i in range(4)]
SEEDS = [sender.protect(p) for p in PLAIN] + [sender.announcement(1), receiver.announcement(1)]
AUTHENTIC = {rtp.parse(p, PT).payload for p in PLAIN}  # type: ignore[union-attr]

played: list[rtp.RtpPacket] = []
transport = UdpTransport(NetworkSettings(), [GroupSettings("ops", multicast="239.1.1.1")], PT,
                         lambda g, p: played.append(p), {"ops": receiver}, own_ssrcs={0x0BAD})
topics = Topics("gateway/v1/site", "gw")


def one_input(data: bytes) -> None:
    transport.datagram_received("ops", data)
    transport.announcement_received("ops", data)
    topics.parse_announce(data.decode("utf-8", "replace"))
    for packet in played:
        if packet.ssrc != TALKER or packet.payload not in AUTHENTIC:
            raise AssertionError(f"an unauthenticated packet was played: {packet}")
    played.clear()


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
