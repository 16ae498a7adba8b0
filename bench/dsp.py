"""DSP benchmark: our uplink chain against speexdsp and WebRTC on the same real speech and noise.

Run ``.venv/bin/python -m bench.dsp [--json PATH] [--quick] [--jobs N] [--ours-passthrough]``.
It is not a test: it prints tables, PASS/FAIL lines for the targets, and writes every figure to JSON
(default ``bench/results/dsp.json``).

Material (:mod:`bench.dsp_material`): each shared speech clip padded with 0.8 s of silence each side,
at -26 dBFS active level, mixed with seeded white, pink, babble and machinery-hum noise at 0, 5, 10
and 20 dB SNR; ground truth per 10 ms frame from the clean clip by the rule stated there (and
printed). Default: ``speech.wav`` and six Harvard clips; ``--quick``: ``speech.wav`` and two.

Quality. PESQ wideband of the noisy mix and of each system's output against the clean clip, and
the gain (processed − noisy). STOI against the clean clip over the ground-truth speech frames only,
both signals cut the same way: the Harvard clips hold a ~3 s pause whose recording noise sits within
STOI's own 40 dB silence range, and scored whole a 20 dB mix reads 0.47 instead of 0.98. Each
system's delay is measured by cross-correlation (:func:`bench.dsp_baselines.measure_delay`) and
taken out before scoring.

Voice detection. Our detector and WebRTC VAD (modes 0-3) on the noisy mix, frame by frame against
the ground truth: accuracy, speech-miss rate, false-alarm rate, counts pooled over clips per cell.

Cost (:mod:`bench.dsp_cost`). µs per 20 ms frame (median over 500 frames after 50 of warm-up, fed
noisy speech), in this
process before the quality workers start, every item timed on frame i before any on frame i+1 so
that a busy moment of the machine hits ours and the baselines alike. Latency: speech in light noise
streamed through ``UplinkChain`` at 16 and 48 kHz, delay = peak of the output/input cross-correlation
at 16 kHz (speech, not an impulse: the suppressor may take a lone click for noise).

speexdsp through pyspeex-noise 2.x: its binding hands ``SPEEX_PREPROCESS_SET_AGC_LEVEL`` a pointer to
a C ``double`` where speexdsp reads a ``float``, so the AGC target it sets is 0.0 and with
``auto_gain > 0`` the output sinks to a few LSB (https://github.com/rhasspy/pyspeex-noise,
``src/speex_noise.cpp``, ``mod_create_speex_noise``). Both configurations are run: ``speex``
(auto_gain 4000, noise_suppression -30, as specified) and ``speex-noAGC`` (auto_gain 0); every
target that names speex is checked against whichever of the two is harder to beat.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench import dsp_baselines as base
from bench import dsp_material as mat
from bench.dsp_cost import run_cost, run_latency

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "dsp.json"
DEFAULT_CLIPS = ("speech.wav", "or105.wav", "or109.wav", "or114.wav", "or129.wav", "or134.wav", "or137.wav")
QUICK_CLIPS = ("speech.wav", "or105.wav", "or109.wav")
TARGET_NOISES = ("white", "pink", "hum")

NS_SYSTEMS = ("ours", "ours-noAGC", "speex", "speex-noAGC",
              *(f"webrtc-ns{lv}" for lv in base.WEBRTC_NS_LEVELS))
NS_OURS = "ours-noAGC"
"""What the noise-suppression targets are checked on: our chain without its AGC (high-pass, noise
suppression, limiter), like for like with the baselines' suppressors, which run without AGC too
(speex-noAGC; WebRTC NS with auto gain 0). The full chain is reported beside it."""
VAD_SYSTEMS = ("ours", *(f"webrtc-vad{m}" for m in base.WEBRTC_VAD_MODES))

Audio = npt.NDArray[np.float64]
Record = dict[str, Any]


# --- Our implementation, by contract --------------------------------------------------------------


def ours(passthrough: bool, agc: bool = True) -> tuple[base.Processor, Callable[[Audio], list[int]], str]:
    """(process, vad, label) for our chain; a pass-through stand-in when asked or not importable.

    ``agc=False`` is the chain without its level stage (high-pass, noise suppression, limiter): the
    like-for-like comparison with the baselines' noise suppression, which run without AGC too.
    """
    if not passthrough:
        try:
            import dataclasses

            from gateway.config import DspSettings
            from gateway.dsp.offline import process_array, vad_array
        except ImportError as exc:
            print(f"note: our chain not importable ({exc}); scoring a pass-through instead", file=sys.stderr)
        else:
            settings = dataclasses.replace(DspSettings(), agc=agc)

            def process(x: Audio) -> Audio:
                y = process_array(x.astype(np.float32), mat.RATE_HZ, settings)
                return np.asarray(y, dtype=np.float64)

            def vad(x: Audio) -> list[int]:
                return list(vad_array(x.astype(np.float32), mat.RATE_HZ, settings))

            return process, vad, "gateway.dsp (DspSettings defaults)"
    return (lambda x: x.copy()), (lambda x: [0] * (len(x) // mat.FRAME)), "pass-through stand-in"


def processors(passthrough: bool) -> dict[str, base.Processor]:
    """Every noise-suppressing system by name."""
    procs: dict[str, base.Processor] = {
        "ours": ours(passthrough)[0],
        "ours-noAGC": ours(passthrough, agc=False)[0],
        "speex": base.speex,
        "speex-noAGC": base.speex_no_agc,
    }
    for level in base.WEBRTC_NS_LEVELS:
        procs[f"webrtc-ns{level}"] = base.webrtc_ns(level)
    return procs


# --- Quality, in worker processes ---------------------------------------------------------------


def _speech_only(x: Audio, truth: mat.Mask) -> Audio:
    frames = x[: len(truth) * mat.FRAME].reshape(len(truth), mat.FRAME)
    return frames[truth].ravel()


def _pesq(ref: Audio, deg: Audio) -> float | None:
    from pesq import pesq

    try:
        return float(pesq(mat.RATE_HZ, ref, deg, "wb"))
    except Exception:  # the pesq package raises its own NoUtterancesError etc. on silent input
        return None


def _stoi(ref: Audio, deg: Audio, truth: mat.Mask) -> float:
    from pystoi import stoi

    return float(stoi(_speech_only(ref, truth), _speech_only(deg, truth), mat.RATE_HZ, extended=False))


def _vad_counts(decisions: list[int], truth: mat.Mask) -> dict[str, int]:
    n = min(len(decisions), len(truth))
    d = np.asarray(decisions[:n], dtype=bool)
    t = truth[:n]
    return {"hit": int((d & t).sum()), "miss": int((~d & t).sum()), "fa": int((d & ~t).sum()),
            "rejected": int((~d & ~t).sum())}


def score_clip(clip_index: int, clip: str, noise_kind: str, delays: dict[str, int],
               passthrough: bool) -> list[Record]:
    """Every figure for one clip in one noise, at every SNR."""
    folder = mat.speech_dir()
    sig = mat.speech_signal(folder, clip)
    noise = mat.noise(noise_kind, len(sig.clean), clip_index, folder, clip)
    procs = processors(passthrough)
    our_vad = ours(passthrough)[1]
    records = []
    for snr in mat.SNRS_DB:
        mix, ref = mat.mix_at_snr(sig.clean, noise, sig.truth, snr)
        pesq = {"noisy": _pesq(ref, mix)}
        stoi = {"noisy": _stoi(ref, mix, sig.truth)}
        for name, proc in procs.items():
            y = base.align(proc(mix), delays[name])
            pesq[name] = _pesq(ref, y)
            stoi[name] = _stoi(ref, y, sig.truth)
        vad = {"ours": _vad_counts(our_vad(mix), sig.truth)}
        for mode in base.WEBRTC_VAD_MODES:
            vad[f"webrtc-vad{mode}"] = _vad_counts(base.webrtc_vad(mix, mode), sig.truth)
        records.append({"clip": clip, "noise": noise_kind, "snr_db": snr,
                        "measured_snr_db": round(mat.snr_db(ref, mix, sig.truth), 3),
                        "pesq": pesq, "stoi": stoi, "vad": vad})
    return records


def _score_task(args: tuple[int, str, str, dict[str, int], bool]) -> list[Record]:
    return score_clip(*args)


def run_quality(clips: Iterable[str], delays: dict[str, int], passthrough: bool, jobs: int) -> list[Record]:
    """Score every clip × noise × SNR, ``jobs`` processes at a time."""
    tasks = [(i, clip, kind, delays, passthrough) for i, clip in enumerate(clips) for kind in mat.NOISES]
    if jobs <= 1:
        return [r for t in tasks for r in _score_task(t)]
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        return [r for rs in pool.map(_score_task, tasks) for r in rs]


# --- Aggregation --------------------------------------------------------------------------------


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _rates(c: dict[str, int]) -> dict[str, float]:
    speech, quiet = c["hit"] + c["miss"], c["fa"] + c["rejected"]
    return {"accuracy": 100 * (c["hit"] + c["rejected"]) / max(1, speech + quiet),
            "miss": 100 * c["miss"] / max(1, speech), "false_alarm": 100 * c["fa"] / max(1, quiet)}


def aggregate(records: list[Record]) -> list[Record]:
    """One row per (noise, SNR): means over clips (PESQ, STOI) and pooled counts (VAD)."""
    cells = []
    for kind in mat.NOISES:
        for snr in mat.SNRS_DB:
            rs = [r for r in records if r["noise"] == kind and r["snr_db"] == snr]
            if not rs:
                continue
            cell: Record = {"noise": kind, "snr_db": snr, "clips": len(rs),
                            "noisy_pesq": _mean(r["pesq"]["noisy"] for r in rs),
                            "noisy_stoi": _mean(r["stoi"]["noisy"] for r in rs),
                            "pesq": {}, "pesq_gain": {}, "stoi": {}, "stoi_change": {}, "vad": {}}
            for s in NS_SYSTEMS:
                cell["pesq"][s] = _mean(r["pesq"][s] for r in rs)
                cell["pesq_gain"][s] = _mean(_diff(r["pesq"][s], r["pesq"]["noisy"]) for r in rs)
                cell["stoi"][s] = _mean(r["stoi"][s] for r in rs)
                cell["stoi_change"][s] = _mean(r["stoi"][s] - r["stoi"]["noisy"] for r in rs)
            for s in VAD_SYSTEMS:
                counts = {k: sum(r["vad"][s][k] for r in rs) for k in ("hit", "miss", "fa", "rejected")}
                cell["vad"][s] = {**counts, **_rates(counts)}
            cells.append(cell)
    return cells


def _over(cells: list[Record], noises: Iterable[str], *path: str) -> float | None:
    """Mean over the cells of ``noises`` of the figure at ``path`` (e.g. "pesq_gain", "ours")."""
    wanted = set(noises)
    values = []
    for c in cells:
        if c["noise"] in wanted:
            v: Any = c
            for key in path:
                v = v[key]
            values.append(v)
    return _mean(values)


def summarise(cells: list[Record]) -> Record:
    """Means over the targeted noises (and babble, and all), best baseline settings, and ratios."""
    groups = {"white+pink+hum": TARGET_NOISES, "babble": ("babble",), "all": mat.NOISES}
    out: Record = {"groups": {}}
    for gname, noises in groups.items():
        g: Record = {"pesq_gain": {}, "stoi_change": {}, "vad": {}}
        for s in NS_SYSTEMS:
            g["pesq_gain"][s] = _over(cells, noises, "pesq_gain", s)
            g["stoi_change"][s] = _over(cells, noises, "stoi_change", s)
        for s in VAD_SYSTEMS:
            g["vad"][s] = {k: _over(cells, noises, "vad", s, k) for k in ("accuracy", "miss", "false_alarm")}
        out["groups"][gname] = g
    target = out["groups"]["white+pink+hum"]
    levels = [f"webrtc-ns{lv}" for lv in base.WEBRTC_NS_LEVELS]
    out["webrtc_ns_best"] = max(levels, key=lambda s: target["pesq_gain"][s] or -99.0)
    modes = [f"webrtc-vad{m}" for m in base.WEBRTC_VAD_MODES]
    out["webrtc_vad_best"] = max(modes, key=lambda s: target["vad"][s]["accuracy"] or -1.0)
    ratios: Record = {}
    for gname, g in out["groups"].items():
        ours_gain, ours_stoi = g["pesq_gain"][NS_OURS], g["stoi_change"][NS_OURS]
        r: Record = {}
        for b in ("speex", "speex-noAGC", out["webrtc_ns_best"]):
            bg = g["pesq_gain"][b]
            r[f"pesq_gain_minus_{b}"] = _diff(ours_gain, bg)
            # A ratio only means something against a baseline that helps at all.
            r[f"pesq_gain_over_{b}"] = ours_gain / bg if ours_gain is not None and bg and bg > 0 else None
            r[f"stoi_change_minus_{b}"] = _diff(ours_stoi, g["stoi_change"][b])
        best = g["vad"][out["webrtc_vad_best"]]["accuracy"]
        r["vad_accuracy_minus_webrtc_best"] = _diff(g["vad"]["ours"]["accuracy"], best)
        ratios[gname] = r
    out["ratios"] = ratios
    return out


# --- Delays ---------------------------------------------------------------------------------------


def measure_delays(passthrough: bool) -> Record:
    """Each system's own delay on speech in white noise at 20 dB SNR (what scoring then removes)."""
    folder = mat.speech_dir()
    sig = mat.speech_signal(folder, "or105.wav")
    noise = mat.noise("white", len(sig.clean), 99, folder, "or105.wav")
    probe, _ = mat.mix_at_snr(sig.clean, noise, sig.truth, 20)
    out: Record = {}
    for name, proc in processors(passthrough).items():
        lag, corr = base.measure_delay(proc, probe)
        out[name] = {"samples": lag, "ms": lag * 1000 / mat.RATE_HZ, "correlation": round(corr, 3)}
    return out


