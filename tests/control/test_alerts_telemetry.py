"""Alerts (never lost to a broker outage) and telemetry (the first thing dropped), through mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewaySettings, MqttSettings
from gateway.control import telemetry, topics
from gateway.control.client import ControlPlane
from gateway.control.topics import PortInfo, Topics
from gateway.sim.broker import Mosquitto
from tests.rigs import mqtt as rig
from tests.rigs.mqtt import Collector, Received

mosquitto = rig.mosquitto

GW = GatewaySettings(id="gw-a", site="test")
TOPICS = Topics.of(MqttSettings(), GW)
PORTS = (PortInfo("radio", "ptt", ("ops",), "ops"),)


def _plane(port: int, **kw: Any) -> ControlPlane:
    settings = MqttSettings(host="127.0.0.1", port=port, keepalive_s=5, reconnect_min_s=0.1,
                            reconnect_max_s=0.3)
    return ControlPlane(settings, GW, PORTS, rng=random.Random(1), will_delay_s=0, **kw)


@contextlib.asynccontextmanager
async def _running(cp: ControlPlane) -> AsyncIterator[None]:
    task = asyncio.create_task(cp.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until(cond: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.01)


def _alert(state: str = "started", ssrc: int = 0x1A2B3C4D, at: float = 1.0) -> dict[str, Any]:
    return topics.emergency_alert("gw-a", state=state, port="radio", group="ops", ssrc=ssrc,  # type: ignore[arg-type]
                                  at=at)


def _is_alert(m: Received) -> bool:
    return m.topic == TOPICS.alerts


def _is_telemetry(m: Received) -> bool:
    return m.topic == TOPICS.telemetry


# -- alerts ------------------------------------------------------------------------------------------


async def test_an_alert_goes_out_at_once_when_linked(mosquitto: Mosquitto) -> None:
    with Collector(mosquitto.port, f"{TOPICS.root}/alerts/+") as watch:
        cp = _plane(mosquitto.port)
        async with _running(cp):
            await _until(lambda: cp.connected, "link up")
            cp.publish_alert(_alert())
            msg = await watch.expect(_is_alert, what="alert")
            await _until(lambda: cp.alert_outbox.delivered == 1, "PUBACK")
    assert topics.parse_alert(msg.payload) == _alert()
    assert not msg.retain and msg.qos == 1
    assert len(cp.alert_outbox) == 0 and cp.counters()["alerts_delivered"] == 1


def test_an_invalid_alert_is_refused_at_once() -> None:
    cp = _plane(1883)
    with pytest.raises(topics.PayloadError):
        cp.publish_alert({**_alert(), "state": "maybe"})
    assert len(cp.alert_outbox) == 0


async def test_alerts_raised_while_the_broker_is_down_arrive_when_it_is_back(mosquitto: Mosquitto) -> None:
    cp = _plane(mosquitto.port)
    async with _running(cp):
        await _until(lambda: cp.connected, "link up")
        mosquitto.kill()  # kill -9: no goodbye to anyone
        await _until(lambda: not cp.connected, "loss noticed", 2)
        started = time.perf_counter()
        for i in range(3):
            cp.publish_alert(_alert("started" if i % 2 == 0 else "ended", at=float(i)))
        assert time.perf_counter() - started < 0.01, "never blocks"
        await asyncio.sleep(0.3)  # failed attempts meanwhile
        assert len(cp.alert_outbox) == 3
        mosquitto.restart()  # same port, nothing retained
        with Collector(mosquitto.port, f"{TOPICS.root}/#") as watch:
            alerts = [await watch.expect(_is_alert, what=f"alert {i}") for i in range(3)]
            await _until(lambda: len(cp.alert_outbox) == 0, "every alert acknowledged")
            await watch.flush_async()
        order = [m.topic for m in watch.messages if m.topic != TOPICS.telemetry]
    assert [topics.parse_alert(m.payload)["at"] for m in alerts] == [0.0, 1.0, 2.0], "in order"
    # The collector subscribed before the gateway could reconnect (this coroutine held the loop):
    # presence and port state come first, then the alerts.
    assert order[:2] == [TOPICS.presence, TOPICS.port("radio")]
    assert set(order[2:5]) == {TOPICS.alerts}
    assert cp.alert_outbox.delivered == 3 and cp.alert_outbox.dropped == 0


async def test_the_outbox_keeps_the_latest_alerts(mosquitto: Mosquitto) -> None:
    cp = _plane(mosquitto.port, alert_outbox_size=3)
    mosquitto.stop()
    async with _running(cp):
        await _until(lambda: cp.stats.connect_failures >= 1, "a failed attempt")
        for i in range(5):
            cp.publish_alert(_alert(at=float(i)))
        # The collector subscribes before the gateway can reconnect: this coroutine holds the loop
        # that would write the gateway's CONNECT.
        mosquitto.start()
        with Collector(mosquitto.port, f"{TOPICS.root}/alerts/+") as watch:
            await _until(lambda: cp.alert_outbox.delivered == 3, "three delivered")
            await watch.flush_async()
            ats = [topics.parse_alert(m.payload)["at"] for m in watch.messages]
    assert cp.alert_outbox.dropped == 2 and cp.counters()["alerts_dropped"] == 2
    assert ats == [2.0, 3.0, 4.0], "the latest three, in order"


# -- telemetry ------------------------------------------------------------------------------------


async def test_telemetry_arrives_every_period(mosquitto: Mosquitto, tmp_path: Path) -> None:
    zone = tmp_path / "temp"
    zone.write_text("48512\n")
    cp = _plane(mosquitto.port, telemetry_period_s=0.2, thermal_zone=zone)
    cp.telemetry_source = lambda: {"ports": {"radio": {"xruns": 3}},
                                   "senders": {"0x1a2b3c4d": {"loss_pct": 1.5, "jitter_ms": 4.0}}}
    with Collector(mosquitto.port, TOPICS.telemetry) as watch:
        async with _running(cp):
            got = [await watch.expect(_is_telemetry, timeout_s=2, what=f"telemetry {i}") for i in range(4)]
    docs = [topics.parse_telemetry(m.payload) for m in got]
    assert all(not m.retain and m.qos == 0 for m in got)
    assert docs[0]["gateway"] == "gw-a" and docs[0]["cpu_temp_c"] == 48.5
    assert docs[0]["ports"] == {"radio": {"xruns": 3}} and "0x1a2b3c4d" in docs[0]["senders"]
    assert docs[0]["load_1m"] == pytest.approx(os.getloadavg()[0], abs=5)
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert all(0.1 < gap < 0.4 for gap in gaps), gaps
    assert cp.telemetry.stats.sent >= 4


async def test_telemetry_is_not_queued_while_the_broker_is_away(mosquitto: Mosquitto) -> None:
    cp = _plane(mosquitto.port, telemetry_period_s=0.1)
    async with _running(cp):
        await _until(lambda: cp.telemetry.stats.sent >= 2, "telemetry flowing")
        mosquitto.kill()
        await _until(lambda: not cp.connected, "loss noticed", 2)
        sent = cp.telemetry.stats.sent
        await asyncio.sleep(0.6)  # six periods offline
        assert cp.telemetry.stats.sent == sent, "nothing taken while offline"
        mosquitto.restart()
        with Collector(mosquitto.port, f"{TOPICS.root}/#") as watch:
            online = await watch.expect(lambda m: m.topic == TOPICS.presence, what="presence")
            first = await watch.expect(_is_telemetry, what="telemetry after the restart")
    since = topics.parse_presence(online.payload)["since"]
    assert topics.parse_telemetry(first.payload)["at"] >= since, "taken after the reconnect, not before"


async def test_telemetry_gives_way_to_a_long_queue(mosquitto: Mosquitto) -> None:
    cp = _plane(mosquitto.port, telemetry_period_s=0.1)
    async with _running(cp):
        await _until(lambda: cp.telemetry.stats.sent >= 1, "telemetry flowing")
        assert mosquitto.pid is not None
        os.kill(mosquitto.pid, signal.SIGSTOP)  # the broker stops reading and acknowledging
        try:
            for i in range(telemetry.MAX_BACKLOG + 4):  # unacknowledged QoS 1 alerts pile up in paho
                cp.publish_alert(_alert(at=float(i)))
            await _until(lambda: cp.telemetry.stats.skipped >= 2, "telemetry skipped", 2)
        finally:
            os.kill(mosquitto.pid, signal.SIGCONT)
        await _until(lambda: len(cp.alert_outbox) == 0, "the alerts get through")
        sent = cp.telemetry.stats.sent
        await _until(lambda: cp.telemetry.stats.sent > sent, "telemetry again")


async def test_failing_readings_still_send_the_system_ones(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("sensor fell off")

    cp = _plane(mosquitto.port, telemetry_period_s=0.1, thermal_zone=Path("/nonexistent/temp"))
    cp.telemetry_source = broken
    with Collector(mosquitto.port, TOPICS.telemetry) as watch:
        async with _running(cp):
            msgs = [await watch.expect(_is_telemetry, what="telemetry") for _ in range(2)]
    doc = topics.parse_telemetry(msgs[1].payload)
    assert doc["cpu_temp_c"] is None and "ports" not in doc
    assert cp.telemetry.stats.failures >= 2
    assert caplog.text.count("telemetry readings failed") == 1, "logged once per link"


@pytest.mark.parametrize(("text", "expected"),
                         [("51234\n", 51.2), ("-5000", -5.0), ("hot", None), ("", None)])
def test_cpu_temperature_from_a_thermal_zone(tmp_path: Path, text: str, expected: float | None) -> None:
    zone = tmp_path / "temp"
    zone.write_text(text)
    assert telemetry.cpu_temp_c(zone) == expected


def test_cpu_temperature_where_there_is_none(tmp_path: Path) -> None:
    assert telemetry.cpu_temp_c(tmp_path / "absent") is None
    load = telemetry.load_1m()
    assert load is None or load >= 0
