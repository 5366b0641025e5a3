"""Consumer: an explicit subscription list, idempotent handlers, acks only after commit.

Each service lists its subscriptions in ``worker.py``::

    SUBSCRIPTIONS = [
        Subscription(EVENTS, "orders.order.placed", on_order_placed),
        Subscription(GDPR, "gdpr.command.#", on_gdpr_command),
    ]

A handler is ``handler(session, message)`` and runs inside the consumer's database
transaction; the inbox row (consumer, message id) is written in that same
transaction, so a message redelivered after a crash is applied once.  A batch is
first tried in one transaction; if it fails, each message is retried on its own so
one poison message cannot hold the others back.

A failure is either *permanent* — the message can never be applied (not JSON, no id, an
envelope or data that fails its schema: ``is_permanent``) — and the message goes to the
dead-letter queue at once, or *transient* (a lock timeout, a service it needs being down,
a bug that a redeploy fixes) and the message is delivered again, ``delivery_limit``
deliveries in all, then dead-lettered.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, delete
from sqlalchemy.orm import Session

from . import tracing
from .bus import EVENTS, Binding, Delivery, Outcome, topic_matches
from .db import Database

log = logging.getLogger(__name__)

Handler = Callable[[Session, dict[str, Any]], None]
BatchHandler = Callable[[Session, list[dict[str, Any]]], None]
#: A delivery of a batch, its decoded message and its message id.
_Item = tuple[Delivery, dict[str, Any], str]


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(60), primary_key=True),
        Column("message_id", String(64), primary_key=True),
        Column("received_at", DateTime(timezone=True), nullable=False),
    )


@dataclass(frozen=True)
class Subscription:
    exchange: str
    pattern: str
    handler: Handler

    @property
    def binding(self) -> Binding:
        return Binding(self.exchange, self.pattern)


class PoisonMessage(ValueError):
    """A message that can never be handled (not JSON, no id)."""

    permanent = True


def _permanent_types() -> tuple[type[BaseException], ...]:
    import fastjsonschema
    import jsonschema

    from .errors import Invalid

    return (
        PoisonMessage,
        Invalid,
        jsonschema.ValidationError,
        fastjsonschema.JsonSchemaException,
        UnicodeError,
        json.JSONDecodeError,
    )


_PERMANENT: tuple[type[BaseException], ...] = ()


def is_permanent(exc: BaseException) -> bool:
    """A failure that redelivery cannot cure: decoding, schema or validation failures.

    Besides the library's own types, any exception class may say so with ``permanent = True``
    (the audit's ``PoisonEvent`` does); everything else is treated as transient.
    """
    global _PERMANENT
    if not _PERMANENT:
        _PERMANENT = _permanent_types()
    return bool(getattr(exc, "permanent", False)) or isinstance(exc, _PERMANENT)


class Consumer:
    """Turns deliveries into handler calls; plug ``handle_batch`` into ``Bus.consume``.

    ``batch_handler``, when given, receives all the new messages of a batch that came from
    ``batch_exchange`` (the audit service inserts a batch of events in one statement);
    every other message goes to its subscription's handler.  ``use_inbox=False`` skips the
    inbox for the batch handler's messages only (its own writes must then be idempotent);
    subscription handlers always have it.

    When the database is unreachable the consumer waits for it (up to ``database_wait``
    seconds) instead of failing the batch, so messages wait in the queue rather than
    spending their deliveries and landing in the dead-letter queue.

    ``delivery_limit`` (the ``DELIVERY_LIMIT`` setting) is how many times a message with a
    transient failure is delivered in all: the last failing delivery is dead-lettered by the
    consumer itself.  (A quorum queue's ``x-delivery-limit`` counts *re*deliveries, so left to
    the broker a limit of five meant six deliveries; the broker's limit stays as a backstop.)
    None leaves the count to the broker.
    """

    def __init__(
        self,
        name: str,
        db: Database,
        inbox: Table,
        subscriptions: Sequence[Subscription],
        batch_handler: BatchHandler | None = None,
        use_inbox: bool = True,
        inbox_retention: timedelta = timedelta(days=14),
        batch_exchange: str = EVENTS,
        database_wait: float = 300.0,
        delivery_limit: int | None = None,
    ) -> None:
        self.name = name
        self.delivery_limit = delivery_limit
        self._times: dict[int, str] = {}  # id(delivery) -> the event's time, for the lag metric
        self.batch_exchange = batch_exchange
        self.database_wait = database_wait
        self.inbox_retention = inbox_retention
        self._last_purge = 0.0
        self.db = db
        self.inbox = inbox
        self.subscriptions = list(subscriptions)
        self.batch_handler = batch_handler
        self.use_inbox = use_inbox

    @property
    def bindings(self) -> list[Binding]:
        return [s.binding for s in self.subscriptions]

    def _route(self, delivery: Delivery) -> Handler | None:
        for sub in self.subscriptions:
            if sub.exchange == delivery.exchange and topic_matches(sub.pattern, delivery.routing_key):
                return sub.handler
        return None

    @staticmethod
    def _decode(delivery: Delivery) -> dict[str, Any]:
        try:
            message = json.loads(delivery.body)
        except (ValueError, UnicodeDecodeError):
            raise PoisonMessage("body is not JSON") from None
        if not isinstance(message, dict):
            raise PoisonMessage("body is not a JSON object")
        return message

    def _message_id(self, delivery: Delivery, message: dict[str, Any]) -> str:
        message_id = delivery.message_id or message.get("id")
        if not message_id:
            raise PoisonMessage("message has no id")
        return str(message_id)[:64]

    def _dedup(self, session: Session, items: list[_Item]) -> list[_Item]:
        """Record the batch's message ids in the inbox; keep only the items seen for the first time.

        One statement: INSERT ... ON CONFLICT DO NOTHING RETURNING (PostgreSQL and SQLite)."""
        unique: dict[str, _Item] = {}
        for item in items:
            unique.setdefault(item[2], item)
        if not unique:
            return []
        if session.get_bind().dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as postgresql_insert

            statement = postgresql_insert(self.inbox).on_conflict_do_nothing().returning(self.inbox.c.message_id)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            statement = sqlite_insert(self.inbox).on_conflict_do_nothing().returning(self.inbox.c.message_id)
        now = datetime.now(UTC)
        fresh = set(
            session.scalars(
                statement, [{"consumer": self.name, "message_id": mid, "received_at": now} for mid in unique]
            )
        )
        return [item for mid, item in unique.items() if mid in fresh]

    def _apply(self, session: Session, items: list[_Item]) -> None:
        batch_handler = self.batch_handler
        batched: list[_Item] = []
        routed: list[_Item] = []
        for item in items:
            use_batch = batch_handler is not None and item[0].exchange == self.batch_exchange
            (batched if use_batch else routed).append(item)
        if batch_handler is not None and batched:
            if self.use_inbox:
                batched = self._dedup(session, batched)
            if batched:
                with tracing.batch_span(self.name, self.batch_exchange, [_headers(d) for d, _m, _mid in batched]):
                    batch_handler(session, [m for _d, m, _mid in batched])
        for delivery, message, _mid in self._dedup(session, routed) if routed else ():
            handler = self._route(delivery)
            if handler is not None:
                # The sender's trace goes on here: what the handler writes to the outbox carries it.
                with tracing.consumer_span(
                    self.name, delivery.routing_key, _headers(delivery), delivery.delivery_count
                ):
                    handler(session, message)

    def _wait_for_database(self) -> bool:
        """Block while the database is down.  True when it was down and came back; False when
        it answers at once (the error was not an outage) or stayed down past ``database_wait``."""
        started, delay, was_down = time.monotonic(), 0.2, False
        while True:
            try:
                self.db.ping()
                return was_down
            except Exception as exc:  # noqa: BLE001 - any driver error means "not reachable yet"
                was_down = True
                if time.monotonic() - started >= self.database_wait:
                    return False
                log.warning(
                    "consumer %s: database unreachable (%s); waiting %.1fs", self.name, type(exc).__name__, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def purge_inbox(self) -> int:
        """Forget message ids older than the retention: far beyond any broker redelivery."""
        cutoff = datetime.now(UTC) - self.inbox_retention
        with self.db.transaction() as session:
            # On the session's connection: a Core statement, whose result says how many rows went.
            result = session.connection().execute(
                delete(self.inbox).where(self.inbox.c.consumer == self.name, self.inbox.c.received_at < cutoff)
            )
        return result.rowcount or 0

    def handle_batch(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        try:
            outcomes = self._handle_batch(deliveries)
        except BaseException:
            self._times.clear()
            raise
        self._count(deliveries, outcomes)
        return outcomes

    def _count(self, deliveries: Sequence[Delivery], outcomes: Sequence[Outcome]) -> None:
        """Metrics: outcomes, redeliveries, and how long after its time each event was handled."""
        from . import metrics
        from .clock import parse_rfc3339, utcnow

        tally: dict[Outcome, int] = {}
        for outcome in outcomes:
            tally[outcome] = tally.get(outcome, 0) + 1
        for outcome, count in tally.items():
            metrics.CONSUMED.labels(self.name, outcome.value).inc(count)
        redelivered = sum(1 for d in deliveries if d.delivery_count > 1)
        if redelivered:
            metrics.REDELIVERED.labels(self.name).inc(redelivered)
        now, lag = utcnow(), metrics.EVENT_LAG.labels(self.name)
        for delivery in deliveries:
            sent = self._times.pop(id(delivery), None)
            if sent is not None:
                try:
                    lag.observe(max(0.0, (now - parse_rfc3339(sent)).total_seconds()))
                except (ValueError, TypeError):
                    pass  # a time that is not one: the envelope check deals with the message

    def _handle_batch(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        if self.use_inbox and time.monotonic() - self._last_purge > 3600:
            self._last_purge = time.monotonic()
            try:
                self.purge_inbox()
            except Exception as exc:  # noqa: BLE001 - purging can wait for the next hour
                log.warning("consumer %s: inbox purge failed (%s)", self.name, type(exc).__name__)
        outcomes: list[Outcome] = [Outcome.ACK] * len(deliveries)
        items = []
        for index, delivery in enumerate(deliveries):
            try:
                message = self._decode(delivery)
                if isinstance(message.get("time"), str):
                    self._times[id(delivery)] = message["time"]
                items.append((index, (delivery, message, self._message_id(delivery, message))))
            except PoisonMessage as exc:
                log.error("consumer %s: dead-lettering a message on %s: %s", self.name, delivery.routing_key, exc)
                outcomes[index] = Outcome.DEAD
        if not items:
            return outcomes
        while True:
            try:
                with self.db.transaction() as session:
                    self._apply(session, [item for _i, item in items])
                return outcomes
            except Exception as exc:  # noqa: BLE001 - fall back to one transaction per message
                if _is_disconnect(exc) and self._wait_for_database():
                    continue  # the database is back: try the whole batch again
                if len(items) == 1:
                    outcomes[items[0][0]] = self._failed(items[0][1][0], exc)
                    return outcomes
                break
        for index, item in items:
            try:
                with self.db.transaction() as session:
                    self._apply(session, [item])
            except Exception as exc:  # noqa: BLE001 - this message retries; the others go on
                outcomes[index] = self._failed(item[0], exc)
        return outcomes

    def _failed(self, delivery: Delivery, exc: Exception) -> Outcome:
        """Log a failed message (by exception type only: messages may quote database values) and
        say what becomes of it."""
        if is_permanent(exc):
            log.error(
                "consumer %s: dead-lettering a message on %s that can never succeed (%s)",
                self.name,
                delivery.routing_key,
                type(exc).__name__,
            )
            return Outcome.DEAD
        last = self.delivery_limit is not None and delivery.delivery_count >= self.delivery_limit
        log.warning(
            "consumer %s: handler for %s failed (%s), delivery %d%s",
            self.name,
            delivery.routing_key,
            type(exc).__name__,
            delivery.delivery_count,
            f" of {self.delivery_limit}: dead-lettering it" if last else "",
        )
        return Outcome.DEAD if last else Outcome.RETRY


def _headers(delivery: Delivery) -> dict[str, Any]:
    """The AMQP headers of a delivery (where the sender's traceparent travels)."""
    return getattr(delivery, "headers", None) or {}


def _is_disconnect(exc: BaseException) -> bool:
    """The database could not be reached (as opposed to a handler or data error)."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (OperationalError, InterfaceError))
