"""A seeded userspace UDP impairment relay: loss, bursts, jitter, reorder and duplicates.

This kernel has no netem, so tests, the demo and the network benchmark degrade voice here, in
userspace. Two layers:

- :class:`Impairment`, a pure model of one directed link: :meth:`Impairment.decide` takes the time a
  datagram enters the link and returns the times it leaves it (``[]`` = lost, two times = duplicated).
  No I/O, no clock reads, so its tests are tables and properties.
- :class:`ImpairedHub`, an asyncio relay: one UDP socket standing in for a lossy Wi-Fi hub or mesh.
  Every datagram from a member goes to every *other* member, each copy through its own
  :class:`Impairment`. In the simulated site each gateway binds its own loopback address
  (127.0.0.11, .12, ...) on the group's port P and lists the hub (e.g. 127.0.0.9:P) as its only
  unicast peer; the hub forwards to each other gateway's address on P. Two members make a
  point-to-point link.

What each impairment does, in the order a datagram meets them (:class:`ImpairmentSettings`):

outage
    Every datagram entering during a window ``[start_ms, start_ms + duration_ms)`` is dropped. The
    loss chain below does not advance meanwhile (an outage is a separate cause, like a cable pulled).
loss, independent (``burst_ms == 0``)
    Each datagram is lost with probability ``π = loss_pct / 100``, independently.
loss, bursty (``burst_ms > 0``)
    The simple Gilbert model: a Gilbert–Elliott chain that loses every datagram in state Bad and
    none in Good, stepped once per datagram. With ``L = burst_ms / packet_ms`` (mean bad run, in
    packets, >= 1)::

        r = P(Bad -> Good)  = 1 / L
        p = P(Good -> Bad)  = r * π / (1 - π)

    Bad runs are geometric with mean ``1 / r = L`` packets, good runs geometric with mean ``1 / p``,
    and the stationary share of Bad is ``p / (p + r) = π``, the mean loss. ``p <= 1`` needs
    ``π <= L / (L + 1)``. The first state is drawn from the stationary distribution, so the rate holds
    from the first datagram. The chain steps per datagram, not per millisecond: a silent sender
    freezes it (packet traces of a link look the same way).
delay and jitter
    Every surviving datagram leaves ``delay_ms + U(0, jitter_ms)`` after it entered (uniform: the
    simplest bounded shape, mean ``jitter_ms / 2``). Independent delays reorder packets by
    themselves: with packets ``T = packet_ms`` apart and ``jitter_ms = J > T``, two neighbours swap
    with probability ``(J - T)² / (2 J²)``.
reorder
    ``reorder_pct`` of surviving datagrams are also held back ``(k + 0.5) * packet_ms`` with ``k``
    uniform in ``1..REORDER_MAX_PACKETS``, so a stream at ``packet_ms`` spacing sees one arrive between
    its k-th and (k+1)-th successors. ``reordered`` counts the datagrams held back; whether a
    successor existed to overtake them (end of a talk spurt) is up to the traffic.
duplicate
    ``duplicate_pct`` of surviving datagrams leave twice. The copy follows the original (a link-layer
    retransmission whose ACK was lost), at a uniform time between it and the end of its jitter
    window, so jitter's bound holds for both (a held-back original's copy leaves with it).

Seeding: the same settings and the same sequence of entry times give the same decisions. Each kind
of impairment draws from its own ``random.Random`` derived from the seed, so turning jitter or
duplicates on does not change which datagrams are lost. The hub derives each directed link's seed
from the base seed and the link's two addresses (:func:`link_seed`), so links are independent of
each other and of the order in which traffic arrives on them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import heapq
import ipaddress
import logging
import math
import random
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

log = logging.getLogger(__name__)

Address = tuple[str, int]
"""An IP literal and a UDP port."""

#: A reordered datagram is held back by 1 to this many packet intervals (plus half of one).
REORDER_MAX_PACKETS = 3
#: Copies waiting in the hub for their delivery time; beyond this new ones are dropped (tail drop,
#: like a router's full queue) and counted as ``overflow``.
MAX_QUEUED = 65536
#: Source name of datagrams from outside the member list (see :class:`ImpairedHub`).
OUTSIDE = "*"


@dataclass(frozen=True)
class ImpairmentSettings:
    """What one directed link does to datagrams; all zero = a perfect wire."""

    loss_pct: float = 0.0
    """Mean loss, 0-100 (outages not included)."""
    burst_ms: float = 0.0
    """0 = independent loss; > 0 = bursty (Gilbert) loss whose mean burst lasts this long (>= packet_ms)."""
    jitter_ms: float = 0.0
    """Extra one-way delay per datagram, uniform in [0, jitter_ms]; reorders neighbours on its own."""
    reorder_pct: float = 0.0
    """Share of datagrams (0-100) also held back by 1-3 packet intervals, to arrive after successors."""
    duplicate_pct: float = 0.0
    """Share of datagrams (0-100) delivered twice."""
    delay_ms: float = 0.0
    """Fixed one-way delay added to every datagram."""
    packet_ms: float = 20.0
    """Packet interval of the traffic: converts burst_ms to packets and sizes the reorder hold-back."""
    outages: tuple[tuple[float, float], ...] = ()
    """Windows ``(start_ms, duration_ms)`` in the model's time base that drop everything entering."""
    seed: int = 0
    """Seed of every random draw; the hub derives one per link from it."""

    def __post_init__(self) -> None:
        for name in ("loss_pct", "reorder_pct", "duplicate_pct"):
            value = getattr(self, name)
            if not (_is_real(value) and 0.0 <= value <= 100.0):
                raise ValueError(f"{name} must be a percentage in 0-100, got {value!r}")
        for name in ("burst_ms", "jitter_ms", "delay_ms"):
            value = getattr(self, name)
            if not (_is_real(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number of milliseconds >= 0, got {value!r}")
        if not (_is_real(self.packet_ms) and self.packet_ms > 0.0):
            raise ValueError(f"packet_ms must be a finite number of milliseconds > 0, got {self.packet_ms!r}")
        if self.burst_ms > 0.0:
            if self.burst_ms < self.packet_ms:
                raise ValueError(
                    f"burst_ms must be 0 (independent loss) or at least packet_ms ({self.packet_ms:g}):"
                    f" a burst is at least one packet, got {self.burst_ms:g}"
                )
            max_pct = 100.0 * self.burst_packets / (self.burst_packets + 1.0)
            if self.loss_pct > max_pct:
                raise ValueError(
                    f"loss_pct {self.loss_pct:g} is too high for bursts of {self.burst_ms:g} ms: mean bursts"
                    f" of {self.burst_packets:g} packets allow at most {max_pct:.4g}% loss"
                    " (use burst_ms=0 or longer bursts)"
                )
        windows = []
        for window in self.outages:
            pair = tuple(window) if isinstance(window, tuple | list) else (window,)
            if not (len(pair) == 2 and all(_is_real(v) for v in pair) and pair[1] >= 0.0):
                raise ValueError(f"outages must be (start_ms, duration_ms >= 0) pairs, got {window!r}")
            windows.append((float(pair[0]), float(pair[1])))
        object.__setattr__(self, "outages", tuple(windows))  # lists (TOML, argv) become hashable
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an int, got {self.seed!r}")

    @property
    def burst_packets(self) -> float:
        """Mean bad run of the Gilbert model in packets, ``L = burst_ms / packet_ms`` (0 = independent)."""
        return self.burst_ms / self.packet_ms

    def gilbert(self) -> tuple[float, float]:
        """``(p, r)``: P(Good -> Bad) and P(Bad -> Good) per packet.

        Independent loss (``burst_ms == 0``) is the chain with ``p = π`` and ``r = 1 - π``: its next
        state never depends on the current one.
        """
        loss = self.loss_pct / 100.0
        if self.burst_ms == 0.0:
            return loss, 1.0 - loss
        r = 1.0 / self.burst_packets
        return r * loss / (1.0 - loss), r


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class LinkStats(TypedDict):
    """Counters of one directed link."""

    seen: int
    """Datagrams that entered the link."""
    dropped: int
    """Lost by the loss model or an outage."""
    outage_dropped: int
    """The part of ``dropped`` due to outages."""
    duplicated: int
    """Datagrams delivered twice."""
    reordered: int
    """Datagrams held back by the reorder impairment."""
    delivered: int
    """Copies handed on: seen - dropped + duplicated."""
    sent: int
    """Copies the hub actually sent (0 for a bare model)."""
    send_errors: int
    """Copies the socket refused (hub only)."""
    overflow: int
    """Copies tail-dropped because the hub's delay queue was full (hub only)."""


class HubStats(TypedDict):
    """:meth:`ImpairedHub.stats`: totals and one entry per directed link ``"src->dst"``."""

    received: int
    """Datagrams the hub received."""
    from_non_members: int
    """The part of ``received`` from addresses outside the member list."""
    icmp_errors: int
    """ICMP errors reported on the socket (e.g. port unreachable: a member is down)."""
    errors: int
    """Datagrams whose handling failed unexpectedly (a bug; counted, never raised)."""
    queued: int
    """Copies waiting for their delivery time now."""
    totals: LinkStats
    """The sum over every link."""
    links: dict[str, LinkStats]
    """Per directed link, named ``"host:port->host:port"`` (``"*->host:port"`` for non-members)."""


def link_seed(seed: int, source: str, destination: str) -> int:
    """The seed of directed link ``source -> destination``, stable across runs and Python versions."""
    digest = hashlib.sha256(f"{seed}|{source}|{destination}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class Impairment:
    """One directed link's impairments, a pure model: entry times come in, delivery times go out."""

    def __init__(self, settings: ImpairmentSettings) -> None:
        self.settings = settings
        self.seen = 0
        self.dropped = 0
        self.outage_dropped = 0
        self.duplicated = 0
        self.reordered = 0
        self.delivered = 0
        self._outages = [(start, start + length) for start, length in settings.outages]
        # One stream per impairment kind (see the module docstring): settings of one kind never
        # shift another kind's draws.
        self._loss_rng = random.Random(f"{settings.seed}:loss")
        self._delay_rng = random.Random(f"{settings.seed}:delay")
        self._reorder_rng = random.Random(f"{settings.seed}:reorder")
        self._dup_rng = random.Random(f"{settings.seed}:duplicate")
        self._loss = settings.loss_pct / 100.0
        self._reorder = settings.reorder_pct / 100.0
        self._duplicate = settings.duplicate_pct / 100.0
        self._bursty = settings.burst_ms > 0.0
        self._to_bad, self._to_good = settings.gilbert() if self._bursty else (0.0, 0.0)
        self._bad = self._bursty and self._loss_rng.random() < self._loss

    def add_outage(self, start_ms: float, duration_ms: float) -> None:
        """Drop everything entering in ``[start_ms, start_ms + duration_ms)`` from now on."""
        if not (_is_real(start_ms) and _is_real(duration_ms) and duration_ms >= 0.0):
            raise ValueError(
                f"an outage needs a finite start_ms and duration_ms >= 0, got {start_ms!r}, {duration_ms!r}"
            )
        self._outages.append((start_ms, start_ms + duration_ms))

    def decide(self, now_ms: float) -> list[float]:
        """Delivery times, ascending, of one datagram entering at ``now_ms``: [] = lost, two = duplicated."""
        self.seen += 1
        for start, end in self._outages:
            if start <= now_ms < end:
                self.dropped += 1
                self.outage_dropped += 1
                return []
        if self._lost():
            self.dropped += 1
            return []
        s = self.settings
        window_end = now_ms + s.delay_ms + s.jitter_ms
        at = now_ms + s.delay_ms
        if s.jitter_ms > 0.0:
            at += self._delay_rng.uniform(0.0, s.jitter_ms)
        if self._reorder > 0.0 and self._reorder_rng.random() < self._reorder:
            self.reordered += 1
            at += (self._reorder_rng.randint(1, REORDER_MAX_PACKETS) + 0.5) * s.packet_ms
        if self._duplicate > 0.0 and self._dup_rng.random() < self._duplicate:
            self.duplicated += 1
            self.delivered += 2
            return [at, max(at, self._dup_rng.uniform(at, max(at, window_end)))]
        self.delivered += 1
        return [at]

    def _lost(self) -> bool:
        if not self._bursty:
            return self._loss > 0.0 and self._loss_rng.random() < self._loss
        lost = self._bad
        u = self._loss_rng.random()
        self._bad = u >= self._to_good if self._bad else u < self._to_bad
        return lost

    def counters(self) -> LinkStats:
        """The model's counters (the hub-only ones are 0)."""
        return LinkStats(
            seen=self.seen, dropped=self.dropped, outage_dropped=self.outage_dropped,
            duplicated=self.duplicated, reordered=self.reordered, delivered=self.delivered,
            sent=0, send_errors=0, overflow=0,
        )


class _Link:
    """One directed link of the hub: its model, destination and send counters."""

    __slots__ = ("destination", "model", "name", "overflow", "send_errors", "sent")

    def __init__(self, name: str, destination: Address, settings: ImpairmentSettings) -> None:
        self.name = name
        self.destination = destination
        self.model = Impairment(settings)
        self.sent = 0
        self.send_errors = 0
        self.overflow = 0

    def stats(self) -> LinkStats:
        out = self.model.counters()
        out["sent"], out["send_errors"], out["overflow"] = self.sent, self.send_errors, self.overflow
        return out


class _HubProtocol(asyncio.DatagramProtocol):
    def __init__(self, hub: ImpairedHub) -> None:
        self._hub = hub

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._hub.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable from a member that is down) land here on Linux.
        self._hub.error_received(exc)


def _name(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _normalize(address: Address) -> Address:
    host, port = address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"hub addresses must be IP literals, got {host!r}") from None
    if not (isinstance(port, int) and 0 <= port <= 65535):
        raise ValueError(f"bad UDP port {port!r} for {host}")
    return ip.compressed, port


class ImpairedHub:
    """A UDP relay that forwards each member's datagrams to every other member through impaired links.

    ``settings`` applies to every directed link; ``link_settings`` overrides it for some, keyed by
    ``(source, destination)`` member addresses. Each link's seed is :func:`link_seed` of its
    settings' seed and the two addresses. Datagrams from outside the member list go to every member
    through one link per member named ``"*->member"`` (bounded state, however many strangers).
    Model time is milliseconds since :meth:`start`; outage windows use it too.

    The datagram path never blocks and never raises: copies due now are sent at once, later ones
    wait in one heap (first in, first out among equal times) drained by a single ``loop.call_at``
    timer; socket errors and anything unexpected are counted.
    """

    def __init__(
        self,
        bind: Address,
        members: Sequence[Address],
        settings: ImpairmentSettings | None = None,
        link_settings: Mapping[tuple[Address, Address], ImpairmentSettings] | None = None,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._bind = _normalize(bind)
        self.members = [_normalize(m) for m in members]
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"hub members must be distinct, got {list(members)!r}")
        if self._bind in self.members:
            raise ValueError(f"the hub's own address {_name(self._bind)} cannot be a member")
        if max_queued < 1:
            raise ValueError(f"max_queued must be >= 1, got {max_queued!r}")
        base = settings or ImpairmentSettings()
        overrides = {(_normalize(s), _normalize(d)): v for (s, d), v in (link_settings or {}).items()}
        unknown = [(s, d) for s, d in overrides if s == d or not {s, d} <= set(self.members)]
        if unknown:
            raise ValueError(f"link_settings must name links between two distinct members, not {unknown!r}")
        self._links: dict[str, _Link] = {}
        self._out = {m: self._fan_out(_name(m), m, base, overrides) for m in self.members}
        """Each member's outgoing links, to every other member."""
        self._outside = self._fan_out(OUTSIDE, None, base, {})
        """Links from any non-member, one per member."""
        self._max_queued = max_queued
        self._queue: list[tuple[float, int, bytes, _Link]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self.received = 0
        self.from_non_members = 0
        self.icmp_errors = 0
        self.errors = 0

    def _fan_out(
        self,
        source_name: str,
        source: Address | None,
        base: ImpairmentSettings,
        overrides: Mapping[tuple[Address, Address], ImpairmentSettings],
    ) -> list[_Link]:
        links = []
        for dst in self.members:
            if dst == source:
                continue
            chosen = overrides.get((source, dst), base) if source is not None else base
            seeded = dataclasses.replace(chosen, seed=link_seed(chosen.seed, source_name, _name(dst)))
            link = _Link(f"{source_name}->{_name(dst)}", dst, seeded)
            self._links[link.name] = link
            links.append(link)
        return links

    async def start(self) -> None:
        """Bind the hub's socket; the OSError names the address if it can't."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self._bind[0] else socket.AF_INET
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _HubProtocol(self), local_addr=self._bind, family=family
            )
        except OSError as exc:
            message = f"impairment hub cannot bind {_name(self._bind)}: {exc.strerror}"
            raise OSError(exc.errno, message) from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A relay takes every member's traffic at once: give it room for a burst (a busy loop
            # must not turn into loss nobody asked for). The kernel caps it at net.core.rmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self._loop, self._transport, self._t0 = loop, transport, loop.time()

    async def __aenter__(self) -> ImpairedHub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop relaying; copies still waiting for their time are discarded. Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def address(self) -> Address:
        """Where members send to: the bound address (with the real port when bound to port 0)."""
        if self._transport is None:
            return self._bind
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def now_ms(self) -> float:
        """Model time: milliseconds since :meth:`start`."""
        return 0.0 if self._loop is None else (self._loop.time() - self._t0) * 1000.0

    def link(self, source: Address | str, destination: Address) -> Impairment:
        """The model of one directed link (``source`` may be :data:`OUTSIDE`); KeyError if none."""
        src = source if isinstance(source, str) else _name(_normalize(source))
        return self._links[f"{src}->{_name(_normalize(destination))}"].model

    def outage(self, duration_ms: float, start_ms: float | None = None) -> None:
        """Drop everything on every link for ``duration_ms`` from ``start_ms`` (default: now)."""
        start = self.now_ms() if start_ms is None else start_ms
        for link in self._links.values():
            link.model.add_outage(start, duration_ms)

    def stats(self) -> HubStats:
        """Totals and per-link counters, as plain data (JSON-ready)."""
        links = list(self._links.values())
        models = [link.model for link in links]
        totals = LinkStats(
            seen=sum(m.seen for m in models), dropped=sum(m.dropped for m in models),
            outage_dropped=sum(m.outage_dropped for m in models),
            duplicated=sum(m.duplicated for m in models), reordered=sum(m.reordered for m in models),
            delivered=sum(m.delivered for m in models), sent=sum(li.sent for li in links),
            send_errors=sum(li.send_errors for li in links), overflow=sum(li.overflow for li in links),
        )
        return HubStats(
            received=self.received, from_non_members=self.from_non_members, icmp_errors=self.icmp_errors,
            errors=self.errors, queued=len(self._queue), totals=totals,
            links={link.name: link.stats() for link in links},
        )

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """Fan one datagram out through its source's impaired links; never raises."""
        try:
            self.received += 1
            links = self._out.get((str(addr[0]), int(addr[1])))
            if links is None:
                self.from_non_members += 1
                links = self._outside
            now_ms = self.now_ms()
            for link in links:
                for at_ms in link.model.decide(now_ms):
                    self._deliver(link, data, at_ms)
        except Exception:
            # A bug here must not stop the relay for every member: count it, log now and then.
            self.errors += 1
            if self.errors & (self.errors - 1) == 0:  # the 1st, 2nd, 4th, 8th, ...
                log.exception("impairment hub: datagram from %r failed (%d so far)", addr, self.errors)

    def error_received(self, exc: Exception) -> None:
        """An ICMP error for an earlier send; the socket doesn't say which link, so it counts on the hub."""
        self.icmp_errors += 1

    def _deliver(self, link: _Link, data: bytes, at_ms: float) -> None:
        if at_ms <= self.now_ms():
            self._send(link, data)
            return
        if len(self._queue) >= self._max_queued:
            link.overflow += 1
            return
        assert self._loop is not None
        when = self._t0 + at_ms / 1000.0
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, data, link))
        if self._queue[0][1] == self._seq:  # the new copy is due first: (re)arm the timer for it
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(when, self._flush)

    def _flush(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        while self._queue and self._queue[0][0] <= now:
            _, _, data, link = heapq.heappop(self._queue)
            self._send(link, data)
        if self._queue:
            self._timer = self._loop.call_at(self._queue[0][0], self._flush)

    def _send(self, link: _Link, data: bytes) -> None:
        if self._transport is None:
            link.send_errors += 1
            return
        try:
            self._transport.sendto(data, link.destination)
        except (OSError, RuntimeError):
            # asyncio reports most socket errors through error_received; this catches the rest
            # (e.g. a transport closing under us).
            link.send_errors += 1
            return
        link.sent += 1
