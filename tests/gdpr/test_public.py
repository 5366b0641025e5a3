"""Issue 17, the person is told: public requests with a one-time code, rate limits, notices at each step
sent through the notice table, the one-time encrypted hand-over and the shredding of contact details
(R1, R2; GDPR art. 12).  The gdpr service's API on SQLite (and PostgreSQL where the database matters),
a real SMTP listener and a fake SMS sink."""

from __future__ import annotations

import io
import re
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from services.gdpr.handover import decrypt_package, encrypt_package, new_passphrase, new_token, token_hash
from services.gdpr.models import public_requests, public_verifications, requests, subject_notices
from services.gdpr.public import RateLimiter, code_hash, new_code
from shared.errors import TooManyRequests
from shared.mail import SmtpRelay
from tests.conftest import raw_dump
from tests.gdpr import sms
from tests.gdpr.mailbox import mailbox
from tests.gdpr.test_requests import Gdpr
from tests.support import assert_no_plaintext, events_of

PERSON = "maria.persson@example.se"
PHONE = "+46701234567"


# --- units: codes, tokens, passphrases, rate limits ---------------------------------------------


def test_codes_are_six_digits_and_only_their_keyed_hash_is_kept():
    codes = {new_code() for _ in range(200)}
    assert all(re.fullmatch(r"\d{6}", c) for c in codes) and len(codes) > 150
    key = b"k" * 32
    assert code_hash(key, "a", "123456") != code_hash(key, "b", "123456")  # bound to its verification
    assert code_hash(key, "a", "123456") != code_hash(b"j" * 32, "a", "123456")
    assert "123456" not in code_hash(key, "a", "123456")


def test_tokens_and_passphrases_are_random_and_the_token_is_stored_hashed():
    assert len({new_token() for _ in range(50)}) == 50
    token = new_token()
    assert len(token) >= 40 and token_hash(token) != token and len(token_hash(token)) == 64
    assert re.fullmatch(r"([A-Z2-7]{4}-){5}[A-Z2-7]{4}", new_passphrase())


def test_package_encryption_round_trips_and_refuses_a_wrong_passphrase_or_a_changed_byte():
    data = b"PK\x03\x04 a zip" * 100
    sealed = encrypt_package(data, "ABCD-EFGH")
    assert sealed.startswith(b"RCPTPKG1") and data not in sealed
    assert decrypt_package(sealed, "ABCD-EFGH") == data
    with pytest.raises(ValueError, match="wrong passphrase"):
        decrypt_package(sealed, "ABCD-EFGX")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(ValueError):
        decrypt_package(tampered, "ABCD-EFGH")
    with pytest.raises(ValueError, match="not a Recept"):
        decrypt_package(b"PK\x03\x04", "x")


def test_rate_limiter_counts_per_key_and_window(database_url):
    service = Gdpr(database_url)
    try:
        now = datetime(2026, 3, 1, tzinfo=UTC)
        limiter = RateLimiter(b"k" * 32, 60.0)
        with service.rt.db.transaction() as s:
            for _ in range(3):
                limiter.hit(s, "email", PERSON, 3, now)
        with pytest.raises(TooManyRequests) as refused, service.rt.db.transaction() as s:
            limiter.hit(s, "email", PERSON, 3, now + timedelta(seconds=10))
        assert refused.value.headers["Retry-After"] == "51"
        with service.rt.db.transaction() as s:
            limiter.hit(s, "email", "someone.else@example.se", 3, now)  # another key has its own count
            limiter.hit(s, "email", PERSON, 3, now + timedelta(seconds=61))  # a new window
        assert_no_plaintext(raw_dump(service.url), [PERSON, "someone.else@example.se"])
    finally:
        service.rt.db.dispose()


# --- the API -------------------------------------------------------------------------------------


@pytest.fixture
def smtp():
    with mailbox() as box:
        yield box


def make(url: str, smtp, **settings) -> Gdpr:
    sms.SENT.clear()
    return Gdpr(
        url,
        SMTP_PORT=smtp.port,
        SMS_SENDER="tests.gdpr.sms:create",
        PUBLIC_CUSTOMERS=["kommun=Exempel kommun"],
        PUBLIC_BASE_URL="https://portal.example/portal",
        REMINDER_TO=["dpo@vendor.example"],
        **settings,
    )


@pytest.fixture
def service(tmp_path, smtp):
    made = make(f"sqlite:///{tmp_path / 'gdpr.db'}", smtp)
    yield made
    made.rt.db.dispose()


def ask(service, **extra):
    body = {"type": "export", "email": PERSON, "language": "en", **extra}
    return service.client.post("/api/v1/public/verifications", json=body)


