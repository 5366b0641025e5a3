"""Notices to the person who asked on the public page, and reminders to officers (issue 17, GDPR art. 12).

The gdpr service listens to its own events (bootstrap.py): ``gdpr.request.received``, ``.extended``,
``.completed`` and ``.rejected`` of a request opened on the public page each add one row to
``subject_notices`` (one per event and kind: a redelivered event adds none).  A completed export also
prepares the one-time hand-over (handover.py) and a second notice with its passphrase.  The worker's
notice loop sends due rows with backoff until NOTICE_MAX_ATTEMPTS, so no notice is lost to a relay
outage; every send is a ``gdpr.notice.sent`` event (the request's history in the audit trail) and the
row stays as the record.  The texts are built at send time from the Vault (texts.py); a link or
passphrase lives only in the row's ``secret`` (Vault, ``gdpr:notice:<id>``) and is shredded once sent.

The same loop reminds the officers (REMINDER_TO) of open requests due within REMINDER_BEFORE, once per
request, and shreds a person's contact details once they are no longer needed: after the final notice
of an erasure, or when the request's identifiers are shredded (IDENTIFIER_RETENTION).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

from flask import current_app, jsonify
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared import mail
from shared.clock import as_utc, rfc3339, utcnow
from shared.http import ApiBlueprint, authenticate, runtime

from . import events as ev
from .domain import FINISHED, SYSTEM_ACTOR, request_subject
from .handover import Handovers
from .models import public_requests, requests, subject_notices
from .public import Senders, contact_subject
from .texts import render

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)
_KIND_OF_EVENT = {
    ev.REQUEST_RECEIVED.name: "received",
    ev.REQUEST_EXTENDED.name: "extended",
    ev.REQUEST_COMPLETED.name: "completed",
    ev.REQUEST_REJECTED.name: "rejected",
}
EVENT_PATTERNS = tuple(_KIND_OF_EVENT)
FINAL = ("completed", "rejected")


def notice_subject(notice_id: str) -> str:
    return f"gdpr:notice:{notice_id}"


class Notifier:
    def __init__(self, *, db, vault, outbox, config, senders: Senders, handovers: Handovers, clock=utcnow) -> None:
        self.db = db
        self.vault = vault
        self.outbox = outbox
        self.config = config
        self.senders = senders
        self.handovers = handovers
        self.clock = clock

    # -- events -> notices ----------------------------------------------------------------------

    def on_event(self, s: Session, message: dict[str, Any]) -> None:
        kind = _KIND_OF_EVENT.get(message.get("type", ""))
        data = message.get("data") or {}
        request_id = data.get("request_id")
        if kind is None or not request_id:
            return
        public = s.execute(select(public_requests).where(public_requests.c.request_id == request_id)).first()
        if public is None or public.contact is None:
            return  # opened by an officer, or the contact is already shredded: nobody to tell
        event_id = message["id"]
        if s.scalar(
            select(subject_notices.c.id).where(subject_notices.c.event_id == event_id, subject_notices.c.kind == kind)
        ):
            return
        now = self.clock()
        secret = None
        if kind == "completed" and data.get("type") == "export":
            prepared = self.handovers.prepare(s, request_id, now)
            if prepared is not None:
                token, passphrase, expires = prepared
                base = self.config["PUBLIC_BASE_URL"].rstrip("/")
                secret = {"link": f"{base}/public/download/{token}", "expires": rfc3339(expires)}
                second = (
                    "sms" if public.verified_channel == "sms" or self._contact(s, request_id).get("phone") else "email"
                )
                if second == "sms" and self.senders.sms is None:
                    second = "email"
                self._add(s, request_id, "passphrase", second, event_id, {"passphrase": passphrase}, now)
        self._add(s, request_id, kind, "email", event_id, secret, now)

    def _add(self, s, request_id, kind, channel, event_id, secret, now) -> str:
        notice_id = str(uuid.uuid4())
        s.execute(
            subject_notices.insert().values(
                id=notice_id,
                request_id=request_id,
                kind=kind,
                channel=channel,
                event_id=event_id,
                secret=None
                if secret is None
                else self.vault.encrypt(
                    s, notice_subject(notice_id), "subject_notices", "secret", notice_id, json.dumps(secret)
                ),
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
        return notice_id

    def _contact(self, s: Session, request_id: str) -> dict[str, str]:
        blob = s.scalar(select(public_requests.c.contact).where(public_requests.c.request_id == request_id))
        if blob is None:
            return {}
        text = self.vault.decrypt(s, "public_requests", "contact", request_id, blob)
        return json.loads(text) if isinstance(text, str) else {}

    def _text(self, s: Session, column: str, request_id: str, blob) -> str:
        if blob is None:
            return "-"
        value = self.vault.decrypt(s, "requests", column, request_id, blob)
        return value if isinstance(value, str) else "-"

    # -- reminders ------------------------------------------------------------------------------

    def remind(self, s: Session, now: datetime | None = None) -> int:
        """One reminder per open request due within REMINDER_BEFORE (none when REMINDER_TO is empty)."""
        now = now or self.clock()
        if not self.config.get("REMINDER_TO"):
            return 0
        horizon = now + timedelta(seconds=float(self.config["REMINDER_BEFORE"]))
        due = s.scalars(
            select(requests.c.id).where(requests.c.status.not_in(FINISHED), requests.c.due_at <= horizon)
        ).all()
        added = 0
        for request_id in due:
            marker = str(uuid.uuid5(uuid.NAMESPACE_URL, f"recept:gdpr:reminder:{request_id}"))
            if s.scalar(select(subject_notices.c.id).where(subject_notices.c.event_id == marker)):
                continue
            self._add(s, request_id, "reminder", "email", marker, None, now)
            added += 1
        return added

    # -- delivery -------------------------------------------------------------------------------

    def deliver(self, now: datetime | None = None, limit: int = 100) -> dict[str, int]:
        now = now or self.clock()
        outcome = {"sent": 0, "retry": 0, "failed": 0, "cancelled": 0}
        n = subject_notices
        due = (n.c.status == "pending", n.c.next_attempt_at <= now)
        with self.db.transaction() as s:
            ids = s.scalars(select(n.c.id).where(*due).order_by(n.c.created_at, n.c.id).limit(limit)).all()
            claimed = [
                i
                for i in ids
                if s.execute(update(n).where(n.c.id == i, *due).values(next_attempt_at=now + LEASE)).rowcount
            ]
        for notice_id in claimed:
            with self.db.transaction() as s:
                job = self._job(s, notice_id)
            if job is None:
                with self.db.transaction() as s:
                    s.execute(update(n).where(n.c.id == notice_id).values(status="cancelled", next_attempt_at=None))
                outcome["cancelled"] += 1
                continue
            error = None
            try:
                for to in job["to"]:
                    self.senders.send(
                        job["channel"], to, job["subject"], job["body"], {"X-Recept-Request": job["request_id"]}
                    )
            except Exception as exc:  # noqa: BLE001 - a relay or a plugged-in SMS sender failing: retried
                error = mail.reason(exc)
            with self.db.transaction() as s:
                outcome[self._record(s, job, error, now)] += 1
        return outcome

    def _job(self, s: Session, notice_id: str) -> dict[str, Any] | None:
        notice = s.execute(select(subject_notices).where(subject_notices.c.id == notice_id)).first()
        req = s.execute(select(requests).where(requests.c.id == notice.request_id)).first()
        ref = req.id[:8]
        values: dict[str, Any] = {"ref": ref, "type": req.type, "due": req.due_at.date().isoformat()}
        if notice.kind == "reminder":
            to = list(self.config.get("REMINDER_TO") or ())
            subject, body = render("reminder", "en", status=req.status, **values)
            values = {}
        else:
            public = s.execute(select(public_requests).where(public_requests.c.request_id == req.id)).first()
            contact = self._contact(s, req.id)
            address = contact.get("phone") if notice.channel == "sms" else contact.get("email")
            if not address:
                return None
            to = [address]
            secret: dict[str, Any] = {}
            if notice.secret is not None:
                opened = self.vault.decrypt(s, "subject_notices", "secret", notice.id, notice.secret)
                if not isinstance(opened, str):
                    return None
                secret = json.loads(opened)
            kind = notice.kind
            if kind == "received":
                values["created"] = as_utc(req.created_at).date().isoformat()
            elif kind == "extended":
                values["months"] = req.extension_months
                values["reason"] = self._text(s, "extension_reason", req.id, req.extension_reason)
            elif kind == "rejected":
                values["reason"] = self._text(s, "rejection_reason", req.id, req.rejection_reason)
            elif kind == "completed":
                if req.type == "export":
                    if not secret:
                        return None  # the package expired before it could be handed over
                    kind = "completed_export"
                    values.update(link=secret["link"], expires=secret["expires"][:10])
                else:
                    kind = "completed_erase"
            elif kind == "passphrase":
                values["passphrase"] = secret["passphrase"]
            subject, body = render(kind, public.language, **values)
        return {
            "id": notice.id,
            "request_id": req.id,
            "tenant": req.tenant,
            "kind": notice.kind,
            "channel": notice.channel,
            "attempts": notice.attempts,
            "to": to,
            "subject": subject,
            "body": body,
        }

    def _record(self, s: Session, job: dict[str, Any], error: str | None, now: datetime) -> str:
        n = subject_notices
        attempts = job["attempts"] + 1
        data = {
            "request_id": job["request_id"],
            "notice_id": job["id"],
            "kind": job["kind"],
            "channel": job["channel"],
            "attempts": attempts,
        }
        if error is None:
            s.execute(
                update(n)
                .where(n.c.id == job["id"])
                .values(
                    status="sent", sent_at=now, attempts=attempts, next_attempt_at=None, last_error=None, secret=None
                )
            )
            self.vault.shred(s, notice_subject(job["id"]))  # the link or passphrase went out once
            self._emit(s, ev.NOTICE_SENT, job, data)
            return "sent"
        if attempts >= int(self.config["NOTICE_MAX_ATTEMPTS"]):
            s.execute(
                update(n)
                .where(n.c.id == job["id"])
                .values(status="failed", attempts=attempts, next_attempt_at=None, last_error=error[:100])
            )
            self._emit(s, ev.NOTICE_FAILED, job, {**data, "reason": error[:60]})
            return "failed"
        backoff = min(3600.0, float(self.config["NOTICE_RETRY_INTERVAL"]) * 2**attempts)
        s.execute(
            update(n)
            .where(n.c.id == job["id"])
            .values(attempts=attempts, next_attempt_at=now + timedelta(seconds=backoff), last_error=error[:100])
        )
        return "retry"

    def _emit(self, s: Session, event_type, job: dict[str, Any], data: dict[str, Any]) -> None:
        self.outbox.emit(
            s,
            event_type,
            data=data,
            actor=SYSTEM_ACTOR,
            tenant=job["tenant"],
            subject=request_subject(job["request_id"]),
            resource={"type": "gdpr_request", "id": job["request_id"]},
        )

    # -- after the answer -----------------------------------------------------------------------

    def shred_contacts(self, s: Session, now: datetime | None = None) -> int:
        """Shred contact details no notice needs any more; the keyed hash and the notice rows stay."""
        now = now or self.clock()
        rows = s.execute(
            select(public_requests.c.request_id, requests.c.type, requests.c.status, requests.c.identifiers_shredded_at)
            .join(requests, requests.c.id == public_requests.c.request_id)
            .where(public_requests.c.contact.is_not(None))
        ).all()
        shredded = 0
        for row in rows:
            erased = row.type == "erase" and row.status in FINISHED
            if not (erased or row.identifiers_shredded_at is not None):
                continue
            kinds = set(
                s.scalars(
                    select(subject_notices.c.kind).where(
                        subject_notices.c.request_id == row.request_id, subject_notices.c.status != "pending"
                    )
                )
            )
            pending = s.scalar(
                select(subject_notices.c.id).where(
                    subject_notices.c.request_id == row.request_id, subject_notices.c.status == "pending"
                )
            )
            if pending or (row.identifiers_shredded_at is None and not kinds.intersection(FINAL)):
                continue  # the final answer has not gone out yet
            self.vault.shred(s, contact_subject(row.request_id))
            s.execute(
                update(public_requests)
                .where(public_requests.c.request_id == row.request_id)
                .values(contact=None, contact_shredded_at=now)
            )
            tenant = s.scalar(select(requests.c.tenant).where(requests.c.id == row.request_id))
            self.outbox.emit(
                s,
                ev.CONTACT_SHREDDED,
                data={"request_id": row.request_id},
                actor=SYSTEM_ACTOR,
                tenant=tenant,
                subject=request_subject(row.request_id),
                resource={"type": "gdpr_request", "id": row.request_id},
            )
            shredded += 1
        return shredded

    def history(self, s: Session, request_id: str) -> list[dict[str, Any]]:
        """The notices of one request, for officers (no address, no text)."""
        rows = s.execute(
            select(subject_notices)
            .where(subject_notices.c.request_id == request_id)
            .order_by(subject_notices.c.created_at, subject_notices.c.id)
        ).all()
        return [
            {
                "id": r.id,
                "kind": r.kind,
                "channel": r.channel,
                "status": r.status,
                "attempts": r.attempts,
                "created_at": rfc3339(r.created_at),
                "sent_at": rfc3339(r.sent_at),
                "last_error": r.last_error,
            }
            for r in rows
        ]

    def round(self, public=None, now: datetime | None = None) -> dict[str, int]:
        """One round of the worker's notice loop."""
        now = now or self.clock()
        with self.db.transaction() as s:
            reminded = self.remind(s, now)
        done = self.deliver(now)
        if public is not None:
            done["codes_sent"] = public.send_unsent_codes(now)
        with self.db.transaction() as s:
            done["reminders"] = reminded
            done["contacts_shredded"] = self.shred_contacts(s, now)
            done["handovers_expired"] = self.handovers.expire(s, now)
            if public is not None:
                done["verifications_pruned"] = public.prune(s, now)
        return done

    def loop(self, public=None):
        interval = float(self.config["NOTICE_RETRY_INTERVAL"])

        def run(stop: threading.Event) -> None:
            while not stop.is_set():
                try:
                    self.round(public)
                except Exception as exc:  # noqa: BLE001 - the loop outlives a database or relay outage
                    log.warning("notice round failed (%s); trying again", type(exc).__name__)
                stop.wait(interval)

        return run


