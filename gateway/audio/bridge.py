"""The one place audio crosses between device threads and the asyncio loop.

Capture: a device thread calls :meth:`CaptureBridge.push` with a frame; the frame is copied into a
bounded deque and the loop is woken with ``call_soon_threadsafe`` to hand frames to the port.
Playback: the loop calls :meth:`PlaybackQueue.write`; the device thread calls
:meth:`PlaybackQueue.read` once per period and gets exactly one period (zero-padded on underrun).
Both queues are bounded, drop the oldest audio when full and count what they dropped: a stalled loop
costs a glitch, never unbounded delay.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.int16]


class CaptureBridge:
    """Device thread -> loop, for captured frames."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        handler: Callable[[Frame], None],
        max_frames: int = 8,
    ) -> None:
        self._loop = loop
        self._handler = handler
        self._frames: collections.deque[Frame] = collections.deque(maxlen=max_frames)
        self._lock = threading.Lock()
        self._scheduled = False
        self.dropped = 0
        """Frames dropped because the loop fell more than ``max_frames`` behind."""

    def push(self, frame: Frame) -> None:
        """Called from the device thread: queue a copy and wake the loop (never blocks on it)."""
        copy = np.array(frame, dtype=np.int16, copy=True)
        with self._lock:
            if len(self._frames) == self._frames.maxlen:
                self.dropped += 1
            self._frames.append(copy)
            if self._scheduled:
                return
            self._scheduled = True
        # A loop closed during shutdown raises RuntimeError: there is nothing left to deliver to.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            frames = list(self._frames)
            self._frames.clear()
            self._scheduled = False
        for frame in frames:
            self._handler(frame)


class PlaybackQueue:
    """Loop -> device thread, as a bounded sample FIFO read one period at a time."""

    def __init__(self, max_samples: int) -> None:
        self._buf = np.zeros(max_samples, dtype=np.int16)
        self._len = 0
        self._lock = threading.Lock()
        self.dropped_samples = 0
        """Samples dropped (oldest first) because more than ``max_samples`` were queued."""
        self.underruns = 0
        """Reads that found less than a period queued and were padded with silence."""

    @property
    def queued(self) -> int:
        """Samples waiting to be played."""
        return self._len

    def write(self, samples: Frame) -> None:
        """Called from the loop: append samples, dropping the oldest if the queue would overflow."""
        n = len(samples)
        cap = len(self._buf)
        with self._lock:
            if n >= cap:
                self.dropped_samples += self._len + n - cap
                self._buf[:] = samples[n - cap:]
                self._len = cap
                return
            overflow = self._len + n - cap
            if overflow > 0:
                self.dropped_samples += overflow
                self._buf[: self._len - overflow] = self._buf[overflow: self._len]
                self._len -= overflow
            self._buf[self._len: self._len + n] = samples
            self._len += n

    def read(self, n: int, out: Frame | None = None) -> Frame:
        """Called from the device thread: exactly ``n`` samples, silence-padded if short."""
        if out is None:
            out = np.zeros(n, dtype=np.int16)
        with self._lock:
            take = min(n, self._len)
            out[:take] = self._buf[:take]
            out[take:] = 0
            self._buf[: self._len - take] = self._buf[take: self._len]
            self._len -= take
            # An idle queue is not an underrun; a partial period in the middle of audio is.
            if 0 < take < n:
                self.underruns += 1
        return out

    def clear(self) -> None:
        """Forget queued audio."""
        with self._lock:
            self._len = 0
