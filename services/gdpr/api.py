"""HTTP API of the gdpr service: the compliance portal's contract (API.md "gdpr").

Roles: ``compliance_officer`` opens, approves, rejects, extends and retries requests and
downloads export packages; ``vendor_admin`` may read requests; the inventory is also open to
``auditor``, and one customer's records of processing to its ``privacy_officer`` too.  A customer tenant's ``privacy_officer`` (the controller, issue 15) opens, approves,
confirms and rejects its own tenant's requests, reads them and downloads their exports.  Officers
whose token tenant is not a vendor tenant (setting VENDOR_TENANTS) see only their own tenant's
requests; anything else is 404.  Who may decide what is services/gdpr/controller.py.
"""

from __future__ import annotations

from flask import Response, current_app, jsonify, request

from shared.errors import NotFound
from shared.http import ApiBlueprint, authenticate, runtime
from shared.inputs import EMAIL, PERSONNUMMER, PHONE, multiline

from . import certificate, tenants
from .domain import STATUSES, TYPES, next_steps

bp = ApiBlueprint("gdpr", __name__)

OFFICER = ("compliance_officer",)
DECIDERS = ("compliance_officer", "privacy_officer")  # open, approve, reject, download: controller.py decides
CONFIRMERS = ("privacy_officer",)
READERS = ("compliance_officer", "vendor_admin", "privacy_officer")
INVENTORY_READERS = ("compliance_officer", "vendor_admin", "auditor")
RECORDS_READERS = (*INVENTORY_READERS, "privacy_officer")  # a customer's officer: its own tenant only

_TEXT = multiline({"type": "string", "minLength": 1, "maxLength": 2000})
_IDENT = {"type": "string", "minLength": 1, "maxLength": 254}
CREATE = {
    "type": "object",
    "required": ["type", "tenant", "subject"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": list(TYPES)},
        "tenant": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,99}$"},
        "subject": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": False,
            "properties": {
                "email": EMAIL,
                "phone": PHONE,
                "personnummer": PERSONNUMMER,
                "username": {**_IDENT, "maxLength": 100},
                # Care context (issue 15): name and birth date together, optionally narrowed by unit or register.
                "name": {**_IDENT, "maxLength": 200},
                "birth_date": {
                    "type": "string",
                    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
                    "description": "YYYY-MM-DD",
                },
                "unit": {**_IDENT, "maxLength": 200},
                "register": {**_IDENT, "maxLength": 200},
            },
            # A name and a birth date go together; a unit or register narrows a name.
            "dependentRequired": {
                "name": ["birth_date"],
                "birth_date": ["name"],
                "unit": ["name"],
                "register": ["name"],
            },
        },
        "reason": _TEXT,
        "instruction": {
            "type": "object",
            "description": "the customer's instruction, when a vendor officer opens a request on its processor data",
            "required": ["given_by", "given_at", "reference"],
            "additionalProperties": False,
            "properties": {
                "given_by": {"type": "string", "minLength": 1, "maxLength": 200},
                "given_at": {"type": "string", "format": "date", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
                "reference": {"type": "string", "minLength": 1, "maxLength": 100},
            },
        },
    },
}
APPROVE = {
    "type": "object",
    "required": ["preview_hash", "confirmed"],
    "additionalProperties": False,
    "properties": {
        # The hash of the preview the approver saw (the request document's preview.hash).
        "preview_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        # The ids of the preview's candidates the approver confirmed are the person; nothing else is acted on.
        "confirmed": {
            "type": "array",
            "maxItems": 1000,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": "^[0-9a-f]{1,64}$"},
        },
    },
}
# GDPR art. 12(4): the person must be told why, so a rejection without a reason is a 422 (issue 17).
REJECT = {"type": "object", "required": ["reason"], "additionalProperties": False, "properties": {"reason": _TEXT}}
EXTEND = {
    "type": "object",
    "required": ["months", "reason"],
    "additionalProperties": False,
    "properties": {"months": {"type": "integer", "minimum": 1, "maximum": 2}, "reason": _TEXT},
}
LIST_QUERY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "status": {"enum": list(STATUSES)},
        "type": {"enum": list(TYPES)},
        "tenant": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,99}$"},
        "overdue": {"enum": ["true", "false"]},
        "limit": {"type": "string", "pattern": r"^(?:[1-9]\d{0,2}|1000)$"},
        "offset": {"type": "string", "pattern": r"^\d{1,9}$"},
    },
}
INVENTORY_QUERY = {"type": "object", "additionalProperties": False, "properties": {"format": {"enum": ["json", "csv"]}}}
_SUMMARY = {
    "type": "object",
    "required": ["id", "type", "status", "tenant", "created_at", "due_at", "links"],
    "properties": {
        "id": {"type": "string"},
        "type": {"enum": list(TYPES)},
        "status": {"enum": list(STATUSES)},
        "tenant": {"type": "string"},
        "links": {"type": "object"},
    },
}
_LISTING = {"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": _SUMMARY}}}
_INVENTORY = {"type": "object"}
_RECORDS = {
    "type": "object",
    "required": ["tenant", "agreement", "generated_at", "services"],
    "properties": {
        "tenant": {"type": "string"},
        "agreement": {
            "type": ["object", "null"],
            "properties": {"version": {"type": "string"}, "signed_on": {"type": ["string", "null"]}},
        },
        "generated_at": {"type": "string"},
        "services": {"type": "array", "items": {"type": "object", "required": ["service", "categories"]}},
    },
}


