"""Commands over MQTT 5: the desk's rules as tables and a fuzz, then the whole path through mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.config import GatewaySettings, MqttSettings
from gateway.control import schemas, topics
from gateway.control.client import ControlPlane
from gateway.control.mqtt_commands import CommandDesk, Reply
from gateway.control.topics import PayloadError, PortInfo, Topics
from gateway.sim.broker import Mosquitto
from tests.rigs import mqtt as rig
from tests.rigs.mqtt import Collector

mosquitto = rig.mosquitto

GW = GatewaySettings(id="gw-a", site="test")
TOPICS = Topics.of(MqttSettings(), GW)
PTT = {"id": "c-1", "command": "ptt", "port": "radio", "pressed": True}


class FakeBox:
    """A command hook like ``Commands.handle_bytes``: answers a repeated id with the same reply,
    applying it once. Counts calls and applications."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.applied: list[dict[str, Any]] = []
        self._replies: dict[str, dict[str, Any]] = {}

    def __call__(self, payload: bytes) -> dict[str, Any]:
        self.calls.append(payload)
        doc = json.loads(payload)
        if doc["id"] not in self._replies:
            self.applied.append(doc)
            self._replies[doc["id"]] = {"id": doc["id"], "ok": True,
                                        "result": {"n": len(self.applied), "command": doc["command"]}}
        return self._replies[doc["id"]]


def _raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# -- the desk, without a broker ------------------------------------------------------------------


def test_a_valid_command_reaches_the_hook_and_its_reply_the_default_topic() -> None:
    desk, box = CommandDesk(TOPICS), FakeBox()
    reply = desk.receive(box, _raw(PTT), retained=False, response_topic=None, correlation=None)
    assert box.calls == [_raw(PTT)]
    assert reply == Reply(TOPICS.reply, reply.payload if reply else b"", None)
    assert reply is not None and json.loads(reply.payload) == {
        "id": "c-1", "ok": True, "result": {"n": 1, "command": "ptt"}}
    assert (desk.stats.received, desk.stats.applied) == (1, 1)


@pytest.mark.parametrize(
    ("response_topic", "expected", "foreign"),
    [
        (None, "gateway/v1/test/gateways/gw-a/reply", 0),
        ("gateway/v1/test/gateways/gw-a/reply", "gateway/v1/test/gateways/gw-a/reply", 0),
        ("gateway/v1/test/gateways/gw-a/reply/console-7", "gateway/v1/test/gateways/gw-a/reply/console-7", 0),
        ("gateway/v1/test/gateways/gw-a/presence", "gateway/v1/test/gateways/gw-a/reply", 1),
        ("gateway/v1/test/gateways/gw-b/reply/x", "gateway/v1/test/gateways/gw-a/reply", 1),
        ("gateway/v1/test/gateways/gw-a/reply/+", "gateway/v1/test/gateways/gw-a/reply", 1),
        ("", "gateway/v1/test/gateways/gw-a/reply", 1),
    ],
)
def test_where_the_reply_goes(response_topic: str | None, expected: str, foreign: int) -> None:
    desk = CommandDesk(TOPICS)
    reply = desk.receive(FakeBox(), _raw(PTT), retained=False, response_topic=response_topic,
                         correlation=b"\x00corr")
    assert reply is not None and reply.topic == expected and reply.correlation == b"\x00corr"
    assert desk.stats.foreign_response_topics == foreign


def test_a_retained_command_is_ignored_and_counted() -> None:
    desk, box = CommandDesk(TOPICS), FakeBox()
    assert desk.receive(box, _raw(PTT), retained=True, response_topic=None, correlation=b"x") is None
    assert box.calls == [] and desk.stats.retained == 1 and desk.stats.applied == 0


@pytest.mark.parametrize(
    ("payload", "correlation", "reply_id"),
    [
        (_raw({**PTT, "pressed": "yes"}), None, "c-1"),  # has an id: error reply with it
        (_raw({"id": "c-2", "command": "reboot"}), None, "c-2"),
        (_raw({"command": "status"}), b"corr", None),  # no id, but correlation data matches it
        (b"\xff not utf-8", b"corr", None),
        (_raw({**PTT, "id": "not an id!"}), b"corr", None),
    ],
)
def test_an_invalid_command_gets_an_error_reply_and_never_the_hook(
    payload: bytes, correlation: bytes | None, reply_id: str | None
) -> None:
    desk, box = CommandDesk(TOPICS), FakeBox()
    reply = desk.receive(box, payload, retained=False, response_topic=None, correlation=correlation)
    assert box.calls == [] and desk.stats.invalid == 1
    assert reply is not None and reply.correlation == correlation
    doc = topics.parse_reply(reply.payload)
    assert doc["id"] == reply_id and doc["ok"] is False and doc["error"].startswith("invalid command: ")


