"""One run of the network benchmark (:mod:`bench.network`): two gateways' full stack through a relay.

A run is a simulated site of two :class:`gateway.app.App` boxes in this process (the same class the
daemon runs), each on its own loopback address with a WAV-backed port paced in real time, voice
sent through a seeded :class:`gateway.net.impair.ImpairedHub` between them (loss, bursts, jitter,
an outage). The talker's PTT is pressed through its mock GPIO pin; the listener records what its
port plays. Each run has its own event loop (the benchmark runs a few at once, each in a worker
process) and its own loopback range (``127.0.S.11``, ``127.0.S.12``, hub ``127.0.S.9``), so runs
never hear each other.

The boxes run in LAN-only mode (``mqtt.enabled = false``): voice, keys and the listeners' loss
reports all travel in-band on the group's UDP socket, so no broker is needed for anything measured.

Every 100 ms a sampler reads the listener's stream of the talker (the jitter buffer's ``delay_ms``
and ``target_ms``, whether it is playing, its counters) and the talker's encoder and RTP counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from bench.network_material import RATE_HZ, Samples, Script
from gateway.app import App, running
from gateway.audio.bridge import CaptureBridge, PlaybackQueue
from gateway.audio.pacing import Pacer
from gateway.audio.wav import WavDevice, read_wav, write_wav
from gateway.config import CodecSettings, Config
from gateway.net.impair import Address, ImpairedHub, Impairment, ImpairmentSettings, link_seed
from gateway.sim import site

SAMPLE_PERIOD_S = 0.1
FIRST_SLOT = 101
"""Run ``k`` uses 127.0.(FIRST_SLOT + k % 100).x: clear of the tests' and demo's 127.0.0.x."""
RUN_TAIL_S = 0.3
"""Recording goes on this long after the microphone signal ends."""


@dataclass(frozen=True)
class Network:
    """What the relay does to every datagram, both ways."""

    loss_pct: float = 0.0
    burst_ms: float = 0.0
    """0: independent loss; > 0: Gilbert bursts of this mean length."""
    jitter_ms: float = 0.0
    outage_ms: float = 0.0
    """A total outage this long starts at ``outage_at_s`` (0 = none)."""
    outage_at_s: float = 0.0


@dataclass(frozen=True)
class Variant:
    """The receiving and sending policy under test."""

    name: str
    adaptive_fec: bool = True
    fec: bool = False
    expected_loss_pct: int = 0
    jitter_min_ms: int = 0
    jitter_max_ms: int = 200

    def codec(self, frame_ms: int) -> CodecSettings:
        """The codec settings of both boxes."""
        return CodecSettings(frame_ms=frame_ms, adaptive_fec=self.adaptive_fec, fec=self.fec,
                             expected_loss_pct=self.expected_loss_pct)


@dataclass(frozen=True)
class RunSpec:
    """One run: a condition (network and frame length) with one variant."""

    condition: str
    variant: Variant
    network: Network
    seed: int
    frame_ms: int = 20
    phase_ms: float = 0.0
    """The listener's device clock ticks this long after the talker's (modulo a frame)."""


@dataclass(frozen=True)
class Sample:
    """What the sampler saw at ``t_s`` (seconds from the talker device's start)."""

    t_s: float
    playing: bool
    delay_ms: float
    target_ms: float
    received: int
    lost: int
    concealed: int
    fec_recovered: int
    fec_on: bool
    loss_hint_pct: int
    packets_sent: int
    octets_sent: int
    playback_queued: int
    """Samples queued for the listener's device (read on the loop, after its latest tick): one frame
    normally; more when the loop once fell behind the device, which stays as extra delay."""


@dataclass
class RunRaw:
    """Everything a run produced, before scoring."""

    spec: RunSpec
    heard: Samples
    heard_late_s: float
    """How much later the listener's sample 0 was taken than the talker's."""
    samples: list[Sample]
    listener: dict[str, Any]
    """The listener's SenderStats of the talker at the end."""
    talker: dict[str, Any]
    hub: dict[str, Any]
    outage_s: tuple[float, float] | None
    """(start, end) of the outage on the talker's timeline, as the hub applied it."""
    wall_s: float


class PhasedWavDevice(WavDevice):
    """A :class:`~gateway.audio.wav.WavDevice` whose period grid is ``phase_s`` after a reference
    device's (set :attr:`reference` before it starts).

    Mouth-to-ear delay depends on where the listener's playout ticks fall between the talker's
    packets: the jitter buffer can only start a frame on a tick, so two boxes whose clocks are ``φ``
    apart differ from two at ``φ + frame/2`` by up to half a frame. Real boxes meet at any phase;
    here it is chosen, so variants compare at the same phase. ``WavDevice`` always starts its grid at
    the moment it is started, so this copies its ``start``, waiting (up to one period, blocking the
    caller: it happens once, at start-up) for the next point of the shifted grid. Starting on a point
    already past would put the first two ticks back to back; a loop that hadn't handled the first
    capture by the second tick would leave a frame of extra playback delay queued for good.
    """

    def __init__(self, *args: Any, phase_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase_s = phase_s
        self.reference: WavDevice | None = None

    def start(self, capture: CaptureBridge, playback: PlaybackQueue) -> None:
        """Start like ``WavDevice.start``, at the next point of the reference's grid + ``phase_s``."""
        period = self.frame_samples / self.rate_hz
        now = time.monotonic()
        origin = (self.reference.started_at if self.reference is not None else now) + self.phase_s
        start_at = origin + period * math.ceil((now - origin) / period)
        if self._output_path:
            Path(self._output_path).parent.mkdir(parents=True, exist_ok=True)
            self._writer = wave.open(self._output_path, "wb")  # noqa: SIM115 - closed in stop()
            self._writer.setnchannels(1)
            self._writer.setsampwidth(2)
            self._writer.setframerate(self.rate_hz)
        self._stop.clear()
        time.sleep(max(0.0, start_at - time.monotonic()))
        pacer = Pacer(period, start_at=start_at)
        self.started_at = pacer.started_at
        self._thread = threading.Thread(target=self._run, args=(pacer, capture, playback),
                                        name=f"wav-{self.name}", daemon=True)
        self._thread.start()


def site_layout(slot: int, rng: random.Random) -> tuple[site.SiteLayout, str]:
    """Addresses for site ``slot`` (127.0.slot.11 and .12) and its hub (127.0.slot.9), on a UDP port
    free on all three."""
    return site.pick_layout(2, rng, subnet=slot), f"127.0.{slot}.9"


def seed_links_by_role(hub: ImpairedHub, members: list[Address], seed: int) -> None:
    """Seed each directed link from its members' roles (talker, listener), not their addresses.

    The hub derives a link's seed from the two addresses (:func:`gateway.net.impair.link_seed`), so
    the variants of one condition, each on its own loopback range, would draw unrelated loss patterns.
    It has no option for role-based seeds; re-initialising each link's model in place (before any
    traffic) is the way in from outside.
    """
    for i, src in enumerate(members):
        for j, dst in enumerate(members):
            if i != j:
                model = hub.link(src, dst)
                settings = dataclasses.replace(model.settings, seed=link_seed(seed, f"m{i}", f"m{j}"))
                Impairment.__init__(model, settings)


def configs(spec: RunSpec, layout: site.SiteLayout, hub: str, mic: Path, out: Path) -> list[Config]:
    """The two boxes' configs: gw-a talks (plays ``mic``), gw-b records to ``out``."""
    v = spec.variant
    result = []
    for i in range(2):
        cfg = site.gateway_config(
            i, layout, 0, str(mic) if i == 0 else "", str(out) if i == 1 else "", RATE_HZ,
            jitter_min_ms=v.jitter_min_ms, jitter_max_ms=v.jitter_max_ms,
            codec=v.codec(spec.frame_ms), via=hub,
        )
        result.append(dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, enabled=False)))
    return result


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


