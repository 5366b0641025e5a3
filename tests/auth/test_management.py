"""Tenants with their agreements (R5), users and roles: who may manage what, and what is recorded."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from services.auth.models import tenants, users
from tests.auth.conftest import PASSWORD
from tests.conftest import raw_dump
from tests.support import assert_no_plaintext, events_of, wait_for


@pytest.fixture
def two(harness):
    harness.tenant("vendor", "Recept AB")
    harness.tenant("north", "North Municipality")
    harness.tenant("south", "South Region")
    return harness


def test_vendor_admin_creates_a_tenant_with_its_agreement_and_the_signatory_is_encrypted(both):
    """R5: the data processing agreement (version, date, signatory) is recorded per tenant."""
    both.tenant("vendor")
    body = {
        "slug": "east",
        "name": "East School",
        "agreement": {"version": "2.1", "signed_on": "2026-01-15", "signatory": "Sigrid Signatorysson"},
    }
    response = both.client.post("/api/v1/tenants", json=body, headers=both.vendor_admin())
    assert response.status_code == 201, response.json
    assert response.json["kind"] == "customer"
    assert response.json["agreement"] == {
        "version": "2.1",
        "signed_on": "2026-01-15",
        "signatory": "Sigrid Signatorysson",
    }
    assert both.client.post("/api/v1/tenants", json=body, headers=both.vendor_admin()).status_code == 409
    (changed,) = events_of(both.runtime, "auth.agreement.changed")
    assert changed["data"]["fields"] == ["version", "signed_on", "signatory"]
    assert_no_plaintext(str(events_of(both.runtime)).encode(), ["Sigrid Signatorysson"])
    both.runtime.db.dispose()
    assert_no_plaintext(raw_dump(both.url), ["Sigrid Signatorysson"])


def test_only_vendor_admins_create_tenants(two):
    body = {"slug": "west", "name": "West"}
    assert (
        two.client.post("/api/v1/tenants", json=body, headers=two.headers("north", ["tenant_admin"])).status_code == 403
    )
    assert two.client.post("/api/v1/tenants", json=body, headers=two.headers("vendor", ["support"])).status_code == 403
    assert two.client.post("/api/v1/tenants", json=body).status_code == 401


def test_a_tenant_admin_cannot_touch_another_tenant(two):
    """Another tenant's tenant record, directory and users do not exist for a tenant admin: 404."""
    south_user = two.user("south", "sam")
    north_admin = two.headers("north", ["tenant_admin"])
    attempts = [
        two.client.get("/api/v1/tenants/south", headers=north_admin),
        two.client.get("/api/v1/tenants/south/users", headers=north_admin),
        two.client.post(
            "/api/v1/tenants/south/users", json={"username": "x", "password": PASSWORD}, headers=north_admin
        ),
        two.client.get(f"/api/v1/tenants/south/users/{south_user['id']}", headers=north_admin),
        two.client.patch(
            f"/api/v1/tenants/south/users/{south_user['id']}", json={"status": "disabled"}, headers=north_admin
        ),
        two.client.delete(f"/api/v1/tenants/south/users/{south_user['id']}", headers=north_admin),
        two.client.post(
            f"/api/v1/tenants/south/users/{south_user['id']}/roles", json={"role": "tenant_admin"}, headers=north_admin
        ),
        two.client.put(
            "/api/v1/tenants/south/directory",
            json={
                "urls": ["ldaps://dc.south.test"],
                "tls": "ldaps",
                "bind_dn": "cn=x",
                "bind_password": "y",
                "user_search_base": "dc=south",
                "user_filter": "(uid={username})",
            },
            headers=north_admin,
        ),
        two.client.post("/api/v1/tenants/south/users/search", json={"username": "sam"}, headers=north_admin),
    ]
    assert [a.status_code for a in attempts] == [404] * len(attempts)
    # The same user, addressed through the admin's own tenant, is not found either.
    assert two.client.get(f"/api/v1/tenants/north/users/{south_user['id']}", headers=north_admin).status_code == 404
    with two.auth.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(users)) == 1
    assert events_of(two.runtime, "auth.user.disabled") == []


