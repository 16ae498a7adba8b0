"""The floors of a box's talk groups, and what their decisions do to its ports.

:mod:`gateway.control.floor` holds the rules (pure); this module applies them on the loop: it grants
or refuses a port's press, stamps the granted claim on the port's packets, feeds every received
packet's claim to its group's floor, decides which senders' audio is played (only the group's
talkers: a sender that lost the floor but hasn't heard yet is not played on any box), stops a port
that was preempted or timed out, plays the cues, and raises and clears emergencies.

An emergency call on a group is "raised" on every port of this box that listens to the group: an
emergency cue, and the group's audio goes ahead of every other group on that port's scan list
until the call ends. The box's ``on_alert`` hook (MQTT alert, log) hears each start and end.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.config import GroupSettings
from gateway.control.floor import (
    Claim,
    Denied,
    Event,
    FloorSettings,
    Granted,
    GroupFloor,
    Mode,
    Preempted,
    TalkersChanged,
    TotExpired,
    TotWarning,
)
from gateway.net.rtp import RtpPacket
from gateway.voice.port import Port

log = logging.getLogger(__name__)

TICK_S = 0.02
"""How often the floors' time-outs are checked (a frame)."""


def floor_settings(group: GroupSettings) -> FloorSettings:
    """A group's floor rules from its config."""
    return FloorSettings(Mode(group.mode), group.max_talkers, group.tot_s * 1000,
                         group.tot_warning_s * 1000, group.emergency_tot_s * 1000)


@dataclass
class FloorStats:
    """Counters of the floors (for the demo, telemetry and tests)."""

    granted: int = 0
    denied: int = 0
    preempted: int = 0
    timed_out: int = 0
    emergencies: int = 0
    bad_claims: int = 0
    """Authenticated packets whose claim element didn't decode (dropped, not played)."""
    muted_packets: int = 0
    """Packets of senders that don't hold the floor (not played)."""


class Floors:
    """One :class:`GroupFloor` per talk group; the :class:`~gateway.voice.port.FloorGate` of ports."""

    def __init__(
        self,
        groups: Sequence[GroupSettings],
        ports: Mapping[str, Port],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.floors = {g.name: GroupFloor(floor_settings(g), spurt_seed=secrets.randbits(16))
                       for g in groups}
        self.ports = dict(ports)
        self._local = {p.ssrc: p for p in self.ports.values()}
        self._clock = clock
        self._wall = wall_clock
        self.stats = FloorStats()
        self.emergencies: dict[str, Claim] = {}
        """Per group, the emergency call on the air now."""
        self.on_alert: Callable[[str, Claim, bool, bool], None] | None = None
        """Called with (group, claim, started, local) when an emergency starts or ends."""
        self.on_talkers: Callable[[str, tuple[Claim, ...]], None] | None = None
        """Called when a group's talkers change."""
        for port in self.ports.values():
            port.floor = self

    def _now_ms(self) -> float:
        return self._clock() * 1000

    # -- the FloorGate of the ports ------------------------------------------------------------

    def request(self, port: Port) -> bool:
        """``port`` wants to talk on its talk group now: True (and its claim set) when granted."""
        group = port.talk_group
        if group not in self.floors:
            return True  # no group to talk on: nothing to arbitrate (and nothing will be sent)
        events = self.floors[group].request(port.ssrc, port.priority, port.emergency, self._now_ms(),
                                            int(self._wall() * 1000))
        first, rest = events[0], events[1:]
        if isinstance(first, Granted):
            self.stats.granted += 1
            port.uplink.claim = first.claim.encode()
            port.uplink.end_claim = first.claim.encode(end=True)
        else:
            assert isinstance(first, Denied)
            self.stats.denied += 1
            port.cues.play("busy")
            log.info("port %s: %s refused on %s (busy: %s)", port.name,
                     "emergency call" if port.emergency else "talk", group,
                     ", ".join(f"{c.ssrc:#010x}" for c in first.by))
        self._handle(group, rest)
        return isinstance(first, Granted)

    def release(self, port: Port) -> None:
        """``port`` stopped talking by itself."""
        floor = self.floors.get(port.talk_group)
        if floor is not None:
            self._handle(port.talk_group, floor.release(port.ssrc, self._now_ms()))

    # -- packets -------------------------------------------------------------------------------

    def admit(self, group: str, packet: RtpPacket) -> bool:
        """Another box's packet on ``group``: its claim goes to the floor; True when its audio is
        to be played (its sender is one of the group's talkers, or it carries no claim)."""
        floor = self.floors.get(group)
        if floor is None or packet.claim is None:
            return True  # a sender without the floor extension: nothing to rank it by
        try:
            claim, end = Claim.decode(packet.claim, packet.ssrc)
        except ValueError:
            self.stats.bad_claims += 1
            return False
        self._handle(group, floor.heard(claim, self._now_ms(), end))
        if end or any(c.ssrc == packet.ssrc for c in floor.talkers()):
            return True  # (the end packets are silence: playing them keeps the stream whole)
        self.stats.muted_packets += 1
        return False

    def tick(self) -> None:
        """Time-outs and silent senders of every group (call every :data:`TICK_S`)."""
        now = self._now_ms()
        for group, floor in self.floors.items():
            self._handle(group, floor.tick(now))

    # -- what the decisions do -----------------------------------------------------------------

    def _handle(self, group: str, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Preempted):
                port = self._local.get(event.claim.ssrc)
                if port is not None:
                    self.stats.preempted += 1
                    port.stop_talking()
                    if not event.emergency:  # (an emergency's own cue says why, just after)
                        port.cues.play("busy")
                    log.info("port %s: stopped on %s by %s%s", port.name, group,
                             f"{event.by.ssrc:#010x}", " (emergency)" if event.emergency else "")
            elif isinstance(event, TotWarning):
                port = self._local.get(event.claim.ssrc)
                if port is not None:
                    port.cues.play("warning")
            elif isinstance(event, TotExpired):
                port = self._local.get(event.claim.ssrc)
                if port is not None:
                    self.stats.timed_out += 1
                    port.stop_talking()
                    port.cues.play("timeout")
                    log.info("port %s: transmission on %s timed out", port.name, group)
            elif isinstance(event, TalkersChanged):
                self._talkers_changed(group, event.talkers)

    def _talkers_changed(self, group: str, talkers: tuple[Claim, ...]) -> None:
        urgent = next((c for c in talkers if c.emergency), None)
        current = self.emergencies.get(group)
        if urgent is not None and (current is None or current.ssrc != urgent.ssrc
                                   or current.spurt != urgent.spurt):
            self.emergencies[group] = urgent
            self.stats.emergencies += 1
            self._raise(group, True)
            log.warning("EMERGENCY on %s from %#010x", group, urgent.ssrc)
            if self.on_alert is not None:
                self.on_alert(group, urgent, True, urgent.ssrc in self._local)
        elif urgent is None and current is not None:
            del self.emergencies[group]
            self._raise(group, False)
            log.warning("emergency on %s from %#010x ended", group, current.ssrc)
            if self.on_alert is not None:
                self.on_alert(group, current, False, current.ssrc in self._local)
        if self.on_talkers is not None:
            self.on_talkers(group, talkers)
        if not talkers:
            for port in self.ports.values():
                if port.talk_group == group:
                    port.floor_free()

    def _raise(self, group: str, on: bool) -> None:
        for port in self.ports.values():
            if group not in port.settings.groups:
                continue
            if on:
                port.downlink.urgent.add(group)
                if self.emergencies[group].ssrc != port.ssrc:
                    port.cues.play("emergency")
            else:
                port.downlink.urgent.discard(group)
