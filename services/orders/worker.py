"""Worker process of the orders service: outbox relay, GDPR commands, and the retention purge."""
import logging
import threading

from shared.consumer import Subscription
from shared.service import run_worker

from . import SPEC

log = logging.getLogger(__name__)

# The orders service reacts to no other service's domain events; the gdpr service's commands
# reach it through the participant subscription the shared runtime adds (shared.privacy).
SUBSCRIPTIONS: list[Subscription] = []


def retention_loop(runtime, stop: threading.Event) -> None:
    """Delete orders past the 7-year bookkeeping period, at start-up and then every RETENTION_INTERVAL."""
    from .domain import Orders, purge_expired_orders

    orders = Orders.for_runtime(runtime)   # for its clock
    while not stop.is_set():
        try:
            with runtime.db.transaction() as session:
                count = purge_expired_orders(session, runtime.outbox, orders.now().date())
            if count:
                log.info("retention: deleted %d expired order(s)", count)
        except Exception as exc:  # noqa: BLE001 - try again next round; the database may be restarting
            log.warning("retention purge failed: %s", type(exc).__name__)
        stop.wait(runtime.config["RETENTION_INTERVAL"])


def main() -> None:
    run_worker(SPEC)


if __name__ == "__main__":
    main()
