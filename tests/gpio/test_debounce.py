"""The pure debouncer: tables of raw edges in, stable changes out, and properties over any edges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.gpio.debounce import Change, Debouncer

Edges = list[tuple[float, bool]]


def run_with_timer(debounce_ms: float, edges: Edges, until_ms: float, initial: bool = False) -> Edges:
    """Drive a Debouncer the way the panel does: feed each edge, poll when it says a level is due."""
    d = Debouncer(debounce_ms, initial)
    out: list[Change] = []
    for t, level in edges:
        while (due := d.due_ms) is not None and due < t:
            change = d.poll(due)
            assert change is not None
            out.append(change)
        if (change := d.feed(level, t)) is not None:
            out.append(change)
    while (due := d.due_ms) is not None and due <= until_ms:
        change = d.poll(due)
        assert change is not None
        out.append(change)
    return [(c.at_ms, c.level) for c in out]


def run_feed_only(debounce_ms: float, edges: Edges, until_ms: float, initial: bool = False) -> Edges:
    """A caller that never polls between edges: feed alone must lose nothing."""
    d = Debouncer(debounce_ms, initial)
    out = [d.feed(level, t) for t, level in edges]
    out.append(d.poll(until_ms))
    return [(c.at_ms, c.level) for c in out if c is not None]


T, F = True, False

TABLE: list[tuple[str, float, Edges, float, Edges]] = [
    # name, debounce_ms, raw edges (t, level), run until, expected stable changes (at, level)
    ("clean press", 30, [(0, T)], 100, [(30, T)]),
    ("clean press and release", 30, [(0, T), (100, F)], 200, [(30, T), (130, F)]),
    ("pulse shorter than debounce", 30, [(0, T), (29, F)], 200, []),
    ("held exactly debounce counts", 30, [(0, T), (30, F)], 200, [(30, T), (60, F)]),
    ("not yet due at the end", 30, [(0, T)], 29, []),
    ("bouncy press", 30, [(0, T), (2, F), (3, T), (5, F), (6, T)], 100, [(36, T)]),
    ("bouncy release", 30, [(0, T), (100, F), (101, T), (103, F), (104, T), (107, F)], 300,
     [(30, T), (137, F)]),
    ("glitch while held", 30, [(0, T), (50, F), (51, T)], 200, [(30, T)]),
    ("repeated level keeps its start", 30, [(0, T), (10, T)], 100, [(30, T)]),
    ("back to stable cancels", 30, [(0, T), (10, F), (20, F)], 100, []),
    ("debounce 0 passes everything", 0, [(0, T), (1, F), (1, T)], 10, [(0, T), (1, F), (1, T)]),
    ("fractional ms", 0.5, [(0.25, T), (0.5, F), (0.75, T)], 2, [(1.25, T)]),
]


@pytest.mark.parametrize(("debounce_ms", "edges", "until_ms", "expected"),
                         [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_table(debounce_ms: float, edges: Edges, until_ms: float, expected: Edges) -> None:
    assert run_with_timer(debounce_ms, edges, until_ms) == expected
    assert run_feed_only(debounce_ms, edges, until_ms) == expected


def test_initial_pressed_reports_release() -> None:
    assert run_with_timer(30, [(0, F)], 100, initial=True) == [(30, F)]


def test_state_at_does_not_commit() -> None:
    d = Debouncer(30)
    assert d.feed(True, 0) is None
    assert (d.state_at(29.9), d.state_at(30)) == (False, True)
    assert (d.stable, d.due_ms) == (False, 30), "state_at only looks"
    assert d.poll(29.9) is None
    assert d.poll(30) == Change(True, 30)
    assert (d.stable, d.due_ms) == (True, None)


def test_late_feed_commits_matured_level_first() -> None:
    d = Debouncer(30)
    d.feed(True, 0)
    assert d.feed(False, 100) == Change(True, 30)
    assert d.stable is True
    assert d.due_ms == 130


def test_negative_debounce_is_refused() -> None:
    with pytest.raises(ValueError, match="debounce_ms"):
        Debouncer(-1)


# ------------------------------------------------------------------------------------------------
# Properties


@st.composite
def scripts(draw: st.DrawFn) -> tuple[int, bool, Edges, float]:
    """A debounce time, an initial level, raw edges at non-decreasing times (levels may repeat)."""
    debounce = draw(st.integers(0, 50))
    initial = draw(st.booleans())
    steps = draw(st.lists(st.tuples(st.integers(0, 80), st.booleans()), max_size=40))
    t = 0
    edges: Edges = []
    for dt, level in steps:
        t += dt
        edges.append((t, level))
    until = t + draw(st.integers(0, 80))
    return debounce, initial, edges, until


def runs(initial: bool, edges: Edges, until_ms: float) -> list[tuple[float, float, bool]]:
    """Raw levels as (start, end, level) runs, repeated levels merged, the first from time -inf."""
    out: list[tuple[float, float, bool]] = []
    start, level = float("-inf"), initial
    for t, new in edges:
        if new != level:
            out.append((start, t, level))
            start, level = t, new
    out.append((start, until_ms, level))
    return out


@given(scripts())
def test_changes_alternate(script: tuple[int, bool, Edges, float]) -> None:
    debounce, initial, edges, until = script
    changes = run_with_timer(debounce, edges, until, initial)
    levels = [level for _, level in changes]
    assert levels == [(not initial) if i % 2 == 0 else initial for i in range(len(levels))]
    assert [at for at, _ in changes] == sorted(at for at, _ in changes)


@given(scripts())
def test_short_pulses_never_count(script: tuple[int, bool, Edges, float]) -> None:
    debounce, initial, edges, until = script
    held = {(start + debounce, level) for start, end, level in runs(initial, edges, until)
            if end - start >= debounce}
    for change in run_with_timer(debounce, edges, until, initial):
        assert change in held, "every change comes from a raw level that held for debounce_ms"


@given(scripts())
def test_levels_held_long_enough_always_count(script: tuple[int, bool, Edges, float]) -> None:
    debounce, initial, edges, until = script
    changes = run_with_timer(debounce, edges, until, initial)

    def stable_at(t: float) -> bool:
        level = initial
        for at, new in changes:
            if at <= t:
                level = new
        return level

    for start, end, level in runs(initial, edges, until):
        if end - start > debounce and start != float("-inf"):
            assert stable_at(start + debounce) == level


@given(scripts())
def test_feed_alone_matches_timer_driven(script: tuple[int, bool, Edges, float]) -> None:
    debounce, initial, edges, until = script
    assert run_feed_only(debounce, edges, until, initial) == run_with_timer(
        debounce, edges, until, initial
    )
