"""SRTP and announcements: keys, the handshake, and the attacks the issue lists (pure, no sockets).

Every test here drives :class:`GroupSecurity` (real libsrtp) and :class:`UdpTransport`'s receive path
directly, so 10^5 forged datagrams take seconds, not minutes.
"""

from __future__ import annotations

import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.opus import OpusEncoder
from gateway.config import GroupSettings, NetworkSettings
from gateway.net import announce, keys, rtp
from gateway.net.srtp import EPOCHS_PER_SENDER, Drop, GroupSecurity
from gateway.net.udp import UdpTransport

SECRET = b"correct horse battery staple, group ops"
PT = 111
TALKER = 0x1234_5678


def _handshake(sender: GroupSecurity, receiver: GroupSecurity, now: float = 0.0) -> None:
    """What the announcer tasks do on a LAN: each hears the other until both are satisfied."""
    for _ in range(3):
        receiver.on_announcement(sender.announcement(now), now)
        sender.on_announcement(receiver.announcement(now), now)
    assert receiver.knows(TALKER)


def _pair(first_seq: int = 100) -> tuple[GroupSecurity, GroupSecurity]:
    a, b = GroupSecurity("ops", SECRET), GroupSecurity("ops", SECRET)
    a.add_sender(TALKER, first_seq)
    _handshake(a, b)
    return a, b


def _spurt(first_seq: int, count: int, payload: bytes = b"\xf8\xff\xfe" * 20) -> list[bytes]:
    return [rtp.build(rtp.RtpPacket(PT, (first_seq + i) & 0xFFFF, 960 * i, TALKER, i == 0, payload))
            for i in range(count)]


class _Receiver:
    """A box's receive path for one group: transport checks, SRTP, then the RTP parse."""

    def __init__(self, security: GroupSecurity) -> None:
        self.played: list[rtp.RtpPacket] = []
        self.transport = UdpTransport(NetworkSettings(), [GroupSettings("ops", multicast="239.1.1.1")],
                                      PT, lambda g, p: self.played.append(p), {"ops": security},
                                      own_ssrcs={0x0BAD})

    def feed(self, data: bytes) -> None:
        self.transport.datagram_received("ops", data)

    @property
    def counted(self) -> int:
        return sum(self.transport.rejected.values())


# -- keys -------------------------------------------------------------------------------------------


def test_keys_differ_by_group_ssrc_and_epoch() -> None:
    base = keys.srtp_key(SECRET, "ops", 1, 1)
    assert len(base) == 30
    others = {keys.srtp_key(SECRET, "ops2", 1, 1), keys.srtp_key(SECRET, "ops", 2, 1),
              keys.srtp_key(SECRET, "ops", 1, 2), keys.srtp_key(SECRET + b"x", "ops", 1, 1)}
    assert base not in others and len(others) == 4
    assert keys.srtp_key(SECRET, "ops", 1, 1) == base  # deterministic: receivers derive the same


def test_a_sender_restarting_1000_times_never_repeats_key_ssrc_and_index() -> None:
    packet = _spurt(7, 1)[0]
    seen_keys: set[bytes] = set()
    seen_wire: set[bytes] = set()
    for _ in range(1000):
        sec = GroupSecurity("ops", SECRET)
        epoch = sec.add_sender(TALKER, 7)  # the same SSRC and even the same first sequence number
        seen_keys.add(keys.srtp_key(SECRET, "ops", TALKER, epoch))
        seen_wire.add(sec.protect(packet))
    assert len(seen_keys) == 1000  # a fresh key per start, so (key, SSRC, index) never repeats
    assert len(seen_wire) == 1000


@pytest.mark.parametrize(("secret", "ok"), [
    ("x" * 31, False), ("x" * 32, True), (" " + "x" * 40, False), ("a b" + "x" * 40, False),
    (keys.generate_secret(), True),
])
def test_secret_rules(secret: str, ok: bool) -> None:
    assert (keys.check_secret(secret) is None) == ok


def test_secret_from_the_state_dir(tmp_path: os.PathLike[str]) -> None:
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="gateway keygen --group ops"):
        keys.load_secret("ops", "", str(tmp_path))
    path = keys.write_secret(str(tmp_path), "ops", "y" * 40)
    assert path.stat().st_mode & 0o777 == 0o600
    assert keys.load_secret("ops", "", str(tmp_path)) == b"y" * 40
    assert keys.load_secret("ops", "z" * 40, str(tmp_path)) == b"z" * 40  # the config wins


# -- the handshake ----------------------------------------------------------------------------------


