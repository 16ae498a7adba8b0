"""``mqtt.host = "auto"`` between two hosts (network namespaces joined by veth): host A runs the
site broker and announces it (``mqtt.advertise_broker``); host B finds it by DNS-SD and links."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.net import keys
from tests.rigs.netns import Host, gateway_toml, multicast_hosts, needs_root

__all__ = ["multicast_hosts"]  # the fixture

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@needs_root
@pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto is installed by scripts/install.sh")
def test_a_box_finds_the_site_broker_by_dns_sd(tmp_path: Path,
                                               multicast_hosts: tuple[Host, Host]) -> None:
    a, b = multicast_hosts  # mDNS is multicast: the link routes it
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener 1883 {a.address}\nallow_anonymous true\npersistence false\n"
                    + "user root\n")
    secret = keys.generate_secret()
    cfg_a = gateway_toml(tmp_path / "a.toml", "gw-a", a.address, [b.address], secret,
                         heard=tmp_path / "a.wav")
    cfg_a.write_text(cfg_a.read_text().replace(
        "[mqtt]\nenabled = false", f'[mqtt]\nhost = "{a.address}"\nadvertise_broker = true'))
    cfg_b = gateway_toml(tmp_path / "b.toml", "gw-b", b.address, [a.address], secret,
                         heard=tmp_path / "b.wav")
    cfg_b.write_text(cfg_b.read_text().replace("[mqtt]\nenabled = false", '[mqtt]\nhost = "auto"'))
    broker = subprocess.Popen(a.cmd(MOSQUITTO, "-c", str(conf)), stderr=subprocess.PIPE, text=True)
    procs: list[subprocess.Popen[str]] = []
    try:
        time.sleep(0.5)
        watch = subprocess.Popen(a.cmd(sys.executable, "-c", _WATCH.format(
            host=a.address, topic="gateway/v1/nstest/gateways/gw-b/presence")),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started = time.monotonic()
        procs = [a.gateway("run", "--config", str(cfg_a), stderr=subprocess.PIPE),
                 b.gateway("run", "--config", str(cfg_b), stderr=subprocess.PIPE)]
        out, _ = watch.communicate(timeout=40)
        took = time.monotonic() - started
        print(f"gw-b online on the broker it found by DNS-SD {took:.1f} s after both started")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        errors = [p.communicate(timeout=20)[1] for p in procs]
        broker.terminate()
        broker.communicate(timeout=10)
    assert '"state":"online"' in out.replace(" ", ""), (out, errors)
    assert all(p.returncode == 0 for p in procs), errors
    assert "linked to MQTT broker 10.78.0.1:1883" in errors[1], errors[1]


# Prints the first retained-or-live message on the topic, or nothing after 30 s.
_WATCH = """
import sys, threading, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
done = threading.Event()
def on_message(c, u, m):
    print(m.payload.decode()); sys.stdout.flush(); done.set()
c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
c.on_connect = lambda c, u, f, r, p: c.subscribe("{topic}", 1)
c.on_message = on_message
c.connect("{host}", 1883)
c.loop_start()
done.wait(30)
"""

