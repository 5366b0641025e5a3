"""The GDPR wire protocol on the ``recept.gdpr`` exchange: the one definition both sides use.

The gdpr service (the coordinator, ``services/gdpr``) and every participating service
(``shared/privacy.py``) build and read these messages only through the types here; each type
has one JSON schema, checked when a message is written (``to_wire``) and when it is read
(``from_wire``), so a message one side accepts is a message the other side can write.

* ``gdpr.announce.<service>`` — ``Announcement``: ``{"service", "inventory", "counts", "phase",
  "at"}``, at start-up and periodically; the coordinator learns whom to wait for, and in which
  phase, from these.  ``inventory.service`` must name the announcing service.
* ``gdpr.command.<service>`` — ``Command``: ``{"request_id", "command_id", "action":
  "export"|"erase", "phase": "resolve"|"trail", "tenant", "subject": {identifiers},
  "references": [...], "at"}``; message id = ``command_id`` (a re-send keeps it, so the
  participant's inbox drops a copy it already handled).  Phase ``resolve`` carries the
  identifiers and no references; phase ``trail`` the references the other services resolved
  and no identifiers.
* ``gdpr.reply.<service>`` — ``Reply``: ``{"request_id", "command_id", "service", "action",
  "phase", "status": "done"|"failed", "references": [...], "export": {kind: [records]} | None,
  "erasure": [{"kind", "action", "count", "legal_basis"?, "retain_until"?}] | None,
  "error": str | None, "at"}``; message id = uuid5 of the command id (a repeated command
  yields the same reply id).  Export replies are routed only to the coordinator's queue,
  sealed while in the outbox, and their rows are deleted as soon as the broker confirms them.

A message that does not match its schema raises ``Invalid`` whose errors name the field and the
rule it broke, never the value (commands and replies carry personal data).
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from jsonschema import Draft202012Validator

from .errors import Invalid
from .identifiers import IDENTIFIERS

__all__ = [
    "REQUEST_TYPES", "PHASES", "REPLY_STATUSES", "ERASURE_ACTIONS", "SERVICE_NAME",
    "ANNOUNCE_PATTERN", "REPLY_PATTERN", "SCHEMAS", "Command", "Reply", "Announcement",
]

REQUEST_TYPES = ("export", "erase")              # a command's and a reply's "action"
PHASES = ("resolve", "trail")
REPLY_STATUSES = ("done", "failed")
ERASURE_ACTIONS = ("deleted", "anonymised", "retained")
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,59}$")

ANNOUNCE_PATTERN = "gdpr.announce.*"             # the coordinator's bindings
REPLY_PATTERN = "gdpr.reply.*"

_ID = {"type": "string", "maxLength": 36}
_SERVICE = {"type": "string", "pattern": SERVICE_NAME.pattern}
_AT = {"type": ["string", "null"], "maxLength": 40}
_REFERENCES = {"type": ["array", "null"], "items": {"type": "string", "maxLength": 200}}

COMMAND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["request_id", "command_id", "action"],
    "properties": {
        "request_id": _ID,
        "command_id": _ID,
        "action": {"enum": list(REQUEST_TYPES)},
        "phase": {"enum": list(PHASES)},
        "tenant": {"type": ["string", "null"], "maxLength": 100},
        # Other keys are tolerated and dropped: a newer coordinator may name more kinds.
        "subject": {"type": ["object", "null"],
                    "properties": {kind: {"type": ["string", "null"], "maxLength": 254} for kind in IDENTIFIERS}},
        "references": _REFERENCES,
        "at": _AT,
    },
}

REPLY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["request_id", "command_id", "service", "action", "phase", "status"],
    "properties": {
        "request_id": _ID,
        "command_id": _ID,
        "service": _SERVICE,
        "action": {"enum": list(REQUEST_TYPES)},
        "phase": {"enum": list(PHASES)},
        "status": {"enum": list(REPLY_STATUSES)},
        "references": _REFERENCES,
        "export": {"type": ["object", "null"], "additionalProperties": {"type": "array"}},
        "erasure": {"type": ["array", "null"], "items": {
            "type": "object", "required": ["kind", "action", "count"],
            "properties": {"kind": {"type": "string", "maxLength": 100}, "action": {"enum": list(ERASURE_ACTIONS)},
                           "count": {"type": "integer", "minimum": 0},
                           "legal_basis": {"type": ["string", "null"], "maxLength": 500},
                           "retain_until": {"type": ["string", "null"], "maxLength": 40}}}},
        "error": {"type": ["string", "null"]},
        "at": _AT,
    },
}

ANNOUNCEMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["service", "inventory", "counts"],
    "properties": {
        "service": _SERVICE,
        "phase": {"enum": list(PHASES)},
        "counts": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
        "inventory": {"type": "object", "required": ["service", "categories"], "properties": {
            "service": {"type": "string"},
            "categories": {"type": "array", "items": {"type": "object", "required": ["kind", "fields"]}},
        }},
        "at": _AT,
    },
}

#: Every schema of the protocol by message kind (pinned in tests/contracts/gdpr_protocol.json).
SCHEMAS: dict[str, dict[str, Any]] = {"command": COMMAND_SCHEMA, "reply": REPLY_SCHEMA,
                                      "announcement": ANNOUNCEMENT_SCHEMA}
_VALIDATORS = {kind: Draft202012Validator(schema) for kind, schema in SCHEMAS.items()}


def _check(kind: str, message: Any) -> Mapping[str, Any]:
    validator = _VALIDATORS[kind]
    if isinstance(message, Mapping) and validator.is_valid(message):
        return message
    problems = [{"field": ".".join(str(p) for p in error.absolute_path) or kind,
                 "message": f"violates '{error.validator}' rule"} for error in validator.iter_errors(message)]
    raise Invalid(f"malformed gdpr {kind}", errors=problems or [{"field": kind, "message": "is not an object"}])


@dataclass(frozen=True)
class Command:
    """What the coordinator asks one service to do for one request, in one phase."""

    request_id: str
    command_id: str
    action: str                                   # export | erase
    phase: str = "resolve"                        # resolve | trail
    tenant: str | None = None
    subject: dict[str, str] = field(default_factory=dict)
    references: list[str] = field(default_factory=list)
    at: str | None = None

    @classmethod
    def for_phase(cls, *, request_id: str, command_id: str, action: str, phase: str, tenant: str | None,
                  identifiers: Mapping[str, str], references: list[str], at: str) -> "Command":
        """The command of ``phase``: phase one acts on the identifiers, phase two on references only
        (the audit trail never needs the identifiers)."""
        return cls(request_id=request_id, command_id=command_id, action=action, phase=phase, tenant=tenant,
                   subject=dict(identifiers) if phase == "resolve" else {},
                   references=list(references) if phase == "trail" else [], at=at)

    @staticmethod
    def routing_key(service: str) -> str:
        return f"gdpr.command.{service}"

    @property
    def message_id(self) -> str:
        return self.command_id

    def to_wire(self) -> dict[str, Any]:
        return dict(_check("command", {
            "request_id": self.request_id, "command_id": self.command_id, "action": self.action,
            "phase": self.phase, "tenant": self.tenant, "subject": dict(self.subject),
            "references": list(self.references), "at": self.at}))

    @classmethod
    def from_wire(cls, message: Any) -> "Command":
        m = _check("command", message)
        return cls(request_id=m["request_id"], command_id=m["command_id"], action=m["action"],
                   phase=m.get("phase") or "resolve", tenant=m.get("tenant"),
                   subject={k: v for k, v in (m.get("subject") or {}).items() if k in IDENTIFIERS and v},
                   references=list(m.get("references") or []), at=m.get("at"))


@dataclass(frozen=True)
class Reply:
    """One service's answer to one command."""

    request_id: str
    command_id: str
    service: str
    action: str                                   # the command's
    phase: str                                    # the command's
    status: str                                   # done | failed
    references: list[str] = field(default_factory=list)
    export: dict[str, list[Any]] | None = None    # action export, status done
    erasure: list[dict[str, Any]] | None = None   # action erase, status done
    error: str | None = None                      # status failed; never personal data
    at: str | None = None

    @classmethod
    def done(cls, command: Command, *, service: str, references: list[str],
             export: dict[str, list[Any]] | None = None, erasure: list[dict[str, Any]] | None = None,
             at: str) -> "Reply":
        return cls(request_id=command.request_id, command_id=command.command_id, service=service,
                   action=command.action, phase=command.phase, status="done", references=list(references),
                   export=export, erasure=erasure, at=at)

    @staticmethod
    def routing_key(service: str) -> str:
        return f"gdpr.reply.{service}"

    @property
    def message_id(self) -> str:
        # Derived from the command, so a command handled again yields a reply the coordinator's inbox drops.
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"recept:reply:{self.command_id}"))

    def to_wire(self) -> dict[str, Any]:
        return dict(_check("reply", {
            "request_id": self.request_id, "command_id": self.command_id, "service": self.service,
            "action": self.action, "phase": self.phase, "status": self.status,
            "references": list(self.references), "export": self.export, "erasure": self.erasure,
            "error": self.error, "at": self.at}))

    @classmethod
    def from_wire(cls, message: Any) -> "Reply":
        m = _check("reply", message)
        return cls(request_id=m["request_id"], command_id=m["command_id"], service=m["service"],
                   action=m["action"], phase=m["phase"], status=m["status"],
                   references=list(m.get("references") or []), export=m.get("export"), erasure=m.get("erasure"),
                   error=m.get("error"), at=m.get("at"))


@dataclass(frozen=True)
class Announcement:
    """A participating service saying it exists: its inventory, live counts and phase."""

    service: str
    inventory: dict[str, Any]                     # shared.privacy.Inventory.as_dict()
    counts: dict[str, int]
    phase: str = "resolve"
    at: str | None = None

    @staticmethod
    def routing_key(service: str) -> str:
        return f"gdpr.announce.{service}"

    def to_wire(self) -> dict[str, Any]:
        return dict(self._consistent(_check("announcement", {
            "service": self.service, "inventory": self.inventory, "counts": dict(self.counts),
            "phase": self.phase, "at": self.at})))

    @classmethod
    def from_wire(cls, message: Any) -> "Announcement":
        m = cls._consistent(_check("announcement", message))
        return cls(service=m["service"], inventory=m["inventory"], counts=m["counts"],
                   phase=m.get("phase") or "resolve", at=m.get("at"))

    @staticmethod
    def _consistent(m: Mapping[str, Any]) -> Mapping[str, Any]:
        # One service may not announce another's declaration.
        if m["inventory"]["service"] != m["service"]:
            raise Invalid("malformed gdpr announcement",
                          errors=[{"field": "inventory.service", "message": "must name the announcing service"}])
        return m
