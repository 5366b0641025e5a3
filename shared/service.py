"""What a service is made of, and the runtime both its api and its worker build from it.

A service module declares one ``ServiceSpec``; ``Runtime(spec, config)`` opens its
database, keyring, bus, outbox and token verifier; ``spec.create_app()`` and
``run_worker(spec)`` are the two processes of DESIGN.md.
"""
from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping, Sequence

from sqlalchemy import MetaData

from .bus import GDPR, Binding, Bus
from .config import Config, Setting, load_config
from .consumer import Consumer, Subscription, inbox_table
from .db import Database, migrate
from .outbox import Outbox, PayloadCipher, Relay, outbox_table
from .tokens import KeySet, TokenVerifier, http_fetch

log = logging.getLogger(__name__)


def library_tables(metadata: MetaData) -> SimpleNamespace:
    """The tables the shared library needs in every service database (outbox, inbox, data keys)."""
    from .crypto import crypto_tables

    return SimpleNamespace(outbox=outbox_table(metadata), inbox=inbox_table(metadata),
                           data_keys=crypto_tables(metadata))


def create_library_tables(op) -> None:
    """For a service's first Alembic migration: create the library's tables (version 1)."""
    from .db import new_metadata

    metadata = new_metadata()
    library_tables(metadata)
    metadata.create_all(op.get_bind())


@dataclass
class ServiceSpec:
    name: str
    metadata: MetaData
    tables: SimpleNamespace                     # library_tables(metadata)
    migrations: Path
    blueprints: Callable[[], Sequence[Any]]     # lazy, so importing the spec stays cheap
    settings: tuple[Setting, ...] = ()
    subscriptions: Callable[["Runtime"], Sequence[Subscription]] = lambda rt: ()
    participant: Callable[["Runtime"], Any] | None = None   # GDPR participation (shared.privacy)
    batch_handler: Callable[["Runtime"], Any] | None = None
    description: str = ""
    extensions: Callable[["Runtime"], Mapping[str, Any]] = lambda rt: {}
    background: Callable[["Runtime"], Sequence[Callable[[threading.Event], None]]] = lambda rt: ()
    #: Raises (e.g. ConfigError) when the service cannot work as configured; called before the
    #: worker starts consuming and by /readyz, so a bad setting stops the start instead of
    #: failing every message into the dead-letter queue.
    preflight: Callable[["Runtime"], None] = lambda rt: None
    use_inbox: bool = True          # False: the batch handler is idempotent by itself (audit: keyed by event id)
    consume_batch: int = 100        # deliveries per handler call (Bus.consume batch_size)

    def config(self, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Config:
        return load_config(self.name, self.settings, env=env, overrides=overrides)

    def migrate(self, config: Config) -> None:
        migrate(self.name, config["DATABASE_URL"], self.migrations)

    def create_app(self, config: Config | Mapping[str, Any] | None = None, runtime: "Runtime | None" = None):
        from .http import create_service_app

        if runtime is None:
            if not isinstance(config, Config):
                config = self.config(overrides=config)
            runtime = Runtime(self, config)
        rt = runtime
        return create_service_app(
            self.name, blueprints=self.blueprints(),
            readiness={"database": rt.db.ping, "broker": rt.bus.ping, "configuration": lambda: self.preflight(rt)},
            max_content_length=rt.config["MAX_CONTENT_LENGTH"], description=self.description,
            extensions={"recept": rt, **self.extensions(rt)},
        )


class Runtime:
    """One service's live dependencies in one process."""

    def __init__(self, spec: ServiceSpec, config: Config) -> None:
        from .crypto import Keyring, Vault

        self.spec = spec
        self.name = spec.name
        self.config = config
        self.tables = spec.tables
        self.db = config.get("database") or Database(config["DATABASE_URL"])
        self.bus = Bus(config["BROKER_URL"], spec.name, delivery_limit=config["DELIVERY_LIMIT"],
                       prefetch=config["PREFETCH"])
        self.keyring = config.get("keyring") or Keyring.from_config(config)
        self.vault = Vault(self.keyring, spec.tables.data_keys)
        self.outbox = Outbox(spec.tables.outbox, spec.name, cipher=PayloadCipher(self.keyring))
        keys = config.get("keyset") or KeySet(http_fetch(config["JWKS_URL"]))
        self.tokens = TokenVerifier(keys, config["TOKEN_ISSUER"])
        self._participant = None

    @property
    def participant(self):
        if self._participant is None and self.spec.participant is not None:
            self._participant = self.spec.participant(self)
        return self._participant

    def subscriptions(self) -> list[Subscription]:
        subs = list(self.spec.subscriptions(self))
        if self.participant is not None:
            from .privacy import command_subscription

            subs.append(command_subscription(self))
        return subs

    def consumer(self) -> Consumer:
        batch = self.spec.batch_handler(self) if self.spec.batch_handler else None
        return Consumer(self.name, self.db, self.tables.inbox, self.subscriptions(), batch_handler=batch,
                        use_inbox=self.spec.use_inbox, database_wait=self.config["DATABASE_WAIT"])

    def declare(self) -> Consumer:
        consumer = self.consumer()
        bindings = consumer.bindings
        if self.participant is not None:
            bindings = [*bindings, Binding(GDPR, f"gdpr.command.{self.name}")]
        self.bus.declare(dict.fromkeys(bindings))
        return consumer

    def relay(self) -> Relay:
        return Relay(self.db, self.tables.outbox, self.bus.publisher(), batch=self.config["RELAY_BATCH"],
                     wake=self.outbox.wake, cipher=self.outbox.cipher)

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
        for index, loop in enumerate(self.spec.background(self)):
            loops.append((f"background-{index}", lambda loop=loop: loop(stop)))
        threads = []
        for label, target in loops:
            thread = threading.Thread(target=_guard(label, target, stop), name=f"{self.name}-{label}", daemon=True)
            thread.start()
            threads.append(thread)
        return threads


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
        spec.preflight(runtime)
    except Exception as exc:  # noqa: BLE001 - report any set-up failure plainly and stop
        log.error("worker cannot start: %s", exc if isinstance(exc, ValueError) else type(exc).__name__)
        raise SystemExit(2) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads = runtime.start_worker_threads(stop)
    log.info("worker started")
    while not stop.is_set():
        stop.wait(1.0)
    for thread in threads:
        thread.join(timeout=10)
    log.info("worker stopped")
