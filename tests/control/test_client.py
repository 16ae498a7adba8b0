"""The control plane against a real mosquitto: presence, port states, last will, broker faults.

Commands, alerts and telemetry have their own files (test_commands_mqtt.py, test_alerts_telemetry.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

import gateway
from gateway.config import GatewaySettings, MqttSettings
from gateway.control import client as control
from gateway.control.client import ControlPlane
from gateway.control.topics import Headset, PortInfo, PortLive, Topics, parse_port_state, parse_presence
from gateway.sim.broker import Mosquitto, free_tcp_port
from tests.rigs import mqtt as rig
from tests.rigs.mqtt import Collector, Received

mosquitto = rig.mosquitto  # the rig's fixture (conftest may import the same one)

GW = GatewaySettings(id="gw-a", site="test")
PORTS = (PortInfo("radio", "ptt", ("ops",), "ops"), PortInfo("desk", "open", ("ops", "fire"), "fire", 5))
TOPICS = Topics.of(MqttSettings(), GW)


def _settings(port: int, host: str = "127.0.0.1", **kw: object) -> MqttSettings:
    return MqttSettings(host=host, port=port, keepalive_s=5, reconnect_min_s=0.1, reconnect_max_s=0.5,
                        **kw)  # type: ignore[arg-type]


def _presence(state: str, reason: str | None = None, gw: str = "gw-a") -> Callable[[Received], bool]:
    def match(m: Received) -> bool:
        if not m.topic.endswith(f"/gateways/{gw}/presence"):
            return False
        doc = parse_presence(m.payload)
        return bool(doc["state"] == state and (reason is None or doc.get("reason") == reason))
    return match


def _port(name: str, **want: object) -> Callable[[Received], bool]:
    def match(m: Received) -> bool:
        if m.topic != TOPICS.port(name):
            return False
        doc = parse_port_state(m.payload)
        return all(doc[k] == v for k, v in want.items())
    return match


async def _until(cond: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> float:
    """Poll ``cond`` until true; the seconds it took. Fails the test after ``timeout_s``."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def _running(cp: ControlPlane) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(cp.run(), name="mqtt")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def links() -> list[bool]:
    return []


def _plane(port: int, links: list[bool] | None = None, **kw: object) -> ControlPlane:
    cp = ControlPlane(_settings(port, **kw), GW, PORTS, rng=random.Random(1))
    if links is not None:
        cp.on_link = links.append
    return cp


# -- presence and port states -------------------------------------------------------------------


async def test_presence_online_is_retained_for_late_subscribers(
    mosquitto: Mosquitto, links: list[bool]
) -> None:
    cp = _plane(mosquitto.port, links)
    before = time.time()
    async with _running(cp):
        await _until(lambda: cp.connected, what="link up")
        with Collector(mosquitto.port, TOPICS.all_presence) as late:
            msg = await late.expect(_presence("online"), what="retained presence")
    assert msg.retain, "a late subscriber gets presence because it is retained"
    assert msg.topic == "gateway/v1/test/gateways/gw-a/presence"
    doc = msg.json()
    assert doc == {"state": "online", "gateway": "gw-a", "site": "test",
                   "version": gateway.__version__, "since": doc["since"]}
    assert before <= doc["since"] <= time.time()
    assert links == [True, False]
    assert cp.stats.connects == 1 and cp.stats.connect_failures == 0


async def test_every_port_state_is_retained(mosquitto: Mosquitto) -> None:
    cp = _plane(mosquitto.port)
    async with _running(cp):
        await _until(lambda: cp.connected, what="link up")
        with Collector(mosquitto.port, f"{TOPICS.root}/gateways/gw-a/ports/+") as late:
            radio = await late.expect(_port("radio"), what="radio state")
            desk = await late.expect(_port("desk"), what="desk state")
    assert radio.retain and desk.retain and radio.qos == desk.qos == 1
    assert radio.json() == {"port": "radio", "gateway": "gw-a", "talk_mode": "ptt", "groups": ["ops"],
                            "talk_group": "ops", "priority": 0, "talking": False, "receiving": False,
                            "emergency": False, "volume_db": 0.0, "headset": None}
    assert desk.json()["groups"] == ["ops", "fire"] and desk.json()["talk_mode"] == "open"
    assert desk.json()["priority"] == 5 and desk.json()["talk_group"] == "fire"


