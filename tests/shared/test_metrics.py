"""Prometheus metrics on every process (issue 20): the figures move under load, in one process, in
gunicorn's multi-process mode and on a worker's own listener; labels hold routes, never ids."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from services.orders import SPEC as ORDERS
from shared.bus import EVENTS, Binding, Message, dead_letter_queue
from shared.crypto import Keyring
from shared.metrics import exposition, metrics_port, queue_depths
from tests.processes import free_port, start_gunicorn, start_logged
from tests.shared.library_service import LibraryService
from tests.support import TokenMint, make_runtime, wait_for

ROOT = Path(__file__).resolve().parents[2]


def samples(text: str | bytes) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(figures, name: str, **labels) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in figures.items() if n == name and set(labels.items()) <= set(ls))


def test_api_metrics_count_requests_per_route_and_outbox_backlog(tmp_path):
    mint = TokenMint()
    runtime = make_runtime(ORDERS, f"sqlite:///{tmp_path / 'orders.db'}", mint=mint)
    client = ORDERS.create_app(runtime=runtime).test_client()
    before = samples(client.get("/metrics").data)
    secret_id = str(uuid.uuid4())
    for _ in range(7):
        assert client.get("/healthz").status_code == 200
    for _ in range(3):
        assert client.get(f"/api/v1/orders/{secret_id}", headers=mint.headers(roles=["staff"])).status_code in (
            403,
            404,
        )
    assert client.get("/no/such/path").status_code == 404
    with runtime.db.transaction() as s:
        for n in range(4):
            runtime.outbox.emit(
                s,
                ("orders.unit.created", 1),
                data={"unit_id": f"u{n}", "kind": "ward"},
                actor={"id": "u1", "tenant": "t1", "kind": "user"},
                tenant="t1",
                resource={"type": "unit", "id": f"u{n}"},
            )
    reply = client.get("/metrics")
    assert reply.status_code == 200 and reply.content_type.startswith("text/plain")
    text = reply.get_data(as_text=True)
    after = samples(text)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("recept_http_requests_total", service="orders", route="/healthz", status="200", method="GET") == 7
    assert moved("recept_http_request_duration_seconds_count", service="orders", route="/healthz") == 7
    orders_route = [
        ls for (n, ls) in after if n == "recept_http_requests_total" and "/api/v1/orders/" in dict(ls)["route"]
    ]
    assert orders_route and all("<" in dict(ls)["route"] for ls in orders_route)  # the rule, not the path
    assert moved("recept_http_requests_total", service="orders", route="(unmatched)", status="404") == 1
    assert secret_id not in text  # no ids in labels
    assert value(after, "recept_outbox_backlog", service="orders") == 4
    assert value(after, "recept_outbox_oldest_age_seconds", service="orders") >= 0
    runtime.bus.declare([Binding(EVENTS, "orders.#")])  # someone listens, as the audit does
    relay = runtime.relay()
    assert relay.run_once() == 4
    relay.publisher.close()
    assert value(samples(client.get("/metrics").data), "recept_outbox_backlog", service="orders") == 0
    runtime.db.dispose()


def test_consumer_figures_move_and_dead_letter_depth_comes_from_the_broker(postgres_url, rabbit_url):
    svc = LibraryService(postgres_url, rabbit_url, delivery_limit=2)
    try:
        svc.poison, svc.invalid = {3}, {4}
        before = samples(exposition(_fake_runtime(svc)))
        svc.emit(list(range(1, 21)))
        with svc.running():
            assert wait_for(lambda: len(svc.applied_numbers()) == 18)
            assert wait_for(lambda: queue_depths(svc.bus, [dead_letter_queue("lib")]) == [2])
        after = samples(exposition(_fake_runtime(svc), broker=True))

        def moved(name, **labels):
            return value(after, name, **labels) - value(before, name, **labels)

        assert moved("recept_consumer_messages_total", service="lib", outcome="ack") == 18
        assert moved("recept_consumer_messages_total", service="lib", outcome="dead") == 2
        assert moved("recept_consumer_messages_total", service="lib", outcome="retry") == 1  # 3: once, then dead
        assert moved("recept_consumer_redeliveries_total", service="lib") == 1
        assert moved("recept_consumer_lag_seconds_count", service="lib") == 21  # every delivery of an event
        assert value(after, "recept_dead_letter_messages", service="lib") == 2
        assert value(after, "recept_consumer_backlog_messages", service="lib") == 0
        assert value(after, "recept_outbox_backlog", service="lib") == 0
    finally:
        svc.db.dispose()


class _fake_runtime:
    """What the probes read of a runtime, for the library's test service (it has no ServiceSpec)."""

    def __init__(self, svc: LibraryService) -> None:
        from types import SimpleNamespace

        from tests.shared.library_service import tables

        self.name, self.db, self.bus, self.tables = "lib", svc.db, svc.bus, tables
        self.spec = SimpleNamespace(has_worker=True)


