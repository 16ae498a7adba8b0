"""End to end through the real pieces: ALSA file PCMs, libopus, UDP on loopback, mosquitto and
gpiozero's MockFactory. A PTT press on gateway A puts the clip into gateway B's ALSA playback."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import numpy as np
from gpiozero.pins.mock import MockFactory

from gateway.app import App, running
from gateway.audio.wav import read_wav
from gateway.config import Config
from gateway.sim import site
from gateway.sim.broker import Mosquitto
from gateway.sim.metrics import Heard, score_recording
from tests.rigs.alsa import AlsaRig
from tests.rigs.mqtt import Collector
from tests.rigs.voice import SPEECH

LEAD_S = 0.6


def _alsa_config(index: int, layout: site.SiteLayout, broker: Mosquitto, pcm: str) -> Config:
    cfg = site.gateway_config(index, layout, broker.port, "", "", 16000, site="e2e")
    (port,) = cfg.ports
    port = dataclasses.replace(port, backend="alsa", capture_device=pcm, playback_device=pcm,
                               pace_realtime=True, device_rate_hz=16000)
    return dataclasses.replace(cfg, ports=(port,))


class _Site:
    """Two gateways A and B on ALSA file PCMs gw_a and gw_b."""

    def __init__(self, rig: AlsaRig, broker: Mosquitto) -> None:
        clip, rate = read_wav(SPEECH)
        assert rate == 16000
        self.clip = clip
        self.said = np.concatenate(
            [np.zeros(int(LEAD_S * rate), np.int16), clip, np.zeros(rate, np.int16)]
        )
        # Reads past an ALSA file PCM's infile return stale data: pad it well past the run.
        rig.write_capture("gw_a", self.said, pad_s=10.0)
        rig.write_capture("gw_b", np.zeros(0, np.int16), pad_s=20.0)
        self.rig = rig
        layout = site.pick_layout(2)
        self.factories = [MockFactory(), MockFactory()]
        self.apps = [
            App(_alsa_config(i, layout, broker, pcm), pin_factory=f)
            for i, (pcm, f) in enumerate(zip(("gw_a", "gw_b"), self.factories, strict=True))
        ]

    @property
    def button(self):  # type: ignore[no-untyped-def]
        return self.factories[0].pin(site.PTT_PIN)

    def t0(self, i: int) -> float:
        return self.apps[i].ports[site.PORT_NAME].device.started_at  # type: ignore[attr-defined, no-any-return]

    async def talk(self, press: bool = True, during: object = None) -> None:
        """Press PTT over the clip (optionally doing something half-way through)."""
        t0 = self.t0(0)
        await _until(t0 + LEAD_S / 2)
        if press:
            self.button.drive_low()
        if during is not None:
            await _until(t0 + LEAD_S + len(self.clip) / 16000 / 2)
            during()  # type: ignore[operator]
        await _until(t0 + LEAD_S + len(self.clip) / 16000 + 0.3)
        self.button.drive_high()
        await _until(t0 + len(self.said) / 16000 + 0.3)

    def heard(self) -> Heard:
        heard = self.rig.read_playback("gw_b")
        return score_recording(self.said, heard, 16000, self.t0(1) - self.t0(0),
                               int(LEAD_S * 16000), len(self.clip))


async def _until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def test_ptt_press_on_a_is_heard_on_b(alsa_rig: AlsaRig, mosquitto: Mosquitto) -> None:
    s = _Site(alsa_rig, mosquitto)
    watch = Collector(mosquitto.port, "gateway/v1/e2e/#")
    try:
        async with running(s.apps[0]), running(s.apps[1]):
            await s.talk()
            counters = [a.counters() for a in s.apps]
        talking = watch.wait_for(
            lambda m: m.topic.endswith("gw-a/ports/radio") and json.loads(m.payload)["talking"],
            timeout_s=2.0,
        )
    finally:
        watch.close()
    heard = s.heard()
    assert heard.pesq is not None and heard.pesq >= 3.5, heard
    assert heard.delay_ms is not None and heard.delay_ms < 150, heard
    sent = counters[0]["ports"]["radio"]["packets_sent"]
    assert sent > len(s.clip) / 320
    assert counters[1]["ports"]["radio"]["packets_received"] == sent
    assert counters[1]["ports"]["radio"]["packets_lost"] == 0
    assert talking is not None  # A's port state went to talking on the broker


async def test_no_press_no_audio(alsa_rig: AlsaRig, mosquitto: Mosquitto) -> None:
    s = _Site(alsa_rig, mosquitto)
    async with running(s.apps[0]), running(s.apps[1]):
        await s.talk(press=False)
        counters = [a.counters() for a in s.apps]
    assert counters[0]["ports"]["radio"]["packets_sent"] == 0
    assert counters[1]["udp_received"] == 0
    played = s.rig.read_playback("gw_b")
    assert len(played) > 16000 * 3  # B's device ran the whole time...
    assert not played.any()  # ...and played only silence


async def test_broker_stopped_mid_talk(alsa_rig: AlsaRig, mosquitto: Mosquitto) -> None:
    s = _Site(alsa_rig, mosquitto)
    async with running(s.apps[0]), running(s.apps[1]):
        deadline = time.monotonic() + 5
        while not all(a.control and a.control.connected for a in s.apps):
            assert time.monotonic() < deadline, "gateways never reached the broker"
            await asyncio.sleep(0.05)
        await s.talk(during=mosquitto.kill)
        assert not any(a.control and a.control.connected for a in s.apps)
        heard = s.heard()
        mosquitto.restart()
        restarted = time.monotonic()
        # The restarted broker has no retained state: presence must come from the gateways.
        watch = Collector(mosquitto.port, "gateway/v1/e2e/gateways/+/presence")
        try:
            online = set()
            while len(online) < 2 and time.monotonic() - restarted < 5.0:
                msg = watch.wait_for(lambda m: json.loads(m.payload)["state"] == "online",
                                     timeout_s=0.2)
                if msg is not None:
                    online.add(msg.topic)
                await asyncio.sleep(0.05)
        finally:
            watch.close()
        assert len(online) == 2, f"presence back for only {online} within 5 s"
    # Voice never waited on the broker: the clip went through whole.
    assert heard.pesq is not None and heard.pesq >= 3.5, heard
    assert heard.delay_ms is not None and heard.delay_ms < 150, heard
