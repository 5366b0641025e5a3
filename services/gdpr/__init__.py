"""The gdpr service: app factory and service declaration."""

from pathlib import Path

from shared.config import Setting
from shared.service import ServiceSpec

from . import metrics as _metrics  # noqa: F401 - registers the service's scrape-time metrics
from .models import metadata, tables

NAME = "gdpr"

SETTINGS = (
    Setting(
        "REPLY_TIMEOUT",
        float,
        60.0,
        "seconds to wait for a service's answer before re-sending (doubles with every re-send)",
        minimum=0.01,
    ),
    Setting(
        "MAX_ATTEMPTS",
        int,
        5,
        "sends per service before it counts as silent and the request shows partially_completed",
        minimum=1,
    ),
    Setting("MAX_BACKOFF", float, 3600.0, "longest wait between two sends, in seconds", minimum=0.01),
    Setting("SWEEP_INTERVAL", float, 5.0, "seconds between two rounds of the timeout/expiry loop", minimum=0.01),
    Setting(
        "PARTICIPANT_TTL",
        float,
        7 * 86400.0,
        "a service that has not announced itself for this many seconds is no longer expected by new requests",
        minimum=1,
    ),
    Setting(
        "EXPORT_RETENTION",
        float,
        7 * 86400.0,
        "seconds an export package stays downloadable before it is deleted and crypto-shredded",
        minimum=1,
    ),
    Setting(
        "IDENTIFIER_RETENTION",
        float,
        30 * 86400.0,
        "seconds after a request finished (completed or rejected) before its subject identifiers are crypto-shredded",
        minimum=0,
    ),
    # Four eyes by default (issue 14): an export hands a person's whole record, health data included,
    # to whoever downloads it, so a second officer releases it unless a deployment names the tenants.
    Setting(
        "EXPORT_APPROVAL",
        list,
        ("*",),
        "tenants whose exports need a second officer's approval "
        "(comma-separated; * for all, the default); other exports run at once",
    ),
    Setting(
        "VENDOR_TENANTS",
        list,
        ("vendor",),
        "token tenants whose compliance officers see every tenant's "
        "requests; officers of any other tenant see only their own",
    ),
    # --- issue 17: public requests, verification, notices, hand-over (docs/gdpr.md "The person is told")
    Setting("SMTP_HOST", str, "127.0.0.1", "SMTP relay that sends verification codes and notices to persons"),
    Setting("SMTP_PORT", int, 25, "SMTP relay port", minimum=1),
    Setting("SMTP_FROM", str, "privacy@recept.invalid", "From address of codes and notices to persons"),
    Setting("SMTP_STARTTLS", bool, False, "upgrade the relay connection with STARTTLS"),
    Setting("SMTP_CA_PATH", str, None, "PEM file of the CA that signs the relay's certificate (default: system)"),
    Setting("SMTP_USER", str, None, "relay login user (optional)"),
    Setting("SMTP_PASSWORD", str, None, "relay login password (optional)", secret=True),
    Setting("SMTP_TIMEOUT", float, 10.0, "seconds to wait for the relay", minimum=0.1),
    Setting(
        "SMS_SENDER",
        str,
        None,
        "module:factory of the SMS sender (called with the config; its send(number, text) sends one SMS); "
        "unset: no SMS channel",
    ),
    Setting("CODE_TTL", float, 600.0, "seconds a one-time verification code is valid", minimum=1),
    Setting("CODE_ATTEMPTS", int, 5, "wrong codes before a verification is spent", minimum=1),
    Setting("PUBLIC_WINDOW", float, 3600.0, "length in seconds of the public endpoints' rate-limit window", minimum=1),
    Setting(
        "PUBLIC_PER_ADDRESS", int, 5, "verification codes per e-mail address or phone number per window", minimum=1
    ),
    Setting("PUBLIC_PER_CLIENT", int, 30, "public calls per client IP per window", minimum=1),
    Setting(
        "PUBLIC_CUSTOMERS",
        list,
        (),
        "customers a person may name on the public page, as slug=Display name (comma-separated)",
    ),
    Setting(
        "FORWARDING_TOKEN",
        str,
        None,
        "shared with the portal: lets it forward the browser's address for the per-client rate limit",
        secret=True,
    ),
    Setting("FORWARDING_TOKEN_FILE", str, None, "path of a file holding FORWARDING_TOKEN (a mounted secret)"),
    Setting("PUBLIC_BASE_URL", str, "http://127.0.0.1:8080/portal", "the portal's public URL (download links)"),
    Setting("HANDOVER_TTL", float, 7 * 86400.0, "seconds a one-time download link is valid", minimum=1),
    Setting("NOTICE_MAX_ATTEMPTS", int, 8, "sends of one notice before it is marked failed", minimum=1),
    Setting("NOTICE_RETRY_INTERVAL", float, 30.0, "seconds between notice rounds (and backoff base)", minimum=0.01),
    Setting("REMINDER_BEFORE", float, 7 * 86400.0, "remind officers this many seconds before a due date", minimum=1),
    Setting("REMINDER_TO", list, (), "e-mail addresses of the officers reminded of due requests (comma-separated)"),
)


SPEC = ServiceSpec(
    name=NAME,
    metadata=metadata,
    tables=tables,
    migrations=Path(__file__).parent / "migrations",
    bootstrap="services.gdpr.bootstrap",
    settings=SETTINGS,
    description="Data-subject requests (export, erasure) fanned out to every service over recept.gdpr, "
    "export packages, erasure results and the data inventory (R1, R2, R3, R5).",
)


def create_app(config=None):
    """Flask application factory (gunicorn: `services.gdpr:create_app()`)."""
    return SPEC.create_app(config)
