"""Data-subject requests: deadlines, approval, the fan-out over recept.gdpr, results and export
packages (R1, R2).  No Flask here: the API and the worker both call ``Coordinator``; the inventory
is ``inventory.py``, the background loop ``sweep.py``, the wire messages ``shared.gdpr_protocol``.

A request is previewed first (issue 15): status ``previewing`` while the resolving services
answer a read-only ``preview`` command with masked candidate cards, then ``awaiting_approval``
with the preview stored Vault-encrypted and its hash; the approver confirms candidates by id
against that hash, and the acting phase carries each service's confirmed refs only.

A request's ledger is one ``request_services`` row per expected service (per preview, then per
run: the preview's rows are replaced when it completes).  Row statuses:
``waiting`` (phase two, not sent yet), ``pending`` (sent, no answer yet), ``done``, ``failed``
(the service answered that it failed) and ``silent`` (no answer within the retry budget).
"""

from __future__ import annotations

import calendar
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from shared.bus import GDPR
from shared.clock import as_utc, rfc3339, utcnow
from shared.crypto import ERASED
from shared.errors import Conflict, Gone, Invalid, NotFound
from shared.gdpr_protocol import REQUEST_TYPES, Announcement, Channel, Command, Reply, RequestKey
from shared.identifiers import IdentifierHasher, normalise_subject
from shared.tokens import Principal

from . import controller
from . import events as ev
from . import package as packaging
from . import tenants as tenant_replica
from .models import export_packages, participants, request_services, requests

log = logging.getLogger(__name__)

TYPES = REQUEST_TYPES
STATUSES = (
    "previewing",
    "awaiting_approval",
    "awaiting_confirmation",
    "in_progress",
    "completed",
    "partially_completed",
    "failed",
    "rejected",
)
FINISHED = ("completed", "rejected")  # never overdue, nothing left to do
ROW_STATUSES = ("waiting", "pending", "done", "failed", "silent")
SYSTEM_ACTOR = {"id": "gdpr-worker", "tenant": None, "kind": "system"}
MAX_EXTENSION_MONTHS = 2


# --- deadlines --------------------------------------------------------------------------------


def add_months(value: datetime, months: int) -> datetime:
    """The same day ``months`` calendar months later, or that month's last day (31 Jan + 1 = 28/29 Feb)."""
    years, month_index = divmod(value.month - 1 + months, 12)
    year, month = value.year + years, month_index + 1
    return value.replace(year=year, month=month, day=min(value.day, calendar.monthrange(year, month)[1]))


def due_at(received: datetime, extension_months: int = 0) -> datetime:
    """GDPR art. 12(3): one month after receipt, extendable by up to two further months.

    Counted from the receipt each time, so 31 January + 1 + 2 months is 30 April, not 28 April.
    """
    return add_months(received, 1 + extension_months)


# --- what may happen next -----------------------------------------------------------------------


def next_steps(status: str, type_: str) -> tuple[str, ...]:
    """The operations a request in ``status`` is open to (the API turns them into links)."""
    steps: list[str] = []
    if status == "awaiting_approval":
        steps += ["approve", "reject", "preview"]
    if status == "awaiting_confirmation":
        steps += ["confirm", "reject"]
    if status in ("partially_completed", "failed"):
        steps.append("retry")
    if status not in FINISHED:
        steps.append("extend")
    if type_ == "export" and status == "completed":
        steps.append("export")
    return tuple(steps)


# --- the coordinator --------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """The service-specific settings, read once from the runtime's config."""

    reply_timeout: float
    max_attempts: int
    max_backoff: float
    participant_ttl: float
    export_retention: float
    identifier_retention: float
    export_approval: tuple[str, ...]
    vendor_tenants: tuple[str, ...]

    @classmethod
    def from_config(cls, config) -> Policy:
        return cls(
            reply_timeout=float(config["REPLY_TIMEOUT"]),
            max_attempts=int(config["MAX_ATTEMPTS"]),
            max_backoff=float(config["MAX_BACKOFF"]),
            participant_ttl=float(config["PARTICIPANT_TTL"]),
            export_retention=float(config["EXPORT_RETENTION"]),
            identifier_retention=float(config["IDENTIFIER_RETENTION"]),
            export_approval=tuple(config["EXPORT_APPROVAL"] or ()),
            vendor_tenants=tuple(config["VENDOR_TENANTS"] or ()),
        )

    def backoff(self, attempts: int) -> timedelta:
        """How long to wait for an answer to the ``attempts``-th send (doubling, capped)."""
        return timedelta(seconds=min(self.max_backoff, self.reply_timeout * 2 ** max(0, attempts - 1)))

    def export_needs_approval(self, tenant: str) -> bool:
        return "*" in self.export_approval or tenant in self.export_approval


