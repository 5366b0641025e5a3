"""The query and verification API: filters, paging, CSV, roles and tenant isolation (R9, R11)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from services.audit import SPEC
from services.audit.models import entries
from tests.audit.test_ledger import store


@pytest.fixture
def sqlite_audit(audit_factory, tmp_path):
    return audit_factory(f"sqlite:///{tmp_path / 'audit.db'}")


@pytest.fixture
def client(sqlite_audit):
    return SPEC.create_app(runtime=sqlite_audit).test_client()


@pytest.fixture
def trail(sqlite_audit, events):
    """Two tenants' events and a vendor one, stored in time order."""
    made = [
        events(
            "orders.order.placed", tenant="t1", actor="u1", subject="orders:individual:p1", resource=("order", "o1")
        ),
        events(
            "orders.order.changed", tenant="t1", actor="u2", subject="orders:individual:p1", resource=("order", "o1")
        ),
        events(
            "orders.individual.viewed",
            tenant="t1",
            actor="u2",
            subject="orders:individual:p2",
            resource=("individual", "p2"),
        ),
        events(
            "orders.order.placed", tenant="t2", actor="u9", subject="orders:individual:p9", resource=("order", "o9")
        ),
        events("crm.case.opened", tenant=None, actor="s1", subject="crm:person:c1", resource=("case", "k1")),
    ]
    store(sqlite_audit, made)
    return made


def ids(response) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [item["id"] for item in response.get_json()["items"]]


def test_an_auditor_filters_by_actor_subject_resource_type_and_time(client, mint, trail):
    auditor = mint.headers(tenant="vendor", roles=["auditor"])
    assert ids(client.get("/api/v1/events", headers=auditor)) == [e["id"] for e in trail]
    assert ids(client.get("/api/v1/events?actor=u2", headers=auditor)) == [trail[1]["id"], trail[2]["id"]]
    assert ids(client.get("/api/v1/events?subject=orders:individual:p1", headers=auditor)) == [
        trail[0]["id"],
        trail[1]["id"],
    ]
    assert ids(client.get("/api/v1/events?resource=o1&type=orders.order.changed", headers=auditor)) == [trail[1]["id"]]
    assert ids(client.get("/api/v1/events?type=orders.*", headers=auditor)) == [e["id"] for e in trail[:4]]
    assert ids(client.get("/api/v1/events?tenant=t2", headers=auditor)) == [trail[3]["id"]]
    window = f"since={trail[1]['time']}&until={trail[3]['time']}"
    assert ids(client.get(f"/api/v1/events?{window}", headers=auditor)) == [trail[1]["id"], trail[2]["id"]]
    item = client.get("/api/v1/events?actor=u1", headers=auditor).get_json()["items"][0]
    assert {k: v for k, v in item.items() if k != "audit"} == trail[0]
    assert (item["audit"]["chain"], item["audit"]["seq"]) == ("tenant:t1", 1)


def test_pages_follow_the_cursor_to_the_end(client, mint, trail):
    auditor = mint.headers(tenant="vendor", roles=["auditor"])
    seen, url = [], "/api/v1/events?limit=2"
    while True:
        body = client.get(url, headers=auditor).get_json()
        seen += [item["id"] for item in body["items"]]
        if body["next_cursor"] is None:
            break
        url = f"/api/v1/events?limit=2&cursor={body['next_cursor']}"
    assert seen == [e["id"] for e in trail]


def test_entries_with_the_same_time_page_without_loss_or_repeat(sqlite_audit, client, mint, events):
    moment = datetime(2025, 5, 1, tzinfo=UTC)
    made = [events(time=moment) for _ in range(5)]
    store(sqlite_audit, made)
    auditor = mint.headers(tenant="vendor", roles=["auditor"])
    first = client.get("/api/v1/events?limit=3", headers=auditor).get_json()
    second = client.get(f"/api/v1/events?limit=3&cursor={first['next_cursor']}", headers=auditor).get_json()
    assert sorted(i["id"] for i in first["items"] + second["items"]) == sorted(e["id"] for e in made)
    assert second["next_cursor"] is None


