"""Prometheus metrics (``prometheus_client``) for every process: apis, workers and the embedded run.

Two kinds of figures:

* **Counted in the process** (counters and histograms: requests, consumer outcomes,
  redeliveries, event lag, audit verifications).  Under gunicorn with several workers,
  ``PROMETHEUS_MULTIPROC_DIR`` makes every worker write them to shared files and ``/metrics``
  adds them up (deploy/gunicorn.conf.py sets a private directory when none is given), so
  a scrape answers the same whichever worker serves it.
* **Read at scrape time** from the service's own database and the broker (outbox backlog and
  its oldest row's age, messages waiting in the service's queue and in its dead-letter queue,
  and what a service adds with ``register_probe``: the gdpr service's requests by status and
  overdue, the audit's chain heads).  They are the same figure from every process of a
  service; alert rules take ``max by (service)``.

Labels hold names of services, routes (the rule, ``/api/v1/orders/<order_id>``, never the
id), methods, statuses and outcomes: nothing personal.  docs/operations.md lists every metric.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .config import ConfigError, Setting

log = logging.getLogger(__name__)

__all__ = [
    "CONTENT_TYPE_LATEST",
    "HTTP_REQUESTS",
    "HTTP_DURATION",
    "CONSUMED",
    "REDELIVERED",
    "EVENT_LAG",
    "AUDIT_VERIFICATIONS",
    "register_probe",
    "exposition",
    "serve_worker_metrics",
    "metrics_port",
    "multiprocess",
]

METRICS_PORT = Setting("METRICS_PORT", int, 0, "port of a worker's /metrics listener (0: none)", minimum=0)
METRICS_HOST = Setting("METRICS_HOST", str, "127.0.0.1", "address a worker's /metrics listener binds to")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)

HTTP_REQUESTS = Counter(
    "recept_http_requests", "HTTP requests answered, per route and status", ("service", "method", "route", "status")
)
HTTP_DURATION = Histogram(
    "recept_http_request_duration_seconds",
    "time to answer an HTTP request, per route",
    ("service", "method", "route"),
    buckets=_LATENCY_BUCKETS,
)
CONSUMED = Counter(
    "recept_consumer_messages", "messages the consumer handled, per outcome (ack, retry, dead)", ("service", "outcome")
)
REDELIVERED = Counter("recept_consumer_redeliveries", "deliveries that were not a message's first", ("service",))
EVENT_LAG = Histogram(
    "recept_consumer_lag_seconds",
    "from an event's time to its handling by this consumer",
    ("service",),
    buckets=_LAG_BUCKETS,
)
AUDIT_VERIFICATIONS = Counter(
    "recept_audit_chain_verifications",
    "chains verified (full verification and the segment check before a checkpoint), per result (ok, broken)",
    ("service", "result", "kind"),
)
AUDIT_BROKEN = Gauge(
    "recept_audit_chains_broken",
    "broken chains found by the latest full verification",
    ("service",),
    multiprocess_mode="mostrecent",
)


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


# --- probes: figures read at scrape time ---------------------------------------------------------

Probe = Callable[[Any], Iterable[Metric]]
_PROBES: dict[str, list[Probe]] = {}


def register_probe(service: str, probe: Probe) -> Probe:
    """Add a scrape-time probe for ``service``: ``probe(runtime)`` yields metric families."""
    _PROBES.setdefault(service, [])
    if probe not in _PROBES[service]:
        _PROBES[service].append(probe)
    return probe


def outbox_probe(runtime: Any) -> Iterable[Metric]:
    from sqlalchemy import func, select

    from .clock import as_utc, utcnow

    table = runtime.tables.outbox
    with runtime.db.transaction() as s:
        count, oldest = s.execute(
            select(func.count(), func.min(table.c.created_at)).where(table.c.sent_at.is_(None))
        ).one()
    backlog = GaugeMetricFamily(
        "recept_outbox_backlog", "outbox rows not yet confirmed by the broker", labels=["service"]
    )
    backlog.add_metric([runtime.name], count)
    age = GaugeMetricFamily(
        "recept_outbox_oldest_age_seconds", "age of the oldest unsent outbox row (0: none)", labels=["service"]
    )
    age.add_metric([runtime.name], max(0.0, (utcnow() - as_utc(oldest)).total_seconds()) if oldest else 0.0)
    return [backlog, age]


def queue_probe(runtime: Any) -> Iterable[Metric]:
    """Messages waiting in the service's queue (its consumer lag) and in its dead-letter queue."""
    from .bus import dead_letter_queue, queue_name

    depths = queue_depths(runtime.bus, [queue_name(runtime.name), dead_letter_queue(runtime.name)])
    lag = GaugeMetricFamily(
        "recept_consumer_backlog_messages", "messages waiting in the service's queue", labels=["service"]
    )
    dead = GaugeMetricFamily(
        "recept_dead_letter_messages", "messages in the service's dead-letter queue", labels=["service"]
    )
    if depths[0] is not None:
        lag.add_metric([runtime.name], depths[0])
    if depths[1] is not None:
        dead.add_metric([runtime.name], depths[1])
    return [lag, dead]


