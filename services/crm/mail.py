"""Incoming e-mails (R14): raw RFC 5322 messages stored encrypted as documents linked to a company.

The raw message is the document (attachments stay inside it); its headers are parsed
(RFC 2047 decoded) and sealed for listing; every address it names gets a blind-index
row so an erasure finds the e-mails that name a person; the sender is matched to the
company's person tab.  Each e-mail has its own key (``crm:email:<id>``), because one
document names several people and must be shreddable when any of them is erased.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.clock import as_utc, rfc3339, utcnow
from shared.errors import Conflict, Invalid, NotFound
from shared.normalise import normalise_email

from . import events as ev
from .domain import Actor, Crm, new_id, valid_uuid
from .models import email_addresses, email_attachments, emails

ROLES = ("from", "to", "cc", "reply_to")
_HEADER_OF_ROLE = {"from": "From", "to": "To", "cc": "Cc", "reply_to": "Reply-To"}


@dataclass
class Attachment:
    filename: str | None
    content_type: str
    size: int


@dataclass
class ParsedMail:
    header_from: str
    header_to: str
    subject: str
    message_id: str | None
    sent_at: datetime | None
    addresses: dict[str, list[str]]  # role -> normalised addresses
    attachments: list[Attachment] = field(default_factory=list)


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def _header(message: EmailMessage, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:  # noqa: BLE001 - a malformed header is kept out of the listing, not fatal
        return ""
    return str(value) if value is not None else ""


def _addresses(message: EmailMessage, name: str) -> list[str]:
    found = []
    try:
        headers = message.get_all(name) or []
        for header in headers:
            for address in getattr(header, "addresses", ()):
                if address.addr_spec:
                    try:
                        found.append(normalise_email(address.addr_spec))
                    except Invalid:
                        continue
    except Exception:  # noqa: BLE001 - unparseable address header: nothing indexable in it
        return []
    return list(dict.fromkeys(found))


def attachments_of(message: EmailMessage) -> Iterator[EmailMessage]:
    """The message's attachments in order: parts marked attachment, or named leaf parts that are not the body."""
    try:
        body = message.get_body(preferencelist=("plain", "html"))
    except Exception:  # noqa: BLE001 - a broken MIME tree simply has no preferred body
        body = None
    for part in message.walk():
        if part.is_multipart() or part is body or part is message and not message.is_multipart():
            continue
        if part.get_content_disposition() == "attachment" or part.get_filename():
            yield part


def payload_of(part: EmailMessage) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def body_text(message: EmailMessage) -> str | None:
    try:
        body = message.get_body(preferencelist=("plain", "html"))
        return body.get_content() if body is not None else None
    except Exception:  # noqa: BLE001 - undecodable body: the raw document is still there
        return None


def parse_mail(raw: bytes) -> ParsedMail:
    if not raw.strip():
        raise Invalid("the message is empty", errors=[{"field": "message", "message": "is empty"}])
    message = parse(raw)
    addresses = {role: _addresses(message, _HEADER_OF_ROLE[role]) for role in ROLES}
    if not _header(message, "From"):
        raise Invalid("not an RFC 5322 message", errors=[{"field": "message", "message": "has no From header"}])
    sent_at = None
    try:
        date = message.get("Date")
        sent_at = getattr(date, "datetime", None)
    except Exception:  # noqa: BLE001 - an unparseable Date is left out
        sent_at = None
    if sent_at is not None:
        # Stored as UTC: SQLite keeps no offset, so a local time would come back wrong.
        sent_at = as_utc(sent_at)
    to = ", ".join(v for v in (_header(message, "To"), _header(message, "Cc")) if v)
    return ParsedMail(
        header_from=_header(message, "From"),
        header_to=to,
        subject=_header(message, "Subject"),
        message_id=_header(message, "Message-ID") or None,
        sent_at=sent_at,
        addresses=addresses,
        attachments=[
            Attachment(part.get_filename(), part.get_content_type()[:100], len(payload_of(part)))
            for part in attachments_of(message)
        ],
    )


