"""ALSA audio device over pyalsaaudio: a sound card, a HAT, or a bluez-alsa headset PCM.

Capture and playback are separate PCMs, each owned by one named thread (``alsa-cap-<name>``,
``alsa-play-<name>``) that opens it, moves one period at a time, and supervises it:

- xruns (capture overrun, playback underrun) are recovered in place and counted;
- any other error (a USB card unplugged, a headset walked away) closes that PCM, counts the error and
  reopens it with jittered exponential backoff until it comes back or :meth:`AlsaDevice.stop` is
  called; failing to open at start is handled the same way, so a headset paired later just starts
  working.  Nothing is raised into the loop, and one port's device never affects another's.

Playback never waits on the loop: it reads one period from the
:class:`~gateway.audio.bridge.PlaybackQueue` per period and plays silence when it is empty.  With
``pace_realtime`` each thread also waits on a :class:`~gateway.audio.pacing.Pacer` after every frame,
for ALSA PCMs that don't pace themselves (the file/null PCMs of :mod:`gateway.audio.alsa_file`).
Both Pacers start at ``started_at``, so that is sample 0 of both timelines.

pyalsaaudio behaviour this relies on, checked against its 0.11 source and changelog
(https://github.com/larsimmisch/pyalsaaudio/blob/main/CHANGES.md):

- ``PCM.read()`` returns ``(-EPIPE, b"")`` on overrun and ``PCM.write()`` returns ``-EPIPE`` on underrun,
  both after calling ``snd_pcm_prepare`` themselves, so the next call just works.  0.10.0 raised
  ``ALSAAudioError`` from ``write()`` on underrun instead, leaving the PCM in the XRUN state
  (https://github.com/larsimmisch/pyalsaaudio/issues/130), and its ``read()`` missed overruns; both
  forms are handled.  There is no ``prepare()``: after ``drop()`` the next ``read()``/``write()``
  prepares the stream itself (checked at runtime with 0.11).
- Every other failure raises ``ALSAAudioError("<strerror> [<device>]")``.
- ``PCM()`` asks for the rate, period size and periods with ALSA's ``*_near`` setters and ignores a
  refused format or channel count, so what was granted has to be read back from ``PCM.info()``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import alsaaudio
import numpy as np

from gateway.audio.bridge import CaptureBridge, Frame, PlaybackQueue
from gateway.audio.device import DeviceStats
from gateway.audio.pacing import Pacer
from gateway.backoff import Backoff
from gateway.errors import DeviceError

log = logging.getLogger(__name__)

_DEVICE_ERRORS = (alsaaudio.ALSAAudioError, OSError)
"""What a device thread treats as "the device failed" (DeviceError is an OSError)."""

_MAX_XRUN_STREAK = 16
"""Xruns in a row without one good transfer: the device is wedged, so reopen it instead."""

_JOIN_S = 2.0


class Pcm(Protocol):
    """The part of ``alsaaudio.PCM`` this module uses (the seam for tests that need xruns)."""

    def read(self) -> tuple[int, bytes]:
        """One period of capture as (frames or -EPIPE, data)."""

    def write(self, data: Frame) -> int:
        """Queue samples for playback; frames written or -EPIPE."""

    def info(self) -> dict[str, Any]:
        """The granted parameters (``rate``, ``channels``, ``format``, ``period_size`` ...)."""

    def state(self) -> int:
        """The ``PCM_STATE_*`` the stream is in."""

    def drop(self) -> int:
        """Stop the stream, discarding pending frames."""

    def close(self) -> None:
        """Release the device."""


PcmFactory = Callable[..., Pcm]
"""Called like ``alsaaudio.PCM(type=, mode=, device=, channels=, rate=, format=, periodsize=, periods=)``."""


class AlsaDevice:
    """Full-duplex mono S16_LE device over two ALSA PCMs, each kept open by its own thread."""

    def __init__(
        self,
        name: str,
        capture_device: str,
        playback_device: str,
        rate_hz: int,
        frame_samples: int,
        *,
        pace_realtime: bool = False,
        periods: int = 4,
        reopen_min_s: float = 0.5,
        reopen_max_s: float = 10.0,
        pcm_factory: PcmFactory | None = None,
    ) -> None:
        if rate_hz <= 0 or frame_samples <= 0 or periods < 2:
            raise ValueError(f"audio device {name!r}: bad rate, frame size or periods")
        if not 0 < reopen_min_s <= reopen_max_s:
            raise ValueError(f"audio device {name!r}: need 0 < reopen_min_s <= reopen_max_s")
        self.name = name
        self.capture_device = capture_device
        self.playback_device = playback_device
        self.rate_hz = rate_hz
        self.frame_samples = frame_samples
        self.stats = DeviceStats()
        self.started_at = 0.0
        """Monotonic time of sample 0 of both streams (exact when paced, open latency aside otherwise)."""
        self._pace_realtime = pace_realtime
        self._periods = periods
        self._reopen_min_s = reopen_min_s
        self._reopen_max_s = reopen_max_s
        self._pcm_factory: PcmFactory = pcm_factory or alsaaudio.PCM
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Only the rare error counters are shared by both threads; per-frame counters are not.
        self._stats_lock = threading.Lock()

    def start(self, capture: CaptureBridge, playback: PlaybackQueue) -> None:
        """Start the capture and playback threads; they open the PCMs (and keep retrying) themselves."""
        if any(t.is_alive() for t in self._threads):
            raise RuntimeError(f"audio device {self.name!r} is already running")
        self._stop.clear()
        self.started_at = time.monotonic()
        capture_io = functools.partial(self._capture, capture=capture, device=self.capture_device)
        playback_io = functools.partial(self._playback, playback=playback, device=self.playback_device)
        self._threads = [
            threading.Thread(target=self._supervise, args=("capture", self.capture_device, capture_io),
                             name=f"alsa-cap-{self.name}", daemon=True),
            threading.Thread(target=self._supervise, args=("playback", self.playback_device, playback_io),
                             name=f"alsa-play-{self.name}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop both threads (joined within ~2 s) and close the PCMs; safe to call twice."""
        self._stop.set()
        deadline = time.monotonic() + _JOIN_S
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        # A thread can only still be here if the device itself blocks a transfer (a wedged driver):
        # it is a daemon and exits when the call returns; start() refuses to run beside it.
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:
            log.warning("%s: %s still blocked in the device after %.0f s",
                        self.name, ", ".join(t.name for t in self._threads), _JOIN_S)

    # -- one thread per direction ---------------------------------------------------------------

    def _supervise(
        self, direction: str, device: str, transfer: Callable[[Pcm, Pacer | None], None]
    ) -> None:
        """Open, transfer until stopped, and on failure close and reopen with backoff."""
        period_s = self.frame_samples / self.rate_hz
        # Both threads share started_at, so capture and playback timelines line up sample for sample.
        pacer = Pacer(period_s, start_at=self.started_at) if self._pace_realtime else None
        backoff = Backoff(self._reopen_min_s, self._reopen_max_s)
        # A failure streak lasts until the PCM has stayed up for reopen_max_s: a device that opens
        # and fails at once keeps backing off and is logged once, not once per cycle.
        failures = 0
        told_recovered = False
        while not self._stop.is_set():
            try:
                pcm = self._open(direction, device)
            except _DEVICE_ERRORS as exc:
                failures += 1
                self._count_error(direction, device, exc, log_it=failures == 1)
                if self._stop.wait(backoff.next()):
                    break
                continue
            if failures:
                with self._stats_lock:
                    self.stats.reopens += 1
                if not told_recovered:
                    told_recovered = True
                    log.info("%s: %s PCM %r is open again", self.name, direction, device)
            opened_at = time.monotonic()
            try:
                transfer(pcm, pacer)
            except _DEVICE_ERRORS as exc:
                if time.monotonic() - opened_at >= self._reopen_max_s:
                    failures = 0
                    told_recovered = False
                    backoff.reset()
                failures += 1
                self._count_error(direction, device, exc, log_it=failures == 1)
            finally:
                _close(pcm)
            if failures and self._stop.wait(backoff.next()):
                break

    def _open(self, direction: str, device: str) -> Pcm:
        pcm = self._pcm_factory(
            type=alsaaudio.PCM_CAPTURE if direction == "capture" else alsaaudio.PCM_PLAYBACK,
            # Blocking mode: the device's clock paces the thread, which is all it ever waits on.
            mode=alsaaudio.PCM_NORMAL,
            device=device,
            channels=1,
            rate=self.rate_hz,
            format=alsaaudio.PCM_FORMAT_S16_LE,
            periodsize=self.frame_samples,
            periods=self._periods,
        )
        try:
            _check_granted(device, pcm.info(), self.rate_hz)
        except BaseException:
            _close(pcm)
            raise
        return pcm

    def _count_error(self, direction: str, device: str, exc: BaseException, *, log_it: bool) -> None:
        with self._stats_lock:
            self.stats.errors += 1
            self.stats.last_error = f"{direction} {device!r}: {exc}"
        if log_it:
            log.warning("%s: %s PCM %r failed (%s); retrying every %g-%g s until it is back",
                        self.name, direction, device, exc, self._reopen_min_s, self._reopen_max_s)

    def _capture(self, pcm: Pcm, pacer: Pacer | None, *, capture: CaptureBridge, device: str) -> None:
        n = self.frame_samples
        # Only used when the device's period isn't one frame. "<i2" is the wire format (S16_LE),
        # whatever the host's byte order.
        frame = np.zeros(n, dtype="<i2")
        fill = 0
        xruns = 0
        while not self._stop.is_set():
            try:
                length, data = pcm.read()
            except alsaaudio.ALSAAudioError:
                if not _recover_xrun(pcm):
                    raise
                length, data = -errno.EPIPE, b""
            if length == -errno.EPIPE:
                # Overrun: the device dropped samples we didn't read in time; pyalsaaudio has
                # re-prepared the stream. Start the next frame clean rather than splice across the gap.
                self.stats.capture_xruns += 1
                fill = 0
                xruns += 1
                if xruns > _MAX_XRUN_STREAK:
                    raise DeviceError(device, f"{xruns} capture overruns in a row")
                continue
            if length <= 0:
                # 0 is -EAGAIN, which PCM_NORMAL never returns: don't spin on a confused device.
                raise DeviceError(device, f"read returned {length}")
            xruns = 0
            samples = np.frombuffer(data, dtype="<i2")
            if fill == 0 and len(samples) == n:
                if not self._emit(samples, capture, pacer):  # the bridge copies it
                    return
                continue
            # The device granted another period size: regroup into frames of frame_samples.
            pos = 0
            while pos < len(samples):
                take = min(n - fill, len(samples) - pos)
                frame[fill: fill + take] = samples[pos: pos + take]
                fill += take
                pos += take
                if fill == n:
                    fill = 0
                    if not self._emit(frame, capture, pacer):
                        return

    def _emit(self, frame: Frame, capture: CaptureBridge, pacer: Pacer | None) -> bool:
        """Hand one captured frame to the loop, then wait for the next period if paced; False to stop."""
        capture.push(frame)
        self.stats.frames_captured += 1
        return pacer is None or pacer.wait(self._stop)

    def _playback(self, pcm: Pcm, pacer: Pacer | None, *, playback: PlaybackQueue, device: str) -> None:
        n = self.frame_samples
        out = np.zeros(n, dtype="<i2")  # S16_LE on any host; PlaybackQueue.read converts into it
        while not self._stop.is_set():
            playback.read(n, out)  # silence when the loop has nothing queued: never wait on it
            self._write_frame(pcm, out, device)
            self.stats.frames_played += 1
            if pacer is not None and not pacer.wait(self._stop):
                return

    def _write_frame(self, pcm: Pcm, out: Frame, device: str) -> None:
        done = 0
        xruns = 0
        while done < len(out):
            try:
                written = pcm.write(out[done:] if done else out)
            except alsaaudio.ALSAAudioError:
                if not _recover_xrun(pcm):
                    raise
                written = -errno.EPIPE
            if written == -errno.EPIPE:
                # Underrun: the device ran dry before this write and the stream has been re-prepared;
                # nothing of this frame was written, so write it again (it restarts the stream).
                self.stats.playback_xruns += 1
                xruns += 1
                if xruns > _MAX_XRUN_STREAK:
                    raise DeviceError(device, f"{xruns} playback underruns in a row")
                continue
            if written <= 0:
                raise DeviceError(device, f"write returned {written}")
            # A blocking write returns short only when interrupted: write the rest.
            done += written


