"""HTTP API of the audit service: query the trail (JSON pages or CSV) and verify the chains.

Query parameters carry ids only (user ids, pseudonymous subject references, resource ids),
never personal values, so GET is fine here.  An auditor sees every tenant; a tenant_admin
sees only their own tenant, and another tenant does not exist for them (404).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from flask import Response, current_app, jsonify, request

from shared.clock import parse_rfc3339
from shared.errors import AccessDenied, Invalid, NotFound
from shared.events import SUBJECT_REF
from shared.http import ApiBlueprint, authenticate
from shared.tokens import Principal

from .domain import csv_cell, decode_cursor, encode_cursor
from .ledger import Filters, Ledger

bp = ApiBlueprint("audit", __name__)


def the_ledger() -> Ledger:
    return current_app.extensions["audit"]


ROLES = ("auditor", "tenant_admin")
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
_ID = {"type": "string", "minLength": 1, "maxLength": 100}

EVENTS_QUERY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "actor": _ID,
        "subject": {"type": "string", "maxLength": 200, "pattern": SUBJECT_REF.pattern},
        "resource": _ID,
        "resource_type": {"type": "string", "minLength": 1, "maxLength": 60},
        "type": {"type": "string", "maxLength": 200, "pattern": r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?$"},
        "tenant": _ID,
        "since": {"type": "string", "format": "date-time", "maxLength": 40, "description": "RFC 3339, inclusive"},
        "until": {"type": "string", "format": "date-time", "maxLength": 40, "description": "RFC 3339, exclusive"},
        "cursor": {"type": "string", "maxLength": 300},
        "limit": {
            "type": "string",
            "pattern": r"^[1-9][0-9]{0,3}$",
            "description": f"at most {MAX_LIMIT} with format=json (a page; next_cursor goes on), any with csv",
        },
        "format": {"enum": ["json", "csv"]},
    },
}

VERIFY_QUERY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"chain": {"type": "string", "minLength": 1, "maxLength": 120}},
}

_FINDING = {"type": ["object", "null"]}
EVENTS_PAGE = {
    "type": "object",
    "required": ["items", "next_cursor"],
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "description": "the event envelope, plus 'audit': chain, seq, recorded_at, hash",
            },
        },
        "next_cursor": {"type": ["string", "null"]},
    },
}
VERIFY_RESULT = {
    "type": "object",
    "required": ["status", "chains"],
    "properties": {
        "status": {"enum": ["ok", "broken"]},
        "chains": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "chain": {"type": "string"},
                    "tenant": {"type": ["string", "null"]},
                    "status": {"enum": ["ok", "broken"]},
                    "entries_verified": {"type": "integer"},
                    "first_seq": {"type": "integer"},
                    "head": {"type": ["object", "null"]},
                    "last_checkpoint": {"type": ["object", "null"]},
                    "first_bad": _FINDING,
                    "checkpoint_problems": {"type": "array"},
                },
            },
        },
    },
}

CSV_COLUMNS = (
    "time",
    "event_id",
    "type",
    "version",
    "source",
    "tenant",
    "actor_id",
    "actor_kind",
    "actor_tenant",
    "subject",
    "resource_type",
    "resource_id",
    "correlation_id",
    "data",
    "chain",
    "seq",
    "recorded_at",
    "hash",
)


def _scope(principal: Principal) -> str | None:
    """The tenant the caller is limited to; None for an auditor (every tenant)."""
    if principal.has_any_role(("auditor",)):
        return None
    if principal.tenant is None:
        raise AccessDenied("a tenant_admin token without a tenant cannot read the audit trail")
    return principal.tenant


def _time(query: dict[str, str], name: str):
    if name not in query:
        return None
    try:
        return parse_rfc3339(query[name])
    except ValueError:
        raise Invalid(
            "the query parameters are invalid",
            errors=[{"field": name, "message": "is not an RFC 3339 date-time with an offset"}],
        ) from None


def _filters(query: dict[str, str], principal: Principal) -> Filters:
    scope = _scope(principal)
    tenant = query.get("tenant")
    if scope is not None:
        if tenant is not None and tenant != scope:
            raise NotFound("no such resource")
        tenant = scope
    since, until = _time(query, "since"), _time(query, "until")
    if since is not None and until is not None and until <= since:
        raise Invalid("the query parameters are invalid", errors=[{"field": "until", "message": "must be after since"}])
    return Filters(
        tenant=tenant,
        actor=query.get("actor"),
        subject=query.get("subject"),
        resource=query.get("resource"),
        resource_type=query.get("resource_type"),
        type=query.get("type"),
        since=since,
        until=until,
        after=decode_cursor(query["cursor"]) if "cursor" in query else None,
    )


def _wants_csv(query: dict[str, str]) -> bool:
    if "format" in query:
        return query["format"] == "csv"
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv"


@bp.operation(
    "GET",
    "/api/v1/events",
    summary="Query the audit trail (JSON pages, or CSV with format=csv / Accept: text/csv)",
    query=EVENTS_QUERY,
    roles=ROLES,
    tags=("audit",),
    responses={
        200: {
            "description": "a page of events, or with format=csv / Accept: text/csv the whole result as CSV",
            "content": {"application/json": {"schema": EVENTS_PAGE}, "text/csv": {"schema": {"type": "string"}}},
        },
        404: None,
        422: None,
    },
)
def list_events(query: dict[str, str]):
    filters = _filters(query, authenticate())
    ledger = the_ledger()
    if _wants_csv(query):
        limit = int(query["limit"]) if "limit" in query else None
        if limit is not None and not 1 <= limit:
            raise Invalid(
                "the query parameters are invalid", errors=[{"field": "limit", "message": "must be at least 1"}]
            )
        return Response(
            _csv(ledger, filters, limit),
            mimetype="text/csv",
            headers={"Content-Disposition": 'attachment; filename="audit-events.csv"'},
        )
    limit = int(query.get("limit", DEFAULT_LIMIT))
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(
            "the query parameters are invalid",
            errors=[{"field": "limit", "message": f"must be between 1 and {MAX_LIMIT}"}],
        )
    items, after = ledger.query(filters, limit)
    return jsonify(items=items, next_cursor=encode_cursor(*after) if after else None)


def _csv(ledger, filters: Filters, limit: int | None) -> Iterator[str]:
    """The whole result (or its first ``limit`` rows), streamed page by page."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    for count, item in enumerate(ledger.iterate(filters), start=1):
        writer.writerow([csv_cell(v) for v in _csv_row(item)])
        if count % 500 == 0:
            yield flush()
        if limit is not None and count >= limit:
            break
    yield flush()


def _csv_row(item: dict[str, Any]) -> list[Any]:
    actor = item.get("actor") or {}
    resource = item.get("resource") or {}
    audit = item["audit"]
    return [
        item["time"],
        item["id"],
        item["type"],
        item["version"],
        item["source"],
        item["tenant"],
        actor.get("id"),
        actor.get("kind"),
        actor.get("tenant"),
        item["subject"],
        resource.get("type"),
        resource.get("id"),
        item["correlation_id"],
        item["data"],
        audit["chain"],
        audit["seq"],
        audit["recorded_at"],
        audit["hash"],
    ]


@bp.operation(
    "GET",
    "/api/v1/chains/verify",
    summary="Verify the hash chains against their signed checkpoints",
    query=VERIFY_QUERY,
    roles=ROLES,
    tags=("audit",),
    responses={200: VERIFY_RESULT, 404: None},
)
def verify_chains(query: dict[str, str]):
    scope = _scope(authenticate())
    chain = query.get("chain")
    reports = the_ledger().verify(chain=chain, tenant=scope)
    if chain is not None and not reports:
        raise NotFound("no such chain")
    chains = [r.as_dict() for r in reports]
    return jsonify(status="ok" if all(r.ok for r in reports) else "broken", chains=chains)
