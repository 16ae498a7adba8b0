"""Network benchmark: real speech through two gateways' full stack over an impaired network.

Run ``.venv/bin/python -m bench.network [--quick] [--jobs N] [--json PATH] [--recordings DIR]``. It is
not a test: it prints tables, the ratios against the baselines and PASS/FAIL lines for the targets,
and writes every figure to JSON (default ``bench/results/network.json``). It reports, it doesn't gate.

Each run is a simulated site of two :class:`gateway.app.App` boxes (:mod:`bench.network_site`):
WAV-backed ports paced in real time, PTT through the mock GPIO pin, Opus, RTP, SRTP, UDP on loopback
through a seeded :class:`gateway.net.impair.ImpairedHub` that impairs both directions (voice one
way, announcements and the listener's loss reports the other). The talker keeps PTT down through a
6 s lead-in before the scored speech, as a box that has been talking on that network would have:
the listener's loss reports reach it and turn its adaptive FEC on first (:mod:`bench.network_material`).

Conditions: loss 0, 5, 10, 20 % random and 5 % in bursts (Gilbert, mean burst :data:`BURST_MS`),
each with jitter 0, 20 and 60 ms (uniform extra delay per datagram); plus a 2 s total outage in the
middle of the speech on a 20 ms-jitter link; plus clean runs of "ours" at several listener clock
phases, 20 and 10 ms frames, for the delay targets. Variants, run side by side in one batch per
condition with the same loss model and seed (the hub's links are seeded by role, so they draw the
same loss sequence; timing still shifts which datagram meets which draw a little):

- ``ours``: the defaults: adaptive FEC from listeners' reports, adaptive buffer 0-200 ms;
- ``fec-off``: ``CodecSettings(adaptive_fec=False, fec=False)``: plain concealment;
- ``fixed-60``: a fixed 60 ms buffer (``jitter_min_ms = jitter_max_ms = 60``), adaptive FEC;
- ``fec-forced`` (clean condition only): FEC on with a 20 % hint, not adaptive: what FEC costs when
  nothing is lost.

Device clock phase. A listener can only start playing a frame on one of its device's ticks, so the
mouth-to-ear delay of two boxes depends on how their clocks are offset (up to half a frame either
way; real boxes meet at any phase). The listener's WAV device is started on the talker's period grid
shifted by a chosen phase: per condition a seeded one, the same for its variants; the delay targets
are judged on the clean runs at several phases pooled.

Measured per run (:mod:`bench.network_report`, :mod:`bench.network_metrics`): PESQ-WB and STOI per
utterance, mouth-to-ear delay p50/p95 from 200 ms windows, the listener's lost / concealed /
FEC-recovered counts and the talker's bitrate on the wire over the scored speech, the buffer's
target, and after an outage how fast the delay returns to the target. Cost (:mod:`bench.network_cost`):
µs per packet for 200 senders into one box, in-process.

Concurrency: runs go ``--jobs`` at a time (default 3), each in its own worker process and event
loop, the variants of a condition next to each other; scoring (PESQ, STOI) waits until every run is
done. On the 2-core machine this was written on, 4 at a time raised a clean run's buffer target by
3-5 ms (loop wake-up jitter) where 2 and 3 matched a run alone. The benchmark checks it each time: a
clean run of "ours" runs first alone, and again in the pool, and both are printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import multiprocessing
import os
import random
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import dsp_material as mat
from bench import network_report as rep
from bench.network_cost import run_cost
from bench.network_material import GAP_S, Script, build_script
from bench.network_site import Network, RunRaw, RunSpec, Variant, run_one

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "network.json"
CLIPS = ("speech.wav", "or105.wav", "or109.wav", "or114.wav", "or145.wav")
QUICK_CLIPS = ("speech.wav", "or105.wav", "or109.wav")
BURST_MS = 60.0
OUTAGE_MS = 2000.0
OUTAGE_JITTER_MS = 20.0
LOSSES = (("0%", 0.0, 0.0), ("5%", 5.0, 0.0), ("10%", 10.0, 0.0), ("20%", 20.0, 0.0),
          ("5% bursts", 5.0, BURST_MS))
JITTERS_MS = (0.0, 20.0, 60.0)
QUICK_GRID = (("0%", 0.0), ("10%", 20.0))
SWEEP_PHASES_MS = {20: (0.0, 5.0, 10.0, 15.0), 10: (0.0, 5.0)}
QUICK_SWEEP_PHASES_MS = {20: (0.0, 10.0), 10: (0.0, 5.0)}

OURS = Variant("ours")
FEC_OFF = Variant("fec-off", adaptive_fec=False, fec=False)
FIXED_60 = Variant("fixed-60", jitter_min_ms=60, jitter_max_ms=60)
FEC_FORCED = Variant("fec-forced", adaptive_fec=False, fec=True, expected_loss_pct=20)
VARIANTS = (OURS, FEC_OFF, FIXED_60)
CLEAN, LOSSY, OUTAGE = "0% / 0 ms", "10% / 20 ms", "outage"
SCORING_JOBS = 2

Record = dict[str, Any]


@dataclass(frozen=True)
class Condition:
    """A network and frame length, run with each of its variants (same seed, same clock phase)."""

    key: str
    network: Network
    variants: tuple[Variant, ...]
    seed: int
    phase_ms: float
    frame_ms: int = 20
    kind: str = "grid"

    def specs(self) -> list[RunSpec]:
        """One run per variant."""
        return [RunSpec(self.key, v, self.network, self.seed, self.frame_ms, self.phase_ms)
                for v in self.variants]


def _phase(seed: int, frame_ms: int) -> float:
    """A seeded listener clock phase on a 0.5 ms grid in [0, frame)."""
    return random.Random(seed).randrange(2 * frame_ms) / 2


def conditions(script: Script, quick: bool) -> list[Condition]:
    """Every condition of the run, in the order they are reported."""
    out = []
    for i, (name, loss, burst) in enumerate(LOSSES):
        for j, jitter in enumerate(JITTERS_MS):
            if quick and (name, jitter) not in QUICK_GRID:
                continue
            key = f"{name} / {jitter:g} ms"
            seed = 1000 + 10 * i + j
            variants = (*VARIANTS, FEC_FORCED) if key == CLEAN else VARIANTS
            out.append(Condition(key, Network(loss, burst, jitter), variants, seed, _phase(seed, 20)))
    mid = (script.speech_start_s + script.speech_end_s) / 2
    outage = Network(0.0, 0.0, OUTAGE_JITTER_MS, OUTAGE_MS, round(mid - OUTAGE_MS / 2000, 1))
    out.append(Condition(OUTAGE, outage, VARIANTS, 1100, _phase(1100, 20), kind="outage"))
    sweep = QUICK_SWEEP_PHASES_MS if quick else SWEEP_PHASES_MS
    for frame_ms, phases in sweep.items():
        for k, phase in enumerate(phases):
            out.append(Condition(f"clean {frame_ms} ms frames, phase {phase:g}", Network(), (OURS,),
                                 1200 + 10 * frame_ms + k, phase, frame_ms, kind="sweep"))
    return out


@functools.cache
def _script(clips: tuple[str, ...]) -> Script:
    return build_script(mat.speech_dir(), clips)


def _run_task(spec: RunSpec, slot: int, clips: tuple[str, ...], work: str) -> RunRaw:
    """A worker process's task: one run in real time."""
    Path(work).mkdir(parents=True, exist_ok=True)
    return run_one(spec, _script(clips), slot, Path(work))


