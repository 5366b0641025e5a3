"""Fixtures every test can use: real PostgreSQL databases and RabbitMQ vhosts, made fresh per test.

With ``CI`` set, a test that needs a server that is not there FAILS; on a developer's
machine it is skipped with the reason.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import uuid
from urllib.parse import quote

import pytest

PG_HOST = os.environ.get("RECEPT_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("RECEPT_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("RECEPT_TEST_PG_USER", "postgres")
RABBIT_HOST = os.environ.get("RECEPT_TEST_RABBIT_HOST", "127.0.0.1")
RABBIT_PORT = int(os.environ.get("RECEPT_TEST_RABBIT_PORT", "5672"))
RABBIT_USER = os.environ.get("RECEPT_TEST_RABBIT_USER", "guest")
RABBIT_PASSWORD = os.environ.get("RECEPT_TEST_RABBIT_PASSWORD", "guest")


def missing(what: str) -> None:
    """A required real server is absent: fail under CI, skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required under CI but is not reachable", pytrace=False)
    pytest.skip(f"{what} is not reachable")


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- PostgreSQL -------------------------------------------------------------------------------


def pg_admin():
    """An autocommit connection to the server's maintenance database (CREATE/DROP/ALTER DATABASE)."""
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)


def create_database(prefix: str = "recept_test") -> str:
    """A new empty PostgreSQL database; its URL.  Drop it with ``drop_database``."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def drop_database(url: str) -> None:
    with pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server():
    if not port_open(PG_HOST, PG_PORT):
        missing(f"PostgreSQL at {PG_HOST}:{PG_PORT}")
    return PG_HOST, PG_PORT


@pytest.fixture
def make_postgres_db(postgres_server):
    """Factory: a new empty PostgreSQL database per call, dropped after the test."""
    created: list[str] = []

    def make(prefix: str = "recept_test") -> str:
        created.append(create_database(prefix))
        return created[-1]

    yield make
    for url in created:
        drop_database(url)


@pytest.fixture
def postgres_url(make_postgres_db) -> str:
    return make_postgres_db()


def pg_dump(url: str) -> bytes:
    """A raw dump of a test database, for 'no plaintext at rest' assertions."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return subprocess.run(
        [
            "pg_dump",
            "-h",
            parsed.host,
            "-p",
            str(parsed.port or 5432),
            "-U",
            parsed.username,
            "--data-only",
            parsed.database,
        ],
        check=True,
        capture_output=True,
    ).stdout


def sqlite_dump(url: str) -> bytes:
    """Every byte of a SQLite database and its WAL, for 'no plaintext at rest' assertions."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    path = Path(make_url(url).database)
    data = b""
    for candidate in (path, path.with_name(path.name + "-wal")):
        if candidate.exists():
            data += candidate.read_bytes()
    return data


def raw_dump(url: str) -> bytes:
    return pg_dump(url) if url.startswith("postgresql") else sqlite_dump(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """Run a test on both back ends: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("make_postgres_db")()


# --- RabbitMQ ---------------------------------------------------------------------------------

_vhost_cleanup: list[str] = []


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def rabbitmq_server():
    if not port_open(RABBIT_HOST, RABBIT_PORT):
        missing(f"RabbitMQ at {RABBIT_HOST}:{RABBIT_PORT}")
    yield RABBIT_HOST, RABBIT_PORT
    # Vhosts are deleted in parallel at the end rather than one by one after each test.
    threads = [threading.Thread(target=_rabbitmqctl, args=("delete_vhost", v)) for v in _vhost_cleanup]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def create_vhost(prefix: str = "recept-test") -> str:
    """A fresh RabbitMQ vhost (nameko-style isolation), deleted at the end of the session; its amqp:// URL.

    Use it directly for module-scoped fixtures (creating a vhost costs about a second)."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:10]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, RABBIT_USER, ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        missing(f"rabbitmqctl to create a vhost ({type(exc).__name__})")
    _vhost_cleanup.append(vhost)
    return f"amqp://{RABBIT_USER}:{RABBIT_PASSWORD}@{RABBIT_HOST}:{RABBIT_PORT}/{quote(vhost, safe='')}"


@pytest.fixture
def make_rabbit_vhost(rabbitmq_server):
    """Factory: a fresh RabbitMQ vhost per call; returns its amqp:// URL."""
    return create_vhost


@pytest.fixture
def rabbit_url(make_rabbit_vhost) -> str:
    return make_rabbit_vhost()


# --- tiers (issue 13) ---------------------------------------------------------------------------
# unit: no broker, no database server, no child process (SQLite files are fine): seconds.
# integration: a real RabbitMQ, PostgreSQL or slapd, or processes of the system; e2e: tests/e2e.
# A test's own marker wins; otherwise its tier follows from what it uses, so a new test lands in
# the right tier without anyone remembering to mark it.

TIERS = ("unit", "integration", "e2e", "chaos", "cluster")
SERVER_FIXTURES = {"postgres_server", "rabbitmq_server", "slapd", "slapd_fresh", "slapd_ad", "slapd_ad_fresh"}
_TESTS = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(tier) for tier in TIERS):
            continue
        folder = os.path.relpath(str(item.path), _TESTS).split(os.sep)[0]
        params = getattr(getattr(item, "callspec", None), "params", {})
        if folder in ("e2e", "chaos", "cluster"):
            item.add_marker(getattr(pytest.mark, folder))
        elif SERVER_FIXTURES & set(item.fixturenames) or "postgresql" in params.values():
            item.add_marker(pytest.mark.integration)
        else:
            item.add_marker(pytest.mark.unit)
