"""Access tokens: the claims of API.md, signed with EdDSA and a kid, and every forgery rejected."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.tokens import KeySet, TokenVerifier
from tests.auth.conftest import PASSWORD
from tests.support import events_of


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def me(harness, token: str):
    return harness.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def signed_in(harness):
    harness.tenant("north")
    user = harness.user("north", "kim.tokens", roles=["tenant_admin"])
    tokens = harness.login("north", "kim.tokens", PASSWORD).json
    return harness, user, tokens


def test_login_token_carries_the_api_md_claims_and_verifies_with_the_published_jwks(signed_in):
    """API.md: sub, tenant, roles, groups, iat, exp, iss, jti; other services verify with the JWKS."""
    harness, user, tokens = signed_in
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "EdDSA" and header["kid"]
    jwks = harness.client.get("/.well-known/jwks.json").json
    other_service = TokenVerifier(KeySet(lambda: jwks), "recept-auth")
    principal = other_service.verify(tokens["access_token"])
    claims = principal.claims
    assert set(claims) == {"sub", "tenant", "roles", "groups", "iat", "exp", "iss", "jti"}
    assert (claims["sub"], claims["tenant"], claims["roles"], claims["groups"]) == (
        user["id"],
        "north",
        ["tenant_admin"],
        [],
    )
    assert claims["exp"] - claims["iat"] == tokens["expires_in"] == 300
    assert tokens["token_type"] == "Bearer"
    assert me(harness, tokens["access_token"]).status_code == 200


def test_tampered_token_is_rejected(signed_in):
    harness, _user, tokens = signed_in
    head, payload, signature = tokens["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["vendor_admin"]
    forged = ".".join([head, b64(json.dumps(claims).encode()), signature])
    assert me(harness, forged).status_code == 401


def test_alg_none_token_is_rejected(signed_in):
    harness, user, tokens = signed_in
    kid = jwt.get_unverified_header(tokens["access_token"])["kid"]
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    unsigned = ".".join(
        [b64(json.dumps({"alg": "none", "kid": kid, "typ": "JWT"}).encode()), b64(json.dumps(claims).encode()), ""]
    )
    assert me(harness, unsigned).status_code == 401


def test_hs256_token_signed_with_the_public_key_is_rejected(signed_in):
    """The classic algorithm confusion: HMAC keyed with the published public key."""
    harness, _user, tokens = signed_in
    kid = jwt.get_unverified_header(tokens["access_token"])["kid"]
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    public = harness.auth.signing_keys.primary().private_key.public_key()
    for secret in (
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        json.dumps(harness.client.get("/.well-known/jwks.json").json["keys"][0]).encode(),
    ):
        signing_input = ".".join(
            [b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}).encode()), b64(json.dumps(claims).encode())]
        )
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert me(harness, f"{signing_input}.{b64(mac)}").status_code == 401


def test_expired_token_is_rejected(harness):
    """A token issued an hour ago (controllable clock) has expired."""
    harness.tenant("north")
    harness.user("north", "kim.expired")
    harness.clock.now = datetime.now(UTC) - timedelta(hours=1)
    tokens = harness.login("north", "kim.expired", PASSWORD).json
    response = me(harness, tokens["access_token"])
    assert response.status_code == 401
    assert "expired" in response.json["detail"]


def test_token_with_an_unknown_kid_is_rejected(signed_in):
    harness, user, tokens = signed_in
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    stranger = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": uuid.uuid4().hex})
    assert me(harness, stranger).status_code == 401
    # ... and one with the known kid but another key's signature.
    kid = jwt.get_unverified_header(tokens["access_token"])["kid"]
    impostor = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid})
    assert me(harness, impostor).status_code == 401


def test_token_of_another_issuer_is_rejected(signed_in):
    harness, user, _tokens = signed_in
    token = harness.token("north", ["tenant_admin"], sub=user["id"], iss="someone-else")
    assert me(harness, token).status_code == 401


# --- revocation (security review, issue 14) ------------------------------------------------------------


def other_service(harness):
    """Another service's verifier: the published keys and the published revocation list, over 'HTTP'."""
    from shared.tokens import RevocationList

    def fetch(path):
        return lambda: harness.client.get(path).json

    return TokenVerifier(
        KeySet(fetch("/.well-known/jwks.json")),
        "recept-auth",
        revocations=RevocationList(fetch("/.well-known/revocations.json"), interval=0.0),
    )


def refresh(harness, tokens) -> int:
    return harness.client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code


def rejected_everywhere(harness, verifier, token: str) -> bool:
    from shared.errors import Unauthorized

    try:
        verifier.verify(token)
    except Unauthorized:
        return me(harness, token).status_code == 401
    return False


