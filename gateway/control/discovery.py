"""Discovery over mDNS / DNS-SD (RFC 6762 / RFC 6763) with python-zeroconf's asyncio API.

Each box advertises ``_gateway._udp.local.`` (instance ``{site}-{gateway_id}``, port = its first
talk group's RTP port, TXT ``site gateway version groups broker``); a box that runs the site broker
also advertises ``_mqtt._tcp.local.`` (instance ``{site} broker``, TXT ``site``). :func:`find_broker`
serves ``mqtt.host = "auto"``; :func:`list_gateways` serves a console. IPv4 only, like the voice path.

API reference: https://python-zeroconf.readthedocs.io/en/latest/api.html
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import ifaddr
import zeroconf
from zeroconf import DNSQuestionType, InterfaceChoice, IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from gateway import __version__
from gateway.config import Config
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

GATEWAY_SERVICE = "_gateway._udp.local."
BROKER_SERVICE = "_mqtt._tcp.local."
Interfaces = InterfaceChoice | list[str]
"""Where mDNS runs: ``InterfaceChoice.All`` (every IPv4 interface), ``InterfaceChoice.Default``
(the interface the multicast route names) or a list of this host's IPv4 addresses."""

_TXT_ITEM_MAX = 255  # each TXT string has a one-byte length (RFC 6763 section 6.1)
_LABEL_MAX = 63  # an instance name is one DNS label (RFC 6763 section 4.1.1)
# What zeroconf raises when the network or a name is at fault; anything else is a bug and propagates.
_ZC_ERRORS = (OSError, RuntimeError, ValueError, zeroconf.Error)


class DiscoveryError(GatewayError, OSError):
    """mDNS could not be started, or a service could not be advertised or browsed."""

    def __init__(self, action: str, message: str) -> None:
        self.action = action
        self.message = message
        super().__init__(f"mDNS {action}: {message}")


def _translate(action: str, exc: BaseException, interfaces: Interfaces | None = None) -> DiscoveryError:
    """A DiscoveryError whose message says what the zeroconf failure usually means."""
    text = str(exc) or type(exc).__name__
    code = exc.errno if isinstance(exc, OSError) else None
    if code == errno.EADDRINUSE:
        # Binding UDP 5353 fails while avahi runs with disallow-other-stacks=yes; zeroconf logs the
        # same advice (zeroconf/_utils/net.py new_socket). https://linux.die.net/man/5/avahi-daemon.conf
        text += " (another mDNS stack holds port 5353: set disallow-other-stacks=no in avahi-daemon.conf)"
    elif code == errno.ENODEV and isinstance(interfaces, list):
        # IP_ADD_MEMBERSHIP on an address that no interface has.
        text += f" (is each of {', '.join(interfaces)} an address of this host?)"
    elif code == errno.ENODEV:
        # InterfaceChoice.Default joins 224.0.0.251 on INADDR_ANY: the kernel needs a route for it.
        text += " (no route for 224.0.0.251: add a default or 224.0.0.0/4 route, or name the interfaces)"
    return DiscoveryError(action, text)


def _zeroconf_failure(exc: BaseException) -> BaseException | None:
    """The zeroconf failure in ``exc`` (or in a TaskGroup's group of only those), else None."""
    while isinstance(exc, BaseExceptionGroup):
        if exc.split(_ZC_ERRORS)[1] is not None:
            return None
        exc = exc.exceptions[0]
    return exc if isinstance(exc, _ZC_ERRORS) else None


async def _open(interfaces: Interfaces, action: str) -> AsyncZeroconf:
    """An AsyncZeroconf on ``interfaces`` that can really send, or DiscoveryError."""
    try:
        # V4Only: IPv6 sockets fail where there is no IPv6 (namespaces, some images); voice is IPv4.
        azc = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
    except _ZC_ERRORS as exc:
        raise _translate(action, exc, interfaces) from exc
    try:
        await azc.zeroconf.async_wait_for_start()
        # zeroconf only logs a warning when it can't bind an interface's address (EADDRNOTAVAIL in
        # zeroconf/_utils/net.py new_socket) and carries on with no sender, advertising into the void.
        if not azc.zeroconf.engine.senders:
            raise DiscoveryError(action, f"no usable IPv4 interface among {interfaces!r}")
    except BaseException as exc:
        await azc.async_close()
        if isinstance(exc, DiscoveryError) or not isinstance(exc, _ZC_ERRORS):
            raise
        raise _translate(action, exc, interfaces) from exc
    return azc


