"""A data subject's identifiers: which kinds there are, how a request's are normalised, and their keyed hash.

A data-subject request names its subject by identifiers (``IDENTIFIERS``): e-mail, phone,
personnummer, username, or, for people in care who have none of those, ``name`` with
``birth_date`` (each requires the other), optionally narrowed by the ``unit`` or ``register``
they stay at (which only qualify a name, they name nobody on their own).  The gdpr
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
from .normalise import normalise_birth_date, normalise_email, normalise_name, normalise_personnummer, normalise_phone

__all__ = ["IDENTIFIERS", "QUALIFIERS", "normalise_subject", "IdentifierHasher"]

#: The kinds of identifier a data-subject request may name, in the order they are reported.
IDENTIFIERS = ("email", "phone", "personnummer", "username", "name", "birth_date", "unit", "register")
#: Identifiers that narrow a ``name`` + ``birth_date`` and name nobody alone.
QUALIFIERS = ("unit", "register")


def _normalise_username(value: Any, *, field: str) -> str:
    # Login names are compared as the directory stores them; only surrounding blanks are noise.
    text = str(value).strip()
    if not text:
        raise Invalid("username is empty", errors=[{"field": field, "message": "must not be empty"}])
    return text


def _normalise_person_name(value: Any, *, field: str) -> str:
    text = normalise_name(value, field=field)
    if not text:
        raise Invalid("name is empty", errors=[{"field": field, "message": "must not be empty"}])
    if len(text) > 200:
        raise Invalid("name is too long", errors=[{"field": field, "message": "must be at most 200 characters"}])
    return text


def _normalise_place(value: Any, *, field: str) -> str:
    # A unit's or register's name as the tenant wrote it, compared case- and blank-insensitively.
    if not isinstance(value, str) or not " ".join(value.split()):
        raise Invalid("place is empty", errors=[{"field": field, "message": "must be a non-empty string"}])
    text = " ".join(value.split()).casefold()
    if len(text) > 200:
        raise Invalid("place is too long", errors=[{"field": field, "message": "must be at most 200 characters"}])
    return text


_NORMALISERS: dict[str, Callable[..., str]] = {
    "email": normalise_email,
    "phone": normalise_phone,
    "personnummer": normalise_personnummer,
    "username": _normalise_username,
    "name": _normalise_person_name,
    "birth_date": normalise_birth_date,
    "unit": _normalise_place,
    "register": _normalise_place,
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
    # A name alone matches too many people and a birth date alone names nobody: they go together.
    given = {k for k in IDENTIFIERS if subject.get(k) is not None}
    if "name" in given and "birth_date" not in given:
        problems.append({"field": "subject.birth_date", "message": "is required with subject.name"})
    if "birth_date" in given and "name" not in given:
        problems.append({"field": "subject.name", "message": "is required with subject.birth_date"})
    for kind in QUALIFIERS:
        if kind in given and "name" not in given:
            problems.append({"field": f"subject.{kind}", "message": "narrows subject.name; give name and birth_date"})
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
