"""Tables of the auth service (its own database only).

Personal values (usernames, display names, e-mail addresses, directory groups, the
agreement's signatory) are Vault ciphertexts; lookups go through truncated blind indexes
(docs/auth.md "What is stored").  Secrets are stored only as hashes (passwords:
Argon2id; refresh tokens: SHA-256) or as Vault ciphertexts (the directory bind secret).
"""

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)

from shared.db import new_metadata
from shared.service import library_tables

metadata = new_metadata()
tables = library_tables(metadata)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("slug", String(63), nullable=False, unique=True),
    Column("name", String(200), nullable=False),  # an organisation's name, not a person's
    Column("kind", String(10), nullable=False),  # vendor | customer
    Column("dpa_version", String(50), nullable=True),  # data processing agreement (R5)
    Column("dpa_signed_on", Date, nullable=True),
    Column("dpa_signatory", LargeBinary, nullable=True),  # Vault, subject auth:tenant:<id>
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

directories = Table(
    "directories",
    metadata,
    Column("tenant_id", String(36), ForeignKey("tenants.id"), primary_key=True),
    Column("urls", Text, nullable=False),  # JSON list, tried in order
    Column("tls", String(10), nullable=False),  # ldaps | starttls | none
    Column("ca_certificates", Text, nullable=True),  # PEM; None: the system's trust store
    Column("bind_dn", String(500), nullable=False),
    Column("bind_secret", LargeBinary, nullable=False),  # Vault, subject auth:tenant:<id>
    Column("user_search_base", String(500), nullable=False),
    Column("user_filter", String(1000), nullable=False),
    Column("username_attribute", String(100), nullable=False),
    Column("group_search_base", String(500), nullable=True),
    Column("group_filter", String(1000), nullable=True),
    Column("group_name_attribute", String(100), nullable=False),
    Column("member_of_attribute", String(100), nullable=True),
    Column("display_name_attribute", String(100), nullable=False),
    Column("mail_attribute", String(100), nullable=False),
    Column("group_roles", Text, nullable=False),  # JSON {group name or DN: [role, ...]}
    Column("timeout", Float, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(36), ForeignKey("tenants.id"), nullable=False),
    Column("username", LargeBinary, nullable=False),  # Vault, subject auth:user:<id>
    Column("username_idx", BigInteger, nullable=False),  # blind index of the normalised username
    Column("display_name", LargeBinary, nullable=True),  # Vault
    Column("email", LargeBinary, nullable=True),  # Vault
    Column("email_idx", BigInteger, nullable=True),  # blind index (GDPR resolve by e-mail)
    Column("groups", LargeBinary, nullable=True),  # Vault: JSON list of directory group names
    Column("source", String(10), nullable=False),  # local | directory
    Column("status", String(10), nullable=False),  # active | disabled
    Column("password_hash", String(200), nullable=True),  # Argon2id PHC string; local users only
    Column("failed_count", Integer, nullable=False, default=0),
    Column("last_failed_at", DateTime(timezone=True), nullable=True),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_login_at", DateTime(timezone=True), nullable=True),
    Index("ix_users_tenant_username", "tenant_id", "username_idx"),
    Index("ix_users_email_idx", "email_idx"),
)

user_roles = Table(
    "user_roles",
    metadata,
    Column("user_id", String(36), ForeignKey("users.id"), primary_key=True),
    Column("role", String(40), primary_key=True),
    Column("source", String(10), nullable=False),  # manual | directory (re-mapped at every login)
    Column("granted_at", DateTime(timezone=True), nullable=False),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),  # SHA-256 hex; the token is never stored
    Column("family_id", String(36), nullable=False, index=True),  # one login session
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("session_expires_at", DateTime(timezone=True), nullable=False),
    Column("rotated_at", DateTime(timezone=True), nullable=True),  # used once: a second use is reuse
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_reason", String(20), nullable=True),
    # The jti of the access token issued with this refresh token: revoking the session revokes it too.
    Column("access_jti", String(32), nullable=True, index=True),
)

revoked_tokens = Table(
    "revoked_tokens",
    metadata,
    Column("jti", String(32), primary_key=True),  # an access token revoked before it expired
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),  # then the entry is dropped
)

login_history = Table(
    "login_history",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(36), nullable=True),  # None: unknown tenant
    Column("user_id", String(36), nullable=True, index=True),  # None: unknown user, or anonymised
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("outcome", String(10), nullable=False),  # succeeded | failed
    Column("reason", String(30), nullable=True),  # why a login failed (never shown to the caller)
    Column("method", String(10), nullable=True),  # local | directory
    Column("client", BigInteger, nullable=True),  # keyed hash of the client address
)

client_failures = Table(
    "client_failures",
    metadata,
    Column("client", BigInteger, primary_key=True),  # keyed hash of the client address
    Column("failures", Integer, nullable=False),
    Column("window_started_at", DateTime(timezone=True), nullable=False),
    Column("blocked_until", DateTime(timezone=True), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

# Alembic's migrations (0002, 0003) create these with op; keep the two in step.
SERVICE_TABLES = (
    tenants,
    directories,
    users,
    user_roles,
    refresh_tokens,
    login_history,
    client_failures,
    revoked_tokens,
)