def _host_interfaces() -> list[ipaddress.IPv4Interface]:
    return [ipaddress.IPv4Interface(f"{ip.ip}/{ip.network_prefix}")
            for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4]


def host_ipv4_addresses() -> list[str]:
    """Every IPv4 address of this host but loopback (link-local kept: sites without DHCP use it)."""
    return sorted({str(i.ip) for i in _host_interfaces() if not i.ip.is_loopback})


def _txt_list(items: Sequence[str], key: str) -> str:
    """``items`` comma-joined, cut at an item so ``key=value`` fits one TXT string (zeroconf raises
    ValueError on a longer one)."""
    kept: list[str] = []
    for item in items:
        if len(f"{key}={','.join([*kept, item])}".encode()) > _TXT_ITEM_MAX:
            log.warning("mDNS TXT %s too long: advertising %d of %d", key, len(kept), len(items))
            break
        kept.append(item)
    return ",".join(kept)


class Advertiser:
    """Advertises this box (and the site broker, when it runs one) on the LAN until closed."""

    def __init__(
        self, site: str, gateway_id: str, port: int, *, groups: Sequence[str] = (),
        broker: str = "", broker_port: int | None = None, version: str = __version__,
        addresses: Sequence[str] = (), interfaces: Interfaces = InterfaceChoice.All,
    ) -> None:
        self.site, self.gateway_id, self.port, self.version = site, gateway_id, port, version
        self.groups, self.broker, self.broker_port = tuple(groups), broker, broker_port
        self.addresses, self.interfaces = tuple(addresses), interfaces
        self._azc: AsyncZeroconf | None = None
        self._infos: list[AsyncServiceInfo] = []
        self._server = ""
        self._advertised: list[str] = []

    @classmethod
    def from_config(
        cls, cfg: Config, *, broker_port: int | None = None, broker: str | None = None,
        port: int | None = None, interfaces: Interfaces = InterfaceChoice.All,
    ) -> Advertiser:
        """An Advertiser for ``cfg``'s box; give ``broker_port`` when it runs the site broker."""
        m, bind = cfg.mqtt, cfg.network.bind_address
        if broker is None:
            broker = f"{m.host}:{m.port}" if m.enabled and m.host != "auto" else ""
        return cls(
            cfg.gateway.site, cfg.gateway.id,
            port if port is not None else (cfg.groups[0].port if cfg.groups else 5004),
            groups=[g.name for g in cfg.groups], broker=broker, broker_port=broker_port,
            addresses=[bind] if bind != "0.0.0.0" else [], interfaces=interfaces,
        )

    @property
    def names(self) -> list[str]:
        """The service names advertised, as renamed after any conflict."""
        return [info.name for info in self._infos]

    def _gateway_info(self, name: str) -> AsyncServiceInfo:
        txt = {"site": self.site, "gateway": self.gateway_id, "version": self.version,
               "groups": _txt_list(self.groups, "groups")}
        if self.broker:
            txt["broker"] = self.broker
        return AsyncServiceInfo(GATEWAY_SERVICE, name, port=self.port, properties=txt,
                                server=self._server, parsed_addresses=self._advertised)

    def _build_infos(self) -> list[AsyncServiceInfo]:
        addresses = list(self.addresses)
        if not addresses:
            listed = self.interfaces if isinstance(self.interfaces, list) else []
            addresses = [a for a in listed if ":" not in a] or host_ipv4_addresses()
        if not addresses:
            raise DiscoveryError("advertise", "this host has no IPv4 address to advertise")
        instance = f"{self.site}-{self.gateway_id}"[:_LABEL_MAX]
        # One host name for both services: they are one box with the same addresses.
        self._server, self._advertised = f"{instance}.local.", addresses
        infos = [self._gateway_info(f"{instance}.{GATEWAY_SERVICE}")]
        if self.broker_port is not None:
            infos.append(AsyncServiceInfo(
                BROKER_SERVICE, f"{self.site} broker.{BROKER_SERVICE}", port=self.broker_port,
                properties={"site": self.site}, server=self._server, parsed_addresses=addresses))
        return infos

    async def start(self) -> None:
        """Probe for name conflicts, then announce; DiscoveryError leaves nothing open."""
        if self._azc is not None:
            return
        try:
            infos = self._build_infos()
        except DiscoveryError:
            raise
        except _ZC_ERRORS as exc:  # a name zeroconf refuses (BadTypeInNameException...)
            raise _translate("advertise", exc) from exc
        azc = await _open(self.interfaces, "advertise")
        try:
            # Both services probe at once: probing is most of the ~2 s a start takes.
            async with asyncio.TaskGroup() as tg:
                for info in infos:
                    tg.create_task(self._register(azc, info), name=f"mdns-register {info.name}")
        except BaseException as exc:
            await azc.async_close()
            failure = _zeroconf_failure(exc)
            if failure is None:
                raise
            raise _translate("advertise", failure) from failure
        self._azc, self._infos = azc, infos

    @staticmethod
    async def _register(azc: AsyncZeroconf, info: AsyncServiceInfo) -> None:
        wanted = info.name
        # Probing (RFC 6762 section 8.1) takes ~1.5 s; on a conflict zeroconf renames the instance to
        # "name-2", "name-3"... and probes again (zeroconf/_core.py async_check_service).
        await (await azc.async_register_service(info, allow_name_change=True))
        if info.name != wanted:
            # Only the instance is renamed: the host name stays shared, so both boxes' addresses
            # merge under it. Two boxes with one gateway.id at a site is a configuration error.
            log.warning("mDNS name %r is taken by another box (same gateway.id at this site?); "
                        "advertising as %r", wanted, info.name)
        log.info("mDNS advertising %s port %s", info.name, info.port)

    async def update_broker(self, broker: str) -> None:
        """Re-announce the gateway record with the broker (``host:port``) now in use."""
        self.broker = broker
        if self._azc is None:
            return
        # A ServiceInfo's TXT can't be set in place: replace it under the same (maybe renamed) name.
        info = self._infos[0] = self._gateway_info(self._infos[0].name)
        try:
            await (await self._azc.async_update_service(info))
        except _ZC_ERRORS as exc:
            raise _translate("update", exc) from exc

    async def close(self) -> None:
        """Send goodbyes (TTL 0) and release the sockets; logs rather than raises."""
        azc, self._azc = self._azc, None
        if azc is not None:
            try:
                await azc.async_close()  # unregisters every service first: the goodbye packets
            except _ZC_ERRORS as exc:
                log.warning("mDNS close: %s", exc)

    async def __aenter__(self) -> Advertiser:
        await self.start()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