def queue_depths(bus: Any, queues: list[str]) -> list[int | None]:
    """Ready messages per queue (None: the queue does not exist yet or the broker is unreachable)."""
    from .bus import BusError

    try:
        depths: list[int | None] = bus.queue_depths(queues)
    except BusError as exc:  # the broker is down: no figure rather than a failed scrape
        log.debug("metrics: broker unreachable (%s)", type(exc).__name__)
        return [None] * len(queues)
    return depths


class ServiceProbes:
    """A collector of one service's scrape-time figures (a few indexed queries per scrape)."""

    def __init__(self, runtime: Any, *, broker: bool) -> None:
        self.runtime = runtime
        self.broker = broker

    def collect(self) -> Iterable[Metric]:
        probes: list[Probe] = [outbox_probe]
        if self.broker and getattr(self.runtime.spec, "has_worker", True):
            probes.append(queue_probe)
        probes += _PROBES.get(self.runtime.name, [])
        families: list[Metric] = []
        for probe in probes:
            try:
                families.extend(probe(self.runtime))
            except Exception as exc:  # noqa: BLE001 - one failing probe must not fail the scrape
                log.warning("metrics: probe %s failed (%s)", getattr(probe, "__name__", "?"), type(exc).__name__)
        return families


class _OneService:
    """The process-wide counters, only the samples of one service (the embedded run has six apps)."""

    def __init__(self, source: Any, service: str) -> None:
        self.source = source
        self.service = service

    def collect(self) -> Iterable[Metric]:
        for family in self.source.collect():
            if not family.samples:
                yield family  # nothing counted yet anywhere: still named (# HELP, # TYPE)
                continue
            samples = [s for s in family.samples if s.labels.get("service", self.service) == self.service]
            if samples:
                family.samples = samples
                yield family


def _counted() -> Any:
    """Where the counted figures are: the shared files under multi-process mode, else this process."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus_client
        return registry
    return REGISTRY


def exposition(runtime: Any, *, broker: bool = False, probes: ServiceProbes | None = None) -> bytes:
    """The text of ``/metrics`` for ``runtime``'s service."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_OneService(_counted(), runtime.name))
    registry.register(probes or ServiceProbes(runtime, broker=broker))
    return generate_latest(registry)


# --- the worker's listener -------------------------------------------------------------------------


def metrics_port(service: str, env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """(host, port) of a worker's /metrics listener: RECEPT_<SERVICE>_METRICS_PORT, then RECEPT_METRICS_PORT."""
    env = os.environ if env is None else env
    values = []
    for setting in (METRICS_HOST, METRICS_PORT):
        for key in (f"RECEPT_{service.upper()}_{setting.name}", f"RECEPT_{setting.name}"):
            if key in env:
                values.append(setting.parse(env[key], key))
                break
        else:
            values.append(setting.default)
    if values[1] > 65535:
        raise ConfigError(f"RECEPT_{service.upper()}_METRICS_PORT: must be at most 65535")
    return values[0], values[1]


def serve_worker_metrics(runtime: Any, env: Mapping[str, str] | None = None) -> Any:
    """Start the worker's /metrics listener when a port is configured; the server, or None.

    A port that is taken (a second worker of the service on the same host) is logged and the
    worker goes on without a listener: metrics must never stop the work.
    """
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    host, port = metrics_port(runtime.name, env)
    if not port:
        return None
    probes = ServiceProbes(runtime, broker=True)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found; try /metrics\n"]
        body = exposition(runtime, probes=probes)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [body]

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *_args: Any) -> None:  # scrapes are not worth a log line each
            pass

    try:
        server = make_server(host, port, app, handler_class=QuietHandler)
    except OSError as exc:
        log.warning(
            "metrics: cannot listen on %s:%d (%s); this worker serves no /metrics", host, port, type(exc).__name__
        )
        return None
    thread = threading.Thread(target=server.serve_forever, name=f"{runtime.name}-metrics", daemon=True)
    thread.start()
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server
