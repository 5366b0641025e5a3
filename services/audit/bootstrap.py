"""Wiring of the audit service: its ledger, made once per runtime, and what its processes run."""

from __future__ import annotations

from shared.bus import EVENTS
from shared.consumer import Subscription
from shared.privacy import command_subscription
from shared.service import Loop, Runtime, Wiring

from .api import bp
from .ledger import Ledger
from .privacy import AuditParticipant
from .worker import checkpoint_loop, ingest_handler, purge_loop


def build(runtime: Runtime) -> Wiring:
    ledger = Ledger(runtime.db, runtime.outbox, runtime.config)
    ingest = ingest_handler(ledger)
    return Wiring(
        domain=ledger,
        blueprints=[bp],
        extensions={"audit": ledger},
        participant=AuditParticipant(ledger, runtime.config["RETENTION_DAYS"]),
        subscriptions=[
            Subscription(EVENTS, "#", lambda session, message: ingest(session, [message])),  # every event
            command_subscription(runtime),  # gdpr commands
        ],
        batch_handler=ingest,
        # A checkpoint key or trusted key that cannot be read stops the worker's start and makes
        # /readyz fail, instead of failing every event later.
        preflight=ledger.load_keys,
        loops=[
            Loop("checkpoints", checkpoint_loop(ledger, runtime.config["CHECKPOINT_INTERVAL"])),
            Loop("retention", purge_loop(ledger, runtime.config["PURGE_INTERVAL"])),
        ],
    )
