"""Discovery over mDNS / DNS-SD (RFC 6762 / RFC 6763) with python-zeroconf's asyncio API.

Each box advertises ``_gateway._udp.local.`` (instance ``{site}-{gateway_id}``, port = its first
talk group's RTP port, TXT ``site gateway version groups broker``); a box that runs the site broker
also advertises ``_mqtt._tcp.local.`` (instance ``{site} broker``, TXT ``site``). :func:`find_broker`
serves ``mqtt.host = "auto"``; :func:`list_gateways` serves a console. Only IPv4, like the voice path.

API reference: https://python-zeroconf.readthedocs.io/en/latest/api.html
"""

from __future__ import annotations

import asyncio
import contextlib
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
"""Where mDNS runs: ``InterfaceChoice.All`` (every IPv4 interface) or a list of local addresses."""

_TXT_ITEM_MAX = 255  # one TXT string is length-prefixed by one byte (RFC 6763 section 6.1)
_LABEL_MAX = 63  # an instance name is one DNS label (RFC 6763 section 4.1.1)
# zeroconf fails by raising these; anything else (TypeError...) is a bug of ours and propagates.
_ZC_ERRORS = (OSError, RuntimeError, ValueError, zeroconf.Error)


class DiscoveryError(GatewayError, OSError):
    """mDNS could not be started or a service could not be advertised."""

    def __init__(self, action: str, message: str) -> None:
        self.action = action
        self.message = message
        super().__init__(f"mDNS {action}: {message}")


