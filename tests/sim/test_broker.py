"""The private mosquitto: start, stop, kill, restart on the same port, and never a process left behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import BrokerError
from gateway.sim.broker import Mosquitto, free_tcp_port


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting for a parent that isn't us counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _gone_within(pid: int, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_start_and_stop() -> None:
    broker = Mosquitto()
    broker.start()
    try:
        pid = broker.pid
        assert pid is not None and _alive(pid) and broker.running
        assert _accepts(broker.port)
        conf = (broker.directory / "mosquitto.conf").read_text()
        assert f"listener {broker.port} 127.0.0.1" in conf
        assert "allow_anonymous true" in conf and "persistence false" in conf
        assert " running" in broker.log_path.read_text()
        assert broker.start() is broker and broker.pid == pid  # already running: nothing new
    finally:
        broker.stop()
    assert not broker.running and broker.pid is None
    assert not _alive(pid)
    assert not _accepts(broker.port)
    broker.stop()  # idempotent
    directory = broker.directory
    broker.close()
    assert not directory.exists()


def test_close_removes_its_directory_but_not_a_given_one(tmp_path: Path) -> None:
    with Mosquitto() as broker:
        directory = broker.directory
    assert not directory.exists()
    with Mosquitto(directory=tmp_path) as broker:
        pass
    assert (tmp_path / "mosquitto.log").exists()


def test_kill_is_sigkill_and_idempotent() -> None:
    with Mosquitto() as broker:
        pid = broker.pid
        assert pid is not None
        broker.kill()
        assert not _alive(pid) and not broker.running
        broker.kill()
        broker.stop()
        assert "terminating" not in broker.log_path.read_text()  # no clean exit: it was killed


def test_restart_reuses_the_port_even_with_clients_connected() -> None:
    with Mosquitto() as broker:
        port, first = broker.port, broker.pid
        # The broker closes this connection first, which leaves TIME_WAIT state behind on its port.
        with socket.create_connection(("127.0.0.1", port)):
            broker.restart()
            assert broker.port == port and broker.pid != first and _accepts(port)
        with socket.create_connection(("127.0.0.1", port)):
            broker.kill()
            broker.start()
            assert broker.port == port and _accepts(port)
        assert broker.starts == 3


def test_given_port_is_used() -> None:
    port = free_tcp_port()
    with Mosquitto(port) as broker:
        assert broker.port == port and _accepts(port)


def test_port_taken_by_someone_else_is_a_clear_error() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = Mosquitto(port)
        with pytest.raises(BrokerError, match="address in use") as info:
            broker.start()
        assert "Address already in use" in str(info.value)  # the log tail
        assert not broker.running
        broker.close()


def test_missing_executable_is_a_clear_error() -> None:
    with pytest.raises(BrokerError, match="install the mosquitto package"):
        Mosquitto(executable="mosquitto-not-installed-here").start()


def test_port_before_start_is_an_error() -> None:
    with pytest.raises(BrokerError):
        _ = Mosquitto().port


def test_keyboard_interrupt_inside_with_stops_it() -> None:
    pid = None
    with pytest.raises(KeyboardInterrupt), Mosquitto() as broker:
        pid = broker.pid
        raise KeyboardInterrupt
    assert pid is not None and not _alive(pid)


_CHILD = textwrap.dedent("""
    import sys, time
    from gateway.sim.broker import Mosquitto
    broker = Mosquitto()
    if sys.argv[1] == "with":
        with broker:
            print(broker.pid, broker.directory, flush=True)
            time.sleep(60)
    else:  # started and forgotten: only the atexit hook (or the parent-death signal) stops it
        broker.start()
        print(broker.pid, broker.directory, flush=True)
        if sys.argv[1] == "exit":
            sys.exit(0)
        time.sleep(60)
""")


@contextlib.contextmanager
def _child(mode: str) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    """A Python process owning a broker; yields it, the broker's pid and directory; killed after."""
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, mode], stdout=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, like a program run from a terminal
    ) as proc:
        try:
            assert proc.stdout is not None
            pid, _, directory = proc.stdout.readline().strip().partition(" ")
            assert pid.isdigit(), f"child said {pid!r}"
            yield proc, int(pid), Path(directory)
        finally:
            proc.kill()


def test_ctrl_c_in_the_owner_stops_the_broker_once() -> None:
    with _child("with") as (proc, pid, directory):
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        assert proc.wait(10) != 0  # KeyboardInterrupt
        assert _gone_within(pid)
        assert not directory.exists()


def test_atexit_stops_a_forgotten_broker() -> None:
    with _child("exit") as (proc, pid, directory):
        assert proc.wait(10) == 0
        assert _gone_within(pid)
        assert not directory.exists()


def test_owner_killed_outright_takes_the_broker_along() -> None:
    with _child("forget") as (proc, pid, directory):
        proc.kill()  # no finally, no atexit: only the parent-death signal can help
        proc.wait()
        try:
            assert _gone_within(pid), "broker outlived its owner"
        finally:
            shutil.rmtree(directory, ignore_errors=True)  # nobody was left to remove it
