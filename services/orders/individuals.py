"""Individuals (AIVO "Individ", R7, R16): encrypted records, search through blind indexes, and their erasure.

Every personal field is encrypted under the individual's own data key (subject
``orders:individual:<id>``); lists and searches decrypt name, room and bed only, and reading the
health data is itself an event.  The data-subject side (counts, resolve, export, erase) lives
here too, so the gdpr participant (privacy.py) only translates the protocol.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from shared.clock import rfc3339
from shared.crypto import ERASED
from shared.errors import Conflict, DamagedRecord, Invalid
from shared.normalise import name_key, name_tokens, normalise_name, normalise_personnummer
from shared.privacy import Candidate
from shared.tokens import Principal

from . import events as ev
from .access import one, require, rights_on, tenant_of
from .base import Deps, Page, Record, emit_by, new_id, record_reads
from .catalogue import check_unit, personnummer_enabled
from .models import grants, individuals, orders, registers, units
from .ordering import deidentify_orders_of
from .rules import (
    ENCRYPTED_FIELDS,
    HEALTH_FIELDS,
    LIST_FIELDS,
    STAY_FIELDS,
    check_not_erased,
    check_validity,
    field_error,
    individual_id_of,
    retain_until,
    subject_of,
)

INDIVIDUAL_TABLE = "individuals"
SUMMARY_FIELDS = ("name", "room", "bed", *STAY_FIELDS)  # what lists and searches show: no health data
ALL_FIELDS = ENCRYPTED_FIELDS + STAY_FIELDS


@dataclass(frozen=True)
class Individual:
    """An individual's row (plaintext columns) with the personal values decrypted for this reply.

    ``values`` holds dates (``valid_from``, ``valid_to``, once decrypted) as ``date`` objects.
    """

    row: Any
    values: Mapping[str, Any]


@dataclass(frozen=True)
class SubjectData:
    """Everything this service holds on one individual, for a data-subject export (R1)."""

    individual: Individual
    orders: Sequence[Any]


@dataclass
class Erasure:
    """What an erasure did: individuals and health records deleted, orders kept (per retain-until) or deleted."""

    individuals: int = 0
    health_data: int = 0
    orders_retained: Counter[date] = dataclasses.field(default_factory=Counter)
    orders_deleted: int = 0


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


class Individuals:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    # --- encryption (R7) ------------------------------------------------------------------------

    def _encrypt(self, session: Session, individual_id: str, field: str, value: Any) -> bytes | None:
        if value is None:
            return None
        if field in STAY_FIELDS:
            text = value.isoformat()
        elif field in LIST_FIELDS:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        else:
            text = str(value)
        return self.deps.vault.encrypt(session, subject_of(individual_id), INDIVIDUAL_TABLE, field, individual_id, text)

    def decrypt_field(self, session: Session, row, field: str) -> Any:
        value = self.deps.vault.decrypt(session, INDIVIDUAL_TABLE, field, row.id, getattr(row, field))
        if value is None or value is ERASED:
            return None
        if field in LIST_FIELDS:
            return json.loads(value)
        if field == "texture_level":
            return _stored_texture_level(value)
        if field in STAY_FIELDS:
            return date.fromisoformat(value)
        return value

    def decrypt(self, session: Session, row, fields: Iterable[str] = ALL_FIELDS) -> Individual:
        return Individual(row, {f: self.decrypt_field(session, row, f) for f in fields})

    def _summary(self, session: Session, row) -> Individual:
        """What lists and searches show: no health data, so reading it is not a health-data read."""
        return self.decrypt(session, row, SUMMARY_FIELDS)

    def _encrypted_columns(self, session: Session, individual_id: str, personal: Mapping[str, Any]) -> dict:
        columns: dict[str, Any] = {}
        for name, value in personal.items():
            columns[name] = self._encrypt(session, individual_id, name, value)
        if "name" in personal:
            columns["name_idx"] = self.deps.index.name(personal["name"])
            columns["name_key_idx"] = self.deps.index.of("name_key", name_key(personal["name"]))
        if "date_of_birth" in personal:
            born = personal["date_of_birth"]
            columns["birth_date_idx"] = self.deps.index.of("birth_date", birth_date_key(born)) if born else None
        if "personnummer" in personal:
            pnr = personal["personnummer"]
            columns["personnummer_idx"] = self.deps.index.of("personnummer", pnr) if pnr else None
        return columns

    def _personal_values(self, session: Session, tenant: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Validated, normalised personal values of a create or change body (only the keys given)."""
        today = self.deps.now().date()
        values: dict[str, Any] = {}
        if "name" in body:
            if not normalise_name(body["name"]):
                raise field_error("name", "must not be blank")
            values["name"] = " ".join(body["name"].split())
        if "personnummer" in body:
            if body["personnummer"] is not None:
                if not personnummer_enabled(session, tenant):
                    raise field_error("personnummer", "is not enabled for this tenant")
                values["personnummer"] = normalise_personnummer(body["personnummer"], today=today)
            else:
                values["personnummer"] = None
        for field in ("date_of_birth", "room", "bed", "diets", "allergies", "texture_level", "notes"):
            if field in body:
                value = body[field]
                if isinstance(value, str) and field != "notes":
                    value = value.strip() or None
                if field in LIST_FIELDS and value is not None:
                    value = list(dict.fromkeys(v.strip() for v in value if v.strip()))
                values[field] = value
        if values.get("date_of_birth") and date.fromisoformat(values["date_of_birth"]) > today:
            raise field_error("date_of_birth", "is in the future")
        return values

    # --- the register's individuals ---------------------------------------------------------------

    def _row(self, session: Session, principal: Principal, individual_id: str):
        return one(session, individuals, individual_id, tenant_of(principal), "individual")

    def _reread(self, session: Session, individual_id: str) -> Individual:
        return self._summary(
            session, session.execute(select(individuals).where(individuals.c.id == individual_id)).one()
        )

    def create_individual(
        self, session: Session, principal: Principal, register_id: str, body: Mapping[str, Any]
    ) -> Individual:
        tenant = tenant_of(principal)
        one(session, registers, register_id, tenant, "register")
        require(session, principal, register_id, "administer", "register")
        check_unit(session, tenant, body.get("unit_id"))
        valid_from, valid_to = _date(body.get("valid_from")), _date(body.get("valid_to"))
        check_validity(valid_from, valid_to)
        personal = self._personal_values(session, tenant, body)
        individual_id, now = new_id(), self.deps.now()
        row: dict[str, Any] = {
            "id": individual_id,
            "tenant": tenant,
            "register_id": register_id,
            "unit_id": body.get("unit_id"),
            "status": "active",
            "created_at": now,
            "updated_at": now,
            **dict.fromkeys(ALL_FIELDS),
            "name_idx": None,
            "personnummer_idx": None,
            "name_key_idx": None,
            "birth_date_idx": None,
        }
        row.update(
            self._encrypted_columns(
                session, individual_id, {**personal, "valid_from": valid_from, "valid_to": valid_to}
            )
        )
        session.execute(insert(individuals).values(**row))
        fields = sorted(
            [k for k, v in personal.items() if v not in (None, [])]
            + [k for k in ("unit_id", "valid_from", "valid_to") if body.get(k) is not None]
        )
        emit_by(
            self.deps,
            session,
            principal,
            ev.INDIVIDUAL_CREATED,
            tenant,
            ("individual", individual_id),
            individual_id,
            {"individual_id": individual_id, "register_id": register_id, "fields": fields},
        )
        return self._summary(session, Record(row))

    def change_individual(
        self, session: Session, principal: Principal, individual_id: str, body: Mapping[str, Any]
    ) -> Individual:
        row = self._row(session, principal, individual_id)
        tenant = row.tenant
        require(session, principal, row.register_id, "administer", "register")
        check_not_erased(row.status)
        personal = self._personal_values(session, tenant, body)
        current = self.decrypt(session, row, [*personal.keys(), *STAY_FIELDS]).values
        changed_personal = {k: v for k, v in personal.items() if current[k] != v}
        plain: dict[str, Any] = {}
        changes = []
        if "unit_id" in body and body["unit_id"] != row.unit_id:
            check_unit(session, tenant, body["unit_id"])
            plain["unit_id"] = body["unit_id"]
            changes.append({"field": "unit_id", "before": row.unit_id, "after": body["unit_id"]})
        for field in STAY_FIELDS:
            if field in body and _date(body[field]) != current[field]:
                changed_personal[field] = _date(body[field])
        check_validity(
            changed_personal.get("valid_from", current["valid_from"]),
            changed_personal.get("valid_to", current["valid_to"]),
        )
        fields = sorted([*changed_personal, *plain])
        if fields:
            values = {
                **plain,
                **self._encrypted_columns(session, individual_id, changed_personal),
                "updated_at": self.deps.now(),
            }
            session.execute(update(individuals).where(individuals.c.id == individual_id).values(**values))
            emit_by(
                self.deps,
                session,
                principal,
                ev.INDIVIDUAL_CHANGED,
                tenant,
                ("individual", individual_id),
                individual_id,
                {
                    "individual_id": individual_id,
                    "register_id": row.register_id,
                    "fields": fields,
                    "changes": changes,
                },
            )
        return self._reread(session, individual_id)

    def discharge(
        self, session: Session, principal: Principal, individual_id: str, body: Mapping[str, Any]
    ) -> Individual:
        row = self._row(session, principal, individual_id)
        require(session, principal, row.register_id, "administer", "register")
        check_not_erased(row.status)
        if row.status == "discharged":
            raise Conflict("the individual is already discharged")
        register = session.execute(select(registers.c.timezone).where(registers.c.id == row.register_id)).one()
        # Without a date the discharge is today where the register is, not in UTC.
        on = _date(body.get("date")) or self.deps.now().astimezone(ZoneInfo(register.timezone)).date()
        admitted = self.decrypt_field(session, row, "valid_from")
        if admitted is not None and on < admitted:
            raise field_error("date", "is before the admission date")
        session.execute(
            update(individuals)
            .where(individuals.c.id == individual_id)
            .values(
                status="discharged",
                valid_to=self._encrypt(session, individual_id, "valid_to", on),
                updated_at=self.deps.now(),
            )
        )
        emit_by(
            self.deps,
            session,
            principal,
            ev.INDIVIDUAL_DISCHARGED,
            row.tenant,
            ("individual", individual_id),
            individual_id,
            {"individual_id": individual_id, "register_id": row.register_id},
        )
        return self._reread(session, individual_id)

    def read_individual(self, session: Session, principal: Principal, individual_id: str) -> Individual:
        """The whole record, health data included; the read itself is an event (R9, R16)."""
        row = self._row(session, principal, individual_id)
        require(session, principal, row.register_id, "view", "register")
        check_not_erased(row.status)
        record = self.decrypt(session, row)
        read = [f for f in HEALTH_FIELDS if record.values[f] not in (None, [])]
        emit_by(
            self.deps,
            session,
            principal,
            ev.INDIVIDUAL_READ,
            row.tenant,
            ("individual", individual_id),
            individual_id,
            {"individual_id": individual_id, "register_id": row.register_id, "fields": read},
        )
        return record

    def individuals_in(
        self, session: Session, principal: Principal, register_id: str, query: Mapping[str, str]
    ) -> Page[Individual]:
        tenant = tenant_of(principal)
        one(session, registers, register_id, tenant, "register")
        require(session, principal, register_id, "view", "register")
        limit, offset = int(query.get("limit", 100)), int(query.get("offset", 0))
        statement = select(individuals).where(
            individuals.c.register_id == register_id, individuals.c.status != "erased"
        )
        if query.get("status"):
            statement = statement.where(individuals.c.status == query["status"])
        if query.get("unit_id"):
            statement = statement.where(individuals.c.unit_id == query["unit_id"])
        rows = list(
            session.execute(
                statement.order_by(individuals.c.created_at, individuals.c.id).limit(limit + 1).offset(offset)
            )
        )
        self.deps.vault.prefetch(session, [r.name for r in rows])
        page = Page.of(rows, limit, offset)
        found = [self._summary(session, r) for r in page.items]
        record_reads(
            self.deps, session, principal, [subject_of(r.row.id) for r in found], "list_individuals", register_id
        )
        return Page(found, page.next_offset)

    def search(self, session: Session, principal: Principal, body: Mapping[str, Any]) -> list[Individual]:
        """Find individuals by personnummer or exact name through blind indexes (R7).

        Candidates sharing the truncated index value are decrypted and compared, so the
        result has no false positives; only registers the caller may view are searched.
        """
        tenant = tenant_of(principal)
        if "register_id" in body:
            one(session, registers, body["register_id"], tenant, "register")
            require(session, principal, body["register_id"], "view", "register")
            visible = [body["register_id"]]
        else:
            ids = list(session.scalars(select(registers.c.id).where(registers.c.tenant == tenant)))
            visible = [r for r, held in rights_on(session, principal, ids).items() if "view" in held]
        if "personnummer" in body:
            field, wanted = "personnummer", normalise_personnummer(body["personnummer"], today=self.deps.now().date())
            match = self.deps.index.match(individuals.c.personnummer_idx, "personnummer", wanted)
        else:
            field, wanted = "name", normalise_name(body["name"])
            if not wanted:
                raise field_error("name", "must not be blank")
            match = self.deps.index.match(individuals.c.name_idx, "name", wanted)
        if not visible:
            return []
        rows = list(
            session.execute(
                select(individuals)
                .where(
                    individuals.c.tenant == tenant,
                    match,
                    individuals.c.register_id.in_(visible),
                    individuals.c.status != "erased",
                )
                .order_by(individuals.c.created_at, individuals.c.id)
            )
        )
        self.deps.vault.prefetch(session, [getattr(r, field) for r in rows])
        found = []
        for row in rows:
            plain = self.decrypt_field(session, row, field)
            if plain is not None and (plain if field == "personnummer" else normalise_name(plain)) == wanted:
                found.append(self._summary(session, row))
        # Only the matches were shown to the caller; candidates sharing an index value were not.
        record_reads(
            self.deps,
            session,
            principal,
            [subject_of(r.row.id) for r in found],
            "search_individuals",
            body.get("register_id"),
        )
        return found

    # --- data-subject requests (R1, R2, R3, R5) ---------------------------------------------------

    def counts(self, session: Session) -> dict[str, int]:
        """How many records of each inventory kind this service holds (for the gdpr service's overview)."""
        live = individuals.c.status != "erased"
        people = session.scalar(select(func.count()).select_from(individuals).where(live))
        with_health = session.scalar(
            select(func.count())
            .select_from(individuals)
            .where(
                live,
                (individuals.c.diets.is_not(None))
                | (individuals.c.allergies.is_not(None))
                | (individuals.c.texture_level.is_not(None))
                | (individuals.c.notes.is_not(None)),
            )
        )
        return {
            "individual": people,
            "health_data": with_health,
            "order": session.scalar(select(func.count()).select_from(orders)),
            "access_grant": session.scalar(select(func.count()).select_from(grants)),
        }

    def tenant_counts(self, session: Session) -> dict[str, dict[str, int]]:
        """The same counts per tenant slug (a customer's records of processing, art. 30(2), issue 15)."""
        live = individuals.c.status != "erased"
        health = (
            (individuals.c.diets.is_not(None))
            | (individuals.c.allergies.is_not(None))
            | (individuals.c.texture_level.is_not(None))
            | (individuals.c.notes.is_not(None))
        )
        out: dict[str, dict[str, int]] = {}

        def add(kind: str, table, *where) -> None:
            query = select(table.c.tenant, func.count()).select_from(table).where(*where).group_by(table.c.tenant)
            for tenant, n in session.execute(query):
                out.setdefault(tenant, {})[kind] = int(n)

        add("individual", individuals, live)
        add("health_data", individuals, live, health)
        add("order", orders)
        add("access_grant", grants)
        return out

    def resolve(self, session: Session, tenant: str | None, personnummer: str | None) -> list[str]:
        """Subject references of the tenant's individuals with that personnummer (blind index, then decrypt)."""
        if not personnummer:
            return []
        try:
            wanted = normalise_personnummer(personnummer, today=self.deps.now().date())
        except Invalid:
            return []  # not a personnummer: nobody here has it
        statement = select(individuals).where(
            self.deps.index.match(individuals.c.personnummer_idx, "personnummer", wanted),
            individuals.c.status != "erased",
        )
        if tenant:
            statement = statement.where(individuals.c.tenant == tenant)
        rows = list(session.execute(statement.order_by(individuals.c.created_at, individuals.c.id)))
        self.deps.vault.prefetch(session, [r.personnummer for r in rows])
        return [subject_of(r.id) for r in rows if self.decrypt_field(session, r, "personnummer") == wanted]

    def candidates(self, session: Session, tenant: str | None, subject: Mapping[str, str]) -> list[Candidate]:
        """Who the identifiers may be, for a preview: masked cards, exact or near (issue 15).

        By personnummer: exact matches.  By name and birth date: *exact* when the normalised name
        and the birth date are equal (and the unit or register, if given, is the individual's);
        *near* when only the name's near-match key is equal (a foreign accent, a hyphen, the parts'
        order), when the name is equal but the birth date is not, when the birth date is equal and
        a part of the name is shared, or when the name and birth date match in another unit or
        register than the one given.  Nothing else is shown, and nothing here changes a row.
        """
        found: dict[str, Candidate] = {}
        for reference in self.resolve(session, tenant, subject.get("personnummer")):
            row = self._subjects(session, tenant, [reference])[0]
            found[row.id] = self._candidate(session, row, "exact")
        wanted, born = subject.get("name"), subject.get("birth_date")
        if wanted and born:
            for row, match in self._by_name_and_birth_date(session, tenant, subject):
                if row.id not in found:
                    found[row.id] = self._candidate(session, row, match)
        return list(found.values())

    def _by_name_and_birth_date(self, session: Session, tenant: str | None, subject: Mapping[str, str]):
        name, born = normalise_name(subject["name"]), birth_date_key(subject["birth_date"])
        key, parts = name_key(name), set(name_tokens(name))
        c, index = individuals.c, self.deps.index
        statement = select(individuals).where(
            c.status != "erased",
            or_(
                index.match(c.name_idx, "name", name),
                index.match(c.name_key_idx, "name_key", key),
                index.match(c.birth_date_idx, "birth_date", born),
                # Rows written before the indexes existed, until ./recept orders reindex has run.
                and_(c.name.is_not(None), c.name_key_idx.is_(None)),
                and_(c.date_of_birth.is_not(None), c.birth_date_idx.is_(None)),
            ),
        )
        if tenant:
            statement = statement.where(c.tenant == tenant)
        rows = list(session.execute(statement.order_by(c.created_at, c.id)))
        self.deps.vault.prefetch(session, [r.name for r in rows] + [r.date_of_birth for r in rows])
        for row in rows:
            plain = self.decrypt_field(session, row, "name")
            theirs = self.decrypt_field(session, row, "date_of_birth")
            if plain is None:
                continue
            same_name = normalise_name(plain) == name
            same_key = name_key(plain) == key
            same_day = theirs is not None and birth_date_key(theirs) == born
            if same_name and same_day and self._same_place(session, row, subject):
                yield row, "exact"
            elif same_name or same_key or (same_day and parts & set(name_tokens(plain))):
                yield row, "near"

    @staticmethod
    def _place(session: Session, table, place_id: str | None) -> str | None:
        if place_id is None:
            return None
        return session.scalar(select(table.c.name).where(table.c.id == place_id))

    def _same_place(self, session: Session, row, subject: Mapping[str, str]) -> bool:
        for kind, table, place_id in (("unit", units, row.unit_id), ("register", registers, row.register_id)):
            wanted = subject.get(kind)
            if wanted:
                name = self._place(session, table, place_id)
                if name is None or " ".join(name.split()).casefold() != wanted:
                    return False
        return True

    def _candidate(self, session: Session, row, match: str) -> Candidate:
        """The masked card of one individual: kind, register and unit names, birth year, initials,
        how many orders; never the name, the birth day or anything of the health data."""
        name = self.decrypt_field(session, row, "name") or ""
        born = self.decrypt_field(session, row, "date_of_birth")
        placed = session.scalar(select(func.count()).select_from(orders).where(orders.c.individual_id == row.id)) or 0
        register = self._place(session, registers, row.register_id)
        unit = self._place(session, units, row.unit_id)
        card: dict[str, Any] = {
            "register": register,
            "unit": unit,
            "born": int(str(born)[:4]) if born else None,
            "initials": initials(name),
            "orders": placed,
            "status": row.status,
        }
        label = ["individual"]
        if register:
            label.append(f"register {register}")
        if unit:
            label.append(f"unit {unit}")
        if born:
            label.append(f"born {card['born']}")
        if card["initials"]:
            label.append(f"initials {card['initials']}")
        label.append(f"{placed} order{'s' if placed != 1 else ''}")
        return Candidate(
            kind="individual",
            match=match,
            card={"label": ", ".join(label), **card},
            references=(subject_of(row.id),),
            count=1 + placed,
            state=f"{rfc3339(row.updated_at)}|{placed}",
        )

    def _subjects(self, session: Session, tenant: str | None, references: Iterable[str]) -> list:
        ids = [i for i in map(individual_id_of, references) if i is not None]
        if not ids:
            return []
        statement = select(individuals).where(individuals.c.id.in_(ids))
        if tenant:
            statement = statement.where(individuals.c.tenant == tenant)
        return list(session.execute(statement.order_by(individuals.c.created_at, individuals.c.id)))

    def export(self, session: Session, tenant: str | None, references: Iterable[str]) -> list[SubjectData]:
        """Each referenced individual decrypted (every field), with all their orders."""
        found = []
        for row in self._subjects(session, tenant, references):
            placed = session.execute(
                select(orders)
                .where(orders.c.individual_id == row.id)
                .order_by(orders.c.delivery_date, orders.c.placed_at, orders.c.id)
            )
            opened = [
                Record(
                    {
                        **o._mapping,
                        "diet_variant": self.deps.open(session, "orders", "diet_variant", o.id, o.diet_variant),
                    }
                )
                for o in placed
            ]
            found.append(SubjectData(self.decrypt(session, row), opened))
        return found

    def erase(self, session: Session, tenant: str | None, references: Iterable[str], request_id: str) -> Erasure:
        """Crypto-shred each individual, keep a tombstone, and settle their orders by the retention rule.

        Orders bookkeeping still needs stay de-identified; the rest are deleted.  An individual
        erased by an earlier request is left as it is, so a repeated request does nothing more.
        """
        now = self.deps.now()
        done = Erasure()
        for row in self._subjects(session, tenant, references):
            if row.status == "erased":
                continue
            had_health = any(getattr(row, f) is not None for f in HEALTH_FIELDS)
            self.deps.vault.shred(session, subject_of(row.id))
            kept, deleted = deidentify_orders_of(session, row.id, now.date(), self.deps.retained_k)
            # The row stays as a tombstone without personal data, so the id keeps answering
            # "erased" (no new orders) instead of looking like it never existed.
            session.execute(
                update(individuals)
                .where(individuals.c.id == row.id)
                .values(
                    status="erased",
                    name_idx=None,
                    personnummer_idx=None,
                    name_key_idx=None,
                    birth_date_idx=None,
                    erased_at=now,
                    updated_at=now,
                    **dict.fromkeys(ALL_FIELDS),
                )
            )
            done.individuals += 1
            done.health_data += had_health
            done.orders_retained.update(retain_until(d) for d in kept)
            done.orders_deleted += deleted
            self.deps.outbox.emit(
                session,
                ev.INDIVIDUAL_ERASED,
                actor={"id": "gdpr", "tenant": row.tenant, "kind": "service"},
                tenant=row.tenant,
                subject=subject_of(row.id),
                resource={"type": "individual", "id": row.id},
                data={
                    "individual_id": row.id,
                    "register_id": row.register_id,
                    "request_id": request_id[:100],
                    "orders_retained": len(kept),
                    "orders_deleted": deleted,
                },
            )
        return done


def birth_date_key(value: Any) -> str:
    """The ISO form a birth date is indexed and compared in."""
    return date.fromisoformat(str(value)).isoformat()


def initials(name: str) -> str:
    """``"Gun-Britt Lindqvist"`` -> ``"G.-B. L."``: what a card may show of a name."""
    return " ".join("-".join(p[:1].upper() + "." for p in part.split("-") if p) for part in name.split())


def _stored_texture_level(text: str) -> int:
    """The stored IDDSI level.  Before issue 18 a JSON 3.0 was accepted and stored as "3.0": such a
    record reads as 3 again.  Anything else is a damaged value (a typed 409), not a 500."""
    try:
        number = float(text)
    except ValueError:
        raise DamagedRecord("this individual's stored texture_level is damaged") from None
    if not number.is_integer() or not 0 <= number <= 7:
        raise DamagedRecord("this individual's stored texture_level is damaged")
    return int(number)
