"""One database per service: engine, transactions, readiness, and Alembic migrations."""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

# Constraint names that are stable across SQLite and PostgreSQL, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # Deleted content is zeroed, not left in free pages: a shredded data key must be gone from the file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # pysqlite's own transaction handling defers BEGIN; take the write lock up front
    # instead so two writers queue on busy_timeout rather than failing mid-transaction.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _private_file(path: Path) -> None:
    """Create a SQLite file owner-only (0600, in a 0700 folder if new), or tighten one we own.

    SQLite gives its -wal and -shm files the database file's mode, so they follow.  The files
    hold ciphertext and wrapped keys, but also every plain column: not for other local users.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        try:
            if path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
                os.chmod(path, 0o600)
        except OSError:
            pass  # not ours to change (a shared file): SQLite will say if it cannot open it


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_file(Path(parsed.database))
        engine = create_engine(url, connect_args={"check_same_thread": False, "isolation_level": None}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


# Every engine this process made, so a fork can leave their pooled connections behind (below).
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def close_pooled_connections() -> None:
    """Close every engine's pooled connections in this process (gunicorn's master, before it forks
    its workers with the app preloaded: the master keeps no database connection it does not use)."""
    for engine in list(_ENGINES):
        engine.dispose()


def _after_fork_in_child() -> None:
    # A forked child shares its parent's sockets: using a pooled connection from both ends would mix
    # their conversations. The child forgets them without closing them (close=False, the parent's
    # still), and its pools open fresh connections on first use.
    for engine in list(_ENGINES):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Database:
    """A service's database: ``with db.transaction() as session: ...`` commits or rolls back."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url, **engine_kwargs)
        _ENGINES.add(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.sessions.begin() as session:
            yield session

    def ping(self) -> None:
        """Raise when the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def migrate(service: str, url: str, migrations_dir: Path, revision: str = "head") -> None:
    """Bring ``service``'s database to ``revision`` with its own Alembic history.

    Each service keeps its own version table, so two services pointed at one
    database by mistake cannot overwrite each other's history.
    """
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    cfg.attributes["service"] = service
    command.upgrade(cfg, revision)


def run_migrations_env(metadata: MetaData) -> None:
    """The body of every service's ``migrations/env.py``."""
    from alembic import context

    cfg = context.config
    service = cfg.attributes.get("service") or cfg.get_main_option("service")
    version_table = f"alembic_version_{service}"
    url = cfg.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        context.configure(
            url=url, target_metadata=metadata, version_table=version_table, literal_binds=True, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    if url is None:  # migrate() always sets it; without it there is no database to connect to
        raise RuntimeError("the Alembic configuration names no sqlalchemy.url")
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection, target_metadata=metadata, version_table=version_table, render_as_batch=True
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
