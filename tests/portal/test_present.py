"""Shaping of the gdpr and audit services' answers for the pages (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.portal import present
from services.portal.web import safe_next
from tests.portal.fakes import INVENTORY

NOW = datetime(2026, 1, 15, tzinfo=UTC)


def test_overdue_means_past_due_and_not_yet_answered():
    """GDPR art. 12(3): an open request past its due date is overdue; an answered one is not."""
    past = (NOW - timedelta(days=1)).isoformat()
    assert present.is_overdue({"status": "in_progress", "due_at": past}, NOW)
    assert present.is_overdue({"status": "partially_completed", "due_at": past}, NOW)
    assert not present.is_overdue({"status": "completed", "due_at": past}, NOW)
    assert not present.is_overdue({"status": "in_progress", "due_at": (NOW + timedelta(days=1)).isoformat()}, NOW)
    assert present.is_overdue({"status": "completed", "overdue": True}, NOW)  # the service's word wins


def test_erasure_table_reads_items_wherever_the_service_puts_them():
    """R2: per service and kind of data, the action, count, legal basis and retain-until."""
    item = {
        "services": [
            {"service": "orders", "status": "done", "erasure": [{"kind": "order", "action": "anonymised", "count": 3}]},
            {
                "service": "crm",
                "status": "done",
                "result": [
                    {
                        "kind": "case",
                        "action": "retained",
                        "count": 1,
                        "legal_basis": "legal claims",
                        "retain_until": "2030-01-01",
                    }
                ],
            },
            {
                "service": "auth",
                "status": "done",
                "result": {"erasure": [{"kind": "user", "action": "deleted", "count": 1}]},
            },
            {"service": "audit", "status": "failed", "error": "timeout"},
        ]
    }
    rows = present.erasure_table(present.services_of(item))
    assert [(r["service"], r["kind"], r["action"]) for r in rows] == [
        ("auth", "user", "deleted"),
        ("crm", "case", "retained"),
        ("orders", "order", "anonymised"),
    ]
    assert rows[1]["legal_basis"] == "legal claims" and rows[1]["retain_until"] == "2030-01-01"
    assert present.can_retry(item)


def test_services_may_be_a_mapping_and_export_results_are_counts():
    item = {"services": {"orders": {"status": "done", "result": {"individual": 1, "order": 4}}, "crm": "sent"}}
    services = present.services_of(item)
    assert [(s.service, s.status) for s in services] == [("crm", "sent"), ("orders", "done")]
    assert services[1].records == {"individual": 1, "order": 4}


def test_only_another_officer_may_decide_an_erase_awaiting_approval():
    item = {"status": "awaiting_approval", "requested_by": "u-1"}
    assert not present.can_decide(item, "u-1")
    assert present.can_decide(item, "u-2")
    assert not present.can_decide({**item, "status": "in_progress"}, "u-2")


def test_inventory_rows_carry_role_special_category_and_counts():
    """R3, R5: every category with its role, whether it is special (art. 9), and its live count."""
    rows = present.inventory_rows(INVENTORY)
    assert [(r.service, r.kind, r.count) for r in rows] == [
        ("crm", "case", 7),
        ("orders", "individual", 42),
        ("orders", "order", 310),
    ]
    assert [r.special for r in rows] == [False, True, False]
    assert rows[1].role == "processor" and rows[0].role == "controller" and rows[1].encrypted
    flat = {"categories": [{"service": "orders", "kind": "individual", "count": 5}]}
    assert [(r.service, r.count) for r in present.inventory_rows(flat)] == [("orders", 5)]


def test_counts_chart_scales_bars_to_the_largest_count():
    chart = present.counts_chart(present.inventory_rows(INVENTORY))
    widths = {bar.label: bar.width for bar in chart.bars}
    assert widths["orders · order"] == chart.bar_area
    assert 0 < widths["crm · case"] < widths["orders · individual"] < chart.bar_area
    assert present.counts_chart([]).bars == []


def test_chain_status_finds_the_first_bad_entry_in_either_shape():
    chains = present.chains_of(
        {
            "status": "broken",
            "chains": [
                {"chain": "tenant:t1", "tenant": "t1", "status": "ok", "entries_verified": 3, "first_bad": None},
                {
                    "chain": "tenant:t2",
                    "tenant": "t2",
                    "status": "broken",
                    "entries_verified": 1,
                    "first_bad": {"seq": 2, "reason": "hash mismatch"},
                },
            ],
        }
    )
    assert [(c.name, c.tenant, c.ok, c.verified) for c in chains] == [
        ("tenant:t1", "t1", True, 3),
        ("tenant:t2", "t2", False, 1),
    ]
    assert chains[1].first_bad == {"seq": 2, "reason": "hash mismatch"}
    legacy = present.chains_of({"chains": {"t3": {"verified": 1, "first_bad_entry": 2}}})
    assert (legacy[0].name, legacy[0].ok, legacy[0].first_bad) == ("t3", False, {"entry": 2})


def test_only_local_paths_are_followed_after_sign_in():
    assert safe_next("/portal/requests?status=failed") == "/portal/requests?status=failed"
    for target in ("//evil.example", "https://evil.example/", "\\\\evil", None, 7):
        assert safe_next(target) is None
