"""shared.normalise: the normal forms blind indexes and data-subject requests compare (R7)."""

from __future__ import annotations

import re
from datetime import date

import pytest

from shared.errors import Invalid
from shared.normalise import (
    name_key,
    name_tokens,
    normalise_birth_date,
    normalise_email,
    normalise_name,
    normalise_personnummer,
    normalise_phone,
)
from tests.shared.support import assert_no_leak

TODAY = date(2025, 3, 1)


def luhn_digit(nine: str) -> str:
    total = 0
    for i, ch in enumerate(nine):
        n = int(ch) * (2 - i % 2)
        total += n // 10 + n % 10
    return str((10 - total % 10) % 10)


def pnr(yymmdd: str, nnn: str = "123") -> str:
    """A valid 10-digit number YYMMDDNNNC for a test."""
    return yymmdd + nnn + luhn_digit(yymmdd + nnn)


@pytest.mark.parametrize(
    "raw",
    [
        "+46 70 123 45 67",
        "070-123 45 67",
        "0701234567",
        "0046701234567",
        "+46 (0)70-123 45 67",
        "46701234567",
        "(070) 123.45.67",
        "\u00a0+46\u00a070 123 45 67 ",
    ],
)
def test_normalise_phone_swedish_spellings(raw):
    assert normalise_phone(raw) == "+46701234567"


def test_normalise_phone_other_cases():
    assert normalise_phone("08-123 456 78") == "+46812345678"
    assert normalise_phone("+1 (212) 555-0123") == "+12125550123"
    assert normalise_phone("020 7946 0958", default_country="44") == "+442079460958"
    with pytest.raises(ValueError):
        normalise_phone("0701234567", default_country="+46")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "070-ABC 45 67",
        "+46 70 123 45 67 ext 5",
        "+",
        "12345",
        "+0701234567",
        "00",
        "0",
        "+46 70 123 45 67 89 01 23",
        "++46701234567",
        None,
        46701234567,
    ],
)
def test_normalise_phone_rejects_garbage(raw):
    with pytest.raises(Invalid) as info:
        normalise_phone(raw)
    assert info.value.errors and info.value.errors[0]["field"] == "phone"
    if isinstance(raw, str) and raw.strip():
        assert_no_leak(info, raw.strip())


def test_normalise_email():
    assert normalise_email("  Anna.Svensson@Example.SE\n") == "anna.svensson@example.se"
    assert normalise_email("a+tag@sub.example.co.uk") == "a+tag@sub.example.co.uk"
    for bad in [
        "",
        "anna",
        "anna@",
        "@example.se",
        "anna@example",
        "anna svensson@example.se",
        "anna@@example.se",
        "anna@example..se",
        "anna@.example.se",
        ".anna@example.se",
        "anna@-example.se",
        "anna\x00@example.se",
        None,
    ]:
        with pytest.raises(Invalid) as info:
            normalise_email(bad)
        assert info.value.errors[0]["field"] == "email"
        if bad:
            assert_no_leak(info, bad)
    with pytest.raises(Invalid) as info:
        normalise_email("nope", field="contact_email")
    assert info.value.errors == [{"field": "contact_email", "message": "not a valid e-mail address"}]


def test_normalise_name():
    assert normalise_name("  Anna\t Maria\n SVENSSON ") == "anna maria svensson"
    assert normalise_name("ＡＮＮＡ") == "anna"  # NFKC: full-width letters
    assert normalise_name("STRASSE") == normalise_name("Straße")  # casefold, not lower
    assert normalise_name("A\u030angström") == normalise_name("Ångström")  # composed or not
    with pytest.raises(Invalid):
        normalise_name(None)


def test_normalise_personnummer_forms():
    assert luhn_digit("811218987") == "6"  # Skatteverket's example number 811218-9876
    for raw in ["19811218-9876", "198112189876", "811218-9876", "8112189876", " 811218-9876 "]:
        assert normalise_personnummer(raw, today=TODAY) == "198112189876"
    assert normalise_personnummer("811218+9876", today=TODAY) == "188112189876"  # 100 or older
    # samordningsnummer: day + 60, kept as written
    assert normalise_personnummer("701063-2391", today=TODAY) == "197010632391"
    # two-digit years: the century that makes the person 0..99 years old on `today`
    born_this_year = pnr("250101")
    assert normalise_personnummer(born_this_year[:6] + "-" + born_this_year[6:], today=TODAY) == "20" + born_this_year
    later_this_year = pnr("251201")  # 2025-12-01 is in the future: born 1925, 99 years old
    assert normalise_personnummer(later_this_year, today=TODAY) == "19" + later_this_year
    # '+' from the year the person turns 100 (Skatteverket): 1925-12-01 turns 100 in 2025
    assert (
        normalise_personnummer(later_this_year[:6] + "+" + later_this_year[6:], today=TODAY) == "19" + later_this_year
    )
    next_century = pnr("260101")
    assert normalise_personnummer(next_century, today=TODAY) == "19" + next_century
    assert normalise_personnummer(next_century[:6] + "+" + next_century[6:], today=TODAY) == "18" + next_century
    leap = pnr("000229")
    assert normalise_personnummer(leap, today=TODAY) == "20" + leap
    assert normalise_personnummer("811218-9876") == "198112189876"  # default today


