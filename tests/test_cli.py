"""``gateway run``: the daemon from a config file, as systemd starts and stops it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from gateway.sim.broker import Mosquitto
from tests.rigs.mqtt import Collector


def _config(tmp_path: Path, broker_port: int) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f"""
[gateway]
id = "desk-1"
site = "clitest"
state_dir = "{tmp_path / 'state'}"

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
    cfg = _config(tmp_path, mosquitto.port)
    made = _gateway("keygen", "--group", "ops", "--config", str(cfg))
    assert made.returncode == 0, made.stderr
    key_file = tmp_path / "state" / "keys" / "ops.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert str(key_file) in made.stderr and made.stdout == ""  # the secret is in the file only
    with Collector(mosquitto.port, "gateway/v1/clitest/#") as watch:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
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
            # A rotated secret is picked up on SIGHUP (systemctl reload); a broken one is refused.
            key_file.write_text("z" * 40 + "\n")
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            key_file.write_text("short\n")
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            assert proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
            notify.close()
        assert proc.returncode == 0, err
        assert "group ops re-keyed" in err
        assert "reload refused" in err and "must be at least 32 characters" in err
        assert "z" * 40 not in err
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


def test_run_without_a_group_secret_says_how_to_make_one(tmp_path: Path) -> None:
    proc = _gateway("run", "--config", str(_config(tmp_path, 1)))
    assert proc.returncode == 2
    assert "groups.ops.secret" in proc.stderr and "gateway keygen --group ops" in proc.stderr
    assert str(tmp_path / "state" / "keys" / "ops.key") in proc.stderr


def test_keygen_prints_a_fresh_secret_and_refuses_to_overwrite(tmp_path: Path) -> None:
    a, b = _gateway("keygen"), _gateway("keygen")
    assert a.returncode == b.returncode == 0
    assert len(a.stdout.strip()) >= 32 and a.stdout != b.stdout
    first = _gateway("keygen", "--group", "ops", "--state-dir", str(tmp_path))
    again = _gateway("keygen", "--group", "ops", "--state-dir", str(tmp_path))
    assert first.returncode == 0 and again.returncode == 2
    assert "exists" in again.stderr
    assert _gateway("keygen", "--group", "no spaces", "--state-dir", str(tmp_path)).returncode == 2


def test_config_check_never_prints_a_secret(tmp_path: Path) -> None:
    cfg = _config(tmp_path, 1)
    secret = "s3cr3t-" + "x" * 40
    cfg.write_text(cfg.read_text().replace('peers = ["127.0.0.32"]',
                                           f'peers = ["127.0.0.32"]\nsecret = "{secret}"'))
    proc = _gateway("config", "check", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert secret not in proc.stdout and "********" in proc.stdout
    cfg.write_text(cfg.read_text().replace(secret, "too-short"))
    short = _gateway("config", "check", str(cfg))
    assert short.returncode == 2 and "groups.ops.secret: must be at least 32" in short.stderr
    assert "too-short" not in short.stderr


def test_run_with_busy_voice_port_fails_clearly(tmp_path: Path) -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.31", 47004))
    try:
        cfg = _config(tmp_path, 1)  # no broker needed to fail on the socket
        assert _gateway("keygen", "--group", "ops", "--config", str(cfg)).returncode == 0
        proc = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
                              capture_output=True, text=True, timeout=30)
    finally:
        blocker.close()
    assert proc.returncode == 1, proc.stderr
    assert "talk group 'ops' at 127.0.0.31:47004" in proc.stderr


# -- gateway dsp / gateway vad: the offline tools for installers ------------------------------------


