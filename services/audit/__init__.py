"""The audit service: every domain event, stored tamper-evidently, queryable and verifiable (R9, R11, art. 15)."""

from pathlib import Path

from shared.config import Setting
from shared.service import ServiceSpec

from . import metrics as _metrics  # noqa: F401 - registers the service's scrape-time metrics
from .models import metadata, tables

NAME = "audit"

SETTINGS = (
    Setting(
        "CHECKPOINT_DIR",
        str,
        None,
        "directory outside the database where signed checkpoints are written (default var/audit-checkpoints/)",
    ),
    Setting(
        "CHECKPOINT_KEY_FILE",
        str,
        None,
        "PEM file of the Ed25519 key that signs checkpoints (a mounted "
        "secret); unset: generated under var/ for the dev run",
    ),
    Setting(
        "CHECKPOINT_TRUSTED_KEYS",
        list,
        (),
        "comma-separated PEM public key files whose checkpoints verification accepts, besides the signing key's own",
    ),
    Setting("CHECKPOINT_EVERY", int, 10_000, "sign a chain's head after this many new entries ...", minimum=1),
    Setting("CHECKPOINT_INTERVAL", float, 60.0, "... or after this many seconds with new entries", minimum=0.01),
    Setting("RETENTION_DAYS", int, 2557, "entries older than this are purged (default 7 years)", minimum=1),
    Setting("PURGE_INTERVAL", float, 3600.0, "seconds between retention purges in the worker", minimum=0.01),
    # The busiest consumer: a deeper prefetch keeps batches full (overrides the common default).
    Setting("PREFETCH", int, 2000, "messages the audit consumer may hold unacknowledged", minimum=1),
)


SPEC = ServiceSpec(
    name=NAME,
    metadata=metadata,
    tables=tables,
    migrations=Path(__file__).parent / "migrations",
    bootstrap="services.audit.bootstrap",
    settings=SETTINGS,
    use_inbox=False,  # events are keyed by event id; gdpr commands still go through the inbox
    consume_batch=500,
    description="Every domain event in per-tenant hash chains with signed checkpoints: query, export, verify.",
)


def create_app(config=None):
    """Flask application factory (gunicorn: `services.audit:create_app()`)."""
    return SPEC.create_app(config)
