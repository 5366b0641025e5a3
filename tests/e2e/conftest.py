"""The whole Recept system as real processes, started once per module: ``./recept up --broker`` (a gunicorn
api and a worker per service) against a fresh RabbitMQ vhost, one fresh PostgreSQL database per service,
a real slapd, and an SMTP listener in this process; plus a small HTTP client to drive it.

Bootstrap is what an operator does: ``./recept auth add-tenant vendor`` and the first vendor admin through
the CLI, everything else through the services' HTTP APIs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from services import SERVICES, load
from tests.conftest import create_database, create_vhost, drop_database
from tests.ldap_server import SlapdServer, require_slapd
from tests.processes import free_port, readyz, run_cli, start_logged, stop_group, system_env, wait_until

VENDOR_ADMIN = ("root-admin", "vendor admin password 1")


# --- HTTP ---------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Api:
    """One service's HTTP API at ``base`` (urllib: no extra dependency, every response closed)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json_body: Any = None,
        *,
        data: bytes | None = None,
        content_type: str | None = None,
        timeout: float = 30.0,
    ) -> Reply:
        headers = {"Accept": "application/json, application/zip, */*"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Reply(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return Reply(exc.code, dict(exc.headers), exc.read())

    def ok(
        self, method: str, path: str, token: str | None = None, json_body: Any = None, status: int = 200, **kwargs
    ) -> Any:
        reply = self.call(method, path, token, json_body, **kwargs)
        assert reply.status == status, f"{method} {path}: {reply.status} {reply.body[:500]!r}"
        return reply.json() if reply.body and reply.headers.get("Content-Type", "").endswith("json") else reply.body

    def login(self, tenant: str, username: str, password: str) -> str:
        body = self.ok(
            "POST", "/api/v1/auth/login", json_body={"tenant": tenant, "username": username, "password": password}
        )
        return body["access_token"]


# --- SMTP (change notices) ----------------------------------------------------------------------------


@dataclass
class SmtpListener:
    port: int = 0
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture(scope="module")
def smtp():
    """A real SMTP server (aiosmtpd) in this process for crm's change notices (R4)."""
    from aiosmtpd.controller import Controller

    listener = SmtpListener(port=free_port())

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            with listener.lock:
                listener.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            return "250 Message accepted"

    controller = Controller(Handler(), hostname="127.0.0.1", port=listener.port)
    controller.start()
    try:
        yield listener
    finally:
        controller.stop()


# --- the directory ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    """A slapd of this module's own (demo.ldif): the scenario adds the data subject as a directory user."""
    require_slapd()
    server = SlapdServer(tmp_path_factory.mktemp("e2e-slapd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- the system ---------------------------------------------------------------------------------------


@dataclass
class System:
    ports: dict[str, int]
    database_urls: dict[str, str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen
    vhost: str
    broker_url: str
    erasure_logs: dict[str, Path]  # each service's erasure log, a "volume" outside its database

    def api(self, service: str) -> Api:
        return Api(f"http://127.0.0.1:{self.ports[service]}")

    def cli(
        self, *argv: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``./recept <argv>`` with the system's environment (databases, keyring, checkpoint settings),
        and ``env`` on top of it (e.g. another database for an operator's restore step)."""
        return run_cli({**self.env, **(env or {})}, *argv, stdin=stdin)

    def log(self) -> bytes:
        return self.log_path.read_bytes()

    def dead_letters(self) -> dict[str, int]:
        """Messages waiting in each service's dead-letter queue."""
        out = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "-p", self.vhost, "name", "messages"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        counts = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].endswith(".dead") and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
        return counts


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the launcher; it stops its children. Anything left in its process group is killed and fails."""
    if not stop_group(proc):
        raise AssertionError("./recept up did not stop on SIGTERM")
    leftovers = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    if leftovers:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{len(leftovers)} child process(es) survived the stop")


@pytest.fixture(scope="module")
def system(tmp_path_factory, postgres_server, rabbitmq_server, smtp) -> System:
    """``./recept up --broker`` with every service as real processes; stopped (and checked) at module end."""
    work = tmp_path_factory.mktemp("e2e-system")
    broker = create_vhost("recept-e2e")
    database_urls = {name: create_database(f"recept_e2e_{name}") for name in SERVICES}
    ports = {name: free_port() for name in SERVICES}
    # Each service's erasure log on a "volume" of its own, as compose and Kubernetes mount one (docs/crypto.md).
    erasure_logs = {name: work / "erasure-log" / f"{name}.log" for name in SERVICES}
    env = system_env(
        work,
        database_urls,
        ports,
        {
            # The test directory is plain LDAP on loopback (docs/ldap.md).
            "RECEPT_AUTH_ALLOW_PLAIN_LDAP": "true",
            # Long enough that no token expires during the scenario.
            "RECEPT_AUTH_ACCESS_TOKEN_TTL": "900",
            # Workers that start before the gdpr queue exists announce again within seconds, not a minute.
            "RECEPT_ANNOUNCE_INTERVAL": "3",
            "RECEPT_GDPR_SWEEP_INTERVAL": "1",
            # The audit signs a chain's new entries within seconds: an erasure certificate is anchored to the
            # first checkpoint of its tenant's chain after the request finished (docs/gdpr.md).
            "RECEPT_AUDIT_CHECKPOINT_INTERVAL": "2",
            "RECEPT_CRM_SMTP_HOST": "127.0.0.1",
            "RECEPT_CRM_SMTP_PORT": str(smtp.port),
            "RECEPT_CRM_SMTP_FROM": "noreply@recept.example",
            "RECEPT_CRM_VENDOR_TENANT": "vendor",
            **{f"RECEPT_{n.upper()}_ERASURE_LOG": str(path) for n, path in erasure_logs.items()},
        },
    )
    log_path = work / "system.log"
    proc = None
    try:
        # The operator's bootstrap, before the system runs: the vendor tenant and its first administrator.
        for argv, stdin in (
            (["auth", "add-tenant", "vendor", "Recept AB"], None),
            (
                [
                    "auth",
                    "add-user",
                    "--tenant",
                    "vendor",
                    "--username",
                    VENDOR_ADMIN[0],
                    "--role",
                    "vendor_admin",
                    "--password-stdin",
                ],
                VENDOR_ADMIN[1] + "\n",
            ),
        ):
            done = run_cli(env, *argv, stdin=stdin)
            assert done.returncode == 0, done.stderr
        proc = start_logged([sys.executable, "-m", "services.cli", "up", "--broker", broker], env, log_path)
        system = System(
            ports, database_urls, env, log_path, proc, unquote(broker.rsplit("/", 1)[1]), broker, erasure_logs
        )
        for name in SERVICES:
            wait_until(
                lambda name=name: proc.poll() is not None or readyz(system.api(name).base) == 200,
                120,
                f"{name} to be ready",
            )
            assert proc.poll() is None, f"./recept up exited early:\n{log_path.read_text()[-3000:]}"
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == sum(2 if load(s).has_worker else 1 for s in SERVICES)
        yield system
    finally:
        try:
            if proc is not None:
                _stop(proc)
        finally:
            for url in database_urls.values():
                drop_database(url)  # the vhost goes with the session's others
