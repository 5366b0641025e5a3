"""The crm event contracts: closed data objects, no personal values (DESIGN.md "Events").

The schemas themselves are pinned with every other service's in tests/contracts/events.json.
"""

from __future__ import annotations

import services.crm.events  # noqa: F401 - registers the crm event types
from shared.events import REGISTRY


def crm_types() -> dict:
    return {f"{t.name} v{t.version}": t.data_schema for t in REGISTRY if t.name.startswith("crm.")}


SHORT_CODES = {"channel", "status", "direction", "source", "reason"}


def test_every_event_data_object_is_closed_and_holds_no_free_text():
    """Only ids, field names, counts, flags and short codes: there is no room for a personal value."""
    for name, schema in crm_types().items():
        assert schema["additionalProperties"] is False, name
        for field, spec in schema["properties"].items():
            types = spec.get("type")
            types = set(types) if isinstance(types, list) else {types}
            if field.endswith("_id"):
                assert types <= {"string", "null"} and spec["maxLength"] <= 64, (name, field)
            elif field in SHORT_CODES:
                assert types == {"string"} and spec["maxLength"] <= 60, (name, field)
            elif field == "fields":
                assert spec["items"]["maxLength"] <= 40, (name, field)
            else:
                assert "enum" in spec or types <= {"integer", "boolean"}, (name, field)
