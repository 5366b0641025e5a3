"""Directory logins against a real OpenLDAP (R10): bind as the user, groups to roles, just-in-time
accounts, disabled and removed users, and a directory that is down."""

from __future__ import annotations

import jwt
import pytest
from sqlalchemy import select

from services.auth.models import users
from tests.auth.conftest import DEMO, build
from tests.conftest import raw_dump
from tests.ldap_server import AD_SETTINGS
from tests.support import assert_no_plaintext, events_of


def claims(tokens: dict) -> dict:
    return jwt.decode(tokens["access_token"], options={"verify_signature": False})


@pytest.fixture
def north(harness, slapd):
    harness.tenant("north")
    harness.directory("north", slapd)
    return harness


@pytest.mark.parametrize("groups_by", ["memberOf", "group search"])
def test_directory_login_creates_the_user_just_in_time_with_groups_mapped_to_roles(harness, slapd, groups_by):
    harness.tenant("north")
    extra = (
        {}
        if groups_by == "memberOf"
        else {"group_search_base": slapd.settings.group_search_base, "group_filter": slapd.settings.group_filter}
    )
    harness.directory("north", slapd, **extra)
    response = harness.login("north", "bob", DEMO["bob"])
    assert response.status_code == 200, response.json
    token = claims(response.json)
    assert token["roles"] == ["staff", "tenant_admin"]  # kitchen-staff -> staff, care-admins -> both
    assert token["groups"] == ["care-admins", "kitchen-staff"]
    with harness.auth.db.transaction() as s:
        view = harness.auth.get_user(s, None, "north", token["sub"])
        (row,) = s.execute(select(users)).all()
    assert (view["username"], view["display_name"], view["email"]) == ("bob", "Bob Berg", "bob@recept.test")
    assert view["source"] == "directory" and row.password_hash is None  # directory passwords are never stored
    (created,) = events_of(harness.runtime, "auth.user.created")
    assert created["data"]["source"] == "directory"
    assert sorted(e["data"]["role"] for e in events_of(harness.runtime, "auth.role.granted")) == [
        "staff",
        "tenant_admin",
    ]
    # The second login finds the same account.
    assert claims(harness.login("north", "bob", DEMO["bob"]).json)["sub"] == token["sub"]
    assert len(events_of(harness.runtime, "auth.user.created")) == 1


def test_the_first_directory_login_belongs_to_the_user_it_creates(north):
    """Art. 15: the login that created the account is in that user's history (found by the e2e run)."""
    from services.auth.models import login_history

    token = claims(north.login("north", "alice", DEMO["alice"]).json)
    with north.auth.db.transaction() as s:
        owners = [
            r.user_id
            for r in s.execute(select(login_history.c.user_id, login_history.c.outcome))
            if r.outcome == "succeeded"
        ]
    assert owners == [token["sub"]]


def test_user_in_no_mapped_group_logs_in_without_roles(north):
    tokens = north.login("north", "erin", DEMO["erin"]).json
    assert claims(tokens)["roles"] == [] and claims(tokens)["groups"] == []


def test_wrong_directory_password_is_refused_and_counts_toward_the_lock(north):
    north.login("north", "alice", DEMO["alice"])
    for _ in range(5):
        assert north.login("north", "alice", "not-alices-password").status_code == 401
    assert len(events_of(north.runtime, "auth.account.locked")) == 1
    assert north.login("north", "alice", DEMO["alice"]).status_code == 401


def test_unknown_directory_user_is_refused_and_not_created(north):
    assert north.login("north", "zelda", "zelda-password-1").status_code == 401
    assert events_of(north.runtime, "auth.user.created") == []
    assert [e["data"]["reason"] for e in events_of(north.runtime, "auth.login.failed")] == ["unknown_user"]


def test_disabled_directory_user_cannot_log_in(north):
    """dave is under ou=disabled: outside the search base, and the directory refuses his bind."""
    assert north.login("north", "dave", DEMO["dave"]).status_code == 401


@pytest.mark.parametrize("username", ["*", "alice)(uid=*", "al*", "alice)(|(uid=*"])
def test_filter_characters_in_a_username_cannot_widen_the_search(north, username):
    assert north.login("north", username, DEMO["alice"]).status_code == 401


