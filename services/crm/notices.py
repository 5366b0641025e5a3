"""System-change notices (R4): e-mail every appointed recipient of chosen companies over SMTP.

A notice and one delivery row per recipient are written first (with their events);
delivery then claims pending rows, sends each over one SMTP connection to the
configured relay and records who was sent which notice and when.  A failed delivery is
retried with backoff by the worker until NOTICE_MAX_ATTEMPTS; errors are recorded by
class and SMTP code only, because relays quote the recipient's address in their replies.
"""

from __future__ import annotations

import json
import logging
import smtplib
import unicodedata
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from shared import mail
from shared.clock import rfc3339, utcnow
from shared.errors import Invalid, NotFound

from . import events as ev
from .domain import SYSTEM, Actor, Crm, new_id, valid_uuid
from .models import companies, notice_deliveries, notices, persons

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)  # a claimed delivery is someone's for this long


def _one_line(text: str) -> bool:
    """No control characters or line separators: the title becomes the Subject header of every e-mail."""
    return not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text)


def create_notice(crm: Crm, s: Session, actor: Actor, title: str, body: str, company_ids: list[str]) -> str:
    if not _one_line(title) or not title.strip():
        raise Invalid(
            "the notice title is not valid",
            errors=[{"field": "title", "message": "must be one line of text without control characters"}],
        )
    company_ids = list(dict.fromkeys(company_ids))
    known = set(s.scalars(select(companies.c.id).where(companies.c.id.in_([c for c in company_ids if valid_uuid(c)]))))
    unknown = [i for i, c in enumerate(company_ids) if c not in known]
    if unknown:
        raise Invalid(
            "some chosen companies do not exist",
            errors=[{"field": f"company_ids.{i}", "message": "is not a known company"} for i in unknown],
        )
    recipients = s.execute(
        select(persons.c.id, persons.c.company_id)
        .where(
            persons.c.company_id.in_(company_ids), persons.c.notice_recipient.is_(True), persons.c.email.is_not(None)
        )
        .order_by(persons.c.company_id, persons.c.created_at, persons.c.id)
    ).all()
    if not recipients:
        raise Invalid(
            "the chosen companies have no appointed notice recipients",
            errors=[{"field": "company_ids", "message": "no appointed recipients in these companies"}],
        )
    notice_id, now = new_id(), utcnow()
    s.execute(
        notices.insert().values(
            id=notice_id,
            title=title.strip(),
            body=body,
            company_ids=json.dumps(company_ids),
            created_by=actor.id,
            created_at=now,
        )
    )
    s.execute(
        notice_deliveries.insert(),
        [
            {
                "id": new_id(),
                "notice_id": notice_id,
                "company_id": r.company_id,
                "person_id": r.id,
                "status": "pending",
                "attempts": 0,
                "created_at": now,
            }
            for r in recipients
        ],
    )
    crm.emit(
        s,
        ev.NOTICE_CREATED,
        actor,
        data={"notice_id": notice_id, "companies": len(company_ids), "recipients": len(recipients)},
        subject=None,
        resource=("notice", notice_id),
    )
    return notice_id


def notice_view(s: Session, notice_id: str) -> dict[str, Any]:
    row = s.execute(select(notices).where(notices.c.id == notice_id)).first() if valid_uuid(notice_id) else None
    if row is None:
        raise NotFound("no such notice")
    deliveries = s.execute(
        select(notice_deliveries)
        .where(notice_deliveries.c.notice_id == notice_id)
        .order_by(notice_deliveries.c.created_at, notice_deliveries.c.id)
    ).all()
    return {
        "id": row.id,
        "title": row.title,
        "body": row.body,
        "company_ids": json.loads(row.company_ids),
        "created_by": row.created_by,
        "created_at": rfc3339(row.created_at),
        "deliveries": [
            {
                "id": d.id,
                "company_id": d.company_id,
                "person_id": d.person_id,
                "status": d.status,
                "attempts": d.attempts,
                "sent_at": rfc3339(d.sent_at),
                "last_error": d.last_error,
            }
            for d in deliveries
        ],
    }


