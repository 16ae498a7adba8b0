"""The adaptive jitter buffer (pure): scripted playout tables, long simulations and properties.

Tables are scripts on a 20 ms grid: the k-th pop happens at ``k * 20 ms`` (plus a phase), and packets
written before it arrive at the start of that slot. ``N`` pushes sequence number N, whose RTP timestamp
is its position in the stream (``N@F`` gives position F instead) so it is on time in slot N; ``*``
(before any ``@F``) sets the marker bit and a trailing ``!`` says the push must be refused. ``.`` pops,
``_`` pops saying the audio is in a pause (``quiet``). The expected playout has one token per pop:
the sequence number played, ``-`` for IDLE, ``x`` for EXPAND, ``lost`` / ``lost>N`` for LOST without /
with packet N handed over for FEC, and ``dN`` for a DROP of N (the script pops again at once, like
the caller does).
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.jitter import (
    RESYNC_JUMP,
    AdaptiveJitterBuffer,
    JitterStats,
    Pop,
    PopResult,
)

FRAME = 20.0
TS = 960  # RTP ticks per 20 ms at 48 kHz
_TOKEN = re.compile(r"(\d+)(\*?)(?:@(-?\d+))?(!?)")


def _token(res: PopResult) -> str:
    if res.kind is Pop.IDLE:
        return "-"
    if res.kind is Pop.EXPAND:
        return "x"
    if res.kind is Pop.LOST:
        assert res.payload == b""
        return f"lost>{res.next_payload.decode()}" if res.next_payload else "lost"
    assert res.payload == str(res.sequence).encode()
    return f"d{res.sequence}" if res.kind is Pop.DROP else str(res.sequence)


def play(buf: AdaptiveJitterBuffer, script: str, phase: float = 0.0, ts0: int = 0) -> str:
    """Run a script against ``buf``; return the playout tokens (push results are asserted)."""
    out: list[str] = []
    slot = 0
    first: int | None = None
    for step in script.split():
        if step in (".", "_"):
            now = slot * FRAME + phase
            while True:
                res = buf.pop(now, quiet=step == "_")
                out.append(_token(res))
                if res.kind is not Pop.DROP:
                    break
            slot += 1
            continue
        m = _TOKEN.fullmatch(step)
        assert m, step
        seq = int(m[1])
        first = seq if first is None else first
        pos = int(m[3]) if m[3] else ((seq - first + 0x8000) & 0xFFFF) - 0x8000
        ok = buf.push(seq, (ts0 + pos * TS) & 0xFFFFFFFF, bool(m[2]), str(seq).encode(), slot * FRAME)
        assert ok is not bool(m[4]), f"push {step}"
    return " ".join(out)


def _stats(buf: AdaptiveJitterBuffer) -> dict[str, int]:
    """The counters that are not zero."""
    return {k: v for k, v in dataclasses.asdict(buf.stats).items() if v}


def _buffer(floor: float = 40.0) -> AdaptiveJitterBuffer:
    # 40 ms of concealment before a stream counts as stopped keeps the tables short (two EXPANDs).
    return AdaptiveJitterBuffer(FRAME, floor, 200.0, max_conceal_ms=40.0)


TAIL = "x x -"  # what follows the last packet of a spurt: two frames of concealment, then stop

# (name, floor ms, script, expected playout, expected non-zero stats)
CASES: list[tuple[str, float, str, str, dict[str, Any]]] = [
    # -- starting: the delay of the first packet reaches the target (the floor here) minus half a frame
    ("floor 40: playout starts two frames after the first packet", 40,
     "0* . 1 . 2 . 3 . . . . . .", f"- - 0 1 2 3 {TAIL}",
     {"received": 4, "spurts": 1, "tail_concealed": 2}),
    ("floor 0: a packet arriving on a pop waits one frame (1/8 frame margin)", 0,
     "0* . 1 . 2 . . . . .", f"- 0 1 2 {TAIL}",
     {"received": 3, "spurts": 1, "tail_concealed": 2}),
    ("nothing before the start, however often it is asked", 40,
     ". . . 0* . 1 . 2 . . . . . .", f"- - - - - 0 1 2 {TAIL}",
     {"received": 3, "spurts": 1, "tail_concealed": 2}),
    # -- reordering within the window
    ("a packet overtaken by the next one is put back in order", 40,
     "0* . 1 . . 3 2 . 4 . 5 . . . . . .", f"- - 0 1 2 3 4 5 {TAIL}",
     {"received": 6, "spurts": 1, "tail_concealed": 2}),
    ("the first packet arriving after the second still plays first", 40,
     ". 1 . 0* 2 . 3 . 4 . . . . . . .", f"- - - 0 1 2 3 4 {TAIL}",
     {"received": 5, "spurts": 1, "tail_concealed": 2}),
    # -- loss: LOST hands over the next packet when it is here, for FEC
    ("one missing packet, the next one here", 40,
     "0* . 1 . 2 . . 4 . 5 . . . . . .", f"- - 0 1 2 lost>4 4 5 {TAIL}",
     {"received": 5, "lost": 1, "fec_eligible": 1, "spurts": 1, "tail_concealed": 2}),
    ("two missing: the first concealed, the second from the next packet's FEC", 40,
     "0* . 1 . 2 . . . 5 . 6 . . . . . .", f"- - 0 1 2 lost lost>5 5 6 {TAIL}",
     {"received": 5, "lost": 2, "fec_eligible": 1, "concealed": 1, "spurts": 1,
      "tail_concealed": 2}),
    # ... and, 60 ms late with no history yet, it raises the target at once: a frame is inserted.
    ("a packet arriving after its LOST turn is refused as late", 40,
     "0* . 1 . 2 . . 4 . 5 . 3! . . . . . .", f"- - 0 1 2 lost>4 x 4 5 {TAIL}",
     {"received": 5, "lost": 1, "late": 1, "fec_eligible": 1, "inserted": 1, "spurts": 1,
      "tail_concealed": 2}),
    # -- underrun: nothing here at all; conceal without consuming, then play what comes
    ("a late packet after an underrun is played, one frame later", 40,
     "0* . 1 . 2 . . . . 3 . 4 . . . .", f"- - 0 1 2 x 3 4 {TAIL}",
     {"received": 5, "concealed": 1, "spurts": 1, "tail_concealed": 2}),
    ("frames concealed during an underrun stand in for packets that never come", 40,
     "0* . 1 . 2 . . . . 4 . 5 . . . .", f"- - 0 1 2 x 4 5 {TAIL}",
     {"received": 5, "lost": 1, "concealed": 1, "spurts": 1, "tail_concealed": 2}),
    # -- duplicates
    ("duplicates while buffered and after being played are refused", 40,
     "0* 0! . 1 . 2 . 1! . 0! . . . .", f"- - 0 1 2 {TAIL}",
     {"received": 3, "duplicates": 3, "spurts": 1, "tail_concealed": 2}),
    # -- talk spurts: each starts at the target again, whatever came before
    ("a new talk spurt (marker, timestamp jump) while the last one's tail plays", 40,
     "0* . 1 . 2 . . . 3*@5 . 4@6 . 5@7 . . . . . .", f"- - 0 1 2 - - 3 4 5 {TAIL}",
     {"received": 6, "spurts": 2, "tail_concealed": 2}),
    ("a timestamp jump without the marker (DTX) is a new start too", 40,
     "0* . 1 . 2 . . . 3@5 . 4@6 . 5@7 . . . . . .", f"- - 0 1 2 - - 3 4 5 {TAIL}",
     {"received": 6, "spurts": 2, "tail_concealed": 2}),
    ("after a stop the next spurt waits for the target, silence in between is not loss", 40,
     "0* . 1 . . . . . . 2*@8 . 3@9 . 4@10 . . . . . .", f"- - 0 1 {TAIL} - - 2 3 4 {TAIL}",
     {"received": 5, "spurts": 2, "tail_concealed": 4}),
    ("packets lost at a spurt's end are counted when the next one starts", 40,
     "0* . 1 . 2 . . . . . . 5*@8 . 6@9 . 7@10 . . . . . .",
     f"- - 0 1 2 {TAIL} - - 5 6 7 {TAIL}",
     {"received": 6, "lost": 2, "spurts": 2, "tail_concealed": 4}),
    # -- 16-bit sequence wrap
    ("in order across the wrap", 40,
     "65534* . 65535 . 0 . 1 . . . . . .", f"- - 65534 65535 0 1 {TAIL}",
     {"received": 4, "spurts": 1, "tail_concealed": 2}),
    ("loss across the wrap", 40,
     "65534* . 65535 . . 1 . 2 . . . . . .", f"- - 65534 65535 lost>1 1 2 {TAIL}",
     {"received": 4, "lost": 1, "fec_eligible": 1, "spurts": 1, "tail_concealed": 2}),
    ("late across the wrap (raising the target: a frame inserted)", 40,
     "65534* . 65535 . . 1 . 2 . 0! . . . . . .", f"- - 65534 65535 lost>1 x 1 2 {TAIL}",
     {"received": 4, "lost": 1, "late": 1, "fec_eligible": 1, "inserted": 1, "spurts": 1,
      "tail_concealed": 2}),
    # -- a restarted sender: a marker out of the window, or two packets in a row out there
    ("restart with the marker bit", 40,
     "100* . 101 . 102 . . . . . 40000*@0 . 40001@1 . 40002@2 . . . . . .",
     f"- - 100 101 102 {TAIL} - 40000 40001 40002 {TAIL}",
     {"received": 6, "spurts": 2, "restarts": 1, "tail_concealed": 4}),
    ("restart without the marker: two packets in a row, buffered ones flushed", 40,
     "30000* . 30001 . 30002 30003 . 7@0! . 8@1 . 9@2 . . . . . .",
     f"- - 30000 30001 - 7 8 9 {TAIL}",
     {"received": 7, "spurts": 2, "restarts": 1, "flushed": 2, "tail_concealed": 2}),
    ("one packet out of the window is a stray", 40,
     "0* . 1 . 2 5000! . 3 . . . . . .", f"- - 0 1 2 3 {TAIL}",
     {"received": 4, "strays": 1, "spurts": 1, "tail_concealed": 2}),
    # -- following the target: in pauses, whole frames
    ("a faster path appears: the extra delay is dropped in a pause", 40,
     ". 0* . 1 . 2 3 . 4 _ 5 _ 6 . . . . . .", f"- - - 0 d1 2 3 4 5 6 {TAIL}",
     {"received": 7, "dropped": 1, "spurts": 1, "tail_concealed": 2}),
    ("... but not in speech while it is within a frame of the target", 40,
     ". 0* . 1 . 2 3 . 4 . 5 . 6 . . . . . . .", f"- - - 0 1 2 3 4 5 6 {TAIL}",
     {"received": 7, "spurts": 1, "tail_concealed": 2}),
    ("the target rises after a late packet: a frame is inserted in a pause", 40,
     "0* . 1 . 2 . . . 3 _ 4 _ 5 _ 6 . . . . .", f"- - 0 1 2 x 3 4 5 6 {TAIL}",
     {"received": 7, "inserted": 1, "spurts": 1, "tail_concealed": 2}),
]


@pytest.mark.parametrize(("floor", "script", "expected", "stats"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_playout(floor: float, script: str, expected: str, stats: dict[str, int]) -> None:
    buf = _buffer(floor)
    assert play(buf, script) == expected
    assert _stats(buf) == stats


@pytest.mark.parametrize("ts0", [0, 0xFFFFFFFF - TS, 0x7FFFFFFF])
def test_timestamps_wrapping_change_nothing(ts0: int) -> None:
    buf = _buffer()
    assert play(buf, "0* . 1 . 2 . . 4 . 5 . . . . . .", ts0=ts0) == f"- - 0 1 2 lost>4 4 5 {TAIL}"


def test_floor_zero_plays_as_soon_as_a_pop_comes_after_the_packet() -> None:
    # Pops 10 ms after each arrival: the first packet plays at the first pop, 10 ms after it came.
    assert play(_buffer(0), "0* . 1 . 2 . . . .", phase=10) == f"0 1 2 {TAIL}"


@pytest.mark.parametrize(("jump", "restarts"), [(RESYNC_JUMP, 0), (RESYNC_JUMP + 1, 1)])
def test_restart_threshold_ahead(jump: int, restarts: int) -> None:
    buf = _buffer()
    play(buf, f"0* . 1 . {1 + jump}*@50 .")
    assert buf.stats.restarts == restarts


def test_state_and_gauges_follow_the_stream() -> None:
    buf = _buffer()
    for seq in (0, 1):
        buf.push(seq, seq * TS, seq == 0, b"x", seq * FRAME)
    assert buf.pop(20.0).kind is Pop.IDLE
    assert (buf.playing, buf.buffered, buf.buffered_ms, buf.delay_ms) == (False, 2, 40.0, 0.0)
    buf.push(2, 2 * TS, False, b"x", 40.0)
    assert buf.pop(40.0).kind is Pop.AUDIO
    assert (buf.playing, buf.buffered) == (True, 2)
    assert (buf.target_ms, buf.delay_ms, buf.offset_ms) == (40.0, 40.0, 0.0)
    assert buf.jitter_ms == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [dict(frame_ms=0), dict(min_delay_ms=-1), dict(min_delay_ms=300), dict(quantile=0),
     dict(quantile=1.5), dict(history_ms=100), dict(clock_hz=0), dict(max_conceal_ms=-1)],
)
def test_rejects_impossible_settings(kwargs: dict[str, float]) -> None:
    args: dict[str, Any] = dict(frame_ms=20.0, min_delay_ms=0.0, max_delay_ms=200.0) | kwargs
    with pytest.raises(ValueError):
        AdaptiveJitterBuffer(**args)


# -- simulations --------------------------------------------------------------------------------


@dataclasses.dataclass
class Played:
    """One pop of a simulation."""

    at_ms: float
    kind: Pop
    index: int  # stream position of the frame (AUDIO, DROP, LOST), -1 otherwise
    quiet: bool
    target_ms: float


def simulate(
    buf: AdaptiveJitterBuffer,
    arrivals: list[tuple[float, int]],
    end_ms: float,
    *,
    frame_ms: float = FRAME,
    phase: float = 3.0,
    quiet: Callable[[float], bool] = lambda t: False,
    fec: bool = False,
    marker_at: frozenset[int] = frozenset({0}),
    first_seq: int = 0,
) -> list[Played]:
    """Push ``(arrival ms, stream position)`` packets and pop every frame until ``end_ms``.

    Position i has sequence number ``first_seq + i`` and the timestamp of ``i`` frames; the payload is
    the position, so what is played can be checked. ``quiet(t)`` says whether the audio at t is a pause.
    """
    ts_step = round(frame_ms * 48)
    arrivals = sorted(arrivals)
    out: list[Played] = []
    i = 0
    t = phase
    while t < end_ms:
        while i < len(arrivals) and arrivals[i][0] <= t:
            at, pos = arrivals[i]
            buf.push((first_seq + pos) & 0xFFFF, (pos * ts_step) & 0xFFFFFFFF, pos in marker_at,
                     str(pos).encode(), at, fec)
            i += 1
        q = quiet(t)
        while True:
            res = buf.pop(t, quiet=q)
            index = int(res.payload) if res.payload else -1
            if res.kind is Pop.LOST:
                index = (res.sequence - first_seq) & 0xFFFF
            out.append(Played(t, res.kind, index, q, buf.target_ms))
            if res.kind is not Pop.DROP:
                break
        t += frame_ms
    return out


def _speech(talk_s: float = 2.5, pause_s: float = 0.5) -> Callable[[float], bool]:
    """Talk ``talk_s``, pause ``pause_s``, over and over."""
    return lambda t: (t / 1000) % (talk_s + pause_s) >= talk_s


@pytest.mark.parametrize("ppm", [-200, 200])
def test_clock_drift_over_ten_minutes_stays_within_a_frame_of_target_and_never_starves(ppm: int) -> None:
    """The sender's clock runs ``ppm`` fast or slow for 10 minutes of continuous speech with short
    pauses: the delay stays within target ± one frame, adjustments happen in the pauses only, and no
    frame is ever missing."""
    period = FRAME * (1 - ppm * 1e-6)  # the sender's frame, seen on the receiver's clock
    frames = 30_000  # 10 minutes
    transit = 7.0
    buf = AdaptiveJitterBuffer(FRAME, 0.0, 200.0)
    pops = simulate(buf, [(k * period + transit, k) for k in range(frames)],
                    frames * period - 2 * FRAME, quiet=_speech())
    started = next(i for i, p in enumerate(pops) if p.kind is Pop.AUDIO)
    body = pops[started:]
    assert {p.kind for p in body} <= {Pop.AUDIO, Pop.DROP, Pop.EXPAND}
    for p in body:
        if p.kind is Pop.AUDIO:
            added = p.at_ms - (p.index * period + transit)
            assert abs(added - p.target_ms) <= FRAME, (p, added)
        else:
            assert p.quiet, p  # drops and inserts only in pauses
    played = [p.index for p in body if p.kind in (Pop.AUDIO, Pop.DROP)]
    assert played == list(range(played[0], played[0] + len(played)))
    adjust = buf.stats.dropped if ppm > 0 else buf.stats.inserted
    # 200 ppm of 10 minutes is 120 ms: six frames, give or take the band's hysteresis.
    assert 5 <= adjust <= 7, buf.stats
    assert buf.stats.lost == buf.stats.concealed == 0


def _delay_after(pops: list[Played], arrivals: dict[int, float], from_ms: float) -> list[float]:
    return [p.at_ms - arrivals[p.index] - p.target_ms for p in pops
            if p.kind is Pop.AUDIO and p.at_ms >= from_ms]


@pytest.mark.parametrize("pauses", [True, False])
@pytest.mark.parametrize("backlog", [False, True])
def test_after_a_two_second_outage_the_delay_is_back_at_target_within_three_seconds(
    backlog: bool, pauses: bool,
) -> None:
    """5 s of traffic, a 2 s outage (packets lost, or held and then released at once), then traffic
    again: within 3 s the delay is within 10 ms of the target and stays there."""
    transit = 5.0
    arrivals: dict[int, float] = {}
    for k in range(600):  # 12 s
        sent = k * FRAME
        if 5000 <= sent < 7000:
            if not backlog:
                continue
            arrivals[k] = 7000 + transit + (sent - 5000) / 1000  # a queue drained in 2 ms
        else:
            arrivals[k] = sent + transit
    buf = AdaptiveJitterBuffer(FRAME, 20.0, 200.0)
    before = buf
    pops = simulate(buf, [(a, k) for k, a in arrivals.items()], 12000,
                    quiet=_speech() if pauses else (lambda t: False))
    target_before = next(p.target_ms for p in reversed(pops) if p.at_ms < 5000)
    settled = _delay_after(pops, arrivals, 7000 + 3000)
    assert settled and all(abs(d) <= 10 for d in settled), (max(settled), min(settled))
    assert pops[-1].target_ms == pytest.approx(target_before)  # the outage did not raise the target
    assert before.stats.late == 0
    if backlog:
        assert buf.stats.flushed > 0  # what was older than the ceiling was not worth playing
        assert buf.stats.lost == 0
    else:
        assert buf.stats.lost == 100


def test_a_delay_spike_mid_stream_is_played_late_then_drained() -> None:
    """150 ms of packets held up and released together: nothing is lost, the buffer expands while it
    waits (up to max_conceal_ms) and drains the extra delay again within two seconds."""
    transit = 5.0
    arrivals = {k: k * FRAME + transit for k in range(300)}
    for k in range(100, 108):  # 100..107 held until 108's arrival
        arrivals[k] = arrivals[108]
    buf = AdaptiveJitterBuffer(FRAME, 20.0, 200.0, max_conceal_ms=200.0)
    pops = simulate(buf, [(a, k) for k, a in arrivals.items()], 6500)
    assert buf.stats.lost == 0 and buf.stats.dropped > 0
    played = [p.index for p in pops if p.kind in (Pop.AUDIO, Pop.DROP)]
    assert played == list(range(300))
    assert all(abs(d) <= 10 for d in _delay_after(pops, arrivals, 108 * FRAME + 2000))


@pytest.mark.parametrize("jitter_ms", [1.0, 3.0, 6.0])
def test_a_delay_at_the_edge_of_the_band_does_not_step_back_and_forth(jitter_ms: float) -> None:
    """Arrivals wavering by a few ms, all of it a pause (steps allowed anywhere), at every pop phase:
    the first step puts the delay at the band's other edge, and the wavering must not take it back
    (with the same half frame both ways it did: 4-5 steps in these 10 s at the worst phases)."""
    for phase in [p / 2 for p in range(40)]:
        rng = random.Random(7)
        buf = AdaptiveJitterBuffer(FRAME, 0.0, 200.0)
        arrivals = [(k * FRAME + rng.uniform(0, jitter_ms), k) for k in range(500)]
        simulate(buf, arrivals, 500 * FRAME - 2 * FRAME, phase=phase, quiet=lambda t: True)
        assert buf.stats.dropped + buf.stats.inserted <= 1, (phase, _stats(buf))


def test_target_follows_jitter_up_and_back_down() -> None:
    rng = random.Random(5)
    arrivals = []
    for k in range(2000):  # 40 s: clean, 10 s of 0-40 ms jitter, clean
        jitter = rng.uniform(0, 40) if 500 <= k < 1000 else 0.0
        arrivals.append((k * FRAME + 5 + jitter, k))
    buf = AdaptiveJitterBuffer(FRAME, 0.0, 200.0)
    pops = simulate(buf, arrivals, 2000 * FRAME)

    def target_at(ms: float) -> float:
        return next(p.target_ms for p in pops if p.at_ms >= ms)

    assert target_at(9000) == pytest.approx(12.5)  # 5/8 frame on a clean network
    assert 45 <= target_at(12000) <= 55  # the 40 ms of jitter and the 5/8 frame
    assert target_at(29000) > 40  # still remembered 9 s after it stopped
    assert target_at(31000) == pytest.approx(12.5)  # forgotten after 10 s
    # While the jitter lasted hardly anything was late; afterwards the extra delay was drained.
    assert buf.stats.concealed <= 10, buf.stats
    delays = [p.at_ms - arrivals[p.index][0] for p in pops if p.kind is Pop.AUDIO and p.at_ms > 34000]
    assert min(delays) >= 12.5 - FRAME / 2 and max(delays) <= 12.5 + FRAME / 2


def test_fec_senders_get_a_frame_of_look_ahead_once_losses_happen() -> None:
    rng = random.Random(2)
    arrivals = [(k * FRAME + 5 + rng.uniform(0, 10), k) for k in range(1000) if rng.random() > 0.1]
    with_fec = AdaptiveJitterBuffer(FRAME, 0.0, 200.0)
    without = AdaptiveJitterBuffer(FRAME, 0.0, 200.0)
    simulate(with_fec, arrivals, 20000, fec=True)
    simulate(without, arrivals, 20000, fec=False)
    assert with_fec.target_ms == pytest.approx(without.target_ms + FRAME)
    assert with_fec.stats.lost == without.stats.lost
    # With the look-ahead nearly every lost frame has its successor at hand.
    assert with_fec.stats.fec_eligible >= 0.8 * with_fec.stats.lost
    assert without.stats.fec_eligible < 0.5 * without.stats.lost


def test_a_pre_roll_burst_at_a_spurt_start_is_played_whole_at_its_own_offset() -> None:
    """A hands-free sender opens its gate and sends 200 ms of pre-roll at once: nothing of it is
    thrown away, and the spurt keeps the pre-roll as extra delay (no drops in speech)."""
    transit = 5.0
    arrivals = [(k * FRAME + transit, k) for k in range(0, 50)]  # an earlier spurt
    start = 100  # the next spurt's first frame, sent 200 ms late as pre-roll
    arrivals += [((start + 10) * FRAME + transit, k) for k in range(start, start + 10)]
    arrivals += [(k * FRAME + transit, k) for k in range(start + 10, start + 100)]
    buf = AdaptiveJitterBuffer(FRAME, 40.0, 200.0)
    pops = simulate(buf, arrivals, 4600, marker_at=frozenset({0, start}))
    played = [p for p in pops if p.kind is Pop.AUDIO and p.index >= start]
    assert [p.index for p in played] == list(range(start, start + 100))
    for p in played:
        assert 200 + 40 - FRAME / 2 <= p.at_ms - (p.index * FRAME + transit) < 200 + 40 + FRAME / 2
    assert buf.stats.dropped == buf.stats.flushed == 0


def test_report_gives_loss_fraction_since_the_last_read_and_rfc3550_jitter() -> None:
    rng = random.Random(9)
    buf = AdaptiveJitterBuffer(FRAME, 60.0, 200.0)
    arrivals = [(k * FRAME + 5 + rng.uniform(0, 30), k) for k in range(500) if k % 10 != 3]
    simulate(buf, arrivals[:200], 4500)
    first = buf.report()
    assert first.frames > 200 and first.lost == first.frames // 10
    assert first.loss_fraction == pytest.approx(0.1, abs=0.01)
    # Uniform 0-30 ms jitter: the mean |difference| of two such delays is 10 ms.
    assert 7 <= first.jitter_ms <= 13
    assert first.target_ms == buf.target_ms and first.delay_ms == buf.delay_ms
    empty = buf.report()
    assert (empty.frames, empty.lost, empty.loss_fraction) == (0, 0, 0.0)


# -- properties ---------------------------------------------------------------------------------


@st.composite
def _network(draw: st.DrawFn) -> tuple[float, float, list[tuple[float, int]], int, frozenset[int]]:
    """A stream through a network with jitter, loss, duplication and reordering.

    Returns (frame ms, floor ms, arrivals, first sequence number, positions pushed twice).
    """
    frame = draw(st.sampled_from([10.0, 20.0]))
    floor = draw(st.sampled_from([0.0, 20.0, 40.0, 80.0]))
    count = draw(st.integers(1, 150))
    jitter = draw(st.floats(0, 120))
    loss = draw(st.sampled_from([0.0, 0.05, 0.3]))
    seed = draw(st.integers(0, 2**32))
    first = draw(st.integers(0, 0xFFFF))
    rng = random.Random(seed)
    arrivals = []
    twice = set()
    for k in range(count):
        if rng.random() < loss:
            continue
        arrivals.append((k * frame + 3 + rng.uniform(0, jitter), k))
        if rng.random() < 0.05:
            twice.add(k)
            arrivals.append((k * frame + 3 + rng.uniform(0, jitter), k))
    return frame, floor, arrivals, first, frozenset(twice)


@settings(deadline=None)
@given(_network(), st.sampled_from([None, 1.0, 0.3]))
def test_every_frame_is_played_at_most_once_and_in_order(
    net: tuple[float, float, list[tuple[float, int]], int, frozenset[int]], talk_s: float | None,
) -> None:
    frame, floor, arrivals, first, twice = net
    buf = AdaptiveJitterBuffer(frame, floor, 200.0)
    quiet = (lambda t: False) if talk_s is None else _speech(talk_s, 0.2)
    end = max((a for a, _ in arrivals), default=0) + 500
    pops = simulate(buf, arrivals, end, frame_ms=frame, quiet=quiet, first_seq=first)
    handled = [p.index for p in pops if p.kind in (Pop.AUDIO, Pop.DROP, Pop.LOST)]
    assert handled == sorted(set(handled)), "a frame twice, or out of order"
    s = buf.stats
    consumed = sum(p.kind in (Pop.AUDIO, Pop.DROP) for p in pops)
    assert s.received == consumed + s.flushed + buf.buffered
    assert s.received + s.duplicates + s.late + s.strays == len(arrivals)
    assert s.duplicates >= 0 and s.duplicates <= len(twice)
    assert s.restarts == 0


@settings(deadline=None)
@given(
    frame=st.sampled_from([10.0, 20.0]),
    floor=st.sampled_from([0.0, 10.0, 20.0, 40.0, 100.0]),
    phase=st.floats(0, 1),
    transit=st.floats(0, 80),
    count=st.integers(5, 120),
)
def test_with_no_jitter_the_buffer_adds_the_floor_give_or_take_half_a_frame(
    frame: float, floor: float, phase: float, transit: float, count: int,
) -> None:
    """Below 5/8 of a frame the target is 5/8 of a frame (the start needs 1/8 of a frame of margin)."""
    buf = AdaptiveJitterBuffer(frame, floor, 200.0)
    arrivals = {k: k * frame + transit for k in range(count)}
    pops = simulate(buf, [(a, k) for k, a in arrivals.items()], count * frame + transit + 300,
                    frame_ms=frame, phase=phase * frame)
    target = max(floor, 5 * frame / 8)
    audio = [p for p in pops if p.kind is Pop.AUDIO]
    assert [p.index for p in audio] == list(range(count))
    for p in audio:
        assert target - frame / 2 <= p.at_ms - arrivals[p.index] < target + frame / 2
        assert abs(p.at_ms - arrivals[p.index] - floor) <= frame or floor < 5 * frame / 8
    assert buf.stats == JitterStats(received=count, spurts=1, tail_concealed=buf.stats.tail_concealed)


@settings(deadline=None)
@given(
    frame=st.sampled_from([10.0, 20.0]),
    floor=st.sampled_from([40.0, 80.0, 120.0]),
    seed=st.integers(0, 2**32),
    count=st.integers(2, 150),
)
def test_reordering_within_the_window_is_put_back_in_order(
    frame: float, floor: float, seed: int, count: int,
) -> None:
    """Delays of up to floor − one frame: every packet is played, in order, none missing."""
    rng = random.Random(seed)
    arrivals = [(k * frame + rng.uniform(0, floor - frame), k) for k in range(count)]
    buf = AdaptiveJitterBuffer(frame, floor, 200.0)
    pops = simulate(buf, arrivals, count * frame + floor + 300, frame_ms=frame)
    consumed = [p.index for p in pops if p.kind in (Pop.AUDIO, Pop.DROP)]
    assert consumed == list(range(count))
    assert buf.stats.lost == buf.stats.concealed == buf.stats.late == 0
