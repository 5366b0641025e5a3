"""A tiny service built only from the shared library, for the library's own tests."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Column, Integer, String, Table, func, select

from shared.bus import EVENTS, Bus
from shared.consumer import Consumer, Subscription
from shared.db import Database, new_metadata
from shared.events import EventRegistry, obj
from shared.outbox import Outbox, Relay
from shared.service import library_tables

metadata = new_metadata()
tables = library_tables(metadata)
applied = Table(
    "applied",
    metadata,
    Column("event_id", String(36), primary_key=True),  # a duplicate application would violate this
    Column("n", Integer, nullable=False),
)

registry = EventRegistry()
THING_HAPPENED = registry.register("lib.thing.happened", 1, obj({"n": {"type": "integer"}}))


class LibraryService:
    """Database + outbox + relay + consumer for one test."""

    def __init__(
        self, db_url: str, broker_url: str, name: str = "lib", delivery_limit: int = 3, batch: bool = False
    ) -> None:
        self.db = Database(db_url)
        metadata.create_all(self.db.engine)
        self.outbox = Outbox(tables.outbox, name, registry)
        self.bus = Bus(broker_url, name, delivery_limit=delivery_limit, prefetch=500)
        self.poison: set[int] = set()  # fail transiently (RuntimeError) every time
        self.invalid: set[int] = set()  # fail permanently (shared.errors.Invalid)
        self.consumer = Consumer(
            name,
            self.db,
            tables.inbox,
            [Subscription(EVENTS, "lib.thing.*", self.on_thing)],
            batch_handler=self.on_things if batch else None,
            delivery_limit=delivery_limit,
        )
        self.bus.declare(self.consumer.bindings)

    def on_thing(self, session, event) -> None:
        n = event["data"]["n"]
        if n in self.poison:
            raise RuntimeError("poison")
        if n in self.invalid:
            from shared.errors import Invalid

            raise Invalid("the thing does not match its schema")
        session.execute(applied.insert().values(event_id=event["id"], n=n))

    def on_things(self, session, events) -> None:
        """Batch mode: one multi-row insert per delivered batch (how the audit service ingests)."""
        session.execute(applied.insert(), [{"event_id": e["id"], "n": e["data"]["n"]} for e in events])

    def emit(self, numbers, aggregate=None) -> None:
        with self.db.transaction() as s:
            for n in numbers:
                self.outbox.emit(s, THING_HAPPENED, data={"n": n}, aggregate=aggregate)

    def emit_many(self, numbers) -> None:
        with self.db.transaction() as s:
            self.outbox.emit_many(s, [(THING_HAPPENED, {"data": {"n": n}}) for n in numbers])

    def relay(self, publisher=None) -> Relay:
        return Relay(self.db, tables.outbox, publisher or self.bus.publisher(), batch=500, wake=self.outbox.wake)

    def publish_pending(self) -> int:
        """One relay round with a publisher that is closed afterwards."""
        relay = self.relay()
        try:
            return relay.run_once()
        finally:
            relay.publisher.close()

    def applied_numbers(self) -> list[int]:
        with self.db.transaction() as s:
            return sorted(s.scalars(select(applied.c.n)))

    def applied_count(self) -> int:
        with self.db.transaction() as s:
            return s.scalar(select(func.count()).select_from(applied))

    def unsent(self) -> int:
        with self.db.transaction() as s:
            return s.scalar(select(func.count()).select_from(tables.outbox).where(tables.outbox.c.sent_at.is_(None)))

    @contextmanager
    def running(self, handle_batch=None, relay_interval: float = 0.05):
        """Run the relay and the consumer in threads for the duration of the block."""
        stop = threading.Event()
        threads = [
            threading.Thread(target=self.relay().run, args=(stop, relay_interval), daemon=True),
            threading.Thread(
                target=self.bus.consume, args=(handle_batch or self.consumer.handle_batch, stop), daemon=True
            ),
        ]
        for t in threads:
            t.start()
        try:
            yield
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=15)


@dataclass(frozen=True)
class CatchUp:
    """What ``measure_catch_up`` saw: the rates in events/s, the delay in seconds."""

    steady: float  # a backlog written while the broker is up: write → every event applied
    catch_up: float  # a backlog written while the broker is away: broker back → every event applied
    drain: float  # the same backlog: first event applied after the return → every event applied
    reconnect_delay: float  # broker back → the first event of the backlog applied


def measure_catch_up(service: LibraryService, proxy, count: int, outage: float, timeout: float = 300) -> CatchUp:
    """Issue 20, catch-up at full rate: ``count`` events through outbox, relay, broker and consumer
    while the broker is up (written at once), then ``count`` more written in small transactions
    throughout an outage of ``outage`` seconds (``proxy``, a ``tests.support.BrokerProxy`` the
    service's broker URL goes through, refuses every connection meanwhile), timed from the broker's
    return.  Every event must be applied exactly once.  Writes spread over the outage are what an
    api does; they are also what made the relay charge the early rows again and again."""

    def wait_applied(total: int) -> float:
        deadline = time.monotonic() + timeout
        while service.applied_count() < total:
            if time.monotonic() > deadline:
                raise AssertionError(f"{total - service.applied_count()} of {total} events not applied")
            time.sleep(0.02)
        return time.monotonic()

    with service.running(relay_interval=0.2):
        started = time.monotonic()
        for start in range(0, count, 500):
            service.emit_many(range(start, min(count, start + 500)))
        steady = count / (wait_applied(count) - started)
        proxy.stop()  # the broker goes away: every connection drops, new ones are refused
        away = time.monotonic()
        time.sleep(min(0.5, outage / 4))  # relay and consumer see their connections go
        writing = outage - 2 * min(0.5, outage / 4)
        starts = range(count, 2 * count, 100)
        for i, start in enumerate(starts, 1):
            service.emit_many(range(start, min(2 * count, start + 100)))
            time.sleep(max(0.0, away + min(0.5, outage / 4) + writing * i / len(starts) - time.monotonic()))
        time.sleep(max(0.0, away + outage - time.monotonic()))
        proxy.start()
        back = time.monotonic()
        first = wait_applied(count + 1)
        done = wait_applied(2 * count)
    if service.applied_numbers() != list(range(2 * count)):
        raise AssertionError("events were lost or applied twice")
    return CatchUp(steady, count / (done - back), count / max(done - first, 1e-3), first - back)
