"""WavDevice, the stand-in sound card: a true timeline out, a (resampled) WAV in, silence after it."""

from __future__ import annotations

import asyncio
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soxr

from gateway.audio.bridge import CaptureBridge, Frame, PlaybackQueue
from gateway.audio.wav import WavDevice, read_wav, write_wav

SPEECH = Path("/work/shared/testdata/speech/speech.wav")


def _speech(start_s: float, length_s: float) -> Frame:
    data, rate = read_wav(SPEECH)
    assert rate == 16000
    chunk = data[int(start_s * rate): int((start_s + length_s) * rate)]
    assert np.abs(chunk).max() > 1000, "pick a stretch with speech in it"
    return chunk


async def _wait_until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def _run(device: WavDevice, playback: PlaybackQueue, until: Callable[[list[Frame]], bool]) -> list[Frame]:
    async def body() -> list[Frame]:
        frames: list[Frame] = []
        device.start(CaptureBridge(asyncio.get_running_loop(), frames.append, 1000), playback)
        try:
            await _wait_until(lambda: until(frames))
        finally:
            device.stop()
        return frames

    return asyncio.run(body())


def test_recording_is_a_timeline_of_every_tick(tmp_path: Path) -> None:
    out_path = tmp_path / "out.wav"
    device = WavDevice("w1", 16000, 320, output_path=str(out_path))
    playback = PlaybackQueue(16000)
    speech = _speech(0.5, 0.1)
    playback.write(speech)
    t0 = time.monotonic()
    _run(device, playback, lambda frames: time.monotonic() - t0 > 0.3)
    elapsed = time.monotonic() - device.started_at
    with wave.open(str(out_path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        recorded = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert len(recorded) == device.stats.frames_played * 320
    assert abs(len(recorded) / 16000 - elapsed) < 0.1  # one period per tick, paced in real time
    assert np.array_equal(recorded[: len(speech)], speech)
    assert not recorded[len(speech):].any()


def test_input_is_resampled_to_the_device_rate(tmp_path: Path) -> None:
    speech = _speech(0.5, 0.2)
    in_path = tmp_path / "in.wav"
    write_wav(in_path, speech, 16000)
    device = WavDevice("w2", 8000, 160, input_path=str(in_path))
    frames = _run(device, PlaybackQueue(8000), lambda frames: len(frames) >= 12)
    got = np.concatenate(frames)
    expected = soxr.resample(speech, 16000, 8000, quality="VHQ").astype(np.int16)
    assert len(expected) == len(speech) // 2
    assert np.array_equal(got[: len(expected)], expected)


def test_capture_is_silent_after_the_input_ends(tmp_path: Path) -> None:
    speech = _speech(0.5, 0.1)
    in_path = tmp_path / "in.wav"
    write_wav(in_path, speech, 16000)
    device = WavDevice("w3", 16000, 320, input_path=str(in_path))
    frames = _run(device, PlaybackQueue(16000), lambda frames: len(frames) >= 15)
    got = np.concatenate(frames)
    assert np.array_equal(got[: len(speech)], speech)
    assert not got[len(speech):].any()
    assert device.stats.frames_captured >= 15


def test_stop_is_idempotent_and_joins(tmp_path: Path) -> None:
    device = WavDevice("w4", 16000, 320, output_path=str(tmp_path / "o.wav"))
    _run(device, PlaybackQueue(16000), lambda frames: len(frames) >= 2)
    device.stop()  # again: harmless
    assert not [t for t in threading.enumerate() if t.name == "wav-w4"]
