"""The crm tables: companies, person tabs, cases, call logs, e-mails, change notices.

Revision ID: crm_0002
Revises: crm_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "crm_0002"
down_revision = "crm_0001"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _index(table: str, *columns: str, unique: bool = False) -> None:
    op.create_index(f"ix_{table}_{columns[0]}", table, list(columns), unique=unique)


def upgrade() -> None:
    op.create_table(
        "companies",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("org_number", sa.String(20), nullable=True),
        sa.Column("tenant", sa.String(100), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_companies"),
    )
    _index("companies", "tenant")

    op.create_table(
        "persons",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("company_id", sa.String(36), nullable=False),
        sa.Column("subject_ref", sa.String(200), nullable=False),
        sa.Column("name", sa.LargeBinary(), nullable=False),
        sa.Column("email", sa.LargeBinary(), nullable=True),
        sa.Column("phone", sa.LargeBinary(), nullable=True),
        sa.Column("title", sa.LargeBinary(), nullable=True),
        sa.Column("name_idx", sa.BigInteger(), nullable=True),
        sa.Column("email_idx", sa.BigInteger(), nullable=True),
        sa.Column("phone_idx", sa.BigInteger(), nullable=True),
        sa.Column("notice_recipient", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_persons"),
        sa.ForeignKeyConstraint(["company_id"], ["companies.id"], name="fk_persons_company_id_companies"),
    )
    for column in ("company_id", "name_idx", "email_idx", "phone_idx"):
        _index("persons", column)

    op.create_table(
        "cases",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("company_id", sa.String(36), nullable=False),
        sa.Column("person_id", sa.String(36), nullable=True),
        sa.Column("subject_ref", sa.String(200), nullable=False),
        sa.Column("caller_name", sa.LargeBinary(), nullable=True),
        sa.Column("caller_phone", sa.LargeBinary(), nullable=True),
        sa.Column("caller_email", sa.LargeBinary(), nullable=True),
        sa.Column("topic", sa.LargeBinary(), nullable=True),
        sa.Column("description", sa.LargeBinary(), nullable=True),
        sa.Column("caller_phone_idx", sa.BigInteger(), nullable=True),
        sa.Column("caller_email_idx", sa.BigInteger(), nullable=True),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("assignee", sa.String(100), nullable=True),
        sa.Column("created_by", sa.String(100), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("closed_at", True),
        _ts("redacted_at", True),
        sa.PrimaryKeyConstraint("id", name="pk_cases"),
        sa.ForeignKeyConstraint(["company_id"], ["companies.id"], name="fk_cases_company_id_companies"),
    )
    for column in ("company_id", "person_id", "caller_phone_idx", "caller_email_idx", "status"):
        _index("cases", column)

    op.create_table(
        "call_imports",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("imported_by", sa.String(100), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("imported", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_call_imports"),
    )

    op.create_table(
        "calls",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("import_id", sa.String(36), nullable=False),
        sa.Column("subject_ref", sa.String(200), nullable=False),
        sa.Column("number", sa.LargeBinary(), nullable=True),
        sa.Column("number_idx", sa.BigInteger(), nullable=True),
        sa.Column("called_line", sa.String(40), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_s", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("person_id", sa.String(36), nullable=True),
        sa.Column("company_id", sa.String(36), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("redacted_at", True),
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
        sa.ForeignKeyConstraint(["import_id"], ["call_imports.id"], name="fk_calls_import_id_call_imports"),
        sa.UniqueConstraint("fingerprint", name="uq_calls_fingerprint"),
    )
    for column in ("import_id", "number_idx", "started_at", "person_id", "company_id"):
        _index("calls", column)

    op.create_table(
        "emails",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("company_id", sa.String(36), nullable=False),
        sa.Column("person_id", sa.String(36), nullable=True),
        sa.Column("subject_ref", sa.String(200), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("header_from", sa.LargeBinary(), nullable=True),
        sa.Column("header_to", sa.LargeBinary(), nullable=True),
        sa.Column("header_subject", sa.LargeBinary(), nullable=True),
        sa.Column("message_id", sa.LargeBinary(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("attachment_count", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("ingested_by", sa.String(100), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("deleted_at", True),
        sa.PrimaryKeyConstraint("id", name="pk_emails"),
        sa.ForeignKeyConstraint(["company_id"], ["companies.id"], name="fk_emails_company_id_companies"),
        sa.UniqueConstraint("fingerprint", name="uq_emails_fingerprint"),
    )
    for column in ("company_id", "person_id"):
        _index("emails", column)

    op.create_table(
        "email_addresses",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("email_id", sa.String(36), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("address", sa.LargeBinary(), nullable=False),
        sa.Column("address_idx", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_email_addresses"),
        sa.ForeignKeyConstraint(["email_id"], ["emails.id"], name="fk_email_addresses_email_id_emails"),
    )
    for column in ("email_id", "address_idx"):
        _index("email_addresses", column)

    op.create_table(
        "email_attachments",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("email_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("filename", sa.LargeBinary(), nullable=True),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_email_attachments"),
        sa.ForeignKeyConstraint(["email_id"], ["emails.id"], name="fk_email_attachments_email_id_emails"),
        sa.UniqueConstraint("email_id", "position", name="uq_email_attachments_email_id"),
    )
    _index("email_attachments", "email_id")

    op.create_table(
        "notices",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("company_ids", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_notices"),
    )

    op.create_table(
        "notice_deliveries",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("notice_id", sa.String(36), nullable=False),
        sa.Column("company_id", sa.String(36), nullable=False),
        sa.Column("person_id", sa.String(36), nullable=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(200), nullable=True),
        _ts("claimed_until", True),
        _ts("sent_at", True),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_notice_deliveries"),
        sa.ForeignKeyConstraint(["notice_id"], ["notices.id"], name="fk_notice_deliveries_notice_id_notices"),
    )
    _index("notice_deliveries", "notice_id")
    _index("notice_deliveries", "person_id")
    op.create_index("ix_notice_deliveries_pending", "notice_deliveries", ["status", "claimed_until"])


def downgrade() -> None:
    for table in (
        "notice_deliveries",
        "notices",
        "email_attachments",
        "email_addresses",
        "emails",
        "calls",
        "call_imports",
        "cases",
        "persons",
        "companies",
    ):
        op.drop_table(table)
