"""The floor rules (pure): scripted tables for one box, simulated sites of several boxes, properties.

A site is simulated as one :class:`GroupFloor` per box. Claims travel between boxes through their wire
form (encode, decode) in whatever order a test chooses, with duplicates, loopback of a box's own
packets, and late packets of each sender's previous (ended) spurt; every box must end with the same
talkers, and those must be the best of the claims that were transmitted.
"""

from __future__ import annotations

import itertools
import random
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.control.floor import (
    CLAIM_BYTES,
    SPURT_MEMORY_MS,
    Claim,
    Denied,
    Event,
    FloorSettings,
    Granted,
    GroupFloor,
    Mode,
    Preempted,
    TalkersChanged,
    TotExpired,
    TotWarning,
)

HALF = FloorSettings()
CONF2 = FloorSettings(mode=Mode.CONFERENCE, max_talkers=2)
CONF3 = FloorSettings(mode=Mode.CONFERENCE, max_talkers=3)


def describe(events: list[Event]) -> str:
    """Events as a short line: ``granted 5; preempted 5 by 9 emergency; talkers 9,2``."""
    out: list[str] = []
    for e in events:
        if isinstance(e, Granted):
            out.append(f"granted {e.claim.ssrc}")
        elif isinstance(e, Denied):
            out.append(f"denied {e.ssrc} by {','.join(str(c.ssrc) for c in e.by)}"
                       + (" emergency" if e.emergency else ""))
        elif isinstance(e, Preempted):
            out.append(f"preempted {e.claim.ssrc} by {e.by.ssrc}" + (" emergency" if e.emergency else ""))
        elif isinstance(e, TotWarning):
            out.append(f"warning {e.claim.ssrc} {e.remaining_ms:g}")
        elif isinstance(e, TotExpired):
            out.append(f"expired {e.claim.ssrc}")
        else:
            assert isinstance(e, TalkersChanged)
            out.append("talkers " + (",".join(str(c.ssrc) for c in e.talkers) or "-"))
    return "; ".join(out)


def run(floor: GroupFloor, step: tuple[Any, ...]) -> list[Event]:
    """One scripted step against ``floor``.

    ``("press", t, ssrc, priority, emergency[, wall])``, ``("up", t, ssrc)``, ``("tick", t)``,
    ``("forget", t, ssrc)``, ``("hear", t, ssrc, priority, emergency, start, spurt[, "end"])``; a
    heard claim goes through its wire form.
    """
    kind, t, *args = step
    if kind == "press":
        return floor.request(args[0], args[1], args[2], t, *args[3:])
    if kind == "up":
        return floor.release(args[0], t)
    if kind == "tick":
        return floor.tick(t)
    if kind == "forget":
        return floor.forget(args[0], t)
    assert kind == "hear", step
    sent = Claim(*args[:5])
    claim, end = Claim.decode(sent.encode(end=args[5:] == ["end"]), sent.ssrc)
    return floor.heard(claim, t, end)


