"""System-change notices to appointed recipients over a real SMTP listener (R4)."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time

from services.crm.notices import deliver_pending, delivery_loop
from tests.processes import free_port
from tests.support import assert_no_plaintext, events_of, outbox_messages

NOTICE = {"title": "Driftinformation: uppgradering 12 maj", "body": "Systemet uppgraderas kl 18-20."}


def smtp_settings(smtp, **extra) -> dict:
    return {"SMTP_HOST": smtp.host, "SMTP_PORT": smtp.port, "SMTP_FROM": "drift@vendor.example", **extra}


def test_notice_reaches_every_appointed_recipient_of_the_chosen_companies(make_crm, postgres_url, smtp):
    """R4: one e-mail per appointed recipient of the chosen companies; who got which notice, and when, is kept."""
    crm = make_crm(postgres_url, **smtp_settings(smtp))
    a, b, c = crm.company("A kommun"), crm.company("B region"), crm.company("C skola")
    anna = crm.person(a["id"], name="Anna Svensson", email="anna@a.example", notice_recipient=True)
    bo = crm.person(a["id"], name="Bo Ek", email="bo@a.example", notice_recipient=True)
    crm.person(a["id"], name="Cilla", email="cilla@a.example")  # not appointed
    dan = crm.person(b["id"], name="Dan Öst", email="dan@b.example", notice_recipient=True)
    crm.person(c["id"], name="Eva", email="eva@c.example", notice_recipient=True)  # company not chosen
    notice = crm.post("/api/v1/notices", {**NOTICE, "company_ids": [a["id"], b["id"]]})
    assert {d["person_id"]: d["status"] for d in notice["deliveries"]} == {
        anna["id"]: "sent",
        bo["id"]: "sent",
        dan["id"]: "sent",
    }
    assert all(d["sent_at"] for d in notice["deliveries"])
    assert sorted(r for m in smtp.messages for r in m.recipients) == ["anna@a.example", "bo@a.example", "dan@b.example"]
    assert all(len(m.recipients) == 1 and m.envelope_from == "drift@vendor.example" for m in smtp.messages)
    received = email.message_from_bytes(smtp.messages[0].data, policy=email.policy.default)
    assert received["Subject"] == NOTICE["title"] and received["X-Recept-Notice"] == notice["id"]
    assert received.get_content().strip() == NOTICE["body"]
    dan_mail = next(m for m in smtp.messages if m.recipients == ["dan@b.example"])
    assert str(email.message_from_bytes(dan_mail.data, policy=email.policy.default)["To"]) == "Dan Öst <dan@b.example>"
    assert crm.get(f"/api/v1/notices/{notice['id']}")["deliveries"] == notice["deliveries"]
    assert [n["id"] for n in crm.get("/api/v1/notices")["items"]] == [notice["id"]]
    assert events_of(crm.runtime, "crm.notice.created")[0]["data"] == {
        "notice_id": notice["id"],
        "companies": 2,
        "recipients": 3,
    }
    assert len(events_of(crm.runtime, "crm.notice_delivery.sent")) == 3
    assert_no_plaintext(
        json.dumps(outbox_messages(crm.runtime)).encode(),
        ["anna@a.example", "bo@a.example", "dan@b.example", "Anna Svensson"],
    )


def test_refused_recipient_is_retried_then_failed_without_recording_the_address(make_crm, smtp):
    crm = make_crm(**smtp_settings(smtp, NOTICE_MAX_ATTEMPTS=2, NOTICE_RETRY_INTERVAL=0.01))
    company = crm.company()
    crm.person(company["id"], name="Ok", email="ok@a.example", notice_recipient=True)
    gone = crm.person(company["id"], name="Gone", email="gone@a.example", notice_recipient=True)
    smtp.refuse.add("gone@a.example")
    notice = crm.post("/api/v1/notices", {**NOTICE, "company_ids": [company["id"]]})
    refused = next(d for d in notice["deliveries"] if d["person_id"] == gone["id"])
    assert refused["status"] == "pending" and refused["attempts"] == 1
    assert refused["last_error"].startswith("SMTPRecipientsRefused") and "gone@" not in refused["last_error"]
    time.sleep(0.05)  # past the backoff (0.01 s * 2**1)
    assert deliver_pending(crm.crm) == {"sent": 0, "retry": 0, "failed": 1, "cancelled": 0}
    after = crm.get(f"/api/v1/notices/{notice['id']}")["deliveries"]
    assert {d["status"] for d in after} == {"sent", "failed"}
    failed = events_of(crm.runtime, "crm.notice_delivery.failed")
    assert len(failed) == 1 and failed[0]["data"]["person_id"] == gone["id"]
    assert [m.recipients for m in smtp.messages] == [["ok@a.example"]]


def test_relay_outage_leaves_deliveries_for_the_worker_loop(make_crm, smtp):
    """The notice is committed before sending; the worker's loop delivers once the relay answers."""
    crm = make_crm(SMTP_HOST="127.0.0.1", SMTP_PORT=free_port(), SMTP_TIMEOUT=2.0, NOTICE_RETRY_INTERVAL=0.05)
    company = crm.company()
    crm.person(company["id"], name="Anna", email="anna@a.example", notice_recipient=True)
    notice = crm.post("/api/v1/notices", {**NOTICE, "company_ids": [company["id"]]})
    assert notice["deliveries"][0]["status"] == "pending"
    assert notice["deliveries"][0]["last_error"] == "ConnectionRefusedError"
    crm.runtime.config.values["SMTP_PORT"] = smtp.port  # the relay is back
    stop = threading.Event()
    worker = threading.Thread(target=delivery_loop(crm.runtime.domain), args=(stop,))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not smtp.messages:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(timeout=10)
    assert [m.recipients for m in smtp.messages] == [["anna@a.example"]]
    assert crm.get(f"/api/v1/notices/{notice['id']}")["deliveries"][0]["status"] == "sent"


