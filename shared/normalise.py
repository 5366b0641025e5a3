"""Normal forms of the identifiers people are looked up by: e-mail, phone, personnummer, name, birth date.

Blind indexes (``shared.crypto.BlindIndex``) and data-subject requests compare these normal
forms, so the same person spelled two ways is found once.  Bad input raises
:class:`shared.errors.Invalid` whose message and ``errors`` never contain the value.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Any

from shared.errors import Invalid

__all__ = [
    "normalise_email",
    "normalise_phone",
    "normalise_personnummer",
    "normalise_name",
    "normalise_birth_date",
    "name_key",
    "name_tokens",
]


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(message, errors=[{"field": field, "message": message}])


# What no e-mail address holds besides white space: control characters (C0, DEL, C1), the soft
# hyphen, zero-width and joiner characters, directional marks, embeddings, overrides and isolates,
# and the byte-order mark.  One definition, as regex class ranges that Python and ECMA-262 read
# alike, for the normaliser below and the published pattern (shared.inputs.EMAIL).  Lone
# surrogates are refused too, but outside the published class (no regex engine but Python's
# takes them in a range; shared.inputs refuses them in every string first).
EMAIL_FORBIDDEN = (
    "\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u206f\\ufeff"
)
_EMAIL_BAD_CHARACTER = re.compile(f"[\\s{EMAIL_FORBIDDEN}\\ud800-\\udfff]")
_EMAIL_LABEL = re.compile(r"[^\s@.]+\Z")


def normalise_email(value: Any, *, field: str = "email") -> str:
    """Trimmed, lower-cased e-mail address; :class:`Invalid` unless it is a plausible address."""
    if not isinstance(value, str):
        raise _invalid(field, "e-mail address must be a string")
    text = unicodedata.normalize("NFC", value).strip().lower()
    local, at, domain = text.rpartition("@")
    labels = domain.split(".")
    if (
        not at
        or not local
        or len(local) > 64
        or len(text) > 254
        or _EMAIL_BAD_CHARACTER.search(text)
        or "@" in local
        or ".." in local
        or local.startswith(".")
        or local.endswith(".")
        or len(labels) < 2
        or not all(_EMAIL_LABEL.match(label) for label in labels)
        or any(label.startswith("-") or label.endswith("-") for label in labels)
    ):
        raise _invalid(field, "not a valid e-mail address")
    return text


_PHONE_SEPARATORS = re.compile(r"[\s\-./()]")


def normalise_phone(value: Any, default_country: str = "46", *, field: str = "phone") -> str:
    """E.164 (``+46701234567``).

    ``+CC…`` and ``00CC…`` are international; ``0…`` is national in ``default_country``;
    bare digits (``46701234567``, as phone switches log them) are read as E.164 without the
    ``+``.  Spaces, ``-``, ``.``, ``/`` and parentheses are ignored, and so is a ``(0)``
    trunk prefix after a country code (``+46 (0)70 …``).
    """
    if not isinstance(default_country, str) or not re.fullmatch(r"[1-9]\d{0,2}", default_country):
        raise ValueError("default_country must be a country calling code such as '46'")
    if not isinstance(value, str):
        raise _invalid(field, "phone number must be a string")
    text = unicodedata.normalize("NFKC", value).strip()
    international = text.startswith("+") or text.startswith("00")
    if international:
        text = text.replace("(0)", "")
    digits = _PHONE_SEPARATORS.sub("", text)
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    elif digits.startswith("0"):
        digits = default_country + digits[1:]
    if not digits.isascii() or not digits.isdigit() or digits.startswith("0") or not 7 <= len(digits) <= 15:
        raise _invalid(field, "not a valid phone number")
    return "+" + digits


_DASH = re.compile(r"\s*[-\u2010\u2011\u2012\u2013\u2014\u2212]+\s*")
_NAME_TOKEN = re.compile(r"[\s\-]+")
# Letters Swedish writes for the same sound in names taken from Danish, Norwegian or German.
_NORDIC = str.maketrans({"ø": "ö", "æ": "ä"})
# The Swedish letters whose marks make another letter, not an accent: å, ä, ö are kept.
_KEEP_MARKS = {("a", "\u030a"), ("a", "\u0308"), ("o", "\u0308")}


def normalise_name(value: Any, *, field: str = "name") -> str:
    """The exact-match form of a person's name: NFKC, case-folded, whitespace collapsed, dashes unified.

    ``"  GUN-Britt   Lindqvist"``, ``"gun - britt lindqvist"`` and ``"Gun–Britt Lindqvist"`` (en dash)
    are all ``"gun-britt lindqvist"``.  Diacritics are kept: ``é`` and ``e`` differ here, and so
    do ``å``/``a``, ``ä``/``a``, ``ö``/``o`` (separate letters of the Swedish alphabet); the
    near-match key (:func:`name_key`) folds the foreign ones.
    """
    if not isinstance(value, str):
        raise _invalid(field, "name must be a string")
    text = unicodedata.normalize("NFC", unicodedata.normalize("NFKC", value).casefold())
    text = _DASH.sub("-", " ".join(text.split()))
    return text.strip("-").strip()


def _fold(text: str) -> str:
    """Foreign diacritics removed (é -> e, ü -> u, ø -> ö, æ -> ä); å, ä and ö kept as letters."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFD", text.translate(_NORDIC)):
        if unicodedata.combining(ch):
            if out and (out[-1], ch) in _KEEP_MARKS:
                out.append(ch)
            continue
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


