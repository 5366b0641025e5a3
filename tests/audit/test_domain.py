"""The audit's pure rules: envelope checks, canonical form, chains, cursors, CSV cells."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import timedelta

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from services.audit.domain import (
    PoisonEvent,
    Row,
    _columns_in_body,
    _columns_match,
    canonical,
    chain_for,
    csv_cell,
    decode_cursor,
    encode_cursor,
    to_entry,
)
from shared.clock import as_utc, parse_rfc3339
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


def _exact(body: bytes, columns: dict) -> bool:
    """The column check by a full parse of the body (what the fast path must never contradict)."""
    return to_entry(json.loads(body)).columns() == {**columns, "time": as_utc(columns["time"])}


def _tricky_envelopes(events):
    # Copies of the tail, the id/resource run and the actor inside data and inside strings: the fast
    # check anchors its comparisons, so none of these may pass for the real fields.
    fake_tail = ',"subject":null,"tenant":"t2","time":"2025-03-01T08:00:00.000000Z","type":"orders.order.cancelled"'
    yield events()
    yield events(data={"note": fake_tail + ',"version":1}', fake_tail[1:]: 1, "x": {"id": "o2", "type": "order"}})
    yield events(resource=None, subject=None, data={"id": "o1", "resource": None, "source": "orders"})
    yield events(
        actor=None,
        kind="system",
        resource=("order", 'o"1\\'),
        subject="orders:individual:p9",
        data={"name": "ä€😀\u2028"},
    )
    yield events(tenant='t"1', actor='u\\"1', data={"actor": {"id": "user-1"}})


def test_the_fast_column_check_agrees_with_the_exact_one(events):
    """Verification compares canonical bytes instead of parsing each body (issue 19): it must say
    "matches" exactly when a parse of the body would, and leave every doubt to the parse."""
    checked = 0
    for event in _tricky_envelopes(events):
        entry = to_entry(event)
        columns = entry.columns()
        assert _exact(entry.body, columns)
        assert _columns_in_body(entry.body, columns)
        others = {
            "event_id": str(uuid.uuid4()),
            "type": "orders.order.cancelled",
            "time": columns["time"] + timedelta(microseconds=1),
            "tenant": "t2",
            "actor": "user-2",
            "subject": "orders:individual:p2",
            "resource_type": "individual",
            "resource_id": "o2",
            "chain": "tenant:t2",
        }
        for name, value in [*others.items(), *((n, None) for n in others if n != "time"), ("actor", "o1")]:
            changed = {**columns, name: value}
            if name == "tenant" and value is not None:
                changed["chain"] = "tenant:" + value  # the chain moved with the tenant: still not this body
            if _columns_in_body(entry.body, changed):
                assert _exact(entry.body, changed), (name, value)
            checked += 1
            assert not _exact(entry.body, changed) or changed == columns
    assert checked > 40


def test_a_time_written_with_an_offset_is_left_to_the_exact_check(events):
    event = events()
    event["time"] = "2025-03-01T10:00:00.001+02:00"
    entry = to_entry(event)
    assert not _columns_in_body(entry.body, entry.columns())  # not the canonical spelling: cannot tell
    assert _columns_match(Row(1, entry.event_id, entry.body, b"", b"", entry.columns()))  # the parse can