def preview_hash(services: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON (sorted keys, no blanks, UTF-8) of a preview's services."""
    text = json.dumps(services, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def request_subject(request_id: str) -> str:
    return f"gdpr:request:{request_id}"


def export_subject(request_id: str) -> str:
    return f"gdpr:export:{request_id}"


def transport_subject(request_id: str) -> str:
    """The Vault subject of a request's ephemeral key: shredding it leaves the broker's copies of
    the request's replies unopenable (docs/crypto.md "Sealed gdpr messages")."""
    return f"gdpr:transport:{request_id}"


class Coordinator:
    """Every rule about data-subject requests.

    ``vault`` encrypts identifiers, reasons and export data under ``gdpr:request:<id>`` and
    ``gdpr:export:<id>``; ``outbox`` carries events and commands in the caller's transaction;
    ``hash_identifier`` names the subject in a package's manifest; ``clock`` is "now" wherever
    a caller does not pass one.  Every method works in the session it is given.
    """

    def __init__(
        self,
        *,
        vault,
        outbox,
        policy: Policy,
        hash_identifier: IdentifierHasher,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.vault = vault
        self.outbox = outbox
        self.policy = policy
        self.hash_identifier = hash_identifier
        self.clock = clock

    # -- access ---------------------------------------------------------------------------------

    def scope(self, principal: Principal) -> str | None:
        """None: every tenant (vendor staff); otherwise the one tenant the caller may see."""
        if principal.tenant in self.policy.vendor_tenants:
            return None
        return principal.tenant or ""

    def _visible(self, principal: Principal, tenant: str) -> None:
        scope = self.scope(principal)
        if scope is not None and scope != tenant:
            raise NotFound("no such request")

    # -- opening and deciding -------------------------------------------------------------------

    def open(
        self,
        s: Session,
        principal: Principal | controller.DataSubject,
        *,
        type_: str,
        tenant: str,
        subject: dict[str, Any],
        reason: str | None,
        instruction: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        now = now or self.clock()
        try:
            opener = controller.party(principal, tenant, self.policy.vendor_tenants)
        except NotFound:
            raise NotFound("no such tenant") from None
        identifiers = normalise_subject(subject)
        known = tenant_replica.find(s, tenant)
        if known is None:
            raise NotFound("no such tenant")  # auth has not announced it (issue 18: not a 202)
        request_id = str(uuid.uuid4())
        processor = controller.touches_processor_data(tenant, self.policy.vendor_tenants, self._inventories(s, now))
        opening = controller.on_open(
            opener, request_id=request_id, processor=processor, instruction=instruction, now=now
        )
        agreement = controller.binding_agreement(processor, tenant_replica.agreement_of(known))
        vault, vs = self.vault, request_subject(request_id)
        needs_approval = type_ == "erase" or self.policy.export_needs_approval(tenant)
        s.execute(
            requests.insert().values(
                id=request_id,
                type=type_,
                tenant=tenant,
                status="previewing",
                phase=None,
                identifier_kinds=",".join(identifiers),
                subject=vault.encrypt(s, vs, "requests", "subject", request_id, json.dumps(identifiers)),
                reason=vault.encrypt(s, vs, "requests", "reason", request_id, reason) if reason else None,
                requested_by=principal.user_id,
                created_at=now,
                due_at=due_at(now),
                extension_months=0,
                updated_at=now,
                processor=processor,
                needs_confirmation=opening.needs_confirmation,
                parties=[opener.record("opened", now)],
                agreement_version=agreement["version"] if agreement else None,
                agreement_signed_on=known.agreement_signed_on if agreement else None,
                instruction=None
                if opening.instruction is None
                else vault.encrypt(s, vs, "requests", "instruction", request_id, json.dumps(opening.instruction)),
            )
        )
        self._emit(
            s,
            ev.REQUEST_RECEIVED,
            request_id,
            tenant,
            principal.actor,
            {
                "request_id": request_id,
                "type": type_,
                "identifier_kinds": list(identifiers),
                "due_at": rfc3339(due_at(now)),
                "needs_approval": needs_approval,
            },
        )
        # Nothing is approved blind: every request is previewed first (a request that needs no
        # approval runs on its exact matches once the preview is complete, _finish_preview; on a
        # customer's processor data opened by the vendor it then waits for the customer's confirmation).
        self._start_preview(s, self._lock(s, request_id), principal.actor, now)
        return self._summary(self._lock(s, request_id))

    def needs_approval(self, req) -> bool:
        return req.type == "erase" or self.policy.export_needs_approval(req.tenant)

    def approve(
        self,
        s: Session,
        principal: Principal,
        request_id: str,
        *,
        preview_hash: str,
        confirmed: list[str],
        now: datetime | None = None,
    ) -> dict:
        """Release a previewed request for the candidates ``confirmed`` (ids of the preview whose hash
        is ``preview_hash``); nothing else is acted on, exact matches included."""
        now = now or self.clock()
        req = self._get(s, principal, request_id)
        if req.status != "awaiting_approval":
            raise Conflict(f"the request is {req.status}; only a request awaiting approval can be approved")
        approver = controller.party(principal, req.tenant, self.policy.vendor_tenants)
        status = controller.on_approve(
            approver, requested_by=req.requested_by, needs_confirmation=bool(req.needs_confirmation)
        )
        if req.preview_hash is None:
            raise Conflict("the request has no preview yet; preview it (POST .../preview) and approve what it shows")
        if preview_hash != req.preview_hash:
            raise Conflict("stale preview: the request was previewed again since; approve the current preview")
        known = {c["id"] for c in self._candidates(self._preview(s, req))}
        unknown = [
            {"field": f"confirmed.{i}", "message": "is not a candidate of this preview"}
            for i, cid in enumerate(confirmed)
            if cid not in known
        ]
        if unknown:
            raise Invalid(f"{len(unknown)} confirmed id(s) are not candidates of the preview", errors=unknown)
        self._release(
            s,
            req,
            principal.actor,
            list(dict.fromkeys(confirmed)),
            now,
            decided_by=principal.user_id,
            status=status,
            parties=[*(req.parties or []), approver.record("approved", now)],
        )
        return self.view(s, principal, request_id)

    def confirm(self, s: Session, principal: Principal, request_id: str, now: datetime | None = None) -> dict:
        """The customer's privacy officer confirms the instruction a vendor officer recorded; then the
        request runs on the candidates its approver confirmed."""
        now = now or self.clock()
        req = self._get(s, principal, request_id)
        confirmer = controller.party(principal, req.tenant, self.policy.vendor_tenants)
        controller.on_confirm(confirmer, requested_by=req.requested_by, parties=req.parties or [], status=req.status)
        parties = [*(req.parties or []), confirmer.record("confirmed", now)]
        self._set(s, request_id, status="in_progress", parties=parties, updated_at=now)
        self._emit(
            s,
            ev.REQUEST_CONFIRMED,
            request_id,
            req.tenant,
            principal.actor,
            {"request_id": request_id, "type": req.type},
        )
        self._dispatch(s, self._lock(s, request_id), principal.actor, now)
        return self.view(s, principal, request_id)

    def preview_again(self, s: Session, principal: Principal, request_id: str, now: datetime | None = None) -> dict:
        """Preview a request awaiting approval again (its data changed, or it predates previews);
        the old preview's hash no longer approves anything."""
        now = now or self.clock()
        req = self._get(s, principal, request_id)
        if req.status != "awaiting_approval":
            raise Conflict(f"the request is {req.status}; only a request awaiting approval can be previewed again")
        if req.identifiers_shredded_at is not None:
            raise Gone("the subject's identifiers of this request have been erased; open a new request")
        self._start_preview(s, req, principal.actor, now)
        return self.view(s, principal, request_id)

    def _release(
        self,
        s: Session,
        req,
        actor: dict,
        confirmed: list[str],
        now: datetime,
        decided_by=None,
        status: str | None = None,
        parties: list[dict] | None = None,
    ) -> None:
        """Release the request for ``confirmed``: it runs (``in_progress``), or waits for the customer's
        privacy officer (``awaiting_confirmation``, services/gdpr/controller.py)."""
        if status is None:
            status = "awaiting_confirmation" if req.needs_confirmation else "in_progress"
        extra = {} if parties is None else {"parties": parties}
        self._set(
            s,
            req.id,
            status=status,
            decided_by=decided_by,
            decided_at=now,
            confirmed=confirmed,
            updated_at=now,
            **extra,
        )
        self._emit(
            s,
            ev.REQUEST_APPROVED,
            req.id,
            req.tenant,
            actor,
            {"request_id": req.id, "type": req.type, "automatic": decided_by is None},
        )
        if status == "in_progress":
            self._dispatch(s, self._lock(s, req.id), actor, now)

    def reject(
        self, s: Session, principal: Principal, request_id: str, reason: str | None, now: datetime | None = None
    ) -> dict:
        now = now or self.clock()
        req = self._get(s, principal, request_id)
        if req.status not in ("awaiting_approval", "awaiting_confirmation"):
            raise Conflict(f"the request is {req.status}; only a request awaiting approval can be rejected")
        if not reason or not reason.strip():
            # GDPR art. 12(4): the person is told why (issue 17).
            raise Invalid("a rejection needs a reason", errors=[{"field": "reason", "message": "is required"}])
        encrypted = self.vault.encrypt(
            s, request_subject(request_id), "requests", "rejection_reason", request_id, reason
        )
        rejecter = controller.party(principal, req.tenant, self.policy.vendor_tenants)
        self._set(
            s,
            request_id,
            status="rejected",
            parties=[*(req.parties or []), rejecter.record("rejected", now)],
            decided_by=principal.user_id,
            decided_at=now,
            rejection_reason=encrypted,
            finished_at=now,
            updated_at=now,
        )
        self._shred_transport(s, request_id)
        self._emit(
            s,
            ev.REQUEST_REJECTED,
            request_id,
            req.tenant,
            principal.actor,
            {"request_id": request_id, "type": req.type},
        )
        return self.view(s, principal, request_id)

    def extend(
        self, s: Session, principal: Principal, request_id: str, months: int, reason: str, now: datetime | None = None
    ) -> dict:
        now = now or self.clock()
        req = self._get(s, principal, request_id)
        if req.status in FINISHED:
            raise Conflict(f"the request is {req.status}; its deadline no longer runs")
        total = req.extension_months + months
        if total > MAX_EXTENSION_MONTHS:
            raise Conflict(
                f"the deadline can be extended by at most {MAX_EXTENSION_MONTHS} months in all "
                f"({req.extension_months} already used)"
            )
        created = as_utc(req.created_at)
        if now > due_at(created):
            # Art. 12(3): the subject must be told of an extension within one month of receipt.
            raise Conflict("an extension must be decided within one month of receipt")
        new_due = due_at(created, total)
        self._set(
            s,
            request_id,
            extension_months=total,
            due_at=new_due,
            extended_by=principal.user_id,
            extended_at=now,
            updated_at=now,
            extension_reason=self.vault.encrypt(
                s, request_subject(request_id), "requests", "extension_reason", request_id, reason
            ),
        )
        self._emit(
            s,
            ev.REQUEST_EXTENDED,
            request_id,
            req.tenant,
            principal.actor,
            {"request_id": request_id, "months": months, "due_at": rfc3339(new_due)},
        )
        return self.view(s, principal, request_id)

    def retry(self, s: Session, principal: Principal, request_id: str, now: datetime | None = None) -> dict:
        """Re-send to the services that failed or stayed silent, and only to them."""
        now = now or self.clock()
        req = self._get(s, principal, request_id)
        if req.status not in ("partially_completed", "failed"):
            raise Conflict(f"the request is {req.status}; only a partially completed or failed request can be retried")
        if req.identifiers_shredded_at is not None:
            raise Gone("the subject's identifiers of this request have been erased; open a new request")
        rows = self._rows(s, request_id)
        retried = [r for r in rows if r.status in ("failed", "silent")]
        if not rows:
            # Nobody was known at dispatch time: dispatch again to whoever is known now.
            self._set(s, request_id, status="in_progress", finished_at=None, updated_at=now)
            self._emit(
                s,
                ev.REQUEST_RETRIED,
                request_id,
                req.tenant,
                principal.actor,
                {"request_id": request_id, "type": req.type, "services": []},
            )
            self._dispatch(s, self._lock(s, request_id), principal.actor, now, retry=True)
            return self.view(s, principal, request_id)
        if not retried:
            raise Conflict("no service failed or stayed silent; nothing to retry")
        self._set(s, request_id, status="in_progress", finished_at=None, updated_at=now)
        self._emit(
            s,
            ev.REQUEST_RETRIED,
            request_id,
            req.tenant,
            principal.actor,
            {"request_id": request_id, "type": req.type, "services": [r.service for r in retried]},
        )
        identifiers = self._identifiers(s, request_id)
        references = self._references(rows)
        confirmed = self._confirmed_refs(s, req)
        by_phase: dict[str, list[str]] = {}
        for row in retried:
            # A failed answer consumed its command id at the service (its inbox remembers it), so a
            # retry needs a new one; a silent service gets the same id again so it acts at most once.
            self._send(
                s,
                req,
                row.service,
                row.phase,
                identifiers,
                references,
                now,
                command_id=str(uuid.uuid4()) if row.status == "failed" else row.command_id,
                attempts=1,
                confirmed=confirmed.get(row.service, []),
            )
            by_phase.setdefault(row.phase, []).append(row.service)
        for phase, services in by_phase.items():
            self._emit(
                s,
                ev.REQUEST_DISPATCHED,
                request_id,
                req.tenant,
                principal.actor,
                {"request_id": request_id, "type": req.type, "phase": phase, "services": services, "retry": True},
            )
        return self.view(s, principal, request_id)

    # -- reading --------------------------------------------------------------------------------

    def view(self, s: Session, principal: Principal, request_id: str, now: datetime | None = None) -> dict:
        req = self._get(s, principal, request_id)
        return self._describe(s, req, now or self.clock(), viewer=self.scope(principal))

    def list(
        self,
        s: Session,
        principal: Principal,
        *,
        status: str | None = None,
        type_: str | None = None,
        tenant: str | None = None,
        overdue: bool | None = None,
        limit: int = 100,
        offset: int = 0,
        now: datetime | None = None,
    ) -> dict:
        now = now or self.clock()
        query = select(requests)
        scope = self.scope(principal)
        if scope is not None:
            if tenant is not None and tenant != scope:
                return {"items": [], "limit": limit, "offset": offset}
            query = query.where(requests.c.tenant == scope)
        elif tenant is not None:
            query = query.where(requests.c.tenant == tenant)
        if status is not None:
            query = query.where(requests.c.status == status)
        if type_ is not None:
            query = query.where(requests.c.type == type_)
        open_ = requests.c.status.not_in(FINISHED)
        if overdue is True:
            query = query.where(requests.c.due_at < now, open_)
        elif overdue is False:
            query = query.where(or_(requests.c.due_at >= now, ~open_))
        rows = s.execute(query.order_by(requests.c.created_at.desc(), requests.c.id).limit(limit).offset(offset)).all()
        return {"items": [self._summary(r, now) for r in rows], "limit": limit, "offset": offset}

    def export_package(
        self, s: Session, principal: Principal, request_id: str, now: datetime | None = None
    ) -> tuple[bytes, str]:
        now = now or self.clock()
        req = self._get(s, principal, request_id)
        if req.type != "export":
            raise NotFound("an erasure request has no export package")
        pkg = s.execute(select(export_packages).where(export_packages.c.request_id == request_id)).first()
        if pkg is None:
            raise Conflict(f"the export is {req.status}; the package exists once every service has answered")
        if pkg.package is None or as_utc(pkg.expires_at) <= now:
            raise Gone("the export package has expired and was deleted")
        data = self.vault.decrypt(s, "export_packages", "package", request_id, pkg.package)
        if data is ERASED or data is None:
            raise Gone("the export package has expired and was deleted")
        s.execute(
            update(export_packages)
            .where(export_packages.c.request_id == request_id)
            .values(downloads=export_packages.c.downloads + 1)
        )
        self._emit(
            s,
            ev.EXPORT_DOWNLOADED,
            request_id,
            req.tenant,
            principal.actor,
            {"request_id": request_id, "sha256": pkg.sha256, "size": pkg.size},
        )
        return bytes(data), f"recept-export-{request_id}.zip"

    # -- the bus side ---------------------------------------------------------------------------

    def on_announce(self, s: Session, message: dict[str, Any], now: datetime | None = None) -> None:
        """Remember a participating service, its phase and its inventory (gdpr.announce.<service>)."""
        now = now or self.clock()
        try:
            announced = Announcement.from_wire(message)
        except Invalid:
            log.warning("ignoring a malformed announcement")
            return
        values = {
            "phase": announced.phase,
            "inventory": announced.inventory,
            "counts": announced.counts,
            "tenant_counts": announced.tenant_counts,
            "transport_key": announced.transport_key,
            "last_seen": now,
        }
        service = announced.service
        found = s.execute(
            select(participants.c.service).where(participants.c.service == service).with_for_update()
        ).first()
        if found is None:
            s.execute(participants.insert().values(service=service, first_seen=now, **values))
        else:
            s.execute(update(participants).where(participants.c.service == service).values(**values))

    def on_reply(self, s: Session, message: dict[str, Any], now: datetime | None = None) -> None:
        """Record one service's answer; a duplicate, stale or unexpected answer changes nothing."""
        now = now or self.clock()
        try:
            request_id, service = Reply.addressed(message)
        except Invalid:
            log.warning("ignoring a malformed or unsealed reply")
            return
        req = self._lock(s, request_id)
        channel = self._channel(s, req, service, create=False) if req is not None else None
        if channel is None:
            # Unknown request, or its key was shredded when it finished: nothing can open this reply.
            log.info("ignoring a reply for an unknown or finished request")
            return
        try:
            reply = Reply.from_wire(message, channel)
        except Invalid:
            log.warning("ignoring a reply that does not open")
            return
        if req.type != reply.action:
            log.info("ignoring a reply for an unknown request")
            return
        row = s.execute(
            select(request_services).where(
                request_services.c.request_id == request_id, request_services.c.service == service
            )
        ).first()
        if (
            row is None
            or row.phase != reply.phase
            or row.command_id != reply.command_id
            or row.status not in ("pending", "silent")
        ):
            # Not expected, or already answered: at-least-once delivery means duplicates are normal.
            log.info("ignoring a duplicate or unexpected reply from %s", service)
            return
        references = list(dict.fromkeys(reply.references))
        values: dict[str, Any] = {"replied_at": now, "next_attempt_at": None}
        records = 0
        if reply.status == "done" and reply.phase == "preview":
            candidates = reply.candidates or []
            values.update(status="done", error=None, refs=[], result={"candidates": len(candidates)})
            values["preview"] = self.vault.encrypt(
                s,
                request_subject(request_id),
                "request_services",
                "preview",
                f"{request_id}:{service}",
                json.dumps(candidates, ensure_ascii=False),
            )
        elif reply.status == "done":
            values.update(status="done", error=None, refs=references)
            if req.type == "export":
                export = reply.export or {}
                counts = {kind: len(items) for kind, items in export.items()}
                records = sum(counts.values())
                values["result"] = {"records": counts, "stale": reply.stale or 0}
                values["export"] = self.vault.encrypt(
                    s,
                    export_subject(request_id),
                    "request_services",
                    "export",
                    f"{request_id}:{service}",
                    json.dumps(export, ensure_ascii=False, default=str),
                )
            else:
                items = [
                    {
                        k: item[k]
                        for k in ("kind", "action", "count", "legal_basis", "retain_until")
                        if item.get(k) is not None
                    }
                    for item in (reply.erasure or [])
                ]
                records = sum(item["count"] for item in items)
                values["result"] = {"erasure": items, "stale": reply.stale or 0}
        else:
            # Participants promise errors without personal data; the length cap is belt and braces.
            values.update(status="failed", error=str(reply.error or "failed")[:200])
        s.execute(
            update(request_services)
            .where(request_services.c.request_id == request_id, request_services.c.service == service)
            .values(**values)
        )
        self._emit(
            s,
            ev.SERVICE_REPLIED,
            request_id,
            req.tenant,
            SYSTEM_ACTOR,
            {
                "request_id": request_id,
                "type": req.type,
                "service": service,
                "phase": row.phase,
                "status": reply.status,
                "references": len(references),
                "records": records,
            },
        )
        self._advance(s, self._lock(s, request_id), now)

    # -- the background loop's steps (sweep.py runs them, each in its own transaction) -----------

    def due_for_resend(self, s: Session, now: datetime, limit: int = 200) -> list[str]:
        """Requests with a command whose answer is overdue."""
        return list(
            s.scalars(
                select(request_services.c.request_id)
                .where(request_services.c.status == "pending", request_services.c.next_attempt_at <= now)
                .distinct()
                .limit(limit)
            )
        )

    def time_out(self, s: Session, request_id: str, now: datetime) -> tuple[int, int]:
        """Re-send a request's overdue commands, or give up on a service past its retry budget.

        Returns (re-sent, now silent)."""
        req = self._lock(s, request_id)
        if req is None:
            return 0, 0
        resent = silent = 0
        rows = [r for r in self._rows(s, request_id) if r.status == "pending" and as_utc(r.next_attempt_at) <= now]
        if not rows:
            return 0, 0
        identifiers = self._identifiers(s, request_id) if any(r.phase != "trail" for r in rows) else {}
        references = self._references(self._rows(s, request_id))
        confirmed = self._confirmed_refs(s, req) if any(r.phase == "resolve" for r in rows) else {}
        for row in rows:
            if row.attempts < self.policy.max_attempts:
                self._send(
                    s,
                    req,
                    row.service,
                    row.phase,
                    identifiers,
                    references,
                    now,
                    command_id=row.command_id,
                    attempts=row.attempts + 1,
                    confirmed=confirmed.get(row.service, []),
                )
                resent += 1
            else:
                s.execute(
                    update(request_services)
                    .where(request_services.c.request_id == request_id, request_services.c.service == row.service)
                    .values(status="silent", next_attempt_at=None)
                )
                silent += 1
        if silent:
            self._advance(s, self._lock(s, request_id), now)
        return resent, silent

    def expired_exports(self, s: Session, now: datetime) -> set[str]:
        """Requests whose package, or whose parts of an export that never completed, are past retention."""
        cutoff = now - timedelta(seconds=self.policy.export_retention)
        expired = set(
            s.scalars(
                select(export_packages.c.request_id).where(
                    export_packages.c.package.is_not(None), export_packages.c.expires_at <= now
                )
            )
        )
        # Parts of an export that never completed expire on the same clock as a package would.
        expired |= set(
            s.scalars(
                select(request_services.c.request_id)
                .join(requests, requests.c.id == request_services.c.request_id)
                .where(
                    request_services.c.export.is_not(None),
                    requests.c.status.in_(("partially_completed", "failed")),
                    requests.c.updated_at <= cutoff,
                )
            )
        )
        return expired

    def expire_export(self, s: Session, request_id: str, now: datetime) -> None:
        """Delete a request's package and parts and crypto-shred what is left of them."""
        req = self._lock(s, request_id)
        self.vault.shred(s, export_subject(request_id))
        self._shred_transport(s, request_id)
        s.execute(
            update(export_packages)
            .where(export_packages.c.request_id == request_id)
            .values(package=None, deleted_at=now)
        )
        s.execute(update(request_services).where(request_services.c.request_id == request_id).values(export=None))
        self._emit(
            s, ev.EXPORT_DELETED, request_id, req.tenant, SYSTEM_ACTOR, {"request_id": request_id, "reason": "expired"}
        )

    def shred_identifiers(self, s: Session, now: datetime, limit: int = 500) -> int:
        """Crypto-shred the identifiers and reasons of requests finished longer than their retention."""
        cutoff = now - timedelta(seconds=self.policy.identifier_retention)
        ids = list(
            s.scalars(
                select(requests.c.id)
                .where(
                    requests.c.status.in_(FINISHED),
                    requests.c.finished_at <= cutoff,
                    requests.c.identifiers_shredded_at.is_(None),
                )
                .limit(limit)
            )
        )
        for request_id in ids:
            req = self._lock(s, request_id)
            self.vault.shred(s, request_subject(request_id))
            self._shred_transport(s, request_id)
            self._set(s, request_id, identifiers_shredded_at=now)
            self._emit(s, ev.IDENTIFIERS_SHREDDED, request_id, req.tenant, SYSTEM_ACTOR, {"request_id": request_id})
        return len(ids)

    # -- internals: the preview -----------------------------------------------------------------

    def _start_preview(self, s: Session, req, actor: dict, now: datetime) -> None:
        """Send the read-only preview command to every resolving service known now."""
        s.execute(request_services.delete().where(request_services.c.request_id == req.id))
        self._set(
            s,
            req.id,
            status="previewing",
            phase="preview",
            preview=None,
            preview_hash=None,
            previewed_at=None,
            confirmed=None,
            updated_at=now,
        )
        services = [p.service for p in self._known_participants(s, now) if p.phase != "trail"]
        for service in services:
            s.execute(
                request_services.insert().values(
                    request_id=req.id, service=service, phase="preview", status="waiting", attempts=0, sends=0
                )
            )
        if services:
            identifiers = self._identifiers(s, req.id)
            for service in services:
                self._send(s, req, service, "preview", identifiers, [], now, command_id=str(uuid.uuid4()), attempts=1)
            self._emit(
                s,
                ev.REQUEST_DISPATCHED,
                req.id,
                req.tenant,
                actor,
                {"request_id": req.id, "type": req.type, "phase": "preview", "services": services, "retry": False},
            )
        self._advance(s, self._lock(s, req.id), now)

    def _finish_preview(self, s: Session, req, now: datetime) -> None:
        """Every service answered the preview (or stayed silent): store it, hash it, and wait for the
        approver; a request that needs no approval runs at once on its exact matches only."""
        services: dict[str, dict[str, Any]] = {}
        for row in self._rows(s, req.id):
            found: list[dict[str, Any]] = []
            if row.status == "done" and row.preview is not None:
                text = self.vault.decrypt(s, "request_services", "preview", f"{req.id}:{row.service}", row.preview)
                found = json.loads(text) if isinstance(text, str) else []
            candidates = [
                {
                    # Opaque and stable within the preview; the ref behind it stays encrypted here.
                    "id": hashlib.sha256(f"{row.service}:{c['ref']}".encode()).hexdigest()[:24],
                    "kind": c["kind"],
                    "match": c["match"],
                    "card": c["card"],
                    "count": c["count"],
                    "ref": c["ref"],
                }
                for c in found
            ]
            services[row.service] = {"status": row.status, "candidates": candidates}
        preview = {"at": rfc3339(now), "services": services}
        public = self._public_preview(preview)
        digest = preview_hash(public["services"])
        s.execute(request_services.delete().where(request_services.c.request_id == req.id))
        self._set(
            s,
            req.id,
            status="awaiting_approval",
            phase=None,
            preview=self.vault.encrypt(
                s, request_subject(req.id), "requests", "preview", req.id, json.dumps(preview, ensure_ascii=False)
            ),
            preview_hash=digest,
            previewed_at=now,
            updated_at=now,
        )
        every = self._candidates(preview)
        self._emit(
            s,
            ev.REQUEST_PREVIEWED,
            req.id,
            req.tenant,
            SYSTEM_ACTOR,
            {
                "request_id": req.id,
                "type": req.type,
                "services": list(services),
                "candidates": len(every),
                "near": sum(1 for c in every if c["match"] == "near"),
            },
        )
        if not self.needs_approval(req):
            exact = [c["id"] for c in every if c["match"] == "exact"]
            self._release(s, self._lock(s, req.id), SYSTEM_ACTOR, exact, now)

    def _preview(self, s: Session, req) -> dict[str, Any] | None:
        """The stored preview, refs included (None before one is complete)."""
        if req.preview is None:
            return None
        text = self.vault.decrypt(s, "requests", "preview", req.id, req.preview)
        if not isinstance(text, str):
            return None
        return json.loads(text)

    @staticmethod
    def _candidates(preview: dict[str, Any] | None) -> list[dict[str, Any]]:
        if not preview:
            return []
        return [c for entry in preview["services"].values() for c in entry["candidates"]]

    @staticmethod
    def _public_preview(preview: dict[str, Any]) -> dict[str, Any]:
        """The preview as the document shows it: the participants' refs left out."""
        return {
            "at": preview["at"],
            "services": {
                service: {
                    "status": entry["status"],
                    "candidates": [{k: v for k, v in c.items() if k != "ref"} for c in entry["candidates"]],
                }
                for service, entry in preview["services"].items()
            },
        }

    def _confirmed_refs(self, s: Session, req) -> dict[str, list[str]]:
        """Per service, the refs of the candidates the approver confirmed."""
        req = self._lock(s, req.id)
        chosen = set(req.confirmed or [])
        preview = self._preview(s, req)
        out: dict[str, list[str]] = {}
        for service, entry in (preview or {}).get("services", {}).items():
            out[service] = [c["ref"] for c in entry["candidates"] if c["id"] in chosen]
        return out

    # -- internals: fan-out ---------------------------------------------------------------------

    def _inventories(self, s: Session, now: datetime) -> list[dict]:
        """The inventories of the services a request dispatched now would reach."""
        since = now - timedelta(seconds=self.policy.participant_ttl)
        return list(s.scalars(select(participants.c.inventory).where(participants.c.last_seen >= since)))

    def _known_participants(self, s: Session, now: datetime) -> list:
        since = now - timedelta(seconds=self.policy.participant_ttl)
        return s.execute(
            select(participants.c.service, participants.c.phase)
            .where(participants.c.last_seen >= since)
            .order_by(participants.c.service)
        ).all()

    def _dispatch(self, s: Session, req, actor: dict, now: datetime, retry: bool = False) -> None:
        """Record whom the request waits for (the services known now) and send phase one."""
        known = self._known_participants(s, now)
        self._set(s, req.id, dispatched_at=now, updated_at=now)
        for p in known:
            s.execute(
                request_services.insert().values(
                    request_id=req.id,
                    service=p.service,
                    phase="trail" if p.phase == "trail" else "resolve",
                    status="waiting",
                    attempts=0,
                    sends=0,
                )
            )
        resolve = [p.service for p in known if p.phase != "trail"]
        if resolve:
            identifiers = self._identifiers(s, req.id)
            confirmed = self._confirmed_refs(s, req)
            for service in resolve:
                # A service that joined after the preview has nothing confirmed: it acts on nothing.
                self._send(
                    s,
                    req,
                    service,
                    "resolve",
                    identifiers,
                    [],
                    now,
                    command_id=str(uuid.uuid4()),
                    attempts=1,
                    confirmed=confirmed.get(service, []),
                )
            self._set(s, req.id, phase="resolve")
            self._emit(
                s,
                ev.REQUEST_DISPATCHED,
                req.id,
                req.tenant,
                actor,
                {"request_id": req.id, "type": req.type, "phase": "resolve", "services": resolve, "retry": retry},
            )
        self._advance(s, self._lock(s, req.id), now)

    def _send(
        self,
        s: Session,
        req,
        service: str,
        phase: str,
        identifiers: dict[str, str],
        references: list[str],
        now: datetime,
        *,
        command_id: str,
        attempts: int,
        confirmed: list[str] | None = None,
    ) -> None:
        command = Command.for_phase(
            request_id=req.id,
            command_id=command_id,
            action=req.type,
            phase=phase,
            tenant=req.tenant,
            identifiers=identifiers,
            references=references,
            confirmed=confirmed,
            at=rfc3339(now),
        )
        channel = self._channel(s, req, service, create=True)
        if channel is None:
            # An older participant that announced no transport key: it cannot be sent personal data.
            s.execute(
                update(request_services)
                .where(request_services.c.request_id == req.id, request_services.c.service == service)
                .values(
                    status="failed",
                    command_id=command_id,
                    attempts=attempts,
                    sent_at=now,
                    replied_at=now,
                    next_attempt_at=None,
                    error="the service announced no transport key; commands are sealed",
                )
            )
            return
        if not self.outbox.is_pending(s, command.message_id):
            # Sealed for the one service (its subject never crosses the broker in clear) and transient:
            # the row is deleted once the broker confirms it. The same message id on a re-send lets the
            # service's inbox drop the copy it already handled.
            self.outbox.send(
                s,
                GDPR,
                Command.routing_key(service),
                command.to_wire(channel),
                message_id=command.message_id,
                transient=True,
            )
        s.execute(
            update(request_services)
            .where(request_services.c.request_id == req.id, request_services.c.service == service)
            .values(
                status="pending",
                command_id=command_id,
                attempts=attempts,
                sends=request_services.c.sends + 1,
                sent_at=now,
                next_attempt_at=now + self.policy.backoff(attempts),
                error=None,
            )
        )

    def _advance(self, s: Session, req, now: datetime) -> None:
        """Move the request on after its ledger changed: the preview's end, phase two, completion, or a
        visible stall."""
        if req.status == "previewing":
            if not any(r.status in ("pending", "waiting") for r in self._rows(s, req.id)):
                self._finish_preview(s, req, now)
            return
        if req.status not in ("in_progress", "partially_completed", "failed"):
            return
        rows = self._rows(s, req.id)
        resolve = [r for r in rows if r.phase == "resolve"]
        waiting_trail = [r for r in rows if r.phase == "trail" and r.status == "waiting"]
        if waiting_trail and all(r.status == "done" for r in resolve):
            references = self._references(rows)
            for row in waiting_trail:
                self._send(s, req, row.service, "trail", {}, references, now, command_id=str(uuid.uuid4()), attempts=1)
            self._set(s, req.id, phase="trail")
            self._emit(
                s,
                ev.REQUEST_DISPATCHED,
                req.id,
                req.tenant,
                SYSTEM_ACTOR,
                {
                    "request_id": req.id,
                    "type": req.type,
                    "phase": "trail",
                    "services": [r.service for r in waiting_trail],
                    "retry": False,
                },
            )
            rows = self._rows(s, req.id)
        if any(r.status == "pending" for r in rows):
            if req.status != "in_progress":
                self._set(s, req.id, status="in_progress", finished_at=None, updated_at=now)
            return
        confirmed = [r.service for r in rows if r.status == "done"]
        if rows and len(confirmed) == len(rows):
            if req.type == "export":
                self._build_package(s, req, rows, now)
            self._set(s, req.id, status="completed", phase=None, finished_at=now, updated_at=now)
            self._shred_transport(s, req.id)
            self._emit(
                s,
                ev.REQUEST_COMPLETED,
                req.id,
                req.tenant,
                SYSTEM_ACTOR,
                {"request_id": req.id, "type": req.type, "services": confirmed},
            )
            return
        status = "partially_completed" if confirmed else "failed"
        if req.status != status or req.finished_at is None:
            self._set(s, req.id, status=status, finished_at=now, updated_at=now)
            self._emit(
                s,
                ev.REQUEST_STALLED,
                req.id,
                req.tenant,
                SYSTEM_ACTOR,
                {
                    "request_id": req.id,
                    "type": req.type,
                    "status": status,
                    "confirmed": confirmed,
                    "missing": [r.service for r in rows if r.status != "done"],
                },
            )

    def _build_package(self, s: Session, req, rows, now: datetime) -> None:
        vault = self.vault
        parts: dict[str, dict[str, list]] = {}
        for row in rows:
            if row.export is None:
                continue
            text = vault.decrypt(s, "request_services", "export", f"{req.id}:{row.service}", row.export)
            parts[row.service] = json.loads(text) if isinstance(text, str) else {}
        identifiers = self._identifiers(s, req.id)
        hashes_ = [
            {"kind": kind, "hmac_sha256": self.hash_identifier(kind, value)} for kind, value in identifiers.items()
        ]
        inventories = {
            r.service: r.inventory
            for r in s.execute(
                select(participants.c.service, participants.c.inventory).where(
                    participants.c.service.in_([row.service for row in rows])
                )
            )
        }
        data, _manifest = packaging.build(
            request_id=req.id,
            tenant=req.tenant,
            generated_at=rfc3339(now),
            subject_hashes=hashes_,
            parts=parts,
            services=[{"service": r.service, "phase": r.phase} for r in rows],
            inventories=inventories,
        )
        s.execute(
            export_packages.insert().values(
                request_id=req.id,
                package=vault.encrypt(s, export_subject(req.id), "export_packages", "package", req.id, data),
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                created_at=now,
                expires_at=now + timedelta(seconds=self.policy.export_retention),
                downloads=0,
            )
        )
        # The parts now live only inside the package.
        s.execute(update(request_services).where(request_services.c.request_id == req.id).values(export=None))

    # -- internals: sealing ---------------------------------------------------------------------

    def _request_key(self, s: Session, request_id: str, create: bool) -> RequestKey | None:
        """The request's ephemeral key; made (and stored Vault-encrypted) on first use when ``create``."""
        blob = s.scalar(select(requests.c.transport_key).where(requests.c.id == request_id))
        if blob is not None:
            raw = self.vault.decrypt(s, "requests", "transport_key", request_id, blob)
            if isinstance(raw, bytes):
                return RequestKey.from_bytes(raw)
        if not create:
            return None
        key = RequestKey.generate()
        self._set(
            s,
            request_id,
            transport_key=self.vault.encrypt(
                s, transport_subject(request_id), "requests", "transport_key", request_id, key.to_bytes()
            ),
        )
        return key

    def _channel(self, s: Session, req, service: str, *, create: bool) -> Channel | None:
        public = s.scalar(select(participants.c.transport_key).where(participants.c.service == service))
        if not public:
            return None
        key = self._request_key(s, req.id, create)
        if key is None:
            return None
        try:
            return Channel.for_coordinator(key, public, request_id=req.id, service=service)
        except Invalid:
            log.warning("service %s announced an unusable transport key", service)
            return None

    def _shred_transport(self, s: Session, request_id: str) -> None:
        """Destroy the request's ephemeral key: the broker's copies of its replies stay shut for good."""
        self.vault.shred(s, transport_subject(request_id))
        self._set(s, request_id, transport_key=None)

    # -- internals: rows and views --------------------------------------------------------------

    def _lock(self, s: Session, request_id: str):
        """The request row, locked for this transaction (PostgreSQL; SQLite serialises writers anyway)."""
        return s.execute(select(requests).where(requests.c.id == request_id).with_for_update()).first()

    def _get(self, s: Session, principal: Principal, request_id: str):
        try:
            uuid.UUID(request_id)
        except ValueError:
            raise NotFound("no such request") from None
        req = self._lock(s, request_id)
        if req is None:
            raise NotFound("no such request")
        self._visible(principal, req.tenant)
        return req

    def _rows(self, s: Session, request_id: str) -> list:
        return s.execute(
            select(request_services)
            .where(request_services.c.request_id == request_id)
            .order_by(request_services.c.phase, request_services.c.service)
        ).all()

    @staticmethod
    def _references(rows: Iterable) -> list[str]:
        refs: list[str] = []
        for row in rows:
            if row.phase == "resolve" and row.status == "done":
                refs.extend(row.refs or [])
        return list(dict.fromkeys(refs))

    def _identifiers(self, s: Session, request_id: str) -> dict[str, str]:
        blob = s.scalar(select(requests.c.subject).where(requests.c.id == request_id))
        text = self.vault.decrypt(s, "requests", "subject", request_id, blob)
        if not isinstance(text, str):
            raise Gone("the subject's identifiers of this request have been erased")
        return json.loads(text)

    def _set(self, s: Session, request_id: str, **values) -> None:
        s.execute(update(requests).where(requests.c.id == request_id).values(**values))

    def _emit(self, s: Session, event_type, request_id: str, tenant: str, actor: dict, data: dict) -> None:
        self.outbox.emit(
            s,
            event_type,
            data=data,
            actor=actor,
            tenant=tenant,
            subject=request_subject(request_id),
            resource={"type": "gdpr_request", "id": request_id},
        )

    def _decrypt_text(self, s: Session, column: str, request_id: str, blob) -> str | None:
        if blob is None:
            return None
        value = self.vault.decrypt(s, "requests", column, request_id, blob)
        return "[erased]" if value is ERASED else value

    def _summary(self, req, now: datetime | None = None) -> dict[str, Any]:
        now = now or self.clock()
        return {
            "id": req.id,
            "type": req.type,
            "status": req.status,
            "tenant": req.tenant,
            "created_at": rfc3339(req.created_at),
            "due_at": rfc3339(req.due_at),
            "overdue": req.status not in FINISHED and as_utc(req.due_at) < now,
        }

    def _describe(self, s: Session, req, now: datetime, viewer: str | None = None) -> dict[str, Any]:
        """``viewer``: the tenant the reader sees (None: a vendor officer); other tenants' user ids stay out."""
        out = self._summary(req, now)
        parties = req.parties or []
        instruction = self._decrypt_text(s, "instruction", req.id, req.instruction)
        out.update(
            {
                "identifier_kinds": [k for k in req.identifier_kinds.split(",") if k],
                "identifiers_erased": req.identifiers_shredded_at is not None,
                "reason": self._decrypt_text(s, "reason", req.id, req.reason),
                "requested_by": controller.visible_user(parties, req.requested_by, viewer),
                "decided_by": controller.visible_user(parties, req.decided_by, viewer),
                "processor_data": bool(req.processor),
                "instruction": None
                if instruction is None
                else (json.loads(instruction) if instruction != "[erased]" else {"erased": True}),
                "opened_by": controller.opened_by(parties),
                "approvals": controller.approvals(parties),
                "agreement": None
                if req.agreement_version is None
                else {
                    "version": req.agreement_version,
                    "signed_on": req.agreement_signed_on.isoformat() if req.agreement_signed_on else None,
                },
                "decided_at": rfc3339(req.decided_at),
                "rejection_reason": self._decrypt_text(s, "rejection_reason", req.id, req.rejection_reason),
                "extension": None
                if not req.extension_months
                else {
                    "months": req.extension_months,
                    "original_due_at": rfc3339(due_at(as_utc(req.created_at))),
                    "reason": self._decrypt_text(s, "extension_reason", req.id, req.extension_reason),
                    "extended_by": req.extended_by,
                    "extended_at": rfc3339(req.extended_at),
                },
                "phase": req.phase,
                "dispatched_at": rfc3339(req.dispatched_at),
                "finished_at": rfc3339(req.finished_at),
                "services": [self._describe_row(row) for row in self._rows(s, req.id)],
                "preview": None if req.preview is None else self._described_preview(s, req),
                "confirmed": list(req.confirmed or []),
                # Issue 15: the hash of the preview approved (kept after the preview is shredded), and the
                # audit checkpoint a finished erasure's certificate is anchored to (services/gdpr/certificate.py).
                "preview_hash": req.preview_hash,
                "anchor": req.anchor,
            }
        )
        if req.type == "export":
            pkg = s.execute(
                select(
                    export_packages.c.sha256,
                    export_packages.c.size,
                    export_packages.c.created_at,
                    export_packages.c.expires_at,
                    export_packages.c.deleted_at,
                    export_packages.c.downloads,
                ).where(export_packages.c.request_id == req.id)
            ).first()
            out["export"] = (
                None
                if pkg is None
                else {
                    "available": pkg.deleted_at is None and as_utc(pkg.expires_at) > now,
                    "sha256": pkg.sha256,
                    "size": pkg.size,
                    "created_at": rfc3339(pkg.created_at),
                    "expires_at": rfc3339(pkg.expires_at),
                    "deleted_at": rfc3339(pkg.deleted_at),
                    "downloads": pkg.downloads,
                }
            )
        return out

    def _described_preview(self, s: Session, req) -> dict[str, Any] | None:
        preview = self._preview(s, req)
        if preview is None:
            return None  # its identifiers (and so the preview) were crypto-shredded
        return {"hash": req.preview_hash, **self._public_preview(preview)}

    @staticmethod
    def _describe_row(row) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "service": row.service,
            "phase": row.phase,
            "status": row.status,
            "attempts": row.sends,
            "sent_at": rfc3339(row.sent_at),
            "replied_at": rfc3339(row.replied_at),
            "error": row.error,
            "references": len(row.refs or []),
        }
        result = row.result or {}
        if "records" in result:
            entry["records"] = result["records"]
        if "erasure" in result:
            entry["erasure"] = result["erasure"]
        if "candidates" in result:
            entry["candidates"] = result["candidates"]
        if result.get("stale"):
            # Confirmed candidates whose rows changed since the preview: left alone, preview again.
            entry["stale"] = result["stale"]
        return entry
