"""The audit's GDPR participation: the art. 15 trail, and erasure answered with 'retained' (R2, R3)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from services.audit.privacy import LEGAL_BASIS
from shared.bus import GDPR
from shared.privacy import Context, handle_command
from tests.audit.test_ledger import store
from tests.gdpr.sealing import sealed_command
from tests.support import outbox_messages


def test_the_trail_export_lists_who_saw_and_changed_the_subjects_data(audit, events):
    viewed = events("orders.individual.viewed", actor="u2", subject="orders:individual:p1")
    changed = events("orders.individual.changed", actor="u3", subject="orders:individual:p1")
    unrelated = events(subject="orders:individual:p2")
    store(audit, [viewed, changed, unrelated])
    participant = audit.participant
    with audit.db.transaction() as s:
        ctx = Context(request_id="r1", tenant="t1", subject={}, references=["orders:individual:p1"])
        assert participant.resolve(s, ctx) == []
        export = participant.export(s, ctx, ["orders:individual:p1"])
    # Actors by role and tenant (issue 14): an event recorded without roles says only "a user of t1".
    assert [(r["event_id"], r["actor"], r["type"]) for r in export["audit_trail"]] == [
        (viewed["id"], {"role": "user", "tenant": "t1"}, "orders.individual.viewed"),
        (changed["id"], {"role": "user", "tenant": "t1"}, "orders.individual.changed"),
    ]
    assert not any("actor_id" in r for r in export["audit_trail"])
    assert export["activity"] == []


def _with_roles(event: dict, *roles: str) -> dict:
    event["actor"]["roles"] = list(roles)
    return event


def test_batched_reads_are_in_the_trail_of_each_subject_they_name_and_actors_are_roles(audit, events):
    """GDPR art. 15 (issue 14): one orders.individuals.read per request, found under every subject it names.

    The person sees who read their data by role and tenant, never a user id, and not the other
    people read in the same request.
    """
    listed = _with_roles(
        events(
            "orders.individuals.read",
            actor="u2",
            subject=None,
            resource=("register", "r1"),
            data={
                "register_id": "r1",
                "purpose": "list_individuals",
                "count": 3,
                "subjects": ["orders:individual:p2", "orders:individual:p1", "orders:individual:p3"],
            },
        ),
        "staff",
    )
    other = _with_roles(
        events(
            "orders.individuals.read",
            actor="u2",
            subject=None,
            resource=None,
            data={
                "register_id": None,
                "purpose": "search_individuals",
                "count": 1,
                "subjects": ["orders:individual:p3"],
            },
        ),
        "staff",
    )
    elsewhere = _with_roles(
        events(
            "orders.individuals.read",
            tenant="t2",
            actor="u9",
            subject=None,
            data={
                "register_id": None,
                "purpose": "search_individuals",
                "count": 1,
                "subjects": ["orders:individual:p1"],
            },
        ),
        "staff",
    )
    changed = _with_roles(
        events("orders.individual.changed", actor="u3", subject="orders:individual:p1"), "tenant_admin", "staff"
    )
    by_gdpr = events("orders.individual.erased", actor="gdpr", kind="service", subject="orders:individual:p1")
    store(audit, [listed, other, elsewhere, changed, by_gdpr])
    with audit.db.transaction() as s:
        export = audit.participant.export(s, Context("r1", "t1", {}), ["orders:individual:p1"])
    trail = export["audit_trail"]
    assert [r["event_id"] for r in trail] == [listed["id"], changed["id"], by_gdpr["id"]]
    assert trail[0]["data"] == {
        "register_id": "r1",
        "purpose": "list_individuals",
        "count": 3,
        "subjects": ["orders:individual:p1"],
    }
    assert [r["actor"] for r in trail] == [
        {"role": "staff", "tenant": "t1"},
        {"role": "staff, tenant_admin", "tenant": "t1"},
        {"role": "service", "service": "gdpr", "tenant": "t1"},
    ]
    assert "u2" not in str(trail) and "u3" not in str(trail) and "orders:individual:p2" not in str(trail)


def test_a_users_own_actions_are_part_of_their_export(audit, events):
    """A staff member's access request includes what they did (their auth reference names their user id)."""
    mine = events(actor="u7", subject="orders:individual:p5")
    store(audit, [mine, events(actor="u8")])
    with audit.db.transaction() as s:
        export = audit.participant.export(s, Context("r1", "t1", {}), ["auth:user:u7"])
    assert [r["event_id"] for r in export["activity"]] == [mine["id"]]


def test_erasure_retains_the_entries_with_the_accountability_basis(audit, events):
    store(audit, [events(subject="orders:individual:p1") for _ in range(3)])
    with audit.db.transaction() as s:
        [item] = audit.participant.erase(s, Context("r1", "t1", {}), ["orders:individual:p1"])
        [none] = audit.participant.erase(s, Context("r2", "t1", {}), ["orders:individual:nobody"])
    retention = timedelta(days=audit.config["RETENTION_DAYS"])
    assert item.as_dict() == {
        "kind": "audit_entry",
        "action": "retained",
        "count": 3,
        "legal_basis": LEGAL_BASIS,
        "retain_until": (audit.domain.clock() + retention).date().isoformat(),
    }
    assert (none.count, none.retain_until) == (0, None)


def test_an_erase_command_is_answered_once_even_when_delivered_twice(audit, events):
    store(audit, [events(subject="orders:individual:p1")])
    command = {
        "request_id": str(uuid.uuid4()),
        "command_id": str(uuid.uuid4()),
        "action": "erase",
        "phase": "trail",
        "tenant": "t1",
        "subject": {},
        "references": ["orders:individual:p1"],
    }
    for _ in range(2):  # the second time under a new message id (a retry): the command id decides
        with audit.db.transaction() as s:
            handle_command(audit, s, sealed_command(audit, command))  # sealed as the gdpr service does
    [reply] = outbox_messages(audit, GDPR)
    assert reply["status"] == "done" and reply["erasure"][0]["action"] == "retained"
    assert reply["erasure"][0]["count"] == 1


def test_the_inventory_declares_both_kinds_and_counts_them(audit, events):
    store(audit, [events(tenant="t1"), events(tenant="t2"), events(tenant=None)])
    kinds = {c["kind"]: c for c in audit.participant.inventory.as_dict()["categories"]}
    assert (kinds["audit_entry"]["role"], kinds["vendor_audit_entry"]["role"]) == ("processor", "controller")
    assert all(c["erasure"] == "retained" for c in kinds.values())
    with audit.db.transaction() as s:
        assert audit.participant.counts(s) == {"audit_entry": 2, "vendor_audit_entry": 1}
        # Per customer (issue 15, art. 30(2)): each tenant's own entries; the vendor's chain is no tenant's.
        assert audit.participant.tenant_counts(s) == {"t1": {"audit_entry": 1}, "t2": {"audit_entry": 1}}


def test_the_audit_announces_itself_for_the_second_phase(audit):
    """It acts on the references the other services resolved, so the gdpr service must ask it last
    (without this every export's art. 15 trail came back empty; found by the e2e run)."""
    from shared.privacy import announcement

    assert announcement(audit)["phase"] == "trail"
