"""W3C trace context across HTTP and AMQP, and OpenTelemetry spans exported only when configured.

One data-subject request can be followed from the portal through the gdpr service into every
participant and back:

* an api continues the ``traceparent`` of an incoming request (or starts a trace) in a SERVER
  span per request (shared/http.py), and a caller puts its own in outgoing requests
  (``inject``: the portal's calls to the apis, docs/operations.md);
* a row written to the outbox keeps the ``traceparent`` of the span that wrote it
  (shared/outbox.py), the relay sends it as an AMQP header, and the consumer continues it in
  a CONSUMER span around the handler (shared/consumer.py), so what a handler writes is part of
  the same trace;
* the log lines of a request or a message carry ``trace_id`` and ``span_id`` (shared/logs.py).

The OpenTelemetry API alone propagates the context and costs next to nothing.  The SDK, with an
OTLP/HTTP exporter, is installed only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set: nothing is recorded or sent by default.  Span
attributes are names of services, routes, routing keys and statuses — never a path with ids,
a message body or a value.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER_NAME = "recept"
_configured = threading.Lock()
_installed: list[Any] = []  # the SDK provider this module installed, if any
MAX_LINKS = 64  # a batch span links at most this many of its messages' traces


def endpoint_configured(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure_tracing(service: str, env: Mapping[str, str] | None = None) -> bool:
    """Install the SDK with an OTLP exporter when an endpoint is configured (once per process).

    Returns whether spans are exported.  Without an endpoint nothing is installed: the context is
    still carried from request to message to request, but no span is recorded.
    """
    env = os.environ if env is None else env
    if not endpoint_configured(env):
        return False
    with _configured:
        if _installed:
            return True
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or f"recept-{service}"})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _installed.append(provider)
    log.info("tracing: spans are exported over OTLP")
    return True


def shutdown() -> None:
    """Flush and stop the exporter this module installed (a worker's clean stop)."""
    for provider in _installed:
        try:
            provider.shutdown()
        except Exception:  # noqa: BLE001 - the collector may be gone; stopping must not fail
            pass


def tracer() -> trace.Tracer:
    return trace.get_tracer(_TRACER_NAME)


# --- the context on the wire ---------------------------------------------------------------------


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current span, or None when there is no valid one."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Put the current trace context into outgoing HTTP (or AMQP) headers; returns them."""
    _PROPAGATOR.inject(headers)
    return headers


def extract(headers: Mapping[str, Any] | None) -> otel_context.Context:
    """The context named by incoming headers (an empty one when they carry none or a bad one)."""
    if not headers:
        return otel_context.Context()
    carrier = {
        k.lower(): v.decode() if isinstance(v, bytes) else str(v)
        for k, v in headers.items()
        if isinstance(k, str) and k.lower() in (TRACEPARENT, "tracestate")
    }
    return _PROPAGATOR.extract(carrier)


def ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span as hex, for log lines; None outside a trace."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


# --- spans ---------------------------------------------------------------------------------------


def start_server_span(
    service: str, method: str, route: str, headers: Mapping[str, Any]
) -> tuple[trace.Span, Token[otel_context.Context]]:
    """Start and enter the span of one HTTP request; ``end_span`` with what this returns."""
    span = tracer().start_span(
        f"{method} {route}",
        context=extract(headers),
        kind=SpanKind.SERVER,
        attributes={"recept.service": service, "http.request.method": method, "http.route": route},
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    return span, token


def end_span(
    started: tuple[trace.Span, Token[otel_context.Context]],
    status: int | None = None,
    error: BaseException | None = None,
) -> None:
    span, token = started
    try:
        if status is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()
    finally:
        otel_context.detach(token)


@contextmanager
def _processing_span(
    name: str,
    service: str,
    attributes: dict[str, str | int],
    *,
    context: otel_context.Context | None = None,
    links: Sequence[Link] = (),
) -> Iterator[Any]:
    """A consumer span, current while the block runs; a failure marks it by the exception's type only
    (an exception's message may quote values)."""
    with tracer().start_as_current_span(
        name,
        context=context,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={"recept.service": service, "messaging.system": "rabbitmq", **attributes},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


@contextmanager
def consumer_span(
    service: str, routing_key: str, headers: Mapping[str, Any] | None, delivery_count: int = 1
) -> Iterator[Any]:
    """The span of handling one message, continuing the trace its sender put in ``headers``."""
    attributes: dict[str, str | int] = {
        "messaging.destination.name": routing_key,
        "messaging.operation.type": "process",
        "messaging.rabbitmq.delivery_count": delivery_count,
    }
    with _processing_span(f"{routing_key} process", service, attributes, context=extract(headers)) as span:
        yield span


@contextmanager
def batch_span(service: str, what: str, headers: Sequence[Mapping[str, Any] | None]) -> Iterator[Any]:
    """One span for a batch of messages (the audit's ingest), linked to the traces they came from."""
    links = []
    for item in headers:
        span_context = trace.get_current_span(extract(item)).get_span_context()
        if span_context.is_valid:
            links.append(Link(span_context))
            if len(links) >= MAX_LINKS:
                break
    attributes: dict[str, str | int] = {"messaging.batch.message_count": len(headers)}
    with _processing_span(f"{what} process", service, attributes, links=links) as span:
        yield span
