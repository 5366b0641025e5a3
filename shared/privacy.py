"""Each service's side of data-subject requests (DESIGN.md "Data-subject requests").

A service implements a ``Participant``: its data inventory (R3, R5), and how it
resolves a subject's identifiers to its own subject references, exports them (R1)
and erases them (R2).  Before anyone approves, a request is previewed (issue 15): the
participant answers with ``Candidate`` s — per kind of data a masked card, a count, and whether
the identifiers matched exactly or only nearly — and nothing is changed.  Each candidate leaves
with a ref, an HMAC token (``CandidateRefs``) over the request, the candidate's references and
its state; in the acting phase the participant looks the identifiers up again, and acts only on
the candidates whose fresh token is among the confirmed ones: a row changed since the preview
yields another token, so it is reported as stale and left alone.  This module turns the gdpr service's commands into calls on
that participant and sends the reply through the outbox, in the same transaction as
the erasure, so a command handled twice does the work once (inbox) and the reply is
never lost.  Commands arrive sealed to this service's transport key (derived from its keyring,
announced with its inventory) and replies leave sealed with the same request's channel, so the
broker never holds a subject's identifiers or records in clear (docs/crypto.md).  The messages themselves (announcement, command, reply) are defined once,
for this side and the coordinator's, in ``shared.gdpr_protocol``.
"""

from __future__ import annotations

import hashlib
import hmac
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
from .gdpr_protocol import ERASURE_ACTIONS, MATCHES, Announcement, Command, Reply, transport_public_key

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


@dataclass(frozen=True)
class Candidate:
    """One thing a preview found that may be the subject: shown masked, acted on only once confirmed.

    ``card`` never holds a value the requester did not give: a ``label`` (e.g. "individual,
    register Avd 3, born 1938, initials G. L., 12 orders") and masked fields (initials, birth
    year, unit or register name, counts).  ``references`` are the subject references export and
    erase act on; ``state`` is what changes when those rows change (an ``updated_at``, a count):
    it is bound into the ref, so a confirmed candidate that changed since the preview is stale.
    """

    kind: str
    match: str  # exact | near
    card: dict[str, Any]
    references: tuple[str, ...]
    count: int = 1
    state: str = ""

    def __post_init__(self) -> None:
        if self.match not in MATCHES:
            raise ValueError(f"match must be one of {MATCHES}")
        if "label" not in self.card:
            raise ValueError("a card needs a label")


class CandidateRefs:
    """The opaque, state-bound refs of candidates: HMAC-SHA256 (key derived from the keyring's
    index key) over the request id, kind, references, card, count and state."""

    INFO = b"recept.gdpr.candidate-ref.v1"

    def __init__(self, index_key: bytes) -> None:
        self._key = hmac.new(index_key, self.INFO, hashlib.sha256).digest()

    def __call__(self, request_id: str, candidate: Candidate) -> str:
        material = json.dumps(
            [
                request_id,
                candidate.kind,
                candidate.match,
                sorted(candidate.references),
                candidate.card,
                candidate.count,
                candidate.state,
            ],
            sort_keys=True,
            ensure_ascii=False,
            default=str,
        )
        return hmac.new(self._key, material.encode(), hashlib.sha256).hexdigest()


def candidates_of(participant: Any, session: Session, ctx: Context) -> list[Candidate]:
    """The participant's candidates; one without ``candidates`` offers each resolved reference as an
    exact candidate with a plain card (its kind only)."""
    finder = getattr(participant, "candidates", None)
    if finder is not None:
        return list(finder(session, ctx))
    out = []
    for reference in participant.resolve(session, ctx):
        parts = reference.split(":")
        kind = parts[1] if len(parts) == 3 else "record"
        out.append(Candidate(kind, "exact", {"label": f"{kind} record"}, (reference,), 1, reference))
    return out


