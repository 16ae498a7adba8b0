"""The ports as the control plane announces them: configuration plus live state, checked on the way in.

The app reports live changes (talking, receiving, talk group, emergency, volume, headset) from the voice
path; :class:`PortTable` records them, says whether anything changed (only changes are published), and
refuses, with a counter and one warning, any value the port state schema would refuse: the voice path
never gets an exception from here, and consoles never get a payload that fails its schema.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

from gateway.control import topics
from gateway.control.topics import Headset, PortInfo, PortLive

log = logging.getLogger("gateway.control")

MIN_VOLUME_DB = -40.0
MAX_VOLUME_DB = 12.0


class PortTable:
    """Every port of the gateway: its :class:`PortInfo` and current :class:`PortLive`."""

    def __init__(self, ports: Sequence[PortInfo]) -> None:
        self._info: dict[str, PortInfo] = {}
        for port in ports:
            if port.name in self._info:
                raise ValueError(f"port {port.name!r} is listed twice")
            if not topics.is_level(port.name):
                raise ValueError(f"port name {port.name!r} can't be an MQTT topic level")
            self._info[port.name] = port
        self._live = {name: PortLive(info.talk_group) for name, info in self._info.items()}
        self.unknown = 0
        """Changes reported for a port this gateway doesn't have (ignored)."""
        self.bad_values = 0
        """Values that can't be published (a NaN or out-of-range volume, a bad group name): ignored."""
        self._warned: set[tuple[str, str]] = set()

    def __iter__(self) -> Iterator[str]:
        return iter(self._info)

    def live(self, port: str) -> PortLive:
        """The live state of ``port`` (KeyError if there is none)."""
        return self._live[port]

    def payload(self, gateway_id: str, port: str) -> bytes:
        """The retained state message of ``port``."""
        return topics.port_state(gateway_id, self._info[port], self._live[port])

    def update(
        self, port: str, *, talking: bool | None = None, receiving: bool | None = None,
        talk_group: str | None = None, emergency: bool | None = None, volume_db: float | None = None,
    ) -> bool:
        """Record the values given (None: unchanged); True if the port's state changed."""
        old = self._known(port)
        if old is None:
            return False
        changes: dict[str, Any] = {}
        for key, value in (("talking", talking), ("receiving", receiving), ("emergency", emergency)):
            if value is not None:
                changes[key] = bool(value)
        if talk_group is not None:
            if isinstance(talk_group, str) and (talk_group == "" or topics.is_level(talk_group)):
                changes["talk_group"] = talk_group
            else:
                self._bad(port, "talk_group", talk_group)
        if volume_db is not None:
            if _number(volume_db) and MIN_VOLUME_DB <= volume_db <= MAX_VOLUME_DB:
                changes["volume_db"] = float(volume_db)
            else:
                self._bad(port, "volume_db", volume_db)
        return self._set(port, dataclasses.replace(old, **changes))

    def set_headset(self, port: str, headset: Headset | None) -> bool:
        """Record what the port's headset reports (None: unknown); True if that changed."""
        old = self._known(port)
        if old is None:
            return False
        if headset is not None and not all(_percent(value) for value in (headset.battery_pct,
                                                                          headset.link_quality)):
            self._bad(port, "headset", headset)
            return False
        return self._set(port, dataclasses.replace(old, headset=headset))

    def _known(self, port: str) -> PortLive | None:
        live = self._live.get(port)
        if live is None:
            self.unknown += 1
            self._warn(port, "", "state for unknown port %r ignored (have: %s)", port, ", ".join(self._info))
        return live

    def _set(self, port: str, new: PortLive) -> bool:
        if new == self._live[port]:
            return False
        self._live[port] = new
        return True

    def _bad(self, port: str, key: str, value: object) -> None:
        self.bad_values += 1
        self._warn(port, key, "port %r: %s=%r can't be published; keeping the last value", port, key, value)

    def _warn(self, port: str, key: str, message: str, *args: object) -> None:
        """Once per port and key at warning level, then at debug (this runs on the voice path)."""
        if (port, key) in self._warned or len(self._warned) >= 256:
            log.debug(message, *args)
            return
        self._warned.add((port, key))
        log.warning(message, *args)


def _percent(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
