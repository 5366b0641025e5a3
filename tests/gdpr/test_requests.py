"""The gdpr service's API and coordinator without a broker: approval, validation, tenants, deadlines,
the reply ledger, timeouts, package expiry and the inventory (R1, R2, R3, R5), on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from services.gdpr import SPEC
from services.gdpr.domain import due_at
from services.gdpr.models import export_packages, requests
from services.gdpr.tenants import TenantReplica
from shared.bus import GDPR
from shared.errors import Invalid
from shared.privacy import announcement, fields_of
from tests.conftest import raw_dump
from tests.gdpr.participants import make_fake
from tests.gdpr.sealing import opened_command, sealed_reply
from tests.support import TokenMint, approve_preview, assert_no_plaintext, events_of, make_runtime, outbox_messages

EMAIL = "karin.karlsson@example.se"
AGREEMENT = {"version": "DPA 2.0", "signed_on": "2025-06-01"}
# The customer tenants the tests open requests for: auth has announced them with an agreement (issue 15).
CUSTOMERS = ("t1", "t2", "strict", "ekby", "north", "kommun")


def announce_tenant(runtime, slug: str, kind: str = "customer", agreement: dict | None = AGREEMENT) -> None:
    """What auth's auth.tenant.announced event does to the gdpr service's tenant replica."""
    message = {
        "type": "auth.tenant.announced",
        "tenant": slug,
        "data": {"tenant_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, slug)), "kind": kind, "agreement": agreement},
    }
    with runtime.db.transaction() as s:
        TenantReplica().on_event(s, message)


class Gdpr:
    def __init__(self, database_url: str, **settings) -> None:
        self.url = database_url
        self.mint = TokenMint()
        self.rt = make_runtime(SPEC, database_url, mint=self.mint, **settings)
        self.client = SPEC.create_app(runtime=self.rt).test_client()
        self.parts = self.client.application.extensions["gdpr"]
        self.coordinator, self.sweeper = self.parts.coordinator, self.parts.sweeper
        self.officer, self.other_officer = str(uuid.uuid4()), str(uuid.uuid4())
        self.keyrings: dict = {}  # each announced service's keyring: it opens the commands sealed to it
        self.answered: set[str] = set()  # preview commands answered
        announce_tenant(self.rt, "vendor", kind="vendor", agreement=None)
        for slug in CUSTOMERS:
            announce_tenant(self.rt, slug)

    def headers(self, user: str | None = None, tenant: str = "vendor", roles=("compliance_officer",)) -> dict:
        return self.mint.headers(sub=user or self.officer, tenant=tenant, roles=list(roles))

    def open(
        self, type_: str = "erase", tenant: str = "t1", headers: dict | None = None, approve: bool = False, **extra
    ):
        """Open a request; ``approve``: the services answer the preview, the other officer confirms its
        exact candidates, and the answer is the approval's."""
        body = {"type": type_, "tenant": tenant, "subject": {"email": EMAIL}, **extra}
        opened = self.client.post("/api/v1/requests", json=body, headers=headers or self.headers())
        if not approve:
            return opened
        assert opened.status_code == 202 and opened.json["status"] in ("previewing", "awaiting_approval"), opened.json
        approved = self.approve(opened.json["id"])
        assert approved.status_code == 200, approved.json
        return approved

    def answer_previews(self, request_id: str | None = None) -> None:
        """Each service answers its preview command (one exact candidate), once."""
        for command in self.commands(preview=True):
            if command["phase"] != "preview" or command["command_id"] in self.answered:
                continue
            if request_id is None or command["request_id"] == request_id:
                self.answered.add(command["command_id"])
                self.reply(command, service=_service_of(self, command))

    def approve(self, request_id: str, user: str | None = None, headers: dict | None = None, **kwargs):
        """The preview answered, ``user`` (default: the other officer; or whoever ``headers`` name)
        confirms its exact candidates."""
        self.answer_previews(request_id)
        return approve_preview(
            self.client,
            request_id,
            headers or self.headers(user or self.other_officer),
            view_headers=self.headers(),
            **kwargs,
        )

    def announce(self, *services: tuple[str, str], tmp_path) -> dict:
        """Let the gdpr service hear announcements from real participant declarations."""
        made = {}
        for name, phase in services:
            fake = make_fake(name, f"sqlite:///{tmp_path / (name + '.db')}", "memory://", phase=phase)
            try:
                with self.rt.db.transaction() as s:
                    self.coordinator.on_announce(s, announcement(fake.runtime))
                made[name] = fake.runtime.participant.inventory
                self.keyrings[name] = fake.runtime.keyring
            finally:
                fake.close()
        return made

    def wire_commands(self) -> list[dict]:
        """Commands in the outbox as they go on the broker (no relay runs here, so they stay)."""
        return outbox_messages(self.rt, GDPR)

    def commands(self, preview: bool = False) -> list[dict]:
        """The acting commands (``preview``: and the preview's) opened by the services they are sealed
        to (with "service" added)."""
        opened = [self._open(wire) for wire in self.wire_commands()]
        return [c for c in opened if preview or c["phase"] != "preview"]

    def _open(self, wire: dict) -> dict:
        for name, keyring in self.keyrings.items():
            try:
                return {**opened_command(keyring, name, wire), "wire": wire}
            except Invalid:
                continue
        raise AssertionError("a command sealed to no announced service")

    def reply(self, command: dict, status: str = "done", **extra) -> None:
        if command["phase"] == "preview":
            service = extra.get("service") or command["service"]
            extra = {
                "references": [],
                "export": None,
                "erasure": None,
                "candidates": [
                    {
                        "ref": f"{service}-ref-1",
                        "kind": "person",
                        "match": "exact",
                        "card": {"label": "person"},
                        "count": 1,
                    }
                ],
                **extra,
            }
        message = {
            "request_id": command["request_id"],
            "command_id": command["command_id"],
            "service": extra.pop("service", None) or command["service"],
            "action": command["action"],
            "phase": command["phase"],
            "status": status,
            "references": ["alpha:person:1"],
            "export": {"person": [{"email": EMAIL}]} if command["action"] == "export" else None,
            "erasure": [{"kind": "person", "action": "deleted", "count": 1}] if command["action"] == "erase" else None,
            "error": None if status == "done" else "boom",
            **extra,
        }
        # Sealed as the service the command was sealed to does it (its keyring opens the command).
        wire = sealed_reply(self.keyrings[message["service"]], message["service"], command["wire"], message)
        with self.rt.db.transaction() as s:
            self.coordinator.on_reply(s, wire)

    def view(self, request_id: str) -> dict:
        return self.client.get(f"/api/v1/requests/{request_id}", headers=self.headers()).json


