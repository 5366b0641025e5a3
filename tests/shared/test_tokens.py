"""Service-side token verification against the auth service's JWKS."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from shared.errors import Unauthorized, Unavailable
from shared.tokens import KeySet, TokenVerifier
from tests.support import ISSUER, TokenMint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mint():
    return TokenMint()


@pytest.fixture
def verifier(mint):
    return TokenVerifier(mint.keyset(), ISSUER, leeway=0)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_valid_token_gives_the_principal(mint, verifier):
    p = verifier.verify(mint.token(sub="u1", tenant="kommun", roles=["staff"], groups=["kitchen"]))
    assert (p.user_id, p.tenant, p.roles, p.groups) == ("u1", "kommun", {"staff"}, {"kitchen"})
    assert p.actor == {"id": "u1", "tenant": "kommun", "kind": "user"}


def test_tampered_payload_is_rejected(mint, verifier):
    header, payload, signature = mint.token(roles=["staff"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["vendor_admin"]
    forged = ".".join([header, b64(json.dumps(claims).encode()), signature])
    with pytest.raises(Unauthorized):
        verifier.verify(forged)


def test_alg_none_is_rejected(mint, verifier):
    claims = jwt.decode(mint.token(), options={"verify_signature": False})
    unsigned = ".".join(
        [b64(json.dumps({"alg": "none", "kid": mint.kid}).encode()), b64(json.dumps(claims).encode()), ""]
    )
    with pytest.raises(Unauthorized):
        verifier.verify(unsigned)


def test_hs256_signed_with_the_public_key_is_rejected(mint, verifier):
    public_pem = mint.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = jwt.decode(mint.token(), options={"verify_signature": False})
    header = b64(json.dumps({"alg": "HS256", "kid": mint.kid, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    import hashlib
    import hmac

    signature = b64(hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest())
    with pytest.raises(Unauthorized):
        verifier.verify(f"{header}.{body}.{signature}")


def test_expired_token_is_rejected(mint, verifier):
    with pytest.raises(Unauthorized) as info:
        verifier.verify(mint.token(ttl=-10))
    assert "expired" in info.value.detail


def test_wrong_issuer_is_rejected(mint, verifier):
    with pytest.raises(Unauthorized):
        verifier.verify(mint.token(iss="someone-else"))


def test_token_signed_by_an_unknown_key_is_rejected(verifier):
    stranger = TokenMint()
    with pytest.raises(Unauthorized):
        verifier.verify(stranger.token())


def test_unknown_kid_refreshes_the_key_set_once_so_rotation_needs_no_restart():
    old, new = TokenMint(), TokenMint()
    published = {"keys": old.jwks()["keys"]}
    fetches = []

    def fetch():
        fetches.append(time.monotonic())
        return published

    verifier = TokenVerifier(KeySet(fetch, min_refresh=0.0), ISSUER)
    verifier.verify(old.token())
    published["keys"] = old.jwks()["keys"] + new.jwks()["keys"]  # auth rotated its signing key
    assert verifier.verify(new.token()).roles == {"staff"}
    assert verifier.verify(old.token())  # old tokens still valid
    assert len(fetches) == 2


def test_refresh_on_unknown_kid_is_rate_limited():
    mint = TokenMint()
    fetches = []

    def fetch():
        fetches.append(1)
        return mint.jwks()

    verifier = TokenVerifier(KeySet(fetch, min_refresh=60.0), ISSUER)
    verifier.verify(mint.token())
    for _ in range(5):
        with pytest.raises(Unauthorized):
            verifier.verify(TokenMint().token())
    assert len(fetches) == 1


def test_unreachable_key_set_is_503_not_401():
    def fetch():
        raise ConnectionRefusedError()

    with pytest.raises(Unavailable):
        TokenVerifier(KeySet(fetch), ISSUER).verify(TokenMint().token())


def test_non_list_roles_claim_is_rejected(mint, verifier):
    claims = jwt.decode(mint.token(), options={"verify_signature": False})
    claims["roles"] = "vendor_admin"
    token = jwt.encode(claims, mint.private_key, algorithm="EdDSA", headers={"kid": mint.kid})
    with pytest.raises(Unauthorized):
        verifier.verify(token)


def test_verification_needs_no_flask():
    """tokens.py is verification only (issue 13): reading the request's bearer token is shared.http's."""
    code = (
        "import sys, shared.tokens; "
        "assert 'flask' not in sys.modules and 'shared.http' not in sys.modules, sorted(sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
