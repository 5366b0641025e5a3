"""The chaos tier (issue 20, marker ``chaos``): the distributed system as real processes under
``./recept up --broker`` (supervised), a stream of events from every service's outbox into the
audit, and something breaking mid-stream. Every test asserts the same four promises: no event
lost, none stored twice, the audit chains verify, and the apis kept answering meanwhile.

The system is started once for the module (auth, orders, crm, audit, gdpr: every service with a
worker; one gunicorn worker each) against a fresh vhost and fresh PostgreSQL databases.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import pytest
from sqlalchemy import func, select

from services import load
from shared.db import Database
from shared.outbox import Outbox
from tests.conftest import create_database, create_vhost, drop_database
from tests.processes import free_port, readyz, run_cli, start_logged, stop_group, system_env, wait_until

NAMES = ("auth", "orders", "crm", "audit", "gdpr")  # every service with a worker
LAUNCH = (
    "import sys; from services.launcher import run_distributed; run_distributed(sys.argv[1], names=tuple(sys.argv[2:]))"
)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.chaos)


def one_node(url: str) -> str:
    """A cluster's broker URL (amqp://u:p@h1:1,h2:2/v) as the URL of its first node, for pika itself."""
    scheme, _, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    return f"{scheme}://{userinfo}{at}{hosts.split(',')[0]}{slash}{tail}"


def _event(service: str, n: int) -> tuple[tuple[str, int], dict]:
    """A valid event of ``service``'s own (what the service would emit), numbered for the checks."""
    ref = f"chaos-{n}"
    actor = {"id": "chaos-user", "tenant": "chaos", "kind": "user"}
    kinds = {
        "auth": (("auth.tenant.updated", 1), {"tenant_id": ref, "fields": ["name"]}, "tenant"),
        "orders": (("orders.unit.created", 1), {"unit_id": ref, "kind": "ward"}, "unit"),
        "crm": (("crm.company.updated", 1), {"company_id": ref, "fields": ["name"]}, "company"),
        "gdpr": (("gdpr.request.rejected", 1), {"request_id": str(uuid.uuid4()), "type": "export"}, "request"),
        "audit": (
            ("audit.entries.purged", 1),
            {"chain": "tenant:chaos", "up_to_seq": n, "count": 0, "retention_days": 1},
            "audit_chain",
        ),
    }
    event_type, data, resource = kinds[service]
    return event_type, {"data": data, "actor": actor, "tenant": "chaos", "resource": {"type": resource, "id": ref}}