@pytest.fixture
def gdpr(database_url):
    service = Gdpr(database_url)
    yield service
    service.rt.db.dispose()


@pytest.fixture
def gdpr_sqlite(tmp_path):
    """For rules that do not depend on the database back end (keeps the suite fast)."""
    service = Gdpr(f"sqlite:///{tmp_path / 'gdpr.db'}")
    yield service
    service.rt.db.dispose()


def count_requests(gdpr: Gdpr) -> int:
    with gdpr.rt.db.transaction() as s:
        return s.scalar(select(func.count()).select_from(requests))


def test_erase_waits_for_a_second_officer_and_its_requester_cannot_approve_it(gdpr, tmp_path):
    """Four eyes on erasure: the requester gets 403, another compliance officer releases it."""
    gdpr.announce(("alpha", "resolve"), tmp_path=tmp_path)
    created = gdpr.open(reason="the subject asked by letter")
    assert created.status_code == 202
    body = created.json
    assert set(body) >= {"id", "type", "status", "tenant", "created_at", "due_at", "links"}
    assert body["status"] == "previewing" and created.headers["Location"] == body["links"]["self"]
    request_id = body["id"]
    assert [c["phase"] for c in gdpr.commands(preview=True)] == ["preview"]  # only the read-only preview
    gdpr.answer_previews(request_id)
    assert gdpr.view(request_id)["status"] == "awaiting_approval"
    assert gdpr.approve(request_id, user=gdpr.officer).status_code == 403
    preview = gdpr.view(request_id)["preview"]
    decision = {"preview_hash": preview["hash"], "confirmed": []}
    staff = gdpr.headers(user=gdpr.other_officer, roles=("staff",))
    assert gdpr.client.post(f"/api/v1/requests/{request_id}/approve", json=decision, headers=staff).status_code == 403
    admin = gdpr.headers(user=gdpr.other_officer, roles=("vendor_admin",))
    assert gdpr.client.get(f"/api/v1/requests/{request_id}", headers=admin).status_code == 200
    assert gdpr.client.post(f"/api/v1/requests/{request_id}/approve", json=decision, headers=admin).status_code == 403
    assert gdpr.commands() == []  # nothing acted on before approval
    approved = gdpr.approve(request_id)
    assert approved.status_code == 200 and approved.json["status"] == "in_progress"
    assert [c["phase"] for c in gdpr.commands()] == ["resolve"]
    assert gdpr.commands()[0]["confirmed"] == ["alpha-ref-1"]
    again = gdpr.client.post(
        f"/api/v1/requests/{request_id}/approve", json=decision, headers=gdpr.headers(gdpr.other_officer)
    )
    assert again.status_code == 409 and again.mimetype == "application/problem+json"
    assert [e["type"] for e in events_of(gdpr.rt)][:6] == [
        "gdpr.request.received",
        "gdpr.request.dispatched",
        "gdpr.service.replied",
        "gdpr.request.previewed",
        "gdpr.request.approved",
        "gdpr.request.dispatched",
    ]