def confirm(service, verification_id: str, code: str):
    return service.client.post(f"/api/v1/public/verifications/{verification_id}/confirm", json={"code": code})


def pump(service) -> dict:
    """What the worker does: hand the service its own events, then one notice round."""
    notifier = service.client.application.extensions["gdpr_notices"]
    for event in events_of(service.rt):
        with service.rt.db.transaction() as s:
            notifier.on_event(s, event)
    return notifier.round()


def test_a_code_by_email_opens_the_request_and_nothing_exists_before(database_url, smtp):
    service = make(database_url, smtp)
    try:
        started = ask(service, phone="070-123 45 67")
        assert started.status_code == 202, started.json
        verification_id = started.json["verification_id"]
        code = smtp.last_code(PERSON)
        with service.rt.db.transaction() as s:
            assert s.scalar(select(requests.c.id)) is None  # nothing created until verified
            stored = s.execute(select(public_verifications)).one()
        assert code not in stored.code_hash
        assert_no_plaintext(raw_dump(database_url), [PERSON, "701234567"])

        wrong = "000000" if code != "000000" else "111111"
        refused = confirm(service, verification_id, wrong)
        assert refused.status_code == 422 and refused.json["errors"][0]["field"] == "code"
        assert "4 attempts left" in refused.json["errors"][0]["message"]

        opened = confirm(service, verification_id, code)
        assert opened.status_code == 201, opened.json
        assert opened.json["origin"] == "public" and opened.json["customer_must_confirm"] is False
        view = service.view(opened.json["request_id"])
        assert view["tenant"] == "vendor" and view["status"] == "awaiting_approval"
        assert confirm(service, verification_id, code).status_code == 410  # a replayed code
        assert_no_plaintext(raw_dump(database_url), [PERSON, "701234567"])
    finally:
        service.rt.db.dispose()


def test_the_answer_does_not_depend_on_the_address_and_bad_input_is_a_422(service, smtp):
    first = ask(service, email="never.seen@example.org")
    second = ask(service)
    assert first.status_code == second.status_code == 202 and set(first.json) == set(second.json)
    bad = ask(service, email="not an address")
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "email"
    assert "not an address" not in bad.get_data(as_text=True)
    unknown = ask(service, scope="customer", customer="nowhere")
    assert unknown.status_code == 422 and unknown.json["errors"][0]["field"] == "customer"
    sms_without_phone = ask(service, channel="sms")
    assert sms_without_phone.status_code == 422 and sms_without_phone.json["errors"][0]["field"] == "phone"
    assert ask(service, unknown=1).status_code == 422


def test_a_code_by_sms_and_a_customer_request_that_the_customer_must_confirm(service):
    started = ask(service, channel="sms", phone=PHONE, scope="customer", customer="kommun", type="erase")
    assert started.status_code == 202
    number, text = sms.SENT[-1]
    assert number == PHONE
    code = re.findall(r"\b(\d{6})\b", text)[0]
    opened = confirm(service, started.json["verification_id"], code)
    assert opened.status_code == 201 and opened.json["customer_must_confirm"] is True
    assert service.view(opened.json["request_id"])["tenant"] == "kommun"
    customers = service.client.get("/api/v1/public/customers").json
    assert customers == {"items": [{"slug": "kommun", "name": "Exempel kommun"}], "sms": True}


def test_expired_codes_and_spent_attempts_are_gone(tmp_path, smtp):
    service = make(f"sqlite:///{tmp_path / 'g.db'}", smtp, CODE_TTL=1.0, CODE_ATTEMPTS=2)
    try:
        started = ask(service).json
        code = smtp.last_code(PERSON)
        public = service.client.application.extensions["gdpr_public"]
        later = datetime.now(UTC) + timedelta(seconds=5)
        with pytest.raises(Exception) as expired:
            public.confirm(started["verification_id"], code, "127.0.0.1", now=later)
        assert getattr(expired.value, "status", None) == 410
        again = ask(service).json
        code = smtp.last_code(PERSON)
        wrong = "000000" if code != "000000" else "111111"
        assert confirm(service, again["verification_id"], wrong).status_code == 422
        assert confirm(service, again["verification_id"], wrong).status_code == 410  # the last attempt
        assert confirm(service, again["verification_id"], code).status_code == 410  # spent
        assert confirm(service, "not-a-uuid", "123456").status_code == 410
    finally:
        service.rt.db.dispose()


