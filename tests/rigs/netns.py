"""Network namespaces for tests that need real hosts: gateways as separate processes, each in a
namespace of its own, joined by a veth pair, with iptables dropping packets where a test says.

Needs root and iproute2 (and iptables for loss); ``scripts/install.sh test`` installs them. Every
namespace, and therefore every address and rule in it, is the test's own and is deleted after.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gateway.sim.metrics import pesq_score

REPO = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip"), reason="network namespaces need root and iproute2"
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Host:
    """One namespace with one address on the shared link."""

    netns: str
    address: str

    def cmd(self, *args: str) -> list[str]:
        """``args`` run inside this namespace."""
        return ["ip", "netns", "exec", self.netns, *args]

    def gateway(self, *args: str, **popen: object) -> subprocess.Popen[str]:
        """Start ``python -m gateway ARGS`` in this namespace (this checkout's code)."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return subprocess.Popen(self.cmd(sys.executable, "-m", "gateway", *args), env=env,
                                text=True, **popen)  # type: ignore[call-overload]

    def drop_incoming_udp(self, probability: float) -> None:
        """Drop that share of the UDP datagrams arriving here (iptables statistic match)."""
        subprocess.run(self.cmd("iptables", "-A", "INPUT", "-p", "udp", "-m", "statistic",
                                "--mode", "random", "--probability", f"{probability}", "-j", "DROP"),
                       check=True, capture_output=True, text=True)

    def dropped_by_iptables(self) -> int:
        """Packets the INPUT DROP rule matched so far."""
        out = subprocess.run(self.cmd("iptables", "-L", "INPUT", "-v", "-n", "-x"), check=True,
                             capture_output=True, text=True).stdout
        return sum(int(line.split()[0]) for line in out.splitlines() if "DROP" in line)


@contextlib.contextmanager
def linked_hosts(prefix: str, subnet: str, *, multicast: bool = False) -> Iterator[tuple[Host, Host]]:
    """Two namespaces joined by a veth pair, ``{subnet}.1/24`` and ``{subnet}.2/24``; with
    ``multicast``, each routes 224.0.0.0/4 onto the link (mDNS, multicast voice). Raises
    CalledProcessError when a namespace can't be made; everything made is deleted after."""
    tag = uuid.uuid4().hex[:6]
    hosts = (Host(f"{prefix}A-{tag}", f"{subnet}.1"), Host(f"{prefix}B-{tag}", f"{subnet}.2"))
    devices = (f"{prefix[:2]}a{tag}", f"{prefix[:2]}b{tag}")
    made: list[str] = []
    try:
        for h in hosts:
            _ip("netns", "add", h.netns)
            made.append(h.netns)
        _ip("link", "add", devices[0], "netns", hosts[0].netns, "type", "veth", "peer", "name",
            devices[1], "netns", hosts[1].netns)
        for h, dev in zip(hosts, devices, strict=True):
            _ip("-n", h.netns, "addr", "add", f"{h.address}/24", "dev", dev)
            _ip("-n", h.netns, "link", "set", dev, "up")
            _ip("-n", h.netns, "link", "set", "lo", "up")
            if multicast:
                _ip("-n", h.netns, "route", "add", "224.0.0.0/4", "dev", dev)
        yield hosts
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture
def two_hosts() -> Iterator[tuple[Host, Host]]:
    """Two namespaces joined by a veth pair, 10.77.0.1/24 and 10.77.0.2/24."""
    with linked_hosts("gw", "10.77.0") as hosts:
        yield hosts


@pytest.fixture
def multicast_hosts() -> Iterator[tuple[Host, Host]]:
    """The same with multicast routed onto the link, 10.78.0.1/24 and 10.78.0.2/24."""
    with linked_hosts("mc", "10.78.0", multicast=True) as hosts:
        yield hosts


def gateway_toml(
    path: Path, gateway_id: str, address: str, peers: list[str], secret: str, *,
    mic: Path | None = None, heard: Path | None = None, talk_mode: str = "ptt", extra: str = "",
) -> Path:
    """A gateway config for a namespace host: one unicast group 'ops', one WAV port, and a state
    directory of its own (two hosts sharing one raced for its control socket: one of them died)."""
    state = path.parent / f"state-{gateway_id}"
    state.mkdir(exist_ok=True)
    inp = f'wav_input = "{mic}"\n' if mic else ""
    out = f'wav_output = "{heard}"\n' if heard else ""
    path.write_text(f"""
[gateway]
id = "{gateway_id}"
site = "nstest"
state_dir = "{state}"

[mqtt]
enabled = false

[gpio]
pin_factory = "mock"

[network]
bind_address = "{address}"

[groups.ops]
port = 5004
peers = {peers!r}
secret = "{secret}"

[ports.radio]
backend = "wav"
device_rate_hz = 16000
{inp}{out}talk_mode = "{talk_mode}"
groups = ["ops"]
{extra}""".replace("'", '"'))
    return path


def score_repetition(clip: np.ndarray, heard: np.ndarray, rate: int) -> float | None:
    """PESQ of the best-matching whole repetition of ``clip`` in ``heard`` (a recording of the clip
    played over and over with silence between), scored with 250 ms of context each side. The
    recording must be long enough to hold a whole repetition at any phase (one period, plus the
    clip, plus 500 ms): otherwise the best partial match is scored, and scores low."""
    x = heard.astype(np.float64)
    ref = clip.astype(np.float64)
    pad = rate // 4
    if len(x) < len(ref) + 2 * pad:
        return None
    n = len(x) + len(ref)
    corr = np.fft.irfft(np.fft.rfft(x, n) * np.conj(np.fft.rfft(ref, n)), n)
    # Normalised by each window's energy: the raw product favours loud stretches (the talker's AGC
    # raises the level over the first repetitions), not the stretch that matches.
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    window = np.sqrt(energy[len(ref):] - energy[: len(x) - len(ref) + 1]) + 1e-9
    lags = corr[pad: len(x) - len(ref) - pad] / window[pad: len(x) - len(ref) - pad]
    lag = pad + int(np.argmax(lags))
    context = np.zeros(pad)
    return pesq_score(np.concatenate([context, ref, context]), x[lag - pad: lag + len(ref) + pad],
                      rate)
