"""Worker process of the gdpr service: announcements and replies from the bus, the timeout/expiry loop,
and the outbox relay that carries its commands and events."""
from __future__ import annotations

import threading

from shared.bus import GDPR
from shared.consumer import Subscription
from shared.service import run_worker


def subscriptions(runtime) -> list[Subscription]:
    """Everything the gdpr service consumes: one visible list."""
    from .domain import Coordinator

    coordinator = Coordinator(runtime)
    return [
        Subscription(GDPR, "gdpr.announce.*", lambda s, m: coordinator.on_announce(s, m)),
        Subscription(GDPR, "gdpr.reply.*", lambda s, m: coordinator.on_reply(s, m)),
    ]


def background(runtime) -> list:
    """Re-sends with backoff, gives up on silent services, expires export packages."""
    from .domain import Coordinator

    coordinator = Coordinator(runtime)
    interval = float(runtime.config["SWEEP_INTERVAL"])

    def sweeper(stop: threading.Event) -> None:
        coordinator.sweep_loop(stop, interval)

    return [sweeper]


def main() -> None:
    from . import SPEC

    run_worker(SPEC)


if __name__ == "__main__":
    main()
