"""The composition root: builds one box from its Config and runs it until cancelled.

Only this module picks real adapters or stand-ins (ALSA or WAV devices, gpiozero's native or mock pin
factory), from config or from what a caller injects. The daemon (``gateway run``) and the simulator
(``gateway demo``) run this same class.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import pylibsrtp

import gateway
from gateway.audio.device import AudioDevice
from gateway.audio.wav import WavDevice
from gateway.config import PROCESSING_RATE_HZ, Config, GroupSettings, PortSettings
from gateway.control import topics
from gateway.control.client import ControlPlane
from gateway.control.commands import Commands
from gateway.control.floor import Claim
from gateway.control.local import ControlSocket, socket_path
from gateway.control.topics import PortInfo
from gateway.errors import ConfigError
from gateway.gpio.panel import Panel, make_pin_factory
from gateway.net import rtp
from gateway.net.announce import Report
from gateway.net.keys import load_secret
from gateway.net.srtp import GroupSecurity
from gateway.net.udp import UdpTransport
from gateway.system.heap import frozen_heap
from gateway.system.notify import Notifier
from gateway.voice.fec import FecPolicy, Protection
from gateway.voice.floors import TICK_S, Floors
from gateway.voice.port import Port, port_ssrc

log = logging.getLogger(__name__)

#: How often the box measures reception and revisits its senders' FEC.
ADAPT_PERIOD_S = 1.0
#: Reports cover this many periods (the announcements that carry them go out every 2 s).
REPORT_WINDOWS = 2
#: A listener's report older than this no longer counts for FEC.
REPORT_MAX_AGE_S = 6.0

_AUTO: Any = object()


def make_device(settings: PortSettings, frame_ms: int) -> AudioDevice:
    """The device a port's config asks for."""
    frame = settings.device_rate_hz * frame_ms // 1000
    if settings.backend == "wav":
        return WavDevice(
            settings.name, settings.device_rate_hz, frame, settings.wav_input, settings.wav_output
        )
    from gateway.audio.alsa import AlsaDevice  # imported here: libasound only where it's used

    return AlsaDevice(
        settings.name, settings.capture_device, settings.playback_device,
        settings.device_rate_hz, frame, pace_realtime=settings.pace_realtime,
    )


