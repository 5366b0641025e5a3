"""Tables of the gdpr service (its own database only).

Personal values (the subject's identifiers, free-text reasons, the export parts and the
export package) are Vault ciphertexts: identifiers and reasons under the subject
``gdpr:request:<id>``, export data under ``gdpr:export:<id>`` so the package can be
crypto-shredded on expiry while the request record stays.  Everything else here is ids,
names of services and kinds of data, counts and timestamps.
"""

from sqlalchemy import JSON, Boolean, Column, Date, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Table

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
    Column("tenant_counts", JSON, nullable=True),  # {tenant slug: {kind: count}}, as announced (art. 30(2))
    Column("transport_key", String(64), nullable=True),  # its X25519 public key; commands are sealed to it
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
)

# The tenants as the auth service announces them (auth.tenant.announced; issue 15): slug, kind and the data
# processing agreement's version and date (never its signatory).  A request for a tenant not here is a 404.
tenants = Table(
    "tenants",
    metadata,
    Column("slug", String(100), primary_key=True),
    Column("tenant_id", String(36), nullable=False),
    Column("kind", String(10), nullable=False),  # vendor | customer
    Column("agreement_version", String(50), nullable=True),
    Column("agreement_signed_on", Date, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
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
    # The customer as controller (issue 15, services/gdpr/controller.py): whether the request reaches
    # processor data, whether it waits for the customer's privacy officer, the instruction (Vault: it names
    # a person at the customer) and who opened, approved, confirmed or rejected it (role, tenant, user id).
    Column("processor", Boolean, nullable=False, default=False),
    Column("needs_confirmation", Boolean, nullable=False, default=False),
    Column("instruction", LargeBinary, nullable=True),
    Column("parties", JSON, nullable=True),
    # The tenant's data processing agreement when the request was opened on its processor data (issue 15).
    Column("agreement_version", String(50), nullable=True),
    Column("agreement_signed_on", Date, nullable=True),
    # Vault (gdpr:request:<id>): the preview (services, candidates with their masked cards and refs).
    Column("preview", LargeBinary, nullable=True),
    Column("preview_hash", String(64), nullable=True),  # sha256 of the preview as shown; approval names it
    Column("previewed_at", DateTime(timezone=True), nullable=True),
    Column("confirmed", JSON, nullable=True),  # the candidate ids the approver confirmed (opaque)
    # Issue 15: the audit checkpoint of the request's tenant first signed after the erasure finished
    # (chain, seq, head_hash, key_id, signature, signed_at), which its certificate is anchored to.
    Column("anchor", JSON, nullable=True),
    Column("anchored_at", DateTime(timezone=True), nullable=True),  # the anchor's signed_at
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_requests_tenant_status", "tenant", "status"),
    Index("ix_requests_due_at", "due_at"),
)

# Issue 15: the latest signed audit checkpoint of each tenant's chain (audit.checkpoint.signed events).
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("tenant", String(100), primary_key=True),
    Column("chain", String(120), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", String(200), nullable=False),
    Column("signed_at", DateTime(timezone=True), nullable=False),
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

# --- issue 17: the person is told (public requests, verification, notices, hand-over) -------------

# A pending identity check: nothing else exists until the code is confirmed (services/gdpr/public.py).
public_verifications = Table(
    "public_verifications",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("code_hash", String(64), nullable=False),  # HMAC-SHA256 of the code under the index key
    Column("draft", LargeBinary, nullable=False),  # Vault (gdpr:verification:<id>): the asked-for request
    Column("channel", String(8), nullable=False),  # email | sms
    Column("attempts", Integer, nullable=False, default=0),
    # Vault (same subject): the code, only while the relay could not take it; the notice loop retries.
    Column("unsent_code", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Column("request_id", String(36), nullable=True),
    Index("ix_public_verifications_expires", "expires_at"),
)

# Fixed-window counters of the public endpoints; keys are HMACs (of an address or a client IP).
public_limits = Table(
    "public_limits",
    metadata,
    Column("key", String(80), primary_key=True),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("count", Integer, nullable=False),
)

# A request a person opened on the public page: how to reach them (shredded after an erasure).
public_requests = Table(
    "public_requests",
    metadata,
    Column("request_id", String(36), ForeignKey("requests.id"), primary_key=True),
    Column("origin", String(10), nullable=False),  # public
    Column("scope", String(10), nullable=False),  # vendor (controller) | customer (an instruction)
    Column("customer_must_confirm", Boolean, nullable=False),
    Column("language", String(5), nullable=False),
    Column("contact", LargeBinary, nullable=True),  # Vault (gdpr:contact:<id>): {"email", "phone"}
    Column("contact_hash", String(64), nullable=False),  # proves who was answered once the contact is gone
    Column("verified_channel", String(8), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("contact_shredded_at", DateTime(timezone=True), nullable=True),
)

# Every notice to a person or reminder to officers: an outbox of its own, retried until sent.
subject_notices = Table(
    "subject_notices",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("request_id", String(36), ForeignKey("requests.id"), nullable=False),
    Column("kind", String(20), nullable=False),  # received | extended | completed | rejected | passphrase | reminder
    Column("channel", String(8), nullable=False),  # email | sms
    Column("event_id", String(36), nullable=True),  # the gdpr event it answers (one notice per event and kind)
    Column("secret", LargeBinary, nullable=True),  # Vault (gdpr:notice:<id>): a link or passphrase to carry once
    Column("status", String(10), nullable=False),  # pending | sent | failed | cancelled
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_error", String(100), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Index("ix_subject_notices_due", "status", "next_attempt_at"),
    Index("ux_subject_notices_event", "event_id", "kind", unique=True),
)

# A one-time download of an export, encrypted to a passphrase (services/gdpr/handover.py).
handovers = Table(
    "handovers",
    metadata,
    Column("request_id", String(36), ForeignKey("requests.id"), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),  # SHA-256 of the random link token
    Column("package", LargeBinary, nullable=True),  # Vault (gdpr:export:<id>): the passphrase-encrypted package
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("downloaded_at", DateTime(timezone=True), nullable=True),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
)
