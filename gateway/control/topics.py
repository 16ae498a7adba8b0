"""The MQTT topic tree and its JSON payloads: the single source of truth for code and ``docs/mqtt.md``.

Every topic lives under one versioned root per site, ``{topic_root}/{site}`` (``gateway/v1/SITE`` by
default). Builders here are pure (time, version and readings come in as arguments). Parsers check a
payload against its JSON Schema (:mod:`gateway.control.schemas`): strict about what they need, but
published payloads may carry keys a reader doesn't know, so a newer box can add fields without breaking
an older console. Anything a parser rejects is a :class:`PayloadError` (a ``ValueError``), never
anything else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.config import GatewaySettings, MqttSettings
from gateway.control import schemas
from gateway.errors import GatewayError

PRESENCE_TOPIC = "{root}/gateways/{gateway}/presence"
"""Retained presence of one gateway (``online`` / ``offline``), with the last will on it."""
PORT_TOPIC = "{root}/gateways/{gateway}/ports/{port}"
"""Retained state of one port of one gateway."""
ANNOUNCE_TOPIC = "{root}/gateways/{gateway}/announce/{group}"
"""Retained binary voice announcement (:mod:`gateway.net.announce`): who sends on a talk group with
which key epoch, authenticated with the group's key. The same bytes as the in-band LAN datagram."""
ANNOUNCE_QOS = 0
"""Announcements repeat every few seconds: a lost one is replaced by the next."""
COMMAND_TOPIC = "{root}/gateways/{gateway}/cmd"
"""Commands to one gateway (QoS 1, never retained: a retained one is ignored)."""
REPLY_TOPIC = "{root}/gateways/{gateway}/reply"
"""Replies to commands without a Response Topic; a Response Topic must be this or below it."""
TELEMETRY_TOPIC = "{root}/gateways/{gateway}/telemetry"
"""Periodic readings of one gateway (QoS 0, not retained)."""
VOICE_TOPIC = "{root}/groups/{group}/voice/{gateway}"
"""One gateway's voice on a wide-area talk group: each message is one SRTP packet, exactly as sent
on the LAN (QoS 0, not retained: a late voice packet is worth nothing)."""
ALERT_TOPIC = "{root}/alerts/{gateway}"
"""Emergency alerts raised or relayed by one gateway (QoS 1, not retained, never dropped offline)."""

PRESENCE_QOS = 1
"""QoS of presence, its last will and the shutdown notice (all retained)."""
PORT_QOS = 1
"""QoS of port states (retained)."""
COMMAND_QOS = 1
"""QoS the gateway subscribes to commands with."""
REPLY_QOS = 1
"""QoS of replies (not retained)."""
ALERT_QOS = 1
"""QoS of alerts (not retained): each is kept until the broker acknowledges it."""
TELEMETRY_QOS = 0
"""Telemetry is the first thing dropped: a lost reading is replaced by the next."""

MAX_PAYLOAD_BYTES = 4096
"""Parsers reject anything longer: control payloads are small, and a flood must stay cheap."""
MAX_TELEMETRY_BYTES = 16384
"""Telemetry grows with the senders heard (about 60 bytes each); its parser allows this much."""

TALK_MODES = ("ptt", "vad", "open")
OFFLINE_REASONS = ("lost", "shutdown")
ALERT_STATES = ("started", "ended")

OfflineReason = Literal["lost", "shutdown"]
AlertState = Literal["started", "ended"]

# One topic level we build from a name: no separators or wildcards (MQTT 5 section 4.7), no NUL.
_LEVEL_RE = re.compile(r"^[^/+#\x00]+$")


class PayloadError(GatewayError, ValueError):
    """A payload from the broker is not what this topic carries.

    ``kind`` names the payload (``presence``, ``port state``), ``field`` the offending key (empty when
    the payload as a whole is at fault) and ``reason`` what is wrong.
    """

    def __init__(self, kind: str, field: str, reason: str) -> None:
        self.kind = kind
        self.field = field
        self.reason = reason
        where = f"{kind}.{field}" if field else kind
        super().__init__(f"invalid {where} payload: {reason}")


