"""The gdpr service's replica of the tenants (issue 15, issue 18): which tenants exist and their data processing
agreement, from the auth service's ``auth.tenant.announced`` events on ``recept.events``.

Auth sends one when a tenant is created or its agreement changes, and every tenant again every
``TENANT_ANNOUNCE_INTERVAL`` seconds from its worker (at start-up too), so a gdpr service started after the
tenants were made learns them within one interval.  The events hold no personal value: the slug (envelope
``tenant``), the auth id, the kind and the agreement's version and date, never its signatory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.clock import utcnow

from .models import tenants

log = logging.getLogger(__name__)

ANNOUNCED = "auth.tenant.announced"


class TenantReplica:
    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self.clock = clock

    def on_event(self, s: Session, message: dict[str, Any]) -> None:
        """Upsert the tenant an ``auth.tenant.announced`` event describes; anything else is ignored."""
        if message.get("type") != ANNOUNCED:
            return
        slug, data = message.get("tenant"), message.get("data") or {}
        if not isinstance(slug, str) or not slug or data.get("kind") not in ("vendor", "customer"):
            log.warning("ignoring a tenant announcement without a slug or kind")
            return
        agreement = data.get("agreement") or {}
        signed_on = agreement.get("signed_on")
        values = {
            "tenant_id": str(data.get("tenant_id") or ""),
            "kind": data["kind"],
            "agreement_version": agreement.get("version"),
            "agreement_signed_on": date.fromisoformat(signed_on) if signed_on else None,
            "updated_at": self.clock(),
        }
        found = s.execute(select(tenants.c.slug).where(tenants.c.slug == slug).with_for_update()).first()
        if found is None:
            s.execute(tenants.insert().values(slug=slug, **values))
        else:
            s.execute(update(tenants).where(tenants.c.slug == slug).values(**values))


def find(s: Session, slug: str):
    """The tenant's row (slug, kind, agreement_version, agreement_signed_on), or None if auth never announced it."""
    return s.execute(select(tenants).where(tenants.c.slug == slug)).first()


def agreement_of(row) -> dict[str, str | None] | None:
    if row is None or row.agreement_version is None:
        return None
    signed_on = row.agreement_signed_on
    return {"version": row.agreement_version, "signed_on": signed_on.isoformat() if signed_on else None}
