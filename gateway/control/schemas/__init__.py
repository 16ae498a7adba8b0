"""The JSON Schema (draft 2020-12) of every control payload, as files beside this module.

The files are the contract consoles code against (``docs/mqtt.md`` links them); this module loads
them and compiles each once, on first use, with fastjsonschema, which turns a schema into plain
Python code: validating a command costs microseconds on a Pi, and the library has no dependencies.

fastjsonschema implements drafts 04 to 07 (and part of 2019-09), not 2020-12: it reads a 2020-12
schema with its newest generator and silently ignores keywords it does not know
(https://horejsek.github.io/python-fastjsonschema/). So the schemas here keep to
:data:`PORTABLE_KEYWORDS`, which mean the same in draft-07 and 2020-12 (``$defs`` is reached only
through local ``$ref`` JSON pointers, which both resolve alike); a test holds every file to that.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import fastjsonschema

__all__ = ["NAMES", "PORTABLE_KEYWORDS", "SchemaViolation", "schema", "validate"]

NAMES = ("presence", "port-state", "alert", "telemetry", "command", "reply")
"""Every schema, by the name of its file (``NAME.schema.json``)."""

PORTABLE_KEYWORDS = frozenset({
    "$schema", "$ref", "$defs", "title", "description",
    "type", "enum", "const", "properties", "required", "additionalProperties", "propertyNames",
    "items", "pattern", "minLength", "maxLength", "minimum", "maximum",
    "allOf", "anyOf", "if", "then",
})
"""Keywords with one meaning in draft-07 and 2020-12: what fastjsonschema checks as 2020-12 says.
(``items`` only with a schema, never an array: that form changed in 2020-12.)"""


class SchemaViolation(ValueError):
    """A document that does not match its schema: ``field`` is the top-level key at fault (empty
    when the document as a whole is), ``reason`` fastjsonschema's words without its ``data.``."""

    def __init__(self, name: str, field: str, reason: str) -> None:
        self.name = name
        self.field = field
        self.reason = reason
        super().__init__(f"{name}: {reason}")


def schema(name: str) -> dict[str, Any]:
    """The schema ``name`` as a JSON document (a fresh copy: callers may change it)."""
    doc: dict[str, Any] = json.loads(_text(name))
    return doc


def validate(name: str, doc: Any) -> None:
    """Check ``doc`` against the schema ``name``; :class:`SchemaViolation` if it does not match."""
    try:
        _compiled(name)(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise SchemaViolation(name, _field(exc, doc), _reason(exc, doc)) from exc


@functools.cache
def _text(name: str) -> str:
    if name not in NAMES:
        raise KeyError(f"no schema {name!r} (have: {', '.join(NAMES)})")
    return resources.files(__package__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8")


@functools.cache
def _compiled(name: str) -> Callable[[Any], Any]:
    # No remote refs are fetched: every $ref in these files is local (a test holds them to it), and
    # the empty handler table keeps fastjsonschema from resolving any URL scheme itself.
    # use_formats=False: no "format" keyword is used, and none should start being checked silently.
    return fastjsonschema.compile(schema(name), handlers={}, use_formats=False)


def _field(exc: fastjsonschema.JsonSchemaValueException, doc: Any) -> str:
    path = list(exc.path or [])[1:]  # path[0] is fastjsonschema's name for the root, "data"
    if path:
        return str(path[0])
    if exc.rule == "required" and isinstance(doc, dict) and isinstance(exc.rule_definition, list):
        missing = [key for key in exc.rule_definition if key not in doc]
        if missing:
            return str(missing[0])
    unknown = _unknown_keys(exc, doc) if exc.rule == "propertyNames" else []
    return unknown[0] if unknown else ""


def _reason(exc: fastjsonschema.JsonSchemaValueException, doc: Any) -> str:
    unknown = _unknown_keys(exc, doc) if exc.rule == "propertyNames" else []
    if unknown:  # fastjsonschema only says "must be named by propertyName definition"
        return f"unknown field(s): {', '.join(unknown)}"
    if exc.rule == "required" and not exc.path[1:] and isinstance(doc, dict):
        missing = [str(key) for key in exc.rule_definition if key not in doc]
        if missing:  # rather than "must contain ['a', 'b'] properties", naming present ones too
            return f"missing field(s): {', '.join(missing)}"
    message = exc.message
    for prefix in ("data.", "data "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _unknown_keys(exc: fastjsonschema.JsonSchemaValueException, doc: Any) -> list[str]:
    allowed = exc.rule_definition.get("enum") if isinstance(exc.rule_definition, dict) else None
    if not isinstance(allowed, list) or not isinstance(doc, dict):
        return []
    return sorted(str(key) for key in doc if key not in allowed)
