"""Rotating a talk group's secret: a config change plus a reload, no restart, other groups untouched."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np

from gateway.app import App, running
from gateway.audio.wav import read_wav, write_wav
from gateway.config import Config, GroupSettings, MqttSettings
from gateway.net import keys
from gateway.sim import site
from tests.rigs.voice import SPEECH


def _with_secret(cfg: Config, group: str, secret: str) -> Config:
    return dataclasses.replace(cfg, groups=tuple(
        dataclasses.replace(g, secret=secret) if g.name == group else g for g in cfg.groups))


async def test_rotating_one_groups_secret_rekeys_it_and_nothing_else(tmp_path: Path) -> None:
    clip, rate = read_wav(SPEECH)
    mic = tmp_path / "mic.wav"
    write_wav(mic, np.tile(np.concatenate([clip, np.zeros(rate // 2, np.int16)]), 3), rate)
    layout = site.pick_layout(2, first_host=41)
    maint = GroupSettings("maint", port=layout.udp_port + 1, multicast="239.255.99.7",
                          secret=keys.generate_secret())
    configs = []
    for i, (inp, out) in enumerate([(str(mic), ""), ("", str(tmp_path / "heard.wav"))]):
        cfg = site.gateway_config(i, layout, 1, inp, out, rate, talk_mode="open" if i == 0 else "ptt")
        (port,) = cfg.ports
        port = dataclasses.replace(port, groups=(site.GROUP, "maint"))
        configs.append(dataclasses.replace(cfg, mqtt=MqttSettings(enabled=False),
                                           groups=(*cfg.groups, maint), ports=(port,)))
    apps = [App(c) for c in configs]
    talker, listener = apps
    ssrc = talker.ports[site.PORT_NAME].ssrc
    async with running(talker), running(listener):
        await asyncio.sleep(1.0)
        ops_rx = listener.transport.security[site.GROUP]
        assert ops_rx.knows(ssrc)
        maint_tx = talker.transport.security["maint"]
        port_objects = [a.ports[site.PORT_NAME] for a in apps]
        old_epoch = talker.transport.security[site.GROUP].sender_epoch(ssrc)
        heard_before = listener.ports[site.PORT_NAME].downlink.totals().packets_received
        assert heard_before > 20

        new_secret = keys.generate_secret()
        assert talker.reload(_with_secret(talker.config, site.GROUP, new_secret)) == [site.GROUP]
        await asyncio.sleep(0.3)
        # The listener still has the old secret: it can't authenticate the talker's new keys.
        assert listener.counters()["udp_rejected"].get("unknown_sender", 0) + \
            listener.counters()["udp_rejected"].get("auth_failure", 0) > 0
        assert listener.reload(_with_secret(listener.config, site.GROUP, new_secret)) == [site.GROUP]
        await asyncio.sleep(1.0)
        heard_after = listener.ports[site.PORT_NAME].downlink.totals().packets_received

        assert listener.transport.security[site.GROUP].knows(ssrc)
        assert talker.transport.security[site.GROUP].sender_epoch(ssrc) != old_epoch
        assert talker.transport.security["maint"] is maint_tx  # the other group: untouched
        assert [a.ports[site.PORT_NAME] for a in apps] == port_objects  # no port restarted
        assert heard_after > heard_before + 30  # voice flows again, under the new keys
        # Reloading the same secrets again changes nothing.
        assert talker.reload(talker.config) == []