@pytest.mark.parametrize(
    "raw",
    [
        "811218-9875",  # wrong check digit
        "19811218-9875",
        "811318-9876",  # month 13
        pnr("810230"),  # 30 February
        pnr("810232"),  # day 32 (not a samordningsnummer either)
        pnr("810292"),  # day 92 = 32 + 60
        pnr("000229")[:6] + "+" + pnr("000229")[6:],  # 1900-02-29 does not exist
        "20" + pnr("250601"),  # born in the future
        "19811218+9876",  # '+' only belongs to the 10-digit form
        "811218-987",
        "811218--9876",
        "8112l8-9876",
        "",
        "811218 9876",
    ],
)
def test_normalise_personnummer_rejects(raw):
    with pytest.raises(Invalid) as info:
        normalise_personnummer(raw, today=TODAY)
    assert info.value.errors[0]["field"] == "personnummer"
    if raw:
        assert_no_leak(info, raw, raw.replace("-", "").replace("+", ""))


def test_normalise_personnummer_rejects_non_strings():
    with pytest.raises(Invalid):
        normalise_personnummer(8112189876)


# --- names of people in care (issue 15): exact form and near-match key ------------------------------


@pytest.mark.parametrize(
    "written",
    [
        "Gun-Britt Lindqvist",
        "  GUN-BRITT   lindqvist ",
        "gun - britt lindqvist",  # spaced hyphen
        "Gun\u2013Britt Lindqvist",  # en dash, as word processors write it
        "Gun\u2010Britt\u00a0Lindqvist",  # Unicode hyphen, no-break space
    ],
)
def test_a_double_name_has_one_exact_form_however_it_is_hyphenated_or_cased(written):
    assert normalise_name(written) == "gun-britt lindqvist"


def test_swedish_letters_stay_distinct_in_the_exact_form_and_in_the_near_key():
    """å, ä and ö are letters of their own (Åberg is not Aberg), in both forms; é is an accent."""
    assert normalise_name("Åberg") != normalise_name("Aberg")
    assert name_key("Åberg") != name_key("Aberg")
    assert name_key("Öberg") != name_key("Oberg") and name_key("Älg") != name_key("Alg")
    assert normalise_name("René Ek") != normalise_name("Rene Ek")  # exact keeps the accent
    assert name_key("René Ek") == name_key("Rene Ek")  # near folds it
    assert name_key("Müller") == name_key("Muller")
    assert name_key("Søren Ærlig") == name_key("Sören Ärlig")  # Danish/Norwegian letters as Swedish
    assert name_key("A\u030aberg") == name_key("Åberg")  # composed or decomposed


def test_the_near_key_ignores_hyphens_and_the_order_of_the_parts():
    """Registers often write the surname first; a double name may lose its hyphen."""
    assert name_key("Lindqvist Gun-Britt") == name_key("Gun-Britt Lindqvist") == "britt gun lindqvist"
    assert name_key("Gun Britt Lindqvist") == name_key("Gun-Britt Lindqvist")
    assert normalise_name("Gun Britt Lindqvist") != normalise_name("Gun-Britt Lindqvist")
    assert name_tokens("Anna-Lena Åström-Öberg") == ("anna", "lena", "åström", "öberg")


def test_birth_dates_are_iso_real_and_not_in_the_future():
    assert normalise_birth_date(" 1938-04-07 ", today=TODAY) == "1938-04-07"
    for bad in ("1938-02-30", "07/04/1938", "19380407", "2025-03-02", "1850-01-01", 19380407, None):
        with pytest.raises(Invalid) as info:
            normalise_birth_date(bad, today=TODAY, field="subject.birth_date")
        assert info.value.errors[0]["field"] == "subject.birth_date"
        assert str(bad) not in info.value.detail


# --- the published shapes (shared.inputs) agree with the normalisers (issue 18) ------------------


def _published(schema: dict):
    pattern = re.compile(schema["pattern"])
    return lambda value: len(value) <= schema["maxLength"] and "\n" not in value and bool(pattern.search(value))


def _accepts(normalise, value: str) -> bool:
    try:
        normalise(value)
    except Invalid:
        return False
    return True


@pytest.mark.parametrize("kind", ["email", "phone"])
def test_what_the_schema_publishes_is_what_the_normaliser_accepts(kind):
    """Every string the published pattern admits is accepted, and every accepted one is admitted."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from shared.inputs import EMAIL, PHONE

    schema, normalise = (EMAIL, normalise_email) if kind == "email" else (PHONE, normalise_phone)
    admitted = _published(schema)
    alphabet = (
        st.characters(codec="utf-8", exclude_categories=("Cs",))
        if kind == "email"
        else st.sampled_from("0123456789+ -./()")
    )
    examples = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))

    @examples
    @given(st.from_regex(schema["pattern"]).filter(admitted))
    def admitted_is_accepted(value):
        assert _accepts(normalise, value), ascii(value)

    @examples
    @given(st.text(alphabet=alphabet, max_size=30) | st.from_regex(r"\A[a-z.]{1,8}@[a-z\-.]{1,8}\Z"))
    def accepted_is_admitted(value):
        # The phone pattern takes up to three separators in a row (a bound that keeps generation quick).
        if _accepts(normalise, value) and not re.search(r"[ ./()\-]{4}", value):
            assert admitted(value), ascii(value)

    admitted_is_accepted()
    accepted_is_admitted()
    if kind == "email":
        for value in ("pia@example.se", " Pia@Exempel.SE ", "räksmörgås@exempel.se"):
            assert admitted(value) and _accepts(normalise, value)
        for value in ("a..b@example.se", ".a@example.se", "a@-x.se", "a@x", "a\u00ad@example.se", "a b@x.se"):
            assert not admitted(value) and not _accepts(normalise, value)
    else:
        for value in ("070-123 45 67", "+46 70 123 45 67", "0046701234567", "46701234567"):
            assert admitted(value) and _accepts(normalise, value)
        for value in ("127.0.0.1", "123456", "0701", "+0701234567", "070-123 45 67 89 01 23"):
            assert not admitted(value) and not _accepts(normalise, value)
