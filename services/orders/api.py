"""HTTP API of the orders service: parse and validate, call the domain in one transaction, shape the reply.

The domain hands back rows and records; present.py turns them into the JSON replies.  No
personal value ever travels in a URL: searches by personnummer or name are POST bodies.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from operator import attrgetter
from typing import Any, get_type_hints

from flask import Response, current_app, jsonify

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


def call(operation: Callable[..., Any], *args: Any) -> Any:
    """Run one domain operation for the caller in one transaction (all or nothing)."""
    principal = authenticate()
    with runtime().db.transaction() as session:
        return operation(session, principal, *args)


def _endpoint(
    method: str,
    path: str,
    name: str,
    *,
    does: str,
    reply: Callable[[Any], present.Json],
    responses: dict[int | str, Any],
    **declared: Any,
) -> None:
    """Declare the endpoint ``method V1+path`` (``ApiBlueprint.operation``: ``responses`` and ``declared``)
    with the one view every endpoint here has: the domain operation ``does`` (``"catalogue.unit"``:
    aggregate and method of ``OrdersDomain``) runs for the caller in one transaction (``call``), given
    the path values in their order, then the query or the body; ``reply`` shapes what it hands back
    (present.py), answered with the declared success status (201 or 200).
    """
    part, _, method_name = does.partition(".")
    if not callable(getattr(get_type_hints(OrdersDomain).get(part), method_name, None)):
        raise TypeError(f"{method} {path}: OrdersDomain has no operation {does!r}")  # at import, as a typo is
    path_values = re.findall(r"\{(\w+)\}", path)
    status = 201 if 201 in responses else 200
    operation = attrgetter(does)

    def view(**kwargs: Any) -> tuple[Response, int]:
        args = [kwargs[n] for n in path_values] + [kwargs[k] for k in ("query", "body") if k in kwargs]
        return jsonify(reply(call(operation(domain()), *args))), status

    view.__name__ = name  # the Flask endpoint
    bp.operation(method, V1 + path, responses=responses, **declared)(view)


def _items(shape: Callable[[Any], present.Json]) -> Callable[[Any], present.Json]:
    return lambda found: {"items": present.items(found, shape)}


def _page(shape: Callable[[Any], present.Json]) -> Callable[[Any], present.Json]:
    return lambda found: present.page(found, shape)


# --- tenant settings -----------------------------------------------------------------------------


_endpoint(
    "GET",
    "/settings",
    "get_settings",
    does="catalogue.settings",
    reply=present.settings,
    summary="This tenant's orders settings (tenant administrators)",
    tags=("settings",),
    responses={200: SETTINGS_OUT},
)

_endpoint(
    "PUT",
    "/settings",
    "put_settings",
    does="catalogue.update_settings",
    reply=present.settings,
    summary="Change this tenant's orders settings (tenant administrators)",
    body=_closed({"personnummer_enabled": {"type": "boolean"}}, ("personnummer_enabled",)),
    tags=("settings",),
    responses={200: SETTINGS_OUT},
)


# --- units ---------------------------------------------------------------------------------------


_endpoint(
    "POST",
    "/units",
    "create_unit",
    does="catalogue.create_unit",
    reply=present.unit_with_points,
    summary="Add a care unit, ward or school kitchen (tenant administrators)",
    body=_closed({"name": LABEL, "kind": {"enum": list(UNIT_KINDS)}}, ("name", "kind")),
    tags=("units",),
    responses={201: ENTITY},
)

_endpoint(
    "GET",
    "/units",
    "list_units",
    does="catalogue.units",
    reply=_items(present.unit),
    summary="This tenant's units",
    tags=("units",),
    responses={200: ITEMS},
)

_endpoint(
    "GET",
    "/units/{unit_id}",
    "get_unit",
    does="catalogue.unit",
    reply=present.unit_with_points,
    summary="A unit and its delivery points",
    tags=("units",),
    responses={200: ENTITY},
)

_endpoint(
    "POST",
    "/units/{unit_id}/delivery-points",
    "add_delivery_point",
    does="catalogue.add_delivery_point",
    reply=present.new_delivery_point,
    summary="Add a delivery point (tenant administrators)",
    body=_closed({"name": LABEL}, ("name",)),
    tags=("units",),
    responses={201: ENTITY},
)


# --- order registers -----------------------------------------------------------------------------


_endpoint(
    "POST",
    "/registers",
    "create_register",
    does="catalogue.create_register",
    reply=present.register,
    summary="Create an order register (tenant administrators)",
    body=_closed({"name": LABEL, "deadline": DEADLINE, "timezone": TIMEZONE}, ("name",)),
    tags=("registers",),
    responses={201: ENTITY},
)

_endpoint(
    "GET",
    "/registers",
    "list_registers",
    does="catalogue.registers",
    reply=_items(present.register),
    summary="The registers the caller holds a right on",
    tags=("registers",),
    responses={200: ITEMS},
)

_endpoint(
    "GET",
    "/registers/{register_id}",
    "get_register",
    does="catalogue.register",
    reply=present.register,
    summary="One register, with the caller's rights on it",
    tags=("registers",),
    responses={200: ENTITY},
)

_endpoint(
    "PATCH",
    "/registers/{register_id}",
    "change_register",
    does="catalogue.change_register",
    reply=present.register,
    summary="Rename a register or change its order deadline (right: administer)",
    body=_closed({"name": LABEL, "deadline": DEADLINE, "timezone": TIMEZONE}, minProperties=1),
    tags=("registers",),
    responses={200: ENTITY},
)


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


_endpoint(
    "POST",
    "/assortment-lists",
    "create_list",
    does="catalogue.create_list",
    reply=present.list_with_articles,
    summary="Create an assortment list, for one unit or every unit (tenant administrators)",
    body=_closed({"name": LABEL, "unit_id": NULLABLE_UUID}, ("name",)),
    tags=("assortment lists",),
    responses={201: ENTITY},
)

_endpoint(
    "GET",
    "/assortment-lists",
    "list_lists",
    does="catalogue.lists",
    reply=_items(present.assortment_list),
    summary="The assortment lists the caller holds a right on",
    tags=("assortment lists",),
    responses={200: ITEMS},
)

_endpoint(
    "GET",
    "/assortment-lists/{list_id}",
    "get_list",
    does="catalogue.assortment_list",
    reply=present.list_with_articles,
    summary="An assortment list and its articles (right: view)",
    tags=("assortment lists",),
    responses={200: ENTITY},
)

_endpoint(
    "POST",
    "/assortment-lists/{list_id}/articles",
    "add_article",
    does="catalogue.add_article",
    reply=present.article,
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

_endpoint(
    "PATCH",
    "/assortment-lists/{list_id}/articles/{article_id}",
    "change_article",
    does="catalogue.change_article",
    reply=present.article,
    summary="Rename, withdraw or offer again an article (right: administer)",
    body=_closed({"name": LABEL, "active": {"type": "boolean"}}, minProperties=1),
    tags=("assortment lists",),
    responses={200: ENTITY},
)


# --- individuals (AIVO "Individ") ----------------------------------------------------------------


_endpoint(
    "POST",
    "/registers/{register_id}/individuals",
    "create_individual",
    does="individuals.create_individual",
    reply=present.individual,
    summary="Add an individual to a register (right: administer)",
    body=_closed(INDIVIDUAL_FIELDS, ("name",)),
    tags=("individuals",),
    responses={201: INDIVIDUAL_OUT},
)

_endpoint(
    "GET",
    "/registers/{register_id}/individuals",
    "list_individuals",
    does="individuals.individuals_in",
    reply=_page(present.individual),
    summary="A register's individuals, without health data (right: view)",
    query=_closed({"status": {"enum": ["active", "discharged"]}, "unit_id": UUID, **PAGE}),
    tags=("individuals",),
    responses={200: PAGE_OUT},
)

_endpoint(
    "POST",
    "/individuals/search",
    "search_individuals",
    does="individuals.search",
    reply=_items(present.individual),
    summary="Find individuals by personnummer or exact name, in the registers the caller may view (right: view)",
    body=_closed(
        {"register_id": UUID, "personnummer": PERSONNUMMER, "name": LABEL},
        oneOf=[{"required": ["personnummer"]}, {"required": ["name"]}],
    ),
    tags=("individuals",),
    responses={200: ITEMS},
)

_endpoint(
    "GET",
    "/individuals/{individual_id}",
    "get_individual",
    does="individuals.read_individual",
    reply=present.individual,
    summary="An individual with health data; the read is logged (right: view)",
    tags=("individuals",),
    responses={200: INDIVIDUAL_OUT},
)

_endpoint(
    "PATCH",
    "/individuals/{individual_id}",
    "change_individual",
    does="individuals.change_individual",
    reply=present.individual,
    summary="Change an individual (right: administer)",
    body=_closed(INDIVIDUAL_FIELDS, minProperties=1),
    tags=("individuals",),
    responses={200: INDIVIDUAL_OUT},
)

_endpoint(
    "POST",
    "/individuals/{individual_id}/discharge",
    "discharge_individual",
    does="individuals.discharge",
    reply=present.individual,
    summary="Discharge an individual, today or on a given date (right: administer)",
    body=_closed({"date": DATE}),
    tags=("individuals",),
    responses={200: INDIVIDUAL_OUT},
)


# --- orders --------------------------------------------------------------------------------------


_endpoint(
    "POST",
    "/orders",
    "place_order",
    does="ordering.place_order",
    reply=present.order,
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

_endpoint(
    "GET",
    "/orders/{order_id}",
    "get_order",
    does="ordering.order",
    reply=present.order,
    summary="One order (right: view)",
    tags=("orders",),
    responses={200: ORDER_OUT},
)

_endpoint(
    "PATCH",
    "/orders/{order_id}",
    "change_order",
    does="ordering.change_order",
    reply=present.order,
    summary="Change an order before its deadline (right: change)",
    body=_closed(ORDER_CHANGE_FIELDS, minProperties=1),
    tags=("orders",),
    responses={200: ORDER_OUT},
)

_endpoint(
    "POST",
    "/orders/{order_id}/cancel",
    "cancel_order",
    does="ordering.cancel_order",
    reply=present.order,
    summary="Cancel an order before its deadline (right: change)",
    tags=("orders",),
    responses={200: ORDER_OUT},
)

_endpoint(
    "GET",
    "/orders/{order_id}/history",
    "order_history",
    does="ordering.history",
    reply=_items(present.history_entry),
    summary="Who placed, changed and cancelled the order, and when (right: view)",
    tags=("orders",),
    responses={200: ITEMS},
)

_endpoint(
    "GET",
    "/registers/{register_id}/orders",
    "list_orders",
    does="ordering.orders_in",
    reply=_page(present.order),
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
