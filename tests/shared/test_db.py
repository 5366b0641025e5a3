"""Per-service databases: SQLite pragmas, PostgreSQL via psycopg 3, migrations per service."""
import pytest
from sqlalchemy import inspect, text

from services import SERVICES, load
from shared.db import Database, normalise_url


def test_plain_postgresql_urls_use_psycopg3():
    assert normalise_url("postgresql://u@h/db").startswith("postgresql+psycopg://")


def test_sqlite_runs_with_wal_and_foreign_keys(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.transaction() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
    db.dispose()


def test_transaction_rolls_back_on_error(database_url):
    db = Database(database_url)
    with db.transaction() as s:
        s.execute(text("CREATE TABLE t (x INTEGER)"))
    with pytest.raises(RuntimeError):
        with db.transaction() as s:
            s.execute(text("INSERT INTO t VALUES (1)"))
            raise RuntimeError()
    with db.transaction() as s:
        assert s.execute(text("SELECT count(*) FROM t")).scalar() == 0
    db.dispose()


def test_unreachable_database_fails_ping():
    db = Database("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(Exception):
        db.ping()
    db.dispose()


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_migrates_on_both_backends_with_its_own_history(name, database_url):
    spec = load(name)
    config = spec.config(overrides={"DATABASE_URL": database_url}, env={})
    spec.migrate(config)
    spec.migrate(config)                      # idempotent
    db = Database(database_url)
    tables = set(inspect(db.engine).get_table_names())
    assert {"outbox", "inbox", "data_keys", f"alembic_version_{name}"} <= tables
    assert set(spec.metadata.tables) <= tables, "models and migrations disagree"
    db.dispose()