def test_links_point_under_the_mount_point_of_the_app(gdpr_sqlite):
    """Embedded, the gdpr app is mounted at /gdpr: every link and the Location header start there."""
    gdpr = gdpr_sqlite
    mounted = {"SCRIPT_NAME": "/gdpr"}
    created = gdpr.client.post(
        "/api/v1/requests",
        json={"type": "erase", "tenant": "t1", "subject": {"email": EMAIL}},
        headers=gdpr.headers(),
        environ_overrides=mounted,
    )
    base = f"/gdpr/api/v1/requests/{created.json['id']}"
    assert created.headers["Location"] == base
    assert created.json["links"] == {
        "self": base,
        "approve": base + "/approve",
        "reject": base + "/reject",
        "preview": base + "/preview",
        "extend": base + "/extend",
    }
    listed = gdpr.client.get("/api/v1/requests", headers=gdpr.headers(), environ_overrides=mounted).json["items"]
    assert [item["links"]["self"] for item in listed] == [base]
    plain = gdpr.client.get(f"/api/v1/requests/{created.json['id']}", headers=gdpr.headers()).json["links"]
    assert plain["self"] == f"/api/v1/requests/{created.json['id']}"


def test_a_request_can_be_rejected_and_then_never_runs(gdpr):
    request_id = gdpr.open().json["id"]
    rejected = gdpr.client.post(
        f"/api/v1/requests/{request_id}/reject", json={"reason": "identity not verified"}, headers=gdpr.headers()
    )
    assert rejected.status_code == 200 and rejected.json["status"] == "rejected"
    assert rejected.json["rejection_reason"] == "identity not verified"
    later = gdpr.client.post(
        f"/api/v1/requests/{request_id}/approve",
        json={"preview_hash": "0" * 64, "confirmed": []},
        headers=gdpr.headers(gdpr.other_officer),
    )
    assert later.status_code == 409 and gdpr.commands() == []


def test_export_needs_a_second_officer_by_default(database_url, tmp_path):
    """Issue 14: with no EXPORT_APPROVAL set, an export waits for an officer other than its requester."""
    service = Gdpr(database_url)
    try:
        service.announce(("alpha", "resolve"), tmp_path=tmp_path)
        opened = service.open("export")
        assert opened.status_code == 202 and opened.json["status"] == "previewing"
        assert service.commands() == []
        request_id = opened.json["id"]
        own = service.approve(request_id, user=service.officer)
        assert own.status_code == 403 and service.commands() == []
        other = service.approve(request_id)
        assert other.status_code == 200 and other.json["status"] == "in_progress"
        assert len(service.commands()) == 1
    finally:
        service.rt.db.dispose()


def test_export_runs_at_once_unless_the_tenant_requires_approval(database_url, tmp_path):
    service = Gdpr(database_url, EXPORT_APPROVAL=("strict",))
    try:
        service.announce(("alpha", "resolve"), tmp_path=tmp_path)
        at_once = service.open("export").json["id"]
        strict = service.open("export", tenant="strict").json["id"]
        service.answer_previews()
        # runs on its exact matches as soon as the preview is complete; the strict tenant's waits
        assert service.view(at_once)["status"] == "in_progress"
        assert service.view(strict)["status"] == "awaiting_approval"
        assert len(service.commands()) == 1 and service.commands()[0]["confirmed"] == ["alpha-ref-1"]
    finally:
        service.rt.db.dispose()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"type": "export", "tenant": "t1", "subject": {}}, "subject"),
        ({"type": "export", "tenant": "t1", "subject": {"email": "nobody-at-example"}}, "subject.email"),
        ({"type": "export", "tenant": "t1", "subject": {"phone": "12"}}, "subject.phone"),
        ({"type": "delete", "tenant": "t1", "subject": {"email": EMAIL}}, "type"),
        ({"type": "export", "tenant": "T 1", "subject": {"email": EMAIL}}, "tenant"),
        # Issue 15: a name needs a birth date and vice versa; unit and register only narrow a name.
        ({"type": "export", "tenant": "t1", "subject": {"email": EMAIL, "name": "Karin"}}, "subject.birth_date"),
        ({"type": "export", "tenant": "t1", "subject": {"birth_date": "1938-04-02"}}, "subject.name"),
        (
            {"type": "export", "tenant": "t1", "subject": {"name": "Karin K", "birth_date": "1938-02-30"}},
            "subject.birth_date",
        ),
        (
            {"type": "export", "tenant": "t1", "subject": {"name": "Karin K", "birth_date": "2999-01-01"}},
            "subject.birth_date",
        ),
        # A unit narrows a name: the declaration (dependentRequired) names the missing name (issue 18).
        ({"type": "export", "tenant": "t1", "subject": {"email": EMAIL, "unit": "Avd 3"}}, "subject.name"),
        ({"type": "export", "tenant": "t1", "subject": {"name": " ", "birth_date": "1938-04-02"}}, "subject.name"),
        ({"type": "export", "subject": {"email": EMAIL}}, "tenant"),
    ],
)
def test_invalid_requests_get_problem_details_and_nothing_is_written(gdpr_sqlite, body, field):
    gdpr = gdpr_sqlite
    response = gdpr.client.post("/api/v1/requests", json=body, headers=gdpr.headers())
    assert response.status_code == 422 and response.mimetype == "application/problem+json"
    assert field in {e["field"] for e in response.json["errors"]}
    assert "nobody-at-example" not in response.get_data(as_text=True)
    assert count_requests(gdpr) == 0 and events_of(gdpr.rt) == []


