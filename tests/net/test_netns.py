"""Two gateways as separate processes on two hosts (network namespaces joined by veth), with the
kernel dropping a share of the listener's incoming datagrams (iptables statistic; this kernel has no
netem). The talker's port is always open and plays a clip over and over; the listener records.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np

from gateway.audio.wav import read_wav, write_wav
from gateway.net import keys
from tests.rigs.netns import Host, gateway_toml, needs_root, score_repetition, two_hosts
from tests.rigs.voice import SPEECH

__all__ = ["two_hosts"]  # the fixture


def _talk_through(tmp: Path, hosts: tuple[Host, Host], loss: float, seconds: float) -> tuple[
        float | None, int]:
    a, b = hosts
    clip, rate = read_wav(SPEECH)
    gap = np.zeros(rate // 2, np.int16)
    mic = tmp / "mic.wav"
    write_wav(mic, np.concatenate([gap, *[np.concatenate([clip, gap])] * 6]), rate)
    secret = keys.generate_secret()
    talker = gateway_toml(tmp / "a.toml", "host-a", a.address, [b.address], secret, mic=mic,
                          talk_mode="open")
    heard = tmp / "heard.wav"
    listener = gateway_toml(tmp / "b.toml", "host-b", b.address, [a.address], secret, heard=heard)
    if loss:
        b.drop_incoming_udp(loss)
    procs = [b.gateway("run", "--config", str(listener), stderr=subprocess.PIPE),
             a.gateway("run", "--config", str(talker), stderr=subprocess.PIPE)]
    try:
        time.sleep(seconds)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        errors = [p.communicate(timeout=20)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    recording, _ = read_wav(heard)
    return score_repetition(clip, recording, rate), b.dropped_by_iptables() if loss else 0


@needs_root
def test_voice_crosses_two_hosts_with_kernel_loss(tmp_path: Path, two_hosts: tuple[Host, Host]) -> None:
    pesq, dropped = _talk_through(tmp_path, two_hosts, 0.10, seconds=12)
    assert dropped > 30  # the kernel really dropped ~10% of ~600 datagrams
    assert pesq is not None and pesq >= 2.5, pesq
