"""Mixer: mix-minus per port, per-source gains, smooth priority ducking, limited output, and the same
numbers as a plain-loop reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dsp.mixer import Mixer

RATE = 16000
FRAME = 320
DUCK = 10 ** (-12 / 20)


def _tone(amp: float, freq_hz: float, frames: int = 1, phase: float = 0.0) -> np.ndarray:
    t = np.arange(FRAME * frames) / RATE
    return (amp * np.sin(2 * np.pi * freq_hz * t + phase)).astype(np.float32)


def _call(
    mixer: Mixer,
    sources: list[np.ndarray],
    ports: list[int],
    gains: list[float] | None = None,
    priority: list[bool] | None = None,
) -> np.ndarray:
    n = len(sources)
    return mixer.mix(
        np.array(sources, dtype=np.float32).reshape(n, FRAME),
        np.array(ports, dtype=np.int64),
        np.array(gains if gains is not None else [1.0] * n, dtype=np.float32),
        np.array(priority if priority is not None else [False] * n, dtype=bool),
    ).copy()


class ReferenceMixer:
    """The mixer's contract written out with plain loops, in float64: a port hears every source
    but its own (and those its listen mask leaves out), times the source's gain, times the port's
    duck gain unless the source has priority. No limiter: compare below its threshold."""

    def __init__(self, ports: int, attack_ms: float = 20, hold_ms: float = 100,
                 release_ms: float = 200, duck_db: float = 12.0) -> None:
        self.ports = ports
        frame_ms = 1000 * FRAME / RATE
        depth = 1 - 10 ** (-duck_db / 20)
        self.duck = 1 - depth
        self.fall = min(depth, depth * frame_ms / attack_ms)
        self.rise = min(depth, depth * frame_ms / release_ms)
        self.hold_frames = math.ceil(hold_ms / frame_ms)
        self.gain = [1.0] * ports
        self.frames_since_priority = [math.inf] * ports

    def mix(self, sources: np.ndarray, source_port: np.ndarray, gains: np.ndarray,
            priority: np.ndarray, listen: np.ndarray | None = None) -> np.ndarray:
        n = len(sources)
        out = np.zeros((self.ports, FRAME))
        for p in range(self.ports):
            hears = [source_port[i] != p and (listen is None or listen[p, i]) for i in range(n)]
            if any(hears[i] and priority[i] and gains[i] != 0 for i in range(n)):
                self.frames_since_priority[p] = 0
            else:
                self.frames_since_priority[p] += 1
            target = self.duck if self.frames_since_priority[p] <= self.hold_frames else 1.0
            start = self.gain[p]
            end = min(max(target, start - self.fall), start + self.rise)
            self.gain[p] = end
            for t in range(FRAME):
                duck = start + (end - start) * (t + 1) / FRAME
                for i in range(n):
                    if hears[i]:
                        weight = float(gains[i]) * (1.0 if priority[i] else duck)
                        out[p, t] += weight * float(sources[i, t])
        return out


def test_one_remote_source_reaches_every_port_unchanged() -> None:
    mixer = Mixer(ports=4, max_sources=8)
    voice = _tone(0.5, 440)
    out = _call(mixer, [voice], [-1])
    assert out.shape == (4, FRAME) and out.dtype == np.float32
    for port in range(4):
        np.testing.assert_array_equal(out[port], voice)


def test_a_port_never_hears_itself_but_hears_the_others() -> None:
    mixer = Mixer(ports=3, max_sources=8)
    a, b, c = _tone(0.2, 300), _tone(0.2, 500), _tone(0.2, 700)
    only_own = _call(mixer, [a], [0])
    assert not np.any(only_own[0])  # exactly nothing, not a rounding residue
    np.testing.assert_array_equal(only_own[1], a)
    np.testing.assert_array_equal(only_own[2], a)
    out = _call(mixer, [a, b, c], [0, 1, 2])
    np.testing.assert_allclose(out[0], b + c, atol=1e-6)
    np.testing.assert_allclose(out[1], a + c, atol=1e-6)
    np.testing.assert_allclose(out[2], a + b, atol=1e-6)


def test_remote_and_local_sources_together() -> None:
    mixer = Mixer(ports=2, max_sources=8)
    remote, local0, local1 = _tone(0.2, 300), _tone(0.2, 500), _tone(0.2, 700)
    out = _call(mixer, [local0, remote, local1], [0, -1, 1])
    np.testing.assert_allclose(out[0], remote + local1, atol=1e-6)
    np.testing.assert_allclose(out[1], remote + local0, atol=1e-6)


@pytest.mark.parametrize("n", [0, 1, 5])
def test_silence_in_silence_out(n: int) -> None:
    mixer = Mixer(ports=3, max_sources=8)
    out = _call(mixer, [np.zeros(FRAME, np.float32)] * n, [-1] * n)
    assert out.shape == (3, FRAME)
    assert not np.any(out)


def test_no_sources_gives_zeros() -> None:
    mixer = Mixer(ports=2, max_sources=4)
    out = mixer.mix(np.zeros((0, FRAME), np.float32), np.zeros(0, np.int64),
                    np.zeros(0, np.float32), np.zeros(0, bool))
    assert out.shape == (2, FRAME)
    assert not np.any(out)


def test_per_source_gains_apply() -> None:
    mixer = Mixer(ports=2, max_sources=8)
    a, b = _tone(0.4, 300), _tone(0.4, 800)
    out = _call(mixer, [a, b], [-1, -1], gains=[0.5, 0.25])
    expected = 0.5 * a.astype(np.float64) + 0.25 * b
    np.testing.assert_allclose(out, np.stack([expected, expected]), atol=1e-6)
    zero_gain = _call(mixer, [a, b], [-1, -1], gains=[0.0, 1.0])
    np.testing.assert_array_equal(zero_gain[0], b)


def test_priority_ducks_the_others_smoothly_and_releases_after_it_stops() -> None:
    mixer = Mixer(ports=2, max_sources=8)
    field = _tone(0.3, 400, frames=40)
    dispatcher = np.zeros(FRAME, np.float32)  # talking (passed, gain 1) but silent, for clarity
    frames = [field[i * FRAME: (i + 1) * FRAME] for i in range(40)]
    before = _call(mixer, [frames[0]], [-1])
    np.testing.assert_array_equal(before[0], frames[0])
    # attack: one frame ramping down, then exactly duck_db below
    out = [_call(mixer, [frames[k], dispatcher], [-1, -1], priority=[False, True]) for k in range(1, 11)]
    ratio = out[0][0] / np.where(frames[1] == 0, 1, frames[1])
    assert ratio[0] == pytest.approx(1 - (1 - DUCK) / FRAME, abs=1e-5)
    assert ratio[-1] == pytest.approx(DUCK, abs=1e-5)
    assert np.all(np.diff(ratio[np.abs(frames[1]) > 0.01]) <= 1e-6)  # a ramp, no step
    for k in range(1, 10):
        np.testing.assert_allclose(out[k][0], DUCK * frames[k + 1], atol=1e-6)
        np.testing.assert_allclose(out[k][1], out[k][0])
    assert mixer.duck_gain_db == pytest.approx([-12.0, -12.0])
    # the dispatcher stops: held 100 ms, then back up over 200 ms, no step, then exactly as before
    after = [_call(mixer, [frames[k]], [-1]) for k in range(11, 40)]
    gains = [float(np.max(np.abs(a[0]))) / float(np.max(np.abs(frames[k]))) for a, k in
             zip(after, range(11, 40), strict=True)]
    assert gains[:5] == pytest.approx([DUCK] * 5, abs=1e-4)  # the hold
    assert all(a < b for a, b in itertools.pairwise(gains[4:16]))  # the release
    assert gains[15] == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_array_equal(after[-1][0], frames[39])
    assert mixer.duck_gain_db == [0.0, 0.0]


def test_priority_sources_themselves_are_not_ducked() -> None:
    mixer = Mixer(ports=1, max_sources=8)
    dispatcher, field = _tone(0.3, 300), _tone(0.3, 700)
    for _ in range(3):
        out = _call(mixer, [dispatcher, field], [-1, -1], priority=[True, False])
    np.testing.assert_allclose(out[0], dispatcher + DUCK * field.astype(np.float64), atol=1e-6)


def test_a_port_is_not_ducked_by_its_own_priority_source() -> None:
    """The dispatcher's own headset keeps hearing the field at full level while they talk."""
    mixer = Mixer(ports=2, max_sources=8)
    dispatcher, field = _tone(0.3, 300), _tone(0.3, 700)
    for _ in range(3):
        out = _call(mixer, [dispatcher, field], [0, -1], priority=[True, False])
    np.testing.assert_array_equal(out[0], field)
    np.testing.assert_allclose(out[1], dispatcher + DUCK * field.astype(np.float64), atol=1e-6)


