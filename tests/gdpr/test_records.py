"""One customer's records of processing (issue 15, GDPR art. 30(2); R3, R5): the inventory with that tenant's
live counts as the participants announce them, where each kind is stored, and the tenant's agreement; its own
privacy officer reads it, another tenant's officer finds nothing (404), vendor officers and auditors read all."""

from __future__ import annotations

import csv
import io

import pytest

from shared.privacy import announcement
from tests.conftest import raw_dump
from tests.gdpr.participants import make_fake
from tests.gdpr.test_requests import AGREEMENT, EMAIL, Gdpr, announce_tenant
from tests.support import assert_no_plaintext

# What the fake "alpha" service reports: t1 holds 3 persons, t2 holds 5 (numbers only, per tenant slug).
ALPHA_PER_TENANT = {"t1": {"person": 3}, "t2": {"person": 5}}


@pytest.fixture
def gdpr(database_url, tmp_path):
    service = Gdpr(database_url)
    fake = make_fake("alpha", f"sqlite:///{tmp_path / 'alpha.db'}", "memory://", mode="anonymise")
    try:
        wire = announcement(fake.runtime)
        wire["tenant_counts"] = ALPHA_PER_TENANT
        with service.rt.db.transaction() as s:
            service.coordinator.on_announce(s, wire)
    finally:
        fake.close()
    # "beta" counts only in all (no tenant_counts in its announcement): null for one tenant, not a guess.
    beta = make_fake("beta", f"sqlite:///{tmp_path / 'beta.db'}", "memory://")
    try:
        with service.rt.db.transaction() as s:
            service.coordinator.on_announce(s, announcement(beta.runtime))
    finally:
        beta.close()
    announce_tenant(service.rt, "quiet", agreement=None)
    yield service
    service.rt.db.dispose()


def _records(gdpr, slug: str, tenant: str = "vendor", roles=("compliance_officer",), fmt: str = ""):
    query = f"?format={fmt}" if fmt else ""
    return gdpr.client.get(f"/api/v1/tenants/{slug}/records{query}", headers=gdpr.headers(tenant=tenant, roles=roles))


def _categories(document: dict) -> dict[tuple[str, str], dict]:
    return {(s["service"], c["kind"]): c for s in document["services"] for c in s["categories"]}


def test_a_privacy_officer_reads_its_own_tenants_counts_storage_and_agreement(gdpr):
    officer = {"tenant": "t1", "roles": ("privacy_officer",)}
    opened = gdpr.open("erase", tenant="t1", headers=gdpr.headers(**officer))
    assert opened.status_code == 202, opened.json

    response = _records(gdpr, "t1", **officer)
    assert response.status_code == 200, response.json
    document = response.json
    assert document["tenant"] == "t1" and document["agreement"] == AGREEMENT
    kinds = _categories(document)
    person = kinds[("alpha", "person")]
    assert person["count"] == 3  # t1's own, not the 8 of all tenants
    assert person["storage"] == "alpha database, table people"
    assert person["role"] == "processor" and person["controller"] == "tenant (customer)"
    assert person["legal_basis"] and person["purposes"] and person["retention"]
    assert person["special_categories"] == ["diet"]
    assert kinds[("gdpr", "data_subject_request")]["count"] == 1
    assert kinds[("beta", "person")]["count"] is None
    assert kinds[("gdpr", "export_package")]["count"] == 0  # counted per tenant, none of t1's

    # The vendor's compliance officer reads the other tenant too: its own numbers.
    other = _categories(_records(gdpr, "t2").json)
    assert other[("alpha", "person")]["count"] == 5
    assert other[("gdpr", "data_subject_request")]["count"] == 0
    auditor = _records(gdpr, "t1", roles=("auditor",))
    assert auditor.status_code == 200 and _categories(auditor.json)[("alpha", "person")]["count"] == 3

    # Numbers only: the subject's identifier is nowhere in the document (nor, stored, in the database).
    assert EMAIL not in response.get_data(as_text=True)
    assert_no_plaintext(raw_dump(gdpr.url), [EMAIL])


def test_another_tenants_officer_finds_nothing_and_unknown_tenants_are_404(gdpr):
    officer = {"tenant": "t1", "roles": ("privacy_officer",)}
    denied = _records(gdpr, "t2", **officer)
    assert denied.status_code == 404 and denied.mimetype == "application/problem+json"
    assert "t2" not in denied.get_data(as_text=True).replace("/t2/", "")
    assert _records(gdpr, "nosuch").status_code == 404
    assert _records(gdpr, "t1", tenant="t1", roles=("staff",)).status_code == 403
    assert _records(gdpr, "t1", fmt="xml").status_code == 422
    # A tenant auth announced without an agreement: the records say so (null), they are not refused.
    quiet = _records(gdpr, "quiet")
    assert quiet.status_code == 200 and quiet.json["agreement"] is None
    assert _categories(quiet.json)[("alpha", "person")]["count"] == 0


def test_the_records_as_csv_carry_the_tenants_counts(gdpr):
    response = _records(gdpr, "t2", fmt="csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "recept-records-t2.csv" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    person = [r for r in rows if (r["service"], r["kind"]) == ("alpha", "person")]
    assert {r["field"] for r in person} == {"email", "name", "diet"}
    assert {r["count"] for r in person} == {"5"} and {r["storage"] for r in person} == {"alpha database, table people"}
