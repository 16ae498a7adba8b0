"""One connection to the broker: a fresh paho client whose socket the asyncio loop drives.

The loop reads when the socket is readable, writes while paho has output queued and calls
``loop_misc`` for keepalive, the way aiomqtt does it, so paho's callbacks run on the loop. Only the
blocking TCP connect runs in a worker thread; the socket callbacks paho makes there cross to the loop
with ``call_soon_threadsafe`` (:meth:`Link._cross`). The owner (:class:`~gateway.control.client.
ControlPlane`) hears about the link through four callbacks, all on the loop: up (right after an
accepting CONNACK, before anything else is sent), down, message and acknowledgement.

A link is used once: each connection attempt gets a new one, so nothing paho queued for a lost
connection is ever replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.config import MqttSettings

log = logging.getLogger("gateway.control")

CONNECT_TIMEOUT_S = 5.0
"""Longest wait for the TCP connection, and then for the broker's CONNACK."""
GOODBYE_TIMEOUT_S = 1.0
"""On shutdown, longest wait for the broker to acknowledge the farewell message."""
DISCONNECT_TIMEOUT_S = 0.5
"""On shutdown, longest wait for the DISCONNECT to be written before the socket is closed anyway."""


class ConnectFailed(Exception):
    """One attempt failed before the broker accepted us; the message says why (never a secret)."""


