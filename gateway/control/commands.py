"""Commands to a running box, from MQTT or the local control socket, with request IDs and replies.

A command is a JSON object: ``{"id": "...", "command": "ptt", "port": "radio", "pressed": true}``.
Every command has a request ``id`` (1-64 characters, chosen by the sender) and may carry
``sent_at`` (unix seconds); the reply is ``{"id": ..., "ok": true, "result": {...}}`` or
``{"id": ..., "ok": false, "error": "..."}``.

- **Duplicates**: the replies to the last :data:`REMEMBERED` request IDs are kept; a command whose
  ID was seen gets the same reply again and is not applied twice (MQTT QoS 1 may deliver twice).
- **Late delivery**: a command whose ``sent_at`` is more than :data:`MAX_AGE_S` old (or in the
  future by as much) is refused with ``expired`` and not applied: a push-to-talk or emergency
  command that arrives after the moment it was meant for does harm. Senders should also set the
  MQTT 5 message expiry interval so the broker drops such messages itself.
- **Bad input** (not JSON, unknown command, missing or wrong fields) gets an error reply, counted in
  :attr:`Commands.refused`; nothing is applied.

The commands: ``status``, ``ptt`` (``port``, ``pressed``), ``emergency`` (``port``, ``on``),
``select_group`` (``port``, ``group``), ``set_volume`` (``port``, ``volume_db``), ``reload``,
``start_pairing`` (``port``; refused until the box has Bluetooth pairing).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

REMEMBERED = 256
"""Replies kept for duplicate request IDs."""
MAX_AGE_S = 10.0
"""A command older than this (by its ``sent_at``) is refused as expired."""
MAX_BYTES = 4096
"""Longest command accepted."""

_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class Box(Protocol):
    """What commands act on (the App)."""

    ports: dict[str, Any]

    def press(self, port: str, pressed: bool) -> None:
        """Push-to-talk."""

    def emergency(self, port: str, on: bool) -> None:
        """Start or end an emergency call."""

    def select_group(self, port: str, group: str) -> None:
        """Talk on another group."""

    def status(self) -> dict[str, Any]:
        """The box's state for ``gateway status``."""


class CommandError(ValueError):
    """A command that can't be applied; the message goes back in the reply."""


class Commands:
    """Applies commands to the box; every command gets exactly one reply (the same for duplicates)."""

    def __init__(self, box: Box, reload: Callable[[], list[str]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.box = box
        self._reload = reload
        self._clock = clock
        self._replies: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.applied = 0
        self.duplicates = 0
        self.refused = 0
        """Commands that were malformed, unknown, expired or failed (an error reply each)."""

    def handle_bytes(self, payload: bytes) -> dict[str, Any]:
        """Parse and apply one command; the reply (never raises)."""
        if len(payload) > MAX_BYTES:
            return self._refuse(None, f"command longer than {MAX_BYTES} bytes")
        try:
            doc = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return self._refuse(None, f"not JSON: {exc}")
        if not isinstance(doc, dict):
            return self._refuse(None, "a command must be a JSON object")
        return self.handle(doc)

    def handle(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Apply one parsed command; the reply (never raises)."""
        rid = doc.get("id")
        if not isinstance(rid, str) or not _ID_RE.fullmatch(rid):
            return self._refuse(None, "'id' must be 1-64 letters, digits or _.:-")
        if rid in self._replies:
            self.duplicates += 1
            self._replies.move_to_end(rid)
            return self._replies[rid]
        try:
            self._check_age(doc)
            result = self._apply(doc)
        except CommandError as exc:
            reply = self._refuse(rid, str(exc))
        except Exception as exc:  # a bug must cost one command, not the caller (socket, MQTT link)
            log.exception("command %s failed", rid)
            reply = self._refuse(rid, f"internal error: {type(exc).__name__}: {exc}")
        else:
            self.applied += 1
            reply = {"id": rid, "ok": True, "result": result}
        self._replies[rid] = reply
        while len(self._replies) > REMEMBERED:
            self._replies.popitem(last=False)
        return reply

    def _refuse(self, rid: str | None, error: str) -> dict[str, Any]:
        self.refused += 1
        log.info("command %s refused: %s", rid or "(no id)", error)
        return {"id": rid, "ok": False, "error": error}

    def _check_age(self, doc: dict[str, Any]) -> None:
        sent = doc.get("sent_at")
        if sent is None:
            return
        if isinstance(sent, bool) or not isinstance(sent, (int, float)):
            raise CommandError("'sent_at' must be unix seconds")
        age = self._clock() - sent
        if abs(age) > MAX_AGE_S:
            raise CommandError(f"expired: sent {age:.1f} s ago (commands older than {MAX_AGE_S:g} s "
                               "are not applied)")

    def _apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        command = doc.get("command")
        known = ("status", "ptt", "emergency", "select_group", "set_volume", "reload", "start_pairing")
        if command not in known:
            raise CommandError(f"unknown command {command!r} (known: {', '.join(known)})")
        allowed = {"id", "command", "sent_at", *_FIELDS[command]}
        extra = sorted(set(doc) - allowed)
        if extra:
            raise CommandError(f"unknown field(s) for {command}: {', '.join(extra)}")
        if command == "status":
            return self.box.status()
        if command == "reload":
            if self._reload is None:
                raise CommandError("reload is not available here")
            try:
                return {"rekeyed": self._reload()}
            except ValueError as exc:  # ConfigError: the running configuration stays
                raise CommandError(f"reload refused, the running configuration stays: {exc}") from exc
        port = self._port(doc)
        try:
            if command == "ptt":
                self.box.press(port, _bool(doc, "pressed"))
            elif command == "emergency":
                self.box.emergency(port, _bool(doc, "on"))
            elif command == "select_group":
                group = doc.get("group")
                if not isinstance(group, str):
                    raise CommandError("'group' must be a string")
                self.box.select_group(port, group)
            elif command == "set_volume":
                volume = doc.get("volume_db")
                if isinstance(volume, bool) or not isinstance(volume, (int, float)):
                    raise CommandError("'volume_db' must be a number")
                self.box.ports[port].set_volume(float(volume))
            else:  # start_pairing
                raise CommandError("Bluetooth pairing is not available on this box yet")
        except ValueError as exc:
            if isinstance(exc, CommandError):
                raise
            raise CommandError(str(exc)) from exc
        return {"port": port}

    def _port(self, doc: dict[str, Any]) -> str:
        port = doc.get("port")
        if not isinstance(port, str) or port not in self.box.ports:
            raise CommandError(f"'port' must name one of this box's ports ({', '.join(self.box.ports)})")
        return port


_FIELDS: dict[str, tuple[str, ...]] = {
    "status": (), "reload": (), "ptt": ("port", "pressed"), "emergency": ("port", "on"),
    "select_group": ("port", "group"), "set_volume": ("port", "volume_db"), "start_pairing": ("port",),
}


def _bool(doc: dict[str, Any], key: str) -> bool:
    value = doc.get(key)
    if not isinstance(value, bool):
        raise CommandError(f"'{key}' must be true or false")
    return value
