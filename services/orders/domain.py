"""The orders service's rules: access per register and list, deadlines, encrypted individuals, orders, events.

Free of Flask: the HTTP layer (api.py) and the GDPR participant (privacy.py) call these
functions with a database session, the caller (``shared.tokens.Principal``) and plain dicts
that already passed the request's JSON schema.  Every change writes its event to the outbox
in the caller's transaction (R9, R11).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.orm import Session

from shared.crypto import ERASED, BlindIndex, normalise_name, normalise_personnummer
from shared.db import as_utc
from shared.errors import AccessDenied, Conflict, Gone, Invalid, NotFound
from shared.tokens import Principal

from . import events as ev
from .models import (articles, assortment_lists, delivery_points, grants, individuals, order_changes, orders,
                     registers, tenant_settings, units)

RIGHTS = ("view", "order", "change", "administer")
MEALS = ("breakfast", "lunch", "snack", "dinner", "evening")
UNIT_KINDS = ("care_unit", "hospital_ward", "school_kitchen", "care_home", "other")
ARTICLE_KINDS = ("meal", "diet_variant", "extra")
TENANT_ADMIN = "tenant_admin"

SUBJECT_PREFIX = "orders:individual:"
INDIVIDUAL_TABLE = "individuals"
# Columns holding the individual's personal data, encrypted under the individual's data key (R7).
IDENTITY_FIELDS = ("name", "personnummer", "date_of_birth", "room", "bed")
HEALTH_FIELDS = ("diets", "allergies", "texture_level", "notes")      # special category (R16, art. 9)
ENCRYPTED_FIELDS = IDENTITY_FIELDS + HEALTH_FIELDS
LIST_FIELDS = ("diets", "allergies")

# The resources rights are granted on, and how messages name them.
_GRANTABLE = {"register": (registers, "register"), "assortment_list": (assortment_lists, "assortment list")}

BOOKKEEPING_LEGAL_BASIS = "Bokföringslagen (1999:1078) 7 kap. 2 §"
BOOKKEEPING_YEARS = 7

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return str(uuid.uuid4())


def subject_of(individual_id: str) -> str:
    return SUBJECT_PREFIX + individual_id


def retain_until(delivery_date: date) -> date:
    """Bookkeeping records are kept 7 years after the end of the fiscal (calendar) year."""
    return date(delivery_date.year + BOOKKEEPING_YEARS, 12, 31)


def retention_cutoff(today: date) -> date:
    """Orders delivered before this date are past retain_until and must go."""
    return date(today.year - BOOKKEEPING_YEARS, 1, 1)


def purge_expired_orders(session: Session, outbox, today: date) -> int:
    """Delete the orders (and their history) the bookkeeping period no longer covers."""
    cutoff = retention_cutoff(today)
    expired = select(orders.c.id).where(orders.c.delivery_date < cutoff)
    session.execute(delete(order_changes).where(order_changes.c.order_id.in_(expired)))
    count = session.execute(delete(orders).where(orders.c.delivery_date < cutoff)).rowcount
    if count:
        outbox.emit(session, ev.RETENTION_PURGED, actor={"id": "orders", "tenant": None, "kind": "system"},
                    data={"orders_deleted": count, "delivered_before": cutoff.isoformat()})
    return count


class DeadlinePassed(Conflict):
    title = "Order deadline passed"
    type_suffix = "order-deadline-passed"


def _field_error(field: str, message: str) -> Invalid:
    return Invalid(f"{field} {message}", errors=[{"field": field, "message": message}])


def _iso(value: date | datetime | None) -> str | None:
    if isinstance(value, datetime):
        value = _aware(value)
    return value.isoformat() if value is not None else None


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


_aware = as_utc   # stored times come back naive from SQLite (shared.db.as_utc)


@dataclass(frozen=True)
class Deadline:
    minutes: int            # local time of day, minutes after midnight
    days_before: int
    timezone: str

    def at(self, delivery_date: date) -> datetime:
        day = delivery_date - timedelta(days=self.days_before)
        return datetime.combine(day, time(self.minutes // 60, self.minutes % 60), tzinfo=ZoneInfo(self.timezone))

    def check(self, delivery_date: date, now: datetime, doing: str) -> None:
        deadline = self.at(delivery_date)
        if now >= deadline:
            raise DeadlinePassed(
                f"the order deadline for delivery on {delivery_date.isoformat()} passed at "
                f"{deadline.isoformat(timespec='minutes')}; orders for that day can no longer be {doing}")

    @staticmethod
    def of(row) -> "Deadline":
        return Deadline(row.deadline_minutes, row.deadline_days_before, row.timezone)


def parse_deadline_time(text: str) -> int:
    hours, _, minutes = text.partition(":")
    return int(hours) * 60 + int(minutes)


def format_deadline_time(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _field_error("timezone", "is not a known time zone") from None
    return name


class Orders:
    """The service's operations over one database; one instance per runtime."""

    def __init__(self, vault, index: BlindIndex, outbox, clock: Clock | None = None,
                 default_timezone: str = "Europe/Stockholm") -> None:
        self.vault = vault
        self.index = index
        self.outbox = outbox
        self.clock = clock or utcnow
        self.default_timezone = default_timezone

    @classmethod
    def for_runtime(cls, runtime) -> "Orders":
        config = runtime.config
        return cls(runtime.vault, BlindIndex(runtime.keyring, bits=config["BLIND_INDEX_BITS"]), runtime.outbox,
                   clock=config.get("clock"), default_timezone=config["DEFAULT_TIMEZONE"])

    def now(self) -> datetime:
        return _aware(self.clock())

    # --- access (R8, R12) ------------------------------------------------------------------

    @staticmethod
    def tenant_of(principal: Principal) -> str:
        """The caller's tenant; a caller without one sees no orders data at all."""
        if not principal.tenant:
            raise NotFound("no such resource")
        return principal.tenant

    @staticmethod
    def is_tenant_admin(principal: Principal) -> bool:
        return TENANT_ADMIN in principal.roles and bool(principal.tenant)

    def rights_on(self, session: Session, principal: Principal, resource_ids: Iterable[str]) -> dict[str, set[str]]:
        """The caller's rights per resource: its own grants plus its directory groups' (one indexed query)."""
        ids = [r for r in dict.fromkeys(resource_ids) if r]
        rights: dict[str, set[str]] = {r: set() for r in ids}
        if not ids:
            return rights
        who = and_(grants.c.principal_type == "user", grants.c.principal_id == principal.user_id)
        if principal.groups:
            who = or_(who, and_(grants.c.principal_type == "group",
                                grants.c.principal_id.in_(sorted(principal.groups))))
        rows = session.execute(select(grants.c.resource_id, grants.c.access_right).where(
            grants.c.resource_id.in_(ids), grants.c.tenant == principal.tenant, who))
        for resource_id, right in rows:
            rights[resource_id].add(right)
        if self.is_tenant_admin(principal):
            # The tenant's administrators administer every register and list of their tenant
            # (so someone can always grant), but read or order only with an explicit grant.
            for held in rights.values():
                held.add("administer")
        return rights

    def require(self, session: Session, principal: Principal, resource_id: str, right: str, what: str) -> None:
        if right not in self.rights_on(session, principal, [resource_id])[resource_id]:
            raise AccessDenied(f"you need the '{right}' right on this {what}")

    @staticmethod
    def _require_admin(principal: Principal) -> None:
        if not Orders.is_tenant_admin(principal):
            raise AccessDenied("only the tenant's administrators may do this")

    @staticmethod
    def _one(session: Session, table, row_id: str, tenant: str, what: str = "resource"):
        row = session.execute(select(table).where(table.c.id == row_id, table.c.tenant == tenant)).first()
        if row is None:
            raise NotFound(f"no such {what}")
        return row

    # --- tenant settings --------------------------------------------------------------------

    def settings(self, session: Session, principal: Principal) -> dict[str, Any]:
        tenant = self.tenant_of(principal)
        self._require_admin(principal)
        row = session.execute(select(tenant_settings).where(tenant_settings.c.tenant == tenant)).first()
        return {"personnummer_enabled": bool(row.personnummer_enabled) if row else False,
                "updated_at": _iso(row.updated_at) if row else None}

    def personnummer_enabled(self, session: Session, tenant: str) -> bool:
        return bool(session.scalar(select(tenant_settings.c.personnummer_enabled)
                                   .where(tenant_settings.c.tenant == tenant)))

    def update_settings(self, session: Session, principal: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        tenant = self.tenant_of(principal)
        self._require_admin(principal)
        before = self.personnummer_enabled(session, tenant)
        after = bool(body["personnummer_enabled"])
        exists = session.execute(select(tenant_settings.c.tenant).where(tenant_settings.c.tenant == tenant)).first()
        values = {"personnummer_enabled": after, "updated_at": self.now(), "updated_by": principal.user_id}
        if exists:
            session.execute(update(tenant_settings).where(tenant_settings.c.tenant == tenant).values(**values))
        else:
            session.execute(insert(tenant_settings).values(tenant=tenant, **values))
        if before != after:
            self.outbox.emit(session, ev.SETTINGS_CHANGED, actor=principal.actor, tenant=tenant,
                             resource={"type": "tenant_settings", "id": tenant},
                             data={"fields": ["personnummer_enabled"], "changes": [
                                 {"field": "personnummer_enabled", "before": before, "after": after}]})
        return self.settings(session, principal)

    # --- units and delivery points ----------------------------------------------------------

    def create_unit(self, session: Session, principal: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        tenant = self.tenant_of(principal)
        self._require_admin(principal)
        row = {"id": new_id(), "tenant": tenant, "name": body["name"].strip(), "kind": body["kind"],
               "created_at": self.now()}
        session.execute(insert(units).values(**row))
        self.outbox.emit(session, ev.UNIT_CREATED, actor=principal.actor, tenant=tenant,
                         resource={"type": "unit", "id": row["id"]}, data={"unit_id": row["id"], "kind": row["kind"]})
        return self.unit(session, principal, row["id"])

    def units(self, session: Session, principal: Principal) -> list[dict[str, Any]]:
        tenant = self.tenant_of(principal)
        rows = session.execute(select(units).where(units.c.tenant == tenant).order_by(units.c.name, units.c.id))
        return [_unit(r) for r in rows]

    def unit(self, session: Session, principal: Principal, unit_id: str) -> dict[str, Any]:
        tenant = self.tenant_of(principal)
        row = self._one(session, units, unit_id, tenant, "unit")
        points = session.execute(select(delivery_points).where(delivery_points.c.unit_id == unit_id)
                                 .order_by(delivery_points.c.name, delivery_points.c.id))
        return {**_unit(row), "delivery_points": [
            {"id": p.id, "name": p.name, "created_at": _iso(p.created_at)} for p in points]}

    def add_delivery_point(self, session: Session, principal: Principal, unit_id: str,
                           body: Mapping[str, Any]) -> dict[str, Any]:
        tenant = self.tenant_of(principal)
        self._one(session, units, unit_id, tenant, "unit")
        self._require_admin(principal)
        point_id = new_id()
        session.execute(insert(delivery_points).values(id=point_id, tenant=tenant, unit_id=unit_id,
                                                       name=body["name"].strip(), created_at=self.now()))
        self.outbox.emit(session, ev.DELIVERY_POINT_CREATED, actor=principal.actor, tenant=tenant,
                         resource={"type": "unit", "id": unit_id},
                         data={"unit_id": unit_id, "delivery_point_id": point_id})
        return {"id": point_id, "unit_id": unit_id, "name": body["name"].strip()}

    def _check_unit(self, session: Session, tenant: str, unit_id: str | None, field: str = "unit_id") -> None:
        if unit_id is not None and session.execute(select(units.c.id).where(
                units.c.id == unit_id, units.c.tenant == tenant)).first() is None:
            raise _field_error(field, "names no unit of this tenant")

    # --- order registers --------------------------------------------------------------------

    def create_register(self, session: Session, principal: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        tenant = self.tenant_of(principal)
        self._require_admin(principal)
        deadline = body.get("deadline") or {}
        now = self.now()
        row = {"id": new_id(), "tenant": tenant, "name": body["name"].strip(),
               "deadline_minutes": parse_deadline_time(deadline.get("time", "12:00")),
               "deadline_days_before": deadline.get("days_before", 1),
               "timezone": check_timezone(body.get("timezone") or self.default_timezone),
               "created_at": now, "updated_at": now}
        session.execute(insert(registers).values(**row))
        self.outbox.emit(session, ev.REGISTER_CREATED, actor=principal.actor, tenant=tenant,
                         resource={"type": "register", "id": row["id"]}, data={"register_id": row["id"]})
        return self.register(session, principal, row["id"])

    def registers(self, session: Session, principal: Principal) -> list[dict[str, Any]]:
        """The registers the caller holds any right on (every one, for a tenant administrator)."""
        tenant = self.tenant_of(principal)
        rows = list(session.execute(select(registers).where(registers.c.tenant == tenant)
                                    .order_by(registers.c.name, registers.c.id)))
        rights = self.rights_on(session, principal, [r.id for r in rows])
        return [{**_register(r), "rights": sorted(rights[r.id])} for r in rows if rights[r.id]]

    def register(self, session: Session, principal: Principal, register_id: str) -> dict[str, Any]:
        tenant = self.tenant_of(principal)
        row = self._one(session, registers, register_id, tenant, "register")
        held = self.rights_on(session, principal, [register_id])[register_id]
        if not held:
            raise AccessDenied("you hold no right on this register")
        return {**_register(row), "rights": sorted(held)}

    def change_register(self, session: Session, principal: Principal, register_id: str,
                        body: Mapping[str, Any]) -> dict[str, Any]:
        tenant = self.tenant_of(principal)
        row = self._one(session, registers, register_id, tenant, "register")
        self.require(session, principal, register_id, "administer", "register")
        before = _register(row)
        values: dict[str, Any] = {}
        after = dict(before)
        if "name" in body:
            values["name"] = after["name"] = body["name"].strip()
        if "deadline" in body:
            deadline = body["deadline"]
            if "time" in deadline:
                values["deadline_minutes"] = parse_deadline_time(deadline["time"])
                after["deadline"] = {**after["deadline"], "time": deadline["time"]}
            if "days_before" in deadline:
                values["deadline_days_before"] = deadline["days_before"]
                after["deadline"] = {**after["deadline"], "days_before": deadline["days_before"]}
        if "timezone" in body:
            values["timezone"] = after["timezone"] = check_timezone(body["timezone"])
        flat_before, flat_after = _register_values(before), _register_values(after)
        changes = [{"field": f, "before": flat_before[f], "after": flat_after[f]}
                   for f in ev.REGISTER_VALUE_FIELDS if flat_before[f] != flat_after[f]]
        if changes:
            session.execute(update(registers).where(registers.c.id == register_id)
                            .values(**values, updated_at=self.now()))
            self.outbox.emit(session, ev.REGISTER_CHANGED, actor=principal.actor, tenant=tenant,
                             resource={"type": "register", "id": register_id},
                             data={"register_id": register_id, "fields": [c["field"] for c in changes],
                                   "changes": changes})
        return self.register(session, principal, register_id)

    # --- assortment lists and articles ------------------------------------------------------

    def create_list(self, session: Session, principal: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        tenant = self.tenant_of(principal)
        self._require_admin(principal)
        self._check_unit(session, tenant, body.get("unit_id"))
        list_id = new_id()
        session.execute(insert(assortment_lists).values(id=list_id, tenant=tenant, name=body["name"].strip(),
                                                        unit_id=body.get("unit_id"), created_at=self.now()))
        self.outbox.emit(session, ev.ASSORTMENT_LIST_CREATED, actor=principal.actor, tenant=tenant,
                         resource={"type": "assortment_list", "id": list_id},
                         data={"list_id": list_id, "unit_id": body.get("unit_id")})
        return self.assortment_list(session, principal, list_id)

    def lists(self, session: Session, principal: Principal) -> list[dict[str, Any]]:
        tenant = self.tenant_of(principal)
        rows = list(session.execute(select(assortment_lists).where(assortment_lists.c.tenant == tenant)
                                    .order_by(assortment_lists.c.name, assortment_lists.c.id)))
        rights = self.rights_on(session, principal, [r.id for r in rows])
        return [{**_list(r), "rights": sorted(rights[r.id])} for r in rows if rights[r.id]]

    def assortment_list(self, session: Session, principal: Principal, list_id: str) -> dict[str, Any]:
        tenant = self.tenant_of(principal)
        row = self._one(session, assortment_lists, list_id, tenant, "assortment list")
        held = self.rights_on(session, principal, [list_id])[list_id]
        if not held.intersection({"view", "administer"}):
            raise AccessDenied("you need the 'view' right on this assortment list")
        items = session.execute(select(articles).where(articles.c.list_id == list_id)
                                .order_by(articles.c.code))
        return {**_list(row), "rights": sorted(held), "articles": [_article(a) for a in items]}

    def add_article(self, session: Session, principal: Principal, list_id: str,
                    body: Mapping[str, Any]) -> dict[str, Any]:
        tenant = self.tenant_of(principal)
        self._one(session, assortment_lists, list_id, tenant, "assortment list")
        self.require(session, principal, list_id, "administer", "assortment list")
        if session.execute(select(articles.c.id).where(articles.c.list_id == list_id,
                                                       articles.c.code == body["code"])).first():
            raise Conflict("this assortment list already has an article with that code",
                           errors=[{"field": "code", "message": "is already used in this list"}])
        row = {"id": new_id(), "tenant": tenant, "list_id": list_id, "code": body["code"],
               "name": body["name"].strip(), "kind": body["kind"], "active": body.get("active", True),
               "created_at": self.now()}
        session.execute(insert(articles).values(**row))
        self.outbox.emit(session, ev.ARTICLE_CREATED, actor=principal.actor, tenant=tenant,
                         resource={"type": "assortment_list", "id": list_id},
                         data={"list_id": list_id, "article_id": row["id"], "kind": row["kind"]})
        return _article(_Row(row))

    def change_article(self, session: Session, principal: Principal, list_id: str, article_id: str,
                       body: Mapping[str, Any]) -> dict[str, Any]:
        tenant = self.tenant_of(principal)
        self._one(session, assortment_lists, list_id, tenant, "assortment list")
        row = session.execute(select(articles).where(articles.c.id == article_id,
                                                     articles.c.list_id == list_id)).first()
        if row is None:
            raise NotFound("no such article")
        self.require(session, principal, list_id, "administer", "assortment list")
        values = {k: (body[k].strip() if k == "name" else body[k]) for k in ev.ARTICLE_VALUE_FIELDS if k in body}
        changes = [{"field": k, "before": getattr(row, k), "after": v} for k, v in values.items()
                   if getattr(row, k) != v]
        if changes:
            session.execute(update(articles).where(articles.c.id == article_id)
                            .values(**{c["field"]: c["after"] for c in changes}))
            self.outbox.emit(session, ev.ARTICLE_CHANGED, actor=principal.actor, tenant=tenant,
                             resource={"type": "assortment_list", "id": list_id},
                             data={"list_id": list_id, "article_id": article_id,
                                   "fields": [c["field"] for c in changes], "changes": changes})
        return _article(session.execute(select(articles).where(articles.c.id == article_id)).one())

    # --- grants (R8, R12) -------------------------------------------------------------------

    def _grant_resource(self, session: Session, principal: Principal, resource_type: str, resource_id: str) -> str:
        tenant = self.tenant_of(principal)
        table, what = _GRANTABLE[resource_type]
        self._one(session, table, resource_id, tenant, what)
        self.require(session, principal, resource_id, "administer", what)
        return tenant

    def grants(self, session: Session, principal: Principal, resource_type: str, resource_id: str) -> list[dict]:
        self._grant_resource(session, principal, resource_type, resource_id)
        rows = session.execute(select(grants).where(grants.c.resource_id == resource_id)
                               .order_by(grants.c.created_at, grants.c.id))
        return [_grant(r) for r in rows]

    def grant(self, session: Session, principal: Principal, resource_type: str, resource_id: str,
              body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Give a user or directory group a right; (grant, created).  Granting twice changes nothing."""
        tenant = self._grant_resource(session, principal, resource_type, resource_id)
        who, right = body["principal"], body["right"]
        existing = session.execute(select(grants).where(
            grants.c.resource_id == resource_id, grants.c.principal_type == who["type"],
            grants.c.principal_id == who["id"], grants.c.access_right == right)).first()
        if existing is not None:
            return _grant(existing), False
        row = {"id": new_id(), "tenant": tenant, "resource_type": resource_type, "resource_id": resource_id,
               "principal_type": who["type"], "principal_id": who["id"], "access_right": right,
               "created_at": self.now(), "created_by": principal.user_id}
        session.execute(insert(grants).values(**row))
        self.outbox.emit(session, ev.ACCESS_GRANTED, actor=principal.actor, tenant=tenant,
                         resource={"type": resource_type, "id": resource_id}, data=_grant_event(row))
        return _grant(_Row(row)), True

    def revoke(self, session: Session, principal: Principal, resource_type: str, resource_id: str,
               grant_id: str) -> None:
        tenant = self._grant_resource(session, principal, resource_type, resource_id)
        row = session.execute(select(grants).where(grants.c.id == grant_id,
                                                   grants.c.resource_id == resource_id)).first()
        if row is None:
            raise NotFound("no such grant")
        session.execute(delete(grants).where(grants.c.id == grant_id))
        self.outbox.emit(session, ev.ACCESS_REVOKED, actor=principal.actor, tenant=tenant,
                         resource={"type": resource_type, "id": resource_id}, data=_grant_event(row._mapping))

    # --- individuals (AIVO "Individ"), R7 ---------------------------------------------------

    def _encrypt(self, session: Session, individual_id: str, field: str, value: Any) -> bytes | None:
        if value is None:
            return None
        if field in LIST_FIELDS:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        else:
            text = str(value)
        return self.vault.encrypt(session, subject_of(individual_id), INDIVIDUAL_TABLE, field, individual_id, text)

    def decrypt_field(self, session: Session, row, field: str) -> Any:
        value = self.vault.decrypt(session, INDIVIDUAL_TABLE, field, row.id, getattr(row, field))
        if value is None or value is ERASED:
            return None
        if field in LIST_FIELDS:
            return json.loads(value)
        if field == "texture_level":
            return int(value)
        return value

    def decrypt_individual(self, session: Session, row, fields: Iterable[str] = ENCRYPTED_FIELDS) -> dict[str, Any]:
        return {f: self.decrypt_field(session, row, f) for f in fields}

    def _personal_values(self, session: Session, tenant: str, body: Mapping[str, Any],
                         current_pnr_blob: bytes | None = None) -> dict[str, Any]:
        """Validated, normalised personal values of a create or change body (only the keys given)."""
        values: dict[str, Any] = {}
        if "name" in body:
            if not normalise_name(body["name"]):
                raise _field_error("name", "must not be blank")
            values["name"] = " ".join(body["name"].split())
        if "personnummer" in body:
            if body["personnummer"] is not None:
                if not self.personnummer_enabled(session, tenant):
                    raise _field_error("personnummer", "is not enabled for this tenant")
                values["personnummer"] = normalise_personnummer(body["personnummer"],
                                                                today=self.now().date())
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
        if values.get("date_of_birth") and date.fromisoformat(values["date_of_birth"]) > self.now().date():
            raise _field_error("date_of_birth", "is in the future")
        return values

    def _individual_row(self, session: Session, principal: Principal, individual_id: str):
        tenant = self.tenant_of(principal)
        return self._one(session, individuals, individual_id, tenant, "individual")

    def create_individual(self, session: Session, principal: Principal, register_id: str,
                          body: Mapping[str, Any]) -> dict[str, Any]:
        tenant = self.tenant_of(principal)
        self._one(session, registers, register_id, tenant, "register")
        self.require(session, principal, register_id, "administer", "register")
        self._check_unit(session, tenant, body.get("unit_id"))
        valid_from, valid_to = _date(body.get("valid_from")), _date(body.get("valid_to"))
        _check_validity(valid_from, valid_to)
        personal = self._personal_values(session, tenant, body)
        individual_id, now = new_id(), self.now()
        row: dict[str, Any] = {
            "id": individual_id, "tenant": tenant, "register_id": register_id, "unit_id": body.get("unit_id"),
            "status": "active", "valid_from": valid_from, "valid_to": valid_to, "created_at": now,
            "updated_at": now, **dict.fromkeys(ENCRYPTED_FIELDS), "name_idx": None, "personnummer_idx": None}
        row.update(self._encrypted_columns(session, individual_id, personal))
        session.execute(insert(individuals).values(**row))
        fields = sorted([k for k, v in personal.items() if v not in (None, [])]
                        + [k for k in ("unit_id", "valid_from", "valid_to") if body.get(k) is not None])
        self.outbox.emit(session, ev.INDIVIDUAL_CREATED, actor=principal.actor, tenant=tenant,
                         subject=subject_of(individual_id), resource={"type": "individual", "id": individual_id},
                         data={"individual_id": individual_id, "register_id": register_id, "fields": fields})
        return self._summary(session, _Row(row))

    def _encrypted_columns(self, session: Session, individual_id: str, personal: Mapping[str, Any]) -> dict:
        columns: dict[str, Any] = {}
        for field, value in personal.items():
            columns[field] = self._encrypt(session, individual_id, field, value)
        if "name" in personal:
            columns["name_idx"] = self.index.name(personal["name"])
        if "personnummer" in personal:
            pnr = personal["personnummer"]
            columns["personnummer_idx"] = self.index.of("personnummer", pnr) if pnr else None
        return columns

    def change_individual(self, session: Session, principal: Principal, individual_id: str,
                          body: Mapping[str, Any]) -> dict[str, Any]:
        row = self._individual_row(session, principal, individual_id)
        tenant = row.tenant
        self.require(session, principal, row.register_id, "administer", "register")
        _check_not_erased(row)
        personal = self._personal_values(session, tenant, body)
        current = self.decrypt_individual(session, row, personal.keys())
        changed_personal = {k: v for k, v in personal.items() if current[k] != v}
        plain: dict[str, Any] = {}
        changes = []
        if "unit_id" in body and body["unit_id"] != row.unit_id:
            self._check_unit(session, tenant, body["unit_id"])
            plain["unit_id"] = body["unit_id"]
            changes.append({"field": "unit_id", "before": row.unit_id, "after": body["unit_id"]})
        for field in ("valid_from", "valid_to"):
            if field in body and _date(body[field]) != getattr(row, field):
                plain[field] = _date(body[field])
        _check_validity(plain.get("valid_from", row.valid_from), plain.get("valid_to", row.valid_to))
        fields = sorted([*changed_personal, *plain])
        if fields:
            values = {**plain, **self._encrypted_columns(session, individual_id, changed_personal),
                      "updated_at": self.now()}
            session.execute(update(individuals).where(individuals.c.id == individual_id).values(**values))
            self.outbox.emit(session, ev.INDIVIDUAL_CHANGED, actor=principal.actor, tenant=tenant,
                             subject=subject_of(individual_id),
                             resource={"type": "individual", "id": individual_id},
                             data={"individual_id": individual_id, "register_id": row.register_id,
                                   "fields": fields, "changes": changes})
        return self._summary(session, session.execute(select(individuals)
                                                      .where(individuals.c.id == individual_id)).one())

    def discharge(self, session: Session, principal: Principal, individual_id: str,
                  body: Mapping[str, Any]) -> dict[str, Any]:
        row = self._individual_row(session, principal, individual_id)
        self.require(session, principal, row.register_id, "administer", "register")
        _check_not_erased(row)
        if row.status == "discharged":
            raise Conflict("the individual is already discharged")
        register = session.execute(select(registers.c.timezone).where(registers.c.id == row.register_id)).one()
        on = _date(body.get("date")) or self.now().astimezone(ZoneInfo(register.timezone)).date()
        if row.valid_from is not None and on < row.valid_from:
            raise _field_error("date", "is before the admission date")
        session.execute(update(individuals).where(individuals.c.id == individual_id).values(
            status="discharged", valid_to=on, updated_at=self.now()))
        self.outbox.emit(session, ev.INDIVIDUAL_DISCHARGED, actor=principal.actor, tenant=row.tenant,
                         subject=subject_of(individual_id), resource={"type": "individual", "id": individual_id},
                         data={"individual_id": individual_id, "register_id": row.register_id})
        return self._summary(session, session.execute(select(individuals)
                                                      .where(individuals.c.id == individual_id)).one())

    def read_individual(self, session: Session, principal: Principal, individual_id: str) -> dict[str, Any]:
        """The whole record, health data included; the read itself is an event (R9, R16)."""
        row = self._individual_row(session, principal, individual_id)
        self.require(session, principal, row.register_id, "view", "register")
        _check_not_erased(row)
        values = self.decrypt_individual(session, row)
        read = [f for f in HEALTH_FIELDS if values[f] not in (None, [])]
        self.outbox.emit(session, ev.INDIVIDUAL_READ, actor=principal.actor, tenant=row.tenant,
                         subject=subject_of(individual_id), resource={"type": "individual", "id": individual_id},
                         data={"individual_id": individual_id, "register_id": row.register_id, "fields": read})
        return {**_individual_plain(row), **values}

    def _summary(self, session: Session, row) -> dict[str, Any]:
        """What lists and searches show: no health data, so reading it is not a health-data read."""
        return {**_individual_plain(row), **self.decrypt_individual(session, row, ("name", "room", "bed"))}

    def individuals_in(self, session: Session, principal: Principal, register_id: str,
                       query: Mapping[str, str]) -> dict[str, Any]:
        tenant = self.tenant_of(principal)
        self._one(session, registers, register_id, tenant, "register")
        self.require(session, principal, register_id, "view", "register")
        limit, offset = int(query.get("limit", 100)), int(query.get("offset", 0))
        statement = select(individuals).where(individuals.c.register_id == register_id,
                                              individuals.c.status != "erased")
        if query.get("status"):
            statement = statement.where(individuals.c.status == query["status"])
        if query.get("unit_id"):
            statement = statement.where(individuals.c.unit_id == query["unit_id"])
        rows = list(session.execute(statement.order_by(individuals.c.created_at, individuals.c.id)
                                    .limit(limit + 1).offset(offset)))
        self.vault.prefetch(session, [r.name for r in rows])
        items = [self._summary(session, r) for r in rows[:limit]]
        return {"items": items, "next_offset": offset + limit if len(rows) > limit else None}

    def search(self, session: Session, principal: Principal, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Find individuals by personnummer or exact name through blind indexes (R7).

        Candidates sharing the truncated index value are decrypted and compared, so the
        result has no false positives; only registers the caller may view are searched.
        """
        tenant = self.tenant_of(principal)
        if "register_id" in body:
            self._one(session, registers, body["register_id"], tenant, "register")
            self.require(session, principal, body["register_id"], "view", "register")
            visible = [body["register_id"]]
        else:
            ids = list(session.scalars(select(registers.c.id).where(registers.c.tenant == tenant)))
            visible = [r for r, held in self.rights_on(session, principal, ids).items() if "view" in held]
        if "personnummer" in body:
            field, wanted = "personnummer", normalise_personnummer(body["personnummer"], today=self.now().date())
            column, value = individuals.c.personnummer_idx, self.index.of("personnummer", wanted)
        else:
            field, wanted = "name", normalise_name(body["name"])
            if not wanted:
                raise _field_error("name", "must not be blank")
            column, value = individuals.c.name_idx, self.index.of("name", wanted)
        if not visible:
            return []
        rows = list(session.execute(select(individuals).where(
            individuals.c.tenant == tenant, column == value, individuals.c.register_id.in_(visible),
            individuals.c.status != "erased").order_by(individuals.c.created_at, individuals.c.id)))
        self.vault.prefetch(session, [getattr(r, field) for r in rows])
        found = []
        for row in rows:
            plain = self.decrypt_field(session, row, field)
            if plain is not None and (plain if field == "personnummer" else normalise_name(plain)) == wanted:
                found.append(self._summary(session, row))
        return found

    # --- orders (R9, R11, R12) --------------------------------------------------------------

    def place_order(self, session: Session, principal: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        """One transaction: two indexed reads (the resources, then the caller's grants) and two inserts."""
        tenant = self.tenant_of(principal)
        register_id, article_id = body["register_id"], body["article_id"]
        individual_id, unit_id = body.get("individual_id"), body.get("unit_id")
        point_id = body.get("delivery_point_id")
        r, a, lst, i, u, p = registers, articles, assortment_lists, individuals, units, delivery_points
        joined = r.outerjoin(a, and_(a.c.id == article_id, a.c.tenant == r.c.tenant)) \
                  .outerjoin(lst, lst.c.id == a.c.list_id)
        columns = [r.c.deadline_minutes, r.c.deadline_days_before, r.c.timezone, a.c.list_id,
                   a.c.active.label("article_active"), lst.c.unit_id.label("list_unit_id")]
        if individual_id is not None:
            joined = joined.outerjoin(i, and_(i.c.id == individual_id, i.c.tenant == r.c.tenant))
            columns += [i.c.id.label("individual_id"), i.c.register_id.label("individual_register_id"),
                        i.c.unit_id.label("individual_unit_id"), i.c.status.label("individual_status"),
                        i.c.valid_from, i.c.valid_to]
        if unit_id is not None:
            joined = joined.outerjoin(u, and_(u.c.id == unit_id, u.c.tenant == r.c.tenant))
            columns.append(u.c.id.label("unit_id"))
        if point_id is not None:
            joined = joined.outerjoin(p, and_(p.c.id == point_id, p.c.tenant == r.c.tenant))
            columns.append(p.c.unit_id.label("point_unit_id"))
        row = session.execute(select(*columns).select_from(joined)
                              .where(r.c.id == register_id, r.c.tenant == tenant)).first()
        if row is None:
            raise NotFound("no such register")
        rights = self.rights_on(session, principal, [register_id, row.list_id])
        if "order" not in rights[register_id]:
            raise AccessDenied("you need the 'order' right on this register")
        if row.list_id is None:
            raise _field_error("article_id", "names no article of this tenant")
        if "order" not in rights[row.list_id]:
            raise AccessDenied("you need the 'order' right on the article's assortment list")
        if not row.article_active:
            raise _field_error("article_id", "is withdrawn from its assortment list")
        delivery_date = date.fromisoformat(body["delivery_date"])
        if unit_id is not None and row.unit_id is None:
            raise _field_error("unit_id", "names no unit of this tenant")
        if individual_id is not None:
            if row.individual_id is None or row.individual_register_id != register_id:
                raise _field_error("individual_id", "names no individual in this register")
            _check_orderable(row.individual_status, row.valid_from, row.valid_to, delivery_date)
            if unit_id is not None and row.individual_unit_id is not None and unit_id != row.individual_unit_id:
                raise _field_error("unit_id", "is not the individual's unit")
            unit_id = unit_id or row.individual_unit_id
        if unit_id is None:
            raise _field_error("unit_id", "is required unless the order is for an individual with a unit")
        if row.list_unit_id is not None and row.list_unit_id != unit_id:
            raise _field_error("article_id", "is not in an assortment list of this unit")
        if point_id is not None and row.point_unit_id != unit_id:
            raise _field_error("delivery_point_id", "names no delivery point of this unit")
        now = self.now()
        Deadline.of(row).check(delivery_date, now, "placed")
        order = {"id": new_id(), "tenant": tenant, "register_id": register_id, "unit_id": unit_id,
                 "individual_id": individual_id, "delivery_point_id": point_id, "article_id": article_id,
                 "delivery_date": delivery_date, "meal": body["meal"], "quantity": body["quantity"],
                 "diet_variant": body.get("diet_variant"), "status": "placed", "placed_at": now,
                 "placed_by": principal.user_id, "updated_at": now, "deidentified": False}
        session.execute(insert(orders).values(**order))
        self.outbox.emit(session, ev.ORDER_PLACED, actor=principal.actor, tenant=tenant,
                         subject=subject_of(individual_id) if individual_id else None,
                         resource={"type": "order", "id": order["id"]},
                         data={"order_id": order["id"], "register_id": register_id, "unit_id": unit_id,
                               "individual_id": individual_id, "article_id": article_id,
                               "delivery_date": delivery_date.isoformat(), "meal": order["meal"],
                               "quantity": order["quantity"]})
        return _order(_Row(order))

    def _order_for_update(self, session: Session, principal: Principal, order_id: str):
        tenant = self.tenant_of(principal)
        row = session.execute(
            select(orders, registers.c.deadline_minutes, registers.c.deadline_days_before, registers.c.timezone,
                   articles.c.list_id)
            .select_from(orders.join(registers, registers.c.id == orders.c.register_id)
                         .join(articles, articles.c.id == orders.c.article_id))
            .where(orders.c.id == order_id, orders.c.tenant == tenant)).first()
        if row is None:
            raise NotFound("no such order")
        return row

    def change_order(self, session: Session, principal: Principal, order_id: str,
                     body: Mapping[str, Any]) -> dict[str, Any]:
        row = self._order_for_update(session, principal, order_id)
        new_article = None
        if "article_id" in body and body["article_id"] != row.article_id:
            new_article = session.execute(
                select(articles.c.id, articles.c.list_id, articles.c.active, assortment_lists.c.unit_id)
                .select_from(articles.join(assortment_lists, assortment_lists.c.id == articles.c.list_id))
                .where(articles.c.id == body["article_id"], articles.c.tenant == row.tenant)).first()
        rights = self.rights_on(session, principal, [row.register_id, row.list_id,
                                                     new_article.list_id if new_article else None])
        if "change" not in rights[row.register_id]:
            raise AccessDenied("you need the 'change' right on this register")
        if "change" not in rights[row.list_id]:
            raise AccessDenied("you need the 'change' right on the article's assortment list")
        if row.status == "cancelled":
            raise Conflict("the order is cancelled and can no longer be changed")
        if "article_id" in body and body["article_id"] != row.article_id:
            if new_article is None:
                raise _field_error("article_id", "names no article of this tenant")
            if "change" not in rights[new_article.list_id]:
                raise AccessDenied("you need the 'change' right on the new article's assortment list")
            if not new_article.active:
                raise _field_error("article_id", "is withdrawn from its assortment list")
            if new_article.unit_id is not None and new_article.unit_id != row.unit_id:
                raise _field_error("article_id", "is not in an assortment list of this unit")
        now = self.now()
        deadline = Deadline.of(row)
        deadline.check(row.delivery_date, now, "changed")
        after: dict[str, Any] = {}
        for field in ("quantity", "meal", "article_id", "delivery_point_id", "diet_variant"):
            if field in body and body[field] != getattr(row, field):
                after[field] = body[field]
        if "delivery_date" in body and date.fromisoformat(body["delivery_date"]) != row.delivery_date:
            after["delivery_date"] = date.fromisoformat(body["delivery_date"])
            deadline.check(after["delivery_date"], now, "placed")
            if row.individual_id is not None:
                person = session.execute(select(individuals.c.status, individuals.c.valid_from,
                                                individuals.c.valid_to)
                                         .where(individuals.c.id == row.individual_id)).one()
                _check_orderable(person.status, person.valid_from, person.valid_to, after["delivery_date"])
        if after.get("delivery_point_id") is not None and session.execute(select(delivery_points.c.id).where(
                delivery_points.c.id == after["delivery_point_id"],
                delivery_points.c.unit_id == row.unit_id)).first() is None:
            raise _field_error("delivery_point_id", "names no delivery point of this unit")
        if not after:
            return _order(row)
        changes = [_change(field, getattr(row, field), value) for field, value in after.items()]
        session.execute(update(orders).where(orders.c.id == order_id).values(**after, updated_at=now))
        session.execute(insert(order_changes).values(order_id=order_id, tenant=row.tenant, at=now,
                                                     actor=principal.user_id, action="changed", changes=changes))
        self.outbox.emit(session, ev.ORDER_CHANGED, actor=principal.actor, tenant=row.tenant,
                         subject=subject_of(row.individual_id) if row.individual_id else None,
                         resource={"type": "order", "id": order_id},
                         data={"order_id": order_id, "register_id": row.register_id,
                               "fields": [c["field"] for c in changes],
                               "changes": [c for c in changes if "before" in c]})
        return _order(_Row({**row._mapping, **after, "updated_at": now}))

    def cancel_order(self, session: Session, principal: Principal, order_id: str) -> dict[str, Any]:
        row = self._order_for_update(session, principal, order_id)
        rights = self.rights_on(session, principal, [row.register_id, row.list_id])
        if "change" not in rights[row.register_id]:
            raise AccessDenied("you need the 'change' right on this register")
        if "change" not in rights[row.list_id]:
            raise AccessDenied("you need the 'change' right on the article's assortment list")
        if row.status == "cancelled":
            raise Conflict("the order is already cancelled")
        now = self.now()
        Deadline.of(row).check(row.delivery_date, now, "cancelled")
        session.execute(update(orders).where(orders.c.id == order_id).values(status="cancelled", updated_at=now))
        session.execute(insert(order_changes).values(
            order_id=order_id, tenant=row.tenant, at=now, actor=principal.user_id, action="cancelled",
            changes=[{"field": "status", "before": "placed", "after": "cancelled"}]))
        self.outbox.emit(session, ev.ORDER_CANCELLED, actor=principal.actor, tenant=row.tenant,
                         subject=subject_of(row.individual_id) if row.individual_id else None,
                         resource={"type": "order", "id": order_id},
                         data={"order_id": order_id, "register_id": row.register_id})
        return _order(_Row({**row._mapping, "status": "cancelled", "updated_at": now}))

    def _viewable_order(self, session: Session, principal: Principal, order_id: str):
        tenant = self.tenant_of(principal)
        row = self._one(session, orders, order_id, tenant, "order")
        self.require(session, principal, row.register_id, "view", "register")
        return row

    def order(self, session: Session, principal: Principal, order_id: str) -> dict[str, Any]:
        return _order(self._viewable_order(session, principal, order_id))

    def history(self, session: Session, principal: Principal, order_id: str) -> list[dict[str, Any]]:
        """Who placed, changed and cancelled the order, and when, from this service's own tables."""
        row = self._viewable_order(session, principal, order_id)
        later = [{"at": _iso(c.at), "actor": c.actor, "action": c.action, "changes": c.changes}
                 for c in session.execute(select(order_changes).where(order_changes.c.order_id == order_id)
                                          .order_by(order_changes.c.id))]
        # The values as placed: today's values with the recorded changes undone, newest first.
        placed = {"delivery_date": _iso(row.delivery_date), "meal": row.meal, "article_id": row.article_id,
                  "quantity": row.quantity}
        for entry in reversed(later):
            for change in entry["changes"]:
                if change["field"] in placed and "before" in change:
                    placed[change["field"]] = change["before"]
        entries = [{"at": _iso(row.placed_at), "actor": row.placed_by, "action": "placed",
                    "changes": [{"field": f, "after": v} for f, v in placed.items()]}, *later]
        return entries

    def orders_in(self, session: Session, principal: Principal, register_id: str,
                  query: Mapping[str, str]) -> dict[str, Any]:
        tenant = self.tenant_of(principal)
        self._one(session, registers, register_id, tenant, "register")
        self.require(session, principal, register_id, "view", "register")
        limit, offset = int(query.get("limit", 200)), int(query.get("offset", 0))
        statement = select(orders).where(orders.c.register_id == register_id)
        if query.get("delivery_date"):
            statement = statement.where(orders.c.delivery_date == date.fromisoformat(query["delivery_date"]))
        if query.get("from"):
            statement = statement.where(orders.c.delivery_date >= date.fromisoformat(query["from"]))
        if query.get("to"):
            statement = statement.where(orders.c.delivery_date <= date.fromisoformat(query["to"]))
        for field in ("status", "unit_id", "individual_id", "meal"):
            if query.get(field):
                statement = statement.where(orders.c[field] == query[field])
        rows = list(session.execute(statement.order_by(orders.c.delivery_date, orders.c.placed_at, orders.c.id)
                                    .limit(limit + 1).offset(offset)))
        return {"items": [_order(r) for r in rows[:limit]],
                "next_offset": offset + limit if len(rows) > limit else None}


# --- rules and shapes shared by the operations ----------------------------------------------

def _check_validity(valid_from: date | None, valid_to: date | None) -> None:
    if valid_from is not None and valid_to is not None and valid_to < valid_from:
        raise _field_error("valid_to", "is before valid_from")


def _check_not_erased(row) -> None:
    if row.status == "erased":
        raise Gone("this individual was erased on request")


def _check_orderable(status: str, valid_from: date | None, valid_to: date | None, delivery_date: date) -> None:
    """No orders for an erased or discharged individual, nor before admission."""
    if status == "erased":
        raise Conflict("the individual was erased; no orders can be placed for them")
    # A discharge records its date in valid_to: meals up to and including that day can be ordered.
    if (valid_to is not None and delivery_date > valid_to) or (status == "discharged" and valid_to is None):
        raise Conflict("the individual is discharged before that delivery date")
    if valid_from is not None and delivery_date < valid_from:
        raise Conflict("the individual is not yet admitted on that delivery date")


def _change(field: str, before: Any, after: Any) -> dict[str, Any]:
    if field not in ev.ORDER_VALUE_FIELDS:
        return {"field": field}             # the diet variant is named, its values stay out of the log
    if isinstance(before, date):
        before, after = before.isoformat(), after.isoformat()
    return {"field": field, "before": before, "after": after}


class _Row:
    """Attribute access over a dict, so freshly inserted values share the shapers with fetched rows."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)
        self._mapping = values


def _unit(row) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "kind": row.kind, "created_at": _iso(row.created_at)}


def _register(row) -> dict[str, Any]:
    return {"id": row.id, "name": row.name,
            "deadline": {"time": format_deadline_time(row.deadline_minutes), "days_before": row.deadline_days_before},
            "timezone": row.timezone, "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at)}


def _register_values(shape: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": shape["name"], "deadline_time": shape["deadline"]["time"],
            "deadline_days_before": shape["deadline"]["days_before"], "timezone": shape["timezone"]}


def _list(row) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "unit_id": row.unit_id, "created_at": _iso(row.created_at)}


def _article(row) -> dict[str, Any]:
    return {"id": row.id, "list_id": row.list_id, "code": row.code, "name": row.name, "kind": row.kind,
            "active": bool(row.active)}


def _grant(row) -> dict[str, Any]:
    return {"id": row.id, "resource_type": row.resource_type, "resource_id": row.resource_id,
            "principal": {"type": row.principal_type, "id": row.principal_id}, "right": row.access_right,
            "created_at": _iso(row.created_at), "created_by": row.created_by}


def _grant_event(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"grant_id": row["id"], "resource_type": row["resource_type"], "resource_id": row["resource_id"],
            "principal_type": row["principal_type"], "principal_id": row["principal_id"],
            "right": row["access_right"]}


def _individual_plain(row) -> dict[str, Any]:
    return {"id": row.id, "register_id": row.register_id, "unit_id": row.unit_id, "status": row.status,
            "valid_from": _iso(row.valid_from), "valid_to": _iso(row.valid_to)}


def _order(row) -> dict[str, Any]:
    return {"id": row.id, "register_id": row.register_id, "unit_id": row.unit_id,
            "individual_id": row.individual_id, "delivery_point_id": row.delivery_point_id,
            "article_id": row.article_id, "delivery_date": _iso(row.delivery_date), "meal": row.meal,
            "quantity": row.quantity, "diet_variant": row.diet_variant, "status": row.status,
            "placed_at": _iso(row.placed_at), "placed_by": row.placed_by,
            "updated_at": _iso(row.updated_at), "deidentified": bool(row.deidentified)}
