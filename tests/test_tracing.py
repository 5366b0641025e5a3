"""W3C trace context over HTTP and AMQP, OpenTelemetry spans, trace ids in the logs (issue 20).

The main test follows one export request opened in the compliance portal through the gdpr
service into every participant and back, on the embedded system (every service, its workers and
the portal in this process, the in-memory bus), with the SDK's in-memory exporter."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services import SERVICES
from shared import tracing
from shared.bus import MemoryBackend
from shared.crypto import Keyring
from shared.logs import JsonFormatter
from tests.processes import free_port, start_gunicorn
from tests.shared.library_service import LibraryService, tables
from tests.support import wait_for

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "a long enough passphrase 42"


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """An SDK provider recording every span of this process (the global provider can be set only once)."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


# --- the pieces ----------------------------------------------------------------------------------


def test_an_outbox_row_keeps_the_trace_and_the_consumer_continues_it(spans, tmp_path):
    MemoryBackend.reset()
    svc = LibraryService(f"sqlite:///{tmp_path / 'lib.db'}", "memory://")
    try:
        with tracing.tracer().start_as_current_span("the writer") as writer:
            svc.emit([1])
        from sqlalchemy import select

        with svc.db.transaction() as s:
            stored = s.scalar(select(tables.outbox.c.trace_context))
        context = writer.get_span_context()
        assert stored == f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
        spans.clear()
        with svc.running():
            assert wait_for(lambda: svc.applied_numbers() == [1])
        consumed = [s for s in spans.get_finished_spans() if s.name == "lib.thing.happened process"]
        assert len(consumed) == 1
        assert consumed[0].context.trace_id == context.trace_id and consumed[0].parent.span_id == context.span_id
        assert consumed[0].kind == trace.SpanKind.CONSUMER
        assert consumed[0].attributes["recept.service"] == "lib"
    finally:
        svc.db.dispose()
        MemoryBackend.reset()


def test_an_api_continues_the_callers_trace_and_logs_carry_its_ids(spans, tmp_path):
    from services.orders import SPEC
    from tests.support import make_runtime

    runtime = make_runtime(SPEC, f"sqlite:///{tmp_path / 'orders.db'}")
    client = SPEC.create_app(runtime=runtime).test_client()
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("orders"))
    http_log = logging.getLogger("recept.http")
    http_log.addHandler(handler)
    # INFO, and enabled: a logging.config call elsewhere in the run may have disabled existing loggers.
    level, disabled = http_log.level, http_log.disabled
    http_log.disabled = False
    http_log.setLevel(logging.INFO)  # setLevel, not .level: it clears the loggers' cached answers
    try:
        spans.clear()
        reply = client.get(f"/api/v1/orders/{uuid.uuid4()}", headers={"traceparent": f"00-{trace_id}-{parent}-01"})
        assert reply.status_code == 401
    finally:
        http_log.removeHandler(handler)
        http_log.disabled = disabled
        http_log.setLevel(level)
        runtime.db.dispose()
    (server,) = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    assert server.name == "GET /api/v1/orders/<order_id>"  # the route: no id in a span name
    assert f"{server.context.trace_id:032x}" == trace_id and f"{server.parent.span_id:016x}" == parent
    assert server.attributes["http.response.status_code"] == 401
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["trace_id"] == trace_id and line["span_id"] == f"{server.context.span_id:016x}"
    assert line["request_id"] == reply.headers["X-Request-ID"]


