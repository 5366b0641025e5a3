"""The GDPR wire protocol on the ``recept.gdpr`` exchange: the one definition both sides use.

The gdpr service (the coordinator, ``services/gdpr``) and every participating service
(``shared/privacy.py``) build and read these messages only through the types here; each type
has one JSON schema, checked when a message is written (``to_wire``) and when it is read
(``from_wire``), so a message one side accepts is a message the other side can write.

* ``gdpr.announce.<service>`` — ``Announcement``: ``{"service", "inventory", "counts", "phase",
  "transport_key", "at"}``, at start-up and periodically; the coordinator learns whom to wait for, and in which
  phase, from these.  ``inventory.service`` must name the announcing service.
* ``gdpr.command.<service>`` — ``Command``: ``{"request_id", "command_id", "action":
  "export"|"erase", "phase": "preview"|"resolve"|"trail", "tenant", "sealed": {"recipient", "key", "box"},
  "at"}``, the box holding ``{"subject": {identifiers}, "references": [...], "confirmed": [...]}``;
  message id = ``command_id`` (a re-send keeps it, so the participant's inbox drops a copy it
  already handled).  Phase ``preview`` carries the identifiers only and is answered read-only
  with candidates; phase ``resolve`` (the acting phase) the identifiers and the refs of the
  candidates the approver confirmed (``confirmed``), and the participant acts on those alone;
  phase ``trail`` the references the other services acted on and no identifiers.
* ``gdpr.reply.<service>`` — ``Reply``: ``{"request_id", "command_id", "service", "action",
  "phase", "status": "done"|"failed", "sealed": box of ``{"references": [...], "export":
  {kind: [records]} | None, "candidates": [candidate] | None}`` (required when done; candidates
  in phase preview: ``{"ref", "kind", "match": "exact"|"near", "card": {"label", ...}, "count"}``,
  ``ref`` an opaque token the participant made and bound to the row's state), "stale": int | None
  (phase resolve: confirmed refs whose rows changed since the preview, not acted on), "erasure": [{"kind", "action", "count", "legal_basis"?, "retain_until"?}] | None,
  "error": str | None, "at"}``; message id = uuid5 of the command id (a repeated command
  yields the same reply id).  Export replies are routed only to the coordinator's queue,
  sealed while in the outbox, and their rows are deleted as soon as the broker confirms them.

A message that does not match its schema raises ``Invalid`` whose errors name the field and the
rule it broke, never the value (commands and replies carry personal data).

Sealing (``Channel``, docs/crypto.md "Sealed gdpr messages"): the end-to-end encryption of a
command's identifiers and a reply's export between the coordinator and one participant, so the
broker (its queues, segment files and dead letters) never holds them in clear.  A participant's
static X25519 key is derived from its keyring (``transport_private_key``); the coordinator makes
one ephemeral X25519 key per request (``RequestKey``); both derive the request's key for that
service from the ECDH secret and seal with AES-256-GCM bound to the message kind, request,
command and service.  Destroying the ``RequestKey`` when the request finishes leaves the
coordinator unable to open the broker's copies of the replies.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jsonschema import Draft202012Validator

from .errors import Invalid
from .identifiers import IDENTIFIERS

if TYPE_CHECKING:
    from .crypto import Keyring

__all__ = [
    "REQUEST_TYPES",
    "PHASES",
    "MATCHES",
    "REPLY_STATUSES",
    "ERASURE_ACTIONS",
    "SERVICE_NAME",
    "ANNOUNCE_PATTERN",
    "REPLY_PATTERN",
    "SCHEMAS",
    "Command",
    "Reply",
    "Announcement",
    "TRANSPORT_INFO",
    "transport_private_key",
    "transport_public_key",
    "transport_keys",
    "RequestKey",
    "Channel",
]

REQUEST_TYPES = ("export", "erase")  # a command's and a reply's "action"
PHASES = ("preview", "resolve", "trail")
MATCHES = ("exact", "near")  # a candidate's match: on the normalised identifiers, or only close to them
REPLY_STATUSES = ("done", "failed")
ERASURE_ACTIONS = ("deleted", "anonymised", "retained")
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,59}$")

ANNOUNCE_PATTERN = "gdpr.announce.*"  # the coordinator's bindings
REPLY_PATTERN = "gdpr.reply.*"

_ID = {"type": "string", "maxLength": 36}
_SERVICE = {"type": "string", "pattern": SERVICE_NAME.pattern}
_AT = {"type": ["string", "null"], "maxLength": 40}
_REFERENCES = {"type": ["array", "null"], "items": {"type": "string", "maxLength": 200}}

_B64 = {"type": "string", "maxLength": 64, "pattern": "^[A-Za-z0-9+/]+={0,2}$"}
# A sealed box: base64 of nonce + AES-GCM ciphertext (an export can be large; the broker bounds it).
_BOX = {"type": "string", "pattern": "^[A-Za-z0-9+/]*={0,2}$"}
# Plaintext personal data is refused outright: a field that must travel sealed may not appear in clear.
_NEVER: dict[str, Any] = {"not": {}}

COMMAND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["request_id", "command_id", "action", "sealed"],
    "properties": {
        "request_id": _ID,
        "command_id": _ID,
        "action": {"enum": list(REQUEST_TYPES)},
        "phase": {"enum": list(PHASES)},
        "tenant": {"type": ["string", "null"], "maxLength": 100},
        # {"subject": {identifiers}, "references": [...]} sealed for the one recipient.
        "sealed": {
            "type": "object",
            "required": ["recipient", "key", "box"],
            "additionalProperties": False,
            "properties": {"recipient": _B64, "key": _B64, "box": _BOX},
        },
        "subject": _NEVER,
        "references": _NEVER,
        "confirmed": _NEVER,
        "at": _AT,
    },
}

#: One candidate of a preview reply (inside the sealed box): what the approver sees, and the ref
#: that lets the participant find the row again (and tell that it changed).
CANDIDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ref", "kind", "match", "card", "count"],
    "additionalProperties": False,
    "properties": {
        "ref": {"type": "string", "maxLength": 200},
        "kind": {"type": "string", "maxLength": 100},
        "match": {"enum": list(MATCHES)},
        "card": {
            "type": "object",
            "required": ["label"],
            "properties": {"label": {"type": "string", "maxLength": 300}},
            "additionalProperties": {"type": ["string", "integer", "null"], "maxLength": 200},
        },
        "count": {"type": "integer", "minimum": 0},
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
        # {"references": [...], "export": {kind: [records]} | None} sealed with the command's channel.
        "sealed": {"anyOf": [_BOX, {"type": "null"}]},
        "references": _NEVER,
        "export": _NEVER,
        "candidates": _NEVER,
        "stale": {"type": ["integer", "null"], "minimum": 0},
        "erasure": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "required": ["kind", "action", "count"],
                "properties": {
                    "kind": {"type": "string", "maxLength": 100},
                    "action": {"enum": list(ERASURE_ACTIONS)},
                    "count": {"type": "integer", "minimum": 0},
                    "legal_basis": {"type": ["string", "null"], "maxLength": 500},
                    "retain_until": {"type": ["string", "null"], "maxLength": 40},
                },
            },
        },
        "error": {"type": ["string", "null"]},
        "at": _AT,
    },
    # A done reply always carries its sealed part (an empty result is sealed too).
    "if": {"properties": {"status": {"const": "done"}}},
    "then": {"required": ["sealed"], "properties": {"sealed": _BOX}},
}

ANNOUNCEMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["service", "inventory", "counts"],
    "properties": {
        "service": _SERVICE,
        "phase": {"enum": ["resolve", "trail"]},  # the phase a participant acts in
        # The participant's static X25519 public key (transport_public_key); commands are sealed to it.
        "transport_key": _B64,
        "counts": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
        # Optional (issue 15, art. 30(2)): the same live counts per customer tenant slug; numbers only.
        "tenant_counts": {
            "type": "object",
            "propertyNames": {"pattern": r"^[a-z0-9][a-z0-9_-]{0,99}$"},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": {"type": "integer", "minimum": 0},
            },
        },
        "inventory": {
            "type": "object",
            "required": ["service", "categories"],
            "properties": {
                "service": {"type": "string"},
                "categories": {"type": "array", "items": {"type": "object", "required": ["kind", "fields"]}},
            },
        },
        "at": _AT,
    },
}

#: Every schema of the protocol by message kind (pinned in tests/contracts/gdpr_protocol.json).
SCHEMAS: dict[str, dict[str, Any]] = {
    "command": COMMAND_SCHEMA,
    "reply": REPLY_SCHEMA,
    "announcement": ANNOUNCEMENT_SCHEMA,
    "candidate": CANDIDATE_SCHEMA,
}
_VALIDATORS = {kind: Draft202012Validator(schema) for kind, schema in SCHEMAS.items()}


def _check(kind: str, message: Any) -> Mapping[str, Any]:
    validator = _VALIDATORS[kind]
    if isinstance(message, Mapping) and validator.is_valid(message):
        return message
    problems = [
        {
            "field": ".".join(str(p) for p in error.absolute_path) or kind,
            "message": f"violates '{error.validator}' rule",
        }
        for error in validator.iter_errors(message)
    ]
    raise Invalid(f"malformed gdpr {kind}", errors=problems or [{"field": kind, "message": "is not an object"}])


@dataclass(frozen=True)
class Command:
    """What the coordinator asks one service to do for one request, in one phase."""

    request_id: str
    command_id: str
    action: str  # export | erase
    phase: str = "resolve"  # resolve | trail
    tenant: str | None = None
    subject: dict[str, str] = field(default_factory=dict)
    references: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)  # phase resolve: the confirmed candidates' refs
    at: str | None = None

    @classmethod
    def for_phase(
        cls,
        *,
        request_id: str,
        command_id: str,
        action: str,
        phase: str,
        tenant: str | None,
        identifiers: Mapping[str, str],
        references: list[str],
        at: str,
        confirmed: list[str] | None = None,
    ) -> Command:
        """The command of ``phase``: the preview looks the identifiers up, the acting phase acts on
        the confirmed refs (found again through the identifiers), the trail on references only (the
        audit trail never needs the identifiers)."""
        return cls(
            request_id=request_id,
            command_id=command_id,
            action=action,
            phase=phase,
            tenant=tenant,
            subject=dict(identifiers) if phase in ("preview", "resolve") else {},
            references=list(references) if phase == "trail" else [],
            confirmed=list(confirmed or []) if phase == "resolve" else [],
            at=at,
        )

    @staticmethod
    def routing_key(service: str) -> str:
        return f"gdpr.command.{service}"

    @property
    def message_id(self) -> str:
        return self.command_id

    def to_wire(self, channel: Channel) -> dict[str, Any]:
        """The command with its subject and references sealed for ``channel``'s participant."""
        self._same_request(channel)
        box = channel.seal(
            "command",
            self.command_id,
            {"subject": dict(self.subject), "references": list(self.references), "confirmed": list(self.confirmed)},
        )
        return dict(
            _check(
                "command",
                {
                    "request_id": self.request_id,
                    "command_id": self.command_id,
                    "action": self.action,
                    "phase": self.phase,
                    "tenant": self.tenant,
                    "sealed": {"recipient": channel.recipient, "key": channel.ephemeral, "box": box},
                    "at": self.at,
                },
            )
        )

    @classmethod
    def from_wire(cls, message: Any, *, keyring: Keyring, service: str) -> tuple[Command, Channel]:
        """The command opened with ``service``'s keyring, and the channel its reply is sealed with."""
        m = _check("command", message)
        sealed = m["sealed"]
        channel = Channel.for_participant(
            keyring, recipient=sealed["recipient"], ephemeral=sealed["key"], request_id=m["request_id"], service=service
        )
        inner = channel.open("command", m["command_id"], sealed["box"])
        if not isinstance(inner, dict):
            raise Invalid(
                "malformed sealed gdpr command", errors=[{"field": "sealed.box", "message": "is not an object"}]
            )
        raw_subject, raw_references = inner.get("subject"), inner.get("references")
        raw_confirmed = inner.get("confirmed")
        subject: dict[str, Any] = raw_subject if isinstance(raw_subject, dict) else {}
        references: list[Any] = raw_references if isinstance(raw_references, list) else []
        confirmed: list[Any] = raw_confirmed if isinstance(raw_confirmed, list) else []
        return cls(
            request_id=m["request_id"],
            command_id=m["command_id"],
            action=m["action"],
            phase=m.get("phase") or "resolve",
            tenant=m.get("tenant"),
            subject={k: str(v)[:254] for k, v in subject.items() if k in IDENTIFIERS and v},
            references=[str(r)[:200] for r in references],
            confirmed=[str(r)[:200] for r in confirmed],
            at=m.get("at"),
        ), channel

    def _same_request(self, channel: Channel) -> None:
        if channel.request_id != self.request_id:
            raise ValueError("the channel belongs to another request")


