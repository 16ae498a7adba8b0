"""The MQTT test rig: a private mosquitto per test, and a subscriber that collects what it sees.

Import the ``mosquitto`` fixture into ``conftest.py`` (``from tests.rigs.mqtt import mosquitto``). It
yields a started :class:`~gateway.sim.broker.Mosquitto` on a free loopback port and stops it after the
test, whatever happened.

:class:`Collector` is a plain paho client on its own network thread (loop_start): it connects and
subscribes in its constructor (so nothing published afterwards is missed), records every message, and
lets a test wait for one matching a predicate. Each wait hands out a message at most once, so repeated
waits walk through matching messages in arrival order. ``wait_for`` blocks the calling thread; from a
coroutine whose loop runs the code under test, use ``wait_for_async``/``expect``, which poll instead.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway.sim.broker import Mosquitto

__all__ = ["Collector", "Received", "mosquitto"]


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A started private broker on a free 127.0.0.1 port, stopped (and its files removed) after."""
    with Mosquitto() as broker:
        yield broker


@dataclass(frozen=True)
class Received:
    """One message as the collector got it."""

    topic: str
    payload: bytes
    retain: bool
    qos: int
    at: float
    """``time.monotonic()`` when it arrived."""

    def json(self) -> Any:
        """The payload decoded as JSON."""
        return json.loads(self.payload)


Predicate = Callable[[Received], bool]


class Collector:
    """Subscribes to ``pattern`` on a broker and records everything it receives."""

    def __init__(
        self,
        port: int,
        pattern: str = "#",
        host: str = "127.0.0.1",
        *,
        timeout_s: float = 5.0,
    ) -> None:
        self.pattern = pattern
        self._marker_topic = f"rig/flush/{uuid.uuid4().hex}"
        self._cond = threading.Condition()
        self._messages: list[Received] = []
        self._taken: set[int] = set()
        self._markers: set[bytes] = set()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"collector-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 1)
        self._client.connect(host, port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.close()
            raise TimeoutError(f"collector could not subscribe to {pattern!r} on {host}:{port}")

    # -- paho thread --------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:  # also after a reconnect: subscriptions don't survive a clean start
            client.subscribe([(self.pattern, 1), (self._marker_topic, 1)])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            if msg.topic == self._marker_topic:
                self._markers.add(msg.payload)
            else:
                self._messages.append(
                    Received(msg.topic, msg.payload, bool(msg.retain), msg.qos, time.monotonic())
                )
            self._cond.notify_all()

    # -- what arrived -------------------------------------------------------------------------

    @property
    def messages(self) -> list[Received]:
        """Everything received so far, in arrival order."""
        with self._cond:
            return list(self._messages)

    def on(self, topic: str) -> list[Received]:
        """Everything received on ``topic``, in arrival order."""
        return [m for m in self.messages if m.topic == topic]

    def mark(self) -> int:
        """Hand out every message received so far, so later waits only see newer ones."""
        with self._cond:
            self._taken.update(range(len(self._messages)))
            return len(self._messages)

    def _take(self, predicate: Predicate) -> Received | None:
        for i, msg in enumerate(self._messages):
            if i not in self._taken and predicate(msg):
                self._taken.add(i)
                return msg
        return None

    # -- waiting ------------------------------------------------------------------------------

    def wait_for(self, predicate: Predicate, timeout_s: float = 5.0) -> Received | None:
        """Block until a not yet handed-out message matches; None after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                found = self._take(predicate)
                remaining = deadline - time.monotonic()
                if found is not None or remaining <= 0:
                    return found
                self._cond.wait(remaining)

    async def wait_for_async(self, predicate: Predicate, timeout_s: float = 5.0) -> Received | None:
        """As :meth:`wait_for`, polling every 10 ms so the loop keeps running."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._cond:
                found = self._take(predicate)
            if found is not None or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(0.01)

    async def expect(self, predicate: Predicate, timeout_s: float = 5.0, what: str = "") -> Received:
        """As :meth:`wait_for_async`, but fail the test (listing what did arrive) on timeout."""
        found = await self.wait_for_async(predicate, timeout_s)
        if found is None:
            seen = "\n".join(f"  {m.topic} {m.payload!r}" for m in self.messages) or "  (nothing)"
            raise AssertionError(f"no {what or 'matching message'} within {timeout_s} s; got:\n{seen}")
        return found

    def flush(self, timeout_s: float = 5.0) -> None:
        """Round-trip a marker through the broker: whatever it sent us before is recorded after."""
        token = uuid.uuid4().bytes
        self._client.publish(self._marker_topic, token, qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: token in self._markers, timeout_s):
                raise TimeoutError("flush marker did not come back")

    async def flush_async(self, timeout_s: float = 5.0) -> None:
        """As :meth:`flush`, polling so the loop keeps running."""
        token = uuid.uuid4().bytes
        self._client.publish(self._marker_topic, token, qos=1)
        deadline = time.monotonic() + timeout_s
        while True:
            with self._cond:
                if token in self._markers:
                    return
            if time.monotonic() >= deadline:
                raise TimeoutError("flush marker did not come back")
            await asyncio.sleep(0.01)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
