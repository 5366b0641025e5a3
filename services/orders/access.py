"""Who may do what (R8, R12): tenant scoping, rights per register and assortment list, and the grants behind them.

The checks are functions every aggregate calls with its session and the caller; ``Access``
manages the grants themselves (list, grant, revoke), each change an event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import and_, bindparam, delete, exists, insert, or_, select
from sqlalchemy.orm import Session

from shared.errors import AccessDenied, NotFound
from shared.tokens import Principal

from . import events as ev
from .base import Deps, Record, new_id
from .models import assortment_lists, grants, registers
from .rules import TENANT_ADMIN

# The resources rights are granted on, and how messages name them.
GRANTABLE = {"register": (registers, "register"), "assortment_list": (assortment_lists, "assortment list")}


def tenant_of(principal: Principal) -> str:
    """The caller's tenant; a caller without one sees no orders data at all (the vendor is only processor)."""
    if not principal.tenant:
        raise NotFound("no such resource")
    return principal.tenant


def is_tenant_admin(principal: Principal) -> bool:
    return TENANT_ADMIN in principal.roles and bool(principal.tenant)


def require_admin(principal: Principal) -> None:
    if not is_tenant_admin(principal):
        raise AccessDenied("only the tenant's administrators may do this")


def one(session: Session, table, row_id: str, tenant: str, what: str = "resource"):
    """The tenant's row with that id; another tenant's row does not exist for the caller (404)."""
    row = session.execute(select(table).where(table.c.id == row_id, table.c.tenant == tenant)).first()
    if row is None:
        raise NotFound(f"no such {what}")
    return row


def rights_on(session: Session, principal: Principal, resource_ids: Iterable[str | None]) -> dict[str, set[str]]:
    """The caller's rights per resource: its own grants plus its directory groups' (one indexed query)."""
    ids = [r for r in dict.fromkeys(resource_ids) if r]
    rights: dict[str, set[str]] = {r: set() for r in ids}
    if not ids:
        return rights
    who = and_(grants.c.principal_type == "user", grants.c.principal_id == principal.user_id)
    if principal.groups:
        who = or_(who, and_(grants.c.principal_type == "group", grants.c.principal_id.in_(sorted(principal.groups))))
    rows = session.execute(
        select(grants.c.resource_id, grants.c.access_right).where(
            grants.c.resource_id.in_(ids), grants.c.tenant == principal.tenant, who
        )
    )
    for resource_id, right in rows:
        rights[resource_id].add(right)
    if is_tenant_admin(principal):
        # The tenant's administrators administer every register and list of their tenant
        # (so someone can always grant), but read or order only with an explicit grant.
        for held in rights.values():
            held.add("administer")
    return rights


def holds(resource, right: str):
    """SQL: the caller holds ``right`` on ``resource`` (a column) by its own grant or one of its groups' —
    what ``rights_on`` reads, as an expression a query can carry (``caller_params`` binds the caller)."""
    g = grants.alias("caller_grants")
    who = or_(
        and_(g.c.principal_type == "user", g.c.principal_id == bindparam("caller_id")),
        and_(g.c.principal_type == "group", g.c.principal_id.in_(bindparam("caller_groups", expanding=True))),
    )
    return exists().where(
        g.c.resource_id == resource, g.c.tenant == bindparam("caller_tenant"), g.c.access_right == right, who
    )


def caller_params(principal: Principal) -> dict[str, Any]:
    return {
        "caller_id": principal.user_id,
        "caller_groups": sorted(principal.groups or ()),
        "caller_tenant": principal.tenant,
    }


def require(session: Session, principal: Principal, resource_id: str, right: str, what: str) -> None:
    if right not in rights_on(session, principal, [resource_id])[resource_id]:
        raise AccessDenied(f"you need the '{right}' right on this {what}")


class Access:
    """The grants on registers and assortment lists; managing them needs ``administer`` on the resource."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def _resource(self, session: Session, principal: Principal, resource_type: str, resource_id: str) -> str:
        tenant = tenant_of(principal)
        table, what = GRANTABLE[resource_type]
        one(session, table, resource_id, tenant, what)
        require(session, principal, resource_id, "administer", what)
        return tenant

    def grants(self, session: Session, principal: Principal, resource_type: str, resource_id: str) -> list:
        self._resource(session, principal, resource_type, resource_id)
        return list(
            session.execute(
                select(grants).where(grants.c.resource_id == resource_id).order_by(grants.c.created_at, grants.c.id)
            )
        )

    def grant(
        self, session: Session, principal: Principal, resource_type: str, resource_id: str, body: Mapping[str, Any]
    ) -> tuple[Any, bool]:
        """Give a user or directory group a right; (grant, created).  Granting twice changes nothing."""
        tenant = self._resource(session, principal, resource_type, resource_id)
        who, right = body["principal"], body["right"]
        existing = session.execute(
            select(grants).where(
                grants.c.resource_id == resource_id,
                grants.c.principal_type == who["type"],
                grants.c.principal_id == who["id"],
                grants.c.access_right == right,
            )
        ).first()
        if existing is not None:
            return existing, False
        row = {
            "id": new_id(),
            "tenant": tenant,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "principal_type": who["type"],
            "principal_id": who["id"],
            "access_right": right,
            "created_at": self.deps.now(),
            "created_by": principal.user_id,
        }
        session.execute(insert(grants).values(**row))
        self.deps.outbox.emit(
            session,
            ev.ACCESS_GRANTED,
            actor=principal.actor,
            tenant=tenant,
            resource={"type": resource_type, "id": resource_id},
            data=_grant_event(row),
        )
        return Record(row), True

    def revoke(
        self, session: Session, principal: Principal, resource_type: str, resource_id: str, grant_id: str
    ) -> None:
        tenant = self._resource(session, principal, resource_type, resource_id)
        row = session.execute(
            select(grants).where(grants.c.id == grant_id, grants.c.resource_id == resource_id)
        ).first()
        if row is None:
            raise NotFound("no such grant")
        session.execute(delete(grants).where(grants.c.id == grant_id))
        self.deps.outbox.emit(
            session,
            ev.ACCESS_REVOKED,
            actor=principal.actor,
            tenant=tenant,
            resource={"type": resource_type, "id": resource_id},
            data=_grant_event(row._mapping),
        )


def _grant_event(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "grant_id": row["id"],
        "resource_type": row["resource_type"],
        "resource_id": row["resource_id"],
        "principal_type": row["principal_type"],
        "principal_id": row["principal_id"],
        "right": row["access_right"],
    }
