"""What a service is made of, and the runtime both its api and its worker build from it.

A service module declares one ``ServiceSpec``; ``Runtime(spec, config)`` opens its
database, keyring, bus, outbox and token verifier; ``spec.create_app()`` and
``run_worker(spec)`` are the two processes of DESIGN.md.
"""

from __future__ import annotations

import functools
import importlib
import logging
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, MetaData
from sqlalchemy.orm import Session

from .bus import Bus
from .config import Config, Setting, load_config
from .consumer import Consumer, Subscription, inbox_table
from .crypto import PayloadCipher
from .db import Database, migrate
from .outbox import Outbox, Relay, outbox_table
from .tokens import KeySet, RevocationList, TokenVerifier, http_fetch, revocations_url

if TYPE_CHECKING:
    from flask import Flask

    from .crypto import Keyring

log = logging.getLogger(__name__)


def library_tables(metadata: MetaData) -> SimpleNamespace:
    """The tables the shared library needs in every service database (outbox, inbox, data keys)."""
    from .crypto import crypto_tables

    return SimpleNamespace(
        outbox=outbox_table(metadata), inbox=inbox_table(metadata), data_keys=crypto_tables(metadata)
    )


class MigrationOps(Protocol):
    """What ``create_library_tables`` needs of a migration's ``alembic.op``."""

    def get_bind(self) -> Connection: ...


def create_library_tables(op: MigrationOps) -> None:
    """For a service's first Alembic migration: create the library's tables (version 1)."""
    from .db import new_metadata

    metadata = new_metadata()
    library_tables(metadata)
    metadata.create_all(op.get_bind())


@dataclass(frozen=True)
class Loop:
    """A background loop of a service's worker: runs until ``stop`` is set."""

    name: str
    run: Callable[[threading.Event], None]


@dataclass
class Wiring:
    """Everything one service runs, made once per runtime by its ``bootstrap.build(runtime)``.

    The api reads its domain objects from ``extensions`` (Flask ``app.extensions``); the worker
    consumes exactly ``subscriptions`` (the gdpr command handler among them, when the service
    takes part in data-subject requests) and runs ``loops`` beside the relay and the consumer.
    """

    domain: Any  # the service's domain object(s)
    blueprints: Sequence[Any] = ()
    extensions: Mapping[str, Any] = field(default_factory=dict)
    participant: Any = None  # shared.privacy.Participant, or None
    subscriptions: Sequence[Subscription] = ()
    batch_handler: Callable[[Session, list[dict[str, Any]]], None] | None = None
    loops: Sequence[Loop] = ()
    #: Raises (e.g. ConfigError) when the service cannot work as configured; called before the
    #: worker starts consuming and by /readyz, so a bad setting stops the start instead of
    #: failing every message into the dead-letter queue.
    preflight: Callable[[], object] = lambda: None


