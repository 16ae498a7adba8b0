"""The control plane: one gateway's MQTT 5 link to its site broker, supervised and never in the way.

paho-mqtt's socket is driven from the asyncio loop, the way aiomqtt does it: the loop reads when the
socket is readable, writes while paho has output queued and calls ``loop_misc`` for keepalive, so
paho's callbacks run on the loop. Only the blocking TCP connect runs in a worker thread; the socket
callbacks paho makes there cross to the loop with ``call_soon_threadsafe`` (:meth:`ControlPlane._cross`).

Each connection attempt uses a fresh paho client, so nothing queued for a lost connection is replayed
later: on every (re)connect the gateway re-announces its whole state (presence, then every port),
retained. A lost or absent broker never stops voice: :meth:`ControlPlane.set_port_state` only records
and, when linked, hands one message to paho; it never blocks or raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

import gateway
from gateway.backoff import Backoff
from gateway.config import GatewaySettings, MqttSettings
from gateway.control import topics
from gateway.control.topics import PortInfo, Topics

log = logging.getLogger("gateway.control")

CONNECT_TIMEOUT_S = 5.0
"""Longest wait for the TCP connection, and then for the broker's CONNACK."""
GOODBYE_TIMEOUT_S = 1.0
"""On shutdown, longest wait for the broker to acknowledge the ``offline``/``shutdown`` presence."""
DISCONNECT_TIMEOUT_S = 0.5
"""On shutdown, longest wait for the DISCONNECT to be written before the socket is closed anyway."""

__all__ = ["ControlPlane", "ControlStats", "PortInfo"]


@dataclass
class ControlStats:
    """Counters of the control plane (for tests, logs and later telemetry)."""

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
    unknown_ports: int = 0
    """``set_port_state`` calls naming a port this gateway doesn't have (ignored)."""
    announcements_received: int = 0
    """Other gateways' voice announcements handed to the voice transport (which checks them)."""


class _ConnectFailed(Exception):
    """One attempt failed before the broker accepted us; the message says why (never a secret)."""