class App:
    """One gateway: its ports, voice transport, control plane, panel and service notifications."""

    def __init__(
        self,
        config: Config,
        *,
        devices: Mapping[str, AudioDevice] | None = None,
        pin_factory: Any = _AUTO,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        gw = config.gateway
        # Every group's secret first: a box that can't authenticate a group must not start on it.
        security = {g.name: GroupSecurity(g.name, load_secret(g.name, g.secret, gw.state_dir))
                    for g in config.groups}
        self.ports: dict[str, Port] = {}
        for ps in config.ports:
            device = (devices or {}).get(ps.name) or make_device(ps, config.codec.frame_ms)
            # Random starting points (RFC 3550 section 5.1); the SRTP key is fresh per start anyway.
            first_seq = secrets.randbits(16)
            port = Port(
                ps, config.codec, config.network, device,
                ssrc=port_ssrc(gw.site, gw.id, ps.name),
                send=self._send,
                initial_sequence=first_seq,
                initial_timestamp=secrets.randbits(32),
            )
            self.ports[ps.name] = port
            # A sender on every group the port may select, so listeners know its key before it
            # first talks there.
            for group in ps.groups:
                security[group].add_sender(port.ssrc, first_seq)
        self.floors = Floors(config.groups, self.ports)
        self.transport = UdpTransport(
            config.network, config.groups, config.codec.payload_type, self._on_packet,
            security, own_ssrcs={p.ssrc for p in self.ports.values()},
        )
        self.protect_errors = 0
        self._fec = {name: FecPolicy(Protection(config.codec.fec, config.codec.expected_loss_pct))
                     for name in self.ports}
        self._reception: dict[str, list[dict[int, tuple[int, int, float]]]] = {
            g.name: [] for g in config.groups}
        for g in config.groups:
            security[g.name].reports = functools.partial(self._reports_for, g.name)
        self.commands = Commands(self, reload=self.reload_from_source)
        self.control: ControlPlane | None = None
        if config.mqtt.enabled:
            self.control = ControlPlane(
                config.mqtt, gw,
                [PortInfo(p.name, p.talk_mode, p.groups, self.ports[p.name].talk_group, p.priority)
                 for p in config.ports],
                will_delay_s=config.mqtt.will_delay_s,
                telemetry_period_s=config.mqtt.telemetry_period_s,
            )
            self.control.on_link = self._link_changed
            self.control.on_command = self.commands.handle_bytes
            self.control.telemetry_source = self._telemetry
            self.floors.on_alert = self._alert
            # Announcements also go through the broker (retained), so boxes that share a broker
            # but not a LAN segment, or whose multicast is filtered, still learn each other's keys.
            self.control.on_announcement = self.transport.announcement_received
            self.transport.on_announced = self.control.publish_announcement
            # Wide-area groups: the same SRTP packets also go through the broker to other sites,
            # and theirs come back through the same checks as the LAN's.
            self.control.wan_groups = tuple(g.name for g in config.groups if g.wan)
            self.control.on_voice = functools.partial(self.transport.datagram_received,
                                                      source="MQTT")
        factory = make_pin_factory(config.gpio.pin_factory) if pin_factory is _AUTO else pin_factory
        self.panel = Panel(config.gpio, config.ports, pin_factory=factory)
        self.notifier = notifier or Notifier()
        self.ready = asyncio.Event()
        """Set once every device and socket is up (the simulator and tests wait on it)."""
        self.local_deliveries = 0
        self.started_at = time.time()
        self.config_loader: Callable[[], Config] | None = None
        """Reads the configuration again (set by ``gateway run``) for reloads by SIGHUP or command."""
        # The local control socket lives in the state directory (none: a simulated box).
        self.control_socket = (ControlSocket(socket_path(gw.state_dir), self.commands)
                               if gw.state_dir else None)
        self._sent_when_left: dict[tuple[str, str], int] = {}

    def press(self, port: str, pressed: bool) -> None:
        """Push-to-talk on ``port`` (from a button, a script or the console)."""
        self.ports[port].set_ptt(pressed)

    def select_group(self, port: str, group: str) -> None:
        """Make ``port`` talk on ``group`` (one of its groups); ValueError if it isn't."""
        p = self.ports[port]
        if group not in p.settings.groups:
            have = ", ".join(p.settings.groups)
            raise ValueError(f"port {port} has no group {group!r} (has: {have})")
        if group != p.talk_group:
            sec = self.transport.security[group]
            # The port's sequence numbers ran on while it talked elsewhere; an SRTP session idle
            # for half the sequence space can't tell how often they wrapped, so it gets a fresh
            # epoch (key) rather than risk reusing an index.
            sent = p.uplink.rtp.packets_sent
            if sent - self._sent_when_left.get((port, group), 0) >= 0x8000 - 1000:
                sec.add_sender(p.ssrc, p.uplink.rtp.next_sequence)
            self._sent_when_left[(port, p.talk_group)] = sent
        p.select_group(group)

    def cycle_group(self, port: str) -> None:
        """The port's group button: talk on the next of its groups (after the last, the first)."""
        p = self.ports[port]
        groups = p.settings.groups
        if groups:
            self.select_group(port, groups[(groups.index(p.talk_group) + 1) % len(groups)])

    def toggle_emergency(self, port: str) -> None:
        """The port's emergency button (long press): start an emergency call, or end it."""
        self.emergency(port, not self.ports[port].emergency)

    def emergency(self, port: str, on: bool) -> None:
        """Start (or cancel) an emergency call from ``port`` on its talk group: it transmits, ahead
        of everyone, until cancelled or its time-out (``groups.NAME.emergency_tot_s``)."""
        self.ports[port].set_emergency(on)

    async def run(self) -> None:
        """Run the box until cancelled; clean up everything on the way out."""
        loop = asyncio.get_running_loop()
        with frozen_heap():  # before any audio flows: see gateway.system.heap
            await self._run(loop)

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            if self.control_socket is not None:
                await self.control_socket.start()  # first: a second daemon here stops at once
            await self.transport.start()
            for port in self.ports.values():
                port.on_change = self._port_changed
                port.start(loop)
            self.panel.start(loop, self.press, on_select=self.cycle_group,
                             on_emergency=self.toggle_emergency)
            # LAN-only mode is a healthy state: the power LED shows solid, not "broker lost".
            self.panel.set_link(self.control is None)
            async with asyncio.TaskGroup() as tg:
                if self.control is not None:
                    tg.create_task(self.control.run(), name="mqtt")
                tg.create_task(self.notifier.watchdog(self._healthy), name="watchdog")
                tg.create_task(self.transport.announce_forever(), name="announce")
                tg.create_task(self._adapt_forever(), name="adapt-fec")
                tg.create_task(self._floors_forever(), name="floors")
                if self.control_socket is not None:
                    tg.create_task(self.control_socket.run(), name="control-socket")
                if self.config.network.advertise:
                    tg.create_task(self._advertise(), name="dns-sd")
                self.notifier.ready()
                self.notifier.status(self._status())
                self.ready.set()
                log.info("gateway %s up: %s", self.config.gateway.id, self._status())
                await asyncio.Future()  # until cancelled
        finally:
            self.notifier.stopping()
            if self.control_socket is not None:
                self.control_socket.close()
            for port in self.ports.values():
                port.stop()
            self.panel.close()
            self.transport.close()

    def _send(self, group: str, datagram: bytes) -> None:
        """A port's packet: to the network (SRTP), and straight to this box's other ports in the
        group (they share the box, so no crypto between them)."""
        try:
            protected = self.transport.security[group].protect(datagram)
            self.transport.send(group, protected)
            if self.control is not None and group in self.control.wan_groups:
                self.control.publish_voice(group, protected)
        except (KeyError, pylibsrtp.Error) as exc:  # a sender not keyed for this group: a bug
            self.protect_errors += 1
            if self.protect_errors == 1:
                log.error("voice packet for %r not sent: cannot protect it (%s)", group, exc)
        listeners = [p for p in self.ports.values() if group in p.settings.groups]
        if len(listeners) > 1:
            packet = rtp.parse(datagram, self.config.codec.payload_type)
            if isinstance(packet, rtp.RtpPacket):
                self.local_deliveries += 1
                for port in listeners:
                    port.receive(group, packet)

    def reload_from_source(self) -> list[str]:
        """Read the configuration again and apply it (:meth:`reload`); ConfigError if it is bad
        (the running configuration stays)."""
        if self.config_loader is None:
            raise ConfigError("(none)", "", "this gateway was not started from a configuration file")
        rekeyed = self.reload(self.config_loader())
        log.info("configuration reloaded: %s", ", ".join(f"group {g} re-keyed" for g in rekeyed)
                 or "no secret changed")
        return rekeyed

    def status(self) -> dict[str, Any]:
        """What ``gateway status`` shows: the box, its ports and its groups, now."""
        gw = self.config.gateway
        return {
            "gateway": gw.id, "site": gw.site, "version": gateway.__version__,
            "uptime_s": round(time.time() - self.started_at, 1),
            "broker": ("lan-only" if self.control is None
                       else "linked" if self.control.connected else "unreachable"),
            "ports": {name: {
                "talk_mode": p.settings.talk_mode, "groups": list(p.settings.groups),
                "talk_group": p.talk_group, "priority": p.priority,
                "transmitting": p.transmitting, "receiving": p.receiving,
                "emergency": p.emergency, "volume_db": p.volume_db,
            } for name, p in self.ports.items()},
            "groups": {name: {
                "mode": floor.settings.mode.value,
                "talkers": [f"{c.ssrc:#010x}" for c in floor.talkers()],
                "emergency": (f"{self.floors.emergencies[name].ssrc:#010x}"
                              if name in self.floors.emergencies else None),
            } for name, floor in self.floors.floors.items()},
        }

    def reload(self, config: Config) -> list[str]:
        """Apply what can change while running: talk-group secrets (a rotation). Each group whose
        secret changed gets new keys and new epochs for its senders, and announces them; the other
        groups, the ports and their devices carry on untouched. Returns the groups re-keyed; other
        changes are logged as needing a restart."""
        rekeyed = []
        for g in config.groups:
            old = self.transport.security.get(g.name)
            if old is None:
                continue
            secret = load_secret(g.name, g.secret, config.gateway.state_dir)
            if old.uses_secret(secret):
                continue
            sec = GroupSecurity(g.name, secret)
            for port in self.ports.values():
                if g.name in port.settings.groups:
                    sec.add_sender(port.ssrc, port.uplink.rtp.next_sequence)
            sec.reports = functools.partial(self._reports_for, g.name)
            self.transport.replace_security(g.name, sec)
            rekeyed.append(g.name)
            log.info("talk group %s: new secret, new keys announced", g.name)
        if _without_secrets(config) != _without_secrets(self.config):
            log.warning("reload: only talk-group secrets change while running; restart the gateway "
                        "to apply the other changes")
        self.config = dataclasses.replace(
            self.config, groups=tuple(
                dataclasses.replace(g, secret=new.secret)
                for g, new in zip(self.config.groups, _matching(self.config, config), strict=True)))
        return rekeyed

    async def _advertise(self) -> None:
        """Announce the box by DNS-SD until cancelled; a LAN without multicast only costs a
        warning (voice and the broker don't depend on it)."""
        from zeroconf import InterfaceChoice

        from gateway.control.discovery import Advertiser, DiscoveryError

        bind = self.config.network.bind_address
        interfaces = [bind] if bind != "0.0.0.0" else InterfaceChoice.All
        m = self.config.mqtt
        advertiser = Advertiser.from_config(
            self.config, interfaces=interfaces,
            broker_port=m.port if m.enabled and m.advertise_broker else None)
        try:
            await advertiser.start()
        except DiscoveryError as exc:
            log.warning("not announced by DNS-SD: %s", exc)
            return
        try:
            await asyncio.Future()
        finally:
            await advertiser.close()

    async def _floors_forever(self) -> None:
        """Every frame: the floors' time-outs and silent senders."""
        while True:
            await asyncio.sleep(TICK_S)
            self.floors.tick()

    async def _adapt_forever(self) -> None:
        """Once a second: measure what this box hears from each sender (for the reports our
        announcements carry) and set each of our senders' FEC from what its listeners report."""
        while True:
            await asyncio.sleep(ADAPT_PERIOD_S)
            self.adapt(time.monotonic())

    def adapt(self, now_s: float) -> None:
        """One step of :meth:`_adapt_forever` (tests call it with their own clock)."""
        for group, windows in self._reception.items():
            window: dict[int, tuple[int, int, float]] = {}
            for port in self.ports.values():
                if group not in port.settings.groups:
                    continue
                for ssrc, r in port.downlink.reception_report().items():
                    if r["frames"] and port.downlink.senders[ssrc].stats.group == group:
                        frames, lost, jitter = window.get(ssrc, (0, 0, 0.0))
                        window[ssrc] = (max(frames, r["frames"]), max(lost, r["lost"]),
                                        max(jitter, r["jitter_ms"]))
            windows.append(window)
            del windows[:-REPORT_WINDOWS]
        if not self.config.codec.adaptive_fec:
            return
        for name, port in self.ports.items():
            sec = self.transport.security.get(port.talk_group)
            if sec is None:
                continue
            heard = sec.listener_reports(port.ssrc, now_s, REPORT_MAX_AGE_S)
            worst = max((r.loss for r in heard), default=None)
            before = self._fec[name].current
            now = self._fec[name].update(worst, now_s)
            if now != before:
                port.uplink.encoder.set_loss_protection(now.fec, now.expected_loss_pct)
            if now.fec != before.fec:
                log.info("port %s: FEC %s (expected loss %d%%; worst listener loss %.1f%%)", name,
                         "on" if now.fec else "off", now.expected_loss_pct, 100 * (worst or 0))

    def _reports_for(self, group: str) -> list[Report]:
        """Reception reports for ``group``: loss and jitter per sender over the last windows."""
        totals: dict[int, tuple[int, int, float]] = {}
        for window in self._reception.get(group, []):
            for ssrc, (frames, lost, jitter) in window.items():
                f, lo, _ = totals.get(ssrc, (0, 0, 0.0))
                totals[ssrc] = (f + frames, lo + lost, jitter)
        return [Report(ssrc, lost / frames, jitter) for ssrc, (frames, lost, jitter) in totals.items()
                if frames]

    def _on_packet(self, group: str, packet: rtp.RtpPacket) -> None:
        if not self.floors.admit(group, packet):
            return
        for port in self.ports.values():
            if group in port.settings.groups:
                port.receive(group, packet)

    def _port_changed(self, port: Port) -> None:
        self.panel.set_tx(port.name, port.transmitting)
        self.panel.set_rx(port.name, port.receiving)
        if self.control is not None:
            self.control.set_port_state(
                port.name, talking=port.transmitting, receiving=port.receiving,
                talk_group=port.talk_group, emergency=port.emergency, volume_db=port.volume_db,
            )

    def _alert(self, group: str, claim: Claim, started: bool, local: bool) -> None:
        """An emergency started or ended on a group: published as an alert (MQTT), from every box
        that saw it, naming the port when it is one of ours."""
        if self.control is None:
            return
        port = next((p.name for p in self.ports.values() if p.ssrc == claim.ssrc), None)
        self.control.publish_alert(topics.emergency_alert(
            self.config.gateway.id, state="started" if started else "ended", port=port, group=group,
            ssrc=claim.ssrc, at=time.time()))

    def _telemetry(self) -> dict[str, Any]:
        """What the box adds to its telemetry: xruns and catch-ups (ticks of playback delay shed after
        the box stalled) per port, loss and jitter per sender heard."""
        ports: dict[str, Any] = {}
        senders: dict[str, Any] = {}
        for name, port in self.ports.items():
            stats = port.device.stats
            ports[name] = {"xruns": stats.capture_xruns + stats.playback_xruns,
                           "catch_ups": port.playback_catch_ups}
        for group in self._reception:  # the windows adapt() measured (reading the ports would reset them)
            for r in self._reports_for(group):
                senders[f"0x{r.ssrc:08x}"] = {"loss_pct": round(100 * r.loss, 2),
                                               "jitter_ms": round(r.jitter_ms, 2)}
        return {"ports": ports, "senders": senders}

    def _link_changed(self, up: bool) -> None:
        self.panel.set_link(up)
        self.notifier.status(self._status())

    def _healthy(self) -> bool:
        # Voice is the box's job: it is healthy while the loop runs (this is called on it).
        return True

    def _status(self) -> str:
        link = "no broker" if self.control is None or not self.control.connected else "broker up"
        return (
            f"{len(self.ports)} port(s), {len(self.config.groups)} group(s), {link}, "
            f"{PROCESSING_RATE_HZ // 1000} kHz Opus {self.config.codec.frame_ms} ms"
        )

    def counters(self) -> dict[str, Any]:
        """A snapshot of the box's counters (for tests, the demo and later telemetry)."""
        out: dict[str, Any] = {
            "udp_received": self.transport.received,
            "udp_sent": self.transport.sent,
            "udp_send_errors": self.transport.send_errors,
            "udp_rejected": dict(self.transport.rejected),
            "srtp": {
                name: {"protected": sec.stats.protected, "unprotected": sec.stats.unprotected,
                       "announcements_sent": sec.stats.announcements_sent,
                       "dropped": dict(sec.stats.dropped)}
                for name, sec in self.transport.security.items()
            },
            "floors": vars(self.floors.stats).copy(),
            "ports": {},
        }
        for name, port in self.ports.items():
            t = port.downlink.totals()
            out["ports"][name] = {
                "packets_sent": port.uplink.rtp.packets_sent,
                "packets_received": t.packets_received,
                "packets_lost": t.packets_lost,
                "frames_concealed": t.frames_concealed,
                "frames_fec_recovered": t.frames_fec_recovered,
                "fec_on": port.uplink.encoder.fec,
                "capture_dropped": port.capture.dropped if port.capture else 0,
                "playback_dropped_samples": port.playback.dropped_samples,
                "playback_catch_ups": port.playback_catch_ups,
                "device": vars(port.device.stats).copy(),
            }
        return out


def _without_secrets(config: Config) -> Config:
    return dataclasses.replace(config, sources=(), groups=tuple(
        dataclasses.replace(g, secret="") for g in config.groups))


def _matching(current: Config, new: Config) -> list[GroupSettings]:
    """``new``'s settings for each of ``current``'s groups (the current ones where it has none)."""
    by_name = {g.name: g for g in new.groups}
    return [by_name.get(g.name, g) for g in current.groups]


@contextlib.asynccontextmanager
async def running(app: App) -> Any:
    """Run ``app`` in a task for the body of an ``async with``; cancel and await it after."""
    task = asyncio.create_task(app.run(), name=f"app-{app.config.gateway.id}")
    ready = asyncio.create_task(app.ready.wait())
    try:
        done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            ready.cancel()
            task.result()  # raises the start-up error
        yield app
    finally:
        ready.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