def _noisy_wav(tmp_path: Path, rate: int) -> Path:
    import numpy as np
    import soxr

    from gateway.audio.wav import read_wav, write_wav
    from tests.rigs.voice import SPEECH

    pcm, clip_rate = read_wav(SPEECH)
    x = soxr.resample(pcm.astype(np.float64), clip_rate, rate) if rate != clip_rate else pcm
    x = np.concatenate([np.zeros(rate // 2), x, np.zeros(rate // 2)])
    x = x + np.random.default_rng(3).standard_normal(len(x)) * 300
    path = tmp_path / f"noisy-{rate}.wav"
    write_wav(path, np.clip(x, -32768, 32767).astype(np.int16), rate)
    return path


def _gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_dsp_processes_a_file_at_its_own_rate(tmp_path: Path) -> None:
    from gateway.audio.wav import read_wav

    src = _noisy_wav(tmp_path, 48000)
    out = tmp_path / "clean.wav"
    settings = tmp_path / "dsp.toml"
    settings.write_text("ns_max_attenuation_db = 25.0\nagc = false\n")
    done = _gateway("dsp", str(src), str(out), "--port-config", str(settings))
    assert done.returncode == 0, done.stderr
    (x, rate_in), (y, rate_out) = read_wav(src), read_wav(out)
    assert rate_out == rate_in == 48000 and len(y) == len(x)
    # The half second of noise before the speech comes out much quieter.
    quiet = slice(4800, 19200)
    assert (x[quiet].astype(float) ** 2).mean() > 30 * (y[quiet].astype(float) ** 2).mean()


def test_vad_prints_one_decision_per_10_ms(tmp_path: Path) -> None:
    import json

    src = _noisy_wav(tmp_path, 8000)
    done = _gateway("vad", str(src))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["frame_ms"] == 10
    from gateway.audio.wav import read_wav

    samples, rate = read_wav(src)
    speech = result["speech"]
    assert len(speech) == len(samples) * 100 // rate
    assert set(speech) == {0, 1}
    assert sum(speech[:40]) == 0  # the noise-only lead-in
    assert sum(speech) > 0.3 * len(speech)


def test_dsp_tools_reject_bad_input_with_status_2(tmp_path: Path) -> None:
    missing = _gateway("vad", str(tmp_path / "nope.wav"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    not_wav = tmp_path / "notes.wav"
    not_wav.write_text("this is not audio")
    garbage = _gateway("dsp", str(not_wav), str(tmp_path / "o.wav"))
    assert garbage.returncode == 2 and "cannot read WAV" in garbage.stderr, garbage.stderr
    assert not (tmp_path / "o.wav").exists()
    nowhere = _gateway("dsp", str(_noisy_wav(tmp_path, 8000)), str(tmp_path / "no" / "o.wav"))
    assert nowhere.returncode == 2 and "folder does not exist" in nowhere.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("vad_threshold = -1.0\n")
    src = _noisy_wav(tmp_path, 16000)
    refused = _gateway("dsp", str(src), str(tmp_path / "o.wav"), "--port-config", str(bad))
    assert refused.returncode == 2
    assert f"{bad}: dsp.vad_threshold" in refused.stderr


def test_status_and_ctl_talk_to_the_running_daemon(tmp_path: Path) -> None:
    """An installer at the box, no broker: ``gateway status`` and ``gateway ctl`` over the local
    control socket; mistakes get a clear message and exit 1, and the daemon carries on."""
    cfg = _config(tmp_path, 1)
    text = cfg.read_text().replace("[mqtt]", "[mqtt]\nenabled = false").replace(
        'groups = ["ops"]', 'groups = ["ops", "fire"]')
    cfg.write_text(text + '\n[groups.fire]\nport = 47006\npeers = ["127.0.0.32"]\n')
    assert _gateway("keygen", "--group", "ops", "--config", str(cfg)).returncode == 0
    assert _gateway("keygen", "--group", "fire", "--config", str(cfg)).returncode == 0
    absent = _gateway("status", "--config", str(cfg))
    assert absent.returncode == 1 and "no running gateway answers" in absent.stderr
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "state" / "control.sock").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "daemon didn't start"
            time.sleep(0.1)
        second = _gateway("run", "--config", str(cfg))  # started twice by mistake
        assert second.returncode == 1 and "another gateway daemon is running" in second.stderr
        status = _gateway("status", "--config", str(cfg))  # the first one still answers
        assert status.returncode == 0, status.stderr
        assert "gateway desk-1 (site clitest" in status.stdout and "broker: lan-only" in status.stdout
        assert "port radio: idle; talks on ops (listens: ops, fire)" in status.stdout
        assert _gateway("ctl", "ptt", "radio", "on", "--config", str(cfg)).returncode == 0
        assert _gateway("ctl", "select", "radio", "fire", "--config", str(cfg)).returncode == 0
        assert _gateway("ctl", "volume", "radio", "-6", "--config", str(cfg)).returncode == 0
        doc = json.loads(_gateway("status", "--json", "--config", str(cfg)).stdout)
        radio = doc["ports"]["radio"]
        assert radio["talk_group"] == "fire" and radio["transmitting"] and radio["volume_db"] == -6
        assert doc["groups"]["fire"]["talkers"] and not doc["groups"]["ops"]["talkers"]
        wrong = _gateway("ctl", "select", "radio", "nowhere", "--config", str(cfg))
        assert wrong.returncode == 1 and "has no group 'nowhere'" in wrong.stderr
        loud = _gateway("ctl", "volume", "radio", "40", "--config", str(cfg))
        assert loud.returncode == 1 and "volume must be -40 to +12 dB" in loud.stderr
        assert _gateway("ctl", "emergency", "radio", "on", "--config", str(cfg)).returncode == 0
        doc = json.loads(_gateway("status", "--json", "--config", str(cfg)).stdout)
        assert doc["ports"]["radio"]["emergency"] and doc["groups"]["fire"]["emergency"]
        assert _gateway("ctl", "reload", "--config", str(cfg)).returncode == 0
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "EMERGENCY on fire" in err
    assert not (tmp_path / "state" / "control.sock").exists()
