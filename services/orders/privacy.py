"""The orders service's side of data-subject requests: data inventory, resolve, export and erase (R1, R2, R3, R5).

The vendor is processor here, on behalf of the tenant (the customer), which is controller.
This module declares the inventory and translates the gdpr protocol into calls of the domain
(individuals.py: candidates by personnummer or by name and birth date, export, erase) and their results into the protocol's
shapes; it holds no rule of its own.  The retention rule an erasure follows is rules.py's.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from shared.clock import iso_date, rfc3339
from shared.privacy import Candidate, Category, Context, DataField, ErasureItem, Inventory

from .individuals import Individuals
from .rules import BOOKKEEPING_LEGAL_BASIS, BOOKKEEPING_YEARS, subject_of

PROCESSOR = "processor"
CONTROLLER = "tenant (customer)"
AGREEMENT = (
    "GDPR art. 28: processing on the tenant's documented instructions under its data processing "
    "agreement (personuppgiftsbiträdesavtal); the tenant's own basis is art. 6(1)(e) or 6(1)(b)"
)
CARE_RECIPIENTS = "care recipients, patients, care-home residents and pupils who receive meals"

INVENTORY = Inventory(
    service="orders",
    categories=(
        Category(
            kind="individual",
            data_subjects=CARE_RECIPIENTS,
            fields=(
                DataField("name", "to deliver the right meal to the right person", encrypted=True, blind_indexed=True),
                DataField(
                    "personnummer",
                    "to tell people with the same name apart; only where the tenant enables it",
                    encrypted=True,
                    blind_indexed=True,
                ),
                DataField(
                    "date_of_birth",
                    "to tell people apart, to find them for a data-subject request, and to portion meals by age",
                    encrypted=True,
                    blind_indexed=True,
                ),
                DataField("room", "where the meal is delivered", encrypted=True),
                DataField("bed", "where the meal is delivered", encrypted=True),
                DataField("valid_from", "admission date: from when meals are ordered", encrypted=True),
                DataField("valid_to", "discharge date: until when meals are ordered", encrypted=True),
                DataField("unit_id", "the care unit the person stays at", personal=False),
            ),
            purposes=("ordering and delivering meals to individual persons (AIVO Individ)",),
            legal_basis=AGREEMENT,
            role=PROCESSOR,
            controller=CONTROLLER,
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
                DataField(
                    "texture_level", "IDDSI texture level 0-7 for swallowing difficulties", special=True, encrypted=True
                ),
                DataField("notes", "free-text care notes for the kitchen", special=True, encrypted=True),
            ),
            purposes=("safe meals: diets, allergies and texture (GDPR art. 9(2)(h) for the controller)",),
            legal_basis=AGREEMENT + "; special category under art. 9(2)(h)",
            role=PROCESSOR,
            controller=CONTROLLER,
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
                DataField(
                    "diet_variant",
                    "the diet variant of the ordered meal (dropped when the order is retained after an erasure)",
                    special=True,
                    encrypted=True,
                ),
                DataField("delivery_date", "when the meal is delivered", personal=False),
                DataField("meal", "meal occasion", personal=False),
                DataField("quantity", "for production and invoicing", personal=False),
                DataField("placed_by", "which user placed the order (user id), R9"),
            ),
            purposes=("meal production and delivery", "invoicing", "traceability of orders and changes (R9, R11)"),
            legal_basis=AGREEMENT + "; invoicing records: " + BOOKKEEPING_LEGAL_BASIS,
            role=PROCESSOR,
            controller=CONTROLLER,
            retention=f"{BOOKKEEPING_YEARS} years after the end of the fiscal (calendar) year of the delivery date",
            recipients=("the tenant's authorised staff", "the tenant's invoicing"),
            storage="orders database, tables orders and order_changes",
            # De-identified until the bookkeeping period ends: no individual, diet variant, delivery point or
            # history; unit and date generalised until they describe at least RETAINED_K people (rules.py).
            erasure="retained",
        ),
        Category(
            kind="access_grant",
            data_subjects="the tenant's staff",
            fields=(DataField("principal_id", "which user (id) or directory group holds a right"),),
            purposes=("access control per order register and assortment list (R8, R12)",),
            legal_basis=AGREEMENT,
            role=PROCESSOR,
            controller=CONTROLLER,
            retention="until the right is revoked",
            storage="orders database, table grants",
            erasure="retained",
        ),
    ),
)


class OrdersParticipant:
    """shared.privacy.Participant for the orders service, over the domain's individuals."""

    inventory = INVENTORY

    def __init__(self, individuals: Individuals) -> None:
        self.individuals = individuals

    def counts(self, session: Session) -> dict[str, int]:
        return self.individuals.counts(session)

    def tenant_counts(self, session: Session) -> dict[str, dict[str, int]]:
        return self.individuals.tenant_counts(session)

    def candidates(self, session: Session, ctx: Context) -> list[Candidate]:
        """The preview's masked cards: by personnummer, or by name and birth date (exact or near)."""
        return self.individuals.candidates(session, ctx.tenant, ctx.subject)

    def resolve(self, session: Session, ctx: Context) -> list[str]:
        """Individuals of the request's tenant whose personnummer matches (blind index, then decrypt)."""
        return self.individuals.resolve(session, ctx.tenant, ctx.subject.get("personnummer"))

    def export(self, session: Session, ctx: Context, references: list[str]) -> dict[str, list[dict]]:
        people, placed = [], []
        for found in self.individuals.export(session, ctx.tenant, references):
            row = found.individual.row
            values = found.individual.values
            people.append(
                {
                    "id": row.id,
                    "subject": subject_of(row.id),
                    "register_id": row.register_id,
                    "unit_id": row.unit_id,
                    "status": row.status,
                    **values,
                    "valid_from": iso_date(values.get("valid_from")),
                    "valid_to": iso_date(values.get("valid_to")),
                    "created_at": rfc3339(row.created_at),
                    "updated_at": rfc3339(row.updated_at),
                }
            )
            for order in found.orders:
                placed.append(
                    {
                        "id": order.id,
                        "individual_id": row.id,
                        "register_id": order.register_id,
                        "unit_id": order.unit_id,
                        "article_id": order.article_id,
                        "delivery_date": iso_date(order.delivery_date),
                        "meal": order.meal,
                        "quantity": order.quantity,
                        "diet_variant": order.diet_variant,
                        "status": order.status,
                        "placed_at": rfc3339(order.placed_at),
                        "updated_at": rfc3339(order.updated_at),
                    }
                )
        return {"individual": people, "order": placed}

    def erase(self, session: Session, ctx: Context, references: list[str]) -> list[ErasureItem]:
        done = self.individuals.erase(session, ctx.tenant, references, ctx.request_id)
        items = [
            ErasureItem("individual", "deleted", done.individuals),
            ErasureItem("health_data", "deleted", done.health_data),
        ]
        for until in sorted(done.orders_retained):
            items.append(
                ErasureItem(
                    "order",
                    "retained",
                    done.orders_retained[until],
                    legal_basis=BOOKKEEPING_LEGAL_BASIS,
                    retain_until=until,
                )
            )
        items.append(ErasureItem("order", "deleted", done.orders_deleted))
        return items
