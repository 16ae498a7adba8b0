"""The topic tree and payloads: builders, schema-checking parsers, and the docs that describe them."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import GatewaySettings, MqttSettings
from gateway.control import schemas, topics
from gateway.control.topics import (
    Headset,
    PayloadError,
    PortInfo,
    PortLive,
    Topics,
    parse_port_state,
    parse_presence,
)

GW = GatewaySettings(id="gw-a", site="plant")
RADIO = PortInfo("radio", "ptt", ("ops", "fire"), "ops", priority=3)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"


def test_topics_of_a_gateway() -> None:
    t = Topics.of(MqttSettings(), GW)
    assert t.root == "gateway/v1/plant"
    assert t.presence == "gateway/v1/plant/gateways/gw-a/presence"
    assert t.port("radio") == "gateway/v1/plant/gateways/gw-a/ports/radio"
    assert t.all_presence == "gateway/v1/plant/gateways/+/presence"
    assert t.everything == "gateway/v1/plant/#"
    assert t.command == "gateway/v1/plant/gateways/gw-a/cmd"
    assert t.reply == "gateway/v1/plant/gateways/gw-a/reply"
    assert t.telemetry == "gateway/v1/plant/gateways/gw-a/telemetry"
    assert t.alerts == "gateway/v1/plant/alerts/gw-a"
    assert t.all_alerts == "gateway/v1/plant/alerts/+"
    assert t.parse_presence_topic("gateway/v1/plant/gateways/gw-b/presence") == "gw-b"
    assert t.parse_presence_topic("gateway/v1/other/gateways/gw-b/presence") is None
    assert t.parse_presence_topic("gateway/v1/plant/gateways/a/b/presence") is None
    assert Topics.of(MqttSettings(topic_root="acme/gw/v2"), GW).root == "acme/gw/v2/plant"


@pytest.mark.parametrize("bad", ["", "a/b", "a+", "#", "x\x00"])
def test_names_that_cannot_be_topic_levels_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        Topics.of(MqttSettings(), GatewaySettings(id=bad, site="plant"))
    with pytest.raises(ValueError):
        Topics.of(MqttSettings(), GatewaySettings(id="gw", site=bad))
    with pytest.raises(ValueError):
        Topics.of(MqttSettings(), GW).port(bad)


def test_presence_online_payload() -> None:
    raw = topics.presence_online(GW, since=1700000000.25, version="1.2.3")
    assert json.loads(raw) == {
        "state": "online", "gateway": "gw-a", "site": "plant", "version": "1.2.3",
        "since": 1700000000.25,
    }
    assert parse_presence(raw)["since"] == 1700000000.25


@pytest.mark.parametrize("reason", ["lost", "shutdown"])
def test_presence_offline_payload(reason: Any) -> None:
    raw = topics.presence_offline(GW, reason)
    assert json.loads(raw) == {"state": "offline", "gateway": "gw-a", "site": "plant", "reason": reason}
    assert parse_presence(raw)["reason"] == reason


def test_presence_offline_refuses_unknown_reasons() -> None:
    with pytest.raises(ValueError):
        topics.presence_offline(GW, "bored")  # type: ignore[arg-type]


def test_port_state_payload() -> None:
    raw = topics.port_state("gw-a", RADIO, PortLive("fire", talking=True, emergency=True, volume_db=-3.5,
                                                    headset=Headset(battery_pct=40)))
    assert json.loads(raw) == {
        "port": "radio", "gateway": "gw-a", "talk_mode": "ptt", "groups": ["ops", "fire"],
        "talk_group": "fire", "priority": 3, "talking": True, "receiving": False, "emergency": True,
        "volume_db": -3.5, "headset": {"battery_pct": 40, "link_quality": None},
    }
    assert parse_port_state(raw)["groups"] == ["ops", "fire"]


def test_port_state_at_rest_talks_on_its_configured_group() -> None:
    doc = parse_port_state(topics.port_state("gw-a", RADIO))
    assert doc["talk_group"] == "ops" and doc["headset"] is None and doc["volume_db"] == 0.0
    assert not (doc["talking"] or doc["receiving"] or doc["emergency"])


def test_port_without_groups_round_trips() -> None:
    raw = topics.port_state("gw-a", PortInfo("spare", "vad", (), ""))
    assert parse_port_state(raw)["talk_group"] == ""


def test_payloads_are_compact_utf8_json() -> None:
    raw = topics.presence_online(GW, since=1.0, version="0.1.0")
    assert b" " not in raw
    raw.decode("utf-8")


def test_unknown_keys_are_tolerated() -> None:
    doc = json.loads(topics.presence_offline(GW, "lost"))
    doc["battery_pct"] = 80  # a newer box may add fields
    assert parse_presence(json.dumps(doc).encode())["battery_pct"] == 80


_ONLINE = {"state": "online", "gateway": "gw-a", "site": "plant", "version": "0.1.0", "since": 1.5}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"", ""),
        (b"not json", ""),
        (b"\xff\xfe{}", ""),  # not UTF-8 (json.loads(bytes) alone would guess UTF-16)
        (b"[]", ""),
        (b'"online"', ""),
        (b"[" * 5000, ""),  # over the size limit
        (b"[" * 2000 + b"]" * 2000, ""),  # under it, but nested beyond the decoder's recursion
        (b'{"state": NaN}', ""),
        (b"{}", "state"),
        (json.dumps({**_ONLINE, "state": "away"}).encode(), "state"),
        (json.dumps({**_ONLINE, "gateway": ""}).encode(), "gateway"),
        (json.dumps({**_ONLINE, "gateway": "a/b"}).encode(), "gateway"),
        (json.dumps({**_ONLINE, "site": 7}).encode(), "site"),
        (json.dumps({**_ONLINE, "version": None}).encode(), "version"),
        (json.dumps({**_ONLINE, "since": "yesterday"}).encode(), "since"),
        (json.dumps({**_ONLINE, "since": True}).encode(), "since"),
        (json.dumps({**_ONLINE, "since": -1}).encode(), "since"),
        (json.dumps({**_ONLINE, "since": 10**400}).encode(), "since"),  # too large for a float
        (b'{"state":"online","gateway":"a","site":"b","version":"1","since":Infinity}', ""),
        (json.dumps({"state": "offline", "gateway": "a", "site": "b"}).encode(), "reason"),
        (json.dumps({"state": "offline", "gateway": "a", "site": "b", "reason": "x"}).encode(), "reason"),
    ],
)
def test_parse_presence_rejects_malformed(payload: bytes, field: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_presence(payload)
    assert info.value.field == field
    assert info.value.kind == "presence"
    assert str(info.value).startswith("invalid presence")


def test_parse_presence_rejects_non_bytes() -> None:
    with pytest.raises(PayloadError):
        parse_presence("{}")  # type: ignore[arg-type]


def test_payload_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_presence(b"{")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"port": ""}, "port"),
        ({"talk_mode": "vox"}, "talk_mode"),
        ({"groups": "ops"}, "groups"),
        ({"groups": ["ops", 3]}, "groups"),
        ({"talk_group": None}, "talk_group"),
        ({"talking": 1}, "talking"),
        ({"receiving": "no"}, "receiving"),
        ({"emergency": None}, "emergency"),
        ({"talk_group": "a/b"}, "talk_group"),
        ({"priority": 8}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"volume_db": 13}, "volume_db"),
        ({"volume_db": "loud"}, "volume_db"),
        ({"headset": {"battery_pct": 101, "link_quality": None}}, "headset"),
        ({"headset": {"battery_pct": 50}}, "headset"),
        ({"headset": 80}, "headset"),
    ],
)
def test_parse_port_state_rejects_malformed(change: dict[str, Any], field: str) -> None:
    doc = {**json.loads(topics.port_state("gw-a", RADIO)), **change}
    with pytest.raises(PayloadError) as info:
        parse_port_state(json.dumps(doc).encode())
    assert info.value.field == field


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_parse_presence_on_random_bytes_only_raises_payload_error(data: bytes) -> None:
    try:
        doc = parse_presence(data)
    except PayloadError:
        return
    assert doc["state"] in ("online", "offline")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries(
    {}, optional={k: _json_values | st.sampled_from(["online", "offline", "lost", "shutdown", "x"])
                  for k in ("state", "gateway", "site", "version", "since", "reason")},
))
def test_parse_presence_on_random_json_objects_only_raises_payload_error(doc: dict[str, Any]) -> None:
    with contextlib.suppress(PayloadError):
        parse_presence(json.dumps(doc).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parse_port_state_on_random_bytes_only_raises_payload_error(data: bytes) -> None:
    with contextlib.suppress(PayloadError):
        parse_port_state(data)


# -- the newer payloads ---------------------------------------------------------------------------


def test_emergency_alert_payload() -> None:
    doc = topics.emergency_alert("gw-a", state="started", port="radio", group="ops", ssrc=0x1A2B3C4D,
                                 at=1700000000.5)
    assert doc == {"type": "emergency", "state": "started", "gateway": "gw-a", "port": "radio",
                   "group": "ops", "ssrc": "0x1a2b3c4d", "at": 1700000000.5}
    raw = topics.alert_payload(doc)
    assert topics.parse_alert(raw) == doc
    remote = topics.emergency_alert("gw-a", state="ended", port=None, group="ops", ssrc=7, at=1.0)
    assert remote["port"] is None and remote["ssrc"] == "0x00000007"


@pytest.mark.parametrize(
    "kw",
    [
        {"ssrc": -1}, {"ssrc": 1 << 32}, {"state": "paused"}, {"group": "a/b"}, {"port": ""}, {"at": -1.0},
    ],
)
def test_emergency_alert_refuses_bad_fields(kw: dict[str, Any]) -> None:
    args: dict[str, Any] = {"state": "started", "port": "radio", "group": "ops", "ssrc": 1, "at": 1.0, **kw}
    with pytest.raises(ValueError):
        topics.emergency_alert("gw-a", **args)


def test_alert_payload_refuses_what_its_schema_refuses() -> None:
    doc = topics.emergency_alert("gw-a", state="started", port=None, group="ops", ssrc=1, at=1.0)
    with pytest.raises(PayloadError) as info:
        topics.alert_payload({**doc, "ssrc": 1})
    assert info.value.field == "ssrc"


def test_telemetry_payload() -> None:
    readings = {"ports": {"radio": {"xruns": 2}}, "senders": {"0x00000001": {"loss_pct": 0.5}},
                "at": "not mine to set"}
    raw = topics.telemetry("gw-a", at=5.0, load_1m=0.25, cpu_temp_c=None, readings=readings)
    doc = topics.parse_telemetry(raw)
    assert doc == {"gateway": "gw-a", "at": 5.0, "load_1m": 0.25, "cpu_temp_c": None,
                   "ports": {"radio": {"xruns": 2}}, "senders": {"0x00000001": {"loss_pct": 0.5}}}
    assert list(doc)[:4] == list(topics.TELEMETRY_KEYS)


def test_telemetry_may_be_larger_than_other_payloads() -> None:
    senders = {f"0x{i:08x}": {"loss_pct": 1.25, "jitter_ms": 3.5} for i in range(100)}
    raw = topics.telemetry("gw-a", at=1.0, load_1m=None, cpu_temp_c=40.0, readings={"senders": senders})
    assert topics.MAX_PAYLOAD_BYTES < len(raw) <= topics.MAX_TELEMETRY_BYTES
    assert len(topics.parse_telemetry(raw)["senders"]) == 100


def test_replies() -> None:
    ok = {"id": "c-1", "ok": True, "result": {"port": "radio"}}
    assert topics.parse_reply(topics.reply_payload(ok)) == ok
    err = topics.error_reply(None, "nope")
    assert topics.parse_reply(topics.reply_payload(err)) == {"id": None, "ok": False, "error": "nope"}
    for bad in ({"id": "c-1", "ok": True}, {"id": "c 1", "ok": False, "error": "x"},
                {"id": "c-1", "ok": True, "result": {"x": float("nan")}}, {"id": "c-1", "ok": True,
                                                                         "result": {"x": object()}}):
        with pytest.raises(PayloadError):
            topics.reply_payload(bad)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"id": "c-1", "command": "ptt", "port": "radio"}, "pressed"),
        ({"id": "c-1", "command": "ptt", "port": "radio", "pressed": 1}, "pressed"),
        ({"id": "c-1", "command": "ptt", "port": "radio", "pressed": True, "on": True}, "on"),
        ({"id": "c-1", "command": "status", "port": "radio"}, "port"),
        ({"id": "c-1", "command": "reboot"}, "command"),
        ({"command": "status"}, "id"),
        ({"id": "", "command": "status"}, "id"),
        ({"id": "x" * 65, "command": "status"}, "id"),
        ({"id": "c-1\n", "command": "status"}, "id"),
        ({"id": "c-1", "command": "status", "sent_at": "now"}, "sent_at"),
        ({"id": "c-1", "command": "status", "sent_at": True}, "sent_at"),
        ({"id": "c-1", "command": "set_volume", "port": "radio", "volume_db": 20}, "volume_db"),
        ({"id": "c-1", "command": "select_group", "port": "radio", "group": "#"}, "group"),
        ({"id": "c-1", "command": "emergency", "port": "a/b", "on": True}, "port"),
    ],
)
def test_parse_command_rejects_malformed(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(PayloadError) as info:
        topics.parse_command(json.dumps(doc).encode())
    assert info.value.field == field, info.value


@pytest.mark.parametrize(
    "doc",
    [
        {"id": "c-1", "command": "status"},
        {"id": "c.1:x_y-z", "command": "reload", "sent_at": 1.5},
        {"id": "c-1", "command": "ptt", "port": "radio", "pressed": False},
        {"id": "c-1", "command": "emergency", "port": "radio", "on": True, "sent_at": 0},
        {"id": "c-1", "command": "select_group", "port": "radio", "group": "fire"},
        {"id": "c-1", "command": "set_volume", "port": "radio", "volume_db": -40},
        {"id": "c-1", "command": "start_pairing", "port": "radio"},
    ],
)
def test_parse_command_accepts_every_command(doc: dict[str, Any]) -> None:
    assert topics.parse_command(json.dumps(doc).encode()) == doc


def test_reply_topics_a_gateway_will_use() -> None:
    t = Topics.of(MqttSettings(), GW)
    assert t.reply_allowed(t.reply)
    assert t.reply_allowed(t.reply + "/console-7")
    assert t.reply_allowed(t.reply + "/a/b")
    for bad in (t.presence, t.reply + "x", t.reply + "/", t.reply + "/+", t.reply + "/#", "elsewhere",
                "gateway/v1/plant/gateways/gw-b/reply"):
        assert not t.reply_allowed(bad), bad


# -- every payload our builders write matches its schema ------------------------------------------


_names = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
_times = st.floats(min_value=0, max_value=4e9, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    gw=_names, site=_names, since=_times, version=st.text(min_size=1, max_size=10),
    reason=st.sampled_from(["lost", "shutdown"]),
)
def test_presence_builders_match_the_schema(gw: str, site: str, since: float, version: str,
                                            reason: Any) -> None:
    g = GatewaySettings(id=gw, site=site)
    schemas.validate("presence", json.loads(topics.presence_online(g, since=since, version=version)))
    schemas.validate("presence", json.loads(topics.presence_offline(g, reason)))


@settings(max_examples=200, deadline=None)
@given(
    name=_names, mode=st.sampled_from(topics.TALK_MODES), groups=st.lists(_names, max_size=4),
    priority=st.integers(0, 7), talking=st.booleans(), receiving=st.booleans(), emergency=st.booleans(),
    volume=st.floats(-40, 12), battery=st.none() | st.integers(0, 100),
    quality=st.none() | st.integers(0, 100), has_headset=st.booleans(), data=st.data(),
)
def test_port_state_builder_matches_the_schema(
    name: str, mode: str, groups: list[str], priority: int, talking: bool, receiving: bool,
    emergency: bool, volume: float, battery: int | None, quality: int | None, has_headset: bool,
    data: st.DataObject,
) -> None:
    talk_group = data.draw(st.sampled_from(groups)) if groups else ""
    port = PortInfo(name, mode, tuple(groups), talk_group, priority)
    live = PortLive(talk_group, talking, receiving, emergency, volume,
                    Headset(battery, quality) if has_headset else None)
    schemas.validate("port-state", json.loads(topics.port_state("gw", port, live)))


@settings(max_examples=200, deadline=None)
@given(gw=_names, state=st.sampled_from(topics.ALERT_STATES), port=st.none() | _names, group=_names,
       ssrc=st.integers(0, 0xFFFFFFFF), at=_times)
def test_alert_builder_matches_the_schema(gw: str, state: Any, port: str | None, group: str, ssrc: int,
                                          at: float) -> None:
    doc = topics.emergency_alert(gw, state=state, port=port, group=group, ssrc=ssrc, at=at)
    schemas.validate("alert", json.loads(topics.alert_payload(doc)))


@settings(max_examples=100, deadline=None)
@given(gw=_names, at=_times, load=st.none() | st.floats(0, 64), temp=st.none() | st.floats(-40, 125),
       readings=st.dictionaries(st.sampled_from(["ports", "senders"]),
                                st.dictionaries(_names, st.dictionaries(_names, st.integers(), max_size=3),
                                                max_size=3)))
def test_telemetry_builder_matches_the_schema(gw: str, at: float, load: float | None,
                                              temp: float | None, readings: dict[str, Any]) -> None:
    raw = topics.telemetry(gw, at=at, load_1m=load, cpu_temp_c=temp, readings=readings)
    schemas.validate("telemetry", json.loads(raw))


def test_error_replies_match_the_schema() -> None:
    schemas.validate("reply", topics.error_reply(None, "x"))
    schemas.validate("reply", topics.error_reply("c-1", "x"))


# -- docs/mqtt.md is written from this module: keep them in step ------------------------------


_EXAMPLE_RE = re.compile(r"^(?:<!-- schema: ([a-z-]+) -->\n)?```json\n(.*?)^```", re.M | re.S)


def _doc_examples() -> list[tuple[str, Any]]:
    """(schema name, document) of every JSON example of docs/mqtt.md, in order."""
    examples = []
    for m in _EXAMPLE_RE.finditer(DOCS.read_text()):
        assert m.group(1), f"a JSON example in docs/mqtt.md names no schema:\n{m.group(2)}"
        examples.append((m.group(1), json.loads(m.group(2))))
    return examples


def test_docs_name_every_topic() -> None:
    text = DOCS.read_text()
    for template in (topics.PRESENCE_TOPIC, topics.PORT_TOPIC, topics.COMMAND_TOPIC, topics.REPLY_TOPIC,
                     topics.ALERT_TOPIC, topics.TELEMETRY_TOPIC, topics.ANNOUNCE_TOPIC):
        assert f"`{template}`" in text, template


def test_docs_link_every_schema() -> None:
    text = DOCS.read_text()
    for name in schemas.NAMES:
        assert f"../gateway/control/schemas/{name}.schema.json" in text, name


def test_docs_examples_match_their_schemas() -> None:
    examples = _doc_examples()
    assert {name for name, _ in examples} == set(schemas.NAMES), "an example for every payload"
    for name, doc in examples:
        schemas.validate(name, doc)
    presence = [doc for name, doc in examples if name == "presence"]
    assert {(d["state"], d.get("reason")) for d in presence} == {
        ("online", None), ("offline", "lost"), ("offline", "shutdown"),
    }


def test_docs_examples_pass_the_parsers() -> None:
    parsers = {"presence": parse_presence, "port-state": parse_port_state, "alert": topics.parse_alert,
               "telemetry": topics.parse_telemetry, "command": topics.parse_command,
               "reply": topics.parse_reply}
    for name, doc in _doc_examples():
        parsers[name](json.dumps(doc).encode())


def test_docs_examples_have_exactly_the_builders_keys() -> None:
    built = {
        "online": json.loads(topics.presence_online(GW, since=1.0, version="0.1.0")),
        "offline": json.loads(topics.presence_offline(GW, "lost")),
        "port-state": json.loads(topics.port_state("gw-a", RADIO)),
        "alert": topics.emergency_alert("gw-a", state="started", port=None, group="ops", ssrc=1, at=1.0),
        "telemetry": json.loads(topics.telemetry("gw-a", at=1.0, load_1m=0.0, cpu_temp_c=None,
                                                 readings={"ports": {}, "senders": {}})),
    }
    for name, doc in _doc_examples():
        kind = doc["state"] if name == "presence" else name
        if kind in built:
            assert list(doc) == list(built[kind]), doc


def test_wide_area_topics_name_other_sites_only() -> None:
    t = Topics("gateway/v1/alpha", "gw-a")
    assert t.voice("ops") == "gateway/v1/alpha/groups/ops/voice/gw-a"
    assert t.wan_filters("ops") == ("gateway/v1/+/groups/ops/voice/+",
                                    "gateway/v1/+/gateways/+/announce/ops")
    assert t.parse_wan("gateway/v1/bravo/groups/ops/voice/gw-b") == ("voice", "bravo", "gw-b", "ops")
    assert t.parse_wan("gateway/v1/bravo/gateways/gw-b/announce/ops") == ("announce", "bravo", "gw-b", "ops")
    for own_or_other in ("gateway/v1/alpha/groups/ops/voice/gw-c",  # this site: it travels on the LAN
                         "gateway/v1/bravo/groups/ops/voice", "gateway/v1/bravo/gateways/gw-b/presence",
                         "gateway/v2/bravo/groups/ops/voice/gw-b", "gateway/v1/bravo//ops/voice/x"):
        assert t.parse_wan(own_or_other) is None, own_or_other