@pytest.mark.parametrize("payload", [b"", b"[]", b"{}", _raw({"command": "status"}), b"[" * 5000])
def test_an_invalid_command_nobody_could_match_gets_no_reply(payload: bytes) -> None:
    desk = CommandDesk(TOPICS)
    assert desk.receive(FakeBox(), payload, retained=False, response_topic=None, correlation=None) is None
    assert desk.stats.invalid == 1


def test_a_failing_hook_gets_an_error_reply(caplog: pytest.LogCaptureFixture) -> None:
    def broken(payload: bytes) -> dict[str, Any]:
        raise RuntimeError("bug")

    desk = CommandDesk(TOPICS)
    reply = desk.receive(broken, _raw(PTT), retained=False, response_topic=None, correlation=None)
    assert reply is not None
    assert topics.parse_reply(reply.payload) == {
        "id": "c-1", "ok": False, "error": "internal error: see the gateway's log"}
    assert desk.stats.hook_failures == 1 and "command hook failed" in caplog.text


@pytest.mark.parametrize(
    "bad_reply",
    [{"id": "c-1", "ok": True}, {"id": "c-1", "ok": True, "result": {"x": float("nan")}},
     ["not", "a", "dict"], {"id": "c-1", "ok": "yes", "result": {}}, None],
)
def test_a_reply_that_breaks_its_schema_is_replaced_by_an_error(bad_reply: Any) -> None:
    desk = CommandDesk(TOPICS)
    reply = desk.receive(lambda payload: bad_reply, _raw(PTT), retained=False, response_topic=None,
                         correlation=None)
    assert reply is not None and topics.parse_reply(reply.payload)["ok"] is False
    assert desk.stats.hook_failures == 1


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_command_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True) | _values,
        "command": st.sampled_from(["status", "ptt", "emergency", "select_group", "set_volume", "reload",
                                    "start_pairing", "reboot"]) | _values,
        "port": st.sampled_from(["radio", "a/b", ""]) | _values,
        "pressed": _values, "on": _values, "group": _values, "volume_db": _values, "sent_at": _values,
        "extra": _values,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_command_like.map(lambda d: json.dumps(d).encode()), st.binary(max_size=300)),
       st.booleans(), st.none() | st.binary(max_size=8))
def test_fuzz_commands_never_crash_and_invalid_never_reach_the_hook(
    payload: bytes, retained: bool, correlation: bytes | None
) -> None:
    desk, box = CommandDesk(TOPICS), FakeBox()
    reply = desk.receive(box, payload, retained=retained, response_topic=None, correlation=correlation)
    try:
        topics.parse_command(payload)
        valid = True
    except PayloadError:
        valid = False
    assert len(box.calls) == (1 if valid and not retained else 0)
    if reply is not None:
        assert not retained
        schemas.validate("reply", json.loads(reply.payload))
        assert reply.correlation == correlation
    else:
        assert retained or (not valid and correlation is None)


# -- through mosquitto ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Got:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    correlation: bytes | None
    content_type: str | None


class Console:
    """A console: an MQTT 5 client that sends commands with properties and records what comes back."""

    def __init__(self, port: int, pattern: str) -> None:
        self.got: list[Got] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                   client_id=f"console-{uuid.uuid4().hex[:8]}",
                                   protocol=MQTTProtocolVersion.MQTTv5)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *a: subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(pattern, qos=1)
        self._client.loop_start()
        if not subscribed.wait(5):
            raise TimeoutError("console could not subscribe")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        with self._lock:
            self.got.append(Got(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos,
                                getattr(props, "CorrelationData", None), getattr(props, "ContentType", None)))

    def send(self, doc: Any, *, response_topic: str | None = None, correlation: bytes | None = None,
             retain: bool = False) -> None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.MessageExpiryInterval = 10
        if response_topic is not None:
            props.ResponseTopic = response_topic
        if correlation is not None:
            props.CorrelationData = correlation
        payload = doc if isinstance(doc, bytes) else _raw(doc)
        info = self._client.publish(TOPICS.command, payload, qos=1, retain=retain, properties=props)
        info.wait_for_publish(5)

    async def replies(self, n: int, timeout_s: float = 5.0) -> list[Got]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.got) >= n:
                    return list(self.got)
            await asyncio.sleep(0.01)
        raise AssertionError(f"{n} replies expected, got {self.got}")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@contextlib.asynccontextmanager
