"""Local logins, brute-force protection, refresh-token rotation and logout (R6, API.md)."""

from __future__ import annotations

import io
import logging

import pytest
from sqlalchemy import select

from services.auth.models import client_failures, login_history, refresh_tokens
from shared.logs import JsonFormatter
from tests.auth.conftest import PASSWORD, build
from tests.conftest import raw_dump
from tests.support import assert_no_plaintext, events_of


def _generic(response) -> dict:
    body = dict(response.json)
    body.pop("request_id", None)
    return body


def test_local_login_gives_tokens_and_records_an_event_without_personal_values(both):
    """R6 on SQLite and PostgreSQL: a local login issues tokens; the event holds ids only."""
    both.tenant("north")
    user = both.user("north", "Kim.Local", email="kim.local@north.test", display_name="Kim Localsson")
    response = both.login("north", "  kim.local ", PASSWORD)  # usernames compare trimmed and case-folded
    assert response.status_code == 200, response.json
    assert set(response.json) == {"access_token", "token_type", "expires_in", "refresh_token"}
    (event,) = events_of(both.runtime, "auth.login.succeeded")
    assert event["data"] == {
        "user_id": user["id"],
        "tenant_id": event["data"]["tenant_id"],
        "method": "local",
        "session_id": event["data"]["session_id"],
        "roles": ["staff"],
    }
    assert event["subject"] == f"auth:user:{user['id']}"
    assert_no_plaintext(
        str(events_of(both.runtime)).encode(), ["kim.local", "Kim Localsson", "kim.local@north.test", PASSWORD]
    )


def test_every_kind_of_failure_answers_with_the_same_401(harness):
    """API.md: one generic message for unknown tenant or user, wrong password, disabled, locked."""
    harness.tenant("north")
    harness.user("north", "kim")
    disabled = harness.user("north", "dis")
    with harness.auth.db.transaction() as s:
        harness.auth.update_user(s, None, "north", disabled["id"], {"status": "disabled"})
    answers = [
        harness.login("nowhere", "kim", PASSWORD),
        harness.login("north", "nobody", PASSWORD),
        harness.login("north", "kim", "wrong password!"),
        harness.login("north", "dis", PASSWORD),
    ]
    for _ in range(4):
        harness.login("north", "kim", "wrong password!")
    answers.append(harness.login("north", "kim", PASSWORD))  # locked now, though the password is right
    assert [a.status_code for a in answers] == [401] * 5
    assert all(_generic(a) == _generic(answers[0]) for a in answers)
    reasons = [e["data"]["reason"] for e in events_of(harness.runtime, "auth.login.failed")]
    assert reasons == ["unknown_tenant", "unknown_user", "wrong_password", "disabled"] + ["wrong_password"] * 4 + [
        "locked"
    ]


def test_account_locks_after_five_failures_and_unlocks_after_the_wait(harness):
    harness.tenant("north")
    user = harness.user("north", "kim")
    for _ in range(5):
        assert harness.login("north", "kim", "wrong password!").status_code == 401
    (locked,) = events_of(harness.runtime, "auth.account.locked")
    assert locked["data"]["user_id"] == user["id"] and locked["data"]["failures"] == 5
    assert harness.login("north", "kim", PASSWORD).status_code == 401
    harness.clock.advance(899)
    assert harness.login("north", "kim", PASSWORD).status_code == 401
    harness.clock.advance(2)
    assert harness.login("north", "kim", PASSWORD).status_code == 200


def test_a_successful_login_resets_the_failure_count(harness):
    harness.tenant("north")
    harness.user("north", "kim")
    for _ in range(4):
        harness.login("north", "kim", "wrong password!")
    assert harness.login("north", "kim", PASSWORD).status_code == 200
    for _ in range(4):
        harness.login("north", "kim", "wrong password!")
    assert harness.login("north", "kim", PASSWORD).status_code == 200
    assert events_of(harness.runtime, "auth.account.locked") == []


