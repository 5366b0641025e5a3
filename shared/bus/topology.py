"""The topology every back end declares: exchanges, per-service queues and their arguments.

| exchange | carries |
|---|---|
| ``recept.events`` | every domain event, routing key = event type |
| ``recept.gdpr`` | ``gdpr.command.<svc>``, ``gdpr.reply.<svc>``, ``gdpr.announce.<svc>`` |
| ``recept.dlx`` | dead letters, routing key ``dead.<svc>`` -> queue ``recept.q.<svc>.dead`` |

Each service consumes one durable quorum queue ``recept.q.<svc>`` with its bindings; the broker
counts deliveries and dead-letters a message after the delivery limit.  Dead-letter queues are
bounded by ``DEAD_LETTER_POLICY`` (a broker policy, deploy/rabbitmq/definitions.json): a dead
letter is dropped after ``DEAD_LETTER_TTL_MS`` or when ``DEAD_LETTER_MAX_LENGTH`` newer ones
arrived, so a failing command or reply does not stay on the broker's disk indefinitely.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EVENTS",
    "GDPR",
    "DLX",
    "EXCHANGES",
    "Binding",
    "queue_name",
    "dead_letter_queue",
    "dead_letter_key",
    "queue_arguments",
    "DEAD_LETTER_QUEUE_ARGUMENTS",
    "DEAD_LETTER_TTL_MS",
    "DEAD_LETTER_MAX_LENGTH",
    "DEAD_LETTER_POLICY",
    "topic_matches",
]

EVENTS = "recept.events"  # every domain event, routing key = event type
GDPR = "recept.gdpr"  # commands from the gdpr service and replies to it
DLX = "recept.dlx"  # where messages that keep failing end up
EXCHANGES = (EVENTS, GDPR, DLX)


@dataclass(frozen=True)
class Binding:
    exchange: str
    pattern: str


def queue_name(service: str) -> str:
    # Queues live under their own prefix: RabbitMQ permission patterns match names whatever the
    # resource type, so a queue named like an exchange ("recept.gdpr") would be readable by
    # everyone allowed on that exchange.
    return f"recept.q.{service}"


def dead_letter_queue(service: str) -> str:
    return f"recept.q.{service}.dead"


def dead_letter_key(service: str) -> str:
    """The routing key on ``DLX`` that leads to ``dead_letter_queue(service)``."""
    return f"dead.{service}"


DEAD_LETTER_QUEUE_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum"}

#: Seven days: long enough for an operator to see and investigate a dead letter (the worker logs its
#: arrival), short enough that nothing waits there for months (issue 14).
DEAD_LETTER_TTL_MS = 7 * 24 * 3600 * 1000
#: A poison stream cannot fill the broker's disk: the oldest dead letters are dropped first.
DEAD_LETTER_MAX_LENGTH = 10_000

#: A policy, not queue arguments: a policy changes on a running broker, while a queue re-declared
#: with new arguments fails with PRECONDITION_FAILED on every deployment that already has it.
#: ``pattern`` matches exactly the names ``dead_letter_queue`` makes (quorum queues honour
#: message-ttl since RabbitMQ 3.10 and max-length with drop-head).
DEAD_LETTER_POLICY: dict[str, Any] = {
    "name": "recept-dead-letters",
    "pattern": r"^recept\.q\.[^.]+\.dead$",
    "apply-to": "queues",
    "priority": 10,
    "definition": {"message-ttl": DEAD_LETTER_TTL_MS, "max-length": DEAD_LETTER_MAX_LENGTH, "overflow": "drop-head"},
}


def queue_arguments(service: str, delivery_limit: int) -> dict[str, Any]:
    """The arguments of a service's queue (a queue re-declared with others fails on RabbitMQ)."""
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": DLX,
        "x-dead-letter-routing-key": dead_letter_key(service),
        "x-delivery-limit": delivery_limit,
    }


@functools.lru_cache(maxsize=4096)
def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more."""
    words, parts = key.split("."), pattern.split(".")

    @functools.cache
    def match(i: int, j: int) -> bool:
        if i == len(parts):
            return j == len(words)
        if parts[i] == "#":
            return match(i + 1, j) or (j < len(words) and match(i, j + 1))
        if j == len(words):
            return False
        return parts[i] in ("*", words[j]) and match(i + 1, j + 1)

    return match(0, 0)
