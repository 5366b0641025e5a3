"""The RabbitMQ topology and each service's least-privilege broker user, derived from the code.

Services declare their own exchanges, queues and bindings when a worker starts
(``Runtime.declare`` -> ``shared.bus``).  A queue declared twice with different
arguments fails with PRECONDITION_FAILED, so the broker's definitions must match
those declarations exactly: rather than restating them, this module runs each
service's real ``Runtime.declare()`` against a recording channel and turns what it
recorded into RabbitMQ definitions.  Nothing here connects to anything.

What a service *publishes* is not declared anywhere the code can be asked, so it
follows the wire protocol of ``shared.outbox`` and ``shared.privacy``:

* every service publishes its domain events to ``recept.events`` with routing key =
  event type, which is always ``<service>.<thing>.<verb>`` (API.md);
* a GDPR participant (it binds ``gdpr.command.<service>``) publishes
  ``gdpr.reply.<service>`` and ``gdpr.announce.<service>`` to ``recept.gdpr``;
* the coordinator (it binds ``gdpr.reply.*``) publishes ``gdpr.command.<service>``.

A service without a worker (``has_worker=False``) declares nothing and publishes nothing
(its outbox would have no relay), so it gets no user and no queue at all.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.bus import DLX, EVENTS, EXCHANGES, GDPR, dead_letter_queue, queue_name
from shared.bus.topology import DEAD_LETTER_POLICY

VHOST = "recept"
ADMIN_USER = "recept-admin"
# Every routing key and binding pattern the code uses is made of these characters; a pattern
# outside them would need real regex escaping in the topic permissions below.
_PATTERN_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.*#")


def user_name(service: str) -> str:
    return f"recept-{service}"


@dataclass
class _Declared:
    exchanges: dict[str, dict[str, Any]] = field(default_factory=dict)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    bindings: list[tuple[str, str, str]] = field(default_factory=list)  # (exchange, queue, key)


class _RecordingChannel:
    """Stands in for a pika channel; keeps pika's signatures so keyword and positional calls both work."""

    def __init__(self, declared: _Declared) -> None:
        self.declared = declared

    def exchange_declare(
        self,
        exchange,
        exchange_type="direct",
        passive=False,
        durable=False,
        auto_delete=False,
        internal=False,
        arguments=None,
    ):
        self.declared.exchanges[exchange] = {
            "type": exchange_type,
            "durable": durable,
            "auto_delete": auto_delete,
            "internal": internal,
            "arguments": dict(arguments or {}),
        }

    def queue_declare(self, queue, passive=False, durable=False, exclusive=False, auto_delete=False, arguments=None):
        self.declared.queues[queue] = {
            "durable": durable,
            "auto_delete": auto_delete,
            "arguments": dict(arguments or {}),
        }

    def queue_bind(self, queue, exchange, routing_key=None, arguments=None):
        key = (exchange, queue, routing_key or "")
        if key not in self.declared.bindings:
            self.declared.bindings.append(key)


class _RecordingConnection:
    def __init__(self, declared: _Declared) -> None:
        self.declared = declared

    def channel(self) -> _RecordingChannel:
        return _RecordingChannel(self.declared)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class ServiceTopology:
    """What one service declares on the broker, and what it may publish."""

    service: str
    exchanges: Mapping[str, Mapping[str, Any]]
    queues: Mapping[str, Mapping[str, Any]]
    bindings: tuple[tuple[str, str, str], ...]

    @property
    def user(self) -> str:
        return user_name(self.service)

    def binding_keys(self, exchange: str) -> list[str]:
        return [key for source, _queue, key in self.bindings if source == exchange]

    @property
    def participant(self) -> bool:
        return f"gdpr.command.{self.service}" in self.binding_keys(GDPR)

    @property
    def coordinator(self) -> bool:
        return "gdpr.reply.*" in self.binding_keys(GDPR)

    def publishes(self) -> dict[str, list[str]]:
        """Exchange -> regexes of the routing keys this service publishes there."""
        svc = _literal(self.service)
        routes: dict[str, list[str]] = {EVENTS: [rf"{svc}\..+"]}
        if self.participant:
            routes.setdefault(GDPR, []).append(rf"gdpr\.(reply|announce)\.{svc}")
        if self.coordinator:
            routes.setdefault(GDPR, []).append(r"gdpr\.command\.[^.]+")
        return routes

    def permissions(self) -> dict[str, str]:
        """configure / write / read regexes (RabbitMQ checks them against resource names)."""
        own = [queue_name(self.service), dead_letter_queue(self.service)]
        bound = [exchange for exchange in EXCHANGES if self.binding_keys(exchange)]
        return {
            # Exchanges and own queues are declared by the service itself at worker start.
            "configure": _alternatives([*EXCHANGES, *own]),
            # Writing a queue = binding it; declaring a queue with a dead-letter exchange
            # needs write on that exchange.
            "write": _alternatives([*own, DLX, *self.publishes()]),
            # Reading an exchange = binding a queue to it; reading the own queue = consuming
            # (and declaring it with a dead-letter exchange).
            "read": _alternatives([queue_name(self.service), *bound]),
        }

    def topic_permissions(self) -> list[dict[str, str]]:
        """Per exchange: which routing keys this user may publish (write) and bind (read)."""
        publishes = self.publishes()
        result = []
        for exchange in EXCHANGES:
            write = publishes.get(exchange, [])
            read = [_literal(key) for key in self.binding_keys(exchange)]
            result.append(
                {
                    "exchange": exchange,
                    "write": f"^({'|'.join(write)})$" if write else "^$",
                    "read": f"^({'|'.join(read)})$" if read else "^$",
                }
            )
        return result


