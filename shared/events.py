"""The versioned event envelope of DESIGN.md and the registry of event types.

An event's ``data`` says what changed (field names, ids, counts) and never holds a
personal value: the audit trail outlives every erasure.  Each type declares a JSON
schema for its ``data``; ``tests/contracts/events.json`` pins them all, so a breaking
change has to be a new version published side by side.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator

from .clock import now_rfc3339
from .errors import Invalid

TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){2,}$")
SUBJECT_REF = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[A-Za-z0-9_.-]+$")
ROLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "type",
        "version",
        "source",
        "time",
        "actor",
        "tenant",
        "subject",
        "resource",
        "correlation_id",
        "data",
    ],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"},
        "type": {"type": "string", "pattern": TYPE_NAME.pattern},
        "version": {"type": "integer", "minimum": 1},
        "source": {"type": "string", "minLength": 1, "maxLength": 40},
        "time": {"type": "string", "minLength": 20, "maxLength": 40},
        "actor": {
            "type": ["object", "null"],
            "required": ["id"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "maxLength": 100},
                "tenant": {"type": ["string", "null"], "maxLength": 100},
                "kind": {"enum": ["user", "service", "system"]},
                # The caller's roles (an added, optional field): a trail names who saw
                # what by role and tenant, never by name (GDPR art. 15).
                "roles": {"type": "array", "maxItems": 20, "items": {"type": "string", "pattern": ROLE_NAME.pattern}},
            },
        },
        "tenant": {"type": ["string", "null"], "maxLength": 100},
        "subject": {"type": ["string", "null"], "pattern": SUBJECT_REF.pattern, "maxLength": 200},
        "resource": {
            "type": ["object", "null"],
            "required": ["type", "id"],
            "additionalProperties": False,
            "properties": {"type": {"type": "string", "maxLength": 60}, "id": {"type": "string", "maxLength": 100}},
        },
        "correlation_id": {"type": ["string", "null"], "maxLength": 100},
        "data": {"type": "object"},
    },
}
_envelope_validator = Draft202012Validator(ENVELOPE_SCHEMA)

#: A compiled fastjsonschema check: returns when the instance passes, raises JsonSchemaException otherwise.
FastCheck = Callable[[Any], object]


def _compile(schema: dict[str, Any]) -> FastCheck:
    """A fast yes/no check (fastjsonschema generates Python code: ~25x jsonschema's speed on
    every emitted event); jsonschema stays the reference that explains a failure."""
    return fastjsonschema.compile({**schema, "$schema": "http://json-schema.org/draft-07/schema#"})


_envelope_fast = _compile(ENVELOPE_SCHEMA)


def _passes(check: FastCheck, instance: Any) -> bool:
    try:
        check(instance)
        return True
    except fastjsonschema.JsonSchemaException:
        return False


@dataclass(frozen=True)
class EventType:
    name: str
    version: int
    data_schema: dict[str, Any]
    description: str = ""
    validator: Draft202012Validator = field(init=False, repr=False, compare=False)
    fast: FastCheck = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not TYPE_NAME.match(self.name):
            raise ValueError(f"event type {self.name!r} is not <service>.<thing>.<past-tense verb>")
        Draft202012Validator.check_schema(self.data_schema)
        object.__setattr__(self, "validator", Draft202012Validator(self.data_schema))
        object.__setattr__(self, "fast", _compile(self.data_schema))

    @property
    def key(self) -> tuple[str, int]:
        return self.name, self.version


class EventRegistry:
    """Every event type a process can publish, by (name, version)."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, int], EventType] = {}

    def register(self, name: str, version: int, data_schema: dict[str, Any], description: str = "") -> EventType:
        event_type = EventType(name, version, data_schema, description)
        existing = self._types.get(event_type.key)
        if existing is not None and existing.data_schema != data_schema:
            raise ValueError(f"event type {name} v{version} registered twice with different schemas")
        self._types[event_type.key] = event_type
        return event_type

    def get(self, name: str, version: int) -> EventType:
        try:
            return self._types[(name, version)]
        except KeyError:
            raise KeyError(f"unknown event type {name} v{version}") from None

    def __iter__(self) -> Iterator[EventType]:
        return iter(sorted(self._types.values(), key=lambda t: t.key))

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._types


#: The process-wide registry; each service's ``events.py`` registers its types here.
REGISTRY = EventRegistry()


def obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """Shorthand for a closed JSON object schema (no undeclared fields can slip personal data in)."""
    return {
        "type": "object",
        "properties": properties,
        "required": required or list(properties),
        "additionalProperties": False,
    }


def make_event(
    event_type: EventType,
    *,
    source: str,
    data: dict[str, Any],
    actor: dict[str, Any] | None = None,
    tenant: str | None = None,
    subject: str | None = None,
    resource: dict[str, str] | None = None,
    correlation_id: str | None = None,
    event_id: str | None = None,
    time: str | None = None,
) -> dict[str, Any]:
    """Build and validate an envelope; raises ``Invalid`` naming the offending field, never its value."""
    envelope = {
        "id": event_id or str(uuid.uuid4()),
        "type": event_type.name,
        "version": event_type.version,
        "source": source,
        "time": time or now_rfc3339(),
        "actor": actor,
        "tenant": tenant,
        "subject": subject,
        "resource": resource,
        "correlation_id": correlation_id,
        "data": data,
    }
    validate_envelope(envelope, event_type)
    return envelope


def _problems(validator: Draft202012Validator, instance: Any, prefix: str) -> list[dict[str, str]]:
    problems: list[dict[str, str]] = []
    for error in validator.iter_errors(instance):
        where = ".".join([prefix, *(str(p) for p in error.absolute_path)]).strip(".")
        # Describe the rule that failed, never the value that failed it.
        problems.append({"field": where or prefix, "message": f"violates '{error.validator}' rule"})
    return problems


def validate_envelope(
    envelope: dict[str, Any], event_type: EventType | None = None, registry: EventRegistry | None = None
) -> EventType | None:
    if event_type is None and registry is not None and isinstance(envelope.get("type"), str):
        try:
            event_type = registry.get(envelope["type"], envelope["version"])  # no version: KeyError too
        except KeyError:
            pass
    # Fast path: a valid event is checked once; the error walk only runs for an invalid one.
    if _passes(_envelope_fast, envelope) and (event_type is None or _passes(event_type.fast, envelope["data"])):
        return event_type
    problems = _problems(_envelope_validator, envelope, "")
    if not problems:
        if event_type is None and registry is not None:
            event_type = registry.get(envelope["type"], envelope["version"])
        if event_type is not None:
            problems = _problems(event_type.validator, envelope["data"], "data")
    if problems:
        raise Invalid(f"event {envelope.get('type')!s} does not match its schema", errors=problems)
    return event_type
