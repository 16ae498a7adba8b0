"""What the talker says in the network benchmark (:mod:`bench.network`), and when.

One talk spurt per run: PTT goes down :data:`PRESS_S` into the run and stays down through a lead-in
of silence (:data:`LEAD_IN_S` from the start), then the utterances one after another with
:data:`GAP_S` of silence between them, then :data:`TAIL_S` of silence (PTT is released half-way
through it). The lead-in is what a box that has been talking on that network already has: time for
the key announcements to get through a lossy link, and for the listener's loss reports (which ride
the announcements every 2 s) to turn the talker's adaptive FEC on before the scored speech starts:
typically ~3 s after PTT, ~5 s when the first announcement carrying a report is lost on the way.

Utterances: ``speech.wav`` (16 kHz) whole, and the first Harvard sentence of each 8 kHz clip named
(upsampled to 16 kHz with soxr VHQ, :func:`bench.dsp_material.load_clip`), cut at the clip's first
pause of :data:`SENTENCE_PAUSE_S` or more, with :data:`EDGE_S` of the recording kept either side.
Every utterance is scaled to the active level :data:`bench.dsp_material.ACTIVE_LEVEL_DBFS` (-26 dBFS)
by the ground-truth rule of :mod:`bench.dsp_material`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench import dsp_material as mat

RATE_HZ = mat.RATE_HZ
LEAD_IN_S = 6.0
"""Silence from the start of the run to the first utterance (PTT is down for most of it)."""
PRESS_S = 0.5
"""PTT goes down this long after the talker's device started."""
GAP_S = 0.5
TAIL_S = 0.8
SENTENCE_PAUSE_S = 0.5
EDGE_S = 0.1

Samples = npt.NDArray[np.int16]


@dataclass(frozen=True)
class Utterance:
    """One scored piece of speech in the talker's microphone signal."""

    name: str
    start: int
    """First sample in the microphone signal."""
    length: int

    @property
    def end(self) -> int:
        """One past the last sample."""
        return self.start + self.length


@dataclass(frozen=True)
class Script:
    """The talker's microphone signal and its timing (seconds from the talker device's start)."""

    said: Samples
    utterances: tuple[Utterance, ...]
    press_s: float
    release_s: float

    @property
    def seconds(self) -> float:
        """Length of the microphone signal."""
        return len(self.said) / RATE_HZ

    @property
    def speech_start_s(self) -> float:
        """When the first utterance starts."""
        return self.utterances[0].start / RATE_HZ

    @property
    def speech_end_s(self) -> float:
        """When the last utterance ends."""
        return self.utterances[-1].end / RATE_HZ

    def describe(self) -> dict[str, Any]:
        """The JSON description."""
        return {
            "rate_hz": RATE_HZ, "seconds": round(self.seconds, 3), "press_s": self.press_s,
            "release_s": round(self.release_s, 3), "lead_in_s": LEAD_IN_S, "gap_s": GAP_S,
            "utterances": [{"name": u.name, "start_s": round(u.start / RATE_HZ, 3),
                            "seconds": round(u.length / RATE_HZ, 3)} for u in self.utterances],
        }


def first_sentence(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``x`` from its first speech to the first pause of :data:`SENTENCE_PAUSE_S` or more (or its
    last speech), with :data:`EDGE_S` either side."""
    truth = mat.speech_frames(x)
    speech = np.flatnonzero(truth)
    if not len(speech):
        return x
    first = int(speech[0])
    last = int(speech[-1])
    pause = round(SENTENCE_PAUSE_S * 100)
    gaps = np.flatnonzero(np.diff(speech) > pause)
    if len(gaps):
        last = int(speech[gaps[0]])
    edge = round(EDGE_S * RATE_HZ)
    return x[max(0, first * mat.FRAME - edge): min(len(x), (last + 1) * mat.FRAME + edge)]


def utterance_audio(folder: Path, name: str) -> npt.NDArray[np.float64]:
    """One utterance at 16 kHz, full scale 1.0, at the active level."""
    x = mat.load_clip(folder / name)
    if name != "speech.wav":
        x = first_sentence(x)
    level = mat.active_level_dbfs(x, mat.speech_frames(x))
    gain = 10 ** ((mat.ACTIVE_LEVEL_DBFS - level) / 20) if np.isfinite(level) else 1.0
    return np.asarray(x * gain, dtype=np.float64)


def build_script(folder: Path, names: tuple[str, ...]) -> Script:
    """The microphone signal: lead-in, the utterances with gaps, tail."""
    parts: list[npt.NDArray[np.float64]] = [np.zeros(round(LEAD_IN_S * RATE_HZ))]
    pos = len(parts[0])
    utterances = []
    for i, name in enumerate(names):
        if i:
            parts.append(np.zeros(round(GAP_S * RATE_HZ)))
            pos += len(parts[-1])
        audio = utterance_audio(folder, name)
        utterances.append(Utterance(name.removesuffix(".wav"), pos, len(audio)))
        parts.append(audio)
        pos += len(audio)
    parts.append(np.zeros(round(TAIL_S * RATE_HZ)))
    said = np.clip(np.rint(np.concatenate(parts) * 32768), -32768, 32767).astype(np.int16)
    release = utterances[-1].end / RATE_HZ + TAIL_S / 2
    return Script(said, tuple(utterances), PRESS_S, release)
