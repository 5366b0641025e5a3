"""The events the audit service publishes: its own retention purges, so that they are on the record too."""

from __future__ import annotations

from shared.events import REGISTRY, obj

_COUNT = {"type": "integer", "minimum": 0}

ENTRIES_PURGED = REGISTRY.register(
    "audit.entries.purged",
    1,
    obj(
        {
            "chain": {"type": "string", "minLength": 1, "maxLength": 120},
            "up_to_seq": _COUNT,
            "count": _COUNT,
            "retention_days": _COUNT,
        }
    ),
    "entries older than the retention period were deleted from a chain, up to a signed checkpoint",
)

# Issue 15: each signed checkpoint, so other services can anchor to it (the gdpr service's erasure
# certificates).  Chain ids, numbers, a hash and the signature: no personal data.  The audit does not
# record these events in its own chains (services/audit/worker.py), or every checkpoint would make the
# chain it signed grow and be signed again, for ever.
CHECKPOINT_SIGNED = REGISTRY.register(
    "audit.checkpoint.signed",
    1,
    obj(
        {
            "chain": {"type": "string", "minLength": 1, "maxLength": 120},
            "seq": {"type": "integer", "minimum": 1},
            "head_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "key_id": {"type": "string", "minLength": 1, "maxLength": 64},
            "signature": {"type": "string", "minLength": 1, "maxLength": 200},
            "signed_at": {"type": "string", "minLength": 1, "maxLength": 40},
        }
    ),
    "the audit signed a checkpoint of a chain (its sequence number and head hash)",
)