def test_a_tenant_admin_sees_only_their_own_tenant(client, mint, trail):
    admin = mint.headers(tenant="t1", roles=["tenant_admin"])
    assert ids(client.get("/api/v1/events", headers=admin)) == [e["id"] for e in trail[:3]]
    assert ids(client.get("/api/v1/events?actor=u9", headers=admin)) == []
    response = client.get("/api/v1/events?tenant=t2", headers=admin)
    assert response.status_code == 404 and response.mimetype == "application/problem+json"


def test_other_roles_and_anonymous_callers_are_refused(client, mint, trail):
    assert client.get("/api/v1/events").status_code == 401
    assert client.get("/api/v1/events", headers=mint.headers(roles=["staff"])).status_code == 403
    assert client.get("/api/v1/chains/verify", headers=mint.headers(roles=["staff"])).status_code == 403


@pytest.mark.parametrize(
    "query, field",
    [
        ("since=yesterday", "since"),
        ("until=2025-01-01T00:00:00", "until"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("cursor=bm90LWEtY3Vyc29y", "cursor"),
        ("subject=not a reference", "subject"),
        ("type=Orders.*", "type"),
        ("email=someone@example.com", "email"),
        ("format=xml", "format"),
        ("since=2025-02-01T00:00:00Z&until=2025-01-01T00:00:00Z", "until"),
    ],
)
def test_invalid_query_parameters_are_named_without_echoing_them(client, mint, query, field):
    response = client.get(f"/api/v1/events?{query}", headers=mint.headers(tenant="vendor", roles=["auditor"]))
    assert response.status_code == 422 and response.mimetype == "application/problem+json"
    body = response.get_json()
    assert field in [e["field"] for e in body["errors"]]
    assert "someone@example.com" not in response.get_data(as_text=True)


def test_csv_export_holds_the_same_query_with_formulas_defused(sqlite_audit, client, mint, trail, events):
    sneaky = events(tenant="t1", actor="=HYPERLINK(1)", data={"fields": ["-1+1"]})
    store(sqlite_audit, [sneaky])
    admin = mint.headers(tenant="t1", roles=["tenant_admin"])
    response = client.get("/api/v1/events?format=csv", headers=admin)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["event_id"] for r in rows] == [e["id"] for e in trail[:3]] + [sneaky["id"]]
    assert rows[0]["subject"] == "orders:individual:p1" and rows[0]["chain"] == "tenant:t1"
    assert rows[-1]["actor_id"] == "'=HYPERLINK(1)"
    by_accept = client.get("/api/v1/events?actor=u2", headers={**admin, "Accept": "text/csv"})
    assert [r["event_id"] for r in csv.DictReader(io.StringIO(by_accept.get_data(as_text=True)))] == [
        trail[1]["id"],
        trail[2]["id"],
    ]


def test_verify_reports_every_chain_and_the_first_bad_entry(sqlite_audit, client, mint, trail):
    auditor = mint.headers(tenant="vendor", roles=["auditor"])
    body = client.get("/api/v1/chains/verify", headers=auditor).get_json()
    assert body["status"] == "ok"
    assert [(c["chain"], c["entries_verified"]) for c in body["chains"]] == [
        ("tenant:t1", 3),
        ("tenant:t2", 1),
        ("vendor", 1),
    ]
    with sqlite_audit.db.transaction() as s:
        s.execute(update(entries).where(entries.c.chain == "tenant:t1", entries.c.seq == 2).values(body=b"{}"))
    body = client.get("/api/v1/chains/verify", headers=auditor).get_json()
    assert body["status"] == "broken"
    assert body["chains"][0]["first_bad"]["seq"] == 2 and body["chains"][0]["first_bad"]["problem"] == "changed"
    assert body["chains"][0]["first_bad"]["event_id"] == trail[1]["id"]


def test_a_tenant_admin_verifies_only_their_own_chain(client, mint, trail):
    admin = mint.headers(tenant="t2", roles=["tenant_admin"])
    body = client.get("/api/v1/chains/verify", headers=admin).get_json()
    assert [c["chain"] for c in body["chains"]] == ["tenant:t2"]
    assert client.get("/api/v1/chains/verify?chain=tenant:t1", headers=admin).status_code == 404


def test_the_openapi_document_lists_the_endpoints(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert {"/api/v1/events", "/api/v1/chains/verify"} <= set(paths)
