"""Erasure certificates (issue 15): the latest signed audit checkpoint per tenant, and the checkpoint
each finished erasure is anchored to.

Revision ID: gdpr_h15c_certificate
Revises: gdpr_h15d_tenant_counts
"""

import sqlalchemy as sa
from alembic import op

revision = "gdpr_h15c_certificate"
down_revision = "gdpr_h15d_tenant_counts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("tenant", sa.String(100), primary_key=True),
        sa.Column("chain", sa.String(120), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(200), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("anchor", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("anchored_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("anchored_at")
        batch.drop_column("anchor")
    op.drop_table("audit_checkpoints")
