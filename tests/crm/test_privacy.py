"""GDPR participation of the crm service (R1, R2, R3, R15): resolve, export, erase, and the bus protocol."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import UTC

from sqlalchemy import select

from services.crm import SPEC
from services.crm.models import calls, cases, emails, persons
from shared.bus import GDPR, Binding, Bus, Message, Outcome
from shared.crypto import ERASED
from shared.privacy import Context, announcement
from tests.conftest import raw_dump
from tests.crm.test_mail import eml
from tests.gdpr.sealing import confirm_exact, opened_reply, sealed_command
from tests.support import TokenMint, assert_no_plaintext, events_of, make_runtime

ANNA = {
    "name": "Anna Svensson",
    "email": "anna.svensson@kommun.example",
    "phone": "070-123 45 67",
    "title": "Kostchef",
    "notice_recipient": True,
}
ANNA_VALUES = [
    "Anna Svensson",
    "anna.svensson@kommun.example",
    "+46701234567",
    "Kostchef",
    "Annas inloggning strular",
    "Anna ringde om sin allergilista",
    "Annas fakturafr",
    "a1@kommun.example",
]
CALLS = (
    b"timestamp,calling_number,called_line,duration,direction\n"
    b"2025-03-03 08:15:00,+46 70 123 45 67,support,125,inbound\n"
    b"2025-03-04 09:00:10,070-123 45 67,support,42,inbound\n"
    b"2025-03-05 10:30:00,0701234567,support,181,inbound\n"
    b"2025-03-05 11:00:00,0709876543,support,60,inbound\n"
)


def populate(crm) -> dict:
    """Anna in 3 call-log rows, 2 cases and 1 e-mail; Bo and Carl beside her."""
    kommun, region = crm.company("Kommun AB"), crm.company("Region AB")
    anna = crm.person(kommun["id"], **ANNA)
    bo = crm.person(kommun["id"], name="Bo Ek", email="bo.ek@kommun.example", phone="0709876543")
    carl = crm.person(region["id"], name="Carl Berg", email="carl@region.example")
    assert (
        crm.ok(crm.client.post("/api/v1/calls/import", data=CALLS, content_type="text/csv", headers=crm.support))[
            "imported"
        ]
        == 4
    )
    case1 = crm.post(
        "/api/v1/cases",
        {
            "company_id": kommun["id"],
            "caller_name": "Anna Svensson",
            "phone": "+46701234567",
            "subject": "Annas inloggning strular",
        },
    )
    # Registered under the other company and without a phone: found through her e-mail alone.
    case2 = crm.post(
        "/api/v1/cases",
        {
            "company_id": region["id"],
            "email": "Anna.Svensson@kommun.example",
            "subject": "Annas fakturafråga",
            "description": "Anna ringde om sin allergilista",
        },
    )
    bo_case = crm.post("/api/v1/cases", {"company_id": kommun["id"], "phone": "0709876543", "subject": "Bo undrar"})
    mail = crm.ok(
        crm.client.post(
            f"/api/v1/companies/{kommun['id']}/emails",
            headers=crm.support,
            data=eml(sender="anna.svensson@kommun.example"),
            content_type="message/rfc822",
        ),
        201,
    )
    bo_mail = crm.ok(
        crm.client.post(
            f"/api/v1/companies/{kommun['id']}/emails",
            headers=crm.support,
            data=bo_eml(),
            content_type="message/rfc822",
        ),
        201,
    )
    crm.runtime.config.values["NOTICE_SEND_INLINE"] = False
    crm.post("/api/v1/notices", {"title": "Uppgradering", "body": "i kväll", "company_ids": [kommun["id"]]})
    return {
        "kommun": kommun,
        "region": region,
        "anna": anna,
        "bo": bo,
        "carl": carl,
        "case1": case1,
        "case2": case2,
        "bo_case": bo_case,
        "mail": mail,
        "bo_mail": bo_mail,
    }


def bo_eml() -> bytes:
    return (
        b"From: Bo Ek <bo.ek@kommun.example>\r\nTo: support@vendor.example\r\nSubject: Bo har en fraga\r\n"
        b"Message-ID: <bo1@kommun.example>\r\n\r\nHej fran Bo\r\n"
    )


def ctx(**subject) -> Context:
    return Context(request_id=str(uuid.uuid4()), tenant="kommun", subject=subject)


def ciphertexts(crm, anna_id: str) -> list[tuple[str, str, str, bytes]]:
    """Every personal ciphertext of Anna's records, as (table, column, row id, blob), read before the erasure."""
    out = []
    with crm.runtime.db.transaction() as s:
        person = s.execute(select(persons).where(persons.c.id == anna_id)).one()
        out += [("persons", c, person.id, getattr(person, c)) for c in ("name", "email", "phone", "title")]
        for row in s.execute(select(calls).where(calls.c.person_id == anna_id)):
            out.append(("calls", "number", row.id, row.number))
        for row in s.execute(select(cases).where(cases.c.subject_ref.is_not(None))):
            if row.caller_email is not None or row.person_id == anna_id:
                out += [
                    ("cases", c, row.id, getattr(row, c))
                    for c in ("caller_name", "caller_phone", "caller_email", "topic", "description")
                ]
        for row in s.execute(select(emails).where(emails.c.person_id == anna_id)):
            out += [("emails", c, row.id, getattr(row, c)) for c in ("raw", "header_from", "header_subject")]
    return [entry for entry in out if entry[3] is not None]


