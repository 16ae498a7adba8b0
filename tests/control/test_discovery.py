"""DNS-SD discovery between two hosts: network namespaces joined by a veth pair, each running a small
Python process with the real python-zeroconf. All mDNS traffic stays on the namespaces' veth link.

Plus table tests of the pure parts (broker choice, address choice, TXT length).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from gateway import __version__
from gateway.config import from_dict
from gateway.control import discovery
from gateway.control.discovery import Advertiser, DiscoveryError, choose_broker
from tests.rigs.netns import REPO, Host, linked_hosts, needs_root

# Runs inside a namespace: one JSON command in argv, JSON results on stdout, logs on stderr.
_AGENT = textwrap.dedent("""
    import asyncio, json, logging, sys, time
    from gateway.control import discovery as d

    async def main(cmd):
        iface = d.InterfaceChoice.Default if cmd.get("default") else [cmd["address"]]
        if cmd["op"] == "advertise":
            ads = [d.Advertiser(interfaces=iface, **kw) for kw in cmd["adverts"]]
            for ad in ads:
                await ad.start()
            print(json.dumps([ad.names for ad in ads]), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
            for ad in ads:
                await ad.close()
            return
        out = []
        for name, *args in cmd["steps"]:
            start = time.monotonic()
            try:
                if name == "find_broker":
                    result = await d.find_broker(*args, interfaces=iface)
                elif name == "list_gateways":
                    result = await d.list_gateways(*args, interfaces=iface)
                else:
                    async with d.Advertiser(*args, interfaces=iface) as ad:
                        result = ad.names
            except d.DiscoveryError as exc:
                result = {"error": str(exc)}
            out.append({"result": result, "elapsed_s": time.monotonic() - start})
        print(json.dumps(out), flush=True)

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(json.loads(sys.argv[1])))
""")


@pytest.fixture
def lan() -> Iterator[tuple[Host, Host]]:
    """Two namespaces on one veth link (10.79.0.1/24, 10.79.0.2/24), multicast routed onto it."""
    with contextlib.ExitStack() as stack:
        try:
            hosts = stack.enter_context(linked_hosts("zc", "10.79.0", multicast=True))
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"ip netns is not usable here: {exc.stderr.strip()}")
        yield hosts


def _agent(host: Host, cmd: dict[str, Any], **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        host.cmd(sys.executable, "-c", _AGENT, json.dumps({"address": host.address, **cmd})),
        env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


class _Advertising:
    """Adverts running in ``host`` until the block ends (then goodbyes are sent)."""

    def __init__(self, host: Host, *adverts: dict[str, Any]) -> None:
        self.proc = _agent(host, {"op": "advertise", "adverts": list(adverts)}, stdin=subprocess.PIPE)

    def __enter__(self) -> list[list[str]]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, self.proc.communicate(timeout=10)[1]
        names: list[list[str]] = json.loads(line)
        return names

    def __exit__(self, *exc: object) -> None:
        _, err = self.proc.communicate(input="", timeout=10)
        assert self.proc.returncode == 0, err


def _run(host: Host, *steps: list[Any]) -> tuple[list[dict[str, Any]], str]:
    proc = _agent(host, {"op": "steps", "steps": list(steps)})
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    results: list[dict[str, Any]] = json.loads(out)
    return results, err


_PLANT_A = {"site": "plant", "gateway_id": "gw-a", "port": 5004, "groups": ["ops", "fire"],
            "broker": "10.79.0.1:1883", "broker_port": 1883}


@needs_root
def test_finds_its_site_broker_and_lists_gateways(lan: tuple[Host, Host]) -> None:
    a, b = lan
    with _Advertising(a, _PLANT_A) as names:
        assert names == [["plant-gw-a._gateway._udp.local.", "plant broker._mqtt._tcp.local."]]
        (broker, boxes, clash), err = _run(b, ["find_broker", "plant", 5], ["list_gateways", 2],
                                           ["advertise", "plant", "gw-a", 5006])
    assert broker["result"] == [a.address, 1883]
    assert broker["elapsed_s"] < 3  # returns as soon as its site's broker resolves
    assert boxes["result"] == [{
        "name": "plant-gw-a", "site": "plant", "gateway": "gw-a", "version": __version__,
        "groups": ["ops", "fire"], "broker": "10.79.0.1:1883", "address": a.address,
        "addresses": [a.address], "port": 5004}]
    # The same gateway id again on the LAN: zeroconf renames on conflict, and we say so.
    assert clash["result"] == ["plant-gw-a-2._gateway._udp.local."]
    assert "is taken by another box" in err


@needs_root
def test_another_sites_broker_is_not_returned(lan: tuple[Host, Host]) -> None:
    a, b = lan
    other = {"site": "other", "gateway_id": "gw-o", "port": 5004, "broker_port": 1884}
    with _Advertising(a, other):
        (plant, found), _ = _run(b, ["find_broker", "plant", 2], ["find_broker", "other", 5])
    assert plant["result"] is None and plant["elapsed_s"] >= 2
    assert found["result"] == [a.address, 1884]  # it was there to be seen


@needs_root
def test_nothing_advertised_gives_none_after_the_timeout(lan: tuple[Host, Host]) -> None:
    (broker, boxes, bad), _ = _run(lan[1], ["find_broker", "plant", 1.5], ["list_gateways", 1],
                                   ["advertise", "s" * 32, "x" * 32, 5004])
    assert broker["result"] is None and 1.5 <= broker["elapsed_s"] < 4
    assert boxes["result"] == []
    # A 65-character instance name is cut to one 63-byte DNS label, not refused.
    assert bad["result"] == [f"{'s' * 32}-{'x' * 30}._gateway._udp.local."]


@needs_root
def test_an_address_that_is_not_ours_is_a_discovery_error(lan: tuple[Host, Host]) -> None:
    a, _ = lan
    proc = _agent(Host(a.netns, "10.79.9.9"), {"op": "steps", "steps": [["find_broker", "plant", 1]]})
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    (result,) = json.loads(out)
    assert result["result"]["error"] == (
        "mDNS browse: [Errno 19] No such device (is each of 10.79.9.9 an address of this host?)")


@needs_root
def test_no_multicast_route_is_a_discovery_error(lan: tuple[Host, Host]) -> None:
    a, _ = lan
    subprocess.run(a.cmd("ip", "route", "del", "224.0.0.0/4"), check=True)
    proc = _agent(a, {"op": "steps", "default": True, "steps": [["find_broker", "plant", 1]]})
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    (result,) = json.loads(out)
    assert result["result"]["error"] == (
        "mDNS browse: [Errno 19] No such device (no route for 224.0.0.251: add a default or "
        "224.0.0.0/4 route, or name the interfaces)")


# --- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("candidates", "expected"), [
    ([], None),
    ([("other", "10.0.0.1", 1883)], None),
    ([("other", "10.0.0.1", 1883), ("plant", "10.0.0.2", 1884)], ("10.0.0.2", 1884)),
    ([(None, "10.0.0.3", 1883), ("plant", "10.0.0.2", 1884)], ("10.0.0.2", 1884)),
    ([("", "10.0.0.3", 1883), ("other", "10.0.0.2", 1884)], ("10.0.0.3", 1883)),
    ([("other", "10.0.0.1", 1883), (None, "10.0.0.3", 1885)], ("10.0.0.3", 1885)),
    ([("plant", "10.0.0.2", 1884), ("plant", "10.0.0.4", 1886)], ("10.0.0.2", 1884)),
])
def test_choose_broker(candidates: list[tuple[str | None, str, int]],
                       expected: tuple[str, int] | None) -> None:
    assert choose_broker(candidates, "plant") == expected


def test_pick_address_prefers_our_subnet() -> None:
    local = [ipaddress.IPv4Network("192.168.5.0/24")]
    assert discovery._pick_address(["172.17.0.1", "192.168.5.9"], local) == "192.168.5.9"
    assert discovery._pick_address(["172.17.0.1"], local) == "172.17.0.1"
    assert discovery._pick_address([], local) is None


def test_groups_txt_is_cut_at_a_group_to_fit_one_txt_string() -> None:
    groups = [f"group-{i:02d}-{'x' * 20}" for i in range(12)]
    value = discovery._txt_list(groups, "groups")
    assert len(f"groups={value}".encode()) <= 255
    assert value.split(",") == groups[: len(value.split(","))] and len(value.split(",")) == 8


def test_from_config() -> None:
    cfg = from_dict({
        "gateway": {"id": "gw-a", "site": "plant"},
        "network": {"bind_address": "10.1.2.3"},
        "mqtt": {"host": "10.1.2.1", "port": 1883},
        "groups": {"ops": {"port": 5010, "multicast": "239.1.1.1"},
                   "fire": {"port": 5012, "multicast": "239.1.1.2"}},
    })
    ad = Advertiser.from_config(cfg, broker_port=1883)
    assert (ad.site, ad.gateway_id, ad.port, ad.groups) == ("plant", "gw-a", 5010, ("ops", "fire"))
    assert (ad.broker, ad.broker_port, ad.addresses) == ("10.1.2.1:1883", 1883, ("10.1.2.3",))
    default = Advertiser.from_config(from_dict({"mqtt": {"enabled": False}}))
    assert (default.port, default.broker, default.addresses) == (5004, "", ())


def test_discovery_error_is_a_gateway_error_and_an_os_error() -> None:
    exc = DiscoveryError("browse", "no usable IPv4 interface")
    assert isinstance(exc, OSError) and str(exc) == "mDNS browse: no usable IPv4 interface"

