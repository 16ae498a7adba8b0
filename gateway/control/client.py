"""The control plane: one gateway's MQTT 5 link to its site broker, supervised and never in the way.

:class:`ControlPlane` keeps a link (:mod:`gateway.control.link`) to the broker and rebuilds it after
every loss. On every (re)connect it announces the gateway's whole state, retained: presence, then every
port; then it sends the alerts that waited for the broker (:mod:`gateway.control.outbox`), its voice
announcements, and subscribes to its commands. While linked it publishes port changes as they happen,
telemetry every period, and a reply to each command (:mod:`gateway.control.mqtt_commands`).

A lost or absent broker never stops voice: every public method only records and, when linked, hands a
message to paho; none blocks or raises on the broker's account. What waits for the broker: port states
(the latest, sent on connect) and alerts (each, in a bounded outbox). What doesn't: telemetry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

import gateway
from gateway.backoff import Backoff
from gateway.config import GatewaySettings, MqttSettings
from gateway.control import topics
from gateway.control.link import (
    CONNECT_TIMEOUT_S,
    DISCONNECT_TIMEOUT_S,
    GOODBYE_TIMEOUT_S,
    ConnectFailed,
    Inbound,
    Link,
    Will,
    json_properties,
)
from gateway.control.mqtt_commands import CommandDesk, CommandHook, CommandStats
from gateway.control.outbox import Outbox
from gateway.control.ports import PortTable
from gateway.control.telemetry import THERMAL_ZONE, Telemetry
from gateway.control.topics import Headset, PayloadError, PortInfo, PortLive, Topics

AUTO_BROKER_WAIT_S = 3.0
"""``mqtt.host = "auto"``: how long each connection attempt looks for the site broker."""

log = logging.getLogger("gateway.control")

__all__ = [
    "CONNECT_TIMEOUT_S", "DISCONNECT_TIMEOUT_S", "GOODBYE_TIMEOUT_S", "CommandStats", "ControlPlane",
    "ControlStats", "Headset", "PortInfo", "PortLive",
]


_MAX_LOGGED = 256
"""Distinct warnings logged once each (keys can come from the broker: the set must stay bounded)."""


@dataclass
class ControlStats:
    """Counters of the control plane (for tests, logs and telemetry)."""

    connects: int = 0
    """Connections the broker accepted."""
    disconnects: int = 0
    """Accepted connections that ended (lost, refused later, or shut down)."""
    connect_failures: int = 0
    """Attempts that never got an accepting CONNACK: unreachable, refused, bad address, timeout."""
    publishes: int = 0
    """Messages handed to paho for sending."""
    publish_failures: int = 0
    """Messages paho refused, or the broker rejected in its PUBACK."""
    announcements_received: int = 0
    """Other gateways' voice announcements handed to the voice transport (which checks them)."""
    invalid_received: int = 0
    """Presence payloads from the broker that failed their schema (never applied)."""
    voice_sent: int = 0
    """Voice packets of wide-area groups handed to paho."""
    voice_not_linked: int = 0
    """Voice packets of wide-area groups not sent because the broker was away (never queued)."""
    voice_received: int = 0
    """Other sites' voice packets handed to the voice transport (which authenticates them)."""