# --- Targets ------------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def check_targets(cells: list[Record], summary: Record, cost: Record, latency: Record) -> list[Record]:
    """The issue's targets, each with its verdict and the numbers behind it."""
    checks: list[Record] = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        checks.append({"target": name, "result": "SKIP" if ok is None else ("PASS" if ok else "FAIL"),
                       "detail": detail})

    g = summary["groups"]["white+pink+hum"]
    wbest = summary["webrtc_ns_best"]
    baselines = {b: g["pesq_gain"][b] for b in ("speex", "speex-noAGC", wbest)}
    best = max(baselines, key=lambda b: baselines[b] if baselines[b] is not None else -99.0)
    ours_gain, best_gain = g["pesq_gain"][NS_OURS], baselines[best]
    add("NS: mean PESQ gain (white/pink/hum, 0-20 dB) >= best baseline",
        None if ours_gain is None or best_gain is None else ours_gain >= best_gain,
        f"{NS_OURS} {_fmt(ours_gain, '+.3f')} vs {best} {_fmt(best_gain, '+.3f')} "
        f"(full chain with AGC {_fmt(g['pesq_gain']['ours'], '+.3f')})")
    stoi = g["stoi_change"][NS_OURS]
    add("NS: mean STOI change of ours >= 0", None if stoi is None else stoi >= 0,
        f"{NS_OURS} {_fmt(stoi, '+.4f')} (full chain with AGC {_fmt(g['stoi_change']['ours'], '+.4f')})")
    worst: tuple[float, str] | None = None
    for c in cells:
        if c["noise"] in TARGET_NOISES and c["snr_db"] in (5.0, 10.0):
            sp = max((c["pesq_gain"][b] for b in ("speex", "speex-noAGC") if c["pesq_gain"][b] is not None),
                     default=None)
            margin = _diff(c["pesq_gain"][NS_OURS], sp)
            if margin is not None and (worst is None or margin < worst[0]):
                worst = (margin, f"{c['noise']} {c['snr_db']:.0f} dB")
    add("NS: ours >= speex PESQ gain in every white/pink/hum cell at 5 and 10 dB",
        None if worst is None else worst[0] >= 0,
        "no cells" if worst is None
        else f"smallest margin {worst[0]:+.3f} ({worst[1]}; vs the better speex config)")
    vbest = summary["webrtc_vad_best"]
    acc, bacc = g["vad"]["ours"]["accuracy"], g["vad"][vbest]["accuracy"]
    add("VAD: mean accuracy (white/pink/hum, 0-20 dB) >= WebRTC VAD best mode + 3 points",
        None if acc is None or bacc is None else acc >= bacc + 3,
        f"ours {_fmt(acc, '.1f')} % vs {vbest} {_fmt(bacc, '.1f')} % + 3")
    tcells = [c for c in cells if c["noise"] in TARGET_NOISES]
    if tcells:
        fa = max(tcells, key=lambda c: c["vad"]["ours"]["false_alarm"])
        add("VAD: false alarms <= 5 % in every white/pink/hum cell", fa["vad"]["ours"]["false_alarm"] <= 5,
            f"worst {fa['vad']['ours']['false_alarm']:.1f} % ({fa['noise']} {fa['snr_db']:.0f} dB)")
    c20 = [c for c in tcells if c["snr_db"] == 20.0]
    if c20:
        miss = max(c20, key=lambda c: c["vad"]["ours"]["miss"])
        add("VAD: speech miss <= 5 % at 20 dB (white/pink/hum)", miss["vad"]["ours"]["miss"] <= 5,
            f"worst {miss['vad']['ours']['miss']:.1f} % ({miss['noise']})")
    items = cost["items"]
    chain = items.get("ours: chain from 48 kHz")
    speex_us = min(items[k]["median_us"] for k in items if k.startswith("speex"))
    add("Cost: chain from 48 kHz <= 6 x speexdsp preprocessor",
        None if chain is None else chain["median_us"] <= 6 * speex_us,
        "not timed" if chain is None else
        f"{chain['median_us']:.1f} µs vs 6 × {speex_us:.1f} = {6 * speex_us:.1f} µs (faster speex config)")
    mixer = items.get("mixer 32 sources × 8 ports")
    add("Cost: mixer 32 sources × 8 ports <= 150 µs", None if mixer is None else mixer["median_us"] <= 150,
        "gateway.dsp.mixer absent" if mixer is None else f"{mixer['median_us']:.1f} µs")
    for key in ("from_16k", "from_48k"):
        lat = latency.get(key)
        add(f"Latency: UplinkChain {key.replace('_', ' ')} <= 10 ms",
            None if lat is None else lat["delay_ms"] <= 10,
            latency.get("note", "") if lat is None
            else f"{lat['delay_ms']:.2f} ms (correlation {lat['correlation']})")
    return checks


