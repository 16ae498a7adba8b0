"""The wearer's tones: distinct, moderate in level, mixed over the voice without clipping."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.voice.cues import LEVEL, MAX_QUEUED, CuePlayer, cue


def test_each_cue_has_its_own_length_and_a_safe_level() -> None:
    names = [("busy", 1), ("warning", 1), ("timeout", 1), ("emergency", 1), ("group", 1), ("group", 3)]
    lengths = {len(cue(n, k)) for n, k in names}
    assert len(lengths) == len(names)  # told apart by rhythm alone
    for n, k in names:
        x = cue(n, k)
        assert 0 < np.max(np.abs(x)) <= LEVEL + 1
        assert x[0] == 0 and abs(int(x[-1])) < 200  # starts silent, fades out: no click
    with pytest.raises(ValueError):
        cue("siren")
    with pytest.raises(ValueError):
        cue("group", 0)


def test_cues_mix_over_the_voice_one_tick_at_a_time() -> None:
    player = CuePlayer()
    voice = np.full(320, 30000, np.int16)
    assert player.mix_into(voice) is voice  # nothing queued: untouched
    player.play("warning")
    player.play("busy")
    ticks = []
    while player.active:
        ticks.append(player.mix_into(np.zeros(320, np.int16)))
    total = len(cue("warning")) + len(cue("busy"))
    assert len(ticks) == -(-total // 320)
    played = np.concatenate(ticks)[:total]
    np.testing.assert_array_equal(played, np.concatenate([cue("warning"), cue("busy")]))
    player.play("timeout")
    assert np.max(player.mix_into(voice)) <= 32767  # clipped, not wrapped
    assert player.played == ["warning", "busy", "timeout"]


def test_a_stuck_button_cannot_queue_minutes_of_tones() -> None:
    player = CuePlayer()
    for _ in range(50):
        player.play("busy")
    assert player.dropped == 50 - MAX_QUEUED
