"""Impairment: the pure link model (tables and properties) and the UDP hub over real loopback sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.net.impair import (
    OUTSIDE,
    REORDER_MAX_PACKETS,
    ImpairedHub,
    Impairment,
    ImpairmentSettings,
    link_seed,
)

N = 100_000


def _run(s: ImpairmentSettings, n: int = N, step_ms: float | None = None) -> list[list[float]]:
    """Decisions for n datagrams entering every ``step_ms`` (default: the settings' packet_ms)."""
    model = Impairment(s)
    step = s.packet_ms if step_ms is None else step_ms
    return [model.decide(i * step) for i in range(n)]


def _loss_runs(decisions: list[list[float]]) -> list[int]:
    """Lengths of the runs of consecutive lost datagrams."""
    runs, current = [], 0
    for times in decisions:
        if not times:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    if current:
        runs.append(current)
    return runs


# --- the model: tables ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loss_pct", "burst_ms", "seed"),
    [(1, 0, 1), (5, 0, 2), (20, 0, 3), (50, 0, 4), (100, 0, 5),
     (5, 60, 6), (20, 100, 7), (30, 200, 8), (10, 20, 9), (50, 40, 10)],
)
def test_mean_loss_matches_loss_pct(loss_pct: float, burst_ms: float, seed: int) -> None:
    s = ImpairmentSettings(loss_pct=loss_pct, burst_ms=burst_ms, seed=seed)
    lost = sum(1 for times in _run(s) if not times) / N
    pi = loss_pct / 100
    # Five standard deviations of the mean of a two-state chain: successive outcomes are correlated
    # by rho = 1 - p - r, which inflates the variance by (1 + rho) / (1 - rho).
    rho = 1 - sum(s.gilbert())  # 0 for independent loss
    tolerance = 5 * math.sqrt(pi * (1 - pi) / N * (1 + rho) / (1 - rho)) + 1e-9
    assert abs(lost - pi) <= tolerance, (lost, pi, tolerance)


@pytest.mark.parametrize(
    ("loss_pct", "burst_ms", "packet_ms", "seed"),
    [(5, 60, 20, 1), (20, 100, 20, 2), (30, 200, 20, 3), (10, 20, 20, 4), (10, 50, 10, 5), (40, 70, 20, 6)],
)
def test_bursty_loss_has_the_mean_burst_length(loss_pct: float, burst_ms: float, packet_ms: float,
                                                seed: int) -> None:
    s = ImpairmentSettings(loss_pct=loss_pct, burst_ms=burst_ms, packet_ms=packet_ms, seed=seed)
    runs = _loss_runs(_run(s))
    mean = sum(runs) / len(runs)
    assert mean == pytest.approx(burst_ms / packet_ms, rel=0.08), (mean, len(runs))


def test_independent_loss_bursts_are_geometric() -> None:
    # The contrast to the Gilbert model: at 20 % independent loss the mean run is 1 / 0.8 = 1.25.
    runs = _loss_runs(_run(ImpairmentSettings(loss_pct=20, seed=11)))
    assert sum(runs) / len(runs) == pytest.approx(1.25, rel=0.03)


@pytest.mark.parametrize(
    ("loss_pct", "burst_ms", "packet_ms", "p", "r"),
    [(20, 100, 20, 0.05, 0.2), (50, 40, 20, 0.5, 0.5), (0, 60, 20, 0.0, 1 / 3), (10, 20, 10, 0.0555556, 0.5),
     (20, 0, 20, 0.2, 0.8), (100, 0, 20, 1.0, 0.0)],
)
def test_gilbert_transition_probabilities(loss_pct: float, burst_ms: float, packet_ms: float,
                                          p: float, r: float) -> None:
    s = ImpairmentSettings(loss_pct=loss_pct, burst_ms=burst_ms, packet_ms=packet_ms)
    assert s.gilbert() == pytest.approx((p, r), rel=1e-5)
    if loss_pct:
        assert p / (p + r) == pytest.approx(loss_pct / 100, rel=1e-5)  # the stationary loss