class ControlPlane:
    """The MQTT 5 client of one gateway: presence, port states, commands, alerts, telemetry."""

    def __init__(
        self,
        settings: MqttSettings,
        gateway: GatewaySettings,
        ports: Sequence[PortInfo],
        *,
        rng: random.Random | None = None,
        will_delay_s: int = 10,
        telemetry_period_s: float = 10.0,
        alert_outbox_size: int = 100,
        thermal_zone: Path = THERMAL_ZONE,
    ) -> None:
        if will_delay_s < 0:
            raise ValueError(f"will_delay_s must be >= 0, got {will_delay_s}")
        self._settings = settings
        self._gateway = gateway
        self.topics = Topics.of(settings, gateway)
        """The topics this gateway publishes on."""
        self.client_id = f"gw-{gateway.site}-{gateway.id}"
        self.ports = PortTable(ports)
        """The ports' configuration and live state (its counters: unknown, bad_values)."""
        self._rng = rng
        self._will = Will(self.topics.presence, topics.presence_offline(gateway, "lost"),
                          topics.PRESENCE_QOS, True, will_delay_s)
        self.telemetry = Telemetry(gateway.id, telemetry_period_s, thermal_zone)
        """Paces telemetry while linked; its ``stats`` say what was sent and skipped."""
        self.stats = ControlStats()
        self.alert_outbox = Outbox(alert_outbox_size)
        """Alerts not yet acknowledged by the broker (its counters: dropped, delivered, rejected)."""
        self._desk = CommandDesk(self.topics)
        self.command_stats: CommandStats = self._desk.stats
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: Link | None = None
        self._connected = False
        self._running = False
        self._failing = False
        self._logged: set[str] = set()
        self._json = json_properties(PacketTypes.PUBLISH)
        self._binary = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        self._binary.ContentType = "application/octet-stream"
        self._voice_announcements: dict[str, bytes] = {}

        self.on_link: Callable[[bool], None] | None = None
        """Called on the loop with True when the link comes up and False when it goes down."""
        self.on_announcement: Callable[[str, bytes], None] | None = None
        """Called on the loop with (group, datagram) for another gateway's voice announcement."""
        self.on_command: CommandHook | None = None
        """Applies one command (raw JSON, already schema-checked) and returns the reply document:
        ``Commands.handle_bytes``. Commands are subscribed to only while this is set at connect."""
        self.wan_groups: tuple[str, ...] = ()
        """Wide-area talk groups: their voice and announcements are exchanged with other sites."""
        self.on_voice: Callable[[str, bytes], None] | None = None
        """Called on the loop with (group, SRTP datagram) for another site's voice packet."""
        self.on_presence: Callable[[str, dict[str, Any]], None] | None = None
        """Called on the loop with (gateway id, presence document) for the other gateways of the site,
        schema-checked; subscribed to only while this is set at connect."""

    # -- public -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the broker has accepted us and the link is up."""
        return self._connected

    @property
    def telemetry_source(self) -> Callable[[], Mapping[str, Any]] | None:
        """The app's readings for each telemetry message (e.g. ``ports``, ``senders``), or None:
        called on the loop once per period while linked, and must return a JSON-able mapping."""
        return self.telemetry.source

    @telemetry_source.setter
    def telemetry_source(self, source: Callable[[], Mapping[str, Any]] | None) -> None:
        self.telemetry.source = source

    def port_state(self, port: str) -> PortLive:
        """The live state last set for ``port``."""
        return self.ports.live(port)

    def counters(self) -> dict[str, int]:
        """Every counter of the control plane, flat (for telemetry and ``gateway status``)."""
        out = dataclasses.asdict(self.stats)
        out.update(unknown_ports=self.ports.unknown, bad_port_values=self.ports.bad_values)
        out.update({f"commands_{k}": v for k, v in dataclasses.asdict(self.command_stats).items()})
        box = self.alert_outbox
        out.update(alerts_pending=len(box), alerts_dropped=box.dropped, alerts_delivered=box.delivered,
                   alerts_rejected=box.rejected)
        out.update({f"telemetry_{k}": v for k, v in dataclasses.asdict(self.telemetry.stats).items()})
        return out

    async def run(self) -> None:
        """Keep a link to the broker until cancelled, then say ``shutdown`` and disconnect."""
        if self._running:
            raise RuntimeError("ControlPlane.run() is already running")
        self._running = True
        self._loop = asyncio.get_running_loop()
        backoff = Backoff(self._settings.reconnect_min_s, self._settings.reconnect_max_s, self._rng)
        try:
            while True:
                try:
                    linked = await self._attempt()
                except Exception:  # a bug here or in paho must not end the supervision: voice goes on
                    log.exception("MQTT link failed unexpectedly; retrying")
                    self.stats.connect_failures += 1
                    linked = False
                if linked:
                    backoff.reset()
                await asyncio.sleep(backoff.next())
        finally:
            self._running = False

    def set_port_state(
        self, port: str, *, talking: bool | None = None, receiving: bool | None = None,
        talk_group: str | None = None, emergency: bool | None = None, volume_db: float | None = None,
    ) -> None:
        """Record a port's live state (None: unchanged) and publish it if it changed and we are linked.

        Call it on the loop. It never blocks and never raises: while the broker is away the state is
        only remembered, and sent with everything else on the next connect. A value that can't be
        published (a NaN volume, a group name that can't be a topic level) is logged and ignored.
        """
        if self.ports.update(port, talking=talking, receiving=receiving, talk_group=talk_group,
                             emergency=emergency, volume_db=volume_db):
            self._port_changed(port)

    def set_headset(self, port: str, headset: Headset | None) -> None:
        """Record what a port's headset reports (None: unknown) and publish it as ``set_port_state``."""
        if self.ports.set_headset(port, headset):
            self._port_changed(port)

    def publish_alert(self, doc: Mapping[str, Any]) -> None:
        """Send an alert (build it with :func:`gateway.control.topics.emergency_alert`): now when
        linked, else as soon as the broker is back. Kept until the broker acknowledges it; past
        ``alert_outbox_size`` waiting alerts the oldest is dropped (counted). Never blocks;
        :class:`~gateway.control.topics.PayloadError` if ``doc`` does not match the alert schema."""
        self.alert_outbox.add(topics.alert_payload(doc))
        link = self._link
        if link is not None and link.up:
            self._flush_alerts(link)

    def publish_voice(self, group: str, data: bytes) -> None:
        """Send one of our SRTP packets of wide-area group ``group`` to the other sites (QoS 0);
        dropped (counted), never queued, while the broker is away: voice never waits."""
        link = self._link
        if link is None or not link.up:
            self.stats.voice_not_linked += 1
            return
        if self._publish(link, self.topics.voice(group), data, 0, retain=False,
                         properties=self._binary) is not None:
            self.stats.voice_sent += 1

    def publish_announcement(self, group: str, data: bytes) -> None:
        """Keep our latest voice announcement for ``group`` retained on the broker (when linked;
        the latest is published again after every reconnect)."""
        self._voice_announcements[group] = data
        link = self._link
        if link is not None and link.up:
            self._publish(link, self.topics.announce(group), data, topics.ANNOUNCE_QOS,
                          properties=self._binary)

    # -- one connection -----------------------------------------------------------------------

    async def _find_broker(self) -> MqttSettings | None:
        """``mqtt.host = "auto"``: the site broker found by DNS-SD now (None: none answered)."""
        from gateway.control.discovery import DiscoveryError, find_broker

        try:
            found = await find_broker(self._gateway.site, AUTO_BROKER_WAIT_S)
        except DiscoveryError as exc:
            self._warn_once("discovery", "cannot look for the site broker: %s", exc)
            return None
        if found is None:
            return None
        return dataclasses.replace(self._settings, host=found[0], port=found[1])

    async def _attempt(self) -> bool:
        """Connect once and serve until the link ends: True if the broker accepted us."""
        assert self._loop is not None
        settings = self._settings
        if self._settings.host == "auto":
            found = await self._find_broker()
            if found is None:
                self.stats.connect_failures += 1
                if not self._failing:
                    self._failing = True
                    log.warning("no site broker for %r found by DNS-SD; LAN-only until one answers",
                                self._gateway.site)
                return False
            settings = found
        link = Link(self._loop, settings, self.client_id, self._will, on_up=self._link_up,
                    on_down=self._link_down, on_message=self._message, on_ack=self._acked)
        self._link = link
        host, port = settings.host, settings.port
        try:
            try:
                await link.open()
            except ConnectFailed as exc:
                self.stats.connect_failures += 1
                if not self._failing:
                    self._failing = True
                    log.warning("cannot reach MQTT broker %s:%d: %s; retrying", host, port, exc)
                else:
                    log.debug("MQTT broker %s:%d still unreachable: %s", host, port, exc)
                return False
            self._failing = False
            log.info("linked to MQTT broker %s:%d as %s", host, port, self.client_id)
            # asyncio.wait, not "await link.closed": cancelling the task would cancel the future too.
            await asyncio.wait({link.closed})
            log.warning(
                "lost MQTT broker %s:%d (%s); reconnecting", host, port, link.reason or "connection closed"
            )
            self._failing = True  # the failed attempts that follow are this same outage: no new warning
            return True
        except asyncio.CancelledError:
            farewell = topics.presence_offline(self._gateway, "shutdown")
            if await link.goodbye(lambda: self._publish(link, self.topics.presence, farewell,
                                                        topics.PRESENCE_QOS)):
                log.info("unlinked from MQTT broker %s:%d (shutdown)", host, port)
            raise
        finally:
            link.release()
            self._link = None

    def _link_up(self, link: Link) -> None:
        """The broker accepted us: announce everything, before anything else is sent."""
        self._connected = True
        self.stats.connects += 1
        self._publish(
            link, self.topics.presence,
            topics.presence_online(self._gateway, since=time.time(), version=gateway.__version__),
            topics.PRESENCE_QOS,
        )
        for name in self.ports:
            self._publish_port(link, name)
        self._flush_alerts(link)
        for group, data in self._voice_announcements.items():
            self._publish(link, self.topics.announce(group), data, topics.ANNOUNCE_QOS,
                          properties=self._binary)
        if self.on_command is not None:
            # Retain As Published: a command published with the retain flag arrives with it, so it
            # is recognised (and ignored) whether it was stored earlier or published just now.
            link.subscribe(self.topics.command,
                           SubscribeOptions(qos=topics.COMMAND_QOS, retainAsPublished=True))
        if self.on_presence is not None:
            link.subscribe(self.topics.all_presence, SubscribeOptions(qos=topics.PRESENCE_QOS))
        if self.on_announcement is not None:
            link.subscribe(self.topics.all_announcements, SubscribeOptions(qos=topics.ANNOUNCE_QOS))
        for group in self.wan_groups:
            voice, announcements = self.topics.wan_filters(group)
            # No Local: our own voice would come straight back from the broker.
            link.subscribe(voice, SubscribeOptions(qos=0, noLocal=True))
            link.subscribe(announcements, SubscribeOptions(qos=topics.ANNOUNCE_QOS))
        self.telemetry.start(lambda payload: self._publish(
            link, self.topics.telemetry, payload, topics.TELEMETRY_QOS, retain=False) is not None,
            lambda: link.backlog)
        self._notify(True)  # after the announcement, so the app's callback sees a complete link

    def _link_down(self, link: Link) -> None:
        self._connected = False
        self.stats.disconnects += 1
        self.alert_outbox.link_lost()
        self.telemetry.stop()
        self._notify(False)

    def _notify(self, up: bool) -> None:
        if self.on_link is None:
            return
        try:
            self.on_link(up)
        except Exception:  # the app's callback must not take the control plane down with it
            log.exception("on_link(%s) failed", up)

    # -- publishing -----------------------------------------------------------------------------

    def _port_changed(self, port: str) -> None:
        link = self._link
        if self._connected and link is not None:
            self._publish_port(link, port)

    def _publish_port(self, link: Link, name: str) -> None:
        self._publish(link, self.topics.port(name), self.ports.payload(self._gateway.id, name),
                      topics.PORT_QOS)

    def _flush_alerts(self, link: Link) -> None:
        for seq, payload in self.alert_outbox.unsent():
            mid = self._publish(link, self.topics.alerts, payload, topics.ALERT_QOS, retain=False)
            if mid is None:
                break  # stays in the outbox for the next link
            self.alert_outbox.sent(seq, mid)

    def _publish(self, link: Link, topic: str, payload: bytes, qos: int, *, retain: bool = True,
                 properties: Properties | None = None) -> int | None:
        """Hand one message to paho (retained unless told); its message id, or None (counted)."""
        mid = link.publish(topic, payload, qos, retain=retain, properties=properties or self._json)
        if mid is None:
            self.stats.publish_failures += 1
        else:
            self.stats.publishes += 1
        return mid

    def _acked(self, link: Link, mid: int, reason: ReasonCode) -> None:
        if reason.is_failure:
            self.stats.publish_failures += 1
            log.warning("broker rejected message %d: %s", mid, reason)
        self.alert_outbox.acked(mid, ok=not reason.is_failure)

    # -- received ---------------------------------------------------------------------------------

    def _message(self, link: Link, msg: Inbound) -> None:
        if msg.topic == self.topics.command:
            self._command(link, msg)
            return
        wan = self.topics.parse_wan(msg.topic) if self.wan_groups else None
        if wan is not None:
            self._wan(*wan, msg.payload)
            return
        presence_of = self.topics.parse_presence_topic(msg.topic)
        if presence_of is not None:
            self._presence(presence_of, msg.payload)
            return
        where = self.topics.parse_announce(msg.topic)
        if where is None or self.on_announcement is None:
            return
        gateway_id, group = where
        if gateway_id == self._gateway.id or not msg.payload:
            return
        self.stats.announcements_received += 1
        try:
            self.on_announcement(group, msg.payload)
        except Exception:  # the handler counts bad announcements; a bug must not end the link
            log.exception("voice announcement from %s on %r failed", gateway_id, group)

    def _wan(self, kind: str, site: str, gateway_id: str, group: str, payload: bytes) -> None:
        """Another site's voice or announcement on a wide-area group (this site's own travel on
        the LAN, and the broker would only duplicate them)."""
        if group not in self.wan_groups or not payload:
            return
        hook = self.on_voice if kind == "voice" else self.on_announcement
        if hook is None:
            return
        if kind == "voice":
            self.stats.voice_received += 1
        else:
            self.stats.announcements_received += 1
        try:
            hook(group, payload)
        except Exception:  # the transport counts bad packets; a bug must not end the link
            log.exception("wide-area %s from %s/%s on %r failed", kind, site, gateway_id, group)

    def _command(self, link: Link, msg: Inbound) -> None:
        hook = self.on_command
        if hook is None:
            return
        reply = self._desk.receive(hook, msg.payload, retained=msg.retained,
                                   response_topic=msg.response_topic, correlation=msg.correlation)
        if reply is None:
            return
        props = json_properties(PacketTypes.PUBLISH)
        if reply.correlation is not None:
            props.CorrelationData = reply.correlation
        self._publish(link, reply.topic, reply.payload, topics.REPLY_QOS, retain=False, properties=props)

    def _presence(self, gateway_id: str, payload: bytes) -> None:
        if self.on_presence is None or gateway_id == self._gateway.id or not payload:
            return  # an empty retained message clears a gateway's presence: nothing to report
        try:
            doc = topics.parse_presence(payload)
            if doc["gateway"] != gateway_id:
                raise PayloadError("presence", "gateway", f"{doc['gateway']!r} on {gateway_id!r}'s topic")
        except PayloadError as exc:
            self.stats.invalid_received += 1
            self._warn_once(f"presence:{gateway_id}", "ignoring presence of %s: %s", gateway_id, exc)
            return
        try:
            self.on_presence(gateway_id, doc)
        except Exception:
            log.exception("on_presence(%r) failed", gateway_id)

    # -- helpers ----------------------------------------------------------------------------------

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        """Log a warning the first time ``key`` comes up, then at debug level (rate-limited logs)."""
        if key in self._logged or len(self._logged) >= _MAX_LOGGED:
            log.debug(message, *args)
            return
        self._logged.add(key)
        log.warning(message, *args)

