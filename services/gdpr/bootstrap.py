"""Wiring of the gdpr service: its coordinator, inventory and sweeper, made once per runtime, and what its
processes run."""

from __future__ import annotations

from shared.bus import EVENTS, GDPR
from shared.clock import utcnow
from shared.consumer import Subscription
from shared.gdpr_protocol import ANNOUNCE_PATTERN, REPLY_PATTERN
from shared.identifiers import IdentifierHasher
from shared.service import Loop, Runtime, Wiring

from .api import bp
from .domain import Coordinator, Policy
from .inventory import DataInventory
from .parts import Parts
from .sweep import Sweeper
from .tenants import ANNOUNCED, TenantReplica
from .worker import sweep_loop


def build(runtime: Runtime) -> Wiring:
    config = runtime.config
    clock = config.get("clock") or utcnow
    policy = Policy.from_config(config)
    coordinator = Coordinator(
        vault=runtime.vault,
        outbox=runtime.outbox,
        policy=policy,
        hash_identifier=IdentifierHasher(runtime.keyring.index_key),
        clock=clock,
    )
    parts = Parts(
        coordinator=coordinator,
        inventory=DataInventory(policy.participant_ttl, clock=clock),
        sweeper=Sweeper(runtime.db, coordinator, clock=clock),
    )
    return Wiring(
        domain=parts,
        blueprints=[bp],
        extensions={"gdpr": parts},
        # The coordinator is not a participant: it sends the commands and collects the answers.
        subscriptions=[
            Subscription(GDPR, ANNOUNCE_PATTERN, coordinator.on_announce),
            Subscription(GDPR, REPLY_PATTERN, coordinator.on_reply),
            # The tenants and their agreements, as auth announces them (services/gdpr/tenants.py).
            Subscription(EVENTS, ANNOUNCED, TenantReplica(clock).on_event),
        ],
        loops=[Loop("sweep", sweep_loop(parts.sweeper, float(config["SWEEP_INTERVAL"])))],
    )
