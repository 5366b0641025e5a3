"""The crm service's side of data-subject requests (R1, R2, R3, R15).

The vendor is controller of all support data, so a request reaches every crm record
that names the subject, whichever customer (``tenant``) the request came through: the
tenant only says where the request was filed (docs/crm.md).

Preview (issue 15): e-mail and phone blind indexes across the person tab, cases, call logs
and the addresses of stored e-mails, and the person tab's name index for a request by name;
each matched person is one candidate with everything linked to it, the other cases and
e-mails one candidate each, the calls from the number one candidate.  A person found only by
name is a *near* candidate (a name is not unique); a number shared by several callers (a
care-home switchboard) makes its calls, and the persons and cases reached only through it, *near*:
"call from a number shared by 3 callers" is erased only if the approver confirms it.  Erase: shred
each record's key, then delete (person-tab entry, e-mail document) or de-identify
(call-log row, case, notice delivery) the row, and report what was done per kind.
"""

from __future__ import annotations

import base64
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.clock import as_utc, rfc3339, utcnow
from shared.errors import Invalid
from shared.normalise import normalise_email, normalise_name, normalise_phone
from shared.privacy import Candidate, Category, Context, DataField, ErasureItem, Inventory

from . import events as ev
from .calls import call_view, calls_by_phone
from .domain import Actor, Crm
from .mail import attachment_list, body_text, parse, summary
from .models import calls, cases, companies, email_addresses, email_attachments, emails, notice_deliveries, persons

GDPR_ACTOR = Actor("gdpr", None, "service")
FINGERPRINT_BASIS = (
    "GDPR art. 17(1) with art. 5(1)(d): a keyed fingerprint of the whole message (no readable "
    "value) keeps an erased e-mail from being imported again from an old mailbox"
)

INVENTORY = Inventory(
    service="crm",
    categories=(
        Category(
            kind="person",
            data_subjects="customers' contact persons (company person tab)",
            fields=(
                DataField("name", "full name", encrypted=True, blind_indexed=True),
                DataField("email", "work e-mail address", encrypted=True, blind_indexed=True),
                DataField("phone", "phone number", encrypted=True, blind_indexed=True),
                DataField("title", "job title", encrypted=True),
                DataField("notice_recipient", "appointed recipient of system-change notices", personal=False),
            ),
            purposes=("customer support", "sending system-change notices to appointed recipients (R4)"),
            legal_basis="GDPR art. 6(1)(b) contract with the customer and 6(1)(f) legitimate interest",
            role="controller",
            controller="vendor",
            retention="while the person is on the customer's person tab; removed on request (R15)",
            storage="crm database, table persons",
            erasure="deleted",
        ),
        Category(
            kind="case",
            data_subjects="callers and e-mail senders to support",
            fields=(
                DataField("caller_name", "caller's name", encrypted=True),
                DataField("phone", "caller's phone number", encrypted=True, blind_indexed=True),
                DataField("email", "caller's e-mail address", encrypted=True, blind_indexed=True),
                DataField("subject", "case subject (free text)", encrypted=True),
                DataField("description", "case description (free text)", encrypted=True),
            ),
            purposes=("customer support",),
            legal_basis="GDPR art. 6(1)(f) legitimate interest",
            role="controller",
            controller="vendor",
            retention="while the customer relationship lasts; personal fields removed on request (R15)",
            storage="crm database, table cases",
            erasure="anonymised",
        ),
        Category(
            kind="call",
            data_subjects="callers to support",
            fields=(
                DataField("number", "calling number from the phone operator's log", encrypted=True, blind_indexed=True),
            ),
            purposes=("customer support", "support traffic statistics"),
            legal_basis="GDPR art. 6(1)(f) legitimate interest",
            role="controller",
            controller="vendor",
            retention="while the customer relationship lasts; number removed on request (R15)",
            storage="crm database, table calls",
            erasure="anonymised",
        ),
        Category(
            kind="email",
            data_subjects="senders and recipients of e-mails to support",
            fields=(
                DataField("raw", "the e-mail as a document, with attachments", encrypted=True),
                DataField("addresses", "sender and recipient addresses", encrypted=True, blind_indexed=True),
                DataField("headers", "From, To, Subject, Message-ID", encrypted=True),
            ),
            purposes=("customer support",),
            legal_basis="GDPR art. 6(1)(f) legitimate interest",
            role="controller",
            controller="vendor",
            retention="while the customer relationship lasts; deleted on request (R15)",
            storage="crm database, tables emails, email_addresses, email_attachments",
            erasure="deleted",
        ),
        Category(
            kind="notice_delivery",
            data_subjects="appointed recipients of system-change notices",
            fields=(DataField("person_id", "which person was sent which notice, and when", personal=True),),
            purposes=("proving that the contract's change notices were sent (R4)",),
            legal_basis="GDPR art. 6(1)(b) contract with the customer",
            role="controller",
            controller="vendor",
            retention="while the contract lasts; the person link is removed on request",
            recipients=("the configured SMTP relay",),
            storage="crm database, table notice_deliveries",
            erasure="anonymised",
        ),
    ),
)

