"""Sealed gdpr messages (issue 14): each participant's announced transport key, each request's
ephemeral key (Vault ciphertext, shredded when the request finishes).

Revision ID: gdpr_0003
Revises: gdpr_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "gdpr_0003"
down_revision = "gdpr_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("participants") as batch:
        batch.add_column(sa.Column("transport_key", sa.String(64), nullable=True))
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("transport_key", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("transport_key")
    with op.batch_alter_table("participants") as batch:
        batch.drop_column("transport_key")