def _sample(t_s: float, talker: App, listener: App) -> Sample:
    tp = talker.ports[site.PORT_NAME]
    lp = listener.ports[site.PORT_NAME]
    stream = lp.downlink.senders.get(tp.ssrc)
    enc = tp.uplink.encoder
    rtp = tp.uplink.rtp
    if stream is None:
        return Sample(t_s, False, 0.0, 0.0, 0, 0, 0, 0, enc.fec, enc.expected_loss_pct,
                      rtp.packets_sent, rtp.octets_sent, lp.playback.queued)
    s = stream.stats
    return Sample(t_s, stream.jitter.playing, s.delay_ms, s.target_ms, s.packets_received,
                  s.packets_lost, s.frames_concealed, s.frames_fec_recovered, enc.fec,
                  enc.expected_loss_pct, rtp.packets_sent, rtp.octets_sent, lp.playback.queued)


async def run_site(spec: RunSpec, script: Script, slot: int, work: Path) -> RunRaw:
    """Run one site in real time and collect what it did."""
    started = time.monotonic()
    layout, hub_host = site_layout(slot, random.Random(spec.seed * 1000 + slot))
    mic, out = work / f"site{slot}-mic.wav", work / f"site{slot}-heard.wav"
    write_wav(mic, script.said, RATE_HZ)
    cfgs = configs(spec, layout, hub_host, mic, out)
    n = spec.network
    members = [(a, layout.udp_port) for a in layout.addresses]
    hub = ImpairedHub((hub_host, layout.udp_port), members, ImpairmentSettings(
        loss_pct=n.loss_pct, burst_ms=n.burst_ms, jitter_ms=n.jitter_ms, packet_ms=spec.frame_ms,
        seed=spec.seed))
    seed_links_by_role(hub, members, spec.seed)
    samples: list[Sample] = []
    outage: tuple[float, float] | None = None
    async with hub, contextlib.AsyncExitStack() as stack:
        factories = [MockFactory() for _ in cfgs]
        ps = cfgs[1].ports[0]
        frame = RATE_HZ * spec.frame_ms // 1000
        ear = PhasedWavDevice(ps.name, RATE_HZ, frame, "", ps.wav_output, phase_s=spec.phase_ms / 1000)
        mouth = WavDevice(site.PORT_NAME, RATE_HZ, frame, str(mic), "")
        ear.reference = mouth
        talker = App(cfgs[0], devices={site.PORT_NAME: mouth}, pin_factory=factories[0])
        listener = App(cfgs[1], devices={site.PORT_NAME: ear}, pin_factory=factories[1])
        for app in (talker, listener):
            await stack.enter_async_context(running(app))
        t0, t1 = mouth.started_at, ear.started_at

        async def sampler() -> None:
            tick = 0
            while True:
                await _sleep_until(t0 + tick * SAMPLE_PERIOD_S)
                samples.append(_sample(time.monotonic() - t0, talker, listener))
                tick += 1

        async def outage_at() -> None:
            nonlocal outage
            await _sleep_until(t0 + n.outage_at_s)
            hub.outage(n.outage_ms)
            at = time.monotonic() - t0
            outage = (at, at + n.outage_ms / 1000)

        async with asyncio.TaskGroup() as tg:
            sampling = tg.create_task(sampler(), name=f"sampler-{slot}")
            if n.outage_ms:
                tg.create_task(outage_at(), name=f"outage-{slot}")
            button = factories[0].pin(site.PTT_PIN)
            await _sleep_until(t0 + script.press_s)
            button.drive_low()
            await _sleep_until(t0 + script.release_s)
            button.drive_high()
            await _sleep_until(t0 + script.seconds + RUN_TAIL_S)
            sampling.cancel()
        tp = talker.ports[site.PORT_NAME]
        stream = listener.ports[site.PORT_NAME].downlink.senders.get(tp.ssrc)
        heard_stats = vars(stream.stats).copy() if stream is not None else {}
        talker_counts = {"packets_sent": tp.uplink.rtp.packets_sent,
                         "payload_octets_sent": tp.uplink.rtp.octets_sent,
                         "frames_encoded": tp.uplink.frames_encoded,
                         "fec_at_end": tp.uplink.encoder.fec,
                         "loss_hint_at_end_pct": tp.uplink.encoder.expected_loss_pct,
                         **{f"{role}_{k}": v for role, app in (("talker", talker), ("listener", listener))
                            for k, v in _health(app).items()}}
        hub_stats: dict[str, Any] = dict(hub.stats()["links"])
    heard, _ = read_wav(out)
    return RunRaw(spec, heard, t1 - t0, samples, heard_stats, talker_counts, hub_stats, outage,
                  time.monotonic() - started)


def _health(app: App) -> dict[str, int]:
    """Signs that the loop fell behind the device clock: playback underruns (each one adds a frame
    of delay that stays queued) and captured frames dropped."""
    port = app.ports[site.PORT_NAME]
    return {"playback_underruns": port.playback.underruns,
            "playback_dropped_samples": port.playback.dropped_samples,
            "capture_dropped": port.capture.dropped if port.capture else 0}


def run_one(spec: RunSpec, script: Script, slot: int, work: Path) -> RunRaw:
    """One run in its own event loop (a worker process's task)."""
    return asyncio.run(run_site(spec, script, FIRST_SLOT + slot % 100, work))