@dataclass
class ChaosSystem:
    env: dict[str, str]
    ports: dict[str, int]
    urls: dict[str, str]
    vhost: str
    proc: subprocess.Popen
    log_path: Path
    names: tuple[str, ...] = NAMES
    databases: dict[str, Database] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    extra_workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # --- the processes -------------------------------------------------------------------------
    def workers(self, service: str) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid), "-f", f"services.{service}.worker"], capture_output=True, text=True
        ).stdout.split()
        return [int(pid) for pid in out]

    def kill_worker(self, service: str) -> int:
        (pid,) = self.workers(service)
        os.kill(pid, signal.SIGKILL)
        return pid

    def start_extra_worker(self, service: str) -> subprocess.Popen[bytes]:
        env = {**self.env, "RECEPT_SERVICE": service}
        log_path = self.log_path.with_name(f"extra-{service}-{len(self.extra_workers)}.log")
        proc = start_logged([sys.executable, "-m", f"services.{service}.worker"], env, log_path)
        self.extra_workers.append(proc)
        return proc

    def _queues(self, names: list[str]) -> dict[str, tuple[int, int]]:
        """(ready messages, consumers) per queue, asked over AMQP (rabbitmqctl takes seconds a call)."""
        import pika
        import pika.exceptions

        conn = pika.BlockingConnection(pika.URLParameters(one_node(self.env["RECEPT_BROKER_URL"])))
        try:
            out = {}
            for name in names:
                channel = conn.channel()
                try:
                    ok = channel.queue_declare(name, passive=True).method
                    out[name] = (ok.message_count, ok.consumer_count)
                    channel.close()
                except pika.exceptions.ChannelClosedByBroker:
                    out[name] = (0, 0)
            return out
        finally:
            conn.close()

    def consumers(self, service: str) -> int:
        return self._queues([f"recept.q.{service}"])[f"recept.q.{service}"][1]

    def close_broker_connections(self) -> int:
        """The broker closes every connection of the vhost at once, as a broker restart does; how many."""
        listing = subprocess.run(
            ["rabbitmqctl", "-q", "list_connections", "-p", self.vhost, "pid"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        subprocess.run(
            ["rabbitmqctl", "-q", "close_all_connections", "-p", self.vhost, "chaos: connection lost"],
            capture_output=True,
            check=True,
            timeout=60,
        )
        return len([line for line in listing.splitlines() if line.strip()])

    # --- the stream ----------------------------------------------------------------------------
    def write(self, service: str, numbers: range) -> list[str]:
        """Events into ``service``'s outbox in one transaction (as its api would write them)."""
        import importlib

        from shared.events import REGISTRY

        importlib.import_module(f"services.{service}.events")  # registers the service's event types
        db = self.databases.setdefault(service, Database(self.env[f"RECEPT_{service.upper()}_DATABASE_URL"]))
        spec = load(service)
        outbox = Outbox(spec.tables.outbox, service)
        events = [(REGISTRY.get(*kind), kwargs) for kind, kwargs in (_event(service, n) for n in numbers)]
        with db.transaction() as session:
            envelopes = outbox.emit_many(session, events)
        ids = [e["id"] for e in envelopes]
        self.written.extend(ids)
        return ids

    def stream(self, per_service: int, seconds: float, during: Callable[[float], None] = lambda _t: None) -> None:
        """``per_service`` events from each service, in small transactions spread over ``seconds``;
        ``during(fraction)`` runs between transactions (the chaos)."""
        batches, size = max(1, per_service // 25), 25
        started = time.monotonic()
        for batch in range(batches):
            for service in self.names:
                self.write(service, range(batch * size, (batch + 1) * size))
            during((batch + 1) / batches)
            time.sleep(max(0.0, started + seconds * (batch + 1) / batches - time.monotonic()))

    # --- the promises --------------------------------------------------------------------------
    def stored(self) -> tuple[int, int, set[str]]:
        """(entries, distinct event ids, ids) in the audit."""
        from services.audit.models import entries

        db = self.databases.setdefault("audit", Database(self.env["RECEPT_AUDIT_DATABASE_URL"]))
        with db.transaction() as s:
            total, distinct = s.execute(select(func.count(), func.count(func.distinct(entries.c.event_id)))).one()
            ids = set(s.scalars(select(entries.c.event_id).where(entries.c.tenant == "chaos")))
        return total, distinct, ids

    def assert_exactly_once(self, timeout: float = 120) -> None:
        wanted = set(self.written)
        wait_until(
            lambda: wanted <= self.stored()[2],
            timeout,
            f"the audit to store all {len(wanted)} events ({len(wanted - self.stored()[2])} missing)",
            interval=0.5,
        )
        time.sleep(1.0)  # anything still in flight would be a duplicate: give it the time to show
        total, distinct, ids = self.stored()
        assert len(wanted - ids) == 0, "events lost"
        assert total == distinct, f"{total - distinct} events stored twice"
        assert ids == wanted, f"{len(ids - wanted)} events nobody wrote"

    def assert_chains_verify(self) -> None:
        done = run_cli(self.env, "audit", "verify")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "all verified" in done.stdout

    def dead_letters(self) -> dict[str, int]:
        """Messages waiting in each service's dead-letter queue (only the non-empty ones)."""
        depths = self._queues([f"recept.q.{name}.dead" for name in self.names])
        return {name: ready for name, (ready, _consumers) in depths.items() if ready}


class ApiWatch:
    """Asks every api's /readyz four times a second while the block runs; every answer must be 200."""

    def __init__(self, system: ChaosSystem) -> None:
        self.system = system
        self.answers: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _ask(self, service: str) -> int:
        return readyz(self.system.urls[service])

    def _run(self) -> None:
        while not self._stop.is_set():
            for service in self.system.names:
                self.answers.append((service, self._ask(service)))
            self._stop.wait(0.25)

    def __enter__(self) -> ApiWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        failed = [(s, code) for s, code in self.answers if code != 200]
        assert self.answers and not failed, (
            f"{len(failed)} of {len(self.answers)} api answers were not 200: {failed[:10]}"
        )


@contextmanager
def launched(
    work: Path, broker: str, names: tuple[str, ...] = NAMES, vhost: str | None = None, **extra_env: str
) -> Iterator[ChaosSystem]:
    """``./recept up --broker`` for ``names`` (fresh PostgreSQL databases), ready and consuming; stopped after."""
    database_urls = {name: create_database(f"recept_chaos_{name}") for name in names}
    ports = {name: free_port() for name in names}
    env = system_env(
        work,
        database_urls,
        ports,
        {
            "RECEPT_BROKER_URL": broker,
            "RECEPT_AUDIT_CHECKPOINT_INTERVAL": "2",  # checkpoints are signed while the chaos runs
            "RECEPT_ANNOUNCE_INTERVAL": "5",
            "RECEPT_METRICS_PORT": "0",
            "RECEPT_SUPERVISE_BACKOFF": "0.2",
            **extra_env,
        },
        drop=("RECEPT_", "OTEL_", "PROMETHEUS_"),
    )
    log_path = work / "system.log"
    proc = None
    chaos = None
    try:
        proc = start_logged([sys.executable, "-c", LAUNCH, broker, *names], env, log_path)
        chaos = ChaosSystem(
            env,
            ports,
            {n: f"http://127.0.0.1:{p}" for n, p in ports.items()},
            vhost or unquote(broker.rsplit("/", 1)[1]),
            proc,
            log_path,
            names,
        )
        watch = ApiWatch(chaos)
        wait_until(
            lambda: proc.poll() is not None or all(watch._ask(n) == 200 for n in names), 120, "every api to be ready"
        )
        assert proc.poll() is None, log_path.read_text()[-3000:]
        yield chaos
    finally:
        if chaos is not None:
            for extra in chaos.extra_workers:
                if extra.poll() is None:
                    extra.kill()
                    extra.wait()
            for db in chaos.databases.values():
                db.dispose()
        if proc is not None:
            stop_group(proc)
        for url in database_urls.values():
            drop_database(url)


@pytest.fixture(scope="module")
def system(tmp_path_factory, postgres_server, rabbitmq_server) -> Iterator[ChaosSystem]:
    broker = create_vhost("recept-chaos")
    with launched(tmp_path_factory.mktemp("chaos"), broker) as chaos:
        wait_until(lambda: all(chaos.consumers(n) >= 1 for n in NAMES), 120, "every worker to consume", interval=1)
        yield chaos
