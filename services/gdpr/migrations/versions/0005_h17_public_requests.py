"""Issue 17, the person is told: public requests, identity verification, notices and one-time hand-over.

Revision ID: gdpr_h17_public
Revises: gdpr_outbox_trace
"""

import sqlalchemy as sa
from alembic import op

revision = "gdpr_h17_public"
down_revision = "gdpr_outbox_trace"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "public_verifications",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("draft", sa.LargeBinary(), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("unsent_code", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("used_at", TZ, nullable=True),
        sa.Column("request_id", sa.String(36), nullable=True),
    )
    op.create_index("ix_public_verifications_expires", "public_verifications", ["expires_at"])
    op.create_table(
        "public_limits",
        sa.Column("key", sa.String(80), primary_key=True),
        sa.Column("window_start", TZ, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.create_table(
        "public_requests",
        sa.Column("request_id", sa.String(36), sa.ForeignKey("requests.id"), primary_key=True),
        sa.Column("origin", sa.String(10), nullable=False),
        sa.Column("scope", sa.String(10), nullable=False),
        sa.Column("customer_must_confirm", sa.Boolean(), nullable=False),
        sa.Column("language", sa.String(5), nullable=False),
        sa.Column("contact", sa.LargeBinary(), nullable=True),
        sa.Column("contact_hash", sa.String(64), nullable=False),
        sa.Column("verified_channel", sa.String(8), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("contact_shredded_at", TZ, nullable=True),
    )
    op.create_table(
        "subject_notices",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("request_id", sa.String(36), sa.ForeignKey("requests.id"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=True),
        sa.Column("secret", sa.LargeBinary(), nullable=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TZ, nullable=True),
        sa.Column("last_error", sa.String(100), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("sent_at", TZ, nullable=True),
    )
    op.create_index("ix_subject_notices_due", "subject_notices", ["status", "next_attempt_at"])
    op.create_index("ux_subject_notices_event", "subject_notices", ["event_id", "kind"], unique=True)
    op.create_table(
        "handovers",
        sa.Column("request_id", sa.String(36), sa.ForeignKey("requests.id"), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("package", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("downloaded_at", TZ, nullable=True),
        sa.Column("deleted_at", TZ, nullable=True),
    )


def downgrade() -> None:
    for table in ("handovers", "subject_notices", "public_requests", "public_limits", "public_verifications"):
        op.drop_table(table)
