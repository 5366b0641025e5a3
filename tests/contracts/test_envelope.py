"""The event envelope is a contract between every service and the audit: pinned in envelope.json.

Only compatible changes are allowed (an added optional property, such as the actor's ``roles``
of issue 14); regenerate with RECEPT_UPDATE_CONTRACTS=1 after such an addition.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from shared.events import ENVELOPE_SCHEMA

PINNED = Path(__file__).resolve().parent / "envelope.json"


def _properties(schema: dict, path: str = "") -> dict[str, dict]:
    """Every object in the schema by path, with its required names and property names."""
    found = {
        path or "/": {
            "required": sorted(schema.get("required", [])),
            "properties": sorted(schema.get("properties", {})),
        }
    }
    for name, sub in schema.get("properties", {}).items():
        if isinstance(sub, dict) and "properties" in sub:
            found.update(_properties(sub, f"{path}/{name}"))
    return found


def test_the_envelope_changes_only_compatibly():
    current = json.loads(json.dumps(ENVELOPE_SCHEMA))
    if os.environ.get("RECEPT_UPDATE_CONTRACTS"):
        PINNED.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    pinned = json.loads(PINNED.read_text())
    before, after = _properties(pinned), _properties(current)
    for path, shape in before.items():
        assert path in after, f"envelope object {path} was removed"
        assert set(shape["properties"]) <= set(after[path]["properties"]), f"a property of {path} was removed"
        assert after[path]["required"] == shape["required"], f"{path} requires other fields: a breaking change"
    assert current == pinned, "the envelope changed: pin it with RECEPT_UPDATE_CONTRACTS=1 (additions only)"


def test_the_actor_may_carry_roles_but_never_a_name():
    actor = ENVELOPE_SCHEMA["properties"]["actor"]
    assert actor["additionalProperties"] is False
    assert set(actor["properties"]) == {"id", "tenant", "kind", "roles"}
    assert actor["required"] == ["id"]
