"""Alembic environment of the portal's own database (its sessions and the library tables)."""

from services.portal.models import metadata
from shared.db import run_migrations_env

run_migrations_env(metadata)