def _translate(action: str, exc: BaseException) -> DiscoveryError:
    """A DiscoveryError whose message says what the zeroconf failure usually means."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.errno == 98:  # EADDRINUSE on UDP 5353
        # https://python-zeroconf.readthedocs.io/en/latest/#how-to-get-python-zeroconf
        text += " (another mDNS stack holds port 5353: set disallow-other-stacks=no in avahi-daemon.conf)"
    return DiscoveryError(action, text)


async def _open(interfaces: Interfaces, action: str) -> AsyncZeroconf:
    """An AsyncZeroconf on ``interfaces`` that can really send, or DiscoveryError."""
    try:
        # V4Only: IPv6 sockets fail in namespaces/containers without IPv6 and we only speak IPv4.
        azc = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
    except _ZC_ERRORS as exc:
        raise _translate(action, exc) from exc
    try:
        await azc.zeroconf.async_wait_for_start()
    except _ZC_ERRORS as exc:
        await azc.async_close()
        raise _translate(action, exc) from exc
    # zeroconf only logs a warning when it can't bind an interface address (EADDRNOTAVAIL, see
    # zeroconf/_utils/net.py new_socket) and carries on with no sender: it would then advertise
    # into the void. Fail loudly instead.
    if not azc.zeroconf.engine.senders:
        await azc.async_close()
        raise DiscoveryError(action, f"no usable IPv4 interface among {interfaces!r}")
    return azc


def host_ipv4_addresses() -> list[str]:
    """Every IPv4 address of this host except loopback (link-local kept: DHCP-less sites)."""
    found = {str(ip.ip) for a in ifaddr.get_adapters() for ip in a.ips if ip.is_IPv4}
    return sorted(a for a in found if not ipaddress.IPv4Address(a).is_loopback)


def _txt_list(items: Sequence[str], key: str) -> str:
    """``items`` comma-joined, cut at an item boundary so ``key=value`` fits one TXT string."""
    room = _TXT_ITEM_MAX - len(key.encode()) - 1
    kept: list[str] = []
    for item in items:
        if len(",".join([*kept, item]).encode()) > room:
            log.warning("mDNS TXT %s too long: advertising %d of %d items", key, len(kept), len(items))
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
        self.site = site
        self.gateway_id = gateway_id
        self.port = port
        self.groups = tuple(groups)
        self.broker = broker
        self.broker_port = broker_port
        self.version = version
        self.addresses = tuple(addresses)
        self.interfaces = interfaces
        self._azc: AsyncZeroconf | None = None
        self._infos: list[AsyncServiceInfo] = []

    @classmethod
    def from_config(
        cls, cfg: Config, *, broker_port: int | None = None, broker: str | None = None,
        port: int | None = None, interfaces: Interfaces = InterfaceChoice.All,
    ) -> Advertiser:
        """An Advertiser for ``cfg``'s box; ``broker_port`` set = it also runs the site broker."""
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
        """The service names advertised (after any renaming on conflict)."""
        return [info.name for info in self._infos]

    def _gateway_txt(self) -> dict[str, str]:
        txt = {"site": self.site, "gateway": self.gateway_id, "version": self.version,
               "groups": _txt_list(self.groups, "groups")}
        if self.broker:
            txt["broker"] = self.broker
        return txt

    def _build_infos(self) -> list[AsyncServiceInfo]:
        addresses = list(self.addresses)
        if not addresses:
            listed = self.interfaces if isinstance(self.interfaces, list) else []
            addresses = [a for a in listed if ":" not in a] or host_ipv4_addresses()
        if not addresses:
            raise DiscoveryError("advertise", "this host has no IPv4 address to advertise")
        instance = f"{self.site}-{self.gateway_id}"[:_LABEL_MAX]
        # One host name for both services: they are the same box, with the same addresses.
        server = f"{instance}.local."
        infos = [AsyncServiceInfo(GATEWAY_SERVICE, f"{instance}.{GATEWAY_SERVICE}", port=self.port,
                                  properties=self._gateway_txt(), server=server,
                                  parsed_addresses=addresses)]
        if self.broker_port is not None:
            infos.append(AsyncServiceInfo(
                BROKER_SERVICE, f"{self.site} broker.{BROKER_SERVICE}", port=self.broker_port,
                properties={"site": self.site}, server=server, parsed_addresses=addresses))
        return infos

    async def start(self) -> None:
        """Probe for name conflicts, then announce; raises DiscoveryError (and holds nothing)."""
        if self._azc is not None:
            return
        infos = self._build_infos()
        azc = await _open(self.interfaces, "advertise")
        try:
            async with asyncio.TaskGroup() as tg:
                for info in infos:
                    tg.create_task(self._register(azc, info), name=f"mdns-register {info.name}")
        except BaseException as group:
            await azc.async_close()
            if isinstance(group, BaseExceptionGroup):
                failed = group.subgroup(_ZC_ERRORS)
                if failed is not None and failed.split(_ZC_ERRORS)[1] is None:
                    exc = failed.exceptions[0]
                    raise _translate("advertise", exc) from exc
            raise
        self._azc, self._infos = azc, infos

    async def _register(self, azc: AsyncZeroconf, info: AsyncServiceInfo) -> None:
        wanted = info.name
        # Probing (RFC 6762 section 8.1) takes about 1.5 s; on a conflict zeroconf renames to
        # "name-2", "name-3"... and probes again (zeroconf _core.py async_check_service).
        announced = await azc.async_register_service(info, allow_name_change=True)
        await announced
        if info.name != wanted:
            # Only the instance is renamed: the host name stays shared, so the two boxes' addresses
            # merge under it. Two boxes with one gateway.id is a configuration error to fix.
            log.warning("mDNS name %r is taken by another box (same gateway.id at this site?); "
                        "advertising as %r", wanted, info.name)
        log.info("mDNS advertising %s port %s", info.name, info.port)

    async def update_broker(self, broker: str) -> None:
        """Re-announce the gateway record with the broker (``host:port``) now in use."""
        self.broker = broker
        if self._azc is None or not self._infos:
            return
        info = self._infos[0]
        info.properties = self._gateway_txt()  # type: ignore[assignment]  # setter encodes str
        try:
            await (await self._azc.async_update_service(info))
        except _ZC_ERRORS as exc:
            raise _translate("update", exc) from exc

    async def close(self) -> None:
        """Send goodbyes (TTL 0) and release the sockets; never raises a zeroconf error."""
        azc, self._azc = self._azc, None
        if azc is None:
            return
        try:
            await azc.async_close()  # unregisters every service first: goodbye packets
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
    """Every ``service_type`` instance resolved within ``timeout_s``; stops early once
    ``enough(info)`` is true for one."""
    azc = await _open(interfaces, "browse")
    found: list[AsyncServiceInfo] = []
    done = asyncio.Event()
    resolving: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s

    async def resolve(name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        # QM (multicast) questions: a QU answer is unicast to port 5353, and with several mDNS
        # stacks on one host (this box's Advertiser, avahi) only one socket gets it
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
                # Called on the loop by the browser: start a resolve, never block here.
                if state_change is ServiceStateChange.Added:
                    resolving.add(tg.create_task(resolve(name), name=f"mdns-resolve {name}"))

            browser = AsyncServiceBrowser(azc.zeroconf, service_type, handlers=[on_change],
                                          question_type=DNSQuestionType.QM)
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout_s):
                        await done.wait()
            finally:
                await browser.async_cancel()
                for task in resolving:
                    task.cancel()
    except* zeroconf.Error as group:  # e.g. NotRunningException if the sockets went away
        exc = group.exceptions[0]
        raise _translate("browse", exc) from exc
    finally:
        await azc.async_close()
    return found