def test_user_disabled_or_removed_in_the_directory_loses_access(harness, slapd_fresh):
    harness.tenant("north")
    harness.directory("north", slapd_fresh)
    alice = harness.login("north", "alice", DEMO["alice"]).json
    erin = harness.login("north", "erin", DEMO["erin"]).json
    slapd_fresh.disable_user("alice")
    slapd_fresh.delete_user("erin")
    assert harness.login("north", "alice", DEMO["alice"]).status_code == 401
    assert harness.login("north", "erin", DEMO["erin"]).status_code == 401
    # Refresh asks the directory too, so the sessions end within one access-token lifetime.
    for tokens in (alice, erin):
        assert (
            harness.client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code
            == 401
        )
    assert {e["data"]["reason"] for e in events_of(harness.runtime, "auth.session.revoked")} == {"directory_rejected"}


def test_group_changes_in_the_directory_remap_roles_at_the_next_login(harness, slapd_fresh):
    harness.tenant("north")
    harness.directory("north", slapd_fresh)
    assert claims(harness.login("north", "alice", DEMO["alice"]).json)["roles"] == ["staff"]
    slapd_fresh.add_to_group("alice", "care-admins")
    assert claims(harness.login("north", "alice", DEMO["alice"]).json)["roles"] == ["staff", "tenant_admin"]
    slapd_fresh.remove_from_group("alice", "care-admins")
    slapd_fresh.remove_from_group("alice", "kitchen-staff")
    tokens = harness.login("north", "alice", DEMO["alice"]).json
    assert claims(tokens)["roles"] == [] and claims(tokens)["groups"] == []
    revoked = events_of(harness.runtime, "auth.role.revoked")
    assert sorted(e["data"]["role"] for e in revoked) == ["staff", "tenant_admin"]
    assert all(e["data"]["source"] == "directory" for e in revoked)


def test_directory_down_is_503_and_never_a_failed_password(harness, slapd_fresh):
    harness.tenant("north")
    harness.directory("north", slapd_fresh)
    tokens = harness.login("north", "alice", DEMO["alice"]).json
    slapd_fresh.stop()
    for _ in range(6):  # more than the lock threshold: an outage must not lock anyone out
        response = harness.login("north", "alice", DEMO["alice"])
        assert response.status_code == 503, response.json
        assert response.mimetype == "application/problem+json"
    assert (
        harness.client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 503
    )
    slapd_fresh.start()
    assert harness.login("north", "alice", DEMO["alice"]).status_code == 200
    assert events_of(harness.runtime, "auth.account.locked") == []


def test_a_second_directory_server_is_used_when_the_first_is_down(harness, slapd):
    harness.tenant("north")
    harness.directory("north", slapd, urls=["ldap://127.0.0.1:1", slapd.url])
    assert harness.login("north", "carol", DEMO["carol"]).status_code == 200


def test_refused_service_account_is_503(harness, slapd):
    harness.tenant("north")
    harness.directory("north", slapd, bind_password="not-the-service-password")
    assert harness.login("north", "alice", DEMO["alice"]).status_code == 503
    check = harness.client.post(
        "/api/v1/tenants/north/directory/test", headers=harness.headers("north", ["tenant_admin"])
    )
    assert check.status_code == 503


def test_active_directory_login_with_samaccountname_and_group_search(harness, slapd_ad):
    harness.tenant("north")
    harness.directory(
        "north",
        slapd_ad,
        user_search_base=AD_SETTINGS.user_search_base,
        user_filter=AD_SETTINGS.user_filter,
        username_attribute="sAMAccountName",
        group_search_base=AD_SETTINGS.group_search_base,
        group_filter=AD_SETTINGS.group_filter,
    )
    token = claims(harness.login("north", "asa", DEMO["asa"]).json)
    assert token["roles"] == ["staff"] and token["groups"] == ["kitchen-staff"]
    assert harness.login("north", "dave", DEMO["dave"]).status_code == 401  # userAccountControl: disabled
    with harness.auth.db.transaction() as s:
        assert harness.auth.get_user(s, None, "north", token["sub"])["display_name"] == "Åsa Öberg"


