"""sd_notify against a real AF_UNIX datagram socket standing in for systemd.

Every message test runs with both senders: systemd-python (libsystemd) and our own datagram
fallback, on a filesystem socket and on an abstract one.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator

import pytest

from gateway.system.notify import (
    Notifier,
    Sender,
    default_sender,
    send_datagram,
    send_libsystemd,
    watchdog_interval_s,
)

SENDERS = {"libsystemd": send_libsystemd, "datagram": send_datagram}


class Systemd:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self, timeout_s: float = 2.0) -> str:
        self.sock.settimeout(timeout_s)
        return self.sock.recv(4096).decode()

    def drain(self) -> list[str]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return out


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Systemd]:
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(key, raising=False)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    # A short directory: sun_path holds 108 bytes and pytest's tmp_path can be longer.
    with sock, tempfile.TemporaryDirectory(prefix="sdn") as tmp:
        if request.param == "path":
            address = os.path.join(tmp, "notify")
            sock.bind(address)
            monkeypatch.setenv("NOTIFY_SOCKET", address)
        else:
            name = f"gateway-test-{uuid.uuid4().hex}"
            sock.bind("\0" + name)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield Systemd(sock)


@pytest.fixture(params=sorted(SENDERS))
def sender(request: pytest.FixtureRequest) -> Sender:
    return SENDERS[request.param]


def test_ready_status_stopping(systemd: Systemd, sender: Sender) -> None:
    n = Notifier(sender)
    assert n.enabled
    n.ready()
    n.status("linked to broker, 2 ports")
    n.stopping()
    assert [systemd.recv() for _ in range(3)] == [
        "READY=1", "STATUS=linked to broker, 2 ports", "STOPPING=1"]


def test_status_cannot_smuggle_other_assignments(systemd: Systemd, sender: Sender) -> None:
    Notifier(sender).status("broker said:\nREADY=1\r\nbye")
    assert systemd.recv() == "STATUS=broker said: READY=1 bye"


def test_default_sender_is_libsystemd_when_importable() -> None:
    assert default_sender() is send_libsystemd


def test_default_sender_falls_back_without_systemd_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "systemd", None)  # makes "from systemd import ..." fail
    assert default_sender() is send_datagram


def test_default_notifier_reaches_the_socket(systemd: Systemd) -> None:
    Notifier().ready()
    assert systemd.recv() == "READY=1"


def test_without_notify_socket_everything_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    sent: list[str] = []

    def record(message: str) -> bool:
        sent.append(message)
        return True

    n = Notifier(record)
    assert not n.enabled
    n.ready()
    n.status("x")
    n.stopping()
    assert n.watchdog_interval_s() is None
    asyncio.run(asyncio.wait_for(n.watchdog(lambda: True), 1.0))  # returns at once
    assert sent == []


@pytest.mark.parametrize("address", ["/nonexistent/notify", "relative/notify", "vsock:2:1234"])
def test_undeliverable_socket_never_raises(
    monkeypatch: pytest.MonkeyPatch, sender: Sender, address: str
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    n = Notifier(sender)
    n.ready()
    n.status("still fine")
    assert send_datagram("READY=1") is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "2000000"}, 1.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval_s(env) == expected


def test_notifier_watchdog_interval_from_environment(
    systemd: Systemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "500000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier(send_datagram).watchdog_interval_s() == 0.25


async def test_watchdog_pings_only_while_healthy(
    systemd: Systemd, sender: Sender, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # ping every 10 ms
    n = Notifier(sender)
    assert n.watchdog_interval_s() == 0.01
    healthy = True
    task = asyncio.create_task(n.watchdog(lambda: healthy), name="watchdog")
    try:
        await asyncio.sleep(0.1)
        pings = systemd.drain()
        assert len(pings) >= 3
        assert set(pings) == {"WATCHDOG=1"}

        healthy = False
        systemd.drain()  # pings are sent synchronously on the loop: none can be in flight
        await asyncio.sleep(0.1)
        assert systemd.drain() == [], "no pings while unhealthy: systemd will restart us"

        healthy = True
        await asyncio.sleep(0.1)
        assert len(systemd.drain()) >= 3, "pings resume when healthy again"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
