"""The orders service's own tables: settings, units, registers, assortment lists, grants, individuals, orders.

Revision ID: orders_0002
Revises: orders_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "orders_0002"
down_revision = "orders_0001"
branch_labels = None
depends_on = None

ID = 36
TENANT = 100
ACTOR = 100


def _created():
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "tenant_settings",
        sa.Column("tenant", sa.String(TENANT), nullable=False),
        sa.Column("personnummer_enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(ACTOR), nullable=False),
        sa.PrimaryKeyConstraint("tenant", name="pk_tenant_settings"),
    )
    op.create_table(
        "units",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("tenant", sa.String(TENANT), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        _created(),
        sa.PrimaryKeyConstraint("id", name="pk_units"),
    )
    op.create_index("ix_units_tenant", "units", ["tenant"])
    op.create_table(
        "delivery_points",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("tenant", sa.String(TENANT), nullable=False),
        sa.Column("unit_id", sa.String(ID), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        _created(),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_points"),
        sa.ForeignKeyConstraint(["unit_id"], ["units.id"], name="fk_delivery_points_unit_id_units"),
    )
    op.create_index("ix_delivery_points_unit_id", "delivery_points", ["unit_id"])
    op.create_table(
        "registers",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("tenant", sa.String(TENANT), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("deadline_minutes", sa.Integer(), nullable=False),
        sa.Column("deadline_days_before", sa.Integer(), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        _created(),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_registers"),
    )
    op.create_index("ix_registers_tenant", "registers", ["tenant"])
    op.create_table(
        "assortment_lists",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("tenant", sa.String(TENANT), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("unit_id", sa.String(ID), nullable=True),
        _created(),
        sa.PrimaryKeyConstraint("id", name="pk_assortment_lists"),
        sa.ForeignKeyConstraint(["unit_id"], ["units.id"], name="fk_assortment_lists_unit_id_units"),
    )
    op.create_index("ix_assortment_lists_tenant", "assortment_lists", ["tenant"])
    op.create_table(
        "articles",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("tenant", sa.String(TENANT), nullable=False),
        sa.Column("list_id", sa.String(ID), nullable=False),
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        _created(),
        sa.PrimaryKeyConstraint("id", name="pk_articles"),
        sa.ForeignKeyConstraint(["list_id"], ["assortment_lists.id"], name="fk_articles_list_id_assortment_lists"),
        sa.UniqueConstraint("list_id", "code", name="uq_articles_list_id_code"),
    )
    op.create_index("ix_articles_list_id", "articles", ["list_id"])
    op.create_table(
        "grants",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("tenant", sa.String(TENANT), nullable=False),
        sa.Column("resource_type", sa.String(20), nullable=False),
        sa.Column("resource_id", sa.String(ID), nullable=False),
        sa.Column("principal_type", sa.String(10), nullable=False),
        sa.Column("principal_id", sa.String(200), nullable=False),
        sa.Column("access_right", sa.String(20), nullable=False),
        _created(),
        sa.Column("created_by", sa.String(ACTOR), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_grants"),
        sa.UniqueConstraint(
            "resource_id", "principal_type", "principal_id", "access_right", name="uq_grants_resource_principal_right"
        ),
    )
    op.create_index("ix_grants_lookup", "grants", ["resource_id", "principal_type", "principal_id"])
    op.create_table(
        "individuals",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("tenant", sa.String(TENANT), nullable=False),
        sa.Column("register_id", sa.String(ID), nullable=False),
        sa.Column("unit_id", sa.String(ID), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=True),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("name", sa.LargeBinary(), nullable=True),
        sa.Column("name_idx", sa.BigInteger(), nullable=True),
        sa.Column("personnummer", sa.LargeBinary(), nullable=True),
        sa.Column("personnummer_idx", sa.BigInteger(), nullable=True),
        sa.Column("date_of_birth", sa.LargeBinary(), nullable=True),
        sa.Column("room", sa.LargeBinary(), nullable=True),
        sa.Column("bed", sa.LargeBinary(), nullable=True),
        sa.Column("diets", sa.LargeBinary(), nullable=True),
        sa.Column("allergies", sa.LargeBinary(), nullable=True),
        sa.Column("texture_level", sa.LargeBinary(), nullable=True),
        sa.Column("notes", sa.LargeBinary(), nullable=True),
        _created(),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_individuals"),
        sa.ForeignKeyConstraint(["register_id"], ["registers.id"], name="fk_individuals_register_id_registers"),
        sa.ForeignKeyConstraint(["unit_id"], ["units.id"], name="fk_individuals_unit_id_units"),
    )
    op.create_index("ix_individuals_register_id", "individuals", ["register_id"])
    op.create_index("ix_individuals_name_lookup", "individuals", ["tenant", "name_idx"])
    op.create_index("ix_individuals_personnummer_lookup", "individuals", ["tenant", "personnummer_idx"])
    op.create_table(
        "orders",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("tenant", sa.String(TENANT), nullable=False),
        sa.Column("register_id", sa.String(ID), nullable=False),
        sa.Column("unit_id", sa.String(ID), nullable=False),
        sa.Column("individual_id", sa.String(ID), nullable=True),
        sa.Column("delivery_point_id", sa.String(ID), nullable=True),
        sa.Column("article_id", sa.String(ID), nullable=False),
        sa.Column("delivery_date", sa.Date(), nullable=False),
        sa.Column("meal", sa.String(20), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("diet_variant", sa.String(40), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("placed_by", sa.String(ACTOR), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deidentified", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.ForeignKeyConstraint(["register_id"], ["registers.id"], name="fk_orders_register_id_registers"),
        sa.ForeignKeyConstraint(["unit_id"], ["units.id"], name="fk_orders_unit_id_units"),
        sa.ForeignKeyConstraint(["individual_id"], ["individuals.id"], name="fk_orders_individual_id_individuals"),
        sa.ForeignKeyConstraint(
            ["delivery_point_id"], ["delivery_points.id"], name="fk_orders_delivery_point_id_delivery_points"
        ),
        sa.ForeignKeyConstraint(["article_id"], ["articles.id"], name="fk_orders_article_id_articles"),
    )
    op.create_index("ix_orders_individual_id", "orders", ["individual_id"])
    op.create_index("ix_orders_register_date", "orders", ["register_id", "delivery_date"])
    op.create_table(
        "order_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False, autoincrement=True),
        sa.Column("order_id", sa.String(ID), nullable=False),
        sa.Column("tenant", sa.String(TENANT), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(ACTOR), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_order_changes"),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name="fk_order_changes_order_id_orders"),
    )
    op.create_index("ix_order_changes_order_id", "order_changes", ["order_id"])


def downgrade() -> None:
    for table in (
        "order_changes",
        "orders",
        "individuals",
        "grants",
        "articles",
        "assortment_lists",
        "registers",
        "delivery_points",
        "units",
        "tenant_settings",
    ):
        op.drop_table(table)
