"""The floors applied to real ports: boxes driven frame by frame by hand (no threads, no sockets),
each box's packets handed to the others as its network would, with one clock for all."""

from __future__ import annotations

import dataclasses

import numpy as np
import soxr

from gateway.audio.device import DeviceStats
from gateway.audio.wav import read_wav
from gateway.config import CodecSettings, GroupSettings, NetworkSettings, PortSettings
from gateway.control.floor import Claim
from gateway.net import rtp
from gateway.sim.metrics import score_spurt
from gateway.voice.floors import Floors
from gateway.voice.port import Port
from tests.rigs.voice import SPEECH

RATE = 16000
N = RATE // 50


class _Device:
    def __init__(self) -> None:
        self.name = "test"
        self.rate_hz = RATE
        self.frame_samples = N
        self.stats = DeviceStats()


class _Site:
    """Boxes of one port each (or more), the packets of every box delivered to every other."""

    def __init__(self, groups: list[GroupSettings]) -> None:
        self.groups = groups
        self.now = 100.0
        self.boxes: list[tuple[Floors, dict[str, Port]]] = []
        self.alerts: list[tuple[str, int, bool]] = []
        self.heard: dict[str, list[np.ndarray]] = {}

    def box(self, *ports: PortSettings) -> dict[str, Port]:
        index = len(self.boxes)
        made: dict[str, Port] = {}
        for k, ps in enumerate(ports):
            made[ps.name] = Port(ps, CodecSettings(), NetworkSettings(), _Device(),  # type: ignore[arg-type]
                                 ssrc=0x1000 * (index + 1) + k,
                                 send=lambda g, d, i=index: self._deliver(i, g, d),
                                 clock=lambda: self.now)
        floors = Floors(self.groups, made, clock=lambda: self.now, wall_clock=lambda: self.now)
        floors.on_alert = lambda g, c, started, local: self.alerts.append((g, c.ssrc, started))
        self.boxes.append((floors, made))
        for name in made:
            self.heard[name] = []
        return made

    def _deliver(self, sender: int, group: str, datagram: bytes) -> None:
        packet = rtp.parse(datagram, 111)
        assert isinstance(packet, rtp.RtpPacket)
        for i, (floors, ports) in enumerate(self.boxes):
            if i != sender and floors.admit(group, packet):
                for port in ports.values():
                    if group in port.settings.groups:
                        port.receive(group, packet)

    def run(self, seconds: float, said: dict[str, np.ndarray] | None = None) -> None:
        """Tick every port for ``seconds``: ``said`` is what each port's microphone hears."""
        for _ in range(round(seconds * 50)):
            self.now += 0.02
            for floors, ports in self.boxes:
                floors.tick()
                for name, port in ports.items():
                    mic = (said or {}).get(name)
                    frame = mic[:N] if mic is not None and len(mic) >= N else np.zeros(N, np.int16)
                    if mic is not None:
                        (said or {})[name] = mic[N:]
                    port.tick(frame)
                    self.heard[name].append(port.playback.read(N))

    def loudness(self, port: str, last_s: float) -> float:
        x = np.concatenate(self.heard[port][-round(last_s * 50):]).astype(np.float64)
        return float(np.sqrt(np.mean(x * x)))


def _speech(seconds: float = 6.0) -> np.ndarray:
    clip, rate = read_wav(SPEECH)
    clip = soxr.resample(clip, rate, RATE).astype(np.int16) if rate != RATE else clip
    return np.resize(clip, int(seconds * RATE))


def _ptt(name: str, priority: int = 0, groups: tuple[str, ...] = ("ops",)) -> PortSettings:
    return PortSettings(name, backend="wav", device_rate_hz=RATE, groups=groups, priority=priority)


OPS = GroupSettings("ops", multicast="239.255.0.1")


