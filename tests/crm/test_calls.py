"""Call logs from the phone operator (R13): CSV import, per-line problems, re-import, matching, search."""

from __future__ import annotations

import json

from services.crm import cli
from tests.conftest import raw_dump
from tests.support import assert_no_plaintext, events_of, outbox_messages

CSV = (
    b"timestamp,calling_number,called_line,duration,direction\n"
    b"2025-03-03 08:15:00,+46 70 123 45 67,support,125,inbound\n"  # Anna, international notation
    b"2025-03-03 09:00:10,070-123 45 67,support,0:42,in\n"  # Anna, national with separators
    b"2025-03-03T10:30:00+01:00,0701234567,support,3:01,incoming\n"  # Anna, bare national
    b"2025-03-03 11:00:00,08-555 123 45,support,60,inbound\n"  # nobody we know
    b"yesterday,0701234567,support,10,inbound\n"  # bad timestamp
    b"2025-03-03 12:00:00,12,support,10,inbound\n"  # bad number
    b"2025-03-03 12:05:00,0701234567,support,ten,sideways\n"  # bad duration and direction
    b"2025-03-03 12:10:00,0701234567,support\n"  # too few fields
)


def upload(crm, data: bytes, content_type: str = "text/csv"):
    return crm.client.post("/api/v1/calls/import", data=data, content_type=content_type, headers=crm.support)


def test_import_reports_malformed_rows_by_line_and_imports_the_good_ones(crm):
    """R13: bad rows are reported per line and field while the good rows are imported."""
    company = crm.company()
    anna = crm.person(company["id"], name="Anna Svensson", phone="+46701234567")
    report = crm.ok(upload(crm, CSV))
    assert report["rows"] == 8 and report["imported"] == 4 and report["rejected"] == 4
    assert report["matched"] == 3 and report["duplicates"] == 0
    assert {(e["line"], e["field"]) for e in report["errors"]} == {
        (6, "timestamp"),
        (7, "calling_number"),
        (8, "duration"),
        (8, "direction"),
        (9, "line"),
    }
    assert "0701234567" not in json.dumps(report) and "yesterday" not in json.dumps(report)
    mine = crm.get(f"/api/v1/calls?person_id={anna['id']}")["items"]
    assert len(mine) == 3 and {c["number"] for c in mine} == {"+46701234567"}
    assert {c["company_id"] for c in mine} == {company["id"]}
    # Local operator time is read in Europe/Stockholm (UTC+1 in March).
    assert sorted(c["started_at"] for c in mine)[0] == "2025-03-03T07:15:00.000000Z"
    assert len(events_of(crm.runtime, "crm.call.recorded")) == 4
    assert events_of(crm.runtime, "crm.call_import.completed")[0]["data"]["rejected"] == 4
    assert_no_plaintext(json.dumps(outbox_messages(crm.runtime)).encode(), ["+46701234567", "+46855512345"])
    crm.runtime.db.dispose()
    assert_no_plaintext(raw_dump(crm.url), ["+46701234567", "0701234567", "+46855512345"])


def test_importing_the_same_file_again_adds_nothing_twice(crm):
    crm.company()
    first = crm.ok(upload(crm, CSV))
    again = crm.ok(upload(crm, CSV))
    assert first["imported"] == 4
    assert again["imported"] == 0 and again["duplicates"] == 4 and again["rejected"] == 4
    assert len(crm.get("/api/v1/calls")["items"]) == 4
    # A file that repeats a row within itself also stores it once.
    header, row = (
        b"timestamp;calling_number;called_line;duration;direction\n",
        b"2025-04-01 10:00;0702222222;vx;5;out\n",
    )
    twice = crm.ok(upload(crm, header + row + row))
    assert twice["imported"] == 1 and twice["duplicates"] == 1


def test_calls_are_found_by_phone_in_any_notation(crm_lite):
    crm = crm_lite
    crm.ok(upload(crm, CSV))
    for written in ("+46 70 123 45 67", "070-123 45 67", "0701234567"):
        assert len(crm.post("/api/v1/calls/search", {"phone": written}, 200)["items"]) == 3
    assert len(events_of(crm_lite.runtime, "crm.call.viewed")) == 9


def test_a_number_shared_by_two_persons_matches_neither(crm_lite):
    crm = crm_lite
    company = crm.company()
    crm.person(company["id"], name="A", phone="0701234567")
    crm.person(company["id"], name="B", phone="+46701234567")
    assert crm.ok(upload(crm, CSV))["matched"] == 0


def test_file_without_the_required_columns_is_rejected_whole(crm_lite):
    crm = crm_lite
    response = upload(crm, b"when,who\n2025-01-01,0701234567\n")
    assert response.status_code == 422
    fields = {e["field"] for e in response.get_json()["errors"]}
    assert {"header.called_line", "header.duration", "header.direction"} <= fields
    assert upload(crm, CSV, "application/json").status_code == 415
    assert crm.get("/api/v1/calls")["items"] == []


def test_call_log_upload_as_multipart_file_and_size_limit(tmp_path):
    from tests.crm.conftest import Harness

    harness = Harness(f"sqlite:///{tmp_path / 'crm.db'}", MAX_CALL_LOG_BYTES=2048)
    try:
        import io

        response = harness.client.post(
            "/api/v1/calls/import",
            headers=harness.support,
            data={"file": (io.BytesIO(CSV), "calls.csv")},
            content_type="multipart/form-data",
        )
        assert harness.ok(response)["imported"] == 4
        big = CSV + b"2025-03-03 08:15:00,+46 70 123 45 67,support,125,inbound\n" * 60
        response = upload(harness, big)
        assert response.status_code == 413 and response.mimetype == "application/problem+json"
    finally:
        harness.close()


def test_import_calls_command_reads_a_file_and_exits_1_when_rows_were_rejected(crm_lite, tmp_path, monkeypatch, capsys):
    crm = crm_lite
    monkeypatch.setenv("RECEPT_CRM_DATABASE_URL", crm.url)
    monkeypatch.setenv("RECEPT_CRM_KEYRING", crm.keyring.to_json())
    path = tmp_path / "calls.csv"
    path.write_bytes(CSV)
    assert cli.main(["import-calls", str(path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["imported"] == 4 and report["rejected"] == 4
    good = tmp_path / "good.csv"
    good.write_bytes(b"timestamp,calling_number,called_line,duration,direction\n2025-05-01 10:00,0703333333,vx,1,in\n")
    assert cli.main(["import-calls", str(good)]) == 0
    assert cli.main(["import-calls", str(tmp_path / "missing.csv")]) == 2
    assert len(crm.get("/api/v1/calls")["items"]) == 5
    assert events_of(crm.runtime, "crm.call_import.completed")[0]["actor"]["kind"] == "system"


def test_time_filters_are_rfc_3339_with_an_offset_as_documented(crm_lite):
    """Issue 18: the query schema says date-time, and the server applies exactly that."""
    crm = crm_lite
    assert crm.get("/api/v1/calls?since=2025-01-01T00:00:00Z&until=2025-02-01T00:00:00%2B01:00")["items"] == []
    for query in ("since=2025-01-01T00:00:00", "until=yesterday", "since=2025-01-01"):
        answer = crm.client.get(f"/api/v1/calls?{query}", headers=crm.support)
        assert answer.status_code == 422 and answer.mimetype == "application/problem+json", query
        assert [e["field"] for e in answer.get_json()["errors"]] == [query.split("=")[0]]
