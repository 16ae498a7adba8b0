"""The fixed jitter buffer (pure): playout tables and properties over arrival orders.

Tables are scripts: an integer pushes that sequence number (payload = its decimal digits), with a
trailing ``!`` when the push must be refused; ``.`` pops one frame. The expected playout has one
token per pop: the sequence number played, ``-`` for IDLE, ``lost`` for LOST without a next payload
and ``lost>N`` for LOST handing over packet N's payload (for FEC).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codec.jitter import RESYNC_JUMP, JitterBuffer, Pop, PopResult


def _payload(seq: int) -> bytes:
    return str(seq).encode()


def _token(res: PopResult) -> str:
    if res.kind is Pop.IDLE:
        assert res.payload == res.next_payload == b""
        return "-"
    if res.kind is Pop.LOST:
        assert res.payload == b""
        return f"lost>{res.next_payload.decode()}" if res.next_payload else "lost"
    assert res.next_payload == b""
    return res.payload.decode()


def play(buf: JitterBuffer, script: str) -> str:
    """Run a script against ``buf``; return the playout tokens (push results are asserted)."""
    out = []
    for step in script.split():
        if step == ".":
            out.append(_token(buf.pop()))
        else:
            refused = step.endswith("!")
            seq = int(step.rstrip("!"))
            assert buf.push(seq, _payload(seq)) is not refused, f"push {step}"
    return " ".join(out)


def _stats(buf: JitterBuffer) -> dict[str, int]:
    """The counters that are not zero."""
    return {k: v for k, v in dataclasses.asdict(buf.stats).items() if v}


# (name, depth_packets, max_packets, script, expected playout, expected non-zero stats)
CASES: list[tuple[str, int, int, str, str, dict[str, Any]]] = [
    # -- prefill and in-order playout
    ("depth 0 plays the first packet at once", 0, 50,
     "5 . 6 . .", "5 6 -", {"received": 2}),
    ("depth 2: idle until 2 packets beyond the first", 2, 50,
     "0 . 1 . 2 . 3 . . . .", "- - 0 1 2 3 -", {"received": 4}),
    ("depth 3 in order", 3, 50,
     "10 . 11 . 12 . 13 . 14 . . . . .", "- - - 10 11 12 13 14 -", {"received": 5}),
    ("nothing before prefill, however often it is asked", 2, 50,
     "0 1 . . . . .", "- - - - -", {"received": 2}),
    # -- reordering within the depth
    ("reordered during prefill", 2, 50,
     "1 0 . 3 2 . . . . .", "- 0 1 2 3 -", {"received": 4}),
    ("reordered pair straddling the start", 2, 50,
     "0 2 1 . 4 3 . . . . .", "0 1 2 3 4 -", {"received": 5}),
    ("a packet overtaken while playing slots back in", 1, 50,
     "0 1 . 3 . 2 . . .", "0 1 2 3 -", {"received": 4}),
    ("the earliest packet arriving last still plays first", 3, 50,
     "1 2 3 0 . . . . .", "0 1 2 3 -", {"received": 4}),
    # -- loss
    ("missing packet, next one here: LOST hands its payload over", 1, 50,
     "0 1 . 3 . . . .", "0 1 lost>3 3 -", {"received": 3, "lost": 1}),
    ("two missing: the first has no next payload", 1, 50,
     "0 1 . 4 . . . . .", "0 1 lost lost>4 4 -", {"received": 3, "lost": 2}),
    ("a packet arriving after its LOST turn is late", 1, 50,
     "0 1 . 3 . . 2! . .", "0 1 lost>3 3 -", {"received": 3, "lost": 1, "late": 1}),
    # -- duplicates and late packets
    ("duplicate while prefilling", 2, 50,
     "0 0! 1 2 . . . .", "0 1 2 -", {"received": 3, "duplicates": 1}),
    ("duplicate while buffered, late once played", 1, 50,
     "0 1 1! . 0! . 2 . . 1! . 5 .",
     "0 1 2 - - -", {"received": 4, "duplicates": 1, "late": 2}),
    # -- talk spurts: run dry, prefill again, no loss counted for the silence between
    ("runs dry after a spurt and prefills for the next", 2, 50,
     "0 1 2 . . . . . . . . 3 . 4 . 5 . . . .",
     "0 1 2 - - - - - - - 3 4 5 -", {"received": 6}),
    ("next spurt reordered during its prefill", 2, 50,
     "0 1 2 . . . . . . 4 . 3 . 5 . . . .",
     "0 1 2 - - - - - 3 4 5 -", {"received": 6}),
    ("a stalled network runs dry mid-spurt and resumes without loss", 1, 50,
     "0 1 . . . . . 2 3 . . .", "0 1 - - - 2 3 -", {"received": 4}),
    # -- 16-bit wraparound
    ("in order across the wrap", 2, 50,
     "65534 65535 0 . 1 . 2 . . . .", "65534 65535 0 1 2 -", {"received": 5}),
    ("reordered across the wrap", 2, 50,
     "65535 65534 1 . 0 . . . .", "65534 65535 0 1 -", {"received": 4}),
    ("loss across the wrap", 1, 50,
     "65535 0 . 2 . . . .", "65535 0 lost>2 2 -", {"received": 3, "lost": 1}),
    ("late across the wrap", 1, 50,
     "65535 0 . . 65535! 1 . .", "65535 0 1 -", {"received": 3, "late": 1}),
    # -- restarted sender (jump > RESYNC_JUMP either way): start over, nothing late or lost
    ("restart to a higher sequence", 1, 50,
     "100 101 . . . 40000 . 40001 . . .", "100 101 - - 40000 40001 -", {"received": 4, "resyncs": 1}),
    ("restart to a lower sequence", 1, 50,
     "30000 30001 . . . 7 . 8 . . .", "30000 30001 - - 7 8 -", {"received": 4, "resyncs": 1}),
    ("restart across the wrap", 1, 50,
     "65000 65001 . . . 20000 . 20001 . . .", "65000 65001 - - 20000 20001 -",
     {"received": 4, "resyncs": 1}),
    # -- overflow: the sender runs ahead, the oldest are dropped and counted
    ("overflow drops the oldest", 1, 4,
     "0 1 2 3 4 5 . . . . .", "2 3 4 5 -", {"received": 6, "overflow_dropped": 2}),
    ("overflow skips holes without counting them as drops", 1, 4,
     "0 1 5 . . . . .", "lost lost lost>5 5 -", {"received": 3, "overflow_dropped": 2, "lost": 3}),
    ("a dropped packet arriving again is late", 1, 4,
     "0 1 2 3 4 0! . . . . .", "1 2 3 4 -", {"received": 5, "overflow_dropped": 1, "late": 1}),
]


@pytest.mark.parametrize(
    ("depth", "max_packets", "script", "expected", "stats"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_playout(depth: int, max_packets: int, script: str, expected: str, stats: dict[str, int]) -> None:
    buf = JitterBuffer(depth, max_packets)
    assert play(buf, script) == expected
    assert _stats(buf) == stats


def test_playing_and_buffered_follow_prefill_and_running_dry() -> None:
    buf = JitterBuffer(2)
    play(buf, "0 1")
    assert (buf.playing, buf.buffered) == (False, 2)
    play(buf, "2")
    assert (buf.playing, buf.buffered) == (True, 3)
    assert play(buf, ". . .") == "0 1 2"
    assert (buf.playing, buf.buffered) == (True, 0)
    assert play(buf, ".") == "-"
    assert (buf.playing, buf.buffered) == (False, 0)


@pytest.mark.parametrize(("jump", "resyncs"), [(RESYNC_JUMP, 0), (RESYNC_JUMP + 1, 1)])
def test_resync_threshold(jump: int, resyncs: int) -> None:
    buf = JitterBuffer(1)
    play(buf, f"0 1 . . . {1 + jump}")
    assert buf.stats.resyncs == resyncs


def test_restart_while_packets_are_buffered_accounts_for_the_flushed_ones() -> None:
    buf = JitterBuffer(2)
    assert play(buf, "100 101 102 . 5000 . 5001 . 5002 . . . .") == "100 - - 5000 5001 5002 -"
    # 101 and 102 belonged to the old stream: never played, and not silently forgotten either.
    assert _stats(buf) == {"received": 6, "resyncs": 1, "overflow_dropped": 2}


@pytest.mark.parametrize(("depth", "max_packets"), [(-1, 50), (5, 5), (5, 3)])
def test_rejects_impossible_sizes(depth: int, max_packets: int) -> None:
    with pytest.raises(ValueError):
        JitterBuffer(depth, max_packets)


# -- properties ---------------------------------------------------------------------------------


@st.composite
def _jittered_stream(draw: st.DrawFn) -> tuple[int, int, list[int], list[list[int]]]:
    """A stream whose packets each arrive 0..depth frame times late (ties in any order).

    Returns (depth, first sequence, offsets, arrivals per frame tick as offsets from the first).
    """
    depth = draw(st.integers(0, 8))
    count = draw(st.integers(depth + 1, 60))
    first = draw(st.integers(0, 0xFFFF))  # anywhere, so some streams wrap
    delays = draw(st.lists(st.integers(0, depth), min_size=count, max_size=count))
    tiebreak = draw(st.permutations(range(count)))
    ticks: list[list[int]] = [[] for _ in range(count + depth)]
    for offset in sorted(range(count), key=lambda i: (i + delays[i], tiebreak[i])):
        ticks[offset + delays[offset]].append(offset)
    return depth, first, list(range(count)), ticks


@given(_jittered_stream())
def test_jitter_within_depth_plays_everything_once_in_order(
    stream: tuple[int, int, list[int], list[list[int]]],
) -> None:
    depth, first, offsets, ticks = stream
    buf = JitterBuffer(depth)
    kinds, played = [], []
    for arrivals in ticks + [[]] * (depth + 2):  # one pop per frame time, arrivals before it
        for off in arrivals:
            seq = (first + off) & 0xFFFF
            assert buf.push(seq, _payload(seq))
        res = buf.pop()
        kinds.append(res.kind)
        if res.kind is Pop.AUDIO:
            played.append(res.payload)
    assert played == [_payload((first + off) & 0xFFFF) for off in offsets]
    # Prefill, then one unbroken run of audio, then idle: never LOST, never a gap.
    start = kinds.index(Pop.AUDIO)
    assert all(k is Pop.IDLE for k in kinds[:start])
    assert kinds[start:start + len(offsets)] == [Pop.AUDIO] * len(offsets)
    assert all(k is Pop.IDLE for k in kinds[start + len(offsets):])
    assert dataclasses.asdict(buf.stats) == dict(
        received=len(offsets), duplicates=0, late=0, lost=0, overflow_dropped=0, resyncs=0
    )


@given(
    depth=st.integers(0, 6),
    first=st.integers(0, 0xFFFF),
    data=st.data(),
)
def test_arrival_order_within_depth_pushed_whole_plays_in_order(
    depth: int, first: int, data: st.DataObject
) -> None:
    # Arrival orders in which no packet is overtaken by one more than ``depth`` ahead of it.
    count = data.draw(st.integers(depth + 1, 60))
    delays = data.draw(st.lists(st.integers(0, depth), min_size=count, max_size=count))
    tiebreak = data.draw(st.lists(st.integers(0, 3), min_size=count, max_size=count))
    order = sorted(range(count), key=lambda i: (i + delays[i], tiebreak[i]))
    buf = JitterBuffer(depth, max_packets=max(50, count + 1))
    for off in order:
        seq = (first + off) & 0xFFFF
        assert buf.push(seq, _payload(seq))
    played = [buf.pop() for _ in range(count + 1)]
    assert [r.payload for r in played[:count]] == [_payload((first + i) & 0xFFFF) for i in range(count)]
    assert {r.kind for r in played[:count]} == {Pop.AUDIO}
    assert played[count].kind is Pop.IDLE
    assert buf.stats.lost == 0


_near = st.integers(-40, 40).map(lambda d: ("near", d))
_anywhere = st.integers(0, 0xFFFF).map(lambda s: ("seq", s))
_event = st.one_of(st.just(("pop", 0)), _near, _near, _anywhere)


@given(
    depth=st.integers(0, 5),
    extra=st.integers(1, 10),
    start=st.integers(0, 0xFFFF),
    events=st.lists(_event, max_size=200),
)
def test_every_received_packet_is_played_buffered_or_dropped(
    depth: int, extra: int, start: int, events: list[tuple[str, int]]
) -> None:
    buf = JitterBuffer(depth, depth + extra)
    pushes = accepted = audio = 0
    cursor = start  # a drifting stream with jitter, losses, duplicates and the odd restart
    for kind, value in events:
        if kind == "pop":
            res = buf.pop()
            audio += res.kind is Pop.AUDIO
        else:
            seq = (cursor + value) & 0xFFFF if kind == "near" else value
            cursor = seq if kind == "seq" else (cursor + 1) & 0xFFFF
            pushes += 1
            accepted += buf.push(seq, _payload(seq))
        s = buf.stats
        assert s.received == audio + buf.buffered + s.overflow_dropped
        assert s.received == accepted
        assert s.received + s.duplicates + s.late == pushes
        assert buf.buffered <= buf.max_packets
