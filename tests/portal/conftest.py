"""Fixtures of the portal's tests: fake upstream services, the real portal app, a signed-in client."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta

import pytest

from services.portal import SPEC
from tests.portal.fakes import FakeServices
from tests.support import TokenMint, make_runtime

FORWARDING_TOKEN = "the-token-auth-and-the-portal-share-0123"

PASSWORD = "correct horse battery staple"


class Clock:
    """The portal's clock, moved by tests to make sessions expire."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture
def fakes(mint):
    services = FakeServices(mint).start()
    services.add_account("t1", "alice", PASSWORD)
    services.add_account("t1", "bob", PASSWORD)
    services.add_account("t2", "carol", PASSWORD)
    services.add_account("t1", "kitchen", PASSWORD, roles=("staff",))
    yield services
    services.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory):
    """A migrated portal database, copied per test: migrating once keeps the suite fast."""
    path = tmp_path_factory.mktemp("portal-template") / "portal.db"
    rt = make_runtime(SPEC, f"sqlite:///{path}")
    rt.db.dispose()
    return path


@pytest.fixture
def runtime(tmp_path, migrated_sqlite, fakes, mint, clock):
    path = tmp_path / "portal.db"
    shutil.copyfile(migrated_sqlite, path)
    rt = make_runtime(
        SPEC,
        f"sqlite:///{path}",
        mint=mint,
        clock=clock,
        SESSION_IDLE_MINUTES=30,
        SESSION_MAX_HOURS=12,
        PAGE_REFRESH_SECONDS=1,
        FORWARDING_TOKEN=FORWARDING_TOKEN,
        **fakes.urls(),
    )
    yield rt
    rt.db.dispose()


@pytest.fixture
def app(runtime):
    return SPEC.create_app(runtime=runtime)


@pytest.fixture
def client(app):
    return app.test_client()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def sign_in(client, username: str = "alice", tenant: str = "t1", password: str = PASSWORD):
    page = client.get("/login")
    return client.post(
        "/login",
        data={
            "tenant": tenant,
            "username": username,
            "password": password,
            "csrf_token": csrf_of(page.get_data(as_text=True)),
        },
    )


def form_token(client, path: str = "/requests") -> str:
    """The CSRF token a signed-in officer's page carries."""
    return csrf_of(client.get(path).get_data(as_text=True))


@pytest.fixture
def officer(client):
    """A client signed in as alice (compliance officer of tenant t1)."""
    response = sign_in(client)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client
