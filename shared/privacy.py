"""Each service's side of data-subject requests (DESIGN.md "Data-subject requests").

A service implements a ``Participant``: its data inventory (R3, R5), and how it
resolves a subject's identifiers to its own subject references, exports them (R1)
and erases them (R2).  This module turns the gdpr service's commands into calls on
that participant and sends the reply through the outbox, in the same transaction as
the erasure, so a command handled twice does the work once (inbox) and the reply is
never lost.  Commands arrive sealed to this service's transport key (derived from its keyring,
announced with its inventory) and replies leave sealed with the same request's channel, so the
broker never holds a subject's identifiers or records in clear (docs/crypto.md).  The messages themselves (announcement, command, reply) are defined once,
for this side and the coordinator's, in ``shared.gdpr_protocol``.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from .bus import GDPR, Message, Publisher
from .clock import now_rfc3339, utcnow
from .consumer import Subscription
from .errors import Invalid
from .gdpr_protocol import ERASURE_ACTIONS, Announcement, Command, Reply, transport_public_key

if TYPE_CHECKING:
    from .service import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataField:
    name: str
    description: str
    personal: bool = True
    special: bool = False  # GDPR art. 9 (health data: diets, allergies)
    encrypted: bool = False
    blind_indexed: bool = False


@dataclass(frozen=True)
class Category:
    """One kind of record a service holds about people (a row of the art. 30 record)."""

    kind: str  # e.g. "individual", "order", "login_history"
    data_subjects: str  # e.g. "care recipients", "customer staff"
    fields: tuple[DataField, ...]
    purposes: tuple[str, ...]
    legal_basis: str
    role: str  # "controller" | "processor"
    controller: str  # "vendor" | "tenant (customer)"
    retention: str
    recipients: tuple[str, ...] = ()
    storage: str = ""  # where it lives: "orders database, table individuals"
    erasure: str = "deleted"  # what erase does: deleted | anonymised | retained

    @property
    def special_category(self) -> bool:
        return any(f.special for f in self.fields)


@dataclass(frozen=True)
class Inventory:
    service: str
    categories: tuple[Category, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "categories": [{**asdict(c), "special_category": c.special_category} for c in self.categories],
        }


@dataclass
class ErasureItem:
    kind: str
    action: str  # deleted | anonymised | retained
    count: int
    legal_basis: str | None = None
    retain_until: date | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.action not in ERASURE_ACTIONS:
            raise ValueError(f"erasure action must be one of {ERASURE_ACTIONS}")
        out: dict[str, Any] = {"kind": self.kind, "action": self.action, "count": self.count}
        if self.legal_basis:
            out["legal_basis"] = self.legal_basis
        if self.retain_until:
            out["retain_until"] = self.retain_until.isoformat()
        return out


@dataclass
class Context:
    """What a participant gets with each command."""

    request_id: str
    tenant: str | None
    subject: dict[str, str]
    references: list[str] = field(default_factory=list)  # phase "trail": references from the other services


class Participant(Protocol):
    inventory: Inventory
    #: "resolve" (default): acts on the subject's identifiers in phase one.  "trail": acts in
    #: phase two on the references the other services resolved (the audit service).
    phase: str

    def counts(self, session: Session) -> dict[str, int]:
        """Live number of records per category kind (for the inventory's counts)."""

    def resolve(self, session: Session, ctx: Context) -> list[str]:
        """This service's subject references for the identifiers (through blind indexes)."""

    def export(self, session: Session, ctx: Context, references: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Every record about the references, decrypted, by kind."""

    def erase(self, session: Session, ctx: Context, references: list[str]) -> list[ErasureItem]:
        """Erase per the inventory's rules; report what was done per kind."""


def command_subscription(runtime: Runtime) -> Subscription:
    def on_command(session: Session, message: dict[str, Any]) -> None:
        handle_command(runtime, session, message)

    return Subscription(GDPR, Command.routing_key(runtime.name), on_command)


def _first_time(runtime: Runtime, session: Session, command_id: str) -> bool:
    """Record the command id in the inbox; False when this command was handled before.

    The inbox already drops a redelivered message, but a command re-sent under a new
    message id (a retry) must not be acted on twice either.
    """
    inbox = runtime.tables.inbox
    key = f"command:{command_id}"[:64]
    if (
        session.scalar(select(inbox.c.message_id).where(inbox.c.consumer == runtime.name, inbox.c.message_id == key))
        is not None
    ):
        return False
    session.execute(inbox.insert().values(consumer=runtime.name, message_id=key, received_at=utcnow()))
    return True


def handle_command(runtime: Runtime, session: Session, message: dict[str, Any]) -> None:
    try:
        command, channel = Command.from_wire(message, keyring=runtime.keyring, service=runtime.name)
    except Invalid:
        # Nothing to act on and nobody to answer: the coordinator sends only well-formed commands
        # sealed to this service's key (a plaintext or unopenable one is refused), and it would not
        # accept a reply to this one either.
        log.warning("ignoring a malformed, unsealed or unopenable gdpr command")
        return
    if not _first_time(runtime, session, command.command_id):
        return
    participant = runtime.participant
    ctx = Context(
        request_id=command.request_id,
        tenant=command.tenant,
        subject=dict(command.subject),
        references=list(command.references),
    )
    # The work and the reply commit together; an exception rolls both back and the
    # command is redelivered (a transient failure up to the delivery limit; an invalid command is
    # dead-lettered at once).
    references = participant.resolve(session, ctx) if command.phase == "resolve" else list(ctx.references)
    if command.action == "export":
        reply = Reply.done(
            command,
            service=runtime.name,
            references=references,
            export=participant.export(session, ctx, references),
            at=now_rfc3339(),
        )
    else:
        reply = Reply.done(
            command,
            service=runtime.name,
            references=references,
            erasure=[item.as_dict() for item in participant.erase(session, ctx, references)],
            at=now_rfc3339(),
        )
    runtime.outbox.send(
        session,
        GDPR,
        Reply.routing_key(runtime.name),
        reply.to_wire(channel),
        message_id=reply.message_id,
        transient=command.action == "export",
        aggregate=f"gdpr:{command.request_id}",
    )


def announcement(runtime: Runtime) -> dict[str, Any]:
    """This service's announcement, as it goes on the wire."""
    participant = runtime.participant
    with runtime.db.transaction() as session:
        counts = participant.counts(session)
    return Announcement(
        service=runtime.name,
        inventory=participant.inventory.as_dict(),
        counts=counts,
        phase=getattr(participant, "phase", "resolve"),
        at=now_rfc3339(),
        transport_key=transport_public_key(runtime.keyring),
    ).to_wire()


def announce(runtime: Runtime, publisher: Publisher) -> bool:
    """Publish one announcement; True when the broker confirmed it."""
    body = json.dumps(announcement(runtime), default=str).encode()
    results = publisher.publish([Message(GDPR, Announcement.routing_key(runtime.name), body, str(uuid.uuid4()))])
    if results and results[0] is not None:
        log.warning("announce: not delivered (%s)", type(results[0]).__name__)
        return False
    return True


def announce_loop(runtime: Runtime, stop: threading.Event) -> None:
    """Announce at start-up and every ANNOUNCE_INTERVAL seconds.

    Until one announcement is delivered (the gdpr service may start after this one, so its
    queue is not there yet) it tries again every few seconds rather than a whole interval later.
    """
    publisher = runtime.bus.publisher()
    interval = runtime.config["ANNOUNCE_INTERVAL"]
    delivered = False
    try:
        while not stop.is_set():
            try:
                delivered = announce(runtime, publisher) or delivered
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.warning("announce failed: %s", type(exc).__name__)
            stop.wait(interval if delivered else min(interval, 3.0))
    finally:
        publisher.close()


def fields_of(categories: Iterable[Category]) -> list[str]:
    return [f"{c.kind}.{f.name}" for c in categories for f in c.fields if f.personal]
