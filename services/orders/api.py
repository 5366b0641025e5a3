"""HTTP API of the orders service: parse and validate, call the domain in one transaction, shape the reply.

The domain hands back rows and records; present.py turns them into the JSON replies.  No
personal value ever travels in a URL: searches by personnummer or name are POST bodies.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from typing import Any

from flask import current_app, jsonify

from shared.http import ApiBlueprint, authenticate, runtime
from shared.inputs import PERSONNUMMER, multiline, nullable

from . import present
from .domain import OrdersDomain
from .rules import ARTICLE_KINDS, MEALS, RIGHTS, UNIT_KINDS

bp = ApiBlueprint("orders", __name__)
V1 = "/api/v1"

UUID = {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"}
NULLABLE_UUID = {"anyOf": [UUID, {"type": "null"}]}
DATE = {"type": "string", "format": "date", "maxLength": 10}
NULLABLE_DATE = {"anyOf": [DATE, {"type": "null"}]}
# Not blank, one line, no control or bidi characters (shared/inputs.py's rule, stated here since the
# field has its own pattern).
LABEL = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "pattern": "^[^\\u0000-\\u001f\\u202a-\\u202e\\u2066-\\u2069]*[^\\s\\u0000-\\u001f\\u202a-\\u202e\\u2066-\\u2069]"
    "[^\\u0000-\\u001f\\u202a-\\u202e\\u2066-\\u2069]*$",
}
DEADLINE = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "time": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
        "days_before": {"type": "integer", "minimum": 0, "maximum": 60},
    },
}
# The IANA zone names this installation knows (zoneinfo): the names the server accepts.
TIMEZONE = {"enum": sorted(zoneinfo.available_timezones())}
PAGE = {
    "limit": {"type": "string", "pattern": "^([1-9][0-9]{0,2}|500)$"},
    "offset": {"type": "string", "pattern": "^[0-9]{1,7}$"},
}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = (), **extra) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": list(required),
        **extra,
    }


def _nullable_text(max_length: int) -> dict[str, Any]:
    return {"type": ["string", "null"], "maxLength": max_length}


# --- answers (every operation documents its success, issue 18) ------------------------------------

ENTITY = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}
SETTINGS_OUT = {
    "type": "object",
    "required": ["personnummer_enabled"],
    "properties": {"personnummer_enabled": {"type": "boolean"}},
}
ITEMS = {
    "type": "object",
    "required": ["items"],
    "properties": {"items": {"type": "array", "items": {"type": "object"}}},
}
PAGE_OUT = {
    "type": "object",
    "required": ["items", "next_offset"],
    "properties": {
        "items": {"type": "array", "items": {"type": "object"}},
        "next_offset": {"type": ["integer", "null"]},
    },
}
INDIVIDUAL_OUT = {
    "type": "object",
    "required": ["id", "register_id"],
    "properties": {
        "id": {"type": "string"},
        "register_id": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "texture_level": {"type": ["integer", "null"]},
    },
}
ORDER_OUT = {
    "type": "object",
    "required": ["id", "register_id", "status"],
    "properties": {
        "id": {"type": "string"},
        "register_id": {"type": "string"},
        "quantity": {"type": "integer"},
        "status": {"enum": ["placed", "cancelled"]},
    },
}


INDIVIDUAL_FIELDS = {
    "name": LABEL,
    "personnummer": nullable(PERSONNUMMER),
    "date_of_birth": NULLABLE_DATE,
    "room": _nullable_text(40),
    "bed": _nullable_text(40),
    "unit_id": NULLABLE_UUID,
    "valid_from": NULLABLE_DATE,
    "valid_to": NULLABLE_DATE,
    "diets": {
        "type": "array",
        "maxItems": 20,
        "uniqueItems": True,
        "items": {"type": "string", "minLength": 1, "maxLength": 40},
    },
    "allergies": {
        "type": "array",
        "maxItems": 30,
        "uniqueItems": True,
        "items": {"type": "string", "minLength": 1, "maxLength": 80},
    },
    "texture_level": {"type": ["integer", "null"], "minimum": 0, "maximum": 7},  # IDDSI 0-7
    "notes": multiline(_nullable_text(2000)),
}
ORDER_CHANGE_FIELDS = {
    "delivery_date": DATE,
    "meal": {"enum": list(MEALS)},
    "article_id": UUID,
    "quantity": {"type": "integer", "minimum": 1, "maximum": 10000},
    "diet_variant": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9_.-]{1,40}$"},
    "delivery_point_id": NULLABLE_UUID,
}
GRANT = _closed(
    {
        "principal": _closed(
            {
                "type": {"enum": ["user", "group"]},
                "id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 200,
                    "pattern": "^[^\\u0000-\\u001f\\u202a-\\u202e\\u2066-\\u2069]+$",
                },
            },
            ("type", "id"),
        ),
        "right": {"enum": list(RIGHTS)},
    },
    ("principal", "right"),
)


def domain() -> OrdersDomain:
    return current_app.extensions["orders"]


def call(operation: Callable, *args) -> Any:
    """Run one domain operation for the caller in one transaction (all or nothing)."""
    principal = authenticate()
    with runtime().db.transaction() as session:
        return operation(session, principal, *args)


def created(body: Any):
    return jsonify(body), 201


# --- tenant settings -----------------------------------------------------------------------------


@bp.operation(
    "GET",
    V1 + "/settings",
    summary="This tenant's orders settings (tenant administrators)",
    tags=("settings",),
    responses={200: SETTINGS_OUT},
)
def get_settings():
    return jsonify(present.settings(call(domain().catalogue.settings)))


@bp.operation(
    "PUT",
    V1 + "/settings",
    summary="Change this tenant's orders settings (tenant administrators)",
    body=_closed({"personnummer_enabled": {"type": "boolean"}}, ("personnummer_enabled",)),
    tags=("settings",),
    responses={200: SETTINGS_OUT},
)
def put_settings(body):
    return jsonify(present.settings(call(domain().catalogue.update_settings, body)))


# --- units ---------------------------------------------------------------------------------------


@bp.operation(
    "POST",
    V1 + "/units",
    summary="Add a care unit, ward or school kitchen (tenant administrators)",
    body=_closed({"name": LABEL, "kind": {"enum": list(UNIT_KINDS)}}, ("name", "kind")),
    tags=("units",),
    responses={201: ENTITY},
)
def create_unit(body):
    return created(present.unit_with_points(call(domain().catalogue.create_unit, body)))


@bp.operation("GET", V1 + "/units", summary="This tenant's units", tags=("units",), responses={200: ITEMS})
def list_units():
    return jsonify(items=present.items(call(domain().catalogue.units), present.unit))


@bp.operation(
    "GET", V1 + "/units/{unit_id}", summary="A unit and its delivery points", tags=("units",), responses={200: ENTITY}
)
def get_unit(unit_id):
    return jsonify(present.unit_with_points(call(domain().catalogue.unit, unit_id)))


@bp.operation(
    "POST",
    V1 + "/units/{unit_id}/delivery-points",
    summary="Add a delivery point (tenant administrators)",
    body=_closed({"name": LABEL}, ("name",)),
    tags=("units",),
    responses={201: ENTITY},
)
def add_delivery_point(unit_id, body):
    return created(present.new_delivery_point(call(domain().catalogue.add_delivery_point, unit_id, body)))


# --- order registers -----------------------------------------------------------------------------


@bp.operation(
    "POST",
    V1 + "/registers",
    summary="Create an order register (tenant administrators)",
    body=_closed({"name": LABEL, "deadline": DEADLINE, "timezone": TIMEZONE}, ("name",)),
    tags=("registers",),
    responses={201: ENTITY},
)
def create_register(body):
    return created(present.register(call(domain().catalogue.create_register, body)))


@bp.operation(
    "GET",
    V1 + "/registers",
    summary="The registers the caller holds a right on",
    tags=("registers",),
    responses={200: ITEMS},
)
def list_registers():
    return jsonify(items=present.items(call(domain().catalogue.registers), present.register))


@bp.operation(
    "GET",
    V1 + "/registers/{register_id}",
    summary="One register, with the caller's rights on it",
    tags=("registers",),
    responses={200: ENTITY},
)
def get_register(register_id):
    return jsonify(present.register(call(domain().catalogue.register, register_id)))


@bp.operation(
    "PATCH",
    V1 + "/registers/{register_id}",
    summary="Rename a register or change its order deadline (right: administer)",
    body=_closed({"name": LABEL, "deadline": DEADLINE, "timezone": TIMEZONE}, minProperties=1),
    tags=("registers",),
    responses={200: ENTITY},
)
def change_register(register_id, body):
    return jsonify(present.register(call(domain().catalogue.change_register, register_id, body)))


# --- grants on registers and assortment lists ----------------------------------------------------


def _register_grant_routes() -> None:
    # Each view's endpoint name is fixed before ApiBlueprint.operation registers it.
    for kind, path, param in (
        ("register", "/registers", "register_id"),
        ("assortment_list", "/assortment-lists", "list_id"),
    ):

        def make(method: str, suffix: str, summary: str, body=None, responses=None):
            def decorate(view):
                view.__name__ = f"{view.__name__}_{kind}"
                return bp.operation(
                    method,
                    f"{V1}{path}/{{{param}}}{suffix}",
                    summary=summary,
                    body=body,
                    responses=responses,
                    tags=("access",),
                )(view)

            return decorate

        what = kind.replace("_", " ")

        @make("GET", "/grants", f"Who holds which right on this {what} (right: administer)", responses={200: ITEMS})
        def list_grants(kind=kind, param=param, **kwargs):
            return jsonify(items=present.items(call(domain().access.grants, kind, kwargs[param]), present.grant))

        @make(
            "POST",
            "/grants",
            f"Grant a user or directory group a right on this {what} (right: administer)",
            body=GRANT,
            responses={
                201: ENTITY,
                200: {"description": "the right was already held", "content": {"application/json": {"schema": ENTITY}}},
            },
        )
        def add_grant(body, kind=kind, param=param, **kwargs):
            grant, new = call(domain().access.grant, kind, kwargs[param], body)
            return jsonify(present.grant(grant)), 201 if new else 200

        @make(
            "DELETE", "/grants/{grant_id}", f"Revoke a right on this {what} (right: administer)", responses={204: None}
        )
        def revoke_grant(grant_id, kind=kind, param=param, **kwargs):
            call(domain().access.revoke, kind, kwargs[param], grant_id)
            return "", 204


_register_grant_routes()


# --- assortment lists ----------------------------------------------------------------------------


@bp.operation(
    "POST",
    V1 + "/assortment-lists",
    summary="Create an assortment list, for one unit or every unit (tenant administrators)",
    body=_closed({"name": LABEL, "unit_id": NULLABLE_UUID}, ("name",)),
    tags=("assortment lists",),
    responses={201: ENTITY},
)
def create_list(body):
    return created(present.list_with_articles(call(domain().catalogue.create_list, body)))


@bp.operation(
    "GET",
    V1 + "/assortment-lists",
    summary="The assortment lists the caller holds a right on",
    tags=("assortment lists",),
    responses={200: ITEMS},
)
def list_lists():
    return jsonify(items=present.items(call(domain().catalogue.lists), present.assortment_list))


@bp.operation(
    "GET",
    V1 + "/assortment-lists/{list_id}",
    summary="An assortment list and its articles (right: view)",
    tags=("assortment lists",),
    responses={200: ENTITY},
)
def get_list(list_id):
    return jsonify(present.list_with_articles(call(domain().catalogue.assortment_list, list_id)))


@bp.operation(
    "POST",
    V1 + "/assortment-lists/{list_id}/articles",
    summary="Add an article (right: administer)",
    body=_closed(
        {
            "code": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,40}$"},
            "name": LABEL,
            "kind": {"enum": list(ARTICLE_KINDS)},
            "active": {"type": "boolean"},
        },
        ("code", "name", "kind"),
    ),
    tags=("assortment lists",),
    responses={201: ENTITY},
)
def add_article(list_id, body):
    return created(present.article(call(domain().catalogue.add_article, list_id, body)))


@bp.operation(
    "PATCH",
    V1 + "/assortment-lists/{list_id}/articles/{article_id}",
    summary="Rename, withdraw or offer again an article (right: administer)",
    body=_closed({"name": LABEL, "active": {"type": "boolean"}}, minProperties=1),
    tags=("assortment lists",),
    responses={200: ENTITY},
)
def change_article(list_id, article_id, body):
    return jsonify(present.article(call(domain().catalogue.change_article, list_id, article_id, body)))


# --- individuals (AIVO "Individ") ----------------------------------------------------------------


@bp.operation(
    "POST",
    V1 + "/registers/{register_id}/individuals",
    summary="Add an individual to a register (right: administer)",
    body=_closed(INDIVIDUAL_FIELDS, ("name",)),
    tags=("individuals",),
    responses={201: INDIVIDUAL_OUT},
)
def create_individual(register_id, body):
    return created(present.individual(call(domain().individuals.create_individual, register_id, body)))


@bp.operation(
    "GET",
    V1 + "/registers/{register_id}/individuals",
    summary="A register's individuals, without health data (right: view)",
    query=_closed({"status": {"enum": ["active", "discharged"]}, "unit_id": UUID, **PAGE}),
    tags=("individuals",),
    responses={200: PAGE_OUT},
)
def list_individuals(register_id, query):
    return jsonify(present.page(call(domain().individuals.individuals_in, register_id, query), present.individual))


@bp.operation(
    "POST",
    V1 + "/individuals/search",
    summary="Find individuals by personnummer or exact name, in the registers the caller may view (right: view)",
    body=_closed(
        {"register_id": UUID, "personnummer": PERSONNUMMER, "name": LABEL},
        oneOf=[{"required": ["personnummer"]}, {"required": ["name"]}],
    ),
    tags=("individuals",),
    responses={200: ITEMS},
)
def search_individuals(body):
    return jsonify(items=present.items(call(domain().individuals.search, body), present.individual))


@bp.operation(
    "GET",
    V1 + "/individuals/{individual_id}",
    summary="An individual with health data; the read is logged (right: view)",
    tags=("individuals",),
    responses={200: INDIVIDUAL_OUT},
)
def get_individual(individual_id):
    return jsonify(present.individual(call(domain().individuals.read_individual, individual_id)))


@bp.operation(
    "PATCH",
    V1 + "/individuals/{individual_id}",
    summary="Change an individual (right: administer)",
    body=_closed(INDIVIDUAL_FIELDS, minProperties=1),
    tags=("individuals",),
    responses={200: INDIVIDUAL_OUT},
)
def change_individual(individual_id, body):
    return jsonify(present.individual(call(domain().individuals.change_individual, individual_id, body)))


@bp.operation(
    "POST",
    V1 + "/individuals/{individual_id}/discharge",
    summary="Discharge an individual, today or on a given date (right: administer)",
    body=_closed({"date": DATE}),
    tags=("individuals",),
    responses={200: INDIVIDUAL_OUT},
)
def discharge_individual(individual_id, body):
    return jsonify(present.individual(call(domain().individuals.discharge, individual_id, body)))


# --- orders --------------------------------------------------------------------------------------


@bp.operation(
    "POST",
    V1 + "/orders",
    summary="Place an order for an individual or a unit (right: order, on the "
    "register and on the article's assortment list)",
    body={
        **_closed(
            {"register_id": UUID, "individual_id": UUID, "unit_id": UUID, **ORDER_CHANGE_FIELDS},
            ("register_id", "delivery_date", "meal", "article_id", "quantity"),
        ),
        # An order for a unit names it; one for an individual may take the individual's unit.
        "if": {"not": {"required": ["individual_id"]}},
        "then": {"required": ["unit_id"]},
    },
    tags=("orders",),
    responses={201: ORDER_OUT},
)
def place_order(body):
    return created(present.order(call(domain().ordering.place_order, body)))


@bp.operation(
    "GET", V1 + "/orders/{order_id}", summary="One order (right: view)", tags=("orders",), responses={200: ORDER_OUT}
)
def get_order(order_id):
    return jsonify(present.order(call(domain().ordering.order, order_id)))


@bp.operation(
    "PATCH",
    V1 + "/orders/{order_id}",
    summary="Change an order before its deadline (right: change)",
    body=_closed(ORDER_CHANGE_FIELDS, minProperties=1),
    tags=("orders",),
    responses={200: ORDER_OUT},
)
def change_order(order_id, body):
    return jsonify(present.order(call(domain().ordering.change_order, order_id, body)))


@bp.operation(
    "POST",
    V1 + "/orders/{order_id}/cancel",
    summary="Cancel an order before its deadline (right: change)",
    tags=("orders",),
    responses={200: ORDER_OUT},
)
def cancel_order(order_id):
    return jsonify(present.order(call(domain().ordering.cancel_order, order_id)))


@bp.operation(
    "GET",
    V1 + "/orders/{order_id}/history",
    summary="Who placed, changed and cancelled the order, and when (right: view)",
    tags=("orders",),
    responses={200: ITEMS},
)
def order_history(order_id):
    return jsonify(items=present.items(call(domain().ordering.history, order_id), present.history_entry))


@bp.operation(
    "GET",
    V1 + "/registers/{register_id}/orders",
    summary="A register's orders (right: view)",
    query=_closed(
        {
            "delivery_date": DATE,
            "from": DATE,
            "to": DATE,
            "status": {"enum": ["placed", "cancelled"]},
            "meal": {"enum": list(MEALS)},
            "unit_id": UUID,
            "individual_id": UUID,
            **PAGE,
        }
    ),
    tags=("orders",),
    responses={200: PAGE_OUT},
)
def list_orders(register_id, query):
    return jsonify(present.page(call(domain().ordering.orders_in, register_id, query), present.order))
