"""The data inventory (R3, R5): the record of processing activities, from the services' announcements.

Every participating service announces its declaration and live counts, in all and per tenant
(``shared.gdpr_protocol``);
the coordinator keeps the latest in ``participants``.  This module reads them back as one
document, adds the gdpr service's own declaration (``privacy.py``), and writes the same
document as CSV, one row per field; ``records`` is the same for one customer tenant, with its
own counts and its agreement (art. 30(2)).  No Flask here: the API and the CLI both call it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.clock import as_utc, rfc3339, utcnow

from . import privacy
from .models import participants

CSV_COLUMNS = (
    "service",
    "role_in_requests",
    "last_seen",
    "stale",
    "kind",
    "data_subjects",
    "field",
    "description",
    "personal",
    "special_category",
    "encrypted",
    "blind_indexed",
    "purposes",
    "legal_basis",
    "role",
    "controller",
    "retention",
    "recipients",
    "storage",
    "erasure",
    "count",
)


class DataInventory:
    """The inventory as a document; a service not heard from for ``participant_ttl`` seconds is stale."""

    def __init__(self, participant_ttl: float, clock: Callable[[], datetime] = utcnow) -> None:
        self.participant_ttl = participant_ttl
        self.clock = clock

    def document(self, s: Session, now: datetime | None = None) -> dict[str, Any]:
        now = now or self.clock()
        stale_before = now - timedelta(seconds=self.participant_ttl)
        services = []
        for row in s.execute(select(participants).order_by(participants.c.service)):
            services.append(
                _entry(
                    row.service,
                    row.phase,
                    row.inventory,
                    row.counts,
                    rfc3339(row.last_seen),
                    as_utc(row.last_seen) < stale_before,
                )
            )
        services.append(
            _entry("gdpr", "coordinator", privacy.INVENTORY.as_dict(), privacy.counts(s), rfc3339(now), False)
        )
        return {"generated_at": rfc3339(now), "services": services}

    def records(self, s: Session, tenant: str, agreement: dict | None, now: datetime | None = None) -> dict[str, Any]:
        """One customer's records of processing (GDPR art. 30(2), issue 15): the inventory with that
        tenant's live counts (``count``; null for a service that does not count per tenant),
        where each kind is stored, and the tenant's data processing agreement.  Numbers only."""
        now = now or self.clock()
        stale_before = now - timedelta(seconds=self.participant_ttl)
        services = []
        rows = [
            (r.service, r.phase, r.inventory, r.tenant_counts, rfc3339(r.last_seen), as_utc(r.last_seen) < stale_before)
            for r in s.execute(select(participants).order_by(participants.c.service))
        ]
        rows.append(("gdpr", "coordinator", privacy.INVENTORY.as_dict(), privacy.tenant_counts(s), rfc3339(now), False))
        for service, phase, inventory, per_tenant, last_seen, stale in rows:
            counts = {}
            if per_tenant is not None:  # it counts per tenant: a kind the tenant has none of is 0
                own = per_tenant.get(tenant) or {}
                counts = {c.get("kind"): int(own.get(c.get("kind"), 0)) for c in inventory.get("categories") or []}
            services.append(_entry(service, phase, inventory, counts, last_seen, stale))
        return {"tenant": tenant, "agreement": agreement, "generated_at": rfc3339(now), "services": services}

    @staticmethod
    def as_csv(document: dict[str, Any]) -> str:
        """One row per field of every category: the art. 30 record as a spreadsheet."""
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for service in document["services"]:
            for category in service["categories"]:
                for field in category["fields"]:
                    writer.writerow(
                        [
                            service["service"],
                            service["phase"],
                            service["last_seen"],
                            service["stale"],
                            category["kind"],
                            category.get("data_subjects", ""),
                            field.get("name", ""),
                            field.get("description", ""),
                            field.get("personal", True),
                            field.get("special", False),
                            field.get("encrypted", False),
                            field.get("blind_indexed", False),
                            "; ".join(category.get("purposes") or []),
                            category.get("legal_basis", ""),
                            category.get("role", ""),
                            category.get("controller", ""),
                            category.get("retention", ""),
                            "; ".join(category.get("recipients") or []),
                            category.get("storage", ""),
                            category.get("erasure", ""),
                            category.get("count", ""),
                        ]
                    )
        return out.getvalue()


def _entry(
    service: str, phase: str, inventory: dict, counts: dict, last_seen: str | None, stale: bool
) -> dict[str, Any]:
    categories = []
    for category in inventory.get("categories") or []:
        fields = category.get("fields") or []
        personal = [f for f in fields if f.get("personal", True)]
        categories.append(
            {
                **category,
                "personal_data": [f.get("name") for f in personal],
                "special_categories": [f.get("name") for f in personal if f.get("special")],
                "special_category": any(f.get("special") for f in personal),
                "encrypted": all(f.get("encrypted") for f in personal) if personal else True,
                "count": counts.get(category.get("kind")),
            }
        )
    return {"service": service, "phase": phase, "last_seen": last_seen, "stale": stale, "categories": categories}
