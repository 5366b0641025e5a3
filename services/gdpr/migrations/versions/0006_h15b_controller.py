"""The customer as controller (issue 15): a request's processor-data flag, whether it waits for the customer's
privacy officer, the instruction (Vault ciphertext), its parties (role, tenant, user id per step) and the
agreement bound to it; the tenants replica from auth.tenant.announced.

Revision ID: gdpr_h15b_controller
Revises: gdpr_h17_public
"""

import sqlalchemy as sa
from alembic import op

revision = "gdpr_h15b_controller"
down_revision = "gdpr_h17_public"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("slug", sa.String(100), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("agreement_version", sa.String(50), nullable=True),
        sa.Column("agreement_signed_on", sa.Date(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("processor", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("needs_confirmation", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("instruction", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("parties", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("agreement_version", sa.String(50), nullable=True))
        batch.add_column(sa.Column("agreement_signed_on", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("agreement_signed_on")
        batch.drop_column("agreement_version")
        batch.drop_column("parties")
        batch.drop_column("instruction")
        batch.drop_column("needs_confirmation")
        batch.drop_column("processor")
    op.drop_table("tenants")
