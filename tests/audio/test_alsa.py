"""AlsaDevice against real pyalsaaudio and libasound, through the file-PCM rig.

Only xruns and a refused rate are driven by a scripted stand-in PCM: the rig's ``null`` slave has no
clock, so it never overruns or underruns, and it grants any rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import alsaaudio
import numpy as np
import pytest

from gateway.audio.alsa import AlsaDevice
from gateway.audio.alsa_file import FilePcm, file_pcm_config, read_raw, write_raw
from gateway.audio.bridge import CaptureBridge, Frame, PlaybackQueue
from gateway.audio.wav import read_wav
from tests.rigs import alsa as rigs

alsa_rig = rigs.alsa_rig  # shared with conftest's import of the same fixture: one rig per process
AlsaRig = rigs.AlsaRig

RATE = 16000
N = 320  # 20 ms periods
PERIOD_S = N / RATE
SPEECH = Path("/work/shared/testdata/speech/speech.wav")


def _speech(start: int, length: int) -> Frame:
    data, rate = read_wav(SPEECH)
    assert rate == RATE
    chunk = data[start: start + length]
    assert np.abs(chunk).max() > 1000, "pick a stretch with speech in it"
    return chunk


def _device(name: str, capture: str, playback: str | None = None, **kw: Any) -> AlsaDevice:
    kw.setdefault("pace_realtime", True)  # the file PCMs don't pace themselves
    return AlsaDevice(name, capture, playback or capture, RATE, N, reopen_min_s=0.02, reopen_max_s=0.1, **kw)


@contextlib.contextmanager
def _running(device: AlsaDevice, playback: PlaybackQueue | None = None) -> Iterator[list[Frame]]:
    """Start ``device`` on the running loop; yields the list its captured frames are appended to."""
    frames: list[Frame] = []
    bridge = CaptureBridge(asyncio.get_running_loop(), frames.append, 1000)
    device.start(bridge, playback or PlaybackQueue(RATE))
    try:
        yield frames
    finally:
        device.stop()


async def _wait_until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def _threads_of(name: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in (f"alsa-cap-{name}", f"alsa-play-{name}")]


def test_capture_delivers_speech_bit_exact_in_order(alsa_rig: AlsaRig) -> None:
    speech = _speech(8000, 12 * N + 17)
    alsa_rig.reset("gw_a")
    alsa_rig.write_capture("gw_a", speech, pad_s=3.0)
    device = _device("cap", "gw_a")

    async def body() -> list[Frame]:
        with _running(device) as frames:
            await _wait_until(lambda: len(frames) >= 16)
        return frames

    got = np.concatenate(asyncio.run(body()))
    assert np.array_equal(got[: len(speech)], speech)
    assert not got[len(speech): 16 * N].any()  # then the infile's silence
    assert device.stats.errors == 0
    assert device.stats.capture_xruns == 0
    assert device.stats.frames_captured >= 16


def test_playback_lands_in_order_with_silence_where_the_queue_was_empty(alsa_rig: AlsaRig) -> None:
    first = _speech(8000, 5 * N + 100)  # ends mid-period: one partial period, padded
    second = _speech(20000, 4 * N)
    alsa_rig.reset("gw_a")
    alsa_rig.write_capture("gw_a", np.zeros(0, dtype=np.int16), pad_s=3.0)
    device = _device("play", "gw_a")
    queue = PlaybackQueue(RATE)
    queue.write(first)

    async def body() -> None:
        with _running(device, queue):
            await _wait_until(lambda: device.stats.frames_played >= 12)
            queue.write(second)  # from the loop, as a port does
            played = device.stats.frames_played
            await _wait_until(lambda: device.stats.frames_played >= played + 8)

    asyncio.run(body())
    out = alsa_rig.read_playback("gw_a")
    assert len(out) == device.stats.frames_played * N  # every period is in the file, silence included
    assert np.array_equal(out[: len(first)], first)
    # The second burst starts on a period boundary (the queue is read one period at a time).
    starts = [k for k in range(6, len(out) // N) if np.array_equal(out[k * N: k * N + len(second)], second)]
    assert len(starts) == 1
    start = starts[0] * N
    assert start >= 12 * N
    assert not out[len(first): start].any()
    assert not out[start + len(second):].any()
    assert queue.underruns == 1
    assert device.stats.playback_xruns == 0
    assert device.stats.errors == 0


def test_pacing_keeps_real_time_and_the_timeline_matches_elapsed_time(alsa_rig: AlsaRig) -> None:
    alsa_rig.reset("gw_b")
    alsa_rig.write_capture("gw_b", np.zeros(0, dtype=np.int16), pad_s=3.0)
    device = _device("pace", "gw_b")

    async def body() -> float:
        with _running(device):
            await asyncio.sleep(1.0)
            return time.monotonic()

    stopped_at = asyncio.run(body())
    elapsed = stopped_at - device.started_at
    assert 0.95 < elapsed < 1.5
    out = alsa_rig.read_playback("gw_b")
    assert len(out) == device.stats.frames_played * N
    # One period per period of wall time, starting with period 0 at started_at (generous bounds).
    for frames in (device.stats.frames_played, device.stats.frames_captured):
        assert abs(frames * PERIOD_S - elapsed) < 0.15, (frames, elapsed)


def test_an_undefined_pcm_does_not_raise_counts_errors_and_logs_once(
    alsa_rig: AlsaRig, caplog: pytest.LogCaptureFixture
) -> None:
    device = _device("undef", rigs.UNDEFINED_PCM)
    caplog.set_level(logging.INFO, logger="gateway.audio.alsa")

    async def body() -> None:
        with _running(device) as frames:
            await _wait_until(lambda: device.stats.errors >= 8)
            assert frames == []

    asyncio.run(body())
    assert device.stats.reopens == 0
    assert device.stats.frames_captured == device.stats.frames_played == 0
    assert rigs.UNDEFINED_PCM in device.stats.last_error
    warnings = [r for r in caplog.records if r.name == "gateway.audio.alsa" and r.levelno >= logging.WARNING]
    assert len(warnings) == 2  # one per direction for the whole failure streak, not one per attempt
    assert _threads_of("undef") == []


def test_a_missing_infile_is_retried_until_it_appears(alsa_rig: AlsaRig) -> None:
    speech = _speech(8000, 6 * N)
    alsa_rig.reset("gw_c")  # no infile yet: like a headset that is not connected
    device = _device("late", "gw_c")

    async def body() -> list[Frame]:
        with _running(device) as frames:
            await _wait_until(lambda: device.stats.errors >= 3)
            assert frames == []
            assert device.stats.frames_played > 0  # playback needs no infile and runs meanwhile
            alsa_rig.write_capture("gw_c", speech, pad_s=3.0)
            await _wait_until(lambda: len(frames) >= 6)
        return frames

    got = np.concatenate(asyncio.run(body()))
    assert np.array_equal(got[: len(speech)], speech)
    assert device.stats.reopens == 1
    assert "capture" in device.stats.last_error


def test_stop_is_idempotent_joins_threads_and_allows_a_restart(alsa_rig: AlsaRig) -> None:
    alsa_rig.reset("gw_d")
    alsa_rig.write_capture("gw_d", np.zeros(0, dtype=np.int16), pad_s=3.0)
    device = _device("stopper", "gw_d")
    device.stop()  # before start: nothing to do

    async def body() -> None:
        for _ in range(2):
            with _running(device) as frames:
                await _wait_until(lambda: len(frames) >= 3)
                assert sorted(_threads_of("stopper")) == ["alsa-cap-stopper", "alsa-play-stopper"]
            t0 = time.monotonic()
            device.stop()
            assert time.monotonic() - t0 < 0.5
            assert _threads_of("stopper") == []

    asyncio.run(body())
    assert device.stats.errors == 0


def test_a_failing_device_leaves_the_other_working(alsa_rig: AlsaRig) -> None:
    speech = _speech(8000, 10 * N)
    alsa_rig.reset("gw_b")
    alsa_rig.write_capture("gw_b", speech, pad_s=3.0)
    good = _device("good", "gw_b")
    bad = _device("bad", rigs.UNDEFINED_PCM, "gw_c")  # capture can't open; its playback can

    async def body() -> list[Frame]:
        with _running(good) as good_frames, _running(bad) as bad_frames:
            await _wait_until(lambda: len(good_frames) >= 12 and bad.stats.errors >= 3)
            assert bad_frames == []
        return good_frames

    got = np.concatenate(asyncio.run(body()))
    assert np.array_equal(got[: len(speech)], speech)
    assert good.stats.errors == 0
    assert bad.stats.frames_played > 0
    assert bad.stats.frames_captured == 0


def test_a_playback_device_that_vanishes_is_closed_and_reopened(alsa_rig: AlsaRig) -> None:
    alsa_rig.reset("gw_d")
    alsa_rig.write_capture("gw_d", np.zeros(0, dtype=np.int16), pad_s=3.0)
    fifo = alsa_rig.outfile("gw_d")
    os.mkfifo(fifo)
    # A FIFO outfile whose reader goes away makes the file plugin's write fail (EPIPE -> -EIO): a
    # real libasound error in the middle of a run, like an unplugged card.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    device = _device("vanish", "gw_d")

    async def body() -> None:
        with _running(device) as frames:
            await _wait_until(lambda: device.stats.frames_played >= 10)
            # Unlink first, so the reopen creates a plain file instead of blocking on a FIFO.
            os.unlink(fifo)
            os.close(reader)
            await _wait_until(lambda: device.stats.reopens >= 1)
            played = device.stats.frames_played
            await _wait_until(lambda: device.stats.frames_played >= played + 5)
            assert len(frames) > 0

    try:
        asyncio.run(body())
    finally:
        with contextlib.suppress(OSError):
            os.close(reader)
    assert device.stats.errors == 1
    assert "playback" in device.stats.last_error
    assert device.stats.playback_xruns == 0
    assert len(alsa_rig.read_playback("gw_d")) > 0  # the reopened PCM writes the new file


class ScriptedPcm:
    """A stand-in for ``alsaaudio.PCM`` that xruns on a schedule, as pyalsaaudio 0.11 or 0.10 reports."""

    def __init__(self, *, xrun_every: int = 10**9, raise_on_xrun: bool = False,
                 granted_rate: int | None = None, granted_period: int | None = None,
                 io_error: bool = False, written: list[int], closed: list[str], **params: Any) -> None:
        self.params = params
        self._period = granted_period or params["periodsize"]
        self._io_error = io_error
        self._every = xrun_every
        self._raise = raise_on_xrun
        self._rate = granted_rate or params["rate"]
        self._written = written
        self._closed = closed
        self._calls = 0
        self._next = 1
        self._state: int = alsaaudio.PCM_STATE_PREPARED

    def _xrun_now(self) -> bool:
        if self._state == alsaaudio.PCM_STATE_SETUP:
            self._state = alsaaudio.PCM_STATE_PREPARED  # pyalsaaudio re-prepares a dropped stream
        if self._io_error:  # like an unplugged USB card: not an xrun, the stream stays RUNNING
            self._state = alsaaudio.PCM_STATE_RUNNING
            raise alsaaudio.ALSAAudioError("No such device [scripted]")
        self._calls += 1
        if self._calls % self._every:
            return False
        if self._raise:  # 0.10: raise and leave the stream in XRUN
            self._state = alsaaudio.PCM_STATE_XRUN
            raise alsaaudio.ALSAAudioError("Broken pipe [scripted]")
        return True  # 0.11: prepare, then report -EPIPE

    def read(self) -> tuple[int, bytes]:
        if self._xrun_now():
            return -errno.EPIPE, b""
        n = self._period
        data = np.arange(self._next, self._next + n, dtype="<i2").tobytes()
        self._next += n
        return n, data

    def write(self, data: Frame) -> int:
        if self._xrun_now():
            return -errno.EPIPE
        samples = np.frombuffer(bytes(data), dtype="<i2")
        self._written.extend(int(v) for v in samples)
        return len(samples)

    def info(self) -> dict[str, Any]:
        return {"name": self.params["device"], "rate": self._rate, "channels": 1,
                "format": alsaaudio.PCM_FORMAT_S16_LE, "format_name": "S16_LE"}

    def state(self) -> int:
        return self._state

    def drop(self) -> int:
        self._state = alsaaudio.PCM_STATE_SETUP
        return 0

    def close(self) -> None:
        self._closed.append(self.params["device"])


@pytest.mark.parametrize("raise_on_xrun", [False, True], ids=["returns-EPIPE", "raises"])
def test_xruns_are_recovered_in_place_and_counted(raise_on_xrun: bool) -> None:
    written: list[int] = []
    closed: list[str] = []
    factory = functools.partial(ScriptedPcm, xrun_every=4, raise_on_xrun=raise_on_xrun,
                                written=written, closed=closed)
    device = _device("xrun", "cap", "play", pcm_factory=factory)
    queue = PlaybackQueue(RATE)
    sent = np.arange(1, 10 * N + 1, dtype=np.int16)
    queue.write(sent)

    async def body() -> list[Frame]:
        with _running(device, queue) as frames:
            await _wait_until(lambda: len(frames) >= 12 and device.stats.frames_played >= 12)
        return frames

    got = np.concatenate(asyncio.run(body()))
    assert device.stats.errors == 0
    assert device.stats.reopens == 0
    assert device.stats.capture_xruns >= 3
    assert device.stats.playback_xruns >= 3
    # Capture: an overrun loses the period the device dropped, never reorders or repeats.
    assert np.array_equal(got, np.arange(1, len(got) + 1))
    # Playback: the period that hit the underrun is written again, so nothing the loop sent is lost.
    heard = [v for v in written if v]
    assert heard == list(sent[: len(heard)])
    assert len(heard) == len(sent)
    assert sorted(closed) == ["cap", "play"]


def test_a_refused_rate_fails_clearly_and_closes_the_pcm() -> None:
    closed: list[str] = []
    factory = functools.partial(ScriptedPcm, granted_rate=44100, written=[], closed=closed)
    device = _device("rate", "cap", "play", pcm_factory=factory)

    async def body() -> None:
        with _running(device):
            await _wait_until(lambda: device.stats.errors >= 4)

    asyncio.run(body())
    assert "granted 44100 Hz, not 16000 Hz" in device.stats.last_error
    assert device.stats.frames_captured == device.stats.frames_played == 0
    assert closed.count("cap") >= 2 and closed.count("play") >= 2


def test_another_granted_period_is_regrouped_into_frames() -> None:
    factory = functools.partial(ScriptedPcm, granted_period=200, written=[], closed=[])
    device = _device("regroup", "cap", "play", pcm_factory=factory)

    async def body() -> list[Frame]:
        with _running(device) as frames:
            await _wait_until(lambda: len(frames) >= 8)
        return frames

    frames = asyncio.run(body())
    assert {len(f) for f in frames} == {N}
    got = np.concatenate(frames)
    assert np.array_equal(got, np.arange(1, len(got) + 1))


def test_a_device_that_opens_but_fails_at_once_backs_off_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []
    factory = functools.partial(ScriptedPcm, io_error=True, written=[], closed=closed)
    device = _device("flap", "cap", "play", pcm_factory=factory)
    caplog.set_level(logging.INFO, logger="gateway.audio.alsa")

    async def body() -> None:
        with _running(device):
            await _wait_until(lambda: device.stats.reopens >= 6)

    asyncio.run(body())
    assert "No such device" in device.stats.last_error
    assert device.stats.errors >= device.stats.reopens
    assert closed.count("cap") + closed.count("play") >= device.stats.reopens
    records = [r for r in caplog.records if r.name == "gateway.audio.alsa"]
    assert sum(r.levelno == logging.WARNING for r in records) == 2  # one per direction
    assert sum(r.levelno == logging.INFO for r in records) == 2


def test_file_pcm_config_defines_an_asym_per_name() -> None:
    text = file_pcm_config({
        "gw_x": FilePcm("/tmp/in.raw", "/tmp/out.raw"),
        "gw_y": FilePcm('/tmp/we"ird\\in', "/tmp/y.out"),
    })
    assert text.count("type asym") == 2
    assert text.count("type file") == 4
    assert text.count("slave.pcm { type null }") == 4
    assert 'infile "/tmp/in.raw"' in text
    assert 'file "/tmp/out.raw"' in text
    assert 'infile "/tmp/we\\"ird\\\\in"' in text
    assert "plug" not in text  # alsa-lib 1.2.8's plug corrupts converted capture
    with pytest.raises(ValueError):
        file_pcm_config({"bad name": FilePcm("a", "b")})


def test_raw_files_round_trip(tmp_path: Path) -> None:
    samples = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    write_raw(tmp_path / "x.raw", samples)
    assert (tmp_path / "x.raw").read_bytes() == samples.astype("<i2").tobytes()
    assert np.array_equal(read_raw(tmp_path / "x.raw"), samples)


_CONFIG_SWITCH = """
import os, sys
import alsaaudio
from gateway.audio.alsa_file import FilePcm, file_pcm_config
d = sys.argv[1]
kw = dict(channels=1, rate=16000, format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=320, periods=4)
for name in ("one", "two"):
    with open(f"{d}/{name}.conf", "w") as f:
        f.write(file_pcm_config({f"pcm_{name}": FilePcm("/dev/zero", f"{d}/{name}.out")}))
os.environ["ALSA_CONFIG_PATH"] = f"{d}/one.conf"
first = alsaaudio.PCM(alsaaudio.PCM_PLAYBACK, device="pcm_one", **kw)  # libasound loads config one
os.environ["ALSA_CONFIG_PATH"] = f"{d}/two.conf"
second = alsaaudio.PCM(alsaaudio.PCM_PLAYBACK, device="pcm_two", **kw)  # and reloads for two
print("ok")
"""


def test_libasound_rereads_alsa_config_path_on_every_open(tmp_path: Path) -> None:
    # What the rig relies on (see tests/rigs/alsa.py); in a subprocess so this session's config stays.
    result = subprocess.run([sys.executable, "-c", _CONFIG_SWITCH, str(tmp_path)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.stdout.strip() == "ok", result.stderr
