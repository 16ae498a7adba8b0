"""Runs the libFuzzer harness (atheris) for a bounded time, seeded with valid SRTP packets and
announcements so it explores near-valid input; any crash or a played forgery fails the test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

atheris = pytest.importorskip("atheris", reason="atheris comes with the test extra")

HARNESS = Path(__file__).with_name("fuzz_receive.py")
REPO = HARNESS.parents[2]
FUZZ_SECONDS = 20


def test_receive_path_survives_coverage_guided_fuzzing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seeds = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv=['x']; import tests.fuzz.fuzz_receive as f; "
         "print('\\n'.join(s.hex() for s in f.SEEDS))"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(bytes.fromhex(seed))
    done = subprocess.run(
        [sys.executable, str(HARNESS), f"-max_total_time={FUZZ_SECONDS}", "-rss_limit_mb=2048",
         "-timeout=5", f"-artifact_prefix={tmp_path}/", str(corpus)],
        cwd=REPO, capture_output=True, text=True, timeout=FUZZ_SECONDS + 120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    tail = done.stderr[-3000:]
    assert done.returncode == 0, tail
    assert "Done" in tail and "runs in" in tail, tail
    assert not list(tmp_path.glob("crash-*")), tail