def test_a_client_address_that_keeps_failing_is_blocked_for_a_while(tmp_path):
    harness = build(f"sqlite:///{tmp_path / 'auth.db'}", tmp_path, CLIENT_MAX_FAILURES=3, CLIENT_WINDOW_SECONDS=60)
    try:
        harness.tenant("north")
        harness.user("north", "kim")
        for name in ("ann", "ben", "cid"):  # password spraying over unknown accounts
            harness.login("north", name, PASSWORD, address="198.51.100.7")
        assert harness.login("north", "kim", PASSWORD, address="198.51.100.7").status_code == 401
        assert harness.login("north", "kim", PASSWORD, address="198.51.100.8").status_code == 200
        harness.clock.advance(61)
        assert harness.login("north", "kim", PASSWORD, address="198.51.100.7").status_code == 200
        with harness.auth.db.transaction() as s:
            stored = [r.client for r in s.execute(select(client_failures))]
            history = [r.client for r in s.execute(select(login_history))]
        assert stored and all(isinstance(c, int) for c in stored + history)  # a keyed hash, not the address
        assert_no_plaintext(raw_dump(harness.url), ["198.51.100.7", "198.51.100.8"])
    finally:
        harness.runtime.db.dispose()


def test_refresh_rotates_and_reusing_an_old_refresh_token_ends_the_session(both):
    both.tenant("north")
    both.user("north", "kim")
    first = both.login("north", "kim", PASSWORD).json
    second = both.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    assert second.json["refresh_token"] != first["refresh_token"]
    third = both.client.post("/api/v1/auth/refresh", json={"refresh_token": second.json["refresh_token"]})
    assert third.status_code == 200
    # The first token comes back (stolen copy): the whole family is revoked, the newest token too.
    reuse = both.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    after = both.client.post("/api/v1/auth/refresh", json={"refresh_token": third.json["refresh_token"]})
    assert after.status_code == 401
    (revoked,) = events_of(both.runtime, "auth.session.revoked")
    assert revoked["data"]["reason"] == "reuse_detected"
    # A separate login (another device) is not affected.
    other = both.login("north", "kim", PASSWORD).json
    assert both.client.post("/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}).status_code == 200


def test_refresh_tokens_are_stored_only_as_hashes_and_expire(harness):
    harness.tenant("north")
    harness.user("north", "kim")
    tokens = harness.login("north", "kim", PASSWORD).json
    with harness.auth.db.transaction() as s:
        (row,) = s.execute(select(refresh_tokens)).all()
    assert tokens["refresh_token"] not in row.token_hash and len(row.token_hash) == 64
    harness.clock.advance(43_201)
    assert (
        harness.client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    )


def test_logout_revokes_the_session_and_only_the_callers_own(harness):
    harness.tenant("north")
    harness.user("north", "kim")
    harness.user("north", "lee")
    kim = harness.login("north", "kim", PASSWORD).json
    lee = harness.login("north", "lee", PASSWORD).json
    bearer = {"Authorization": f"Bearer {lee['access_token']}"}
    # Lee cannot end Kim's session by presenting Kim's refresh token.
    assert (
        harness.client.post(
            "/api/v1/auth/logout", json={"refresh_token": kim["refresh_token"]}, headers=bearer
        ).status_code
        == 204
    )
    assert harness.client.post("/api/v1/auth/refresh", json={"refresh_token": kim["refresh_token"]}).status_code == 200
    assert (
        harness.client.post(
            "/api/v1/auth/logout", json={"refresh_token": lee["refresh_token"]}, headers=bearer
        ).status_code
        == 204
    )
    assert harness.client.post("/api/v1/auth/refresh", json={"refresh_token": lee["refresh_token"]}).status_code == 401
    assert harness.client.post("/api/v1/auth/logout", json={"everywhere": True}).status_code == 401  # needs a token


def test_disabling_a_user_ends_their_sessions(harness):
    harness.tenant("north")
    user = harness.user("north", "kim")
    tokens = harness.login("north", "kim", PASSWORD).json
    response = harness.client.patch(
        f"/api/v1/tenants/north/users/{user['id']}",
        json={"status": "disabled"},
        headers=harness.headers("north", ["tenant_admin"]),
    )
    assert response.status_code == 200 and response.json["status"] == "disabled"
    assert (
        harness.client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    )
    assert [e["data"]["reason"] for e in events_of(harness.runtime, "auth.session.revoked")] == ["user_disabled"]


def test_database_holds_no_plaintext_password_or_personal_values(both):
    """R6/R16: usernames, names, e-mail, passwords and refresh tokens never appear in a raw dump."""
    both.tenant("north")
    both.user(
        "north",
        "kimberly.plaintext",
        email="kimberly.plaintext@north.test",
        display_name="Kimberly Plaintextsson",
        password="sunflower-meadow-password",
    )
    tokens = both.login("north", "kimberly.plaintext", "sunflower-meadow-password").json
    both.login("north", "kimberly.plaintext", "another-wrong-password")
    both.runtime.db.dispose()  # flush SQLite's WAL readers; PostgreSQL dumps through pg_dump
    assert_no_plaintext(
        raw_dump(both.url),
        [
            "kimberly.plaintext",
            "Kimberly Plaintextsson",
            "kimberly.plaintext@north.test",
            "sunflower-meadow-password",
            "another-wrong-password",
            tokens["refresh_token"],
        ],
    )


def test_logs_hold_no_credentials(harness, caplog):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("auth"))
    root = logging.getLogger()
    root.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    try:
        harness.tenant("north")
        harness.user("north", "kim.logged", password="lavender-fields-password")
        tokens = harness.login("north", "kim.logged", "lavender-fields-password").json
        harness.login("north", "kim.logged", "lavender-wrong-password")
        harness.client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        harness.client.post(
            "/api/v1/auth/login",
            json={"tenant": "north", "username": "kim.logged", "password": "lavender-fields-password", "extra": 1},
        )
    finally:
        root.removeHandler(handler)
    logged = (stream.getvalue() + caplog.text).encode()
    assert b'"path": "/api/v1/auth/login"' in logged  # the request lines were logged ...
    assert_no_plaintext(
        logged,
        [
            "kim.logged",
            "lavender-fields-password",
            "lavender-wrong-password",
            tokens["refresh_token"],
            tokens["access_token"],
        ],
    )  # ... without credentials


