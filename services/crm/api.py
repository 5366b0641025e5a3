"""HTTP API of the crm service: parse and validate, call the domain, shape the output.

Vendor staff only (roles support and vendor_admin).  Searches by e-mail, phone or name
are POSTs so no personal value ever sits in a URL.  Uploads (.eml, CSV) are raw bodies or
multipart ``file`` fields with their own size limits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from flask import Response, current_app, jsonify, request

from shared.errors import Invalid, NotFound, PayloadTooLarge, UnsupportedMediaType
from shared.http import ApiBlueprint, authenticate
from shared.inputs import EMAIL, PHONE, multiline, nullable

from . import mail, notices
from .calls import import_calls, list_calls, parse_time_filter, search_calls
from .domain import CASE_STATUSES, CHANNELS, Actor, Crm

bp = ApiBlueprint("crm", __name__)

ROLES = ("support", "vendor_admin")
TAGS_COMPANY, TAGS_PERSON, TAGS_CASE = ("companies",), ("persons",), ("cases",)
TAGS_CALL, TAGS_EMAIL, TAGS_NOTICE = ("call logs",), ("e-mails",), ("notices",)

UUID = {"type": "string", "format": "uuid", "minLength": 36, "maxLength": 36}
TEXT = lambda n: {"type": "string", "minLength": 1, "maxLength": n}  # noqa: E731 - schema shorthand
NULLABLE = lambda n: {"type": ["string", "null"], "maxLength": n}  # noqa: E731
# The Subject of every notice e-mail: one line, not blank, no control character (C0, DEL, C1),
# line or paragraph separator, or bidirectional control (notices._one_line, shared.inputs).
_NOT_IN_TITLE = "\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069"
NOTICE_TITLE = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "pattern": f"^[^{_NOT_IN_TITLE}]*[^\\s{_NOT_IN_TITLE}][^{_NOT_IN_TITLE}]*$",
}
# An RFC 3339 date and time with its offset (format checked by rfc3339-validator, a dependency).
TIME_FILTER = {"type": "string", "format": "date-time", "maxLength": 40}
# 1-500, in the schema so the document says what page() accepts.
PAGE = {
    "limit": {"type": "string", "pattern": "^([1-9][0-9]?|[1-4][0-9][0-9]|500)$"},
    "offset": {"type": "string", "pattern": "^[0-9]{1,7}$"},
}


def closed(properties: dict, required: tuple[str, ...] = (), min_properties: int = 0) -> dict:
    schema = {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}
    if min_properties:
        schema["minProperties"] = min_properties
    return schema


COMPANY_FIELDS = {"name": TEXT(200), "org_number": NULLABLE(20), "tenant": NULLABLE(100)}
PERSON_FIELDS = {
    "name": TEXT(200),
    "email": nullable(EMAIL),
    "phone": nullable(PHONE),
    "title": NULLABLE(200),
    "notice_recipient": {"type": "boolean"},
}
CASE_FIELDS = {
    "caller_name": NULLABLE(200),
    "phone": nullable(PHONE),
    "email": nullable(EMAIL),
    "subject": TEXT(300),
    "description": multiline(NULLABLE(20000)),
    "status": {"enum": list(CASE_STATUSES)},
    "channel": {"enum": list(CHANNELS)},
    "assignee": NULLABLE(100),
    "person_id": {"anyOf": [UUID, {"type": "null"}]},
}
STAMP = {"type": ["string", "null"]}
COMPANY_OUT = {
    "type": "object",
    "required": ["id", "name", "org_number", "tenant", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "org_number": {"type": ["string", "null"]},
        "tenant": {"type": ["string", "null"]},
        "created_at": STAMP,
        "updated_at": STAMP,
    },
}
PERSON_OUT = {
    "type": "object",
    "required": ["id", "company_id", "notice_recipient", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "company_id": {"type": "string"},
        "notice_recipient": {"type": "boolean"},
        "erased_fields": {"type": "array", "items": {"type": "string"}},
    },
}
CASE_OUT = {
    "type": "object",
    "required": ["id", "company_id", "person_id", "channel", "status", "created_at", "redacted"],
    "properties": {
        "id": {"type": "string"},
        "company_id": {"type": "string"},
        "person_id": {"type": ["string", "null"]},
        "status": {"enum": list(CASE_STATUSES)},
        "channel": {"enum": list(CHANNELS)},
        "redacted": {"type": "boolean"},
    },
}
NOTICE_OUT = {
    "type": "object",
    "required": ["id", "title", "body", "company_ids", "created_at", "deliveries"],
    "properties": {
        "id": {"type": "string"},
        "company_ids": {"type": "array", "items": {"type": "string"}},
        "deliveries": {"type": "array", "items": {"type": "object"}},
    },
}
EMAIL_OUT = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}
STORED_EMAIL = {
    "type": "object",
    "required": ["id", "duplicate"],
    "properties": {"id": {"type": "string"}, "duplicate": {"type": "boolean"}},
}
IMPORT_OUT = {"type": "object"}
ITEMS = {
    "type": "object",
    "required": ["items"],
    "properties": {"items": {"type": "array", "items": {"type": "object"}}},
}
BYTES = {"type": "string", "description": "the stored bytes"}


def crm() -> Crm:
    return current_app.extensions["crm"]


def actor() -> Actor:
    """The caller; with VENDOR_TENANT set, another tenant's token finds nothing here (404)."""
    principal = authenticate()
    vendor = crm().config["VENDOR_TENANT"]
    if vendor:
        principal.require_tenant(vendor)
    return Actor.of(principal)


