"""What every part of the orders domain is built on: the one dependency bundle, new ids, records and pages."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

from shared.clock import as_utc
from shared.crypto import ERASED, BlindIndex, Vault
from shared.events import EventType
from shared.outbox import Outbox
from shared.tokens import Principal

from . import events as ev
from .rules import subject_of

Clock = Callable[[], datetime]
T = TypeVar("T")


@dataclass(frozen=True)
class Deps:
    """The dependencies of access, catalogue, individuals and ordering, built once per process."""

    vault: Vault  # per-individual field encryption and crypto-shredding (R7)
    index: BlindIndex  # lookups on encrypted columns
    outbox: Outbox  # events in the caller's transaction (R9, R11)
    clock: Clock  # the service's notion of now (tests move it)
    default_timezone: str  # of new registers' deadlines
    retained_k: int = 5  # k of the retained orders' de-identification (docs/orders.md)

    def now(self) -> datetime:
        # An injected clock may hand back another zone; stored and compared times are UTC.
        return as_utc(self.clock())

    # Fields stored as ciphertext bound to ``<table>.<column>:<row id>`` (R7): text and dates.

    def seal(
        self, session, subject: str, table: str, column: str, row_id: str, value: str | date | None
    ) -> bytes | None:
        if value is None:
            return None
        text = value.isoformat() if isinstance(value, date) else value
        return self.vault.encrypt(session, subject, table, column, row_id, text)

    def open(self, session, table: str, column: str, row_id: str, blob: bytes | None) -> str | None:
        """The plaintext, or None for no value and for a value whose key was shredded."""
        value = self.vault.decrypt(session, table, column, row_id, blob)
        return None if value is None or value is ERASED else value

    def open_date(self, session, table: str, column: str, row_id: str, blob: bytes | None) -> date | None:
        value = self.open(session, table, column, row_id, blob)
        return date.fromisoformat(value) if value else None


def actor_of(principal) -> dict[str, Any]:
    """The event actor: the token's ids plus its roles, so a trail can say who saw what by role."""
    return {**principal.actor, "roles": sorted(principal.roles)}


def emit_by(
    deps: Deps,
    session: Session,
    principal: Principal,
    event: EventType,
    tenant: str,
    resource: tuple[str, str],
    individual_id: str | None,
    data: dict[str, Any],
) -> None:
    """The event of the caller's change or read (``actor_of``), about ``resource`` (type, id), with the
    individual it concerns, if any, as its subject; in the caller's transaction (R9, R11)."""
    kind, resource_id = resource
    deps.outbox.emit(
        session,
        event,
        actor=actor_of(principal),
        tenant=tenant,
        subject=subject_of(individual_id) if individual_id else None,
        resource={"type": kind, "id": resource_id},
        data=data,
    )


def record_reads(
    deps: Deps, session, principal, subjects: Sequence[str], purpose: str, register_id: str | None = None
) -> None:
    """One ``orders.individuals.read`` event for the subjects whose data this request decrypted."""
    named = list(dict.fromkeys(subjects))
    if not named:
        return
    deps.outbox.emit(
        session,
        ev.INDIVIDUALS_READ,
        actor=actor_of(principal),
        tenant=principal.tenant,
        resource={"type": "register", "id": register_id} if register_id else None,
        data={"register_id": register_id, "purpose": purpose, "count": len(named), "subjects": named},
    )


def new_id() -> str:
    return str(uuid.uuid4())


class Record:
    """Attribute access over the values just inserted, so they read like a fetched row."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)
        self._mapping = values


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; ``next_offset`` is None on the last page."""

    items: Sequence[T]
    next_offset: int | None

    @classmethod
    def of(cls, rows: Sequence[T], limit: int, offset: int) -> Page[T]:
        """From ``limit + 1`` fetched rows: the extra row only says that another page exists."""
        return cls(rows[:limit], offset + limit if len(rows) > limit else None)
