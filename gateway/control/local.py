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

    async def run(self) -> None:
        """Listen until cancelled; the socket file is removed on the way out."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a previous run
        server = await asyncio.start_unix_server(self._client, path=str(self.path),
                                                 limit=MAX_BYTES + 2)
        os.chmod(self.path, 0o660)
        try:
            async with server:
                await server.serve_forever()
        finally:
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
