"""Access tokens: the claims of API.md, signed with EdDSA and a kid, and every forgery rejected."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.tokens import KeySet, TokenVerifier
from tests.auth.conftest import PASSWORD


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
    assert (claims["sub"], claims["tenant"], claims["roles"], claims["groups"]) == (user["id"], "north",
                                                                                     ["tenant_admin"], [])
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
    unsigned = ".".join([b64(json.dumps({"alg": "none", "kid": kid, "typ": "JWT"}).encode()),
                         b64(json.dumps(claims).encode()), ""])
    assert me(harness, unsigned).status_code == 401


def test_hs256_token_signed_with_the_public_key_is_rejected(signed_in):
    """The classic algorithm confusion: HMAC keyed with the published public key."""
    harness, _user, tokens = signed_in
    kid = jwt.get_unverified_header(tokens["access_token"])["kid"]
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    public = harness.auth.signing_keys.primary().private_key.public_key()
    for secret in (public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
                   public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
                   json.dumps(harness.client.get("/.well-known/jwks.json").json["keys"][0]).encode()):
        signing_input = ".".join([b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}).encode()),
                                  b64(json.dumps(claims).encode())])
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert me(harness, f"{signing_input}.{b64(mac)}").status_code == 401


def test_expired_token_is_rejected(harness):
    """A token issued an hour ago (controllable clock) has expired."""
    harness.tenant("north")
    harness.user("north", "kim.expired")
    harness.clock.now = datetime.now(timezone.utc) - timedelta(hours=1)
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