def ingest(crm: Crm, s: Session, actor: Actor, company_id: str, raw: bytes, source: str) -> tuple[str, bool]:
    """Store one message; returns (e-mail id, whether it was already stored).

    Conflict when the same message was stored before and deleted by an erasure: it is not
    stored again.
    """
    crm.company(s, company_id)
    fingerprint = crm.fingerprint("email", raw)
    existing = s.execute(select(emails.c.id, emails.c.deleted_at).where(emails.c.fingerprint == fingerprint)).first()
    if existing is not None:
        if existing.deleted_at is not None:
            raise Conflict("this message was deleted by an erasure request and is not stored again")
        return existing.id, True
    parsed = parse_mail(raw)
    email_id, now = new_id(), utcnow()
    subject = f"crm:email:{email_id}"
    sender = None
    if parsed.addresses["from"]:
        found = crm.persons_by_email(s, parsed.addresses["from"][0], company_id)
        sender = found[0].id if len(found) == 1 else None
    s.execute(
        emails.insert().values(
            id=email_id,
            company_id=company_id,
            person_id=sender,
            subject_ref=subject,
            raw=crm.seal(s, subject, emails, "raw", email_id, raw),
            header_from=crm.seal(s, subject, emails, "header_from", email_id, parsed.header_from),
            header_to=crm.seal(s, subject, emails, "header_to", email_id, parsed.header_to),
            header_subject=crm.seal(s, subject, emails, "header_subject", email_id, parsed.subject),
            message_id=crm.seal(s, subject, emails, "message_id", email_id, parsed.message_id),
            sent_at=parsed.sent_at,
            size=len(raw),
            attachment_count=len(parsed.attachments),
            source=source,
            ingested_by=actor.id,
            fingerprint=fingerprint,
            created_at=now,
        )
    )
    address_rows = []
    for role in ROLES:
        for address in parsed.addresses[role]:
            row_id = new_id()
            address_rows.append(
                {
                    "id": row_id,
                    "email_id": email_id,
                    "role": role,
                    "address": crm.seal(s, subject, email_addresses, "address", row_id, address),
                    "address_idx": crm.index.of("email", address),
                }
            )
    if address_rows:
        s.execute(email_addresses.insert(), address_rows)
    attachment_rows = []
    for position, attachment in enumerate(parsed.attachments):
        row_id = new_id()
        attachment_rows.append(
            {
                "id": row_id,
                "email_id": email_id,
                "position": position,
                "filename": crm.seal(s, subject, email_attachments, "filename", row_id, attachment.filename),
                "content_type": attachment.content_type,
                "size": attachment.size,
            }
        )
    if attachment_rows:
        s.execute(email_attachments.insert(), attachment_rows)
    crm.emit(
        s,
        ev.EMAIL_INGESTED,
        actor,
        data={
            "email_id": email_id,
            "company_id": company_id,
            "person_id": sender,
            "attachments": len(parsed.attachments),
            "size": len(raw),
            "source": source,
        },
        subject=subject,
        resource=("email", email_id),
    )
    return email_id, False


# --- reading ------------------------------------------------------------------------------------


def email_row(crm: Crm, s: Session, email_id: str):
    row = (
        s.execute(select(emails).where(emails.c.id == email_id, emails.c.deleted_at.is_(None))).first()
        if valid_uuid(email_id)
        else None
    )
    if row is None:
        raise NotFound("no such e-mail")
    return row


def _viewed(crm: Crm, s: Session, actor: Actor, row, part: str) -> None:
    crm.emit(
        s,
        ev.EMAIL_VIEWED,
        actor,
        data={"email_id": row.id, "company_id": row.company_id, "part": part},
        subject=row.subject_ref,
        resource=("email", row.id),
    )


def summary(crm: Crm, s: Session, row) -> dict[str, Any]:
    values, erased = crm.plain(s, emails, row, ("header_from", "header_to", "header_subject"))
    out = {
        "id": row.id,
        "company_id": row.company_id,
        "person_id": row.person_id,
        "from": values["header_from"],
        "to": values["header_to"],
        "subject": values["header_subject"],
        "date": rfc3339(row.sent_at),
        "size": row.size,
        "attachment_count": row.attachment_count,
        "source": row.source,
        "created_at": rfc3339(row.created_at),
    }
    if erased:
        out["erased_fields"] = erased
    return out