def test_floods_from_one_address_or_one_client_get_the_same_429(tmp_path, smtp):
    service = make(f"sqlite:///{tmp_path / 'g.db'}", smtp, PUBLIC_PER_ADDRESS=2, PUBLIC_PER_CLIENT=3)
    try:
        assert [ask(service).status_code for _ in range(3)] == [202, 202, 429]
        sent = len(smtp.messages)
        flooded = ask(service)
        assert flooded.status_code == 429 and flooded.headers["Retry-After"]
        assert len(smtp.messages) == sent  # no work done
        assert ask(service, email="other.one@example.org").status_code == 202  # a refusal counted nothing
        per_client = ask(service, email="third.one@example.org")  # a fourth call from this client
        assert per_client.status_code == 429
        assert per_client.json["detail"] == flooded.json["detail"]  # uniform: which limit is not said
    finally:
        service.rt.db.dispose()


def open_public(service, smtp, **extra) -> str:
    started = ask(service, **extra).json
    opened = confirm(service, started["verification_id"], smtp.last_code(PERSON))
    assert opened.status_code == 201, opened.json
    return opened.json["request_id"]


def test_an_export_is_noticed_handed_over_once_encrypted_and_recorded(service, smtp, tmp_path):
    service.announce(("alpha", "resolve"), tmp_path=tmp_path)
    request_id = open_public(service, smtp, phone=PHONE)
    assert pump(service)["sent"] == 1
    assert "We received your request" in smtp.bodies(PERSON)[-1]
    approved = service.approve(request_id)
    assert approved.status_code == 200, approved.json
    for command in service.commands():
        service.reply(command)
    assert service.view(request_id)["status"] == "completed"
    assert pump(service)["sent"] == 2  # the link by e-mail, the passphrase by SMS
    body = smtp.bodies(PERSON)[-1]
    token = re.search(r"https://portal\.example/portal/public/download/([A-Za-z0-9_-]+)", body).group(1)
    passphrase = re.search(r"is: (\S+)$", sms.SENT[-1][1]).group(1)
    assert passphrase not in body  # the second channel carries it

    downloaded = service.client.post("/api/v1/public/downloads", json={"token": token})
    assert downloaded.status_code == 200 and downloaded.headers["Cache-Control"] == "no-store"
    with zipfile.ZipFile(io.BytesIO(decrypt_package(downloaded.data, passphrase))) as archive:
        assert "manifest.json" in archive.namelist()
    second = service.client.post("/api/v1/public/downloads", json={"token": token})
    assert second.status_code == 410 and second.mimetype == "application/problem+json"
    assert service.client.post("/api/v1/public/downloads", json={"token": "x" * 43}).status_code == 404

    history = service.client.get(f"/api/v1/requests/{request_id}/notices", headers=service.headers()).json
    assert sorted((n["kind"], n["channel"], n["status"]) for n in history["items"]) == [
        ("completed", "email", "sent"),
        ("passphrase", "sms", "sent"),
        ("received", "email", "sent"),
    ]
    sent = events_of(service.rt, "gdpr.notice.sent")
    assert len(sent) == 3 and all(e["subject"] == f"gdpr:request:{request_id}" for e in sent)
    assert len(events_of(service.rt, "gdpr.export.downloaded")) == 1
    assert_no_plaintext(
        str(events_of(service.rt)).encode() + raw_dump(service.url), [PERSON, "701234567", token, passphrase]
    )


def test_a_refusal_needs_a_reason_and_its_notice_carries_it(service, smtp):
    request_id = open_public(service, smtp, language="sv")
    pump(service)
    missing = service.client.post(f"/api/v1/requests/{request_id}/reject", json={}, headers=service.headers())
    assert missing.status_code == 422 and missing.json["errors"][0]["field"] == "reason"
    blank = service.client.post(
        f"/api/v1/requests/{request_id}/reject", json={"reason": "  "}, headers=service.headers()
    )
    assert blank.status_code == 422
    assert service.view(request_id)["status"] == "awaiting_approval"  # nothing half-written
    reason = "Vi kan inte identifiera dig i våra system"
    rejected = service.client.post(
        f"/api/v1/requests/{request_id}/reject", json={"reason": reason}, headers=service.headers()
    )
    assert rejected.status_code == 200
    assert pump(service)["sent"] == 1
    notice = smtp.bodies(PERSON)[-1]
    assert reason in notice and "Integritetsskyddsmyndigheten" in notice


def test_an_extension_is_noticed_with_its_reason_and_officers_are_reminded(service, smtp):
    request_id = open_public(service, smtp)
    service.client.post(
        f"/api/v1/requests/{request_id}/extend", json={"months": 1, "reason": "many systems"}, headers=service.headers()
    )
    pump(service)
    assert any("many systems" in b and "1 month" in b for b in smtp.bodies(PERSON))
    notifier = service.client.application.extensions["gdpr_notices"]
    later = datetime.now(UTC) + timedelta(days=55)
    with service.rt.db.transaction() as s:
        assert notifier.remind(s, later) == 1
        assert notifier.remind(s, later) == 0  # once per request
    notifier.deliver(later)
    assert any(request_id[:8] in b for b in smtp.bodies("dpo@vendor.example"))


