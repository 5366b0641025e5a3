"""Fixtures of the crm tests: a migrated runtime, its Flask client, vendor-staff tokens, an SMTP listener."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

import pytest

from services.crm import SPEC
from shared.crypto import Keyring
from tests.support import TokenMint, make_runtime


class Harness:
    """One crm runtime + app + client, with helpers that go through the HTTP api."""

    def __init__(self, url: str, **overrides) -> None:
        self.url = url
        self.mint = TokenMint()
        self.keyring = overrides.pop("keyring", None) or Keyring.generate()
        self.runtime = make_runtime(SPEC, url, mint=self.mint, keyring=self.keyring, **overrides)
        self.app = SPEC.create_app(runtime=self.runtime)
        self.client = self.app.test_client()
        self.crm = self.app.extensions["crm"]
        self.support = self.mint.headers(tenant="vendor", roles=("support",))

    def close(self) -> None:
        self.runtime.db.dispose()

    def ok(self, response, status: int = 200):
        assert response.status_code == status, (response.status_code, response.get_json())
        return response.get_json()

    def post(self, path: str, body, status: int = 201):
        return self.ok(self.client.post(path, json=body, headers=self.support), status)

    def get(self, path: str, status: int = 200):
        return self.ok(self.client.get(path, headers=self.support), status)

    def company(self, name: str = "Kommun AB", **extra) -> dict:
        return self.post("/api/v1/companies", {"name": name, **extra})

    def person(self, company_id: str, **fields) -> dict:
        return self.post(f"/api/v1/companies/{company_id}/persons", fields)


@pytest.fixture
def crm(database_url):
    """A crm harness on SQLite and on a fresh PostgreSQL database."""
    harness = Harness(database_url)
    yield harness
    harness.close()


@pytest.fixture
def crm_lite(tmp_path):
    """A crm harness on SQLite only, for HTTP contract tests whose outcome does not depend on the database."""
    harness = Harness(f"sqlite:///{tmp_path / 'crm.db'}")
    yield harness
    harness.close()


@pytest.fixture
def make_crm(tmp_path):
    """Factory: a SQLite crm harness with settings overridden (``make_crm(SMTP_PORT=...)``)."""
    made: list[Harness] = []

    def make(url: str | None = None, **overrides) -> Harness:
        harness = Harness(url or f"sqlite:///{tmp_path / f'crm{len(made)}.db'}", **overrides)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


@dataclass
class Received:
    envelope_from: str
    recipients: list[str]
    data: bytes


@dataclass
class SmtpListener:
    host: str
    port: int
    messages: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # recipients answered with 550
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def smtp():
    """A real SMTP server (aiosmtpd) in this process, stopped after the test."""
    from aiosmtpd.controller import Controller

    listener = SmtpListener("127.0.0.1", 0)

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address in listener.refuse:
                return "550 5.1.1 mailbox unavailable"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            with listener.lock:
                listener.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            return "250 Message accepted"

    # aiosmtpd connects to its own port to see that it is up, so it cannot take port 0: pick a free one.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        listener.port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=listener.port)
    controller.start()
    try:
        yield listener
    finally:
        controller.stop()
