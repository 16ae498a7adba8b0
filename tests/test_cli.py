"""``gateway run``: the daemon from a config file, as systemd starts and stops it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from gateway.sim.broker import Mosquitto
from tests.rigs.mqtt import Collector


def _config(tmp_path: Path, broker_port: int) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f"""
[gateway]
id = "desk-1"
site = "clitest"

[mqtt]
host = "127.0.0.1"
port = {broker_port}
reconnect_min_s = 0.2

[gpio]
pin_factory = "mock"
power_led_pin = 24

[groups.ops]
port = 47004
peers = ["127.0.0.32"]

[ports.radio]
backend = "wav"
device_rate_hz = 16000
wav_output = "{tmp_path / 'heard.wav'}"
groups = ["ops"]
ptt_pin = 17
""")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-network.toml").write_text('[network]\nbind_address = "127.0.0.31"\n')
    return path


def test_run_announces_notifies_and_stops_cleanly(tmp_path: Path, mosquitto: Mosquitto) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(10)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    with Collector(mosquitto.port, "gateway/v1/clitest/#") as watch:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(_config(tmp_path, mosquitto.port))],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            messages = []
            while not any("READY=1" in m for m in messages):
                messages.append(notify.recv(4096).decode())
            online = watch.wait_for(
                lambda m: m.topic.endswith("desk-1/presence") and m.json()["state"] == "online",
                timeout_s=10,
            )
            assert online is not None
            port = watch.wait_for(lambda m: m.topic.endswith("desk-1/ports/radio"), timeout_s=5)
            assert port is not None and port.json()["groups"] == ["ops"]
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
            notify.close()
        assert proc.returncode == 0, err
        offline = watch.wait_for(
            lambda m: m.topic.endswith("desk-1/presence") and m.json()["state"] == "offline",
            timeout_s=5,
        )
        assert offline is not None and offline.json()["reason"] == "shutdown"
    assert (tmp_path / "heard.wav").stat().st_size > 44  # the port's device ran


def test_run_with_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.toml"
    bad.write_text('[ports.radio]\nbackend = "alsa"\ntalk_mode = "shout"\n')
    proc = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(bad)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "ports.radio.talk_mode" in proc.stderr


def test_run_with_busy_voice_port_fails_clearly(tmp_path: Path) -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.31", 47004))
    try:
        cfg = _config(tmp_path, 1)  # no broker needed to fail on the socket
        proc = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
                              capture_output=True, text=True, timeout=30)
    finally:
        blocker.close()
    assert proc.returncode == 1, proc.stderr
    assert "talk group 'ops' at 127.0.0.31:47004" in proc.stderr
