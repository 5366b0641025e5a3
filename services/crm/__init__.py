"""The crm (support) service: app factory and service declaration (R4, R13, R14, R15)."""

from pathlib import Path

from shared.config import Setting
from shared.service import ServiceSpec

from .models import metadata, tables

NAME = "crm"

SETTINGS = (
    Setting("SMTP_HOST", str, "127.0.0.1", "SMTP relay that sends system-change notices"),
    Setting("SMTP_PORT", int, 25, "SMTP relay port", minimum=1),
    Setting("SMTP_FROM", str, "noreply@recept.invalid", "From address of system-change notices"),
    Setting("SMTP_STARTTLS", bool, False, "upgrade the relay connection with STARTTLS"),
    Setting(
        "SMTP_CA_PATH",
        str,
        None,
        "PEM file of the CA that signs the relay's certificate (default: the system's trust store)",
    ),
    Setting("SMTP_USER", str, None, "relay login user (optional)"),
    Setting("SMTP_PASSWORD", str, None, "relay login password (optional)", secret=True),
    Setting("SMTP_TIMEOUT", float, 10.0, "seconds to wait for the relay", minimum=0.1),
    Setting(
        "NOTICE_MAX_ATTEMPTS", int, 5, "delivery attempts per notice recipient before it is marked failed", minimum=1
    ),
    Setting(
        "NOTICE_RETRY_INTERVAL",
        float,
        30.0,
        "seconds between the worker's delivery rounds (and backoff base)",
        minimum=0.01,
    ),
    Setting("NOTICE_SEND_INLINE", bool, True, "send a new notice during the request (the worker retries failures)"),
    Setting("MAX_EMAIL_BYTES", int, 26_214_400, "largest accepted .eml upload in bytes", minimum=1024),
    Setting("MAX_CALL_LOG_BYTES", int, 10_485_760, "largest accepted call-log CSV upload in bytes", minimum=1024),
    Setting("CALL_LOG_TIMEZONE", str, "Europe/Stockholm", "time zone of call-log timestamps without an offset"),
    Setting("VENDOR_TENANT", str, None, "when set, only tokens of this tenant (the vendor's) reach the crm API"),
)


SPEC = ServiceSpec(
    name=NAME,
    metadata=metadata,
    tables=tables,
    migrations=Path(__file__).parent / "migrations",
    bootstrap="services.crm.bootstrap",
    settings=SETTINGS,
    description="Support desk: company person tabs, call logs, cases, e-mails as documents, change notices.",
)


def create_app(config=None):
    """Flask application factory (gunicorn: `services.crm:create_app()`)."""
    return SPEC.create_app(config)
