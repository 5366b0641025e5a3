"""Orders (R9, R11, R12): placing, changing and cancelling before the register's deadline, history, retention.

Placing needs ``order``, changing and cancelling ``change``, on the register and on the
article's assortment list; reading needs ``view`` on the register.  The deadline, orderable and
retention rules themselves are in rules.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, and_, bindparam, delete, distinct, func, insert, select, update
from sqlalchemy.orm import Session

from shared.clock import iso_date
from shared.errors import AccessDenied, Conflict, NotFound
from shared.outbox import Outbox
from shared.tokens import Principal

from . import events as ev
from .access import caller_params, holds, one, require, rights_on, tenant_of
from .base import Deps, Page, Record, emit_by, new_id, record_reads
from .models import articles, assortment_lists, delivery_points, individuals, order_changes, orders, registers, units
from .rules import (
    Deadline,
    check_orderable,
    field_error,
    generalised_date,
    is_retained,
    order_change,
    retained_level,
    retention_cutoff,
    subject_of,
    variant_subject,
)

SYSTEM_ACTOR = {"id": "orders", "tenant": None, "kind": "system"}


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    actor: str
    action: str  # placed | changed | cancelled
    changes: Sequence[Mapping[str, Any]]


# --- retention (R2) ---------------------------------------------------------------------------------


def purge_expired_orders(session: Session, outbox: Outbox, today: date) -> int:
    """Delete the orders (and their history) the bookkeeping period no longer covers.

    Needs only the outbox, so the operator's ``./recept orders purge-expired`` runs it without
    keys; the worker reaches it through ``Ordering.purge_expired``.
    """
    cutoff = retention_cutoff(today)
    expired = select(orders.c.id).where(orders.c.delivery_date < cutoff)
    session.execute(delete(order_changes).where(order_changes.c.order_id.in_(expired)))
    count = session.execute(delete(orders).where(orders.c.delivery_date < cutoff)).rowcount
    if count:
        outbox.emit(
            session,
            ev.RETENTION_PURGED,
            actor=SYSTEM_ACTOR,
            data={"orders_deleted": count, "delivered_before": iso_date(cutoff)},
        )
    return count


def _people(session: Session, where, month: date) -> int:
    """How many individuals were ordered for under ``where`` in the month starting ``month``."""
    following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return (
        session.scalar(
            select(func.count(distinct(orders.c.individual_id))).where(
                where,
                orders.c.individual_id.is_not(None),
                orders.c.delivery_date >= month,
                orders.c.delivery_date < following,
            )
        )
        or 0
    )


def deidentify_orders_of(session: Session, individual_id: str, today: date, k: int) -> tuple[list[date], int]:
    """On an individual's erasure: orders bookkeeping still needs lose the link to the person, the rest go.

    A kept order is generalised (rules.retained_level) so that what it still says (unit or
    register, and the month or year of delivery) describes at least ``k`` people: it keeps no
    diet variant, delivery point or change history, and its times become the start of the
    period.  People are counted from the orders that still name an individual (this one
    included), a lower bound, so an order is generalised rather more than less.
    Returns the delivery dates of the orders kept (as placed) and the number deleted.
    """
    keep: list[Any] = []
    drop: list[str] = []
    for row in session.execute(
        select(orders.c.id, orders.c.delivery_date, orders.c.unit_id, orders.c.register_id).where(
            orders.c.individual_id == individual_id
        )
    ):
        if is_retained(row.delivery_date, today):
            keep.append(row)
        else:
            drop.append(row.id)
    if drop:
        session.execute(delete(order_changes).where(order_changes.c.order_id.in_(drop)))
        session.execute(delete(orders).where(orders.c.id.in_(drop)))
    counted: dict[tuple, int] = {}

    def people(column, value, month: date) -> int:
        if (column.name, value, month) not in counted:
            counted[(column.name, value, month)] = _people(session, column == value, month)
        return counted[(column.name, value, month)]

    settled = []
    for row in keep:  # every count first: the updates below remove this person from them
        month = row.delivery_date.replace(day=1)
        level = retained_level(
            people(orders.c.unit_id, row.unit_id, month) if row.unit_id else 0,
            people(orders.c.register_id, row.register_id, month),
            k,
        )
        settled.append((row, level))
    for row, level in settled:
        on = generalised_date(row.delivery_date, level)
        at = datetime(on.year, on.month, on.day, tzinfo=UTC)
        session.execute(
            update(orders)
            .where(orders.c.id == row.id)
            .values(
                individual_id=None,
                deidentified=True,
                diet_variant=None,
                delivery_point_id=None,
                unit_id=row.unit_id if level == "unit_month" else None,
                delivery_date=on,
                placed_at=at,
                updated_at=at,
            )
        )
    if keep:
        session.execute(delete(order_changes).where(order_changes.c.order_id.in_([r.id for r in keep])))
    return [r.delivery_date for r in keep], len(drop)


class Ordering:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    # --- encrypted fields (R7, issue 14) -----------------------------------------------------------

    def _seal_variant(
        self, session: Session, order_id: str, individual_id: str | None, unit_id: str, variant: str | None
    ) -> bytes | None:
        return self.deps.seal(
            session, variant_subject(individual_id, unit_id), "orders", "diet_variant", order_id, variant
        )

    def _opened(self, session: Session, row) -> Record:
        """The order row with its diet variant decrypted (None once its key was shredded)."""
        variant = self.deps.open(session, "orders", "diet_variant", row.id, row.diet_variant)
        return Record({**row._mapping, "diet_variant": variant})

    def _stay(self, session: Session, individual_id: str, row) -> tuple[date | None, date | None]:
        """An individual's admission and discharge dates (ciphertext columns valid_from, valid_to)."""
        return (
            self.deps.open_date(session, "individuals", "valid_from", individual_id, row.valid_from),
            self.deps.open_date(session, "individuals", "valid_to", individual_id, row.valid_to),
        )

    def purge_expired(self, session: Session) -> int:
        """The retention purge as of the service's today."""
        return purge_expired_orders(session, self.deps.outbox, self.deps.now().date())

    def place_order(self, session: Session, principal: Principal, body: Mapping[str, Any]) -> Record:
        """One transaction: one indexed read (the resources with the caller's rights on them) and two inserts."""
        tenant = tenant_of(principal)
        register_id, article_id = body["register_id"], body["article_id"]
        individual_id, unit_id = body.get("individual_id"), body.get("unit_id")
        point_id = body.get("delivery_point_id")
        # One round trip: the resources and the caller's 'order' right on the register and the list.
        row = session.execute(
            _placement_query(individual_id is not None, unit_id is not None, point_id is not None),
            {
                "register_id": register_id,
                "tenant": tenant,
                "article_id": article_id,
                "individual_id": individual_id,
                "unit_id": unit_id,
                "point_id": point_id,
                **caller_params(principal),
            },
        ).first()
        if row is None:
            raise NotFound("no such register")
        if not row.may_order_register:
            raise AccessDenied("you need the 'order' right on this register")
        if row.list_id is None:
            raise field_error("article_id", "names no article of this tenant")
        if not row.may_order_list:
            raise AccessDenied("you need the 'order' right on the article's assortment list")
        if not row.article_active:
            raise field_error("article_id", "is withdrawn from its assortment list")
        delivery_date = date.fromisoformat(body["delivery_date"])
        if unit_id is not None and row.unit_id is None:
            raise field_error("unit_id", "names no unit of this tenant")
        if individual_id is not None:
            if row.individual_id is None or row.individual_register_id != register_id:
                raise field_error("individual_id", "names no individual in this register")
            check_orderable(row.individual_status, *self._stay(session, individual_id, row), delivery_date)
            if unit_id is not None and row.individual_unit_id is not None and unit_id != row.individual_unit_id:
                raise field_error("unit_id", "is not the individual's unit")
            unit_id = unit_id or row.individual_unit_id
        if unit_id is None:
            raise field_error("unit_id", "is required unless the order is for an individual with a unit")
        if row.list_unit_id is not None and row.list_unit_id != unit_id:
            raise field_error("article_id", "is not in an assortment list of this unit")
        if point_id is not None and row.point_unit_id != unit_id:
            raise field_error("delivery_point_id", "names no delivery point of this unit")
        now = self.deps.now()
        Deadline.of(row).check(delivery_date, now, "placed")
        order = {
            "id": new_id(),
            "tenant": tenant,
            "register_id": register_id,
            "unit_id": unit_id,
            "individual_id": individual_id,
            "delivery_point_id": point_id,
            "article_id": article_id,
            "delivery_date": delivery_date,
            "meal": body["meal"],
            "quantity": body["quantity"],
            "diet_variant": body.get("diet_variant"),
            "status": "placed",
            "placed_at": now,
            "placed_by": principal.user_id,
            "updated_at": now,
            "deidentified": False,
        }
        session.execute(
            insert(orders).values(
                {
                    **order,
                    "diet_variant": self._seal_variant(
                        session, order["id"], individual_id, unit_id, order["diet_variant"]
                    ),
                }
            )
        )
        emit_by(
            self.deps,
            session,
            principal,
            ev.ORDER_PLACED,
            tenant,
            ("order", order["id"]),
            individual_id,
            {
                "order_id": order["id"],
                "register_id": register_id,
                "unit_id": unit_id,
                "individual_id": individual_id,
                "article_id": article_id,
                "delivery_date": iso_date(delivery_date),
                "meal": order["meal"],
                "quantity": order["quantity"],
            },
        )
        return Record(order)

    def _for_update(self, session: Session, principal: Principal, order_id: str):
        tenant = tenant_of(principal)
        row = session.execute(
            select(
                orders,
                registers.c.deadline_minutes,
                registers.c.deadline_days_before,
                registers.c.timezone,
                articles.c.list_id,
            )
            .select_from(
                orders.join(registers, registers.c.id == orders.c.register_id).join(
                    articles, articles.c.id == orders.c.article_id
                )
            )
            .where(orders.c.id == order_id, orders.c.tenant == tenant)
        ).first()
        if row is None:
            raise NotFound("no such order")
        return row

    def change_order(self, session: Session, principal: Principal, order_id: str, body: Mapping[str, Any]):
        row = self._opened(session, self._for_update(session, principal, order_id))
        new_article = None
        if "article_id" in body and body["article_id"] != row.article_id:
            new_article = session.execute(
                select(articles.c.id, articles.c.list_id, articles.c.active, assortment_lists.c.unit_id)
                .select_from(articles.join(assortment_lists, assortment_lists.c.id == articles.c.list_id))
                .where(articles.c.id == body["article_id"], articles.c.tenant == row.tenant)
            ).first()
        rights = rights_on(
            session, principal, [row.register_id, row.list_id, new_article.list_id if new_article else None]
        )
        if "change" not in rights[row.register_id]:
            raise AccessDenied("you need the 'change' right on this register")
        if "change" not in rights[row.list_id]:
            raise AccessDenied("you need the 'change' right on the article's assortment list")
        if row.status == "cancelled":
            raise Conflict("the order is cancelled and can no longer be changed")
        if "article_id" in body and body["article_id"] != row.article_id:
            if new_article is None:
                raise field_error("article_id", "names no article of this tenant")
            if "change" not in rights[new_article.list_id]:
                raise AccessDenied("you need the 'change' right on the new article's assortment list")
            if not new_article.active:
                raise field_error("article_id", "is withdrawn from its assortment list")
            if new_article.unit_id is not None and new_article.unit_id != row.unit_id:
                raise field_error("article_id", "is not in an assortment list of this unit")
        now = self.deps.now()
        deadline = Deadline.of(row)
        deadline.check(row.delivery_date, now, "changed")
        after: dict[str, Any] = {}
        for field in ("quantity", "meal", "article_id", "delivery_point_id", "diet_variant"):
            if field in body and body[field] != getattr(row, field):
                after[field] = body[field]
        if "delivery_date" in body and date.fromisoformat(body["delivery_date"]) != row.delivery_date:
            # Moving an order to another day needs that day open too.
            after["delivery_date"] = date.fromisoformat(body["delivery_date"])
            deadline.check(after["delivery_date"], now, "placed")
            if row.individual_id is not None:
                person = session.execute(
                    select(individuals.c.status, individuals.c.valid_from, individuals.c.valid_to).where(
                        individuals.c.id == row.individual_id
                    )
                ).one()
                check_orderable(person.status, *self._stay(session, row.individual_id, person), after["delivery_date"])
        if (
            after.get("delivery_point_id") is not None
            and session.execute(
                select(delivery_points.c.id).where(
                    delivery_points.c.id == after["delivery_point_id"], delivery_points.c.unit_id == row.unit_id
                )
            ).first()
            is None
        ):
            raise field_error("delivery_point_id", "names no delivery point of this unit")
        if not after:
            return row
        changes = [order_change(field, getattr(row, field), value) for field, value in after.items()]
        stored = dict(after)
        if "diet_variant" in after:
            stored["diet_variant"] = self._seal_variant(
                session, order_id, row.individual_id, row.unit_id, after["diet_variant"]
            )
        session.execute(update(orders).where(orders.c.id == order_id).values(**stored, updated_at=now))
        session.execute(
            insert(order_changes).values(
                order_id=order_id, tenant=row.tenant, at=now, actor=principal.user_id, action="changed", changes=changes
            )
        )
        emit_by(
            self.deps,
            session,
            principal,
            ev.ORDER_CHANGED,
            row.tenant,
            ("order", order_id),
            row.individual_id,
            {
                "order_id": order_id,
                "register_id": row.register_id,
                "fields": [c["field"] for c in changes],
                "changes": [c for c in changes if "before" in c],
            },
        )
        return Record({**row._mapping, **after, "updated_at": now})

    def cancel_order(self, session: Session, principal: Principal, order_id: str) -> Record:
        row = self._opened(session, self._for_update(session, principal, order_id))
        rights = rights_on(session, principal, [row.register_id, row.list_id])
        if "change" not in rights[row.register_id]:
            raise AccessDenied("you need the 'change' right on this register")
        if "change" not in rights[row.list_id]:
            raise AccessDenied("you need the 'change' right on the article's assortment list")
        if row.status == "cancelled":
            raise Conflict("the order is already cancelled")
        now = self.deps.now()
        Deadline.of(row).check(row.delivery_date, now, "cancelled")
        session.execute(update(orders).where(orders.c.id == order_id).values(status="cancelled", updated_at=now))
        session.execute(
            insert(order_changes).values(
                order_id=order_id,
                tenant=row.tenant,
                at=now,
                actor=principal.user_id,
                action="cancelled",
                changes=[{"field": "status", "before": "placed", "after": "cancelled"}],
            )
        )
        emit_by(
            self.deps,
            session,
            principal,
            ev.ORDER_CANCELLED,
            row.tenant,
            ("order", order_id),
            row.individual_id,
            {"order_id": order_id, "register_id": row.register_id},
        )
        return Record({**row._mapping, "status": "cancelled", "updated_at": now})

    def _viewable(self, session: Session, principal: Principal, order_id: str):
        tenant = tenant_of(principal)
        row = one(session, orders, order_id, tenant, "order")
        require(session, principal, row.register_id, "view", "register")
        return row

    def order(self, session: Session, principal: Principal, order_id: str):
        row = self._opened(session, self._viewable(session, principal, order_id))
        if row.individual_id is not None:
            record_reads(self.deps, session, principal, [subject_of(row.individual_id)], "read_order", row.register_id)
        return row

    def history(self, session: Session, principal: Principal, order_id: str) -> list[HistoryEntry]:
        """Who placed, changed and cancelled the order, and when, from this service's own tables."""
        row = self._viewable(session, principal, order_id)
        later = [
            HistoryEntry(c.at, c.actor, c.action, c.changes)
            for c in session.execute(
                select(order_changes).where(order_changes.c.order_id == order_id).order_by(order_changes.c.id)
            )
        ]
        # The values as placed: today's values with the recorded changes undone, newest first
        # (change records hold dates as text, so today's date is compared as text too).
        placed = {
            "delivery_date": iso_date(row.delivery_date),
            "meal": row.meal,
            "article_id": row.article_id,
            "quantity": row.quantity,
        }
        for entry in reversed(later):
            for change in entry.changes:
                if change["field"] in placed and "before" in change:
                    placed[change["field"]] = change["before"]
        return [
            HistoryEntry(row.placed_at, row.placed_by, "placed", [{"field": f, "after": v} for f, v in placed.items()]),
            *later,
        ]

    def orders_in(self, session: Session, principal: Principal, register_id: str, query: Mapping[str, str]) -> Page:
        tenant = tenant_of(principal)
        one(session, registers, register_id, tenant, "register")
        require(session, principal, register_id, "view", "register")
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
        rows = list(
            session.execute(
                statement.order_by(orders.c.delivery_date, orders.c.placed_at, orders.c.id)
                .limit(limit + 1)
                .offset(offset)
            )
        )
        page = Page.of(rows, limit, offset)
        self.deps.vault.prefetch(session, [r.diet_variant for r in page.items])
        opened = [self._opened(session, r) for r in page.items]
        record_reads(
            self.deps,
            session,
            principal,
            [subject_of(r.individual_id) for r in opened if r.individual_id],
            "list_orders",
            register_id,
        )
        return Page(opened, page.next_offset)