def test_bind_secret_is_encrypted_at_rest_and_never_returned(tmp_path, slapd, database_url):
    harness = build(database_url, tmp_path)
    try:
        harness.tenant("north")
        harness.directory("north", slapd)
        harness.login("north", "asa", DEMO["asa"])
        shown = harness.client.get(
            "/api/v1/tenants/north/directory", headers=harness.headers("north", ["tenant_admin"])
        )
        assert shown.status_code == 200 and shown.json["bind_password_set"] is True
        assert slapd.bind_password not in shown.get_data(as_text=True)
        harness.runtime.db.dispose()
        assert_no_plaintext(raw_dump(database_url), [slapd.bind_password, DEMO["asa"], "Åsa Öberg", "asa@recept.test"])
    finally:
        harness.runtime.db.dispose()


def test_plain_ldap_is_refused_unless_explicitly_allowed(tmp_path, slapd):
    harness = build(f"sqlite:///{tmp_path / 'auth.db'}", tmp_path, ALLOW_PLAIN_LDAP=False)
    try:
        harness.tenant("north")
        body = {
            "urls": [slapd.url],
            "tls": "none",
            "bind_dn": slapd.bind_dn,
            "bind_password": "x",
            "user_search_base": slapd.people_dn,
            "user_filter": "(uid={username})",
        }
        response = harness.client.put(
            "/api/v1/tenants/north/directory", json=body, headers=harness.headers("north", ["tenant_admin"])
        )
        assert response.status_code == 422
        assert {e["field"] for e in response.json["errors"]} == {"tls"}
        body.update(tls="ldaps")
        response = harness.client.put(
            "/api/v1/tenants/north/directory", json=body, headers=harness.headers("north", ["tenant_admin"])
        )
        assert {e["field"] for e in response.json["errors"]} == {"urls.0"}  # ldap:// with tls=ldaps
    finally:
        harness.runtime.db.dispose()


def test_moving_the_directory_needs_the_bind_secret_again(harness):
    """Security review (issue 14): a tenant admin who changes where or how auth connects (URLs, TLS, CA,
    bind DN) re-enters the bind password; otherwise the stored secret could be sent to a host of their
    choosing by the connection test.  Other settings still change without it."""
    import socket
    from types import SimpleNamespace

    harness.tenant("north")
    nowhere = SimpleNamespace(
        url="ldap://127.0.0.1:1",
        bind_dn="cn=svc,dc=north",
        bind_password="stored-secret",
        settings=SimpleNamespace(
            user_search_base="ou=people,dc=north", user_filter="(uid={username})", username_attribute="uid"
        ),
    )
    harness.directory("north", nowhere)
    admin = harness.headers("north", ["tenant_admin"])
    current = harness.client.get("/api/v1/tenants/north/directory", headers=admin).json
    body = {
        k: current[k]
        for k in (
            "urls",
            "tls",
            "bind_dn",
            "user_search_base",
            "user_filter",
            "username_attribute",
            "group_roles",
            "timeout",
        )
    }
    with socket.socket() as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen(5)
        trap.settimeout(0.5)
        elsewhere = f"ldap://127.0.0.1:{trap.getsockname()[1]}"
        for change in (
            {"urls": [elsewhere]},
            {"bind_dn": "cn=other,dc=north"},
            {"ca_certificates": "-----X-----"},
            {"tls": "starttls"},
        ):
            response = harness.client.put("/api/v1/tenants/north/directory", json={**body, **change}, headers=admin)
            assert response.status_code == 422, (change, response.json)
            assert response.mimetype == "application/problem+json"
            assert [e["field"] for e in response.json["errors"]] == ["bind_password"]
        assert harness.client.get("/api/v1/tenants/north/directory", headers=admin).json["urls"] == current["urls"]
        harness.client.post("/api/v1/tenants/north/directory/test", headers=admin)
        with pytest.raises(socket.timeout):
            trap.accept()  # nothing (least of all the stored secret) went to the new host
    # A change that does not move the connection needs no secret; one that does, with the secret, is taken.
    relaxed = harness.client.put("/api/v1/tenants/north/directory", json={**body, "timeout": 3.0}, headers=admin)
    assert relaxed.status_code == 200 and relaxed.json["timeout"] == 3.0
    moved = harness.client.put(
        "/api/v1/tenants/north/directory",
        json={**body, "urls": ["ldap://127.0.0.1:2"], "bind_password": "a-new-secret"},
        headers=admin,
    )
    assert moved.status_code == 200 and moved.json["urls"] == ["ldap://127.0.0.1:2"]
