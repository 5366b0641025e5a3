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
