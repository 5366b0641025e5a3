"""Worker process of the auth service: outbox relay, GDPR commands, and the purge of expired login data."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from shared.service import run_worker

log = logging.getLogger(__name__)


def purge_loop(logins, interval: float) -> Callable[[threading.Event], None]:
    """Delete login history, client counters and sessions past their retention, every ``interval`` seconds."""

    def loop(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                purged = logins.purge()
                if any(purged.values()):
                    log.info("purged expired login data: %s", purged)
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.warning("purge failed: %s", type(exc).__name__)
            stop.wait(interval)

    return loop


def tenant_announce_loop(auth, interval: float) -> Callable[[threading.Event], None]:
    """Announce every tenant at start-up and every ``interval`` seconds (auth.tenant.announced)."""

    def loop(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with auth.db.transaction() as session:
                    auth.announce_tenants(session)
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.warning("tenant announcement failed: %s", type(exc).__name__)
            stop.wait(interval)

    return loop


def main() -> None:
    from . import SPEC

    run_worker(SPEC)


if __name__ == "__main__":
    main()