# (name, settings, [(step, expected events)])
SCRIPTS: list[tuple[str, FloorSettings, list[tuple[tuple[Any, ...], str]]]] = [
    ("a press on a free floor is granted", HALF, [
        (("press", 0, 5, 3, False), "granted 5; talkers 5"),
    ]),
    ("busy: an equal press is refused, even from a box whose clock is behind", HALF, [
        (("hear", 0, 9, 3, False, 5000, 0), "talkers 9"),
        (("press", 10, 5, 3, False, 1000), "denied 5 by 9"),
        (("press", 20, 5, 2, False, 1000), "denied 5 by 9"),
    ]),
    ("a higher priority breaks in; the stopped talker's packets in flight change nothing", HALF, [
        (("hear", 0, 9, 3, False, 5000, 0), "talkers 9"),
        (("press", 10, 5, 4, False, 1000), "granted 5; talkers 5"),
        (("hear", 15, 9, 3, False, 5000, 0), ""),
        (("up", 500, 5), "talkers -"),
        (("hear", 505, 9, 3, False, 5000, 0), ""),
    ]),
    ("simultaneous presses: the earlier start preempts the optimistic local talker", HALF, [
        (("press", 0, 5, 3, False, 1000), "granted 5; talkers 5"),
        (("hear", 3, 9, 3, False, 1001, 0), ""),
        (("hear", 4, 8, 3, False, 999, 0), "preempted 5 by 8; talkers 8"),
    ]),
    ("the same start: the lower SSRC wins", HALF, [
        (("press", 0, 5, 3, False, 1000), "granted 5; talkers 5"),
        (("hear", 3, 9, 3, False, 1000, 0), ""),
        (("hear", 4, 2, 3, False, 1000, 0), "preempted 5 by 2; talkers 2"),
    ]),
    ("an emergency preempts a talker of any priority", HALF, [
        (("press", 0, 5, 7, False), "granted 5; talkers 5"),
        (("hear", 40, 9, 0, True, 2000, 0), "preempted 5 by 9 emergency; talkers 9"),
        (("press", 50, 6, 7, False), "denied 6 by 9 emergency"),
    ]),
    ("a second emergency of equal priority waits its turn, whatever its clock says; a higher one "
     "breaks in", HALF, [
        (("hear", 0, 9, 3, True, 100, 0), "talkers 9"),
        (("press", 10, 5, 3, True, 50), "denied 5 by 9 emergency"),
        (("press", 20, 5, 4, True, 50), "granted 5; talkers 5"),
    ]),
    ("two local ports: an emergency press preempts the other", HALF, [
        (("press", 0, 5, 7, False), "granted 5; talkers 5"),
        (("press", 10, 6, 0, True), "granted 6; preempted 5 by 6 emergency; talkers 6"),
    ]),
    ("conference of 2: the third is stopped, a later equal press refused, a higher one breaks in",
     CONF2, [
        (("hear", 0, 1, 3, False, 100, 0), "talkers 1"),
        (("hear", 1, 2, 3, False, 101, 0), "talkers 1,2"),
        (("hear", 2, 3, 3, False, 102, 0), ""),
        (("press", 10, 5, 3, False), "denied 5 by 1,2"),
        (("press", 20, 6, 4, False), "granted 6; talkers 6,1"),
        (("hear", 30, 2, 3, False, 101, 0), ""),
    ]),
    ("conference of 3: an emergency takes the group alone; the others don't come back", CONF3, [
        (("hear", 0, 1, 3, False, 100, 0), "talkers 1"),
        (("press", 1, 5, 3, False, 101), "granted 5; talkers 1,5"),
        (("hear", 2, 3, 7, False, 102, 0), "talkers 3,1,5"),
        (("hear", 3, 9, 0, True, 103, 0), "preempted 5 by 9 emergency; talkers 9"),
        (("hear", 20, 1, 3, False, 100, 0), ""),
        (("hear", 30, 9, 0, True, 103, 0, "end"), "talkers -"),
        (("hear", 40, 1, 3, False, 100, 0), ""),
        (("press", 50, 5, 3, False), "granted 5; talkers 5"),
    ]),
    ("a silent remote is released after the claim timeout, and counts again if it resumes", HALF, [
        (("hear", 0, 9, 3, False, 100, 0), "talkers 9"),
        (("press", 10, 5, 3, False), "denied 5 by 9"),
        (("tick", 1000), ""),
        (("tick", 1001), "talkers -"),
        (("hear", 1100, 9, 3, False, 100, 0), "talkers 9"),
        (("tick", 2100), ""),
        (("tick", 2101), "talkers -"),
        (("press", 2110, 5, 3, False), "granted 5; talkers 5"),
        (("hear", 2120, 9, 3, False, 100, 0), "preempted 5 by 9; talkers 9"),
    ]),
    ("an ended spurt: late packets don't resurrect it, older spurts are ignored, a new one counts",
     HALF, [
        (("hear", 0, 9, 3, False, 100, 7), "talkers 9"),
        (("hear", 20, 9, 3, False, 100, 7, "end"), "talkers -"),
        (("hear", 25, 9, 3, False, 100, 7), ""),
        (("hear", 26, 9, 3, False, 100, 7, "end"), ""),
        (("hear", 27, 9, 7, True, 50, 6), ""),
        (("hear", 28, 9, 7, True, 50, 7 + 0x8000), ""),
        (("hear", 30, 9, 3, False, 200, 8), "talkers 9"),
    ]),
    ("the end packet alone still blocks the spurt's late packets", HALF, [
        (("hear", 0, 9, 3, False, 100, 7, "end"), ""),
        (("hear", 5, 9, 3, False, 100, 7), ""),
    ]),
    ("the spurt counter wraps", HALF, [
        (("hear", 0, 9, 3, False, 100, 0xFFFF), "talkers 9"),
        (("hear", 20, 9, 3, False, 100, 0xFFFF, "end"), "talkers -"),
        (("hear", 30, 9, 3, False, 200, 0), "talkers 9"),
        (("hear", 35, 9, 3, False, 100, 0xFFFF), ""),
    ]),
    ("a new spurt replaces a live one", HALF, [
        (("hear", 0, 9, 3, False, 100, 1), "talkers 9"),
        (("hear", 10, 8, 4, False, 105, 1), "talkers 8"),
        (("hear", 20, 9, 5, False, 110, 2), "talkers 9"),
    ]),
    ("a released local spurt: its own packets looped back are ignored", HALF, [
        (("press", 0, 5, 3, False, 100), "granted 5; talkers 5"),
        (("up", 20, 5), "talkers -"),
        (("hear", 25, 5, 3, False, 100, 0), ""),
        (("hear", 26, 5, 3, False, 100, 1), ""),
        (("up", 30, 5), ""),
    ]),
    ("a stopped remote that keeps sending for a whole claim timeout is ranked again", HALF, [
        (("hear", 0, 9, 3, False, 100, 0), "talkers 9"),
        (("hear", 10, 8, 5, False, 105, 0), "talkers 8"),
        (("hear", 20, 8, 5, False, 105, 0, "end"), "talkers -"),
        (("hear", 30, 9, 3, False, 100, 0), ""),
        (("hear", 1009, 9, 3, False, 100, 0), ""),
        (("hear", 1010, 9, 3, False, 100, 0), "talkers 9"),
    ]),
    ("... a stray late packet of a stopped claim restarts that count", HALF, [
        (("hear", 0, 9, 3, False, 100, 0), "talkers 9"),
        (("hear", 10, 8, 5, False, 105, 0), "talkers 8"),
        (("hear", 20, 8, 5, False, 105, 0, "end"), "talkers -"),
        (("hear", 1500, 9, 3, False, 100, 0), ""),
        (("hear", 2000, 9, 3, False, 100, 0), ""),
        (("hear", 2500, 9, 3, False, 100, 0), "talkers 9"),
    ]),
    ("a forgotten sender (restarted) starts over", HALF, [
        (("hear", 0, 9, 3, False, 100, 10, "end"), ""),
        (("hear", 10, 9, 3, False, 200, 3), ""),
        (("forget", 20, 9), ""),
        (("hear", 30, 9, 3, False, 200, 3), "talkers 9"),
        (("forget", 40, 9), "talkers -"),
    ]),
    ("an ended spurt is remembered for SPURT_MEMORY_MS after its last packet", HALF, [
        (("hear", 0, 9, 3, False, 100, 10, "end"), ""),
        (("hear", 5000, 9, 3, False, 100, 10), ""),
        (("tick", 5000 + SPURT_MEMORY_MS), ""),
        (("hear", 5001 + SPURT_MEMORY_MS, 9, 3, False, 200, 3), ""),
        (("tick", 5001 + SPURT_MEMORY_MS), ""),
        (("hear", 5002 + SPURT_MEMORY_MS, 9, 3, False, 200, 3), "talkers 9"),
    ]),
    ("time-out: warning 5 s before, then the talker is stopped", HALF, [
        (("press", 1000, 5, 3, False), "granted 5; talkers 5"),
        (("tick", 55_999), ""),
        (("tick", 56_000), "warning 5 5000"),
        (("tick", 56_020), ""),
        (("tick", 60_999), ""),
        (("tick", 61_000), "expired 5; talkers -"),
        (("tick", 61_020), ""),
    ]),
    ("time-out, configured", FloorSettings(tot_ms=10_000, tot_warning_ms=2_000), [
        (("press", 0, 5, 3, False), "granted 5; talkers 5"),
        (("tick", 8_010), "warning 5 1990"),
        (("tick", 10_000), "expired 5; talkers -"),
    ]),
    ("time-out: one tick past both times gives the expiry alone", HALF, [
        (("press", 0, 5, 3, False), "granted 5; talkers 5"),
        (("tick", 70_000), "expired 5; talkers -"),
    ]),
    ("time-out: an emergency call has its own, longer limit", HALF, [
        (("press", 0, 5, 0, True), "granted 5; talkers 5"),
        (("tick", 61_000), ""),
        (("tick", 295_000), "warning 5 5000"),
        (("tick", 300_000), "expired 5; talkers -"),
    ]),
    ("time-out and warning off", FloorSettings(tot_ms=0, tot_warning_ms=0, emergency_tot_ms=0), [
        (("press", 0, 5, 3, False), "granted 5; talkers 5"),
        (("press", 0, 6, 3, True), "granted 6; preempted 5 by 6 emergency; talkers 6"),
        (("tick", 10**9), ""),
    ]),
    ("time-out without a warning", FloorSettings(tot_warning_ms=0), [
        (("press", 0, 5, 3, False), "granted 5; talkers 5"),
        (("tick", 59_999), ""),
        (("tick", 60_000), "expired 5; talkers -"),
    ]),
    ("a local talker doesn't go silent: only remote claims time out", HALF, [
        (("press", 0, 5, 3, False), "granted 5; talkers 5"),
        (("tick", 5_000), ""),
    ]),
]


