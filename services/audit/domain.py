"""The audit's rules without I/O: envelope checks, canonical form, hash chain, chain verification, cursors.

Hash chain (one per tenant, plus "vendor" and "system" for events without a tenant)::

    hash(0)  = SHA-256("recept.audit.chain.v1" NUL chain)                 # genesis, per chain
    hash(n)  = SHA-256(hash(n-1) || canonical JSON of event n)            # sorted keys, no whitespace

A checkpoint signs ``checkpoint_payload(chain, seq, head)`` with Ed25519.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.checkpoints import checkpoint_payload as shared_checkpoint_payload
from shared.clock import as_utc, parse_rfc3339, rfc3339
from shared.errors import Invalid
from shared.events import ROLE_NAME, SUBJECT_REF, TYPE_NAME
from shared.spreadsheet import formula_safe

VENDOR_CHAIN = "vendor"
SYSTEM_CHAIN = "system"
TENANT_PREFIX = "tenant:"

ENVELOPE_KEYS = frozenset(
    {"id", "type", "version", "source", "time", "actor", "tenant", "subject", "resource", "correlation_id", "data"}
)
ACTOR_KEYS = frozenset({"id", "tenant", "kind", "roles"})
MAX_ROLES = 20
ACTOR_KINDS = frozenset({"user", "service", "system"})


class PoisonEvent(ValueError):
    """A message on recept.events that is not a valid envelope (the message names the field, never a value)."""

    permanent = True  # redelivery cannot fix it: the consumer dead-letters it at once (shared.consumer)


# --- envelopes -----------------------------------------------------------------------------------


def _string(value: Any, where: str, max_length: int, *, nullable: bool = False, min_length: int = 0) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, str) or not min_length <= len(value) <= max_length:
        raise PoisonEvent(f"envelope field {where} is not a valid string")


@dataclass(frozen=True)
class Entry:
    """An event as the audit stores it, before it gets its place in a chain."""

    event_id: str
    type: str
    time: datetime
    tenant: str | None
    actor: str | None
    subject: str | None
    resource_type: str | None
    resource_id: str | None
    chain: str
    body: bytes

    def columns(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "time": self.time,
            "tenant": self.tenant,
            "actor": self.actor,
            "subject": self.subject,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "chain": self.chain,
        }


def check_envelope(message: Mapping[str, Any]) -> None:
    """The rules of shared.events.ENVELOPE_SCHEMA, checked by hand: the ingest's hot path."""
    if not isinstance(message, Mapping):
        raise PoisonEvent("the event is not a JSON object")
    keys = message.keys()
    if keys != ENVELOPE_KEYS:
        missing, extra = ENVELOPE_KEYS - keys, keys - ENVELOPE_KEYS
        raise PoisonEvent(f"envelope fields missing: {sorted(missing)}, not accepted: {len(extra)}")
    event_id = message["id"]
    _string(event_id, "id", 36, min_length=36)
    try:
        uuid.UUID(event_id)
    except ValueError:
        raise PoisonEvent("envelope field id is not a uuid") from None
    if not isinstance(message["type"], str) or not TYPE_NAME.match(message["type"]):
        raise PoisonEvent("envelope field type is not <service>.<thing>.<verb>")
    version = message["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PoisonEvent("envelope field version is not a positive integer")
    _string(message["source"], "source", 40, min_length=1)
    _string(message["time"], "time", 40, min_length=20)
    actor = message["actor"]
    if actor is not None:
        if not isinstance(actor, dict) or "id" not in actor or not actor.keys() <= ACTOR_KEYS:
            raise PoisonEvent("envelope field actor is not {id, tenant?, kind?, roles?}")
        _string(actor["id"], "actor.id", 100)
        _string(actor.get("tenant"), "actor.tenant", 100, nullable=True)
        if "kind" in actor and actor["kind"] not in ACTOR_KINDS:
            raise PoisonEvent("envelope field actor.kind is not user/service/system")
        roles = actor.get("roles", [])
        if (
            not isinstance(roles, list)
            or len(roles) > MAX_ROLES
            or not all(isinstance(r, str) and ROLE_NAME.match(r) for r in roles)
        ):
            raise PoisonEvent("envelope field actor.roles is not a list of role names")
    _string(message["tenant"], "tenant", 100, nullable=True)
    subject = message["subject"]
    if subject is not None:
        _string(subject, "subject", 200)
        if not SUBJECT_REF.match(subject):
            raise PoisonEvent("envelope field subject is not a subject reference")
    resource = message["resource"]
    if resource is not None:
        if not isinstance(resource, dict) or resource.keys() != {"type", "id"}:
            raise PoisonEvent("envelope field resource is not {type, id}")
        _string(resource["type"], "resource.type", 60)
        _string(resource["id"], "resource.id", 100)
    _string(message["correlation_id"], "correlation_id", 100, nullable=True)
    if not isinstance(message["data"], dict):
        raise PoisonEvent("envelope field data is not an object")


def chain_for(tenant: str | None, actor: Mapping[str, Any] | None) -> str:
    """A tenant's events form its own chain; tenantless ones the vendor's (people) or the system's."""
    if tenant is not None:
        return TENANT_PREFIX + tenant
    if actor is not None and actor.get("kind", "user") == "user":
        return VENDOR_CHAIN
    return SYSTEM_CHAIN


def chain_tenant(chain: str) -> str | None:
    return chain[len(TENANT_PREFIX) :] if chain.startswith(TENANT_PREFIX) else None


def canonical(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def to_entry(message: Mapping[str, Any]) -> Entry:
    """Check an incoming envelope and turn it into an entry; raises PoisonEvent."""
    check_envelope(message)
    try:
        time = parse_rfc3339(message["time"])
        body = canonical(message)
    except ValueError:
        raise PoisonEvent("envelope field time is not RFC 3339, or data holds a non-JSON number") from None
    actor, resource = message["actor"], message["resource"]
    return Entry(
        event_id=message["id"],
        type=message["type"],
        time=time,
        tenant=message["tenant"],
        actor=actor["id"] if actor else None,
        subject=message["subject"],
        resource_type=resource["type"] if resource else None,
        resource_id=resource["id"] if resource else None,
        chain=chain_for(message["tenant"], actor),
        body=body,
    )


# --- the chain -----------------------------------------------------------------------------------


def genesis(chain: str) -> bytes:
    return hashlib.sha256(b"recept.audit.chain.v1\x00" + chain.encode()).digest()


def entry_hash(prev: bytes, body: bytes) -> bytes:
    return hashlib.sha256(prev + body).digest()


def checkpoint_payload(chain: str, seq: int, head_hex: str) -> bytes:
    """What a checkpoint signature covers: domain tag, chain id, sequence number, head hash (in shared/, so
    services holding a checkpoint as an anchor check it the same way)."""
    return shared_checkpoint_payload(chain, seq, head_hex)


@dataclass(slots=True)
class Row:
    """One stored entry as verification reads it."""

    seq: int
    event_id: str
    body: bytes
    prev_hash: bytes
    hash: bytes
    columns: dict[str, Any] = field(default_factory=dict)  # the query copies, checked against body
    unreadable: str | None = None  # why a stored value could not be read (a column of another type)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _stored_as(value: Any) -> str:
    return {str: "text", int: "an integer", float: "a real number", type(None): "nothing (NULL)"}.get(
        type(value), type(value).__name__
    )


def storage_damage(row: Row) -> str | None:
    """Why an entry is not stored the way the ingest writes it, or None.

    SQLite lets any column hold any storage class, so a body rewritten as TEXT (or a hash as hex
    text) is damage of its own kind: it is named, never fed to the hash function.
    """
    if row.unreadable is not None:
        return row.unreadable
    if not _is_int(row.seq):
        return f"the sequence number is stored as {_stored_as(row.seq)}, not as an integer"
    for name in ("body", "prev_hash", "hash"):
        value = getattr(row, name)
        if not isinstance(value, bytes):
            return f"the {name} column holds {_stored_as(value)}, not bytes: it was rewritten with another type"
    return None


@dataclass
class Finding:
    seq: int
    problem: str  # changed | removed | inserted | truncated | rewritten | damaged
    detail: str
    event_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "problem": self.problem, "event_id": self.event_id, "detail": self.detail}


@dataclass
class Walk:
    """Result of walking one chain."""

    verified: int = 0
    last_seq: int = 0
    last_hash: bytes = b""
    first_bad: Finding | None = None


def _literal(value: Any) -> bytes | None:
    """A column value as canonical() writes it inside a body (None when it is not a string or NULL)."""
    if value is None:
        return b"null"
    if type(value) is not str:
        return None
    return _encode_string(value).encode("utf-8")


_REPEATED: dict[str, bytes | None] = {}


def _repeated_literal(value: Any) -> bytes | None:
    """``_literal`` for values that recur from row to row (tenant, type, actor, resource type), remembered."""
    if type(value) is not str:
        return _literal(value)
    found = _REPEATED.get(value)
    if found is None:
        if len(_REPEATED) >= 4096:
            _REPEATED.clear()
        found = _REPEATED[value] = _literal(value)
    return found


# What json.dumps(..., ensure_ascii=False), and so canonical(), writes for a string (the C encoder).
_encode_string = json.encoder.encode_basestring
# rfc3339(): UTC, microseconds, Z — what every service writes; another spelling goes to the exact check.
_CANONICAL_TIME = re.compile(rb'"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z"')
_STRING_LITERAL = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _columns_in_body(body: bytes, columns: Mapping[str, Any]) -> bool:
    """True when the canonical bytes of the query columns stand where canonical() puts those fields.

    The fast path of the column check: no parse of the body. Canonical JSON sorts the keys, so a
    body the ingest wrote is ``{"actor":A,"correlation_id":..,"data":..,"id":ID,"resource":RES,
    "source":S,"subject":SUBJ,"tenant":T,"time":TIME,"type":TYPE,"version":N}`` and the columns
    pin down A's id, ID, RES, SUBJ, T, TIME and TYPE byte for byte. The comparisons are anchored
    (the tail at the end, the actor at the start, the id/resource run right before the source
    string), and a JSON string cannot hold an unescaped quote, so a copy of those bytes inside
    ``data`` or a string cannot stand in for the real field. False means "cannot tell here", never
    "differs": the caller then runs the exact check (a parse of the body). Whether the body is a
    valid envelope is not re-checked here: the ingest checked it before hashing, and a body with
    a recomputed hash is what the links and signed checkpoints catch.
    """
    try:
        when = columns["time"]
        tenant = columns["tenant"]
        if type(when) is not datetime or type(tenant) is not str or columns["chain"] != TENANT_PREFIX + tenant:
            return False  # tenantless chains depend on actor.kind: the exact check decides
        actor, subject = _repeated_literal(columns["actor"]), _literal(columns["subject"])
        tenant_b, kind = _repeated_literal(tenant), _repeated_literal(columns["type"])
        event_id = _literal(columns["event_id"])
        rtype, rid = _repeated_literal(columns["resource_type"]), _literal(columns["resource_id"])
        if None in (actor, subject, tenant_b, event_id, kind, rtype, rid) or columns["event_id"] is None:
            return False
    except (KeyError, UnicodeEncodeError, ValueError, OverflowError):
        return False
    version_at = body.rfind(b',"version":')
    if version_at < 0 or body[-1:] != b"}" or not body[version_at + 11 : -1].isdigit():
        return False
    # The tail: subject and tenant, the time in its canonical spelling (a fixed 29 bytes, read back
    # and compared as an instant: cheaper than formatting the column), then the type.
    after_time = b',"type":' + kind  # type: ignore[operator]
    time_end = version_at - len(after_time)
    time_at = time_end - 29
    before_time = b',"subject":%s,"tenant":%s,"time":' % (subject, tenant_b)
    tail_at = time_at - len(before_time)
    if (
        tail_at < 0
        or body[time_end:version_at] != after_time
        or body[tail_at:time_at] != before_time
        or _CANONICAL_TIME.fullmatch(body, time_at, time_end) is None
    ):
        return False
    stored = datetime.fromisoformat(body[time_at + 1 : time_end - 1].decode("ascii"))  # ...Z: aware, UTC
    if stored != (when.replace(tzinfo=UTC) if when.tzinfo is None else when):
        return False
    if actor == b"null":
        if not body.startswith(b'{"actor":null,"correlation_id":'):
            return False
    else:
        head = b'{"actor":{"id":' + actor  # type: ignore[operator]
        if not body.startswith(head) or body[len(head) : len(head) + 1] not in (b",", b"}"):
            return False
    if rtype == b"null" and rid == b"null":
        resource = b"null"
    elif rtype != b"null" and rid != b"null":
        resource = b'{"id":%s,"type":%s}' % (rid, rtype)
    else:
        return False
    middle = b',"id":%s,"resource":%s,"source":' % (event_id, resource)
    source_at = body.rfind(middle, 0, tail_at)
    if source_at < 0:
        return False
    return _STRING_LITERAL.fullmatch(body, source_at + len(middle), tail_at) is not None


def _columns_match(row: Row) -> bool:
    if not row.columns:
        return True
    if _columns_in_body(row.body, row.columns):
        return True
    try:
        entry = to_entry(json.loads(row.body))
    except (ValueError, PoisonEvent, RecursionError):
        return False
    stored = dict(row.columns)
    if isinstance(stored.get("time"), datetime):
        stored["time"] = as_utc(stored["time"])
    return entry.columns() == stored


def _links(row: Row, prev: bytes) -> bool:
    if storage_damage(row) is not None:
        return False
    return row.prev_hash == prev and entry_hash(prev, row.body) == row.hash


def walk_chain(
    chain: str, rows: Iterable[Row], *, start_seq: int, start_hash: bytes, checkpoints: Mapping[int, str], head_seq: int
) -> Walk:
    """Check every link of a chain from its anchor; name the first entry that was changed, removed or inserted.

    ``checkpoints``: seq -> signed head hash (hex), trusted ones only.  ``head_seq``: the last seq the
    chain should have (the larger of the recorded head and the newest checkpoint), to catch a cut tail.
    """
    result = Walk(last_seq=start_seq, last_hash=start_hash)
    expected, prev, before_prev = start_seq + 1, start_hash, None
    last_good_checkpoint = start_seq
    iterator: Iterator[Row] = iter(rows)
    pending: list[Row] = []

    def next_row() -> Row | None:
        return pending.pop() if pending else next(iterator, None)

    def stop(finding: Finding) -> Walk:
        result.first_bad = finding
        return result

    while (row := next_row()) is not None:
        # The type checks of storage_damage, inline for the common row (it names the damage otherwise).
        stored_well = (
            row.unreadable is None
            and type(row.seq) is int
            and type(row.body) is bytes
            and type(row.prev_hash) is bytes
            and type(row.hash) is bytes
        )
        damage = None if stored_well else storage_damage(row)
        if damage is not None and not _is_int(row.seq):
            return stop(Finding(expected, "damaged", damage, row.event_id if isinstance(row.event_id, str) else None))
        if row.seq > expected:
            return stop(Finding(expected, "removed", f"entries {expected} to {row.seq - 1} are missing"))
        if row.seq < expected:
            return stop(Finding(row.seq, "inserted", "a second entry with this sequence number", row.event_id))
        if damage is not None:
            return stop(Finding(row.seq, "damaged", damage, row.event_id if isinstance(row.event_id, str) else None))
        if row.prev_hash == prev and entry_hash(prev, row.body) == row.hash:  # _links, the storage checked above
            if not _columns_match(row):
                return stop(
                    Finding(row.seq, "changed", "the stored query fields differ from the hashed event", row.event_id)
                )
            signed = checkpoints.get(row.seq)
            if signed is not None and signed != row.hash.hex():
                return stop(
                    Finding(
                        last_good_checkpoint + 1,
                        "rewritten",
                        f"entries {last_good_checkpoint + 1} to {row.seq} were rewritten: the chain "
                        f"disagrees with the signed checkpoint at {row.seq}",
                    )
                )
            if signed is not None:
                last_good_checkpoint = row.seq
            before_prev, prev = prev, row.hash
            result.verified += 1
            result.last_seq, result.last_hash = row.seq, row.hash
            expected += 1
            continue
        # A broken link: tell an inserted, a removed and a changed entry apart.
        self_consistent = entry_hash(row.prev_hash, row.body) == row.hash
        if self_consistent and before_prev is not None and row.prev_hash == before_prev:
            result.verified -= 1  # the entry before passed its own link check, but it is the intruder
            return stop(Finding(row.seq - 1, "inserted", "this entry was inserted: the next one links past it", None))
        following = next_row()
        if following is not None:
            pending.append(following)
            if _links(following, prev):
                return stop(
                    Finding(row.seq, "inserted", "this entry was inserted: the next one links past it", row.event_id)
                )
        if self_consistent:
            return stop(Finding(row.seq, "removed", "the entry before this one is missing", row.event_id))
        return stop(Finding(row.seq, "changed", "the entry does not match its hash", row.event_id))
    beyond = max([head_seq, *checkpoints.keys()]) if checkpoints else head_seq
    if beyond > result.last_seq:
        return stop(
            Finding(
                result.last_seq + 1,
                "truncated",
                f"the chain ends at {result.last_seq} but was recorded or signed up to {beyond}",
            )
        )
    return result


# --- query cursors --------------------------------------------------------------------------------


def encode_cursor(time: datetime, entry_id: int) -> str:
    raw = json.dumps([rfc3339(time), entry_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        time_text, entry_id = json.loads(raw)
        if not isinstance(entry_id, int) or isinstance(entry_id, bool):
            raise ValueError
        return parse_rfc3339(time_text), entry_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise Invalid(
            "the cursor is not valid", errors=[{"field": "cursor", "message": "is not a cursor from this API"}]
        ) from None


def csv_cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    return formula_safe(text)


# --- the art. 15 trail ----------------------------------------------------------------------------


def describe_actor(actor: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Who acted, for a data subject's trail: role and tenant, never a user id or a name.

    A service or the system is named as such (its id is the service's name, not a person's);
    an event recorded before envelopes carried roles says only that a user of the tenant acted.
    """
    if actor is None:
        return None
    kind = actor.get("kind", "user")
    if kind != "user":
        return {"role": kind, "service": actor["id"], "tenant": actor.get("tenant")}
    return {"role": ", ".join(sorted(actor.get("roles") or [])) or "user", "tenant": actor.get("tenant")}


def batched_subjects(event: Mapping[str, Any]) -> list[str]:
    """The subjects a batched read event names in ``data.subjects`` (``*.read`` types only)."""
    subjects = event.get("data", {}).get("subjects") if event.get("type", "").endswith(".read") else None
    return [s for s in subjects if isinstance(s, str)] if isinstance(subjects, list) else []