def test_recipient_removed_before_delivery_is_cancelled(make_crm, smtp):
    crm = make_crm(**smtp_settings(smtp, NOTICE_SEND_INLINE=False))
    company = crm.company()
    anna = crm.person(company["id"], name="Anna", email="anna@a.example", notice_recipient=True)
    crm.person(company["id"], name="Bo", email="bo@a.example", notice_recipient=True)
    notice = crm.post("/api/v1/notices", {**NOTICE, "company_ids": [company["id"]]})
    assert {d["status"] for d in notice["deliveries"]} == {"pending"}
    assert crm.client.delete(f"/api/v1/persons/{anna['id']}", headers=crm.support).status_code == 204
    assert deliver_pending(crm.crm) == {"sent": 1, "retry": 0, "failed": 0, "cancelled": 1}
    assert [m.recipients for m in smtp.messages] == [["bo@a.example"]]


def test_notice_needs_known_companies_with_recipients(make_crm):
    crm = make_crm()
    company = crm.company()
    crm.person(company["id"], name="Cilla", email="cilla@a.example")
    response = crm.client.post(
        "/api/v1/notices",
        headers=crm.support,
        json={**NOTICE, "company_ids": [company["id"], "00000000-0000-4000-8000-000000000000"]},
    )
    assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == "company_ids.1"
    response = crm.client.post("/api/v1/notices", headers=crm.support, json={**NOTICE, "company_ids": [company["id"]]})
    assert response.status_code == 422
    assert crm.get("/api/v1/notices")["items"] == []


