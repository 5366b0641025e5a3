"""The orders service's side of data-subject requests: data inventory, resolve, export and erase (R1, R2, R3, R5).

The vendor is processor here, on behalf of the tenant (the customer), which is controller.
Individuals are found by personnummer through the blind index, within the request's tenant.
Erasure crypto-shreds the individual's data key, deletes the personal and health data, keeps
the orders bookkeeping law still needs de-identified (retained, with legal basis and end
date), and deletes the rest.
"""
from __future__ import annotations

from collections import Counter
from datetime import date

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from shared.crypto import normalise_personnummer
from shared.errors import Invalid
from shared.privacy import Category, Context, DataField, ErasureItem, Inventory

from . import events as ev
from .domain import (BOOKKEEPING_LEGAL_BASIS, ENCRYPTED_FIELDS, SUBJECT_PREFIX, Orders, _iso, retain_until,
                     subject_of)
from .models import grants, individuals, order_changes, orders

PROCESSOR = "processor"
CONTROLLER = "tenant (customer)"
AGREEMENT = ("GDPR art. 28: processing on the tenant's documented instructions under its data processing "
             "agreement (personuppgiftsbiträdesavtal); the tenant's own basis is art. 6(1)(e) or 6(1)(b)")
CARE_RECIPIENTS = "care recipients, patients, care-home residents and pupils who receive meals"

INVENTORY = Inventory(service="orders", categories=(
    Category(
        kind="individual",
        data_subjects=CARE_RECIPIENTS,
        fields=(
            DataField("name", "to deliver the right meal to the right person", encrypted=True, blind_indexed=True),
            DataField("personnummer", "to tell people with the same name apart; only where the tenant enables it",
                      encrypted=True, blind_indexed=True),
            DataField("date_of_birth", "to tell people apart and to portion meals by age", encrypted=True),
            DataField("room", "where the meal is delivered", encrypted=True),
            DataField("bed", "where the meal is delivered", encrypted=True),
            DataField("valid_from", "admission date: from when meals are ordered"),
            DataField("valid_to", "discharge date: until when meals are ordered"),
            DataField("unit_id", "the care unit the person stays at", personal=False),
        ),
        purposes=("ordering and delivering meals to individual persons (AIVO Individ)",),
        legal_basis=AGREEMENT, role=PROCESSOR, controller=CONTROLLER,
        retention="while the person is registered; erased on the tenant's request",
        recipients=("the tenant's authorised staff (per-register rights)",),
        storage="orders database, table individuals (AES-256-GCM per person, blind indexes)",
        erasure="deleted",
    ),
    Category(
        kind="health_data",
        data_subjects=CARE_RECIPIENTS,
        fields=(
            DataField("diets", "special diets the kitchen must follow", special=True, encrypted=True),
            DataField("allergies", "allergens the meal must not contain", special=True, encrypted=True),
            DataField("texture_level", "IDDSI texture level 0-7 for swallowing difficulties", special=True,
                      encrypted=True),
            DataField("notes", "free-text care notes for the kitchen", special=True, encrypted=True),
        ),
        purposes=("safe meals: diets, allergies and texture (GDPR art. 9(2)(h) for the controller)",),
        legal_basis=AGREEMENT + "; special category under art. 9(2)(h)", role=PROCESSOR, controller=CONTROLLER,
        retention="while the person is registered; erased on the tenant's request",
        recipients=("the tenant's authorised staff (right: view); every read is logged",),
        storage="orders database, table individuals (AES-256-GCM per person)",
        erasure="deleted",
    ),
    Category(
        kind="order",
        data_subjects=CARE_RECIPIENTS + "; the staff who placed or changed orders (by user id)",
        fields=(
            DataField("individual_id", "whom the order is for (a pseudonymous id; NULL once de-identified)"),
            DataField("diet_variant", "the diet variant of the ordered meal", special=True),
            DataField("delivery_date", "when the meal is delivered", personal=False),
            DataField("meal", "meal occasion", personal=False),
            DataField("quantity", "for production and invoicing", personal=False),
            DataField("placed_by", "which user placed the order (user id), R9"),
        ),
        purposes=("meal production and delivery", "invoicing", "traceability of orders and changes (R9, R11)"),
        legal_basis=AGREEMENT + "; invoicing records: " + BOOKKEEPING_LEGAL_BASIS, role=PROCESSOR,
        controller=CONTROLLER,
        retention="7 years after the end of the fiscal (calendar) year of the delivery date",
        recipients=("the tenant's authorised staff", "the tenant's invoicing"),
        storage="orders database, tables orders and order_changes",
        erasure="retained",   # de-identified (individual_id removed) until the bookkeeping period ends
    ),
    Category(
        kind="access_grant",
        data_subjects="the tenant's staff",
        fields=(DataField("principal_id", "which user (id) or directory group holds a right"),),
        purposes=("access control per order register and assortment list (R8, R12)",),
        legal_basis=AGREEMENT, role=PROCESSOR, controller=CONTROLLER,
        retention="until the right is revoked",
        storage="orders database, table grants",
        erasure="retained",
    ),
))


