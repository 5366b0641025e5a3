"""A care-home resident known only by name, birth date and unit, found, previewed, confirmed, exported and
erased over a real RabbitMQ by the real orders and crm participants (issue 15; R1, R2, R7, R15).

Her neighbour has the same name and another birth date: a *near* candidate, never confirmed, untouched.
Two nurses share her care home's switchboard number with her: their person-tab entries and the calls
from the switchboard are *near* ("calls from a number shared by 3 callers") and stay; the support case
in her own name from that number is hers.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime

import pytest

from services.crm import SPEC as CRM
from services.gdpr import SPEC as GDPR
from services.orders import SPEC as ORDERS
from tests.conftest import raw_dump
from tests.gdpr.test_requests import announce_tenant
from tests.orders.conftest import Clock
from tests.orders.world import World
from tests.support import TokenMint, approve_preview, assert_no_plaintext, make_runtime, wait_for

SWITCHBOARD = "08-123 456 78"
HER = {"name": "Gun-Britt Lindqvist", "date_of_birth": "1938-04-07", "room": "Rum 12"}
NEIGHBOUR = {"name": "Gun-Britt Lindqvist", "date_of_birth": "1941-11-02", "room": "Rum 3"}
# The request as her municipality's officer types it: another spelling, her unit, the switchboard.
# The municipality's instruction, recorded by the vendor officer who opens the request.
INSTRUCTION = {"given_by": "Ekby kommun, dataskyddsombud", "given_at": "2026-01-12", "reference": "KS 2026/12"}
SUBJECT = {"name": "gun - britt  LINDQVIST", "birth_date": "1938-04-07", "unit": "avdelning 3", "phone": SWITCHBOARD}
CALLS = (
    b"timestamp,calling_number,called_line,duration,direction\n"
    b"2026-03-03 08:15:00,08-123 456 78,support,125,inbound\n"
    b"2026-03-04 09:00:10,08-123 456 78,support,42,inbound\n"
    b"2026-03-05 10:30:00,08-123 456 78,support,181,inbound\n"
)


class CareHome:
    """gdpr, orders and crm with their worker threads on one vhost; orders data set up over its API."""

    def __init__(self, tmp_path, rabbit_url: str, orders_url: str) -> None:
        self.stop = threading.Event()
        fast = {"RELAY_INTERVAL": 0.05, "ANNOUNCE_INTERVAL": 1.0}
        self.mint = TokenMint()
        self.urls = {"gdpr": f"sqlite:///{tmp_path / 'gdpr.db'}", "crm": f"sqlite:///{tmp_path / 'crm.db'}"}
        self.urls["orders"] = orders_url
        self.gdpr = make_runtime(
            GDPR, self.urls["gdpr"], broker_url=rabbit_url, mint=self.mint, SWEEP_INTERVAL=0.05, **fast
        )
        self.orders = make_runtime(ORDERS, orders_url, broker_url=rabbit_url, mint=self.mint, **fast)
        self.crm = make_runtime(CRM, self.urls["crm"], broker_url=rabbit_url, mint=self.mint, **fast)
        self.client = GDPR.create_app(runtime=self.gdpr).test_client()
        self.crm_client = CRM.create_app(runtime=self.crm).test_client()
        orders_client = ORDERS.create_app(runtime=self.orders).test_client()
        self.world = World(orders_client, self.mint, self.orders, orders_url, Clock(datetime.now(UTC)))
        self.threads = [t for rt in (self.gdpr, self.orders, self.crm) for t in rt.start_worker_threads(self.stop)]
        self.officer, self.second = str(uuid.uuid4()), str(uuid.uuid4())
        self.support = self.mint.headers(tenant="vendor", roles=("support",))
        # The municipality (tenant t1) is the controller of its order registers: auth has announced it with
        # its data processing agreement, and its privacy officer confirms what is acted on (issue 15).
        announce_tenant(self.gdpr, "t1")
        self.privacy_officer = self.mint.headers(sub=str(uuid.uuid4()), tenant="t1", roles=["privacy_officer"])

    def headers(self, user: str | None = None) -> dict[str, str]:
        return self.mint.headers(sub=user or self.officer, tenant="vendor", roles=["compliance_officer"])

    def crm_post(self, path: str, body: dict, status: int = 201) -> dict:
        response = self.crm_client.post(path, json=body, headers=self.support)
        assert response.status_code == status, response.get_json()
        return response.get_json()

    def crm_get(self, path: str) -> dict:
        response = self.crm_client.get(path, headers=self.support)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def view(self, request_id: str) -> dict:
        return self.client.get(f"/api/v1/requests/{request_id}", headers=self.headers()).json

    def wait(self, request_id: str, *statuses: str) -> dict:
        assert wait_for(lambda: self.view(request_id)["status"] in statuses, timeout=40), self.view(request_id)
        return self.view(request_id)

    def open(self, type_: str) -> str:
        response = self.client.post(
            "/api/v1/requests",
            json={"type": type_, "tenant": "t1", "subject": SUBJECT, "instruction": INSTRUCTION},
            headers=self.headers(),
        )
        assert response.status_code == 202 and response.json["status"] == "previewing", response.json
        return response.json["id"]

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)
        for rt in (self.gdpr, self.orders, self.crm):
            rt.db.dispose()


@pytest.fixture
def home(tmp_path, rabbit_url, postgres_url):
    made = CareHome(tmp_path, rabbit_url, postgres_url)
    yield made
    made.close()


def _by_service(preview: dict) -> dict[str, list[dict]]:
    return {service: entry["candidates"] for service, entry in preview["services"].items()}


def test_a_resident_known_by_name_and_birth_date_is_exported_and_erased_only_as_confirmed(home):
    world = home.world
    her = world.individual(**HER)
    neighbour = world.individual(**NEIGHBOUR)  # on her unit too
    world.individual(name="Harald Öberg", date_of_birth="1938-04-07")  # her birthday, another name
    for _ in range(2):
        world.place(individual_id=her["id"])
    world.place(individual_id=neighbour["id"])
    company = home.crm_post("/api/v1/companies", {"name": "Ekby kommun"})
    nurses = [
        home.crm_post(f"/api/v1/companies/{company['id']}/persons", {"name": name, "phone": SWITCHBOARD})
        for name in ("Maja Sköterska", "Olle Undersköterska")
    ]
    case = home.crm_post(
        "/api/v1/cases",
        {
            "company_id": company["id"],
            "caller_name": "Gun-Britt Lindqvist",
            "phone": SWITCHBOARD,
            "subject": "Maten var kall",
            "description": "Gun-Britt ringde från avdelningens växel",
        },
    )
    imported = home.crm_client.post(
        "/api/v1/calls/import", data=CALLS, content_type="text/csv", headers=home.support
    ).get_json()
    assert imported["imported"] == 3 and imported["matched"] == 0  # a shared number matches nobody

    def known() -> set[str]:
        return {s["service"] for s in home.client.get("/api/v1/inventory", headers=home.headers()).json["services"]}

    assert wait_for(lambda: {"orders", "crm"} <= known(), timeout=30)

    # --- the export: previewed, the exact matches confirmed, her data only --------------------------
    exported = home.open("export")
    view = home.wait(exported, "awaiting_approval")
    preview = view["preview"]
    found = _by_service(preview)
    orders = {c["match"]: c for c in found["orders"]}
    assert set(orders) == {"exact", "near"} and len(found["orders"]) == 2  # Harald is no candidate
    assert orders["exact"]["card"]["label"] == (
        "individual, register Avdelning 3 patienter, unit Avdelning 3, born 1938, initials G.-B. L., 2 orders"
    )
    assert orders["near"]["card"]["born"] == 1941 and orders["near"]["card"]["orders"] == 1
    crm = {c["kind"]: c for c in found["crm"]}
    assert crm["call"]["match"] == "near" and crm["call"]["card"]["label"] == (
        "3 call(s) from a number shared by 3 callers"
    )
    assert crm["case"]["match"] == "exact"  # from the switchboard, in her name
    assert sorted(c["match"] for c in found["crm"] if c["kind"] == "person") == ["near", "near"]
    # A preview never shows a value the requester did not give.
    shown = json.dumps(preview, ensure_ascii=False)
    for secret in ("Lindqvist", "Gun-Britt", "04-07", "11-02", "Maja", "Olle", "Rum 12", "812345678", "Maten"):
        assert secret not in shown
    # Her municipality's privacy officer confirms the preview: that approval is the controller's confirmation.
    approved = approve_preview(home.client, exported, home.privacy_officer, view_headers=home.headers())
    assert approved.status_code == 200 and approved.json["status"] == "in_progress", approved.json
    done = home.wait(exported, "completed")
    package = home.client.get(f"/api/v1/requests/{exported}/export", headers=home.headers())
    assert package.status_code == 200
    assert {s["service"]: s["records"] for s in done["services"]}["orders"] == {"individual": 1, "order": 2}

    # --- the erasure: a preview gone stale is refused, the current one confirmed --------------------
    erased = home.open("erase")
    first = home.wait(erased, "awaiting_approval")["preview"]
    world.place(individual_id=her["id"], delivery_date="2030-03-13")  # her data changed since
    assert home.client.post(f"/api/v1/requests/{erased}/preview", headers=home.headers()).status_code == 200
    current = home.wait(erased, "awaiting_approval")["preview"]
    assert current["hash"] != first["hash"]
    url, second = f"/api/v1/requests/{erased}/approve", home.privacy_officer
    stale = home.client.post(url, json={"preview_hash": first["hash"], "confirmed": []}, headers=second)
    assert stale.status_code == 409 and stale.mimetype == "application/problem+json"
    # the exact matches only
    assert approve_preview(home.client, erased, second, view_headers=home.headers()).status_code == 200
    done = home.wait(erased, "completed")
    results = {s["service"]: s["erasure"] for s in done["services"]}
    assert {"kind": "individual", "action": "deleted", "count": 1} in results["orders"]
    assert {"kind": "case", "action": "anonymised", "count": 1} in results["crm"]
    assert {"kind": "call", "action": "anonymised", "count": 0} in results["crm"]
    assert {"kind": "person", "action": "deleted", "count": 0} in results["crm"]

    # She is gone; her neighbour, the nurses and the switchboard's calls are untouched.
    assert world.call("GET", f"/individuals/{her['id']}", world.staff).status_code == 410
    assert world.ok("GET", f"/individuals/{neighbour['id']}", world.staff)["name"] == "Gun-Britt Lindqvist"
    for nurse in nurses:
        assert home.crm_get(f"/api/v1/persons/{nurse['id']}")["phone"] == "+46812345678"
    assert [c["number"] for c in home.crm_get("/api/v1/calls")["items"]] == ["+46812345678"] * 3
    redacted = home.crm_get(f"/api/v1/cases/{case['id']}")
    assert redacted["caller_name"] is None and redacted["redacted"] is True

    # Nothing holds her name, or the cards, in plaintext at rest.
    for rt in (home.gdpr, home.orders, home.crm):
        rt.db.dispose()
    for url in home.urls.values():
        assert_no_plaintext(raw_dump(url), ["Gun-Britt", "Lindqvist", "initials G.-B. L.", "1938-04-07"])
