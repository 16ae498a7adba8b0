"""Voice over UDP: one RTP session per talk group, unicast to listed peers and/or IP multicast.

For each group the box binds a unicast socket on ``network.bind_address:group.port`` (it sends from
it and peers send to it) and, when the group has a multicast address, a second socket bound to
``multicast:port`` joined on ``network.multicast_interface``.

Every datagram is SRTP (or an announcement, :mod:`gateway.net.announce`). A received one passes the
RTP header check (:func:`gateway.net.rtp.check_header`), then the group's
:class:`~gateway.net.srtp.GroupSecurity` (announced sender, authentication tag, replay), then the full
RTP parse of the decrypted packet; anything that fails is dropped and counted by reason, never
raised, and nothing unauthenticated reaches a port. Announcements go out on the same destinations,
now and then and whenever the group's security state asks (:meth:`UdpTransport.announce_forever`).
Sending never blocks: a socket error is counted and the packet is lost, like any other loss.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable, Collection, Iterable, Mapping

from gateway.config import GroupSettings, NetworkSettings, parse_peer
from gateway.errors import TransportError
from gateway.net import announce, rtp
from gateway.net.srtp import Drop, GroupSecurity

log = logging.getLogger(__name__)

#: Linux's IP_MULTICAST_ALL (linux/in.h); Python's socket module doesn't export it.
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)

PacketSink = Callable[[str, rtp.RtpPacket], None]
"""Receives (group name, packet) for every valid packet from another sender."""

#: Every box announces on each group at least this often (new boxes hear it within a round trip
#: anyway: a new nonce or an unaccepted sender triggers an answer).
ANNOUNCE_INTERVAL_S = 2.0
#: While a box waits for senders' fresh announcements it repeats its own this often.
ANNOUNCE_RETRY_S = 0.25
#: Receive buffer asked for on every voice socket.
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
#: Answers are rate-limited to one per group per this interval.
ANNOUNCE_MIN_GAP_S = 0.05


class _GroupProtocol(asyncio.DatagramProtocol):
    def __init__(self, transport: UdpTransport, group: str) -> None:
        self._owner = transport
        self._group = group

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._owner.datagram_received(self._group, data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (e.g. port unreachable from a peer that is down) arrive here on Linux.
        self._owner.count_send_error(exc)


class UdpTransport:
    """Owns the voice sockets of every talk group of one box."""

    def __init__(
        self,
        network: NetworkSettings,
        groups: Iterable[GroupSettings],
        payload_type: int,
        sink: PacketSink,
        security: Mapping[str, GroupSecurity],
        own_ssrcs: Collection[int] = (),
    ) -> None:
        self._network = network
        self._groups = {g.name: g for g in groups}
        self.security = dict(security)
        """Each group's keys; replaced as a whole when a group's secret changes (reload)."""
        self._payload_type = payload_type
        self._sink = sink
        self._own_ssrcs = own_ssrcs
        self._tx: dict[str, asyncio.DatagramTransport] = {}
        self._rx: list[asyncio.DatagramTransport] = []
        self._destinations: dict[str, list[tuple[str, int]]] = {}
        self.rejected: collections.Counter[str] = collections.Counter()
        """Dropped datagrams by reason (see :class:`gateway.net.rtp.Reject`)."""
        self.received = 0
        self.on_announced: Callable[[str, bytes], None] | None = None
        """Called with (group, datagram) after each announcement we send (the broker copy)."""
        self._announce_wake = asyncio.Event()
        for sec in self.security.values():
            sec.wake = self._announce_wake.set
        self.sent = 0
        self.send_errors = 0
        self._last_send_error = ""

    async def start(self) -> None:
        """Bind and join every group's sockets; TransportError names the group if one can't."""
        loop = asyncio.get_running_loop()
        try:
            for g in self._groups.values():
                tx = _unicast_socket(self._network, g)
                self._tx[g.name] = await self._register(loop, tx, g.name)
                dests = [parse_peer(p, g.port) for p in g.peers]
                if g.multicast:
                    rx = _multicast_socket(self._network, g)
                    self._rx.append(await self._register(loop, rx, g.name))
                    dests.append((g.multicast, g.port))
                self._destinations[g.name] = dests
        except BaseException:
            self.close()
            raise

    async def _register(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, group: str
    ) -> asyncio.DatagramTransport:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _GroupProtocol(self, group), sock=sock
        )
        return transport

    def datagram_received(self, group: str, data: bytes, source: object = None) -> None:
        """Authenticate one datagram and hand it on; anything else is counted by reason."""
        sec = self.security.get(group)
        if sec is None:
            return
        if announce.is_announcement(data):
            self.announcement_received(group, data, source)
            return
        bad = rtp.check_header(data, self._payload_type, self._network.max_datagram_bytes)
        if bad is not None:
            self._reject(bad, group, source)
            return
        if int.from_bytes(data[8:12], "big") in self._own_ssrcs:
            # Our own multicast looped back (IP_MULTICAST_LOOP stays on so boxes on one host work):
            # counted, never logged, it is normal.
            self.rejected[rtp.Reject.OWN_PACKET.value] += 1
            return
        plain = sec.unprotect(data, self._now())
        if isinstance(plain, Drop):
            self._reject(plain, group, source)
            return
        result = rtp.parse(plain, self._payload_type, self._network.max_datagram_bytes)
        if isinstance(result, rtp.Reject):
            # Authentic but malformed inside (a member's bug): still never played.
            self._reject(result, group, source)
            return
        self.received += 1
        self._sink(group, result)

    def announcement_received(self, group: str, data: bytes, source: object = "MQTT") -> None:
        """An announcement for ``group``, heard in-band or relayed by the broker."""
        sec = self.security.get(group)
        if sec is None:
            self.rejected["announce_unknown_group"] += 1
            return
        refused = sec.on_announcement(data, self._now())
        if refused is not None:
            self._reject(refused, group, source)
        elif sec.want_announce:
            self._announce_wake.set()

    def replace_security(self, group: str, security: GroupSecurity) -> None:
        """Use new keys for ``group`` from now on (its secret changed); announce them at once."""
        security.wake = self._announce_wake.set
        self.security[group] = security
        self._announce_wake.set()

    @staticmethod
    def _now() -> float:
        return time.monotonic()

    async def announce_forever(self) -> None:
        """Send each group's announcement every :data:`ANNOUNCE_INTERVAL_S`, and soon after
        something heard asks for one; runs until cancelled."""
        last: dict[str, float] = {}
        while True:
            now = self._now()
            wait = ANNOUNCE_INTERVAL_S
            for name, sec in self.security.items():
                since = now - last.get(name, -1e9)
                if since >= self._announce_period(sec):
                    last[name] = now
                    data = sec.announcement(now)
                    self.send(name, data)
                    if self.on_announced is not None:
                        self.on_announced(name, data)
                    since = 0.0
                wait = min(wait, max(self._announce_period(sec) - since, 0.001))
            self._announce_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._announce_wake.wait(), wait)

    @staticmethod
    def _announce_period(sec: GroupSecurity) -> float:
        """How soon a group's next announcement is due: an answer at once (rate-limited), a retry
        while senders we heard of aren't accepted yet, else the regular period."""
        if sec.want_announce:
            return ANNOUNCE_MIN_GAP_S
        return ANNOUNCE_RETRY_S if sec.pending else ANNOUNCE_INTERVAL_S

    def _reject(self, reason: rtp.Reject | Drop | announce.Refused, group: str, source: object) -> None:
        count = self.rejected[reason.value] + 1
        self.rejected[reason.value] = count
        # Logged at the 1st, 10th, 100th, ... of each reason: a technician sees that it happens
        # and how much, and a flood costs a handful of lines, not one per packet.
        if _is_power_of_ten(count):
            log.warning("dropped %d %s datagram(s) on talk group %r (latest from %s)",
                        count, reason.value, group, _format_source(source))

    def send(self, group: str, datagram: bytes) -> None:
        """Send one packet to every destination of ``group``; never blocks or raises."""
        tx = self._tx.get(group)
        if tx is None:
            return
        for dest in self._destinations[group]:
            try:
                tx.sendto(datagram, dest)
                self.sent += 1
            except OSError as exc:
                self.count_send_error(exc)

    def count_send_error(self, exc: Exception) -> None:
        """Count a failed send; log only when the kind of failure changes."""
        self.send_errors += 1
        text = f"{type(exc).__name__}: {exc}"
        if text != self._last_send_error:
            self._last_send_error = text
            log.warning("voice send failed (counted, not retried): %s", text)

    def close(self) -> None:
        """Close every socket."""
        for t in [*self._tx.values(), *self._rx]:
            t.close()
        self._tx.clear()
        self._rx.clear()


