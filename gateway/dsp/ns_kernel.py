"""The noise suppressor's per-hop arithmetic, compiled with numba.

Per 10 ms hop and per bin: the noise update, the a-priori SNR, the likelihood ratio the voice
detector reads, the log-spectral-amplitude gain and the speech presence probability that weights
it. :mod:`gateway.dsp.ns` holds the framing (window, FFTs, overlap-add) and explains the method.

Why compiled: in numpy this is some seventy array operations on 145 values per hop, and each
operation's call overhead, not its arithmetic, was the cost (136 µs per 20 ms frame, against 22 µs
for speexdsp's whole preprocessor in C). As one loop it costs a few microseconds, and the loop can
do what vectorised code made awkward: update the noise and the decision-directed history hop by hop.
Compiled when this module is imported (signatures given), and cached for the next start where
:func:`gateway.dsp.compiled.compiled` finds a writable place.
"""

from __future__ import annotations

import math

import numpy as np

from gateway.dsp.compiled import compiled

#: Fixed a-priori SNR assumed under speech presence by the noise estimator (15 dB, as in the paper).
SPP_PRIOR_SNR = 10 ** (15 / 10)
_SPP_K = SPP_PRIOR_SNR / (1 + SPP_PRIOR_SNR)
_E1_C = float(np.exp(-np.euler_gamma))

#: Rows of the state array (float32, one value per bin each).
NOISE, PREV_CLEAN, SMOOTHED, SUB_MIN, WINDOW_MIN, ZETA, PREV_POWER, SUB_MINS = range(8)
#: Number of minimum-statistics sub-windows (rows SUB_MINS ... SUB_MINS + SUBWINDOWS - 1).
SUBWINDOWS = 6
STATE_ROWS = SUB_MINS + SUBWINDOWS
#: Slots of the counters array (int64).
WARM, SUB_COUNT, SUB_INDEX = range(3)