@dataclass(frozen=True)
class PortInfo:
    """What the control plane announces about one port from its configuration."""

    name: str
    talk_mode: str
    groups: tuple[str, ...]
    talk_group: str
    """The group it talks on at start (the live one is :attr:`PortLive.talk_group`)."""
    priority: int = 0
    """Floor priority 0-7 (``ports.NAME.priority``)."""


@dataclass(frozen=True)
class Headset:
    """What a port's Bluetooth headset reports; None where it doesn't say."""

    battery_pct: int | None = None
    """Battery charge, 0-100 %."""
    link_quality: int | None = None
    """Radio link quality, 0-100 %."""


@dataclass(frozen=True)
class PortLive:
    """A port's live state, as its retained state message carries it."""

    talk_group: str
    """The group the port talks on now (a port can switch group)."""
    talking: bool = False
    receiving: bool = False
    emergency: bool = False
    """The port is in an emergency call (raised it, or hears one on its group)."""
    volume_db: float = 0.0
    """Playback volume, -40 to +12 dB."""
    headset: Headset | None = None
    """None while unknown: no headset, or not reported yet."""


@dataclass(frozen=True)
class Topics:
    """The topics of one gateway within its site."""

    root: str
    """``{topic_root}/{site}``: every topic of the site is under it."""
    gateway_id: str

    def __post_init__(self) -> None:
        for level in (*self.root.split("/"), self.gateway_id):
            _check_level(level)

    @classmethod
    def of(cls, mqtt: MqttSettings, gateway: GatewaySettings) -> Topics:
        """The topics of the gateway ``gateway`` under ``mqtt.topic_root``."""
        return cls(site_root(mqtt.topic_root, gateway.site), gateway.id)

    @property
    def presence(self) -> str:
        """This gateway's presence topic."""
        return PRESENCE_TOPIC.format(root=self.root, gateway=self.gateway_id)

    def port(self, name: str) -> str:
        """The state topic of this gateway's port ``name``."""
        _check_level(name)
        return PORT_TOPIC.format(root=self.root, gateway=self.gateway_id, port=name)

    def announce(self, group: str) -> str:
        """Where this gateway keeps its voice announcement for talk group ``group`` (retained)."""
        _check_level(group)
        return ANNOUNCE_TOPIC.format(root=self.root, gateway=self.gateway_id, group=group)

    @property
    def all_announcements(self) -> str:
        """Filter matching every gateway's voice announcement on every group."""
        return ANNOUNCE_TOPIC.format(root=self.root, gateway="+", group="+")

    def parse_announce(self, topic: str) -> tuple[str, str] | None:
        """(gateway id, group) of an announcement topic of this site, or None."""
        prefix = f"{self.root}/gateways/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix):].split("/")
        if len(parts) != 3 or parts[1] != "announce" or not parts[0] or not parts[2]:
            return None
        return parts[0], parts[2]

    def voice(self, group: str) -> str:
        """Where this gateway publishes its voice on wide-area group ``group``."""
        _check_level(group)
        return VOICE_TOPIC.format(root=self.root, gateway=self.gateway_id, group=group)

    def wan_filters(self, group: str) -> tuple[str, str]:
        """Filters for wide-area group ``group`` at every site: its voice and its announcements."""
        _check_level(group)
        top = self.root.rsplit("/", 1)[0]
        return (VOICE_TOPIC.format(root=f"{top}/+", gateway="+", group=group),
                ANNOUNCE_TOPIC.format(root=f"{top}/+", gateway="+", group=group))

    def parse_wan(self, topic: str) -> tuple[str, str, str, str] | None:
        """(kind ``voice``/``announce``, site, gateway id, group) of another site's wide-area
        topic, or None (this site's own, or not such a topic)."""
        top, site = self.root.rsplit("/", 1)
        if not topic.startswith(top + "/"):
            return None
        parts = topic[len(top) + 1:].split("/")
        if len(parts) != 5 or parts[0] == site or not all(parts):
            return None
        if parts[1] == "groups" and parts[3] == "voice":
            return "voice", parts[0], parts[4], parts[2]
        if parts[1] == "gateways" and parts[3] == "announce":
            return "announce", parts[0], parts[2], parts[4]
        return None

    @property
    def command(self) -> str:
        """Where consoles send this gateway commands."""
        return COMMAND_TOPIC.format(root=self.root, gateway=self.gateway_id)

    @property
    def reply(self) -> str:
        """Where replies go when a command names no Response Topic."""
        return REPLY_TOPIC.format(root=self.root, gateway=self.gateway_id)

    def reply_allowed(self, topic: str) -> bool:
        """A Response Topic this gateway will publish to: its reply topic or a level below it
        (the site ACL lets a gateway write only its own subtree), with no wildcards."""
        return (topic == self.reply or topic.startswith(self.reply + "/")) and all(
            _LEVEL_RE.match(level) for level in topic.split("/"))

    @property
    def telemetry(self) -> str:
        """This gateway's telemetry topic."""
        return TELEMETRY_TOPIC.format(root=self.root, gateway=self.gateway_id)

    @property
    def alerts(self) -> str:
        """Where this gateway publishes its alerts."""
        return ALERT_TOPIC.format(root=self.root, gateway=self.gateway_id)

    @property
    def all_alerts(self) -> str:
        """Filter matching every gateway's alerts of the site."""
        return ALERT_TOPIC.format(root=self.root, gateway="+")

    def parse_presence_topic(self, topic: str) -> str | None:
        """The gateway id of a presence topic of this site, or None."""
        prefix, suffix = f"{self.root}/gateways/", "/presence"
        if not (topic.startswith(prefix) and topic.endswith(suffix)):
            return None
        gateway_id = topic[len(prefix):-len(suffix)]
        return gateway_id if _LEVEL_RE.match(gateway_id) else None

    @property
    def all_presence(self) -> str:
        """Filter matching the presence of every gateway of the site."""
        return PRESENCE_TOPIC.format(root=self.root, gateway="+")

    @property
    def everything(self) -> str:
        """Filter matching every topic of the site."""
        return f"{self.root}/#"


