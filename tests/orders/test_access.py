"""Access to registers and assortment lists (R8, R12): default deny, each right allows exactly its operations,
for users and directory groups alike; another tenant's data does not exist for the caller."""

from __future__ import annotations

import itertools

import pytest

from services.orders.rules import RIGHTS
from tests.orders.world import personnummer
from tests.support import events_of

_codes = itertools.count(1)


def operations(w):
    """(operation, rights that allow it, call) for every operation guarded by a register or list right."""
    person = w.individual(diets=["laktosfri"])
    reg, lst = w.register["id"], w.list["id"]

    def order_id():
        return w.place(individual_id=person["id"])["id"]

    def new_person():
        return w.individual(name="Nils Holm")["id"]

    return [
        ("read an individual with health data", {"view"}, lambda h: w.call("GET", f"/individuals/{person['id']}", h)),
        ("list a register's individuals", {"view"}, lambda h: w.call("GET", f"/registers/{reg}/individuals", h)),
        (
            "search individuals",
            {"view"},
            lambda h: w.call("POST", "/individuals/search", h, {"register_id": reg, "name": "Greta Lindqvist"}),
        ),
        ("list a register's orders", {"view"}, lambda h: w.call("GET", f"/registers/{reg}/orders", h)),
        ("read an order", {"view"}, lambda h: w.call("GET", f"/orders/{order_id()}", h)),
        ("read an order's history", {"view"}, lambda h: w.call("GET", f"/orders/{order_id()}/history", h)),
        ("read an assortment list", {"view", "administer"}, lambda h: w.call("GET", f"/assortment-lists/{lst}", h)),
        ("place an order", {"order"}, lambda h: w.call("POST", "/orders", h, w.order_body(individual_id=person["id"]))),
        ("change an order", {"change"}, lambda h: w.call("PATCH", f"/orders/{order_id()}", h, {"quantity": 3})),
        ("cancel an order", {"change"}, lambda h: w.call("POST", f"/orders/{order_id()}/cancel", h)),
        (
            "add an individual",
            {"administer"},
            lambda h: w.call("POST", f"/registers/{reg}/individuals", h, {"name": "Ivar Berg"}),
        ),
        (
            "change an individual",
            {"administer"},
            lambda h: w.call("PATCH", f"/individuals/{person['id']}", h, {"room": "14"}),
        ),
        (
            "discharge an individual",
            {"administer"},
            lambda h: w.call("POST", f"/individuals/{new_person()}/discharge", h, {}),
        ),
        ("list a register's grants", {"administer"}, lambda h: w.call("GET", f"/registers/{reg}/grants", h)),
        (
            "grant a right on a register",
            {"administer"},
            lambda h: w.call(
                "POST",
                f"/registers/{reg}/grants",
                h,
                {"principal": {"type": "user", "id": f"u{next(_codes)}"}, "right": "view"},
            ),
        ),
        (
            "change a register's deadline",
            {"administer"},
            lambda h: w.call("PATCH", f"/registers/{reg}", h, {"deadline": {"time": f"{10 + next(_codes) % 3}:00"}}),
        ),
        (
            "add an article to a list",
            {"administer"},
            lambda h: w.call(
                "POST",
                f"/assortment-lists/{lst}/articles",
                h,
                {"code": f"X{next(_codes)}", "name": "Extra", "kind": "extra"},
            ),
        ),
    ]


@pytest.mark.parametrize("holder", ["user", "group"])
def test_each_right_allows_exactly_its_operations(world, holder):
    """R8, R12: the access matrix, every right x every operation, granted to a user or to a directory group."""
    ops = operations(world)
    for right in RIGHTS:
        if holder == "user":
            headers = world.user(f"holder-of-{right}", [right])
        else:
            headers = world.group_member(f"care-{right}", [right], sub=f"member-of-{right}")
        for name, allowed, call in ops:
            status = call(headers).status_code
            if right in allowed:
                assert status in (200, 201), f"{right} should allow: {name} (got {status})"
            else:
                assert status == 403, f"{right} should not allow: {name} (got {status})"