@compiled(
    "void(complex64[:, :], float32[:, :], int64[:], float64[:],"
    " float64[:], float64[:], float64[:], int64[:], float64[:])"
)
def analyse(
    spectra: np.ndarray,
    state: np.ndarray,
    counts: np.ndarray,
    params: np.ndarray,
    hop_llr: np.ndarray,
    hop_level: np.ndarray,
    hop_snr: np.ndarray,
    band_edges: np.ndarray,
    scratch: np.ndarray,
) -> None:  # pragma: no cover - compiled; its behaviour is tested through NoiseSuppressor
    """Analyse each hop's spectrum (rows of ``spectra``, oldest first) and, when the apply flag
    is set, scale it by its gains in place. Per hop, ``hop_llr`` receives the best sub-band mean log
    likelihood ratio, ``hop_level`` the power above the noise estimate over the sub-bands' span (dB,
    unnormalised FFT) and ``hop_snr`` that power over the noise there (dB); these three use the
    power averaged over the hop and the one before.

    ``params``: noise decay, 1 - noise decay, minimum smoothing, hops per sub-window, warm-up hops,
    a-priori SNR floor, log gain floor, decision-directed weight, presence smoothing, presence ramp
    start, 1 / ramp width, largest absence probability, apply (0/1), local half-width, global
    half-width, minimum bias. ``state`` (:data:`STATE_ROWS` × bins) and ``counts`` (3) carry
    everything from hop to hop. ``band_edges``: bin edges of the likelihood sub-bands, first to
    last. ``scratch``: 5 × bins + 1 float64 of working space.
    """
    decay, rise, min_smooth, sub_hops, warm_hops = params[0], params[1], params[2], params[3], params[4]
    xi_min, log_floor, dd, zeta_keep = params[5], params[6], params[7], params[8]
    ramp_lo, ramp_scale, q_max, apply = params[9], params[10], params[11], params[12] > 0
    local_w, wide_w, min_bias = int(params[13]), int(params[14]), params[15]
    bins = spectra.shape[1]
    gamma = scratch[0:bins]
    xi = scratch[bins:2 * bins]
    log_gain = scratch[2 * bins:3 * bins]
    csum = scratch[3 * bins:4 * bins + 1]
    pair = scratch[4 * bins + 1:5 * bins + 1]  # γ of the power averaged over this hop and the last
    noise = state[NOISE]
    prev = state[PREV_CLEAN]
    smoothed = state[SMOOTHED]
    sub_min = state[SUB_MIN]
    window_min = state[WINDOW_MIN]
    zeta = state[ZETA]
    prev_power = state[PREV_POWER]
    for h in range(spectra.shape[0]):
        spec = spectra[h]
        warm = counts[WARM]
        counts[SUB_COUNT] += 1
        roll = counts[SUB_COUNT] >= sub_hops
        for i in range(bins):
            p = spec[i].real * spec[i].real + spec[i].imag * spec[i].imag + 1e-10
            if warm < warm_hops:
                # The first hops' plain average seeds the estimate: one periodogram is too ragged a
                # start (bins that began low would read as speech until the minimum bound freed them).
                noise[i] = (noise[i] * warm + p) / (warm + 1)
            g = p / noise[i]
            gamma[i] = g
            pair[i] = 0.5 * (p + prev_power[i]) / noise[i]
            prev_power[i] = p
            # Noise update (Gerkmann & Hendriks 2012, eqs. 8, 11, 12): presence probability with a
            # fixed prior SNR, the expected noise power given it, first-order smoothing. The paper's
            # stagnation guard (presence capped at 0.99 once it has looked like speech for a while)
            # is left out: 1 % of a loud vowel in clean speech is 30 dB above the noise, and it
            # lifted the estimate by 34 dB within 200 ms. The minimum bound below does that job.
            spp = 1.0 / (1.0 + (1.0 + SPP_PRIOR_SNR) * math.exp(-g * _SPP_K))
            n = decay * noise[i] + rise * (p - spp * (p - noise[i]))
            # Minimum statistics bound (Martin 2001): after a rise of 10 dB or more every bin looks
            # like speech and the estimate creeps; the estimate may not fall below half the minimum
            # of the smoothed power over the last ~2.9 s (6 sub-windows of 480 ms).
            s = min_smooth * smoothed[i] + (1.0 - min_smooth) * p
            smoothed[i] = s
            if s < sub_min[i]:
                sub_min[i] = s
            noise[i] = max(n, window_min[i])
            # Decision-directed a-priori SNR.
            x = dd * prev[i] + (1.0 - dd) * max(g - 1.0, 0.0)
            x = max(x, xi_min)
            xi[i] = x
            # Time-smoothed a-priori SNR for the presence probability.
            zeta[i] = zeta_keep * zeta[i] + (1.0 - zeta_keep) * x
        if warm < warm_hops:
            counts[WARM] = warm + 1
        if roll:
            counts[SUB_COUNT] = 0
            row = SUB_MINS + counts[SUB_INDEX]
            counts[SUB_INDEX] = (counts[SUB_INDEX] + 1) % SUBWINDOWS
            for i in range(bins):
                state[row, i] = sub_min[i]
                sub_min[i] = smoothed[i]
                m = state[SUB_MINS, i]
                for r in range(1, SUBWINDOWS):
                    m = min(m, state[SUB_MINS + r, i])
                window_min[i] = m * min_bias
        # Likelihood ratio (Sohn et al. 1999) per sub-band; the hop's statistic is the best band.
        best = -1e30
        excess = 1e-10
        for b in range(band_edges.shape[0] - 1):
            acc = 0.0
            for i in range(band_edges[b], band_edges[b + 1]):
                x = xi[i]
                g = pair[i]
                acc += x / (1.0 + x) * g - math.log1p(x)
            best = max(best, acc / (band_edges[b + 1] - band_edges[b]))
        hop_llr[h] = best
        floor = 1e-10
        for i in range(band_edges[0], band_edges[-1]):
            excess += max(pair[i] - 1.0, 0.0) * noise[i]
            floor += noise[i]
        hop_level[h] = 10.0 * math.log10(excess)
        hop_snr[h] = 10.0 * math.log10(excess / floor)
        # Cumulative sum of the smoothed a-priori SNR for the local and global averages.
        csum[0] = 0.0
        for i in range(bins):
            csum[i + 1] = csum[i] + zeta[i]
        for i in range(bins):
            x = xi[i]
            v = x / (1.0 + x) * gamma[i]
            exp_v = math.exp(-v)
            # Cohen's a-priori absence from the smoothed a-priori SNR averaged over neighbouring
            # bins (local) and a wide band (global), each ramped from absent to present.
            presence = 1.0
            for w in (local_w, wide_w):
                lo, hi = i - w, i + w
                total = csum[min(hi, bins - 1) + 1] - csum[max(lo, 0)]
                if lo < 0:
                    total += -lo * zeta[0]
                if hi > bins - 1:
                    total += (hi - bins + 1) * zeta[bins - 1]
                r = (total / (2 * w + 1) - ramp_lo) * ramp_scale
                presence *= min(max(r, 0.0), 1.0)
            presence = max(presence, 1.0 - q_max)
            odds = 1.0 / presence - 1.0
            # OM-LSA: G = G_LSA^p · G_min^(1-p), p the conditional presence probability.
            p_speech = 1.0 / (1.0 + odds * (1.0 + x) * exp_v)
            if p_speech < 1e-3:
                # The LSA gain can't lift the result by more than 0.06 dB above the floor (its log
                # is at most -log_floor above it): skip its logarithms, most bins in a pause.
                log_gain[i] = log_floor
                continue
            # Log-spectral amplitude gain: log G = log(xi/(1+xi)) + E1(v)/2, with
            # E1(v) ~ exp(-v)·ln(1 + e^-γ/v) (within 0.5 dB of the exact gain; scipy's exp1 cost
            # 50 µs a block).
            lg = math.log(x / (1.0 + x)) + 0.5 * exp_v * math.log1p(_E1_C / v)
            lg = min(lg, 0.0)
            log_gain[i] = log_floor + max(lg - log_floor, 0.0) * p_speech
        for i in range(bins):
            gain = math.exp(log_gain[i])
            prev[i] = dd * gain * gain * gamma[i]
            if apply:
                spec[i] = spec[i] * gain