def test_nothing_is_exported_unless_an_endpoint_is_configured():
    probe = (
        "from opentelemetry import trace; from shared.tracing import configure_tracing; import json, sys; "
        "on = configure_tracing('orders', json.loads(sys.argv[1])); "
        "print(on, type(trace.get_tracer_provider()).__name__)"
    )

    def run(env):
        return subprocess.run(
            [sys.executable, "-c", probe, json.dumps(env)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()

    assert run({}) == ["False", "ProxyTracerProvider"]
    assert run({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) == ["True", "TracerProvider"]


def test_an_api_exports_its_spans_over_otlp_when_configured(tmp_path):
    """A real gunicorn api against a small OTLP/HTTP receiver: the request's span arrives, named by route."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[ExportTraceServiceRequest] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                message = ExportTraceServiceRequest()
                message.ParseFromString(body)
                received.append(message)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args):
            pass

    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    keyring = tmp_path / "keyring.json"
    keyring.write_text(Keyring.generate().to_json())
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECEPT_", "OTEL_"))}
    env.update(
        RECEPT_SERVICE="orders",
        RECEPT_KEYRING_FILE=str(keyring),
        GUNICORN_WORKERS="1",
        RECEPT_ORDERS_DATABASE_URL=f"sqlite:///{tmp_path / 'orders.db'}",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.server_address[1]}",
    )
    from services.orders import SPEC

    SPEC.migrate(SPEC.config(env=env))
    port = free_port()
    proc = start_gunicorn(port, env, tmp_path / "gunicorn.log")
    try:
        import urllib.request

        def ask() -> bool:
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(
                        f"http://127.0.0.1:{port}/healthz",
                        headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
                    ),
                    timeout=2,
                ) as reply:
                    return reply.status == 200
            except OSError:
                return False

        assert wait_for(ask, timeout=60), (tmp_path / "gunicorn.log").read_text()[-2000:]

        def exported():
            for message in received:
                for resource_spans in message.resource_spans:
                    names = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            if span.name == "GET /healthz":
                                return names, span
            return None

        assert wait_for(lambda: exported() is not None, timeout=30)
        resource, span = exported()
        assert resource["service.name"] == "recept-orders"
        assert span.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        collector.shutdown()
        collector.server_close()


# --- one export request, end to end --------------------------------------------------------------


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """Every service and the portal on one local port with their workers (services/embedded.py)."""
    from services.embedded import build
    from services.portal import SPEC as PORTAL
    from services.portal import embedded_overrides

    tmp = tmp_path_factory.mktemp("traced")
    port = free_port()
    patch = pytest.MonkeyPatch()
    patch.setenv("RECEPT_JWKS_URL", f"http://127.0.0.1:{port}/auth/.well-known/jwks.json")
    patch.setenv("RECEPT_KEYRING", Keyring.generate().to_json())
    patch.setenv("RECEPT_AUTH_SIGNING_KEYS_FILE", str(tmp / "signing-keys.json"))
    patch.setenv("RECEPT_AUDIT_CHECKPOINT_DIR", str(tmp / "checkpoints"))
    from tests.audit.conftest import write_key

    patch.setenv("RECEPT_AUDIT_CHECKPOINT_KEY_FILE", str(write_key(tmp / "checkpoint-key.pem")))
    patch.setenv("RECEPT_ANNOUNCE_INTERVAL", "1")
    patch.setenv("RECEPT_AUTH_TENANT_ANNOUNCE_INTERVAL", "1")
    MemoryBackend.reset()
    # The trace is the point here, not the four eyes: this system runs exports on one officer's word.
    wsgi, runtimes = build(
        port,
        {
            name: {"DATABASE_URL": f"sqlite:///{tmp / name}.db", **({"EXPORT_APPROVAL": ()} if name == "gdpr" else {})}
            for name in SERVICES
        },
    )
    config = PORTAL.config(overrides={"DATABASE_URL": f"sqlite:///{tmp / 'portal-own.db'}", **embedded_overrides(port)})
    PORTAL.migrate(config)
    portal = PORTAL.create_app(config)
    auth = runtimes["auth"].domain
    with auth.db.transaction() as s:
        auth.create_tenant(s, None, "vendor", "The vendor")
        auth.create_tenant(
            s,
            None,
            "kommun",
            "A municipality",
            {"version": "PUB 1", "signed_on": "2025-01-15", "signatory": "The municipal board"},
        )
        # The municipality's privacy officer opens: orders holds its processor data, and her request is the
        # controller's own instruction (issue 15), so it runs at once.
        auth.create_user(
            s, None, "kommun", username="officer.one", roles=["privacy_officer"], password=PASSWORD, source="local"
        )
        auth.create_user(
            s,
            None,
            "kommun",
            username="anna.subject",
            roles=["staff"],
            password=PASSWORD,
            email="anna.subject@example.org",
            source="local",
        )
    stop = threading.Event()
    threads = [t for name, rt in runtimes.items() if name != "portal" for t in rt.start_worker_threads(stop)]
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", port, wsgi, threaded=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield portal, runtimes
    finally:
        server.shutdown()
        server.server_close()
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        for rt in runtimes.values():
            rt.db.dispose()
        MemoryBackend.reset()
        patch.undo()


def _csrf(page: bytes) -> str:
    return re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()


def test_one_export_request_is_one_trace_through_every_service(system, spans):
    portal_app, runtimes = system
    gdpr = runtimes["gdpr"]
    participants = {"auth", "orders", "crm", "audit"}

    def announced() -> set[str]:
        from sqlalchemy import select

        from services.gdpr.models import participants as table

        with gdpr.db.transaction() as s:
            return set(s.scalars(select(table.c.service)))

    assert wait_for(lambda: participants <= announced(), timeout=60)

    def tenant_known() -> bool:
        from services.gdpr import tenants

        with gdpr.db.transaction() as s:
            return tenants.find(s, "kommun") is not None

    assert wait_for(tenant_known, timeout=30)
    browser = portal_app.test_client()
    page = browser.get("/login").data
    signed_in = browser.post(
        "/login", data={"csrf_token": _csrf(page), "tenant": "kommun", "username": "officer.one", "password": PASSWORD}
    )
    assert signed_in.status_code == 302
    spans.clear()
    form = browser.get("/requests/new").data
    opened = browser.post(
        "/requests/new",
        data={"csrf_token": _csrf(form), "type": "export", "tenant": "kommun", "email": "anna.subject@example.org"},
    )
    assert opened.status_code == 302, opened.data[:500]
    request_id = opened.headers["Location"].rstrip("/").rsplit("/", 1)[1]

    def status() -> str:
        from sqlalchemy import select

        from services.gdpr.models import requests

        with gdpr.db.transaction() as s:
            return s.scalar(select(requests.c.status).where(requests.c.id == request_id))

    assert wait_for(lambda: status() == "completed", timeout=90), status()
    finished = spans.get_finished_spans()
    (page_span,) = [s for s in finished if s.kind == trace.SpanKind.SERVER and s.name == "POST /requests/new"]
    assert page_span.attributes["recept.service"] == "portal"
    one_trace = [s for s in finished if s.context.trace_id == page_span.context.trace_id]
    by_service = {}
    for span in one_trace:
        by_service.setdefault(span.attributes.get("recept.service"), []).append(span)
    assert {"portal", "gdpr", *participants} <= set(by_service), sorted(by_service)
    # The gdpr api's span is a child of the portal's page; every participant handled its command in it ...
    (api,) = [s for s in by_service["gdpr"] if s.kind == trace.SpanKind.SERVER and s.name == "POST /api/v1/requests"]
    assert api.parent.span_id == page_span.context.span_id
    for service in participants:
        assert any(s.name == f"gdpr.command.{service} process" for s in by_service[service]), service
    # ... and the gdpr worker handled every reply in it too ("and back").
    replies = {s.name for s in by_service["gdpr"] if s.kind == trace.SpanKind.CONSUMER}
    assert {f"gdpr.reply.{service} process" for service in participants} <= replies
    # Nothing personal in a span: no identifier, no request body.
    for span in one_trace:
        assert "anna.subject" not in json.dumps({**dict(span.attributes or {}), "name": span.name})


def test_events_carry_their_trace_to_the_audit(system, spans):
    """The audit ingests in batches: its batch span links to the traces its events came from."""
    _portal, runtimes = system
    orders = runtimes["orders"]
    with tracing.tracer().start_as_current_span("an orders change") as origin:
        with orders.db.transaction() as s:
            orders.outbox.emit(
                s,
                ("orders.unit.created", 1),
                data={"unit_id": "u-traced", "kind": "ward"},
                actor={"id": "u1", "tenant": "kommun", "kind": "user"},
                tenant="kommun",
                resource={"type": "unit", "id": "u-traced"},
            )

    def linked():
        return [
            s
            for s in spans.get_finished_spans()
            if s.attributes.get("recept.service") == "audit"
            and any(link.context.trace_id == origin.get_span_context().trace_id for link in s.links)
        ]

    assert wait_for(lambda: linked(), timeout=30)
