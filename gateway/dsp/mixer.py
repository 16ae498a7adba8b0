"""Mix-minus for a box's local ports: every port hears every source but its own, with per-source
gains, priority ducking, and a limiter per port at the end.

Sources are the decoded remote senders and the local ports' own uplinks, one frame each. A call
describes them with four arrays of length ``n`` (at most ``max_sources``): the frames, the local
port each comes from (-1 for a remote sender), a gain, and a priority flag. Pass only the sources
that have audio this frame (a sender whose stream has nothing to play is left out): a priority
source counts as talking for as long as it is passed with a non-zero gain.

How a frame is mixed. Port ``p`` weighs source ``i`` by ``gain[i] * heard[p, i]``, where
``heard[p, i]`` is 0 for the port's own sources (``source_port[i] == p``) and for sources its
optional listen mask leaves out, else 1. The ports' mixes are then one BLAS product of that
``(ports, n)`` weight matrix with the ``(n, frame)`` sources: ``ports * n * frame`` multiply-adds,
linear in the number of sources (the rest of a frame's work grows with ``ports * frame`` or ``n``
alone). Chosen over ``total - own``, which does fewer multiply-adds, because it costs the same here
(about 7 µs for 32 sources and 8 ports either way, one BLAS call against several numpy calls) and
is exact: a port's own source gets weight 0 rather than being added into a total and subtracted
again, so not even a rounding residue of it is left in the port's mix, a port with two local
sources needs nothing special, and per-port listen masks (talk groups) come free.

Priority ducking, per port. A port that hears a priority source (not its own: a dispatcher keeps
hearing the field while talking) lowers all its non-priority sources by ``duck_db``. The duck gain
moves at most ``1 - duck`` per ``duck_attack_ms`` going down and per ``duck_release_ms`` going back
up, linearly sample by sample, so there is no click either way; it stays down ``duck_hold_ms``
(rounded up to whole frames) past the last frame with a priority source, so a frame or two lost in
the network don't make it pump. A port's duck gain that holds still through a frame folds into its
weights (``gain * (duck + (1 - duck) * priority)``); in a frame where one moves, each port gets two
rows of weights, priority sources and the rest, and the rest is scaled by the per-sample duck gain
after the product.

The :class:`~gateway.dsp.limiter.SoftLimiter` then runs over all ports at once (one channel per
port), so a loud sum never clips. All buffers are allocated up front for ``max_sources``.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from gateway.dsp.limiter import SoftLimiter

Frames = NDArray[np.float32]


class Mixer:
    """Per-port mix-minus of up to ``max_sources`` frames with priority ducking and a limiter."""

    def __init__(
        self,
        ports: int,
        max_sources: int,
        frame_samples: int = 320,
        rate_hz: int = 16000,
        duck_db: float = 12.0,
        limiter_threshold_dbfs: float = -1.0,
        *,
        duck_attack_ms: float = 20.0,
        duck_hold_ms: float = 100.0,
        duck_release_ms: float = 200.0,
    ) -> None:
        if ports < 1 or max_sources < 0 or frame_samples < 1:
            raise ValueError(
                f"need ports >= 1, max_sources >= 0 and frame_samples >= 1, "
                f"got {ports}, {max_sources}, {frame_samples}"
            )
        if duck_db < 0 or duck_attack_ms <= 0 or duck_release_ms <= 0 or duck_hold_ms < 0:
            raise ValueError("duck_db and duck_hold_ms must be >= 0, duck_attack_ms and "
                             "duck_release_ms > 0")
        self.ports = ports
        self.max_sources = max_sources
        self.frame_samples = frame_samples
        self.rate_hz = rate_hz
        self.duck_db = duck_db
        self.limiter = SoftLimiter(rate_hz, limiter_threshold_dbfs, channels=ports)
        p, m, f = ports, max_sources, frame_samples
        duck = 10 ** (-duck_db / 20)
        depth = 1.0 - duck
        self._duck = duck
        # Largest duck-gain move in one frame, down and up.
        self._max_fall = min(depth, depth * f * 1000 / (rate_hz * duck_attack_ms))
        self._max_rise = min(depth, depth * f * 1000 / (rate_hz * duck_release_ms))
        # A port stays ducked while its count is > 0: set to this on a frame with priority (so it
        # covers that frame and the hold, in whole frames), counted down a frame at a time after.
        self._hold_reset = 1 + -(-round(duck_hold_ms * rate_hz) // (1000 * f))
        # The duck state is a few numbers per port, stepped in plain Python: for a handful of ports
        # that is cheaper than a dozen numpy calls on arrays of that size.
        self._duck_gain = [1.0] * p
        self._duck_was = [1.0] * p
        self._ducked_for = [0] * p
        self._duck_at_rest = True
        self._no_priority = [0.0] * p
        # Per port: the duck gain at the start and the end of the frame, then [gain, 1 - gain] for
        # the frames it holds still.
        self._duck_state = np.ones((p, 4), dtype=np.float32)
        self._duck_state[:, 3] = 0
        self._duck_ends = self._duck_state[:, :2]
        self._duck_mix = self._duck_state[:, 2:]
        self._port_ids = np.arange(p, dtype=np.int64).reshape(p, 1)
        # Flat, so that the first rows*n entries make a C-contiguous (rows, n) matrix for any n:
        # np.dot wants its output contiguous, and BLAS likes its inputs so.
        self._heard = np.zeros(p * m, dtype=np.float32)
        self._weights = np.zeros(2 * p * m, dtype=np.float32)
        # Row 0: the sources' gains, row 1: the same for priority sources only, else 0.
        self._basis = np.zeros(2 * m, dtype=np.float32)
        self._talking = np.zeros(m, dtype=np.float32)
        self._priority_heard = np.zeros(p, dtype=np.float32)
        ramp = np.arange(1, f + 1, dtype=np.float32) / np.float32(f)
        self._ramp = np.stack([np.float32(1) - ramp, ramp])
        self._split = np.zeros((2 * p, f), dtype=np.float32)
        self._duck_ramp = np.zeros((p, f), dtype=np.float32)
        self._mix = np.zeros((p, f), dtype=np.float32)

    @property
    def duck_gain_db(self) -> list[float]:
        """Per port: the duck gain (dB, <= 0) on non-priority sources at the end of the last frame."""
        return [20 * math.log10(g) if g > 0 else -math.inf for g in self._duck_gain]

    def mix(
        self,
        sources: Frames,
        source_port: NDArray[np.integer],
        gains: NDArray[np.float32],
        priority: NDArray[np.bool_],
        listen: NDArray[np.bool_] | None = None,
    ) -> Frames:
        """One frame for every port, ``(ports, frame_samples)``, from ``n`` source frames.

        ``sources`` is ``(n, frame_samples)`` float32; ``source_port``, ``gains`` and ``priority``
        are ``(n,)``: the local port a source comes from (-1: remote), its linear gain (float32),
        and whether it ducks the others. ``listen``, ``(ports, n)`` bool, optionally limits which
        sources each port hears (its own it never hears). The result is the mixer's own buffer,
        overwritten by the next call.
        """
        n = sources.shape[0] if sources.ndim == 2 else -1
        self._check(sources, source_port, gains, priority, listen, n)
        p = self.ports
        heard = self._heard[: p * n].reshape(p, n)
        np.not_equal(self._port_ids, source_port, out=heard)
        if listen is not None:
            np.multiply(heard, listen, out=heard)
        mix = self._mix
        if self._duck_at_rest and not (n and np.count_nonzero(priority)):
            # Nobody ducked: one row of weights per port.
            weights = self._weights[: p * n].reshape(p, n)
            np.multiply(heard, gains, out=weights)
            self._product(weights, sources, mix)
            return self.limiter.process(mix)
        basis = self._basis[: 2 * n].reshape(2, n)
        np.copyto(basis[0], gains)
        np.multiply(gains, priority, out=basis[1])
        if not self._update_duck(heard, basis[1]):
            # Every port's duck gain holds still through the frame: weight = gain * (duck + (1 -
            # duck) * priority), one product with [duck, 1 - duck] per port, again one row per port.
            weights = self._weights[: p * n].reshape(p, n)
            np.dot(self._duck_mix, basis, out=weights)
            np.multiply(weights, heard, out=weights)
            self._product(weights, sources, mix)
            return self.limiter.process(mix)
        # A duck gain moves: a row per port for its priority sources and one for the rest, and
        # the rest scaled by a per-sample duck gain running from where it was to where it goes.
        weights = self._weights[: 2 * p * n].reshape(2 * p, n)
        np.multiply(heard, basis[1], out=weights[:p])
        np.subtract(basis[0], basis[1], out=basis[0])
        np.multiply(heard, basis[0], out=weights[p:])
        split = self._split
        self._product(weights, sources, split)
        np.dot(self._duck_ends, self._ramp, out=self._duck_ramp)
        np.multiply(split[p:], self._duck_ramp, out=mix)
        np.add(mix, split[:p], out=mix)
        return self.limiter.process(mix)

    def reset(self) -> None:
        """Back to no ducking and a released limiter."""
        self._duck_gain[:] = [1.0] * self.ports
        self._ducked_for[:] = [0] * self.ports
        self._duck_state[:, :3] = 1
        self._duck_state[:, 3] = 0
        self._duck_at_rest = True
        self.limiter.reset()

    @staticmethod
    def _product(weights: Frames, sources: Frames, out: Frames) -> None:
        if weights.shape[1]:
            np.dot(weights, sources, out=out)
        else:  # no sources: BLAS isn't asked for an empty product
            out.fill(0)

    def _update_duck(self, heard: Frames, priority_gains: Frames) -> bool:
        """Step each port's duck gain a frame on; True if any of them moves during this frame."""
        n = heard.shape[1]
        if n:
            talking = self._talking[:n]
            np.not_equal(priority_gains, 0, out=talking)
            np.dot(heard, talking, out=self._priority_heard)
            priority_heard = self._priority_heard.tolist()
        else:
            priority_heard = self._no_priority
        gains, ducked_for = self._duck_gain, self._ducked_for
        self._duck_was[:] = gains
        moving = False
        at_rest = True
        for port in range(self.ports):
            if priority_heard[port] > 0:
                ducked_for[port] = self._hold_reset
            elif ducked_for[port]:
                ducked_for[port] -= 1
            target = self._duck if ducked_for[port] else 1.0
            gain = gains[port]
            # Slew-limited; min/max land exactly on the target once it is within reach.
            if target < gain:
                gains[port] = max(target, gain - self._max_fall)
                moving = True
            elif target > gain:
                gains[port] = min(target, gain + self._max_rise)
                moving = True
            at_rest = at_rest and gains[port] == 1.0 and not ducked_for[port]
        self._duck_at_rest = at_rest
        if moving:  # otherwise the rows written last still hold
            state = self._duck_state
            state[:, 0] = self._duck_was
            state[:, 1] = gains
            state[:, 2] = gains
            np.subtract(1, state[:, 2], out=state[:, 3])
        return moving

    def _check(
        self,
        sources: Frames,
        source_port: NDArray[np.integer],
        gains: NDArray[np.float32],
        priority: NDArray[np.bool_],
        listen: NDArray[np.bool_] | None,
        n: int,
    ) -> None:
        if not 0 <= n <= self.max_sources or sources.shape[1] != self.frame_samples:
            raise ValueError(
                f"sources must be (n <= {self.max_sources}, {self.frame_samples}), got {sources.shape}"
            )
        if sources.dtype != np.float32 or gains.dtype != np.float32:
            raise ValueError(f"sources and gains must be float32, got {sources.dtype}, {gains.dtype}")
        if source_port.shape != (n,) or gains.shape != (n,) or priority.shape != (n,):
            raise ValueError(
                f"source_port, gains and priority must be ({n},), got "
                f"{source_port.shape}, {gains.shape}, {priority.shape}"
            )
        if listen is not None and listen.shape != (self.ports, n):
            raise ValueError(f"listen must be ({self.ports}, {n}), got {listen.shape}")
