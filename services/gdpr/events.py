"""The events the gdpr service publishes: every step of a data-subject request, with no personal value.

Data holds request ids, kinds of identifiers (never their values), service names,
statuses and counts.  The envelope's ``subject`` is the pseudonymous ``gdpr:request:<id>``.
"""

from shared.events import REGISTRY, obj
from shared.gdpr_protocol import PHASES, REPLY_STATUSES, REQUEST_TYPES
from shared.identifiers import IDENTIFIERS

_ID = {"type": "string", "minLength": 36, "maxLength": 36}
_TYPE = {"enum": list(REQUEST_TYPES)}
_SERVICE = {"type": "string", "maxLength": 60}
_SERVICES = {"type": "array", "items": _SERVICE}
_PHASE = {"enum": list(PHASES)}
# Version 1 of the events below, before the preview phase and the care-context identifiers (issue 15):
# still registered so the events already published (and the audit ledger's copies) stay readable.
_PHASE_V1 = {"enum": ["resolve", "trail"]}
_IDENTIFIERS_V1 = ["email", "phone", "personnummer", "username"]
_TIME = {"type": "string", "maxLength": 40}

REQUEST_RECEIVED_V1 = REGISTRY.register(
    "gdpr.request.received",
    1,
    obj(
        {
            "request_id": _ID,
            "type": _TYPE,
            "identifier_kinds": {"type": "array", "items": {"enum": _IDENTIFIERS_V1}},
            "due_at": _TIME,
            "needs_approval": {"type": "boolean"},
        }
    ),
    "A data-subject request was opened (R1, R2).",
)

REQUEST_RECEIVED = REGISTRY.register(
    "gdpr.request.received",
    2,
    obj(
        {
            "request_id": _ID,
            "type": _TYPE,
            "identifier_kinds": {"type": "array", "items": {"enum": list(IDENTIFIERS)}},
            "due_at": _TIME,
            "needs_approval": {"type": "boolean"},
        }
    ),
    "A data-subject request was opened (R1, R2).",
)

REQUEST_PREVIEWED = REGISTRY.register(
    "gdpr.request.previewed",
    1,
    obj(
        {
            "request_id": _ID,
            "type": _TYPE,
            "services": _SERVICES,
            "candidates": {"type": "integer", "minimum": 0},
            "near": {"type": "integer", "minimum": 0},
        }
    ),
    "Every service answered the read-only preview (or timed out); counts only, the cards stay encrypted.",
)
REQUEST_APPROVED = REGISTRY.register(
    "gdpr.request.approved",
    1,
    obj(
        {
            "request_id": _ID,
            "type": _TYPE,
            "automatic": {"type": "boolean"},
        }
    ),
    "A request may run: a second compliance officer approved it, or its type runs at once.",
)

REQUEST_CONFIRMED = REGISTRY.register(
    "gdpr.request.confirmed",
    1,
    obj(
        {
            "request_id": _ID,
            "type": _TYPE,
        }
    ),
    "The customer's privacy officer confirmed the instruction a vendor officer recorded; the request runs (issue 15).",
)

REQUEST_REJECTED = REGISTRY.register(
    "gdpr.request.rejected",
    1,
    obj(
        {
            "request_id": _ID,
            "type": _TYPE,
        }
    ),
    "A request was rejected before it ran.",
)

REQUEST_EXTENDED = REGISTRY.register(
    "gdpr.request.extended",
    1,
    obj(
        {
            "request_id": _ID,
            "months": {"type": "integer", "minimum": 1, "maximum": 2},
            "due_at": _TIME,
        }
    ),
    "The answer deadline was extended (GDPR art. 12(3)).",
)

REQUEST_DISPATCHED_V1 = REGISTRY.register(
    "gdpr.request.dispatched",
    1,
    obj(
        {
            "request_id": _ID,
            "type": _TYPE,
            "phase": _PHASE_V1,
            "services": _SERVICES,
            "retry": {"type": "boolean"},
        }
    ),
    "Commands were sent to these services (one phase of the fan-out).",
)

REQUEST_DISPATCHED = REGISTRY.register(
    "gdpr.request.dispatched",
    2,
    obj(
        {
            "request_id": _ID,
            "type": _TYPE,
            "phase": _PHASE,
            "services": _SERVICES,
            "retry": {"type": "boolean"},
        }
    ),
    "Commands were sent to these services (one phase of the fan-out).",
)