def _parts():
    return current_app.extensions["gdpr"]  # parts.Parts, built once for this app


def _coordinator():
    return _parts().coordinator


def _linked(document: dict) -> dict:
    """A request with links to itself and to what may be done with it next, relative to where
    this app is mounted (``/gdpr`` in the embedded run)."""
    base = f"{request.script_root}/api/v1/requests/{document['id']}"
    document["links"] = {
        "self": base,
        **{step: f"{base}/{step}" for step in next_steps(document["status"], document["type"])},
    }
    if certificate.anchored(document):
        document["links"]["certificate"] = f"{base}/certificate"
    return document


@bp.operation(
    "POST",
    "/api/v1/requests",
    summary="Open a data-subject request (export or erase)",
    body=CREATE,
    roles=DECIDERS,
    responses={202: _SUMMARY, 404: None, 409: None, 422: None},
    tags=("requests",),
)
def create_request(body):
    principal = authenticate()
    with runtime().db.transaction() as s:
        created = _coordinator().open(
            s,
            principal,
            type_=body["type"],
            tenant=body["tenant"],
            subject=body["subject"],
            reason=body.get("reason"),
            instruction=body.get("instruction"),
        )
    created = _linked(created)
    response = jsonify(created)
    response.status_code = 202
    response.headers["Location"] = created["links"]["self"]
    return response


@bp.operation(
    "GET",
    "/api/v1/requests",
    summary="List requests (filters: status, type, tenant, overdue)",
    query=LIST_QUERY,
    roles=READERS,
    tags=("requests",),
    responses={200: _LISTING},
)
def list_requests(query):
    principal = authenticate()
    overdue = {"true": True, "false": False}.get(query.get("overdue", ""))
    with runtime().db.transaction() as s:
        listing = _coordinator().list(
            s,
            principal,
            status=query.get("status"),
            type_=query.get("type"),
            tenant=query.get("tenant"),
            overdue=overdue,
            limit=int(query.get("limit", 100)),
            offset=int(query.get("offset", 0)),
        )
    listing["items"] = [_linked(item) for item in listing["items"]]
    return jsonify(listing)


@bp.operation(
    "GET",
    "/api/v1/requests/{request_id}",
    summary="A request with every service's status and result",
    roles=READERS,
    tags=("requests",),
    responses={200: _SUMMARY},
)
def get_request(request_id):
    with runtime().db.transaction() as s:
        return jsonify(_linked(_coordinator().view(s, authenticate(), request_id)))


@bp.operation(
    "POST",
    "/api/v1/requests/{request_id}/approve",
    summary="Approve a previewed request: the candidates confirmed to be the person, bound to the preview's hash "
    "(an officer other than the requester; on processor data it then awaits the customer's privacy officer "
    "unless that officer approves)",
    body=APPROVE,
    roles=DECIDERS,
    tags=("requests",),
    responses={200: _SUMMARY, 403: None, 404: None, 409: None},
)
def approve_request(request_id, body):
    with runtime().db.transaction() as s:
        return jsonify(
            _linked(
                _coordinator().approve(
                    s, authenticate(), request_id, preview_hash=body["preview_hash"], confirmed=body["confirmed"]
                )
            )
        )


@bp.operation(
    "POST",
    "/api/v1/requests/{request_id}/preview",
    summary="Preview a request awaiting approval again (after its data changed); the old preview's hash goes stale",
    roles=DECIDERS,
    tags=("requests",),
    responses={200: _SUMMARY},
)
def preview_request(request_id):
    with runtime().db.transaction() as s:
        return jsonify(_linked(_coordinator().preview_again(s, authenticate(), request_id)))


