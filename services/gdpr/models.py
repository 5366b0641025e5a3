"""Tables of the gdpr service (its own database only).

Personal values (the subject's identifiers, free-text reasons, the export parts and the
export package) are Vault ciphertexts: identifiers and reasons under the subject
``gdpr:request:<id>``, export data under ``gdpr:export:<id>`` so the package can be
crypto-shredded on expiry while the request record stays.  Everything else here is ids,
names of services and kinds of data, counts and timestamps.
"""

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Table

from shared.db import new_metadata
from shared.service import library_tables

metadata = new_metadata()
tables = library_tables(metadata)

# One row per service that announced itself on recept.gdpr (DESIGN.md "Fan-out").
participants = Table(
    "participants",
    metadata,
    Column("service", String(60), primary_key=True),
    Column("phase", String(10), nullable=False),  # resolve | trail
    Column("inventory", JSON, nullable=False),  # the service's declaration (R3, R5)
    Column("counts", JSON, nullable=False),  # live counts per kind, as announced
    Column("transport_key", String(64), nullable=True),  # its X25519 public key; commands are sealed to it
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
)

requests = Table(
    "requests",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("type", String(10), nullable=False),  # export | erase
    Column("tenant", String(100), nullable=False),
    Column("status", String(24), nullable=False),
    Column("phase", String(10), nullable=True),  # preview | resolve | trail while dispatched
    Column("identifier_kinds", String(100), nullable=False),  # "email,phone": which identifiers, not their values
    Column("subject", LargeBinary, nullable=False),  # Vault: JSON of the normalised identifiers
    Column("reason", LargeBinary, nullable=True),  # Vault: free text may name people
    Column("requested_by", String(100), nullable=False),  # user id from the access token
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("extension_months", Integer, nullable=False, default=0),
    Column("extension_reason", LargeBinary, nullable=True),  # Vault
    Column("extended_by", String(100), nullable=True),
    Column("extended_at", DateTime(timezone=True), nullable=True),
    Column("decided_by", String(100), nullable=True),  # approver, or who rejected it
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("rejection_reason", LargeBinary, nullable=True),  # Vault
    Column("dispatched_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("identifiers_shredded_at", DateTime(timezone=True), nullable=True),
    # Vault (gdpr:transport:<id>): the request's ephemeral X25519 key; shredded when the request finishes.
    Column("transport_key", LargeBinary, nullable=True),
    # Vault (gdpr:request:<id>): the preview (services, candidates with their masked cards and refs).
    Column("preview", LargeBinary, nullable=True),
    Column("preview_hash", String(64), nullable=True),  # sha256 of the preview as shown; approval names it
    Column("previewed_at", DateTime(timezone=True), nullable=True),
    Column("confirmed", JSON, nullable=True),  # the candidate ids the approver confirmed (opaque)
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_requests_tenant_status", "tenant", "status"),
    Index("ix_requests_due_at", "due_at"),
)

# One row per (request, service) the request waits for: the fan-out's ledger.
request_services = Table(
    "request_services",
    metadata,
    Column("request_id", String(36), ForeignKey("requests.id"), primary_key=True),
    Column("service", String(60), primary_key=True),
    Column("phase", String(10), nullable=False),  # preview | resolve | trail
    Column("status", String(10), nullable=False),  # waiting | sent | done | failed | silent
    Column("command_id", String(36), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),  # sends in the current round
    Column("sends", Integer, nullable=False, default=0),  # sends in total
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("replied_at", DateTime(timezone=True), nullable=True),
    Column("error", String(200), nullable=True),
    Column("refs", JSON, nullable=True),  # pseudonymous subject references
    Column("result", JSON, nullable=True),  # erasure items, or record counts per kind
    Column("export", LargeBinary, nullable=True),  # Vault (gdpr:export:<id>): the service's export part
    Column("preview", LargeBinary, nullable=True),  # Vault (gdpr:request:<id>): its preview candidates
    Index("ix_request_services_due", "status", "next_attempt_at"),
)

export_packages = Table(
    "export_packages",
    metadata,
    Column("request_id", String(36), ForeignKey("requests.id"), primary_key=True),
    Column("package", LargeBinary, nullable=True),  # Vault (gdpr:export:<id>): the ZIP; NULL once deleted
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    Column("downloads", Integer, nullable=False, default=0),
)