@pytest.mark.parametrize(("settings_", "script"), [(s, sc) for _, s, sc in SCRIPTS],
                         ids=[name for name, _, _ in SCRIPTS])
def test_script(settings_: FloorSettings, script: list[tuple[tuple[Any, ...], str]]) -> None:
    floor = GroupFloor(settings_)
    got = [(step, describe(run(floor, step))) for step, _ in script]
    assert got == script


def test_a_press_again_while_talking_is_a_new_spurt_and_the_counter_starts_at_the_seed() -> None:
    floor = GroupFloor(spurt_seed=0xFFFF)
    first = floor.request(5, 3, False, 0)[0]
    again = floor.request(5, 3, False, 10)[0]
    assert isinstance(first, Granted) and isinstance(again, Granted)
    assert (first.claim.spurt, again.claim.spurt) == (0xFFFF, 0)
    assert floor.talkers() == (again.claim,)
    assert floor.may_transmit(5) and not floor.may_transmit(6)


# -- a site of several boxes --------------------------------------------------------------------


class Press(NamedTuple):
    priority: int
    emergency: bool
    wall_ms: int


def best(claims: list[Claim], s: FloorSettings) -> tuple[Claim, ...]:
    """The talkers the rules name for a set of claims, computed independently of GroupFloor."""
    ranked = sorted(claims, key=lambda c: (not c.emergency, -c.priority, c.start_ms, c.ssrc))
    if not ranked:
        return ()
    return tuple(ranked[:1 if s.mode is Mode.HALF_DUPLEX or ranked[0].emergency else s.max_talkers])


