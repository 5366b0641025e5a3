"""The audit service's GDPR contract: its inventory, the art. 15 trail export, and why erasure retains entries.

Audit entries hold ids, field names and counts, never personal values; what identifies a
person there is pseudonymous (user ids of actors, subject references).  An erasure request
therefore leaves them in place for accountability (art. 5(2)) until the retention purge,
and says so in the reply with that legal basis (R2).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.privacy import Category, Context, DataField, ErasureItem, Inventory

from .domain import batched_subjects, describe_actor
from .models import entries

LEGAL_BASIS = "GDPR art. 5(2) accountability / art. 30"

#: Read events that name many subjects in ``data.subjects`` (one per request, DESIGN.md "Events")
#: instead of the envelope's single ``subject``; a trail looks inside them.
BATCHED_READ_TYPES = ("orders.individuals.read",)
_CHUNK = 500

_FIELDS = (
    DataField("actor", "user id of who viewed or changed data (pseudonymous; never a name)"),
    DataField("subject", "pseudonymous reference of the person whose data was viewed or changed"),
    DataField("event", "what happened: event type, time, ids, changed field names, counts", personal=False),
)


def inventory(retention_days: int) -> Inventory:
    retention = f"{retention_days} days after recording, then purged up to a signed checkpoint"
    common = dict(
        fields=_FIELDS,
        legal_basis="art. 6(1)(c) and (f): accountability (art. 5(2)), security of processing (art. 32)",
        retention=retention,
        storage="audit database, table audit_entries (hash-chained, append-only)",
        erasure="retained",
    )
    return Inventory(
        "audit",
        (
            Category(
                kind="audit_entry",
                data_subjects="customer staff and the people in the customer's order registers (by reference)",
                purposes=(
                    "traceability of orders and changes (R9, R11)",
                    "who saw or changed a person's data (art. 15)",
                ),
                role="processor",
                controller="tenant (customer)",
                recipients=("the customer's administrators", "the vendor's auditors"),
                **common,
            ),
            Category(
                kind="vendor_audit_entry",
                data_subjects="vendor staff and support contacts (by reference)",
                purposes=("traceability of support and account changes", "security monitoring"),
                role="controller",
                controller="vendor",
                recipients=("the vendor's auditors",),
                **common,
            ),
        ),
    )


class AuditParticipant:
    #: Announced to the gdpr service: asked in phase two, with the references the others resolved.
    phase = "trail"

    def __init__(self, ledger, retention_days: int) -> None:
        self.ledger = ledger
        self.inventory = inventory(retention_days)

    def counts(self, session: Session) -> dict[str, int]:
        return self.ledger.counts(session)

    def tenant_counts(self, session: Session) -> dict[str, dict[str, int]]:
        return self.ledger.tenant_counts(session)

    def resolve(self, session: Session, ctx: Context) -> list[str]:
        # The audit holds no identifiers (e-mail, phone ...) to resolve; the gdpr service asks it
        # for the trail of the references the other services resolved (phase "trail").
        return []

    def export(self, session: Session, ctx: Context, references: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The art. 15 trail: events about these subjects, batched reads naming them, actors by role."""
        found = self.ledger.trail(session, references)
        known = {r["event_id"] for r in found["audit_trail"]}
        reads = [r for r in _batched_reads(session, ctx.tenant, references) if r["event_id"] not in known]
        trail = sorted([*found["audit_trail"], *reads], key=lambda r: (r["time"], r["chain"], r["seq"]))
        actors = _actors(session, [r["event_id"] for r in trail])
        for record in trail:
            # The person learns who saw their data by role and tenant, not by a colleague's user id.
            for key in ("actor_id", "actor_kind", "actor_tenant"):
                record.pop(key, None)
            record["actor"] = describe_actor(actors.get(record["event_id"]))
        return {**found, "audit_trail": trail}

    def erase(self, session: Session, ctx: Context, references: list[str]) -> list[ErasureItem]:
        count, until = self.ledger.retained(session, references)
        return [
            ErasureItem(
                kind="audit_entry",
                action="retained",
                count=count,
                legal_basis=LEGAL_BASIS,
                retain_until=until.date() if until is not None else None,
            )
        ]


def _batched_reads(session: Session, tenant: str | None, references: list[str]) -> list[dict[str, Any]]:
    """Batched read events naming any of ``references``, shaped as the ledger's trail records.

    Only the requester's own references stay in ``data.subjects``: the others read in the same
    request are other people, and their references are not theirs to see.
    """
    if not references:
        return []
    c, wanted = entries.c, set(references)
    statement = select(c.id, c.chain, c.seq, c.time, c.body, c.subject).where(c.type.in_(BATCHED_READ_TYPES))
    if tenant is not None:
        statement = statement.where(c.tenant == tenant)
    found = []
    for row in session.execute(statement.order_by(c.time, c.id)):
        event = json.loads(row.body)
        named = [s for s in batched_subjects(event) if s in wanted]
        if not named:
            continue
        actor, resource = event.get("actor") or {}, event.get("resource") or {}
        found.append(
            {
                "event_id": event["id"],
                "time": event["time"],
                "type": event["type"],
                "source": event["source"],
                "actor_id": actor.get("id"),
                "tenant": event["tenant"],
                "subject": named[0] if len(named) == 1 else None,
                "resource_type": resource.get("type"),
                "resource_id": resource.get("id"),
                "data": {**event["data"], "subjects": named},
                "chain": row.chain,
                "seq": row.seq,
            }
        )
    return found


def _actors(session: Session, event_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """Each event's envelope actor (with its roles), which the trail records leave out."""
    actors: dict[str, dict[str, Any] | None] = {}
    for start in range(0, len(event_ids), _CHUNK):
        chunk = event_ids[start : start + _CHUNK]
        for row in session.execute(select(entries.c.event_id, entries.c.body).where(entries.c.event_id.in_(chunk))):
            actors[row.event_id] = json.loads(row.body).get("actor")
    return actors