def test_duplication_rate_counts_survivors_only() -> None:
    s = ImpairmentSettings(loss_pct=20, duplicate_pct=10, seed=12)
    model = Impairment(s)
    decisions = [model.decide(i * 20.0) for i in range(N)]
    doubles = sum(1 for times in decisions if len(times) == 2)
    survivors = sum(1 for times in decisions if times)
    assert doubles == model.duplicated
    assert doubles / survivors == pytest.approx(0.10, abs=5 * math.sqrt(0.09 / survivors))


def test_jitter_swaps_neighbours_at_the_documented_rate() -> None:
    # Packets T = 20 ms apart, uniform jitter J = 40 ms: P(swap) = (J - T)² / (2 J²) = 1/8.
    s = ImpairmentSettings(jitter_ms=40, seed=13)
    times = [t[0] for t in _run(s)]
    swaps = sum(1 for a, b in itertools.pairwise(times) if a > b)
    assert swaps / (N - 1) == pytest.approx(0.125, abs=5 * math.sqrt(0.125 * 0.875 / N))


def test_reordered_packets_arrive_after_their_successors() -> None:
    s = ImpairmentSettings(reorder_pct=10, seed=14)
    model = Impairment(s)
    times = [model.decide(i * 20.0)[0] for i in range(N)]
    held = {i for i, t in enumerate(times) if t != i * 20.0}
    assert len(held) == model.reordered
    assert len(held) / N == pytest.approx(0.10, abs=5 * math.sqrt(0.09 / N))
    for i in held:
        k = (times[i] - i * 20.0) / 20.0 - 0.5
        assert k in range(1, REORDER_MAX_PACKETS + 1)
        if i + 1 < N and i + 1 not in held:
            assert times[i] > times[i + 1]
    assert {round((times[i] - i * 20.0) / 20.0 - 0.5) for i in held} == set(range(1, REORDER_MAX_PACKETS + 1))


def test_outage_drops_everything_inside_the_window_and_freezes_the_loss_chain() -> None:
    base = ImpairmentSettings(loss_pct=20, burst_ms=60, seed=15)
    cut = dataclasses.replace(base, outages=((1000.0, 2000.0),))
    with_outage, without = Impairment(cut), Impairment(base)
    for i in range(500):
        now = i * 20.0
        got = with_outage.decide(now)
        if 1000.0 <= now < 3000.0:
            assert got == []
        else:
            # Outside the window the decisions are those of a link that never saw the outage's packets.
            assert got == without.decide(now)
    assert with_outage.outage_dropped == 100
    assert with_outage.dropped == without.dropped + 100


def test_add_outage_at_run_time() -> None:
    model = Impairment(ImpairmentSettings())
    assert model.decide(0.0) == [0.0]
    model.add_outage(10.0, 5.0)
    assert [model.decide(t) for t in (9.9, 10.0, 14.9, 15.0)] == [[9.9], [], [], [15.0]]
    assert (model.seen, model.dropped, model.outage_dropped, model.delivered) == (5, 2, 2, 3)
    with pytest.raises(ValueError, match="duration_ms >= 0"):
        model.add_outage(0.0, -1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_pct": -1}, "loss_pct must be a percentage in 0-100, got -1"),
        ({"loss_pct": 100.5}, "loss_pct must be a percentage"),
        ({"loss_pct": math.nan}, "loss_pct must be a percentage"),
        ({"reorder_pct": 101}, "reorder_pct must be a percentage"),
        ({"duplicate_pct": -0.1}, "duplicate_pct must be a percentage"),
        ({"jitter_ms": -5}, "jitter_ms must be a finite number of milliseconds >= 0"),
        ({"delay_ms": math.inf}, "delay_ms must be a finite number"),
        ({"burst_ms": -1}, "burst_ms must be a finite number"),
        ({"packet_ms": 0}, "packet_ms must be a finite number of milliseconds > 0"),
        ({"burst_ms": 10}, r"burst_ms must be 0 \(independent loss\) or at least packet_ms \(20\)"),
        ({"loss_pct": 60, "burst_ms": 20}, "loss_pct 60 is too high for bursts of 20 ms: .* most 50% loss"),
        ({"loss_pct": 100, "burst_ms": 100}, "at most 83.33% loss"),
        ({"outages": ((0, -1),)}, r"outages must be \(start_ms, duration_ms >= 0\) pairs"),
        ({"outages": ((0,),)}, "outages must be"),
        ({"outages": (5,)}, "outages must be"),
        ({"seed": 1.5}, "seed must be an int"),
        ({"loss_pct": True}, "loss_pct must be a percentage"),
    ],
)
def test_settings_reject_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImpairmentSettings(**kwargs)


