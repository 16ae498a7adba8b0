"""The MQTT topic tree and its JSON payloads: the single source of truth for code and ``docs/mqtt.md``.

Every topic lives under one versioned root per site, ``{topic_root}/{site}`` (``gateway/v1/SITE`` by
default). Builders here are pure (time and version come in as arguments) and parsers are strict about
what they need but ignore keys they don't know, so a newer box can add fields without breaking an older
console. Anything a parser rejects is a :class:`PayloadError` (a ``ValueError``), never anything else.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from gateway.config import GatewaySettings, MqttSettings
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

PRESENCE_QOS = 1
"""QoS of presence, its last will and the shutdown notice (all retained)."""
PORT_QOS = 1
"""QoS of port states (retained)."""

MAX_PAYLOAD_BYTES = 4096
"""Parsers reject anything longer: control payloads are small, and a flood must stay cheap."""

TALK_MODES = ("ptt", "open")
OFFLINE_REASONS = ("lost", "shutdown")

OfflineReason = Literal["lost", "shutdown"]

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
    """What the control plane announces about one port, besides its live talking/receiving state."""

    name: str
    talk_mode: str
    groups: tuple[str, ...]
    talk_group: str


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


def port_state(gateway_id: str, port: PortInfo, *, talking: bool, receiving: bool) -> bytes:
    """A port's retained state: its configuration and whether it talks or hears someone now."""
    return _encode({
        "port": port.name, "gateway": gateway_id, "talk_mode": port.talk_mode,
        "groups": list(port.groups), "talk_group": port.talk_group,
        "talking": talking, "receiving": receiving,
    })


# ---------------------------------------------------------------------------------------------
# Parsers


def parse_presence(payload: bytes) -> dict[str, Any]:
    """Decode and check a presence payload; :class:`PayloadError` if it is malformed."""
    kind = "presence"
    doc = _decode_object(payload, kind)
    state = _require_str(doc, "state", kind)
    _require_name(doc, "gateway", kind)
    _require_name(doc, "site", kind)
    if state == "online":
        _require_str(doc, "version", kind)
        since = doc.get("since")
        if isinstance(since, bool) or not isinstance(since, (int, float)):
            raise PayloadError(kind, "since", "must be a number (unix time)")
        try:
            ok = math.isfinite(since) and since >= 0
        except OverflowError:  # an integer too large for a float
            ok = False
        if not ok:
            raise PayloadError(kind, "since", "must be a finite, non-negative unix time")
    elif state == "offline":
        if doc.get("reason") not in OFFLINE_REASONS:
            raise PayloadError(kind, "reason", f"must be one of {', '.join(OFFLINE_REASONS)}")
    else:
        raise PayloadError(kind, "state", "must be 'online' or 'offline'")
    return doc


def parse_port_state(payload: bytes) -> dict[str, Any]:
    """Decode and check a port state payload; :class:`PayloadError` if it is malformed."""
    kind = "port state"
    doc = _decode_object(payload, kind)
    _require_name(doc, "port", kind)
    _require_name(doc, "gateway", kind)
    if doc.get("talk_mode") not in TALK_MODES:
        raise PayloadError(kind, "talk_mode", f"must be one of {', '.join(TALK_MODES)}")
    groups = doc.get("groups")
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise PayloadError(kind, "groups", "must be an array of group names")
    _require_str(doc, "talk_group", kind, allow_empty=True)  # empty: the port has no groups
    for key in ("talking", "receiving"):
        if not isinstance(doc.get(key), bool):
            raise PayloadError(kind, key, "must be true or false")
    return doc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode_object(payload: bytes, kind: str) -> dict[str, Any]:
    if not isinstance(payload, (bytes, bytearray)):
        raise PayloadError(kind, "", f"must be bytes, got {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(kind, "", f"longer than {MAX_PAYLOAD_BYTES} bytes")
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


def _require_str(doc: dict[str, Any], key: str, kind: str, *, allow_empty: bool = False) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise PayloadError(kind, key, "must be a string")
    if not value and not allow_empty:
        raise PayloadError(kind, key, "must not be empty")
    return value


def _require_name(doc: dict[str, Any], key: str, kind: str) -> str:
    value = _require_str(doc, key, kind)
    if not _LEVEL_RE.match(value):
        raise PayloadError(kind, key, "must be a name usable as a topic level")
    return value