def test_logout_revokes_the_access_token_here_and_in_other_services(signed_in):
    harness, _user, tokens = signed_in
    verifier = other_service(harness)
    assert verifier.verify(tokens["access_token"]) and me(harness, tokens["access_token"]).status_code == 200
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (
        harness.client.post(
            "/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=bearer
        ).status_code
        == 204
    )
    assert rejected_everywhere(harness, verifier, tokens["access_token"])
    assert "revoked" in me(harness, tokens["access_token"]).json["detail"]
    # Logging out everywhere ends the access tokens of every session, including rotated ones still in date.
    second, third = (harness.login("north", "kim.tokens", PASSWORD).json for _ in range(2))
    rotated = harness.client.post("/api/v1/auth/refresh", json={"refresh_token": third["refresh_token"]}).json
    assert (
        harness.client.post(
            "/api/v1/auth/logout",
            json={"everywhere": True},
            headers={"Authorization": f"Bearer {second['access_token']}"},
        ).status_code
        == 204
    )
    for token in (second["access_token"], third["access_token"], rotated["access_token"]):
        assert rejected_everywhere(harness, verifier, token)
    assert refresh(harness, rotated) == 401


def test_a_password_change_ends_every_other_session_and_an_admin_reset_ends_them_all(signed_in):
    harness, user, here = signed_in
    verifier = other_service(harness)
    there = harness.login("north", "kim.tokens", PASSWORD).json
    changed = harness.client.post(
        "/api/v1/auth/password",
        headers={"Authorization": f"Bearer {here['access_token']}"},
        json={"current_password": PASSWORD, "new_password": "a new long passphrase"},
    )
    assert changed.status_code == 204
    # The other device (maybe the one that stole the password) is out: refresh and access token.
    assert refresh(harness, there) == 401
    assert rejected_everywhere(harness, verifier, there["access_token"])
    # The session that changed the password goes on.
    assert verifier.verify(here["access_token"]) and me(harness, here["access_token"]).status_code == 200
    renewed = harness.client.post("/api/v1/auth/refresh", json={"refresh_token": here["refresh_token"]}).json
    assert renewed["access_token"]
    # An administrator's reset ends every session of the user.
    reset = harness.client.put(
        f"/api/v1/tenants/north/users/{user['id']}/password",
        json={"password": "the admin's passphrase"},
        headers=harness.vendor_admin(),
    )
    assert reset.status_code == 204
    assert refresh(harness, renewed) == 401
    assert rejected_everywhere(harness, verifier, renewed["access_token"])
    assert rejected_everywhere(harness, verifier, here["access_token"])
    reasons = [e["data"]["reason"] for e in events_of(harness.runtime, "auth.session.revoked")]
    assert reasons == ["password_changed", "password_changed"]


def test_revocations_are_kept_until_the_tokens_would_have_expired(signed_in):
    harness, _user, tokens = signed_in
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    harness.client.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=bearer)
    jti = jwt.decode(tokens["access_token"], options={"verify_signature": False})["jti"]
    assert jti in harness.client.get("/.well-known/revocations.json").json["jti"]
    harness.clock.advance(300 + 61)
    harness.logins.purge()
    assert jti not in harness.client.get("/.well-known/revocations.json").json["jti"]


def test_a_revocation_list_that_cannot_be_refreshed_for_long_is_a_503_not_a_pass():
    from shared.errors import Unavailable
    from shared.tokens import RevocationList

    clock = [1000.0]
    answers = [{"jti": ["abc"]}]

    def fetch():
        if not answers:
            raise OSError("auth is down")
        return answers[-1]

    revoked = RevocationList(fetch, interval=5.0, max_stale=60.0, clock=lambda: clock[0])
    assert revoked.is_revoked("abc") and not revoked.is_revoked("def")
    answers.clear()
    clock[0] += 30  # refresh fails, the last list is recent enough
    assert revoked.is_revoked("abc")
    clock[0] += 31
    with pytest.raises(Unavailable):
        revoked.is_revoked("def")
    answers.append({"jti": "not a list"})
    with pytest.raises(Unavailable):
        revoked.is_revoked("def")


@pytest.mark.parametrize(
    "claims",
    [
        {"roles": [{"admin": True}]},
        {"roles": [1]},
        {"groups": [["x"]]},
        {"roles": "tenant_admin"},
        {"sub": 12},
        {"tenant": ["north"]},
        {"jti": 5},
    ],
)
def test_a_token_with_malformed_claims_is_a_401(signed_in, claims):
    harness, user, _tokens = signed_in
    good = jwt.decode(harness.token("north", ["tenant_admin"], sub=user["id"]), options={"verify_signature": False})
    token = harness.auth.signing_keys.sign({**good, **claims})
    response = me(harness, token)
    assert response.status_code == 401 and response.mimetype == "application/problem+json"
