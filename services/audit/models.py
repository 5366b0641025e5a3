"""Tables of the audit service (its own database only): the hash-chained entries, chain heads, checkpoints.

``audit_entries`` is append-only: the ingest inserts, the retention purge deletes the
oldest entries of a chain up to a signed checkpoint, and nothing ever updates a row.
The columns beside ``body`` are copies of envelope fields for querying; verification
checks them against ``body``, which is what the hash covers.
"""

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, LargeBinary, String, Table, UniqueConstraint

from shared.db import new_metadata
from shared.service import library_tables

metadata = new_metadata()
tables = library_tables(metadata)

_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements only INTEGER primary keys

entries = Table(
    "audit_entries",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("chain", String(120), nullable=False),  # "tenant:<slug>", "vendor" or "system"
    Column("seq", BigInteger, nullable=False),  # 1, 2, 3 ... per chain
    Column("event_id", String(36), nullable=False),
    Column("type", String(200), nullable=False),
    Column("time", DateTime(timezone=True), nullable=False),  # the event's own time (UTC)
    Column("recorded_at", DateTime(timezone=True), nullable=False),  # when the audit stored it
    Column("tenant", String(100), nullable=True),
    Column("actor", String(100), nullable=True),  # actor id (a user id, never a name)
    Column("subject", String(200), nullable=True),  # pseudonymous subject reference
    Column("resource_type", String(60), nullable=True),
    Column("resource_id", String(100), nullable=True),
    Column("body", LargeBinary, nullable=False),  # canonical JSON of the event: what is hashed
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    UniqueConstraint("chain", "seq", name="uq_audit_entries_chain_seq"),
    UniqueConstraint("event_id", name="uq_audit_entries_event_id"),
    Index("ix_audit_entries_time", "time", "id"),
    Index("ix_audit_entries_tenant", "tenant", "time", "id"),
    Index("ix_audit_entries_subject", "subject"),
    Index("ix_audit_entries_actor", "actor"),
    Index("ix_audit_entries_resource_id", "resource_id"),
)

chains = Table(
    "audit_chains",
    metadata,
    Column("chain", String(120), primary_key=True),
    Column("tenant", String(100), nullable=True),
    Column("seq", BigInteger, nullable=False),  # seq of the head entry (0: empty)
    Column("head_hash", LargeBinary(32), nullable=False),
    Column("anchor_seq", BigInteger, nullable=False),  # entries up to here were purged (0: none)
    Column("anchor_hash", LargeBinary(32), nullable=False),  # hash of entry anchor_seq (genesis when 0)
    Column("checkpoint_seq", BigInteger, nullable=False),  # last signed checkpoint (0: none)
    Column("checkpoint_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("chain", String(120), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),  # hex
    Column("key_id", String(64), nullable=False),
    Column("signature", String(200), nullable=False),  # base64 Ed25519 signature
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("chain", "seq", name="uq_audit_checkpoints_chain_seq"),
)