def test_unauthenticated_and_unknown_requests_are_refused(gdpr_sqlite):
    gdpr = gdpr_sqlite
    assert gdpr.client.get("/api/v1/requests").status_code == 401
    assert gdpr.client.get("/api/v1/requests/not-a-uuid", headers=gdpr.headers()).status_code == 404
    assert gdpr.client.get(f"/api/v1/requests/{uuid.uuid4()}", headers=gdpr.headers()).status_code == 404
    assert gdpr.client.get("/api/v1/requests?status=done", headers=gdpr.headers()).status_code == 422


def test_subject_identifiers_and_reasons_are_not_stored_in_plaintext(gdpr):
    """R16 / DESIGN "Personal data at rest": Vault ciphertext under gdpr:request:<id>."""
    response = gdpr.client.post(
        "/api/v1/requests",
        headers=gdpr.headers(),
        json={
            "type": "erase",
            "tenant": "t1",
            "reason": "Karin called from 0701234567",
            "subject": {
                "email": EMAIL,
                "phone": "070-765 43 21",
                "personnummer": "19811218-9876",
                "username": "karin.k",
            },
        },
    )
    assert response.status_code == 202
    view = gdpr.view(response.json["id"])
    assert view["identifier_kinds"] == ["email", "phone", "personnummer", "username"]
    assert view["reason"] == "Karin called from 0701234567"
    assert_no_plaintext(raw_dump(gdpr.url), [EMAIL, "+46707654321", "198112189876", "karin.k", "0701234567"])


def test_another_tenants_requests_do_not_exist_for_a_tenant_scoped_officer(gdpr):
    request_id = gdpr.open(tenant="t1").json["id"]
    gdpr.open(tenant="t2")
    t2 = gdpr.headers(user=gdpr.other_officer, tenant="t2")
    assert gdpr.client.get(f"/api/v1/requests/{request_id}", headers=t2).status_code == 404
    decision = {"preview_hash": "0" * 64, "confirmed": []}
    assert gdpr.client.post(f"/api/v1/requests/{request_id}/approve", json=decision, headers=t2).status_code == 404
    assert gdpr.client.get(f"/api/v1/requests/{request_id}/export", headers=t2).status_code == 404
    assert {r["tenant"] for r in gdpr.client.get("/api/v1/requests", headers=t2).json["items"]} == {"t2"}
    assert gdpr.client.get("/api/v1/requests?tenant=t1", headers=t2).json["items"] == []
    assert gdpr.open(tenant="t1", headers=t2).status_code == 404
    everyone = gdpr.client.get("/api/v1/requests", headers=gdpr.headers()).json["items"]
    assert {r["tenant"] for r in everyone} == {"t1", "t2"}


def test_deadline_extension_is_up_to_two_months_in_all_with_a_reason(gdpr):
    request_id = gdpr.open().json["id"]
    url = f"/api/v1/requests/{request_id}/extend"
    assert gdpr.client.post(url, json={"months": 1}, headers=gdpr.headers()).status_code == 422
    assert gdpr.client.post(url, json={"months": 3, "reason": "complex"}, headers=gdpr.headers()).status_code == 422
    first = gdpr.client.post(url, json={"months": 1, "reason": "many registers"}, headers=gdpr.headers())
    assert first.status_code == 200
    created = datetime.fromisoformat(first.json["created_at"])
    assert first.json["extension"]["months"] == 1 and first.json["extension"]["reason"] == "many registers"
    assert datetime.fromisoformat(first.json["extension"]["original_due_at"]) == due_at(created)
    assert datetime.fromisoformat(first.json["due_at"]) == due_at(created, 1)
    second = gdpr.client.post(url, json={"months": 2, "reason": "more"}, headers=gdpr.headers())
    assert second.status_code == 409
    assert (
        gdpr.client.post(url, json={"months": 1, "reason": "more"}, headers=gdpr.headers()).json["extension"]["months"]
        == 2
    )
    assert [e["data"]["months"] for e in events_of(gdpr.rt, "gdpr.request.extended")] == [1, 1]


