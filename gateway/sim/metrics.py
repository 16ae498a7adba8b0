"""Measurements of what a listener heard against what was said: delay and PESQ.

Used by ``gateway demo``, the tests and the benchmarks. PESQ comes from the optional ``pesq``
package (the ``measure`` extra): it is never needed by the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soxr

#: Silence around the clip included in the PESQ comparison (see :func:`score`).
CONTEXT_MS = 250

Signal = npt.NDArray[np.int16] | npt.NDArray[np.float64]


def delay_samples(sent: Signal, heard: Signal, max_lag: int) -> tuple[int, float]:
    """Lag (0..max_lag) at which ``heard`` best matches ``sent``, and the normalised correlation.

    Both signals are on the same timeline (sample 0 at the same instant). Cross-correlation is
    computed with FFTs, so minutes of audio take milliseconds.
    """
    a = np.asarray(sent, dtype=np.float64)
    b = np.asarray(heard, dtype=np.float64)
    n = len(a) + len(b)
    size = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    lags = xc[: max_lag + 1]
    lag = int(np.argmax(lags))
    energy = float(np.sqrt(np.dot(a, a) * np.dot(b, b))) or 1.0
    return lag, float(lags[lag] / energy)


@dataclass(frozen=True)
class Heard:
    """How one listener heard a clip."""

    delay_ms: float | None
    """Mouth-to-ear delay; None if the clip wasn't found in what was heard."""
    pesq: float | None
    """PESQ MOS-LQO of the aligned clip; None if not heard or the pesq package is missing."""
    pesq_mode: str
    """``wb`` (P.862.2, 16 kHz) or ``nb`` (P.862, 8 kHz)."""
    correlation: float


def score(
    sent: Signal, heard: Signal, rate_hz: int, clip_start: int, clip_len: int,
    max_delay_ms: int = 2000,
) -> Heard:
    """Find the clip (``sent[clip_start:clip_start+clip_len]``) in ``heard``; measure delay and PESQ."""
    lag, corr = delay_samples(sent, heard, rate_hz * max_delay_ms // 1000)
    mode = "wb" if rate_hz >= 16000 else "nb"
    if corr < 0.2:
        return Heard(None, None, mode, corr)
    # Score the clip with some of the silence around it, as P.862's own test files have: cut
    # exactly at the speech edges, the pesq package's utterance alignment is unstable (measured
    # here: the same Opus audio scored 3.6 or 4.5 depending on its 20 ms frame phase; with 250 ms
    # of context on each side every phase scored 4.56 +- 0.02).
    pad = min(rate_hz * CONTEXT_MS // 1000, clip_start, max(0, len(sent) - clip_start - clip_len))
    start, length = clip_start - pad, clip_len + 2 * pad
    ref = np.asarray(sent[start: start + length], dtype=np.float64)
    deg = np.asarray(heard[start + lag: start + lag + length], dtype=np.float64)
    if len(deg) < len(ref):
        deg = np.concatenate([deg, np.zeros(len(ref) - len(deg))])
    return Heard(lag * 1000.0 / rate_hz, pesq_score(ref, deg, rate_hz), mode, corr)


def pesq_score(ref: Signal, deg: Signal, rate_hz: int) -> float | None:
    """PESQ of ``deg`` against ``ref`` (wideband at >= 16 kHz, else narrowband); None without pesq."""
    try:
        from pesq import pesq
    except ImportError:
        return None
    r = np.asarray(ref, dtype=np.float64)
    d = np.asarray(deg, dtype=np.float64)
    if rate_hz not in (8000, 16000):
        target = 16000 if rate_hz > 16000 else 8000
        r = soxr.resample(r, rate_hz, target)
        d = soxr.resample(d, rate_hz, target)
        rate_hz = target
    mode = "wb" if rate_hz == 16000 else "nb"
    try:
        return float(pesq(rate_hz, r, d, mode))
    except Exception:  # pesq raises its own NoUtterancesError etc. on silent input
        return None


def on_talker_timeline(said_len: int, heard: Signal, rate_hz: int, heard_started_late_s: float) -> Signal:
    """A listener's recording put on the talker's timeline: ``heard_started_late_s`` is how much
    later the listener's sample 0 was taken than the talker's (the devices' ``started_at``
    difference); at least two seconds longer than the talker's ``said_len`` samples."""
    shift = round(heard_started_late_s * rate_hz)
    timeline = np.zeros(max(said_len + 2 * rate_hz, len(heard) + max(shift, 0)))
    if shift >= 0:
        timeline[shift: shift + len(heard)] = heard
    else:
        timeline[: max(0, len(heard) + shift)] = heard[-shift:]
    return timeline


def score_recording(
    said: Signal, heard: Signal, rate_hz: int, heard_started_late_s: float, clip_start: int,
    clip_len: int,
) -> Heard:
    """Score a listener's recording against the talker's microphone, each on its own clock
    (:func:`on_talker_timeline`)."""
    timeline = on_talker_timeline(len(said), heard, rate_hz, heard_started_late_s)
    return score(said, timeline, rate_hz, clip_start, clip_len)


def score_spurt(
    said: Signal, heard: Signal, rate_hz: int, heard_started_late_s: float, start: int, length: int,
) -> Heard:
    """Delay and PESQ of one talk spurt of several: both signals on the talker's timeline, cut to
    a second either side of it (the delay search correlates whole signals: it must see only this
    spurt, not another)."""
    timeline = on_talker_timeline(len(said), heard, rate_hz, heard_started_late_s)
    a, b = max(0, start - rate_hz), min(len(said), start + length + rate_hz)
    return score(said[a:b], timeline[a: b + rate_hz], rate_hz, start - a, length)