def test_a_title_with_a_line_break_is_refused_and_one_unsendable_message_does_not_stop_the_others(make_crm, smtp):
    """Security review (issue 14): a CR/LF in a title is a 422 (it would also inject headers); and a message
    that cannot be built is marked failed on its own while every other delivery of the batch goes out."""
    from sqlalchemy import update

    from services.crm.models import notices

    crm = make_crm(**smtp_settings(smtp, NOTICE_SEND_INLINE=False))
    company = crm.company()
    crm.person(company["id"], name="Anna", email="anna@a.example", notice_recipient=True)
    crm.person(company["id"], name="Bo", email="bo@a.example", notice_recipient=True)
    for title in ("Uppgradering\r\nBcc: all@evil.example", "Rad ett\nrad två", "Tab\x00noll"):
        response = crm.client.post(
            "/api/v1/notices", headers=crm.support, json={**NOTICE, "title": title, "company_ids": [company["id"]]}
        )
        assert response.status_code == 422 and response.mimetype == "application/problem+json"
        assert [e["field"] for e in response.get_json()["errors"]] == ["title"]
    assert crm.get("/api/v1/notices")["items"] == []
    # A notice stored before titles were checked: its deliveries come first in the batch.
    bad = crm.post("/api/v1/notices", {**NOTICE, "company_ids": [company["id"]]})
    with crm.runtime.db.transaction() as s:
        s.execute(update(notices).where(notices.c.id == bad["id"]).values(title="Före\r\nBcc: all@evil.example"))
    good = crm.post("/api/v1/notices", {**NOTICE, "company_ids": [company["id"]]})
    assert deliver_pending(crm.crm) == {"sent": 2, "retry": 0, "failed": 2, "cancelled": 0}
    assert {d["status"] for d in crm.get(f"/api/v1/notices/{good['id']}")["deliveries"]} == {"sent"}
    failed = crm.get(f"/api/v1/notices/{bad['id']}")["deliveries"]
    assert {d["status"] for d in failed} == {"failed"} and all(d["last_error"] == "ValueError" for d in failed)
    assert sorted(r for m in smtp.messages for r in m.recipients) == ["anna@a.example", "bo@a.example"]
    assert b"evil" not in b"".join(m.data for m in smtp.messages)
    assert deliver_pending(crm.crm) == {"sent": 0, "retry": 0, "failed": 0, "cancelled": 0}  # nothing stuck


def test_starttls_to_the_relay_verifies_its_certificate_against_the_configured_ca(make_crm, tmp_path):
    """Compose turns STARTTLS on (issue 14) with a demo CA from deploy/make_secrets: notices go encrypted to
    a relay whose certificate that CA signed, and never to one it did not."""
    import ssl

    from aiosmtpd.controller import Controller

    from deploy.make_secrets import relay_tls

    ca, cert, key = relay_tls(("localhost",))
    for name, pem in (("ca.pem", ca), ("cert.pem", cert), ("key.pem", key)):
        (tmp_path / name).write_bytes(pem)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append((session.ssl is not None, envelope.rcpt_tos))
            return "250 Message accepted"

    port = free_port()
    controller = Controller(Handler(), hostname="localhost", port=port, tls_context=server_tls, require_starttls=True)
    controller.start()
    try:
        other_ca = relay_tls(("localhost",))[0]
        (tmp_path / "other-ca.pem").write_bytes(other_ca)
        settings = {
            "SMTP_HOST": "localhost",
            "SMTP_PORT": port,
            "SMTP_STARTTLS": True,
            "SMTP_TIMEOUT": 5.0,
            "NOTICE_SEND_INLINE": False,
        }
        crm = make_crm(**settings, SMTP_CA_PATH=str(tmp_path / "ca.pem"))
        company = crm.company()
        crm.person(company["id"], name="Anna", email="anna@a.example", notice_recipient=True)
        crm.post("/api/v1/notices", {**NOTICE, "company_ids": [company["id"]]})
        assert deliver_pending(crm.crm) == {"sent": 1, "retry": 0, "failed": 0, "cancelled": 0}
        assert received == [(True, ["anna@a.example"])]
        stranger = make_crm(**settings, SMTP_CA_PATH=str(tmp_path / "other-ca.pem"))
        company = stranger.company()
        stranger.person(company["id"], name="Bo", email="bo@a.example", notice_recipient=True)
        notice = stranger.post("/api/v1/notices", {**NOTICE, "company_ids": [company["id"]]})
        assert deliver_pending(stranger.crm)["retry"] == 1 and len(received) == 1
        assert (
            stranger.get(f"/api/v1/notices/{notice['id']}")["deliveries"][0]["last_error"] == "SSLCertVerificationError"
        )
    finally:
        controller.stop()