def test_simultaneous_presses_leave_one_talker_on_every_box() -> None:
    site = _Site([OPS])
    a = site.box(_ptt("a"))["a"]
    b = site.box(_ptt("b"))["b"]
    site.box(_ptt("c"))
    a.set_ptt(True)
    b.set_ptt(True)  # the same moment: both start, then the later claim (b's) loses
    site.run(1.0, {"a": _speech(), "b": _speech()})
    assert a.transmitting and not b.transmitting and b.blocked
    assert b.cues.played == ["busy"] and a.cues.played == []
    talkers = [tuple(c.ssrc for c in f.floors["ops"].talkers()) for f, _ in site.boxes]
    assert talkers == [(a.ssrc,)] * 3
    assert site.loudness("c", 0.5) > 300  # the listener hears the winner
    # b keeps holding its button: it stays off the air; released and pressed again once a is done.
    a.set_ptt(False)
    site.run(0.2)
    assert not b.transmitting
    b.set_ptt(False)
    b.set_ptt(True)
    site.run(0.5, {"b": _speech()})
    assert b.transmitting and all(f.floors["ops"].talkers()[0].ssrc == b.ssrc for f, _ in site.boxes)


def test_a_press_while_someone_talks_is_refused_with_the_busy_tone() -> None:
    site = _Site([OPS])
    a = site.box(_ptt("a"))["a"]
    b = site.box(_ptt("b"))["b"]
    a.set_ptt(True)
    site.run(0.5, {"a": _speech()})
    b.set_ptt(True)
    site.run(0.5, {"b": _speech()})
    assert not b.transmitting and b.cues.played == ["busy"]
    assert site.boxes[1][0].stats.denied == 1 and site.boxes[1][0].stats.granted == 0
    assert site.loudness("b", 0.3) > 300  # b still hears a


def test_higher_priority_breaks_in_and_the_talker_hears_busy() -> None:
    site = _Site([OPS])
    a = site.box(_ptt("a"))["a"]
    boss = site.box(_ptt("boss", priority=5))["boss"]
    a.set_ptt(True)
    site.run(0.5, {"a": _speech()})
    boss.set_ptt(True)
    site.run(0.5, {"boss": _speech()})
    assert boss.transmitting and not a.transmitting and a.cues.played == ["busy"]
    assert site.boxes[0][0].stats.preempted == 1
    assert site.loudness("a", 0.3) > 300  # and now hears the boss


def test_emergency_takes_the_group_and_is_raised_on_every_port_that_scans_it() -> None:
    fire = GroupSettings("fire", multicast="239.255.0.2", port=5006)
    site = _Site([OPS, fire])
    a = site.box(_ptt("a", priority=7))["a"]
    medic = site.box(_ptt("medic", groups=("fire",)))["medic"]
    # The dispatcher scans ops first, fire second: normally ops wins when both are heard.
    desk = site.box(_ptt("desk", groups=("ops", "fire")))["desk"]
    a.set_ptt(True)
    site.run(0.6, {"a": _speech()})
    medic.set_ptt(True)  # a normal call on fire: held behind ops at the desk
    site.run(0.6, {"a": _speech(), "medic": _speech()})
    assert desk.downlink.frames_held > 0
    held = desk.downlink.frames_held
    medic.set_ptt(False)
    site.run(0.2)
    medic.set_emergency(True)
    site.run(0.6, {"a": _speech(), "medic": _speech()})
    assert medic.transmitting and medic.emergency
    assert site.alerts[:3] == [("fire", medic.ssrc, True)] * 3  # every box raised it
    assert desk.cues.played == ["emergency"] and "fire" in desk.downlink.urgent
    assert desk.downlink.frames_held > held  # now ops is what is held at the desk
    medic.set_emergency(False)
    site.run(0.3)
    assert ("fire", medic.ssrc, False) in site.alerts and not desk.downlink.urgent


def test_emergency_preempts_a_higher_priority_talker_in_its_group() -> None:
    site = _Site([OPS])
    boss = site.box(_ptt("boss", priority=7))["boss"]
    a = site.box(_ptt("a"))["a"]
    boss.set_ptt(True)
    site.run(0.5, {"boss": _speech()})
    a.set_emergency(True)
    site.run(0.5, {"a": _speech()})
    assert a.transmitting and not boss.transmitting and boss.cues.played == ["emergency"]
    assert site.alerts[0] == ("ops", a.ssrc, True)