def test_a_tenant_admin_manages_users_of_their_own_tenant(two):
    admin = two.headers("north", ["tenant_admin"])
    created = two.client.post(
        "/api/v1/tenants/north/users",
        headers=admin,
        json={
            "username": "Nils",
            "display_name": "Nils Nilsson",
            "email": "Nils@North.test",
            "roles": ["staff"],
            "password": PASSWORD,
        },
    )
    assert created.status_code == 201, created.json
    user_id = created.json["id"]
    assert (created.json["username"], created.json["email"]) == ("nils", "nils@north.test")
    assert (
        two.client.post(
            "/api/v1/tenants/north/users", headers=admin, json={"username": "NILS", "password": PASSWORD}
        ).status_code
        == 409
    )
    found = two.client.post("/api/v1/tenants/north/users/search", headers=admin, json={"email": "nils@north.test"})
    assert [u["id"] for u in found.json] == [user_id]
    granted = two.client.post(
        f"/api/v1/tenants/north/users/{user_id}/roles", headers=admin, json={"role": "tenant_admin"}
    )
    assert granted.json["roles"] == ["staff", "tenant_admin"]
    revoked = two.client.delete(f"/api/v1/tenants/north/users/{user_id}/roles/staff", headers=admin)
    assert revoked.json["roles"] == ["tenant_admin"]
    changed = two.client.patch(
        f"/api/v1/tenants/north/users/{user_id}", headers=admin, json={"display_name": "Nils N.", "email": None}
    )
    assert (changed.json["display_name"], changed.json["email"]) == ("Nils N.", None)
    assert two.client.delete(f"/api/v1/tenants/north/users/{user_id}", headers=admin).status_code == 204
    assert two.client.get(f"/api/v1/tenants/north/users/{user_id}", headers=admin).status_code == 404
    types = [
        e["type"]
        for e in events_of(two.runtime)
        if e["type"].startswith("auth.user.") or e["type"].startswith("auth.role.")
    ]
    assert types == [
        "auth.user.created",
        "auth.role.granted",
        "auth.role.granted",
        "auth.role.revoked",
        "auth.user.updated",
        "auth.user.disabled",
        "auth.user.deleted",
    ]
    (updated,) = events_of(two.runtime, "auth.user.updated")
    assert updated["data"] == {"user_id": user_id, "fields": ["display_name", "email"]}
    assert_no_plaintext(str(events_of(two.runtime)).encode(), ["nils", "Nils Nilsson", "nils@north.test", PASSWORD])


def test_staff_cannot_manage_users_and_roles_must_fit_the_tenant(two):
    user = two.user("north", "nora")
    staff = two.headers("north", ["staff"])
    assert two.client.get("/api/v1/tenants/north/users", headers=staff).status_code == 403
    admin = two.headers("north", ["tenant_admin"])
    # A tenant admin cannot hand out vendor roles, and vendor roles do not exist in customer tenants.
    response = two.client.post(
        f"/api/v1/tenants/north/users/{user['id']}/roles", headers=admin, json={"role": "vendor_admin"}
    )
    assert response.status_code == 422
    response = two.client.post(
        f"/api/v1/tenants/north/users/{user['id']}/roles", headers=two.vendor_admin(), json={"role": "vendor_admin"}
    )
    assert response.status_code == 422
    response = two.client.post(
        "/api/v1/tenants/vendor/users",
        headers=two.vendor_admin(),
        json={"username": "vera", "roles": ["staff"], "password": PASSWORD},
    )
    assert response.status_code == 422
    response = two.client.post(
        "/api/v1/tenants/vendor/users",
        headers=two.vendor_admin(),
        json={"username": "vera", "roles": ["support"], "password": PASSWORD},
    )
    assert response.status_code == 201