@dataclass(frozen=True)
class Reply:
    """One service's answer to one command."""

    request_id: str
    command_id: str
    service: str
    action: str  # the command's
    phase: str  # the command's
    status: str  # done | failed
    references: list[str] = field(default_factory=list)
    export: dict[str, list[Any]] | None = None  # action export, status done
    erasure: list[dict[str, Any]] | None = None  # action erase, status done
    error: str | None = None  # status failed; never personal data
    at: str | None = None
    candidates: list[dict[str, Any]] | None = None  # phase preview, status done
    stale: int | None = None  # phase resolve: confirmed refs not acted on because their rows changed

    @classmethod
    def done(
        cls,
        command: Command,
        *,
        service: str,
        references: list[str],
        export: dict[str, list[Any]] | None = None,
        erasure: list[dict[str, Any]] | None = None,
        candidates: list[dict[str, Any]] | None = None,
        stale: int | None = None,
        at: str,
    ) -> Reply:
        return cls(
            request_id=command.request_id,
            command_id=command.command_id,
            service=service,
            action=command.action,
            phase=command.phase,
            status="done",
            references=list(references),
            export=export,
            erasure=erasure,
            at=at,
            candidates=candidates,
            stale=stale,
        )

    @staticmethod
    def routing_key(service: str) -> str:
        return f"gdpr.reply.{service}"

    @property
    def message_id(self) -> str:
        # Derived from the command, so a command handled again yields a reply the coordinator's inbox drops.
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"recept:reply:{self.command_id}"))

    def to_wire(self, channel: Channel) -> dict[str, Any]:
        """The reply with its references and export sealed with the command's ``channel``."""
        if (channel.request_id, channel.service) != (self.request_id, self.service):
            raise ValueError("the channel belongs to another request or service")
        for candidate in self.candidates or []:
            _check("candidate", candidate)
        box = channel.seal(
            "reply",
            self.command_id,
            {"references": list(self.references), "export": self.export, "candidates": self.candidates},
        )
        message: dict[str, Any] = {
            "request_id": self.request_id,
            "command_id": self.command_id,
            "service": self.service,
            "action": self.action,
            "phase": self.phase,
            "status": self.status,
            "sealed": box,
            "erasure": self.erasure,
            "error": self.error,
            "at": self.at,
        }
        if self.stale is not None:
            message["stale"] = self.stale
        return dict(_check("reply", message))

    @staticmethod
    def addressed(message: Any) -> tuple[str, str]:
        """(request id, service) of a well-formed reply, to find the channel that opens it."""
        m = _check("reply", message)
        return m["request_id"], m["service"]

    @classmethod
    def from_wire(cls, message: Any, channel: Channel) -> Reply:
        m = _check("reply", message)
        if (channel.request_id, channel.service) != (m["request_id"], m["service"]):
            raise Invalid(
                "sealed gdpr reply for another channel",
                errors=[{"field": "service", "message": "does not match the channel"}],
            )
        inner: Any = {}
        if m.get("sealed") is not None:
            inner = channel.open("reply", m["command_id"], m["sealed"])
        if (
            not isinstance(inner, dict)
            or not isinstance(inner.get("references") or [], list)
            or not isinstance(inner.get("export") or {}, dict)
            or not all(isinstance(v, list) for v in (inner.get("export") or {}).values())
            or not isinstance(inner.get("candidates") or [], list)
        ):
            raise Invalid("malformed sealed gdpr reply", errors=[{"field": "sealed", "message": "has the wrong shape"}])
        candidates = inner.get("candidates")
        for candidate in candidates or []:
            _check("candidate", candidate)
        return cls(
            request_id=m["request_id"],
            command_id=m["command_id"],
            service=m["service"],
            action=m["action"],
            phase=m["phase"],
            status=m["status"],
            references=[str(r)[:200] for r in inner.get("references") or []],
            export=inner.get("export"),
            erasure=m.get("erasure"),
            error=m.get("error"),
            at=m.get("at"),
            candidates=candidates,
            stale=m.get("stale"),
        )