def test_time_out_warns_then_cuts_and_the_group_is_free() -> None:
    short = dataclasses.replace(OPS, tot_s=2, tot_warning_s=1)
    site = _Site([short])
    a = site.box(_ptt("a"))["a"]
    b = site.box(_ptt("b"))["b"]
    a.set_ptt(True)
    site.run(1.5, {"a": _speech()})
    assert a.transmitting and a.cues.played == ["warning"]
    site.run(0.6, {"a": _speech()})
    assert not a.transmitting and a.cues.played == ["warning", "timeout"]
    site.run(0.2)
    assert all(not f.floors["ops"].talkers() for f, _ in site.boxes)  # the end flag freed it
    b.set_ptt(True)
    site.run(0.2, {"b": _speech()})
    assert b.transmitting


def test_a_forged_claim_element_is_counted_and_not_played() -> None:
    site = _Site([OPS])
    site.box(_ptt("b"))
    floors = site.boxes[0][0]
    bad = rtp.RtpPacket(111, 1, 960, 0x55, True, b"\xf8\xff\xfe", b"\xff" * 9)  # version 3
    assert not floors.admit("ops", bad)
    good = rtp.RtpPacket(111, 1, 960, 0x55, True, b"\xf8\xff\xfe", Claim(0x55, 0, False, 5, 1).encode())
    assert floors.admit("ops", good)
    assert floors.stats.bad_claims == 1


def test_a_latching_button_toggles_and_a_refused_latch_is_let_go() -> None:
    site = _Site([OPS])
    a = site.box(_ptt("a"))["a"]
    desk = site.box(dataclasses.replace(_ptt("desk"), ptt_latching=True))["desk"]
    desk.set_ptt(True)
    desk.set_ptt(False)  # the release of a latching button does nothing
    site.run(0.3, {"desk": _speech()})
    assert desk.transmitting
    desk.set_ptt(True)  # the next press ends the transmission
    site.run(0.2)
    assert not desk.transmitting and not desk.ptt_pressed
    a.set_ptt(True)
    site.run(0.3, {"a": _speech()})
    desk.set_ptt(True)  # refused while a talks: busy, and the latch is let go (no talking later)
    site.run(0.2)
    assert not desk.transmitting and desk.cues.played == ["busy"] and not desk.ptt_pressed
    a.set_ptt(False)
    site.run(0.3)
    assert not desk.transmitting
    desk.set_ptt(True)  # one press is enough to ask again
    site.run(0.2, {"desk": _speech()})
    assert desk.transmitting


def test_the_end_of_a_spurt_costs_the_next_one_nothing() -> None:
    """The end-flag packets go out at the frame cadence: sent as a burst they looked like jitter,
    the listener's buffer grew to 72 ms and the second spurt played with drops and inserts (PESQ
    2.47). Now the second spurt sounds like the first, with the buffer untouched."""
    site = _Site([OPS])
    a = site.box(_ptt("a"))["a"]
    b = site.box(_ptt("b"))["b"]
    clip = _speech(3.0)
    lead, gap = RATE, int(1.5 * RATE)
    said = np.concatenate([np.zeros(lead, np.int16), clip, np.zeros(gap, np.int16), clip[::-1],
                           np.zeros(RATE, np.int16)])
    starts = [lead, lead + len(clip) + gap]
    mic = {"a": said.copy()}
    for i in range(len(said) // N):
        t = i * N
        if t in (s - 5 * N for s in starts):
            a.set_ptt(True)
        if t in (s + len(clip) + 5 * N for s in starts):
            a.set_ptt(False)
        site.run(0.02, mic)
    heard = np.concatenate(site.heard["b"])
    first, second = (score_spurt(said, heard, RATE, 0.0, s, len(clip)) for s in starts)
    assert first.pesq is not None and second.pesq is not None and second.pesq >= 4.0, (first, second)
    # The same delay: the buffer works in whole frames, so a grown buffer would show 10-20 ms more.
    # The measurement itself (cross-correlation peak after noise suppression and Opus) may land a
    # sample apart for the two different spurts: 34.0 and 34.0625 ms with the 30 dB suppressor.
    assert abs(second.delay_ms - first.delay_ms) <= 1000 / RATE, (first, second)
    totals = b.downlink.totals()
    assert totals.frames_dropped == totals.frames_inserted == totals.frames_concealed == 0
    assert not b.transmitting and all(not f.floors["ops"].talkers() for f, _ in site.boxes)