def _check_granted(device: str, info: Mapping[str, Any], rate_hz: int) -> None:
    # pyalsaaudio uses snd_pcm_hw_params_set_rate_near() and ignores a refused format or channel
    # count, so a device that can't do what we asked opens fine with something else.
    if info.get("rate") != rate_hz:
        raise DeviceError(device, f"granted {info.get('rate')} Hz, not {rate_hz} Hz "
                                  "(set the port's device_rate_hz to a rate this PCM supports)")
    if info.get("channels") != 1:
        raise DeviceError(device, f"granted {info.get('channels')} channels, not mono")
    if info.get("format") != alsaaudio.PCM_FORMAT_S16_LE:
        raise DeviceError(device, f"granted format {info.get('format_name')}, not S16_LE")


def _recover_xrun(pcm: Pcm) -> bool:
    """After ``ALSAAudioError``: if it was an xrun (pyalsaaudio 0.10 raised these), recover; else False."""
    try:
        if pcm.state() != alsaaudio.PCM_STATE_XRUN:
            return False
        # pyalsaaudio has no prepare(); drop() moves XRUN -> SETUP and its next read()/write()
        # prepares a stream found in SETUP before transferring.
        pcm.drop()
    except alsaaudio.ALSAAudioError:
        return False
    return True


def _close(pcm: Pcm) -> None:
    # pyalsaaudio's close() drains a playback PCM first, which waits for the whole buffer to play and
    # can hang on a device that has gone away; drop() discards instead. The file plugin still
    # flushes what it buffered on drop (checked with alsa-lib 1.2.8).
    with contextlib.suppress(alsaaudio.ALSAAudioError):
        pcm.drop()
    with contextlib.suppress(alsaaudio.ALSAAudioError):
        pcm.close()
