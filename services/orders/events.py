"""The events the orders service publishes (R9, R11): ids, field names and non-personal values only.

Every schema is closed (``obj``), and a change's ``before``/``after`` values are allowed only
for the non-personal fields listed in ``VALUE_FIELDS``; personal fields of an individual and
the diet variant of an order (health data once linked to a person) appear by name alone.
"""

from __future__ import annotations

from shared.events import REGISTRY, SUBJECT_REF, obj

ID = {"type": "string", "minLength": 1, "maxLength": 36}
OPTIONAL_ID = {"type": ["string", "null"], "maxLength": 36}
RIGHTS = ("view", "order", "change", "administer")
RESOURCE_TYPES = ("register", "assortment_list")

# Per kind of record, the fields whose before/after values may travel in an event: none of them
# can identify a person.  Every other changed field is named in "fields" without its values.
ORDER_VALUE_FIELDS = ("quantity", "delivery_date", "meal", "article_id", "delivery_point_id")
INDIVIDUAL_VALUE_FIELDS = ("unit_id",)
REGISTER_VALUE_FIELDS = ("name", "deadline_time", "deadline_days_before", "timezone")
SETTINGS_VALUE_FIELDS = ("personnummer_enabled",)
ARTICLE_VALUE_FIELDS = ("name", "active")

_value = {"type": ["string", "integer", "boolean", "null"], "maxLength": 200}
_field_names = {"type": "array", "items": {"type": "string", "pattern": "^[a-z_]{1,40}$"}, "maxItems": 30}


def _changes(fields: tuple[str, ...]) -> dict:
    return {
        "type": "array",
        "maxItems": 30,
        "items": obj({"field": {"enum": list(fields)}, "before": _value, "after": _value}),
    }


SETTINGS_CHANGED = REGISTRY.register(
    "orders.settings.changed",
    1,
    obj({"fields": _field_names, "changes": _changes(SETTINGS_VALUE_FIELDS)}),
    "a tenant's orders settings changed",
)

UNIT_CREATED = REGISTRY.register(
    "orders.unit.created",
    1,
    obj({"unit_id": ID, "kind": {"type": "string", "maxLength": 30}}),
    "a care unit, ward or kitchen was added",
)

DELIVERY_POINT_CREATED = REGISTRY.register(
    "orders.delivery_point.created",
    1,
    obj({"unit_id": ID, "delivery_point_id": ID}),
    "a delivery point was added to a unit",
)

REGISTER_CREATED = REGISTRY.register(
    "orders.register.created", 1, obj({"register_id": ID}), "an order register was created"
)

REGISTER_CHANGED = REGISTRY.register(
    "orders.register.changed",
    1,
    obj({"register_id": ID, "fields": _field_names, "changes": _changes(REGISTER_VALUE_FIELDS)}),
    "an order register's settings changed",
)

ASSORTMENT_LIST_CREATED = REGISTRY.register(
    "orders.assortment_list.created", 1, obj({"list_id": ID, "unit_id": OPTIONAL_ID}), "an assortment list was created"
)

ARTICLE_CREATED = REGISTRY.register(
    "orders.article.created",
    1,
    obj({"list_id": ID, "article_id": ID, "kind": {"type": "string", "maxLength": 20}}),
    "an article was added to an assortment list",
)

ARTICLE_CHANGED = REGISTRY.register(
    "orders.article.changed",
    1,
    obj({"list_id": ID, "article_id": ID, "fields": _field_names, "changes": _changes(ARTICLE_VALUE_FIELDS)}),
    "an article of an assortment list changed (renamed, withdrawn or offered again)",
)

_grant = {
    "grant_id": ID,
    "resource_type": {"enum": list(RESOURCE_TYPES)},
    "resource_id": ID,
    "principal_type": {"enum": ["user", "group"]},
    "principal_id": {"type": "string", "maxLength": 200},
    "right": {"enum": list(RIGHTS)},
}
ACCESS_GRANTED = REGISTRY.register(
    "orders.access.granted", 1, obj(_grant), "a user or directory group was given a right on a register or list"
)
ACCESS_REVOKED = REGISTRY.register(
    "orders.access.revoked", 1, obj(_grant), "a right on a register or list was taken away"
)