class Participant(Protocol):
    inventory: Inventory
    #: "resolve" (default): acts on the subject's identifiers in phase one.  "trail": acts in
    #: phase two on the references the other services resolved (the audit service).
    phase: str

    def counts(self, session: Session) -> dict[str, int]:
        """Live number of records per category kind (for the inventory's counts).

        A participant may also define ``tenant_counts(session) -> {tenant slug: {kind: count}}``: the
        same counts per customer tenant, for that tenant's records of processing (art. 30(2), issue 15).
        Only numbers and slugs: a tenant with nothing of a kind may be left out (read as 0)."""

    def resolve(self, session: Session, ctx: Context) -> list[str]:
        """This service's subject references for the identifiers (through blind indexes).

        A participant may also define ``candidates(session, ctx) -> list[Candidate]`` (masked cards,
        near matches); without it each resolved reference is an exact candidate (``candidates_of``)."""

    def export(self, session: Session, ctx: Context, references: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Every record about the references, decrypted, by kind."""

    def erase(self, session: Session, ctx: Context, references: list[str]) -> list[ErasureItem]:
        """Erase per the inventory's rules; report what was done per kind."""


def tenant_counts_of(participant: Any, session: Session) -> dict[str, dict[str, int]] | None:
    """The participant's live counts per tenant and kind (a kind left out: 0); None for one that does
    not count per tenant."""
    counter = getattr(participant, "tenant_counts", None)
    if counter is None:
        return None
    return {
        str(tenant): {str(kind): int(n) for kind, n in kinds.items()}
        for tenant, kinds in counter(session).items()
        if tenant
    }


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
    refs = CandidateRefs(runtime.keyring.index_key)
    stale = None
    if command.phase == "preview":
        # Read-only: what the identifiers find, masked, each with the ref an approver may confirm.
        found = candidates_of(participant, session, ctx)
        reply = Reply.done(
            command,
            service=runtime.name,
            references=[],
            candidates=[
                {"ref": refs(command.request_id, c), "kind": c.kind, "match": c.match, "card": c.card, "count": c.count}
                for c in found
            ],
            at=now_rfc3339(),
        )
        _send_reply(runtime, session, command, channel, reply)
        return
    if command.phase == "resolve":
        fresh = {refs(command.request_id, c): c for c in candidates_of(participant, session, ctx)}
        confirmed = list(dict.fromkeys(command.confirmed))
        chosen = [fresh[r] for r in confirmed if r in fresh]
        stale = len(confirmed) - len(chosen)
        references = list(dict.fromkeys(ref for c in chosen for ref in c.references))
    else:
        references = list(ctx.references)
    if command.action == "export":
        reply = Reply.done(
            command,
            service=runtime.name,
            references=references,
            export=participant.export(session, ctx, references),
            stale=stale,
            at=now_rfc3339(),
        )
    else:
        reply = Reply.done(
            command,
            service=runtime.name,
            references=references,
            erasure=[item.as_dict() for item in participant.erase(session, ctx, references)],
            stale=stale,
            at=now_rfc3339(),
        )
    _send_reply(runtime, session, command, channel, reply)


def _send_reply(runtime: Runtime, session: Session, command: Command, channel: Any, reply: Reply) -> None:
    runtime.outbox.send(
        session,
        GDPR,
        Reply.routing_key(runtime.name),
        reply.to_wire(channel),
        message_id=reply.message_id,
        # Exports and previews carry personal data or its masked cards: sealed, gone once confirmed.
        transient=command.action == "export" or command.phase == "preview",
        aggregate=f"gdpr:{command.request_id}",
    )


def announcement(runtime: Runtime) -> dict[str, Any]:
    """This service's announcement, as it goes on the wire."""
    participant = runtime.participant
    with runtime.db.transaction() as session:
        counts = participant.counts(session)
        per_tenant = tenant_counts_of(participant, session)
    return Announcement(
        service=runtime.name,
        inventory=participant.inventory.as_dict(),
        counts=counts,
        tenant_counts=per_tenant,
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