async def _browse(service_type: str, timeout_s: float, interfaces: Interfaces,
                  enough: Callable[[AsyncServiceInfo], bool] = lambda _: False,
                  ) -> list[AsyncServiceInfo]:
    """The ``service_type`` instances resolved within ``timeout_s``, or up to the first one for
    which ``enough`` is true."""
    azc = await _open(interfaces, "browse")
    found: list[AsyncServiceInfo] = []
    done = asyncio.Event()
    resolving: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s

    async def resolve(name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        # QM (multicast) questions, not QU: a unicast answer goes to port 5353, and with several
        # mDNS stacks on one host (this box's Advertiser, avahi) only one of their sockets gets it
        # (RFC 6762 section 15.1: https://www.rfc-editor.org/rfc/rfc6762#section-15.1).
        left_ms = max(1.0, (deadline - loop.time()) * 1000)
        if await info.async_request(azc.zeroconf, left_ms, question_type=DNSQuestionType.QM):
            found.append(info)
            if enough(info):
                done.set()

    try:
        async with asyncio.TaskGroup() as tg:

            def on_change(zeroconf: Any, service_type: str, name: str,
                          state_change: ServiceStateChange) -> None:
                # Called on the loop by the browser: start a resolve, never block here (and not once
                # we are done: the TaskGroup refuses new tasks while it winds down).
                if state_change is ServiceStateChange.Added and not done.is_set():
                    resolving.append(tg.create_task(resolve(name), name=f"mdns-resolve {name}"))

            browser = AsyncServiceBrowser(azc.zeroconf, service_type, handlers=[on_change],
                                          question_type=DNSQuestionType.QM)
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout_s):
                        await done.wait()
            finally:
                done.set()
                await browser.async_cancel()
                for task in resolving:
                    task.cancel()
    except BaseExceptionGroup as group:  # e.g. NotRunningException when the sockets went away
        failure = _zeroconf_failure(group)
        if failure is None:
            raise
        raise _translate("browse", failure) from failure
    finally:
        await azc.async_close()
    return found