def test_extension_after_the_first_month_is_refused(gdpr):
    """Art. 12(3): the subject must hear of an extension within one month of receipt."""
    principal = _principal(gdpr)
    long_ago = datetime.now(UTC) - timedelta(days=40)
    with gdpr.rt.db.transaction() as s:
        request_id = gdpr.coordinator.open(
            s, principal, type_="erase", tenant="t1", subject={"email": EMAIL}, reason=None, now=long_ago
        )["id"]
    response = gdpr.client.post(
        f"/api/v1/requests/{request_id}/extend", json={"months": 1, "reason": "late"}, headers=gdpr.headers()
    )
    assert response.status_code == 409


def test_overdue_filter_lists_open_requests_past_their_deadline(gdpr):
    principal = _principal(gdpr)
    now = datetime.now(UTC)
    with gdpr.rt.db.transaction() as s:
        late = gdpr.coordinator.open(
            s,
            principal,
            type_="erase",
            tenant="t1",
            subject={"email": EMAIL},
            reason=None,
            now=now - timedelta(days=45),
        )["id"]
        closed = gdpr.coordinator.open(
            s,
            principal,
            type_="erase",
            tenant="t1",
            subject={"email": EMAIL},
            reason=None,
            now=now - timedelta(days=45),
        )["id"]
        gdpr.coordinator.reject(s, principal, closed, "identity not verified")
        fresh = gdpr.coordinator.open(
            s, principal, type_="erase", tenant="t1", subject={"email": EMAIL}, reason=None, now=now
        )["id"]
    overdue = gdpr.client.get("/api/v1/requests?overdue=true", headers=gdpr.headers()).json["items"]
    assert [r["id"] for r in overdue] == [late] and overdue[0]["overdue"] is True
    on_time = gdpr.client.get("/api/v1/requests?overdue=false", headers=gdpr.headers()).json["items"]
    assert {r["id"] for r in on_time} == {closed, fresh}
    rejected = gdpr.client.get("/api/v1/requests?status=rejected&type=erase", headers=gdpr.headers()).json
    assert [r["id"] for r in rejected["items"]] == [closed]


def _principal(gdpr: Gdpr):
    from shared.tokens import Principal

    return Principal(user_id=gdpr.officer, tenant="vendor", roles=frozenset({"compliance_officer"}))


def test_replies_fill_the_ledger_and_phase_two_gets_every_reference(gdpr, tmp_path):
    """Two phases: the trail participant is asked only after every resolving service answered."""
    gdpr.announce(("alpha", "resolve"), ("beta", "resolve"), ("ledger", "trail"), tmp_path=tmp_path)
    request_id = gdpr.open("export", approve=True).json["id"]
    sent = gdpr.commands()
    assert [c["phase"] for c in sent] == ["resolve", "resolve"]
    assert all(c["subject"] == {"email": EMAIL} for c in sent)
    gdpr.reply(sent[0], service=_service_of(gdpr, sent[0]))
    assert gdpr.view(request_id)["status"] == "in_progress" and len(gdpr.commands()) == 2
    gdpr.reply(sent[1], service=_service_of(gdpr, sent[1]), references=["beta:person:2"])
    trail = gdpr.commands()[2]
    assert trail["phase"] == "trail" and trail["subject"] == {}
    assert sorted(trail["references"]) == ["alpha:person:1", "beta:person:2"]
    gdpr.reply(trail, service="ledger", references=[])
    view = gdpr.view(request_id)
    assert view["status"] == "completed" and view["export"]["available"] is True
    assert view["links"]["export"].endswith("/export")


def _service_of(gdpr: Gdpr, command: dict) -> str:
    with gdpr.rt.db.transaction() as s:
        from services.gdpr.models import request_services

        return s.scalar(
            select(request_services.c.service).where(request_services.c.command_id == command["command_id"])
        )


def test_failed_reply_is_visible_and_retry_sends_a_new_command_only_to_that_service(gdpr, tmp_path):
    gdpr.announce(("alpha", "resolve"), ("beta", "resolve"), tmp_path=tmp_path)
    request_id = gdpr.open("export", approve=True).json["id"]
    first = {_service_of(gdpr, c): c for c in gdpr.commands()}
    gdpr.reply(first["alpha"], service="alpha")
    gdpr.reply(first["beta"], service="beta", status="failed")
    view = gdpr.view(request_id)
    assert view["status"] == "partially_completed"
    assert {s["service"]: (s["status"], s["error"]) for s in view["services"]} == {
        "alpha": ("done", None),
        "beta": ("failed", "boom"),
    }
    assert gdpr.client.get(f"/api/v1/requests/{request_id}/export", headers=gdpr.headers()).status_code == 409
    retried = gdpr.client.post(f"/api/v1/requests/{request_id}/retry", headers=gdpr.headers())
    assert retried.status_code == 200
    resent = gdpr.commands()[2:]
    assert len(resent) == 1 and resent[0]["command_id"] != first["beta"]["command_id"]
    gdpr.reply(first["beta"], service="beta")  # a late answer to the old command: ignored
    assert gdpr.view(request_id)["status"] == "in_progress"
    gdpr.reply(resent[0], service="beta")
    assert gdpr.view(request_id)["status"] == "completed"
    again = gdpr.client.post(f"/api/v1/requests/{request_id}/retry", headers=gdpr.headers())
    assert again.status_code == 409


