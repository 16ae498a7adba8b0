"""Noise suppression at 16 kHz: STFT analysis, a noise estimate that tracks non-stationary noise,
decision-directed a-priori SNR, an OM-LSA gain with a floor, and overlap-add synthesis.

Everything is float32: numpy's exp and log are vectorised for it and twice as fast as for float64.

Framing. Hops of 10 ms (160 samples) analysed with a 256-sample window whose ends are quarter-sine
tapers 96 samples long and whose middle is flat (the framing WebRTC's suppressor uses). Analysis and
synthesis use the same window and ``rise² + fall² = 1`` over the 96 overlapping samples, so an
all-pass gain reconstructs the input exactly, and a sample is final 96 samples (6 ms) after it came
in: that is all the latency this stage adds. A 20 ms block is two hops, transformed together.

Noise estimate. The speech-presence-probability MMSE estimator of Gerkmann & Hendriks, "Unbiased
MMSE-Based Noise Power Estimation With Low Complexity and Low Tracking Delay" (IEEE TASLP 20(4),
2012): a fixed-prior posterior probability of speech per bin, the expected noise power given it,
and first-order smoothing. Unlike minimum statistics it follows moderately rising noise within a few
hundred milliseconds instead of 1-2 s, with no bias compensation to tune, and it costs a handful of
vector operations per hop. After a jump of 10 dB or more (a generator starting) every bin looks like
speech and the estimate would stall; a minimum-statistics lower bound over ~3 s frees it (all of the
noise estimate is within 3 dB of the new level 3 s after a 20 dB step).

Gain. Ephraim & Malah's log-spectral-amplitude estimator with Ephraim's decision-directed a-priori
SNR (weight 0.9, floored at strength + 5 dB below 0 dB), weighted by the conditional speech presence
probability as in Cohen's OM-LSA (``G = G_LSA^p · G_min^(1-p)``), with the a-priori probability of
speech absence per bin estimated from the a-priori SNR averaged over neighbouring bins (Cohen,
"Speech enhancement for non-stationary noise environments", Signal Processing 81, 2001), and
never below ``G_min``: noise-only bins settle at a steady attenuation, so the residual keeps the
noise's own colour instead of twittering (musical noise). ``max_attenuation_db`` is ``G_min``, the
port's "strength".

The per-hop a-posteriori and a-priori SNRs are also what :mod:`gateway.dsp.vad` decides on, so the
detector costs almost nothing beyond this stage: :attr:`NoiseSuppressor.hop_llr` holds, per hop of
the last block, the log likelihood ratio of speech (Sohn, Kim & Sung, 1999) averaged over each of
five sub-bands between 200 Hz and 4 kHz, and the highest of them.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import uniform_filter1d

try:
    # numpy >= 2.0 computes FFTs with these gufuncs; np.fft.rfft/irfft wrap them in Python-level
    # checks that cost as much as the 256-point transform itself (13 µs against 6 here), twice per
    # block. Same results (a test compares); the public functions remain the fallback.
    # https://github.com/numpy/numpy/blob/v2.0.0/numpy/fft/_pocketfft.py (_raw_fft)
    from numpy.fft._pocketfft_umath import irfft as _irfft_gufunc
    from numpy.fft._pocketfft_umath import rfft_n_even as _rfft_gufunc
except ImportError:  # pragma: no cover - older or rearranged numpy
    _rfft_gufunc = _irfft_gufunc = None
from numpy.typing import NDArray

RATE_HZ = 16000
HOP = 160
WINDOW = 256
OVERLAP = WINDOW - HOP  # 96 samples = 6 ms: the latency of this stage
BLOCK = 2 * HOP  # samples per call at 20 ms frames; at 10 ms frames a call takes one hop
BINS = WINDOW // 2 + 1

#: Fixed a-priori SNR assumed under speech presence by the noise estimator (15 dB, as in the paper).
SPP_PRIOR_SNR = 10 ** (15 / 10)
#: Noise PSD smoothing per hop (0.8 per 16 ms hop in the paper, rescaled to 10 ms hops).
NOISE_SMOOTHING = 0.8 ** (HOP / 256)
#: Decision-directed weight. 0.9 rather than the textbook 0.98: onsets come through sooner. On the
#: benchmark's quick material (HPF+NS, white/pink/hum 0-20 dB) 0.98 / 0.95 / 0.9 / 0.85 gave mean
#: PESQ gain 0.37 / 0.44 / 0.46 / 0.42 and STOI change -0.032 / -0.013 / +0.002 / +0.010.
DD_WEIGHT = 0.9
#: Band the speech likelihood is averaged over (bins of 62.5 Hz): 200 Hz to 4 kHz.
LLR_BAND = slice(3, 65)
#: Sub-bands of the likelihood (Hz): a hop's statistic is the best sub-band's mean, so a fricative
#: that lights up only 2-4 kHz counts as well as a vowel below 1 kHz. Each has at least 8 bins: with a
#: 5-bin 200-500 Hz band, its mean's chance peaks opened a hands-free gate once or twice a minute in
#: steady white or pink noise; with these, never in 60 s of white, pink or hum at three levels.
_EDGES_HZ = (200, 750, 1250, 2000, 3000, 4000)
_BAND_STARTS = np.array([round(e / 62.5) for e in _EDGES_HZ[:-1]]) - LLR_BAND.start
_BAND_SCALE = 1.0 / np.diff(np.array([round(e / 62.5) for e in _EDGES_HZ]))
_SPP_K = SPP_PRIOR_SNR / (1 + SPP_PRIOR_SNR)
#: Minimum tracking that bounds the estimate from below: smoothing per block, 6 sub-windows of
#: 480 ms (longer than unbroken speech, or speech would lift the bound: with 1.4 s, a 3 s clip of
#: dense clean speech lost 0.9 PESQ), and a bias of 0.5: it only has to bring a stagnated estimate
#: within reach, the estimator does the rest.
_MIN_SMOOTHING = 0.7
_MIN_SUB_BLOCKS = 24
_MIN_SUBWINDOWS = 6
_MIN_BIAS = 0.5
#: Blocks (20 ms) whose plain average seeds the noise estimate.
_WARMUP_BLOCKS = 5
#: The two hops' weights in the noise update done once per block: a·(1-a) and (1-a).
_TWO_HOP_WEIGHTS = np.array([NOISE_SMOOTHING * (1 - NOISE_SMOOTHING), 1 - NOISE_SMOOTHING], np.float32)
_E1_C = float(np.exp(-np.euler_gamma))
#: Cohen's a-priori speech absence estimate: the averaged a-priori SNR's range from absent to
#: present (-10 to -5 dB; Cohen ramps in the log domain, a linear ramp saves two calls) and the
#: largest absence probability.
_ZETA_MIN = 10 ** (-10 / 10)
_ZETA_MAX = 10 ** (-5 / 10)
_Q_MAX = 0.95


def _window() -> NDArray[np.float64]:
    n = np.arange(OVERLAP) + 0.5
    rise = np.sin(np.pi / 2 * n / OVERLAP)
    fall = np.cos(np.pi / 2 * n / OVERLAP)
    return np.concatenate([rise, np.ones(HOP - OVERLAP), fall])


class NoiseSuppressor:
    """Per-port noise suppression on blocks of one or two 10 ms hops of float audio at 16 kHz
    (6 ms latency).

    Two hops a call (20 ms blocks, the default) halves the per-call overhead that dominates the
    cost; one hop a call is for 10 ms codec frames, where waiting for a second hop would add 10 ms
    of delay and send packets in pairs.
    """

    latency_samples = OVERLAP

    def __init__(self, max_attenuation_db: float = 20.0, suppress: bool = True, hops: int = 2) -> None:
        if hops not in (1, 2):
            raise ValueError(f"hops must be 1 or 2, got {hops}")
        self.gain_floor = 10 ** (-max_attenuation_db / 20)
        self.suppress = suppress
        """False: analyse only (for the VAD) and pass audio through untouched, with no latency."""
        self.hops = hops
        self.block = hops * HOP
        """Samples per call."""
        f32 = np.float32
        self.window = _window().astype(f32)
        self._history = np.zeros(OVERLAP + self.block, f32)  # last OVERLAP inputs, then the new block
        self._tail = np.zeros(OVERLAP, f32)  # synthesis overlap carried to the next block
        self._frames = np.empty((hops, WINDOW), f32)
        self._frame_views = sliding_window_view(self._history, WINDOW)[::HOP]
        self._spectra = np.empty((hops, BINS), np.complex64)
        self._synth = np.empty((hops, WINDOW), f32)
        self._local = np.empty((hops, BINS), f32)
        self._wide = np.empty((hops, BINS), f32)
        self._out = np.zeros(self.block, dtype=np.float32)
        self._noise = np.zeros(BINS, f32)
        self._prev_clean = np.zeros(BINS, f32)  # DD·|G·Y|²/noise of the last hop, for xi
        self._gains = np.ones((hops, BINS), f32)
        # Per-call constants for the hop count: the noise update's weights (for two hops a·(1-a)
        # and (1-a), one update per block), the minimum tracker's smoothing (0.7 per 20 ms) and
        # its sub-window length, and the warm-up, so both block sizes follow the same time constants.
        self._noise_decay = NOISE_SMOOTHING**hops
        self._hop_weights = _TWO_HOP_WEIGHTS[2 - hops:].copy()
        min_smoothing = _MIN_SMOOTHING ** (hops / 2)
        self._min_smoothing = min_smoothing
        self._sub_calls = _MIN_SUB_BLOCKS * 2 // hops
        self._warmup_calls = _WARMUP_BLOCKS * 2 // hops
        self._blocks = 0
        self._smoothed_power = np.zeros(BINS, f32)
        self._sub_min = np.full(BINS, np.inf, f32)
        self._sub_mins = np.zeros((_MIN_SUBWINDOWS, BINS), f32)
        self._sub_index = 0
        self._sub_count = 0
        self._window_min = np.zeros(BINS, f32)
        self._log_floor = float(np.log(self.gain_floor))
        # The a-priori SNR floor sets how far the LSA gain pulls noise-only bins down; it follows the
        # strength (-25 dB at the default 20 dB) and the gain floor bounds the result.
        self._xi_min = 10 ** (-(max_attenuation_db + 5) / 10)
        self._hop_pair = np.array([(1 - min_smoothing) / hops] * hops, f32)
        self.hop_llr = np.zeros(hops)
        """Per hop of the last block: the highest sub-band mean log likelihood ratio of speech."""

    @property
    def noise_psd(self) -> NDArray[np.float32]:
        """The current noise power estimate per bin (|X|² units of the unnormalised FFT)."""
        return self._noise

    def process(self, block: NDArray[np.float32]) -> NDArray[np.float32]:
        """Take exactly :attr:`block` samples, return the same number (6 ms later when suppressing)."""
        h = self._history
        h[OVERLAP:] = block
        np.multiply(self._frame_views, self.window, out=self._frames)
        h[:OVERLAP] = h[self.block:]
        spectra = self._spectra
        if _rfft_gufunc is not None:
            _rfft_gufunc(self._frames, 1.0, out=spectra)
        else:  # pragma: no cover
            spectra[:] = np.fft.rfft(self._frames)
        power = np.abs(spectra)
        np.square(power, out=power)
        power += 1e-10
        self._analyse(power)
        if not self.suppress:
            self._out[:] = block
            return self._out
        spectra *= self._gains
        frames = self._synth
        if _irfft_gufunc is not None:
            _irfft_gufunc(spectra, 1.0 / WINDOW, out=frames)
        else:  # pragma: no cover
            frames[:] = np.fft.irfft(spectra, WINDOW)
        frames *= self.window
        out = self._out
        out[:OVERLAP] = self._tail + frames[0, :OVERLAP]
        out[OVERLAP:HOP] = frames[0, OVERLAP:HOP]
        if self.hops == 2:
            out[HOP: HOP + OVERLAP] = frames[0, HOP:] + frames[1, :OVERLAP]
            out[HOP + OVERLAP:] = frames[1, OVERLAP:HOP]
        self._tail[:] = frames[-1, HOP:]
        return out

    def _floor_from_minimum(self, power: NDArray[np.float32], noise: NDArray[np.float32]) -> None:
        """Keep the estimate above the recent minimum of the smoothed power (a stagnation fix).

        The presence-probability estimator trusts its own estimate: after a sudden rise of the
        noise by 10 dB or more (a generator starting) every bin looks like speech and the estimate
        creeps up slowly. The minimum of the smoothed power over the last ~2.9 s (minimum
        statistics, Martin 2001, in 6 sub-windows of 480 ms) is a lower bound of the noise that
        follows such a rise within that time, so the estimate is not allowed below half of it.
        """
        smoothed = self._smoothed_power
        smoothed *= self._min_smoothing
        smoothed += np.dot(self._hop_pair, power)
        np.minimum(self._sub_min, smoothed, out=self._sub_min)
        self._sub_count += 1
        if self._sub_count == self._sub_calls:
            self._sub_count = 0
            self._sub_mins[self._sub_index] = self._sub_min
            self._sub_index = (self._sub_index + 1) % _MIN_SUBWINDOWS
            self._sub_min[:] = smoothed
            np.min(self._sub_mins, axis=0, out=self._window_min)
            self._window_min *= _MIN_BIAS
        np.maximum(noise, self._window_min, out=noise)

    def _analyse(self, power: NDArray[np.float32]) -> None:
        """Noise update, a-priori SNR, likelihoods and gains for the block's hops at once.

        Written for few numpy calls: on 2 x 129 values each call's overhead, not its arithmetic, is
        the cost, so expressions are fused and work is done in place.
        """
        noise = self._noise
        if self._blocks < self._warmup_calls:
            # Start from the plain average of the first hops: one periodogram is too ragged a start
            # (bins that began low would read as speech until the minimum bound freed them).
            hops = self.hops
            n = hops * self._blocks
            noise *= n / (n + hops)
            noise += (power[0] + power[1] if hops == 2 else power[0]) / (n + hops)
            self._blocks += 1
        # Both hops see the noise estimate and the decision-directed history from the start of the
        # block (10 ms stale for the second hop, a fraction of either's own time constant), which
        # keeps every step vectorised over the two hops.
        gamma = power / noise
        # Noise update (Gerkmann & Hendriks 2012, eqs. 8, 11, 12): speech presence probability with
        # a fixed 15 dB prior SNR, the expected noise power given it, first-order smoothing. The
        # paper's stagnation guard (presence capped at 0.99 once it has looked like speech for a
        # while) is left out: 1 % of a loud vowel in clean speech is 30 dB above the noise, and it
        # lifted the estimate by 34 dB within 200 ms here. The minimum bound below does that job.
        spp = np.exp(gamma * -_SPP_K)
        spp *= 1 + SPP_PRIOR_SNR
        spp += 1
        np.reciprocal(spp, out=spp)
        expected = power - noise
        expected *= spp
        np.subtract(power, expected, out=expected)
        noise *= self._noise_decay
        noise += np.dot(self._hop_weights, expected)
        self._floor_from_minimum(power, noise)
        # Decision-directed a-priori SNR xi.
        xi = gamma - 1
        np.maximum(xi, 0, out=xi)
        xi *= 1 - DD_WEIGHT
        xi += self._prev_clean
        np.maximum(xi, self._xi_min, out=xi)
        one_xi = xi + 1
        ratio = xi / one_xi
        v = ratio * gamma
        log_one_xi = np.log(one_xi)
        llr = v[:, LLR_BAND] - log_one_xi[:, LLR_BAND]
        bands = np.add.reduceat(llr, _BAND_STARTS, axis=1)
        bands *= _BAND_SCALE
        np.max(bands, axis=1, out=self.hop_llr)
        # LSA gain: log G = log(xi/(1+xi)) + E1(v)/2, with E1(v) ~ exp(-v)·ln(1 + e^-γ/v) (within
        # 0.5 dB of the exact gain; scipy's exp1 alone costs 50 µs a block here).
        exp_v = np.exp(np.negative(v))
        log_gain = np.divide(_E1_C, v)
        np.log1p(log_gain, out=log_gain)
        log_gain *= exp_v
        log_gain *= 0.5
        log_gain += np.log(ratio)
        np.minimum(log_gain, 0.0, out=log_gain)
        # OM-LSA: speech presence p weights it against the floor, G = G_LSA^p · G_min^(1-p), with
        # 1/p = 1 + q/(1-q)·(1+xi)·exp(-v) and the a-priori absence q per bin as Cohen estimates
        # it: the a-priori SNR averaged over 3 bins (local) and 31 bins (global); where neither
        # rises from -10 to -5 dB speech is taken as absent (q up to 0.95), where both do, present.
        local = uniform_filter1d(xi, 3, axis=1, mode="nearest", output=self._local)
        wide = uniform_filter1d(xi, 31, axis=1, mode="nearest", output=self._wide)
        for p in (local, wide):  # 0 below -10 dB, 1 above -5 dB, linear in between
            p -= _ZETA_MIN
            p *= 1 / (_ZETA_MAX - _ZETA_MIN)
            np.minimum(p, 1.0, out=p)
        np.maximum(local, 0.0, out=local)  # (the product below needs one side clamped at 0)
        local *= wide
        np.maximum(local, 1 - _Q_MAX, out=local)  # also clamps a negative ``wide``
        odds = np.reciprocal(local, out=local)
        odds -= 1
        exp_v *= one_xi
        exp_v *= odds
        exp_v += 1
        log_floor = self._log_floor
        log_gain -= log_floor
        log_gain /= exp_v
        np.maximum(log_gain, 0.0, out=log_gain)
        log_gain += log_floor
        gains = np.exp(log_gain, out=self._gains)
        # The next block's decision-directed term starts from the last hop's clean SNR.
        last = gains[-1]
        np.multiply(last, last, out=self._prev_clean)
        self._prev_clean *= gamma[-1]
        self._prev_clean *= DD_WEIGHT
