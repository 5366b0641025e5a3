"""A blind index on the caller's name of support cases (issue 15, R15): a data-subject request by
name finds the cases that name the caller.

Revision ID: crm_0004
Revises: crm_outbox_trace

The index needs the plaintext, so this revision only adds the (nullable) column; ``./recept crm
reindex`` fills it for the cases opened before the upgrade (docs/crm.md "Upgrading to issue 15").
"""

import sqlalchemy as sa
from alembic import op

revision = "crm_0004"
down_revision = "crm_outbox_trace"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("caller_name_idx", sa.BigInteger(), nullable=True))
    op.create_index("ix_cases_caller_name_idx", "cases", ["caller_name_idx"])


def downgrade() -> None:
    op.drop_index("ix_cases_caller_name_idx", table_name="cases")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("caller_name_idx")
