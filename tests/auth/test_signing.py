"""Token-signing keys: Ed25519 with kid, a JWKS, and rotation that logs nobody out."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from services.auth.signing import GRACE, SigningKeyError, SigningKeys
from shared.errors import Unauthorized
from shared.tokens import TokenVerifier


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _claims(ttl: int = 300) -> dict:
    now = int(datetime.now(UTC).timestamp())
    return {
        "sub": "u1",
        "tenant": "t1",
        "roles": [],
        "groups": [],
        "iat": now,
        "exp": now + ttl,
        "iss": "recept-auth",
        "jti": "j1",
    }


def test_key_file_is_created_on_first_use_readable_only_by_its_owner(tmp_path):
    keys = SigningKeys(tmp_path / "var" / "keys.json", access_ttl=300)
    jwks = keys.jwks()
    mode = stat.S_IMODE((tmp_path / "var" / "keys.json").stat().st_mode)
    assert mode == 0o600
    assert len(jwks["keys"]) == 1
    (key,) = jwks["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "EdDSA" and key["kid"]
    assert "d" not in key, "the JWKS must never publish the private part"


def test_token_signed_before_rotation_still_verifies_and_new_tokens_use_the_new_kid(tmp_path):
    keys = SigningKeys(tmp_path / "keys.json", access_ttl=300)
    verifier = TokenVerifier(keys.keyset(), "recept-auth")
    old_token = keys.sign(_claims())
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new_kid = keys.rotate()
    new_token = keys.sign(_claims())
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid != old_kid
    assert {k["kid"] for k in keys.jwks()["keys"]} == {old_kid, new_kid}
    assert verifier.verify(old_token).user_id == "u1"
    assert verifier.verify(new_token).user_id == "u1"


def test_retired_key_leaves_the_jwks_once_its_tokens_have_expired(tmp_path):
    clock = Clock()
    keys = SigningKeys(tmp_path / "keys.json", access_ttl=300, clock=clock)
    old_kid = keys.primary().kid
    keys.rotate()
    clock.now += timedelta(seconds=300) + GRACE + timedelta(seconds=1)
    assert old_kid not in {k["kid"] for k in keys.jwks()["keys"]}
    keys.rotate()  # and a later rotation drops it from the file too
    assert old_kid not in (tmp_path / "keys.json").read_text()


def test_another_process_rotating_the_file_reaches_a_running_signer(tmp_path):
    running = SigningKeys(tmp_path / "keys.json", access_ttl=300)
    first = running.primary().kid
    new_kid = SigningKeys(tmp_path / "keys.json", access_ttl=300).rotate()  # the CLI
    assert running.primary().kid == new_kid != first


def test_token_with_a_key_unknown_to_the_file_is_rejected(tmp_path):
    ours = SigningKeys(tmp_path / "ours.json", access_ttl=300)
    theirs = SigningKeys(tmp_path / "theirs.json", access_ttl=300)
    with pytest.raises(Unauthorized):
        TokenVerifier(ours.keyset(), "recept-auth").verify(theirs.sign(_claims()))


def test_malformed_key_file_fails_without_quoting_it(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text('{"primary": "k1", "keys": [{"kid": "k1", "private_key": "c2VjcmV0LXNlY3JldA=="}]}')
    with pytest.raises(SigningKeyError) as failure:
        SigningKeys(path, access_ttl=300).jwks()
    assert "c2VjcmV0" not in str(failure.value)
