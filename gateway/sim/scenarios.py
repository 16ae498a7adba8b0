"""``gateway demo --scenario emergency``: an emergency call breaking in on a talker, site-wide.

Three gateways (more with ``--gateways``) on the simulated site, one talk group, real UDP/SRTP
between them and the embedded broker. gw-a's port presses push-to-talk and talks; while it talks,
gw-b's port starts an emergency call (its emergency button held, through the mock GPIO pins) and
speaks; a dispatcher's console ends the call with an MQTT command after the clip. Every box
decides the floor on its own: the scenario checks that gw-a was taken off the air, that every box
raised the emergency and published the alert on the broker, and scores what each other port heard
of the emergency call (delay and PESQ).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway.app import App, running
from gateway.audio.wav import read_wav, write_wav
from gateway.sim import site
from gateway.sim.broker import Mosquitto
from gateway.sim.demo import _sleep_until, _wait_online, speech_clip
from gateway.sim.metrics import score_recording
from gateway.voice.port import Port

TALK_AT_S = 0.2
"""gw-a presses push-to-talk (its speech starts at SPEECH_A_S)."""
SPEECH_A_S = 0.6
EMERGENCY_AT_S = 1.6
"""gw-b's emergency call starts (its speech starts at SPEECH_B_S and the call ends after it)."""
SPEECH_B_S = 2.3
"""(The listeners hear the 0.3 s emergency tone first, right after the call starts at ~1.75 s.)"""
TAIL_S = 0.6


@dataclass(frozen=True)
class Hearing:
    """What one port heard of the emergency call."""

    gateway: str
    delay_ms: float | None
    pesq: float | None
    emergency_raised: bool
    cues: list[str]
    buffer: dict[str, int]
    """The listener's jitter buffer during the run: frames concealed, dropped and inserted."""


@dataclass(frozen=True)
class EmergencyResult:
    """What the scenario measured."""

    talker: str
    caller: str
    emergency_at_s: float
    """When the caller's box started the emergency call (after the button's hold time)."""
    talker_stopped_after_ms: float | None
    """From the emergency call's start to the talker's box taking it off the air."""
    raised_on: int
    gateways: int
    hearings: list[Hearing]
    floor: list[dict[str, Any]]
    """Per gateway: its floor counters."""
    alerts: list[dict[str, Any]]
    """The alerts the console saw on the broker."""
    end_reply: dict[str, Any] | None
    """The caller's box's reply to the console's command that ended the call."""
    wall_seconds: float

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "scenario": "emergency", "talker": self.talker, "caller": self.caller,
            "emergency_at_s": round(self.emergency_at_s, 3),
            "talker_stopped_after_ms": (None if self.talker_stopped_after_ms is None
                                        else round(self.talker_stopped_after_ms, 1)),
            "emergency_raised_on": self.raised_on, "gateways": self.gateways,
            "heard": [{"gateway": h.gateway, "delay_ms": None if h.delay_ms is None else round(h.delay_ms, 1),
                       "pesq": None if h.pesq is None else round(h.pesq, 2),
                       "emergency_raised": h.emergency_raised, "cues": h.cues, "buffer": h.buffer}
                      for h in self.hearings],
            "floor": self.floor, "alerts": self.alerts, "end_command_reply": self.end_reply,
            "wall_seconds": round(self.wall_seconds, 2),
        }


