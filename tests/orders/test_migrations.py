"""The hand-written migration creates exactly the tables models.py declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.orders import SPEC
from services.orders.models import metadata


def test_migrated_schema_matches_the_models(database_url):
    config = SPEC.config(overrides={"DATABASE_URL": database_url}, env={})
    SPEC.migrate(config)
    SPEC.migrate(config)  # running it again is a no-op
    from shared.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = [
                d
                for d in compare_metadata(context, metadata)
                if not (d[0] == "remove_table" and d[1].name.startswith("alembic_version"))
            ]
    finally:
        engine.dispose()
    assert differences == []
