"""The in-memory back end (kombu's memory transport), for the embedded run and broker-free tests.

It keeps the RabbitMQ back end's contract: ``mandatory`` routing is checked against the
bindings declared through ``Bus.declare``, and the quorum queues' delivery limit is emulated
with an ``x-delivery-count`` header, so service code cannot tell the two apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .interface import Backend, BatchHandler, Delivery, Message, Outcome, Publisher, Unroutable
from .topology import DLX, EXCHANGES, Binding, dead_letter_key, dead_letter_queue, queue_name, topic_matches

if TYPE_CHECKING:
    from kombu.connection import Connection
    from kombu.message import Message as KombuMessage

__all__ = ["MemoryBackend", "MemoryPublisher"]


class MemoryBackend(Backend):
    """kombu's in-memory transport, for the embedded run and broker-free tests.

    kombu's virtual exchanges drop what matches no binding, so routing for ``mandatory``
    is checked against the bindings declared here; deliveries are counted in a header
    to emulate the quorum queues' delivery limit.
    """

    _lock = threading.Lock()
    _bindings: dict[str, list[tuple[str, str]]] = {}  # exchange -> [(pattern, queue)]

    def __init__(self) -> None:
        from kombu.connection import Connection

        self._connection_factory: Callable[[], Connection] = lambda: Connection("memory://")

    @classmethod
    def reset(cls) -> None:
        """Forget every queue and binding (tests)."""
        from kombu.transport import memory

        with cls._lock:
            cls._bindings.clear()
            memory.Channel.queues.clear()
            memory.Channel.events.clear()
            memory.Transport.global_state.clear()

    def ping(self) -> None:
        return None

    def queue_depths(self, queues: Sequence[str]) -> list[int | None]:
        from kombu.transport import memory

        with self._connection_factory() as conn:
            channel = conn.default_channel
            return [channel._size(q) if q in memory.Channel.queues else None for q in queues]

    def declare(self, service: str, bindings: list[Binding], delivery_limit: int) -> None:
        from kombu.entity import Exchange, Queue

        with self._connection_factory() as conn:
            channel = conn.channel()
            exchanges = {name: Exchange(name, type="topic", durable=True) for name in EXCHANGES}
            for exchange in exchanges.values():
                exchange(channel).declare()
            declared = [(DLX, dead_letter_key(service), dead_letter_queue(service))]
            declared += [(b.exchange, b.pattern, queue_name(service)) for b in bindings]
            with self._lock:
                for exchange_name, pattern, queue in declared:
                    Queue(queue, exchanges[exchange_name], routing_key=pattern)(channel).declare()
                    entries = self._bindings.setdefault(exchange_name, [])
                    if (pattern, queue) not in entries:
                        entries.append((pattern, queue))

    def routes(self, exchange: str, routing_key: str) -> bool:
        with self._lock:
            return any(topic_matches(p, routing_key) for p, _q in self._bindings.get(exchange, []))

    def publisher(self) -> Publisher:
        return MemoryPublisher(self)

    def consume(
        self,
        queue: str,
        handle_batch: BatchHandler,
        stop: threading.Event,
        *,
        prefetch: int,
        batch_size: int,
        batch_wait: float,
        delivery_limit: int,
        dead_letter_queue: str,
    ) -> None:
        # ``prefetch`` has no meaning in memory: a batch is taken from the queue at once.
        from kombu.connection import Connection
        from kombu.entity import Exchange, Queue

        with Connection("memory://") as conn:
            # Bind through the default exchange: SimpleQueue(name) would declare a direct exchange
            # named like the queue, and "recept.gdpr" is also the name of a topic exchange.
            simple = conn.SimpleQueue(Queue(queue, Exchange(""), routing_key=queue), no_ack=False)
            publisher = MemoryPublisher(self)
            try:
                while not stop.is_set():
                    batch: list[Delivery] = []
                    messages: list[KombuMessage] = []
                    deadline = time.monotonic() + batch_wait
                    while len(batch) < batch_size:
                        try:
                            message = simple.get(
                                block=True,
                                timeout=0.05 if not batch else min(0.005, max(0.001, deadline - time.monotonic())),
                            )
                        except simple.Empty:
                            if batch or stop.is_set() or time.monotonic() >= deadline:
                                break
                            continue
                        headers = message.headers or {}
                        props = message.properties
                        batch.append(
                            Delivery(
                                exchange=headers.get("x-exchange", ""),
                                routing_key=headers.get("x-routing-key", ""),
                                body=message.body if isinstance(message.body, bytes) else message.body.encode(),
                                message_id=props.get("message_id") or headers.get("x-message-id"),
                                delivery_count=int(headers.get("x-delivery-count", 0)) + 1,
                                headers=headers,
                            )
                        )
                        messages.append(message)
                    if not batch:
                        continue
                    outcomes = handle_batch(batch)
                    for delivery, message, outcome in zip(batch, messages, outcomes):
                        message.ack()
                        if outcome is Outcome.ACK:
                            continue
                        headers = dict(message.headers or {})
                        if outcome is Outcome.RETRY and delivery.delivery_count < delivery_limit:
                            headers["x-delivery-count"] = delivery.delivery_count
                            publisher.put(queue, delivery, headers)
                        else:
                            publisher.put(dead_letter_queue, delivery, headers)
            finally:
                simple.close()


class MemoryPublisher(Publisher):
    def __init__(self, backend: MemoryBackend) -> None:
        from kombu.connection import Connection

        self.backend = backend
        self._conn = Connection("memory://")
        self._producer = self._conn.Producer(serializer=None)

    def publish(self, messages: Sequence[Message], timeout: float = 30.0) -> list[Exception | None]:
        from kombu.entity import Exchange

        results: list[Exception | None] = []
        for m in messages:
            if not self.backend.routes(m.exchange, m.routing_key):
                results.append(Unroutable("no queue is bound for this routing key"))
                continue
            headers = {
                **m.headers,
                "x-exchange": m.exchange,
                "x-routing-key": m.routing_key,
                "x-message-id": m.message_id,
            }
            self._producer.publish(
                m.body,
                exchange=Exchange(m.exchange, type="topic"),
                routing_key=m.routing_key,
                headers=headers,
                message_id=m.message_id,
                content_type="application/json",
                content_encoding="binary",
                delivery_mode=2,
            )
            results.append(None)
        return results

    def put(self, queue: str, delivery: Delivery, headers: dict[str, Any]) -> None:
        """Put a delivery straight back on a queue (redelivery or dead-lettering)."""
        self._producer.publish(
            delivery.body,
            exchange="",
            routing_key=queue,
            headers=headers,
            message_id=delivery.message_id,
            content_type="application/json",
            content_encoding="binary",
            delivery_mode=2,
        )

    def close(self) -> None:
        self._conn.release()