def test_erasing_a_person_in_3_calls_2_cases_and_1_email_leaves_none_of_it_readable(crm):
    """R15, R2: the person tab entry goes, numbers are redacted, cases and e-mails naming them are shredded;
    the company and the other persons stay; a raw dump holds none of their values."""
    world = populate(crm)
    participant = crm.runtime.participant
    anna_id = world["anna"]["id"]
    request = ctx(email="ANNA.svensson@kommun.example", phone="+46 70 123 45 67")
    with crm.runtime.db.transaction() as s:
        references = participant.resolve(s, request)
    kinds = sorted(r.split(":")[1] for r in references)
    assert kinds == ["call", "call", "call", "case", "case", "email", "person"]
    assert f"crm:case:{world['bo_case']['id']}" not in references
    blobs = ciphertexts(crm, anna_id)
    assert len(blobs) >= 3 + 4 + 3

    with crm.runtime.db.transaction() as s:
        exported = participant.export(s, request, references)
    assert exported["person"][0]["email"] == "anna.svensson@kommun.example"
    assert exported["person"][0]["company_name"] == "Kommun AB"
    assert {c["subject"] for c in exported["case"]} == {"Annas inloggning strular", "Annas fakturafråga"}
    assert len(exported["call"]) == 3 and {c["number"] for c in exported["call"]} == {"+46701234567"}
    assert base64.b64decode(exported["email"][0]["raw_base64"]) == eml(sender="anna.svensson@kommun.example")
    assert len(exported["notice_delivery"]) == 1
    json.dumps(exported)  # the reply travels as JSON

    with crm.runtime.db.transaction() as s:
        items = [i.as_dict() for i in participant.erase(s, request, references)]
    assert {i["kind"]: (i["action"], i["count"]) for i in items} == {
        "person": ("deleted", 1),
        "case": ("anonymised", 2),
        "call": ("anonymised", 3),
        "email": ("deleted", 1),
        "notice_delivery": ("anonymised", 1),
        "import_fingerprint": ("retained", 1),
    }
    assert "legal_basis" in next(i for i in items if i["action"] == "retained")

    with crm.runtime.db.transaction() as s:
        for table, column, row_id, blob in blobs:
            assert crm.runtime.vault.decrypt(s, table, column, row_id, blob) is ERASED, (table, column)
        assert participant.resolve(s, request) == []
    # Everyone and everything else is still there and readable.
    assert crm.get(f"/api/v1/companies/{world['kommun']['id']}")["name"] == "Kommun AB"
    assert [p["name"] for p in crm.get(f"/api/v1/companies/{world['kommun']['id']}/persons")["items"]] == ["Bo Ek"]
    assert crm.get(f"/api/v1/persons/{world['carl']['id']}")["email"] == "carl@region.example"
    assert crm.get(f"/api/v1/cases/{world['bo_case']['id']}")["subject"] == "Bo undrar"
    assert crm.get(f"/api/v1/emails/{world['bo_mail']['id']}")["subject"] == "Bo har en fraga"
    kept = crm.get(f"/api/v1/cases/{world['case1']['id']}")
    assert kept["redacted"] and kept["subject"] is None and kept["person_id"] is None
    remaining_calls = crm.get("/api/v1/calls")["items"]
    assert len(remaining_calls) == 4 and sum(c["redacted"] for c in remaining_calls) == 3
    assert {c["number"] for c in remaining_calls} == {None, "+46709876543"}
    assert crm.client.get(f"/api/v1/emails/{world['mail']['id']}", headers=crm.support).status_code == 404
    assert len(events_of(crm.runtime, "crm.person.erased")) == 1
    assert len(events_of(crm.runtime, "crm.call.redacted")) == 3

    # An old mailbox cannot bring the erased e-mail back.  Erased call rows keep no fingerprint of the number
    # (issue 14: it could be brute-forced), so an old call log records those calls again as new rows, while
    # the one call that was not erased is still recognised.
    again = crm.ok(crm.client.post("/api/v1/calls/import", data=CALLS, content_type="text/csv", headers=crm.support))
    assert again["imported"] == 3 and again["duplicates"] == 1
    response = crm.client.post(
        f"/api/v1/companies/{world['kommun']['id']}/emails",
        headers=crm.support,
        data=eml(sender="anna.svensson@kommun.example"),
        content_type="message/rfc822",
    )
    assert response.status_code == 409

    with crm.runtime.db.transaction() as s:  # a repeated command does nothing more
        repeat = [i.as_dict() for i in participant.erase(s, request, references)]
    assert all(i["count"] == 0 for i in repeat)
    crm.runtime.db.dispose()
    assert_no_plaintext(raw_dump(crm.url), ANNA_VALUES)


