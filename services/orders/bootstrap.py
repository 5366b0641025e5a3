"""Wiring of the orders service: its domain objects, made once per runtime, and what its processes run."""

from __future__ import annotations

from shared.privacy import command_subscription
from shared.service import Loop, Runtime, Wiring

from .api import bp
from .domain import build_domain
from .privacy import OrdersParticipant
from .worker import retention_loop


def build(runtime: Runtime) -> Wiring:
    domain = build_domain(runtime)
    return Wiring(
        domain=domain,
        blueprints=[bp],
        extensions={"orders": domain},
        participant=OrdersParticipant(domain.individuals),
        # orders reacts to no other service's events; it answers the gdpr service's commands.
        subscriptions=[command_subscription(runtime)],
        loops=[Loop("retention", retention_loop(domain.ordering, runtime.db, runtime.config["RETENTION_INTERVAL"]))],
    )
