"""The gateway's MQTT client over TLS with a client certificate, against a real mosquitto that
logs boxes in by certificate (``gateway broker-config render --tls-listen … --require-cert``)."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

from gateway.config import GatewaySettings, MqttSettings
from gateway.control.client import ControlPlane
from gateway.control.topics import PortInfo
from gateway.sim.broker import Mosquitto, free_tcp_port
from tests.control.test_brokerconf import Peer, Tls, _pki
from tests.control.test_client import _running, _until

GW = GatewaySettings(id="gw-a", site="plant")
PORTS = [PortInfo("radio", "ptt", ("ops",), "ops")]


def _broker(tmp_path: Path, pki: Path) -> Mosquitto:
    port = free_tcp_port()
    (tmp_path / "broker").mkdir()
    text = (f"listener {port} 127.0.0.1\ncafile {pki / 'ca.pem'}\ncertfile {pki / 'server.pem'}\n"
            f"keyfile {pki / 'server.key'}\nrequire_certificate true\nuse_identity_as_username true\n"
            "allow_anonymous false\n")
    return Mosquitto(port, directory=tmp_path / "broker", config_text=text)


async def test_a_box_logs_in_by_certificate_and_takes_commands(tmp_path: Path) -> None:
    pki = _pki(tmp_path / "pki", "gw-a", "hq")
    with _broker(tmp_path, pki) as broker:
        settings = MqttSettings(host="localhost", port=broker.port, tls=True, cafile=str(pki / "ca.pem"),
                                certfile=str(pki / "gw-a.pem"), keyfile=str(pki / "gw-a.key"),
                                reconnect_min_s=0.2, reconnect_max_s=0.5)
        plane = ControlPlane(settings, GW, PORTS, rng=random.Random(1), will_delay_s=0)
        plane.on_command = lambda payload: {"id": json.loads(payload)["id"], "ok": True, "result": {}}
        hq = Peer(broker.port, tls=Tls(pki / "ca.pem", pki / "hq.pem", pki / "hq.key"))
        try:
            assert hq.accepted
            hq.subscribe("gateway/v1/plant/#")
            async with _running(plane):
                await _until(lambda: plane.connected, what="TLS link")
                # The box subscribes to its commands just after it is linked: a command sent in
                # between finds no subscriber, so send it again (same id: applied once) until the
                # reply comes.
                reply = "gateway/v1/plant/gateways/gw-a/reply"
                for _ in range(10):
                    hq.publish("gateway/v1/plant/gateways/gw-a/cmd", b'{"id": "t1", "command": "status"}')
                    with contextlib.suppress(AssertionError):
                        await _until(lambda: bool(hq.on(reply)), timeout_s=0.5, what="reply")
                        break
                assert hq.on(reply), "no reply over TLS"
            assert json.loads(hq.on("gateway/v1/plant/gateways/gw-a/reply")[0])["id"] == "t1"
            assert json.loads(hq.on("gateway/v1/plant/gateways/gw-a/presence")[0])["state"] == "online"
        finally:
            hq.close()


async def test_without_its_certificate_a_box_stays_out(tmp_path: Path) -> None:
    pki = _pki(tmp_path / "pki", "gw-a")
    with _broker(tmp_path, pki) as broker:
        settings = MqttSettings(host="localhost", port=broker.port, tls=True,
                                cafile=str(pki / "ca.pem"), reconnect_min_s=0.2, reconnect_max_s=0.5)
        plane = ControlPlane(settings, GW, PORTS, rng=random.Random(1), will_delay_s=0)
        async with _running(plane):
            await _until(lambda: plane.stats.connect_failures >= 2, what="refused attempts")
            assert not plane.connected
