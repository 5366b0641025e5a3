"""Tables of the crm service (its own database only).

Every column that can identify a person is ``LargeBinary`` ciphertext from the Vault,
bound to its table, column and row id; lookups go through ``*_idx`` blind-index
columns (truncated keyed HMACs, many rows per value).  Each record has its own
encryption subject (``subject_ref``): ``crm:person:<id>``, ``crm:case:<id>``,
``crm:call:<id>``, ``crm:email:<id>`` (see docs/crm.md for why per record).
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from shared.db import new_metadata
from shared.service import library_tables

metadata = new_metadata()
tables = library_tables(metadata)


def _ts(name: str, nullable: bool = False) -> Column:
    return Column(name, DateTime(timezone=True), nullable=nullable)


companies = Table(
    "companies",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),  # a customer organisation, not a person
    Column("org_number", String(20), nullable=True),
    Column("tenant", String(100), nullable=True, index=True),  # the auth tenant slug, where one exists
    _ts("created_at"),
    _ts("updated_at"),
)

persons = Table(
    "persons",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("company_id", String(36), ForeignKey("companies.id"), nullable=False, index=True),
    Column("subject_ref", String(200), nullable=False),
    Column("name", LargeBinary, nullable=False),
    Column("email", LargeBinary, nullable=True),
    Column("phone", LargeBinary, nullable=True),
    Column("title", LargeBinary, nullable=True),
    Column("name_idx", BigInteger, nullable=True, index=True),
    Column("email_idx", BigInteger, nullable=True, index=True),
    Column("phone_idx", BigInteger, nullable=True, index=True),
    Column("notice_recipient", Boolean, nullable=False, default=False),
    _ts("created_at"),
    _ts("updated_at"),
)

cases = Table(
    "cases",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("company_id", String(36), ForeignKey("companies.id"), nullable=False, index=True),
    Column("person_id", String(36), nullable=True, index=True),  # no FK: a person may be erased
    Column("subject_ref", String(200), nullable=False),
    Column("caller_name", LargeBinary, nullable=True),
    Column("caller_phone", LargeBinary, nullable=True),
    Column("caller_email", LargeBinary, nullable=True),
    Column("topic", LargeBinary, nullable=True),  # the case's "subject" line: free text
    Column("description", LargeBinary, nullable=True),
    Column("caller_phone_idx", BigInteger, nullable=True, index=True),
    Column("caller_email_idx", BigInteger, nullable=True, index=True),
    # Issue 15: the caller's name (normalise_name), so a request by name finds the cases in it.
    Column("caller_name_idx", BigInteger, nullable=True, index=True),
    Column("channel", String(10), nullable=False),
    Column("status", String(20), nullable=False, index=True),
    Column("assignee", String(100), nullable=True),  # a vendor staff user id (pseudonymous)
    Column("created_by", String(100), nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("closed_at", nullable=True),
    _ts("redacted_at", nullable=True),
)

call_imports = Table(
    "call_imports",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("source", String(10), nullable=False),  # http | cli
    Column("imported_by", String(100), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("imported", Integer, nullable=False),
    Column("duplicates", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("matched", Integer, nullable=False),
    _ts("created_at"),
)

calls = Table(
    "calls",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("import_id", String(36), ForeignKey("call_imports.id"), nullable=False, index=True),
    Column("subject_ref", String(200), nullable=False),
    Column("number", LargeBinary, nullable=True),  # NULL once redacted
    Column("number_idx", BigInteger, nullable=True, index=True),
    Column("called_line", String(40), nullable=False),  # the vendor's own support line
    Column("started_at", DateTime(timezone=True), nullable=False, index=True),
    Column("duration_s", Integer, nullable=False),
    Column("direction", String(10), nullable=False),
    Column("person_id", String(36), nullable=True, index=True),
    Column("company_id", String(36), nullable=True, index=True),
    # Keyed HMAC-SHA256 of the whole normalised row: a re-import adds nothing twice.  A redaction
    # replaces it with a random value, since it could be brute-forced back to the number.
    Column("fingerprint", String(64), nullable=False, unique=True),
    _ts("created_at"),
    _ts("redacted_at", nullable=True),
)

emails = Table(
    "emails",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("company_id", String(36), ForeignKey("companies.id"), nullable=False, index=True),
    Column("person_id", String(36), nullable=True, index=True),  # the sender, when matched
    Column("subject_ref", String(200), nullable=False),
    Column("raw", LargeBinary, nullable=True),  # the RFC 5322 document; NULL once deleted
    Column("header_from", LargeBinary, nullable=True),
    Column("header_to", LargeBinary, nullable=True),
    Column("header_subject", LargeBinary, nullable=True),
    Column("message_id", LargeBinary, nullable=True),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("size", Integer, nullable=False),
    Column("attachment_count", Integer, nullable=False),
    Column("source", String(10), nullable=False),  # upload | maildir | mbox
    Column("ingested_by", String(100), nullable=False),
    # Keyed HMAC of the raw bytes: the same message is stored once, and a deleted one stays deleted.
    Column("fingerprint", String(64), nullable=False, unique=True),
    _ts("created_at"),
    _ts("deleted_at", nullable=True),
)

email_addresses = Table(
    "email_addresses",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email_id", String(36), ForeignKey("emails.id"), nullable=False, index=True),
    Column("role", String(10), nullable=False),  # from | to | cc | reply_to
    Column("address", LargeBinary, nullable=False),
    Column("address_idx", BigInteger, nullable=False, index=True),
)

email_attachments = Table(
    "email_attachments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email_id", String(36), ForeignKey("emails.id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),  # order among the message's attachments
    Column("filename", LargeBinary, nullable=True),
    Column("content_type", String(100), nullable=False),
    Column("size", Integer, nullable=False),
    UniqueConstraint("email_id", "position"),
)

notices = Table(
    "notices",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("title", String(200), nullable=False),  # about a system change, not a person
    Column("body", Text, nullable=False),
    Column("company_ids", Text, nullable=False),  # JSON list of the chosen companies
    Column("created_by", String(100), nullable=False),
    _ts("created_at"),
)

notice_deliveries = Table(
    "notice_deliveries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("notice_id", String(36), ForeignKey("notices.id"), nullable=False, index=True),
    Column("company_id", String(36), nullable=False),
    Column("person_id", String(36), nullable=True, index=True),  # NULL once the person is erased
    Column("status", String(10), nullable=False),  # pending | sent | failed | cancelled
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", String(200), nullable=True),  # error class and SMTP code only
    _ts("claimed_until", nullable=True),
    _ts("sent_at", nullable=True),
    _ts("created_at"),
    Index("ix_notice_deliveries_pending", "status", "claimed_until"),
)
