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