def attachment_list(crm: Crm, s: Session, email_id: str) -> list[dict[str, Any]]:
    rows = s.execute(
        select(email_attachments).where(email_attachments.c.email_id == email_id).order_by(email_attachments.c.position)
    ).all()
    return [
        {
            "position": r.position,
            "filename": crm.open(s, email_attachments, "filename", r.id, r.filename) or None,
            "content_type": r.content_type,
            "size": r.size,
        }
        for r in rows
    ]


def list_emails(crm: Crm, s: Session, actor: Actor, company_id: str, limit: int = 50, offset: int = 0) -> list[dict]:
    crm.company(s, company_id)
    rows = s.execute(
        select(emails)
        .where(emails.c.company_id == company_id, emails.c.deleted_at.is_(None))
        .order_by(emails.c.created_at.desc(), emails.c.id)
        .limit(limit)
        .offset(offset)
    ).all()
    crm.vault.prefetch(s, [r.header_from for r in rows])
    for row in rows:
        _viewed(crm, s, actor, row, "headers")
    return [summary(crm, s, r) for r in rows]


def get_email(crm: Crm, s: Session, actor: Actor, email_id: str) -> dict[str, Any]:
    row = email_row(crm, s, email_id)
    raw = crm.open(s, emails, "raw", row.id, row.raw)
    _viewed(crm, s, actor, row, "message")
    out = summary(crm, s, row)
    out["message_id"] = crm.open(s, emails, "message_id", row.id, row.message_id) or None
    out["body"] = body_text(parse(raw)) if raw else None
    out["attachments"] = attachment_list(crm, s, row.id)
    return out


def get_raw(crm: Crm, s: Session, actor: Actor, email_id: str) -> bytes:
    row = email_row(crm, s, email_id)
    raw = crm.open(s, emails, "raw", row.id, row.raw)
    if not raw:
        raise NotFound("no such e-mail")
    _viewed(crm, s, actor, row, "raw")
    return raw


def get_attachment(crm: Crm, s: Session, actor: Actor, email_id: str, position: int) -> tuple[str | None, str, bytes]:
    """(filename, content type, bytes) of the attachment at ``position``, cut from the stored document."""
    row = email_row(crm, s, email_id)
    raw = crm.open(s, emails, "raw", row.id, row.raw)
    parts = list(attachments_of(parse(raw))) if raw else []
    if not 0 <= position < len(parts):
        raise NotFound("no such attachment")
    _viewed(crm, s, actor, row, "attachment")
    part = parts[position]
    return part.get_filename(), part.get_content_type(), payload_of(part)


def search_emails(crm: Crm, s: Session, actor: Actor, address: str) -> list[dict[str, Any]]:
    rows = crm.emails_naming(s, normalise_email(address))
    rows = sorted(rows, key=lambda r: (as_utc(r.created_at), r.id), reverse=True)
    for row in rows:
        _viewed(crm, s, actor, row, "headers")
    return [summary(crm, s, r) for r in rows]


# --- mailboxes (the ingest-mail command) ----------------------------------------------------------


def mailbox_messages(path: Path) -> tuple[str, Iterator[bytes]]:
    """('maildir' | 'mbox', the raw messages) of a Maildir directory or an mbox file."""
    if path.is_dir():
        if not all((path / sub).is_dir() for sub in ("cur", "new")):
            raise Invalid(
                "not a Maildir", errors=[{"field": "path", "message": "is a directory without cur/ and new/"}]
            )
        box: mailbox.Mailbox = mailbox.Maildir(str(path), factory=None, create=False)
        kind = "maildir"
    elif path.is_file():
        box = mailbox.mbox(str(path), factory=None, create=False)
        kind = "mbox"
    else:
        raise Invalid("no such mailbox", errors=[{"field": "path", "message": "is neither a Maildir nor an mbox file"}])

    def messages() -> Iterator[bytes]:
        try:
            for key in sorted(box.keys()) if kind == "maildir" else box.keys():
                yield box.get_bytes(key)
        finally:
            box.close()

    return kind, messages()