@pytest.mark.parametrize(
    "body",
    [
        {"tenant": "north"},
        {"tenant": "north", "username": "kim"},
        {"tenant": "north", "username": "kim", "password": ""},
        {"tenant": "north", "username": "kim", "password": 5},
    ],
)
def test_malformed_login_is_422_and_never_echoes_the_password(harness, body):
    response = harness.client.post("/api/v1/auth/login", json=body)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert "password" in {e["field"] for e in response.json["errors"]}
    assert "kim" not in response.get_data(as_text=True)


def test_purge_deletes_login_data_past_its_retention(harness):
    """R6: login history is kept LOGIN_HISTORY_DAYS; address counters and dead sessions go sooner."""
    harness.tenant("north")
    harness.user("north", "kim")
    harness.login("north", "kim", PASSWORD)
    harness.login("north", "kim", "wrong password!")
    assert harness.logins.purge() == {
        "login_history": 0,
        "client_failures": 0,
        "refresh_tokens": 0,
        "revoked_tokens": 0,
    }
    harness.clock.advance(91 * 86_400)
    assert harness.logins.purge() == {
        "login_history": 2,
        "client_failures": 1,
        "refresh_tokens": 1,
        "revoked_tokens": 0,
    }


def test_failed_login_and_lock_events_have_no_actor(harness):
    """Nobody is authenticated when a login fails: the events say so instead of naming a system actor."""
    harness.tenant("north")
    harness.user("north", "kim")
    for _ in range(5):
        harness.login("north", "kim", "wrong password!")
    failed = events_of(harness.runtime, "auth.login.failed") + events_of(harness.runtime, "auth.account.locked")
    assert len(failed) == 6 and all(e["actor"] is None for e in failed)


FORWARDING_TOKEN = "portal-to-auth-forwarding-token-0123456789"