def test_a_priority_source_at_zero_gain_does_not_duck() -> None:
    mixer = Mixer(ports=1, max_sources=8)
    field = _tone(0.3, 700)
    for _ in range(3):
        out = _call(mixer, [_tone(0.3, 300), field], [-1, -1], gains=[0.0, 1.0], priority=[True, False])
    np.testing.assert_array_equal(out[0], field)


def test_listen_mask_limits_what_a_port_hears_and_what_ducks_it() -> None:
    mixer = Mixer(ports=2, max_sources=8)
    dispatcher, field = _tone(0.3, 300), _tone(0.3, 700)
    listen = np.array([[False, True], [True, True]])  # port 0 is not in the dispatcher's group
    for _ in range(3):
        out = mixer.mix(np.stack([dispatcher, field]), np.array([-1, -1]),
                        np.ones(2, np.float32), np.array([True, False]), listen).copy()
    np.testing.assert_array_equal(out[0], field)
    np.testing.assert_allclose(out[1], dispatcher + DUCK * field.astype(np.float64), atol=1e-6)


def test_loud_sums_never_reach_full_scale() -> None:
    mixer = Mixer(ports=8, max_sources=32)
    rng = np.random.default_rng(3)
    for _ in range(20):
        sources = rng.uniform(-0.9, 0.9, (32, FRAME)).astype(np.float32)
        out = mixer.mix(sources, np.arange(32) % 9 - 1, np.ones(32, np.float32), np.zeros(32, bool))
        assert np.max(np.abs(out)) < 1.0


