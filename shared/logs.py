"""JSON log lines with the service name, request id and trace ids; nothing personal goes in.

Rules that keep personal data out: request lines carry the path without its query
string; exceptions are logged by type and stack frames, never by message (database
errors quote the values that failed).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import TextIO

from .tracing import configure_tracing
from .tracing import ids as tracing_ids

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        current = tracing_ids()
        if current is not None:
            entry["trace_id"], entry["span_id"] = current
        for key in ("method", "path", "status", "duration_ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _exc, tb = record.exc_info
            entry["exception"] = exc_type.__name__
            entry["stack"] = [f"{f.filename}:{f.lineno}:{f.name}" for f in traceback.extract_tb(tb)]
        return json.dumps(entry, ensure_ascii=False)


class _Handler(logging.StreamHandler[TextIO]):
    """The handler ``configure_logging`` installs; marked so that a second call replaces it."""

    _recept = True


def configure_logging(service: str, level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send this process's logs as JSON lines to stderr (idempotent).

    Every process's entry point calls this once, so it also sets up tracing: spans are exported
    when OTEL_EXPORTER_OTLP_ENDPOINT is set, and nothing is by default (shared/tracing.py)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_recept", False):
            root.removeHandler(handler)
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party libraries log connection details and payload fragments at DEBUG/INFO.
    for noisy in ("pika", "kombu", "amqp", "ldap3", "urllib3", "werkzeug", "alembic", "opentelemetry"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    configure_tracing(service)
