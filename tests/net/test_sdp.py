"""`gateway sdp`: a standard player (ffmpeg) decodes a talker from the SDP the command prints.

Everything runs in a network namespace this test creates (loopback with a multicast route), so
the group's multicast stays off every real interface: a `gateway run` talker with an always-open
WAV port, `gateway sdp` as a silent member, and ffmpeg reading the SDP and writing a WAV.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gateway.audio.wav import read_wav, write_wav
from gateway.config import GroupSettings
from gateway.net import keys
from gateway.net.sdp import SenderKey, build_sdp
from gateway.voice.port import port_ssrc
from tests.rigs.netns import needs_root, score_repetition
from tests.rigs.voice import SPEECH

REPO = Path(__file__).resolve().parents[2]


def test_sdp_text_names_the_stream_and_key() -> None:
    group = GroupSettings("ops", port=5004, multicast="239.255.10.1")
    text = build_sdp(group, SenderKey(0x1234ABCD, 7, bytes(range(30))), 111, 20, "239.255.10.1",
                     ttl=1, site="plant")
    lines = text.split("\r\n")
    assert lines[0] == "v=0" and text.endswith("\r\n")
    assert "c=IN IP4 239.255.10.1/1" in lines
    assert "m=audio 5004 RTP/SAVP 111" in lines
    assert "a=rtpmap:111 opus/48000/2" in lines
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd" in lines
    assert "a=ssrc:305441741" in lines
    unicast = build_sdp(group, SenderKey(1, 1, bytes(30)), 111, 10, "10.0.0.5")
    assert "c=IN IP4 10.0.0.5" in unicast and "a=ptime:10" in unicast
    both = build_sdp(group, [SenderKey(1, 1, bytes(30)), SenderKey(2, 1, bytes([1]) * 30)], 111, 20,
                     "239.255.10.1")
    assert both.count("m=audio 5004 RTP/SAVP 111") == 2 and _ssrcs(both) == [1, 2]
    assert both.index("c=IN IP4") < both.index("m=audio")  # one connection line for both
    with pytest.raises(ValueError):
        build_sdp(group, [], 111, 20, "239.255.10.1")


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"gwsdp-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (["ip", "link", "set", "lo", "up", "multicast", "on"],
                    ["ip", "route", "add", "224.0.0.0/4", "dev", "lo"]):
            subprocess.run(["ip", "netns", "exec", name, *cmd], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _config(path: Path, gateway_id: str, address: str, secret: str, mic: Path | None) -> Path:
    state = path.parent / f"state-{gateway_id}"  # each box its own (its control socket is there)
    state.mkdir(exist_ok=True)
    port = "" if mic is None else f"""
[ports.radio]
backend = "wav"
device_rate_hz = 16000
wav_input = "{mic}"
wav_output = "{path.parent / (gateway_id + '-heard.wav')}"
talk_mode = "open"
groups = ["ops"]
"""
    path.write_text(f"""
[gateway]
id = "{gateway_id}"
site = "sdptest"
state_dir = "{state}"

[mqtt]
enabled = false

[gpio]
pin_factory = "mock"

[network]
bind_address = "{address}"
multicast_interface = "{address}"

