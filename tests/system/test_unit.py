"""The shipped systemd unit passes ``systemd-analyze verify`` (no systemd needs to be running)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "gateway.service"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze not installed")


def _unit_with_stub_exe(tmp_path: Path) -> Path:
    # verify checks that ExecStart binaries exist; point them at a stub instead of /opt/gateway.
    stub = tmp_path / "gateway"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / "gateway.service"
    unit.write_text(UNIT.read_text().replace("/opt/gateway/.venv/bin/gateway", str(stub)))
    return unit


def test_unit_verifies(tmp_path: Path) -> None:
    proc = subprocess.run(["systemd-analyze", "verify", str(_unit_with_stub_exe(tmp_path))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "gateway.service" not in proc.stderr, proc.stderr  # no warnings about our unit


def test_unit_is_a_notify_service_with_watchdog() -> None:
    text = UNIT.read_text()
    assert "Type=notify" in text
    assert "WatchdogSec=" in text
    assert "Restart=always" in text


def test_security_exposure_is_reported(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(_unit_with_stub_exe(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Overall exposure level" in proc.stdout


def test_unit_gives_the_compiled_dsp_loops_a_writable_cache() -> None:
    """ProtectSystem=strict makes the install read-only: numba's cache must go under the unit's
    own CacheDirectory (/var/cache/gateway), or the loops are compiled again at every start."""
    text = UNIT.read_text()
    assert "ProtectSystem=strict" in text
    assert "CacheDirectory=gateway" in text.splitlines()
    assert "Environment=NUMBA_CACHE_DIR=/var/cache/gateway/numba" in text.splitlines()
