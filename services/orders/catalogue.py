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

from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from shared.errors import AccessDenied, Conflict, NotFound
from shared.events import EventType
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

    # --- what every change here does ------------------------------------------------------------

    def _emit(
        self,
        session: Session,
        principal: Principal,
        event: EventType,
        resource: tuple[str, str],
        data: dict[str, Any],
    ) -> None:
        """The change's event in the caller's transaction (R9, R11), on ``resource`` (type, id)."""
        kind, resource_id = resource
        self.deps.outbox.emit(
            session,
            event,
            actor=principal.actor,
            tenant=tenant_of(principal),
            resource={"type": kind, "id": resource_id},
            data=data,
        )

    def _add(
        self,
        session: Session,
        principal: Principal,
        table: Table,
        row: dict[str, Any],
        event: EventType,
        resource: tuple[str, str],
        data: dict[str, Any],
    ) -> Record:
        """Insert ``row`` into ``table`` and say so in ``event``; the row as a record."""
        session.execute(insert(table).values(**row))
        self._emit(session, principal, event, resource, data)
        return Record(row)

    def _emit_changes(
        self,
        session: Session,
        principal: Principal,
        event: EventType,
        resource: tuple[str, str],
        ids: dict[str, str],
        changes: list[dict[str, Any]],
    ) -> None:
        """A change event: the ids of what changed, then which fields, each with its before and after."""
        self._emit(
            session, principal, event, resource, {**ids, "fields": [c["field"] for c in changes], "changes": changes}
        )

    def _held(self, session: Session, principal: Principal, table: Table) -> list[Held]:
        """The tenant's registers or lists (``table``) the caller holds any right on, by name."""
        rows = list(
            session.execute(
                select(table).where(table.c.tenant == tenant_of(principal)).order_by(table.c.name, table.c.id)
            )
        )
        rights = rights_on(session, principal, [r.id for r in rows])
        return [Held(r, frozenset(rights[r.id])) for r in rows if rights[r.id]]

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
            self._emit_changes(
                session,
                principal,
                ev.SETTINGS_CHANGED,
                ("tenant_settings", tenant),
                {},
                [{"field": "personnummer_enabled", "before": before, "after": after}],
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
        self._add(
            session,
            principal,
            units,
            row,
            ev.UNIT_CREATED,
            ("unit", row["id"]),
            {"unit_id": row["id"], "kind": row["kind"]},
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
        return self._add(
            session,
            principal,
            delivery_points,
            row,
            ev.DELIVERY_POINT_CREATED,
            ("unit", unit_id),
            {"unit_id": unit_id, "delivery_point_id": row["id"]},
        )

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
        self._add(
            session, principal, registers, row, ev.REGISTER_CREATED, ("register", row["id"]), {"register_id": row["id"]}
        )
        return self.register(session, principal, row["id"])

    def registers(self, session: Session, principal: Principal) -> list[Held]:
        """The registers the caller holds any right on (every one, for a tenant administrator)."""
        return self._held(session, principal, registers)

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
            self._emit_changes(
                session,
                principal,
                ev.REGISTER_CHANGED,
                ("register", register_id),
                {"register_id": register_id},
                changes,
            )
        return self.register(session, principal, register_id)

    # --- assortment lists and articles ----------------------------------------------------------

    def create_list(self, session: Session, principal: Principal, body: Mapping[str, Any]) -> ListWithArticles:
        tenant = tenant_of(principal)
        require_admin(principal)
        check_unit(session, tenant, body.get("unit_id"))
        row = {
            "id": new_id(),
            "tenant": tenant,
            "name": body["name"].strip(),
            "unit_id": body.get("unit_id"),
            "created_at": self.deps.now(),
        }
        self._add(
            session,
            principal,
            assortment_lists,
            row,
            ev.ASSORTMENT_LIST_CREATED,
            ("assortment_list", row["id"]),
            {"list_id": row["id"], "unit_id": row["unit_id"]},
        )
        return self.assortment_list(session, principal, row["id"])

    def lists(self, session: Session, principal: Principal) -> list[Held]:
        """The assortment lists the caller holds any right on."""
        return self._held(session, principal, assortment_lists)

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
        return self._add(
            session,
            principal,
            articles,
            row,
            ev.ARTICLE_CREATED,
            ("assortment_list", list_id),
            {"list_id": list_id, "article_id": row["id"], "kind": row["kind"]},
        )

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
            self._emit_changes(
                session,
                principal,
                ev.ARTICLE_CHANGED,
                ("assortment_list", list_id),
                {"list_id": list_id, "article_id": article_id},
                changes,
            )
        return session.execute(select(articles).where(articles.c.id == article_id)).one()
