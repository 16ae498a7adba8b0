"""Tones a port plays to its own wearer: busy, time-out warning, emergency, the selected group.

The cues are made once at 16 kHz (the port's processing rate) and mixed into what the port plays,
on top of the voice, at a level that is clear in a headset but not painful (-18 dBFS per tone).
Each has a distinct rhythm, so they can be told apart without looking at the box:

- ``busy``: three short beeps at 480+620 Hz (the telephone busy pair): your press was refused, or
  someone with a higher priority (or an emergency) broke in.
- ``warning``: two quick 1 kHz pips: your transmission will be timed out in a few seconds.
- ``timeout``: one long low 400 Hz tone: your transmission was cut by the time-out.
- ``emergency``: a 0.3 s two-tone warble (800/1000 Hz): an emergency call started in a group you
  hear (short: the caller's first words follow it).
- ``group(n)``: n short 880 Hz beeps: you now talk on the n-th group of your port's list.
"""

from __future__ import annotations

from collections import deque
from functools import cache

import numpy as np
from numpy.typing import NDArray

from gateway.config import PROCESSING_RATE_HZ

RATE = PROCESSING_RATE_HZ
LEVEL = 32768 * 10 ** (-18 / 20)
"""Peak of a cue (a sum of two tones shares it)."""
MAX_QUEUED = 4
"""Cues waiting to play; older ones are dropped past this (a stuck button must not queue minutes)."""
_RAMP = RATE // 200  # 5 ms fade in and out: no click


def _tone(freqs: tuple[float, ...], ms: int) -> NDArray[np.float32]:
    t = np.arange(RATE * ms // 1000) / RATE
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
    env = np.ones(len(t))
    env[:_RAMP] = np.linspace(0, 1, _RAMP)
    env[-_RAMP:] = np.linspace(1, 0, _RAMP)
    return (LEVEL * x * env).astype(np.float32)


def _gap(ms: int) -> NDArray[np.float32]:
    return np.zeros(RATE * ms // 1000, np.float32)


@cache
def cue(name: str, count: int = 1) -> NDArray[np.int16]:
    """The samples (16 kHz) of cue ``name``; ``count`` is the group number for ``group``."""
    if name == "busy":
        beep = [_tone((480, 620), 120), _gap(100)]
        parts = beep * 3
    elif name == "warning":
        parts = [_tone((1000,), 70), _gap(70), _tone((1000,), 70)]
    elif name == "timeout":
        parts = [_tone((400,), 400)]
    elif name == "emergency":
        parts = [_tone((800,), 75) if i % 2 == 0 else _tone((1000,), 75) for i in range(4)]
    elif name == "group":
        if not 1 <= count <= 16:
            raise ValueError(f"group cue count must be 1-16, got {count}")
        parts = []
        for _ in range(count):
            parts += [_tone((880,), 80), _gap(120)]
    else:
        raise ValueError(f"no cue {name!r}")
    out: NDArray[np.int16] = np.concatenate([_gap(20), *parts]).astype(np.int16)
    return out


class CuePlayer:
    """The cues queued for one port, mixed into its playback one tick at a time."""

    def __init__(self) -> None:
        self._queue: deque[NDArray[np.int16]] = deque()
        self._pos = 0
        self.played: list[str] = []
        """Names of the cues started, oldest first (the last 32; for tests, logs and the demo)."""
        self.dropped = 0

    def play(self, name: str, count: int = 1) -> None:
        """Queue a cue (after whatever is playing)."""
        if len(self._queue) >= MAX_QUEUED:
            self._queue.pop()
            self.dropped += 1
        self._queue.append(cue(name, count))
        self.played.append(name if name != "group" else f"group {count}")
        del self.played[:-32]

    @property
    def active(self) -> bool:
        """A cue is playing or waiting."""
        return bool(self._queue)

    def mix_into(self, audio: NDArray[np.int16]) -> NDArray[np.int16]:
        """``audio`` with the next ``len(audio)`` samples of cues added (a new array if any)."""
        if not self._queue:
            return audio
        out = audio.astype(np.int32)
        pos = 0
        while pos < len(out) and self._queue:
            current = self._queue[0]
            take = min(len(out) - pos, len(current) - self._pos)
            out[pos: pos + take] += current[self._pos: self._pos + take]
            pos += take
            self._pos += take
            if self._pos == len(current):
                self._queue.popleft()
                self._pos = 0
        mixed: NDArray[np.int16] = np.clip(out, -32768, 32767).astype(np.int16)
        return mixed