def test_vendor_role_in_a_customer_tenants_token_grants_nothing_across_tenants(two):
    """Vendor powers come only with the vendor tenant: a forged mix of tenant and role is refused."""
    two.user("south", "sam")
    mixed = two.headers("north", ["vendor_admin", "tenant_admin"])
    assert two.client.get("/api/v1/tenants/south/users", headers=mixed).status_code == 404
    assert two.client.post("/api/v1/tenants", json={"slug": "west", "name": "West"}, headers=mixed).status_code == 403


def test_invalid_input_writes_nothing(two):
    admin = two.headers("north", ["tenant_admin"])
    bad = [
        {"username": "olle", "password": "tiny-pw"},
        {"username": "olle", "password": PASSWORD, "email": "not-an-address"},
        {"username": "olle", "password": PASSWORD, "roles": ["pilot"]},
        {"username": "olle", "password": PASSWORD, "unexpected": True},
        {"username": "", "password": PASSWORD},
    ]
    for body in bad:
        response = two.client.post("/api/v1/tenants/north/users", headers=admin, json=body)
        assert response.status_code == 422, body
        text = response.get_data(as_text=True)
        assert "tiny-pw" not in text and "not-an-address" not in text
    assert (
        two.client.post(
            "/api/v1/tenants", headers=two.vendor_admin(), json={"slug": "Bad Slug!", "name": "x"}
        ).status_code
        == 422
    )
    assert (
        two.client.put(
            "/api/v1/tenants/north/agreement",
            headers=two.vendor_admin(),
            json={"version": "1", "signed_on": "2999-01-01", "signatory": "Future Person"},
        ).status_code
        == 422
    )
    with two.auth.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(users)) == 0
        assert s.scalar(select(func.count()).select_from(tenants)) == 3
    assert events_of(two.runtime, "auth.user.created") == []


def test_unknown_ids_are_404_and_malformed_ids_too(two):
    admin = two.headers("north", ["tenant_admin"])
    assert two.client.get(f"/api/v1/tenants/north/users/{uuid.uuid4()}", headers=admin).status_code == 404
    assert two.client.get("/api/v1/tenants/north/users/not-a-uuid", headers=admin).status_code == 404


def test_admin_unlocks_a_locked_account(two):
    user = two.user("north", "lina")
    for _ in range(5):
        two.login("north", "lina", "a-wrong-password")
    assert two.login("north", "lina", PASSWORD).status_code == 401
    response = two.client.post(
        f"/api/v1/tenants/north/users/{user['id']}/unlock", headers=two.headers("north", ["tenant_admin"])
    )
    assert response.status_code == 200 and response.json["locked_until"] is None
    assert two.login("north", "lina", PASSWORD).status_code == 200


def test_user_changes_their_own_password(two):
    user = two.user("north", "pia")
    bearer = {"Authorization": f"Bearer {two.login('north', 'pia', PASSWORD).json['access_token']}"}
    assert (
        two.client.post(
            "/api/v1/auth/password",
            headers=bearer,
            json={"current_password": "not the password", "new_password": "a brand new password"},
        ).status_code
        == 403
    )
    assert (
        two.client.post(
            "/api/v1/auth/password", headers=bearer, json={"current_password": PASSWORD, "new_password": "short"}
        ).status_code
        == 422
    )
    assert (
        two.client.post(
            "/api/v1/auth/password",
            headers=bearer,
            json={"current_password": PASSWORD, "new_password": "a brand new password"},
        ).status_code
        == 204
    )
    assert two.login("north", "pia", PASSWORD).status_code == 401
    assert two.login("north", "pia", "a brand new password").status_code == 200
    (event,) = events_of(two.runtime, "auth.password.changed")
    assert event["data"] == {"user_id": user["id"], "by": "self"}


def test_openapi_documents_every_endpoint_and_jwks_is_public(harness):
    spec = harness.client.get("/openapi.json").json
    assert {
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/.well-known/jwks.json",
        "/api/v1/tenants",
        "/api/v1/tenants/{slug}/users",
        "/api/v1/tenants/{slug}/directory",
    } <= set(spec["paths"])
    assert spec["paths"]["/api/v1/auth/login"]["post"]["security"] == []
    assert harness.client.get("/.well-known/jwks.json").status_code == 200