def call(operation: Callable[..., Any], *args: Any) -> Any:
    """Run one domain operation for the calling staff member in one transaction (all or nothing)."""
    who = actor()
    with crm().db.transaction() as s:
        return operation(s, who, *args)


def page(query: dict) -> tuple[int, int]:
    # PAGE's patterns have bounded both (limit 1-500) before a view runs.
    return int(query.get("limit", 50)), int(query.get("offset", 0))


def created(body: dict, location: str) -> Response:
    response = jsonify(body)
    response.status_code = 201
    response.headers["Location"] = location
    return response


def upload_body(raw_types: tuple[str, ...], what: str) -> dict:
    """The request-body ``content`` of an upload (``ApiBlueprint.operation(upload=...)``): what
    ``upload`` below takes, a raw body of ``raw_types`` or a form's ``file`` field, not empty."""
    raw = {"type": "string", "minLength": 1, "description": f"the {what}"}
    form = {
        "type": "object",
        "properties": {"file": {"type": "string", "format": "binary", "minLength": 1}},
        "required": ["file"],
    }
    return {**{t: {"schema": raw} for t in raw_types}, "multipart/form-data": {"schema": form}}


CALL_LOG_TYPES = ("text/csv", "text/plain", "application/csv")
EMAIL_TYPES = ("message/rfc822", "application/octet-stream")