def test_source_count_may_change_every_frame() -> None:
    mixer = Mixer(ports=3, max_sources=6)
    reference = ReferenceMixer(3)
    rng = np.random.default_rng(4)
    for n in [0, 6, 1, 3, 0, 6, 2]:
        sources = rng.uniform(-0.05, 0.05, (n, FRAME)).astype(np.float32)
        ports = rng.integers(-1, 3, n)
        gains = rng.uniform(0, 1, n).astype(np.float32)
        priority = rng.random(n) < 0.3
        out = mixer.mix(sources, ports, gains, priority)
        np.testing.assert_allclose(out, reference.mix(sources, ports, gains, priority), atol=1e-6)


def test_matches_the_plain_loop_reference_with_32_sources() -> None:
    """Numerical equivalence with loops over ports, sources and samples, through ducking in and out."""
    ports, n = 8, 32
    mixer = Mixer(ports=ports, max_sources=n)
    reference = ReferenceMixer(ports)
    rng = np.random.default_rng(5)
    source_port = rng.integers(-1, ports, n)
    for frame in range(24):
        sources = rng.uniform(-0.02, 0.02, (n, FRAME)).astype(np.float32)
        gains = rng.uniform(0, 1.5, n).astype(np.float32)
        priority = np.zeros(n, bool)
        if 3 <= frame < 8:
            priority[rng.integers(0, n)] = True
        out = mixer.mix(sources, source_port, gains, priority)
        np.testing.assert_allclose(out, reference.mix(sources, source_port, gains, priority), atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 5),
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 2**32 - 1), st.booleans()), min_size=1, max_size=12
    ),
    st.floats(0, 24),
)
def test_property_equals_reference_and_stays_inside(
    ports: int, frames: list[tuple[int, int, bool]], duck_db: float
) -> None:
    mixer = Mixer(ports=ports, max_sources=6, duck_db=duck_db)
    reference = ReferenceMixer(ports, duck_db=duck_db)
    for n, seed, with_listen in frames:
        rng = np.random.default_rng(seed)
        sources = rng.uniform(-0.03, 0.03, (n, FRAME)).astype(np.float32)
        source_port = rng.integers(-1, ports, n)
        gains = rng.uniform(0, 2, n).astype(np.float32)
        gains[rng.random(n) < 0.2] = 0
        priority = rng.random(n) < 0.3
        listen = rng.random((ports, n)) < 0.7 if with_listen else None
        out = mixer.mix(sources, source_port, gains, priority, listen)
        assert out.shape == (ports, FRAME)
        np.testing.assert_allclose(
            out, reference.mix(sources, source_port, gains, priority, listen), atol=1e-6
        )


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 8), st.floats(0.0, 1e6), st.integers(0, 2**32 - 1))
def test_property_never_reaches_full_scale(n: int, level: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mixer = Mixer(ports=4, max_sources=8)
    for _ in range(3):
        sources = (rng.uniform(-1, 1, (n, FRAME)) * level).astype(np.float32)
        out = mixer.mix(sources, rng.integers(-1, 4, n), np.ones(n, np.float32), rng.random(n) < 0.5)
        assert np.all(np.abs(out) < 1.0)


@pytest.mark.parametrize(
    ("sources", "ports", "gains", "priority"),
    [
        (np.zeros((9, FRAME), np.float32), np.zeros(9, int), np.ones(9, np.float32), np.zeros(9, bool)),
        (np.zeros((2, 160), np.float32), np.zeros(2, int), np.ones(2, np.float32), np.zeros(2, bool)),
        (np.zeros((2, FRAME), np.float32), np.zeros(3, int), np.ones(2, np.float32), np.zeros(2, bool)),
        (np.zeros((2, FRAME), np.float32), np.zeros(2, int), np.ones(1, np.float32), np.zeros(2, bool)),
        (np.zeros((2, FRAME), np.float64), np.zeros(2, int), np.ones(2, np.float32), np.zeros(2, bool)),
        (np.zeros(FRAME, np.float32), np.zeros(1, int), np.ones(1, np.float32), np.zeros(1, bool)),
    ],
)
def test_bad_arguments_are_refused(
    sources: np.ndarray, ports: np.ndarray, gains: np.ndarray, priority: np.ndarray
) -> None:
    with pytest.raises(ValueError):
        Mixer(ports=2, max_sources=8).mix(sources, ports, gains, priority)


def test_listen_mask_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="listen"):
        Mixer(ports=2, max_sources=8).mix(np.zeros((1, FRAME), np.float32), np.zeros(1, int),
                                          np.ones(1, np.float32), np.zeros(1, bool), np.ones((1, 1), bool))


def test_output_buffer_is_reused_and_input_untouched() -> None:
    mixer = Mixer(ports=2, max_sources=4)
    sources = np.stack([_tone(0.3, 300), _tone(0.3, 500)])
    before = sources.copy()
    first = mixer.mix(sources, np.array([0, 1]), np.ones(2, np.float32), np.zeros(2, bool))
    second = mixer.mix(sources, np.array([0, 1]), np.ones(2, np.float32), np.zeros(2, bool))
    assert first is second
    np.testing.assert_array_equal(sources, before)
