"""Sending e-mail over SMTP: one connection to the configured relay, and error reasons safe to record.

Used by crm's system-change notices and the gdpr service's notices to data subjects.  A relay's
error replies often quote the recipient's address, so only the exception class and the SMTP code
are ever recorded or logged (``reason``).
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from .clock import utcnow


class SmtpRelay:
    """One connection to the relay named by the ``SMTP_*`` settings (STARTTLS and login when configured)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def open(self) -> smtplib.SMTP:
        c = self.config
        smtp = smtplib.SMTP(c["SMTP_HOST"], c["SMTP_PORT"], timeout=c["SMTP_TIMEOUT"])
        try:
            if c["SMTP_STARTTLS"]:
                smtp.starttls(context=ssl.create_default_context(cafile=c.get("SMTP_CA_PATH") or None))
            if c["SMTP_USER"]:
                smtp.login(c["SMTP_USER"], c["SMTP_PASSWORD"] or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: EmailMessage, to: str) -> None:
        """Send one message on a connection of its own."""
        smtp = self.open()
        try:
            smtp.send_message(message, from_addr=self.config["SMTP_FROM"], to_addrs=[to])
        finally:
            close(smtp)


def close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        smtp.close()


def reason(exc: BaseException) -> str:
    """What may be recorded of a failed send: the exception class and SMTP code, never the reply text."""
    code = getattr(exc, "smtp_code", None)
    return f"{type(exc).__name__} {code}" if code else type(exc).__name__


def message(sender: str, to: str, subject: str, body: str, headers: Mapping[str, str] | None = None) -> EmailMessage:
    """A plain-text message with Date and Message-ID (ValueError when a header cannot carry a value)."""
    out = EmailMessage()
    out["From"] = sender
    out["To"] = to
    out["Subject"] = subject
    out["Date"] = format_datetime(utcnow())
    out["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    for name, value in (headers or {}).items():
        out[name] = value
    out.set_content(body)
    return out
