"""Commands with request IDs: applied once, duplicates answered alike, late and bad ones refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.control.commands import MAX_AGE_S, REMEMBERED, Commands


class _Port:
    def __init__(self) -> None:
        self.volume_db = 0.0

    def set_volume(self, volume_db: float) -> None:
        if not -40 <= volume_db <= 12:
            raise ValueError(f"volume must be -40 to +12 dB, got {volume_db}")
        self.volume_db = volume_db


class _Box:
    def __init__(self) -> None:
        self.ports: dict[str, Any] = {"radio": _Port()}
        self.calls: list[tuple[Any, ...]] = []

    def press(self, port: str, pressed: bool) -> None:
        self.calls.append(("ptt", port, pressed))

    def emergency(self, port: str, on: bool) -> None:
        self.calls.append(("emergency", port, on))

    def select_group(self, port: str, group: str) -> None:
        if group not in ("ops", "fire"):
            raise ValueError(f"port {port} has no group {group!r} (has: ops, fire)")
        self.calls.append(("select", port, group))

    def status(self) -> dict[str, Any]:
        return {"gateway": "gw-a"}


NOW = 1_800_000_000.0


def _commands(reload: Any = None) -> tuple[Commands, _Box]:
    box = _Box()
    return Commands(box, reload=reload, clock=lambda: NOW), box


@pytest.mark.parametrize(("doc", "call", "result"), [
    ({"command": "ptt", "port": "radio", "pressed": True}, ("ptt", "radio", True), {"port": "radio"}),
    ({"command": "emergency", "port": "radio", "on": True}, ("emergency", "radio", True), {"port": "radio"}),
    ({"command": "select_group", "port": "radio", "group": "fire"}, ("select", "radio", "fire"),
     {"port": "radio"}),
    ({"command": "status"}, None, {"gateway": "gw-a"}),
])
def test_each_command_is_applied_and_answered(doc: dict[str, Any], call: Any, result: Any) -> None:
    commands, box = _commands()
    reply = commands.handle({"id": "r1", "sent_at": NOW - 1, **doc})
    assert reply == {"id": "r1", "ok": True, "result": result}
    assert box.calls == ([call] if call else [])


def test_volume_and_reload() -> None:
    commands, box = _commands(reload=lambda: ["ops"])
    assert commands.handle({"id": "v", "command": "set_volume", "port": "radio", "volume_db": -6})["ok"]
    assert box.ports["radio"].volume_db == -6
    assert commands.handle({"id": "r", "command": "reload"})["result"] == {"rekeyed": ["ops"]}

    def bad_reload() -> list[str]:
        raise ValueError("gateway.toml: groups.ops.secret: too short")

    broken, _ = _commands(reload=bad_reload)
    reply = broken.handle({"id": "r", "command": "reload"})
    assert not reply["ok"] and "running configuration stays" in reply["error"]


def test_a_duplicate_gets_the_same_reply_and_is_not_applied_twice() -> None:
    commands, box = _commands()
    doc = {"id": "dup", "command": "ptt", "port": "radio", "pressed": True, "sent_at": NOW}
    first = commands.handle(doc)
    again = commands.handle(dict(doc))
    assert again == first and box.calls == [("ptt", "radio", True)] and commands.duplicates == 1
    # A refused command's duplicate is refused alike, and counted once.
    bad = {"id": "bad", "command": "ptt", "port": "nope", "pressed": True}
    assert commands.handle(bad) == commands.handle(bad) and commands.refused == 1


def test_replies_are_remembered_for_the_last_ids_only() -> None:
    commands, box = _commands()
    for i in range(REMEMBERED + 1):
        commands.handle({"id": f"r{i}", "command": "ptt", "port": "radio", "pressed": True})
    commands.handle({"id": "r0", "command": "ptt", "port": "radio", "pressed": True})
    assert len(box.calls) == REMEMBERED + 2  # r0 was forgotten, so applied again


@pytest.mark.parametrize("sent_at", [NOW - MAX_AGE_S - 1, NOW + MAX_AGE_S + 1])
def test_a_late_or_future_command_is_refused_as_expired(sent_at: float) -> None:
    commands, box = _commands()
    reply = commands.handle({"id": "late", "command": "emergency", "port": "radio", "on": True,
                             "sent_at": sent_at})
    assert not reply["ok"] and reply["error"].startswith("expired") and box.calls == []


@pytest.mark.parametrize(("payload", "error"), [
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "a command must be a JSON object"),
    (b'{"command": "ptt"}', "'id' must be"),
    (b'{"id": "x y", "command": "status"}', "'id' must be"),
    (b'{"id": "a", "command": "dance"}', "unknown command 'dance'"),
    (b'{"id": "a", "command": "ptt", "port": "radio"}', "'pressed' must be true or false"),
    (b'{"id": "a", "command": "ptt", "port": "radio", "pressed": 1}', "'pressed' must be true or false"),
    (b'{"id": "a", "command": "ptt", "port": "other", "pressed": true}', "'port' must name one"),
    (b'{"id": "a", "command": "ptt", "port": "radio", "pressed": true, "x": 1}', "unknown field(s)"),
    (b'{"id": "a", "command": "select_group", "port": "radio", "group": "zzz"}', "has no group 'zzz'"),
    (b'{"id": "a", "command": "set_volume", "port": "radio", "volume_db": 99}', "volume must be"),
    (b'{"id": "a", "command": "set_volume", "port": "radio", "volume_db": "loud"}', "must be a number"),
    (b'{"id": "a", "command": "status", "sent_at": "now"}', "'sent_at' must be unix seconds"),
    (b'{"id": "a", "command": "start_pairing", "port": "radio"}', "pairing is not available"),
    (b'{"id": "a", "command": "reload"}', "reload is not available"),
    (b"{" + b" " * 5000 + b"}", "longer than"),
])
def test_bad_commands_get_a_clear_error_and_change_nothing(payload: bytes, error: str) -> None:
    commands, box = _commands()
    reply = commands.handle_bytes(payload)
    assert reply["ok"] is False and error in reply["error"], reply
    assert box.calls == [] and box.ports["radio"].volume_db == 0 and commands.refused == 1


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(["id", "command", "port", "pressed", "on", "group", "volume_db",
                                     "sent_at", "x"]),
                    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                              st.text(max_size=10), st.sampled_from(["ptt", "radio", "ops", "r1"])),
                    max_size=6).map(lambda d: json.dumps(d).encode())))
def test_any_payload_gets_one_reply_and_invalid_ones_change_nothing(payload: bytes) -> None:
    commands, box = _commands()
    reply = commands.handle_bytes(payload)
    assert set(reply) in ({"id", "ok", "result"}, {"id", "ok", "error"})
    if not reply["ok"]:
        assert box.calls == [] and box.ports["radio"].volume_db == 0


def test_a_failing_box_costs_one_error_reply_not_the_caller() -> None:
    commands, box = _commands()

    def broken(port: str, pressed: bool) -> None:
        raise RuntimeError("device gone")

    box.press = broken  # type: ignore[method-assign]
    reply = commands.handle({"id": "x", "command": "ptt", "port": "radio", "pressed": True})
    assert reply == {"id": "x", "ok": False, "error": "internal error: RuntimeError: device gone"}
