"""The compiled loops load where nothing may be written: the systemd unit's view of the install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Runs the uplink chain on one block of a 48 kHz device.
_PROBE = (
    "import numpy as np\n"
    "from gateway.config import DspSettings\n"
    "from gateway.dsp.chain import UplinkChain\n"
    "chain = UplinkChain(DspSettings(), 48000)\n"
    "out = chain.process((np.sin(np.arange(960) / 7) * 8000).astype(np.int16))\n"
    "assert len(out) == 320, len(out)\n"
    "print('ran')\n"
)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="a private read-only mount needs root and unshare")
def test_chain_runs_from_a_read_only_install_with_no_cache_dir(tmp_path: Path) -> None:
    """``ProtectSystem=strict`` makes the install read-only and ``ProtectHome=yes`` hides the home:
    numba finds no cache location and would refuse to create the loops; they compile uncached."""
    home = tmp_path / "home"
    home.mkdir()
    script = (
        f"mount --bind {REPO} {REPO} && mount -o remount,ro,bind {REPO} && "
        f"mount --bind {home} {home} && mount -o remount,ro,bind {home} && "
        f"exec {sys.executable} -c \"$PROBE\""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PROBE=_PROBE)
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ran")
    assert "compiling" in done.stderr and "NUMBA_CACHE_DIR" in done.stderr  # it said why it is slow