@dataclass(frozen=True)
class Announcement:
    """A participating service saying it exists: its inventory, live counts and phase."""

    service: str
    inventory: dict[str, Any]  # shared.privacy.Inventory.as_dict()
    counts: dict[str, int]
    phase: str = "resolve"
    at: str | None = None
    transport_key: str | None = None  # transport_public_key(keyring); None: cannot be sent to
    tenant_counts: dict[str, dict[str, int]] | None = None  # per tenant slug and kind; None: not counted

    @staticmethod
    def routing_key(service: str) -> str:
        return f"gdpr.announce.{service}"

    def to_wire(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "service": self.service,
            "inventory": self.inventory,
            "counts": dict(self.counts),
            "phase": self.phase,
            "at": self.at,
        }
        if self.transport_key is not None:
            message["transport_key"] = self.transport_key
        if self.tenant_counts is not None:
            message["tenant_counts"] = {t: dict(kinds) for t, kinds in self.tenant_counts.items()}
        return dict(self._consistent(_check("announcement", message)))

    @classmethod
    def from_wire(cls, message: Any) -> Announcement:
        m = cls._consistent(_check("announcement", message))
        return cls(
            service=m["service"],
            inventory=m["inventory"],
            counts=m["counts"],
            phase=m.get("phase") or "resolve",
            at=m.get("at"),
            transport_key=m.get("transport_key"),
            tenant_counts=m.get("tenant_counts"),
        )

    @staticmethod
    def _consistent(m: Mapping[str, Any]) -> Mapping[str, Any]:
        # One service may not announce another's declaration.
        if m["inventory"]["service"] != m["service"]:
            raise Invalid(
                "malformed gdpr announcement",
                errors=[{"field": "inventory.service", "message": "must name the announcing service"}],
            )
        return m


