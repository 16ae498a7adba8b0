"""Measurements of the network benchmark (:mod:`bench.network`): pure functions on arrays and samples.

- :func:`on_talker_timeline` puts a listener's recording on the talker's clock (the devices'
  ``started_at`` difference), as :func:`gateway.sim.metrics.score_recording` does.
- :func:`windowed_delays`: mouth-to-ear delay over time. Every :data:`WINDOW_MS` window of what was
  said (hop :data:`HOP_MS`) whose energy is within :data:`WINDOW_RANGE_DB` of the loudest window is
  found in the recording by normalised cross-correlation over lags 0..``max_lag``; windows whose best
  correlation is under :data:`MIN_CORRELATION` (concealment, a drop in the window) are left out.
- :func:`score_utterance`: one utterance aligned (cross-correlation over the utterance with 250 ms of
  context, :func:`gateway.sim.metrics.score`), then PESQ-WB and STOI (16 kHz, pystoi) of it.
- :func:`wire_kbps`: bitrate on the wire from RTP payload octets plus :data:`WIRE_OVERHEAD_BYTES` per
  packet (RTP 12, SRTP tag 10, UDP 8, IPv4 20) over the time the packets cover.
- :func:`recovery_s`: how long after an outage a delay error settles within a tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.sim.metrics import CONTEXT_MS, score

Signal = npt.NDArray[np.int16] | npt.NDArray[np.float64]

WINDOW_MS = 200
HOP_MS = 100
WINDOW_RANGE_DB = 25.0
MIN_CORRELATION = 0.5
RTP_HEADER_BYTES = 12
SRTP_TAG_BYTES = 10
UDP_HEADER_BYTES = 8
IPV4_HEADER_BYTES = 20
WIRE_OVERHEAD_BYTES = RTP_HEADER_BYTES + SRTP_TAG_BYTES + UDP_HEADER_BYTES + IPV4_HEADER_BYTES


def on_talker_timeline(
    heard: Signal, heard_late_s: float, rate_hz: int, length: int,
) -> npt.NDArray[np.float64]:
    """``heard`` shifted so its sample i is at the talker's time i/rate; at least ``length`` long."""
    shift = round(heard_late_s * rate_hz)
    out = np.zeros(max(length, len(heard) + max(shift, 0)))
    if shift >= 0:
        out[shift: shift + len(heard)] = heard
    else:
        out[: max(0, len(heard) + shift)] = heard[-shift:]
    return out


@dataclass(frozen=True)
class DelayWindow:
    """Where one window of what was said was found in what was heard."""

    t_s: float
    """Start of the window on the talker's timeline."""
    delay_ms: float
    correlation: float


def best_lag(window: Signal, heard: Signal, max_lag: int) -> tuple[int, float]:
    """Lag 0..max_lag at which ``heard[lag:lag+len(window)]`` best matches ``window`` (normalised
    cross-correlation, so a loud stretch of ``heard`` doesn't win by level), and that correlation."""
    a = np.asarray(window, dtype=np.float64)
    n = len(a)
    b = np.zeros(n + max_lag)
    seg = np.asarray(heard[: n + max_lag], dtype=np.float64)
    b[: len(seg)] = seg
    size = 1 << (len(b) + n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)[: max_lag + 1]
    energy = np.concatenate([[0.0], np.cumsum(b * b)])
    sliding = energy[n: n + max_lag + 1] - energy[: max_lag + 1]
    norm = math.sqrt(float(np.dot(a, a))) * np.sqrt(np.maximum(sliding, 0.0))
    corr = np.where(norm > 1e-9, xc / np.maximum(norm, 1e-9), 0.0)
    lag = int(np.argmax(corr))
    return lag, float(corr[lag])


