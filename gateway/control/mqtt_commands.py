"""Commands over MQTT 5: what is applied, and where each reply goes.

Pure (no I/O): the control plane hands each message from ``{root}/gateways/{gw}/cmd`` to
:meth:`CommandDesk.receive` and publishes the :class:`Reply` it gets back, if any.

- A **retained** command is stale by definition (it was left on the broker for whoever subscribes
  next): it is counted and ignored, never applied. The control plane subscribes with *Retain As
  Published* so a live command published with the retain flag is caught too (MQTT 5, 3.8.3.1).
- A command that does not match ``command.schema.json`` is counted and never reaches the hook; it gets
  an error reply when there is anyone to match it to (a usable ``id``, or Correlation Data).
- The reply goes to the request's **Response Topic** with its **Correlation Data** copied (MQTT 5,
  4.10), or to ``{root}/gateways/{gw}/reply`` when there is none. A Response Topic outside the
  gateway's reply subtree is not used (the site ACL would refuse it, and a gateway must not be made to
  write into other topics): the reply goes to the default topic instead, and it is counted.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.control import topics
from gateway.control.topics import PayloadError, Topics

log = logging.getLogger("gateway.control")

CommandHook = Callable[[bytes], dict[str, Any]]
"""Applies one command (already checked against the schema) and returns its reply: the App's
:meth:`gateway.control.commands.Commands.handle_bytes`, which also answers duplicates."""

_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True)
class Reply:
    """One reply to publish (QoS 1, not retained)."""

    topic: str
    payload: bytes
    correlation: bytes | None
    """The request's Correlation Data, to send back as the reply's."""


@dataclass
class CommandStats:
    """What became of the commands received."""

    received: int = 0
    applied: int = 0
    """Handed to the hook (which may still refuse them: its reply says)."""
    retained: int = 0
    """Ignored because they came with the retain flag."""
    invalid: int = 0
    """Refused before the hook: not JSON, not an object, or not matching the command schema."""
    hook_failures: int = 0
    """The hook raised, or returned a reply that is not valid: an error reply was sent instead."""
    foreign_response_topics: int = 0
    """Response Topics outside the gateway's reply subtree: replied on the default topic instead."""


class CommandDesk:
    """Turns each command message into at most one reply."""

    def __init__(self, topics_: Topics) -> None:
        self.topics = topics_
        self.stats = CommandStats()

    def receive(
        self, hook: CommandHook, payload: bytes, *, retained: bool, response_topic: str | None,
        correlation: bytes | None,
    ) -> Reply | None:
        """One message from the command topic; the reply to publish, or None. Never raises."""
        self.stats.received += 1
        if retained:
            self.stats.retained += 1
            log.warning("retained command on %s ignored (%d bytes): clear it with an empty retained "
                        "message", self.topics.command, len(payload))
            return None
        try:
            topics.parse_command(payload)
        except PayloadError as exc:
            self.stats.invalid += 1
            rid = _request_id(payload)
            log.info("invalid command %s refused: %s", rid or "(no id)", exc)
            if rid is None and correlation is None:
                return None  # nobody could match a reply to it
            return self._reply(topics.error_reply(rid, f"invalid command: {exc.reason}"),
                               response_topic, correlation)
        self.stats.applied += 1
        try:
            reply = hook(payload)
        except Exception:  # the hook never raises by contract; a bug must not end the link
            log.exception("command hook failed")
            self.stats.hook_failures += 1
            reply = topics.error_reply(_request_id(payload), "internal error: see the gateway's log")
        return self._reply(reply, response_topic, correlation)

    def _reply(self, reply: dict[str, Any], response_topic: str | None,
               correlation: bytes | None) -> Reply:
        try:
            payload = topics.reply_payload(reply)
        except (TypeError, ValueError) as exc:  # PayloadError, or not even a mapping
            log.error("command reply %r is not valid (%s): sending an error instead", reply, exc)
            self.stats.hook_failures += 1
            rid = reply.get("id") if isinstance(reply, dict) else None
            payload = topics.reply_payload(topics.error_reply(
                rid if isinstance(rid, str) and _ID_RE.fullmatch(rid) else None,
                "internal error: see the gateway's log"))
        topic = self.topics.reply
        if response_topic is not None:
            if self.topics.reply_allowed(response_topic):
                topic = response_topic
            else:
                self.stats.foreign_response_topics += 1
                log.info("response topic %r is outside %s/: replying there instead",
                         response_topic, self.topics.reply)
        return Reply(topic, payload, correlation)


def _request_id(payload: bytes) -> str | None:
    """The request id of a command, if it has a usable one (even when the rest is invalid)."""
    if len(payload) > topics.MAX_PAYLOAD_BYTES:
        return None
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    rid = doc.get("id") if isinstance(doc, dict) else None
    return rid if isinstance(rid, str) and _ID_RE.fullmatch(rid) else None
