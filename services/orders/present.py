"""Reply shapes of the orders API: what the domain hands back (rows, records, pages), as JSON objects.

Timestamps go out in the one wire format of shared.clock (RFC 3339, UTC, ``Z``), dates as
``YYYY-MM-DD``.  Only api.py uses these; the domain never shapes a reply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from shared.clock import iso_date, rfc3339

from .base import Page
from .catalogue import Held, ListWithArticles, TenantSettings, UnitWithPoints
from .individuals import Individual
from .ordering import HistoryEntry
from .rules import format_deadline_time

Json = dict[str, Any]


def page(found: Page, shape: Callable[[Any], Json]) -> Json:
    return {"items": [shape(item) for item in found.items], "next_offset": found.next_offset}


def items(found: Iterable[Any], shape: Callable[[Any], Json]) -> list[Json]:
    return [shape(item) for item in found]


def settings(found: TenantSettings) -> Json:
    return {"personnummer_enabled": found.personnummer_enabled, "updated_at": rfc3339(found.updated_at)}


def unit(row) -> Json:
    return {"id": row.id, "name": row.name, "kind": row.kind, "created_at": rfc3339(row.created_at)}


def unit_with_points(found: UnitWithPoints) -> Json:
    return {
        **unit(found.unit),
        "delivery_points": [
            {"id": p.id, "name": p.name, "created_at": rfc3339(p.created_at)} for p in found.delivery_points
        ],
    }


def new_delivery_point(row) -> Json:
    return {"id": row.id, "unit_id": row.unit_id, "name": row.name}


def register(found: Held) -> Json:
    row = found.row
    return {
        "id": row.id,
        "name": row.name,
        "deadline": {"time": format_deadline_time(row.deadline_minutes), "days_before": row.deadline_days_before},
        "timezone": row.timezone,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
        "rights": sorted(found.rights),
    }


def _list(row) -> Json:
    return {"id": row.id, "name": row.name, "unit_id": row.unit_id, "created_at": rfc3339(row.created_at)}


def assortment_list(found: Held) -> Json:
    return {**_list(found.row), "rights": sorted(found.rights)}


def list_with_articles(found: ListWithArticles) -> Json:
    return {**_list(found.row), "rights": sorted(found.rights), "articles": [article(a) for a in found.articles]}


def article(row) -> Json:
    return {
        "id": row.id,
        "list_id": row.list_id,
        "code": row.code,
        "name": row.name,
        "kind": row.kind,
        "active": bool(row.active),
    }


def grant(row) -> Json:
    return {
        "id": row.id,
        "resource_type": row.resource_type,
        "resource_id": row.resource_id,
        "principal": {"type": row.principal_type, "id": row.principal_id},
        "right": row.access_right,
        "created_at": rfc3339(row.created_at),
        "created_by": row.created_by,
    }


def individual(found: Individual) -> Json:
    """The plaintext columns and whichever personal values the domain decrypted for this reply."""
    row, values = found.row, found.values
    return {
        "id": row.id,
        "register_id": row.register_id,
        "unit_id": row.unit_id,
        "status": row.status,
        **values,
        "valid_from": iso_date(values.get("valid_from")),
        "valid_to": iso_date(values.get("valid_to")),
    }


def order(row) -> Json:
    return {
        "id": row.id,
        "register_id": row.register_id,
        "unit_id": row.unit_id,
        "individual_id": row.individual_id,
        "delivery_point_id": row.delivery_point_id,
        "article_id": row.article_id,
        "delivery_date": iso_date(row.delivery_date),
        "meal": row.meal,
        "quantity": row.quantity,
        "diet_variant": row.diet_variant,
        "status": row.status,
        "placed_at": rfc3339(row.placed_at),
        "placed_by": row.placed_by,
        "updated_at": rfc3339(row.updated_at),
        "deidentified": bool(row.deidentified),
    }


def history_entry(entry: HistoryEntry) -> Json:
    return {"at": rfc3339(entry.at), "actor": entry.actor, "action": entry.action, "changes": entry.changes}