def _literal(pattern: str) -> str:
    if not pattern or set(pattern) - _PATTERN_CHARS:
        raise ValueError(f"unexpected characters in routing pattern {pattern!r}")
    return pattern.replace(".", r"\.").replace("*", r"\*")


def _alternatives(names) -> str:
    return "^(" + "|".join(_literal(name) for name in dict.fromkeys(names)) + ")$"


def service_topology(name: str, env: Mapping[str, str] | None = None) -> ServiceTopology:
    """Run ``name``'s worker declaration against a recording channel (``env``: its environment)."""
    from services import load
    from shared.crypto import Keyring
    from shared.service import Runtime
    from shared.tokens import KeySet

    spec = load(name)
    config = spec.config(
        env=dict(env or {}),
        overrides={
            # Only the declaration runs: an in-memory database, a throwaway keyring, no token keys.
            "DATABASE_URL": "sqlite://",
            "BROKER_URL": "amqp://offline.invalid/",
            "keyring": Keyring.generate(),
            "keyset": KeySet(lambda: {"keys": []}),
        },
    )
    runtime = Runtime(spec, config)
    declared = _Declared()
    try:
        runtime.bus.backend._connect = lambda: _RecordingConnection(declared)
        runtime.declare()
    finally:
        runtime.db.dispose()
    return ServiceTopology(name, declared.exchanges, declared.queues, tuple(declared.bindings))


def all_topologies(env: Mapping[str, str] | None = None) -> list[ServiceTopology]:
    """Every service with a worker; an api-only service (the portal) has no broker user or queue."""
    from deploy.contract import bus_services

    return [service_topology(name, env) for name in bus_services()]


def definitions(
    topologies: list[ServiceTopology], vhost: str = VHOST, password_hashes: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """RabbitMQ definitions (``rabbitmqctl import_definitions`` / ``load_definitions``).

    Without ``password_hashes`` every user has an empty hash (no password login): that is
    the committed file; ``deploy.make_secrets`` fills the hashes in a copy kept as a secret.
    """
    hashes = dict(password_hashes or {})
    users = [ADMIN_USER, *(t.user for t in topologies)]
    exchanges: dict[str, Mapping[str, Any]] = {}
    queues: dict[str, Mapping[str, Any]] = {}
    bindings: list[tuple[str, str, str]] = []
    for topology in topologies:
        for name, spec in topology.exchanges.items():
            if exchanges.setdefault(name, spec) != spec:
                raise ValueError(f"services declare exchange {name} differently")
        queues.update(topology.queues)
        bindings.extend(b for b in topology.bindings if b not in bindings)
    return {
        "users": [
            {
                "name": user,
                "password_hash": hashes.get(user, ""),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": "administrator" if user == ADMIN_USER else "",
            }
            for user in users
        ],
        "vhosts": [{"name": vhost}],
        "permissions": [{"user": ADMIN_USER, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}]
        + [{"user": t.user, "vhost": vhost, **t.permissions()} for t in topologies],
        "topic_permissions": [
            {"user": t.user, "vhost": vhost, **perm} for t in topologies for perm in t.topic_permissions()
        ],
        "exchanges": [{"name": name, "vhost": vhost, **spec} for name, spec in sorted(exchanges.items())],
        "queues": [{"name": name, "vhost": vhost, **spec} for name, spec in sorted(queues.items())],
        "bindings": [
            {
                "source": exchange,
                "vhost": vhost,
                "destination": queue,
                "destination_type": "queue",
                "routing_key": key,
                "arguments": {},
            }
            for exchange, queue, key in sorted(bindings)
        ],
        # The dead-letter queues' TTL and length limit (shared.bus.topology.DEAD_LETTER_POLICY).
        "policies": [{"vhost": vhost, **DEAD_LETTER_POLICY}],
    }


def rabbit_password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)), 4-byte salt."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()