# --- sealing: end to end between the coordinator and one participant ---------------------------

TRANSPORT_INFO = b"recept.gdpr.transport.v1"
SEALED_KINDS = ("command", "reply")
_RAW = serialization.Encoding.Raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    try:
        if not isinstance(text, str):
            raise ValueError
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, binascii.Error):
        raise Invalid("malformed sealed gdpr message", errors=[{"field": what, "message": "is not base64"}]) from None


def _public_text(key: X25519PrivateKey) -> str:
    return _b64(key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw))


def transport_private_key(keyring: Keyring, kid: str | None = None) -> X25519PrivateKey:
    """A participant's static X25519 key, derived from its key-encryption key ``kid`` (default: the
    primary).  Nothing new to distribute or store: it changes when the keyring's primary rotates."""
    seed = HKDF(hashes.SHA256(), 32, salt=None, info=TRANSPORT_INFO).derive(keyring.kek(kid or keyring.primary_id))
    return X25519PrivateKey.from_private_bytes(seed)


def transport_public_key(keyring: Keyring) -> str:
    """The public key a participant announces (base64 of the 32 raw bytes)."""
    return _public_text(transport_private_key(keyring))


def transport_keys(keyring: Keyring) -> dict[str, X25519PrivateKey]:
    """Public key -> private key for every KEK on the keyring: a command sealed to the key announced
    before a rotation still opens while the old KEK is on the keyring, and no longer once it is retired."""
    keys = (transport_private_key(keyring, kid) for kid in keyring.key_ids)
    return {_public_text(key): key for key in keys}