class _Link:
    """One connection attempt: a fresh paho client and what its callbacks have told us."""

    def __init__(self, client: mqtt.Client, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.fd: int | None = None
        self.writing = False
        self.misc: asyncio.TimerHandle | None = None
        self.connack: asyncio.Future[str | None] = loop.create_future()
        """None when the broker accepted us, else why not."""
        self.closed: asyncio.Future[None] = loop.create_future()
        self.acks: dict[int, asyncio.Future[None]] = {}
        self.up = False
        self.reason = ""


class ControlPlane:
    """The MQTT 5 client of one gateway: presence, port states, reconnects by itself."""

    def __init__(
        self,
        settings: MqttSettings,
        gateway: GatewaySettings,
        ports: Sequence[PortInfo],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._gateway = gateway
        self.topics = Topics.of(settings, gateway)
        """The topics this gateway publishes on."""
        self.client_id = f"gw-{gateway.site}-{gateway.id}"
        self._ports: dict[str, PortInfo] = {}
        for port in ports:
            if port.name in self._ports:
                raise ValueError(f"port {port.name!r} is listed twice")
            self.topics.port(port.name)  # a name that can't be a topic level fails here, not later
            self._ports[port.name] = port
        self._state: dict[str, tuple[bool, bool]] = {name: (False, False) for name in self._ports}
        self._rng = rng
        self.on_link: Callable[[bool], None] | None = None
        """Called on the loop with True when the link comes up and False when it goes down."""
        self.stats = ControlStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._link: _Link | None = None
        self._connected = False
        self._running = False
        self._failing = False
        self._unknown_logged: set[str] = set()
        self._json = _json_properties(PacketTypes.PUBLISH)
        self._binary = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        self._binary.ContentType = "application/octet-stream"
        self._voice_announcements: dict[str, bytes] = {}
        self.on_announcement: Callable[[str, bytes], None] | None = None
        """Called on the loop with (group, datagram) for another gateway's voice announcement."""

    # -- public -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the broker has accepted us and the link is up."""
        return self._connected

    def port_state(self, port: str) -> tuple[bool, bool]:
        """The (talking, receiving) state last set for ``port``."""
        return self._state[port]

    async def run(self) -> None:
        """Keep a link to the broker until cancelled, then say ``shutdown`` and disconnect."""
        if self._running:
            raise RuntimeError("ControlPlane.run() is already running")
        self._running = True
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
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

    def publish_announcement(self, group: str, data: bytes) -> None:
        """Keep our latest voice announcement for ``group`` retained on the broker (when linked;
        the latest is published again after every reconnect)."""
        self._voice_announcements[group] = data
        link = self._link
        if link is not None and link.up:
            self._publish(link, self.topics.announce(group), data, topics.ANNOUNCE_QOS,
                          properties=self._binary)

    def set_port_state(
        self, port: str, *, talking: bool | None = None, receiving: bool | None = None
    ) -> None:
        """Record a port's talking/receiving state and publish it if it changed and we are linked.

        Call it on the loop. It never blocks and never raises: while the broker is away the state is
        only remembered, and sent with everything else on the next connect.
        """
        old = self._state.get(port)
        if old is None:
            self.stats.unknown_ports += 1
            if port not in self._unknown_logged:
                self._unknown_logged.add(port)
                log.warning("state for unknown port %r ignored (have: %s)", port, ", ".join(self._ports))
            return
        new = (
            old[0] if talking is None else bool(talking),
            old[1] if receiving is None else bool(receiving),
        )
        if new == old:
            return
        self._state[port] = new
        link = self._link
        if self._connected and link is not None:
            self._publish_port(link, port)

    # -- one connection -----------------------------------------------------------------------

    async def _attempt(self) -> bool:
        """Connect once and serve until the link ends: True if the broker accepted us."""
        link = self._new_link()
        self._link = link
        host, port = self._settings.host, self._settings.port
        try:
            try:
                await self._open(link)
            except _ConnectFailed as exc:
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
            await self._goodbye(link)
            raise
        finally:
            self._release(link)
            self._link = None

    def _new_link(self) -> _Link:
        assert self._loop is not None
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        link = _Link(client, self._loop)
        client.user_data_set(link)
        client.enable_logger(logging.getLogger("gateway.control.paho"))
        client.connect_timeout = CONNECT_TIMEOUT_S
        if self._settings.username:
            client.username_pw_set(self._settings.username, self._settings.password or None)
        client.will_set(
            self.topics.presence, topics.presence_offline(self._gateway, "lost"),
            qos=topics.PRESENCE_QOS, retain=True, properties=_json_properties(PacketTypes.WILLMESSAGE),
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        return link

    async def _open(self, link: _Link) -> None:
        """TCP-connect in a worker thread, then wait for the CONNACK; :class:`_ConnectFailed` if not."""
        assert self._loop is not None
        s = self._settings
        try:
            # connect() resolves the name and opens TCP (bounded by connect_timeout), then only
            # queues CONNECT: the socket callbacks hand the writing to the loop.
            await self._loop.run_in_executor(
                None,
                lambda: link.client.connect(s.host, s.port, s.keepalive_s, clean_start=True),
            )
        except (OSError, ValueError, OverflowError) as exc:  # refused, unreachable, DNS, bad host/port
            raise _ConnectFailed(_describe(exc)) from exc
        done, _ = await asyncio.wait({link.connack}, timeout=CONNECT_TIMEOUT_S)
        if not done:
            raise _ConnectFailed(f"no CONNACK within {CONNECT_TIMEOUT_S:g} s")
        refused = link.connack.result()
        if refused is not None:
            raise _ConnectFailed(refused)

    async def _goodbye(self, link: _Link) -> None:
        """On shutdown: publish ``offline``/``shutdown`` and DISCONNECT, each wait bounded."""
        if link.fd is None or link.closed.done():
            return
        host, port = self._settings.host, self._settings.port
        if not link.connack.done():  # cancelled mid-handshake: a DISCONNECT keeps the will unsent
            await asyncio.wait({link.connack}, timeout=GOODBYE_TIMEOUT_S)
        if link.up:
            mid = self._publish(
                link, self.topics.presence, topics.presence_offline(self._gateway, "shutdown"),
                topics.PRESENCE_QOS,
            )
            if mid is not None:
                ack = link.acks.setdefault(mid, asyncio.get_running_loop().create_future())
                await asyncio.wait({ack, link.closed}, timeout=GOODBYE_TIMEOUT_S,
                                   return_when=asyncio.FIRST_COMPLETED)
        if link.closed.done():
            return
        # A normal DISCONNECT (reason 0) tells the broker to discard the last will (MQTT 5, 3.14.4).
        was_up = link.up
        if link.client.disconnect() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            await asyncio.wait({link.closed}, timeout=DISCONNECT_TIMEOUT_S)
        if was_up:
            log.info("unlinked from MQTT broker %s:%d (shutdown)", host, port)

    def _release(self, link: _Link) -> None:
        """Forget a link for good: stop watching its socket, close it, report the link down."""
        assert self._loop is not None
        if link.misc is not None:
            link.misc.cancel()
            link.misc = None
        self._unwatch(link)
        # The socket may still be open (cancelled, or timed out waiting for the broker).
        sock = link.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self._down(link)
        for ack in link.acks.values():
            ack.cancel()
        if not link.closed.done():
            link.closed.set_result(None)

    # -- announcing ---------------------------------------------------------------------------

    def _announce(self, link: _Link, since: float) -> None:
        """Everything a subscriber needs after we (re)connect: presence, then every port."""
        self._publish(
            link, self.topics.presence,
            topics.presence_online(self._gateway, since=since, version=gateway.__version__),
            topics.PRESENCE_QOS,
        )
        for name in self._ports:
            self._publish_port(link, name)
        for group, data in self._voice_announcements.items():
            self._publish(link, self.topics.announce(group), data, topics.ANNOUNCE_QOS,
                          properties=self._binary)
        if self.on_announcement is not None:
            link.client.subscribe(self.topics.all_announcements, qos=topics.ANNOUNCE_QOS)

    def _publish_port(self, link: _Link, name: str) -> None:
        talking, receiving = self._state[name]
        payload = topics.port_state(self._gateway.id, self._ports[name], talking=talking,
                                    receiving=receiving)
        self._publish(link, self.topics.port(name), payload, topics.PORT_QOS)

    def _publish(self, link: _Link, topic: str, payload: bytes, qos: int,
                 properties: Properties | None = None) -> int | None:
        """Hand one retained message to paho; its message id, or None (counted) if refused."""
        try:
            info = link.client.publish(topic, payload, qos=qos, retain=True,
                                       properties=properties or self._json)
        except (ValueError, OSError) as exc:
            self.stats.publish_failures += 1
            log.warning("cannot publish to %s: %s", topic, exc)
            return None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.stats.publish_failures += 1
            log.debug("cannot publish to %s: %s", topic, mqtt.error_string(info.rc))
            return None
        self.stats.publishes += 1
        return info.mid

    # -- link state ---------------------------------------------------------------------------

    def _up(self, link: _Link) -> None:
        link.up = True
        self._connected = True
        self.stats.connects += 1

    def _down(self, link: _Link) -> None:
        if not link.up:
            return
        link.up = False
        self._connected = False
        self.stats.disconnects += 1
        self._notify(False)

    def _notify(self, up: bool) -> None:
        if self.on_link is None:
            return
        try:
            self.on_link(up)
        except Exception:  # the app's callback must not take the control plane down with it
            log.exception("on_link(%s) failed", up)

    # -- paho callbacks (may come from the connect thread: everything goes through _cross) --------

    def _cross(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop: now if we are on it, else via ``call_soon_threadsafe``."""
        if threading.get_ident() == self._loop_thread:
            fn(*args)
            return
        loop = self._loop
        if loop is not None:
            # A loop closed during shutdown raises RuntimeError: the link is gone anyway.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)

    def _on_connect(
        self, client: mqtt.Client, link: _Link, flags: Any, reason: ReasonCode, props: Properties | None
    ) -> None:
        self._cross(self._connack, link, reason)

    def _on_disconnect(
        self, client: mqtt.Client, link: _Link, flags: Any, reason: ReasonCode, props: Properties | None
    ) -> None:
        self._cross(self._disconnected, link, reason, bool(flags.is_disconnect_packet_from_server))

    def _on_publish(
        self, client: mqtt.Client, link: _Link, mid: int, reason: ReasonCode, props: Properties
    ) -> None:
        self._cross(self._acked, link, mid, reason)

    def _on_message(self, client: mqtt.Client, link: _Link, message: mqtt.MQTTMessage) -> None:
        self._cross(self._message, link, message.topic, bytes(message.payload))

    def _message(self, link: _Link, topic: str, payload: bytes) -> None:
        where = self.topics.parse_announce(topic)
        if not self._current(link) or where is None or self.on_announcement is None:
            return
        gateway_id, group = where
        if gateway_id == self._gateway.id or not payload:
            return
        self.stats.announcements_received += 1
        try:
            self.on_announcement(group, payload)
        except Exception:  # the handler counts bad announcements; a bug must not end the link
            log.exception("voice announcement from %s on %r failed", gateway_id, group)

    def _on_socket_open(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        self._cross(self._socket_opened, link, sock)

    def _on_socket_close(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        self._cross(self._socket_closed, link)

    def _on_socket_register_write(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        self._cross(self._want_write, link, True)

    def _on_socket_unregister_write(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        self._cross(self._want_write, link, False)

    # -- on the loop ----------------------------------------------------------------------------

    def _current(self, link: _Link) -> bool:
        return link is self._link and not link.closed.done()

    def _socket_opened(self, link: _Link, sock: Any) -> None:
        if not self._current(link):
            # The attempt was abandoned while its connect thread ran: close before CONNECT is sent,
            # so the broker never registers (and later fires) this connection's will.
            with contextlib.suppress(OSError):
                sock.close()
            return
        assert self._loop is not None
        link.fd = sock.fileno()
        self._loop.add_reader(link.fd, self._readable, link)
        self._schedule_misc(link)

    def _want_write(self, link: _Link, want: bool) -> None:
        if not self._current(link) or link.fd is None or link.writing == want:
            return
        assert self._loop is not None
        link.writing = want
        if want:
            self._loop.add_writer(link.fd, self._writable, link)
        else:
            self._loop.remove_writer(link.fd)

    def _readable(self, link: _Link) -> None:
        try:
            link.client.loop_read()
        except Exception as exc:  # paho re-raises errors from callbacks; a reader must not spin on them
            log.exception("MQTT read failed")
            self._lose(link, f"read failed: {exc}")

    def _writable(self, link: _Link) -> None:
        try:
            link.client.loop_write()
        except Exception as exc:  # as in _readable
            log.exception("MQTT write failed")
            self._lose(link, f"write failed: {exc}")

    def _schedule_misc(self, link: _Link) -> None:
        assert self._loop is not None
        interval = min(1.0, self._settings.keepalive_s / 4)
        link.misc = self._loop.call_later(interval, self._misc, link)

    def _misc(self, link: _Link) -> None:
        """Keepalive: paho sends PINGREQ when due and drops a link whose PINGRESP never came."""
        link.misc = None
        if not self._current(link) or link.fd is None:
            return
        try:
            link.client.loop_misc()
        except Exception as exc:  # as in _readable
            log.exception("MQTT keepalive failed")
            self._lose(link, f"keepalive failed: {exc}")
            return
        if self._current(link) and link.fd is not None:
            self._schedule_misc(link)

    def _connack(self, link: _Link, reason: ReasonCode) -> None:
        if not self._current(link) or link.connack.done():
            return
        if reason.is_failure:
            link.connack.set_result(f"broker refused the connection: {reason}")
            return
        self._up(link)
        self._announce(link, since=time.time())
        link.connack.set_result(None)
        self._notify(True)  # after the announcement, so the app's callback sees a complete link

    def _disconnected(self, link: _Link, reason: ReasonCode, from_broker: bool) -> None:
        if link is not self._link:
            return
        if from_broker:
            link.reason = f"broker sent DISCONNECT: {reason}"
            if reason.value == 0x8E:  # Session taken over: another box uses our client id
                link.reason += f" (is another gateway also called {self._gateway.id!r}?)"
        elif not link.reason:
            # paho reports a dropped socket as "Unspecified error" (its MQTT_ERR_CONN_LOST).
            link.reason = "connection lost" if reason.value == 0x80 else str(reason)
        self._socket_closed(link)

    def _acked(self, link: _Link, mid: int, reason: ReasonCode) -> None:
        if reason.is_failure:
            self.stats.publish_failures += 1
            log.warning("broker rejected message %d: %s", mid, reason)
        ack = link.acks.pop(mid, None)
        if ack is not None and not ack.done():
            ack.set_result(None)

    def _socket_closed(self, link: _Link) -> None:
        if link is not self._link:
            return
        self._unwatch(link)
        self._down(link)
        if not link.connack.done():
            link.connack.set_result(link.reason or "connection closed before CONNACK")
        if not link.closed.done():
            link.closed.set_result(None)

    def _lose(self, link: _Link, reason: str) -> None:
        """Drop a link after an unexpected error: close its socket, as if the broker had gone."""
        if not link.reason:
            link.reason = reason
        sock = link.client.socket()
        self._socket_closed(link)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _unwatch(self, link: _Link) -> None:
        if link.fd is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(link.fd)
        self._loop.remove_writer(link.fd)
        link.fd = None
        link.writing = False
        if link.misc is not None:
            link.misc.cancel()
            link.misc = None


def _json_properties(packet_type: int) -> Properties:
    """MQTT 5 properties saying "this payload is UTF-8 JSON", for messages and the will."""
    props = Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves __init__ unannotated
    props.ContentType = "application/json"
    props.PayloadFormatIndicator = 1
    return props


def _describe(exc: BaseException) -> str:
    """A short reason for a failed connect (the exception's words, never settings)."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if isinstance(exc, OSError) else text