@dataclass(frozen=True)
class Will:
    """The last will: published by the broker ``delay_s`` after the link ends without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    delay_s: int
    """MQTT 5 Will Delay Interval; the session is kept as long, so a reconnect within it resumes the
    session and the broker drops the will unsent (MQTT 5, 3.1.3.2.2)."""


@dataclass(frozen=True)
class Inbound:
    """One message the broker sent us."""

    topic: str
    payload: bytes
    retained: bool
    response_topic: str | None
    correlation: bytes | None


class Link:
    """One connection attempt: a fresh paho client, its socket on the loop, and what it has told us."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: MqttSettings,
        client_id: str,
        will: Will,
        *,
        on_up: Callable[[Link], None],
        on_down: Callable[[Link], None],
        on_message: Callable[[Link, Inbound], None],
        on_ack: Callable[[Link, int, ReasonCode], None],
    ) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._settings = settings
        self._will = will
        self._on_up = on_up
        self._on_down = on_down
        self._on_message = on_message
        self._on_ack = on_ack
        self.client_id = client_id
        self.fd: int | None = None
        self._writing = False
        self._misc: asyncio.TimerHandle | None = None
        self.connack: asyncio.Future[str | None] = loop.create_future()
        """None when the broker accepted us, else why not."""
        self.closed: asyncio.Future[None] = loop.create_future()
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._released = False
        self.up = False
        """True from the accepting CONNACK until the link ends."""
        self.reason = ""
        """Why the link ended, once it has."""
        self.client = self._new_client(client_id)

    # -- the owner's side ----------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Not yet closed or released: its events still matter."""
        return not self._released and not self.closed.done()

    @property
    def backlog(self) -> int:
        """Messages paho holds for this link: packets not yet written, plus QoS 1 messages not yet
        acknowledged. paho has no public count of either, so this reads its private ``_out_packet``
        and ``_out_messages`` (paho-mqtt 2.x, ``client.py``), 0 if a later paho renames them."""
        client = self.client
        return len(getattr(client, "_out_packet", ())) + len(getattr(client, "_out_messages", {}))

    def publish(self, topic: str, payload: bytes, qos: int, *, retain: bool,
                properties: Properties) -> int | None:
        """Hand one message to paho; its message id, or None (logged) if paho refused it."""
        try:
            info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        except (ValueError, OSError) as exc:  # a topic with wildcards, a payload too large
            log.warning("cannot publish to %s: %s", topic, exc)
            return None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.debug("cannot publish to %s: %s", topic, mqtt.error_string(info.rc))
            return None
        return info.mid

    def subscribe(self, topic: str, options: SubscribeOptions) -> None:
        """Subscribe (the broker's SUBACK is not awaited: a refusal shows as silence)."""
        result, _ = self.client.subscribe(topic, options=options)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.warning("cannot subscribe to %s: %s", topic, mqtt.error_string(result))

    async def open(self) -> None:
        """TCP-connect in a worker thread, then wait for the CONNACK; :class:`ConnectFailed` if not."""
        s = self._settings
        session_s = self._will.delay_s
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if session_s:
            props.SessionExpiryInterval = session_s
        try:
            # connect() resolves the name and opens TCP (bounded by connect_timeout), then only
            # queues CONNECT: the socket callbacks hand the writing to the loop. With a will delay
            # the session must outlive the connection by as much, and a reconnect resumes it
            # (clean start 0): a broker ends a session it is told to start clean, and publishes its
            # will right then (MQTT 5, 3.1.2.5: "... or the Session ends, whichever happens first").
            await self._loop.run_in_executor(
                None,
                lambda: self.client.connect(s.host, s.port, s.keepalive_s, clean_start=not session_s,
                                            properties=props),
            )
        except (OSError, ValueError, OverflowError) as exc:  # refused, unreachable, DNS, bad host/port
            raise ConnectFailed(_describe(exc)) from exc
        done, _ = await asyncio.wait({self.connack}, timeout=CONNECT_TIMEOUT_S)
        if not done:
            raise ConnectFailed(f"no CONNACK within {CONNECT_TIMEOUT_S:g} s")
        refused = self.connack.result()
        if refused is not None:
            raise ConnectFailed(refused)

    async def goodbye(self, farewell: Callable[[], int | None] | None = None) -> bool:
        """On shutdown: call ``farewell`` to publish a last message (it returns the message id, or
        None) and wait for its acknowledgement, then send DISCONNECT, each wait bounded. True if the
        link was up."""
        if self.fd is None or self.closed.done():
            return False
        if not self.connack.done():  # cancelled mid-handshake: a DISCONNECT keeps the will unsent
            await asyncio.wait({self.connack}, timeout=GOODBYE_TIMEOUT_S)
        if self.up and farewell is not None:
            mid = farewell()
            if mid is not None:
                ack = self._acks.setdefault(mid, self._loop.create_future())
                await asyncio.wait({ack, self.closed}, timeout=GOODBYE_TIMEOUT_S,
                                   return_when=asyncio.FIRST_COMPLETED)
        if self.closed.done():
            return False
        # A normal DISCONNECT (reason 0) tells the broker to discard the last will (MQTT 5, 3.14.4),
        # and a Session Expiry Interval of 0 in it ends the session now (3.14.2.2.2).
        was_up = self.up
        props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
        if self._will.delay_s:
            props.SessionExpiryInterval = 0
        if self.client.disconnect(properties=props) == MQTTErrorCode.MQTT_ERR_SUCCESS:
            await asyncio.wait({self.closed}, timeout=DISCONNECT_TIMEOUT_S)
        return was_up

    def release(self) -> None:
        """Forget the link for good: stop watching its socket, close it, report it down."""
        self._unwatch()
        # The socket may still be open (cancelled, or timed out waiting for the broker).
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self._down()
        self._released = True
        for ack in self._acks.values():
            ack.cancel()
        if not self.closed.done():
            self.closed.set_result(None)

    # -- paho client ---------------------------------------------------------------------------

    def _new_client(self, client_id: str) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.enable_logger(logging.getLogger("gateway.control.paho"))
        client.connect_timeout = CONNECT_TIMEOUT_S
        if self._settings.username:
            client.username_pw_set(self._settings.username, self._settings.password or None)
        if self._settings.tls:
            s = self._settings
            # The broker's certificate is checked against cafile (or the system's CAs) and its
            # name; a client certificate, when given, is this box's login (use_identity_as_username).
            client.tls_set(ca_certs=s.cafile or None, certfile=s.certfile or None,
                           keyfile=s.keyfile or None)
        will = self._will
        props = json_properties(PacketTypes.WILLMESSAGE)
        if will.delay_s:
            props.WillDelayInterval = will.delay_s
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain, properties=props)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message_cb
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        return client

    # -- paho callbacks (may come from the connect thread: everything goes through _cross) --------

    def _cross(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop: now if we are on it, else via ``call_soon_threadsafe``."""
        if threading.get_ident() == self._loop_thread:
            fn(*args)
            return
        # A loop closed during shutdown raises RuntimeError: the link is gone anyway.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    props: Properties | None) -> None:
        self._cross(self._connacked, reason)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       props: Properties | None) -> None:
        self._cross(self._disconnected, reason, bool(flags.is_disconnect_packet_from_server))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    props: Properties) -> None:
        self._cross(self._acked, mid, reason)

    def _on_message_cb(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        inbound = Inbound(message.topic, bytes(message.payload), bool(message.retain),
                          response_topic if isinstance(response_topic, str) else None,
                          bytes(correlation) if isinstance(correlation, (bytes, bytearray)) else None)
        self._cross(self._message, inbound)

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._cross(self._socket_opened, sock)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._cross(self._socket_closed)

    def _on_socket_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._cross(self._want_write, True)

    def _on_socket_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._cross(self._want_write, False)

    # -- on the loop ----------------------------------------------------------------------------

    def _socket_opened(self, sock: Any) -> None:
        if not self.active:
            # The attempt was abandoned while its connect thread ran: close before CONNECT is sent,
            # so the broker never registers (and later fires) this connection's will.
            with contextlib.suppress(OSError):
                sock.close()
            return
        # Nagle's algorithm held small control messages back by about 20 ms (measured) while an
        # earlier segment waited for its ACK; paho never sets TCP_NODELAY itself. A TLS socket
        # passes setsockopt through; anything else (a proxy, websockets) keeps its own setting.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fd = sock.fileno()
        self._loop.add_reader(self.fd, self._readable)
        self._schedule_misc()

    def _want_write(self, want: bool) -> None:
        if not self.active or self.fd is None or self._writing == want:
            return
        self._writing = want
        if want:
            self._loop.add_writer(self.fd, self._writable)
        else:
            self._loop.remove_writer(self.fd)

    def _readable(self) -> None:
        try:
            self.client.loop_read()
            # TLS: what the SSL layer already decrypted doesn't make the socket readable again,
            # and paho reads a bounded number of packets per call; read until it is drained, or
            # a message (a command) would wait for the next unrelated packet.
            sock = self.client.socket()
            pending = getattr(sock, "pending", None)
            while pending is not None and pending() > 0 and self.client.socket() is sock:
                self.client.loop_read()
        except Exception as exc:  # paho re-raises errors from callbacks; a reader must not spin on them
            log.exception("MQTT read failed")
            self._lose(f"read failed: {exc}")

    def _writable(self) -> None:
        try:
            self.client.loop_write()
        except Exception as exc:  # as in _readable
            log.exception("MQTT write failed")
            self._lose(f"write failed: {exc}")

    def _schedule_misc(self) -> None:
        interval = min(1.0, self._settings.keepalive_s / 4)
        self._misc = self._loop.call_later(interval, self._run_misc)

    def _run_misc(self) -> None:
        """Keepalive: paho sends PINGREQ when due and drops a link whose PINGRESP never came."""
        self._misc = None
        if not self.active or self.fd is None:
            return
        try:
            self.client.loop_misc()
        except Exception as exc:  # as in _readable
            log.exception("MQTT keepalive failed")
            self._lose(f"keepalive failed: {exc}")
            return
        if self.active and self.fd is not None:
            self._schedule_misc()

    def _connacked(self, reason: ReasonCode) -> None:
        if not self.active or self.connack.done():
            return
        if reason.is_failure:
            self.connack.set_result(f"broker refused the connection: {reason}")
            return
        self.up = True
        try:
            self._on_up(self)
        finally:
            self.connack.set_result(None)

    def _disconnected(self, reason: ReasonCode, from_broker: bool) -> None:
        if self._released:
            return
        if from_broker:
            self.reason = f"broker sent DISCONNECT: {reason}"
            if reason.value == 0x8E:  # Session taken over: another box uses our client id
                self.reason += f" (does another gateway also use the client id {self.client_id!r}?)"
        elif not self.reason:
            # paho reports a dropped socket as "Unspecified error" (its MQTT_ERR_CONN_LOST).
            self.reason = "connection lost" if reason.value == 0x80 else str(reason)
        self._socket_closed()

    def _acked(self, mid: int, reason: ReasonCode) -> None:
        if self._released:
            return
        self._on_ack(self, mid, reason)
        ack = self._acks.pop(mid, None)
        if ack is not None and not ack.done():
            ack.set_result(None)

    def _message(self, inbound: Inbound) -> None:
        if self.active:
            self._on_message(self, inbound)

    def _socket_closed(self) -> None:
        if self._released:
            return
        self._unwatch()
        self._down()
        if not self.connack.done():
            self.connack.set_result(self.reason or "connection closed before CONNACK")
        if not self.closed.done():
            self.closed.set_result(None)

    def _down(self) -> None:
        if self.up:
            self.up = False
            self._on_down(self)

    def _lose(self, reason: str) -> None:
        """Drop the link after an unexpected error: close its socket, as if the broker had gone."""
        if not self.reason:
            self.reason = reason
        sock = self.client.socket()
        self._socket_closed()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _unwatch(self) -> None:
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        if self.fd is None:
            return
        self._loop.remove_reader(self.fd)
        self._loop.remove_writer(self.fd)
        self.fd = None
        self._writing = False


def json_properties(packet_type: int) -> Properties:
    """MQTT 5 properties saying "this payload is UTF-8 JSON", for messages and the will."""
    props = Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves __init__ unannotated
    props.ContentType = "application/json"
    props.PayloadFormatIndicator = 1
    return props


def _describe(exc: BaseException) -> str:
    """A short reason for a failed connect (the exception's words, never settings)."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if isinstance(exc, OSError) else text
