"""``gateway demo``: a whole site on this machine, one talker, every other port listening.

Starts the embedded broker (mosquitto on a free loopback port), runs N gateways in this process with
WAV-backed ports, presses PTT on the first gateway's port through its (mock) GPIO button, plays a
speech clip into it, records what every other port plays, and scores each recording: mouth-to-ear
delay by cross-correlation, PESQ, and packet counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from gpiozero.pins.mock import MockFactory

from gateway.app import App, running
from gateway.audio.wav import read_wav, write_wav
from gateway.net.impair import ImpairedHub, ImpairmentSettings
from gateway.sim import site
from gateway.sim.broker import Mosquitto
from gateway.sim.metrics import score_recording

log = logging.getLogger(__name__)

LEAD_IN_S = 0.6
"""Silence before the clip starts; PTT goes down half-way through it."""
LOSSY_LEAD_IN_S = 4.0
"""The same through a lossy relay, with PTT down after LOSSY_PRESS_S: time for the key announcements
to get through, and for the listeners' loss reports to turn the talker's FEC on, as it would be
on a box that has been talking on that network before."""
LOSSY_PRESS_S = 0.5
TAIL_S = 0.8
"""Silence after the clip; PTT is released half-way through it."""

ESPEAK_TEXT = (
    "This is gateway A on the operations channel. Pump room two is clear, "
    "moving to the north stairwell now."
)


@dataclass(frozen=True)
class Listener:
    """One row of the demo's result table."""

    gateway: str
    port: str
    delay_ms: float | None
    pesq: float | None
    pesq_mode: str
    packets_received: int
    packets_lost: int
    frames_concealed: int
    frames_fec_recovered: int = 0


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured."""

    clip: str
    clip_seconds: float
    rate_hz: int
    talker: str
    packets_sent: int
    listeners: list[Listener]
    presence_online: int
    wall_seconds: float
    talk_mode: str = "ptt"
    network: dict[str, Any] | None = None
    """The impairment applied and what the hub did (None: clean multicast)."""

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "clip": self.clip,
            "clip_seconds": round(self.clip_seconds, 3),
            "rate_hz": self.rate_hz,
            "talker": self.talker,
            "talk_mode": self.talk_mode,
            "packets_sent": self.packets_sent,
            "gateways_online_on_broker": self.presence_online,
            "wall_seconds": round(self.wall_seconds, 2),
            "network": self.network,
            "listeners": [
                {
                    "gateway": li.gateway,
                    "port": li.port,
                    "delay_ms": None if li.delay_ms is None else round(li.delay_ms, 1),
                    "pesq": None if li.pesq is None else round(li.pesq, 2),
                    "pesq_mode": li.pesq_mode,
                    "packets_received": li.packets_received,
                    "packets_lost": li.packets_lost,
                    "frames_concealed": li.frames_concealed,
                    "frames_fec_recovered": li.frames_fec_recovered,
                }
                for li in self.listeners
            ],
        }


def default_clip() -> Path | None:
    """``../shared/testdata/speech/speech.wav`` beside the checkout, if it is there."""
    here = Path(__file__).resolve()
    for root in (here.parents[2].parent, Path.cwd().parent, Path.cwd()):
        candidate = root / "shared" / "testdata" / "speech" / "speech.wav"
        if candidate.is_file():
            return candidate
    return None


def espeak_clip(path: Path) -> Path:
    """Synthesise a sentence with espeak-ng (the fallback when no speech clip is shipped)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError("no speech clip given or found, and espeak-ng is not installed")
    subprocess.run([exe, "-v", "en-us", "-s", "160", "-w", str(path), ESPEAK_TEXT], check=True,
                   capture_output=True, timeout=30)
    return path


