"""`gateway demo`: the simulated site end to end, and its output contract."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.sim.demo import run_demo
from tests.rigs.voice import SPEECH

pytestmark = pytest.mark.slow


async def test_three_gateways_hear_the_talker(tmp_path: Path) -> None:
    result = await run_demo(SPEECH, tmp_path)
    assert result.talker == "gw-a/radio"
    assert result.presence_online == 3
    assert [li.gateway for li in result.listeners] == ["gw-b", "gw-c"]
    for li in result.listeners:
        assert li.pesq is not None and li.pesq >= 3.5, li
        assert li.delay_ms is not None and li.delay_ms < 150, li
        assert li.packets_received == result.packets_sent
        assert li.packets_lost == 0
    assert result.packets_sent > 3.0 / 0.020  # the 3.1 s clip, every frame of it
    recordings = sorted(os.listdir(tmp_path))
    assert recordings == ["gw-a-radio.wav", "gw-b-radio.wav", "gw-c-radio.wav"]
    assert result.wall_seconds < 60


async def test_hands_free_talker_is_heard_without_a_button(tmp_path: Path) -> None:
    """The talker's port in talk_mode vad: speech opens it, the first syllable is there (pre-roll).
    The 200 ms pre-roll arrives as a burst: the listener's adaptive buffer plays it as extra delay
    for that talk spurt, or drains it in the pauses (when the gate opened before the clip)."""
    result = await run_demo(SPEECH, tmp_path, gateways=2, hands_free=True)
    assert result.talk_mode == "vad"
    (li,) = result.listeners
    assert li.pesq is not None and li.pesq >= 3.5, li
    assert li.delay_ms is not None and li.delay_ms < 350, li
    assert li.packets_received == result.packets_sent > 3.0 / 0.020
    assert li.packets_lost == 0


def test_cli_json_contract(tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(SPEECH.read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--json", "--input", str(clip),
         "--gateways", "2"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) >= {"listeners"}
    (listener,) = doc["listeners"]
    assert set(listener) >= {"gateway", "port", "delay_ms", "pesq", "packets_received",
                             "packets_lost"}
    assert listener["gateway"] == "gw-b"
    assert listener["pesq"] >= 3.5


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    for args in (["--gateways", "1"], ["--input", str(tmp_path / "missing.wav")], ["--bogus"]):
        proc = subprocess.run([sys.executable, "-m", "gateway", "demo", *args],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.strip()


def test_ctrl_c_cleans_up_every_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # Wait until the site is running (the recordings exist), then interrupt like a terminal would.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (tmp_path / "gw-b-radio.wav").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    children = _children(proc.pid)
    assert any("mosquitto" in c for c in children.values()), children
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"left behind: {pid}"


def _children(pid: int) -> dict[int, str]:
    out = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(pid):
            out[int(status.parent.name)] = fields.get("Name", "").strip()
    return out


def _is_zombie(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def test_demo_cleans_up_when_finished() -> None:
    before = {p for p in os.listdir("/proc") if p.isdigit()}
    proc = subprocess.run([sys.executable, "-m", "gateway", "demo", "--gateways", "2"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "gw-b/radio" in proc.stdout
    leftover = []
    for pid in {p for p in os.listdir("/proc") if p.isdigit()} - before:
        try:
            if "mosquitto" in Path(f"/proc/{pid}/comm").read_text():
                leftover.append(pid)
        except OSError:
            pass
    assert not leftover
