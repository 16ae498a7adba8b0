"""The JSON Schema files: well-formed, draft 2020-12, and only what fastjsonschema checks as 2020-12 says."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.control import schemas

SCHEMA_DIR = Path(schemas.__file__).parent


def test_every_schema_file_is_listed_and_every_listed_one_exists() -> None:
    files = {p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json")}
    assert files == set(schemas.NAMES)


@pytest.mark.parametrize("name", schemas.NAMES)
def test_schema_is_draft_2020_12_with_a_title(name: str) -> None:
    doc = schemas.schema(name)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert doc["title"] and doc["description"] and doc["type"] == "object"


def _subschemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema object within ``node`` (not the values of properties/enum/const etc.)."""
    if not isinstance(node, dict):
        return
    yield node
    for key, value in node.items():
        if key in ("properties", "$defs"):
            for sub in value.values():
                yield from _subschemas(sub)
        elif key in ("allOf", "anyOf"):
            for sub in value:
                yield from _subschemas(sub)
        elif key in ("items", "additionalProperties", "propertyNames", "if", "then"):
            yield from _subschemas(value)


@pytest.mark.parametrize("name", schemas.NAMES)
def test_schema_keeps_to_the_portable_keywords(name: str) -> None:
    # A keyword fastjsonschema doesn't know would be silently ignored: a check that never happens.
    for sub in _subschemas(schemas.schema(name)):
        unknown = set(sub) - schemas.PORTABLE_KEYWORDS
        assert not unknown, f"{name}: {sorted(unknown)} in {sub}"
        assert not isinstance(sub.get("items"), list), "array-form items changed meaning in 2020-12"
        if "$ref" in sub:
            assert sub["$ref"].startswith("#/$defs/"), "only local refs: nothing is ever fetched"
            # draft-07 ignores whatever stands beside $ref: only annotations may.
            assert set(sub) <= {"$ref", "title", "description"}, sub
        if "if" in sub:
            assert "then" in sub


@pytest.mark.parametrize("name", schemas.NAMES)
def test_schema_file_is_plain_json(name: str) -> None:
    json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


def test_schema_returns_a_copy() -> None:
    schemas.schema("alert")["title"] = "changed"
    assert schemas.schema("alert")["title"] == "alert"


def test_unknown_schema_name() -> None:
    with pytest.raises(KeyError):
        schemas.validate("nope", {})


@pytest.mark.parametrize(
    ("name", "doc", "field", "reason"),
    [
        ("command", {"id": "a", "command": "ptt", "port": "p", "pressed": True, "zz": 1, "aa": 2}, "aa",
         "unknown field(s): aa, zz"),
        ("command", {"id": "a", "command": "ptt"}, "port", "missing field(s): port, pressed"),
        ("presence", {}, "state", "missing field(s): state, gateway, site"),
        ("presence", {"state": "online", "gateway": "a", "site": "b", "version": "1", "since": -1},
         "since", "since must be bigger than or equal to 0"),
        ("alert", [], "", "must be object"),
    ],
)
def test_violations_name_the_field_and_say_why(name: str, doc: Any, field: str, reason: str) -> None:
    with pytest.raises(schemas.SchemaViolation) as info:
        schemas.validate(name, doc)
    assert (info.value.field, info.value.reason) == (field, reason)
    assert isinstance(info.value, ValueError)


def test_booleans_are_not_numbers() -> None:
    # JSON Schema keeps them apart; Python's bool is an int, so check the validator does too.
    base = {"gateway": "g", "at": 1.0, "load_1m": None, "cpu_temp_c": None}
    schemas.validate("telemetry", base)
    with pytest.raises(schemas.SchemaViolation):
        schemas.validate("telemetry", {**base, "at": True})
