"""A tenant's set-up: its settings, units and delivery points, order registers, assortment lists and articles.

Settings, units, new registers and new lists are for the tenant's administrators; a register's
name and deadline, and a list's articles, need ``administer`` on that register or list (R8, R12).
Every change is an event in the caller's transaction (R9, R11).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from shared.errors import AccessDenied, Conflict, NotFound
from shared.tokens import Principal

from . import events as ev
from .access import one, require, require_admin, rights_on, tenant_of
from .base import Deps, Record, new_id
from .models import articles, assortment_lists, delivery_points, registers, tenant_settings, units
from .rules import check_timezone, field_error, format_deadline_time, parse_deadline_time


@dataclass(frozen=True)
class TenantSettings:
    personnummer_enabled: bool  # off until the tenant's administrator enables it
    updated_at: datetime | None


@dataclass(frozen=True)
class UnitWithPoints:
    unit: Any
    delivery_points: Sequence[Any]


@dataclass(frozen=True)
class Held:
    """A register or assortment list with the rights the caller holds on it."""

    row: Any
    rights: frozenset[str]


@dataclass(frozen=True)
class ListWithArticles:
    row: Any
    rights: frozenset[str]
    articles: Sequence[Any]


def personnummer_enabled(session: Session, tenant: str) -> bool:
    return bool(
        session.scalar(select(tenant_settings.c.personnummer_enabled).where(tenant_settings.c.tenant == tenant))
    )


def check_unit(session: Session, tenant: str, unit_id: str | None, field: str = "unit_id") -> None:
    """A unit named in a body must be one of the tenant's (None: no unit)."""
    if (
        unit_id is not None
        and session.execute(select(units.c.id).where(units.c.id == unit_id, units.c.tenant == tenant)).first() is None
    ):
        raise field_error(field, "names no unit of this tenant")


def _register_values(name: str, deadline_minutes: int, deadline_days_before: int, timezone: str) -> dict[str, Any]:
    """A register's settings as its change event names them (ev.REGISTER_VALUE_FIELDS)."""
    return {
        "name": name,
        "deadline_time": format_deadline_time(deadline_minutes),
        "deadline_days_before": deadline_days_before,
        "timezone": timezone,
    }