def name_tokens(value: Any) -> tuple[str, ...]:
    """The folded parts of a name (given names and surnames; a double name counts as its parts)."""
    return tuple(t for t in _NAME_TOKEN.split(_fold(normalise_name(value))) if t)


def name_key(value: Any) -> str:
    """The near-match key of a name: folded parts in sorted order.

    Equal keys, unequal :func:`normalise_name`: the same name written with or without a foreign
    accent (``René``/``Rene``), a hyphen (``Anna-Lena``/``Anna Lena``) or in register order
    (``Lindqvist Gun``/``Gun Lindqvist``).  Such a person is a *near* candidate, never an exact one.
    """
    return " ".join(sorted(name_tokens(value)))


def normalise_birth_date(value: Any, today: date | None = None, *, field: str = "birth_date") -> str:
    """An ISO date (``YYYY-MM-DD``) of birth: a real day, not in the future, not before 1880."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        raise _invalid(field, "must be a date written YYYY-MM-DD")
    try:
        born = date.fromisoformat(value.strip())
    except ValueError:
        raise _invalid(field, "is not a real date") from None
    if born > (today or date.today()) or born.year < 1880:
        raise _invalid(field, "is not a plausible birth date")
    return born.isoformat()


_PNR = re.compile(r"(\d{2})?(\d{6})([-+]?)(\d{4})\Z")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(digits):
        n = int(ch) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def normalise_personnummer(value: Any, today: date | None = None, *, field: str = "personnummer") -> str:
    """Swedish personal identity (or co-ordination) number as 12 digits ``YYYYMMDDNNNN``.

    Accepts ``YYYYMMDD-NNNN``, ``YYYYMMDDNNNN``, ``YYMMDD-NNNN``, ``YYMMDDNNNN`` and
    ``YYMMDD+NNNN``.  Checks the Luhn digit of the 10-digit form and the birth date (day + 60
    for a samordningsnummer; not in the future).  Two-digit years take the century that makes
    the person 0-99 years old on ``today``; with ``+`` the person turns 100 or more this year
    (Skatteverket writes ``+`` from January 1st of the year the person turns 100).  The day
    digits are kept as written, so a samordningsnummer keeps its day + 60.
    """
    if not isinstance(value, str):
        raise _invalid(field, "personal identity number must be a string")
    today = today or date.today()
    match = _PNR.match(unicodedata.normalize("NFKC", value).strip())
    if not match:
        raise _invalid(field, "not a valid personal identity number")
    century, yymmdd, sep, tail = match.groups()
    if century and sep == "+":
        raise _invalid(field, "not a valid personal identity number")
    yy, mm, dd = int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:6])
    day = dd - 60 if dd > 60 else dd
    if century:
        year = int(century) * 100 + yy
    elif sep == "+":
        year = today.year - 100 - (today.year - 100 - yy) % 100
    else:
        year = today.year - (today.year - yy) % 100
        if (year, mm, day) > (today.year, today.month, today.day):
            year -= 100
    try:
        born = date(year, mm, day)
    except ValueError:
        raise _invalid(field, "personal identity number has an impossible date") from None
    if born > today:
        raise _invalid(field, "personal identity number has an impossible date")
    if not _luhn_ok(yymmdd + tail):
        raise _invalid(field, "personal identity number has a wrong check digit")
    return f"{year:04d}{yymmdd[2:]}{tail}"
