"""Incoming e-mails stored as documents linked to a company (R14): .eml upload, Maildir and mbox ingest."""

from __future__ import annotations

import base64
import io
import json
import mailbox

from services.crm import cli
from tests.conftest import raw_dump
from tests.support import assert_no_plaintext, events_of

PDF = b"%PDF-1.4\n% a tiny stand-in for a menu\n" + bytes(range(256))
CSV_ATTACHMENT = "namn,allergi\nÅsa,gluten\n".encode()
SUBJECT = "Fråga om kostdata för äldreboendet"


def eml(sender: str = "asa.oberg@kommun.example", message_id: str = "<a1@kommun.example>") -> bytes:
    """A multipart message with RFC 2047 encoded headers, an RFC 2231 file name and two attachments."""
    subject = "=?utf-8?b?" + base64.b64encode(SUBJECT.encode()).decode() + "?="
    return (
        f"From: =?utf-8?q?=C3=85sa_=C3=96berg?= <{sender}>\r\n"
        "To: Support <support@vendor.example>\r\n"
        'Cc: "Bo Ek" <Bo.Ek@kommun.example>\r\n'
        f"Subject: {subject}\r\n"
        "Date: Mon, 03 Mar 2025 09:15:00 +0100\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="XYZ"\r\n'
        "\r\n"
        "--XYZ\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        "Hej! Se bifogad meny f=C3=B6r v=C3=A5rt boende.\r\n"
        "--XYZ\r\n"
        "Content-Type: application/pdf\r\n"
        "Content-Disposition: attachment; filename*=utf-8''meny%20v%C3%A4sby.pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        f"{base64.encodebytes(PDF).decode()}"
        "--XYZ\r\n"
        "Content-Type: text/csv; charset=utf-8\r\n"
        'Content-Disposition: attachment; filename="allergier.csv"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        f"{base64.encodebytes(CSV_ATTACHMENT).decode()}"
        "--XYZ--\r\n"
    ).encode()


def upload(crm, company_id: str, data: bytes, content_type: str = "message/rfc822"):
    return crm.client.post(
        f"/api/v1/companies/{company_id}/emails", data=data, content_type=content_type, headers=crm.support
    )


def test_eml_with_attachments_and_encoded_headers_is_stored_encrypted_and_linked(crm):
    """R14: the raw message is a company document; headers decoded (RFC 2047); sender matched; attachments kept."""
    company = crm.company()
    asa = crm.person(company["id"], name="Åsa Öberg", email="asa.oberg@kommun.example")
    raw = eml()
    stored = crm.ok(upload(crm, company["id"], raw), 201)
    assert stored["duplicate"] is False
    message = crm.get(f"/api/v1/emails/{stored['id']}")
    assert message["subject"] == SUBJECT
    assert message["from"] == "Åsa Öberg <asa.oberg@kommun.example>"
    assert "Bo Ek <Bo.Ek@kommun.example>" in message["to"]
    assert message["person_id"] == asa["id"] and message["company_id"] == company["id"]
    assert message["date"] == "2025-03-03T08:15:00.000000Z"
    assert message["body"].strip() == "Hej! Se bifogad meny för vårt boende."
    assert [(a["filename"], a["content_type"], a["size"]) for a in message["attachments"]] == [
        ("meny väsby.pdf", "application/pdf", len(PDF)),
        ("allergier.csv", "text/csv", len(CSV_ATTACHMENT)),
    ]
    pdf = crm.client.get(f"/api/v1/emails/{stored['id']}/attachments/0", headers=crm.support)
    assert pdf.status_code == 200 and pdf.data == PDF and pdf.mimetype == "application/pdf"
    assert "meny%20v%C3%A4sby.pdf" in pdf.headers["Content-Disposition"]
    assert crm.client.get(f"/api/v1/emails/{stored['id']}/attachments/2", headers=crm.support).status_code == 404
    assert crm.client.get(f"/api/v1/emails/{stored['id']}/raw", headers=crm.support).data == raw
    listed = crm.get(f"/api/v1/companies/{company['id']}/emails")["items"]
    assert [(m["id"], m["subject"], m["attachment_count"]) for m in listed] == [(stored["id"], SUBJECT, 2)]
    assert [e["data"]["part"] for e in events_of(crm.runtime, "crm.email.viewed")] == [
        "message",
        "attachment",
        "raw",
        "headers",
    ]
    ingested = events_of(crm.runtime, "crm.email.ingested")[0]
    assert ingested["subject"] == f"crm:email:{stored['id']}" and ingested["data"]["person_id"] == asa["id"]
    crm.runtime.db.dispose()
    assert_no_plaintext(
        raw_dump(crm.url),
        [
            SUBJECT,
            "asa.oberg@kommun.example",
            "Bo.Ek@kommun.example",
            "allergier.csv",
            "Hej! Se bifogad",
            "a1@kommun.example",
        ],
    )


