"""The events the crm service publishes: ids, field names and counts only, never a personal value."""

from shared.events import REGISTRY, obj

_ID = {"type": "string", "minLength": 1, "maxLength": 64}
_OPT_ID = {"type": ["string", "null"], "maxLength": 64}
_FIELDS = {"type": "array", "items": {"type": "string", "maxLength": 40}, "maxItems": 20}
_COUNT = {"type": "integer", "minimum": 0}

COMPANY_CREATED = REGISTRY.register(
    "crm.company.created",
    1,
    obj({"company_id": _ID, "linked_tenant": {"type": "boolean"}}),
    "a customer company was added",
)
COMPANY_UPDATED = REGISTRY.register(
    "crm.company.updated", 1, obj({"company_id": _ID, "fields": _FIELDS}), "a company's details changed"
)

PERSON_ADDED = REGISTRY.register(
    "crm.person.added",
    1,
    obj({"person_id": _ID, "company_id": _ID, "fields": _FIELDS, "notice_recipient": {"type": "boolean"}}),
    "a person was added to a company's person tab (R4)",
)
PERSON_UPDATED = REGISTRY.register(
    "crm.person.updated",
    1,
    obj({"person_id": _ID, "company_id": _ID, "fields": _FIELDS, "notice_recipient": {"type": "boolean"}}),
    "a person-tab entry changed; fields names what changed",
)
PERSON_REMOVED = REGISTRY.register(
    "crm.person.removed",
    1,
    obj({"person_id": _ID, "company_id": _ID}),
    "support removed a person from the person tab (their key is shredded)",
)
PERSON_VIEWED = REGISTRY.register(
    "crm.person.viewed", 1, obj({"person_id": _ID, "company_id": _ID}), "someone read a person-tab entry"
)
PERSON_ERASED = REGISTRY.register(
    "crm.person.erased",
    1,
    obj({"person_id": _ID, "request_id": _OPT_ID}),
    "a data-subject erasure removed a person from the person tab (R15)",
)

CASE_OPENED = REGISTRY.register(
    "crm.case.opened",
    1,
    obj(
        {
            "case_id": _ID,
            "company_id": _ID,
            "person_id": _OPT_ID,
            "channel": {"type": "string", "maxLength": 10},
            "status": {"type": "string", "maxLength": 20},
            "fields": _FIELDS,
        }
    ),
    "support registered a case (R13)",
)
CASE_UPDATED = REGISTRY.register(
    "crm.case.updated",
    1,
    obj({"case_id": _ID, "person_id": _OPT_ID, "status": {"type": "string", "maxLength": 20}, "fields": _FIELDS}),
    "a case changed; fields names what changed",
)
CASE_VIEWED = REGISTRY.register("crm.case.viewed", 1, obj({"case_id": _ID, "company_id": _ID}), "someone read a case")
CASE_REDACTED = REGISTRY.register(
    "crm.case.redacted",
    1,
    obj({"case_id": _ID, "request_id": _OPT_ID}),
    "an erasure removed the personal fields of a case (R15)",
)

CALL_RECORDED = REGISTRY.register(
    "crm.call.recorded",
    1,
    obj({"call_id": _ID, "import_id": _ID, "person_id": _OPT_ID, "direction": {"type": "string", "maxLength": 10}}),
    "a call-log row was imported (R13)",
)
CALL_VIEWED = REGISTRY.register("crm.call.viewed", 1, obj({"call_id": _ID}), "someone read a call-log row")
CALL_REDACTED = REGISTRY.register(
    "crm.call.redacted",
    1,
    obj({"call_id": _ID, "request_id": _OPT_ID}),
    "an erasure removed the number from a call-log row (R15)",
)
CALL_IMPORT_COMPLETED = REGISTRY.register(
    "crm.call_import.completed",
    1,
    obj(
        {
            "import_id": _ID,
            "rows": _COUNT,
            "imported": _COUNT,
            "duplicates": _COUNT,
            "rejected": _COUNT,
            "matched": _COUNT,
            "source": {"type": "string", "maxLength": 10},
        }
    ),
    "a call-log file was imported; counts per outcome",
)

EMAIL_INGESTED = REGISTRY.register(
    "crm.email.ingested",
    1,
    obj(
        {
            "email_id": _ID,
            "company_id": _ID,
            "person_id": _OPT_ID,
            "attachments": _COUNT,
            "size": _COUNT,
            "source": {"type": "string", "maxLength": 10},
        }
    ),
    "an e-mail was stored as a document linked to a company (R14)",
)
EMAIL_VIEWED = REGISTRY.register(
    "crm.email.viewed",
    1,
    obj({"email_id": _ID, "company_id": _ID, "part": {"enum": ["headers", "message", "raw", "attachment"]}}),
    "someone read an e-mail (its headers in a list, the message, the raw document or an attachment)",
)
EMAIL_DELETED = REGISTRY.register(
    "crm.email.deleted", 1, obj({"email_id": _ID, "request_id": _OPT_ID}), "an erasure deleted an e-mail document (R15)"
)

NOTICE_CREATED = REGISTRY.register(
    "crm.notice.created",
    1,
    obj({"notice_id": _ID, "companies": _COUNT, "recipients": _COUNT}),
    "a system-change notice was addressed to the appointed recipients of chosen companies (R4)",
)
NOTICE_DELIVERY_SENT = REGISTRY.register(
    "crm.notice_delivery.sent",
    1,
    obj({"notice_id": _ID, "delivery_id": _ID, "person_id": _ID, "company_id": _ID, "attempts": _COUNT}),
    "the relay accepted a notice for one recipient",
)
NOTICE_DELIVERY_FAILED = REGISTRY.register(
    "crm.notice_delivery.failed",
    1,
    obj(
        {
            "notice_id": _ID,
            "delivery_id": _ID,
            "person_id": _OPT_ID,
            "company_id": _ID,
            "attempts": _COUNT,
            "reason": {"type": "string", "maxLength": 60},
        }
    ),
    "a notice could not be delivered to one recipient and will not be retried",
)