@lru_cache(maxsize=8)
def _placement_query(with_individual: bool, with_unit: bool, with_point: bool) -> Select:
    """The read of ``place_order``, built once per shape of the order (which optional ids it names);
    the values are bound at execution."""
    r, a, lst, i, u, p = registers, articles, assortment_lists, individuals, units, delivery_points
    tenant = r.c.tenant
    joined = r.outerjoin(a, and_(a.c.id == bindparam("article_id"), a.c.tenant == tenant)).outerjoin(
        lst, lst.c.id == a.c.list_id
    )
    columns = [
        r.c.deadline_minutes,
        r.c.deadline_days_before,
        r.c.timezone,
        a.c.list_id,
        a.c.active.label("article_active"),
        lst.c.unit_id.label("list_unit_id"),
        holds(r.c.id, "order").label("may_order_register"),
        holds(a.c.list_id, "order").label("may_order_list"),
    ]
    if with_individual:
        joined = joined.outerjoin(i, and_(i.c.id == bindparam("individual_id"), i.c.tenant == tenant))
        columns += [
            i.c.id.label("individual_id"),
            i.c.register_id.label("individual_register_id"),
            i.c.unit_id.label("individual_unit_id"),
            i.c.status.label("individual_status"),
            i.c.valid_from,
            i.c.valid_to,
        ]
    if with_unit:
        joined = joined.outerjoin(u, and_(u.c.id == bindparam("unit_id"), u.c.tenant == tenant))
        columns.append(u.c.id.label("unit_id"))
    if with_point:
        joined = joined.outerjoin(p, and_(p.c.id == bindparam("point_id"), p.c.tenant == tenant))
        columns.append(p.c.unit_id.label("point_unit_id"))
    return select(*columns).select_from(joined).where(r.c.id == bindparam("register_id"), tenant == bindparam("tenant"))