def test_same_message_twice_is_stored_once_and_search_finds_it_by_any_named_address(crm_lite):
    crm = crm_lite
    company = crm.company()
    first = crm.ok(upload(crm, company["id"], eml()), 201)
    again = crm.ok(upload(crm, company["id"], eml()), 200)
    assert again == {"id": first["id"], "duplicate": True}
    for address in ("bo.ek@kommun.example", "ASA.oberg@kommun.example"):
        found = crm.post("/api/v1/emails/search", {"email": address}, 200)["items"]
        assert [m["id"] for m in found] == [first["id"]]
    assert crm.post("/api/v1/emails/search", {"email": "nobody@kommun.example"}, 200)["items"] == []


def test_upload_checks_type_size_and_that_it_is_a_message(tmp_path):
    from tests.crm.conftest import Harness

    harness = Harness(f"sqlite:///{tmp_path / 'crm.db'}", MAX_EMAIL_BYTES=4096)
    try:
        company = harness.company()
        assert upload(harness, company["id"], eml(), "text/plain").status_code == 415
        too_big = upload(harness, company["id"], eml() + b"x" * 5000)
        assert too_big.status_code == 413 and too_big.mimetype == "application/problem+json"
        not_mail = upload(harness, company["id"], b"just some bytes\r\n\r\nno headers")
        assert not_mail.status_code == 422
        assert upload(harness, "00000000-0000-4000-8000-000000000000", eml()).status_code == 404
        form = harness.client.post(
            f"/api/v1/companies/{company['id']}/emails",
            headers=harness.support,
            data={"file": (io.BytesIO(eml()), "message.eml")},
            content_type="multipart/form-data",
        )
        assert form.status_code == 201
        assert len(harness.get(f"/api/v1/companies/{company['id']}/emails")["items"]) == 1
    finally:
        harness.close()


def test_sender_is_matched_only_within_the_company(crm_lite):
    crm = crm_lite
    ours, theirs = crm.company("A AB"), crm.company("B AB")
    crm.person(theirs["id"], name="Åsa", email="asa.oberg@kommun.example")
    stored = crm.ok(upload(crm, ours["id"], eml()), 201)
    assert crm.get(f"/api/v1/emails/{stored['id']}")["person_id"] is None


def test_ingest_mail_command_reads_a_maildir_and_an_mbox(crm_lite, tmp_path, monkeypatch, capsys):
    crm = crm_lite
    company = crm.company()
    monkeypatch.setenv("RECEPT_CRM_DATABASE_URL", crm.url)
    monkeypatch.setenv("RECEPT_CRM_KEYRING", crm.keyring.to_json())
    maildir = mailbox.Maildir(str(tmp_path / "Maildir"), create=True)
    maildir.add(eml(message_id="<m1@x.example>"))
    maildir.add(eml(message_id="<m2@x.example>"))
    maildir.add(b"no headers at all")
    maildir.close()
    assert cli.main(["ingest-mail", str(tmp_path / "Maildir"), "--company", company["id"]]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["source"], report["ingested"], report["rejected"]) == ("maildir", 2, 1)
    box = mailbox.mbox(str(tmp_path / "support.mbox"), create=True)
    box.add(eml(message_id="<m3@x.example>"))
    box.flush()
    box.close()
    assert cli.main(["ingest-mail", str(tmp_path / "support.mbox"), "--company", company["id"]]) == 0
    assert cli.main(["ingest-mail", str(tmp_path / "Maildir"), "--company", company["id"]]) == 1
    report = json.loads(capsys.readouterr().out.split("\n}\n")[-2] + "\n}")
    assert (report["ingested"], report["duplicates"]) == (0, 2)
    assert cli.main(["ingest-mail", str(tmp_path / "Maildir"), "--company", "nope"]) == 2
    assert len(crm.get(f"/api/v1/companies/{company['id']}/emails")["items"]) == 3
    assert {e["data"]["source"] for e in events_of(crm.runtime, "crm.email.ingested")} == {"maildir", "mbox"}
