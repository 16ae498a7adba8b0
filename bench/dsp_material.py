"""Test material for the DSP benchmark: real speech, seeded noises, SNR mixing and ground truth.

Speech. The shared test clips (``../shared/testdata/speech`` beside the checkout, found the way
``gateway demo`` finds its default clip): the 8 kHz Harvard-sentence clips ``or1xx.wav`` upsampled
to 16 kHz with soxr "VHQ", and the 16 kHz ``speech.wav``. Each clip becomes one test signal with
:data:`GAP_S` of digital silence before and after it, so every signal has noise-only frames for
voice-detector false-alarm scoring, and is scaled to an active speech level of
:data:`ACTIVE_LEVEL_DBFS`.

Levels are dBFS as the gateway's AGC meters them: RMS relative to a full-scale sine
(``10·log10(mean(x²)) + 3.01`` for samples in -1..1).

Ground truth (:func:`speech_frames`), per 10 ms frame of the clean signal:

1. a frame is speech when its energy is within :data:`GT_RANGE_DB` (35 dB) of the signal's loudest
   10 ms frame, at least :data:`GT_ABOVE_NOISE_DB` (10 dB) above the recording's own noise floor
   (the 10th percentile of the energies of its frames that aren't digital silence, i.e. above
   -100 dBFS), and above :data:`GT_FLOOR_DBFS` (-60 dBFS);
2. gaps of fewer than :data:`GT_FILL_FRAMES` frames (100 ms) between speech frames are filled
   (pauses inside and between words);
3. then runs of speech shorter than :data:`GT_MIN_RUN_FRAMES` frames (30 ms) are removed (clicks).

The noise-floor term is there because some Harvard clips (``or129``, ``or134``, ``or137``) were
recorded with hiss at -45 dBFS, 33 dB under their loudest frame: by the 35 dB term alone their 3 s
pauses were speech, and every detector "missed" 40 % of the speech at 20 dB SNR.

Noises, each from ``numpy.random.default_rng([seed, clip_index])`` with a fixed seed per kind
(:data:`NOISE_SEEDS`), so a clip meets the same noise at every SNR and every run is identical:

- ``white``: Gaussian white noise;
- ``pink``: Gaussian noise shaped to 1/f power in the FFT domain (flat below 20 Hz, no DC);
- ``babble``: :data:`BABBLE_TALKERS` other clips from the folder (never the clip under test), each at
  the same active level, circularly shifted by a seeded offset and looped to length, summed;
- ``hum``: machinery (generator, pump): 50 Hz and its harmonics up to 2 kHz with amplitudes falling
  as 1/k, random phases, a slow 0.3 Hz, ±10 % amplitude wobble and a ±0.2 Hz frequency drift, plus
  broadband white noise 25 dB below the hum.

Mixing (:func:`mix_at_snr`): SNR is the clean signal's active level (RMS over ground-truth speech
frames) against the noise's RMS over the whole signal. If the mix would peak above
:data:`PEAK_LIMIT_DBFS`, mix, clean reference and noise are scaled down together.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

RATE_HZ = 16000
"""Rate everything is scored at (PESQ wideband)."""
FRAME = 160
"""Samples per 10 ms frame at :data:`RATE_HZ`: the unit of ground truth and voice detection."""
GAP_S = 0.8
"""Digital silence before and after each clip (noise-only frames once noise is added)."""
ACTIVE_LEVEL_DBFS = -26.0
"""Active speech level each clean clip is scaled to before noise is added."""
PEAK_LIMIT_DBFS = -1.0
"""Highest sample peak a mix may have (sample peak re full scale 1.0)."""
SNRS_DB = (0.0, 5.0, 10.0, 20.0)
NOISES = ("white", "pink", "babble", "hum")
NOISE_SEEDS = {"white": 11, "pink": 12, "babble": 13, "hum": 14}
BABBLE_TALKERS = 6

GT_RANGE_DB = 35.0
GT_ABOVE_NOISE_DB = 10.0
GT_NOISE_PERCENTILE = 10.0
GT_SILENCE_DBFS = -100.0
GT_FLOOR_DBFS = -60.0
GT_FILL_FRAMES = 10
GT_MIN_RUN_FRAMES = 3

GROUND_TRUTH_RULE = (
    f"a 10 ms frame is speech when its clean energy is within {GT_RANGE_DB:.0f} dB of the clip's loudest "
    f"10 ms frame, >= {GT_ABOVE_NOISE_DB:.0f} dB above the recording's own noise floor "
    f"({GT_NOISE_PERCENTILE:.0f}th percentile of its non-silent frames) and above {GT_FLOOR_DBFS:.0f} dBFS; "
    f"gaps < {GT_FILL_FRAMES * 10} ms between speech frames filled; speech runs < "
    f"{GT_MIN_RUN_FRAMES * 10} ms removed"
)

Audio = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

_SINE_DB = 10 * np.log10(2.0)  # a full-scale sine's RMS is 1/sqrt(2): add 3.01 dB to meter re it


def speech_dir() -> Path:
    """The shared speech folder, found the way ``gateway demo`` finds its default clip."""
    from gateway.sim.demo import default_clip

    clip = default_clip()
    if clip is None:
        raise FileNotFoundError("no ../shared/testdata/speech folder beside the checkout")
    return clip.parent


def available_clips(folder: Path) -> list[str]:
    """Usable clip names in ``folder``: ``speech.wav`` and the Harvard clips (no pre-mixed files)."""
    names = sorted(p.name for p in folder.glob("*.wav") if "_" not in p.stem)
    return [n for n in names if n == "speech.wav" or n.startswith("or")]


@cache
def load_clip(path: Path) -> Audio:
    """A clip as float64 at 16 kHz (full scale 1.0); 8 kHz clips upsampled with soxr VHQ."""
    from gateway.audio.wav import read_wav

    data, rate = read_wav(path)
    x = data.astype(np.float64) / 32768.0
    if rate != RATE_HZ:
        x = np.asarray(soxr.resample(x, rate, RATE_HZ, quality="VHQ"), dtype=np.float64)
    return x


def level_dbfs(x: Audio) -> float:
    """RMS level in dBFS (re full-scale sine); -inf for silence."""
    energy = float(np.mean(np.square(x))) if len(x) else 0.0
    return 10 * np.log10(energy) + _SINE_DB if energy > 0 else float("-inf")


def frame_energy_db(x: Audio) -> Audio:
    """Energy of every whole 10 ms frame in dBFS (re full-scale sine); -inf for digital silence."""
    n = len(x) // FRAME
    energy = np.mean(np.square(x[: n * FRAME].reshape(n, FRAME)), axis=1)
    with np.errstate(divide="ignore"):
        db: Audio = 10 * np.log10(energy) + _SINE_DB
    return db


def _runs(mask: Mask, value: bool) -> list[tuple[int, int]]:
    """(start, stop) of every run of ``value`` in ``mask``."""
    padded = np.concatenate([[0], (mask == value).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def recording_floor_db(frame_db: Audio) -> float:
    """A recording's own noise level: the 10th percentile of its frames that aren't digital silence."""
    live = frame_db[frame_db > GT_SILENCE_DBFS]
    return float(np.percentile(live, GT_NOISE_PERCENTILE)) if len(live) else float("-inf")


def speech_frames(clean: Audio) -> Mask:
    """Ground truth per 10 ms frame (the module docstring's rule)."""
    db = frame_energy_db(clean)
    if not len(db) or not np.isfinite(db.max()):
        return np.zeros(len(db), dtype=bool)
    threshold = max(db.max() - GT_RANGE_DB, recording_floor_db(db) + GT_ABOVE_NOISE_DB, GT_FLOOR_DBFS)
    mask = db >= threshold
    for start, stop in _runs(mask, False):
        if start > 0 and stop < len(mask) and stop - start < GT_FILL_FRAMES:
            mask[start:stop] = True
    for start, stop in _runs(mask, True):
        if stop - start < GT_MIN_RUN_FRAMES:
            mask[start:stop] = False
    return np.asarray(mask, dtype=bool)


def active_level_dbfs(clean: Audio, truth: Mask) -> float:
    """Active speech level: RMS over the ground-truth speech frames, in dBFS."""
    frames = clean[: len(truth) * FRAME].reshape(len(truth), FRAME)[truth]
    return level_dbfs(frames.ravel())


@dataclass(frozen=True)
class SpeechSignal:
    """One clip, padded with silence and scaled to the active level, with its ground truth."""

    name: str
    clean: Audio
    truth: Mask

    def describe(self) -> dict[str, Any]:
        """The JSON description."""
        return {
            "clip": self.name,
            "seconds": round(len(self.clean) / RATE_HZ, 3),
            "speech_frames": int(self.truth.sum()),
            "noise_only_frames": int((~self.truth).sum()),
        }


def speech_signal(folder: Path, name: str) -> SpeechSignal:
    """``name`` with :data:`GAP_S` of silence each side, at :data:`ACTIVE_LEVEL_DBFS`."""
    gap = np.zeros(round(GAP_S * RATE_HZ))
    x = np.concatenate([gap, load_clip(folder / name), gap])
    x *= 10 ** ((ACTIVE_LEVEL_DBFS - active_level_dbfs(x, speech_frames(x))) / 20)
    # The level floor is the only scale-dependent part of the rule: apply it at the mixing level.
    return SpeechSignal(name, x, speech_frames(x))


# --- Noises -------------------------------------------------------------------------------------


def white_noise(n: int, rng: np.random.Generator) -> Audio:
    """Gaussian white noise, unit variance."""
    return rng.standard_normal(n)


def pink_noise(n: int, rng: np.random.Generator) -> Audio:
    """Gaussian noise with 1/f power (FFT-shaped, flat below 20 Hz, no DC), unit variance."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE_HZ)
    shape = 1 / np.sqrt(np.maximum(freqs, 20.0))
    shape[0] = 0.0
    y = np.fft.irfft(spectrum * shape, n)
    return np.asarray(y / np.std(y), dtype=np.float64)


def hum_noise(n: int, rng: np.random.Generator) -> Audio:
    """Machinery hum: 50 Hz harmonics with slow wobble and a little broadband noise, unit variance."""
    t = np.arange(n) / RATE_HZ
    # A generator's speed drifts: integrate a slowly wandering fundamental for the phase.
    f0 = 50.0 + 0.2 * np.sin(2 * np.pi * 0.1 * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(f0) / RATE_HZ
    y = np.zeros(n)
    for k in range(1, 41):
        y += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k
    y *= 1 + 0.1 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 2 * np.pi))
    y /= np.std(y)
    y += 10 ** (-25 / 20) * rng.standard_normal(n)
    return np.asarray(y / np.std(y), dtype=np.float64)


def babble_noise(n: int, rng: np.random.Generator, folder: Path, exclude: str) -> Audio:
    """:data:`BABBLE_TALKERS` other clips, shifted and looped, summed; unit variance."""
    pool = [c for c in available_clips(folder) if c != exclude]
    picks = rng.choice(len(pool), size=min(BABBLE_TALKERS, len(pool)), replace=False)
    y = np.zeros(n)
    for i in sorted(picks.tolist()):
        x = load_clip(folder / pool[i])
        x = x / 10 ** (active_level_dbfs(x, speech_frames(x)) / 20)
        looped = np.tile(x, -(-n // len(x)) + 1)
        start = int(rng.integers(len(x)))
        y += looped[start: start + n]
    return np.asarray(y / np.std(y), dtype=np.float64)


def noise(kind: str, n: int, clip_index: int, folder: Path, clip_name: str) -> Audio:
    """Seeded noise ``kind`` of ``n`` samples for clip number ``clip_index``; unit variance."""
    rng = np.random.default_rng([NOISE_SEEDS[kind], clip_index])
    if kind == "white":
        return white_noise(n, rng)
    if kind == "pink":
        return pink_noise(n, rng)
    if kind == "hum":
        return hum_noise(n, rng)
    if kind == "babble":
        return babble_noise(n, rng, folder, clip_name)
    raise ValueError(f"unknown noise {kind!r}; known: {', '.join(NOISES)}")


def mix_at_snr(clean: Audio, noise_: Audio, truth: Mask, snr_db: float) -> tuple[Audio, Audio]:
    """(mix, clean reference) with the noise at ``snr_db`` below the clean's active level.

    Both are scaled down together if the mix would peak above :data:`PEAK_LIMIT_DBFS`.
    """
    speech_rms = 10 ** ((active_level_dbfs(clean, truth) - _SINE_DB) / 20)
    noise_rms = float(np.sqrt(np.mean(np.square(noise_))))
    mix = clean + noise_ * (speech_rms / noise_rms) * 10 ** (-snr_db / 20)
    peak = float(np.max(np.abs(mix)))
    limit = 10 ** (PEAK_LIMIT_DBFS / 20)
    scale = limit / peak if peak > limit else 1.0
    return mix * scale, clean * scale


def snr_db(clean: Audio, mix: Audio, truth: Mask) -> float:
    """The SNR of ``mix`` by this module's definition (active speech level vs noise RMS)."""
    residual = mix - clean
    return active_level_dbfs(clean, truth) - level_dbfs(residual)