def _score_task(raw: RunRaw, clips: tuple[str, ...]) -> Record:
    return rep.analyse_run(raw, _script(clips))


def run_all(specs: list[RunSpec], clips: tuple[str, ...], work: Path, jobs: int) -> list[RunRaw]:
    """Every run, ``jobs`` at a time, each in its own worker process; progress on stdout."""
    raws: dict[int, RunRaw] = {}
    started = time.monotonic()
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        futures = {pool.submit(_run_task, spec, i, clips, str(work / f"run{i}")): i
                   for i, spec in enumerate(specs)}
        for n, fut in enumerate(as_completed(futures), start=1):
            raw = raws[futures[fut]] = fut.result()
            lst = raw.listener
            print(f"  [{n:>2}/{len(specs)}] {time.monotonic() - started:4.0f} s  {raw.spec.condition}, "
                  f"{raw.spec.variant.name}: lost {lst.get('packets_lost')}, concealed "
                  f"{lst.get('frames_concealed')}, FEC-recovered {lst.get('frames_fec_recovered')}",
                  flush=True)
    return [raws[i] for i in range(len(specs))]


def score_all(raws: list[RunRaw], clips: tuple[str, ...], jobs: int) -> list[Record]:
    """Score every run (PESQ, STOI, delays), ``jobs`` processes at a time, after all runs are done."""
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        return list(pool.map(_score_task, raws, [clips] * len(raws)))


# --- Report -------------------------------------------------------------------------------------