def test_outage_lists_become_tuples() -> None:
    s = ImpairmentSettings(outages=[[0, 10]])  # type: ignore[arg-type]  # as TOML would give them
    assert s.outages == ((0.0, 10.0),)
    hash(s)


def test_link_seeds_are_stable_and_per_direction() -> None:
    a, b = "127.0.0.11:5004", "127.0.0.12:5004"
    assert link_seed(7, a, b) == link_seed(7, a, b)
    assert len({link_seed(7, a, b), link_seed(7, b, a), link_seed(8, a, b), link_seed(7, OUTSIDE, b)}) == 4


# --- the model: properties -----------------------------------------------------------------------


@st.composite
def impairment_settings(draw: st.DrawFn) -> ImpairmentSettings:
    packet_ms = draw(st.sampled_from([10.0, 20.0, 40.0]))
    burst_ms = draw(st.one_of(st.just(0.0), st.floats(packet_ms, 500.0)))
    bursts = burst_ms / packet_ms  # the documented bound 100 L / (L + 1), computed as the module does
    max_loss = 100.0 if burst_ms == 0 else 100.0 * bursts / (bursts + 1.0)
    pct = st.floats(0.0, 100.0)
    return ImpairmentSettings(
        loss_pct=draw(st.floats(0.0, max_loss)), burst_ms=burst_ms,
        jitter_ms=draw(st.floats(0.0, 200.0)), reorder_pct=draw(pct), duplicate_pct=draw(pct),
        delay_ms=draw(st.floats(0.0, 500.0)), packet_ms=packet_ms, seed=draw(st.integers(0, 2**64)),
    )


entry_times = st.lists(st.floats(0.0, 1e7), min_size=1, max_size=200).map(sorted)


@given(impairment_settings(), entry_times)
@settings(max_examples=100, deadline=None)
def test_delivery_times_respect_delay_jitter_and_hold_back(s: ImpairmentSettings, times: list[float]) -> None:
    model = Impairment(s)
    eps = 1e-6 * (1 + max(times))
    hold_max = (REORDER_MAX_PACKETS + 0.5) * s.packet_ms if s.reorder_pct else 0.0
    beyond_jitter = 0
    for now in times:
        out = model.decide(now)
        assert len(out) <= 2
        assert out == sorted(out)
        for t in out:
            assert now + s.delay_ms - eps <= t <= now + s.delay_ms + s.jitter_ms + hold_max + eps
        if out and out[0] > now + s.delay_ms + s.jitter_ms + eps:
            beyond_jitter += 1  # only a hold-back takes a datagram past its jitter window
    assert beyond_jitter <= model.reordered
    assert model.delivered == model.seen - model.dropped + model.duplicated
    assert model.seen == len(times)
    assert model.reordered <= model.seen - model.dropped
    assert model.duplicated <= model.seen - model.dropped


@given(impairment_settings(), entry_times)
@settings(max_examples=50, deadline=None)
def test_same_seed_same_decisions(s: ImpairmentSettings, times: list[float]) -> None:
    a, b = Impairment(s), Impairment(s)
    assert [a.decide(t) for t in times] == [b.decide(t) for t in times]
    assert a.counters() == b.counters()