async def run_emergency(clip_path: Path | None = None, out_dir: Path | None = None,
                        gateways: int = 3) -> EmergencyResult:
    """Run the emergency scenario once."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-demo-")))
        clip_path, clip, rate = speech_clip(clip_path, work)
        end_s = SPEECH_B_S + len(clip) / rate + TAIL_S
        mics = []
        for who, at in (("a", SPEECH_A_S), ("b", SPEECH_B_S)):
            said = np.zeros(int((end_s + 0.5) * rate), np.int16)
            said[int(at * rate): int(at * rate) + len(clip)] = clip
            write_wav(work / f"mic-{who}.wav", said, rate)
            mics.append(said)
        rec_dir = out_dir or work
        rec_dir.mkdir(parents=True, exist_ok=True)
        broker = stack.enter_context(Mosquitto())
        layout = site.pick_layout(gateways)
        configs = [
            site.gateway_config(i, layout, broker.port,
                                str(work / f"mic-{'ab'[i]}.wav") if i < 2 else "",
                                str(site.output_path(rec_dir, f"gw-{chr(ord('a') + i)}")), rate,
                                emergency_pin=site.EMERGENCY_PIN)
            for i in range(gateways)
        ]
        factories = [MockFactory() for _ in configs]
        apps = [App(cfg, pin_factory=f) for cfg, f in zip(configs, factories, strict=True)]
        root = f"{configs[0].mqtt.topic_root}/{configs[0].gateway.site}"
        console = stack.enter_context(_Console(broker.port, root))
        async with contextlib.AsyncExitStack() as running_apps:
            for app in apps:
                await running_apps.enter_async_context(running(app))
            await _wait_online(apps, timeout_s=5.0)
            talker, caller = (a.ports[site.PORT_NAME] for a in apps[:2])
            t0 = getattr(talker.device, "started_at", time.monotonic())
            t0_b = getattr(caller.device, "started_at", t0)
            await _sleep_until(t0 + TALK_AT_S)
            talking = _watch(talker, lambda p: p.transmitting)
            factories[0].pin(site.PTT_PIN).drive_low()
            await asyncio.wait_for(talking.wait(), 1)
            # The emergency button is held until the box takes it (gpio.emergency_hold_ms).
            hold_s = configs[1].gpio.emergency_hold_ms / 1000
            await _sleep_until(t0_b + EMERGENCY_AT_S - hold_s)
            calling = _watch(caller, lambda p: p.emergency)
            stopped = _watch(talker, lambda p: not p.transmitting)
            emergency_button = factories[1].pin(site.EMERGENCY_PIN)
            emergency_button.drive_low()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(calling.wait(), hold_s + 1)
            called = calling.at or time.monotonic()
            emergency_button.drive_high()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), 2)
            stopped_ms = None if talker.transmitting else (stopped.at - called) * 1000
            await asyncio.sleep(0.3)
            raised = [site.GROUP in a.floors.emergencies for a in apps]
            await _sleep_until(t0_b + SPEECH_B_S + len(clip) / rate + TAIL_S / 2)
            # The dispatcher ends the call from the console (an MQTT command to the caller's box).
            end_reply = await console.command(configs[1].gateway.id, {
                "command": "emergency", "port": site.PORT_NAME, "on": False})
            factories[0].pin(site.PTT_PIN).drive_high()
            await _sleep_until(t0_b + end_s)
            starts = [getattr(a.ports[site.PORT_NAME].device, "started_at", t0) for a in apps]
            cues = [list(a.ports[site.PORT_NAME].cues.played) for a in apps]
            totals = [a.ports[site.PORT_NAME].downlink.totals() for a in apps]
            buffers = [{"concealed": t.frames_concealed, "dropped": t.frames_dropped,
                        "inserted": t.frames_inserted} for t in totals]
            floor = [{"gateway": c.gateway.id, **vars(a.floors.stats)}
                     for c, a in zip(configs, apps, strict=True)]
        hearings = []
        for i, cfg in enumerate(configs):
            if i == 1:
                continue
            heard, _ = read_wav(site.output_path(rec_dir, cfg.gateway.id))
            scored = score_recording(mics[1], heard, rate, starts[i] - t0_b, int(SPEECH_B_S * rate),
                                     len(clip))
            hearings.append(Hearing(cfg.gateway.id, scored.delay_ms, scored.pesq, raised[i], cues[i],
                                    buffers[i]))
        return EmergencyResult(
            talker=f"{configs[0].gateway.id}/{site.PORT_NAME}",
            caller=f"{configs[1].gateway.id}/{site.PORT_NAME}",
            emergency_at_s=called - t0_b, talker_stopped_after_ms=stopped_ms, raised_on=sum(raised),
            gateways=gateways,
            hearings=hearings, floor=floor, alerts=console.alerts(), end_reply=end_reply,
            wall_seconds=time.monotonic() - started,
        )
    raise AssertionError("unreachable")  # pragma: no cover


class _Console:
    """A dispatcher's console on the broker: watches the site's alerts, sends commands."""

    def __init__(self, port: int, root: str) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._alerts: list[dict[str, Any]] = []
        self._replies: dict[str, dict[str, Any]] = {}
        self._ready = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"console-{uuid.uuid4().hex[:8]}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_connect = self._connected
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def __enter__(self) -> _Console:
        if not self._ready.wait(5):
            raise TimeoutError("the console could not subscribe to the broker")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _connected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                   props: Any) -> None:
        client.subscribe([(f"{self.root}/alerts/+", 1), (f"{self.root}/gateways/+/reply", 1)])
        self._ready.set()

    def _message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        with self._lock:
            if "/alerts/" in msg.topic:
                self._alerts.append(doc)
            elif isinstance(doc.get("id"), str):
                self._replies[doc["id"]] = doc

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts seen so far."""
        with self._lock:
            return list(self._alerts)

    async def command(self, gateway: str, doc: dict[str, Any]) -> dict[str, Any] | None:
        """Send a command to a gateway and wait (up to 2 s) for its reply."""
        rid = f"console-{uuid.uuid4().hex[:8]}"
        payload = json.dumps({"id": rid, "sent_at": time.time(), **doc})
        self.client.publish(f"{self.root}/gateways/{gateway}/cmd", payload, qos=1)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            with self._lock:
                if rid in self._replies:
                    return self._replies[rid]
            await asyncio.sleep(0.01)  # the reply arrives on paho's thread: nothing to await
        return None