@dataclass(frozen=True)
class RequestKey:
    """The coordinator's ephemeral X25519 key of one request (stored Vault-encrypted, shredded when
    the request finishes)."""

    private: X25519PrivateKey

    @classmethod
    def generate(cls) -> RequestKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> RequestKey:
        return cls(X25519PrivateKey.from_private_bytes(bytes(raw)))

    def to_bytes(self) -> bytes:
        return self.private.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())

    @property
    def public(self) -> str:
        return _public_text(self.private)


def _channel_key(private: X25519PrivateKey, peer_public: str, request_id: str, service: str) -> bytes:
    peer = _unb64(peer_public, "sealed.key")
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer))
    except ValueError:
        # Wrong length or a low-order point (an all-zero secret): nobody honest sends either.
        raise Invalid(
            "malformed sealed gdpr message",
            errors=[{"field": "sealed.key", "message": "is not a usable X25519 public key"}],
        ) from None
    return HKDF(hashes.SHA256(), 32, salt=request_id.encode(), info=TRANSPORT_INFO + b":" + service.encode()).derive(
        shared
    )


@dataclass(frozen=True)
class Channel:
    """The AES-256-GCM key of one request and one service, as both ends derive it."""

    request_id: str
    service: str
    key: bytes = field(repr=False)
    recipient: str = ""  # the participant's public key
    ephemeral: str = ""  # the request's public key

    @classmethod
    def for_coordinator(
        cls, request_key: RequestKey, participant_public: str, *, request_id: str, service: str
    ) -> Channel:
        return cls(
            request_id,
            service,
            _channel_key(request_key.private, participant_public, request_id, service),
            participant_public,
            request_key.public,
        )

    @classmethod
    def for_participant(
        cls, keyring: Keyring, *, recipient: str, ephemeral: str, request_id: str, service: str
    ) -> Channel:
        """``recipient``: the participant public key the command names; ``ephemeral``: the request's."""
        private = transport_keys(keyring).get(recipient)
        if private is None:
            raise Invalid(
                "sealed gdpr message for another key",
                errors=[{"field": "sealed.recipient", "message": "is not a key of this keyring"}],
            )
        return cls(request_id, service, _channel_key(private, ephemeral, request_id, service), recipient, ephemeral)

    def _ad(self, kind: str, command_id: str) -> bytes:
        if kind not in SEALED_KINDS:
            raise ValueError(f"kind must be one of {SEALED_KINDS}")
        # The message type, request, command and service: a sealed part moved to another message fails.
        return b"\x00".join(p.encode() for p in ("recept.gdpr." + kind, self.request_id, command_id, self.service))

    def seal(self, kind: str, command_id: str, value: Any) -> str:
        nonce = os.urandom(12)
        plaintext = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode()
        return _b64(nonce + AESGCM(self.key).encrypt(nonce, plaintext, self._ad(kind, command_id)))

    def open(self, kind: str, command_id: str, sealed: Any) -> Any:
        raw = _unb64(sealed, "sealed.box")
        try:
            plaintext = AESGCM(self.key).decrypt(raw[:12], raw[12:], self._ad(kind, command_id))
        except (InvalidTag, ValueError):
            raise Invalid(
                "sealed gdpr message does not open", errors=[{"field": "sealed.box", "message": "fails authentication"}]
            ) from None
        return json.loads(plaintext)
