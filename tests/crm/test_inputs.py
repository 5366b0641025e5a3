"""The crm refuses text it could not store or show faithfully (issue 18): a field-level 422, nothing written."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from services.crm.models import persons


@pytest.mark.parametrize("name", ["\\ud800", "Pia\\u0000Person", "\\u202ePia", "Pia\\u2067x", "Pia\\nPerson"])
def test_a_person_name_with_unacceptable_text_is_refused(crm, name):
    company = crm.company()
    raw = ('{"name": "%s", "email": "pia@example.se"}' % name).encode()
    response = crm.client.post(
        f"/api/v1/companies/{company['id']}/persons", data=raw, content_type="application/json", headers=crm.support
    )
    assert response.status_code == 422 and response.mimetype == "application/problem+json"
    assert [e["field"] for e in response.get_json()["errors"]] == ["name"]
    with crm.runtime.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(persons)) == 0


def test_duplicate_keys_are_refused_by_the_shared_layer(crm_lite):
    response = crm_lite.client.post(
        "/api/v1/companies",
        data=b'{"name": "A", "name": "B"}',
        content_type="application/json",
        headers=crm_lite.support,
    )
    assert response.status_code == 422
    assert response.get_json()["errors"] == [{"field": "name", "message": "has a duplicate key"}]


def test_a_case_description_may_span_lines_but_its_subject_may_not(crm_lite):
    company = crm_lite.company()
    body = {"company_id": company["id"], "subject": "Login fails", "description": "line one\nline two"}
    assert crm_lite.client.post("/api/v1/cases", json=body, headers=crm_lite.support).status_code == 201
    body["subject"] = "Login\nfails"
    response = crm_lite.client.post("/api/v1/cases", json=body, headers=crm_lite.support)
    assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == "subject"


def test_page_limits_are_in_the_published_schema(crm_lite):
    spec = crm_lite.client.get("/openapi.json").get_json()
    limit = next(p for p in spec["paths"]["/api/v1/companies"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["pattern"] == "^([1-9][0-9]?|[1-4][0-9][0-9]|500)$"
    for value, status in (("0", 422), ("501", 422), ("500", 200), ("1", 200)):
        assert crm_lite.client.get(f"/api/v1/companies?limit={value}", headers=crm_lite.support).status_code == status