def _pick_address(addresses: Sequence[str], local: Sequence[ipaddress.IPv4Network]) -> str | None:
    """The first address on one of our subnets, else the first: a box may also list addresses
    that can't be reached from here (a container bridge, a second NIC)."""
    ours = [a for a in addresses if any(ipaddress.IPv4Address(a) in net for net in local)]
    return next(iter([*ours, *addresses]), None)


def choose_broker(candidates: Sequence[tuple[str | None, str, int]], site: str) -> tuple[str, int] | None:
    """From (TXT site, address, port) in the order seen: the first of ``site``, else the first
    with no site (a plain mosquitto advert), never another site's."""
    ranked = [(a, p) for s, a, p in candidates if s == site] + [(a, p) for s, a, p in candidates if not s]
    return ranked[0] if ranked else None


async def find_broker(site: str, timeout_s: float,
                      interfaces: Interfaces = InterfaceChoice.All) -> tuple[str, int] | None:
    """(address, port) of ``site``'s MQTT broker found by DNS-SD, or None after ``timeout_s``."""
    local = [i.network for i in _host_interfaces()]

    def entry(info: AsyncServiceInfo) -> tuple[str | None, str, int] | None:
        address = _pick_address(info.parsed_addresses(IPVersion.V4Only), local)
        if address is None or not info.port:
            return None
        return info.decoded_properties.get("site"), address, info.port

    def is_ours(info: AsyncServiceInfo) -> bool:
        seen = entry(info)
        return seen is not None and seen[0] == site

    # Returns at once when this site's broker resolves; a site-less one waits out the timeout.
    candidates = [e for e in map(entry, await _browse(BROKER_SERVICE, timeout_s, interfaces, is_ours))
                  if e is not None]
    chosen = choose_broker(candidates, site)
    if chosen is None and candidates:
        log.info("mDNS: only other sites' brokers answered: %s", candidates)
    return chosen


async def list_gateways(timeout_s: float,
                        interfaces: Interfaces = InterfaceChoice.All) -> list[dict[str, Any]]:
    """The boxes that answered within ``timeout_s``, with their TXT fields, address and port."""
    local = [i.network for i in _host_interfaces()]
    boxes = []
    for info in await _browse(GATEWAY_SERVICE, timeout_s, interfaces):
        txt = info.decoded_properties
        addresses = info.parsed_addresses(IPVersion.V4Only)
        boxes.append({
            "name": info.name.removesuffix(f".{GATEWAY_SERVICE}"),
            "site": txt.get("site") or "", "gateway": txt.get("gateway") or "",
            "version": txt.get("version") or "",
            "groups": [g for g in (txt.get("groups") or "").split(",") if g],
            "broker": txt.get("broker") or "",
            "address": _pick_address(addresses, local), "addresses": addresses, "port": info.port,
        })
    return sorted(boxes, key=lambda b: (b["site"], b["gateway"], b["name"]))
