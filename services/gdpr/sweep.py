"""The gdpr worker's background loop: re-sends with backoff, silence timeouts, package expiry and
identifier shredding (docs/gdpr.md "Fan-out" 5, "Export package").

The rules are the coordinator's; this module decides only when they run and in which
transactions: one per request, so a request that fails to advance does not hold back the others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from shared.clock import utcnow

from .domain import Coordinator

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, db, coordinator: Coordinator, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.coordinator = coordinator
        self.clock = clock

    def sweep(self, now: datetime | None = None) -> dict[str, int]:
        """One round: re-send overdue commands, give up on silent services, delete expired export
        packages and shred old identifiers.  Returns what it did."""
        now = now or self.clock()
        c = self.coordinator
        done = {"resent": 0, "silent": 0, "packages_deleted": 0, "identifiers_shredded": 0}
        with self.db.transaction() as s:
            due = c.due_for_resend(s, now)
        for request_id in due:
            with self.db.transaction() as s:
                resent, silent = c.time_out(s, request_id, now)
            done["resent"] += resent
            done["silent"] += silent
        with self.db.transaction() as s:
            expired = c.expired_exports(s, now)
        for request_id in expired:
            with self.db.transaction() as s:
                c.expire_export(s, request_id, now)
        done["packages_deleted"] = len(expired)
        with self.db.transaction() as s:
            done["identifiers_shredded"] = c.shred_identifiers(s, now)
        return done

    def run(self, stop: threading.Event, interval: float) -> None:
        """Sweep every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.sweep()
            except Exception as exc:  # noqa: BLE001 - the loop outlives a database or broker outage
                log.warning("sweep failed (%s); trying again", type(exc).__name__)
            stop.wait(interval)