def windowed_delays(
    said: Signal, heard: Signal, rate_hz: int, spans: Iterable[tuple[int, int]], max_lag_ms: float,
    window_ms: float = WINDOW_MS, hop_ms: float = HOP_MS, range_db: float = WINDOW_RANGE_DB,
    min_correlation: float = MIN_CORRELATION,
) -> list[DelayWindow]:
    """Delay of every loud-enough window of ``said`` inside ``spans`` (sample ranges), both signals
    on one timeline."""
    x = np.asarray(said, dtype=np.float64)
    n = round(window_ms * rate_hz / 1000)
    hop = round(hop_ms * rate_hz / 1000)
    max_lag = round(max_lag_ms * rate_hz / 1000)
    starts = [s for a, b in spans for s in range(a, b - n + 1, hop)]
    if not starts:
        return []
    energies = np.array([float(np.mean(x[s: s + n] ** 2)) for s in starts])
    loudest = float(energies.max())
    if loudest <= 0:
        return []
    floor = loudest * 10 ** (-range_db / 10)
    out = []
    for s, e in zip(starts, energies, strict=True):
        if e < floor:
            continue
        lag, corr = best_lag(x[s: s + n], heard[s: s + n + max_lag], max_lag)
        if corr >= min_correlation:
            out.append(DelayWindow(s / rate_hz, lag * 1000 / rate_hz, corr))
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (linear), None for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


@dataclass(frozen=True)
class UtteranceScore:
    """How one utterance was heard."""

    name: str
    delay_ms: float | None
    pesq: float | None
    stoi: float | None


def score_utterance(
    said: Signal, heard: Signal, rate_hz: int, name: str, start: int, length: int, max_lag_ms: float,
) -> UtteranceScore:
    """Align one utterance (with :data:`gateway.sim.metrics.CONTEXT_MS` of context each side), then
    PESQ-WB and STOI of it; both signals on one timeline."""
    pad = rate_hz * CONTEXT_MS // 1000
    a, b = max(0, start - pad), min(len(said), start + length + pad)
    max_lag = round(max_lag_ms * rate_hz / 1000)
    sent = np.asarray(said[a:b], dtype=np.float64)
    got = np.zeros(b - a + max_lag)
    seg = np.asarray(heard[a: b + max_lag], dtype=np.float64)
    got[: len(seg)] = seg
    result = score(sent, got, rate_hz, start - a, length, max_delay_ms=round(max_lag_ms))
    if result.delay_ms is None:
        return UtteranceScore(name, None, None, None)
    lag = round(result.delay_ms * rate_hz / 1000)
    return UtteranceScore(name, result.delay_ms, result.pesq, stoi_score(sent, got[lag: lag + len(sent)],
                                                                       rate_hz))


def stoi_score(ref: Signal, deg: Signal, rate_hz: int) -> float | None:
    """STOI of ``deg`` against ``ref`` (pystoi, classic STOI); None without pystoi or on failure."""
    try:
        from pystoi import stoi
    except ImportError:
        return None
    try:
        return float(stoi(np.asarray(ref, dtype=np.float64), np.asarray(deg, dtype=np.float64), rate_hz,
                          extended=False))
    except Exception:  # pystoi raises on signals with no speech frames
        return None


def wire_kbps(packets: int, payload_octets: int, frame_ms: float,
              overhead_bytes: int = WIRE_OVERHEAD_BYTES) -> float | None:
    """kbit/s on the wire while sending: every packet's payload plus ``overhead_bytes``, over the
    audio time the packets cover (one frame each); None for no packets."""
    if packets <= 0:
        return None
    bits = 8 * (payload_octets + packets * overhead_bytes)
    return bits / (packets * frame_ms / 1000) / 1000


def recovery_s(points: Sequence[tuple[float, float | None]], from_s: float, tolerance: float,
               hold_s: float) -> float | None:
    """Seconds from ``from_s`` to the first point at or after it from which every point for
    ``hold_s`` has an error (``None`` = not measurable yet, e.g. nothing playing) within
    ``tolerance``; None if that never happens."""
    after = [(t, e) for t, e in points if t >= from_s]
    for i, (t, _) in enumerate(after):
        span = [e for u, e in after[i:] if u <= t + hold_s]
        if after[-1][0] < t + hold_s:
            return None  # too close to the end to tell
        if all(e is not None and abs(e) <= tolerance for e in span):
            return t - from_s
    return None


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are there, None if none are."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None
