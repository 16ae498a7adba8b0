"""The generated broker, ACL and bridge configuration, against real mosquitto processes on loopback."""

from __future__ import annotations

import datetime
import grp
import ipaddress
import os
import shutil
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.control import brokerconf as bc
from gateway.sim.broker import Mosquitto, free_tcp_port

ROOT = "gateway/v1"
NOT_AUTHORIZED = 0x87
"""What mosquitto 2.0.11 answers (CONNACK and PUBACK) to an MQTT 5 client it refuses."""

PASSWORDS = {"gw-a": "pass-a", "gw-b": "pass-b", "alice": "pass-alice"}
PLANT = bc.SiteAccess("plant", gateways=(bc.GatewayAccess("gw-a", ("ops",)), bc.GatewayAccess("gw-b")),
                      consoles=("alice",))


# ---------------------------------------------------------------------------------------------
# A small MQTT 5 client that records what the broker answered


@dataclass(frozen=True)
class Tls:
    """Files for a TLS client: the CA to trust and, optionally, a client certificate."""

    cafile: Path
    certfile: Path | None = None
    keyfile: Path | None = None


class Peer:
    """A paho MQTT 5 client on its own thread: connect result, publish acks, received messages."""

    def __init__(self, port: int, user: str | None = None, password: str | None = None, *,
                 tls: Tls | None = None, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self.connack: ReasonCode | None = None
        self.messages: list[tuple[str, bytes, bool, float]] = []
        self._cond = threading.Condition()
        self._acks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._closed = False
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"test-{user}-{uuid.uuid4().hex[:6]}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.reconnect_delay_set(0.1, 0.2)  # closing waits out paho's pending retry delay
        if user is not None:
            self.client.username_pw_set(user, password)
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls.cafile),
                                certfile=str(tls.certfile) if tls.certfile else None,
                                keyfile=str(tls.keyfile) if tls.keyfile else None)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.error: Exception | None = None
        try:
            self.client.connect("127.0.0.1", port, keepalive=10)
        except OSError as exc:  # e.g. a TLS handshake the broker refused
            self.error = exc
            return
        self.client.loop_start()
        self._wait(lambda: self.connack is not None or self._closed, "CONNACK")

    @property
    def accepted(self) -> bool:
        """True when the broker accepted the connection."""
        return self.connack is not None and not self.connack.is_failure

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        sock = client.socket()
        if sock is not None:  # paho 2.2 leaves Nagle on: a 20 ms frame would wait for the last one's ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._cond:
            self.connack = reason
            self._cond.notify_all()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        with self._cond:
            self._acks[mid] = reason
            self._cond.notify_all()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: list[ReasonCode],
                      props: Any) -> None:
        with self._cond:
            self._subacks[mid] = reasons
            self._cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain), time.monotonic()))
            self._cond.notify_all()

    def _wait(self, ready: Any, what: str, timeout_s: float | None = None) -> None:
        with self._cond:
            if not self._cond.wait_for(ready, timeout_s or self.timeout_s):
                raise TimeoutError(f"no {what} within {timeout_s or self.timeout_s} s")

    def publish(self, topic: str, payload: bytes = b"x", qos: int = 1,
                retain: bool = False) -> ReasonCode | None:
        """Publish; for QoS 1 the broker's PUBACK reason code, for QoS 0 None."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return None
        self._wait(lambda: info.mid in self._acks, f"PUBACK for {topic}")
        return self._acks[info.mid]

    def subscribe(self, topic: str, qos: int = 1) -> list[ReasonCode]:
        """Subscribe and wait for the SUBACK."""
        _, mid = self.client.subscribe(topic, qos)
        self._wait(lambda: mid in self._subacks, f"SUBACK for {topic}")
        return self._subacks[mid]

    def wait_for(self, topic: str, payload: bytes | None = None,
                 timeout_s: float | None = None) -> tuple[str, bytes, bool, float]:
        """The first message received on ``topic`` (with ``payload`` if given)."""
        def find() -> tuple[str, bytes, bool, float] | None:
            return next((m for m in self.messages if m[0] == topic and payload in (None, m[1])), None)
        self._wait(lambda: find() is not None, f"message on {topic}", timeout_s)
        found = find()
        assert found is not None
        return found

    def on(self, topic: str) -> list[bytes]:
        """Payloads received on ``topic`` so far."""
        with self._cond:
            return [m[1] for m in self.messages if m[0] == topic]

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    """Clients made by the test, closed after it whatever happened."""
    made: list[Peer] = []
    try:
        yield made
    finally:
        for peer in made:
            peer.close()


def _broker(directory: Path, conf: bc.BrokerConf, port: int, extra: str = "") -> Mosquitto:
    directory.mkdir(parents=True, exist_ok=True)
    return Mosquitto(port, directory=directory, config_text=bc.render_broker_conf(conf) + extra)


def _site_files(directory: Path, access: bc.SiteAccess, passwords: dict[str, str],
                *listeners: bc.Listener) -> bc.BrokerConf:
    directory.mkdir(parents=True, exist_ok=True)
    conf = bc.BrokerConf(listeners=listeners, password_file=str(directory / "passwd"),
                         acl_file=str(directory / "acl"), title=f"site {access.site}")
    bc.write_text_atomic(conf.acl_file, bc.render_site_acl(access))
    bc.set_passwords(conf.password_file, passwords)
    return conf


# ---------------------------------------------------------------------------------------------
# Pure: rendering, hashing, file helpers


def _unexplained(text: str) -> list[str]:
    """Directives with no comment above them (a comment covers the directives right under it)."""
    bad, explained = [], False
    for line in text.splitlines():
        if not line.strip():
            explained = False
        elif line.startswith("#"):
            explained = True
        elif not explained:
            bad.append(line)
    return bad


def test_every_directive_is_explained_by_a_comment() -> None:
    bridge = bc.Bridge("plant", (("10.0.0.1", 8883), ("10.0.0.2", 8883)), password="pw", tls=True,
                       certfile="/etc/gw/c.pem", keyfile="/etc/gw/c.key")
    tls = bc.Listener("10.1.2.3", 8883, "/ca.pem", "/s.pem", "/s.key", True, True)
    conf = bc.BrokerConf(listeners=(bc.Listener(), tls), persistence_dir="/var/lib/m")
    texts = [bc.render_broker_conf(conf), bc.render_site_acl(PLANT), bc.render_bridge(bridge),
             bc.render_central_acl(consoles=("hq",))]
    for text in texts:
        assert any(not line.startswith("#") for line in text.splitlines() if line)
        assert _unexplained(text) == []


def test_rendered_rules() -> None:
    acl = bc.render_site_acl(PLANT).splitlines()
    assert "pattern write gateway/v1/plant/gateways/%u/#" in acl
    assert "pattern write gateway/v1/plant/groups/+/voice/%u" in acl
    assert "pattern write gateway/v1/plant/alerts/%u" in acl
    assert acl[acl.index("user gw-a") + 2] == "topic write gateway/v1/plant/groups/ops/cmd/#"
    assert "user gw-b" not in acl  # no extra rights, no section
    bridge = bc.render_bridge(bc.Bridge("plant", (("a", 1883), ("b", 1884)))).splitlines()
    assert "address a:1883 b:1884" in bridge
    assert "topic gateway/v1/plant/# out 1" in bridge
    assert "topic gateway/v1/+/groups/+/voice/+ in 0" in bridge
    assert "topic gateway/v1/+/alerts/+ in 1" in bridge
    assert "remote_username plant" in bridge
    assert "notification_topic gateway/v1/plant/bridges/central/state" in bridge
    conf = bc.render_broker_conf(bc.BrokerConf()).splitlines()
    assert "listener 1883 127.0.0.1" in conf and "allow_anonymous false" in conf
    assert "persistence false" in conf


EXAMPLE = Path(__file__).parents[2] / "systemd" / "mosquitto-gateway.conf.example"


def render_example() -> str:
    """The text of ``systemd/mosquitto-gateway.conf.example``: a site broker on a LAN, bridged over TLS."""
    pki = "/etc/mosquitto/gateway"
    conf = bc.BrokerConf(listeners=(
        bc.Listener(),
        bc.Listener("192.168.1.10", 8883, f"{pki}/ca.pem", f"{pki}/server.pem", f"{pki}/server.key",
                    require_certificate=True, use_identity_as_username=True),
    ), title="site plant")
    bridge = bc.Bridge("plant", tuple((f"mqtt-{n}.example.net", 8883) for n in (1, 2, 3)), tls=True,
                       certfile=f"{pki}/bridge.pem", keyfile=f"{pki}/bridge.key")
    return ("# EXAMPLE: /etc/mosquitto/conf.d/gateway.conf of site 'plant' as `gateway broker-config` and\n"
            "# `gateway bridge` write it (a drop-in for Debian's mosquitto.conf). Kept current by\n"
            "# tests/control/test_brokerconf.py (write_example() rewrites it).\n\n"
            + bc.render_broker_conf(conf) + "\n" + bc.render_bridge(bridge))


def write_example() -> None:
    """Rewrite the example file after a deliberate change to the rendering."""
    EXAMPLE.write_text(render_example())


def test_example_file_is_current() -> None:
    assert EXAMPLE.read_text() == render_example(), (
        "systemd/mosquitto-gateway.conf.example is stale: run .venv/bin/python -c "
        "'from tests.control.test_brokerconf import write_example; write_example()'")


@pytest.mark.parametrize("make", [
    lambda: bc.render_bridge(bc.Bridge("plant", (("h", 1),), password="a\nlistener 1 0.0.0.0")),
    lambda: bc.render_bridge(bc.Bridge("plant", (("h", 1),), password="two words")),
    lambda: bc.render_bridge(bc.Bridge("plant", ())),
    lambda: bc.render_site_acl(bc.SiteAccess("plant", gateways=(bc.GatewayAccess("x"),), consoles=("x",))),
    lambda: bc.render_site_acl(bc.SiteAccess("plant", topic_root="gateway/+")),
    lambda: bc.render_site_acl(bc.SiteAccess("pl/ant")),
    lambda: bc.render_site_acl(bc.SiteAccess("plant", imports=("a/#/b",))),
    lambda: bc.render_site_acl(bc.SiteAccess("plant", gateways=(bc.GatewayAccess("gw-a", ("o+",)),))),
    lambda: bc.render_broker_conf(bc.BrokerConf(listeners=())),
    lambda: bc.render_broker_conf(bc.BrokerConf(listeners=(bc.Listener(port=0),))),
    lambda: bc.render_broker_conf(bc.BrokerConf(listeners=(bc.Listener(require_certificate=True),))),
    lambda: bc.render_broker_conf(bc.BrokerConf(listeners=(bc.Listener(certfile="/c"),))),
])
def test_bad_settings_are_refused(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    path = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(path), "gw-a", "s3cret"], check=True)
    encoded = bc.read_password_file(path)["gw-a"]
    assert bc.check_password("s3cret", encoded)
    assert not bc.check_password("s3cret!", encoded)
    salt = bytes(range(12))
    ours = bc.hash_password("s3cret", salt=salt)
    assert ours.startswith("$7$101$AAECAwQFBgcICQoL$") and bc.check_password("s3cret", ours)
    assert not bc.check_password("s3cret", "$6$abc$def")


def test_set_passwords_updates_atomically(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    bc.set_passwords(path, {"gw-a": "1", "gw-b": "2"})
    first = bc.read_password_file(path)
    bc.set_passwords(path, {"gw-b": "3", "gw-c": "4"}, remove=["gw-a"])
    second = bc.read_password_file(path)
    assert sorted(second) == ["gw-b", "gw-c"]
    assert bc.check_password("3", second["gw-b"]) and second["gw-b"] != first["gw-b"]
    assert (path.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["passwd"]  # no temporary left behind
    bc.write_text_atomic(tmp_path / "acl", "x\n", mode=0o600, group=grp.getgrgid(os.getgid()).gr_name)
    assert (tmp_path / "acl").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError):
        bc.set_passwords(path, {"bad:name": "x"})
    assert len(bc.new_password()) == 32


# ---------------------------------------------------------------------------------------------
# A real site broker: logins and access rules


@pytest.fixture
def plant(tmp_path: Path) -> Iterator[Mosquitto]:
    """A site broker for 'plant' with the generated configuration, on a free loopback port."""
    port = free_tcp_port()
    conf = _site_files(tmp_path, PLANT, PASSWORDS, bc.Listener(port=port))
    broker = _broker(tmp_path / "broker", conf, port)
    try:
        yield broker.start()
    finally:
        broker.close()


def test_logins(plant: Mosquitto, peers: list[Peer]) -> None:
    for user, password in [(None, None), ("gw-a", "wrong"), ("stranger", "pass-a")]:
        peer = Peer(plant.port, user, password)
        peers.append(peer)
        assert peer.connack is not None and peer.connack.value == NOT_AUTHORIZED, (user, peer.connack)
    right = Peer(plant.port, "gw-a", "pass-a")
    peers.append(right)
    assert right.accepted


def test_gateway_writes_only_its_own_topics(plant: Mosquitto, peers: list[Peer]) -> None:
    watcher = Peer(plant.port, "gw-b", "pass-b")
    gw_a = Peer(plant.port, "gw-a", "pass-a")
    peers += [watcher, gw_a]
    watcher.subscribe(f"{ROOT}/#")
    site = f"{ROOT}/plant"
    denied = [f"{site}/gateways/gw-b/presence", f"{site}/groups/ops/voice/gw-b", f"{site}/alerts/gw-b",
              f"{site}/groups/fire/cmd/mute", f"{ROOT}/other/gateways/gw-a/presence", "elsewhere/x"]
    allowed = [f"{site}/gateways/gw-a/presence", f"{site}/gateways/gw-a/reply/1",
               f"{site}/groups/ops/voice/gw-a", f"{site}/alerts/gw-a", f"{site}/groups/ops/cmd/mute"]
    codes = {topic: gw_a.publish(topic) for topic in denied}
    print("\nPUBACK for ACL-denied QoS 1 publishes:", {t: str(c) for t, c in codes.items()})
    assert all(c is not None and c.value == NOT_AUTHORIZED for c in codes.values())
    for topic in allowed:
        ack = gw_a.publish(topic)
        assert ack is not None and not ack.is_failure, (topic, ack)
    gw_a.publish(f"{site}/gateways/gw-a/marker", b"end")  # same connection, so it arrives last
    watcher.wait_for(f"{site}/gateways/gw-a/marker")
    got = {m[0] for m in watcher.messages}
    assert got == {*allowed, f"{site}/gateways/gw-a/marker"}


def test_console_reads_everything_and_commands(plant: Mosquitto, peers: list[Peer]) -> None:
    console = Peer(plant.port, "alice", "pass-alice")
    gw_a = Peer(plant.port, "gw-a", "pass-a")
    peers += [console, gw_a]
    console.subscribe(f"{ROOT}/#")
    gw_a.subscribe(f"{ROOT}/plant/gateways/gw-a/cmd/#")
    gw_a.publish(f"{ROOT}/plant/gateways/gw-a/ports/radio", b"state")
    console.wait_for(f"{ROOT}/plant/gateways/gw-a/ports/radio", b"state")
    for topic in (f"{ROOT}/plant/gateways/gw-a/cmd/ping", f"{ROOT}/plant/groups/fire/cmd/mute"):
        ack = console.publish(topic, b"go")
        assert ack is not None and not ack.is_failure
    gw_a.wait_for(f"{ROOT}/plant/gateways/gw-a/cmd/ping", b"go")
    ack = console.publish(f"{ROOT}/plant/gateways/gw-a/presence", b"forged")  # not a command
    assert ack is not None and ack.value == NOT_AUTHORIZED


# ---------------------------------------------------------------------------------------------
# TLS with client certificates


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
          server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        usage = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True,
                              crl_sign=True, encipher_only=False, decipher_only=False)
        builder = builder.add_extension(usage, critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pem(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{stem}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(directory / f"{stem}.key", 0o600)


def _pki(directory: Path, *clients: str) -> Path:
    """A throwaway CA (ca.pem), a server certificate for localhost/127.0.0.1 (server.pem) and one
    client certificate per name, with that name as CN (NAME.pem); each with its NAME.key."""
    directory.mkdir()
    ca_key = _key()
    ca = _cert("test CA", ca_key, None, ca_key, ca=True)
    _write_pem(directory, "ca", ca, ca_key)
    for stem, server in (("server", True), *((c, False) for c in clients)):
        key = _key()
        _write_pem(directory, stem, _cert("localhost" if server else stem, key, ca.subject, ca_key,
                                          server=server), key)
    return directory


def test_tls_client_certificate_is_the_login(tmp_path: Path, peers: list[Peer]) -> None:
    pki = _pki(tmp_path / "pki", "gw-a")
    plain, tls_port = free_tcp_port(), free_tcp_port()
    tls = bc.Listener("127.0.0.1", tls_port, cafile=str(pki / "ca.pem"), certfile=str(pki / "server.pem"),
                      keyfile=str(pki / "server.key"), require_certificate=True,
                      use_identity_as_username=True)
    # gw-a has no password at all: its certificate is its login.
    conf = _site_files(tmp_path, PLANT, {"alice": "pass-alice"}, bc.Listener(port=plain), tls)
    with _broker(tmp_path / "broker", conf, plain) as broker:
        console = Peer(broker.port, "alice", "pass-alice")
        peers.append(console)
        console.subscribe(f"{ROOT}/#")
        gw_a = Peer(tls_port, tls=Tls(pki / "ca.pem", pki / "gw-a.pem", pki / "gw-a.key"))
        peers.append(gw_a)
        assert gw_a.accepted, gw_a.connack
        ack = gw_a.publish(f"{ROOT}/plant/gateways/gw-a/presence", b"online")
        assert ack is not None and not ack.is_failure
        ack = gw_a.publish(f"{ROOT}/plant/gateways/gw-b/presence", b"forged")  # %u is the CN
        assert ack is not None and ack.value == NOT_AUTHORIZED
        console.wait_for(f"{ROOT}/plant/gateways/gw-a/presence", b"online")
        assert console.on(f"{ROOT}/plant/gateways/gw-b/presence") == []

        anonymous = Peer(tls_port, tls=Tls(pki / "ca.pem"), timeout_s=3.0)
        peers.append(anonymous)
        assert not anonymous.accepted, "a TLS client without a certificate got in"
        with_password = Peer(tls_port, "alice", "pass-alice", tls=Tls(pki / "ca.pem"), timeout_s=3.0)
        peers.append(with_password)
        assert not with_password.accepted, "a password replaced the certificate"


# ---------------------------------------------------------------------------------------------
# Bridges: two sites through a central broker


def test_bridge_carries_wan_voice_between_sites(tmp_path: Path, peers: list[Peer]) -> None:
    """alpha bridges with a password over plain MQTT; bravo with a client certificate over TLS, and its
    first "cluster node" is down, so its bridge must move on to the next address."""
    central_port, central_tls, alpha_port, bravo_port, dead_port = (free_tcp_port() for _ in range(5))
    pki = _pki(tmp_path / "pki", "bravo")
    central_dir = tmp_path / "central"
    central_dir.mkdir()
    tls = bc.Listener("127.0.0.1", central_tls, cafile=str(pki / "ca.pem"), certfile=str(pki / "server.pem"),
                      keyfile=str(pki / "server.key"), require_certificate=True,
                      use_identity_as_username=True)
    central_conf = bc.BrokerConf(listeners=(bc.Listener(port=central_port), tls),
                                 password_file=str(central_dir / "passwd"), acl_file=str(central_dir / "acl"))
    bc.write_text_atomic(central_conf.acl_file, bc.render_central_acl(consoles=("hq",)))
    alpha_secret = bc.new_password()
    bc.set_passwords(central_conf.password_file, {"alpha": alpha_secret, "hq": "pass-hq"})
    bridges = {
        "alpha": bc.Bridge("alpha", (("127.0.0.1", central_port),), password=alpha_secret,
                           restart_min_s=1, restart_max_s=2),
        "bravo": bc.Bridge("bravo", (("127.0.0.1", dead_port), ("localhost", central_tls)),
                           cafile=str(pki / "ca.pem"), certfile=str(pki / "bravo.pem"),
                           keyfile=str(pki / "bravo.key"), restart_min_s=1, restart_max_s=2),
    }
    brokers: list[Mosquitto] = []
    try:
        central = _broker(central_dir / "broker", central_conf, central_port)
        brokers.append(central)
        central.start()
        hq = Peer(central_port, "hq", "pass-hq")
        peers.append(hq)
        hq.subscribe(f"{ROOT}/#")
        site_ports = {"alpha": alpha_port, "bravo": bravo_port}
        started = time.monotonic()
        for site, port in site_ports.items():
            access = bc.SiteAccess(site, consoles=(f"ops-{site}",))
            conf = _site_files(tmp_path / site, access, {"gw-1": "pw-1", f"ops-{site}": "pw-ops"},
                               bc.Listener(port=port))
            broker = _broker(tmp_path / site / "broker", conf, port, "\n" + bc.render_bridge(bridges[site]))
            brokers.append(broker)
            broker.start()
        for site in site_ports:
            hq.wait_for(f"{ROOT}/{site}/bridges/central/state", b"1", timeout_s=10)
        print(f"\nboth bridges up {time.monotonic() - started:.2f} s after the site brokers started")

        at_alpha = Peer(alpha_port, "gw-1", "pw-1")
        at_bravo = Peer(bravo_port, "gw-1", "pw-1")
        ops_alpha = Peer(alpha_port, "ops-alpha", "pw-ops")
        peers += [at_alpha, at_bravo, ops_alpha]
        at_bravo.subscribe(f"{ROOT}/#")
        ops_alpha.subscribe(f"{ROOT}/#")
        alpha = f"{ROOT}/alpha"

        # WAN voice crosses, at QoS 0 as voice travels; time each frame from publish to arrival.
        voice = f"{alpha}/groups/ops/voice/gw-1"
        delays = []
        for n in range(20):
            payload = f"frame-{n}".encode()
            sent = time.monotonic()
            at_alpha.publish(voice, payload, qos=0)
            delays.append(at_bravo.wait_for(voice, payload)[3] - sent)
            time.sleep(0.02)
        print(f"voice alpha -> central -> bravo: median {statistics.median(delays) * 1e3:.2f} ms, "
              f"max {max(delays) * 1e3:.2f} ms over {len(delays)} frames")
        assert statistics.median(delays) < 0.1

        # A private topic reaches the centre but not the other site; retained presence crosses retained.
        private = f"{alpha}/gateways/gw-1/ports/radio"
        at_alpha.publish(private, b"private")
        at_alpha.publish(f"{alpha}/gateways/gw-1/presence", b"online", retain=True)
        at_alpha.publish(f"{alpha}/alerts/gw-1", b"end")  # crosses after the two above, on the same links
        at_bravo.wait_for(f"{alpha}/alerts/gw-1", b"end")
        hq.wait_for(private, b"private")
        assert at_bravo.on(private) == []
        late = Peer(bravo_port, "gw-1", "pw-1")
        peers.append(late)
        late.subscribe(f"{alpha}/gateways/+/presence")
        assert late.wait_for(f"{alpha}/gateways/gw-1/presence")[2], "presence lost its retained flag"

        # A command from a console at the centre reaches the site; nothing loops back.
        command = f"{alpha}/gateways/gw-1/cmd/ping"
        ack = hq.publish(command, b"go")
        assert ack is not None and not ack.is_failure
        ops_alpha.wait_for(command, b"go")
        at_alpha.publish(f"{alpha}/alerts/gw-1", b"last")
        hq.wait_for(f"{alpha}/alerts/gw-1", b"last")
        ops_alpha.wait_for(f"{alpha}/alerts/gw-1", b"last")
        at_bravo.wait_for(f"{alpha}/alerts/gw-1", b"last")
        assert len(ops_alpha.on(voice)) == 20, "site alpha got its own voice back from the centre"
        assert ops_alpha.on(command) == [b"go"] and hq.on(command) == [b"go"]
        assert at_bravo.on(command) == []
    finally:
        for broker in brokers:
            broker.close()
