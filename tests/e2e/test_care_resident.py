"""Issue 15's "done when" on the whole running system: a care-home resident with no personnummer, e-mail or
phone of her own is exported and erased after her municipality's privacy officer confirmed the preview;
her neighbour with the same name and another birth date, the nurses sharing her ward's switchboard number
and the switchboard's calls stay untouched; and the erasure's certificate verifies, offline and by API
(R1, R2, R7, R9, R15; GDPR art. 28).

The same scenario as tests/gdpr/test_care_context.py, but with every service as real processes over HTTP and
RabbitMQ (tests/e2e/conftest.py), the municipality and its privacy officer set up in auth, and the
certificate anchored to the audit's own signed checkpoint.
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import raw_dump
from tests.processes import wait_until
from tests.support import assert_no_plaintext

from .conftest import VENDOR_ADMIN, Api, System
from .helpers import exact_decision, finish, previewed

TENANT = "ekby-care"
SWITCHBOARD = "08-123 456 78"
HER = {"name": "Gun-Britt Lindqvist", "date_of_birth": "1938-04-07", "room": "Rum 12"}
NEIGHBOUR = {"name": "Gun-Britt Lindqvist", "date_of_birth": "1941-11-02", "room": "Rum 3"}
# The request as the municipality gave it to the vendor: another spelling, her unit, the switchboard.
SUBJECT = {"name": "gun - britt  LINDQVIST", "birth_date": "1938-04-07", "unit": "avdelning 3", "phone": SWITCHBOARD}
INSTRUCTION = {"given_by": "Ekby kommun, dataskyddsombud", "given_at": "2026-01-12", "reference": "KS 2026/12"}
NURSES = ("Maja Sköterska", "Olle Undersköterska")
CALLS = (
    b"timestamp,calling_number,called_line,duration,direction\n"
    b"2026-03-03 08:15:00,08-123 456 78,support,125,inbound\n"
    b"2026-03-04 09:00:10,08-123 456 78,support,42,inbound\n"
    b"2026-03-05 10:30:00,08-123 456 78,support,181,inbound\n"
)
PASSWORDS = {
    ("vendor", "officer-1"): ("compliance_officer", "officer one password 1"),
    ("vendor", "support-1"): ("support", "support desk password 1"),
    (TENANT, "admin-1"): ("tenant_admin", "care admin password 1"),
    (TENANT, "staff-1"): ("staff", "care staff password 1"),
    (TENANT, "dpo-1"): ("privacy_officer", "privacy officer password 1"),
}
# What must not be found at rest or in the logs once she is erased (her neighbour's name is encrypted too).
HER_PLAINTEXT = ["Gun-Britt", "Lindqvist", "initials G.-B. L.", "1938-04-07", "Rum 12", "Maten var kall"]


@dataclass
class Care:
    system: System
    auth: Api
    orders: Api
    crm: Api
    gdpr: Api
    tokens: dict[str, str]
    ids: dict[str, Any]


@pytest.fixture(scope="module")
def care(system: System) -> Care:
    """The municipality (with its agreement and privacy officer), its ward in orders with the resident and her
    neighbour, and crm's switchboard: two nurses, three calls and a case in her name from that number."""
    auth, orders, crm, gdpr = (system.api(n) for n in ("auth", "orders", "crm", "gdpr"))
    admin = auth.login("vendor", *VENDOR_ADMIN)
    agreement = {"version": "PUB-2025-1", "signed_on": "2025-01-15", "signatory": "Kommunstyrelsens ordförande"}
    auth.ok("POST", "/api/v1/tenants", admin, {"slug": TENANT, "name": "Ekby kommun", "agreement": agreement}, 201)
    for (tenant, username), (role, password) in PASSWORDS.items():
        body = {"username": username, "roles": [role], "password": password, "source": "local"}
        auth.ok("POST", f"/api/v1/tenants/{tenant}/users", admin, body, 201)
    tokens = {
        username: auth.login(tenant, username, password) for (tenant, username), (_r, password) in PASSWORDS.items()
    }
    ids: dict[str, Any] = {"staff": auth.ok("GET", "/api/v1/auth/me", tokens["staff-1"])["id"]}

    # --- orders: the ward, its register and menu; staff may order for it -------------------------------
    boss, staff = tokens["admin-1"], tokens["staff-1"]
    unit = orders.ok("POST", "/api/v1/units", boss, {"name": "Avdelning 3", "kind": "care_home"}, 201)
    register = orders.ok(
        "POST",
        "/api/v1/registers",
        boss,
        {"name": "Avdelning 3 patienter", "deadline": {"time": "12:00", "days_before": 1}},
        201,
    )
    menu = orders.ok("POST", "/api/v1/assortment-lists", boss, {"name": "Avdelning 3 meny", "unit_id": unit["id"]}, 201)
    lunch = orders.ok(
        "POST",
        f"/api/v1/assortment-lists/{menu['id']}/articles",
        boss,
        {"code": "LUNCH", "name": "Dagens lunch", "kind": "meal"},
        201,
    )
    for right in ("view", "order", "change"):
        grant = {"principal": {"type": "user", "id": ids["staff"]}, "right": right}
        orders.ok("POST", f"/api/v1/registers/{register['id']}/grants", boss, grant, 201)
        orders.ok("POST", f"/api/v1/assortment-lists/{menu['id']}/grants", boss, grant, 201)

    def individual(**fields: str) -> dict:
        body = {**fields, "unit_id": unit["id"]}
        return orders.ok("POST", f"/api/v1/registers/{register['id']}/individuals", boss, body, 201)

    def place(individual_id: str, meal: str) -> dict:
        body = {
            "register_id": register["id"],
            "individual_id": individual_id,
            "delivery_date": "2030-03-12",
            "meal": meal,
            "article_id": lunch["id"],
            "quantity": 1,
        }
        return orders.ok("POST", "/api/v1/orders", staff, body, 201)

    her, neighbour = individual(**HER), individual(**NEIGHBOUR)
    individual(name="Harald Öberg", date_of_birth="1938-04-07")  # her birthday, another name: no candidate
    ids.update(her=her, neighbour=neighbour, her_orders=[place(her["id"], "lunch"), place(her["id"], "dinner")])
    ids["neighbour_order"] = place(neighbour["id"], "lunch")

    # --- crm: the switchboard shared by the nurses, its calls, and her complaint from it ---------------
    support = tokens["support-1"]
    company = crm.ok("POST", "/api/v1/companies", support, {"name": "Ekby kommun", "tenant": TENANT}, 201)
    ids["nurses"] = [
        crm.ok("POST", f"/api/v1/companies/{company['id']}/persons", support, {"name": n, "phone": SWITCHBOARD}, 201)
        for n in NURSES
    ]
    ids["case"] = crm.ok(
        "POST",
        "/api/v1/cases",
        support,
        {
            "company_id": company["id"],
            "caller_name": "Gun-Britt Lindqvist",
            "phone": SWITCHBOARD,
            "subject": "Maten var kall",
            "description": "Gun-Britt ringde från avdelningens växel",
        },
        201,
    )
    report = crm.ok("POST", "/api/v1/calls/import", support, data=CALLS, content_type="text/csv")
    assert (report["imported"], report["matched"]) == (3, 0), report  # a shared number matches nobody

    wait_until(
        lambda: (
            {"auth", "orders", "crm", "audit"}
            <= {s["service"] for s in gdpr.ok("GET", "/api/v1/inventory", tokens["officer-1"])["services"]}
        ),
        30,
        "every service to announce itself to the gdpr service",
    )
    return Care(system, auth, orders, crm, gdpr, tokens, ids)


