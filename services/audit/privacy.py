"""The audit service's GDPR contract: its inventory, the art. 15 trail export, and why erasure retains entries.

Audit entries hold ids, field names and counts, never personal values; what identifies a
person there is pseudonymous (user ids of actors, subject references).  An erasure request
therefore leaves them in place for accountability (art. 5(2)) until the retention purge,
and says so in the reply with that legal basis (R2).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shared.privacy import Category, Context, DataField, ErasureItem, Inventory


LEGAL_BASIS = "GDPR art. 5(2) accountability / art. 30"

_FIELDS = (
    DataField("actor", "user id of who viewed or changed data (pseudonymous; never a name)"),
    DataField("subject", "pseudonymous reference of the person whose data was viewed or changed"),
    DataField("event", "what happened: event type, time, ids, changed field names, counts", personal=False),
)


def inventory(retention_days: int) -> Inventory:
    retention = f"{retention_days} days after recording, then purged up to a signed checkpoint"
    common = dict(fields=_FIELDS, legal_basis="art. 6(1)(c) and (f): accountability (art. 5(2)), security of "
                                                 "processing (art. 32)", retention=retention,
                  storage="audit database, table audit_entries (hash-chained, append-only)", erasure="retained")
    return Inventory("audit", (
        Category(kind="audit_entry", data_subjects="customer staff and the people in the customer's order "
                                                   "registers (by reference)",
                 purposes=("traceability of orders and changes (R9, R11)", "who saw or changed a person's data "
                                                                           "(art. 15)"),
                 role="processor", controller="tenant (customer)", recipients=("the customer's administrators",
                                                                               "the vendor's auditors"), **common),
        Category(kind="vendor_audit_entry", data_subjects="vendor staff and support contacts (by reference)",
                 purposes=("traceability of support and account changes", "security monitoring"),
                 role="controller", controller="vendor", recipients=("the vendor's auditors",), **common),
    ))


class Participant:
    #: Announced to the gdpr service: asked in phase two, with the references the others resolved.
    phase = "trail"

    def __init__(self, ledger, retention_days: int) -> None:
        self.ledger = ledger
        self.inventory = inventory(retention_days)

    def counts(self, session: Session) -> dict[str, int]:
        return self.ledger.counts(session)

    def resolve(self, session: Session, ctx: Context) -> list[str]:
        # The audit holds no identifiers (e-mail, phone ...) to resolve; the gdpr service asks it
        # for the trail of the references the other services resolved (phase "trail").
        return []

    def export(self, session: Session, ctx: Context, references: list[str]) -> dict[str, list[dict[str, Any]]]:
        return self.ledger.trail(session, references)

    def erase(self, session: Session, ctx: Context, references: list[str]) -> list[ErasureItem]:
        count, until = self.ledger.retained(session, references)
        return [ErasureItem(kind="audit_entry", action="retained", count=count, legal_basis=LEGAL_BASIS,
                            retain_until=until.date() if until is not None else None)]
