"""A private mosquitto broker on loopback, for the simulator, the tests and ``gateway demo``.

It writes its own ``mosquitto.conf`` into a temporary directory (listener on 127.0.0.1 only, anonymous
clients, no persistence, log to ``mosquitto.log`` there), so nothing of the system's broker is used or
touched. It never outlives us: the process runs in its own session (Ctrl-C at the terminal reaches only
us, and we stop it once, in ``finally``/``__exit__``), an ``atexit`` hook stops any broker still running,
and on Linux ``setpriv --pdeathsig KILL`` makes the kernel kill it if this process dies without cleaning
up (SIGKILL, ``os._exit``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from gateway.errors import BrokerError

LOG_NAME = "mosquitto.log"
"""The broker's log file, in its directory."""

_SEARCH_PATH = f"{os.environ.get('PATH', os.defpath)}{os.pathsep}/usr/sbin{os.pathsep}/usr/local/sbin"
"""Debian installs mosquitto in /usr/sbin, which is not on a normal user's PATH."""

_RUNNING_LINE = " running"
"""mosquitto logs ``mosquitto version X running`` once every listener is bound (checked on 2.0.11)."""

_live: set[Mosquitto] = set()
"""Brokers started and not yet closed: the atexit hook closes them."""
_live_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    with _live_lock:
        brokers = list(_live)
    for broker in brokers:
        broker.close()


atexit.register(_stop_all_at_exit)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (another process may still take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class Mosquitto:
    """One private mosquitto process: start, stop, kill and restart on the same port."""

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        executable: str | None = None,
        directory: str | Path | None = None,
        allow_anonymous: bool = True,
        start_timeout_s: float = 5.0,
        config_text: str | None = None,
    ) -> None:
        """``config_text``, when given, replaces the listener, login and persistence lines with a whole
        configuration of the caller's (e.g. from :mod:`gateway.control.brokerconf`): it must bind
        ``port`` on ``host``, so ``port`` is then required. Logging lines are still added after it."""
        if config_text is not None and port is None:
            raise ValueError("a broker started from config_text needs the port that config binds")
        self.host = host
        self._port = port
        self._fixed_port = port is not None
        self._executable = executable
        self._given_dir = Path(directory) if directory is not None else None
        self._dir: Path | None = self._given_dir
        self._allow_anonymous = allow_anonymous
        self._config_text = config_text
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        """How many times the broker process was started."""

    # -- what it is ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port it listens on (chosen at the first start unless given)."""
        if self._port is None:
            raise BrokerError("the broker has no port yet: start it first")
        return self._port

    @property
    def directory(self) -> Path:
        """Where its config and log live."""
        if self._dir is None:
            raise BrokerError("the broker has no directory yet: start it first")
        return self._dir

    @property
    def log_path(self) -> Path:
        """The broker's log file (it appends across restarts)."""
        return self.directory / LOG_NAME

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the broker's log and console output, for error messages."""
        out = []
        for name in (LOG_NAME, "console.log"):
            path = self._dir / name if self._dir is not None else None
            if path is not None and path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    out.append(f"--- {name}\n" + "\n".join(text))
        return "\n".join(out) or "(no output)"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Mosquitto:
        """Start the broker and wait (bounded) until it listens; :class:`BrokerError` if it can't."""
        if self.running:
            return self
        executable = self._find_executable()
        with _live_lock:
            _live.add(self)
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="gateway-mosquitto-"))
        # An auto-picked port can be taken by someone else between picking and binding: pick again.
        attempts = 1 if (self._fixed_port or self.starts) else 3
        for attempt in range(attempts):
            if self._port is None or (attempt and not self._fixed_port):
                self._port = free_tcp_port(self.host)
            try:
                self._launch(executable)
                return self
            except _AddressInUse as exc:
                if attempt == attempts - 1:
                    raise BrokerError(
                        f"mosquitto could not listen on {self.host}:{self._port}: address in use\n"
                        f"{self.log_tail()}"
                    ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout_s: float = 3.0) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after ``timeout_s``) and reap it; idempotent."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        except BaseException:  # e.g. Ctrl-C while waiting: make sure it goes anyway
            with contextlib.suppress(OSError):
                proc.kill()
            raise
        finally:
            self._forget(proc)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would (no goodbye to clients), and reap it."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        finally:
            self._forget(proc)

    def restart(self) -> None:
        """Stop the broker if it runs, then start it again on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the broker and remove its directory (unless the caller gave one)."""
        try:
            self.stop()
        finally:
            if self._given_dir is None and self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
            with _live_lock:
                _live.discard(self)

    def __enter__(self) -> Mosquitto:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<Mosquitto {self.host}:{self._port} {state}>"

    # -- internals ----------------------------------------------------------------------------

    def _find_executable(self) -> str:
        found = shutil.which(self._executable or "mosquitto", path=_SEARCH_PATH)
        if found is None:
            raise BrokerError(
                f"{self._executable or 'mosquitto'} not found (install the mosquitto package)"
            )
        return found

    def _write_config(self) -> Path:
        conf = self.directory / "mosquitto.conf"
        if self._config_text is not None:
            lines = [self._config_text.rstrip("\n"), "", "# Added by gateway.sim.broker:"]
        else:
            lines = [
                "# Written by gateway.sim.broker for one private broker; rewritten at every start.",
                f"listener {self.port} {self.host}",
                f"allow_anonymous {'true' if self._allow_anonymous else 'false'}",
                "persistence false",
                # Small messages (voice over MQTT) go out at once, not behind Nagle's algorithm.
                "set_tcp_nodelay true",
            ]
        lines += [
            f"log_dest file {self.log_path}",
            *(f"log_type {t}" for t in ("error", "warning", "notice", "information")),
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # As root mosquitto drops to the 'mosquitto' user, which can't write our private directory.
            # https://mosquitto.org/man/mosquitto-conf-5.html (option "user")
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _launch(self, executable: str) -> None:
        conf = self._write_config()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [executable, "-c", str(conf)]
        setpriv = shutil.which("setpriv")
        # The parent-death signal belongs to the thread that forks, so only use it from the main
        # thread, where it means "this process": https://man7.org/linux/man-pages/man2/prctl.2.html
        if setpriv is not None and threading.current_thread() is threading.main_thread():
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        console = (self.directory / "console.log").open("ab")
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,  # not in the terminal's process group: Ctrl-C reaches us only
            )
        except OSError as exc:
            raise BrokerError(f"cannot run {executable}: {exc.strerror}") from exc
        finally:
            console.close()
        self._proc = proc
        self.starts += 1
        try:
            self._wait_listening(proc, log_offset)
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, proc: subprocess.Popen[bytes], log_offset: int) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        delay = 0.005
        while True:
            log = self._read_log(log_offset)
            if _RUNNING_LINE in log and proc.poll() is None:
                return
            if proc.poll() is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.1)
                if "Address already in use" in self._read_log(log_offset):
                    raise _AddressInUse
                raise BrokerError(
                    f"mosquitto exited with status {proc.returncode} while starting on "
                    f"{self.host}:{self.port}\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"mosquitto did not start listening on {self.host}:{self.port} within "
                    f"{self.start_timeout_s} s\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _read_log(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        if self._proc is proc:
            self._proc = None


class _AddressInUse(Exception):
    """The broker could not bind its port (retried with another one when we picked it)."""

