"""The gdpr service's scrape-time figures (shared/metrics.py): data-subject requests by status and the
overdue ones (R1, R2: a month to answer, art. 12(3)); alerting on overdue is in deploy/prometheus/."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from shared.clock import utcnow
from shared.metrics import register_probe

from .models import requests


def requests_probe(runtime) -> Iterable[GaugeMetricFamily]:
    from .domain import FINISHED, STATUSES

    now = utcnow()
    with runtime.db.transaction() as s:
        by_status = dict(s.execute(select(requests.c.status, func.count()).group_by(requests.c.status)).all())
        overdue = s.scalar(
            select(func.count())
            .select_from(requests)
            .where(requests.c.due_at < now, requests.c.status.not_in(FINISHED))
        )
    family = GaugeMetricFamily("recept_gdpr_requests", "data-subject requests per status", labels=["service", "status"])
    for status in sorted({*STATUSES, *by_status}):
        family.add_metric([runtime.name, status], by_status.get(status, 0))
    late = GaugeMetricFamily(
        "recept_gdpr_requests_overdue", "open data-subject requests past their due date", labels=["service"]
    )
    late.add_metric([runtime.name], overdue or 0)
    return [family, late]


register_probe("gdpr", requests_probe)
