"""Fixtures of the auth service's tests: an app on a fresh database with a controllable clock, its
own signing keys, and helpers to create tenants, users and tokens."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.auth import SPEC
from services.auth.domain import Auth
from services.auth.login import Logins
from shared.bus import MemoryBackend
from shared.crypto import Keyring
from shared.service import Runtime
from tests.ldap_server import slapd, slapd_ad, slapd_fresh  # noqa: F401 - fixtures

DEMO = {
    "alice": "alice-password-1",
    "bob": "bob-password-1",
    "carol": "carol-password-1",
    "asa": "asa-password-1",
    "erin": "erin-password-1",
    "dave": "dave-password-1",
}
PASSWORD = "correct horse battery staple"


class Clock:
    """Stands in for the wall clock where lockouts and token lifetimes are tested."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Harness:
    runtime: Runtime
    app: Any
    client: Any
    clock: Clock
    url: str

    @property
    def auth(self) -> Auth:
        return self.runtime.domain

    @property
    def logins(self) -> Logins:
        return self.app.extensions["auth.logins"]

    def tenant(self, slug: str, name: str | None = None) -> dict:
        with self.auth.db.transaction() as s:
            return self.auth.create_tenant(s, None, slug, name or f"Tenant {slug}")

    def user(self, slug: str, username: str, roles=("staff",), password: str | None = PASSWORD, **fields) -> dict:
        with self.auth.db.transaction() as s:
            return self.auth.create_user(s, None, slug, username=username, roles=roles, password=password, **fields)

    def token(self, tenant: str, roles=("staff",), sub: str | None = None, **claims) -> str:
        """An access token signed with the service's own key (as if that user had logged in now)."""
        now = int(datetime.now(UTC).timestamp())
        payload = {
            "sub": sub or str(uuid.uuid4()),
            "tenant": tenant,
            "roles": list(roles),
            "groups": [],
            "iat": now,
            "exp": now + 300,
            "iss": "recept-auth",
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return self.auth.signing_keys.sign(payload)

    def headers(self, tenant: str, roles=("staff",), **kwargs) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant, roles, **kwargs)}"}

    def vendor_admin(self) -> dict[str, str]:
        return self.headers("vendor", ("vendor_admin",))

    def login(self, tenant: str, username: str, password: str, address: str = "192.0.2.10"):
        return self.client.post(
            "/api/v1/auth/login",
            json={"tenant": tenant, "username": username, "password": password},
            environ_base={"REMOTE_ADDR": address},
        )

    def directory(self, slug: str, server, **overrides) -> dict:
        settings = {
            "urls": [server.url],
            "tls": "none",
            "bind_dn": server.bind_dn,
            "bind_password": server.bind_password,
            "user_search_base": server.settings.user_search_base,
            "user_filter": server.settings.user_filter,
            "username_attribute": server.settings.username_attribute,
            "group_roles": {"kitchen-staff": ["staff"], "care-admins": ["tenant_admin", "staff"]},
            "timeout": 2.0,
            **overrides,
        }
        with self.auth.db.transaction() as s:
            return self.auth.set_directory(s, None, slug, settings)


def build(url: str, tmp_path, clock: Clock | None = None, **overrides) -> Harness:
    MemoryBackend.reset()
    clock = clock or Clock()
    config = SPEC.config(
        overrides={
            "DATABASE_URL": url,
            "BROKER_URL": "memory://",
            "keyring": Keyring.generate(),
            "SIGNING_KEYS_FILE": str(tmp_path / f"signing-{uuid.uuid4().hex[:6]}.json"),
            "clock": clock,
            "ALLOW_PLAIN_LDAP": True,
            **overrides,
        },
        env={},
    )
    SPEC.migrate(config)
    runtime = Runtime(SPEC, config)
    app = SPEC.create_app(runtime=runtime)
    return Harness(runtime, app, app.test_client(), clock, url)


@pytest.fixture
def harness(tmp_path):
    """The auth service on a SQLite file (most tests); see ``both`` for SQLite and PostgreSQL."""
    h = build(f"sqlite:///{tmp_path / 'auth.db'}", tmp_path)
    yield h
    h.runtime.db.dispose()


@pytest.fixture
def both(database_url, tmp_path):
    """The auth service on SQLite, then on a fresh PostgreSQL database."""
    h = build(database_url, tmp_path)
    yield h
    h.runtime.db.dispose()