def _ipv4(info: AsyncServiceInfo) -> list[str]:
    return info.parsed_addresses(IPVersion.V4Only)


def _pick_address(addresses: Sequence[str], local: Sequence[ipaddress.IPv4Network]) -> str | None:
    """The first address on one of our own subnets, else the first: a box may list addresses
    (a container bridge, a second NIC) that are not reachable from here."""
    for a in addresses:
        if any(ipaddress.IPv4Address(a) in net for net in local):
            return a
    return addresses[0] if addresses else None


def _local_networks() -> list[ipaddress.IPv4Network]:
    return [ipaddress.IPv4Network(f"{ip.ip}/{ip.network_prefix}", strict=False)
            for a in ifaddr.get_adapters() for ip in a.ips if ip.is_IPv4]


def choose_broker(candidates: Sequence[tuple[str | None, str, int]], site: str) -> tuple[str, int] | None:
    """From (TXT site, address, port) in order seen: the first of ``site``, else the first
    without a site (a plain mosquitto advert), never another site's."""
    for txt_site, address, port in candidates:
        if txt_site == site:
            return address, port
    for txt_site, address, port in candidates:
        if txt_site is None:
            return address, port
    return None


async def find_broker(site: str, timeout_s: float,
                      interfaces: Interfaces = InterfaceChoice.All) -> tuple[str, int] | None:
    """(address, port) of ``site``'s MQTT broker found by DNS-SD, or None after ``timeout_s``."""
    local = _local_networks()

    def entry(info: AsyncServiceInfo) -> tuple[str | None, str, int] | None:
        address = _pick_address(_ipv4(info), local)
        if address is None or not info.port:
            return None
        return info.decoded_properties.get("site"), address, info.port

    found = await _browse(BROKER_SERVICE, timeout_s, interfaces,
                          enough=lambda info: (e := entry(info)) is not None and e[0] == site)
    candidates = [e for e in map(entry, found) if e is not None]
    chosen = choose_broker(candidates, site)
    if chosen is None and candidates:
        log.info("mDNS: brokers of other sites only: %s", candidates)
    return chosen


async def list_gateways(timeout_s: float,
                        interfaces: Interfaces = InterfaceChoice.All) -> list[dict[str, Any]]:
    """The boxes that answered within ``timeout_s``: their TXT fields, address and port."""
    local = _local_networks()
    boxes = []
    for info in await _browse(GATEWAY_SERVICE, timeout_s, interfaces):
        txt = info.decoded_properties
        addresses = _ipv4(info)
        boxes.append({
            "name": info.name.removesuffix(f".{GATEWAY_SERVICE}"),
            "site": txt.get("site") or "", "gateway": txt.get("gateway") or "",
            "version": txt.get("version") or "",
            "groups": [g for g in (txt.get("groups") or "").split(",") if g],
            "broker": txt.get("broker") or "",
            "address": _pick_address(addresses, local), "addresses": addresses, "port": info.port,
        })
    return sorted(boxes, key=lambda b: (b["site"], b["gateway"], b["name"]))
