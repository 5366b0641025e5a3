"""Worker process of the audit service: ingest every domain event, answer the gdpr service, sign
checkpoints and purge old entries.

The audit is the busiest consumer, so the events in its queue are fed to one batch handler: a
whole batch of events becomes one multi-row insert in one transaction, acknowledged (in one
multiple-ack) only after it commits.  It binds ``recept.events`` with ``#``; the gdpr commands
addressed to it (``recept.gdpr``) go to the library's command handler through the inbox (both
subscriptions are listed in services/audit/bootstrap.py).  While the database is down the shared consumer waits for it, so
events stay queued instead of spending their deliveries.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy.orm import Session

from shared.service import run_worker

from .domain import to_entry
from .events import CHECKPOINT_SIGNED

log = logging.getLogger(__name__)


def ingest_handler(ledger):
    """Store a batch of events in their chains, in one transaction.

    An invalid envelope raises ``PoisonEvent``: the consumer then retries the batch message by
    message, the others are stored, and the poison one is dead-lettered at once (a permanent failure).
    """

    def handle(session: Session, messages: list[dict[str, Any]]) -> None:
        # The audit's own checkpoint announcements are not recorded: each would make the chain it
        # signed grow and be signed again, for ever (the checkpoints are on record in the audit already).
        ledger.ingest(
            session, [to_entry(message) for message in messages if message.get("type") != CHECKPOINT_SIGNED.name]
        )

    return handle


def checkpoint_loop(ledger, interval: float):
    """Sign due checkpoints (every CHECKPOINT_EVERY entries or CHECKPOINT_INTERVAL seconds per chain)."""

    def loop(stop: threading.Event) -> None:
        ledger.sync_files()
        tick = min(1.0, interval)
        while not stop.wait(tick):
            try:
                ledger.checkpoint()
            except Exception as exc:  # noqa: BLE001 - the next tick tries again; the log says what broke
                log.warning("audit: checkpointing failed (%s)", type(exc).__name__)

    return loop


def purge_loop(ledger, interval: float):
    """Apply the retention period every PURGE_INTERVAL seconds."""

    def loop(stop: threading.Event) -> None:
        while not stop.wait(interval):
            try:
                for result in ledger.purge():
                    log.info("audit: retention purge of chain %s: %s entries", result["chain"], result["purged"])
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.warning("audit: retention purge failed (%s)", type(exc).__name__)

    return loop


def main() -> None:
    from . import SPEC

    run_worker(SPEC)


if __name__ == "__main__":
    main()
