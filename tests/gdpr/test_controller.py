"""The customer as controller (issue 15; R2, R5, GDPR art. 28): the privacy officer of a customer tenant opens,
approves and confirms its own tenant's requests; a vendor officer opening a request on a customer's processor
data records the customer's instruction and the request waits for that customer's privacy officer; the
vendor's own controller data stays the vendor's decision.  Pure rules first, then the API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.gdpr import controller
from services.gdpr.domain import next_steps
from shared.errors import AccessDenied, Conflict, Invalid, NotFound
from shared.privacy import announcement
from shared.tokens import Principal
from tests.conftest import raw_dump
from tests.gdpr.participants import make_fake
from tests.gdpr.test_requests import EMAIL, Gdpr, announce_tenant
from tests.support import assert_no_plaintext, events_of

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
VENDOR = ("vendor",)
INSTRUCTION = {"given_by": "Gunilla Lind, dataskyddsombud", "given_at": "2026-02-27", "reference": "KS 2026/117"}


def principal(tenant: str, *roles: str, user: str | None = None) -> Principal:
    return Principal(user_id=user or str(uuid.uuid4()), tenant=tenant, roles=frozenset(roles))


# --- the pure rules ---------------------------------------------------------------------------------


def test_a_privacy_officer_is_a_party_of_its_own_tenant_only():
    officer = principal("ekby", "privacy_officer")
    assert controller.party(officer, "ekby", VENDOR).role == "privacy_officer"
    with pytest.raises(NotFound):
        controller.party(officer, "other", VENDOR)
    with pytest.raises(NotFound):
        controller.party(officer, "vendor", VENDOR)
    with pytest.raises(AccessDenied):
        controller.party(principal("ekby", "staff", "tenant_admin"), "ekby", VENDOR)
    vendor = controller.party(principal("vendor", "compliance_officer"), "ekby", VENDOR)
    assert (vendor.role, vendor.vendor) == ("compliance_officer", True)
    with pytest.raises(AccessDenied):
        # A privacy officer role in the vendor's token means nothing there.
        controller.party(principal("vendor", "privacy_officer"), "ekby", VENDOR)


def test_processor_data_comes_from_the_inventories_and_only_for_customer_tenants():
    inventories = [
        {"service": "auth", "categories": [{"kind": "user", "role": "controller"}]},
        {"service": "orders", "categories": [{"kind": "individual", "role": "processor"}]},
    ]
    assert controller.processor_kinds(inventories) == ["orders:individual"]
    assert controller.touches_processor_data("ekby", VENDOR, inventories)
    assert not controller.touches_processor_data("vendor", VENDOR, inventories)
    assert not controller.touches_processor_data("ekby", VENDOR, inventories[:1])


def test_a_vendor_officer_on_processor_data_must_record_the_instruction_and_then_waits_for_confirmation():
    vendor = controller.party(principal("vendor", "compliance_officer"), "ekby", VENDOR)
    with pytest.raises(Invalid) as missing:
        controller.on_open(vendor, request_id="r", processor=True, instruction=None, now=NOW)
    assert missing.value.errors[0]["field"] == "instruction"
    with pytest.raises(Invalid) as bad:
        controller.on_open(
            vendor,
            request_id="r",
            processor=True,
            instruction={"given_by": " ", "given_at": "2026-03-09", "reference": "x"},
            now=NOW,
        )
    assert {e["field"] for e in bad.value.errors} == {"instruction.given_by", "instruction.given_at"}
    opening = controller.on_open(vendor, request_id="r", processor=True, instruction=INSTRUCTION, now=NOW)
    assert opening.needs_confirmation and opening.instruction == INSTRUCTION
    # The vendor's own controller data: no instruction, nobody at a customer is asked.
    assert controller.on_open(vendor, request_id="r", processor=False, instruction=None, now=NOW) == (
        controller.Opening(None, False)
    )
    with pytest.raises(Invalid):
        controller.on_open(vendor, request_id="r", processor=False, instruction=INSTRUCTION, now=NOW)


def test_a_privacy_officers_request_is_itself_the_instruction():
    officer = controller.party(principal("ekby", "privacy_officer"), "ekby", VENDOR)
    opening = controller.on_open(officer, request_id="r1", processor=True, instruction=None, now=NOW)
    assert not opening.needs_confirmation
    assert opening.instruction == {
        "given_by": "privacy_officer",
        "given_at": "2026-03-02T10:00:00.000000Z",
        "reference": "r1",
    }
    with pytest.raises(Invalid):
        controller.on_open(officer, request_id="r1", processor=True, instruction=INSTRUCTION, now=NOW)


def test_a_person_on_the_public_page_opens_but_the_customer_confirms_its_processor_data():
    """Issue 17 with issue 15: the person's own request about a customer's data goes to that customer's
    privacy officer; about the vendor's own data it is the vendor's to approve; the person decides nothing."""
    person = controller.party(controller.DataSubject(tenant="vendor", user_id="public"), "ekby", VENDOR)
    assert person.role == controller.DATA_SUBJECT and not person.vendor
    on_customer = controller.on_open(person, request_id="r1", processor=True, instruction=None, now=NOW)
    assert on_customer.needs_confirmation and on_customer.instruction is None
    on_vendor = controller.on_open(person, request_id="r2", processor=False, instruction=None, now=NOW)
    assert not on_vendor.needs_confirmation
    vendor_officer = controller.party(principal("vendor", "compliance_officer"), "ekby", VENDOR)
    assert controller.on_approve(vendor_officer, requested_by="public", needs_confirmation=True) == (
        "awaiting_confirmation"
    )
    with pytest.raises(AccessDenied):
        controller.on_confirm(person, requested_by="public", parties=[], status="awaiting_confirmation")


def test_four_eyes_and_the_customers_privacy_officer_on_approval_and_confirmation():
    requester = principal("vendor", "compliance_officer")
    vendor = controller.party(requester, "ekby", VENDOR)
    second = controller.party(principal("vendor", "compliance_officer"), "ekby", VENDOR)
    officer = controller.party(principal("ekby", "privacy_officer"), "ekby", VENDOR)
    with pytest.raises(AccessDenied):
        controller.on_approve(vendor, requested_by=requester.user_id, needs_confirmation=True)
    assert controller.on_approve(second, requested_by=requester.user_id, needs_confirmation=True) == (
        "awaiting_confirmation"
    )
    # The customer's privacy officer approving confirms the instruction at once.
    assert controller.on_approve(officer, requested_by=requester.user_id, needs_confirmation=True) == "in_progress"
    assert controller.on_approve(second, requested_by=requester.user_id, needs_confirmation=False) == "in_progress"
    parties = [vendor.record("opened", NOW), second.record("approved", NOW)]
    controller.on_confirm(officer, requested_by=requester.user_id, parties=parties, status="awaiting_confirmation")
    with pytest.raises(AccessDenied):
        controller.on_confirm(second, requested_by=requester.user_id, parties=parties, status="awaiting_confirmation")
    with pytest.raises(Conflict):
        controller.on_confirm(officer, requested_by=requester.user_id, parties=parties, status="in_progress")
    assert [a["step"] for a in controller.approvals(parties)] == ["approved"]
    assert "user_id" not in controller.approvals(parties)[0]
    # A tenant's reader sees user ids of its own tenant's parties only.
    assert controller.visible_user(parties, requester.user_id, "ekby") is None
    assert controller.visible_user(parties, requester.user_id, None) == requester.user_id
    assert next_steps("awaiting_confirmation", "erase") == ("confirm", "reject", "extend")


# --- through the API --------------------------------------------------------------------------------


@pytest.fixture
def ekby(tmp_path):
    """A gdpr service that knows a participant holding processor data (the customer's register)."""
    service = Gdpr(f"sqlite:///{tmp_path / 'gdpr.db'}")
    announce_processor(service, tmp_path)
    yield service
    service.rt.db.dispose()


def announce_processor(service: Gdpr, tmp_path) -> None:
    fake = make_fake("register", f"sqlite:///{tmp_path / 'register.db'}", "memory://", mode="anonymise")
    try:
        with service.rt.db.transaction() as s:
            service.coordinator.on_announce(s, announcement(fake.runtime))
        service.keyrings["register"] = fake.runtime.keyring
    finally:
        fake.close()


def po(service: Gdpr, user: str = "po-1", tenant: str = "ekby") -> dict:
    return service.headers(user=user, tenant=tenant, roles=("privacy_officer",))


def test_a_vendor_officers_erasure_of_processor_data_waits_for_the_customers_privacy_officer(ekby):
    body = {"type": "erase", "tenant": "ekby", "subject": {"email": EMAIL}}
    missing = ekby.client.post("/api/v1/requests", json=body, headers=ekby.headers())
    assert missing.status_code == 422 and missing.json["errors"][0]["field"] == "instruction"
    opened = ekby.client.post("/api/v1/requests", json={**body, "instruction": INSTRUCTION}, headers=ekby.headers())
    assert opened.status_code == 202, opened.json
    request_id = opened.json["id"]
    approved = ekby.approve(request_id)
    assert approved.status_code == 200 and approved.json["status"] == "awaiting_confirmation"
    assert set(approved.json["links"]) >= {"confirm", "reject"}
    assert ekby.commands() == []  # nothing is sent before the customer confirms
    # Another tenant's privacy officer: the request does not exist; a vendor officer cannot confirm.
    url = f"/api/v1/requests/{request_id}/confirm"
    assert ekby.client.post(url, headers=po(ekby, tenant="other")).status_code == 404
    assert ekby.client.post(url, headers=ekby.headers(ekby.other_officer)).status_code == 403
    confirmed = ekby.client.post(url, headers=po(ekby))
    assert confirmed.status_code == 200 and confirmed.json["status"] == "in_progress"
    assert [c["service"] for c in ekby.commands()] == ["register"]
    assert ekby.client.post(url, headers=po(ekby)).status_code == 409
    seen_by_customer = ekby.client.get(f"/api/v1/requests/{request_id}", headers=po(ekby)).json
    assert seen_by_customer["instruction"] == INSTRUCTION and seen_by_customer["processor_data"] is True
    assert [(a["step"], a["role"], a["tenant"]) for a in seen_by_customer["approvals"]] == [
        ("approved", "compliance_officer", "vendor"),
        ("confirmed", "privacy_officer", "ekby"),
    ]
    # No user id of the vendor's staff reaches the customer's reader.
    assert seen_by_customer["requested_by"] is None and seen_by_customer["decided_by"] is None
    assert ekby.officer not in str(seen_by_customer) and ekby.other_officer not in str(seen_by_customer)
    assert [e["type"] for e in events_of(ekby.rt) if e["type"].startswith("gdpr.request.")][-2:] == [
        "gdpr.request.confirmed",
        "gdpr.request.dispatched",
    ]
    # The instruction names a person at the customer: encrypted at rest, never in an event.
    assert_no_plaintext(str(events_of(ekby.rt)).encode(), ["Gunilla Lind", EMAIL])
    ekby.rt.db.dispose()
    assert_no_plaintext(raw_dump(ekby.url), ["Gunilla Lind", EMAIL])


def test_the_privacy_officer_opens_for_its_own_tenant_and_a_second_person_approves(ekby):
    body = {"type": "erase", "tenant": "ekby", "subject": {"email": EMAIL}}
    assert ekby.client.post("/api/v1/requests", json={**body, "tenant": "other"}, headers=po(ekby)).status_code == 404
    opened = ekby.client.post("/api/v1/requests", json=body, headers=po(ekby))
    assert opened.status_code == 202, opened.json
    request_id = opened.json["id"]
    assert ekby.approve(request_id, headers=po(ekby)).status_code == 403
    approved = ekby.approve(request_id)
    assert approved.status_code == 200 and approved.json["status"] == "in_progress"
    view = ekby.client.get(f"/api/v1/requests/{request_id}", headers=po(ekby)).json
    assert view["instruction"]["given_by"] == "privacy_officer" and view["requested_by"] == "po-1"
    # Its tenant's requests only, in the listing too.
    ekby.client.post("/api/v1/requests", json={**body, "tenant": "north"}, headers=po(ekby, "po-n", "north"))
    assert {r["tenant"] for r in ekby.client.get("/api/v1/requests", headers=po(ekby)).json["items"]} == {"ekby"}
    assert ekby.client.get(f"/api/v1/requests/{request_id}", headers=po(ekby, "po-n", "north")).status_code == 404


def test_the_vendors_own_data_stays_the_vendors_decision(ekby):
    """A request on the vendor tenant (its staff's logins) needs no instruction and no customer."""
    body = {"type": "erase", "tenant": "vendor", "subject": {"email": EMAIL}}
    with_instruction = ekby.client.post(
        "/api/v1/requests", json={**body, "instruction": INSTRUCTION}, headers=ekby.headers()
    )
    assert with_instruction.status_code == 422
    request_id = ekby.client.post("/api/v1/requests", json=body, headers=ekby.headers()).json["id"]
    approved = ekby.approve(request_id)
    assert approved.json["status"] == "in_progress" and approved.json["instruction"] is None


def test_an_export_that_runs_at_once_still_waits_for_the_customer_when_a_vendor_officer_opened_it(tmp_path):
    service = Gdpr(f"sqlite:///{tmp_path / 'gdpr.db'}", EXPORT_APPROVAL=["strict"])
    try:
        announce_processor(service, tmp_path)
        body = {"type": "export", "tenant": "ekby", "subject": {"email": EMAIL}, "instruction": INSTRUCTION}
        opened = service.client.post("/api/v1/requests", json=body, headers=service.headers())
        assert opened.status_code == 202 and opened.json["status"] == "previewing"
        service.answer_previews(opened.json["id"])
        assert service.view(opened.json["id"])["status"] == "awaiting_confirmation"
        assert service.commands() == []  # the preview went out, nothing that acts
        rejected = service.client.post(
            f"/api/v1/requests/{opened.json['id']}/reject",
            json={"reason": "the municipality has not instructed this export"},
            headers=po(service),
        )
        assert rejected.status_code == 200 and rejected.json["status"] == "rejected"
    finally:
        service.rt.db.dispose()


# --- tenants and their agreements (auth.tenant.announced) -------------------------------------------


def test_a_request_for_a_tenant_auth_never_announced_is_404_not_202(ekby):
    """Issue 18: a gdpr request for a tenant that does not exist was accepted."""
    body = {"type": "export", "tenant": "nowhere", "subject": {"email": EMAIL}, "instruction": INSTRUCTION}
    response = ekby.client.post("/api/v1/requests", json=body, headers=ekby.headers())
    assert response.status_code == 404 and response.json["detail"] == "no such tenant"
    assert ekby.client.get("/api/v1/requests", headers=ekby.headers()).json["items"] == []


def test_processor_data_of_a_tenant_without_an_agreement_is_409_and_the_agreement_is_bound(ekby):
    announce_tenant(ekby.rt, "lagom", agreement=None)
    body = {"type": "erase", "tenant": "lagom", "subject": {"email": EMAIL}, "instruction": INSTRUCTION}
    refused = ekby.client.post("/api/v1/requests", json=body, headers=ekby.headers())
    assert refused.status_code == 409 and "data processing agreement" in refused.json["detail"]
    # Opened by the customer's own privacy officer: the same 409.
    own = {k: v for k, v in body.items() if k != "instruction"}
    assert ekby.client.post("/api/v1/requests", json=own, headers=po(ekby, tenant="lagom")).status_code == 409
    announce_tenant(ekby.rt, "lagom", agreement={"version": "PUB 3", "signed_on": "2026-02-01"})
    opened = ekby.client.post("/api/v1/requests", json=body, headers=ekby.headers())
    assert opened.status_code == 202, opened.json
    # A later change of the agreement does not rewrite what the request was opened under.
    announce_tenant(ekby.rt, "lagom", agreement={"version": "PUB 4", "signed_on": "2026-03-01"})
    view = ekby.view(opened.json["id"])
    assert view["agreement"] == {"version": "PUB 3", "signed_on": "2026-02-01"}
    # The vendor's own data needs no agreement with a customer.
    vendor = ekby.client.post(
        "/api/v1/requests",
        json={"type": "erase", "tenant": "vendor", "subject": {"email": EMAIL}},
        headers=ekby.headers(),
    )
    assert vendor.status_code == 202 and ekby.view(vendor.json["id"])["agreement"] is None


def test_the_replica_follows_auths_announcements_through_the_subscription(tmp_path):
    """The handler gdpr subscribes to auth.tenant.announced with: an upsert, and nonsense ignored."""
    from sqlalchemy import select

    from services.gdpr.models import tenants

    service = Gdpr(f"sqlite:///{tmp_path / 'gdpr.db'}")
    try:
        (handler,) = [s.handler for s in service.rt.wiring.subscriptions if s.pattern == "auth.tenant.announced"]
        with service.rt.db.transaction() as s:
            handler(s, {"type": "auth.tenant.announced", "tenant": "", "data": {"kind": "customer"}})
            handler(s, {"type": "auth.tenant.created", "tenant": "x", "data": {}})
            handler(
                s,
                {
                    "type": "auth.tenant.announced",
                    "tenant": "vik",
                    "data": {"tenant_id": "1", "kind": "customer", "agreement": None},
                },
            )
        with service.rt.db.transaction() as s:
            rows = {r.slug: r for r in s.execute(select(tenants))}
        assert "x" not in rows and "" not in rows
        assert (rows["vik"].kind, rows["vik"].agreement_version) == ("customer", None)
    finally:
        service.rt.db.dispose()