async def _gateway(port: int, hook: Any) -> AsyncIterator[ControlPlane]:
    settings = MqttSettings(host="127.0.0.1", port=port, keepalive_s=5, reconnect_min_s=0.1,
                            reconnect_max_s=0.5)
    cp = ControlPlane(settings, GW, [PortInfo("radio", "ptt", ("ops",), "ops")], will_delay_s=0)
    cp.on_command = hook
    task = asyncio.create_task(cp.run())
    try:
        # Linked, and the command subscription in place (the SUBACK is not awaited by the gateway):
        # wait for its retained presence through a collector, then a flush round trip.
        with Collector(port, TOPICS.presence) as watch:
            await watch.expect(lambda m: True, what="presence")
        await asyncio.sleep(0.1)
        yield cp
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_reply_on_the_response_topic_with_the_correlation_data(mosquitto: Mosquitto) -> None:
    box = FakeBox()
    console = Console(mosquitto.port, f"{TOPICS.reply}/#")
    try:
        async with _gateway(mosquitto.port, box) as cp:
            console.send(PTT, response_topic=f"{TOPICS.reply}/console-1", correlation=b"\x00\xffreq-1")
            (got,) = await console.replies(1)
    finally:
        console.close()
    assert got.topic == "gateway/v1/test/gateways/gw-a/reply/console-1"
    assert got.correlation == b"\x00\xffreq-1" and got.qos == 1 and not got.retain
    assert got.content_type == "application/json"
    assert topics.parse_reply(got.payload) == {"id": "c-1", "ok": True, "result": {"n": 1, "command": "ptt"}}
    assert box.calls == [_raw(PTT)] and cp.command_stats.applied == 1


async def test_reply_on_the_default_topic_without_a_response_topic(mosquitto: Mosquitto) -> None:
    console = Console(mosquitto.port, f"{TOPICS.reply}/#")
    try:
        async with _gateway(mosquitto.port, FakeBox()):
            console.send({"id": "c-2", "command": "status"})
            (got,) = await console.replies(1)
    finally:
        console.close()
    assert got.topic == TOPICS.reply and got.correlation is None
    assert topics.parse_reply(got.payload)["id"] == "c-2"


async def test_a_duplicate_delivery_gets_the_same_reply_twice(mosquitto: Mosquitto) -> None:
    box = FakeBox()
    console = Console(mosquitto.port, f"{TOPICS.reply}/#")
    try:
        async with _gateway(mosquitto.port, box):
            console.send(PTT, correlation=b"one")
            console.send(PTT, correlation=b"one")  # what QoS 1 may do: the same command again
            first, second = await console.replies(2)
            await asyncio.sleep(0.2)
            assert len(console.got) == 2
    finally:
        console.close()
    assert first.payload == second.payload and first.correlation == second.correlation == b"one"
    assert len(box.calls) == 2 and len(box.applied) == 1


async def test_a_retained_command_is_never_applied(mosquitto: Mosquitto) -> None:
    box = FakeBox()
    console = Console(mosquitto.port, f"{TOPICS.reply}/#")
    try:
        console.send({**PTT, "id": "stale"}, retain=True)  # left on the broker before the gateway came
        async with _gateway(mosquitto.port, box) as cp:
            await _until(lambda: cp.command_stats.retained >= 1, "the stale command seen")
            console.send({**PTT, "id": "live-but-retained"}, retain=True)  # published while subscribed
            await _until(lambda: cp.command_stats.retained >= 2, "the live retained command seen")
            console.send({**PTT, "id": "fine"})
            (got,) = await console.replies(1)
    finally:
        console.close()
    assert [json.loads(c)["id"] for c in box.calls] == ["fine"]
    assert topics.parse_reply(got.payload)["id"] == "fine"


async def test_an_invalid_command_is_answered_without_the_hook(mosquitto: Mosquitto) -> None:
    box = FakeBox()
    console = Console(mosquitto.port, f"{TOPICS.reply}/#")
    try:
        async with _gateway(mosquitto.port, box) as cp:
            console.send(b"not json at all")  # no id, no correlation: nobody to answer
            console.send({**PTT, "pressed": "sure"})
            (got,) = await console.replies(1)
            assert cp.command_stats.invalid == 2
    finally:
        console.close()
    assert box.calls == []
    doc = topics.parse_reply(got.payload)
    assert doc["id"] == "c-1" and not doc["ok"] and "pressed" in doc["error"]


async def test_presence_of_other_gateways_is_checked_before_the_app_sees_it(mosquitto: Mosquitto) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    settings = MqttSettings(host="127.0.0.1", port=mosquitto.port, keepalive_s=5, reconnect_min_s=0.1,
                            reconnect_max_s=0.5)
    cp = ControlPlane(settings, GW, [], will_delay_s=0)
    cp.on_presence = lambda gw, doc: seen.append((gw, doc))
    good = topics.presence_offline(GatewaySettings(id="gw-b", site="test"), "shutdown")
    pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        for topic, payload in [(f"{TOPICS.root}/gateways/gw-b/presence", good),
                               (f"{TOPICS.root}/gateways/gw-c/presence", b'{"state": "dancing"}'),
                               (f"{TOPICS.root}/gateways/gw-d/presence", good),  # gw-b's, on gw-d's topic
                               (f"{TOPICS.root}/gateways/gw-e/presence", b"")]:  # cleared: nothing
            pub.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
        task = asyncio.create_task(cp.run())
        try:
            await _until(lambda: cp.stats.invalid_received == 2 and len(seen) == 1, "presence handled")
            await asyncio.sleep(0.2)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        pub.disconnect()
        pub.loop_stop()
    assert seen == [("gw-b", json.loads(good))], "never its own, never an invalid one"


async def _until(cond: Any, what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.01)
