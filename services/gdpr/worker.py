"""Worker process of the gdpr service: announcements and replies from the bus, the timeout/expiry loop,
and the outbox relay that carries its commands and events (listed in services/gdpr/bootstrap.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from shared.service import run_worker


def sweep_loop(sweeper, interval: float) -> Callable[[threading.Event], None]:
    """Re-sends with backoff, gives up on silent services, expires export packages (sweep.py)."""

    def loop(stop: threading.Event) -> None:
        sweeper.run(stop, interval)

    return loop


def main() -> None:
    from . import SPEC

    run_worker(SPEC)


if __name__ == "__main__":
    main()