def test_sign_ins_through_the_portal_are_throttled_per_browser_and_a_blocked_one_costs_no_hash(tmp_path, monkeypatch):
    """Security review (issue 14): auth saw every portal sign-in as the portal's address, so twenty failures
    locked everyone out.  The portal forwards the browser's address with a token only it and auth hold;
    auth counts per that address, ignores the header from anyone without the token, and answers a blocked
    address without spending an Argon2 hash on it."""
    harness = build(
        f"sqlite:///{tmp_path / 'auth.db'}",
        tmp_path,
        CLIENT_MAX_FAILURES=3,
        CLIENT_WINDOW_SECONDS=60,
        FORWARDING_TOKEN=FORWARDING_TOKEN,
    )
    try:
        harness.tenant("north")
        harness.user("north", "kim")

        def via_portal(password: str, browser: str, token: str = FORWARDING_TOKEN):
            return harness.client.post(
                "/api/v1/auth/login",
                json={"tenant": "north", "username": "kim", "password": password},
                headers={"X-Recept-Client-Address": browser, "X-Recept-Forwarding-Token": token},
                environ_base={"REMOTE_ADDR": "10.0.0.5"},
            )  # the portal's own address

        for _ in range(3):
            assert via_portal("wrong password!", "198.51.100.7").status_code == 401
        assert via_portal(PASSWORD, "198.51.100.7").status_code == 401  # that browser is blocked
        assert via_portal(PASSWORD, "198.51.100.8").status_code == 200  # every other one is not
        # Without the token the header is nobody's word: the attempts count against the caller itself.
        for _ in range(3):
            assert via_portal("wrong password!", "198.51.100.9", token="guessed").status_code == 401
        assert via_portal(PASSWORD, "198.51.100.9", token="guessed").status_code == 401  # 10.0.0.5 is blocked
        assert via_portal(PASSWORD, "198.51.100.9").status_code == 200
        assert via_portal(PASSWORD, "not an address").status_code == 401  # unusable: the portal's address
        # A blocked address is refused before any password hashing.
        from services.auth.passwords import PasswordHasher

        hashed = []
        original = PasswordHasher.verify
        monkeypatch.setattr(PasswordHasher, "verify", lambda *args: hashed.append("verify") or original(*args))
        assert via_portal(PASSWORD, "198.51.100.7").status_code == 401
        assert harness.login("north", "nobody", "x" * 12, address="10.0.0.5").status_code == 401
        assert hashed == []
        assert via_portal(PASSWORD, "198.51.100.8").status_code == 200 and hashed == ["verify"]
    finally:
        harness.runtime.db.dispose()


def test_deeply_nested_json_to_login_is_a_422_not_a_500(harness):
    """Security review (issue 14): the parser's recursion error answered 500 (shared/inputs.py now refuses it)."""
    for depth in (100_000, 65):
        body = '{"tenant": ' + "[" * depth + "]" * depth + ', "username": "a", "password": "b"}'
        response = harness.client.post("/api/v1/auth/login", data=body, content_type="application/json")
        assert response.status_code == 422 and response.mimetype == "application/problem+json"
        assert "nested more than" in response.get_json()["detail"]
    body = '{"tenant": ' + "[" * 10 + "]" * 10 + ', "username": "a", "password": "b"}'
    assert harness.client.post("/api/v1/auth/login", data=body, content_type="application/json").status_code == 422


def test_a_user_disabled_while_the_password_is_hashed_is_not_signed_in(both, monkeypatch):
    """The write step updates the user only if they may still sign in (issue 19: the lock and the
    update are one statement now): disabled between the read and the write, no token, no change."""
    from services.auth.models import users

    both.tenant("north")
    user = both.user("north", "kim")
    hasher = type(both.auth.hasher)
    verify = hasher.verify

    def verify_then_disable(self, password, encoded):
        ok = verify(self, password, encoded)
        with both.auth.db.transaction() as s:
            both.auth.update_user(s, None, "north", user["id"], {"status": "disabled"})
        return ok

    monkeypatch.setattr(hasher, "verify", verify_then_disable)  # the hasher is a frozen dataclass
    response = both.login("north", "kim", PASSWORD)
    assert response.status_code == 401
    with both.auth.db.transaction() as s:
        row = s.execute(select(users.c.last_login_at, users.c.status).where(users.c.id == user["id"])).one()
        reasons = [r.reason for r in s.execute(select(login_history.c.reason, login_history.c.at))]
        issued = s.execute(select(refresh_tokens.c.id).where(refresh_tokens.c.user_id == user["id"])).all()
    assert row.last_login_at is None and row.status == "disabled"
    assert reasons == ["disabled"] and issued == []
    assert events_of(both.runtime, "auth.login.succeeded") == []