def test_without_a_grant_everything_is_denied(world):
    """R8: default deny, also for a tenant's own staff."""
    nobody = world.headers("nobody")
    assert world.ok("GET", "/registers", nobody) == {"items": []}
    assert world.ok("GET", "/assortment-lists", nobody) == {"items": []}
    for name, _allowed, call in operations(world):
        assert call(nobody).status_code == 403, name


def test_ordering_needs_the_order_right_on_the_register_and_on_the_articles_list(world):
    """R12: an order is placed from an assortment list; both rights are needed."""
    person = world.individual()
    register_only = world.user("register-only", ["order"], assortment_list=False)
    list_only = world.user("list-only", ["order"], register=False)
    for headers in (register_only, list_only):
        response = world.call("POST", "/orders", headers, world.order_body(individual_id=person["id"]))
        assert response.status_code == 403
    order = world.place(individual_id=person["id"])
    change_register_only = world.user("change-register-only", ["change"], assortment_list=False)
    assert world.call("PATCH", f"/orders/{order['id']}", change_register_only, {"quantity": 2}).status_code == 403


def test_tenant_admin_grants_rights_but_reads_health_data_only_with_view(world):
    """R8: the customer's own administrators decide; administering is not reading (R16)."""
    person = world.individual(allergies=["jordnötter"])
    assert world.call("GET", f"/individuals/{person['id']}", world.admin).status_code == 403
    world.grant("user", "admin-1", "view", assortment_list=False)
    assert world.ok("GET", f"/individuals/{person['id']}", world.admin)["allergies"] == ["jordnötter"]


def test_staff_cannot_change_settings_registers_or_grants(world):
    """R8: only tenant administrators and holders of 'administer' manage access."""
    viewer = world.user("viewer", ["view"])
    grant = {"principal": {"type": "user", "id": "viewer"}, "right": "order"}
    assert world.call("PUT", "/settings", viewer, {"personnummer_enabled": False}).status_code == 403
    assert world.call("POST", "/registers", viewer, {"name": "Mine"}).status_code == 403
    assert world.call("POST", "/units", viewer, {"name": "Mine", "kind": "other"}).status_code == 403
    assert world.call("POST", f"/registers/{world.register['id']}/grants", viewer, grant).status_code == 403
    assert world.call("POST", f"/assortment-lists/{world.list['id']}/grants", viewer, grant).status_code == 403


def test_a_register_administrator_grants_on_that_register(world):
    """R8: the 'administer' right delegates access management for one register."""
    manager = world.user("manager", ["administer"], assortment_list=False)
    body = {"principal": {"type": "group", "id": "kitchen"}, "right": "view"}
    world.ok("POST", f"/registers/{world.register['id']}/grants", manager, body, 201)
    assert world.call("POST", f"/assortment-lists/{world.list['id']}/grants", manager, body).status_code == 403


def test_grant_and_revoke_each_emit_one_event_and_revocation_takes_effect(world):
    """R8, R9: access changes are logged, with the administrator as actor."""
    before = len(events_of(world.runtime, "orders.access.granted"))
    body = {"principal": {"type": "user", "id": "temp"}, "right": "view"}
    grant = world.ok("POST", f"/registers/{world.register['id']}/grants", world.admin, body, 201)
    again = world.ok("POST", f"/registers/{world.register['id']}/grants", world.admin, body, 200)
    assert again["id"] == grant["id"]
    granted = events_of(world.runtime, "orders.access.granted")[before:]
    assert len(granted) == 1
    assert granted[0]["actor"] == {"id": "admin-1", "tenant": "t1", "kind": "user"}
    assert granted[0]["data"] == {
        "grant_id": grant["id"],
        "resource_type": "register",
        "resource_id": world.register["id"],
        "principal_type": "user",
        "principal_id": "temp",
        "right": "view",
    }
    temp = world.headers("temp")
    assert world.call("GET", f"/registers/{world.register['id']}/orders", temp).status_code == 200
    world.ok("DELETE", f"/registers/{world.register['id']}/grants/{grant['id']}", world.admin, status=204)
    assert world.call("GET", f"/registers/{world.register['id']}/orders", temp).status_code == 403
    revoked = events_of(world.runtime, "orders.access.revoked")
    assert len(revoked) == 1 and revoked[0]["data"]["grant_id"] == grant["id"]
    assert (
        world.call("DELETE", f"/registers/{world.register['id']}/grants/{grant['id']}", world.admin).status_code == 404
    )