def test_a_code_the_relay_cannot_take_gets_the_same_answer_and_is_sent_later(service, smtp):
    public = service.client.application.extensions["gdpr_public"]
    relay = public.senders.relay
    public.senders.relay = SmtpRelay({**{k: relay.config[k] for k in relay.config}, "SMTP_PORT": 1})  # nobody there
    try:
        started = ask(service)
        assert started.status_code == 202 and smtp.messages == []
        assert public.send_unsent_codes() == 0  # still down
    finally:
        public.senders.relay = relay
    assert public.send_unsent_codes() == 1 and public.send_unsent_codes() == 0
    assert confirm(service, started.json["verification_id"], smtp.last_code(PERSON)).status_code == 201


def test_a_notice_survives_a_relay_outage_and_is_sent_later(service, smtp):
    request_id = open_public(service, smtp)
    notifier = service.client.application.extensions["gdpr_notices"]
    relay = notifier.senders.relay
    notifier.senders.relay = SmtpRelay({**{k: relay.config[k] for k in relay.config}, "SMTP_PORT": 1})  # nobody there
    try:
        assert pump(service)["retry"] == 1
    finally:
        notifier.senders.relay = relay
    assert notifier.deliver(datetime.now(UTC) + timedelta(hours=2))["sent"] == 1
    with service.rt.db.transaction() as s:
        row = s.execute(select(subject_notices).where(subject_notices.c.request_id == request_id)).one()
    assert row.status == "sent" and row.attempts == 2


def test_after_an_erasure_the_contact_is_shredded_and_its_hash_stays(service, smtp, tmp_path):
    service.announce(("alpha", "resolve"), tmp_path=tmp_path)
    request_id = open_public(service, smtp, type="erase", phone=PHONE)
    service.approve(request_id)
    for command in service.commands():
        service.reply(command)
    done = pump(service)
    assert done["sent"] == 2 and done["contacts_shredded"] == 1
    assert "was erased" in smtp.bodies(PERSON)[-1]
    with service.rt.db.transaction() as s:
        row = s.execute(select(public_requests)).one()
    assert row.contact is None and row.contact_shredded_at is not None and len(row.contact_hash) == 64
    assert len(events_of(service.rt, "gdpr.contact.shredded")) == 1
    history = service.client.get(f"/api/v1/requests/{request_id}/notices", headers=service.headers()).json
    assert history["contact_shredded_at"] and sorted(n["kind"] for n in history["items"]) == ["completed", "received"]


def test_the_decrypt_package_command_opens_a_download_with_its_passphrase(tmp_path, monkeypatch, capsys):
    from services.gdpr.cli import main

    sealed, opened = tmp_path / "in.rcpt", tmp_path / "out.zip"
    sealed.write_bytes(encrypt_package(b"PK\x03\x04 the zip", "WXYZ-2345"))
    monkeypatch.setenv("RECEPT_PACKAGE_PASSPHRASE", "WXYZ-2345")
    assert main(["decrypt-package", str(sealed), str(opened)]) == 0
    assert opened.read_bytes() == b"PK\x03\x04 the zip"
    monkeypatch.setenv("RECEPT_PACKAGE_PASSPHRASE", "WXYZ-2346")
    assert main(["decrypt-package", str(sealed), str(tmp_path / "no.zip")]) == 1
    assert "wrong passphrase" in capsys.readouterr().err and not (tmp_path / "no.zip").exists()


def test_an_unused_link_expires_and_old_verifications_are_forgotten(service, smtp, tmp_path):
    service.announce(("alpha", "resolve"), tmp_path=tmp_path)
    request_id = open_public(service, smtp)
    service.approve(request_id)
    for command in service.commands():
        service.reply(command)
    pump(service)
    mails = "\n".join(smtp.bodies(PERSON))
    token = re.search(r"/public/download/([A-Za-z0-9_-]+)", mails).group(1)
    assert "The passphrase of your download" in mails  # no phone given: a separate e-mail carries it
    notifier = service.client.application.extensions["gdpr_notices"]
    later = datetime.now(UTC) + timedelta(days=8)  # past HANDOVER_TTL (7 days)
    done = notifier.round(service.client.application.extensions["gdpr_public"], now=later)
    assert done["handovers_expired"] == 1 and done["verifications_pruned"] == 1
    expired = service.client.post("/api/v1/public/downloads", json={"token": token})
    assert expired.status_code == 410
    with service.rt.db.transaction() as s:
        assert s.scalar(select(public_verifications.c.id)) is None