class Catalogue:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    # --- tenant settings ----------------------------------------------------------------------

    def settings(self, session: Session, principal: Principal) -> TenantSettings:
        tenant = tenant_of(principal)
        require_admin(principal)
        row = session.execute(select(tenant_settings).where(tenant_settings.c.tenant == tenant)).first()
        if row is None:
            return TenantSettings(personnummer_enabled=False, updated_at=None)
        return TenantSettings(personnummer_enabled=bool(row.personnummer_enabled), updated_at=row.updated_at)

    def update_settings(self, session: Session, principal: Principal, body: Mapping[str, Any]) -> TenantSettings:
        tenant = tenant_of(principal)
        require_admin(principal)
        before = personnummer_enabled(session, tenant)
        after = bool(body["personnummer_enabled"])
        exists = session.execute(select(tenant_settings.c.tenant).where(tenant_settings.c.tenant == tenant)).first()
        values = {"personnummer_enabled": after, "updated_at": self.deps.now(), "updated_by": principal.user_id}
        if exists:
            session.execute(update(tenant_settings).where(tenant_settings.c.tenant == tenant).values(**values))
        else:
            session.execute(insert(tenant_settings).values(tenant=tenant, **values))
        if before != after:
            self.deps.outbox.emit(
                session,
                ev.SETTINGS_CHANGED,
                actor=principal.actor,
                tenant=tenant,
                resource={"type": "tenant_settings", "id": tenant},
                data={
                    "fields": ["personnummer_enabled"],
                    "changes": [{"field": "personnummer_enabled", "before": before, "after": after}],
                },
            )
        return self.settings(session, principal)

    # --- units and delivery points --------------------------------------------------------------

    def create_unit(self, session: Session, principal: Principal, body: Mapping[str, Any]) -> UnitWithPoints:
        tenant = tenant_of(principal)
        require_admin(principal)
        row = {
            "id": new_id(),
            "tenant": tenant,
            "name": body["name"].strip(),
            "kind": body["kind"],
            "created_at": self.deps.now(),
        }
        session.execute(insert(units).values(**row))
        self.deps.outbox.emit(
            session,
            ev.UNIT_CREATED,
            actor=principal.actor,
            tenant=tenant,
            resource={"type": "unit", "id": row["id"]},
            data={"unit_id": row["id"], "kind": row["kind"]},
        )
        return self.unit(session, principal, row["id"])

    def units(self, session: Session, principal: Principal) -> list:
        tenant = tenant_of(principal)
        return list(session.execute(select(units).where(units.c.tenant == tenant).order_by(units.c.name, units.c.id)))

    def unit(self, session: Session, principal: Principal, unit_id: str) -> UnitWithPoints:
        tenant = tenant_of(principal)
        row = one(session, units, unit_id, tenant, "unit")
        points = session.execute(
            select(delivery_points)
            .where(delivery_points.c.unit_id == unit_id)
            .order_by(delivery_points.c.name, delivery_points.c.id)
        )
        return UnitWithPoints(row, list(points))

    def add_delivery_point(
        self, session: Session, principal: Principal, unit_id: str, body: Mapping[str, Any]
    ) -> Record:
        tenant = tenant_of(principal)
        one(session, units, unit_id, tenant, "unit")
        require_admin(principal)
        row = {
            "id": new_id(),
            "tenant": tenant,
            "unit_id": unit_id,
            "name": body["name"].strip(),
            "created_at": self.deps.now(),
        }
        session.execute(insert(delivery_points).values(**row))
        self.deps.outbox.emit(
            session,
            ev.DELIVERY_POINT_CREATED,
            actor=principal.actor,
            tenant=tenant,
            resource={"type": "unit", "id": unit_id},
            data={"unit_id": unit_id, "delivery_point_id": row["id"]},
        )
        return Record(row)

    # --- order registers ------------------------------------------------------------------------

    def create_register(self, session: Session, principal: Principal, body: Mapping[str, Any]) -> Held:
        tenant = tenant_of(principal)
        require_admin(principal)
        deadline = body.get("deadline") or {}
        now = self.deps.now()
        row = {
            "id": new_id(),
            "tenant": tenant,
            "name": body["name"].strip(),
            "deadline_minutes": parse_deadline_time(deadline.get("time", "12:00")),
            "deadline_days_before": deadline.get("days_before", 1),
            "timezone": check_timezone(body.get("timezone") or self.deps.default_timezone),
            "created_at": now,
            "updated_at": now,
        }
        session.execute(insert(registers).values(**row))
        self.deps.outbox.emit(
            session,
            ev.REGISTER_CREATED,
            actor=principal.actor,
            tenant=tenant,
            resource={"type": "register", "id": row["id"]},
            data={"register_id": row["id"]},
        )
        return self.register(session, principal, row["id"])

    def registers(self, session: Session, principal: Principal) -> list[Held]:
        """The registers the caller holds any right on (every one, for a tenant administrator)."""
        tenant = tenant_of(principal)
        rows = list(
            session.execute(
                select(registers).where(registers.c.tenant == tenant).order_by(registers.c.name, registers.c.id)
            )
        )
        rights = rights_on(session, principal, [r.id for r in rows])
        return [Held(r, frozenset(rights[r.id])) for r in rows if rights[r.id]]

    def register(self, session: Session, principal: Principal, register_id: str) -> Held:
        tenant = tenant_of(principal)
        row = one(session, registers, register_id, tenant, "register")
        held = rights_on(session, principal, [register_id])[register_id]
        if not held:
            raise AccessDenied("you hold no right on this register")
        return Held(row, frozenset(held))

    def change_register(
        self, session: Session, principal: Principal, register_id: str, body: Mapping[str, Any]
    ) -> Held:
        tenant = tenant_of(principal)
        row = one(session, registers, register_id, tenant, "register")
        require(session, principal, register_id, "administer", "register")
        values: dict[str, Any] = {}
        if "name" in body:
            values["name"] = body["name"].strip()
        if "deadline" in body:
            deadline = body["deadline"]
            if "time" in deadline:
                values["deadline_minutes"] = parse_deadline_time(deadline["time"])
            if "days_before" in deadline:
                values["deadline_days_before"] = deadline["days_before"]
        if "timezone" in body:
            values["timezone"] = check_timezone(body["timezone"])
        current = {k: getattr(row, k) for k in ("name", "deadline_minutes", "deadline_days_before", "timezone")}
        before, after = _register_values(**current), _register_values(**{**current, **values})
        changes = [
            {"field": f, "before": before[f], "after": after[f]}
            for f in ev.REGISTER_VALUE_FIELDS
            if before[f] != after[f]
        ]
        if changes:
            session.execute(
                update(registers).where(registers.c.id == register_id).values(**values, updated_at=self.deps.now())
            )
            self.deps.outbox.emit(
                session,
                ev.REGISTER_CHANGED,
                actor=principal.actor,
                tenant=tenant,
                resource={"type": "register", "id": register_id},
                data={"register_id": register_id, "fields": [c["field"] for c in changes], "changes": changes},
            )
        return self.register(session, principal, register_id)

    # --- assortment lists and articles ----------------------------------------------------------

    def create_list(self, session: Session, principal: Principal, body: Mapping[str, Any]) -> ListWithArticles:
        tenant = tenant_of(principal)
        require_admin(principal)
        check_unit(session, tenant, body.get("unit_id"))
        list_id = new_id()
        session.execute(
            insert(assortment_lists).values(
                id=list_id,
                tenant=tenant,
                name=body["name"].strip(),
                unit_id=body.get("unit_id"),
                created_at=self.deps.now(),
            )
        )
        self.deps.outbox.emit(
            session,
            ev.ASSORTMENT_LIST_CREATED,
            actor=principal.actor,
            tenant=tenant,
            resource={"type": "assortment_list", "id": list_id},
            data={"list_id": list_id, "unit_id": body.get("unit_id")},
        )
        return self.assortment_list(session, principal, list_id)

    def lists(self, session: Session, principal: Principal) -> list[Held]:
        tenant = tenant_of(principal)
        rows = list(
            session.execute(
                select(assortment_lists)
                .where(assortment_lists.c.tenant == tenant)
                .order_by(assortment_lists.c.name, assortment_lists.c.id)
            )
        )
        rights = rights_on(session, principal, [r.id for r in rows])
        return [Held(r, frozenset(rights[r.id])) for r in rows if rights[r.id]]

    def assortment_list(self, session: Session, principal: Principal, list_id: str) -> ListWithArticles:
        tenant = tenant_of(principal)
        row = one(session, assortment_lists, list_id, tenant, "assortment list")
        held = rights_on(session, principal, [list_id])[list_id]
        if not held.intersection({"view", "administer"}):
            raise AccessDenied("you need the 'view' right on this assortment list")
        items = session.execute(select(articles).where(articles.c.list_id == list_id).order_by(articles.c.code))
        return ListWithArticles(row, frozenset(held), list(items))

    def add_article(self, session: Session, principal: Principal, list_id: str, body: Mapping[str, Any]) -> Record:
        tenant = tenant_of(principal)
        one(session, assortment_lists, list_id, tenant, "assortment list")
        require(session, principal, list_id, "administer", "assortment list")
        if session.execute(
            select(articles.c.id).where(articles.c.list_id == list_id, articles.c.code == body["code"])
        ).first():
            raise Conflict(
                "this assortment list already has an article with that code",
                errors=[{"field": "code", "message": "is already used in this list"}],
            )
        row = {
            "id": new_id(),
            "tenant": tenant,
            "list_id": list_id,
            "code": body["code"],
            "name": body["name"].strip(),
            "kind": body["kind"],
            "active": body.get("active", True),
            "created_at": self.deps.now(),
        }
        session.execute(insert(articles).values(**row))
        self.deps.outbox.emit(
            session,
            ev.ARTICLE_CREATED,
            actor=principal.actor,
            tenant=tenant,
            resource={"type": "assortment_list", "id": list_id},
            data={"list_id": list_id, "article_id": row["id"], "kind": row["kind"]},
        )
        return Record(row)

    def change_article(
        self, session: Session, principal: Principal, list_id: str, article_id: str, body: Mapping[str, Any]
    ):
        tenant = tenant_of(principal)
        one(session, assortment_lists, list_id, tenant, "assortment list")
        row = session.execute(
            select(articles).where(articles.c.id == article_id, articles.c.list_id == list_id)
        ).first()
        if row is None:
            raise NotFound("no such article")
        require(session, principal, list_id, "administer", "assortment list")
        values = {k: (body[k].strip() if k == "name" else body[k]) for k in ev.ARTICLE_VALUE_FIELDS if k in body}
        changes = [
            {"field": k, "before": getattr(row, k), "after": v} for k, v in values.items() if getattr(row, k) != v
        ]
        if changes:
            session.execute(
                update(articles).where(articles.c.id == article_id).values(**{c["field"]: c["after"] for c in changes})
            )
            self.deps.outbox.emit(
                session,
                ev.ARTICLE_CHANGED,
                actor=principal.actor,
                tenant=tenant,
                resource={"type": "assortment_list", "id": list_id},
                data={
                    "list_id": list_id,
                    "article_id": article_id,
                    "fields": [c["field"] for c in changes],
                    "changes": changes,
                },
            )
        return session.execute(select(articles).where(articles.c.id == article_id)).one()