def test_another_tenants_data_does_not_exist(world):
    """R8, multi-tenancy: every path into tenant t1 answers 404 to tenant t2, even for the same user id."""
    pnr = personnummer("19400101", "123")
    person = world.individual(personnummer=pnr)
    order = world.place(individual_id=person["id"])
    reg, lst = world.register["id"], world.list["id"]
    outsider = world.headers("staff-all", roles=("tenant_admin", "staff"), tenant="t2")
    world.ok("POST", "/registers", outsider, {"name": "t2 register"}, 201)
    attempts = [
        ("GET", f"/registers/{reg}", None),
        ("PATCH", f"/registers/{reg}", {"name": "x"}),
        ("GET", f"/registers/{reg}/individuals", None),
        ("GET", f"/registers/{reg}/orders", None),
        ("GET", f"/registers/{reg}/grants", None),
        ("POST", f"/registers/{reg}/grants", {"principal": {"type": "user", "id": "x"}, "right": "view"}),
        ("POST", f"/registers/{reg}/individuals", {"name": "x"}),
        ("GET", f"/individuals/{person['id']}", None),
        ("PATCH", f"/individuals/{person['id']}", {"room": "1"}),
        ("POST", f"/individuals/{person['id']}/discharge", {}),
        ("POST", "/individuals/search", {"register_id": reg, "name": "Greta Lindqvist"}),
        ("GET", f"/orders/{order['id']}", None),
        ("PATCH", f"/orders/{order['id']}", {"quantity": 5}),
        ("POST", f"/orders/{order['id']}/cancel", None),
        ("GET", f"/orders/{order['id']}/history", None),
        ("POST", "/orders", world.order_body(individual_id=person["id"])),
        ("GET", f"/assortment-lists/{lst}", None),
        ("GET", f"/assortment-lists/{lst}/grants", None),
        ("POST", f"/assortment-lists/{lst}/articles", {"code": "Z", "name": "z", "kind": "extra"}),
        ("GET", f"/units/{world.unit['id']}", None),
    ]
    for method, path, body in attempts:
        response = world.call(method, path, outsider, body)
        assert response.status_code == 404, (method, path, response.status_code)
        assert response.mimetype == "application/problem+json"
    # t2's search by t1's personnummer finds nothing; its lists show none of t1's resources.
    assert world.ok("POST", "/individuals/search", outsider, {"personnummer": pnr}) == {"items": []}
    assert [r["name"] for r in world.ok("GET", "/registers", outsider)["items"]] == ["t2 register"]
    assert world.ok("GET", "/units", outsider) == {"items": []}
    # Nothing of t1 changed.
    assert world.ok("GET", f"/orders/{order['id']}", world.staff)["quantity"] == 1


def test_a_token_without_a_tenant_sees_nothing(world):
    """Vendor staff tokens carry no tenant: the orders register is the customers' data (processor role)."""
    vendor = world.mint.headers(sub="vendor-1", tenant=None, roles=["vendor_admin", "tenant_admin"])
    assert world.call("GET", f"/registers/{world.register['id']}", vendor).status_code == 404
    assert world.call("GET", "/registers", vendor).status_code == 404


def test_requests_without_a_valid_token_are_unauthorized(world):
    response = world.client.get(f"/api/v1/registers/{world.register['id']}")
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    forged = {"Authorization": "Bearer " + world.mint.token(tenant="t1")[:-4] + "AAAA"}
    assert world.client.get("/api/v1/registers", headers=forged).status_code == 401