SERVICE_REPLIED_V1 = REGISTRY.register(
    "gdpr.service.replied",
    1,
    obj(
        {
            "request_id": _ID,
            "type": _TYPE,
            "service": _SERVICE,
            "phase": _PHASE_V1,
            "status": {"enum": list(REPLY_STATUSES)},
            "references": {"type": "integer", "minimum": 0},
            "records": {"type": "integer", "minimum": 0},
        }
    ),
    "One service answered a request; counts only.",
)

SERVICE_REPLIED = REGISTRY.register(
    "gdpr.service.replied",
    2,
    obj(
        {
            "request_id": _ID,
            "type": _TYPE,
            "service": _SERVICE,
            "phase": _PHASE,
            "status": {"enum": list(REPLY_STATUSES)},
            "references": {"type": "integer", "minimum": 0},
            "records": {"type": "integer", "minimum": 0},
        }
    ),
    "One service answered a request; counts only.",
)

REQUEST_COMPLETED = REGISTRY.register(
    "gdpr.request.completed",
    1,
    obj(
        {
            "request_id": _ID,
            "type": _TYPE,
            "services": _SERVICES,
        }
    ),
    "Every expected service confirmed the request.",
)

REQUEST_STALLED = REGISTRY.register(
    "gdpr.request.stalled",
    1,
    obj(
        {
            "request_id": _ID,
            "type": _TYPE,
            "status": {"enum": ["partially_completed", "failed"]},
            "confirmed": _SERVICES,
            "missing": _SERVICES,
        }
    ),
    "The retry budget ran out with services that failed or stayed silent.",
)

REQUEST_RETRIED = REGISTRY.register(
    "gdpr.request.retried",
    1,
    obj(
        {
            "request_id": _ID,
            "type": _TYPE,
            "services": _SERVICES,
        }
    ),
    "A compliance officer re-sent the request to the services that failed or were silent.",
)

EXPORT_DOWNLOADED = REGISTRY.register(
    "gdpr.export.downloaded",
    1,
    obj(
        {
            "request_id": _ID,
            "sha256": {"type": "string", "maxLength": 64},
            "size": {"type": "integer", "minimum": 0},
        }
    ),
    "Someone downloaded an export package (it holds personal data).",
)

EXPORT_DELETED = REGISTRY.register(
    "gdpr.export.deleted",
    1,
    obj(
        {
            "request_id": _ID,
            "reason": {"enum": ["expired"]},
        }
    ),
    "An export package and its parts were deleted and crypto-shredded.",
)

IDENTIFIERS_SHREDDED = REGISTRY.register(
    "gdpr.identifiers.shredded",
    1,
    obj(
        {
            "request_id": _ID,
        }
    ),
    "A finished request's subject identifiers were crypto-shredded after their retention period.",
)

# --- issue 17: notices to the person and reminders to officers (services/gdpr/notices.py) ----------

_NOTICE_KIND = {"enum": ["received", "extended", "completed", "rejected", "passphrase", "reminder"]}
_CHANNEL = {"enum": ["email", "sms"]}

NOTICE_SENT = REGISTRY.register(
    "gdpr.notice.sent",
    1,
    obj(
        {
            "request_id": _ID,
            "notice_id": _ID,
            "kind": _NOTICE_KIND,
            "channel": _CHANNEL,
            "attempts": {"type": "integer", "minimum": 1},
        }
    ),
    "A notice went to the person who asked (or a reminder to the officers); no address, no text.",
)

NOTICE_FAILED = REGISTRY.register(
    "gdpr.notice.failed",
    1,
    obj(
        {
            "request_id": _ID,
            "notice_id": _ID,
            "kind": _NOTICE_KIND,
            "channel": _CHANNEL,
            "attempts": {"type": "integer", "minimum": 1},
            "reason": {"type": "string", "maxLength": 60},
        }
    ),
    "A notice could not be sent within its attempts (reason: error class and SMTP code only).",
)

CONTACT_SHREDDED = REGISTRY.register(
    "gdpr.contact.shredded",
    1,
    obj({"request_id": _ID}),
    "The contact details a person gave on the public page were crypto-shredded; a keyed hash stays.",
)