def test_resolve_ignores_unusable_identifiers_and_other_services_references(crm_lite):
    crm = crm_lite
    company = crm.company()
    crm.person(company["id"], **ANNA)
    participant = crm.runtime.participant
    with crm.runtime.db.transaction() as s:
        assert participant.resolve(s, ctx(email="not-an-address", phone="12")) == []
        assert participant.resolve(s, ctx(personnummer="19800101-0000")) == []
        items = participant.erase(s, ctx(), ["orders:individual:1", "crm:unknown:2"])
    assert all(i.count == 0 for i in items)
    assert len(crm.get(f"/api/v1/companies/{company['id']}/persons")["items"]) == 1


def test_inventory_and_counts_are_announced(crm_lite):
    """R3, R5: categories with legal basis, role and controller, plus live counts."""
    crm = crm_lite
    company = crm.company()
    crm.person(company["id"], **ANNA)
    announced = announcement(crm.runtime)
    kinds = {c["kind"]: c for c in announced["inventory"]["categories"]}
    assert set(kinds) == {"person", "case", "call", "email", "notice_delivery"}
    assert all(c["role"] == "controller" and c["controller"] == "vendor" for c in kinds.values())
    assert announced["counts"] == {"person": 1, "case": 0, "call": 0, "email": 0, "notice_delivery": 0}


