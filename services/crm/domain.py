"""The crm service's rules: companies, person tabs, cases, and lookups through blind indexes.

No Flask here: the HTTP api, the command line and the worker all call these functions
with an open database session.  Every personal field is sealed with the Vault under the
record's own subject and found again through a blind index whose candidates are
decrypted and compared (false positives filtered, no false negatives).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session

from shared.clock import as_utc, rfc3339, utcnow
from shared.crypto import ERASED, BlindIndex, index_bits
from shared.errors import Invalid, NotFound
from shared.normalise import normalise_email, normalise_name, normalise_phone

from . import events as ev
from .models import calls, cases, companies, email_addresses, emails, notice_deliveries, persons

CASE_STATUSES = ("open", "in_progress", "waiting", "closed")
CHANNELS = ("phone", "email", "other")


def new_id() -> str:
    return str(uuid.uuid4())


def valid_uuid(value: str) -> bool:
    try:
        uuid.UUID(str(value))
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class Actor:
    """Who acts, as events name them: an id, never a name."""

    id: str
    tenant: str | None
    kind: str = "user"

    @property
    def envelope(self) -> dict[str, Any]:
        return {"id": self.id, "tenant": self.tenant, "kind": self.kind}

    @classmethod
    def of(cls, principal) -> Actor:
        return cls(principal.user_id, principal.tenant, "user")


#: The command line and the worker act as the system.
SYSTEM = Actor("crm", None, "system")


class Crm:
    """The service's dependencies (vault, blind index, outbox) and its rules."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.db = runtime.db
        self.config = runtime.config
        self.vault = runtime.vault
        self.outbox = runtime.outbox
        # sized from the planned number of people, so a value matches ~10 rows (docs/crypto.md)
        self.index = BlindIndex(runtime.keyring, bits=index_bits(runtime.config["PLANNED_SUBJECTS"]))
        # Row fingerprints (import de-duplication) use their own key derived from the index key,
        # full length, so two different rows never collide the way 16-bit index values do.
        self._fingerprint_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"recept.crm.fingerprint.v1"
        ).derive(runtime.keyring.index_key)

    # --- plumbing ---------------------------------------------------------------------------

    def emit(
        self,
        session: Session,
        event_type,
        actor: Actor,
        *,
        data: dict,
        subject: str | None,
        resource: tuple[str, str] | None,
        request_id: str | None = None,
    ) -> None:
        self.outbox.emit(
            session,
            event_type,
            data=data,
            actor=actor.envelope,
            tenant=actor.tenant,
            subject=subject,
            resource={"type": resource[0], "id": resource[1]} if resource else None,
            correlation_id=request_id,
        )

    def fingerprint(self, kind: str, data: bytes) -> str:
        return hmac.new(self._fingerprint_key, kind.encode() + b"\x00" + data, hashlib.sha256).hexdigest()

    def seal(self, s: Session, subject: str, table: Table, column: str, row_id: str, value: str | bytes | None):
        return self.vault.encrypt(s, subject, table.name, column, row_id, value)

    def open(self, s: Session, table: Table, column: str, row_id: str, blob) -> Any:
        return self.vault.decrypt(s, table.name, column, row_id, blob)

    def plain(self, s: Session, table: Table, row, columns: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
        """Decrypted columns of ``row``, and the names of those erased by a crypto-shred."""
        values, erased = {}, []
        for column in columns:
            value = self.open(s, table, column, row.id, getattr(row, column))
            if value is ERASED:
                erased.append(column)
                value = None
            values[column] = value
        return values, erased

    def matching(
        self,
        s: Session,
        table: Table,
        idx_column: str,
        blob_column: str,
        normalised: str,
        normaliser: Callable[[str], str],
        kind: str,
        where=(),
    ) -> list:
        """Rows of ``table`` whose ``blob_column`` normalises to ``normalised`` (blind index, then decrypt)."""
        # every index key's value: rows not yet re-indexed after an index-key rotation still match
        rows = s.execute(select(table).where(self.index.match(table.c[idx_column], kind, normalised), *where)).all()
        self.vault.prefetch(s, [getattr(r, blob_column) for r in rows])
        found = []
        for row in rows:
            value = self.open(s, table, blob_column, row.id, getattr(row, blob_column))
            if not value:  # None or ERASED: nothing to compare
                continue
            try:
                if normaliser(value) == normalised:
                    found.append(row)
            except Invalid:
                continue
        return found

    # --- companies ----------------------------------------------------------------------------

    def company(self, s: Session, company_id: str):
        row = (
            s.execute(select(companies).where(companies.c.id == company_id)).first() if valid_uuid(company_id) else None
        )
        if row is None:
            raise NotFound("no such company")
        return row

    @staticmethod
    def company_view(row) -> dict[str, Any]:
        return {
            "id": row.id,
            "name": row.name,
            "org_number": row.org_number,
            "tenant": row.tenant,
            "created_at": rfc3339(row.created_at),
            "updated_at": rfc3339(row.updated_at),
        }

    def create_company(
        self, s: Session, actor: Actor, name: str, org_number: str | None = None, tenant: str | None = None
    ) -> dict[str, Any]:
        if not name.strip():
            raise Invalid("a company needs a name", errors=[{"field": "name", "message": "is required"}])
        company_id, now = new_id(), utcnow()
        s.execute(
            companies.insert().values(
                id=company_id, name=name.strip(), org_number=org_number, tenant=tenant, created_at=now, updated_at=now
            )
        )
        self.emit(
            s,
            ev.COMPANY_CREATED,
            actor,
            data={"company_id": company_id, "linked_tenant": tenant is not None},
            subject=None,
            resource=("company", company_id),
        )
        return self.company_view(self.company(s, company_id))

    def list_companies(self, s: Session, tenant: str | None = None, limit: int = 100, offset: int = 0) -> list[dict]:
        query = select(companies).order_by(companies.c.name, companies.c.id).limit(limit).offset(offset)
        if tenant is not None:
            query = query.where(companies.c.tenant == tenant)
        return [self.company_view(r) for r in s.execute(query)]

    def update_company(self, s: Session, actor: Actor, company_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        self.company(s, company_id)
        if changes:
            values = dict(changes)
            if "name" in values:
                values["name"] = values["name"].strip()
                if not values["name"]:
                    raise Invalid("a company needs a name", errors=[{"field": "name", "message": "is required"}])
            s.execute(update(companies).where(companies.c.id == company_id).values(**values, updated_at=utcnow()))
            self.emit(
                s,
                ev.COMPANY_UPDATED,
                actor,
                data={"company_id": company_id, "fields": sorted(changes)},
                subject=None,
                resource=("company", company_id),
            )
        return self.company_view(self.company(s, company_id))

    # --- persons (the company's person tab) ----------------------------------------------------

    PERSON_FIELDS = ("name", "email", "phone", "title")

    def person(self, s: Session, person_id: str):
        row = s.execute(select(persons).where(persons.c.id == person_id)).first() if valid_uuid(person_id) else None
        if row is None:
            raise NotFound("no such person")
        return row

    def person_view(self, s: Session, row) -> dict[str, Any]:
        values, erased = self.plain(s, persons, row, self.PERSON_FIELDS)
        out = {
            "id": row.id,
            "company_id": row.company_id,
            **values,
            "notice_recipient": row.notice_recipient,
            "created_at": rfc3339(row.created_at),
            "updated_at": rfc3339(row.updated_at),
        }
        if erased:
            out["erased_fields"] = erased
        return out

    def _person_values(self, s: Session, person_id: str, subject: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Sealed columns and blind indexes for the given (already normalised) person fields."""
        values: dict[str, Any] = {}
        for name, value in fields.items():
            values[name] = self.seal(s, subject, persons, name, person_id, value)
            if name in ("name", "email", "phone"):
                values[f"{name}_idx"] = (
                    self.index.of(name, normalise_name(value) if name == "name" else value)
                    if value is not None
                    else None
                )
        return values

    @staticmethod
    def clean_person_fields(body: dict[str, Any]) -> dict[str, Any]:
        """Normalise e-mail and phone (Invalid names the field, never the value)."""
        fields: dict[str, Any] = {}
        for name in ("name", "title"):
            if name in body:
                fields[name] = body[name].strip() if isinstance(body[name], str) else None
        if "email" in body:
            fields["email"] = normalise_email(body["email"]) if body["email"] is not None else None
        if "phone" in body:
            fields["phone"] = normalise_phone(body["phone"]) if body["phone"] is not None else None
        return fields

    def add_person(self, s: Session, actor: Actor, company_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.company(s, company_id)
        fields = self.clean_person_fields(body)
        if not fields.get("name"):
            raise Invalid("a person needs a name", errors=[{"field": "name", "message": "is required"}])
        recipient = bool(body.get("notice_recipient", False))
        if recipient and not fields.get("email"):
            raise Invalid(
                "an appointed notice recipient needs an e-mail address",
                errors=[{"field": "notice_recipient", "message": "needs an e-mail address"}],
            )
        person_id, now = new_id(), utcnow()
        subject = f"crm:person:{person_id}"
        values = self._person_values(s, person_id, subject, {k: fields.get(k) for k in self.PERSON_FIELDS})
        s.execute(
            persons.insert().values(
                id=person_id,
                company_id=company_id,
                subject_ref=subject,
                notice_recipient=recipient,
                created_at=now,
                updated_at=now,
                **values,
            )
        )
        self.emit(
            s,
            ev.PERSON_ADDED,
            actor,
            data={
                "person_id": person_id,
                "company_id": company_id,
                "fields": sorted(k for k in self.PERSON_FIELDS if fields.get(k) is not None),
                "notice_recipient": recipient,
            },
            subject=subject,
            resource=("person", person_id),
        )
        return self.person_view(s, self.person(s, person_id))

    def get_person(self, s: Session, actor: Actor, person_id: str) -> dict[str, Any]:
        row = self.person(s, person_id)
        self.viewed_persons(s, actor, [row])
        return self.person_view(s, row)

    def viewed_persons(self, s: Session, actor: Actor, rows) -> None:
        for row in rows:
            self.emit(
                s,
                ev.PERSON_VIEWED,
                actor,
                data={"person_id": row.id, "company_id": row.company_id},
                subject=row.subject_ref,
                resource=("person", row.id),
            )

    def list_persons(self, s: Session, actor: Actor, company_id: str) -> list[dict[str, Any]]:
        self.company(s, company_id)
        rows = s.execute(
            select(persons).where(persons.c.company_id == company_id).order_by(persons.c.created_at, persons.c.id)
        ).all()
        self.vault.prefetch(s, [r.name for r in rows])
        self.viewed_persons(s, actor, rows)
        return [self.person_view(s, r) for r in rows]

    def update_person(self, s: Session, actor: Actor, person_id: str, body: dict[str, Any]) -> dict[str, Any]:
        row = self.person(s, person_id)
        fields = self.clean_person_fields(body)
        if "name" in fields and not fields["name"]:
            raise Invalid("a person needs a name", errors=[{"field": "name", "message": "is required"}])
        recipient = body.get("notice_recipient", row.notice_recipient)
        current_email = fields["email"] if "email" in fields else self.open(s, persons, "email", row.id, row.email)
        if recipient and not current_email:
            raise Invalid(
                "an appointed notice recipient needs an e-mail address",
                errors=[{"field": "notice_recipient", "message": "needs an e-mail address"}],
            )
        values = self._person_values(s, row.id, row.subject_ref, fields)
        changed = sorted([*fields, *(["notice_recipient"] if recipient != row.notice_recipient else [])])
        if changed:
            s.execute(
                update(persons)
                .where(persons.c.id == row.id)
                .values(**values, notice_recipient=recipient, updated_at=utcnow())
            )
            self.emit(
                s,
                ev.PERSON_UPDATED,
                actor,
                data={
                    "person_id": row.id,
                    "company_id": row.company_id,
                    "fields": changed,
                    "notice_recipient": recipient,
                },
                subject=row.subject_ref,
                resource=("person", row.id),
            )
        return self.person_view(s, self.person(s, row.id))

    def unlink_person(self, s: Session, person_id: str) -> int:
        """Drop every reference to a person that leaves the tab; returns notice deliveries anonymised."""
        s.execute(update(cases).where(cases.c.person_id == person_id).values(person_id=None))
        s.execute(update(calls).where(calls.c.person_id == person_id).values(person_id=None))
        s.execute(update(emails).where(emails.c.person_id == person_id).values(person_id=None))
        return s.execute(
            update(notice_deliveries).where(notice_deliveries.c.person_id == person_id).values(person_id=None)
        ).rowcount

    def remove_person(self, s: Session, actor: Actor, person_id: str) -> None:
        """Support takes a person off the tab (R15): their key is shredded, their row deleted.

        Cases, calls and e-mails keep their own (separately keyed) records; only the link goes.
        """
        row = self.person(s, person_id)
        self.vault.shred(s, row.subject_ref)
        self.unlink_person(s, row.id)
        s.execute(persons.delete().where(persons.c.id == row.id))
        self.emit(
            s,
            ev.PERSON_REMOVED,
            actor,
            data={"person_id": row.id, "company_id": row.company_id},
            subject=row.subject_ref,
            resource=("person", row.id),
        )

    def search_persons(self, s: Session, actor: Actor, criteria: dict[str, Any]) -> list[dict[str, Any]]:
        """Persons matching every given criterion (email, phone, name), optionally in one company."""
        wanted = {}
        if criteria.get("email") is not None:
            wanted["email"] = (normalise_email(criteria["email"]), normalise_email)
        if criteria.get("phone") is not None:
            wanted["phone"] = (normalise_phone(criteria["phone"]), normalise_phone)
        if criteria.get("name") is not None:
            wanted["name"] = (normalise_name(criteria["name"]), normalise_name)
        if not wanted:
            raise Invalid(
                "search by email, phone or name", errors=[{"field": "body", "message": "needs email, phone or name"}]
            )
        where = [persons.c.company_id == criteria["company_id"]] if criteria.get("company_id") else []
        first, (value, normaliser) = next(iter(wanted.items()))
        rows = self.matching(s, persons, f"{first}_idx", first, value, normaliser, first, where)
        found = []
        for row in rows:
            ok = True
            for name, (value, normaliser) in list(wanted.items())[1:]:
                plain = self.open(s, persons, name, row.id, getattr(row, name))
                try:
                    ok = ok and bool(plain) and normaliser(plain) == value
                except Invalid:
                    ok = False
            if ok:
                found.append(row)
        self.viewed_persons(s, actor, found)
        return [self.person_view(s, r) for r in found]

    def persons_by_phone(self, s: Session, normalised: str, company_id: str | None = None) -> list:
        where = [persons.c.company_id == company_id] if company_id else []
        return self.matching(s, persons, "phone_idx", "phone", normalised, normalise_phone, "phone", where)

    def persons_by_email(self, s: Session, normalised: str, company_id: str | None = None) -> list:
        where = [persons.c.company_id == company_id] if company_id else []
        return self.matching(s, persons, "email_idx", "email", normalised, normalise_email, "email", where)

    # --- cases (ärenden) ---------------------------------------------------------------------

    CASE_SEALED = {
        "caller_name": "caller_name",
        "phone": "caller_phone",
        "email": "caller_email",
        "subject": "topic",
        "description": "description",
    }

    def case(self, s: Session, case_id: str):
        row = s.execute(select(cases).where(cases.c.id == case_id)).first() if valid_uuid(case_id) else None
        if row is None:
            raise NotFound("no such case")
        return row

    def case_view(self, s: Session, row) -> dict[str, Any]:
        values, erased = self.plain(s, cases, row, self.CASE_SEALED.values())
        out = {
            "id": row.id,
            "company_id": row.company_id,
            "person_id": row.person_id,
            **{api: values[col] for api, col in self.CASE_SEALED.items()},
            "channel": row.channel,
            "status": row.status,
            "assignee": row.assignee,
            "created_by": row.created_by,
            "created_at": rfc3339(row.created_at),
            "updated_at": rfc3339(row.updated_at),
            "closed_at": rfc3339(row.closed_at),
            "redacted": row.redacted_at is not None,
        }
        if erased:
            out["erased_fields"] = [api for api, col in self.CASE_SEALED.items() if col in erased]
        return out

    def _case_person(
        self, s: Session, company_id: str, person_id: str | None, phone: str | None, email: str | None
    ) -> str | None:
        """The linked person: the one given (of this company), else the only person matching e-mail or phone."""
        if person_id is not None:
            row = (
                s.execute(
                    select(persons.c.id).where(persons.c.id == person_id, persons.c.company_id == company_id)
                ).first()
                if valid_uuid(person_id)
                else None
            )
            if row is None:
                raise Invalid(
                    "the linked person is not on this company's person tab",
                    errors=[{"field": "person_id", "message": "is not a person of this company"}],
                )
            return person_id
        for value, finder in ((email, self.persons_by_email), (phone, self.persons_by_phone)):
            if value:
                found = finder(s, value, company_id)
                if len(found) == 1:
                    return found[0].id
        return None

    @staticmethod
    def clean_case_fields(body: dict[str, Any]) -> dict[str, Any]:
        fields = {}
        for api in ("caller_name", "subject", "description"):
            if api in body:
                fields[api] = body[api].strip() if isinstance(body[api], str) else None
        if "phone" in body:
            fields["phone"] = normalise_phone(body["phone"]) if body["phone"] is not None else None
        if "email" in body:
            fields["email"] = normalise_email(body["email"]) if body["email"] is not None else None
        return fields

    def _case_values(self, s: Session, case_id: str, subject: str, fields: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for api, value in fields.items():
            column = self.CASE_SEALED[api]
            values[column] = self.seal(s, subject, cases, column, case_id, value)
        if "phone" in fields:
            values["caller_phone_idx"] = self.index.of("phone", fields["phone"]) if fields["phone"] else None
        if "email" in fields:
            values["caller_email_idx"] = self.index.of("email", fields["email"]) if fields["email"] else None
        if "caller_name" in fields:
            name = normalise_name(fields["caller_name"]) if fields["caller_name"] else ""
            values["caller_name_idx"] = self.index.of("name", name) if name else None
        return values

    def open_case(self, s: Session, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
        company_id = body["company_id"]
        try:
            self.company(s, company_id)
        except NotFound:
            raise Invalid(
                "no such company", errors=[{"field": "company_id", "message": "is not a known company"}]
            ) from None
        fields = self.clean_case_fields(body)
        if not fields.get("subject"):
            raise Invalid("a case needs a subject", errors=[{"field": "subject", "message": "is required"}])
        person_id = self._case_person(s, company_id, body.get("person_id"), fields.get("phone"), fields.get("email"))
        case_id, now = new_id(), utcnow()
        subject = f"crm:case:{case_id}"
        status = body.get("status", "open")
        values = self._case_values(s, case_id, subject, {k: fields.get(k) for k in self.CASE_SEALED})
        s.execute(
            cases.insert().values(
                id=case_id,
                company_id=company_id,
                person_id=person_id,
                subject_ref=subject,
                channel=body.get("channel", "phone"),
                status=status,
                assignee=body.get("assignee"),
                created_by=actor.id,
                created_at=now,
                updated_at=now,
                closed_at=now if status == "closed" else None,
                **values,
            )
        )
        self.emit(
            s,
            ev.CASE_OPENED,
            actor,
            data={
                "case_id": case_id,
                "company_id": company_id,
                "person_id": person_id,
                "channel": body.get("channel", "phone"),
                "status": status,
                "fields": sorted(k for k in self.CASE_SEALED if fields.get(k) is not None),
            },
            subject=subject,
            resource=("case", case_id),
        )
        return self.case_view(s, self.case(s, case_id))

    def viewed_cases(self, s: Session, actor: Actor, rows) -> None:
        for row in rows:
            self.emit(
                s,
                ev.CASE_VIEWED,
                actor,
                data={"case_id": row.id, "company_id": row.company_id},
                subject=row.subject_ref,
                resource=("case", row.id),
            )

    def get_case(self, s: Session, actor: Actor, case_id: str) -> dict[str, Any]:
        row = self.case(s, case_id)
        self.viewed_cases(s, actor, [row])
        return self.case_view(s, row)

    def list_cases(
        self,
        s: Session,
        actor: Actor,
        *,
        company_id: str | None = None,
        person_id: str | None = None,
        status: str | None = None,
        assignee: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        query = select(cases).order_by(cases.c.created_at.desc(), cases.c.id).limit(limit).offset(offset)
        for column, value in (
            ("company_id", company_id),
            ("person_id", person_id),
            ("status", status),
            ("assignee", assignee),
        ):
            if value is not None:
                query = query.where(cases.c[column] == value)
        rows = s.execute(query).all()
        self.vault.prefetch(s, [r.topic for r in rows])
        self.viewed_cases(s, actor, rows)
        return [self.case_view(s, r) for r in rows]

    def update_case(self, s: Session, actor: Actor, case_id: str, body: dict[str, Any]) -> dict[str, Any]:
        row = self.case(s, case_id)
        if row.redacted_at is not None:
            raise Invalid(
                "an erased case cannot be edited", errors=[{"field": "body", "message": "the case was erased"}]
            )
        fields = self.clean_case_fields(body)
        if "subject" in fields and not fields["subject"]:
            raise Invalid("a case needs a subject", errors=[{"field": "subject", "message": "is required"}])
        changes: dict[str, Any] = self._case_values(s, row.id, row.subject_ref, fields)
        changed = sorted(fields)
        if "person_id" in body and body["person_id"] != row.person_id:
            changes["person_id"] = (
                self._case_person(s, row.company_id, body["person_id"], None, None)
                if body["person_id"] is not None
                else None
            )
            changed.append("person_id")
        for name in ("status", "assignee", "channel"):
            if name in body and body[name] != getattr(row, name):
                changes[name] = body[name]
                changed.append(name)
        if "status" in changes:
            changes["closed_at"] = utcnow() if changes["status"] == "closed" else None
        if changed:
            s.execute(update(cases).where(cases.c.id == row.id).values(**changes, updated_at=utcnow()))
            after = self.case(s, row.id)
            self.emit(
                s,
                ev.CASE_UPDATED,
                actor,
                data={
                    "case_id": row.id,
                    "person_id": after.person_id,
                    "status": after.status,
                    "fields": sorted(changed),
                },
                subject=row.subject_ref,
                resource=("case", row.id),
            )
        return self.case_view(s, self.case(s, row.id))

    def search_cases(self, s: Session, actor: Actor, criteria: dict[str, Any]) -> list[dict[str, Any]]:
        matches = []
        if criteria.get("email") is not None:
            matches.append({r.id: r for r in self.cases_by_email(s, normalise_email(criteria["email"]))})
        if criteria.get("phone") is not None:
            matches.append({r.id: r for r in self.cases_by_phone(s, normalise_phone(criteria["phone"]))})
        if not matches:
            raise Invalid("search by email or phone", errors=[{"field": "body", "message": "needs email or phone"}])
        found = {i: matches[0][i] for i in set(matches[0]).intersection(*matches[1:])}
        rows = sorted(found.values(), key=lambda r: (as_utc(r.created_at), r.id), reverse=True)
        self.viewed_cases(s, actor, rows)
        return [self.case_view(s, r) for r in rows]

    def cases_by_phone(self, s: Session, normalised: str) -> list:
        return self.matching(s, cases, "caller_phone_idx", "caller_phone", normalised, normalise_phone, "phone")

    def cases_by_caller_name(self, s: Session, normalised: str) -> list:
        return self.matching(s, cases, "caller_name_idx", "caller_name", normalised, normalise_name, "name")

    def cases_by_email(self, s: Session, normalised: str) -> list:
        return self.matching(s, cases, "caller_email_idx", "caller_email", normalised, normalise_email, "email")

    # --- lookups the gdpr participation shares ---------------------------------------------------

    def count(self, s: Session, table: Table, *where) -> int:
        return s.scalar(select(func.count()).select_from(table).where(*where)) or 0

    def emails_naming(self, s: Session, normalised: str) -> list:
        """E-mails whose sender or recipients include this address."""
        rows = self.matching(s, email_addresses, "address_idx", "address", normalised, normalise_email, "email")
        ids = sorted({r.email_id for r in rows})
        if not ids:
            return []
        return s.execute(select(emails).where(emails.c.id.in_(ids), emails.c.deleted_at.is_(None))).all()