@bp.operation(
    "POST",
    "/api/v1/requests/{request_id}/confirm",
    summary="Confirm the instruction a vendor officer recorded (the customer's privacy officer); the request runs",
    roles=CONFIRMERS,
    tags=("requests",),
    responses={200: _SUMMARY, 403: None, 404: None, 409: None},
)
def confirm_request(request_id):
    with runtime().db.transaction() as s:
        return jsonify(_linked(_coordinator().confirm(s, authenticate(), request_id)))


@bp.operation(
    "POST",
    "/api/v1/requests/{request_id}/reject",
    summary="Reject a request awaiting approval, with the reason the person is told",
    body=REJECT,
    roles=DECIDERS,
    tags=("requests",),
    responses={200: _SUMMARY},
)
def reject_request(request_id, body):
    with runtime().db.transaction() as s:
        return jsonify(_linked(_coordinator().reject(s, authenticate(), request_id, body["reason"])))


@bp.operation(
    "POST",
    "/api/v1/requests/{request_id}/retry",
    summary="Re-send to the services that failed or did not answer",
    roles=OFFICER,
    tags=("requests",),
    responses={200: _SUMMARY},
)
def retry_request(request_id):
    with runtime().db.transaction() as s:
        return jsonify(_linked(_coordinator().retry(s, authenticate(), request_id)))


@bp.operation(
    "POST",
    "/api/v1/requests/{request_id}/extend",
    summary="Extend the deadline by one or two months, with a reason (GDPR art. 12(3))",
    body=EXTEND,
    roles=OFFICER,
    tags=("requests",),
    responses={200: _SUMMARY},
)
def extend_request(request_id, body):
    with runtime().db.transaction() as s:
        return jsonify(_linked(_coordinator().extend(s, authenticate(), request_id, body["months"], body["reason"])))


@bp.operation(
    "GET",
    "/api/v1/requests/{request_id}/export",
    summary="Download the export package (ZIP)",
    roles=DECIDERS,
    responses={
        200: {
            "description": "the ZIP",
            "content": {"application/zip": {"schema": {"type": "string", "contentMediaType": "application/zip"}}},
        }
    },
    tags=("requests",),
    content_type="application/zip",
)
def download_export(request_id):
    with runtime().db.transaction() as s:
        data, filename = _coordinator().export_package(s, authenticate(), request_id)
    return Response(
        data, mimetype="application/zip", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


@bp.operation(
    "GET",
    "/api/v1/inventory",
    summary="The data inventory (record of processing activities), JSON or ?format=csv",
    query=INVENTORY_QUERY,
    roles=INVENTORY_READERS,
    tags=("inventory",),
    responses={
        200: {
            "description": "the inventory as JSON, or with format=csv as CSV",
            "content": {"application/json": {"schema": _INVENTORY}, "text/csv": {"schema": {"type": "string"}}},
        }
    },
)
def get_inventory(query):
    inventory = _parts().inventory
    with runtime().db.transaction() as s:
        document = inventory.document(s)
    if query.get("format") == "csv":
        return Response(
            inventory.as_csv(document),
            mimetype="text/csv",
            headers={"Content-Disposition": 'attachment; filename="recept-inventory.csv"'},
        )
    return jsonify(document)


@bp.operation(
    "GET",
    "/api/v1/tenants/{slug}/records",
    summary="One customer's records of processing (GDPR art. 30(2)): the inventory with that tenant's live counts, "
    "where each kind is stored, and its data processing agreement; JSON or ?format=csv",
    query=INVENTORY_QUERY,
    roles=RECORDS_READERS,
    tags=("inventory",),
    responses={
        200: {
            "description": "the records as JSON, or with format=csv as CSV (the inventory's columns, the tenant's counts)",
            "content": {"application/json": {"schema": _RECORDS}, "text/csv": {"schema": {"type": "string"}}},
        },
        404: None,
    },
)
def get_records(slug, query):
    principal = authenticate()
    scope = _coordinator().scope(principal)
    with runtime().db.transaction() as s:
        row = tenants.find(s, slug)
        # A customer's officer sees its own tenant only; another one does not exist for it.
        if row is None or (scope is not None and scope != slug):
            raise NotFound("no such tenant")
        inventory = _parts().inventory
        document = inventory.records(s, slug, tenants.agreement_of(row))
    if query.get("format") == "csv":
        return Response(
            inventory.as_csv(document),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="recept-records-{slug}.csv"'},
        )
    return jsonify(document)
