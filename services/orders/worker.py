"""Worker process of the orders service: outbox relay, GDPR commands, and the retention purge
(its subscriptions and loops are listed in services/orders/bootstrap.py)."""

import logging
import threading
from collections.abc import Callable

from shared.service import run_worker

from . import SPEC

log = logging.getLogger(__name__)


def retention_loop(ordering, db, interval: float) -> Callable[[threading.Event], None]:
    """Delete orders past the 7-year bookkeeping period, at start-up and then every ``interval`` seconds."""

    def loop(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with db.transaction() as session:
                    count = ordering.purge_expired(session)
                if count:
                    log.info("retention: deleted %d expired order(s)", count)
            except Exception as exc:  # noqa: BLE001 - try again next round; the database may be restarting
                log.warning("retention purge failed: %s", type(exc).__name__)
            stop.wait(interval)

    return loop


def main() -> None:
    run_worker(SPEC)


if __name__ == "__main__":
    main()
