"""Blind indexes for finding residents by name and birth date (issue 15, R7).

Revision ID: orders_0005
Revises: orders_outbox_trace

``individuals.name_key_idx`` holds the blind index of the name's near-match key
(``shared.normalise.name_key``) and ``individuals.birth_date_idx`` that of the ISO birth date.
Computing them needs the plaintext, so this revision only adds the (nullable) columns and their
lookup indexes; ``./recept orders reindex`` fills them for the individuals created before the
upgrade (docs/orders.md "Upgrading to issue 15").  Until it has run, a data-subject request still
finds those individuals: rows whose index is still NULL while the source is set are decrypted and
compared too (slower, never missed).
"""

import sqlalchemy as sa
from alembic import op

revision = "orders_0005"
down_revision = "orders_outbox_trace"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("individuals") as batch:
        batch.add_column(sa.Column("name_key_idx", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("birth_date_idx", sa.BigInteger(), nullable=True))
    op.create_index("ix_individuals_name_key_lookup", "individuals", ["tenant", "name_key_idx"])
    op.create_index("ix_individuals_birth_date_lookup", "individuals", ["tenant", "birth_date_idx"])


def downgrade() -> None:
    op.drop_index("ix_individuals_birth_date_lookup", table_name="individuals")
    op.drop_index("ix_individuals_name_key_lookup", table_name="individuals")
    with op.batch_alter_table("individuals") as batch:
        batch.drop_column("birth_date_idx")
        batch.drop_column("name_key_idx")