def _candidates(preview: dict, service: str) -> list[dict]:
    return preview["services"][service]["candidates"]


def _run(care: Care, type_: str) -> tuple[dict, dict]:
    """A vendor compliance officer opens the request with the municipality's instruction; the municipality's
    privacy officer approves the preview's exact candidates, which confirms the instruction at once."""
    officer, dpo = care.tokens["officer-1"], care.tokens["dpo-1"]
    body = {"type": type_, "tenant": TENANT, "subject": SUBJECT, "instruction": INSTRUCTION}
    opened = care.gdpr.ok("POST", "/api/v1/requests", officer, body, 202)
    assert opened["status"] == "previewing", opened
    # The privacy officer sees her own tenant's request, and its preview, as the controller.
    view = previewed(care.gdpr, dpo, opened["id"])
    assert view["processor_data"] is True and view["instruction"] == INSTRUCTION, view
    assert view["agreement"] == {"version": "PUB-2025-1", "signed_on": "2025-01-15"}
    approved = care.gdpr.ok("POST", f"/api/v1/requests/{opened['id']}/approve", dpo, exact_decision(view["preview"]))
    assert approved["status"] == "in_progress", approved["status"]
    # One step: the controller's approval of the exact candidates is its confirmation (docs/gdpr.md).
    assert [(a["step"], a["role"], a["tenant"]) for a in approved["approvals"]] == [
        ("approved", "privacy_officer", TENANT)
    ]
    done = finish(care.gdpr, officer, opened["id"])
    assert done["status"] == "completed", done
    return view["preview"], done


