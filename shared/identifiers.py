"""A data subject's identifiers: which kinds there are, how a request's are normalised, and their keyed hash.

A data-subject request names its subject by up to four identifiers (``IDENTIFIERS``).  The gdpr
service normalises them once when the request is opened (so every participant compares like with
like through its blind indexes), sends them in phase one of the GDPR protocol
(``shared.gdpr_protocol``), and names them in an export package's manifest only as keyed hashes.
The normalisers of the single kinds are ``shared.normalise``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import Invalid
from .normalise import normalise_email, normalise_personnummer, normalise_phone

__all__ = ["IDENTIFIERS", "normalise_subject", "IdentifierHasher"]

#: The kinds of identifier a data-subject request may name, in the order they are reported.
IDENTIFIERS = ("email", "phone", "personnummer", "username")


def _normalise_username(value: Any, *, field: str) -> str:
    # Login names are compared as the directory stores them; only surrounding blanks are noise.
    text = str(value).strip()
    if not text:
        raise Invalid("username is empty", errors=[{"field": field, "message": "must not be empty"}])
    return text


_NORMALISERS: dict[str, Callable[..., str]] = {
    "email": normalise_email,
    "phone": normalise_phone,
    "personnummer": normalise_personnummer,
    "username": _normalise_username,
}


def normalise_subject(subject: dict[str, Any]) -> dict[str, str]:
    """The subject's identifiers, normalised; ``Invalid`` names each bad field, never its value."""
    out: dict[str, str] = {}
    problems: list[dict[str, str]] = []
    for kind in IDENTIFIERS:
        value = subject.get(kind)
        if value is None:
            continue
        field = f"subject.{kind}"
        try:
            out[kind] = _NORMALISERS[kind](value, field=field)
        except Invalid as exc:
            problems.extend(exc.errors or [{"field": field, "message": "is not valid"}])
    if problems:
        raise Invalid(f"the subject has {len(problems)} invalid identifier(s)", errors=problems)
    if not out:
        raise Invalid(
            "give at least one identifier of the subject",
            errors=[{"field": "subject", "message": "needs at least one identifier"}],
        )
    return out


class IdentifierHasher:
    """Keyed hashes of identifiers for the manifest: the package says whom it is about without saying it.

    HMAC-SHA256 with a key derived (HKDF) from the keyring's index key, over
    ``"<kind>:<normalised value>"``; whoever holds the keyring can check a package against an
    identifier, nobody else can reverse or confirm it.
    """

    INFO = b"recept.gdpr.manifest-identifier.v1"

    def __init__(self, index_key: bytes) -> None:
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=self.INFO).derive(index_key)

    def __call__(self, kind: str, value: str) -> str:
        return hmac.new(self._key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
