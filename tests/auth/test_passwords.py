"""Local passwords: Argon2id at or above OWASP's minimum, unique salts, a minimum length (R6)."""

from __future__ import annotations

import re

import pytest

from services.auth.passwords import PasswordHasher
from shared.errors import Invalid


@pytest.fixture(scope="module")
def hasher():
    return PasswordHasher(min_length=12)


def test_hash_is_argon2id_with_at_least_owasp_parameters_and_a_unique_salt(hasher):
    first, second = hasher.hash("a long enough password"), hasher.hash("a long enough password")
    match = re.match(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([^$]+)\$", first)
    assert match, "not an Argon2id PHC string"
    memory, iterations, lanes = map(int, match.groups()[:3])
    assert memory >= 19_456 and iterations >= 2 and lanes >= 1
    assert first != second, "the same password must hash differently (random salt)"
    assert first.split("$")[4] != second.split("$")[4]
    assert "a long enough password" not in first


def test_verify_accepts_the_password_and_rejects_others(hasher):
    encoded = hasher.hash("a long enough password")
    assert hasher.verify("a long enough password", encoded)
    assert not hasher.verify("a long enough passwore", encoded)
    assert not hasher.verify("a long enough password", None)
    assert not hasher.verify("a long enough password", "$argon2id$garbage")


def test_too_short_or_too_long_password_is_refused_without_echoing_it(hasher):
    with pytest.raises(Invalid) as short:
        hasher.hash("short-pw")
    assert "short-pw" not in str(short.value.detail) + str(short.value.errors)
    with pytest.raises(Invalid):
        hasher.hash("x" * 1025)


def test_parameters_below_the_owasp_minimum_are_refused():
    with pytest.raises(ValueError):
        PasswordHasher(memory_kib=4096)
    with pytest.raises(ValueError):
        PasswordHasher(iterations=1)


def test_hash_made_with_weaker_parameters_needs_rehash():
    weak = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"
    assert PasswordHasher(iterations=3).needs_rehash(weak)
    assert not PasswordHasher().needs_rehash(weak)


@pytest.mark.parametrize("minimum", [12, 20])
def test_the_documented_password_minimum_is_the_configured_one(tmp_path, minimum):
    """Issue 18: the request schema states PASSWORD_MIN_LENGTH as configured, and the API applies it."""
    from tests.auth.conftest import build

    harness = build(f"sqlite:///{tmp_path / 'auth.db'}", tmp_path, PASSWORD_MIN_LENGTH=minimum)
    try:
        harness.tenant("vendor", "Recept AB")
        harness.tenant("north", "North")
        user = harness.user("north", "nils", roles=("staff",), password="p" * 24)
        admin = {"Authorization": f"Bearer {harness.token('vendor', ('vendor_admin',))}"}
        document = harness.client.get("/openapi.json").json
        body = document["paths"]["/api/v1/tenants/{slug}/users/{user_id}/password"]["put"]["requestBody"]
        assert body["content"]["application/json"]["schema"]["properties"]["password"]["minLength"] == minimum
        path = f"/api/v1/tenants/north/users/{user['id']}/password"
        short = harness.client.put(path, json={"password": "q" * (minimum - 1)}, headers=admin)
        assert short.status_code == 422 and short.json["errors"] == [
            {"field": "password", "message": f"is too short (at least {minimum} characters)"}
        ]
        assert "q" * (minimum - 1) not in short.get_data(as_text=True)
        assert harness.client.put(path, json={"password": "q" * minimum}, headers=admin).status_code == 204
    finally:
        harness.runtime.db.dispose()
