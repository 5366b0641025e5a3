"""Fixtures of the audit tests: a migrated audit runtime with its own signing key and checkpoint directory,
and a factory of valid event envelopes."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit import SPEC
from shared.clock import rfc3339
from tests.support import TokenMint, make_runtime


def write_key(path: Path) -> Path:
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


class Events:
    """Builds envelopes like shared.events.make_event does, with times one millisecond apart."""

    def __init__(self) -> None:
        self.clock = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

    def __call__(
        self,
        type_name: str = "orders.order.placed",
        *,
        tenant: str | None = "t1",
        actor: str | None = "user-1",
        kind: str = "user",
        subject: str | None = "orders:individual:p1",
        resource: tuple[str, str] | None = ("order", "o1"),
        data: dict | None = None,
        time: datetime | None = None,
    ) -> dict:
        self.clock += timedelta(milliseconds=1)
        return {
            "id": str(uuid.uuid4()),
            "type": type_name,
            "version": 1,
            "source": type_name.split(".")[0],
            "time": rfc3339(time or self.clock),
            "actor": {"id": actor, "tenant": tenant, "kind": kind} if actor else None,
            "tenant": tenant,
            "subject": subject,
            "resource": {"type": resource[0], "id": resource[1]} if resource else None,
            "correlation_id": None,
            "data": data if data is not None else {"fields": ["quantity"]},
        }


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture
def audit_factory(tmp_path, mint):
    """Factory: a migrated audit runtime on ``db_url`` with a signing key and checkpoint dir under tmp_path."""
    made = []

    def make(db_url: str, **overrides):
        key = overrides.pop("CHECKPOINT_KEY_FILE", None) or write_key(tmp_path / f"signing-{len(made)}.pem")
        runtime = make_runtime(
            SPEC,
            db_url,
            mint=mint,
            CHECKPOINT_KEY_FILE=str(key),
            CHECKPOINT_DIR=str(overrides.pop("CHECKPOINT_DIR", tmp_path / "checkpoints")),
            **overrides,
        )
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.db.dispose()


@pytest.fixture
def audit(audit_factory, database_url):
    """An audit runtime on SQLite, then on PostgreSQL."""
    return audit_factory(database_url)


class Worker:
    """The runtime's worker threads (relay, consumer, announcer, checkpoints, purge) for one block."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.stop = threading.Event()
        self.threads = []

    def __enter__(self):
        self.threads = self.runtime.start_worker_threads(self.stop)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
