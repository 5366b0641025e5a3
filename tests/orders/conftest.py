"""Fixtures for the orders service's tests: a runtime per test on SQLite and PostgreSQL, a clock, a tenant set up over HTTP."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from services.orders import SPEC
from services.orders.models import metadata
from shared.db import make_engine
from tests.conftest import PG_HOST, PG_PORT, PG_USER, pg_admin
from tests.orders.world import World
from tests.support import TokenMint, make_runtime


@pytest.fixture(scope="session")
def orders_postgres_url(postgres_server):
    """One migrated PostgreSQL database for the whole run, emptied before each test that uses it.

    Creating and migrating a database per test costs about a second each on this machine; an
    emptied database is just as clean (TRUNCATE leaves no rows behind for a raw dump to find).
    Commits skip the fsync wait: durability of a throw-away test database is not under test.
    """
    name = f"recept_orders_test_{uuid.uuid4().hex[:10]}"
    with pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    url = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    SPEC.migrate(SPEC.config(overrides={"DATABASE_URL": url}, env={}))
    yield url
    with pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """Each test on a fresh SQLite file, then on the emptied PostgreSQL database (overrides tests/conftest.py)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    url = request.getfixturevalue("orders_postgres_url")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
    return url


class Clock:
    """The service's notion of now, moved by the test (deadlines, retention)."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def __call__(self) -> datetime:
        return self.current

    def set(self, text: str) -> None:
        self.current = datetime.fromisoformat(text)

    def advance(self, **delta) -> None:
        self.current += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    # 09:00 in Stockholm on Sunday 10 March 2030.
    return Clock(datetime(2030, 3, 10, 8, 0, tzinfo=UTC))


@pytest.fixture
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture
def runtime(database_url, mint, clock):
    rt = make_runtime(SPEC, database_url, mint=mint, clock=clock)
    yield rt
    rt.db.dispose()


@pytest.fixture
def client(runtime):
    return SPEC.create_app(runtime=runtime).test_client()


@pytest.fixture
def world(client, mint, runtime, database_url, clock) -> World:
    return World(client, mint, runtime, database_url, clock)
