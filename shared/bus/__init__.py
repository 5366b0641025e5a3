"""One bus interface, two back ends: RabbitMQ (pika) and kombu's in-memory transport.

The topology — exchanges, each service's queue, the dead-letter exchange and the delivery
limit — is declared in ``topology.py`` and nowhere else.  Service code sees only this package:

* ``Bus.publisher()`` -> ``publish(messages)`` that returns once the broker has
  confirmed (or refused) every message in the batch;
* ``Bus.consume(handle_batch, stop)`` that feeds batches of deliveries to a handler
  and acks, retries or dead-letters each one as the handler says.

``amqp.py`` is the RabbitMQ back end, ``memory.py`` the in-process one; ``interface.py``
holds what they share (messages, deliveries, outcomes, errors).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from .amqp import RabbitBackend
from .interface import (
    Backend,
    BatchHandler,
    BusError,
    Delivery,
    Message,
    Outcome,
    Publisher,
    Unreachable,
    Unroutable,
)
from .memory import MemoryBackend
from .topology import DLX, EVENTS, EXCHANGES, GDPR, Binding, dead_letter_queue, queue_name, topic_matches

__all__ = [
    "Bus",
    "Message",
    "Delivery",
    "Outcome",
    "BatchHandler",
    "Publisher",
    "BusError",
    "Unroutable",
    "Unreachable",
    "Binding",
    "EVENTS",
    "GDPR",
    "DLX",
    "EXCHANGES",
    "queue_name",
    "dead_letter_queue",
    "topic_matches",
    "MemoryBackend",
]


class Bus:
    """The bus as one service sees it."""

    def __init__(self, url: str, service: str, *, delivery_limit: int = 5, prefetch: int = 200) -> None:
        self.url = url
        self.service = service
        self.delivery_limit = delivery_limit
        self.prefetch = prefetch
        if url.startswith("memory://"):
            self.backend: Backend = MemoryBackend()
        elif url.startswith(("amqp://", "amqps://")):
            self.backend = RabbitBackend(url)
        else:
            raise BusError("broker URL must start with amqp://, amqps:// or memory://")

    @property
    def queue(self) -> str:
        return queue_name(self.service)

    def declare(self, bindings: Iterable[Binding] = ()) -> None:
        """Declare the exchanges, and this service's queue with its bindings and dead-letter queue."""
        self.backend.declare(self.service, list(bindings), self.delivery_limit)

    def publisher(self) -> Publisher:
        return self.backend.publisher()

    def consume(
        self, handle_batch: BatchHandler, stop: threading.Event, *, batch_size: int = 100, batch_wait: float = 0.05
    ) -> None:
        """Feed this service's queue to ``handle_batch`` until ``stop`` is set; reconnects by itself."""
        self.backend.consume(
            self.queue,
            handle_batch,
            stop,
            prefetch=self.prefetch,
            batch_size=batch_size,
            batch_wait=batch_wait,
            delivery_limit=self.delivery_limit,
            dead_letter_queue=dead_letter_queue(self.service),
        )

    def ping(self) -> None:
        self.backend.ping()

    def queue_depths(self, queues: Iterable[str]) -> list[int | None]:
        """Ready messages per queue (None: not declared yet); ``BusError`` when the broker is unreachable."""
        return self.backend.queue_depths(list(queues))