@dataclass
class ServiceSpec:
    name: str
    metadata: MetaData
    tables: SimpleNamespace  # library_tables(metadata)
    migrations: Path
    #: ``build(runtime) -> Wiring``, or the name of the module that has it: imported only when a
    #: runtime is built, so importing the spec (settings, migrations, the launchers) stays cheap.
    bootstrap: str | Callable[[Runtime], Wiring]
    settings: tuple[Setting, ...] = ()
    description: str = ""
    has_worker: bool = True  # False: an api only (the portal), no bus, no worker process
    use_inbox: bool = True  # False: the batch handler is idempotent by itself (audit: keyed by event id)
    consume_batch: int = 100  # deliveries per handler call (Bus.consume batch_size)

    def config(self, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Config:
        return load_config(self.name, self.settings, env=env, overrides=overrides)

    def migrate(self, config: Config) -> None:
        migrate(self.name, config["DATABASE_URL"], self.migrations)

    def build(self, runtime: Runtime) -> Wiring:
        build = self.bootstrap
        if isinstance(build, str):
            build = importlib.import_module(build).build
        return build(runtime)

    def runtime(self, config: Config | Mapping[str, Any] | None = None) -> Runtime:
        if not isinstance(config, Config):
            config = self.config(overrides=config)
        return Runtime(self, config)

    def create_app(self, config: Config | Mapping[str, Any] | None = None, runtime: Runtime | None = None) -> Flask:
        from .erasure_replay import replay_erasures
        from .http import create_service_app

        rt = runtime if runtime is not None else self.runtime(config)
        wiring = rt.wiring
        replay_erasures(rt)  # a restored backup must not serve erased people (docs/crypto.md "Backups")
        readiness = {"database": rt.db.ping, "configuration": _discard_result(wiring.preflight)}
        health = {"broker": rt.bus.ping} if self.has_worker else {}
        return create_service_app(
            self.name,
            blueprints=wiring.blueprints,
            readiness=readiness,
            health=health,
            max_content_length=rt.config["MAX_CONTENT_LENGTH"],
            description=self.description,
            extensions={"recept": rt, **wiring.extensions},
            settings=rt.config,
        )


class Runtime:
    """One service's live dependencies in one process, and its wiring (made once, on first use)."""

    def __init__(self, spec: ServiceSpec, config: Config) -> None:
        from .crypto import Keyring, Vault
        from .erasure_replay import open_erasure_log

        self.spec = spec
        self.name = spec.name
        self.config = config
        self.tables = spec.tables
        self.db: Database = config.get("database") or Database(config["DATABASE_URL"])
        self.bus = Bus(
            config["BROKER_URL"], spec.name, delivery_limit=config["DELIVERY_LIMIT"], prefetch=config["PREFETCH"]
        )
        self.keyring: Keyring = config.get("keyring") or Keyring.from_config(config)
        self.vault = Vault(
            self.keyring, spec.tables.data_keys, erasure_log=open_erasure_log(config, spec.name, self.keyring)
        )
        self.outbox = Outbox(spec.tables.outbox, spec.name, cipher=PayloadCipher(self.keyring))
        keys: KeySet = config.get("keyset") or KeySet(http_fetch(config["JWKS_URL"]))
        revoked: RevocationList = config.get("revocations") or RevocationList(
            http_fetch(revocations_url(config["JWKS_URL"]))
        )
        self.tokens = TokenVerifier(keys, config["TOKEN_ISSUER"], revocations=revoked)
        self._wiring: Wiring | None = None
        self._wiring_lock = threading.Lock()

    @property
    def wiring(self) -> Wiring:
        if self._wiring is None:
            with self._wiring_lock:
                if self._wiring is None:
                    self._wiring = self.spec.build(self)
        return self._wiring

    @property
    def domain(self) -> Any:
        return self.wiring.domain

    @property
    def participant(self) -> Any:
        return self.wiring.participant

    def consumer(self) -> Consumer:
        wiring = self.wiring
        return Consumer(
            self.name,
            self.db,
            self.tables.inbox,
            list(wiring.subscriptions),
            batch_handler=wiring.batch_handler,
            use_inbox=self.spec.use_inbox,
            database_wait=self.config["DATABASE_WAIT"],
            delivery_limit=self.config["DELIVERY_LIMIT"],
        )

    def declare(self) -> Consumer:
        """Declare this service's queue and every binding of its subscriptions."""
        consumer = self.consumer()
        self.bus.declare(dict.fromkeys(consumer.bindings))
        return consumer

    def relay(self) -> Relay:
        return Relay(
            self.db,
            self.tables.outbox,
            self.bus.publisher(),
            batch=self.config["RELAY_BATCH"],
            wake=self.outbox.wake,
            cipher=self.outbox.cipher,
        )

    def start_worker_threads(self, stop: threading.Event) -> list[threading.Thread]:
        """The worker's loops as threads: relay, consumer, announcer, and the service's own."""
        consumer = self.declare()
        loops: list[tuple[str, Callable[[], None]]] = [
            ("relay", lambda: self.relay().run(stop, self.config["RELAY_INTERVAL"])),
            ("consumer", lambda: self.bus.consume(consumer.handle_batch, stop, batch_size=self.spec.consume_batch)),
        ]
        if self.participant is not None:
            from .privacy import announce_loop

            loops.append(("announcer", lambda: announce_loop(self, stop)))
        for loop in self.wiring.loops:
            loops.append((loop.name, functools.partial(loop.run, stop)))
        threads = []
        for label, target in loops:
            thread = threading.Thread(target=_guard(label, target, stop), name=f"{self.name}-{label}", daemon=True)
            thread.start()
            threads.append(thread)
        return threads


def _discard_result(check: Callable[[], object]) -> Callable[[], None]:
    """A readiness check only has to raise or not; a preflight may return what it loaded."""

    def run() -> None:
        check()

    return run


def _guard(label: str, target: Callable[[], None], stop: threading.Event) -> Callable[[], None]:
    """Restart a worker loop that crashed, unless the worker is stopping."""

    def run() -> None:
        while not stop.is_set():
            try:
                target()
                return
            except Exception:  # noqa: BLE001 - keep the worker alive; the log says what broke
                log.exception("worker loop %s crashed; restarting", label)
                stop.wait(2.0)

    return run


def run_worker(spec: ServiceSpec) -> None:
    """Entry point of a service's worker process: relay + consumer until SIGTERM/SIGINT."""
    from .logs import configure_logging

    config = spec.config()
    configure_logging(spec.name, config["LOG_LEVEL"])
    runtime = Runtime(spec, config)
    try:
        runtime.wiring.preflight()
        from .erasure_replay import replay_erasures

        replay_erasures(runtime)  # before consuming: a restored backup must not serve erased people
    except Exception as exc:  # noqa: BLE001 - report any set-up failure plainly and stop
        log.error("worker cannot start: %s", exc if isinstance(exc, ValueError) else type(exc).__name__)
        raise SystemExit(2) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads = runtime.start_worker_threads(stop)
    from .metrics import serve_worker_metrics

    metrics_server = serve_worker_metrics(runtime)  # RECEPT_METRICS_PORT; none by default
    log.info("worker started")
    while not stop.is_set():
        stop.wait(1.0)
    for thread in threads:
        thread.join(timeout=10)
    if metrics_server is not None:
        metrics_server.shutdown()
    log.info("worker stopped")