_KINDS = ("person", "case", "call", "email")


def erased_call_values(row) -> dict:
    """What an erased call-log row keeps instead of its exact time, duration and fingerprint (issue 14).

    The fingerprint is a keyed HMAC of the whole row, number included: with the keyring and the other
    columns, the ~10^8 possible numbers are tried in well under a second.  So it becomes random (still
    unique, so the column's constraint holds, and it matches no file), and the exact start and duration,
    which would single the call out in the operator's own records, are coarsened to the hour and to whole
    minutes (rounded up), enough for support statistics.  The price: a re-import of an old file records
    an erased call again, as a new row (docs/crm.md).
    """
    started = as_utc(row.started_at)
    return {
        "fingerprint": secrets.token_hex(32),
        "started_at": started.replace(minute=0, second=0, microsecond=0),
        "duration_s": -(-row.duration_s // 60) * 60,
    }


def _normal(normaliser, value: str | None) -> str | None:
    if not value:
        return None
    try:
        return normaliser(value)
    except Invalid:
        return None


def _initials(name: str) -> str:
    return " ".join("-".join(p[:1].upper() + "." for p in part.split("-") if p) for part in name.split())


def _kind(reference: str) -> tuple[str, str] | None:
    parts = reference.split(":")
    if len(parts) == 3 and parts[0] == "crm" and parts[1] in _KINDS:
        return parts[1], parts[2]
    return None


class CrmParticipant:
    """shared.privacy.Participant for the crm service."""

    inventory = INVENTORY

    def __init__(self, crm: Crm) -> None:
        self.crm = crm

    # --- counts -------------------------------------------------------------------------------

    def counts(self, session: Session) -> dict[str, int]:
        c = self.crm
        return {
            "person": c.count(session, persons),
            "case": c.count(session, cases, cases.c.redacted_at.is_(None)),
            "call": c.count(session, calls, calls.c.redacted_at.is_(None)),
            "email": c.count(session, emails, emails.c.deleted_at.is_(None)),
            "notice_delivery": c.count(session, notice_deliveries, notice_deliveries.c.person_id.is_not(None)),
        }

    # --- preview ------------------------------------------------------------------------------

    def candidates(self, session: Session, ctx: Context) -> list[Candidate]:
        c, s = self.crm, session
        email = _normal(normalise_email, ctx.subject.get("email"))
        phone = _normal(normalise_phone, ctx.subject.get("phone"))
        name = normalise_name(ctx.subject["name"]) if ctx.subject.get("name") else None
        callers = self._callers_of(s, phone) if phone else 0
        by_phone = "near" if callers > 1 else "exact"
        people: dict[str, tuple[object, str]] = {}
        if email:
            people.update({r.id: (r, "exact") for r in c.persons_by_email(s, email)})
        if phone:
            for r in c.persons_by_phone(s, phone):
                people.setdefault(r.id, (r, by_phone))
        if name:
            for r in c.matching(s, persons, "name_idx", "name", name, normalise_name, "name"):
                people.setdefault(r.id, (r, "near"))
        out: list[Candidate] = []
        claimed: set[str] = set()
        for row, match in people.values():
            linked = self._linked(s, row.id)
            refs = (row.subject_ref, *(r.subject_ref for rows in linked.values() for r in rows))
            claimed.update(refs)
            company = s.scalar(select(companies.c.name).where(companies.c.id == row.company_id))
            person_name = c.open(s, persons, "name", row.id, row.name)
            counts = {kind: len(rows) for kind, rows in linked.items()}
            card = {
                "company": company,
                "initials": _initials(person_name if isinstance(person_name, str) else ""),
                **counts,
            }
            label = (
                f"contact person at {company}, initials {card['initials']}, {counts['cases']} case(s), "
                f"{counts['calls']} call(s), {counts['emails']} e-mail(s)"
            )
            out.append(Candidate("person", match, {"label": label, **card}, refs, len(refs), rfc3339(row.updated_at)))
        loose_cases: dict[str, tuple[object, str]] = {}
        if email:
            loose_cases.update({r.id: (r, "exact") for r in c.cases_by_email(s, email)})
        if phone:
            for r in c.cases_by_phone(s, phone):
                # Through a shared number a case is the person's only if its caller has her name.
                match = by_phone
                if match == "near" and name:
                    caller = c.open(s, cases, "caller_name", r.id, r.caller_name)
                    match = "exact" if isinstance(caller, str) and normalise_name(caller) == name else "near"
                loose_cases.setdefault(r.id, (r, match))
        if name:
            # By the caller's name alone: near (a name is not unique) unless reached above.
            for r in c.cases_by_caller_name(s, name):
                loose_cases.setdefault(r.id, (r, "near"))
        for row, match in loose_cases.values():
            if row.redacted_at is None and row.subject_ref not in claimed:
                claimed.add(row.subject_ref)
                opened = as_utc(row.created_at).strftime("%Y-%m")
                card = {
                    "label": f"support case opened {opened} ({row.channel})",
                    "opened": opened,
                    "status": row.status,
                }
                out.append(Candidate("case", match, card, (row.subject_ref,), 1, rfc3339(row.updated_at)))
        if email:
            for row in c.emails_naming(s, email):
                if row.subject_ref not in claimed:
                    claimed.add(row.subject_ref)
                    received = as_utc(row.created_at).strftime("%Y-%m")
                    card = {"label": f"e-mail stored {received}", "stored": received}
                    out.append(Candidate("email", "exact", card, (row.subject_ref,), 1, row.subject_ref))
        if phone:
            loose_calls = [
                r for r in calls_by_phone(c, s, phone) if r.redacted_at is None and r.subject_ref not in claimed
            ]
            if loose_calls:
                if callers > 1:
                    label = f"{len(loose_calls)} call(s) from a number shared by {callers} callers"
                else:
                    label = f"{len(loose_calls)} call(s) from the requester's number"
                refs = tuple(r.subject_ref for r in loose_calls)
                card = {"label": label, "calls": len(loose_calls), "callers": callers}
                out.append(Candidate("call", by_phone, card, refs, len(refs), ",".join(sorted(refs))))
        return out

    def _linked(self, s: Session, person_id: str) -> dict[str, list]:
        return {
            "cases": s.execute(
                select(cases).where(cases.c.person_id == person_id, cases.c.redacted_at.is_(None))
            ).all(),
            "calls": s.execute(
                select(calls).where(calls.c.person_id == person_id, calls.c.redacted_at.is_(None))
            ).all(),
            "emails": s.execute(
                select(emails).where(emails.c.person_id == person_id, emails.c.deleted_at.is_(None))
            ).all(),
        }

    def _callers_of(self, s: Session, phone: str) -> int:
        """How many people are known to call from ``phone``: the persons on the person tab with that
        number and the callers of the other cases from it, told apart by their normalised names (a
        person who also called in as a case's caller counts once; a nameless case not linked to one of
        them counts as a caller of its own)."""
        c = self.crm
        names: set[str] = set()
        known = c.persons_by_phone(s, phone)
        for row in known:
            name = c.open(s, persons, "name", row.id, row.name)
            names.add(normalise_name(name) if isinstance(name, str) and name.strip() else f"person:{row.id}")
        for row in c.cases_by_phone(s, phone):
            if row.person_id in {p.id for p in known}:
                continue  # that person's own case
            caller = c.open(s, cases, "caller_name", row.id, row.caller_name)
            names.add(normalise_name(caller) if isinstance(caller, str) and caller.strip() else f"case:{row.id}")
        return len(names)

    # --- resolve ------------------------------------------------------------------------------

    def resolve(self, session: Session, ctx: Context) -> list[str]:
        c, s = self.crm, session
        email = phone = None
        try:
            email = normalise_email(ctx.subject["email"]) if ctx.subject.get("email") else None
        except Invalid:
            email = None
        try:
            phone = normalise_phone(ctx.subject["phone"]) if ctx.subject.get("phone") else None
        except Invalid:
            phone = None
        found: dict[str, None] = {}
        person_ids = []
        if email:
            person_ids += [r.id for r in c.persons_by_email(s, email)]
        if phone:
            person_ids += [r.id for r in c.persons_by_phone(s, phone)]
        person_ids = list(dict.fromkeys(person_ids))
        found.update({f"crm:person:{p}": None for p in person_ids})
        case_rows, call_rows, email_rows = [], [], []
        if email:
            case_rows += c.cases_by_email(s, email)
            email_rows += c.emails_naming(s, email)
        if phone:
            case_rows += c.cases_by_phone(s, phone)
            call_rows += calls_by_phone(c, s, phone)
        if person_ids:
            case_rows += s.execute(select(cases).where(cases.c.person_id.in_(person_ids))).all()
            call_rows += s.execute(select(calls).where(calls.c.person_id.in_(person_ids))).all()
            email_rows += s.execute(
                select(emails).where(emails.c.person_id.in_(person_ids), emails.c.deleted_at.is_(None))
            ).all()
        for row in (*case_rows, *email_rows):
            if getattr(row, "redacted_at", None) is None:
                found[row.subject_ref] = None
        for row in call_rows:
            if row.redacted_at is None:
                found[row.subject_ref] = None
        return list(found)

    # --- export -------------------------------------------------------------------------------

    def export(self, session: Session, ctx: Context, references: list[str]) -> dict[str, list[dict]]:
        c, s = self.crm, session
        ids: dict[str, list[str]] = {kind: [] for kind in _KINDS}
        for reference in references:
            parsed = _kind(reference)
            if parsed:
                ids[parsed[0]].append(parsed[1])
        out: dict[str, list[dict]] = {"person": [], "case": [], "call": [], "email": [], "notice_delivery": []}
        for row in s.execute(select(persons).where(persons.c.id.in_(ids["person"]))).all():
            company = s.execute(select(companies.c.name).where(companies.c.id == row.company_id)).scalar_one()
            out["person"].append({**c.person_view(s, row), "company_name": company})
        if ids["person"]:
            for d in s.execute(select(notice_deliveries).where(notice_deliveries.c.person_id.in_(ids["person"]))):
                out["notice_delivery"].append(
                    {
                        "notice_id": d.notice_id,
                        "person_id": d.person_id,
                        "status": d.status,
                        "sent_at": rfc3339(d.sent_at),
                    }
                )
        for row in s.execute(select(cases).where(cases.c.id.in_(ids["case"]))).all():
            out["case"].append(c.case_view(s, row))
        for row in s.execute(select(calls).where(calls.c.id.in_(ids["call"]))).all():
            out["call"].append(call_view(c, s, row))
        for row in s.execute(select(emails).where(emails.c.id.in_(ids["email"]), emails.c.deleted_at.is_(None))).all():
            raw = c.open(s, emails, "raw", row.id, row.raw)
            record = summary(c, s, row)
            record["body"] = body_text(parse(raw)) if raw else None
            record["attachments"] = attachment_list(c, s, row.id)
            record["raw_base64"] = base64.b64encode(raw).decode("ascii") if raw else None
            out["email"].append(record)
        return out

    # --- erase --------------------------------------------------------------------------------

    def erase(self, session: Session, ctx: Context, references: list[str]) -> list[ErasureItem]:
        c, s = self.crm, session
        now = utcnow()
        request_id = ctx.request_id
        counts = {"person": 0, "case": 0, "call": 0, "email": 0, "notice_delivery": 0, "fingerprint": 0}
        for reference in dict.fromkeys(references):
            parsed = _kind(reference)
            if parsed is None:
                continue  # another service's reference (phase "trail")
            kind, record_id = parsed
            if kind == "person":
                row = s.execute(select(persons).where(persons.c.id == record_id)).first()
                if row is None:
                    continue
                c.vault.shred(s, row.subject_ref)
                counts["notice_delivery"] += c.unlink_person(s, row.id)
                s.execute(persons.delete().where(persons.c.id == row.id))
                c.emit(
                    s,
                    ev.PERSON_ERASED,
                    GDPR_ACTOR,
                    data={"person_id": row.id, "request_id": request_id},
                    subject=row.subject_ref,
                    resource=("person", row.id),
                    request_id=request_id,
                )
                counts["person"] += 1
            elif kind == "case":
                row = s.execute(select(cases).where(cases.c.id == record_id, cases.c.redacted_at.is_(None))).first()
                if row is None:
                    continue
                c.vault.shred(s, row.subject_ref)
                s.execute(
                    update(cases)
                    .where(cases.c.id == row.id)
                    .values(
                        caller_name=None,
                        caller_phone=None,
                        caller_email=None,
                        topic=None,
                        description=None,
                        caller_phone_idx=None,
                        caller_email_idx=None,
                        caller_name_idx=None,
                        person_id=None,
                        redacted_at=now,
                        updated_at=now,
                    )
                )
                c.emit(
                    s,
                    ev.CASE_REDACTED,
                    GDPR_ACTOR,
                    data={"case_id": row.id, "request_id": request_id},
                    subject=row.subject_ref,
                    resource=("case", row.id),
                    request_id=request_id,
                )
                counts["case"] += 1
            elif kind == "call":
                row = s.execute(select(calls).where(calls.c.id == record_id, calls.c.redacted_at.is_(None))).first()
                if row is None:
                    continue
                c.vault.shred(s, row.subject_ref)
                s.execute(
                    update(calls)
                    .where(calls.c.id == row.id)
                    .values(number=None, number_idx=None, person_id=None, redacted_at=now, **erased_call_values(row))
                )
                c.emit(
                    s,
                    ev.CALL_REDACTED,
                    GDPR_ACTOR,
                    data={"call_id": row.id, "request_id": request_id},
                    subject=row.subject_ref,
                    resource=("call", row.id),
                    request_id=request_id,
                )
                counts["call"] += 1
            else:
                row = s.execute(select(emails).where(emails.c.id == record_id, emails.c.deleted_at.is_(None))).first()
                if row is None:
                    continue
                c.vault.shred(s, row.subject_ref)
                s.execute(email_addresses.delete().where(email_addresses.c.email_id == row.id))
                s.execute(email_attachments.delete().where(email_attachments.c.email_id == row.id))
                s.execute(
                    update(emails)
                    .where(emails.c.id == row.id)
                    .values(
                        raw=None,
                        header_from=None,
                        header_to=None,
                        header_subject=None,
                        message_id=None,
                        person_id=None,
                        sent_at=None,
                        size=0,
                        attachment_count=0,
                        deleted_at=now,
                    )
                )
                c.emit(
                    s,
                    ev.EMAIL_DELETED,
                    GDPR_ACTOR,
                    data={"email_id": row.id, "request_id": request_id},
                    subject=row.subject_ref,
                    resource=("email", row.id),
                    request_id=request_id,
                )
                counts["email"] += 1
                counts["fingerprint"] += 1
        return [
            ErasureItem("person", "deleted", counts["person"]),
            ErasureItem("case", "anonymised", counts["case"]),
            ErasureItem("call", "anonymised", counts["call"]),
            ErasureItem("email", "deleted", counts["email"]),
            ErasureItem("notice_delivery", "anonymised", counts["notice_delivery"]),
            ErasureItem("import_fingerprint", "retained", counts["fingerprint"], legal_basis=FINGERPRINT_BASIS),
        ]