def print_sweep(sweep: dict[int, list[Record]]) -> None:
    """The clean runs by listener clock phase."""
    print("\nclean LAN, ours, by the listener's device clock phase (mouth-to-ear in ms; buffer target "
          "and delay in ms)")
    print(f"{'frames':<8}{'phase':>7}{'PESQ':>7}{'d50':>7}{'d95':>7}{'target':>8}{'delay':>7}{'jitter':>8}"
          f"{'playback':>10}")
    for frame_ms, runs in sweep.items():
        for r in runs:
            print(f"{frame_ms:>3} ms  {r['phase_ms']:>7g}{rep.fmt(r['pesq']):>7}"
                  f"{rep.fmt(r['delay_p50_ms'], '.1f'):>7}{rep.fmt(r['delay_p95_ms'], '.1f'):>7}"
                  f"{rep.fmt(r['buffer_target_ms'], '.1f'):>8}"
                  f"{rep.fmt(r['buffer_delay_ms'], '.1f'):>7}"
                  f"{rep.fmt(r['listener_totals'].get('jitter_ms'), '.1f'):>8}"
                  f"{rep.fmt(r['playback_depth_frames'], 'g'):>10}")
        print(f"{frame_ms:>3} ms  {'pooled':>7}{'':>7}{rep.fmt(rep.pooled_percentile(runs, 50), '.1f'):>7}"
              f"{rep.fmt(rep.pooled_percentile(runs, 95), '.1f'):>7}")
    print("  jitter: the listener's RFC 3550 interarrival jitter estimate at the end of the run; playback: "
          "frames queued for its device during the speech, median")


def print_outage(records: list[Record]) -> None:
    """Delay and target around the outage, per variant."""
    for r in records:
        o = r.get("outage")
        if o is None:
            continue
        start, end = o["outage_s"]
        trace = [p for p in o["buffer_over_time"] if start - 1.0 <= p[0] <= end + 3.0][::5]
        print(f"\noutage, {r['variant']}: {start:.1f}-{end:.1f} s; back within {rep.RECOVERY_TOLERANCE_MS:g} "
              f"ms of target {rep.fmt(o['recovery_s'], '.1f')} s after (from the recording: "
              f"{rep.fmt(o['recovery_xcorr_s'], '.1f')} s, which can't be less than the "
              f"{rep.fmt(o['first_speech_after_s'], '.1f')} s to the first speech after it; fixed part "
              f"of the path {rep.fmt(o['fixed_path_ms'], '.1f')} ms)")
        print("  t s: delay/target ms (- = not playing)  " + " ".join(
            f"{t:.1f}:{'-' if not playing else f'{d:.0f}/{g:.0f}'}" for t, playing, d, g in trace))


def print_concurrency(solo: Record, pooled: Record | None) -> None:
    """The same run alone and inside the pool."""
    print("\nconcurrency check: the clean run of ours alone, then inside the pool (same seed and phase)")
    print(f"{'':<10}{'PESQ':>7}{'d50':>7}{'d95':>7}{'target':>8}{'jitter':>8}{'playback':>10}")
    for name, r in (("alone", solo), ("in pool", pooled)):
        if r is None:
            continue
        print(f"{name:<10}{rep.fmt(r['pesq']):>7}{rep.fmt(r['delay_p50_ms'], '.1f'):>7}"
              f"{rep.fmt(r['delay_p95_ms'], '.1f'):>7}{rep.fmt(r['buffer_target_ms'], '.1f'):>8}"
              f"{rep.fmt(r['listener_totals'].get('jitter_ms'), '.2f'):>8}"
              f"{rep.fmt(r['playback_depth_frames'], 'g'):>10}")
    print("  target: the listener's mean jitter-buffer target (ms); jitter: its RFC 3550 estimate (ms); "
          "playback: frames queued for the listener's device during the speech, median (1 = no extra delay)")