# --- Report -------------------------------------------------------------------------------------


def print_report(cells: list[Record], summary: Record, cost: Record, latency: Record, delays: Record,
                 checks: list[Record]) -> None:
    """The fixed-width tables."""
    wbest, vbest = summary["webrtc_ns_best"], summary["webrtc_vad_best"]
    shown = ("ours", NS_OURS, "speex-noAGC", wbest)
    labels = {"white+pink+hum": "mean w/p/h", "babble": "mean babble", "all": "mean all"}
    print("\nSystem delays removed before scoring (cross-correlation, speech in white noise at 20 dB):")
    print("  " + ", ".join(f"{k} {v['samples']} samples ({v['ms']:.1f} ms)" for k, v in delays.items()))
    print(f"\nNoise suppression: PESQ-WB of the noisy input, PESQ gain and STOI change of each output "
          f"(webrtc best = {wbest}, by mean PESQ gain over white/pink/hum)")
    names = "".join(f"{s:>12}" for s in shown)
    print(f"{'':<12}{'':>7} |{'PESQ gain':^48}|{'':>7} |{'STOI change':^48}")
    print(f"{'noise   SNR':<12}{'noisy':>7} |{names}|{'noisy':>7} |{names}")

    def ns_row(label: str, pesq: float | None, stoi: float | None, src: Record) -> str:
        gains = "".join(f"{_fmt(src['pesq_gain'][s], '+.3f'):>12}" for s in shown)
        dstoi = "".join(f"{_fmt(src['stoi_change'][s], '+.4f'):>12}" for s in shown)
        return f"{label:<12}{_fmt(pesq, '.3f'):>7} |{gains}|{_fmt(stoi, '.3f'):>7} |{dstoi}"

    for c in cells:
        print(ns_row(f"{c['noise']:<7}{c['snr_db']:>4.0f}", c["noisy_pesq"], c["noisy_stoi"], c))
    for gname, g in summary["groups"].items():
        print(ns_row(labels[gname], None, None, g).replace(" n/a", "    "))
    print("\nWebRTC NS by level (mean PESQ gain / STOI change):")
    for gname, g in summary["groups"].items():
        row = "  ".join(f"L{lv} {_fmt(g['pesq_gain'][f'webrtc-ns{lv}'], '+.3f')}/"
                        f"{_fmt(g['stoi_change'][f'webrtc-ns{lv}'], '+.4f')}" for lv in base.WEBRTC_NS_LEVELS)
        print(f"  {labels[gname]:<12}{row}")
    print(f"\nVoice detection: accuracy / speech miss / false alarm, %, counts pooled over clips\n"
          f"  ground truth: {mat.GROUND_TRUTH_RULE}")
    print(f"{'noise   SNR':<12}" + "".join(f"{s:>21}" for s in VAD_SYSTEMS))

    def vad_row(label: str, src: Record) -> str:
        return f"{label:<12}" + "".join(
            f"{_fmt(src['vad'][s]['accuracy'], '.1f'):>9}{_fmt(src['vad'][s]['miss'], '.1f'):>6}"
            f"{_fmt(src['vad'][s]['false_alarm'], '.1f'):>6}" for s in VAD_SYSTEMS)

    for c in cells:
        print(vad_row(f"{c['noise']:<7}{c['snr_db']:>4.0f}", c))
    for gname, g in summary["groups"].items():
        print(vad_row(labels[gname], g))
    print(f"  WebRTC VAD best mode (mean accuracy, white/pink/hum): {vbest}")
    items = cost["items"]
    chain = items.get("ours: chain from 48 kHz", {}).get("median_us")
    print(f"\nCost per 20 ms frame (median of {cost['frames']} after {cost['warmup_frames']} warm-up; "
          "ratio = our chain from 48 kHz ÷ this)")
    print(f"{'item':<34}{'median µs':>10}{'p90 µs':>9}{'ratio':>8}")
    for name, v in items.items():
        ratio = _fmt(chain / v["median_us"] if chain else None, ".2f")
        print(f"{name:<34}{v['median_us']:>10.1f}{v['p90_us']:>9.1f}{ratio:>8}")
    for note in cost["notes"]:
        print(f"  note: {note}")
    print(f"\nLatency of UplinkChain: {latency['probe']}; {latency['method']}")
    for key in ("from_16k", "from_48k"):
        if key in latency:
            print(f"  {key}: {latency[key]['delay_ms']:.2f} ms (correlation {latency[key]['correlation']})")
    if "note" in latency:
        print(f"  {latency['note']}")
    print("\nOurs against the baselines (white+pink+hum means):")
    for k, v in summary["ratios"]["white+pink+hum"].items():
        print(f"  {k:<40}{_fmt(v, '+.3f')}")
    print("\nTargets:")
    for c in checks:
        print(f"  {c['result']:<5} {c['target']}: {c['detail']}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 0 whatever the verdicts (it reports, it doesn't gate)."""
    parser = argparse.ArgumentParser(prog="python -m bench.dsp", description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write figures ({DEFAULT_JSON})")
    parser.add_argument("--quick", action="store_true", help=f"fewer clips: {', '.join(QUICK_CLIPS)}")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes for scoring")
    parser.add_argument("--ours-passthrough", action="store_true",
                        help="score a pass-through in place of our chain (harness check)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    clips = QUICK_CLIPS if args.quick else DEFAULT_CLIPS
    folder = mat.speech_dir()
    label = ours(args.ours_passthrough)[2]
    command = shlex.join([Path(sys.executable).name, "-m", "bench.dsp", *sys.argv[1:]])
    date = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"$ {command}\n{date}  ({os.cpu_count()} CPUs, {args.jobs} jobs)")
    print(f"ours: {label}")
    signals = [mat.speech_signal(folder, c) for c in clips]
    material: Record = {
        "folder": str(folder), "rate_hz": mat.RATE_HZ, "clips": [s.describe() for s in signals],
        "gap_s": mat.GAP_S, "active_level_dbfs": mat.ACTIVE_LEVEL_DBFS,
        "peak_limit_dbfs": mat.PEAK_LIMIT_DBFS,
        "snrs_db": list(mat.SNRS_DB), "noises": list(mat.NOISES), "noise_seeds": mat.NOISE_SEEDS,
        "noise_rng": "numpy.random.default_rng([seed, clip_index])", "babble_talkers": mat.BABBLE_TALKERS,
        "ground_truth_rule": mat.GROUND_TRUTH_RULE,
        "stoi": "over ground-truth speech frames only", "pesq": "wideband, 16 kHz, vs clean clip",
    }
    seconds = sum(len(s.clean) for s in signals) / mat.RATE_HZ
    print(f"material: {len(clips)} clips ({', '.join(clips)}), {seconds:.1f} s, "
          f"× {len(mat.NOISES)} noises × SNR {', '.join(f'{s:.0f}' for s in mat.SNRS_DB)} dB")
    print(f"ground truth: {mat.GROUND_TRUTH_RULE}")
    delays = measure_delays(args.ours_passthrough)
    cost = run_cost(args.ours_passthrough)
    latency = run_latency(args.ours_passthrough)
    t_quality = time.monotonic()
    shifts = {k: v["samples"] for k, v in delays.items()}
    records = run_quality(clips, shifts, args.ours_passthrough, args.jobs)
    quality_s = time.monotonic() - t_quality
    cells = aggregate(records)
    summary = summarise(cells)
    checks = check_targets(cells, summary, cost, latency)
    print_report(cells, summary, cost, latency, delays, checks)
    wall = time.monotonic() - started
    print(f"\nwall time {wall:.0f} s (quality scoring {quality_s:.0f} s); JSON: {args.json}")
    doc = {"command": command, "date": date, "ours": label, "cpus": os.cpu_count(), "jobs": args.jobs,
           "wall_s": round(wall, 1), "material": material, "delays": delays, "cells": cells,
           "summary": summary, "cost": cost, "latency": latency, "targets": checks, "per_clip": records}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
