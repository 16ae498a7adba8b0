"""The control socket's start: a stale socket file is replaced, a live daemon's is left alone."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from gateway.control.local import ControlSocket, request
from gateway.errors import ControlSocketError


class _Commands:
    """Answers every command with ok and who answered."""

    def __init__(self, name: str) -> None:
        self.name = name

    def handle_bytes(self, line: bytes) -> dict[str, Any]:
        return {"ok": True, "who": self.name}


async def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # a file left by a daemon that was killed: nobody listens on it
    ours = ControlSocket(path, _Commands("new"))  # type: ignore[arg-type]
    await ours.start()
    try:
        assert await _ask(path) == {"ok": True, "who": "new"}
    finally:
        ours.close()
    assert not path.exists()


async def test_a_second_daemon_leaves_the_running_ones_socket_alone(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    first = ControlSocket(path, _Commands("first"))  # type: ignore[arg-type]
    await first.start()
    try:
        second = ControlSocket(path, _Commands("second"))  # type: ignore[arg-type]
        with pytest.raises(ControlSocketError, match="another gateway daemon is running"):
            await second.start()
        second.close()  # what the app's cleanup does: must not remove the first one's file
        assert await _ask(path) == {"ok": True, "who": "first"}
    finally:
        first.close()


async def _ask(path: Path) -> dict[str, Any]:
    return await asyncio.to_thread(request, path, {"command": "status"})
