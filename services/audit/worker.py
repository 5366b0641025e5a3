"""Worker process of the audit service: ingest every domain event, answer the gdpr service, sign
checkpoints and purge old entries.

The audit is the busiest consumer, so the events in its queue are fed to one batch handler: a
whole batch of events becomes one multi-row insert in one transaction, acknowledged (in one
multiple-ack) only after it commits.  It binds ``recept.events`` with ``#``; the gdpr commands
addressed to it (``recept.gdpr``, bound by the shared runtime) go to the library's command
handler through the inbox.  While the database is down the shared consumer waits for it, so
events stay queued instead of spending their deliveries.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy.orm import Session

from shared.bus import EVENTS
from shared.consumer import Subscription
from shared.service import run_worker

from .domain import to_entry
from .ledger import ledger_of

log = logging.getLogger(__name__)


def handle_messages(runtime, session: Session, messages: list[dict[str, Any]]) -> None:
    """Store a batch of events in their chains, in one transaction.

    An invalid envelope raises ``PoisonEvent``: the consumer then retries the batch message by
    message, the others are stored, and the poison one is dead-lettered after the delivery limit.
    """
    ledger_of(runtime).ingest(session, [to_entry(message) for message in messages])


def subscriptions(runtime) -> list[Subscription]:
    """The audit's subscriptions: every domain event.  (The gdpr commands are added by the runtime.)"""
    return [
        Subscription(EVENTS, "#", lambda session, message: handle_messages(runtime, session, [message])),
    ]


def batch_handler(runtime):
    return lambda session, messages: handle_messages(runtime, session, messages)


def checkpoint_loop(runtime):
    """Sign due checkpoints (every CHECKPOINT_EVERY entries or CHECKPOINT_INTERVAL seconds per chain)."""

    def loop(stop: threading.Event) -> None:
        ledger = ledger_of(runtime)
        ledger.sync_files()
        tick = min(1.0, runtime.config["CHECKPOINT_INTERVAL"])
        while not stop.wait(tick):
            try:
                ledger.checkpoint()
            except Exception as exc:  # noqa: BLE001 - the next tick tries again; the log says what broke
                log.warning("audit: checkpointing failed (%s)", type(exc).__name__)

    return loop


def purge_loop(runtime):
    """Apply the retention period every PURGE_INTERVAL seconds."""

    def loop(stop: threading.Event) -> None:
        ledger = ledger_of(runtime)
        while not stop.wait(runtime.config["PURGE_INTERVAL"]):
            try:
                for result in ledger.purge():
                    log.info("audit: retention purge of chain %s: %s entries", result["chain"], result["purged"])
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.warning("audit: retention purge failed (%s)", type(exc).__name__)

    return loop


def background(runtime) -> list:
    return [checkpoint_loop(runtime), purge_loop(runtime)]


def main() -> None:
    from . import SPEC

    run_worker(SPEC)


if __name__ == "__main__":
    main()
