"""A two-port voice rig without the App: WAV devices, real UDP sockets on loopback, real libopus.

Used by transport and voice tests that need a live stream to check something against.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.audio.wav import WavDevice, read_wav, write_wav
from gateway.config import CodecSettings, GroupSettings, NetworkSettings, PortSettings
from gateway.net.keys import generate_secret
from gateway.net.srtp import GroupSecurity
from gateway.net.udp import UdpTransport
from gateway.sim import site
from gateway.sim.metrics import Heard, score_recording
from gateway.voice.port import Port

SPEECH = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "speech" / "speech.wav"
LEAD_S = 0.5


@dataclass
class Station:
    """One side of the rig."""

    port: Port
    transport: UdpTransport
    address: str
    security: GroupSecurity
    announcer: asyncio.Task[None] | None = None


@dataclass
class Rig:
    """Talker and listener, plus what was said."""

    talker: Station
    listener: Station
    group: GroupSettings
    said: np.ndarray
    rate: int
    clip_len: int
    out: Path

    def heard(self) -> Heard:
        """Score what the listener recorded against what the talker said."""
        heard, _ = read_wav(self.out)
        t0 = self.talker.port.device.started_at  # type: ignore[attr-defined]
        t1 = self.listener.port.device.started_at  # type: ignore[attr-defined]
        return score_recording(self.said, heard, self.rate, t1 - t0, int(LEAD_S * self.rate),
                               self.clip_len)


async def make_rig(tmp: Path, codec: CodecSettings | None = None, multicast: bool = True) -> Rig:
    """Talker 127.0.0.21 and listener 127.0.0.22 in group 'ops', started."""
    rng = random.Random()
    clip, rate = read_wav(SPEECH)
    lead = int(LEAD_S * rate)
    said = np.concatenate([np.zeros(lead, np.int16), clip, np.zeros(rate, np.int16)])
    mic = tmp / "mic.wav"
    write_wav(mic, said, rate)
    layout = site.pick_layout(2, rng, first_host=21)
    group = GroupSettings(
        "ops", port=layout.udp_port, multicast=layout.multicast if multicast else "",
        peers=() if multicast else layout.addresses,
    )
    codec = codec or CodecSettings()
    stations = []
    loop = asyncio.get_running_loop()
    secret = generate_secret().encode()
    for i, (addr, inp) in enumerate(zip(layout.addresses, (str(mic), ""), strict=True)):
        net = NetworkSettings(bind_address=addr, multicast_interface="127.0.0.1")
        out = tmp / f"out{i}.wav"
        ps = PortSettings(f"p{i}", backend="wav", device_rate_hz=rate, wav_input=inp,
                          wav_output=str(out), groups=("ops",), talk_group="ops")
        dev = WavDevice(ps.name, rate, rate * codec.frame_ms // 1000, inp, str(out))
        box: dict[str, UdpTransport] = {}
        sec = GroupSecurity("ops", secret)
        send: Callable[[str, bytes], None] = (  # noqa: E731
            lambda g, d, b=box, sec=sec: b["t"].send(g, sec.protect(d)))
        first_seq = rng.randrange(65536)
        port = Port(ps, codec, net, dev, ssrc=0x1000 + i, send=send, initial_sequence=first_seq)
        sec.add_sender(port.ssrc, first_seq)
        transport = UdpTransport(net, [group], codec.payload_type, port.receive, {"ops": sec},
                                 own_ssrcs={port.ssrc})
        box["t"] = transport
        await transport.start()
        stations.append(Station(port, transport, addr, sec))
    for s in stations:
        s.announcer = asyncio.create_task(s.transport.announce_forever())
    # Each side learns the other's key from a fresh announcement within a round trip or two.
    async with asyncio.timeout(2):
        # Polls state that datagram callbacks change; no event to wait on.
        while not (stations[1].security.knows(stations[0].port.ssrc)  # noqa: ASYNC110
                   and stations[0].security.knows(stations[1].port.ssrc)):
            await asyncio.sleep(0.005)
    for s in stations:
        s.port.start(loop)
    return Rig(stations[0], stations[1], group, said, rate, len(clip), tmp / "out1.wav")


async def talk(rig: Rig, press: bool = True) -> None:
    """Press PTT over the clip (or not), then stop both stations."""
    await asyncio.sleep(LEAD_S / 2)
    if press:
        rig.talker.port.set_ptt(True)
    await asyncio.sleep(LEAD_S / 2 + rig.clip_len / rig.rate + 0.3)
    rig.talker.port.set_ptt(False)
    await asyncio.sleep(0.4)
    for s in (rig.talker, rig.listener):
        s.port.stop()
        if s.announcer is not None:
            s.announcer.cancel()
        s.transport.close()
