"""The audio-device seam: what a port needs from its sound hardware.

A device captures mono 16-bit frames of ``frame_samples`` at ``rate_hz`` in its own named thread and
hands each one to a :class:`~gateway.audio.bridge.CaptureBridge`; it plays what the loop wrote into
its :class:`~gateway.audio.bridge.PlaybackQueue`, reading exactly one frame per period (silence when
the queue runs dry, so the device never waits on the loop).  ``alsa.py`` is the real adapter,
``wav.py`` the stand-in used by the simulator and tests; ``app.py`` picks one from config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.audio.bridge import CaptureBridge, PlaybackQueue


@dataclass
class DeviceStats:
    """Counters a device keeps; read from the loop, written by device threads (ints are atomic)."""

    frames_captured: int = 0
    frames_played: int = 0
    capture_xruns: int = 0
    playback_xruns: int = 0
    reopens: int = 0
    errors: int = 0
    last_error: str = ""


class AudioDevice(Protocol):
    """A full-duplex mono audio endpoint driven by its own threads."""

    name: str
    rate_hz: int
    frame_samples: int
    stats: DeviceStats

    def start(self, capture: CaptureBridge, playback: PlaybackQueue) -> None:
        """Start the device threads: captured frames go to ``capture``, playback is read from ``playback``."""

    def stop(self) -> None:
        """Stop the threads and release the device; safe to call twice."""