@compiled("void(float32[:, :], float32[:], float32[:], float32[:])")
def overlap_add(frames: np.ndarray, window: np.ndarray, tail: np.ndarray, out: np.ndarray) -> None:
    """Window each synthesis frame (rows, one per hop) and overlap-add them into ``out``, with the
    previous call's ``tail`` in front; the last frame's overlap becomes the new ``tail``.
    """  # pragma: no cover - compiled
    hop = out.shape[0] // frames.shape[0]
    overlap = tail.shape[0]
    for h in range(frames.shape[0]):
        base = h * hop
        for j in range(hop):
            y = frames[h, j] * window[j]
            if j < overlap:
                y += tail[j]
            out[base + j] = y
        for j in range(overlap):
            tail[j] = frames[h, hop + j] * window[hop + j]


@compiled("void(float32[:], float32[:], float32[:], float32[:, :])")
def frame_in(block: np.ndarray, history: np.ndarray, window: np.ndarray, frames: np.ndarray) -> None:
    """Append ``block`` to the ``history`` of the last inputs and cut the windowed analysis frames
    (one per hop) from them; ``history`` then holds the inputs the next block's frames reach back to.
    """  # pragma: no cover - compiled
    overlap = history.shape[0]
    hop = block.shape[0] // frames.shape[0]
    size = frames.shape[1]
    for h in range(frames.shape[0]):
        start = h * hop  # frame h covers inputs [start, start + size) of history + block
        for j in range(size):
            k = start + j
            x = history[k] if k < overlap else block[k - overlap]
            frames[h, j] = x * window[j]
    n = block.shape[0]
    for j in range(overlap):  # the newest ``overlap`` inputs
        k = n + j
        history[j] = history[k] if k < overlap else block[k - overlap]
