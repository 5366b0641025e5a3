"""Preview before approval (issue 15): each request's preview (Vault ciphertext: the masked
candidate cards are derived personal data), its hash, when it was made and which candidates
the approver confirmed; each service's preview answer while the preview runs.

A request that was awaiting approval before this revision has no preview: ``POST
/api/v1/requests/<id>/preview`` previews it (docs/gdpr.md "Upgrading").

Revision ID: gdpr_h15a_preview
Revises: gdpr_h15b_controller
"""

import sqlalchemy as sa
from alembic import op

revision = "gdpr_h15a_preview"
down_revision = "gdpr_h15b_controller"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("preview", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("preview_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("previewed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("confirmed", sa.JSON(), nullable=True))
    with op.batch_alter_table("request_services") as batch:
        batch.add_column(sa.Column("preview", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("request_services") as batch:
        batch.drop_column("preview")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("confirmed")
        batch.drop_column("previewed_at")
        batch.drop_column("preview_hash")
        batch.drop_column("preview")