def speech_clip(path: Path | None, work: Path) -> tuple[Path, np.ndarray[Any, np.dtype[np.int16]], int]:
    """The clip a run plays: ``path``, else the shared speech clip, else an espeak-ng sentence
    written in ``work``; as (its path, mono int16 at 8 or 16 kHz, that rate)."""
    if path is None:
        path = default_clip() or espeak_clip(work / "espeak.wav")
    clip, rate = load_clip(path)
    return path, clip, rate


def load_clip(path: Path) -> tuple[np.ndarray[Any, np.dtype[np.int16]], int]:
    """The clip as mono int16 at 8 or 16 kHz (PESQ's rates); other rates go to 16 kHz."""
    data, rate = read_wav(path)
    if rate not in (8000, 16000):
        data = soxr.resample(data, rate, 16000).astype(np.int16)
        rate = 16000
    return data, rate


async def run_demo(
    clip_path: Path | None = None, out_dir: Path | None = None, gateways: int = 3,
    hands_free: bool = False, impairment: ImpairmentSettings | None = None,
) -> DemoResult:
    """Run the simulated site once and score every listener (``hands_free``: the talker's port
    is in ``vad`` talk mode and nobody presses a button; ``impairment``: voice goes through a
    lossy hub instead of clean multicast)."""
    started = time.monotonic()
    lead_in_s = LEAD_IN_S if impairment is None else LOSSY_LEAD_IN_S
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-demo-")))
        clip_path, clip, rate = speech_clip(clip_path, work)
        lead, tail = int(lead_in_s * rate), int(TAIL_S * rate)
        said = np.concatenate([np.zeros(lead, np.int16), clip, np.zeros(tail, np.int16)])
        mic = work / "talker-mic.wav"
        write_wav(mic, said, rate)
        rec_dir = out_dir or work
        rec_dir.mkdir(parents=True, exist_ok=True)

        broker = stack.enter_context(Mosquitto())
        layout = site.pick_layout(gateways)
        configs = [
            site.gateway_config(
                i, layout, broker.port, str(mic) if i == 0 else "",
                str(site.output_path(rec_dir, f"gw-{chr(ord('a') + i)}")), rate,
                talk_mode="vad" if hands_free and i == 0 else "ptt",
                via=site.HUB_ADDRESS if impairment is not None else "",
            )
            for i in range(gateways)
        ]
        hub = None
        if impairment is not None:
            hub = ImpairedHub((site.HUB_ADDRESS, layout.udp_port),
                              [(a, layout.udp_port) for a in layout.addresses], impairment)
            await hub.start()
            stack.callback(hub.close)
        factories = [MockFactory() for _ in configs]
        apps = [App(cfg, pin_factory=f) for cfg, f in zip(configs, factories, strict=True)]
        async with contextlib.AsyncExitStack() as running_apps:
            for app in apps:
                await running_apps.enter_async_context(running(app))
            online = await _wait_online(apps, timeout_s=5.0)
            talker = apps[0]
            device = talker.ports[site.PORT_NAME].device
            t0 = getattr(device, "started_at", time.monotonic())
            if not hands_free:
                await _sleep_until(t0 + (lead_in_s / 2 if impairment is None else LOSSY_PRESS_S))
                button = factories[0].pin(site.PTT_PIN)
                button.drive_low()  # press PTT
                await _sleep_until(t0 + lead_in_s + len(clip) / rate + TAIL_S / 2)
                button.drive_high()  # release
            await _sleep_until(t0 + len(said) / rate + 0.3)
            await _settle(talker.ports[site.PORT_NAME])
            packets_sent = talker.ports[site.PORT_NAME].uplink.rtp.packets_sent
            network = None if hub is None else _network_summary(impairment, hub)
            counters = [app.counters()["ports"][site.PORT_NAME] for app in apps]
            starts = [getattr(a.ports[site.PORT_NAME].device, "started_at", t0) for a in apps]
        listeners = []
        for i, cfg in enumerate(configs[1:], start=1):
            heard, _ = read_wav(site.output_path(rec_dir, cfg.gateway.id))
            result = score_recording(said, heard, rate, starts[i] - t0, lead, len(clip))
            listeners.append(Listener(
                cfg.gateway.id, site.PORT_NAME, result.delay_ms, result.pesq, result.pesq_mode,
                counters[i]["packets_received"], counters[i]["packets_lost"],
                counters[i]["frames_concealed"], counters[i]["frames_fec_recovered"],
            ))
        return DemoResult(
            clip=str(clip_path), clip_seconds=len(clip) / rate, rate_hz=rate,
            talker=f"{configs[0].gateway.id}/{site.PORT_NAME}", packets_sent=packets_sent,
            talk_mode="vad" if hands_free else "ptt",
            listeners=listeners, presence_online=online,
            wall_seconds=time.monotonic() - started, network=network,
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _network_summary(settings: ImpairmentSettings | None, hub: ImpairedHub) -> dict[str, Any]:
    assert settings is not None
    totals = hub.stats()["totals"]
    return {
        "loss_pct": settings.loss_pct, "burst_ms": settings.burst_ms,
        "jitter_ms": settings.jitter_ms, "reorder_pct": settings.reorder_pct,
        "seed": settings.seed, "relay_seen": totals["seen"], "relay_dropped": totals["dropped"],
        "relay_reordered": totals["reordered"],
    }


async def _settle(port: Any, timeout_s: float = 1.5) -> None:
    """Let the talker's last talk spurt finish (hands-free hold, end-flag packets) and its last
    packets arrive, before the counters are read."""
    deadline = time.monotonic() + timeout_s
    while port.uplink.busy and time.monotonic() < deadline:  # noqa: ASYNC110 - the uplink runs
        await asyncio.sleep(0.02)  # on device ticks and signals nothing: poll it
    await asyncio.sleep(0.1)


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def _wait_online(apps: list[App], timeout_s: float) -> int:
    """Wait (bounded) for every gateway to reach the broker; the count that did."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(a.control is not None and a.control.connected for a in apps):
            break
        await asyncio.sleep(0.05)
    return sum(1 for a in apps if a.control is not None and a.control.connected)


def format_table(result: DemoResult) -> str:
    """The human-readable result."""
    lines = [
        f"clip: {result.clip} ({result.clip_seconds:.1f} s at {result.rate_hz} Hz)",
        f"talker: {result.talker} "
        + (f"(PTT via GPIO {site.PTT_PIN})" if result.talk_mode == "ptt"
           else "(hands-free: voice detection with 200 ms pre-roll)")
        + f", {result.packets_sent} packets sent",
        f"broker: {result.presence_online} gateway(s) online",
    ]
    if result.network:
        n = result.network
        lines.append(
            f"network: relay with {n['loss_pct']:g}% loss"
            + (f" in {n['burst_ms']:g} ms bursts" if n["burst_ms"] else " (random)")
            + f", {n['jitter_ms']:g} ms jitter, {n['reorder_pct']:g}% reordered (seed {n['seed']}); "
            f"it dropped {n['relay_dropped']} of {n['relay_seen']} datagrams"
        )
    lines += [
        "",
        f"{'listener':<14}{'delay_ms':>10}{'pesq':>8}{'mode':>6}{'received':>10}"
        f"{'lost':>6}{'fec':>5}{'concealed':>11}",
    ]
    for li in result.listeners:
        delay = "-" if li.delay_ms is None else f"{li.delay_ms:.1f}"
        pesq = "-" if li.pesq is None else f"{li.pesq:.2f}"
        lines.append(
            f"{li.gateway + '/' + li.port:<14}{delay:>10}{pesq:>8}{li.pesq_mode:>6}"
            f"{li.packets_received:>10}{li.packets_lost:>6}{li.frames_fec_recovered:>5}"
            f"{li.frames_concealed:>11}"
        )
    lines.append(f"\nfinished in {result.wall_seconds:.1f} s")
    return "\n".join(lines)


__all__ = ["DemoResult", "Listener", "asdict", "format_table", "run_demo"]