@given(st.integers(0, 2**32), st.floats(0.0, 1e6), st.integers(1, 50))
@settings(max_examples=100, deadline=None)
def test_zero_settings_deliver_every_datagram_once_at_once(seed: int, start: float, n: int) -> None:
    model = Impairment(ImpairmentSettings(seed=seed))
    for i in range(n):
        assert model.decide(start + i) == [start + i]
    assert model.counters() == {"seen": n, "dropped": 0, "outage_dropped": 0, "duplicated": 0, "reordered": 0,
                                "delivered": n, "sent": 0, "send_errors": 0, "overflow": 0}


@given(impairment_settings())
@settings(max_examples=50, deadline=None)
def test_loss_pattern_does_not_depend_on_the_other_impairments(s: ImpairmentSettings) -> None:
    plain = dataclasses.replace(s, jitter_ms=0.0, reorder_pct=0.0, duplicate_pct=0.0, delay_ms=0.0)
    assert [not t for t in _run(s, 300)] == [not t for t in _run(plain, 300)]


def test_different_seeds_lose_different_packets() -> None:
    runs = [_run(ImpairmentSettings(loss_pct=20, seed=seed), 1000) for seed in range(5)]
    patterns = {tuple(not t for t in run) for run in runs}
    assert len(patterns) == 5


# --- the hub over real UDP sockets on loopback ---------------------------------------------------

HUB_HOST = "127.0.77.9"
MEMBER_HOSTS = ("127.0.77.11", "127.0.77.12", "127.0.77.13")


class _Inbox(asyncio.DatagramProtocol):
    """A member's socket: keeps (arrival time, payload) of everything it receives."""

    def __init__(self) -> None:
        self.got: list[tuple[float, bytes]] = []
        self.changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.got.append((asyncio.get_running_loop().time(), data))
        self.changed.set()


class _Site:
    """Members bound on their own loopback address, all on one port P; the hub on HUB_HOST:P."""

    def __init__(self, port: int, members: list[tuple[asyncio.DatagramTransport, _Inbox]]) -> None:
        self.port = port
        self.transports = [t for t, _ in members]
        self.inboxes = [i for _, i in members]
        self.addresses = [(h, port) for h in MEMBER_HOSTS[: len(members)]]

    def close(self) -> None:
        for t in self.transports:
            t.close()

    async def send_all(self, count: int, senders: list[int] | None = None) -> None:
        """Each sender sends ``count`` datagrams b"m<i>:<seq>" to the hub, paced so no socket overflows."""
        for seq in range(count):
            for i in senders if senders is not None else range(len(self.transports)):
                self.transports[i].sendto(f"m{i}:{seq}".encode(), (HUB_HOST, self.port))
            if seq % 10 == 9:
                await asyncio.sleep(0.001)

    async def wait_for(self, counts: list[int], timeout_s: float = 10.0) -> None:
        """Until each inbox holds at least its count (then a little longer, to catch extras)."""
        async with asyncio.timeout(timeout_s):
            for inbox, want in zip(self.inboxes, counts, strict=True):
                while len(inbox.got) < want:
                    inbox.changed.clear()
                    await inbox.changed.wait()
        await asyncio.sleep(0.02)


