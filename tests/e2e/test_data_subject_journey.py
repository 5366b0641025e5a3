"""One data subject's journey through the whole running system: staff log in through the directory and
record her in every service, a compliance officer exports her data (R1, art. 15), two officers erase her
(R2, R15), and afterwards no database holds her in plaintext, invoicing orders survive de-identified,
another person is untouched and the audit chain still verifies (R9, R11).

At its end (issue 14) the journey looks where a database dump does not: RabbitMQ's own data directory
holds none of her values, and every service's database backed up before the erasure, restored and put
through the documented restore step (``./recept <service> replay-erasures``), holds her no more.

The system is started once for the module (tests/e2e/conftest.py); the steps are module-scoped fixtures
(``world`` → ``exported`` → ``backups`` → ``erased``), so each test states one promise and runs in any
selection.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, select
from sqlalchemy.orm import Session

from services.auth.models import users
from services.crm.models import persons
from services.orders.models import individuals
from shared.bus import GDPR, Binding, Bus, Message
from shared.crypto import ERASED, Keyring, Vault, crypto_tables
from tests.conftest import create_database, drop_database, raw_dump
from tests.forensics import broker_data_dir, dump_database, found_in_files, restore_database
from tests.processes import wait_until
from tests.support import assert_no_plaintext

from .conftest import VENDOR_ADMIN, Api, System
from .helpers import exact_decision, finish, previewed

TENANT = "ekby"
# Orders holds the municipality's registers as its processor: a vendor officer opening a request records the
# municipality's instruction, and its privacy officer (Carol, directory group "dpo") confirms it (issue 15).
INSTRUCTION = {"given_by": "Ekby kommun, dataskyddsombud", "given_at": "2026-01-12", "reference": "KS 2026/12"}
PASSWORDS = {
    "officer-1": "officer one password 1",
    "officer-2": "officer two password 2",
    "support-1": "support desk password 1",
    "auditor-1": "auditor password number 1",
}


def personnummer(born: str, serial: str) -> str:
    """A valid personnummer ``YYYYMMDD-NNNC`` (Luhn check digit over YYMMDDNNN)."""
    digits = born[2:] + serial
    total = 0
    for i, ch in enumerate(digits):
        n = int(ch) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return f"{born}-{serial}{(10 - total % 10) % 10}"


@dataclass(frozen=True)
class Person:
    """A fictional person, with every spelling of their identifiers the scenario types somewhere."""

    name: str
    given: str
    surname: str
    email: str
    phones: tuple[str, ...]  # the first is how the person tab holds it; all mean one number
    personnummer: str  # YYYYMMDD-NNNN
    uid: str | None = None  # directory login, when the person is also a user

    @property
    def pnr_spellings(self) -> tuple[str, ...]:
        twelve = self.personnummer.replace("-", "")
        return self.personnummer, twelve, twelve[2:], self.personnummer[2:]

    def plaintext(self) -> list[str]:
        """What must not be found at rest once the person is erased."""
        values = [self.name, self.surname, self.email, self.email.split("@")[0], *self.phones, *self.pnr_spellings]
        return values + ([self.uid] if self.uid else [])


SIGNE = Person(
    name="Signe Svanberg",
    given="Signe",
    surname="Svanberg",
    email="signe.svanberg@ekby.example",
    phones=("+46 70 555 12 34", "070-555 12 34", "0705551234", "+46705551234"),
    personnummer=personnummer("19480312", "238"),
    uid="ssvanberg",
)
OLOF = Person(
    name="Olof Östman",
    given="Olof",
    surname="Östman",
    email="olof.ostman@ekby.example",
    phones=("+46 73 866 40 21", "073-866 40 21"),
    personnummer=personnummer("19510704", "417"),
)


def eml(sender: Person, subject: str, body: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"{sender.name} <{sender.email}>"
    message["To"] = "Recept support <support@recept.example>"
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime(2025, 5, 6, 9, 30, tzinfo=UTC))
    message["Message-ID"] = make_msgid(domain="ekby.example")
    message.set_content(f"{body}\n\nMed vänlig hälsning\n{sender.name}\n{sender.phones[0]}\n")
    return bytes(message)


@dataclass
class World:
    """Everything the scenario created, and the tokens of the people who act in it."""

    system: System
    auth: Api
    orders: Api
    crm: Api
    audit: Api
    gdpr: Api
    tokens: dict[str, str]
    ids: dict[str, Any]

    def relogin(self, who: str) -> str:
        return self.auth.login("vendor", who, PASSWORDS[who])


def _audit_has(world: World, subject: str, event_type: str) -> bool:
    items = world.audit.ok("GET", f"/api/v1/events?subject={subject}&limit=1000", world.tokens["auditor"])["items"]
    return any(item["type"] == event_type for item in items)


@pytest.fixture(scope="module")
def world(system: System, directory, smtp) -> World:
    """The operator's and staff's work before any request: tenants, directory, users, and the two people's
    data in orders (individuals, orders) and crm (person tab, calls, cases, e-mails, a notice)."""
    auth, orders, crm, audit, gdpr = (system.api(n) for n in ("auth", "orders", "crm", "audit", "gdpr"))
    tokens: dict[str, str] = {}
    ids: dict[str, Any] = {}
    w = World(system, auth, orders, crm, audit, gdpr, tokens, ids)

    # --- auth: the vendor's staff (local accounts) and the customer's directory (R10) ---------------
    admin = auth.login("vendor", *VENDOR_ADMIN)
    auth.ok(
        "POST",
        "/api/v1/tenants",
        admin,
        {
            "slug": TENANT,
            "name": "Ekby kommun",
            "agreement": {
                "version": "PUB-2025-1",
                "signed_on": "2025-01-15",
                "signatory": "Kommunstyrelsens ordförande",
            },
        },
        201,
    )
    for username, role in (
        ("officer-1", "compliance_officer"),
        ("officer-2", "compliance_officer"),
        ("support-1", "support"),
        ("auditor-1", "auditor"),
    ):
        auth.ok(
            "POST",
            "/api/v1/tenants/vendor/users",
            admin,
            {"username": username, "roles": [role], "password": PASSWORDS[username], "source": "local"},
            201,
        )
    settings = directory.settings
    auth.ok(
        "PUT",
        f"/api/v1/tenants/{TENANT}/directory",
        admin,
        {
            "urls": [directory.url],
            "tls": "none",
            "bind_dn": directory.bind_dn,
            "bind_password": directory.bind_password,
            "user_search_base": settings.user_search_base,
            "user_filter": settings.user_filter,
            "username_attribute": settings.username_attribute,
            "group_search_base": settings.group_search_base,
            "group_filter": settings.group_filter,
            "group_roles": {"kitchen-staff": ["staff"], "care-admins": ["tenant_admin"], "dpo": ["privacy_officer"]},
        },
    )
    auth.ok("POST", f"/api/v1/tenants/{TENANT}/directory/test", admin)
    # The data subject also works in the municipality's kitchen: a directory account of her own.
    directory.add_user(
        SIGNE.uid,
        "signe-password-1",
        cn=SIGNE.name,
        sn=SIGNE.surname,
        given_name=SIGNE.given,
        mail=SIGNE.email,
        groups=("kitchen-staff",),
    )
    tokens.update(
        admin=admin,
        officer1=w.relogin("officer-1"),
        officer2=w.relogin("officer-2"),
        support=w.relogin("support-1"),
        auditor=w.relogin("auditor-1"),
        bob=auth.login(TENANT, "bob", "bob-password-1"),
        alice=auth.login(TENANT, "alice", "alice-password-1"),
        signe=auth.login(TENANT, SIGNE.uid, "signe-password-1"),
        dpo=auth.login(TENANT, "carol", "carol-password-1"),
    )
    ids["me"] = {
        who: auth.ok("GET", "/api/v1/auth/me", tokens[who]) for who in ("alice", "bob", "signe", "officer1", "officer2")
    }

    # --- orders: a ward's register, its menu, and the two people in it (R7, R8, R11, R12) -----------
    bob, alice = tokens["bob"], tokens["alice"]
    orders.ok("PUT", "/api/v1/settings", bob, {"personnummer_enabled": True})
    unit = orders.ok("POST", "/api/v1/units", bob, {"name": "Solgårdens äldreboende", "kind": "care_home"}, 201)
    register = orders.ok(
        "POST",
        "/api/v1/registers",
        bob,
        {"name": "Solgården boende", "deadline": {"time": "12:00", "days_before": 1}},
        201,
    )
    menu = orders.ok("POST", "/api/v1/assortment-lists", bob, {"name": "Solgården meny", "unit_id": unit["id"]}, 201)
    lunch = orders.ok(
        "POST",
        f"/api/v1/assortment-lists/{menu['id']}/articles",
        bob,
        {"code": "LUNCH", "name": "Dagens lunch", "kind": "meal"},
        201,
    )
    for right in ("view", "order", "change"):
        grant = {"principal": {"type": "group", "id": "kitchen-staff"}, "right": right}
        orders.ok("POST", f"/api/v1/registers/{register['id']}/grants", bob, grant, 201)
        orders.ok("POST", f"/api/v1/assortment-lists/{menu['id']}/grants", bob, grant, 201)
    individuals = {}
    for person, room, diets, allergies in ((SIGNE, "12", ["diabetes"], ["nötter"]), (OLOF, "14", ["laktosfri"], [])):
        individuals[person.name] = orders.ok(
            "POST",
            f"/api/v1/registers/{register['id']}/individuals",
            bob,
            {
                "name": person.name,
                "personnummer": person.personnummer,
                "unit_id": unit["id"],
                "room": room,
                "diets": diets,
                "allergies": allergies,
                "texture_level": 5,
                "notes": f"{person.given} vill ha kaffe efter maten",
            },
            201,
        )
    day = date.today() + timedelta(days=10)
    placed = {SIGNE.name: [], OLOF.name: []}
    for person, meal, quantity in ((SIGNE, "lunch", 1), (SIGNE, "dinner", 1), (OLOF, "lunch", 2)):
        placed[person.name].append(
            orders.ok(
                "POST",
                "/api/v1/orders",
                alice,
                {
                    "register_id": register["id"],
                    "individual_id": individuals[person.name]["id"],
                    "delivery_date": day.isoformat(),
                    "meal": meal,
                    "article_id": lunch["id"],
                    "quantity": quantity,
                },
                201,
            )
        )
    orders.ok("PATCH", f"/api/v1/orders/{placed[SIGNE.name][0]['id']}", alice, {"quantity": 2})
    # A care worker reads her health data: the read itself is in her audit trail (art. 15).
    orders.ok("GET", f"/api/v1/individuals/{individuals[SIGNE.name]['id']}", alice)
    ids.update(register=register, individuals=individuals, orders=placed)

    # --- crm: the company, its person tab, call logs, cases, an e-mail, a notice (R4, R13, R14) -------
    support = tokens["support"]
    company = crm.ok(
        "POST",
        "/api/v1/companies",
        support,
        {"name": "Ekby kommun", "org_number": "212000-0001", "tenant": TENANT},
        201,
    )
    persons = {
        p.name: crm.ok(
            "POST",
            f"/api/v1/companies/{company['id']}/persons",
            support,
            {"name": p.name, "email": p.email, "phone": p.phones[0], "title": title, "notice_recipient": True},
            201,
        )
        for p, title in ((SIGNE, "Kostchef"), (OLOF, "Enhetschef"))
    }
    calls = (
        "timestamp,calling_number,called_line,duration,direction\n"
        f"2025-05-05 09:12,{SIGNE.phones[1]},support,184,inbound\n"
        f"2025-05-06 14:02,{SIGNE.phones[3]},support,65,inbound\n"
        f"2025-05-06 15:30,{OLOF.phones[1]},support,40,inbound\n"
        "2025-05-07 08:00,08-123 456 78,support,10,missed\n"
    )
    report = crm.ok("POST", "/api/v1/calls/import", support, data=calls.encode(), content_type="text/csv")
    assert (report["imported"], report["rejected"], report["matched"]) == (4, 0, 3), report
    cases = {}
    for person, phone, text in (
        (SIGNE, SIGNE.phones[2], f"{SIGNE.name} ringde: specialkosten saknas i listan"),
        (OLOF, OLOF.phones[1], "Frågar om fakturan för april"),
    ):
        cases[person.name] = crm.ok(
            "POST",
            "/api/v1/cases",
            support,
            {
                "company_id": company["id"],
                "caller_name": person.name,
                "phone": phone,
                "email": person.email,
                "subject": "Beställning",
                "description": text,
                "channel": "phone",
            },
            201,
        )
        assert cases[person.name]["person_id"] == persons[person.name]["id"]
    emails = {
        p.name: crm.ok(
            "POST",
            f"/api/v1/companies/{company['id']}/emails",
            support,
            data=eml(p, subject, body),
            content_type="message/rfc822",
            status=201,
        )
        for p, subject, body in (
            (SIGNE, "Specialkost för Solgården", "Hej! Diabeteskosten fattas i listan."),
            (OLOF, "Faktura april", "Hej, fakturan för april verkar dubblerad."),
        )
    }
    notice = crm.ok(
        "POST",
        "/api/v1/notices",
        support,
        {"title": "Driftstopp 12 maj", "body": "Systemet uppdateras 12 maj kl 22-23.", "company_ids": [company["id"]]},
        201,
    )
    assert sorted(r for _f, rcpt, _c in smtp.messages for r in rcpt) == sorted([SIGNE.email, OLOF.email])
    ids.update(company=company, persons=persons, cases=cases, emails=emails, notice=notice)

    # --- ready for requests: every service announced to the gdpr service, the audit has the events ---
    wait_until(
        lambda: (
            {"auth", "orders", "crm", "audit"}
            <= {s["service"] for s in gdpr.ok("GET", "/api/v1/inventory", tokens["officer1"])["services"]}
        ),
        30,
        "every service to announce itself to the gdpr service",
    )
    wait_until(
        lambda: (
            _audit_has(w, f"orders:individual:{individuals[SIGNE.name]['id']}", "orders.individual.read")
            and _audit_has(w, f"crm:email:{emails[SIGNE.name]['id']}", "crm.email.ingested")
        ),
        30,
        "the audit service to record the scenario's events",
    )
    return w


def _finish(world: World, request_id: str, timeout: float = 90) -> dict:
    return finish(world.gdpr, world.tokens["officer1"], request_id, timeout)


def _confirm(world: World, request_id: str) -> None:
    """The municipality's privacy officer confirms the instruction the vendor's officers acted on."""
    waiting = world.gdpr.ok("GET", f"/api/v1/requests/{request_id}", world.tokens["dpo"])
    assert waiting["status"] == "awaiting_confirmation" and waiting["instruction"] == INSTRUCTION, waiting
    confirmed = world.gdpr.ok("POST", f"/api/v1/requests/{request_id}/confirm", world.tokens["dpo"])
    assert [a["role"] for a in confirmed["approvals"]] == ["compliance_officer", "privacy_officer"]


@pytest.fixture(scope="module")
def exported(world: World) -> tuple[dict, dict[str, bytes]]:
    """An export request by the subject's e-mail, phone, personnummer and username, completed and downloaded."""
    opened = world.gdpr.ok(
        "POST",
        "/api/v1/requests",
        world.tokens["officer1"],
        {
            "type": "export",
            "tenant": TENANT,
            "reason": "Begäran om registerutdrag via e-post",
            "subject": {
                "email": SIGNE.email,
                "phone": SIGNE.phones[1],
                "personnummer": SIGNE.personnummer,
                "username": SIGNE.uid,
            },
            "instruction": INSTRUCTION,
        },
        202,
    )
    # Four eyes for exports too, by default (issue 14): officer one may not release her own request.
    assert opened["status"] == "previewing"
    _approve(world, opened["id"])
    _confirm(world, opened["id"])
    view = _finish(world, opened["id"])
    reply = world.gdpr.call("GET", f"/api/v1/requests/{opened['id']}/export", world.tokens["officer1"])
    assert reply.status == 200 and reply.headers["Content-Type"] == "application/zip", reply.status
    with zipfile.ZipFile(io.BytesIO(reply.body)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    return view, files


@pytest.fixture(scope="module")
def backups(world: World, exported, tmp_path_factory) -> dict[str, Path]:
    """Every service's database backed up (pg_dump) after the export and before the erasure."""
    folder = tmp_path_factory.mktemp("e2e-backups")
    taken = {}
    for service, url in world.system.database_urls.items():
        taken[service] = folder / f"{service}.dump"
        dump_database(url, taken[service])
    return taken


@pytest.fixture(scope="module")
def erased(world: World, exported, backups) -> dict:
    """An erasure opened by officer one (other spellings of the identifiers), approved by officer two."""
    opened = world.gdpr.ok(
        "POST",
        "/api/v1/requests",
        world.tokens["officer1"],
        {
            "type": "erase",
            "tenant": TENANT,
            "reason": "Begäran om radering",
            "subject": {
                "email": SIGNE.email.upper(),
                "phone": SIGNE.phones[3],
                "personnummer": SIGNE.personnummer.replace("-", ""),
                "username": SIGNE.uid,
            },
            "instruction": INSTRUCTION,
        },
        202,
    )
    assert opened["status"] == "previewing"
    # Four eyes: the officer who opened the erasure may not approve it.
    _approve(world, opened["id"])
    _confirm(world, opened["id"])
    return _finish(world, opened["id"])


def _approve(world: World, request_id: str) -> dict:
    """Issue 15: wait for the preview; officer one may not approve; officer two confirms the exact matches."""

    decision = exact_decision(previewed(world.gdpr, world.tokens["officer1"], request_id)["preview"])
    path = f"/api/v1/requests/{request_id}/approve"
    refused = world.gdpr.call("POST", path, world.tokens["officer1"], decision)
    assert refused.status == 403, refused.body
    return world.gdpr.ok("POST", path, world.tokens["officer2"], decision)


def _records(files: dict[str, bytes], path: str) -> list[dict]:
    return json.loads(files[path])


# --- the tests ----------------------------------------------------------------------------------------


def test_staff_log_in_through_the_directory_with_roles_from_their_groups(world):
    """R10: directory logins create the local accounts just in time; groups map to roles."""
    me = world.ids["me"]
    assert me["alice"]["source"] == me["bob"]["source"] == me["signe"]["source"] == "directory"
    assert me["alice"]["roles"] == ["staff"] and "tenant_admin" in me["bob"]["roles"]


def test_export_package_holds_the_person_from_every_service_and_their_audit_trail(world, exported):
    """R1, art. 15: one ZIP with a folder per service, JSON and CSV, checksums, and who saw or changed her data."""
    view, files = exported
    assert view["status"] == "completed"
    assert {s["service"]: s["status"] for s in view["services"]}.items() >= {
        "auth": "done",
        "orders": "done",
        "crm": "done",
        "audit": "done",
    }.items()
    manifest = json.loads(files["manifest.json"])
    assert {f["path"] for f in manifest["files"]} == set(files) - {"manifest.json"}
    for entry in manifest["files"]:
        assert hashlib.sha256(files[entry["path"]]).hexdigest() == entry["sha256"]

    account = _records(files, "auth/user_account.json")
    assert [a["email"] for a in account] == [SIGNE.email]
    assert _records(files, "auth/login_history.json")
    [individual] = _records(files, "orders/individual.json")
    assert individual["name"] == SIGNE.name and individual["personnummer"] == SIGNE.personnummer.replace("-", "")
    assert individual["allergies"] == ["nötter"]
    assert sorted(o["quantity"] for o in _records(files, "orders/order.json")) == [1, 2]
    assert "orders/order.csv" in files and "orders/inventory.json" in files
    [person] = _records(files, "crm/person.json")
    assert (person["name"], person["email"]) == (SIGNE.name, SIGNE.email)
    assert len(_records(files, "crm/case.json")) == 1
    assert len(_records(files, "crm/call.json")) == 2
    [mail] = _records(files, "crm/email.json")
    assert SIGNE.email in json.dumps(mail)
    assert len(_records(files, "crm/notice_delivery.json")) == 1

    trail = _records(files, "audit/audit_trail.json")
    individual_ref = f"orders:individual:{world.ids['individuals'][SIGNE.name]['id']}"
    # Actors by role and tenant, not by user id (issue 14): Alice is staff, Bob a tenant admin.
    seen = {(e["type"], e["actor"]["role"]) for e in trail if e["subject"] == individual_ref}
    alice = ", ".join(sorted(world.ids["me"]["alice"]["roles"]))
    bob = ", ".join(sorted(world.ids["me"]["bob"]["roles"]))
    assert {
        ("orders.individual.created", bob),
        ("orders.individual.read", alice),
        ("orders.order.placed", alice),
        ("orders.order.changed", alice),
    } <= seen
    assert not any("actor_id" in e for e in trail)
    subjects = {e["subject"].rsplit(":", 1)[0] for e in trail}
    assert {"orders:individual", "crm:person", "crm:case", "crm:call", "crm:email", "auth:user"} <= subjects

    everything = b"".join(files.values())
    assert_no_plaintext(everything, [OLOF.name, OLOF.email, *OLOF.phones, *OLOF.pnr_spellings])


def test_erasure_needs_a_second_officer_and_reports_every_services_rule(world, erased):
    """R2, R15: four-eyes approval, then every service answers what it deleted, anonymised or retained."""
    assert erased["status"] == "completed"
    me = world.ids["me"]
    assert (erased["requested_by"], erased["decided_by"]) == (me["officer1"]["id"], me["officer2"]["id"])
    results = {s["service"]: s for s in erased["services"]}
    assert all(results[name]["status"] == "done" for name in ("auth", "orders", "crm", "audit"))

    def actions(service: str) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for item in results[service]["erasure"]:
            out.setdefault(item["kind"], []).append(item)
        return out

    auth = actions("auth")
    assert (auth["user_account"][0]["action"], auth["user_account"][0]["count"]) == ("deleted", 1)
    assert auth["login_history"][0]["action"] == "anonymised" and auth["login_history"][0]["count"] >= 1
    orders = actions("orders")
    assert orders["individual"][0]["action"] == "deleted" and orders["individual"][0]["count"] == 1
    [retained] = [i for i in orders["order"] if i["action"] == "retained"]
    assert retained["count"] == 2 and "Bokföringslagen" in retained["legal_basis"] and retained["retain_until"]
    crm = actions("crm")
    assert {k: (v[0]["action"], v[0]["count"]) for k, v in crm.items() if k != "import_fingerprint"} == {
        "person": ("deleted", 1),
        "case": ("anonymised", 1),
        "call": ("anonymised", 2),
        "email": ("deleted", 1),
        "notice_delivery": ("anonymised", 1),
    }
    # The trail of her references (phase two) is kept for accountability, with its end date.
    [trail] = actions("audit")["audit_entry"]
    assert trail["action"] == "retained" and trail["count"] > 0 and trail["retain_until"]


def test_no_service_database_holds_the_erased_person_in_plaintext(world, erased):
    """R7, R16, R2: a raw dump of every service's database names her nowhere, in any spelling used."""
    for service, url in world.system.database_urls.items():
        leaked = [v for v in SIGNE.plaintext() if v.encode() in raw_dump(url)]
        assert not leaked, f"the {service} database holds {len(leaked)} of her values in plaintext"
    # The dumps are real: her retained orders are in them, by id.
    orders_dump = raw_dump(world.system.database_urls["orders"])
    assert world.ids["orders"][SIGNE.name][0]["id"].encode() in orders_dump
    # The other person is still there, and encrypted at rest too (R7).
    assert world.ids["individuals"][OLOF.name]["id"].encode() in orders_dump
    for url in world.system.database_urls.values():
        assert_no_plaintext(raw_dump(url), [OLOF.name, OLOF.email, *OLOF.phones, *OLOF.pnr_spellings])


def test_orders_needed_for_invoicing_remain_de_identified(world, erased):
    """R2 and the bookkeeping law: her orders stay, with quantities, no longer linked to her."""
    alice = world.tokens["alice"]
    individual = world.orders.call("GET", f"/api/v1/individuals/{world.ids['individuals'][SIGNE.name]['id']}", alice)
    assert individual.status == 410, individual.body
    for placed in world.ids["orders"][SIGNE.name]:
        order = world.orders.ok("GET", f"/api/v1/orders/{placed['id']}", alice)
        assert order["deidentified"] is True and order["individual_id"] is None
        # Two people in her register, fewer than RETAINED_K (5): only register and year remain (issue 14).
        assert order["quantity"] in (1, 2) and order["delivery_date"] == placed["delivery_date"][:4] + "-01-01"
        assert order["diet_variant"] is None and order["unit_id"] is None and order["delivery_point_id"] is None
    listed = world.orders.ok("GET", f"/api/v1/registers/{world.ids['register']['id']}/orders", alice)["items"]
    assert len(listed) == 3


def test_the_other_persons_data_is_intact(world, erased):
    """R15: erasing one person leaves the company, the other person and their records readable."""
    alice, support = world.tokens["alice"], world.tokens["support"]
    individual = world.orders.ok("GET", f"/api/v1/individuals/{world.ids['individuals'][OLOF.name]['id']}", alice)
    assert (individual["name"], individual["personnummer"]) == (OLOF.name, OLOF.personnummer.replace("-", ""))
    [order] = world.ids["orders"][OLOF.name]
    assert world.orders.ok("GET", f"/api/v1/orders/{order['id']}", alice)["individual_id"] == individual["id"]
    persons = world.crm.ok("GET", f"/api/v1/companies/{world.ids['company']['id']}/persons", support)["items"]
    assert [(p["name"], p["email"]) for p in persons] == [(OLOF.name, OLOF.email)]
    assert len(world.crm.ok("POST", "/api/v1/calls/search", support, {"phone": OLOF.phones[0]})["items"]) == 1
    [case] = world.crm.ok("POST", "/api/v1/cases/search", support, {"email": OLOF.email})["items"]
    assert case["caller_name"] == OLOF.name
    assert len(world.crm.ok("POST", "/api/v1/emails/search", support, {"email": OLOF.email})["items"]) == 1
    # Her records are gone from every search; the directory user alice still logs in.
    assert world.crm.ok("POST", "/api/v1/persons/search", support, {"email": SIGNE.email})["items"] == []
    assert world.crm.ok("POST", "/api/v1/emails/search", support, {"email": SIGNE.email})["items"] == []
    assert (
        world.auth.ok("POST", f"/api/v1/tenants/{TENANT}/users/search", world.tokens["admin"], {"email": SIGNE.email})
        == []
    )
    assert world.auth.login(TENANT, "alice", "alice-password-1")


def test_the_audit_chain_verifies_after_the_erasure_and_records_it(world, erased):
    """R9, R11, art. 5(2): the trail outlives the erasure, holds the erasure itself, and every chain verifies."""
    individual_ref = f"orders:individual:{world.ids['individuals'][SIGNE.name]['id']}"
    wait_until(
        lambda: (
            _audit_has(world, individual_ref, "orders.individual.erased")
            and _audit_has(world, f"crm:person:{world.ids['persons'][SIGNE.name]['id']}", "crm.person.erased")
        ),
        30,
        "the audit service to record the erasure",
    )
    verified = world.audit.ok("GET", "/api/v1/chains/verify", world.tokens["auditor"])
    assert verified["status"] == "ok" and verified["chains"]
    assert {c["chain"] for c in verified["chains"]} >= {f"tenant:{TENANT}"}
    done = world.system.cli("audit", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all verified" in done.stdout


def test_nothing_was_dead_lettered_and_no_log_names_the_person(world, erased):
    """DESIGN.md: no personal data in logs; every message of the scenario was handled, none dead-lettered."""
    dead = world.system.dead_letters()
    assert dead and not any(dead.values()), dead
    assert_no_plaintext(world.system.log(), SIGNE.plaintext() + [OLOF.name, OLOF.email, *OLOF.phones])


# --- where a database dump does not look (issue 14) -----------------------------------------------------


def _her_subjects(world: World) -> dict[str, set[str]]:
    """Her pseudonymous subject references (the data keys' subjects), per service."""
    ids = world.ids
    return {
        "orders": {f"orders:individual:{ids['individuals'][SIGNE.name]['id']}"},
        "crm": {f"crm:person:{ids['persons'][SIGNE.name]['id']}"},
        "auth": {f"auth:user:{ids['me']['signe']['id']}"},
    }


def _live_keys(session: Session, data_keys) -> set[tuple[str, str]]:
    rows = session.execute(select(data_keys.c.id, data_keys.c.subject).where(data_keys.c.wrapped.is_not(None)))
    return {(row.id, row.subject) for row in rows}


def test_a_backup_from_before_the_erasure_restored_and_replayed_holds_her_no_more(world, erased, backups):
    """R2, R16: restore every service's pre-erasure dump into a new database and run the documented restore
    step there, with the erasure log the live system wrote: none of her data keys is live any more, her rows
    are gone or emptied, her old ciphertexts read as erased, and the dump names her nowhere."""
    keyring = Keyring.from_json(Path(world.system.env["RECEPT_KEYRING_FILE"]).read_text())
    data_keys = crypto_tables(MetaData())
    subjects = _her_subjects(world)
    signe_id = world.ids["individuals"][SIGNE.name]["id"]
    for service, backup in backups.items():
        log_lines = (
            world.system.erasure_logs[service].read_text() if world.system.erasure_logs[service].exists() else ""
        )
        if service in subjects:
            # the live system logged her shred, by reference only
            assert all(subject in log_lines for subject in subjects[service]), f"{service} did not log her erasure"
        assert_no_plaintext(log_lines.encode(), SIGNE.plaintext())
        restored = create_database(f"recept_e2e_{service}_restored")
        live_engine = create_engine(world.system.database_urls[service])
        engine = create_engine(restored)
        try:
            restore_database(restored, backup)
            with Session(live_engine) as live, Session(engine) as copy:
                now_live = _live_keys(live, data_keys)
                revived = _live_keys(copy, data_keys) - now_live
                # The hole the restore step closes: the backup brings shredded data keys back to life...
                assert {subject for _id, subject in revived} >= subjects.get(service, set()), service
                if service == "orders":
                    before = copy.execute(select(individuals).where(individuals.c.id == signe_id)).one()
                    assert Vault(keyring, data_keys).decrypt(copy, "individuals", "name", before.id, before.name) == (
                        SIGNE.name
                    )
            done = world.system.cli(
                service, "replay-erasures", env={f"RECEPT_{service.upper()}_DATABASE_URL": restored}
            )
            assert done.returncode == 0, done.stderr[-2000:]
            report = json.loads(done.stdout.strip().splitlines()[-1])
            assert report["re_erased"] == len({subject for _id, subject in revived}), report
            with Session(engine) as copy:
                # ...and after it, the copy has no live key the live system has shredded.
                assert _live_keys(copy, data_keys) <= now_live, f"{service}: a shredded key is live in the copy"
                if service == "orders":
                    row = copy.execute(select(individuals).where(individuals.c.id == signe_id)).one()
                    assert row.status == "erased" and row.name is None and row.personnummer_idx is None
                    assert Vault(keyring, data_keys).decrypt(copy, "individuals", "name", before.id, before.name) is (
                        ERASED
                    )
                # both erase her account and her person tab by deleting the rows (as they did live)
                if service == "crm":
                    person_id = world.ids["persons"][SIGNE.name]["id"]
                    assert copy.execute(select(persons.c.id).where(persons.c.id == person_id)).first() is None
                if service == "auth":
                    user_id = world.ids["me"]["signe"]["id"]
                    assert copy.execute(select(users.c.id).where(users.c.id == user_id)).first() is None
            engine.dispose()
            dumped = raw_dump(restored)
            leaked = [v for v in SIGNE.plaintext() if v.encode() in dumped]
            assert not leaked, f"the restored {service} backup holds {len(leaked)} of her values in plaintext"
            # the other person came back with the backup and is untouched
            if service == "orders":
                assert world.ids["individuals"][OLOF.name]["id"].encode() in dumped
            # the restore step is repeatable and then finds nobody to erase
            again = world.system.cli(
                service, "replay-erasures", env={f"RECEPT_{service.upper()}_DATABASE_URL": restored}
            )
            assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["re_erased"] == 0
        finally:
            live_engine.dispose()
            engine.dispose()
            drop_database(restored)


def test_the_brokers_own_disk_holds_none_of_her_values(world, erased):
    """Issue 14: RabbitMQ's data directory (quorum-queue segments, WAL, message stores) holds none of her
    identifiers in clear after the export and the erasure. A canary published in clear on the system's
    vhost must be found first: it proves the scan reads the files the broker writes message bodies to."""
    directory = broker_data_dir()
    canary = f"canary-{uuid.uuid4().hex}".encode()
    bus = Bus(world.system.broker_url, "e2e-canary")
    bus.declare([Binding(GDPR, "gdpr.e2e-canary")])
    publisher = bus.publisher()
    try:
        assert publisher.publish(
            [Message(GDPR, "gdpr.e2e-canary", json.dumps({"v": canary.decode()}).encode(), str(uuid.uuid4()))]
        ) == [None]
    finally:
        publisher.close()
    wait_until(lambda: canary in found_in_files(directory, [canary]), 30, "the canary to reach the broker's disk")
    needles = [value.encode() for value in SIGNE.plaintext()]
    leaked = found_in_files(directory, needles)
    assert not leaked, f"RabbitMQ's data directory holds {len(leaked)} of her values in clear"