def list_notices(s: Session, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    rows = s.execute(select(notices).order_by(notices.c.created_at.desc(), notices.c.id).limit(limit).offset(offset))
    return [
        {
            "id": r.id,
            "title": r.title,
            "company_ids": json.loads(r.company_ids),
            "created_by": r.created_by,
            "created_at": rfc3339(r.created_at),
        }
        for r in rows
    ]


# --- delivery -----------------------------------------------------------------------------------


SmtpRelay = mail.SmtpRelay  # moved to shared/mail.py; the gdpr service sends with it too
_reason = mail.reason


def _message(config, notice, address: str, name: str | None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = config["SMTP_FROM"]
    message["To"] = formataddr((name or "", address))
    message["Subject"] = notice.title
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid(domain=config["SMTP_FROM"].rpartition("@")[2] or None)
    message["X-Recept-Notice"] = notice.id
    message.set_content(notice.body)
    return message


def _claim(crm: Crm, notice_id: str | None, limit: int) -> list[dict[str, Any]]:
    """Claim due pending deliveries and read what to send; one transaction, released before any SMTP talk."""
    now = utcnow()
    d = notice_deliveries
    due = (d.c.status == "pending", or_(d.c.claimed_until.is_(None), d.c.claimed_until <= now))
    claimed = []
    with crm.db.transaction() as s:
        query = select(d.c.id).where(*due).order_by(d.c.created_at, d.c.id).limit(limit)
        if notice_id is not None:
            query = query.where(d.c.notice_id == notice_id)
        for delivery_id in s.scalars(query).all():
            # The guarded UPDATE is the claim: an api process and a worker never both send one row.
            if s.execute(update(d).where(d.c.id == delivery_id, *due).values(claimed_until=now + LEASE)).rowcount:
                claimed.append(delivery_id)
        jobs = []
        for delivery in s.execute(select(d).where(d.c.id.in_(claimed))).all() if claimed else []:
            notice = s.execute(select(notices).where(notices.c.id == delivery.notice_id)).one()
            person = (
                s.execute(select(persons).where(persons.c.id == delivery.person_id)).first()
                if delivery.person_id
                else None
            )
            address = crm.open(s, persons, "email", person.id, person.email) if person is not None else None
            if person is None or not person.notice_recipient or not address:
                jobs.append({"delivery": delivery, "notice": notice, "cancel": True})
                continue
            name = crm.open(s, persons, "name", person.id, person.name) or None
            jobs.append({"delivery": delivery, "notice": notice, "cancel": False, "address": address, "name": name})
        return jobs


def deliver_pending(crm: Crm, notice_id: str | None = None, limit: int = 200) -> dict[str, int]:
    """Send due pending deliveries (of one notice, or all); returns counts per outcome."""
    jobs = _claim(crm, notice_id, limit)
    outcome = {"sent": 0, "retry": 0, "failed": 0, "cancelled": 0}
    if not jobs:
        return outcome
    results: dict[str, str | None] = {}
    # A message that cannot even be built (a stored title or name no header can carry) fails for good
    # on its own; it must never abort the batch and leave every other delivery claimed and unsent.
    unsendable: set[str] = set()
    to_send = []
    for job in jobs:
        if job["cancel"]:
            continue
        try:
            job["message"] = _message(crm.config, job["notice"], job["address"], job["name"])
            to_send.append(job)
        except (ValueError, TypeError, UnicodeError) as exc:
            results[job["delivery"].id] = type(exc).__name__
            unsendable.add(job["delivery"].id)
    if to_send:
        try:
            smtp = SmtpRelay(crm.config).open()
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("notice relay unreachable: %s", _reason(exc))
            results.update({j["delivery"].id: _reason(exc) for j in to_send})
        else:
            try:
                for job in to_send:
                    try:
                        smtp.send_message(job["message"], from_addr=crm.config["SMTP_FROM"], to_addrs=[job["address"]])
                        results[job["delivery"].id] = None
                    except (OSError, smtplib.SMTPException) as exc:
                        results[job["delivery"].id] = _reason(exc)
                    except (ValueError, TypeError, UnicodeError) as exc:  # e.g. an address SMTP cannot carry
                        results[job["delivery"].id] = type(exc).__name__
                        unsendable.add(job["delivery"].id)
            finally:
                mail.close(smtp)
    _record(crm, jobs, results, outcome, unsendable)
    return outcome


def _record(
    crm: Crm,
    jobs: list[dict[str, Any]],
    results: dict[str, str | None],
    outcome: dict[str, int],
    unsendable: set[str] = frozenset(),
) -> None:
    d = notice_deliveries
    now = utcnow()
    max_attempts = crm.config["NOTICE_MAX_ATTEMPTS"]
    with crm.db.transaction() as s:
        for job in jobs:
            delivery = job["delivery"]
            if job["cancel"]:
                s.execute(update(d).where(d.c.id == delivery.id).values(status="cancelled", claimed_until=None))
                outcome["cancelled"] += 1
                continue
            error, attempts = results.get(delivery.id), delivery.attempts + 1
            data = {
                "notice_id": delivery.notice_id,
                "delivery_id": delivery.id,
                "person_id": delivery.person_id,
                "company_id": delivery.company_id,
                "attempts": attempts,
            }
            if error is None:
                s.execute(
                    update(d)
                    .where(d.c.id == delivery.id)
                    .values(status="sent", sent_at=now, attempts=attempts, claimed_until=None, last_error=None)
                )
                crm.emit(
                    s,
                    ev.NOTICE_DELIVERY_SENT,
                    SYSTEM,
                    data=data,
                    subject=f"crm:person:{delivery.person_id}",
                    resource=("notice_delivery", delivery.id),
                )
                outcome["sent"] += 1
            elif attempts >= max_attempts or delivery.id in unsendable:
                s.execute(
                    update(d)
                    .where(d.c.id == delivery.id)
                    .values(status="failed", attempts=attempts, claimed_until=None, last_error=error[:200])
                )
                crm.emit(
                    s,
                    ev.NOTICE_DELIVERY_FAILED,
                    SYSTEM,
                    data={**data, "reason": error[:60]},
                    subject=f"crm:person:{delivery.person_id}",
                    resource=("notice_delivery", delivery.id),
                )
                outcome["failed"] += 1
            else:
                # claimed_until doubles as "not before": exponential backoff between attempts.
                backoff = timedelta(seconds=min(3600, crm.config["NOTICE_RETRY_INTERVAL"] * 2**attempts))
                s.execute(
                    update(d)
                    .where(d.c.id == delivery.id)
                    .values(attempts=attempts, claimed_until=now + backoff, last_error=error[:200])
                )
                outcome["retry"] += 1


def delivery_loop(crm: Crm):
    """The worker's background loop: retry due deliveries every NOTICE_RETRY_INTERVAL seconds."""

    def loop(stop) -> None:
        while not stop.is_set():
            try:
                deliver_pending(crm)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a database or relay outage
                log.warning("notice delivery round failed: %s", type(exc).__name__)
            stop.wait(crm.config["NOTICE_RETRY_INTERVAL"])

    return loop
