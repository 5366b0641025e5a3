"""Wiring of the crm service: its domain object, made once per runtime, and what its processes run."""

from __future__ import annotations

from shared.privacy import command_subscription
from shared.service import Loop, Runtime, Wiring

from .api import bp
from .domain import Crm
from .notices import delivery_loop
from .privacy import CrmParticipant


def build(runtime: Runtime) -> Wiring:
    crm = Crm(runtime)
    return Wiring(
        domain=crm,
        blueprints=[bp],
        extensions={"crm": crm},
        participant=CrmParticipant(crm),
        # crm consumes no domain events; it answers the gdpr service's commands.
        subscriptions=[command_subscription(runtime)],
        loops=[Loop("notice-delivery", delivery_loop(crm))],
    )