def ssrc_of(box: int) -> int:
    # Not in box order, so the SSRC tie-break is not the box order.
    return [0xC0FFEE, 7, 0xFFFFFFFF, 0, 4242, 99][box]


def previous_spurts(boxes: list[GroupFloor], count: int) -> list[Claim]:
    """Each claimer's previous spurt: a top-priority emergency, ended and heard by every box."""
    old = []
    for i in range(count):
        granted = boxes[i].request(ssrc_of(i), 7, True, 0, wall_ms=1)[0]
        assert isinstance(granted, Granted)
        boxes[i].release(ssrc_of(i), 1)
        old.append(granted.claim)
    for box in boxes:
        for claim in old:
            deliver(box, claim, 2)
            deliver(box, claim, 2, end=True)
        assert box.talkers() == ()
    return old


def deliver(box: GroupFloor, claim: Claim, now_ms: float, end: bool = False) -> None:
    data = claim.encode(end)
    assert len(data) == CLAIM_BYTES
    got, got_end = Claim.decode(data, claim.ssrc)
    box.heard(got, now_ms, got_end)


def simultaneous(s: FloorSettings, presses: list[Press], orders: list[list[int]]) -> list[Claim]:
    """Every claimer presses before hearing anyone; box ``j`` then gets the packets in ``orders[j]``.

    The packets are each new claim, a duplicate of the first, and a late packet and end packet of each
    claimer's previous spurt; each box gets its own packets too (multicast loopback). Asserts that the
    boxes agree, and returns the claims.
    """
    n = len(presses)
    boxes = [GroupFloor(s) for _ in orders]
    old = previous_spurts(boxes, n)
    claims = []
    for i, p in enumerate(presses):
        granted = boxes[i].request(ssrc_of(i), p.priority, p.emergency, 10, wall_ms=p.wall_ms)[0]
        assert isinstance(granted, Granted)
        claims.append(granted.claim)
    packets = [(c, False) for c in claims] + [(claims[0], False)]
    packets += [(c, end) for c in old for end in (False, True)]
    for box, order in zip(boxes, orders, strict=True):
        for k, index in enumerate(order):
            claim, end = packets[index]
            deliver(box, claim, 11 + k, end)
    want = best(claims, s)
    for box in boxes:
        assert box.talkers() == want
    for i in range(n):
        assert boxes[i].may_transmit(ssrc_of(i)) is (claims[i] in want)
    return claims


