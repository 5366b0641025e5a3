"""Tables of the compliance portal: only its sign-in sessions (the portal holds no other data).

A row is keyed by the SHA-256 of the random session id in the visitor's signed cookie, so a
copy of this table does not let anyone take over a session.  The auth service's tokens and
the username shown in the page header are Vault ciphertexts under the subject
``portal:session:<key_ref>``; signing out crypto-shreds that subject and deletes the row.
"""

from sqlalchemy import JSON, Column, DateTime, Index, LargeBinary, String, Table

from shared.db import new_metadata
from shared.service import library_tables

metadata = new_metadata()
tables = library_tables(metadata)

sessions = Table(
    "portal_sessions",
    metadata,
    Column("id", String(64), primary_key=True),  # SHA-256 hex of the cookie's session id
    Column("key_ref", String(36), nullable=False),  # Vault subject portal:session:<key_ref>
    Column("user_id", String(100), nullable=False),  # `sub` of the access token
    Column("tenant", String(100), nullable=True),  # `tenant` of the access token
    Column("roles", JSON, nullable=False),  # role names from the access token
    Column("username", LargeBinary, nullable=False),  # Vault: shown in the page header
    Column("access_token", LargeBinary, nullable=False),  # Vault
    Column("refresh_token", LargeBinary, nullable=True),  # Vault
    Column("access_expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),  # absolute end, whatever the activity
    Index("ix_portal_sessions_expires_at", "expires_at"),
)
