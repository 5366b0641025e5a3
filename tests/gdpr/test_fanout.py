"""Data-subject requests fanned out over a real RabbitMQ to running participant services (R1, R2, R3)."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import uuid
import zipfile

import pika
import pytest
from sqlalchemy import func, select

from services.gdpr import SPEC
from services.gdpr.models import request_services
from shared.bus import EVENTS, GDPR, Binding, Bus, Message, queue_name
from tests.conftest import raw_dump
from tests.gdpr.participants import make_fake
from tests.gdpr.test_requests import announce_tenant
from tests.support import TokenMint, approve_preview, assert_no_plaintext, events_of, make_runtime, wait_for

ALICE = {"email": "alice.andersson@example.se", "name": "Alice Andersson"}
BOB = {"email": "bob.berg@example.se", "name": "Bob Berg"}
# beta holds the customer's processor data: a vendor officer records the customer's instruction (issue 15).
INSTRUCTION = {"given_by": "t1's privacy officer", "given_at": "2026-01-05", "reference": "DPO-17"}


class System:
    """The gdpr service (api + worker threads) and three participants on one vhost."""

    def __init__(self, tmp_path, rabbit_url: str, gdpr_url: str | None = None, **settings) -> None:
        self.rabbit_url = rabbit_url
        self.mint = TokenMint()
        # A catch-all queue on recept.events stands in for the audit service's `#` binding, and lets
        # the test read every event that left the gdpr service.
        Bus(rabbit_url, "sink").declare([Binding(EVENTS, "#")])
        self.gdpr = make_runtime(
            SPEC,
            gdpr_url or f"sqlite:///{tmp_path / 'gdpr.db'}",
            broker_url=rabbit_url,
            mint=self.mint,
            RELAY_INTERVAL=0.05,
            SWEEP_INTERVAL=0.05,
            **{"REPLY_TIMEOUT": 5.0, "MAX_ATTEMPTS": 3, **settings},
        )
        self.client = SPEC.create_app(runtime=self.gdpr).test_client()
        announce_tenant(self.gdpr, "t1")  # as auth would (auth.tenant.announced), with its agreement
        self.stop = threading.Event()
        self.threads = self.gdpr.start_worker_threads(self.stop)
        self.fakes = {
            "alpha": make_fake("alpha", f"sqlite:///{tmp_path / 'alpha.db'}", rabbit_url, mode="delete"),
            "beta": make_fake("beta", f"sqlite:///{tmp_path / 'beta.db'}", rabbit_url, mode="anonymise"),
            "ledger": make_fake("ledger", f"sqlite:///{tmp_path / 'ledger.db'}", rabbit_url, phase="trail"),
        }
        self.officer = str(uuid.uuid4())
        self.second_officer = str(uuid.uuid4())  # t1's privacy officer: beta holds processor data (issue 15)

    def headers(self, user: str | None = None) -> dict[str, str]:
        return self.mint.headers(sub=user or self.officer, tenant="vendor", roles=["compliance_officer"])

    def customer(self) -> dict[str, str]:
        """The customer's privacy officer, whose approval confirms the vendor officer's recorded instruction."""
        return self.mint.headers(sub=self.second_officer, tenant="t1", roles=["privacy_officer"])

    def start_all(self) -> None:
        for fake in self.fakes.values():
            fake.start()
        assert wait_for(lambda: self.known() == set(self.fakes), timeout=20)

    def known(self) -> set[str]:
        response = self.client.get("/api/v1/inventory", headers=self.headers())
        return {s["service"] for s in response.json["services"]} - {"gdpr"}

    def view(self, request_id: str) -> dict:
        response = self.client.get(f"/api/v1/requests/{request_id}", headers=self.headers())
        assert response.status_code == 200
        return response.json

    def wait_status(self, request_id: str, status: str, timeout: float = 30) -> dict:
        assert wait_for(lambda: self.view(request_id)["status"] == status, timeout=timeout), self.view(request_id)
        return self.view(request_id)

    def open(self, type_: str, subject: dict, before_approval=None) -> str:
        response = self.client.post(
            "/api/v1/requests",
            json={
                "type": type_,
                "tenant": "t1",
                "subject": subject,
                "reason": "asked by phone",
                "instruction": INSTRUCTION,
            },
            headers=self.headers(),
        )
        assert response.status_code == 202, response.json
        request_id = response.json["id"]
        if type_ == "export":
            # Exports too need a second officer by default (issue 14), once previewed (issue 15);
            # erasures are approved by each test.
            assert response.json["status"] == "previewing"
            if before_approval is not None:
                assert wait_for(lambda: self.view(request_id)["status"] == "awaiting_approval", timeout=30)
                before_approval()
            approved = approve_preview(self.client, request_id, self.customer())
            assert approved.status_code == 200, approved.json
        return request_id

    def sink(self) -> list[bytes]:
        """Drain the catch-all queue on recept.events."""
        bodies = []
        conn = pika.BlockingConnection(pika.URLParameters(self.rabbit_url))
        try:
            channel = conn.channel()
            while True:
                method, _props, body = channel.basic_get(queue_name("sink"), auto_ack=True)
                if method is None:
                    return bodies
                bodies.append(body)
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)
        for fake in self.fakes.values():
            fake.close()
        self.gdpr.db.dispose()


@pytest.fixture
def make_system(tmp_path, rabbit_url):
    made = []

    def make(**kwargs) -> System:
        system = System(tmp_path, rabbit_url, **kwargs)
        made.append(system)
        return system

    yield make
    for system in made:
        system.close()


def seed(system: System) -> dict[str, list[str]]:
    refs = {
        "alice": [system.fakes["alpha"].add_person(**ALICE), system.fakes["beta"].add_person(**ALICE)],
        "bob": [system.fakes["alpha"].add_person(**BOB)],
    }
    ledger = system.fakes["ledger"]
    for ref in refs["alice"]:
        ledger.add_trail(ref, "viewed by a kitchen user")
    ledger.add_trail(refs["bob"][0], "changed by a care-unit user")
    return refs


def unsent_outbox(runtime) -> int:
    table = runtime.tables.outbox
    with runtime.db.transaction() as s:
        return s.scalar(select(func.count()).select_from(table).where(table.c.sent_at.is_(None)))


def test_export_across_services_yields_a_zip_whose_manifest_checksums_match(postgres_url, make_system):
    # postgres_url first: the database must outlive the worker threads that the system fixture stops.
    """R1: one folder per service, JSON and CSV per kind, manifest with SHA-256 and row counts, the
    audit trail from phase two (art. 15), nothing personal at rest or on recept.events."""
    system = make_system(gdpr_url=postgres_url)
    refs = seed(system)
    system.start_all()
    request_id = system.open("export", {"email": "  Alice.Andersson@Example.se "})
    view = system.wait_status(request_id, "completed")
    by_service = {s["service"]: s for s in view["services"]}
    assert {name: s["status"] for name, s in by_service.items()} == {"alpha": "done", "beta": "done", "ledger": "done"}
    assert by_service["ledger"]["phase"] == "trail" and by_service["ledger"]["records"] == {"entry": 2}
    assert by_service["alpha"]["records"] == {"person": 1} and by_service["alpha"]["references"] == 1

    response = system.client.get(f"/api/v1/requests/{request_id}/export", headers=system.headers())
    assert response.status_code == 200 and response.mimetype == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["request_id"] == request_id and manifest["schema_version"] == "1"
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == set(archive.namelist()) - {"manifest.json"}
    for path, entry in listed.items():
        data = archive.read(path)
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    for folder, kind in (("alpha", "person"), ("beta", "person"), ("ledger", "entry")):
        assert f"{folder}/{kind}.json" in listed and f"{folder}/{kind}.csv" in listed
    records = json.loads(archive.read("alpha/person.json"))
    assert [r["email"] for r in records] == ["alice.andersson@example.se"] and listed["alpha/person.json"]["rows"] == 1
    header = archive.read("alpha/person.csv").decode().splitlines()[0]
    assert sorted(header.split(",")) == ["email", "id", "name", "reference"]
    trail = json.loads(archive.read("ledger/entry.json"))
    assert sorted(r["reference"] for r in trail) == sorted(refs["alice"])  # never Bob's trail
    assert b"bob" not in b"".join(archive.read(n) for n in archive.namelist()).lower()
    assert manifest["subject_identifiers"][0]["kind"] == "email"
    assert_no_plaintext(archive.read("manifest.json"), [ALICE["email"]])

    # Commands carried the identifiers; they are transient outbox rows, gone once confirmed.
    assert wait_for(lambda: unsent_outbox(system.gdpr) == 0)
    assert_no_plaintext(
        raw_dump(postgres_url),
        [ALICE["email"], ALICE["name"], "Alice.Andersson@Example.se", "viewed by a kitchen user", "asked by phone"],
    )
    events = system.sink()
    assert events and all(json.loads(b)["source"] == "gdpr" for b in events)
    assert_no_plaintext(b"".join(events), [ALICE["email"], ALICE["name"], "Alice.Andersson", "kitchen user"])
    types = [e["type"] for e in events_of(system.gdpr)]
    for expected in (
        "gdpr.request.received",
        "gdpr.request.approved",
        "gdpr.request.dispatched",
        "gdpr.service.replied",
        "gdpr.request.completed",
        "gdpr.export.downloaded",
    ):
        assert expected in types
    # two preview answers (the trail service is not previewed), then the three services' answers
    assert "gdpr.request.previewed" in types
    assert types.count("gdpr.service.replied") == 5


def test_erase_runs_after_a_second_officer_approves_and_completes_with_every_services_result(make_system):
    """R2: per service and per kind: deleted, anonymised, or retained with legal basis and retain-until."""
    system = make_system()
    seed(system)
    system.start_all()
    request_id = system.open("erase", {"email": ALICE["email"]})
    refused = approve_preview(system.client, request_id, system.headers())
    assert refused.status_code == 403
    approved = approve_preview(system.client, request_id, system.customer())
    assert approved.status_code == 200 and approved.json["decided_by"] == system.second_officer
    view = system.wait_status(request_id, "completed")
    results = {s["service"]: s["erasure"] for s in view["services"]}
    assert results["alpha"] == [{"kind": "person", "action": "deleted", "count": 1}]
    assert results["beta"] == [
        {"kind": "person", "action": "anonymised", "count": 1},
        {
            "kind": "invoice",
            "action": "retained",
            "count": 1,
            "legal_basis": "Bookkeeping Act (1999:1078) 7 ch. 2 §",
            "retain_until": "2033-12-31",
        },
    ]
    assert results["ledger"][0]["action"] == "retained" and results["ledger"][0]["count"] == 2
    assert [p["email"] for p in system.fakes["alpha"].people()] == [BOB["email"]]
    beta = system.fakes["beta"].people()
    assert len(beta) == 1 and beta[0]["email"] is None and repr(beta[0]["name"]) == "<erased>"
    assert system.client.get(f"/api/v1/requests/{request_id}/export", headers=system.headers()).status_code == 404


def test_a_service_that_is_down_leaves_the_request_partially_completed_until_retried(make_system):
    """A request never shows completed while a service has not confirmed; retry re-sends only to it."""
    system = make_system(REPLY_TIMEOUT=0.4, MAX_ATTEMPTS=2)
    seed(system)
    system.start_all()
    # beta answers the preview, then goes down before the approved export reaches it
    request_id = system.open("export", {"email": ALICE["email"]}, before_approval=system.fakes["beta"].halt)
    view = system.wait_status(request_id, "partially_completed")
    services = {s["service"]: s for s in view["services"]}
    assert services["alpha"]["status"] == "done" and services["beta"]["status"] == "silent"
    assert services["beta"]["attempts"] == 2  # first send + one re-send with backoff
    assert services["ledger"]["status"] == "waiting"  # phase two waits for every reference
    assert system.client.get(f"/api/v1/requests/{request_id}/export", headers=system.headers()).status_code == 409
    assert "gdpr.request.stalled" in [e["type"] for e in events_of(system.gdpr)]

    retried = system.client.post(f"/api/v1/requests/{request_id}/retry", headers=system.headers())
    assert retried.status_code == 200 and retried.json["status"] == "in_progress"
    after = {s["service"]: s for s in retried.json["services"]}
    assert after["alpha"]["attempts"] == services["alpha"]["attempts"]  # not re-sent
    assert after["beta"]["attempts"] == 3
    system.fakes["beta"].start()
    view = system.wait_status(request_id, "completed")
    assert {s["service"]: s["status"] for s in view["services"]} == {"alpha": "done", "beta": "done", "ledger": "done"}
    # beta got the same command several times (send, re-send, retry) and acted once.
    assert next(s for s in view["services"] if s["service"] == "beta")["records"] == {"person": 1}
    dispatched = [e["data"] for e in events_of(system.gdpr, "gdpr.request.dispatched")]
    assert dispatched[0]["phase"] == "preview"
    assert {"phase": "resolve", "services": ["beta"], "retry": True}.items() <= dispatched[2].items()


def test_duplicate_replies_change_nothing(make_system):
    """At-least-once delivery: the same reply again, or a second reply to an answered command, is ignored."""
    system = make_system()
    seed(system)
    system.start_all()
    request_id = system.open("export", {"email": ALICE["email"]})
    before = system.wait_status(request_id, "completed")
    with system.gdpr.db.transaction() as s:
        command_id = s.scalar(
            select(request_services.c.command_id).where(
                request_services.c.request_id == request_id, request_services.c.service == "alpha"
            )
        )
    forged = {
        "request_id": request_id,
        "command_id": command_id,
        "service": "alpha",
        "action": "export",
        "phase": "resolve",
        "status": "done",
        "references": ["alpha:person:x"],
        "export": {"person": [{"email": "someone.else@example.se"}] * 5},
        "erasure": None,
        "error": None,
    }
    body = json.dumps(forged).encode()
    message_ids = [
        str(uuid.uuid5(uuid.NAMESPACE_URL, f"recept:reply:{command_id}")),
        str(uuid.uuid4()),
    ]  # the original's id, and a fresh one
    publisher = Bus(system.rabbit_url, "gdpr").publisher()
    try:
        assert publisher.publish([Message(GDPR, "gdpr.reply.alpha", body, mid) for mid in message_ids]) == [None, None]
    finally:
        publisher.close()
    assert wait_for(lambda: _in_inbox(system, message_ids[1]))
    after = system.view(request_id)
    assert after["services"] == before["services"] and after["export"] == before["export"]
    assert len(events_of(system.gdpr, "gdpr.service.replied")) == 5  # two preview answers, three acting


def _in_inbox(system: System, message_id: str) -> bool:
    inbox = system.gdpr.tables.inbox
    with system.gdpr.db.transaction() as s:
        return bool(s.scalar(select(func.count()).select_from(inbox).where(inbox.c.message_id == message_id)))