[groups.ops]
port = 5004
multicast = "239.255.77.1"
secret = "{secret}"
mode = "conference"  # two open talkers at once
{port}""")
    return path


def _ssrcs(sdp: str) -> list[int]:
    """The SSRC of each media section, in order."""
    return [int(line.split(":", 1)[1]) for line in sdp.splitlines() if line.startswith("a=ssrc:")]


@needs_root
@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is installed by scripts/install.sh test")
def test_ffmpeg_decodes_each_talker_from_the_exported_sdp(tmp_path: Path, netns: str) -> None:
    """Two talkers on the group: ``--sender`` exports one of them; without it, the SDP has a media
    section per sender and ffmpeg decodes each talker from the group's multicast stream, every
    stream matching its own talker (the second one says the clip backwards)."""
    clip, rate = read_wav(SPEECH)
    assert rate == 16000
    gap = np.zeros(rate // 2, np.int16)
    clips = {"talker": clip, "talker2": clip[::-1].copy()}
    secret = keys.generate_secret()
    configs = []
    for i, (name, said) in enumerate(clips.items()):
        write_wav(tmp_path / f"{name}.wav", np.concatenate([gap, *[np.concatenate([said, gap])] * 8]), rate)
        configs.append(_config(tmp_path / f"{name}.toml", name, f"127.0.0.{1 + 2 * i}", secret,
                               tmp_path / f"{name}.wav"))
    monitor_cfg = _config(tmp_path / "monitor.toml", "monitor", "127.0.0.2", secret, None)
    inns = ["ip", "netns", "exec", netns]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def sdp(*args: str, check: bool = True) -> str:
        done = subprocess.run([*inns, sys.executable, "-m", "gateway", "sdp", "--group", "ops", *args,
                               "--config", str(monitor_cfg)],
                              env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 or not check, done.stderr
        assert secret not in done.stdout
        return done.stdout

    talkers = [subprocess.Popen([*inns, sys.executable, "-m", "gateway", "run", "--config", str(c)],
                                env=env, stderr=subprocess.PIPE, text=True) for c in configs]
    try:
        # Both talkers up first: a process starting on a loaded machine may take seconds to send
        # (a fixed 1 s wait failed in a full suite run: only one talker heard).
        deadline = time.monotonic() + 30
        while len(_ssrcs(sdp(check=False))) < 2:
            assert time.monotonic() < deadline, "the two talkers never both announced themselves"
        one = sdp("--sender", "talker/radio")
        assert _ssrcs(one) == [port_ssrc("sdptest", "talker", "radio")]
        assert one.count("m=audio ") == 1 and one.count("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:") == 1
        group = sdp()
        expected = {port_ssrc("sdptest", name, "radio"): name for name in clips}
        order = [expected[ssrc] for ssrc in _ssrcs(group)]
        assert sorted(order) == sorted(clips) and group.count("m=audio ") == 2
        (tmp_path / "ops.sdp").write_text(group)
        # 8 s holds a whole repetition (3.1 s clip + 0.5 s gap) with its 250 ms of context each side
        # whatever the phase the player starts at; 6 s missed it for a third of the phases, and the
        # best partial match then scored 1.34.
        outputs = []
        for k, name in enumerate(order):
            outputs += ["-map", f"0:{k}", "-t", "8", "-ar", "16000", "-ac", "1", "-y",
                        str(tmp_path / f"heard-{name}.wav")]
        player = subprocess.run(
            [*inns, "ffmpeg", "-hide_banner", "-loglevel", "error", "-protocol_whitelist",
             "file,udp,rtp", "-i", str(tmp_path / "ops.sdp"), *outputs],
            capture_output=True, text=True, timeout=60,
        )
        # Each stream rejects the other sender's packets as unauthenticated, which ffmpeg logs.
        assert player.returncode == 0, player.stderr[-2000:]
    finally:
        for t in talkers:
            t.terminate()
            t.communicate(timeout=20)
    for name, said in clips.items():
        heard, heard_rate = read_wav(tmp_path / f"heard-{name}.wav")
        assert heard_rate == 16000 and len(heard) >= 7 * rate
        score = score_repetition(said, heard, rate)  # one whole repetition of the clip, with context
        print(f"{name}: PESQ {score}")
        assert score is not None and score >= 3.5, (name, score)


def test_sdp_refuses_unknown_groups_and_reports_silence(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "monitor.toml", "monitor", "127.0.0.2", keys.generate_secret(), None)
    cfg.write_text(cfg.read_text().replace("port = 5004", "port = 47204"))

    def sdp(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", "sdp", "--config", str(cfg), *args],
                              capture_output=True, text=True, timeout=30, cwd=REPO)

    unknown = sdp("--group", "nope")
    assert unknown.returncode == 2 and "no talk group 'nope' (have: ops)" in unknown.stderr
    assert sdp("--group", "ops", "--wait-s", "0").returncode == 2
    assert sdp("--group", "ops", "--sender", "not-hex").returncode == 2
    silent = sdp("--group", "ops", "--wait-s", "0.3")
    assert silent.returncode == 1 and "heard: none" in silent.stderr
    assert silent.stdout == ""