def test_erase_command_over_rabbitmq_is_answered_once(postgres_url, rabbit_url):
    """The gdpr command arrives over a real RabbitMQ, the erasure and its reply commit together (R2)."""
    mint = TokenMint()
    runtime = make_runtime(
        SPEC, postgres_url, broker_url=rabbit_url, mint=mint, ANNOUNCE_INTERVAL=3600.0, RELAY_INTERVAL=0.05
    )
    app = SPEC.create_app(runtime=runtime)
    client, headers = app.test_client(), mint.headers(tenant="vendor", roles=("support",))
    company = client.post("/api/v1/companies", json={"name": "Kommun AB"}, headers=headers).get_json()
    person = client.post(f"/api/v1/companies/{company['id']}/persons", json=ANNA, headers=headers).get_json()
    gdpr = Bus(rabbit_url, "gdpr")
    gdpr.declare([Binding(GDPR, "gdpr.reply.#"), Binding(GDPR, "gdpr.announce.#")])
    stop, replies_done = threading.Event(), threading.Event()
    replies: list[dict] = []

    def collect(batch):
        for delivery in batch:
            if delivery.routing_key == "gdpr.reply.crm":
                replies.append(opened_reply(runtime, json.loads(delivery.body)))
                replies_done.set()
        return [Outcome.ACK] * len(batch)

    threads = runtime.start_worker_threads(stop)
    listener = threading.Thread(target=gdpr.consume, args=(collect, stop), daemon=True)
    listener.start()
    publisher = gdpr.publisher()
    try:
        command = {
            "request_id": "req-1",
            "command_id": "cmd-1",
            "action": "erase",
            "phase": "resolve",
            "tenant": "kommun",
            "subject": {"email": ANNA["email"]},
            "references": [],
        }
        command = confirm_exact(runtime, command)  # approved after the preview (issue 15)
        body = json.dumps(sealed_command(runtime, command)).encode()
        # Sent twice (at-least-once delivery): the inbox makes the second a no-op.
        assert publisher.publish(
            [Message(GDPR, "gdpr.command.crm", body, "cmd-1"), Message(GDPR, "gdpr.command.crm", body, "cmd-1")]
        ) == [None, None]
        assert replies_done.wait(30)
        reply = replies[0]
        assert reply["status"] == "done" and reply["references"] == [f"crm:person:{person['id']}"]
        assert {i["kind"]: i["count"] for i in reply["erasure"]}["person"] == 1
        assert client.get(f"/api/v1/persons/{person['id']}", headers=headers).status_code == 404
    finally:
        stop.set()
        for thread in [*threads, listener]:
            thread.join(timeout=15)
        publisher.close()
        runtime.db.dispose()
    assert len(replies) == 1


