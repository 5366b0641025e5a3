"""What both back ends implement and service code sees: messages, deliveries, outcomes, errors."""

from __future__ import annotations

import enum
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .topology import Binding

__all__ = [
    "BusError",
    "Unroutable",
    "Unreachable",
    "Message",
    "Delivery",
    "Outcome",
    "BatchHandler",
    "Publisher",
    "Backend",
]


class BusError(RuntimeError):
    """The broker cannot be reached or refused an operation (message holds no payload)."""


class Unroutable(BusError):
    """A ``mandatory`` message matched no queue: a wiring error, never a silent success."""


class Unreachable(BusError):
    """No broker node could be reached: nothing of the batch was sent.

    Not the messages' fault: the relay waits for the broker instead of counting the attempt
    against each message (their backoff would delay the catch-up once the broker is back).
    """


@dataclass(frozen=True)
class Message:
    """An outgoing message."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    headers: dict[str, Any] = field(default_factory=dict)


@dataclass
class Delivery:
    """An incoming message, as handed to a batch handler."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str | None
    delivery_count: int  # 1 on first delivery
    tag: object = None
    headers: dict[str, Any] = field(default_factory=dict)  # AMQP headers: the sender's traceparent travels here


class Outcome(enum.Enum):
    ACK = "ack"  # done (or a duplicate): remove it
    RETRY = "retry"  # failed: deliver again, up to the delivery limit, then dead-letter
    DEAD = "dead"  # can never succeed (unparseable): dead-letter now


BatchHandler = Callable[[Sequence[Delivery]], Sequence[Outcome]]


class Publisher(ABC):
    @abstractmethod
    def publish(self, messages: Sequence[Message], timeout: float = 30.0) -> list[Exception | None]:
        """Publish a batch; one entry per message: None when confirmed, else why it failed."""

    def idle(self, seconds: float) -> None:
        """Wait ``seconds`` while keeping the connection alive (heartbeats)."""
        time.sleep(seconds)

    def close(self) -> None:  # noqa: B027 - a publisher with nothing to release need not override it
        """Release the connection, if the back end holds one."""


class Backend(ABC):
    @abstractmethod
    def declare(self, service: str, bindings: list[Binding], delivery_limit: int) -> None:
        """Declare the service's queue (delivery limit, dead-letter queue) and its bindings."""

    @abstractmethod
    def publisher(self) -> Publisher:
        """A publisher of its own (one per thread)."""

    @abstractmethod
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
        """Feed ``queue`` to ``handle_batch`` until ``stop`` is set (the options are ``Bus.consume``'s)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise when the broker cannot be reached."""

    @abstractmethod
    def queue_depths(self, queues: Sequence[str]) -> list[int | None]:
        """Ready messages per queue, in order; None for a queue not declared yet.

        Raises ``BusError`` when the broker cannot be reached (metrics then report no figure).
        """
