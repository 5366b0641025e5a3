"""Access-token signing keys: Ed25519 (EdDSA) with key ids, a JWKS, and rotation without logouts.

The keys live in one JSON file (``SIGNING_KEYS_FILE``, mode 0600)::

    {"primary": "<kid>", "keys": [{"kid", "private_key" (base64 raw 32 bytes), "created_at",
                                   "retired_at" (null for the primary)}]}

Rotation adds a new primary and marks the old one retired; a retired key stays in the JWKS
until every token it signed has expired (retired_at + access-token lifetime + a grace
period), so services that verify tokens keep accepting them.  The running api re-reads
the file when it changes, so ``./recept auth rotate-signing-key`` reaches it without a
restart.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.clock import utcnow
from shared.tokens import KeySet

GRACE = timedelta(minutes=5)  # clock skew and in-flight requests after a token's expiry


class SigningKeyError(RuntimeError):
    """The signing-key file is missing, unreadable or malformed (never quotes key material)."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    created_at: datetime
    retired_at: datetime | None

    def public_jwk(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.private_key.public_key()))
        jwk.update(kid=self.kid, alg="EdDSA", use="sig")
        return jwk

    def to_json(self) -> dict[str, Any]:
        raw = self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return {
            "kid": self.kid,
            "private_key": base64.b64encode(raw).decode("ascii"),
            "created_at": self.created_at.isoformat(),
            "retired_at": self.retired_at.isoformat() if self.retired_at else None,
        }


def _new_key(now: datetime) -> SigningKey:
    return SigningKey(secrets.token_hex(8), Ed25519PrivateKey.generate(), now, None)


def _parse(text: str, path: Path) -> tuple[str, list[SigningKey]]:
    try:
        data = json.loads(text)
        keys = []
        for entry in data["keys"]:
            raw = base64.b64decode(entry["private_key"], validate=True)
            retired = entry.get("retired_at")
            keys.append(
                SigningKey(
                    str(entry["kid"]),
                    Ed25519PrivateKey.from_private_bytes(raw),
                    datetime.fromisoformat(entry["created_at"]),
                    datetime.fromisoformat(retired) if retired else None,
                )
            )
        primary = str(data["primary"])
    except (ValueError, KeyError, TypeError):
        raise SigningKeyError(f"the signing-key file {path} is malformed") from None
    if primary not in {k.kid for k in keys}:
        raise SigningKeyError(f"the signing-key file {path} names a primary key it does not hold")
    return primary, keys


class SigningKeys:
    """The auth service's signing keys, backed by a file; thread-safe."""

    def __init__(self, path: str | Path, access_ttl: int, clock: Callable[[], datetime] = utcnow) -> None:
        self.path = Path(path)
        self.access_ttl = timedelta(seconds=access_ttl)
        self.clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._primary = ""
        self._keys: list[SigningKey] = []

    # --- file ------------------------------------------------------------------------------------

    def _write(self, primary: str, keys: list[SigningKey], *, exclusive: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"primary": primary, "keys": [k.to_json() for k in keys]}, indent=1)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
        try:
            if exclusive:
                os.link(tmp, self.path)  # fails if another process created the file first
            else:
                os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def _load(self) -> None:
        """(Re)read the file when it changed; create it with one key on first use."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            try:
                key = _new_key(self.clock())
                self._write(key.kid, [key], exclusive=True)
            except FileExistsError:
                pass  # another process won the race: read its file
            st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise SigningKeyError(f"the signing-key file {self.path} cannot be read") from None
        self._primary, self._keys = _parse(text, self.path)
        self._stamp = stamp

    # --- use -------------------------------------------------------------------------------------

    def primary(self) -> SigningKey:
        with self._lock:
            self._load()
            return next(k for k in self._keys if k.kid == self._primary)

    def sign(self, claims: dict[str, Any]) -> str:
        key = self.primary()
        return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid, "typ": "JWT"})

    def _published(self, now: datetime) -> list[SigningKey]:
        horizon = self.access_ttl + GRACE
        return [k for k in self._keys if k.retired_at is None or k.retired_at + horizon > now]

    def jwks(self) -> dict[str, Any]:
        """The public keys that verify tokens still in circulation."""
        with self._lock:
            self._load()
            return {"keys": [k.public_jwk() for k in self._published(self.clock())]}

    def keyset(self) -> KeySet:
        """A verifier's key cache fed from this file, not over HTTP (the service verifies its own tokens)."""
        return KeySet(self.jwks, min_refresh=1.0)

    def rotate(self) -> str:
        """Add a new primary key; the old one stays published until its tokens have expired."""
        with self._lock:
            self._load()
            now = self.clock()
            keys = [SigningKey(k.kid, k.private_key, k.created_at, k.retired_at or now) for k in self._keys]
            self._keys = keys
            keys = self._published(now)  # drop keys whose tokens have all expired
            new = _new_key(now)
            keys.append(new)
            self._write(new.kid, keys, exclusive=False)
            self._stamp = None
            self._load()
            return new.kid
