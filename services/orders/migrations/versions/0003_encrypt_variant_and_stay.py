"""Encrypt orders.diet_variant and individuals.valid_from/valid_to; generalise orders retained after erasure.

Revision ID: orders_0003
Revises: orders_0002

Issue 14 (R7, R16): the diet variant of an order is health data once it belongs to a person,
and an admission or discharge date singles out a stay.  Existing plaintext values are read,
the columns become ciphertext (LargeBinary), and every value is written back encrypted under
the data key of its subject, bound to ``<table>.<column>:<row id>`` as the Vault does:

- ``individuals.valid_from/valid_to`` under the individual's key (``orders:individual:<id>``);
- ``orders.diet_variant`` under the individual's key, or the unit's (``orders:unit:<id>``) for
  an order without an individual.

Orders already de-identified by an earlier erasure are generalised as docs/orders.md
("Retained orders") describes, at the coarsest level, because how many people they could be
about is no longer known: no diet variant, no delivery point, no change history, the unit
generalised to the register and the dates to the first of the month.

Rows to encrypt need the orders keyring: ``RECEPT_ORDERS_KEYRING`` or ``RECEPT_ORDERS_KEYRING_FILE``
(as for the service itself).  An empty database migrates without one.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.orm import Session

revision = "orders_0003"
down_revision = "orders_0002"
branch_labels = None
depends_on = None

# Frozen copies of the tables as this revision leaves them (a migration must not follow later models).
_meta = sa.MetaData()
_individuals = sa.Table(
    "individuals",
    _meta,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("valid_from", sa.LargeBinary),
    sa.Column("valid_to", sa.LargeBinary),
)
_orders = sa.Table(
    "orders",
    _meta,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("unit_id", sa.String(36)),
    sa.Column("individual_id", sa.String(36)),
    sa.Column("diet_variant", sa.LargeBinary),
)


def _vault():
    """The orders vault over this migration's connection, from the configured keyring."""
    from services.orders import SPEC
    from services.orders.models import tables
    from shared.crypto import Keyring, Vault

    keyring = context.config.attributes.get("keyring") or Keyring.from_config(SPEC.config())
    return Vault(keyring, tables.data_keys)


def _generalise_retained(bind) -> None:
    rows = bind.execute(
        sa.text("SELECT id, delivery_date, placed_at, updated_at FROM orders WHERE deidentified = :yes"), {"yes": True}
    ).all()
    for row in rows:
        bind.execute(sa.text("DELETE FROM order_changes WHERE order_id = :id"), {"id": row.id})
        delivery = (
            row.delivery_date
            if isinstance(row.delivery_date, dt.date)
            else dt.date.fromisoformat(str(row.delivery_date)[:10])
        )
        month = delivery.replace(day=1)
        at = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
        bind.execute(
            sa.text(
                "UPDATE orders SET diet_variant = NULL, delivery_point_id = NULL, unit_id = NULL, "
                "delivery_date = :month, placed_at = :at, updated_at = :at WHERE id = :id"
            ),
            {"month": month, "at": at, "id": row.id},
        )


def _foreign_keys_off(bind) -> None:
    """SQLite changes a column's type by copying the table (its documented 12-step procedure).

    Dropping the old copy would trip the foreign keys that point at it, so they are switched off
    for the copy; the pragma only takes effect between transactions, hence the commit of what
    ran before (earlier revisions, complete and recorded) and a new transaction.
    """
    if bind.dialect.name == "sqlite":
        bind.exec_driver_sql("COMMIT")
        bind.exec_driver_sql("PRAGMA foreign_keys = OFF")
        bind.exec_driver_sql("BEGIN IMMEDIATE")


def _check_foreign_keys(bind) -> None:
    if bind.dialect.name == "sqlite" and bind.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
        raise RuntimeError("orders_0003: a foreign key no longer holds after the table copies")


