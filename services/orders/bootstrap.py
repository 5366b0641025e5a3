"""Wiring of the orders service: its domain objects, made once per runtime, and what its processes run."""
from __future__ import annotations

from shared.privacy import command_subscription
from shared.service import Loop, Runtime, Wiring

from .api import bp
from .domain import Orders
from .privacy import Participant
from .worker import retention_loop


def build(runtime: Runtime) -> Wiring:
    orders = Orders.for_runtime(runtime)
    return Wiring(
        domain=orders,
        blueprints=[bp],
        extensions={"orders": orders},
        participant=Participant(runtime, orders),
        # orders reacts to no other service's events; it answers the gdpr service's commands.
        subscriptions=[command_subscription(runtime)],
        loops=[Loop("retention", retention_loop(orders, runtime.db, runtime.outbox,
                                                runtime.config["RETENTION_INTERVAL"]))],
    )