def print_cost(cost: Record) -> None:
    """The receive-cost table."""
    print(f"\nreceive cost, {cost['senders']} senders × {1000 // cost['frame_ms']} packets/s into one box "
          f"(median of {cost['repeats']}, {cost['timed_frames']} frames each; mean Opus payload "
          f"{cost['mean_payload_bytes']:.0f} B)")
    print(f"{'stage (cumulative)':<22}{'µs/packet':>10}{'min':>8}{'core':>7}")
    for name, st in cost["stages"].items():
        print(f"{name:<22}{st['us_per_packet']:>10.1f}{st['min_us_per_packet']:>8.1f}{st['core_fraction']:>7.2f}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 0 whatever the verdicts."""
    parser = argparse.ArgumentParser(prog="python -m bench.network", description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write figures ({DEFAULT_JSON})")
    parser.add_argument("--quick", action="store_true",
                        help="clean, 10%%/20 ms and the outage; two phases; clips: " + ", ".join(QUICK_CLIPS))
    parser.add_argument("--jobs", type=int, default=3,
                        help="runs at once, each in its own process (3: see the module docstring)")
    parser.add_argument("--recordings", type=Path, help="keep every run's recordings here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    clips = QUICK_CLIPS if args.quick else CLIPS
    command = shlex.join([Path(sys.executable).name, "-m", "bench.network", *sys.argv[1:]])
    date = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    load_before = os.getloadavg()
    print(f"$ {command}\n{date}  ({os.cpu_count()} CPUs, load {load_before[0]:.2f}, {args.jobs} jobs)")
    script = build_script(mat.speech_dir(), clips)
    conds = conditions(script, args.quick)
    outage = next(c for c in conds if c.kind == "outage").network
    print(f"material: {', '.join(f'{u.name} {u.length / 16000:.1f} s' for u in script.utterances)} "
          f"(the first Harvard sentence of each 8 kHz clip, upsampled; all at -26 dBFS), {GAP_S:g} s gaps, "
          f"one talk spurt: PTT down at {script.press_s:g} s, speech from {script.speech_start_s:g} s "
          f"(lead-in: the key exchange and the adaptive FEC settle first), run {script.seconds:.1f} s")
    print(f"network: both directions through the seeded relay; bursts: Gilbert, mean {BURST_MS:g} ms; "
          f"outage: {outage.outage_ms / 1000:g} s from {outage.outage_at_s:g} s on a {outage.jitter_ms:g} ms "
          "jitter link; boxes in LAN-only mode (no broker: keys and loss reports go in-band)")
    print("cost: timing 200 senders in this process first ...", flush=True)
    cost = run_cost(mat.speech_dir() / "speech.wav")
    with tempfile.TemporaryDirectory(prefix="bench-network-") as tmp:
        work = args.recordings or Path(tmp)
        solo_spec = next(c for c in conds if c.key == CLEAN).specs()[0]
        print(f"solo reference run ({CLEAN}, ours) ...", flush=True)
        solo_raw = run_all([solo_spec], clips, work / "solo", 1)[0]
        specs = [s for c in conds for s in c.specs()]
        print(f"{len(specs)} runs, {args.jobs} at a time:", flush=True)
        raws = run_all(specs, clips, work, args.jobs)
        print("scoring ...", flush=True)
        solo, *records = score_all([solo_raw, *raws], clips, SCORING_JOBS)
    by = {(r["condition"], r["variant"]): r for r in records}
    labels = {c.key: f"2 s outage, 0% / {c.network.jitter_ms:g} ms" if c.kind == "outage" else c.key
              for c in conds}
    ordered = [by[(c.key, v.name)] for c in conds for v in c.variants if (c.key, v.name) in by]
    grid = [r for r in ordered if not r["condition"].startswith("clean ")]
    print("\nlistener clock phase per condition (ms after the talker's, modulo a frame): "
          + ", ".join(f"{c.key} {c.phase_ms:g}" for c in conds if c.kind != "sweep"))
    rep.print_tables(grid, labels, [v.name for v in (*VARIANTS, FEC_FORCED)])
    sweep: dict[int, list[Record]] = {}
    for r in ordered:
        if r["condition"].startswith("clean "):
            sweep.setdefault(r["frame_ms"], []).append(r)
    print_sweep(sweep)
    print_outage([r for r in ordered if "outage" in r])
    print_concurrency(solo, by.get((CLEAN, "ours")))
    print_cost(cost)
    checks = rep.check_targets(by, sweep, cost, {"clean": CLEAN, "lossy": LOSSY, "outage": OUTAGE})
    print("\ntargets:")
    for c in checks:
        print(f"  {c['result']:<5} {c['target']}: {c['detail']}")
    wall = time.monotonic() - started
    load_after = os.getloadavg()
    print(f"\nwall time {wall:.0f} s; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"JSON: {args.json}")
    doc = {"command": command, "date": date, "cpus": os.cpu_count(), "jobs": args.jobs,
           "wall_s": round(wall, 1),
           "load_average": {"before": load_before, "after": load_after}, "material": script.describe(),
           "conditions": [{"key": c.key, "kind": c.kind, "network": vars(c.network), "seed": c.seed,
                           "phase_ms": c.phase_ms, "frame_ms": c.frame_ms,
                           "variants": [vars(v) for v in c.variants]} for c in conds],
           "cost": cost, "solo": solo, "runs": ordered, "targets": checks}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
