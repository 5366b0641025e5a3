from services.gdpr.models import metadata
from shared.db import run_migrations_env

run_migrations_env(metadata)
