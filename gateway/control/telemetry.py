"""Telemetry: the box's own readings (CPU load and temperature) and the app's, every period.

Read once per telemetry period (10 s by default), on the loop: each system reading is one small
``/proc`` or ``/sys`` read that never blocks on hardware, None where the system has none.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.control import topics

log = logging.getLogger("gateway.control")

MAX_BACKLOG = 16
"""A period is skipped while the link holds more messages than this (a slow broker or network):
telemetry must not add to a queue that state, replies and alerts wait in."""

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
"""The SoC's temperature on a Raspberry Pi (millidegrees Celsius); absent in most containers and VMs."""


def load_1m() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except OSError:  # "load average not obtainable"
        return None


def cpu_temp_c(path: Path = THERMAL_ZONE) -> float | None:
    """The CPU temperature in °C from a thermal zone file, or None if absent or unreadable."""
    try:
        text = path.read_text(encoding="ascii").strip()
        value = int(text) / 1000
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return round(value, 1) if math.isfinite(value) else None


@dataclass
class TelemetryStats:
    """What became of the telemetry periods."""

    sent: int = 0
    skipped: int = 0
    """Periods not sent: the link's queue was long, or the message too large."""
    failures: int = 0
    """The app's ``source`` raised or returned something that isn't JSON (sent without it)."""


class Telemetry:
    """Paces one gateway's telemetry while a link is up, and builds each message.

    :meth:`start` when a link comes up, :meth:`stop` when it goes down: nothing is taken or queued
    in between, so telemetry is the first thing dropped. Each period it asks ``backlog()`` how many
    messages the link still holds, and skips the period past :data:`MAX_BACKLOG`.
    """

    def __init__(self, gateway_id: str, period_s: float, thermal_zone: Path = THERMAL_ZONE) -> None:
        if period_s <= 0:
            raise ValueError(f"telemetry period must be positive, got {period_s}")
        self.gateway_id = gateway_id
        self.period_s = period_s
        self.thermal_zone = thermal_zone
        self.source: Callable[[], Mapping[str, Any]] | None = None
        """The app's readings for each message (e.g. ``ports``, ``senders``), or None."""
        self.stats = TelemetryStats()
        self._timer: asyncio.TimerHandle | None = None
        self._send: Callable[[bytes], bool] | None = None
        self._backlog: Callable[[], int] = lambda: 0
        self._logged = False

    def start(self, send: Callable[[bytes], bool], backlog: Callable[[], int]) -> None:
        """Send a message every period from now on (the first one period from now), on the running
        loop: ``send`` publishes one (False if it couldn't), ``backlog`` counts what the link holds."""
        self.stop()
        self._send, self._backlog = send, backlog
        self._logged = False  # log a failing source once per link
        self._schedule(time.monotonic() + self.period_s)

    def stop(self) -> None:
        """No more telemetry until the next :meth:`start`."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._send = None

    def payload(self) -> bytes:
        """One telemetry message, read now: the system's readings and the app's."""
        def build(readings: Mapping[str, Any] | None) -> bytes:
            return topics.telemetry(self.gateway_id, at=time.time(), load_1m=load_1m(),
                                    cpu_temp_c=cpu_temp_c(self.thermal_zone), readings=readings)

        if self.source is None:
            return build(None)
        try:
            readings = self.source()
            if not isinstance(readings, Mapping):
                raise TypeError(f"telemetry source returned {type(readings).__name__}, not a mapping")
            return build(readings)
        except Exception:  # the app's readings must not stop the box's own
            self.stats.failures += 1
            if not self._logged:  # it runs every period: once per link is enough
                self._logged = True
                log.exception("telemetry readings failed; sending the system's only")
            return build(None)

    def _schedule(self, due: float) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, due - time.monotonic()), self._tick, due)

    def _tick(self, due: float) -> None:
        self._timer = None
        send = self._send
        if send is None:
            return
        # The next one is a period after this one was due (no drift with the send time); if the
        # loop fell behind, the missed periods are skipped, not sent in a burst.
        self._schedule(max(due + self.period_s, time.monotonic()))
        if self._backlog() > MAX_BACKLOG:
            self.stats.skipped += 1
            return
        payload = self.payload()
        if len(payload) > topics.MAX_TELEMETRY_BYTES:
            self.stats.skipped += 1
            log.debug("telemetry of %d bytes not sent (limit %d)", len(payload), topics.MAX_TELEMETRY_BYTES)
            return
        if send(payload):
            self.stats.sent += 1
