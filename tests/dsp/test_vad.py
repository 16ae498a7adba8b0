"""The voice detector's decision rules (tables over likelihood sequences) and the pre-roll line."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.dsp.vad import PreRoll, VoiceActivityDetector


def _run(llrs: list[float], **kw: float) -> list[int]:
    vad = VoiceActivityDetector(smoothing=0.0, **kw)  # type: ignore[arg-type]
    out: list[int] = []
    for i in range(0, len(llrs), 2):
        out += [int(d) for d in vad.update(llrs[i: i + 2])]
    return out


@pytest.mark.parametrize(
    ("llrs", "expected"),
    [
        # Noise stays shut.
        ([0.0] * 8, [0] * 8),
        # One loud hop alone is a click, not speech: onset needs two in a row.
        ([0, 0, 5, 0, 0, 0, 0, 0], [0] * 8),
        # Two hops open it; it stays open down to the release level, then closes.
        ([0, 0, 1, 1, 0.3, 0.3, 0.1, 0.0], [0, 0, 0, 1, 1, 1, 0, 0]),
        # Falling below the threshold but above the release keeps it open (hysteresis).
        ([1, 1, 0.25, 0.25, 0.25, 0.25, 0, 0], [0, 1, 1, 1, 1, 1, 0, 0]),
    ],
)
def test_decision_table(llrs: list[float], expected: list[int]) -> None:
    assert _run(llrs, threshold=0.45, release=0.2, hangover_ms=0) == expected


def test_hangover_holds_after_release() -> None:
    out = _run([1, 1, 0, 0, 0, 0, 0, 0], threshold=0.45, release=0.2, hangover_ms=30)
    assert out == [0, 1, 1, 1, 1, 0, 0, 0]


def test_smoothing_ignores_a_single_spike() -> None:
    vad = VoiceActivityDetector(threshold=0.45, smoothing=0.5)
    decisions = vad.update([0.0, 0.8]) + vad.update([0.0, 0.0])
    assert decisions == [False] * 4


def test_preroll_delays_and_drains_in_order() -> None:
    line = PreRoll(5)
    assert len(line.push(np.arange(3, dtype=np.int16))) == 0
    out = line.push(np.arange(3, 7, dtype=np.int16))
    assert out.tolist() == [0, 1]
    assert line.drain().tolist() == [2, 3, 4, 5, 6]
    assert len(line) == 0


@given(st.lists(st.integers(0, 700), max_size=30), st.integers(1, 3200))
def test_preroll_loses_nothing(chunks: list[int], capacity: int) -> None:
    line = PreRoll(capacity)
    total = sum(chunks)
    data = (np.arange(total) % 30000).astype(np.int16)
    out, pos = [], 0
    for n in chunks:
        out.append(line.push(data[pos: pos + n]))
        pos += n
        assert len(line) <= capacity
    out.append(line.drain())
    assert np.array_equal(np.concatenate(out) if out else data[:0], data)


def _gated(levels: list[float], snrs: list[float], **kw: float) -> list[int]:
    """Decisions for hops that all look like speech by likelihood, at the given levels and SNRs."""
    kw.setdefault("steady_db", 0.0)  # each gate on its own
    vad = VoiceActivityDetector(threshold=0.45, release=0.2, hangover_ms=0, smoothing=0.0, **kw)  # type: ignore[arg-type]
    out: list[int] = []
    for i in range(0, len(levels), 2):
        out += [int(d) for d in vad.update([5.0, 5.0], levels[i: i + 2], snrs[i: i + 2])]
    return out


def test_range_gate_drops_what_is_far_below_the_talker() -> None:
    """After a talker at 40 dB, sound at 0 dB (40 below: an echo, a word's decay) is not speech,
    while sound at 15 dB (25 below) is."""
    loud = [40.0] * 4
    assert _gated(loud + [0.0] * 4, [20.0] * 8, range_db=33.0) == [0, 1, 1, 1, 0, 0, 0, 0]
    assert _gated(loud + [15.0] * 4, [20.0] * 8, range_db=33.0) == [0, 1, 1, 1, 1, 1, 1, 1]


def test_range_gate_follows_a_quieter_talker_in_time() -> None:
    """The remembered peak sinks: 40 dB below a talker heard 10 s ago is speech again."""
    vad = VoiceActivityDetector(threshold=0.45, release=0.2, hangover_ms=0, smoothing=0.0, range_db=33.0,
                                steady_db=0.0)
    vad.update([5.0, 5.0], [40.0, 40.0], [20.0, 20.0])
    for _ in range(500):  # 10 s of silence
        vad.update([0.0, 0.0], [-30.0, -30.0], [-20.0, -20.0])
    assert vad.update([5.0, 5.0], [0.0, 0.0], [20.0, 20.0]) == [False, True]


def test_snr_gate_needs_the_sound_to_stand_out_of_the_noise() -> None:
    assert _gated([10.0] * 6, [-10.0] * 6, snr_min_db=-5.0) == [0] * 6
    assert _gated([10.0] * 6, [0.0] * 6, snr_min_db=-5.0) == [0, 1, 1, 1, 1, 1]


def test_a_steady_level_is_machinery_not_a_talker() -> None:
    """Loud by likelihood for a second, but the level never moves: only the first half second (while
    the window still holds the quiet before) can count; a syllabic level counts throughout."""
    vad = VoiceActivityDetector(threshold=0.45, release=0.2, hangover_ms=0, smoothing=0.0)
    steady = [vad.update([5.0, 5.0], [0.0, 0.0], [20.0, 20.0])[-1] for _ in range(50)]
    assert not any(steady[30:])
    vad = VoiceActivityDetector(threshold=0.45, release=0.2, hangover_ms=0, smoothing=0.0)
    talker = [vad.update([5.0, 5.0], [0.0, 8.0], [20.0, 20.0])[-1] for _ in range(50)]
    assert all(talker[1:])
