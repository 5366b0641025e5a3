"""The gdpr service's own tables: participants, requests, request_services, export_packages.

Revision ID: gdpr_0002
Revises: gdpr_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "gdpr_0002"
down_revision = "gdpr_0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "participants",
        sa.Column("service", sa.String(60), nullable=False),
        sa.Column("phase", sa.String(10), nullable=False),
        sa.Column("inventory", sa.JSON(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("first_seen", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
        sa.PrimaryKeyConstraint("service", name="pk_participants"),
    )
    op.create_table(
        "requests",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(10), nullable=False),
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("phase", sa.String(10), nullable=True),
        sa.Column("identifier_kinds", sa.String(100), nullable=False),
        sa.Column("subject", sa.LargeBinary(), nullable=False),
        sa.Column("reason", sa.LargeBinary(), nullable=True),
        sa.Column("requested_by", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("extension_months", sa.Integer(), nullable=False),
        sa.Column("extension_reason", sa.LargeBinary(), nullable=True),
        sa.Column("extended_by", sa.String(100), nullable=True),
        sa.Column("extended_at", TS, nullable=True),
        sa.Column("decided_by", sa.String(100), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("rejection_reason", sa.LargeBinary(), nullable=True),
        sa.Column("dispatched_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("identifiers_shredded_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_requests"),
    )
    op.create_index("ix_requests_tenant_status", "requests", ["tenant", "status"])
    op.create_index("ix_requests_due_at", "requests", ["due_at"])
    op.create_table(
        "request_services",
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("service", sa.String(60), nullable=False),
        sa.Column("phase", sa.String(10), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("command_id", sa.String(36), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sends", sa.Integer(), nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("replied_at", TS, nullable=True),
        sa.Column("error", sa.String(200), nullable=True),
        sa.Column("refs", sa.JSON(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("export", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("request_id", "service", name="pk_request_services"),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"], name="fk_request_services_request_id_requests"),
    )
    op.create_index("ix_request_services_due", "request_services", ["status", "next_attempt_at"])
    op.create_table(
        "export_packages",
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("package", sa.LargeBinary(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("deleted_at", TS, nullable=True),
        sa.Column("downloads", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_export_packages"),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"], name="fk_export_packages_request_id_requests"),
    )


def downgrade() -> None:
    op.drop_table("export_packages")
    op.drop_index("ix_request_services_due", table_name="request_services")
    op.drop_table("request_services")
    op.drop_index("ix_requests_due_at", table_name="requests")
    op.drop_index("ix_requests_tenant_status", table_name="requests")
    op.drop_table("requests")
    op.drop_table("participants")