async def _site(n: int) -> _Site:
    loop = asyncio.get_running_loop()
    for _ in range(20):
        members: list[tuple[asyncio.DatagramTransport, _Inbox]] = []
        try:
            port = 0
            for host in MEMBER_HOSTS[:n]:
                transport, inbox = await loop.create_datagram_endpoint(_Inbox, local_addr=(host, port))
                # Room for the whole burst even when the machine is busy (the test counts datagrams).
                transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                                              4 * 1024 * 1024)
                members.append((transport, inbox))
                port = transport.get_extra_info("sockname")[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind((HUB_HOST, port))  # the hub must be able to take P too
            return _Site(port, members)
        except OSError:
            for transport, _ in members:
                transport.close()
    raise OSError("no UDP port free on every test address")


def _by_source(inbox: _Inbox) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for _, data in inbox.got:
        source, seq = data.decode().split(":")
        out.setdefault(source, []).append(int(seq))
    return out


async def test_hub_without_impairment_forwards_everything_in_order_to_the_others() -> None:
    site = await _site(3)
    try:
        async with ImpairedHub((HUB_HOST, site.port), site.addresses) as hub:
            assert hub.address == (HUB_HOST, site.port)
            await site.send_all(200)
            await site.wait_for([400, 400, 400])
            for i, inbox in enumerate(site.inboxes):
                assert _by_source(inbox) == {f"m{j}": list(range(200)) for j in range(3) if j != i}
            stats = hub.stats()
        assert stats["received"] == 600 and stats["from_non_members"] == 0 and stats["errors"] == 0
        assert stats["totals"]["seen"] == stats["totals"]["delivered"] == stats["totals"]["sent"] == 1200
        assert stats["queued"] == 0
        assert len(stats["links"]) == 6 + 3  # member to member, and "*" to each member
    finally:
        site.close()


async def test_hub_loses_about_the_set_share_per_link_exactly_as_the_model_decides() -> None:
    s = ImpairmentSettings(loss_pct=20, seed=2024)
    site = await _site(3)
    try:
        async with ImpairedHub((HUB_HOST, site.port), site.addresses, s) as hub:
            expected: dict[tuple[int, int], int] = {}
            for i, src in enumerate(site.addresses):
                for j, dst in enumerate(site.addresses):
                    if i != j:
                        # A fresh replica of the link's model: the count depends on the seed, not on timing.
                        replica = Impairment(dataclasses.replace(
                            s, seed=link_seed(s.seed, f"{src[0]}:{src[1]}", f"{dst[0]}:{dst[1]}")))
                        expected[i, j] = sum(len(replica.decide(0.0)) for _ in range(300))
            await site.send_all(300)
            await site.wait_for([sum(n for (_, j), n in expected.items() if j == k) for k in range(3)])
            stats = hub.stats()
        for (i, j), n in expected.items():
            got = _by_source(site.inboxes[j]).get(f"m{i}", [])
            assert len(got) == n, (i, j)
            assert got == sorted(got)  # loss alone never reorders
            assert 0.8 * 300 - 30 <= n <= 0.8 * 300 + 30
            link = stats["links"][f"{MEMBER_HOSTS[i]}:{site.port}->{MEMBER_HOSTS[j]}:{site.port}"]
            assert (link["seen"], link["delivered"], link["sent"]) == (300, n, n)
        assert len(set(expected.values())) > 1  # links are independent
    finally:
        site.close()


async def test_hub_delays_jitters_reorders_and_duplicates_point_to_point() -> None:
    s = ImpairmentSettings(delay_ms=5, jitter_ms=10, reorder_pct=10, duplicate_pct=10, packet_ms=2, seed=5)
    site = await _site(2)
    loop = asyncio.get_running_loop()
    try:
        async with ImpairedHub((HUB_HOST, site.port), site.addresses, s) as hub:
            sent_at = loop.time()
            await site.send_all(100, senders=[0])
            model = hub.link(site.addresses[0], site.addresses[1])
            await site.wait_for([0, model.delivered])
            assert hub.stats()["queued"] == 0
        got = _by_source(site.inboxes[1])["m0"]
        assert len(got) == model.delivered == 100 + model.duplicated
        assert sorted(set(got)) == list(range(100))
        assert got != sorted(got)  # jitter and hold-backs reordered some
        assert model.duplicated > 0 and model.reordered > 0
        assert min(t for t, _ in site.inboxes[1].got) >= sent_at + 0.005 - 1e-3
        assert site.inboxes[0].got == []
    finally:
        site.close()


async def test_hub_forwards_non_members_to_every_member_and_counts_them() -> None:
    site = await _site(3)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        stranger.bind(("127.0.77.50", 0))
        async with ImpairedHub((HUB_HOST, site.port), site.addresses) as hub:
            for seq in range(10):
                stranger.sendto(f"x:{seq}".encode(), (HUB_HOST, site.port))
            await site.wait_for([10, 10, 10])
            stats = hub.stats()
        for inbox in site.inboxes:
            assert _by_source(inbox) == {"x": list(range(10))}
        assert stats["received"] == stats["from_non_members"] == 10
        assert all(stats["links"][f"{OUTSIDE}->{h}:{site.port}"]["sent"] == 10 for h in MEMBER_HOSTS)
    finally:
        stranger.close()
        site.close()


async def test_hub_outage_then_recovery_and_a_per_link_override() -> None:
    site = await _site(3)
    dead = ImpairmentSettings(loss_pct=100)
    try:
        async with ImpairedHub((HUB_HOST, site.port), site.addresses,
                               link_settings={(site.addresses[0], site.addresses[2]): dead}) as hub:
            hub.outage(150)
            await site.send_all(20, senders=[0])
            await asyncio.sleep(0.2)
            assert [len(i.got) for i in site.inboxes] == [0, 0, 0]
            await site.send_all(20, senders=[0])
            await site.wait_for([0, 20, 0])
            stats = hub.stats()
        assert _by_source(site.inboxes[1]) == {"m0": list(range(20))}
        to_b = stats["links"][f"{MEMBER_HOSTS[0]}:{site.port}->{MEMBER_HOSTS[1]}:{site.port}"]
        to_c = stats["links"][f"{MEMBER_HOSTS[0]}:{site.port}->{MEMBER_HOSTS[2]}:{site.port}"]
        assert (to_b["outage_dropped"], to_b["dropped"], to_b["sent"]) == (20, 20, 20)
        assert (to_c["outage_dropped"], to_c["dropped"], to_c["sent"]) == (20, 40, 0)
    finally:
        site.close()


async def test_hub_datagram_path_counts_instead_of_raising() -> None:
    hub = ImpairedHub((HUB_HOST, 0), [(MEMBER_HOSTS[0], 5004), (MEMBER_HOSTS[1], 5004)])
    await hub.start()
    try:
        hub.datagram_received(b"x", ("not an address", "not a port"))  # a bug's worth of bad input
        hub.error_received(ConnectionRefusedError())
        stats = hub.stats()
        assert (stats["received"], stats["errors"], stats["icmp_errors"]) == (1, 1, 1)
    finally:
        hub.close()
        hub.close()  # idempotent
    hub.datagram_received(b"late", (MEMBER_HOSTS[0], 5004))  # after close: counted, not sent
    assert hub.stats()["totals"]["send_errors"] == 1


@pytest.mark.parametrize(
    ("bind", "members", "message"),
    [
        ((HUB_HOST, 1), [("127.0.0.11", 1), ("127.0.0.11", 1)], "members must be distinct"),
        ((HUB_HOST, 1), [(HUB_HOST, 1), ("127.0.0.11", 1)], "own address 127.0.77.9:1 cannot be a member"),
        ((HUB_HOST, 1), [("localhost", 1)], "must be IP literals, got 'localhost'"),
        ((HUB_HOST, 70000), [], "bad UDP port 70000"),
    ],
)
def test_hub_rejects_bad_addresses(bind: tuple[str, int], members: list[tuple[str, int]],
                                   message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImpairedHub(bind, members)


def test_hub_rejects_overrides_for_unknown_links() -> None:
    a, b = ("127.0.0.11", 1), ("127.0.0.12", 1)
    with pytest.raises(ValueError, match="between two distinct members"):
        ImpairedHub((HUB_HOST, 1), [a, b], link_settings={(a, ("127.0.0.99", 1)): ImpairmentSettings()})


async def test_hub_bind_failure_names_the_address() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((HUB_HOST, 0))
        port = squatter.getsockname()[1]
        with pytest.raises(OSError, match=f"impairment hub cannot bind {HUB_HOST}:{port}"):
            await ImpairedHub((HUB_HOST, port), [(MEMBER_HOSTS[0], port)]).start()
