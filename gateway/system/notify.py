"""systemd integration: readiness, status text, stopping, and the watchdog (sd_notify).

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET``; without it (a shell, a test, a container)
every call here is a no-op. Messages go through systemd-python's ``daemon.notify`` (libsystemd's
``sd_notify``). When systemd-python is not importable — it is a C extension that needs libsystemd
headers to build, so a plain ``pip install`` on a dev machine or a slim image may lack it — we
send the datagram ourselves: the protocol is one ``KEY=VALUE`` per line in one AF_UNIX datagram,
documented as stable for reimplementation
(https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html#Notes).

The watchdog is withheld, not faked: :meth:`Notifier.watchdog` pings only while the app says it is
healthy and runs on the loop, so a wedged loop or an unhealthy box stops the pings and systemd
restarts the service after ``WatchdogSec``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

#: Sends one notification message; returns whether it was delivered.
Sender = Callable[[str], bool]


def send_datagram(message: str) -> bool:
    """Send ``message`` to ``NOTIFY_SOCKET`` as one datagram, the way ``sd_notify`` does."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        # Abstract namespace: '@' stands for the leading NUL byte (sd_notify(3), Notes).
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:
        return False  # unset, or a form we don't speak (e.g. systemd 256's vsock:)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        # Never block the loop on a full receive queue: a lost ping is what a wedged pid 1 deserves.
        sock.setblocking(False)
        try:
            sock.sendto(message.encode(), target)
        except OSError as exc:
            log.debug("sd_notify to %r failed: %s", address, exc)
            return False
    return True


def send_libsystemd(message: str) -> bool:
    """Send ``message`` with systemd-python (libsystemd's ``sd_notify``)."""
    from systemd import daemon

    return bool(daemon.notify(message))


def default_sender() -> Sender:
    """systemd-python when it imports, else our own datagram."""
    try:
        from systemd import daemon  # noqa: F401
    except ImportError:
        return send_datagram
    return send_libsystemd


def watchdog_interval_s(environ: Mapping[str, str]) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, or None when the watchdog isn't meant for this process."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid is not None:
        # Set for the main process only; a child that inherited the environment must not ping.
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


class Notifier:
    """Tells systemd how the service is doing; a no-op when not started by systemd."""

    def __init__(self, sender: Sender | None = None) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        """True when systemd asked for notifications (``NOTIFY_SOCKET`` is set at construction)."""
        self._interval_s = watchdog_interval_s(os.environ)
        self._send = sender if sender is not None else default_sender()

    def ready(self) -> None:
        """Startup finished: systemd considers the unit started."""
        self._notify("READY=1")

    def status(self, text: str) -> None:
        """One line of free-form status, shown by ``systemctl status``."""
        # One KEY=VALUE per line: a newline in text (an error message from outside, say) would
        # smuggle in other assignments such as READY=1.
        self._notify("STATUS=" + " ".join(text.splitlines()))

    def stopping(self) -> None:
        """Shutdown began."""
        self._notify("STOPPING=1")

    def watchdog_interval_s(self) -> float | None:
        """How often to ping (half of ``WATCHDOG_USEC``), or None without a watchdog for us."""
        return self._interval_s if self.enabled else None

    async def watchdog(self, healthy: Callable[[], bool]) -> None:
        """Ping ``WATCHDOG=1`` every interval while ``healthy()``; return at once without a watchdog."""
        interval = self.watchdog_interval_s()
        if interval is None:
            return
        withheld = False
        while True:
            if healthy():
                if withheld:
                    log.warning("healthy again: resuming systemd watchdog pings")
                    withheld = False
                self._notify("WATCHDOG=1")
            elif not withheld:
                log.error("unhealthy: withholding systemd watchdog pings, systemd will restart us")
                withheld = True
            await asyncio.sleep(interval)

    def _notify(self, message: str) -> None:
        if not self.enabled:
            return
        # A notification is advice to systemd; failing to deliver one must never stop the box.
        with contextlib.suppress(OSError):
            self._send(message)
