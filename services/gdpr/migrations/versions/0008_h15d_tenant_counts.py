"""Records of processing per customer (issue 15, GDPR art. 30(2)): each participant's live counts per
tenant slug and kind, as announced (numbers only, no personal data).  Null until the service's next
announcement (within ANNOUNCE_INTERVAL), or for a service that does not count per tenant.

Revision ID: gdpr_h15d_tenant_counts
Revises: gdpr_h15a_preview
"""

import sqlalchemy as sa
from alembic import op

revision = "gdpr_h15d_tenant_counts"
down_revision = "gdpr_h15a_preview"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("participants") as batch:
        batch.add_column(sa.Column("tenant_counts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("participants") as batch:
        batch.drop_column("tenant_counts")
