"""Tables of the orders service (its own database only); migrations/versions/0002 creates the same."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
)

from shared.db import new_metadata
from shared.service import library_tables

metadata = new_metadata()
tables = library_tables(metadata)

ID = 36  # uuid4 as text
TENANT = 100  # tenant slug, as in the access token
ACTOR = 100  # user id (token `sub`)

# Tenant-wide settings local to this service, managed by the tenant's own administrators.
tenant_settings = Table(
    "tenant_settings",
    metadata,
    Column("tenant", String(TENANT), primary_key=True),
    Column("personnummer_enabled", Boolean, nullable=False, default=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(ACTOR), nullable=False),
)

units = Table(
    "units",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("tenant", String(TENANT), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(30), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

delivery_points = Table(
    "delivery_points",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("tenant", String(TENANT), nullable=False),
    Column("unit_id", String(ID), ForeignKey("units.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# beställningsregister
registers = Table(
    "registers",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("tenant", String(TENANT), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("deadline_minutes", Integer, nullable=False),  # minutes after midnight, local time
    Column("deadline_days_before", Integer, nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# sortimentslistor
assortment_lists = Table(
    "assortment_lists",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("tenant", String(TENANT), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("unit_id", String(ID), ForeignKey("units.id"), nullable=True),  # NULL: every unit of the tenant
    Column("created_at", DateTime(timezone=True), nullable=False),
)

articles = Table(
    "articles",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("tenant", String(TENANT), nullable=False),
    Column("list_id", String(ID), ForeignKey("assortment_lists.id"), nullable=False, index=True),
    Column("code", String(40), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("list_id", "code", name="uq_articles_list_id_code"),
)

# Who may do what on one register or assortment list (R8, R12).  Default deny: no row, no right.
grants = Table(
    "grants",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("tenant", String(TENANT), nullable=False),
    Column("resource_type", String(20), nullable=False),  # register | assortment_list
    Column("resource_id", String(ID), nullable=False),
    Column("principal_type", String(10), nullable=False),  # user | group
    Column("principal_id", String(200), nullable=False),  # user id, or directory group name
    Column("access_right", String(20), nullable=False),  # view | order | change | administer
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(ACTOR), nullable=False),
    UniqueConstraint(
        "resource_id", "principal_type", "principal_id", "access_right", name="uq_grants_resource_principal_right"
    ),
    # The access check on every request: one indexed lookup by resource and principal.
    Index("ix_grants_lookup", "resource_id", "principal_type", "principal_id"),
)

# AIVO "Individ".  Every column that can identify the person is AES-GCM ciphertext under the
# individual's own data key (subject orders:individual:<id>); *_idx are blind indexes.
individuals = Table(
    "individuals",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("tenant", String(TENANT), nullable=False),
    Column("register_id", String(ID), ForeignKey("registers.id"), nullable=False, index=True),
    Column("unit_id", String(ID), ForeignKey("units.id"), nullable=True),
    Column("status", String(20), nullable=False),  # active | discharged | erased
    Column("valid_from", LargeBinary, nullable=True),  # admission date (ciphertext, ISO date)
    Column("valid_to", LargeBinary, nullable=True),  # discharge date (ciphertext, ISO date)
    Column("name", LargeBinary, nullable=True),
    Column("name_idx", BigInteger, nullable=True),
    Column("personnummer", LargeBinary, nullable=True),
    Column("personnummer_idx", BigInteger, nullable=True),
    Column("date_of_birth", LargeBinary, nullable=True),
    # Issue 15: residents known by name and birth date.  name_key_idx indexes the near-match key of
    # the name (shared.normalise.name_key: foreign diacritics folded, parts sorted), birth_date_idx
    # the ISO birth date; both as wide as name_idx, so each value matches several people.
    Column("name_key_idx", BigInteger, nullable=True),
    Column("birth_date_idx", BigInteger, nullable=True),
    Column("room", LargeBinary, nullable=True),
    Column("bed", LargeBinary, nullable=True),
    Column("diets", LargeBinary, nullable=True),
    Column("allergies", LargeBinary, nullable=True),
    Column("texture_level", LargeBinary, nullable=True),
    Column("notes", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=True),
    Index("ix_individuals_name_lookup", "tenant", "name_idx"),
    Index("ix_individuals_personnummer_lookup", "tenant", "personnummer_idx"),
    Index("ix_individuals_name_key_lookup", "tenant", "name_key_idx"),
    Index("ix_individuals_birth_date_lookup", "tenant", "birth_date_idx"),
)

# Orders reference the individual by id only; an erasure sets individual_id to NULL on the
# orders bookkeeping law keeps (deidentified = true) and generalises them (ordering.py,
# docs/orders.md "Retained orders"): unit_id may then be NULL (generalised to the register).
orders = Table(
    "orders",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("tenant", String(TENANT), nullable=False),
    Column("register_id", String(ID), ForeignKey("registers.id"), nullable=False),
    Column("unit_id", String(ID), ForeignKey("units.id"), nullable=True),
    Column("individual_id", String(ID), ForeignKey("individuals.id"), nullable=True, index=True),
    Column("delivery_point_id", String(ID), ForeignKey("delivery_points.id"), nullable=True),
    Column("article_id", String(ID), ForeignKey("articles.id"), nullable=False),
    Column("delivery_date", Date, nullable=False),
    Column("meal", String(20), nullable=False),
    Column("quantity", Integer, nullable=False),
    # Ciphertext under the individual's data key (orders:individual:<id>), or the unit's
    # (orders:unit:<id>) for an order without an individual; bound to orders.diet_variant:<order id>.
    Column("diet_variant", LargeBinary, nullable=True),
    Column("status", String(20), nullable=False),  # placed | cancelled
    Column("placed_at", DateTime(timezone=True), nullable=False),
    Column("placed_by", String(ACTOR), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deidentified", Boolean, nullable=False, default=False),
    Index("ix_orders_register_date", "register_id", "delivery_date"),
)

# An order's history after it was placed (the placing itself is the order row): R9, R11.
order_changes = Table(
    "order_changes",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("order_id", String(ID), ForeignKey("orders.id"), nullable=False, index=True),
    Column("tenant", String(TENANT), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(ACTOR), nullable=False),
    Column("action", String(20), nullable=False),  # changed | cancelled
    Column("changes", JSON, nullable=False),  # [{"field", "before"?, "after"?}]
)
