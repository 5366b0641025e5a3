"""Worker process of the auth service: outbox relay, GDPR commands, and the purge of expired login data."""
from __future__ import annotations

import logging
import threading
from typing import Callable

from shared.consumer import Subscription
from shared.service import run_worker

log = logging.getLogger(__name__)

# The auth service reacts to no other service's events; GDPR commands are subscribed by the
# runtime for every participant (shared.privacy.command_subscription).
SUBSCRIPTIONS: list[Subscription] = []


def purge_loop(runtime) -> Callable[[threading.Event], None]:
    """Delete login history, client counters and sessions past their retention, every PURGE_INTERVAL."""
    from . import auth_for
    from .login import Logins

    def loop(stop: threading.Event) -> None:
        logins = Logins(auth_for(runtime))
        while not stop.is_set():
            try:
                purged = logins.purge()
                if any(purged.values()):
                    log.info("purged expired login data: %s", purged)
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.warning("purge failed: %s", type(exc).__name__)
            stop.wait(runtime.config["PURGE_INTERVAL"])

    return loop


def main() -> None:
    from . import SPEC

    run_worker(SPEC)


if __name__ == "__main__":
    main()