def test_duplicate_reply_changes_nothing(gdpr, tmp_path):
    gdpr.announce(("alpha", "resolve"), tmp_path=tmp_path)
    request_id = gdpr.open("erase").json["id"]
    gdpr.approve(request_id)
    command = gdpr.commands()[0]
    gdpr.reply(command)
    before = gdpr.view(request_id)
    gdpr.reply(command, erasure=[{"kind": "person", "action": "deleted", "count": 99}])
    gdpr.reply(command, status="failed")
    after = gdpr.view(request_id)
    assert after == before and after["services"][0]["erasure"][0]["count"] == 1
    assert len([e for e in events_of(gdpr.rt, "gdpr.service.replied") if e["data"]["phase"] == "resolve"]) == 1


def test_silent_services_are_re_sent_with_backoff_then_marked_silent_and_a_late_answer_still_counts(
    database_url, tmp_path
):
    service = Gdpr(database_url, REPLY_TIMEOUT=10.0, MAX_ATTEMPTS=3)
    try:
        service.announce(("alpha", "resolve"), tmp_path=tmp_path)
        request_id = service.open("export", approve=True).json["id"]
        start = datetime.now(UTC)
        assert service.sweeper.sweep(start + timedelta(seconds=5))["resent"] == 0
        assert service.sweeper.sweep(start + timedelta(seconds=11))["resent"] == 1  # after 10 s
        assert service.sweeper.sweep(start + timedelta(seconds=25))["resent"] == 0  # now waits 20 s
        assert service.sweeper.sweep(start + timedelta(seconds=32))["resent"] == 1
        assert service.view(request_id)["status"] == "in_progress"
        assert service.sweeper.sweep(start + timedelta(seconds=200))["silent"] == 1
        view = service.view(request_id)
        assert view["status"] == "failed" and view["services"][0]["status"] == "silent"
        assert view["services"][0]["attempts"] == 3
        # Re-sends reuse the command id, so the service's inbox makes it act at most once.
        assert {c["command_id"] for c in service.commands()} == {service.commands()[0]["command_id"]}
        service.reply(service.commands()[0])
        assert service.view(request_id)["status"] == "completed"
    finally:
        service.rt.db.dispose()


def test_a_request_with_no_known_services_fails_visibly_and_retry_uses_the_services_known_now(gdpr, tmp_path):
    request_id = gdpr.open("export", approve=True).json["id"]
    assert gdpr.view(request_id)["status"] == "failed"
    gdpr.announce(("alpha", "resolve"), tmp_path=tmp_path)
    retried = gdpr.client.post(f"/api/v1/requests/{request_id}/retry", headers=gdpr.headers())
    assert retried.json["status"] == "in_progress" and [s["service"] for s in retried.json["services"]] == ["alpha"]


def test_export_package_expires_is_shredded_and_then_gone(database_url, tmp_path):
    service = Gdpr(database_url, EXPORT_RETENTION=60.0)
    try:
        service.announce(("alpha", "resolve"), tmp_path=tmp_path)
        request_id = service.open("export", approve=True).json["id"]
        service.reply(service.commands()[0])
        url = f"/api/v1/requests/{request_id}/export"
        assert service.client.get(url, headers=service.headers()).status_code == 200
        done = service.sweeper.sweep(datetime.now(UTC) + timedelta(seconds=61))
        assert done["packages_deleted"] == 1
        gone = service.client.get(url, headers=service.headers())
        assert gone.status_code == 410 and gone.mimetype == "application/problem+json"
        with service.rt.db.transaction() as s:
            assert s.scalar(select(export_packages.c.package)) is None
            assert service.rt.vault.is_shredded(s, f"gdpr:export:{request_id}")
        assert service.view(request_id)["export"]["available"] is False
        assert [e["type"] for e in events_of(service.rt)][-1] == "gdpr.export.deleted"
    finally:
        service.rt.db.dispose()