def upload(limit: int, raw_types: tuple[str, ...], what: str) -> bytes:
    """The uploaded bytes: a raw body of one of ``raw_types``, or the ``file`` field of a multipart form."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the {what} is larger than {limit} bytes")
    # Multipart framing adds a little; the file itself is checked against ``limit`` below.
    request.max_content_length = limit + 65536
    if request.mimetype in raw_types:
        data = request.get_data(cache=False)
    elif request.mimetype == "multipart/form-data":
        file = request.files.get("file")
        if file is None:
            raise Invalid(
                f"send the {what} in a form field named 'file'", errors=[{"field": "file", "message": "is required"}]
            )
        data = file.read(limit + 1)
    else:
        raise UnsupportedMediaType(f"send the {what} as {' or '.join(raw_types)} or multipart/form-data")
    if len(data) > limit:
        raise PayloadTooLarge(f"the {what} is larger than {limit} bytes")
    if not data:
        raise Invalid(f"the {what} is empty", errors=[{"field": "file", "message": "is empty"}])
    return data


# --- companies ----------------------------------------------------------------------------------


@bp.operation(
    "POST",
    "/api/v1/companies",
    summary="Add a customer company",
    roles=ROLES,
    tags=TAGS_COMPANY,
    body=closed(COMPANY_FIELDS, ("name",)),
    responses={201: COMPANY_OUT},
)
def create_company(body):
    company = call(crm().create_company, body["name"], body.get("org_number"), body.get("tenant"))
    return created(company, f"/api/v1/companies/{company['id']}")


@bp.operation(
    "GET",
    "/api/v1/companies",
    summary="List companies",
    roles=ROLES,
    tags=TAGS_COMPANY,
    query=closed({"tenant": TEXT(100), **PAGE}),
    responses={200: ITEMS},
)
def list_companies(query):
    actor()
    limit, offset = page(query)
    with crm().db.transaction() as s:
        return jsonify(items=crm().list_companies(s, query.get("tenant"), limit, offset))


@bp.operation(
    "GET",
    "/api/v1/companies/{company_id}",
    summary="A company",
    roles=ROLES,
    tags=TAGS_COMPANY,
    responses={200: COMPANY_OUT},
)
def get_company(company_id):
    actor()
    with crm().db.transaction() as s:
        return jsonify(crm().company_view(crm().company(s, company_id)))


@bp.operation(
    "PATCH",
    "/api/v1/companies/{company_id}",
    summary="Change a company",
    roles=ROLES,
    tags=TAGS_COMPANY,
    body=closed(COMPANY_FIELDS, (), 1),
    responses={200: COMPANY_OUT},
)
def update_company(company_id, body):
    return jsonify(call(crm().update_company, company_id, body))


# --- persons (person tab) ---------------------------------------------------------------------------


@bp.operation(
    "POST",
    "/api/v1/companies/{company_id}/persons",
    summary="Add a person to a company's person tab",
    roles=ROLES,
    tags=TAGS_PERSON,
    body={
        **closed(PERSON_FIELDS, ("name",)),
        # An appointed notice recipient is reached by e-mail (R4).
        "if": {"properties": {"notice_recipient": {"const": True}}, "required": ["notice_recipient"]},
        "then": {"properties": {"email": EMAIL}, "required": ["email"]},
    },
    responses={201: PERSON_OUT},
)
def add_person(company_id, body):
    person = call(crm().add_person, company_id, body)
    return created(person, f"/api/v1/persons/{person['id']}")


@bp.operation(
    "GET",
    "/api/v1/companies/{company_id}/persons",
    summary="A company's person tab (each read is an event)",
    roles=ROLES,
    tags=TAGS_PERSON,
    responses={200: ITEMS},
)
def list_persons(company_id):
    return jsonify(items=call(crm().list_persons, company_id))


@bp.operation(
    "GET",
    "/api/v1/persons/{person_id}",
    summary="A person (the read is an event)",
    roles=ROLES,
    tags=TAGS_PERSON,
    responses={200: PERSON_OUT},
)
def get_person(person_id):
    return jsonify(call(crm().get_person, person_id))


@bp.operation(
    "PATCH",
    "/api/v1/persons/{person_id}",
    summary="Change a person",
    roles=ROLES,
    tags=TAGS_PERSON,
    body=closed(PERSON_FIELDS, (), 1),
    responses={200: PERSON_OUT},
)
def update_person(person_id, body):
    return jsonify(call(crm().update_person, person_id, body))


@bp.operation(
    "DELETE",
    "/api/v1/persons/{person_id}",
    summary="Remove a person from the person tab (R15)",
    roles=ROLES,
    tags=TAGS_PERSON,
    responses={204: None},
)
def remove_person(person_id):
    call(crm().remove_person, person_id)
    return Response(status=204)


@bp.operation(
    "POST",
    "/api/v1/persons/search",
    summary="Find persons by e-mail, phone or name (blind indexes)",
    roles=ROLES,
    tags=TAGS_PERSON,
    responses={200: ITEMS},
    body={
        **closed({"email": EMAIL, "phone": PHONE, "name": TEXT(200), "company_id": UUID}),
        "anyOf": [{"required": ["email"]}, {"required": ["phone"]}, {"required": ["name"]}],
    },
)
def search_persons(body):
    return jsonify(items=call(crm().search_persons, body))


# --- cases ----------------------------------------------------------------------------------------


@bp.operation(
    "POST",
    "/api/v1/cases",
    summary="Register a case",
    roles=ROLES,
    tags=TAGS_CASE,
    body=closed({"company_id": UUID, **CASE_FIELDS}, ("company_id", "subject")),
    responses={201: CASE_OUT},
)
def open_case(body):
    case = call(crm().open_case, body)
    return created(case, f"/api/v1/cases/{case['id']}")


@bp.operation(
    "GET",
    "/api/v1/cases",
    summary="List cases (each read is an event)",
    roles=ROLES,
    tags=TAGS_CASE,
    query=closed(
        {"company_id": UUID, "person_id": UUID, "status": {"enum": list(CASE_STATUSES)}, "assignee": TEXT(100), **PAGE}
    ),
    responses={200: ITEMS},
)
def list_cases(query):
    who = actor()
    limit, offset = page(query)
    with crm().db.transaction() as s:
        return jsonify(
            items=crm().list_cases(
                s,
                who,
                company_id=query.get("company_id"),
                person_id=query.get("person_id"),
                status=query.get("status"),
                assignee=query.get("assignee"),
                limit=limit,
                offset=offset,
            )
        )


@bp.operation(
    "GET",
    "/api/v1/cases/{case_id}",
    summary="A case (the read is an event)",
    roles=ROLES,
    tags=TAGS_CASE,
    responses={200: CASE_OUT},
)
def get_case(case_id):
    return jsonify(call(crm().get_case, case_id))


@bp.operation(
    "PATCH",
    "/api/v1/cases/{case_id}",
    summary="Change a case",
    roles=ROLES,
    tags=TAGS_CASE,
    body=closed(CASE_FIELDS, (), 1),
    responses={200: CASE_OUT},
)
def update_case(case_id, body):
    return jsonify(call(crm().update_case, case_id, body))


@bp.operation(
    "POST",
    "/api/v1/cases/search",
    summary="Find cases by caller e-mail and/or phone",
    roles=ROLES,
    tags=TAGS_CASE,
    body=closed({"email": EMAIL, "phone": PHONE}, (), 1),
    responses={200: ITEMS},
)
def search_cases(body):
    return jsonify(items=call(crm().search_cases, body))


# --- call logs --------------------------------------------------------------------------------------


@bp.operation(
    "POST",
    "/api/v1/calls/import",
    summary="Import the phone operator's call log (CSV)",
    roles=ROLES,
    tags=TAGS_CALL,
    responses={200: IMPORT_OUT},
    upload=upload_body(CALL_LOG_TYPES, "call log"),
)
def import_call_log():
    who = actor()
    data = upload(crm().config["MAX_CALL_LOG_BYTES"], CALL_LOG_TYPES, "call log")
    with crm().db.transaction() as s:
        return jsonify(import_calls(crm(), s, who, data, "http"))


@bp.operation(
    "GET",
    "/api/v1/calls",
    summary="List call-log rows (each read is an event)",
    roles=ROLES,
    tags=TAGS_CALL,
    responses={200: ITEMS},
    query=closed({"person_id": UUID, "company_id": UUID, "since": TIME_FILTER, "until": TIME_FILTER, **PAGE}),
)
def list_call_log(query):
    who = actor()
    limit, offset = page(query)
    since, until = parse_time_filter(query.get("since"), "since"), parse_time_filter(query.get("until"), "until")
    with crm().db.transaction() as s:
        return jsonify(
            items=list_calls(
                crm(),
                s,
                who,
                person_id=query.get("person_id"),
                company_id=query.get("company_id"),
                since=since,
                until=until,
                limit=limit,
                offset=offset,
            )
        )


@bp.operation(
    "POST",
    "/api/v1/calls/search",
    summary="Find call-log rows by phone number",
    roles=ROLES,
    tags=TAGS_CALL,
    body=closed({"phone": PHONE}, ("phone",)),
    responses={200: ITEMS},
)
def search_call_log(body):
    who = actor()
    with crm().db.transaction() as s:
        return jsonify(items=search_calls(crm(), s, who, body["phone"]))


# --- e-mails ----------------------------------------------------------------------------------------


@bp.operation(
    "POST",
    "/api/v1/companies/{company_id}/emails",
    summary="Store an e-mail (.eml) as a company document",
    roles=ROLES,
    tags=TAGS_EMAIL,
    responses={
        201: STORED_EMAIL,
        200: {
            "description": "already stored (same message)",
            "content": {"application/json": {"schema": STORED_EMAIL}},
        },
    },
    upload=upload_body(EMAIL_TYPES, "e-mail (.eml)"),
)
def ingest_email(company_id):
    who = actor()
    with crm().db.transaction() as s:
        crm().company(s, company_id)  # 404 before reading a large body for nothing
    data = upload(crm().config["MAX_EMAIL_BYTES"], EMAIL_TYPES, "e-mail")
    with crm().db.transaction() as s:
        email_id, duplicate = mail.ingest(crm(), s, who, company_id, data, "upload")
    body = {"id": email_id, "duplicate": duplicate}
    if duplicate:
        return jsonify(body)
    return created(body, f"/api/v1/emails/{email_id}")


@bp.operation(
    "GET",
    "/api/v1/companies/{company_id}/emails",
    summary="A company's e-mails (each read is an event)",
    roles=ROLES,
    tags=TAGS_EMAIL,
    query=closed(PAGE),
    responses={200: ITEMS},
)
def list_emails(company_id, query):
    who = actor()
    limit, offset = page(query)
    with crm().db.transaction() as s:
        return jsonify(items=mail.list_emails(crm(), s, who, company_id, limit, offset))


@bp.operation(
    "GET",
    "/api/v1/emails/{email_id}",
    summary="An e-mail: headers, text, attachments (a read event)",
    roles=ROLES,
    tags=TAGS_EMAIL,
    responses={200: EMAIL_OUT},
)
def get_email(email_id):
    who = actor()
    with crm().db.transaction() as s:
        return jsonify(mail.get_email(crm(), s, who, email_id))


@bp.operation(
    "GET",
    "/api/v1/emails/{email_id}/raw",
    summary="The stored RFC 5322 document (a read event)",
    roles=ROLES,
    tags=TAGS_EMAIL,
    content_type="message/rfc822",
    responses={200: BYTES},
)
def get_raw_email(email_id):
    who = actor()
    with crm().db.transaction() as s:
        raw = mail.get_raw(crm(), s, who, email_id)
    return Response(
        raw, mimetype="message/rfc822", headers={"Content-Disposition": f'attachment; filename="{email_id}.eml"'}
    )


@bp.operation(
    "GET",
    "/api/v1/emails/{email_id}/attachments/{position}",
    summary="One attachment (a read event)",
    roles=ROLES,
    tags=TAGS_EMAIL,
    responses={
        200: {
            "description": "the attachment, in the media type it was sent with",
            "content": {"*/*": {"schema": BYTES}},
        }
    },
)
def get_attachment(email_id, position):
    who = actor()
    if not position.isdigit():
        raise NotFound("no such attachment")
    with crm().db.transaction() as s:
        filename, content_type, data = mail.get_attachment(crm(), s, who, email_id, int(position))
    disposition = "attachment"
    if filename:
        disposition += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return Response(data, mimetype=content_type, headers={"Content-Disposition": disposition})


@bp.operation(
    "POST",
    "/api/v1/emails/search",
    summary="Find e-mails that name an address",
    roles=ROLES,
    tags=TAGS_EMAIL,
    body=closed({"email": EMAIL}, ("email",)),
    responses={200: ITEMS},
)
def search_email(body):
    who = actor()
    with crm().db.transaction() as s:
        return jsonify(items=mail.search_emails(crm(), s, who, body["email"]))


# --- change notices -------------------------------------------------------------------------------------


@bp.operation(
    "POST",
    "/api/v1/notices",
    summary="Send a system-change notice to chosen companies' recipients (R4)",
    roles=ROLES,
    tags=TAGS_NOTICE,
    responses={201: NOTICE_OUT},
    body=closed(
        {
            "title": NOTICE_TITLE,
            "body": multiline(TEXT(50000)),
            "company_ids": {"type": "array", "items": UUID, "minItems": 1, "maxItems": 1000},
        },
        ("title", "body", "company_ids"),
    ),
)
def send_notice(body):
    who = actor()
    with crm().db.transaction() as s:
        notice_id = notices.create_notice(crm(), s, who, body["title"], body["body"], body["company_ids"])
    if crm().config["NOTICE_SEND_INLINE"]:
        # Committed first: a relay failure leaves pending deliveries for the worker, never a lost notice.
        notices.deliver_pending(crm(), notice_id=notice_id)
    with crm().db.transaction() as s:
        return created(notices.notice_view(s, notice_id), f"/api/v1/notices/{notice_id}")


@bp.operation(
    "GET",
    "/api/v1/notices",
    summary="List notices",
    roles=ROLES,
    tags=TAGS_NOTICE,
    query=closed(PAGE),
    responses={200: ITEMS},
)
def list_notices(query):
    actor()
    limit, offset = page(query)
    with crm().db.transaction() as s:
        return jsonify(items=notices.list_notices(s, limit, offset))


@bp.operation(
    "GET",
    "/api/v1/notices/{notice_id}",
    summary="A notice and who was sent it, when",
    roles=ROLES,
    tags=TAGS_NOTICE,
    responses={200: NOTICE_OUT},
)
def get_notice(notice_id):
    actor()
    with crm().db.transaction() as s:
        return jsonify(notices.notice_view(s, notice_id))