def test_gdpr_requests_by_status_and_overdue(tmp_path):
    from services.gdpr.models import requests
    from tests.gdpr.test_requests import Gdpr

    gdpr = Gdpr(f"sqlite:///{tmp_path / 'gdpr.db'}")
    try:
        ids = [gdpr.open("erase").json["id"] for _ in range(3)]
        figures = samples(gdpr.client.get("/metrics").data)
        assert value(figures, "recept_gdpr_requests", status="awaiting_approval") == 3
        assert value(figures, "recept_gdpr_requests_overdue") == 0
        with gdpr.rt.db.transaction() as s:  # a month and more passes for one of them
            s.execute(
                update(requests)
                .where(requests.c.id == ids[0])
                .values(due_at=requests.c.created_at, created_at=requests.c.created_at)
            )
        figures = samples(gdpr.client.get("/metrics").data)
        assert value(figures, "recept_gdpr_requests_overdue") == 1
        assert value(figures, "recept_gdpr_requests", status="completed") == 0  # every status is shown
    finally:
        gdpr.rt.db.dispose()


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read()


def _base_env(tmp_path) -> dict[str, str]:
    keyring = tmp_path / "keyring.json"
    keyring.write_text(Keyring.generate().to_json())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECEPT_", "PROMETHEUS_"))}
    env.update(RECEPT_KEYRING_FILE=str(keyring), PYTHONUNBUFFERED="1")
    return env