def site_root(topic_root: str, site: str) -> str:
    """The root of a site's topics: ``{topic_root}/{site}``."""
    _check_level(site)
    return f"{topic_root}/{site}"


def is_level(name: str) -> bool:
    """True if ``name`` can be one topic level: not empty, no ``/``, ``+``, ``#`` or NUL."""
    return bool(_LEVEL_RE.match(name))


def _check_level(level: str) -> None:
    if not _LEVEL_RE.match(level):
        raise ValueError(f"{level!r} cannot be an MQTT topic level (empty, '/', '+', '#' or NUL)")


# ---------------------------------------------------------------------------------------------
# Builders


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def presence_online(gateway: GatewaySettings, *, since: float, version: str) -> bytes:
    """Presence while connected; ``since`` is the unix time this connection was accepted."""
    return _encode({
        "state": "online", "gateway": gateway.id, "site": gateway.site, "version": version,
        "since": since,
    })


def presence_offline(gateway: GatewaySettings, reason: OfflineReason) -> bytes:
    """Presence after the link ended: ``lost`` (the last will) or ``shutdown`` (a clean stop)."""
    if reason not in OFFLINE_REASONS:
        raise ValueError(f"offline reason must be one of {OFFLINE_REASONS}, got {reason!r}")
    return _encode({"state": "offline", "gateway": gateway.id, "site": gateway.site, "reason": reason})


def port_state(gateway_id: str, port: PortInfo, live: PortLive | None = None) -> bytes:
    """A port's retained state: its configuration and its live state (``live``; by default a port
    at rest on its configured group)."""
    if live is None:
        live = PortLive(port.talk_group)
    headset = live.headset
    return _encode({
        "port": port.name, "gateway": gateway_id, "talk_mode": port.talk_mode,
        "groups": list(port.groups), "talk_group": live.talk_group, "priority": port.priority,
        "talking": live.talking, "receiving": live.receiving, "emergency": live.emergency,
        "volume_db": live.volume_db,
        "headset": None if headset is None else {
            "battery_pct": headset.battery_pct, "link_quality": headset.link_quality},
    })


def emergency_alert(
    gateway_id: str, *, state: AlertState, port: str | None, group: str, ssrc: int, at: float,
) -> dict[str, Any]:
    """An emergency alert for :meth:`~gateway.control.client.ControlPlane.publish_alert`: ``port`` is
    the local port that raised it, None when the caller ``ssrc`` is on another box."""
    if not 0 <= ssrc <= 0xFFFFFFFF:
        raise ValueError(f"an SSRC is 32 bits, got {ssrc}")
    doc = {"type": "emergency", "state": state, "gateway": gateway_id, "port": port, "group": group,
           "ssrc": f"0x{ssrc:08x}", "at": at}
    _check("alert", "alert", doc)
    return doc