def spread(count: int, boxes: int) -> list[list[list[int]]]:
    """Delivery plans for ``boxes`` boxes and the packets of ``count`` claimers: each box sees every
    order of the new claims across the plans (box j the (k + j)-th permutation in plan k), with the
    duplicate and the previous spurts' packets at the front, middle and back."""
    perms = list(itertools.permutations(range(count)))
    dup, old = count, list(range(count + 1, count + 1 + 2 * count))
    plans = []
    for k in range(len(perms)):
        plan = []
        for j in range(boxes):
            new = list(perms[(k + j) % len(perms)])
            plan.append(old[:2] + new[:1] + old[2:] + [dup] + new[1:] + [dup] + old[:1])
        plans.append(plan)
    return plans


@pytest.mark.parametrize("emergencies", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("s", [HALF, CONF2], ids=["half-duplex", "conference-2"])
def test_two_simultaneous_presses_at_every_priority(s: FloorSettings, emergencies: tuple[bool, bool]) -> None:
    for p0, p1 in itertools.product(range(8), repeat=2):
        for w0, w1 in ((1000, 1000), (1000, 1001), (1001, 1000)):
            presses = [Press(p0, emergencies[0], w0), Press(p1, emergencies[1], w1)]
            for plan in spread(2, 3):
                claims = simultaneous(s, presses, plan)
                if s is HALF or any(emergencies):
                    assert len(best(claims, s)) == 1


TRIPLES = [
    [Press(3, False, 1000), Press(3, False, 1000), Press(3, False, 1000)],
    [Press(3, False, 1002), Press(3, False, 1001), Press(3, False, 1000)],
    [Press(0, False, 1000), Press(7, False, 1005), Press(4, False, 990)],
    [Press(7, False, 1000), Press(0, True, 1005), Press(5, False, 990)],
    [Press(1, True, 1000), Press(0, True, 999), Press(7, False, 900)],
    [Press(2, False, 1000), Press(2, False, 1000), Press(6, False, 1000)],
]


@pytest.mark.parametrize("s", [HALF, CONF2, CONF3], ids=["half-duplex", "conference-2", "conference-3"])
@pytest.mark.parametrize("presses", TRIPLES)
def test_three_simultaneous_presses_in_every_order(s: FloorSettings, presses: list[Press]) -> None:
    for plan in spread(3, 4):
        simultaneous(s, presses, plan)


def test_four_presses_in_conference_of_three() -> None:
    presses = [Press(3, False, 1000), Press(4, False, 1003), Press(3, False, 999), Press(3, False, 1001)]
    for plan in spread(4, 5):
        claims = simultaneous(CONF3, presses, plan)
        assert [c.ssrc for c in best(claims, CONF3)] == [ssrc_of(1), ssrc_of(2), ssrc_of(0)]


PRESS = st.builds(Press, st.integers(0, 7), st.integers(0, 5).map(lambda x: x == 0),
                  st.integers(-3, 3))


@settings(max_examples=300, deadline=None)
@given(
    s=st.sampled_from([HALF, CONF2, CONF3]),
    presses=st.lists(PRESS, min_size=2, max_size=5),
    listeners=st.integers(0, 2),
    duplicates=st.integers(0, 2),
    rnd=st.randoms(use_true_random=False),
)
def test_boxes_agree_whatever_the_order(s: FloorSettings, presses: list[Press], listeners: int,
                                        duplicates: int, rnd: random.Random) -> None:
    """Presses at random moments (a box may already have heard others: refused or clamped), packets
    in random order, duplicated, looped back, old spurts' late packets, ticks: all boxes agree on the
    best of the claims that were transmitted. ``wall_ms`` is each box's clock offset from the site's."""
    n = len(presses)
    boxes = [GroupFloor(s) for _ in range(n + listeners)]
    old = previous_spurts(boxes, n)
    steps: list[tuple[str, int, int, bool]] = [("press", i, i, False) for i in range(n)]
    steps += [("new", i, j, False) for i in range(n) for j in range(len(boxes))] * (1 + duplicates)
    steps += [("old", i, j, end) for i in range(n) for j in range(len(boxes)) for end in (False, True)]
    steps += [("tick", 0, j, False) for j in range(len(boxes))] * 3
    rnd.shuffle(steps)
    sent: dict[int, Claim | None] = {}
    now = 10
    for kind, i, j, end in steps:
        now += 1
        if kind in ("press", "new") and i not in sent:
            # A packet can't come before its press: press now (a "press" step after it is a no-op).
            result = boxes[i].request(ssrc_of(i), presses[i].priority, presses[i].emergency, now,
                                      wall_ms=now + presses[i].wall_ms)[0]
            sent[i] = result.claim if isinstance(result, Granted) else None
            assert isinstance(result, Granted | Denied)
        claim = sent.get(i) if kind == "new" else old[i] if kind == "old" else None
        if claim is not None:
            deliver(boxes[j], claim, now, end)
        elif kind == "tick":
            boxes[j].tick(now)
    transmitted = [c for c in sent.values() if c is not None]
    want = best(transmitted, s)
    assert transmitted and all(box.talkers() == want for box in boxes)
    for i in range(n):
        assert boxes[i].may_transmit(ssrc_of(i)) is (sent[i] in want)


# -- the claim on the wire ----------------------------------------------------------------------

CLAIMS = st.builds(Claim, st.integers(0, 0xFFFFFFFF), st.integers(0, 7), st.booleans(),
                   st.integers(0, (1 << 48) - 1), st.integers(0, 0xFFFF))


@given(claim=CLAIMS, end=st.booleans())
def test_claim_round_trip(claim: Claim, end: bool) -> None:
    data = claim.encode(end)
    assert len(data) == CLAIM_BYTES
    assert Claim.decode(data, claim.ssrc) == (claim, end)


@pytest.mark.parametrize(("claim", "end", "data"), [
    (Claim(1, 0, False, 0, 0), False, "00 0000 0000 00000000"),
    (Claim(1, 5, True, 0x0102_0304_0506, 0xBEEF), True, "1d beef 0102 03040506"),
    (Claim(1, 7, False, (1 << 48) - 1, 0xFFFF), False, "07 ffff ffff ffffffff"),
])
def test_claim_layout(claim: Claim, end: bool, data: str) -> None:
    assert claim.encode(end) == bytes.fromhex(data)


def test_reserved_flag_bit_is_ignored() -> None:
    assert Claim.decode(bytes.fromhex("23 0001 0000 00000002"), 9) == (Claim(9, 3, False, 2, 1), False)


@pytest.mark.parametrize(("data", "message"), [
    ("", "must be 9 bytes, got 0"),
    ("00 0000 0000 000000", "must be 9 bytes, got 8"),
    ("00 0000 0000 00000000 00", "must be 9 bytes, got 10"),
    ("40 0000 0000 00000000", "version 1 is not supported"),
    ("c0 0000 0000 00000000", "version 3 is not supported"),
])
def test_malformed_claims_are_refused(data: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Claim.decode(bytes.fromhex(data), 1)


@given(data=st.binary(max_size=16), ssrc=st.integers(0, 0xFFFFFFFF))
def test_decode_returns_or_raises_value_error(data: bytes, ssrc: int) -> None:
    try:
        claim, end = Claim.decode(data, ssrc)
    except ValueError:
        return
    assert claim.encode(end)[1:] == data[1:]


@pytest.mark.parametrize(("fields", "message"), [
    ((-1, 0, False, 0, 0), "ssrc must be 0-4294967295"),
    ((1 << 32, 0, False, 0, 0), "ssrc"),
    ((1, 8, False, 0, 0), "priority must be 0-7, got 8"),
    ((1, -1, False, 0, 0), "priority"),
    ((1, 0, False, 1 << 48, 0), "start_ms"),
    ((1, 0, False, -1, 0), "start_ms"),
    ((1, 0, False, 0, 0x10000), "spurt must be 0-65535"),
])
def test_claims_out_of_range_are_refused(fields: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Claim(*fields)


def test_a_press_with_a_bad_priority_is_refused() -> None:
    with pytest.raises(ValueError, match="priority"):
        GroupFloor().request(5, 9, False, 0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_talkers": 0}, "max_talkers must be 1-16"),
    ({"max_talkers": 17}, "max_talkers"),
    ({"tot_ms": -1}, "tot_ms must be >= 0"),
    ({"claim_timeout_ms": -5}, "claim_timeout_ms"),
])
def test_settings_out_of_range_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FloorSettings(**kwargs)


def test_mode_names_are_the_config_words() -> None:
    assert Mode("half-duplex") is Mode.HALF_DUPLEX and Mode("conference") is Mode.CONFERENCE
