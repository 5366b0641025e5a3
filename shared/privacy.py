"""Each service's side of data-subject requests (DESIGN.md "Data-subject requests").

A service implements a ``Participant``: its data inventory (R3, R5), and how it
resolves a subject's identifiers to its own subject references, exports them (R1)
and erases them (R2).  This module turns the gdpr service's commands into calls on
that participant and sends the reply through the outbox, in the same transaction as
the erasure, so a command handled twice does the work once (inbox) and the reply is
never lost.

Wire protocol, all on the ``recept.gdpr`` exchange:

* ``gdpr.announce.<service>``: ``{"service", "inventory", "counts", "phase", "at"}``, at start-up
  and periodically; the gdpr service learns whom to wait for, and in which phase, from these.
* ``gdpr.command.<service>``: ``{"request_id", "command_id", "action": "export"|"erase",
  "phase": "resolve"|"trail", "tenant", "subject": {identifiers}, "references": [...]}``.
* ``gdpr.reply.<service>``: ``{"request_id", "command_id", "service", "action", "phase",
  "status": "done"|"failed", "references": [...], "export": {kind: [records]} | None,
  "erasure": [{"kind", "action", "count", "legal_basis"?, "retain_until"?}] | None,
  "error": str | None}``, message id = uuid5 of the command id (a repeated command yields the
  same reply id).  Export replies are routed only to the gdpr service's queue, sealed while
  in the outbox, and their rows are deleted as soon as the broker confirms them.
"""
from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Iterable, Protocol

from sqlalchemy.orm import Session

from .bus import GDPR, Message
from .clock import now_rfc3339
from .consumer import Subscription

log = logging.getLogger(__name__)

IDENTIFIERS = ("email", "phone", "personnummer", "username")
ACTIONS = ("deleted", "anonymised", "retained")


@dataclass(frozen=True)
class DataField:
    name: str
    description: str
    personal: bool = True
    special: bool = False          # GDPR art. 9 (health data: diets, allergies)
    encrypted: bool = False
    blind_indexed: bool = False


@dataclass(frozen=True)
class Category:
    """One kind of record a service holds about people (a row of the art. 30 record)."""

    kind: str                      # e.g. "individual", "order", "login_history"
    data_subjects: str             # e.g. "care recipients", "customer staff"
    fields: tuple[DataField, ...]
    purposes: tuple[str, ...]
    legal_basis: str
    role: str                      # "controller" | "processor"
    controller: str                # "vendor" | "tenant (customer)"
    retention: str
    recipients: tuple[str, ...] = ()
    storage: str = ""              # where it lives: "orders database, table individuals"
    erasure: str = "deleted"       # what erase does: deleted | anonymised | retained

    @property
    def special_category(self) -> bool:
        return any(f.special for f in self.fields)


@dataclass(frozen=True)
class Inventory:
    service: str
    categories: tuple[Category, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"service": self.service, "categories": [
            {**asdict(c), "special_category": c.special_category} for c in self.categories]}


@dataclass
class ErasureItem:
    kind: str
    action: str                    # deleted | anonymised | retained
    count: int
    legal_basis: str | None = None
    retain_until: date | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.action not in ACTIONS:
            raise ValueError(f"erasure action must be one of {ACTIONS}")
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
    references: list[str] = field(default_factory=list)   # phase "trail": references from the other services


class Participant(Protocol):
    inventory: Inventory
    #: "resolve" (default): acts on the subject's identifiers in phase one.  "trail": acts in
    #: phase two on the references the other services resolved (the audit service).
    phase: str

    def counts(self, session: Session) -> dict[str, int]:
        """Live number of records per category kind (for the inventory's counts)."""

    def resolve(self, session: Session, ctx: Context) -> list[str]:
        """This service's subject references for the identifiers (through blind indexes)."""

    def export(self, session: Session, ctx: Context, references: list[str]) -> dict[str, list[dict]]:
        """Every record about the references, decrypted, by kind."""

    def erase(self, session: Session, ctx: Context, references: list[str]) -> list[ErasureItem]:
        """Erase per the inventory's rules; report what was done per kind."""


def command_subscription(runtime) -> Subscription:
    def on_command(session: Session, message: dict[str, Any]) -> None:
        handle_command(runtime, session, message)

    return Subscription(GDPR, f"gdpr.command.{runtime.name}", on_command)


def _first_time(runtime, session: Session, command_id: str) -> bool:
    """Record the command id in the inbox; False when this command was handled before.

    The inbox already drops a redelivered message, but a command re-sent under a new
    message id (a retry) must not be acted on twice either.
    """
    from sqlalchemy import select

    inbox = runtime.tables.inbox
    key = f"command:{command_id}"[:64]
    if session.scalar(select(inbox.c.message_id).where(inbox.c.consumer == runtime.name,
                                                       inbox.c.message_id == key)) is not None:
        return False
    session.execute(inbox.insert().values(consumer=runtime.name, message_id=key,
                                          received_at=datetime.now(timezone.utc)))
    return True


def handle_command(runtime, session: Session, message: dict[str, Any]) -> None:
    if not _first_time(runtime, session, str(message.get("command_id"))):
        return
    participant = runtime.participant
    action, phase = message.get("action"), message.get("phase", "resolve")
    ctx = Context(request_id=str(message.get("request_id")), tenant=message.get("tenant"),
                  subject={k: v for k, v in (message.get("subject") or {}).items() if k in IDENTIFIERS and v},
                  references=list(message.get("references") or []))
    reply: dict[str, Any] = {
        "request_id": ctx.request_id, "command_id": message.get("command_id"), "service": runtime.name,
        "action": action, "phase": phase, "status": "done", "references": [], "export": None,
        "erasure": None, "error": None, "at": now_rfc3339(),
    }
    if action not in ("export", "erase"):
        reply.update(status="failed", error="unknown action")
    else:
        # The work and the reply commit together; an exception rolls both back and the
        # command is redelivered (and dead-lettered after the delivery limit).
        references = participant.resolve(session, ctx) if phase == "resolve" else list(ctx.references)
        reply["references"] = references
        if action == "export":
            reply["export"] = participant.export(session, ctx, references)
        else:
            reply["erasure"] = [item.as_dict() for item in participant.erase(session, ctx, references)]
    runtime.outbox.send(session, GDPR, f"gdpr.reply.{runtime.name}", reply,
                        message_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"recept:reply:{message.get('command_id')}")),
                        transient=action == "export",
                        aggregate=f"gdpr:{ctx.request_id}")


def announcement(runtime) -> dict[str, Any]:
    participant = runtime.participant
    with runtime.db.transaction() as session:
        counts = participant.counts(session)
    return {"service": runtime.name, "inventory": participant.inventory.as_dict(), "counts": counts,
            "phase": getattr(participant, "phase", "resolve"), "at": now_rfc3339()}


def announce(runtime, publisher) -> bool:
    """Publish one announcement; True when the broker confirmed it."""
    import json

    body = json.dumps(announcement(runtime), default=str).encode()
    results = publisher.publish([Message(GDPR, f"gdpr.announce.{runtime.name}", body, str(uuid.uuid4()))])
    if results and results[0] is not None:
        log.warning("announce: not delivered (%s)", type(results[0]).__name__)
        return False
    return True


def announce_loop(runtime, stop: threading.Event) -> None:
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


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


def fields_of(categories: Iterable[Category]) -> list[str]:
    return [f"{c.kind}.{f.name}" for c in categories for f in c.fields if f.personal]
