"""deploy/postgres/init-databases.sh on a real PostgreSQL: one role and one database per service, each closed to the others."""

from __future__ import annotations

import os
import subprocess
import uuid

import psycopg
import pytest

from services import load
from tests.conftest import PG_HOST, PG_PORT, PG_USER, pg_admin
from tests.deploy.conftest import ROOT

SCRIPT = ROOT / "deploy" / "postgres" / "init-databases.sh"


@pytest.fixture
def initialised(postgres_server, tmp_path):
    prefix = f"rt{uuid.uuid4().hex[:8]}_"
    services = ("orders", "crm")
    for service in services:
        (tmp_path / f"postgres-{service}-password").write_text(f"pw-{service}-{uuid.uuid4().hex}\n")
    env = {
        "PATH": os.environ["PATH"],
        "PGHOST": PG_HOST,
        "PGPORT": str(PG_PORT),
        "POSTGRES_USER": PG_USER,
        "POSTGRES_DB": "postgres",
        "RECEPT_SERVICES": " ".join(services),
        "RECEPT_DB_PREFIX": prefix,
        "RECEPT_SECRETS_DIR": str(tmp_path),
    }
    result = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    names = [prefix + service for service in services]
    try:
        assert result.returncode == 0, result.stderr
        assert "pw-" not in result.stdout + result.stderr, "a password was printed"
        yield prefix
    finally:
        with pg_admin() as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def _url(role: str, database: str) -> str:
    return f"postgresql+psycopg://{role}@{PG_HOST}:{PG_PORT}/{database}"


def test_each_service_role_owns_its_database_and_can_migrate_it(initialised):
    spec = load("orders")
    name = f"{initialised}orders"
    spec.migrate(spec.config(env={}, overrides={"DATABASE_URL": _url(name, name)}))
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=name, dbname=name) as conn:
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'outbox'").fetchone()
    assert owner == (name,)


def test_a_service_role_cannot_connect_to_another_services_database(initialised):
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(host=PG_HOST, port=PG_PORT, user=f"{initialised}orders", dbname=f"{initialised}crm").close()
