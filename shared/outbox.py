"""Transactional outbox and its relay.

A domain change and the event rows it causes are written in one transaction
(``Outbox.emit``); the relay publishes committed rows with publisher confirms and
marks them sent only after the broker confirmed them.  Failed rows are retried with
backoff, and a failed row holds back the later rows of its aggregate so consumers
see an aggregate's events in order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    event,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Session

from .bus import EVENTS, Message, Publisher, Unreachable
from .clock import utcnow
from .crypto import PayloadCipher
from .events import REGISTRY, EventRegistry, EventType, make_event
from .tracing import TRACEPARENT, current_traceparent

if TYPE_CHECKING:
    from alembic.operations import Operations
    from psycopg import Connection as PgConnection
    from sqlalchemy.pool import PoolProxiedConnection

    from .db import Database

log = logging.getLogger(__name__)


TRACE_CONTEXT_LENGTH = 55  # a W3C traceparent: "00-<32 hex>-<16 hex>-<2 hex>"


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("message_id", String(36), nullable=False, unique=True),
        Column("exchange", String(100), nullable=False),
        Column("routing_key", String(200), nullable=False),
        Column("aggregate", String(200), nullable=True),
        Column("payload", LargeBinary, nullable=False),
        Column("transient", Boolean, nullable=False, default=False),
        Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
        Column("sent_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
        Column("next_attempt_at", DateTime(timezone=True), nullable=True),
        Column("last_error", String(200), nullable=True),
        # W3C traceparent of the span that wrote the row: the relay sends it on as an AMQP header.
        Column("trace_context", String(TRACE_CONTEXT_LENGTH), nullable=True),
        Index("ix_outbox_unsent", "sent_at", "id"),
    )


def add_trace_context_column(op: Operations) -> None:
    """For a service's Alembic revision: the outbox's trace_context column (issue 20).

    A database created after the column came already has it (its first revision creates the
    library's tables as they are now), so the column is added only where it is missing.
    """
    import sqlalchemy as sa

    if "trace_context" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("outbox")}:
        op.add_column("outbox", sa.Column("trace_context", sa.String(TRACE_CONTEXT_LENGTH), nullable=True))


NOTIFY_CHANNEL = "recept_outbox"


@event.listens_for(Session, "before_commit")
def _notify_relay(session: Session) -> None:
    # A relay in another process (the worker, when the api wrote the rows) hears of the
    # commit at once through PostgreSQL's LISTEN/NOTIFY instead of at its next poll.
    if (
        "recept_outbox_waker" in session.info
        and session.bind is not None
        and session.get_bind().dialect.name == "postgresql"
    ):
        session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))


@event.listens_for(Session, "after_commit")
def _wake_relay(session: Session) -> None:
    waker = session.info.pop("recept_outbox_waker", None)
    if waker is not None:
        waker.set()


class CommitListener:
    """LISTENs for outbox commits made by other processes (PostgreSQL); a no-op elsewhere."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: PgConnection[Any] | None = None
        self._raw: PoolProxiedConnection | None = None

    def heard(self) -> bool:
        """True when a commit was announced since the last call (never blocks)."""
        if self.db.dialect != "postgresql":
            return False
        try:
            if self._conn is None:
                raw = self.db.engine.raw_connection()
                self._raw = raw
                conn = cast("PgConnection[Any]", raw.driver_connection)  # psycopg 3, the PostgreSQL driver here
                self._conn = conn
                conn.autocommit = True
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            return any(True for _ in self._conn.notifies(timeout=0, stop_after=1))
        except Exception:  # noqa: BLE001 - fall back to polling; reconnect next time
            self.close()
            return False

    def close(self) -> None:
        raw, self._conn = self._raw, None
        self._raw = None
        if raw is not None:
            try:
                raw.invalidate()  # a LISTENing session must not go back to the pool
            except Exception:  # noqa: BLE001
                pass


class Outbox:
    """Writes events (and gdpr commands/replies) into the current transaction."""

    def __init__(
        self, table: Table, service: str, registry: EventRegistry = REGISTRY, cipher: PayloadCipher | None = None
    ) -> None:
        self.table = table
        self.service = service
        self.registry = registry
        self.cipher = cipher
        self.wake = threading.Event()  # set after a commit that added rows; the relay waits on it

    def emit(
        self,
        session: Session,
        event_type: EventType | tuple[str, int],
        *,
        data: dict[str, Any],
        actor: dict[str, Any] | None = None,
        tenant: str | None = None,
        subject: str | None = None,
        resource: dict[str, str] | None = None,
        correlation_id: str | None = None,
        aggregate: str | None = None,
    ) -> dict[str, Any]:
        """Add a domain event to this transaction; it is published only if the transaction commits."""
        if isinstance(event_type, tuple):
            event_type = self.registry.get(*event_type)
        envelope = make_event(
            event_type,
            source=self.service,
            data=data,
            actor=actor,
            tenant=tenant,
            subject=subject,
            resource=resource,
            correlation_id=correlation_id,
        )
        if aggregate is None and resource is not None:
            aggregate = f"{resource['type']}:{resource['id']}"
        self._add(session, EVENTS, event_type.name, envelope["id"], envelope, aggregate, transient=False)
        return envelope

    def emit_many(self, session: Session, events: list[tuple[EventType, dict[str, Any]]]) -> list[dict[str, Any]]:
        """``emit`` for many events in one statement (imports, bulk jobs): ``[(type, kwargs), ...]``."""
        envelopes, rows = [], []
        for event_type, kwargs in events:
            kwargs = dict(kwargs)
            aggregate = kwargs.pop("aggregate", None)
            envelope = make_event(event_type, source=self.service, **kwargs)
            resource = envelope["resource"]
            if aggregate is None and resource is not None:
                aggregate = f"{resource['type']}:{resource['id']}"
            envelopes.append(envelope)
            rows.append(self._row(EVENTS, event_type.name, envelope["id"], envelope, aggregate, False))
        if rows:
            session.execute(self.table.insert(), rows)
            session.info["recept_outbox_waker"] = self.wake
        return envelopes

    def send(
        self,
        session: Session,
        exchange: str,
        routing_key: str,
        body: dict[str, Any],
        *,
        message_id: str | None = None,
        aggregate: str | None = None,
        transient: bool = False,
    ) -> str:
        """Add a non-event message (a gdpr command or reply).

        ``transient`` rows are deleted as soon as the broker confirms them instead of being
        kept as sent, for payloads (export parts) that must not linger in this database.
        """
        message_id = message_id or str(uuid.uuid4())
        self._add(session, exchange, routing_key, message_id, body, aggregate, transient)
        return message_id

    def is_pending(self, session: Session, message_id: str) -> bool:
        """True while the message ``message_id`` is written but not yet confirmed by the broker.

        A sender that re-sends under the same id (the gdpr coordinator's commands) asks first:
        the copy still waiting will go out, and a second row with that id may not be written.
        """
        t = self.table
        return (
            session.execute(select(t.c.id).where(t.c.message_id == message_id, t.c.sent_at.is_(None))).first()
            is not None
        )

    def _add(
        self,
        session: Session,
        exchange: str,
        routing_key: str,
        message_id: str,
        body: dict[str, Any],
        aggregate: str | None,
        transient: bool,
    ) -> None:
        row = self._row(exchange, routing_key, message_id, body, aggregate, transient)
        if transient and self.cipher is not None:
            row["payload"] = self.cipher.seal(message_id, row["payload"])
        session.execute(self.table.insert().values(**row))
        session.info["recept_outbox_waker"] = self.wake

    @staticmethod
    def _row(
        exchange: str,
        routing_key: str,
        message_id: str,
        body: dict[str, Any],
        aggregate: str | None,
        transient: bool,
    ) -> dict[str, Any]:
        return {
            "message_id": message_id,
            "exchange": exchange,
            "routing_key": routing_key,
            "aggregate": aggregate,
            "payload": json.dumps(body, separators=(",", ":"), sort_keys=True).encode(),
            "transient": transient,
            "created_at": utcnow(),
            "attempts": 0,
            "trace_context": current_traceparent(),
        }


class RelayLock:
    """Only one relay per service database publishes, so order per aggregate holds when
    workers are scaled out: a PostgreSQL session-level advisory lock (SQLite has one
    process per database file anyway).  A lost connection loses the lock; it is re-taken."""

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.key = int.from_bytes(hashlib.sha256(f"recept.relay.{name}".encode()).digest()[:8], "big", signed=True)
        self._conn: Connection | None = None
        self._checked = 0.0

    def held(self) -> bool:
        if self.db.dialect != "postgresql":
            return True
        now = time.monotonic()
        if self._conn is not None and now - self._checked < 1.0:
            return True
        self._checked = now
        try:
            if self._conn is None:
                conn = self._conn = self.db.engine.connect()
                if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar():
                    self.release()
                    return False
                conn.commit()
            else:
                self._conn.execute(text("SELECT 1")).scalar()
                self._conn.commit()
            return True
        except Exception:  # noqa: BLE001 - connection lost: the lock went with it
            self.release()
            return False

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                # A pooled connection outlives close(); drop it so the session (and its lock) ends.
                conn.invalidate()
                conn.close()
            except Exception:  # noqa: BLE001
                pass


class Relay:
    """Publishes committed outbox rows in id order, batch by batch, with confirms."""

    def __init__(
        self,
        db: Database,
        table: Table,
        publisher: Publisher,
        *,
        batch: int = 500,
        max_backoff: float = 60.0,
        keep_sent: timedelta = timedelta(hours=1),
        wake: threading.Event | None = None,
        cipher: PayloadCipher | None = None,
        linger: float = 0.02,
        reconnect_max: float = 1.0,
    ) -> None:
        self.db = db
        self.reconnect_max = reconnect_max
        self.cipher = cipher
        self.linger = linger
        self.table = table
        self.publisher = publisher
        self.batch = batch
        self.max_backoff = max_backoff
        self.keep_sent = keep_sent
        self.wake = wake or threading.Event()
        self._last_purge = utcnow()

    def _pending(self) -> list[Row[Any]]:
        t = self.table
        now = utcnow()
        with self.db.transaction() as s:
            blocked = (
                select(t.c.aggregate)
                .where(
                    t.c.sent_at.is_(None),
                    t.c.next_attempt_at.is_not(None),
                    t.c.next_attempt_at > now,
                    t.c.aggregate.is_not(None),
                )
                .distinct()
            )
            query = (
                select(
                    t.c.id,
                    t.c.message_id,
                    t.c.exchange,
                    t.c.routing_key,
                    t.c.aggregate,
                    t.c.payload,
                    t.c.transient,
                    t.c.attempts,
                    t.c.trace_context,
                )
                .where(t.c.sent_at.is_(None))
                .where((t.c.next_attempt_at.is_(None)) | (t.c.next_attempt_at <= now))
                .where((t.c.aggregate.is_(None)) | (t.c.aggregate.not_in(blocked)))
                .order_by(t.c.id)
                .limit(self.batch)
            )
            return list(s.execute(query))

    def run_once(self) -> int:
        """Publish one batch; returns how many rows the broker confirmed.

        Raises ``Unreachable`` when no broker node answered: nothing was sent, and the rows are
        left as they are (no attempt counted, no backoff), so that once the broker is back the
        backlog goes out at full rate in id order instead of trickling out as the backoffs of
        the rows expire one by one.
        """
        rows = self._pending()
        if not rows:
            return 0
        results = self.publisher.publish(
            [
                Message(
                    exchange=r.exchange,
                    routing_key=r.routing_key,
                    message_id=r.message_id,
                    body=self.cipher.open(r.message_id, r.payload) if self.cipher else r.payload,
                    headers={TRACEPARENT: r.trace_context} if r.trace_context else {},
                )
                for r in rows
            ]
        )
        unreachable = next((r for r in results if isinstance(r, Unreachable)), None)
        if unreachable is not None and all(isinstance(r, Unreachable) for r in results):
            raise unreachable
        # Keep order per aggregate: rows of an aggregate after one that failed are published again after it.
        failed_aggregates: set[str] = set()
        sent: list[int] = []
        kept: list[int] = []
        failed: list[tuple[Row[Any], Exception | None]] = []
        for row, error in zip(rows, results):
            if error is None and row.aggregate not in failed_aggregates:
                (kept if row.transient else sent).append(row.id)
                continue
            if row.aggregate is not None:
                failed_aggregates.add(row.aggregate)
            failed.append((row, error))
        now = utcnow()
        t = self.table
        with self.db.transaction() as s:
            if sent:
                s.execute(update(t).where(t.c.id.in_(sent)).values(sent_at=now))
            if kept:
                s.execute(delete(t).where(t.c.id.in_(kept)))
            for row, error in failed:
                delay = min(self.max_backoff, 0.5 * (2 ** min(row.attempts, 16)))
                reason = type(error).__name__ if error is not None else "held back behind an earlier failure"
                s.execute(
                    update(t)
                    .where(t.c.id == row.id)
                    .values(
                        attempts=row.attempts + (1 if error is not None else 0),
                        next_attempt_at=now + timedelta(seconds=delay if error is not None else 0),
                        last_error=(f"{reason}: {error}" if error is not None else reason)[:200],
                    )
                )
        if failed:
            log.warning("relay: %d of %d messages not confirmed; retrying with backoff", len(failed), len(rows))
        self._purge(now)
        return len(sent) + len(kept)

    def _purge(self, now: datetime) -> None:
        if now - self._last_purge < timedelta(minutes=1):
            return
        self._last_purge = now
        t = self.table
        with self.db.transaction() as s:
            s.execute(delete(t).where(t.c.sent_at.is_not(None), t.c.sent_at < now - self.keep_sent))

    def run(self, stop: threading.Event, interval: float = 0.2) -> None:
        """Relay until ``stop`` is set; survives broker and database outages.

        While the broker is unreachable the relay tries to reconnect with a backoff that stays
        short (``reconnect_max``): a broker that comes back is noticed within about a second,
        and the rows written meanwhile then go out batch after batch without pause.
        """
        lock = RelayLock(self.db, self.table.name + ":" + str(self.db.engine.url.database))
        listener = CommitListener(self.db)
        reconnect = 0.0  # the current wait between reconnect attempts; 0 while the broker answers
        try:
            while not stop.is_set():
                if not lock.held():
                    stop.wait(interval * 5)  # another relay publishes; stand by
                    continue
                self.wake.clear()  # before reading, so a commit during this round wakes the next
                try:
                    published = self.run_once()
                except Unreachable:
                    if not reconnect:
                        log.warning("relay: broker unreachable; the outbox keeps the rows until it is back")
                    reconnect = min(self.reconnect_max, max(interval, reconnect * 2))
                    stop.wait(reconnect)
                    continue
                except Exception as exc:  # noqa: BLE001 - the relay must outlive a database restart
                    log.warning("relay: %s; retrying", type(exc).__name__)
                    stop.wait(min(5.0, interval * 10))
                    continue
                if reconnect:
                    log.info("relay: broker reachable again")
                    reconnect = 0.0
                if published:
                    continue
                deadline = time.monotonic() + interval
                while not (stop.is_set() or self.wake.is_set() or listener.heard()):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self.publisher.idle(min(0.02, remaining))
                # Linger a moment after a wake-up so a stream of small commits (one order each)
                # becomes one batch rather than a relay round per commit.
                self.publisher.idle(min(self.linger, interval))
        finally:
            listener.close()
            lock.release()
            self.publisher.close()