INDIVIDUAL_CREATED = REGISTRY.register(
    "orders.individual.created",
    1,
    obj({"individual_id": ID, "register_id": ID, "fields": _field_names}),
    "an individual was added to a register",
)

INDIVIDUAL_CHANGED = REGISTRY.register(
    "orders.individual.changed",
    1,
    obj({"individual_id": ID, "register_id": ID, "fields": _field_names, "changes": _changes(INDIVIDUAL_VALUE_FIELDS)}),
    "an individual's record changed (personal fields by name only)",
)

INDIVIDUAL_DISCHARGED = REGISTRY.register(
    "orders.individual.discharged", 1, obj({"individual_id": ID, "register_id": ID}), "an individual was discharged"
)

INDIVIDUAL_READ = REGISTRY.register(
    "orders.individual.read",
    1,
    obj({"individual_id": ID, "register_id": ID, "fields": _field_names}),
    "someone read an individual's health data (diets, allergies, texture level, notes)",
)

# One per HTTP request that decrypted individuals' data for the caller (GDPR art. 15: who has seen
# my data), naming the subjects by reference only; the audit files it under each of them.
READ_PURPOSES = ("list_individuals", "search_individuals", "list_orders", "read_order")
READ_LIMIT = 500  # the largest page a listing answers
INDIVIDUALS_READ = REGISTRY.register(
    "orders.individuals.read",
    1,
    obj(
        {
            "register_id": OPTIONAL_ID,
            "purpose": {"enum": list(READ_PURPOSES)},
            "count": {"type": "integer", "minimum": 1, "maximum": READ_LIMIT},
            "subjects": {
                "type": "array",
                "minItems": 1,
                "maxItems": READ_LIMIT,
                "uniqueItems": True,
                "items": {"type": "string", "pattern": SUBJECT_REF.pattern, "maxLength": 200},
            },
        }
    ),
    "someone listed, searched or read individuals or their orders (batched per request; references only)",
)

INDIVIDUAL_ERASED = REGISTRY.register(
    "orders.individual.erased",
    1,
    obj(
        {
            "individual_id": ID,
            "register_id": ID,
            "request_id": {"type": "string", "maxLength": 100},
            "orders_retained": {"type": "integer", "minimum": 0},
            "orders_deleted": {"type": "integer", "minimum": 0},
        }
    ),
    "an individual was erased on a data-subject request (crypto-shredded)",
)

ORDER_PLACED = REGISTRY.register(
    "orders.order.placed",
    1,
    obj(
        {
            "order_id": ID,
            "register_id": ID,
            "unit_id": ID,
            "individual_id": OPTIONAL_ID,
            "article_id": ID,
            "delivery_date": {"type": "string", "format": "date", "maxLength": 10},
            "meal": {"type": "string", "maxLength": 20},
            "quantity": {"type": "integer"},
        }
    ),
    "an order was placed",
)

ORDER_CHANGED = REGISTRY.register(
    "orders.order.changed",
    1,
    obj({"order_id": ID, "register_id": ID, "fields": _field_names, "changes": _changes(ORDER_VALUE_FIELDS)}),
    "an order was changed",
)

ORDER_CANCELLED = REGISTRY.register(
    "orders.order.cancelled", 1, obj({"order_id": ID, "register_id": ID}), "an order was cancelled"
)

RETENTION_PURGED = REGISTRY.register(
    "orders.retention.purged",
    1,
    obj(
        {
            "orders_deleted": {"type": "integer", "minimum": 0},
            "delivered_before": {"type": "string", "format": "date", "maxLength": 10},
        }
    ),
    "orders past the bookkeeping retention period were deleted",
)