async def test_presence_comes_before_port_states(mosquitto: Mosquitto) -> None:
    with Collector(mosquitto.port, f"{TOPICS.root}/#") as watch:
        cp = _plane(mosquitto.port)
        async with _running(cp):
            await watch.expect(_port("desk"), what="last port state")
        topics_seen = [m.topic for m in watch.messages]
    assert topics_seen[:3] == [TOPICS.presence, TOPICS.port("radio"), TOPICS.port("desk")]


async def test_set_port_state_publishes_changes_only(mosquitto: Mosquitto) -> None:
    with Collector(mosquitto.port, f"{TOPICS.root}/#") as watch:
        cp = _plane(mosquitto.port)
        async with _running(cp):
            await watch.expect(_port("desk"), what="initial states")  # the last one announced
            start = watch.mark()
            sent = cp.stats.publishes
            cp.set_port_state("radio", talking=True)
            cp.set_port_state("radio", talking=True)  # no change
            cp.set_port_state("radio")  # nothing given: no change
            cp.set_port_state("radio", receiving=False)  # already false
            cp.set_port_state("radio", receiving=True)
            cp.set_port_state("desk", talking=False, receiving=False)  # unchanged
            cp.set_port_state("nope", talking=True)  # not ours: counted, ignored
            await watch.expect(_port("radio", talking=True, receiving=True), what="second change")
            await watch.flush_async()
            assert cp.stats.publishes - sent == 2
            assert cp.ports.unknown == 1
            live = cp.port_state("radio")
            assert (live.talking, live.receiving) == (True, True)
        # (port states only: a telemetry message may come in between)
        changes = [(m.topic, m.json()["talking"], m.json()["receiving"])
                   for m in watch.messages[start:] if "/ports/" in m.topic]
    assert changes == [(TOPICS.port("radio"), True, False), (TOPICS.port("radio"), True, True)]


async def test_live_fields_of_a_port(mosquitto: Mosquitto) -> None:
    with Collector(mosquitto.port, f"{TOPICS.root}/gateways/gw-a/ports/+") as watch:
        cp = _plane(mosquitto.port)
        async with _running(cp):
            await watch.expect(_port("desk"), what="initial states")
            cp.set_port_state("desk", talk_group="ops")  # switched group
            await watch.expect(_port("desk", talk_group="ops"), what="group switch")
            cp.set_port_state("desk", emergency=True, volume_db=-6.5)
            await watch.expect(_port("desk", emergency=True, volume_db=-6.5), what="emergency and volume")
            cp.set_headset("desk", Headset(battery_pct=80, link_quality=None))
            msg = await watch.expect(_port("desk", headset={"battery_pct": 80, "link_quality": None}))
            sent = cp.stats.publishes
            # Unpublishable values are counted and ignored, never raised to the voice path.
            cp.set_port_state("desk", volume_db=float("nan"))
            cp.set_port_state("desk", volume_db=40.0)
            cp.set_port_state("desk", talk_group="a/b")
            cp.set_headset("desk", Headset(battery_pct=101))
            assert cp.ports.bad_values == 4 and cp.stats.publishes == sent
            cp.set_headset("desk", None)
            await watch.expect(_port("desk", headset=None, talk_group="ops"), what="headset unknown again")
    doc = parse_port_state(msg.payload)
    assert doc["talk_group"] == "ops" and doc["groups"] == ["ops", "fire"] and doc["volume_db"] == -6.5
    assert cp.port_state("desk") == PortLive("ops", emergency=True, volume_db=-6.5)