class Participant:
    """shared.privacy.Participant for the orders service."""

    inventory = INVENTORY

    def __init__(self, runtime, orders_service: Orders | None = None) -> None:
        self.runtime = runtime
        self.orders = orders_service or Orders.for_runtime(runtime)

    def counts(self, session: Session) -> dict[str, int]:
        live = individuals.c.status != "erased"
        people = session.scalar(select(func.count()).select_from(individuals).where(live))
        with_health = session.scalar(select(func.count()).select_from(individuals).where(
            live, (individuals.c.diets.is_not(None)) | (individuals.c.allergies.is_not(None))
            | (individuals.c.texture_level.is_not(None)) | (individuals.c.notes.is_not(None))))
        return {"individual": people, "health_data": with_health,
                "order": session.scalar(select(func.count()).select_from(orders)),
                "access_grant": session.scalar(select(func.count()).select_from(grants))}

    def resolve(self, session: Session, ctx: Context) -> list[str]:
        """Individuals of the request's tenant whose personnummer matches (blind index, then decrypt)."""
        given = ctx.subject.get("personnummer")
        if not given:
            return []
        try:
            wanted = normalise_personnummer(given, today=self.orders.now().date())
        except Invalid:
            return []
        statement = select(individuals).where(
            individuals.c.personnummer_idx == self.orders.index.of("personnummer", wanted),
            individuals.c.status != "erased")
        if ctx.tenant:
            statement = statement.where(individuals.c.tenant == ctx.tenant)
        rows = list(session.execute(statement.order_by(individuals.c.created_at, individuals.c.id)))
        self.runtime.vault.prefetch(session, [r.personnummer for r in rows])
        return [subject_of(r.id) for r in rows if self.orders.decrypt_field(session, r, "personnummer") == wanted]

    def _rows(self, session: Session, ctx: Context, references: list[str]) -> list:
        ids = [ref[len(SUBJECT_PREFIX):] for ref in references if ref.startswith(SUBJECT_PREFIX)]
        if not ids:
            return []
        statement = select(individuals).where(individuals.c.id.in_(ids))
        if ctx.tenant:
            statement = statement.where(individuals.c.tenant == ctx.tenant)
        return list(session.execute(statement.order_by(individuals.c.created_at, individuals.c.id)))

    def export(self, session: Session, ctx: Context, references: list[str]) -> dict[str, list[dict]]:
        people, placed = [], []
        for row in self._rows(session, ctx, references):
            values = self.orders.decrypt_individual(session, row, ENCRYPTED_FIELDS)
            people.append({"id": row.id, "subject": subject_of(row.id), "register_id": row.register_id,
                           "unit_id": row.unit_id, "status": row.status, "valid_from": _iso(row.valid_from),
                           "valid_to": _iso(row.valid_to), **values, "created_at": _iso(row.created_at),
                           "updated_at": _iso(row.updated_at)})
            for order in session.execute(select(orders).where(orders.c.individual_id == row.id)
                                         .order_by(orders.c.delivery_date, orders.c.placed_at, orders.c.id)):
                placed.append({"id": order.id, "individual_id": row.id, "register_id": order.register_id,
                               "unit_id": order.unit_id, "article_id": order.article_id,
                               "delivery_date": _iso(order.delivery_date), "meal": order.meal,
                               "quantity": order.quantity, "diet_variant": order.diet_variant,
                               "status": order.status, "placed_at": _iso(order.placed_at),
                               "updated_at": _iso(order.updated_at)})
        return {"individual": people, "order": placed}

    def erase(self, session: Session, ctx: Context, references: list[str]) -> list[ErasureItem]:
        today = self.orders.now().date()
        erased = health = 0
        retained: Counter[date] = Counter()
        deleted_orders = 0
        for row in self._rows(session, ctx, references):
            if row.status == "erased":
                continue       # erased by an earlier request: nothing left to do
            had_health = any(getattr(row, f) is not None for f in ("diets", "allergies", "texture_level", "notes"))
            self.runtime.vault.shred(session, subject_of(row.id))
            keep, drop = [], []
            for order_id, delivery_date in session.execute(
                    select(orders.c.id, orders.c.delivery_date).where(orders.c.individual_id == row.id)):
                (keep if retain_until(delivery_date) >= today else drop).append((order_id, delivery_date))
            if drop:
                ids = [o for o, _d in drop]
                session.execute(delete(order_changes).where(order_changes.c.order_id.in_(ids)))
                session.execute(delete(orders).where(orders.c.id.in_(ids)))
            if keep:
                session.execute(update(orders).where(orders.c.id.in_([o for o, _d in keep]))
                                .values(individual_id=None, deidentified=True))
            # The row stays as a tombstone without personal data, so the id keeps answering
            # "erased" (no new orders) instead of looking like it never existed.
            session.execute(update(individuals).where(individuals.c.id == row.id).values(
                status="erased", valid_from=None, valid_to=None, name_idx=None, personnummer_idx=None,
                erased_at=self.orders.now(), updated_at=self.orders.now(), **dict.fromkeys(ENCRYPTED_FIELDS)))
            erased += 1
            health += had_health
            retained.update(retain_until(d) for _o, d in keep)
            deleted_orders += len(drop)
            self.runtime.outbox.emit(
                session, ev.INDIVIDUAL_ERASED, actor={"id": "gdpr", "tenant": row.tenant, "kind": "service"},
                tenant=row.tenant, subject=subject_of(row.id), resource={"type": "individual", "id": row.id},
                data={"individual_id": row.id, "register_id": row.register_id, "request_id": ctx.request_id[:100],
                      "orders_retained": len(keep), "orders_deleted": len(drop)})
        items = [ErasureItem("individual", "deleted", erased), ErasureItem("health_data", "deleted", health)]
        for until in sorted(retained):
            items.append(ErasureItem("order", "retained", retained[until], legal_basis=BOOKKEEPING_LEGAL_BASIS,
                                     retain_until=until))
        items.append(ErasureItem("order", "deleted", deleted_orders))
        return items