def test_identifiers_of_finished_requests_are_shredded_after_their_retention(database_url):
    service = Gdpr(database_url, IDENTIFIER_RETENTION=0.0)
    try:
        request_id = service.open(reason="private note").json["id"]
        service.client.post(
            f"/api/v1/requests/{request_id}/reject", json={"reason": "no such person"}, headers=service.headers()
        )
        assert service.sweeper.sweep()["identifiers_shredded"] == 1
        view = service.view(request_id)
        assert view["identifiers_erased"] is True and view["reason"] == "[erased]"
        assert service.sweeper.sweep()["identifiers_shredded"] == 0
    finally:
        service.rt.db.dispose()


def test_inventory_names_every_personal_field_the_services_store(gdpr, tmp_path):
    """R3, R5: declarations plus live counts, JSON and CSV, including the gdpr service's own data."""
    declared = gdpr.announce(("alpha", "resolve"), ("ledger", "trail"), tmp_path=tmp_path)
    document = gdpr.client.get("/api/v1/inventory", headers=gdpr.headers(roles=("auditor",))).json
    services = {s["service"]: s for s in document["services"]}
    assert set(services) == {"alpha", "ledger", "gdpr"}
    for name, inventory in declared.items():
        reported = [f"{c['kind']}.{f}" for c in services[name]["categories"] for f in c["personal_data"]]
        assert reported == fields_of(inventory.categories)
    person = services["alpha"]["categories"][0]
    assert person["special_categories"] == ["diet"] and person["encrypted"] is True and person["count"] == 0
    assert {
        "purposes",
        "legal_basis",
        "role",
        "controller",
        "retention",
        "recipients",
        "storage",
        "data_subjects",
    } <= set(person)
    assert "email" in services["gdpr"]["categories"][0]["personal_data"]
    response = gdpr.client.get("/api/v1/inventory?format=csv", headers=gdpr.headers())
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert {(r["service"], r["kind"], r["field"]) for r in rows} >= {
        ("alpha", "person", "email"),
        ("alpha", "person", "diet"),
        ("ledger", "entry", "name"),
        ("gdpr", "data_subject_request", "personnummer"),
    }
    assert gdpr.client.get("/api/v1/inventory", headers=gdpr.headers(roles=("staff",))).status_code == 403
    assert gdpr.client.get("/api/v1/inventory?format=xml", headers=gdpr.headers()).status_code == 422


def test_a_finished_requests_key_is_shredded_so_the_brokers_copy_of_a_reply_no_longer_opens(gdpr, tmp_path):
    """Issue 14: commands leave sealed (no identifier in clear on the wire); once the request completes
    its ephemeral key is crypto-shredded and a replayed copy of a reply changes nothing."""
    gdpr.announce(("alpha", "resolve"), tmp_path=tmp_path)
    request_id = gdpr.open("export", approve=True).json["id"]
    wires = gdpr.wire_commands()  # the preview's command and the acting one
    assert len(wires) == 2
    for wire in wires:
        assert EMAIL not in json.dumps(wire) and set(wire["sealed"]) == {"recipient", "key", "box"}
    [command] = gdpr.commands()
    assert command["subject"] == {"email": EMAIL}
    with gdpr.rt.db.transaction() as s:
        assert s.scalar(select(requests.c.transport_key).where(requests.c.id == request_id)) is not None
    reply = sealed_reply(
        gdpr.keyrings["alpha"],
        "alpha",
        command["wire"],
        {
            "request_id": request_id,
            "command_id": command["command_id"],
            "service": "alpha",
            "action": "export",
            "phase": "resolve",
            "status": "done",
            "references": ["alpha:person:1"],
            "export": {"person": [{"email": EMAIL}]},
        },
    )
    assert EMAIL not in json.dumps(reply)
    with gdpr.rt.db.transaction() as s:
        gdpr.coordinator.on_reply(s, reply)
    assert gdpr.view(request_id)["status"] == "completed"
    with gdpr.rt.db.transaction() as s:
        assert s.scalar(select(requests.c.transport_key).where(requests.c.id == request_id)) is None
        assert gdpr.rt.vault.is_shredded(s, f"gdpr:transport:{request_id}")
        replied_before = gdpr.coordinator._rows(s, request_id)[0].replied_at
        gdpr.coordinator.on_reply(s, reply)  # the broker's copy, replayed: it cannot be opened
        assert gdpr.coordinator._rows(s, request_id)[0].replied_at == replied_before


def _answer_preview(gdpr: Gdpr, orders: int = 12) -> None:
    """Each service finds an exact and a near candidate (issue 15)."""
    for command in gdpr.commands(preview=True):
        if command["phase"] != "preview" or command["command_id"] in gdpr.answered:
            continue
        service = _service_of(gdpr, command)
        gdpr.answered.add(command["command_id"])
        card = {"label": f"individual, register Avd 3, born 1938, initials G. L., {orders} orders", "born": 1938}
        gdpr.reply(
            command,
            service=service,
            candidates=[
                {"ref": f"{service}-exact", "kind": "individual", "match": "exact", "card": card, "count": 1 + orders},
                {
                    "ref": f"{service}-near",
                    "kind": "individual",
                    "match": "near",
                    "card": {"label": "individual, register Avd 5, born 1941, initials G. L., 2 orders"},
                    "count": 3,
                },
            ],
        )