def test_a_stream_plays_only_after_a_fresh_announcement() -> None:
    a, b = GroupSecurity("ops", SECRET), GroupSecurity("ops", SECRET)
    a.add_sender(TALKER, 100)
    packets = [a.protect(p) for p in _spurt(100, 5)]
    assert b.unprotect(packets[0], 0) is Drop.UNKNOWN_SENDER
    # a's first announcement doesn't echo b's nonce (a hasn't heard b yet): not enough.
    b.on_announcement(a.announcement(0), 0)
    assert not b.knows(TALKER) and b.want_announce
    a.on_announcement(b.announcement(0), 0)
    assert a.want_announce  # a heard a new nonce and answers
    b.on_announcement(a.announcement(0), 0)
    assert b.knows(TALKER)
    # Sent before the announcement that b accepted: below its floor, so never played.
    assert b.unprotect(packets[1], 0) is Drop.REPLAY
    fresh = a.protect(_spurt(105, 1)[0])
    assert isinstance(b.unprotect(fresh, 0), bytes)


def test_a_lost_answer_is_asked_for_again() -> None:
    a, b = GroupSecurity("ops", SECRET), GroupSecurity("ops", SECRET)
    a.add_sender(TALKER, 100)
    b.on_announcement(a.announcement(0), 0)
    assert TALKER in b.pending
    a.on_announcement(b.announcement(0), 0)
    a.announcement(0.05)  # the answer: lost on the way
    assert not a.want_announce
    retry = b.announcement(0.25)  # b still wants TALKER and says so
    assert announce.parse(keys.announce_key(SECRET, "ops"), "ops", retry).wants == (TALKER,)  # type: ignore[union-attr]
    a.on_announcement(retry, 0.25)
    assert a.want_announce
    b.on_announcement(a.announcement(0.3), 0.3)
    assert b.knows(TALKER) and not b.pending


def test_a_replayed_announcement_of_a_gone_sender_is_not_asked_for_forever() -> None:
    a, b = GroupSecurity("ops", SECRET), GroupSecurity("ops", SECRET)
    a.add_sender(TALKER, 100)
    b.on_announcement(a.announcement(0), 0)
    assert b.pending
    b.announcement(31)
    assert not b.pending


def test_announcements_are_authenticated() -> None:
    _, b = _pair()
    ann = bytearray(GroupSecurity("ops", SECRET).announcement(0))
    ann[-1] ^= 1
    assert b.on_announcement(bytes(ann), 0) is announce.Refused.AUTH_FAILURE
    stranger = GroupSecurity("ops", b"another group's secret, same name!")
    stranger.add_sender(0x999, 1)
    stranger.on_announcement(b.announcement(0), 0)
    assert b.on_announcement(stranger.announcement(0), 0) is announce.Refused.AUTH_FAILURE
    other_group = GroupSecurity("maint", SECRET)  # same secret, other group: other keys
    assert b.on_announcement(other_group.announcement(0), 0) is announce.Refused.AUTH_FAILURE
    assert not b.knows(0x999)
    assert b.stats.dropped["announce_auth_failure"] == 3


# -- replays ----------------------------------------------------------------------------------------


def test_replayed_talk_spurt_plays_nothing_also_after_the_receiver_restarts() -> None:
    a, b = _pair(first_seq=65500)
    # The spurt wraps the 16-bit sequence number: the sender moves to its next epoch, which its
    # first packet near the wrap made it prepare and announce ahead.
    plain = _spurt(65500, 100)
    spurt = [a.protect(plain[0])]
    assert a.want_announce
    captured_announcements = [a.announcement(0)]
    b.on_announcement(captured_announcements[0], 0)
    spurt += [a.protect(p) for p in plain[1:]]
    assert all(isinstance(b.unprotect(p, 1), bytes) for p in spurt)
    # 1. The same receiver: every replayed packet is refused.
    assert sum(isinstance(b.unprotect(p, 2), bytes) for p in spurt) == 0
    # 2. The receiver restarts (new nonce, no replay history). The attacker replays the
    #    announcements it captured, then the spurt: nothing is accepted.
    b2 = GroupSecurity("ops", SECRET)
    for ann in captured_announcements:
        b2.on_announcement(ann, 3)
    assert not b2.knows(TALKER)
    assert sum(isinstance(b2.unprotect(p, 3), bytes) for p in spurt) == 0
    # 3. The real sender answers b2's fresh nonce; its announcement carries its next index, so the
    #    old spurt is still refused while new speech plays.
    _handshake(a, b2, now=4)
    assert sum(isinstance(b2.unprotect(p, 4), bytes) for p in spurt) == 0
    new = [a.protect(p) for p in _spurt(65600, 10)]
    assert all(isinstance(b2.unprotect(p, 5), bytes) for p in new)
    assert sum(b2.stats.dropped.values()) == 200  # all counted (unknown sender, replay, bad tag)


