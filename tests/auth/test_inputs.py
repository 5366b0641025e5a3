"""Input the auth service refuses with a 422 problem instead of a 500 or a silent acceptance (issue 18)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from services.auth.models import directories, users
from tests.auth.conftest import PASSWORD


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/problem+json"
    return response.get_json(force=True)


def raw_post(harness, path: str, text: str, headers=None):
    return harness.client.post(
        path, data=text.encode("utf-8", "surrogatepass"), content_type="application/json", headers=headers or {}
    )


def test_deeply_nested_json_on_login_is_a_422_not_a_recursion_error(harness):
    body = assert_problem(raw_post(harness, "/api/v1/auth/login", "[" * 100_000), 422)
    assert "nested" in body["detail"]


def test_duplicate_keys_on_login_are_refused(harness):
    harness.tenant("north")
    harness.user("north", "nils")
    text = (
        json.dumps({"tenant": "north", "username": "nils", "password": "wrong"})[:-1] + f', "password": "{PASSWORD}"}}'
    )
    body = assert_problem(raw_post(harness, "/api/v1/auth/login", text), 422)
    assert body["errors"] == [{"field": "password", "message": "has a duplicate key"}]


@pytest.mark.parametrize("name", ["\\ud800", "Nils\\u0000Nilsson", "\\u202eNils", "Nils\\u2066x"])
def test_unacceptable_text_in_a_name_is_a_field_level_422_and_writes_nothing(both, name):
    """A lone surrogate cannot be encrypted or stored; NUL breaks PostgreSQL; U+202E disguises a name."""
    both.tenant("north")
    text = '{"username": "nils", "display_name": "%s", "password": "%s"}' % (name, PASSWORD)
    body = assert_problem(
        raw_post(both, "/api/v1/tenants/north/users", text, both.headers("north", ["tenant_admin"])), 422
    )
    assert [e["field"] for e in body["errors"]] == ["display_name"]
    with both.auth.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(users)) == 0


def test_a_line_break_in_a_single_line_field_is_refused(harness):
    harness.tenant("north")
    response = harness.client.post(
        "/api/v1/tenants/north/users",
        headers=harness.headers("north", ["tenant_admin"]),
        json={"username": "nils\nadmin", "password": PASSWORD},
    )
    body = assert_problem(response, 422)
    assert body["errors"] == [{"field": "username", "message": "must be a single line (no line breaks or tabs)"}]


@pytest.mark.parametrize(
    "field, value",
    [
        ("user_filter", "(&(uid={username})(objectClass=person)"),
        ("user_filter", "(uid={username}))"),
        ("user_filter", "uid={username}"),
        ("group_filter", "(member={user_dn}"),
    ],
)
def test_an_unbalanced_ldap_filter_is_refused_when_configured(harness, field, value):
    harness.tenant("north")
    settings = {
        "urls": ["ldap://ldap.example:389"],
        "tls": "none",
        "bind_dn": "cn=svc,dc=example",
        "bind_password": "secret",
        "user_search_base": "ou=people,dc=example",
        "user_filter": "(uid={username})",
        "group_search_base": "ou=groups,dc=example",
    }
    settings[field] = value
    response = harness.client.put(
        "/api/v1/tenants/north/directory", json=settings, headers=harness.headers("north", ["tenant_admin"])
    )
    body = assert_problem(response, 422)
    assert {"field": field, "message": "is not a valid LDAP filter (RFC 4515)"} in body["errors"]
    with harness.auth.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(directories)) == 0
    settings[field] = "(&(uid={username})(objectClass=person))" if field == "user_filter" else "(member={user_dn})"
    assert (
        harness.client.put(
            "/api/v1/tenants/north/directory", json=settings, headers=harness.headers("north", ["tenant_admin"])
        ).status_code
        == 200
    )


def test_a_short_new_password_is_refused_by_the_documented_schema(harness):
    harness.tenant("north")
    spec = harness.client.get("/openapi.json").json
    schema = spec["paths"]["/api/v1/tenants/{slug}/users"]["post"]["requestBody"]["content"]["application/json"]
    assert schema["schema"]["properties"]["password"]["minLength"] == 12
    response = harness.client.post(
        "/api/v1/tenants/north/users",
        headers=harness.headers("north", ["tenant_admin"]),
        json={"username": "nils", "password": "elevenchars"},
    )
    assert assert_problem(response, 422)["errors"][0]["field"] == "password"
