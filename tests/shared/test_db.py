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
    with pytest.raises(Exception):  # noqa: B017 - any driver error: the point is that ping does not pass
        db.ping()
    db.dispose()


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_migrates_on_both_backends_with_its_own_history(name, database_url):
    spec = load(name)
    config = spec.config(overrides={"DATABASE_URL": database_url}, env={})
    spec.migrate(config)
    spec.migrate(config)  # idempotent
    db = Database(database_url)
    tables = set(inspect(db.engine).get_table_names())
    assert {"outbox", "inbox", "data_keys", f"alembic_version_{name}"} <= tables
    assert set(spec.metadata.tables) <= tables, "models and migrations disagree"
    db.dispose()


def test_sqlite_files_are_owner_only_and_erased_bytes_do_not_linger(tmp_path):
    """Security review (issue 14): var/*.db were 0644, readable by every local user.  New database files
    (and their WAL) are 0600, an existing looser file is tightened, and deleted rows are overwritten
    (secure_delete), so a shredded data key is not left in the file's free pages."""
    import stat

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    path = tmp_path / "var" / "new.db"
    db = Database(f"sqlite:///{path}")
    with db.transaction() as s:
        s.execute(text("CREATE TABLE t (v TEXT)"))
        for value in ("a row that stays", "a-distinctive-wrapped-key-value", "another row that stays"):
            s.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})
    with db.transaction() as s:
        s.execute(text("DELETE FROM t WHERE v = 'a-distinctive-wrapped-key-value'"))
        assert s.execute(text("PRAGMA secure_delete")).scalar() == 1
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert mode(path.with_name("new.db-wal")) == 0o600
    db.dispose()
    assert b"a-distinctive-wrapped-key-value" not in path.read_bytes()

    old = tmp_path / "old.db"
    old.touch()
    old.chmod(0o644)
    Database(f"sqlite:///{old}").ping()
    assert mode(old) == 0o600


def test_a_forked_child_opens_its_own_connections_and_leaves_the_parents_alone(postgres_url):
    """gunicorn forks its workers from a master that loaded the app (issue 19, preload_app): a child
    must not talk over a pooled connection it inherited, and must not close the parent's."""
    import os

    db = Database(postgres_url)
    with db.engine.connect() as conn:
        parent_backend = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 1
        try:
            with db.engine.connect() as conn:
                code = 0 if conn.execute(text("SELECT pg_backend_pid()")).scalar() != parent_backend else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # 2: it reused the parent's session
    with db.engine.connect() as conn:  # the parent's pooled connection still works and is the same one
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == parent_backend
    db.dispose()
