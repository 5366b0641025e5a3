"""Service-side verification of the auth service's access tokens.

Tokens are verified locally against the auth service's JWKS, cached and refreshed
when a token names a key id the cache does not know (that is how key rotation
reaches every service without logging anyone out).  Only asymmetric algorithms are
accepted, so ``alg: none`` and HS256-signed-with-the-public-key tokens fail.

No Flask here: the bearer token of a request is read by ``shared.http.authenticate``.

A token that was revoked before it expired (logout, a password change, a disabled
account) is refused through the auth service's revocation list, the ``jti`` of every
revoked token still in date, published beside its JWKS and re-read every few seconds
(``RevocationList``, docs/auth.md "Revocation").
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import jwt

from .errors import AccessDenied, NotFound, Unauthorized, Unavailable

ALGORITHMS = ("EdDSA", "RS256")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="recept"'}

VENDOR_ROLES = frozenset({"vendor_admin", "support", "compliance_officer", "auditor"})
TENANT_ROLES = frozenset({"tenant_admin", "privacy_officer", "staff"})


@dataclass(frozen=True)
class Principal:
    """The caller, as the access token says."""

    user_id: str
    tenant: str | None
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    token_id: str | None = None
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def has_any_role(self, roles: Iterable[str]) -> bool:
        return bool(self.roles.intersection(roles))

    def require_role(self, *roles: str) -> None:
        if not self.has_any_role(roles):
            raise AccessDenied("your roles do not allow this operation")

    @property
    def actor(self) -> dict[str, Any]:
        """The ``actor`` of an event: ids only, never a name."""
        return {"id": self.user_id, "tenant": self.tenant, "kind": "user"}

    def require_tenant(self, tenant: str | None) -> None:
        """Another tenant's data does not exist for this caller: 404, never 403."""
        if tenant is None or tenant != self.tenant:
            raise NotFound("no such resource")


def http_fetch(url: str, timeout: float = 5.0) -> Callable[[], dict[str, Any]]:
    def fetch() -> dict[str, Any]:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - configured URL
            document: dict[str, Any] = json.loads(response.read())  # a JWKS is a JSON object
            return document

    return fetch


class KeySet:
    """A cached JWKS: ``key(kid)`` refreshes once when ``kid`` is unknown (rate-limited)."""

    def __init__(self, fetch: Callable[[], dict[str, Any]], max_age: float = 300.0, min_refresh: float = 5.0) -> None:
        self._fetch = fetch
        self.max_age = max_age
        self.min_refresh = min_refresh
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        try:
            document = self._fetch()
        except Exception:  # noqa: BLE001 - any fetch failure
            raise Unavailable("the token signing keys cannot be fetched right now") from None
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys", []):
            if entry.get("kid"):
                try:
                    keys[entry["kid"]] = jwt.PyJWK(entry)
                except jwt.PyJWTError:
                    continue
        self._keys = keys
        self._fetched_at = time.monotonic()

    def key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            age = time.monotonic() - self._fetched_at
            if (kid not in self._keys and age > self.min_refresh) or age > self.max_age:
                self._refresh()
            key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("the access token is not valid", headers=CHALLENGE)
        return key


def revocations_url(jwks_url: str) -> str:
    """Where the auth service publishes its revocation list: beside its JWKS."""
    return urljoin(jwks_url, "revocations.json")


class RevocationList:
    """The ``jti`` of revoked access tokens that have not expired yet, as the auth service publishes them.

    Re-read when older than ``interval`` seconds (so a revocation reaches every service within
    that time).  When the auth service cannot be reached the last list is used for up to
    ``max_stale`` seconds; after that every verification is a 503, never a pass, since a token
    revoked meanwhile would otherwise be accepted.
    """

    def __init__(
        self,
        fetch: Callable[[], dict[str, Any]],
        interval: float = 5.0,
        max_stale: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.interval = interval
        self.max_stale = max_stale
        self._clock = clock
        self._revoked: frozenset[str] = frozenset()
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def _refresh(self, now: float) -> None:
        try:
            document = self._fetch()
            listed = document["jti"]
            if not isinstance(listed, list) or not all(isinstance(j, str) for j in listed):
                raise ValueError("jti is not a list of strings")
        except Exception:  # noqa: BLE001 - any fetch or format failure: keep the last list while it is fresh
            if self._fetched_at is None or now - self._fetched_at > self.max_stale:
                raise Unavailable("the token revocation list cannot be fetched right now") from None
            return
        self._revoked = frozenset(listed)
        self._fetched_at = now

    def is_revoked(self, jti: str) -> bool:
        with self._lock:
            now = self._clock()
            if self._fetched_at is None or now - self._fetched_at >= self.interval:
                self._refresh(now)
            return jti in self._revoked


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


class TokenVerifier:
    def __init__(
        self, keys: KeySet, issuer: str, leeway: float = 5.0, revocations: RevocationList | None = None
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.leeway = leeway
        self.revocations = revocations

    def verify(self, token: str) -> Principal:
        invalid = Unauthorized("the access token is not valid", headers=CHALLENGE)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS or not isinstance(kid, str):
            raise invalid
        key = self.keys.key(kid)
        if key.algorithm_name != alg:
            raise invalid
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "sub", "iss", "jti"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the access token has expired", headers=CHALLENGE) from None
        except jwt.PyJWTError:
            raise invalid from None
        roles, groups = claims.get("roles", []), claims.get("groups", [])
        tenant, subject, jti = claims.get("tenant"), claims["sub"], claims["jti"]
        # A signed token is still input: claims of the wrong type are a 401, not a crash further in.
        if (
            not _strings(roles)
            or not _strings(groups)
            or not isinstance(subject, str)
            or not subject
            or not (tenant is None or isinstance(tenant, str))
            or not isinstance(jti, str)
            or not jti
        ):
            raise invalid
        if self.revocations is not None and self.revocations.is_revoked(jti):
            raise Unauthorized("the access token has been revoked; log in again", headers=CHALLENGE)
        return Principal(
            user_id=str(claims["sub"]),
            tenant=claims.get("tenant"),
            roles=frozenset(roles),
            groups=frozenset(groups),
            token_id=claims.get("jti"),
            claims=claims,
        )