def test_an_erased_call_row_keeps_nothing_that_can_be_recomputed_from_the_number(crm):
    """Issue 14 (3), R15: with the keyring and a copy of the database, an erased calling number must not be
    recoverable by brute force.  Recompute every keyed value the code can make from the number (the row
    fingerprint over the exact original row and over what the row still holds, the blind index) and find
    none of them in the row or a raw dump; the time and duration that stay are coarsened."""
    from datetime import datetime

    from services.crm.calls import CallRow
    from shared.clock import as_utc

    single = (
        b"timestamp,calling_number,called_line,duration,direction\n"
        b"2025-03-03T08:15:07+00:00,+46701234567,support,125,inbound\n"
        b"2025-03-03T08:16:09+00:00,+46709876543,support,61,inbound\n"
    )
    assert (
        crm.ok(crm.client.post("/api/v1/calls/import", data=single, content_type="text/csv", headers=crm.support))[
            "imported"
        ]
        == 2
    )
    number = "+46701234567"
    original = CallRow(0, datetime(2025, 3, 3, 8, 15, 7, tzinfo=UTC), number, "support", 125, "inbound")
    keyed = crm.crm.fingerprint("call", original.canonical())
    participant = crm.runtime.participant
    request = ctx(phone=number)
    with crm.runtime.db.transaction() as s:
        references = participant.resolve(s, request)
        assert [r.split(":")[1] for r in references] == ["call"]
        assert s.execute(select(calls.c.fingerprint).where(calls.c.subject_ref == references[0])).scalar_one() == keyed
        participant.erase(s, request, references)
    with crm.runtime.db.transaction() as s:
        row = s.execute(select(calls).where(calls.c.subject_ref == references[0])).one()
        other = s.execute(select(calls).where(calls.c.subject_ref != references[0])).one()
    started = as_utc(row.started_at)
    assert row.number is None and row.number_idx is None and row.person_id is None
    # What stays for statistics is coarse: the hour and whole minutes, not the exact second of a call.
    assert (started.minute, started.second) == (0, 0) and started.hour == 8 and row.duration_s == 180
    # The keyed values an attacker can compute from the number: none of them is in the row.
    candidates = {
        keyed,
        crm.crm.fingerprint(
            "call", CallRow(0, started, number, row.called_line, row.duration_s, row.direction).canonical()
        ),
    }
    stored = {str(value) for value in row._mapping.values() if value is not None}
    assert not candidates & stored
    assert crm.crm.index.of("phone", number) not in set(row._mapping.values()) - {row.duration_s}
    # The other caller's row is untouched and its fingerprint still keeps its re-import idempotent.
    assert as_utc(other.started_at).second == 9 and other.duration_s == 61
    others = b"\n".join(line for line in single.split(b"\n") if b"701234567" not in line)
    again = crm.ok(crm.client.post("/api/v1/calls/import", data=others, content_type="text/csv", headers=crm.support))
    assert (again["imported"], again["duplicates"]) == (0, 1)
    crm.runtime.db.dispose()
    dump = raw_dump(crm.url)
    assert keyed.encode() not in dump
    assert_no_plaintext(dump, [number, "701234567"])


def test_the_preview_groups_a_person_with_what_names_her_and_marks_name_only_matches_near(crm_lite):
    """Issue 15: Anna by e-mail and phone is one exact candidate holding her linked calls (calls from
    her own number, which nobody else uses) and cases; by name alone she is only a near candidate;
    the cards show initials, company and counts, never her name, number or address."""
    crm = crm_lite
    world = populate(crm)
    participant = crm.runtime.participant
    # A case registered by hand with the caller's name only: a request by name finds it (near).
    by_hand = crm.post(
        "/api/v1/cases", {"company_id": world["kommun"]["id"], "caller_name": "Gun Lindqvist", "subject": "Maten"}
    )
    with crm.runtime.db.transaction() as s:
        found = participant.candidates(s, ctx(email="anna.svensson@kommun.example", phone="070-123 45 67"))
        gun = participant.candidates(s, ctx(name="gun  lindqvist", birth_date="1938-04-07"))
        by_name = participant.candidates(s, ctx(name="anna  SVENSSON"))
        bo_by_phone = participant.candidates(s, ctx(phone="0709876543"))
    person = next(c for c in found if c.kind == "person")
    assert person.match == "exact" and f"crm:person:{world['anna']['id']}" in person.references
    assert person.card["label"] == "contact person at Kommun AB, initials A. S., 1 case(s), 3 call(s), 1 e-mail(s)"
    loose = sorted((c.kind, c.match) for c in found if c.kind != "person")
    assert loose == [("case", "exact")]  # the case naming her address, not linked to her
    assert [(c.kind, c.match) for c in by_name] == [("person", "near")]
    assert by_name[0].references == person.references
    assert [(c.kind, c.match, c.references) for c in gun] == [("case", "near", (f"crm:case:{by_hand['id']}",))]
    # Bo's number: only he calls from it (the nameless case from it is linked to him): exact.
    assert [(c.kind, c.match) for c in bo_by_phone] == [("person", "exact")]
    assert "1 case(s), 1 call(s)" in bo_by_phone[0].card["label"]
    shown = json.dumps([c.card for c in found + by_name + bo_by_phone], ensure_ascii=False)
    for value in ANNA_VALUES + ["Bo Ek", "+46709876543"]:
        assert value not in shown
