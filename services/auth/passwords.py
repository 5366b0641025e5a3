"""Local passwords: Argon2id hashes (PHC strings) at or above OWASP's minimum parameters."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from shared.errors import Invalid

# OWASP Password Storage Cheat Sheet, Argon2id minimum: 19 MiB, 2 iterations, 1 degree of parallelism.
OWASP_MEMORY_KIB = 19_456
OWASP_ITERATIONS = 2
OWASP_LANES = 1
SALT_BYTES = 16
HASH_BYTES = 32
MAX_PASSWORD_LENGTH = 1024  # bounds the work an attacker can make one hash cost

_PHC = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$")


@dataclass(frozen=True)
class PasswordHasher:
    memory_kib: int = OWASP_MEMORY_KIB
    iterations: int = OWASP_ITERATIONS
    lanes: int = OWASP_LANES
    min_length: int = 12

    def __post_init__(self) -> None:
        if self.memory_kib < OWASP_MEMORY_KIB or self.iterations < OWASP_ITERATIONS or self.lanes < OWASP_LANES:
            raise ValueError("Argon2id parameters below the OWASP minimum (19 MiB, t=2, p=1)")

    def _kdf(self) -> Argon2id:
        # A fresh random salt per hash: two users with one password get different hashes.
        return Argon2id(
            salt=os.urandom(SALT_BYTES),
            length=HASH_BYTES,
            iterations=self.iterations,
            lanes=self.lanes,
            memory_cost=self.memory_kib,
        )

    def check_policy(self, password: str, field: str = "password") -> None:
        """Raise Invalid when a new password is too short or too long (never echoing it)."""
        if not isinstance(password, str) or len(password) < self.min_length:
            raise Invalid(
                "the password is too short",
                errors=[{"field": field, "message": f"needs at least {self.min_length} characters"}],
            )
        if len(password) > MAX_PASSWORD_LENGTH:
            raise Invalid(
                "the password is too long",
                errors=[{"field": field, "message": f"takes at most {MAX_PASSWORD_LENGTH} characters"}],
            )

    def hash(self, password: str) -> str:
        self.check_policy(password)
        return self._kdf().derive_phc_encoded(password.encode("utf-8"))

    def verify(self, password: str, encoded: str | None) -> bool:
        """True when ``password`` matches; a missing or malformed hash never matches."""
        if not encoded or not _PHC.match(encoded) or len(password) > MAX_PASSWORD_LENGTH:
            return False
        try:
            Argon2id.verify_phc_encoded(password.encode("utf-8"), encoded)
            return True
        except (InvalidKey, ValueError):
            return False

    def needs_rehash(self, encoded: str) -> bool:
        """True when ``encoded`` was made with weaker parameters than the configured ones."""
        match = _PHC.match(encoded or "")
        if not match:
            return True
        memory, iterations, lanes = (int(g) for g in match.groups())
        return memory < self.memory_kib or iterations < self.iterations or lanes < self.lanes

    def dummy_verify(self, password: str) -> None:
        """Spend the time of one verification, so an unknown or locked account answers as slowly."""
        self.verify(password, _dummy_hash(self))


_DUMMY: dict[tuple[int, int, int], str] = {}


def _dummy_hash(hasher: PasswordHasher) -> str:
    key = (hasher.memory_kib, hasher.iterations, hasher.lanes)
    if key not in _DUMMY:
        _DUMMY[key] = hasher._kdf().derive_phc_encoded(os.urandom(16))
    return _DUMMY[key]