def test_approval_binds_to_the_preview_and_only_confirmed_candidates_are_acted_on(gdpr, tmp_path):
    """Issue 15, R2: the approver sees masked cards (stored encrypted), confirms some by id against
    the preview's hash; unknown ids are a 422, a hash of an older preview a 409, and each service
    is sent the refs of its confirmed candidates only (exact matches are not confirmed for it)."""
    from services.gdpr.domain import preview_hash

    gdpr.announce(("alpha", "resolve"), ("beta", "resolve"), tmp_path=tmp_path)
    request_id = gdpr.open("erase").json["id"]
    _answer_preview(gdpr)
    view = gdpr.view(request_id)
    assert view["status"] == "awaiting_approval" and view["links"]["preview"].endswith("/preview")
    preview = view["preview"]
    assert set(preview["services"]) == {"alpha", "beta"}
    assert all(entry["status"] == "done" for entry in preview["services"].values())
    cards = [c for entry in preview["services"].values() for c in entry["candidates"]]
    assert len(cards) == 4 and all(set(c) == {"id", "kind", "match", "card", "count"} for c in cards)
    assert preview["hash"] == preview_hash(preview["services"])
    # The cards are derived personal data: Vault ciphertext at rest, and the refs never leave.
    assert_no_plaintext(raw_dump(gdpr.url), ["initials G. L.", "alpha-exact", "Avd 3"])
    previewed = events_of(gdpr.rt, "gdpr.request.previewed")
    assert [e["data"]["candidates"] for e in previewed] == [4] and previewed[0]["data"]["near"] == 2

    url, headers = f"/api/v1/requests/{request_id}/approve", gdpr.headers(gdpr.other_officer)
    alpha_exact = next(c["id"] for c in preview["services"]["alpha"]["candidates"] if c["match"] == "exact")
    unknown = gdpr.client.post(
        url, json={"preview_hash": preview["hash"], "confirmed": [alpha_exact, "abc123"]}, headers=headers
    )
    assert unknown.status_code == 422 and unknown.mimetype == "application/problem+json"
    assert unknown.json["errors"] == [{"field": "confirmed.1", "message": "is not a candidate of this preview"}]
    malformed = gdpr.client.post(url, json={"confirmed": [alpha_exact]}, headers=headers)
    assert malformed.status_code == 422 and "preview_hash" in {e["field"] for e in malformed.json["errors"]}

    # Previewed again with unchanged answers: the same hash.  With changed data: the old one is stale.
    again = gdpr.client.post(f"/api/v1/requests/{request_id}/preview", headers=gdpr.headers())
    assert again.status_code == 200 and again.json["status"] == "previewing" and again.json["preview"] is None
    _answer_preview(gdpr)
    assert gdpr.view(request_id)["preview"]["hash"] == preview["hash"]
    gdpr.client.post(f"/api/v1/requests/{request_id}/preview", headers=gdpr.headers())
    _answer_preview(gdpr, orders=13)
    current = gdpr.view(request_id)["preview"]
    assert current["hash"] != preview["hash"]
    stale = gdpr.client.post(url, json={"preview_hash": preview["hash"], "confirmed": []}, headers=headers)
    assert stale.status_code == 409 and "stale preview" in stale.json["detail"]
    assert gdpr.commands() == []

    alpha_exact = next(c["id"] for c in current["services"]["alpha"]["candidates"] if c["match"] == "exact")
    approved = gdpr.client.post(
        url, json={"preview_hash": current["hash"], "confirmed": [alpha_exact]}, headers=headers
    )
    assert approved.status_code == 200 and approved.json["confirmed"] == [alpha_exact]
    sent = {_service_of(gdpr, c): c for c in gdpr.commands()}
    assert sent["alpha"]["confirmed"] == ["alpha-exact"] and sent["beta"]["confirmed"] == []
    assert sent["alpha"]["subject"] == {"email": EMAIL}  # found again through the identifiers
    # A confirmed candidate whose row changed since the preview is not acted on, and shows.
    gdpr.reply(sent["alpha"], service="alpha", stale=1, erasure=[{"kind": "person", "action": "deleted", "count": 0}])
    gdpr.reply(sent["beta"], service="beta", erasure=[{"kind": "person", "action": "deleted", "count": 0}])
    done = {s["service"]: s for s in gdpr.view(request_id)["services"]}
    assert done["alpha"]["stale"] == 1 and "stale" not in done["beta"]