class _Moment(asyncio.Event):
    """An event that remembers when it was set (monotonic seconds)."""

    at = 0.0

    def set(self) -> None:
        """Set it, and note the time."""
        if not self.is_set():
            self.at = time.monotonic()
        super().set()


def _watch(port: Port, condition: Callable[[Port], bool]) -> _Moment:
    """An event set the first time ``condition`` holds after a change of ``port`` (its
    ``on_change`` hook is chained, not replaced)."""
    moment = _Moment()
    before = port.on_change

    def changed(p: Port) -> None:
        if before is not None:
            before(p)
        if condition(p):
            moment.set()

    port.on_change = changed
    if condition(port):
        moment.set()
    return moment


def format_emergency(result: EmergencyResult) -> str:
    """The human-readable result."""
    stopped = ("not stopped!" if result.talker_stopped_after_ms is None
               else f"taken off the air {result.talker_stopped_after_ms:.0f} ms later")
    lines = [
        f"scenario: emergency ({result.gateways} gateways, one talk group, half-duplex)",
        f"{result.talker} talks (push-to-talk held) from {TALK_AT_S:g} s",
        f"{result.caller} holds its emergency button: emergency call at {result.emergency_at_s:.2f} s; "
        f"{result.talker} {stopped}",
        f"emergency raised on {result.raised_on} of {result.gateways} gateways",
        "",
        f"{'listener':<14}{'heard':<14}{'delay_ms':>10}{'pesq':>7}  cues played",
    ]
    for h in result.hearings:
        delay = "-" if h.delay_ms is None else f"{h.delay_ms:.1f}"
        pesq = "-" if h.pesq is None else f"{h.pesq:.2f}"
        lines.append(f"{h.gateway + '/' + site.PORT_NAME:<14}{result.caller:<14}{delay:>10}{pesq:>7}  "
                     f"{', '.join(h.cues) or '-'}")
    started = sorted(a["gateway"] for a in result.alerts if a["state"] == "started")
    ended = sorted(a["gateway"] for a in result.alerts if a["state"] == "ended")
    lines += ["", f"alerts on the broker: started from {', '.join(started) or 'none'}; "
                  f"ended from {', '.join(ended) or 'none'}",
              "console's command ending the call: "
              + ("no reply" if result.end_reply is None else
                 "ok" if result.end_reply.get("ok") else f"refused: {result.end_reply.get('error')}")]
    lines.append("")
    for f in result.floor:
        lines.append(f"floor at {f['gateway']}: granted {f['granted']}, denied {f['denied']}, "
                     f"preempted {f['preempted']}, emergencies {f['emergencies']}, "
                     f"muted packets {f['muted_packets']}")
    lines.append(f"\nfinished in {result.wall_seconds:.1f} s")
    return "\n".join(lines)
