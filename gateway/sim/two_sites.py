"""``gateway demo --scenario two-sites``: two sites linked through a central broker.

Site ``alpha`` and site ``bravo`` each have their own LAN (their own multicast group: they can't
hear each other directly) and their own site broker (mosquitto), and each site broker is bridged
to a third, central broker with the bridge configuration ``gateway bridge`` writes. Talk group
``ops`` is marked ``wan = true``: gw-a's voice goes out on alpha's LAN and, as the same SRTP
packets in MQTT messages, through alpha's broker, the centre and bravo's broker to gw-b, which
checks them exactly as it checks its LAN. The keys cross the same way (the announcements). The
scenario measures how long the first key exchange across the sites takes, then scores what gw-b
heard of gw-a's talk (delay and PESQ) and counts the packets that crossed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gpiozero.pins.mock import MockFactory

from gateway.app import App, running
from gateway.audio.wav import read_wav, write_wav
from gateway.control import brokerconf
from gateway.net.keys import generate_secret
from gateway.sim import site
from gateway.sim.broker import Mosquitto, free_tcp_port
from gateway.sim.demo import _settle, _sleep_until, _wait_online, speech_clip
from gateway.sim.metrics import score_spurt

SITES = ("alpha", "bravo")
LEAD_S = 4.0
"""Silence before the talker's first clip: the first key exchange crosses the bridges meanwhile
(it is measured), and push-to-talk goes down PRESS_BEFORE_S before each clip."""
PRESS_BEFORE_S = 0.3
GAP_S = 1.5
"""Between the two talk spurts (push-to-talk released in between); the second says the clip
backwards, so the scoring can't mistake one spurt for the other."""
TAIL_S = 0.8


@dataclass(frozen=True)
class TwoSitesResult:
    """What the scenario measured."""

    talker: str
    listener: str
    keys_after_s: float | None
    """From the gateways' start until the listener knew the talker's key (it crossed the bridges
    in the talker's announcement)."""
    delay_ms: float | None
    pesq: float | None
    """Of the first talk spurt."""
    second_delay_ms: float | None
    second_pesq: float | None
    """Of the second talk spurt (the listener's buffer has learned the path by then)."""
    packets_sent: int
    voice_over_mqtt_sent: int
    voice_over_mqtt_received: int
    packets_received: int
    packets_lost: int
    lan_packets_at_listener: int
    """Voice the listener got straight from the talker's LAN: 0, the sites are apart."""
    wall_seconds: float

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        doc = dataclasses.asdict(self)
        for key in ("delay_ms", "pesq", "second_delay_ms", "second_pesq", "keys_after_s",
                    "wall_seconds"):
            if doc[key] is not None:
                doc[key] = round(doc[key], 3 if key == "keys_after_s" else 2)
        return {"scenario": "two-sites", **doc}


def _site_broker(directory: Path, site_name: str, central_port: int) -> Mosquitto:
    """A site broker on a free loopback port, bridged to the centre (the bridge as ``gateway
    bridge`` writes it; logins are left out here to keep the demo self-contained)."""
    port = free_tcp_port()
    directory.mkdir(parents=True, exist_ok=True)
    bridge = brokerconf.Bridge(site_name, (("127.0.0.1", central_port),), restart_min_s=1,
                               restart_max_s=2)
    text = (f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n\n"
            + brokerconf.render_bridge(bridge))
    return Mosquitto(port, directory=directory, config_text=text)


