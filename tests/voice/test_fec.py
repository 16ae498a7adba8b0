"""Adaptive FEC policy: tables of listener reports over time -> encoder settings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.voice.fec import CLEAN_HOLD_S, MAX_HINT_PCT, MIN_HINT_PCT, FecPolicy, Protection


def _run(reports: list[tuple[float, float | None]]) -> list[Protection]:
    policy = FecPolicy()
    return [policy.update(loss, t) for t, loss in reports]


def test_clean_network_never_turns_fec_on() -> None:
    out = _run([(t, 0.0) for t in range(60)])
    assert all(p == Protection(False, 0) for p in out)


def test_no_reports_keep_the_setting() -> None:
    assert _run([(0, None), (1, None)]) == [Protection(False, 0)] * 2
    assert _run([(0, 0.1), (1, None), (50, None)])[-1].fec


@pytest.mark.parametrize(("loss", "hint"), [
    (0.01, MIN_HINT_PCT), (0.05, MIN_HINT_PCT), (0.10, 15), (0.20, 25), (0.5, MAX_HINT_PCT),
])
def test_loss_turns_fec_on_with_a_hint_above_it(loss: float, hint: int) -> None:
    assert _run([(0, 0.0), (1, loss)])[-1] == Protection(True, hint)


def test_off_only_after_a_clean_hold_and_not_on_a_burst_gap() -> None:
    reports: list[tuple[float, float | None]] = [(0, 0.1)]
    reports += [(t, 0.0) for t in range(1, 6)]  # a gap between bursts
    reports += [(6, 0.1)]
    reports += [(7 + t, 0.0) for t in range(int(CLEAN_HOLD_S) + 2)]
    out = _run(reports)
    assert all(p.fec for p in out[:7 + int(CLEAN_HOLD_S)])
    assert out[-1] == Protection(False, 0)


def test_hint_rises_at_once_and_decays_slowly() -> None:
    out = _run([(0, 0.2), (1, 0.02), (2, 0.02), (20, 0.02)])
    assert out[0].expected_loss_pct == 25
    assert out[1].expected_loss_pct == 24 and out[2].expected_loss_pct == 23
    assert out[3].expected_loss_pct == MIN_HINT_PCT


@given(st.lists(st.one_of(st.none(), st.floats(0, 1)), max_size=200))
def test_hint_always_in_range(losses: list[float | None]) -> None:
    policy = FecPolicy()
    for t, loss in enumerate(losses):
        p = policy.update(loss, float(t))
        if p.fec:
            assert MIN_HINT_PCT <= p.expected_loss_pct <= MAX_HINT_PCT
        else:
            assert p.expected_loss_pct == 0
