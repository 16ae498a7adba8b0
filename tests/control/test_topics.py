"""The topic tree and payloads: builders, strict parsers, and the docs that describe them."""

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
from gateway.control import topics
from gateway.control.topics import PayloadError, PortInfo, Topics, parse_port_state, parse_presence

GW = GatewaySettings(id="gw-a", site="plant")
RADIO = PortInfo("radio", "ptt", ("ops", "fire"), "ops")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"


def test_topics_of_a_gateway() -> None:
    t = Topics.of(MqttSettings(), GW)
    assert t.root == "gateway/v1/plant"
    assert t.presence == "gateway/v1/plant/gateways/gw-a/presence"
    assert t.port("radio") == "gateway/v1/plant/gateways/gw-a/ports/radio"
    assert t.all_presence == "gateway/v1/plant/gateways/+/presence"
    assert t.everything == "gateway/v1/plant/#"
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
    raw = topics.port_state("gw-a", RADIO, talking=True, receiving=False)
    assert json.loads(raw) == {
        "port": "radio", "gateway": "gw-a", "talk_mode": "ptt", "groups": ["ops", "fire"],
        "talk_group": "ops", "talking": True, "receiving": False,
    }
    assert parse_port_state(raw)["groups"] == ["ops", "fire"]


def test_port_without_groups_round_trips() -> None:
    raw = topics.port_state("gw-a", PortInfo("spare", "open", (), ""), talking=False, receiving=False)
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
    ],
)
def test_parse_port_state_rejects_malformed(change: dict[str, Any], field: str) -> None:
    doc = {**json.loads(topics.port_state("gw-a", RADIO, talking=False, receiving=False)), **change}
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


# -- docs/mqtt.md is written from this module: keep them in step ------------------------------


def _doc_examples() -> list[Any]:
    """The JSON examples of docs/mqtt.md, in order."""
    text = DOCS.read_text()
    return [json.loads(m.group(1)) for m in re.finditer(r"^```json\n(.*?)^```", text, re.M | re.S)]


def test_docs_name_every_topic() -> None:
    text = DOCS.read_text()
    for template in (topics.PRESENCE_TOPIC, topics.PORT_TOPIC):
        assert f"`{template}`" in text, template


def test_docs_examples_are_valid_payloads() -> None:
    examples = _doc_examples()
    presence = [doc for doc in examples if "state" in doc]
    ports = [doc for doc in examples if "port" in doc]
    assert {(d["state"], d.get("reason")) for d in presence} == {
        ("online", None), ("offline", "lost"), ("offline", "shutdown"),
    }
    assert ports
    for doc in presence:
        parse_presence(json.dumps(doc).encode())
    for doc in ports:
        parse_port_state(json.dumps(doc).encode())


def test_docs_examples_have_exactly_the_builders_keys() -> None:
    built = {
        "online": json.loads(topics.presence_online(GW, since=1.0, version="0.1.0")),
        "offline": json.loads(topics.presence_offline(GW, "lost")),
        "port": json.loads(topics.port_state("gw-a", RADIO, talking=False, receiving=False)),
    }
    for doc in _doc_examples():
        kind = "port" if "port" in doc else doc["state"]
        assert list(doc) == list(built[kind]), doc