async def run_two_sites(clip_path: Path | None = None, out_dir: Path | None = None) -> TwoSitesResult:
    """Run the two-sites scenario once."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-demo-")))
        clip_path, clip, rate = speech_clip(clip_path, work)
        second_s = LEAD_S + len(clip) / rate + GAP_S
        said = np.concatenate([np.zeros(int(LEAD_S * rate), np.int16), clip,
                               np.zeros(int(second_s * rate) - int(LEAD_S * rate) - len(clip), np.int16),
                               clip[::-1], np.zeros(int(TAIL_S * rate), np.int16)])
        write_wav(work / "mic.wav", said, rate)
        rec_dir = out_dir or work
        rec_dir.mkdir(parents=True, exist_ok=True)
        central = stack.enter_context(Mosquitto())
        brokers = [stack.enter_context(_site_broker(work / name, name, central.port).start())
                   for name in SITES]
        secret = generate_secret()
        configs = []
        for i, name in enumerate(SITES):
            # Each site its own LAN: its own addresses, multicast group and port.
            layout = site.pick_layout(1, subnet=20 + i)
            cfg = site.gateway_config(0, layout, brokers[i].port, str(work / "mic.wav") if i == 0 else "",
                                      str(site.output_path(rec_dir, f"{name}-gw")), rate, site=name)
            cfg = dataclasses.replace(
                cfg, gateway=dataclasses.replace(cfg.gateway, id=f"gw-{'ab'[i]}"),
                groups=tuple(dataclasses.replace(g, wan=True, secret=secret) for g in cfg.groups))
            configs.append(cfg)
        factories = [MockFactory() for _ in configs]
        apps = [App(cfg, pin_factory=f) for cfg, f in zip(configs, factories, strict=True)]
        booted = time.monotonic()
        async with contextlib.AsyncExitStack() as running_apps:
            for app in apps:
                await running_apps.enter_async_context(running(app))
            await _wait_online(apps, timeout_s=5.0)
            linked = time.monotonic()
            talker = apps[0].ports[site.PORT_NAME]
            listener_keys = apps[1].transport.security[site.GROUP]
            keys_after = None
            deadline = linked + LEAD_S - 0.5
            while time.monotonic() < deadline:  # the announcements cross the bridges
                if listener_keys.knows(talker.ssrc):
                    keys_after = time.monotonic() - booted
                    break
                await asyncio.sleep(0.05)
            t0 = getattr(talker.device, "started_at", linked)  # the microphone file's sample 0
            button = factories[0].pin(site.PTT_PIN)
            for start_s in (LEAD_S, second_s):
                await _sleep_until(t0 + start_s - PRESS_BEFORE_S)
                button.drive_low()
                await _sleep_until(t0 + start_s + len(clip) / rate + 0.3)
                button.drive_high()
            await _sleep_until(t0 + len(said) / rate + 0.3)
            await _settle(talker)
            counters = [a.counters() for a in apps]
            controls = [a.control for a in apps]
            starts = [getattr(a.ports[site.PORT_NAME].device, "started_at", t0) for a in apps]
            lan = counters[1]["udp_received"] - (apps[1].control.stats.voice_received
                                                 if apps[1].control else 0)
        heard, _ = read_wav(site.output_path(rec_dir, f"{SITES[1]}-gw"))
        first, second = (score_spurt(said, heard, rate, starts[1] - starts[0], int(at * rate),
                                      len(clip)) for at in (LEAD_S, second_s))
        assert controls[0] is not None and controls[1] is not None
        return TwoSitesResult(
            talker=f"{SITES[0]}/gw-a/{site.PORT_NAME}", listener=f"{SITES[1]}/gw-b/{site.PORT_NAME}",
            keys_after_s=keys_after, delay_ms=first.delay_ms, pesq=first.pesq,
            second_delay_ms=second.delay_ms, second_pesq=second.pesq,
            packets_sent=counters[0]["ports"][site.PORT_NAME]["packets_sent"],
            voice_over_mqtt_sent=controls[0].stats.voice_sent,
            voice_over_mqtt_received=controls[1].stats.voice_received,
            packets_received=counters[1]["ports"][site.PORT_NAME]["packets_received"],
            packets_lost=counters[1]["ports"][site.PORT_NAME]["packets_lost"],
            lan_packets_at_listener=lan, wall_seconds=time.monotonic() - started,
        )
    raise AssertionError("unreachable")  # pragma: no cover


def format_two_sites(r: TwoSitesResult) -> str:
    """The human-readable result."""
    keys = "never" if r.keys_after_s is None else f"{r.keys_after_s:.2f} s after the gateways started"

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    return "\n".join([
        "scenario: two sites (alpha, bravo), each with its own LAN and site broker, both bridged "
        "to a central broker; talk group ops is wan = true",
        f"talker {r.talker} -> alpha broker -> central -> bravo broker -> {r.listener}",
        f"keys: the listener knew the talker's key {keys}",
        f"voice over MQTT: {r.voice_over_mqtt_sent} packets sent at alpha, "
        f"{r.voice_over_mqtt_received} received at bravo ({r.packets_sent} sent in all; "
        f"{r.lan_packets_at_listener} reached bravo over a LAN)",
        f"heard at bravo, first talk spurt: delay {fmt(r.delay_ms, '.1f')} ms, PESQ {fmt(r.pesq, '.2f')}; "
        f"second: delay {fmt(r.second_delay_ms, '.1f')} ms, PESQ {fmt(r.second_pesq, '.2f')}; "
        f"{r.packets_received} packets, {r.packets_lost} lost",
        f"\nfinished in {r.wall_seconds:.1f} s",
    ])
