"""The audit's pure rules: envelope checks, canonical form, chains, cursors, CSV cells."""

from __future__ import annotations

import copy

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from services.audit.domain import PoisonEvent, canonical, chain_for, csv_cell, decode_cursor, encode_cursor, to_entry
from shared.clock import parse_rfc3339
from shared.errors import Invalid
from shared.events import ENVELOPE_SCHEMA


def _mutations(event):
    yield "valid", event
    yield "no id", {k: v for k, v in event.items() if k != "id"}
    yield "extra field", {**event, "email": "x"}
    yield "id not uuid", {**event, "id": "x" * 36}
    yield "bad type", {**event, "type": "Orders"}
    yield "version 0", {**event, "version": 0}
    yield "version bool", {**event, "version": True}
    yield "empty source", {**event, "source": ""}
    yield "short time", {**event, "time": "2025"}
    yield "actor without id", {**event, "actor": {"tenant": "t1"}}
    yield "actor with name", {**event, "actor": {"id": "u", "name": "Anna"}}
    yield "actor kind", {**event, "actor": {"id": "u", "kind": "robot"}}
    yield "actor roles", {**event, "actor": {"id": "u", "kind": "user", "roles": ["staff", "tenant_admin"]}}
    yield "actor no roles", {**event, "actor": {"id": "u", "roles": []}}
    yield "actor roles text", {**event, "actor": {"id": "u", "roles": "staff"}}
    yield "actor role a name", {**event, "actor": {"id": "u", "roles": ["Anna Andersson"]}}
    yield "actor role number", {**event, "actor": {"id": "u", "roles": [7]}}
    yield "actor many roles", {**event, "actor": {"id": "u", "roles": [f"r{i}" for i in range(21)]}}
    yield "tenant number", {**event, "tenant": 42}
    yield "subject free text", {**event, "subject": "Anna Andersson"}
    yield "resource without id", {**event, "resource": {"type": "order"}}
    yield "data list", {**event, "data": []}
    yield "no actor", {**event, "actor": None, "resource": None, "subject": None, "tenant": None}


def test_the_hand_written_envelope_check_agrees_with_the_shared_schema(events):
    """The ingest's fast check accepts exactly what shared.events.ENVELOPE_SCHEMA accepts."""
    validator = Draft202012Validator(ENVELOPE_SCHEMA, format_checker=FormatChecker())
    for label, candidate in _mutations(events()):
        expected = validator.is_valid(candidate)
        try:
            to_entry(candidate)
            accepted = True
        except PoisonEvent as exc:
            accepted = False
            assert "Anna" not in str(exc) and "x" * 36 not in str(exc)
        assert accepted == expected, label


def test_canonical_form_ignores_key_order_and_whitespace(events):
    event = events()
    shuffled = dict(reversed(list(copy.deepcopy(event).items())))
    assert canonical(event) == canonical(shuffled)
    assert b" " not in canonical({"a": 1, "b": [1, 2]})
    assert canonical({"name": "Åsa"}) == '{"name":"Åsa"}'.encode()


def test_an_event_time_without_an_offset_is_poison(events):
    with pytest.raises(PoisonEvent):
        to_entry({**events(), "time": "2025-03-01T08:00:00.000000"})


def test_tenantless_events_go_to_the_vendor_or_system_chain():
    assert chain_for("t1", {"id": "u", "kind": "user"}) == "tenant:t1"
    assert chain_for(None, {"id": "u", "kind": "user"}) == "vendor"
    assert chain_for(None, {"id": "u"}) == "vendor"
    assert chain_for(None, {"id": "relay", "kind": "service"}) == "system"
    assert chain_for(None, None) == "system"


def test_a_cursor_round_trips_and_a_forged_one_is_invalid():
    at = parse_rfc3339("2025-03-01T08:00:00.123456+01:00")
    assert decode_cursor(encode_cursor(at, 42)) == (at, 42)
    for forged in ("", "not-base64!", encode_cursor(at, 1)[:-3], "WyIyMDI1IiwgIngiXQ"):
        with pytest.raises(Invalid):
            decode_cursor(forged)


def test_csv_cells_never_start_a_formula():
    assert [csv_cell(v) for v in ("=1+1", "+1", "-1", "@A1", "plain", None, {"a": 1})] == [
        "'=1+1",
        "'+1",
        "'-1",
        "'@A1",
        "plain",
        "",
        '{"a":1}',
    ]
