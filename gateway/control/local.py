"""The local control socket: ``gateway status`` and ``gateway ctl …`` talk to the running daemon.

A Unix stream socket at ``<state_dir>/control.sock`` (mode 0660: root and the daemon's group), for
an installer at the box, with or without a broker. One JSON command per line in, one JSON reply per
line out (the same commands and replies as over MQTT, :mod:`gateway.control.commands`); a client may
send several on one connection. Lines longer than the command limit, or a connection idle for
:data:`IDLE_TIMEOUT_S`, are answered with an error and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

from gateway.control.commands import MAX_BYTES, Commands
from gateway.errors import ControlSocketError

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
IDLE_TIMEOUT_S = 30.0
MAX_CLIENTS = 8


def socket_path(state_dir: str) -> Path:
    """Where the daemon of a box with this state directory listens."""
    return Path(state_dir) / SOCKET_NAME


class ControlSocket:
    """Serves :class:`Commands` on a Unix socket until cancelled."""

    def __init__(self, path: Path, commands: Commands) -> None:
        self.path = path
        self.commands = commands
        self._clients = 0
        self.refused_clients = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen at :attr:`path`. A socket file left by a run that ended without removing it is
        replaced; one that a running daemon answers on (another gateway with this state directory)
        is left alone: ControlSocketError, where taking it over would cut that daemon off."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if _answers(self.path):
            raise ControlSocketError(f"{self.path}: another gateway daemon is running with this "
                                     "state directory (gateway.state_dir); stop it first")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a previous run
        self._server = await asyncio.start_unix_server(self._client, path=str(self.path),
                                                       limit=MAX_BYTES + 2)
        os.chmod(self.path, 0o660)

    async def run(self) -> None:
        """Serve until cancelled (starting first if :meth:`start` was not called)."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            self.close()

    def close(self) -> None:
        """Stop listening and remove the socket file (safe to call twice)."""
        if self._server is None:
            return
        self._server.close()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            self.refused_clients += 1
            writer.close()
            return
        self._clients += 1
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT_S)
                except (TimeoutError, ValueError, ConnectionError) as exc:
                    # ValueError: a line past the limit (asyncio.LimitOverrunError's parent).
                    if isinstance(exc, ValueError):
                        await _send(writer, {"id": None, "ok": False,
                                             "error": f"command longer than {MAX_BYTES} bytes"})
                    break
                if not line:
                    break
                if line.strip():
                    await _send(writer, self.commands.handle_bytes(line.strip()))
        finally:
            self._clients -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _answers(path: Path) -> bool:
    """True if something accepts connections on the Unix socket at ``path`` now."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:  # no file, not a socket, or nobody listening (a stale file)
            return False
    return True


async def _send(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
    writer.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
    with contextlib.suppress(ConnectionError):
        await writer.drain()


def request(path: Path, command: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one command to the daemon at ``path`` and return its reply (blocking; for the CLI).
    Raises OSError when no daemon listens there."""
    doc = {"id": f"cli-{secrets.token_hex(6)}", "sent_at": time.time(), **command}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        sock.sendall(json.dumps(doc).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data.decode()) if data else {
        "ok": False, "error": "the daemon closed the connection without a reply"}
    return reply