def alert_payload(doc: Mapping[str, Any]) -> bytes:
    """An alert document as sent; :class:`PayloadError` if it does not match the alert schema."""
    doc = dict(doc)
    _check("alert", "alert", doc)
    return _encode(doc)


TELEMETRY_KEYS = ("gateway", "at", "load_1m", "cpu_temp_c")
"""What every telemetry message carries; the app's readings come after, and can't replace these."""


def telemetry(
    gateway_id: str, *, at: float, load_1m: float | None, cpu_temp_c: float | None,
    readings: Mapping[str, Any] | None = None,
) -> bytes:
    """One telemetry message: system readings, then the app's ``readings`` (e.g. ``ports``,
    ``senders``); a reading named like a system key is left out."""
    doc: dict[str, Any] = {"gateway": gateway_id, "at": at, "load_1m": load_1m, "cpu_temp_c": cpu_temp_c}
    for key, value in (readings or {}).items():
        if key not in doc:
            doc[key] = value
    return _encode(doc)


def error_reply(request_id: str | None, error: str) -> dict[str, Any]:
    """A reply saying a command was not applied."""
    return {"id": request_id, "ok": False, "error": error}


def reply_payload(reply: Mapping[str, Any]) -> bytes:
    """A reply as sent; :class:`PayloadError` if it does not match the reply schema or isn't JSON."""
    doc = dict(reply)
    _check("reply", "reply", doc)
    try:
        return _encode(doc)
    except (TypeError, ValueError) as exc:  # an object json can't write, NaN, a circular reference
        raise PayloadError("reply", "", f"not JSON: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Parsers


def parse_presence(payload: bytes) -> dict[str, Any]:
    """Decode and check a presence payload; :class:`PayloadError` if it is malformed."""
    return _parse("presence", "presence", payload)


def parse_port_state(payload: bytes) -> dict[str, Any]:
    """Decode and check a port state payload; :class:`PayloadError` if it is malformed."""
    return _parse("port state", "port-state", payload)


def parse_alert(payload: bytes) -> dict[str, Any]:
    """Decode and check an alert; :class:`PayloadError` if it is malformed."""
    return _parse("alert", "alert", payload)


def parse_telemetry(payload: bytes) -> dict[str, Any]:
    """Decode and check a telemetry message; :class:`PayloadError` if it is malformed."""
    return _parse("telemetry", "telemetry", payload, MAX_TELEMETRY_BYTES)


def parse_command(payload: bytes) -> dict[str, Any]:
    """Decode and check a command; :class:`PayloadError` if it is malformed."""
    return _parse("command", "command", payload)


def parse_reply(payload: bytes) -> dict[str, Any]:
    """Decode and check a reply; :class:`PayloadError` if it is malformed."""
    return _parse("reply", "reply", payload)


def _parse(kind: str, schema: str, payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    doc = _decode_object(payload, kind, max_bytes)
    _check(kind, schema, doc)
    return doc


def _check(kind: str, schema: str, doc: dict[str, Any]) -> None:
    try:
        schemas.validate(schema, doc)
    except schemas.SchemaViolation as exc:
        raise PayloadError(kind, exc.field, exc.reason) from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode_object(payload: bytes, kind: str, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    if not isinstance(payload, (bytes, bytearray)):
        raise PayloadError(kind, "", f"must be bytes, got {type(payload).__name__}")
    if len(payload) > max_bytes:
        raise PayloadError(kind, "", f"longer than {max_bytes} bytes")
    try:
        # Decode explicitly: json.loads(bytes) would also guess UTF-16/32, which MQTT 5 never carries.
        text = bytes(payload).decode("utf-8")
        doc = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise PayloadError(kind, "", "not UTF-8") from exc
    except RecursionError as exc:  # the C scanner recurses per nesting level: "[[[[..." gets here
        raise PayloadError(kind, "", "nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, over-long integers
        raise PayloadError(kind, "", f"not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise PayloadError(kind, "", "must be a JSON object")
    return doc
