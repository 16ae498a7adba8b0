"""Jittered exponential backoff (pure: the randomness is injected)."""

from __future__ import annotations

import random

import pytest

from gateway.backoff import Backoff


def test_backoff_doubles_its_ceiling_up_to_the_max_with_jitter() -> None:
    b = Backoff(1.0, 30.0, random.Random(7))
    delays = [b.next() for _ in range(8)]
    ceilings = [2, 4, 8, 16, 30, 30, 30, 30]
    assert all(1.0 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert 1.0 <= b.next() <= 2.0


def test_backoff_with_equal_bounds_is_constant() -> None:
    b = Backoff(0.5, 0.5, random.Random(0))
    assert [b.next() for _ in range(3)] == [0.5, 0.5, 0.5]


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)
