"""Wiring of the gdpr service: its coordinator, made once per runtime, and what its processes run."""
from __future__ import annotations

from shared.bus import GDPR
from shared.consumer import Subscription
from shared.service import Loop, Runtime, Wiring

from .api import bp
from .domain import Coordinator
from .worker import sweep_loop


def build(runtime: Runtime) -> Wiring:
    coordinator = Coordinator(runtime)
    return Wiring(
        domain=coordinator,
        blueprints=[bp],
        extensions={"gdpr": coordinator},
        # The coordinator is not a participant: it sends the commands and collects the answers.
        subscriptions=[
            Subscription(GDPR, "gdpr.announce.*", coordinator.on_announce),
            Subscription(GDPR, "gdpr.reply.*", coordinator.on_reply),
        ],
        loops=[Loop("sweep", sweep_loop(coordinator, float(runtime.config["SWEEP_INTERVAL"])))],
    )