# --- HTTP: a request's notices, for officers ------------------------------------------------------
bp = ApiBlueprint("gdpr_notices", __name__)

_NOTICES = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "kind", "channel", "status", "attempts"],
                "properties": {"kind": {"type": "string"}, "status": {"type": "string"}},
            },
        },
        "contact_shredded_at": {"type": ["string", "null"]},
        "origin": {"type": ["string", "null"]},
    },
}


@bp.operation(
    "GET",
    "/api/v1/requests/{request_id}/notices",
    summary="The notices sent to the person and reminders to officers about a request (no address, no text)",
    roles=("compliance_officer", "vendor_admin"),
    tags=("requests",),
    responses={200: _NOTICES},
)
def request_notices(request_id):
    parts = current_app.extensions["gdpr"]
    with runtime().db.transaction() as s:
        parts.coordinator.view(s, authenticate(), request_id)  # 404 unless the caller may see it
        public = s.execute(select(public_requests).where(public_requests.c.request_id == request_id)).first()
        return jsonify(
            {
                "items": current_app.extensions["gdpr_notices"].history(s, request_id),
                "origin": public.origin if public is not None else None,
                "customer_must_confirm": bool(public.customer_must_confirm) if public is not None else False,
                "contact_shredded_at": rfc3339(public.contact_shredded_at) if public is not None else None,
            }
        )
