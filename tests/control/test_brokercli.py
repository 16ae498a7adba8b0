"""``gateway broker-config`` and ``gateway bridge`` as a technician runs them, checked against a
real mosquitto started from the files they wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.sim.broker import Mosquitto, free_tcp_port
from tests.control.test_brokerconf import Peer


def _gateway(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                          input=stdin, timeout=60, check=False)


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\nid = "gw-a"\nsite = "plant"\n\n[mqtt]\ntopic_root = "gateway/v1"\n')
    return path


def test_rendered_files_run_a_broker_that_wants_the_generated_password(tmp_path: Path) -> None:
    cfg, port = _config(tmp_path), free_tcp_port()
    files = {name: tmp_path / name for name in ("mosquitto.conf", "gateway.acl", "gateway.passwd")}
    done = _gateway("broker-config", "render", "--listen", f"127.0.0.1:{port}", "--gateway", "gw-a:ops",
                    "--console", "desk", "--password-file", str(files["gateway.passwd"]),
                    "--acl-file", str(files["gateway.acl"]), "--conf-out", str(files["mosquitto.conf"]),
                    "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert files["gateway.acl"].stat().st_mode & 0o777 == 0o640
    made = _gateway("broker-config", "passwd", "--password-file", str(files["gateway.passwd"]),
                    "--user", "gw-a", "--generate")
    assert made.returncode == 0, made.stderr
    password = made.stdout.strip()
    assert len(password) >= 24 and password not in files["gateway.passwd"].read_text()
    assert _gateway("broker-config", "passwd", "--password-file", str(files["gateway.passwd"]),
                    "--user", "desk", "--password-stdin", stdin="desk-pass\n").returncode == 0
    refused = _gateway("broker-config", "passwd", "--password-file", str(files["gateway.passwd"]),
                       "--user", "x")
    assert refused.returncode == 2 and "never taken on the command line" in refused.stderr
    (tmp_path / "broker").mkdir()
    with Mosquitto(port, directory=tmp_path / "broker", config_text=files["mosquitto.conf"].read_text()):
        good = Peer(port, "gw-a", password)
        anonymous = Peer(port)
        wrong = Peer(port, "gw-a", "nope")
        try:
            assert good.accepted and not anonymous.accepted and not wrong.accepted
            # The ACL is the site's: gw-a writes its own subtree, not another gateway's.
            assert not good.publish("gateway/v1/plant/gateways/gw-a/presence").is_failure
            assert good.publish("gateway/v1/plant/gateways/gw-b/presence").is_failure
        finally:
            for peer in (good, anonymous, wrong):
                peer.close()


def test_bridge_file_links_the_site_to_every_node(tmp_path: Path) -> None:
    out = tmp_path / "bridge-central.conf"
    done = _gateway("bridge", "--remote", "10.9.0.1:8883", "--remote", "10.9.0.2", "--tls",
                    "--password-stdin", "--out", str(out), "--config", str(_config(tmp_path)),
                    stdin="site-pass\n")
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "connection plant-central" in text and "10.9.0.1:8883" in text and "10.9.0.2:8883" in text
    assert "gateway/v1/plant/" in text and "remote_password site-pass" in text
    assert out.stat().st_mode & 0o777 == 0o640
    bad = _gateway("bridge", "--remote", "10.9.0.1:port", "--out", str(out), "--config",
                   str(_config(tmp_path)))
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr
