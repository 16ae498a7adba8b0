"""WAV-file audio device: the stand-in for a sound card, used by the simulator and tests.

The "microphone" plays ``input_path`` (resampled to the device rate if needed, silence after its
end, or silence throughout without one); everything the port plays is recorded to ``output_path``,
one period per tick, silence included, so the recording is a true timeline of what a listener heard.
Ticks come from a :class:`~gateway.audio.pacing.Pacer`; ``started_at`` is the monotonic time of
sample 0 of both streams, which is what lets the simulator measure mouth-to-ear delay.
"""

from __future__ import annotations

import threading
import wave
from pathlib import Path

import numpy as np
import soxr

from gateway.audio.bridge import CaptureBridge, Frame, PlaybackQueue
from gateway.audio.device import DeviceStats
from gateway.audio.pacing import Pacer
from gateway.errors import DeviceError


def read_wav(path: str | Path) -> tuple[Frame, int]:
    """Read a mono 16-bit PCM WAV as (samples, rate); stereo is mixed down."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise DeviceError(str(path), f"need 16-bit PCM, got {8 * w.getsampwidth()}-bit")
            rate, channels = w.getframerate(), w.getnchannels()
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (OSError, EOFError, wave.Error) as exc:
        raise DeviceError(str(path), f"cannot read WAV: {exc}") from exc
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1)
    return data.astype(np.int16), rate


def write_wav(path: str | Path, samples: Frame, rate: int) -> None:
    """Write mono 16-bit PCM."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


class WavDevice:
    """Full-duplex device over WAV files, paced in real time by its own thread."""

    def __init__(
        self,
        name: str,
        rate_hz: int,
        frame_samples: int,
        input_path: str = "",
        output_path: str = "",
    ) -> None:
        self.name = name
        self.rate_hz = rate_hz
        self.frame_samples = frame_samples
        self.stats = DeviceStats()
        self.started_at = 0.0
        self._output_path = output_path
        self._input: Frame = np.zeros(0, dtype=np.int16)
        if input_path:
            data, rate = read_wav(input_path)
            if rate != rate_hz:
                data = soxr.resample(data, rate, rate_hz, quality="VHQ").astype(np.int16)
            self._input = data
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer: wave.Wave_write | None = None

    def start(self, capture: CaptureBridge, playback: PlaybackQueue) -> None:
        """Open the output file and start the tick thread."""
        if self._output_path:
            try:
                Path(self._output_path).parent.mkdir(parents=True, exist_ok=True)
                self._writer = wave.open(self._output_path, "wb")  # noqa: SIM115 - closed in stop()
            except OSError as exc:
                raise DeviceError(self.name, f"cannot write {self._output_path}: {exc}") from exc
            self._writer.setnchannels(1)
            self._writer.setsampwidth(2)
            self._writer.setframerate(self.rate_hz)
        self._stop.clear()  # a stop() before start() must not end the new run at once
        pacer = Pacer(self.frame_samples / self.rate_hz)
        self.started_at = pacer.started_at
        self._thread = threading.Thread(
            target=self._run, args=(pacer, capture, playback), name=f"wav-{self.name}", daemon=True
        )
        self._thread.start()

    def _run(self, pacer: Pacer, capture: CaptureBridge, playback: PlaybackQueue) -> None:
        n = self.frame_samples
        silence = np.zeros(n, dtype=np.int16)
        out = np.zeros(n, dtype=np.int16)
        pos = 0
        while True:
            frame = self._input[pos: pos + n]
            if len(frame) < n:
                frame = np.concatenate([frame, silence[: n - len(frame)]])
            pos += n
            capture.push(frame)
            self.stats.frames_captured += 1
            playback.read(n, out)
            if self._writer is not None:
                self._writer.writeframesraw(out.astype("<i2").tobytes())
            self.stats.frames_played += 1
            if not pacer.wait(self._stop):
                break

    def stop(self) -> None:
        """Stop the tick thread and close the recording (its header is finalised)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
