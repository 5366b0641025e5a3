"""The event envelope and the pinned schema of every published event type (DESIGN.md "Events")."""

import importlib
import json
import os
import uuid
from pathlib import Path

import pytest

from services import SERVICES
from shared.errors import Invalid
from shared.events import REGISTRY, EventRegistry, make_event, obj, validate_envelope

PINNED = Path(__file__).resolve().parent.parent / "contracts" / "events.json"


@pytest.fixture
def registry():
    r = EventRegistry()
    r.register("orders.order.placed", 1, obj({"order_id": {"type": "string"}, "quantity": {"type": "integer"}}))
    return r


def test_envelope_has_every_field_of_the_design(registry):
    event = make_event(
        registry.get("orders.order.placed", 1),
        source="orders",
        data={"order_id": "o1", "quantity": 2},
        actor={"id": "u1", "tenant": "t1", "kind": "user"},
        tenant="t1",
        subject="orders:individual:" + str(uuid.uuid4()),
        resource={"type": "order", "id": "o1"},
        correlation_id="c1",
    )
    assert set(event) == {
        "id",
        "type",
        "version",
        "source",
        "time",
        "actor",
        "tenant",
        "subject",
        "resource",
        "correlation_id",
        "data",
    }
    assert event["time"].endswith("Z") and uuid.UUID(event["id"])
    assert validate_envelope(event, registry=registry).name == "orders.order.placed"


def test_undeclared_data_fields_are_refused_so_personal_values_cannot_slip_in(registry):
    with pytest.raises(Invalid) as info:
        make_event(
            registry.get("orders.order.placed", 1),
            source="orders",
            data={"order_id": "o1", "quantity": 2, "name": "Anna Andersson"},
        )
    assert "Anna" not in str(info.value.errors) and "Anna" not in info.value.detail


def test_subject_must_be_a_pseudonymous_reference(registry):
    with pytest.raises(Invalid):
        make_event(
            registry.get("orders.order.placed", 1),
            source="orders",
            data={"order_id": "o", "quantity": 1},
            subject="anna@example.com",
        )


def test_type_names_follow_the_convention():
    with pytest.raises(ValueError):
        EventRegistry().register("OrderPlaced", 1, obj({}))


def test_same_type_and_version_cannot_change_schema(registry):
    with pytest.raises(ValueError):
        registry.register("orders.order.placed", 1, obj({"order_id": {"type": "integer"}}))
    registry.register("orders.order.placed", 2, obj({"order_id": {"type": "integer"}}))  # a new version is fine


def _load_all_event_types() -> dict:
    for name in SERVICES:
        try:
            importlib.import_module(f"services.{name}.events")
        except ModuleNotFoundError as exc:
            if exc.name != f"services.{name}.events":
                raise
    return {f"{t.name}@v{t.version}": t.data_schema for t in REGISTRY}


def test_every_published_event_schema_is_pinned():
    """A changed schema must be a new version: update tests/contracts/events.json only for additions.

    Regenerate with RECEPT_UPDATE_CONTRACTS=1 after adding a type or a version; an
    existing entry that changes is a breaking change and fails here.
    """
    current = _load_all_event_types()
    pinned = json.loads(PINNED.read_text()) if PINNED.exists() else {}
    changed = sorted(k for k in pinned if k in current and pinned[k] != current[k])
    assert not changed, f"published event schemas changed; publish a new version instead: {changed}"
    if os.environ.get("RECEPT_UPDATE_CONTRACTS"):
        PINNED.write_text(json.dumps({**pinned, **current}, indent=2, sort_keys=True) + "\n")
        pinned = {**pinned, **current}
    unpinned = sorted(set(current) - set(pinned))
    assert not unpinned, f"new event types must be pinned (RECEPT_UPDATE_CONTRACTS=1): {unpinned}"
    removed = sorted(set(pinned) - set(current))
    assert not removed, f"pinned event types are no longer published: {removed}"