def _is_power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1


def _format_source(source: object) -> str:
    if isinstance(source, tuple) and len(source) >= 2:
        return f"{source[0]}:{source[1]}"
    return "an unknown source"


def _group_socket() -> socket.socket:
    """A non-blocking UDP socket with the options both of a group's sockets need."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    # A group's two sockets share its port, and several boxes (or the simulator's gateways) on
    # one host each receive the group: Linux needs SO_REUSEADDR on every one of them.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Without this, Linux also delivers to a wildcard-bound socket the multicast of groups that
    # any other socket joined (ip(7), IP_MULTICAST_ALL), duplicating every packet.
    sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
    # Room for a burst (or a flood of garbage) while the loop is busy: ~1 s of 20,000 small
    # datagrams. The kernel caps it at net.core.rmem_max (and doubles what it grants, socket(7)).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    return sock


def _unicast_socket(network: NetworkSettings, group: GroupSettings) -> socket.socket:
    addr = f"{network.bind_address}:{group.port}"
    sock = _group_socket()
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, network.multicast_ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        if network.multicast_interface:
            sock.setsockopt(
                socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                socket.inet_aton(network.multicast_interface),
            )
        # Expedited Forwarding (DSCP 46) so Wi-Fi WMM and managed switches queue voice first.
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 46 << 2)
        sock.bind((network.bind_address, group.port))
    except OSError as exc:
        sock.close()
        raise TransportError(group.name, addr, exc.strerror or str(exc)) from exc
    return sock


def _multicast_socket(network: NetworkSettings, group: GroupSettings) -> socket.socket:
    addr = f"{group.multicast}:{group.port}"
    sock = _group_socket()
    try:
        # Binding to the group address (not INADDR_ANY) keeps other groups' traffic on the same
        # port out of this socket (Linux delivers by destination address).
        sock.bind((group.multicast, group.port))
        iface = network.multicast_interface or "0.0.0.0"
        mreq = struct.pack("4s4s", socket.inet_aton(group.multicast), socket.inet_aton(iface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    except OSError as exc:
        sock.close()
        raise TransportError(group.name, addr, exc.strerror or str(exc)) from exc
    return sock
