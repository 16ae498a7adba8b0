"""Scoring, tables and target verdicts of the network benchmark (:mod:`bench.network`).

:func:`analyse_run` turns one run's recording and samples into a record (plain JSON data);
:func:`print_tables` prints them; :func:`check_targets` holds the issue's targets.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bench import network_metrics as m
from bench.network_material import RATE_HZ, Script
from bench.network_site import RunRaw, Sample

Record = dict[str, Any]

MAX_LAG_MS = 600
"""Longest mouth-to-ear delay searched for per window (the buffer's ceiling is 200 ms)."""
UTTERANCE_MAX_LAG_MS = 1000
COUNT_TAIL_S = 0.2
"""The listener's counters are read this much after the last utterance ends (its delay)."""
RECOVERY_TOLERANCE_MS = 10.0
RECOVERY_HOLD_S = 1.0
"""After an outage the delay counts as recovered once it stays within the tolerance this long."""
RECOVERY_LIMIT_S = 3.0


def sample_at(samples: Sequence[Sample], t_s: float) -> Sample:
    """The first sample at or after ``t_s`` (the last one if none)."""
    for s in samples:
        if s.t_s >= t_s:
            return s
    return samples[-1]


def counts_between(samples: Sequence[Sample], a_s: float, b_s: float) -> dict[str, int]:
    """How the listener's and talker's counters moved between two times (sampled every 100 ms)."""
    a, b = sample_at(samples, a_s), sample_at(samples, b_s)
    return {k: getattr(b, k) - getattr(a, k)
            for k in ("received", "lost", "concealed", "fec_recovered", "packets_sent", "octets_sent")}


def depth_changes(samples: Sequence[Sample], frame: int) -> list[list[float]]:
    """``[t_s, frames]`` whenever the listener's playback queue depth (in frames) changed."""
    out: list[list[float]] = []
    for s in samples:
        depth = s.playback_queued / frame
        if not out or out[-1][1] != depth:
            out.append([round(s.t_s, 2), depth])
    return out


def outage_recovery(samples: Sequence[Sample], windows: Sequence[m.DelayWindow], outage: tuple[float, float],
                    speech_start_s: float) -> Record:
    """How the delay came back after an outage: from the listener's buffer (delay − target, sampled
    every 100 ms; the verdict) and from the recording (windowed cross-correlation minus the fixed
    part of the path measured before the outage, minus the target)."""
    start, end = outage
    stats_points = [(s.t_s, s.delay_ms - s.target_ms if s.playing else None) for s in samples]
    before = [e for t, e in stats_points if speech_start_s <= t < start and e is not None]
    fixed = [w.delay_ms - sample_at(samples, w.t_s + w.delay_ms / 1000).delay_ms
             for w in windows if w.t_s + w.delay_ms / 1000 < start]
    path_ms = statistics.median(fixed) if fixed else None
    xcorr_points: list[tuple[float, float | None]] = []
    if path_ms is not None:
        for w in windows:
            s = sample_at(samples, w.t_s + w.delay_ms / 1000)
            xcorr_points.append((w.t_s, w.delay_ms - path_ms - s.target_ms if s.playing else None))
    return {
        "outage_s": [round(start, 3), round(end, 3)],
        "recovery_s": m.recovery_s(stats_points, end, RECOVERY_TOLERANCE_MS, RECOVERY_HOLD_S),
        "recovery_xcorr_s": (m.recovery_s(xcorr_points, end, RECOVERY_TOLERANCE_MS, RECOVERY_HOLD_S)
                             if xcorr_points else None),
        "fixed_path_ms": path_ms,
        "first_speech_after_s": next((w.t_s - end for w in windows if w.t_s >= end), None),
        "before_within_tolerance": (sum(abs(e) <= RECOVERY_TOLERANCE_MS for e in before) / len(before)
                                    if before else None),
        "before_mean_error_ms": statistics.mean(before) if before else None,
        "buffer_over_time": [[round(s.t_s, 2), int(s.playing), round(s.delay_ms, 1), round(s.target_ms, 1)]
                             for s in samples],
        "xcorr_over_time": [[round(w.t_s, 2), round(w.delay_ms, 2)] for w in windows],
    }


def analyse_run(raw: RunRaw, script: Script) -> Record:
    """Everything reported about one run."""
    spec = raw.spec
    heard = m.on_talker_timeline(raw.heard, raw.heard_late_s, RATE_HZ, len(script.said))
    utterances = [m.score_utterance(script.said, heard, RATE_HZ, u.name, u.start, u.length,
                                    UTTERANCE_MAX_LAG_MS) for u in script.utterances]
    windows = m.windowed_delays(script.said, heard, RATE_HZ, [(u.start, u.end) for u in script.utterances],
                                MAX_LAG_MS)
    delays = [w.delay_ms for w in windows]
    a_s, b_s = script.speech_start_s, script.speech_end_s
    talked = counts_between(raw.samples, a_s, b_s)
    heard_counts = counts_between(raw.samples, a_s, b_s + COUNT_TAIL_S)
    during = [s for s in raw.samples if a_s <= s.t_s <= b_s and s.playing]
    at_start = sample_at(raw.samples, a_s)
    frame = RATE_HZ * spec.frame_ms // 1000
    record: Record = {
        "condition": spec.condition, "variant": spec.variant.name, "frame_ms": spec.frame_ms,
        "network": vars(spec.network).copy(), "seed": spec.seed, "phase_ms": spec.phase_ms,
        "device_offset_ms": round(raw.heard_late_s * 1000, 2),
        "pesq": m.mean(u.pesq for u in utterances), "stoi": m.mean(u.stoi for u in utterances),
        "utterances": [vars(u) for u in utterances],
        "delay_p50_ms": m.percentile(delays, 50), "delay_p95_ms": m.percentile(delays, 95),
        "delay_windows": len(windows), "delays_ms": [round(d, 2) for d in delays],
        "speech": {"lost": heard_counts["lost"], "concealed": heard_counts["concealed"],
                   "fec_recovered": heard_counts["fec_recovered"], "received": heard_counts["received"],
                   "packets_sent": talked["packets_sent"], "payload_octets": talked["octets_sent"]},
        "wire_kbps": m.wire_kbps(talked["packets_sent"], talked["octets_sent"], spec.frame_ms),
        "wire_kbps_whole_spurt": m.wire_kbps(raw.talker["packets_sent"], raw.talker["payload_octets_sent"],
                                             spec.frame_ms),
        "fec_at_speech_start": at_start.fec_on, "loss_hint_at_speech_start_pct": at_start.loss_hint_pct,
        "fec_on_samples": sum(s.fec_on for s in raw.samples),
        "fec_on_at_s": next((round(s.t_s, 1) for s in raw.samples if s.fec_on), None),
        "buffer_target_ms": m.mean(s.target_ms for s in during),
        "buffer_delay_ms": m.mean(s.delay_ms for s in during),
        "playback_depth_frames": (statistics.median_low([s.playback_queued for s in during]) / frame
                                  if during else None),
        "playback_depth_changes": depth_changes(raw.samples, frame),
        "listener_totals": raw.listener, "talker_totals": raw.talker, "hub_links": raw.hub,
        "wall_s": round(raw.wall_s, 2),
    }
    if raw.outage_s is not None:
        record["outage"] = outage_recovery(raw.samples, windows, raw.outage_s, a_s)
    return record


# --- Tables -------------------------------------------------------------------------------------


def fmt(v: float | None, spec: str = ".2f") -> str:
    """A number, or ``-`` when there is none."""
    return "-" if v is None else format(v, spec)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None when either is missing or b is 0."""
    return None if a is None or not b else a / b


def diff(a: float | None, b: float | None) -> float | None:
    """a − b, None when either is missing."""
    return None if a is None or b is None else a - b


ROW_HEADER = (f"{'condition':<24}{'PESQ':>6}{'STOI':>7}{'d50':>6}{'d95':>6}{'buf':>5}{'lost':>6}"
              f"{'conc':>6}{'fecR':>6}{'kbps':>7}  FEC")


def row(label: str, r: Record) -> str:
    """One run as a table row."""
    s = r["speech"]
    if r["fec_at_speech_start"]:
        fec = f"on {r['loss_hint_at_speech_start_pct']}%"
    elif r["fec_on_at_s"] is not None:
        fec = f"off; on at {r['fec_on_at_s']:g} s"
    else:
        fec = "off"
    return (f"{label:<24}{fmt(r['pesq']):>6}{fmt(r['stoi'], '.3f'):>7}{fmt(r['delay_p50_ms'], '.0f'):>6}"
            f"{fmt(r['delay_p95_ms'], '.0f'):>6}{fmt(r['buffer_target_ms'], '.0f'):>5}{s['lost']:>6}"
            f"{s['concealed']:>6}{s['fec_recovered']:>6}{fmt(r['wire_kbps'], '.1f'):>7}  {fec}")


LEGEND = ("PESQ: mean PESQ-WB over the utterances; STOI: mean; d50/d95: mouth-to-ear delay p50/p95 in ms "
          "(200 ms windows, pooled); buf: the listener's mean jitter-buffer target in ms; lost/conc/fecR: "
          "packets lost, frames concealed, frames rebuilt from FEC during the scored speech; kbps: on the "
          "wire (payload + 50 B/packet) while talking; FEC: the talker's encoder when the speech began "
          "(and when it turned on, if later)")


def print_tables(records: list[Record], labels: dict[str, str], variants: Sequence[str],
                 out: Callable[[str], None] = print) -> None:
    """One table per variant (a row per condition), then the ratios against the baselines."""
    by = {(r["condition"], r["variant"]): r for r in records}
    conditions = list(dict.fromkeys(r["condition"] for r in records))
    out(f"\n{LEGEND}")
    for v in variants:
        rows = [(c, by[(c, v)]) for c in conditions if (c, v) in by]
        if not rows:
            continue
        out(f"\nvariant {v}\n{ROW_HEADER}")
        for c, r in rows:
            out(row(labels.get(c, c), r))
    out("\nours against the baselines, same condition, same loss model and seed: PESQ difference, STOI "
        "difference, delay ratio (ours ÷ baseline, p50 and p95)")
    out(f"{'condition':<24}{'ΔPESQ fec-off':>14}{'ΔSTOI':>8}{'d50 ×':>7}{'d95 ×':>7}"
        f"{'ΔPESQ fixed-60':>16}{'ΔSTOI':>8}{'d50 ×':>7}{'d95 ×':>7}")
    for c in conditions:
        ours = by.get((c, "ours"))
        if ours is None:
            continue
        cells = ""
        for base, width in (("fec-off", 14), ("fixed-60", 16)):
            b = by.get((c, base))
            if b is None:
                cells += f"{'':>{width}}{'':>8}{'':>7}{'':>7}"
                continue
            cells += (f"{fmt(diff(ours['pesq'], b['pesq']), '+.2f'):>{width}}"
                      f"{fmt(diff(ours['stoi'], b['stoi']), '+.3f'):>8}"
                      f"{fmt(ratio(ours['delay_p50_ms'], b['delay_p50_ms'])):>7}"
                      f"{fmt(ratio(ours['delay_p95_ms'], b['delay_p95_ms'])):>7}")
        out(f"{labels.get(c, c):<24}{cells}")


# --- Targets ------------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    """PASS, FAIL, or SKIP when there is nothing to judge."""
    return "SKIP" if ok is None else ("PASS" if ok else "FAIL")


def at_most(value: float | None, limit: float) -> bool | None:
    """value <= limit (None when there is no value)."""
    return None if value is None else value <= limit


def at_least(value: float | None, limit: float) -> bool | None:
    """value >= limit (None when there is no value)."""
    return None if value is None else value >= limit


def pooled_percentile(records: Iterable[Record], q: float) -> float | None:
    """The ``q``-th percentile of the delay windows of several runs taken together."""
    return m.percentile([d for r in records for d in r["delays_ms"]], q)


def check_targets(by: dict[tuple[str, str], Record], sweep: dict[int, list[Record]], cost: Record | None,
                  keys: dict[str, str]) -> list[Record]:
    """The issue's targets, each with its verdict and the numbers behind it.

    ``keys`` names the conditions the targets read: ``clean``, ``lossy`` (10 % random, 20 ms
    jitter) and ``outage``; ``sweep`` has the clean runs of "ours" at several device clock phases per
    frame length, whose delay windows pooled are what the delay targets are judged on.
    """
    checks: list[Record] = []

    def add(name: str, ok: bool | None, detail: str, result: str | None = None) -> None:
        checks.append({"target": name, "result": result or verdict(ok), "detail": detail})

    for frame_ms, limit in ((20, 60.0), (10, 45.0)):
        runs = sweep.get(frame_ms, [])
        pooled = pooled_percentile(runs, 95)
        worst = max((r["delay_p95_ms"] for r in runs if r["delay_p95_ms"] is not None), default=None)
        per = ", ".join(f"{r['phase_ms']:g} ms: {fmt(r['delay_p95_ms'], '.1f')}" for r in runs)
        add(f"clean LAN: mouth-to-ear p95 <= {limit:g} ms at {frame_ms} ms frames, two gateways end to end",
            at_most(pooled, limit),
            f"p95 {fmt(pooled, '.1f')} ms, {len(runs)} listener clock phases pooled (worst single phase "
            f"{fmt(worst, '.1f')}; p95 by phase: {per or 'no runs'})")
    clean = by.get((keys["clean"], "ours"))
    forced = by.get((keys["clean"], "fec-forced"))
    off = by.get((keys["clean"], "fec-off"))
    if clean is not None:
        on = clean["fec_on_samples"]
        fec = f"FEC on in {on} of the 100 ms samples" if on else "FEC stayed off"
        add("clean LAN: PESQ >= 4.0 (ours; no FEC penalty when nothing is lost)",
            at_least(clean["pesq"], 4.0),
            f"PESQ {fmt(clean['pesq'])} ({fec}); fec-off {fmt(off['pesq'] if off else None)}, FEC forced on "
            f"{fmt(forced['pesq'] if forced else None)}")
    lossy = by.get((keys["lossy"], "ours"))
    plain = by.get((keys["lossy"], "fec-off"))
    if lossy is not None:
        add("10% random loss, 20 ms jitter: PESQ >= 3.0", at_least(lossy["pesq"], 3.0),
            f"ours {fmt(lossy['pesq'])}")
        plain_pesq = plain["pesq"] if plain else None
        gain = diff(lossy["pesq"], plain_pesq)
        add("10% random loss, 20 ms jitter: PESQ >= 0.6 above plain concealment (fec-off)",
            at_least(gain, 0.6),
            f"ours {fmt(lossy['pesq'])} − fec-off {fmt(plain_pesq)} = {fmt(gain, '+.2f')}")
    out = by.get((keys["outage"], "ours"))
    if out is not None and "outage" in out:
        o = out["outage"]
        within = o["before_within_tolerance"]
        add(f"2 s outage: delay within {RECOVERY_TOLERANCE_MS:g} ms of target within {RECOVERY_LIMIT_S:g} s "
            "of traffic (verdict: listener's buffer delay − target, every 100 ms)",
            at_most(o["recovery_s"], RECOVERY_LIMIT_S),
            f"settled (held {RECOVERY_HOLD_S:g} s) {fmt(o['recovery_s'], '.1f')} s after traffic resumed; "
            f"from the recording (cross-correlation): {fmt(o['recovery_xcorr_s'], '.1f')} s; before the "
            f"outage {fmt(None if within is None else 100 * within, '.0f')}% of samples were within "
            f"{RECOVERY_TOLERANCE_MS:g} ms (mean error {fmt(o['before_mean_error_ms'], '+.1f')} ms)")
    if cost is not None:
        st, dec = cost["stages"]["+ jitter pop"], cost["stages"]["+ decode + mix"]
        add(f"cost: receive + SRTP unprotect + jitter buffering, {cost['senders']} senders < 1 core",
            st["core_fraction"] < 1.0,
            f"{st['us_per_packet']:.1f} µs/packet × {cost['packets_per_s']}/s = {st['core_fraction']:.2f} "
            f"core (with Opus decode + mix: {dec['us_per_packet']:.1f} µs/packet = "
            f"{dec['core_fraction']:.2f} core)")
    if forced is not None and off is not None:
        add("FEC cost on a clean network (forced on, 20% hint, vs off)", None,
            f"PESQ {fmt(diff(forced['pesq'], off['pesq']), '+.2f')} ({fmt(forced['pesq'])} vs "
            f"{fmt(off['pesq'])}), wire {fmt(diff(forced['wire_kbps'], off['wire_kbps']), '+.1f')} kbit/s "
            f"({fmt(forced['wire_kbps'], '.1f')} vs {fmt(off['wire_kbps'], '.1f')})", result="INFO")
    return checks
