"""The audit's scrape-time figures (shared/metrics.py): chains and entries, from the chain heads (no table
scan). Verification results are counted where verification runs (ledger.py)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from shared.metrics import register_probe

from .models import chains


def chains_probe(runtime) -> Iterable[GaugeMetricFamily]:
    with runtime.db.transaction() as s:
        count, stored = s.execute(
            select(func.count(), func.coalesce(func.sum(chains.c.seq - chains.c.anchor_seq), 0))
        ).one()
    family = GaugeMetricFamily(
        "recept_audit_chains", "hash chains (one per tenant, vendor, system)", labels=["service"]
    )
    family.add_metric([runtime.name], count)
    entries = GaugeMetricFamily("recept_audit_entries", "entries held in the chains", labels=["service"])
    entries.add_metric([runtime.name], int(stored))
    return [family, entries]


register_probe("audit", chains_probe)
