"""Tenants, directory settings, users, roles, refresh tokens, login history, client failures.

Revision ID: auth_0002
Revises: auth_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "auth_0002"
down_revision = "auth_0001"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _bigint(name: str, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("slug", sa.String(63), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("dpa_version", sa.String(50), nullable=True),
        sa.Column("dpa_signed_on", sa.Date(), nullable=True),
        sa.Column("dpa_signatory", sa.LargeBinary(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
        sa.UniqueConstraint("slug", name="uq_tenants_slug"),
    )
    op.create_table(
        "directories",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("urls", sa.Text(), nullable=False),
        sa.Column("tls", sa.String(10), nullable=False),
        sa.Column("ca_certificates", sa.Text(), nullable=True),
        sa.Column("bind_dn", sa.String(500), nullable=False),
        sa.Column("bind_secret", sa.LargeBinary(), nullable=False),
        sa.Column("user_search_base", sa.String(500), nullable=False),
        sa.Column("user_filter", sa.String(1000), nullable=False),
        sa.Column("username_attribute", sa.String(100), nullable=False),
        sa.Column("group_search_base", sa.String(500), nullable=True),
        sa.Column("group_filter", sa.String(1000), nullable=True),
        sa.Column("group_name_attribute", sa.String(100), nullable=False),
        sa.Column("member_of_attribute", sa.String(100), nullable=True),
        sa.Column("display_name_attribute", sa.String(100), nullable=False),
        sa.Column("mail_attribute", sa.String(100), nullable=False),
        sa.Column("group_roles", sa.Text(), nullable=False),
        sa.Column("timeout", sa.Float(), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_directories"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_directories_tenant_id_tenants"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("username", sa.LargeBinary(), nullable=False),
        _bigint("username_idx", False),
        sa.Column("display_name", sa.LargeBinary(), nullable=True),
        sa.Column("email", sa.LargeBinary(), nullable=True),
        _bigint("email_idx", True),
        sa.Column("groups", sa.LargeBinary(), nullable=True),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=True),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        _ts("last_failed_at", True),
        _ts("locked_until", True),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("last_login_at", True),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_users_tenant_id_tenants"),
    )
    op.create_index("ix_users_tenant_username", "users", ["tenant_id", "username_idx"])
    op.create_index("ix_users_email_idx", "users", ["email_idx"])
    op.create_table(
        "user_roles",
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("role", sa.String(40), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        _ts("granted_at"),
        sa.PrimaryKeyConstraint("user_id", "role", name="pk_user_roles"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_user_roles_user_id_users"),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("family_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        _ts("session_expires_at"),
        _ts("rotated_at", True),
        _ts("revoked_at", True),
        sa.Column("revoked_reason", sa.String(20), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_refresh_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_refresh_tokens_token_hash"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_refresh_tokens_user_id_users"),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])
    op.create_index("ix_refresh_tokens_user_id", "refresh_tokens", ["user_id"])
    op.create_table(
        "login_history",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=True),
        sa.Column("user_id", sa.String(36), nullable=True),
        _ts("at"),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("reason", sa.String(30), nullable=True),
        sa.Column("method", sa.String(10), nullable=True),
        _bigint("client", True),
        sa.PrimaryKeyConstraint("id", name="pk_login_history"),
    )
    op.create_index("ix_login_history_user_id", "login_history", ["user_id"])
    op.create_index("ix_login_history_at", "login_history", ["at"])
    op.create_table(
        "client_failures",
        _bigint("client", False),
        sa.Column("failures", sa.Integer(), nullable=False),
        _ts("window_started_at"),
        _ts("blocked_until", True),
        _ts("expires_at"),
        sa.PrimaryKeyConstraint("client", name="pk_client_failures"),
    )
    op.create_index("ix_client_failures_expires_at", "client_failures", ["expires_at"])


def downgrade() -> None:
    for table in (
        "client_failures",
        "login_history",
        "refresh_tokens",
        "user_roles",
        "users",
        "directories",
        "tenants",
    ):
        op.drop_table(table)