def test_a_tenant_admin_grants_the_privacy_officer_role_and_a_directory_group_maps_to_it(two):
    """Issue 15: ``privacy_officer`` is a customer-tenant role; a tenant admin grants it and a directory group
    may map to it, while the vendor tenant has no such role."""
    user = two.user("north", "petra")
    admin = two.headers("north", ["tenant_admin"])
    granted = two.client.post(
        f"/api/v1/tenants/north/users/{user['id']}/roles", headers=admin, json={"role": "privacy_officer"}
    )
    assert granted.status_code == 200, granted.json
    assert "privacy_officer" in granted.json["roles"]
    roles = {r["role"]: r["scope"] for r in two.client.get("/api/v1/roles", headers=admin).json}
    assert roles["privacy_officer"] == "tenant"
    vendor = two.client.post(
        "/api/v1/tenants/vendor/users",
        headers=two.vendor_admin(),
        json={"username": "vega", "roles": ["privacy_officer"], "password": PASSWORD},
    )
    assert vendor.status_code == 422 and vendor.json["errors"][0]["field"] == "roles"
    with two.auth.db.transaction() as s:
        directory = two.auth.set_directory(
            s,
            None,
            "north",
            {
                "urls": ["ldap://127.0.0.1:1"],
                "tls": "none",
                "bind_dn": "cn=svc,dc=north",
                "bind_password": "secret",
                "user_search_base": "ou=people,dc=north",
                "user_filter": "(uid={username})",
                "username_attribute": "uid",
                "group_roles": {"privacy": ["privacy_officer"]},
                "timeout": 2.0,
            },
        )
    assert directory["group_roles"] == {"privacy": ["privacy_officer"]}


def test_auth_announces_its_tenants_and_the_gdpr_replica_learns_them_from_those_events(two, tmp_path):
    """Issue 15: auth.tenant.announced on creation, on an agreement change and from the worker's loop (so a
    gdpr service started later learns every tenant), with kind and agreement but never the signatory; fed to
    the gdpr service's subscription handler, the events make its replica."""
    from services.auth.worker import tenant_announce_loop
    from services.gdpr import tenants as replica
    from tests.gdpr.test_requests import Gdpr

    two.client.put(
        "/api/v1/tenants/north/agreement",
        json={"version": "PUB 2", "signed_on": "2025-11-03", "signatory": "Siv Sund"},
        headers=two.vendor_admin(),
    )
    announced = events_of(two.runtime, "auth.tenant.announced")
    assert [(e["tenant"], e["data"]["agreement"]) for e in announced] == [
        ("vendor", None),
        ("north", None),
        ("south", None),
        ("north", {"version": "PUB 2", "signed_on": "2025-11-03"}),
    ]
    assert_no_plaintext(str(announced).encode(), ["Siv Sund"])

    import threading

    stop = threading.Event()
    loop = threading.Thread(target=tenant_announce_loop(two.auth, 3600.0), args=(stop,))
    loop.start()
    try:
        assert wait_for(lambda: len(events_of(two.runtime, "auth.tenant.announced")) == 7, timeout=10)
    finally:
        stop.set()
        loop.join(timeout=10)
    again = events_of(two.runtime, "auth.tenant.announced")[4:]
    assert sorted(e["tenant"] for e in again) == ["north", "south", "vendor"]

    gdpr = Gdpr(f"sqlite:///{tmp_path / 'gdpr.db'}")
    try:
        (handler,) = [s.handler for s in gdpr.rt.wiring.subscriptions if s.pattern == "auth.tenant.announced"]
        with gdpr.rt.db.transaction() as s:
            for event in again:
                handler(s, event)
        with gdpr.rt.db.transaction() as s:
            north, south = replica.find(s, "north"), replica.find(s, "south")
            assert replica.agreement_of(north) == {"version": "PUB 2", "signed_on": "2025-11-03"}
            assert replica.agreement_of(south) is None and replica.find(s, "vendor").kind == "vendor"
    finally:
        gdpr.rt.db.dispose()