def upgrade() -> None:
    bind = op.get_bind()
    _foreign_keys_off(bind)
    stays = bind.execute(
        sa.text("SELECT id, valid_from, valid_to FROM individuals WHERE valid_from IS NOT NULL OR valid_to IS NOT NULL")
    ).all()
    variants = bind.execute(
        sa.text(
            "SELECT id, unit_id, individual_id, diet_variant FROM orders "
            "WHERE diet_variant IS NOT NULL AND deidentified = :no"
        ),
        {"no": False},
    ).all()
    # Plaintext leaves the columns before their type changes (PostgreSQL has no date -> bytea cast).
    bind.execute(sa.text("UPDATE individuals SET valid_from = NULL, valid_to = NULL"))
    bind.execute(sa.text("UPDATE orders SET diet_variant = NULL"))
    with op.batch_alter_table("individuals") as batch:
        batch.alter_column(
            "valid_from",
            existing_type=sa.Date(),
            type_=sa.LargeBinary(),
            existing_nullable=True,
            postgresql_using="NULL::bytea",
        )
        batch.alter_column(
            "valid_to",
            existing_type=sa.Date(),
            type_=sa.LargeBinary(),
            existing_nullable=True,
            postgresql_using="NULL::bytea",
        )
    with op.batch_alter_table("orders") as batch:
        batch.alter_column(
            "diet_variant",
            existing_type=sa.String(40),
            type_=sa.LargeBinary(),
            existing_nullable=True,
            postgresql_using="NULL::bytea",
        )
        batch.alter_column("unit_id", existing_type=sa.String(36), nullable=True)
    _generalise_retained(bind)
    _check_foreign_keys(bind)
    if not stays and not variants:
        return
    vault = _vault()
    session = Session(bind=bind)
    for row in stays:
        subject = f"orders:individual:{row.id}"
        values = {}
        for column in ("valid_from", "valid_to"):
            value = getattr(row, column)
            if value is not None:
                text = value.isoformat() if isinstance(value, dt.date) else str(value)[:10]
                values[column] = vault.encrypt(session, subject, "individuals", column, row.id, text)
        session.execute(sa.update(_individuals).where(_individuals.c.id == row.id).values(**values))
    for row in variants:
        subject = f"orders:individual:{row.individual_id}" if row.individual_id else f"orders:unit:{row.unit_id}"
        session.execute(
            sa.update(_orders)
            .where(_orders.c.id == row.id)
            .values(
                diet_variant=vault.encrypt(session, subject, "orders", "diet_variant", row.id, str(row.diet_variant))
            )
        )
    session.flush()


def downgrade() -> None:
    # Decrypt back into plaintext columns; values whose key was shredded stay NULL.
    bind = op.get_bind()
    _foreign_keys_off(bind)
    stays = bind.execute(
        sa.select(_individuals).where(
            sa.or_(_individuals.c.valid_from.is_not(None), _individuals.c.valid_to.is_not(None))
        )
    ).all()
    variants = bind.execute(sa.select(_orders).where(_orders.c.diet_variant.is_not(None))).all()
    plain_stays, plain_variants = [], []
    if stays or variants:
        from shared.crypto import ERASED

        vault, session = _vault(), Session(bind=bind)

        def opened(table, column, row_id, blob):
            value = vault.decrypt(session, table, column, row_id, blob)
            return None if value is None or value is ERASED else value

        plain_stays = [
            (
                r.id,
                opened("individuals", "valid_from", r.id, r.valid_from),
                opened("individuals", "valid_to", r.id, r.valid_to),
            )
            for r in stays
        ]
        plain_variants = [(r.id, opened("orders", "diet_variant", r.id, r.diet_variant)) for r in variants]
    bind.execute(sa.text("UPDATE individuals SET valid_from = NULL, valid_to = NULL"))
    bind.execute(sa.text("UPDATE orders SET diet_variant = NULL"))
    with op.batch_alter_table("individuals") as batch:
        batch.alter_column(
            "valid_from",
            existing_type=sa.LargeBinary(),
            type_=sa.Date(),
            existing_nullable=True,
            postgresql_using="NULL::date",
        )
        batch.alter_column(
            "valid_to",
            existing_type=sa.LargeBinary(),
            type_=sa.Date(),
            existing_nullable=True,
            postgresql_using="NULL::date",
        )
    with op.batch_alter_table("orders") as batch:
        batch.alter_column(
            "diet_variant",
            existing_type=sa.LargeBinary(),
            type_=sa.String(40),
            existing_nullable=True,
            postgresql_using="NULL::varchar",
        )
    _check_foreign_keys(bind)
    for row_id, start, end in plain_stays:
        bind.execute(
            sa.text("UPDATE individuals SET valid_from = :start, valid_to = :end WHERE id = :id"),
            {
                "start": dt.date.fromisoformat(start) if start else None,
                "end": dt.date.fromisoformat(end) if end else None,
                "id": row_id,
            },
        )
    for row_id, variant in plain_variants:
        bind.execute(sa.text("UPDATE orders SET diet_variant = :v WHERE id = :id"), {"v": variant, "id": row_id})