def test_a_restarted_sender_is_heard_and_its_old_epoch_stays_dead() -> None:
    a, b = _pair()
    old = [a.protect(p) for p in _spurt(100, 20)]
    assert all(isinstance(b.unprotect(p, 1), bytes) for p in old)
    old_announcement = a.announcement(1)
    for restart in range(EPOCHS_PER_SENDER + 2):  # more restarts than epochs kept side by side
        a = GroupSecurity("ops", SECRET)
        a.add_sender(TALKER, 100)
        _handshake(a, b, now=2 + restart)
        new = [a.protect(p) for p in _spurt(100, 5)]
        assert all(isinstance(b.unprotect(p, 2 + restart), bytes) for p in new)
    b.on_announcement(old_announcement, 10)  # the first epoch was retired: never again
    assert sum(isinstance(b.unprotect(p, 10), bytes) for p in old) == 0


# -- forgeries --------------------------------------------------------------------------------------


def test_100k_forged_datagrams_play_nothing_and_are_all_counted() -> None:
    a, b = _pair(first_seq=1000)
    rx = _Receiver(b)
    rng = random.Random(42)
    enc = OpusEncoder(16000, 20, 24000, 5, False, 0, False)
    import numpy as np

    tone = (np.sin(np.arange(320) * 0.3) * 8000).astype(np.int16)
    valid_plain = _spurt(1000, 1000, enc.encode(tone))
    valid = [a.protect(p) for p in valid_plain]
    forged = 0
    # Random bytes.
    for _ in range(25_000):
        rx.feed(rng.randbytes(rng.randrange(0, 300)))
        forged += 1
    # A valid RTP header from an unknown SSRC, random payload.
    for _ in range(25_000):
        hdr = struct.pack("!BBHII", 0x80, PT, rng.randrange(65536), rng.randrange(2**32),
                          rng.randrange(2**32))
        rx.feed(hdr + rng.randbytes(rng.randrange(1, 200)))
        forged += 1
    # The talker's SSRC, any sequence number, random payload and tag.
    for _ in range(50_000):
        hdr = struct.pack("!BBHII", 0x80, PT, rng.randrange(65536), rng.randrange(2**32), TALKER)
        rx.feed(hdr + rng.randbytes(rng.randrange(11, 200)))
        forged += 1
    assert rx.played == []
    assert rx.counted == forged
    # Every single-bit flip of 1,000 valid packets (~800 flips each), fed before the originals so
    # that a flip of the sequence number isn't simply "already seen".
    flips = 0
    for packet in valid:
        bits = bytearray(packet)
        for i in range(len(packet) * 8):
            bits[i // 8] ^= 1 << (i % 8)
            rx.feed(bytes(bits))
            bits[i // 8] ^= 1 << (i % 8)
            flips += 1
    assert rx.played == []
    assert rx.counted == forged + flips
    # The originals still play, in full, after all that.
    for packet in valid:
        rx.feed(packet)
    assert [p.payload for p in rx.played] == [rtp.parse(p, PT).payload for p in valid_plain]  # type: ignore[union-attr]
    dropped = rx.transport.rejected
    assert dropped["auth_failure"] > 0 and dropped["unknown_sender"] > 0
    assert dropped["bad_version"] > 0 and dropped["malformed"] > 0


# -- fuzzing (bounded; hypothesis because it needs no build) ----------------------------------------


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=1200))
def test_fuzz_announcement_parsing(data: bytes) -> None:
    sec = GroupSecurity("ops", SECRET)
    before = sec.knows(TALKER)
    result = sec.on_announcement(announce.MAGIC + data, 0)
    assert result in (announce.Refused.MALFORMED, announce.Refused.AUTH_FAILURE)
    assert sec.knows(TALKER) == before
    assert announce.parse(b"k" * 32, "ops", data) in (announce.Refused.MALFORMED,
                                                      announce.Refused.AUTH_FAILURE)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.builds(announce.SenderEntry, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1),
                          st.integers(0, 2**48 - 1)), max_size=announce.MAX_SENDERS),
       st.lists(st.binary(min_size=8, max_size=8), max_size=announce.MAX_ECHOES),
       st.binary(min_size=8, max_size=8))
def test_fuzz_announcement_round_trip(senders: list[announce.SenderEntry], echoes: list[bytes],
                                      nonce: bytes) -> None:
    ann = announce.Announcement(nonce, tuple(senders), tuple(echoes), tuple(s.ssrc for s in senders))
    data = announce.build(b"k" * 32, "ops", ann)
    assert announce.parse(b"k" * 32, "ops", data) == ann
    cut = data[: len(data) // 2]
    assert isinstance(announce.parse(b"k" * 32, "ops", cut), announce.Refused)


@settings(max_examples=3000, deadline=None)
@given(st.binary(min_size=0, max_size=1600), st.integers(0, 65535))
def test_fuzz_voice_datagrams(tail: bytes, seq: int) -> None:
    _, b = _PAIR
    rx = _Receiver(b)
    rx.feed(struct.pack("!BBHII", 0x80, PT, seq, 0, TALKER) + tail)
    rx.feed(tail)
    assert rx.played == [] and rx.counted == 2


_PAIR = _pair()
