"""The audit service: app factory and service declaration."""
from pathlib import Path

from shared.service import ServiceSpec

from .models import metadata, tables

NAME = "audit"


def _blueprints():
    from .api import bp

    return [bp]


SPEC = ServiceSpec(
    name=NAME,
    metadata=metadata,
    tables=tables,
    migrations=Path(__file__).parent / "migrations",
    blueprints=_blueprints,
)


def create_app(config=None):
    """Flask application factory (gunicorn: `services.audit:create_app()`)."""
    return SPEC.create_app(config)