def test_gunicorn_multiprocess_counts_every_worker_once(tmp_path):
    """Four gunicorn workers: /metrics adds up what each counted, whichever worker answers the scrape."""
    env = _base_env(tmp_path)
    env.update(
        RECEPT_SERVICE="orders",
        RECEPT_ORDERS_DATABASE_URL=f"sqlite:///{tmp_path / 'orders.db'}",
        GUNICORN_WORKERS="4",
        GUNICORN_THREADS="2",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"),
    )
    (tmp_path / "prom").mkdir()
    ORDERS.migrate(ORDERS.config(env=env))
    port = free_port()
    log = tmp_path / "gunicorn.log"
    proc = start_gunicorn(port, env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _alive(base + "/healthz"), timeout=60), log.read_text()[-2000:]
        before = value(samples(_get(base + "/metrics")), "recept_http_requests_total", route="/healthz")
        errors: list[Exception] = []

        def hit(n):
            for _ in range(n):
                try:
                    _get(base + "/healthz", timeout=30)
                except Exception as exc:  # noqa: BLE001 - counted below
                    errors.append(exc)

        def load(n):
            threads = [threading.Thread(target=hit, args=(n // 8,)) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        def writers() -> set[int]:
            return {int(f.stem.rsplit("_", 1)[-1]) for f in (tmp_path / "prom").glob("counter_*.db")}

        load(200)
        # A worker that counted stops (gunicorn starts a new one): what it counted stays in the sum.
        served = writers()
        assert served
        os.kill(max(served), signal.SIGTERM)
        assert wait_for(lambda: len(_children(proc.pid) - served) >= 1, timeout=60)
        load(200)
        assert not errors
        assert len(writers()) >= 2, "one process counted everything"
        seen = {
            value(samples(_get(base + "/metrics")), "recept_http_requests_total", route="/healthz") - before
            for _ in range(12)
        }
        assert seen == {400}, seen
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return {int(p) for p in out}


def _alive(url: str) -> bool:
    try:
        _get(url, timeout=2)
        return True
    except OSError:
        return False


def test_a_worker_serves_its_metrics_on_its_own_port(tmp_path, rabbit_url, postgres_url):
    env = _base_env(tmp_path)
    port = free_port()
    env.update(
        RECEPT_BROKER_URL=rabbit_url,
        RECEPT_ORDERS_DATABASE_URL=postgres_url,
        RECEPT_ORDERS_METRICS_PORT=str(port),
        RECEPT_ANNOUNCE_INTERVAL="1",
    )
    ORDERS.migrate(ORDERS.config(env=env))
    assert metrics_port("orders", env) == ("127.0.0.1", port)
    log = tmp_path / "worker.log"
    proc = start_logged([sys.executable, "-m", "services.orders.worker"], env, log)
    try:
        assert wait_for(lambda: _alive(f"http://127.0.0.1:{port}/metrics"), timeout=60)
        # A message the orders worker can never apply: dead-lettered, and the figure shows it.
        from shared.bus import GDPR, Bus

        bus = Bus(rabbit_url, "orders")
        publisher = bus.publisher()
        try:
            assert publisher.publish([Message(GDPR, "gdpr.command.orders", b"not json", str(uuid.uuid4()))]) == [None]
        finally:
            publisher.close()

        def figures():
            return samples(_get(f"http://127.0.0.1:{port}/metrics"))

        assert wait_for(lambda: value(figures(), "recept_dead_letter_messages", service="orders") == 1, timeout=30)
        now = figures()
        assert value(now, "recept_consumer_messages_total", service="orders", outcome="dead") == 1
        assert ("recept_outbox_backlog", (("service", "orders"),)) in now
        assert value(now, "recept_consumer_backlog_messages", service="orders") == 0
        assert _get(f"http://127.0.0.1:{port}/metrics") and EVENTS
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()[-2000:]


def test_the_embedded_run_shows_each_service_its_own_figures(tmp_path, monkeypatch):
    """Six apps in one process: /orders/metrics counts the orders requests only, /audit/metrics the audit's."""
    from werkzeug.test import Client

    from services import SERVICES
    from services.embedded import build

    keyring = tmp_path / "keyring.json"
    keyring.write_text(Keyring.generate().to_json())
    monkeypatch.setenv("RECEPT_KEYRING_FILE", str(keyring))
    monkeypatch.setenv("RECEPT_JWKS_URL", "http://127.0.0.1:8080/auth/.well-known/jwks.json")  # build() sets it
    monkeypatch.setenv("RECEPT_AUDIT_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    from shared.bus import MemoryBackend

    MemoryBackend.reset()
    app, runtimes = build(8080, {name: {"DATABASE_URL": f"sqlite:///{tmp_path / name}.db"} for name in SERVICES})
    client = Client(app)
    try:
        for _ in range(5):
            assert client.get("/orders/healthz").status_code == 200
        assert client.get("/audit/healthz").status_code == 200
        orders = samples(client.get("/orders/metrics").data)
        audit = samples(client.get("/audit/metrics").data)
        assert value(orders, "recept_http_requests_total", route="/healthz") >= 5
        assert {dict(ls).get("service") for (n, ls) in orders if n.startswith("recept_")} == {"orders"}
        assert {dict(ls).get("service") for (n, ls) in audit if n.startswith("recept_")} == {"audit"}
        assert value(audit, "recept_http_requests_total", route="/healthz") >= 1
        assert ("recept_audit_chains", (("service", "audit"),)) in audit
    finally:
        for runtime in runtimes.values():
            runtime.db.dispose()
        MemoryBackend.reset()