async def test_on_link_errors_are_logged_not_fatal(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    cp = _plane(mosquitto.port)

    def broken(up: bool) -> None:
        raise RuntimeError("LED on fire")

    cp.on_link = broken
    with Collector(mosquitto.port, TOPICS.all_presence) as watch:
        async with _running(cp):
            await watch.expect(_presence("online"))
            cp.set_port_state("radio", talking=True)
            assert cp.connected
    assert "on_link(True) failed" in caplog.text


# -- leaving: clean shutdown and the last will --------------------------------------------------


async def test_clean_shutdown_publishes_shutdown_and_no_will(
    mosquitto: Mosquitto, links: list[bool]
) -> None:
    with Collector(mosquitto.port, TOPICS.all_presence) as watch:
        cp = _plane(mosquitto.port, links)
        task = asyncio.create_task(cp.run())
        await watch.expect(_presence("online"))
        task.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 1.0
        await watch.expect(_presence("offline", "shutdown"), what="shutdown notice")
        # The broker saw a DISCONNECT (no will), and anything it sent us before that is now recorded.
        await _until(lambda: "Client gw-test-gw-a disconnected." in mosquitto.log_path.read_text(),
                     what="broker logging the clean disconnect")
        await watch.flush_async()
        assert not [m for m in watch.messages if _presence("offline", "lost")(m)]
    assert links == [True, False]
    assert not cp.connected
    with Collector(mosquitto.port, TOPICS.all_presence) as late:
        assert (await late.expect(_presence("offline", "shutdown"))).retain


_CHILD = """
import asyncio, sys
from gateway.config import GatewaySettings, MqttSettings
from gateway.control.client import ControlPlane
from gateway.control.topics import PortInfo

port, gid, keepalive, will_delay = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
settings = MqttSettings(host="127.0.0.1", port=port, keepalive_s=keepalive, reconnect_min_s=0.1,
                        reconnect_max_s=0.5)
cp = ControlPlane(settings, GatewaySettings(id=gid, site="test"), [PortInfo("radio", "ptt", ("ops",), "ops")],
                  will_delay_s=will_delay)
asyncio.run(cp.run())
"""


@contextlib.contextmanager
def _gateway_process(
    port: int, gateway_id: str, keepalive_s: int, will_delay_s: int
) -> Iterator[subprocess.Popen[bytes]]:
    """A gateway's control plane in a process of its own, to kill or freeze as a power cut would."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(port), gateway_id, str(keepalive_s), str(will_delay_s)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.wait(5)


async def test_last_will_when_the_gateway_dies_comes_after_the_will_delay(mosquitto: Mosquitto) -> None:
    with Collector(mosquitto.port, TOPICS.all_presence) as watch, \
            _gateway_process(mosquitto.port, "gw-dies", keepalive_s=5, will_delay_s=1) as proc:
        await watch.expect(_presence("online", gw="gw-dies"), timeout_s=10, what="child online")
        proc.kill()  # SIGKILL: no goodbye, the kernel just closes the socket
        killed = time.monotonic()
        will = await watch.expect(_presence("offline", "lost", gw="gw-dies"), what="last will")
    assert will.json() == {"state": "offline", "gateway": "gw-dies", "site": "test", "reason": "lost"}
    # mosquitto 2.0 looks at will delays about once a second: 1 s to about 2 s here.
    assert 1.0 <= will.at - killed < 3.0
    with Collector(mosquitto.port, TOPICS.all_presence) as late:
        assert (await late.expect(_presence("offline", "lost", gw="gw-dies"))).retain


async def test_last_will_when_the_gateway_hangs(mosquitto: Mosquitto) -> None:
    # A frozen box keeps its socket open: the broker declares it lost after 1.5 x keepalive, but
    # mosquitto 2.0 only looks every 5 s or so ("last_keepalive_check + 5 < now" in
    # https://github.com/eclipse/mosquitto/blob/v2.0.11/src/keepalive.c): 1.5 s to about 7.5 s here.
    with Collector(mosquitto.port, TOPICS.all_presence) as watch, \
            _gateway_process(mosquitto.port, "gw-hangs", keepalive_s=1, will_delay_s=0) as proc:
        await watch.expect(_presence("online", gw="gw-hangs"), timeout_s=10, what="child online")
        os.kill(proc.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        will = await watch.expect(_presence("offline", "lost", gw="gw-hangs"), timeout_s=10,
                                  what="last will after keepalive")
    assert 1.0 <= will.at - frozen < 8.5


async def test_a_quick_restart_within_the_will_delay_never_shows_offline(mosquitto: Mosquitto) -> None:
    # The box dies and comes back (systemd restarts it) before the will delay runs out: the new
    # connection resumes the session, so the broker drops the old will instead of publishing it.
    gw = GatewaySettings(id="gw-flap", site="test")
    with Collector(mosquitto.port, TOPICS.all_presence) as watch:
        with _gateway_process(mosquitto.port, "gw-flap", keepalive_s=5, will_delay_s=2) as proc:
            await watch.expect(_presence("online", gw="gw-flap"), timeout_s=10, what="child online")
            proc.kill()
        cp = ControlPlane(_settings(mosquitto.port), gw, PORTS, will_delay_s=2)
        async with _running(cp):
            await watch.expect(_presence("online", gw="gw-flap"), what="back online")
            await asyncio.sleep(3.0)  # past the will delay, and mosquitto's once-a-second look
            await watch.flush_async()
    assert not [m for m in watch.messages if _presence("offline", "lost", gw="gw-flap")(m)]


async def test_connect_carries_the_will_delay_and_a_session_as_long() -> None:
    # Read the CONNECT packet itself: Will Delay Interval (0x18) in the will properties, Session Expiry
    # Interval (0x11) in the connect properties, clean start 0 (MQTT 5, 3.1.2.4-3.1.3.2).
    loop = asyncio.get_running_loop()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        cp = ControlPlane(_settings(server.getsockname()[1]), GW, PORTS, will_delay_s=7)
        async with _running(cp):
            conn, _ = await asyncio.wait_for(loop.sock_accept(server), 5)
            with conn:
                packet = b""
                while not _complete(packet):
                    packet += await asyncio.wait_for(loop.sock_recv(conn, 4096), 5)
    assert packet[0] == 0x10
    _, at = _varint(packet, 1)
    assert packet[at:at + 7] == b"\x00\x04MQTT\x05"
    flags = packet[at + 7]
    assert flags & 0x04 and flags & 0x20, "will flag, will retain"
    assert (flags >> 3) & 3 == 1, "will QoS 1"
    assert not flags & 0x02, "clean start 0: a reconnect resumes the session"
    props_len, p = _varint(packet, at + 10)
    assert b"\x11\x00\x00\x00\x07" in packet[p:p + props_len], "session expiry 7 s"
    p += props_len
    p += 2 + int.from_bytes(packet[p:p + 2], "big")  # client id
    will_len, w = _varint(packet, p)
    will_props = packet[w:w + will_len]
    assert b"\x18\x00\x00\x00\x07" in will_props, "will delay 7 s"
    assert b"\x03\x00\x10application/json" in will_props


def _complete(packet: bytes) -> bool:
    """True once ``packet`` holds a whole MQTT packet (its fixed header says how long)."""
    try:
        length, at = _varint(packet, 1)
    except IndexError:
        return False
    return len(packet) >= at + length


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """An MQTT variable byte integer at ``at``: (value, index after it)."""
    value, shift = 0, 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7


async def test_tcp_nodelay_is_set(mosquitto: Mosquitto) -> None:
    cp = _plane(mosquitto.port)
    async with _running(cp):
        await _until(lambda: cp.connected, what="link up")
        assert cp._link is not None
        sock = cp._link.client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


# -- broker faults ------------------------------------------------------------------------------


async def test_broker_killed_and_restarted(mosquitto: Mosquitto, links: list[bool]) -> None:
    cp = _plane(mosquitto.port, links)
    async with _running(cp) as task:
        await _until(lambda: cp.connected, what="link up")
        mosquitto.kill()
        await _until(lambda: not cp.connected, timeout_s=2, what="loss noticed")

        started = time.perf_counter()
        cp.set_port_state("radio", talking=True)  # broker down: remembered, never blocks or raises
        cp.set_port_state("desk", receiving=True)
        assert time.perf_counter() - started < 0.01
        await asyncio.sleep(0.3)  # a few failed attempts while it is down
        assert not task.done() and cp.stats.connect_failures >= 1

        mosquitto.restart()  # same port, no retained state: it all has to come from the gateway
        restarted = time.monotonic()
        with Collector(mosquitto.port, f"{TOPICS.root}/#") as watch:
            online = await watch.expect(_presence("online"), what="presence after restart")
            await watch.expect(_port("radio", talking=True, receiving=False), what="radio after restart")
            await watch.expect(_port("desk", talking=False, receiving=True), what="desk after restart")
        back_s = online.at - restarted
        print(f"presence back {back_s * 1000:.0f} ms after the broker restarted")
        assert back_s < 5.0
    assert links == [True, False, True, False]
    assert cp.stats.connects == 2 and cp.stats.disconnects == 2


async def test_broker_absent_at_start(links: list[bool]) -> None:
    port = free_tcp_port()
    cp = _plane(port, links)
    async with _running(cp) as task:
        await _until(lambda: cp.stats.connect_failures >= 3, what="three failed attempts")
        assert not task.done() and not cp.connected and links == []
        cp.set_port_state("radio", talking=True)
        with Mosquitto(port) as broker, Collector(broker.port, f"{TOPICS.root}/#") as watch:
            await watch.expect(_port("radio", talking=True), what="state once the broker appears")
            assert cp.connected
    assert links == [True, False]


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("127.0.0.1", None),  # nothing listens there: refused
        ("127.0.0.1", 0),  # paho refuses the port
        ("a..b", 1883),  # not a host name at all
        ("", 1883),  # empty
    ],
)
async def test_bad_addresses_are_counted_and_retried(host: str, port: int | None) -> None:
    cp = _plane(free_tcp_port() if port is None else port, host=host)
    async with _running(cp) as task:
        await _until(lambda: cp.stats.connect_failures >= 2, what="two failed attempts")
        assert not task.done()
    assert cp.stats.connects == 0


async def test_broker_refusal_is_counted_and_the_password_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    with Mosquitto(allow_anonymous=False) as broker:
        cp = _plane(broker.port, username="ops", password="s3cret-pw")
        async with _running(cp) as task:
            await _until(lambda: cp.stats.connect_failures >= 2, what="two refusals")
            assert not task.done() and not cp.connected
    assert "refused" in caplog.text
    assert "s3cret-pw" not in caplog.text
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1  # once per transition


async def test_shutdown_while_the_broker_never_answers_is_bounded() -> None:
    # A listener that accepts TCP but never sends CONNACK: the cancel must not hang on it, and the
    # gateway says DISCONNECT so a broker that did register it drops the will.
    loop = asyncio.get_running_loop()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        cp = _plane(server.getsockname()[1])
        task = asyncio.create_task(cp.run())
        conn, _ = await asyncio.wait_for(loop.sock_accept(server), 5)
        with conn:
            first = await asyncio.wait_for(loop.sock_recv(conn, 1), 5)
            assert first == b"\x10"  # CONNECT
            task.cancel()
            started = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await task
            took = time.monotonic() - started
            rest = b""
            while chunk := await asyncio.wait_for(loop.sock_recv(conn, 4096), 2):
                rest += chunk
    assert took < control.GOODBYE_TIMEOUT_S + control.DISCONNECT_TIMEOUT_S + 0.5
    # DISCONNECT, normal (no will), with Session Expiry Interval 0: the session ends with it.
    assert rest.endswith(b"\xe0\x07\x00\x05\x11\x00\x00\x00\x00")


async def test_shutdown_while_disconnected_is_immediate() -> None:
    cp = _plane(free_tcp_port())
    task = asyncio.create_task(cp.run())
    await _until(lambda: cp.stats.connect_failures >= 1, what="a failed attempt")
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 0.1


def test_set_port_state_before_run_never_raises() -> None:
    cp = _plane(1883)
    cp.set_port_state("radio", talking=True)
    cp.set_port_state("unknown", receiving=True)
    assert cp.port_state("radio") == PortLive("ops", talking=True)
    assert cp.ports.unknown == 1 and cp.stats.publishes == 0


async def test_run_twice_at_once_is_refused(mosquitto: Mosquitto) -> None:
    cp = _plane(mosquitto.port)
    async with _running(cp):
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            await cp.run()


def test_duplicate_or_unusable_port_names_are_refused() -> None:
    with pytest.raises(ValueError):
        ControlPlane(_settings(1883), GW, [PORTS[0], PORTS[0]])
    with pytest.raises(ValueError):
        ControlPlane(_settings(1883), GW, [PortInfo("a/b", "ptt", (), "")])


# -- voice announcements over the broker --------------------------------------------------------


async def test_voice_announcements_are_retained_and_relayed_to_other_gateways(
    mosquitto: Mosquitto,
) -> None:
    a = _plane(mosquitto.port)
    b = ControlPlane(_settings(mosquitto.port), GatewaySettings(id="gw-b", site="test"), PORTS)
    heard_a: list[tuple[str, bytes]] = []
    heard_b: list[tuple[str, bytes]] = []
    a.on_announcement = lambda g, d: heard_a.append((g, d))
    b.on_announcement = lambda g, d: heard_b.append((g, d))
    a.publish_announcement("ops", b"GWA\x01before-connect")  # kept, published once linked
    async with _running(a):
        await _until(lambda: a.connected, what="a linked")
        a.publish_announcement("ops", b"GWA\x01latest")
        await asyncio.sleep(0.3)  # let the loop write it before the (blocking) collector subscribes
        with Collector(mosquitto.port, TOPICS.announce("ops")) as watch:
            msg = await watch.expect(lambda m: m.payload == b"GWA\x01latest", what="retained")
        assert msg.retain and msg.topic == "gateway/v1/test/gateways/gw-a/announce/ops"
        async with _running(b):  # b comes later: it gets the retained one at once
            await _until(lambda: heard_b == [("ops", b"GWA\x01latest")], what="b hears a")
            b.publish_announcement("maint", b"GWA\x01from-b")
            await _until(lambda: ("maint", b"GWA\x01from-b") in heard_a, what="a hears b")
    assert all(g != "ops" for g, _ in heard_a)  # never its own
    assert b.stats.announcements_received == 1