@pytest.fixture(scope="module")
def exported(care: Care) -> tuple[dict, dict, dict[str, bytes]]:
    preview, done = _run(care, "export")
    reply = care.gdpr.call("GET", f"/api/v1/requests/{done['id']}/export", care.tokens["dpo-1"])
    assert reply.status == 200 and reply.headers["Content-Type"] == "application/zip", reply.status
    with zipfile.ZipFile(io.BytesIO(reply.body)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    return preview, done, files


@pytest.fixture(scope="module")
def erased(care: Care, exported) -> dict:
    return _run(care, "erase")[1]


def test_the_preview_shows_her_neighbour_and_the_switchboard_as_near_candidates_only_masked(care, exported):
    """Issue 15 items 3, 4: exact on name + birth date + unit; near for the neighbour and the shared number."""
    preview = exported[0]
    orders = {c["match"]: c for c in _candidates(preview, "orders")}
    assert set(orders) == {"exact", "near"} and len(_candidates(preview, "orders")) == 2  # Harald is none
    assert orders["exact"]["card"]["label"] == (
        "individual, register Avdelning 3 patienter, unit Avdelning 3, born 1938, initials G.-B. L., 2 orders"
    )
    assert orders["near"]["card"]["born"] == 1941 and orders["near"]["card"]["orders"] == 1
    crm = _candidates(preview, "crm")
    [call] = [c for c in crm if c["kind"] == "call"]
    assert call["match"] == "near" and call["card"]["label"] == "3 call(s) from a number shared by 3 callers"
    assert [c["match"] for c in crm if c["kind"] == "case"] == ["exact"]
    assert sorted(c["match"] for c in crm if c["kind"] == "person") == ["near", "near"]
    shown = json.dumps(preview, ensure_ascii=False)
    for secret in ("Lindqvist", "Gun-Britt", "04-07", "11-02", "Maja", "Olle", "Rum 12", "812345678", "Maten"):
        assert secret not in shown


def test_the_export_package_holds_her_records_only(care, exported):
    """R1: her individual, her two orders and her case; not her neighbour, the nurses or the switchboard's calls."""
    _preview, done, files = exported
    assert {s["service"]: s["records"] for s in done["services"]}["orders"] == {"individual": 1, "order": 2}
    [individual] = json.loads(files["orders/individual.json"])
    assert (individual["id"], individual["name"], individual["date_of_birth"]) == (
        care.ids["her"]["id"],
        HER["name"],
        HER["date_of_birth"],
    )
    assert sorted(o["id"] for o in json.loads(files["orders/order.json"])) == sorted(
        o["id"] for o in care.ids["her_orders"]
    )
    [case] = json.loads(files["crm/case.json"])
    assert case["id"] == care.ids["case"]["id"]
    for path in ("crm/person.json", "crm/call.json"):
        assert not json.loads(files.get(path, b"[]")), path
    everything = b"".join(files.values())
    assert_no_plaintext(
        everything, [NEIGHBOUR["date_of_birth"], NEIGHBOUR["room"], *NURSES, care.ids["neighbour"]["id"]]
    )


def test_the_erasure_acts_on_her_only(care, erased):
    """R2, R15: she is gone (410); the neighbour, the nurses and the switchboard's calls are untouched."""
    results = {s["service"]: s["erasure"] for s in erased["services"]}
    assert {"kind": "individual", "action": "deleted", "count": 1} in results["orders"]
    assert {"kind": "case", "action": "anonymised", "count": 1} in results["crm"]
    assert {"kind": "call", "action": "anonymised", "count": 0} in results["crm"]
    assert {"kind": "person", "action": "deleted", "count": 0} in results["crm"]
    staff, support = care.tokens["staff-1"], care.tokens["support-1"]
    assert care.orders.call("GET", f"/api/v1/individuals/{care.ids['her']['id']}", staff).status == 410
    neighbour = care.orders.ok("GET", f"/api/v1/individuals/{care.ids['neighbour']['id']}", staff)
    assert (neighbour["name"], neighbour["date_of_birth"]) == (NEIGHBOUR["name"], NEIGHBOUR["date_of_birth"])
    order = care.orders.ok("GET", f"/api/v1/orders/{care.ids['neighbour_order']['id']}", staff)
    assert order["individual_id"] == neighbour["id"]
    for nurse, name in zip(care.ids["nurses"], NURSES, strict=True):
        person = care.crm.ok("GET", f"/api/v1/persons/{nurse['id']}", support)
        assert (person["name"], person["phone"]) == (name, "+46812345678")
    assert [c["number"] for c in care.crm.ok("GET", "/api/v1/calls", support)["items"]] == ["+46812345678"] * 3
    case = care.crm.ok("GET", f"/api/v1/cases/{care.ids['case']['id']}", support)
    assert case["caller_name"] is None and case["redacted"] is True


def test_no_database_or_log_holds_her_in_plaintext(care, erased):
    """R7, R2: raw dumps of every service's database, and everything the processes printed, name her nowhere."""
    for service, url in care.system.database_urls.items():
        leaked = [v for v in HER_PLAINTEXT if v.encode() in raw_dump(url)]
        assert not leaked, f"the {service} database holds {len(leaked)} of her values in plaintext"
    # The dump is real: the neighbour's individual is in it, by id.
    assert care.ids["neighbour"]["id"].encode() in raw_dump(care.system.database_urls["orders"])
    assert_no_plaintext(care.system.log(), HER_PLAINTEXT)


def test_the_erasure_certificate_verifies_offline_and_by_api(care, erased, tmp_path):
    """Issue 15 item 5: once the audit signed a checkpoint of the tenant's chain after the erasure, the
    certificate is there; it verifies offline against the published keys (and its anchor against the audit's
    key), a tampered copy does not, and the API says valid."""
    dpo, path = care.tokens["dpo-1"], f"/api/v1/requests/{erased['id']}/certificate"

    def issued():
        reply = care.gdpr.call("GET", path, dpo)
        assert reply.status in (200, 409), reply.body[:500]
        return reply.json() if reply.status == 200 else None

    document = wait_until(issued, 60, "the erasure to be anchored to an audit checkpoint", interval=0.5)
    certificate = document["certificate"]
    assert (certificate["request_id"], certificate["tenant"], certificate["type"]) == (erased["id"], TENANT, "erase")
    assert certificate["anchor"]["chain"] == f"tenant:{TENANT}"
    assert [(a["step"], a["role"], a["tenant"]) for a in certificate["approvals"]] == [
        ("approved", "privacy_officer", TENANT)
    ]
    # Both people of the four eyes: the vendor officer who opened it on the instruction, and the approver.
    assert (certificate["opened_by"]["role"], certificate["opened_by"]["tenant"]) == ("compliance_officer", "vendor")
    assert certificate["instruction"] and certificate["agreement"]["version"] == "PUB-2025-1"
    assert_no_plaintext(json.dumps(document, ensure_ascii=False).encode(), HER_PLAINTEXT)

    key = tmp_path / "certificate-key.pem"
    key.write_text(care.gdpr.ok("GET", "/api/v1/certificates/key")["keys"][0]["pem"])
    audit_key = tmp_path / "audit-key.pem"
    printed = care.system.cli("audit", "public-key")
    assert printed.returncode == 0, printed.stderr
    audit_key.write_text(printed.stdout)
    good = tmp_path / "certificate.json"
    good.write_text(json.dumps(document))
    done = care.system.cli("gdpr", "verify-certificate", str(good), "--key", str(key), "--audit-key", str(audit_key))
    assert done.returncode == 0, done.stdout + done.stderr

    tampered = copy.deepcopy(document)
    orders = next(r for r in tampered["certificate"]["results"] if r["service"] == "orders")
    next(i for i in orders["erasure"] if i["kind"] == "individual")["count"] = 0
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(tampered))
    refused = care.system.cli("gdpr", "verify-certificate", str(bad), "--key", str(key))
    assert refused.returncode == 1, refused.stdout + refused.stderr

    verdict = care.gdpr.ok("POST", "/api/v1/certificates/verify", json_body=document)
    assert verdict["valid"] is True and verdict["key_id"] == document["signature"]["key_id"], verdict
    assert care.gdpr.ok("POST", "/api/v1/certificates/verify", json_body=tampered)["valid"] is False
