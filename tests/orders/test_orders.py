"""Orders (R9, R11, R12): placing, changing and cancelling before the register's deadline, one event per change."""

from __future__ import annotations

from sqlalchemy import func, select

from services.orders.models import order_changes, orders
from tests.support import assert_no_plaintext, events_of, outbox_messages


def count(world, table) -> int:
    with world.runtime.db.transaction() as s:
        return s.scalar(select(func.count()).select_from(table))


def test_placing_an_order_emits_one_event_with_the_actor_and_no_personal_value(world):
    """R9, R11: who placed which order, when; the individual by reference only."""
    person = world.individual(allergies=["selleri"], room="12")
    before = len(events_of(world.runtime))
    order = world.place(individual_id=person["id"], quantity=2, diet_variant="GF")
    new = events_of(world.runtime)[before:]
    assert [e["type"] for e in new] == ["orders.order.placed"]
    event = new[0]
    assert event["actor"] == {"id": "staff-all", "tenant": "t1", "kind": "user", "roles": ["staff"]}
    assert event["tenant"] == "t1"
    assert event["subject"] == f"orders:individual:{person['id']}"
    assert event["resource"] == {"type": "order", "id": order["id"]}
    assert event["data"] == {
        "order_id": order["id"],
        "register_id": world.register["id"],
        "unit_id": world.unit["id"],
        "individual_id": person["id"],
        "article_id": world.lunch["id"],
        "delivery_date": "2030-03-12",
        "meal": "lunch",
        "quantity": 2,
    }
    assert order["unit_id"] == world.unit["id"]  # taken from the individual
    assert order["status"] == "placed" and order["placed_by"] == "staff-all"


def test_an_order_for_a_unit_needs_no_individual(world):
    order = world.place(unit_id=world.unit["id"], quantity=12, meal="dinner", delivery_point_id=world.point["id"])
    assert order["individual_id"] is None and order["quantity"] == 12
    assert events_of(world.runtime, "orders.order.placed")[-1]["subject"] is None


def test_changing_an_order_logs_field_names_and_non_personal_values_only(world):
    """R9, R11: which fields changed; before/after only for non-personal fields such as quantity."""
    person = world.individual()
    order = world.place(individual_id=person["id"])
    changed = world.ok(
        "PATCH",
        f"/orders/{order['id']}",
        world.staff,
        {"quantity": 3, "delivery_date": "2030-03-13", "diet_variant": "LAKT", "meal": "lunch"},
    )
    assert changed["quantity"] == 3 and changed["delivery_date"] == "2030-03-13"
    events = events_of(world.runtime, "orders.order.changed")
    assert len(events) == 1
    assert events[0]["actor"]["id"] == "staff-all"
    assert events[0]["data"]["fields"] == ["quantity", "diet_variant", "delivery_date"]
    assert events[0]["data"]["changes"] == [
        {"field": "quantity", "before": 1, "after": 3},
        {"field": "delivery_date", "before": "2030-03-12", "after": "2030-03-13"},
    ]
    assert b"LAKT" not in b"".join(str(e).encode() for e in events)
    # A change that changes nothing is no change: no event.
    world.ok("PATCH", f"/orders/{order['id']}", world.staff, {"quantity": 3})
    assert len(events_of(world.runtime, "orders.order.changed")) == 1


def test_order_history_answers_from_the_service_records(world):
    """R9, R11: GET history lists placed, changed and cancelled with actor and time."""
    order = world.place(unit_id=world.unit["id"], quantity=4)
    changer = world.user("changer", ["change"])
    world.clock.advance(minutes=5)
    world.ok("PATCH", f"/orders/{order['id']}", changer, {"quantity": 6, "article_id": world.soup["id"]})
    world.clock.advance(minutes=5)
    world.ok("POST", f"/orders/{order['id']}/cancel", changer)
    history = world.ok("GET", f"/orders/{order['id']}/history", world.staff)["items"]
    assert [(h["action"], h["actor"], h["at"]) for h in history] == [
        ("placed", "staff-all", "2030-03-10T08:00:00.000000Z"),
        ("changed", "changer", "2030-03-10T08:05:00.000000Z"),
        ("cancelled", "changer", "2030-03-10T08:10:00.000000Z"),
    ]
    assert {"field": "quantity", "after": 4} in history[0]["changes"]
    assert {"field": "article_id", "after": world.lunch["id"]} in history[0]["changes"]
    assert {"field": "quantity", "before": 4, "after": 6} in history[1]["changes"]
    assert len(events_of(world.runtime, "orders.order.cancelled")) == 1
    assert count(world, order_changes) == 2


def test_the_deadline_refuses_placing_changing_and_cancelling_after_it(world):
    """Each register has a deadline (12:00 local time, one day before delivery)."""
    order = world.place(unit_id=world.unit["id"], delivery_date="2030-03-11")
    # 2030-03-10 11:59 in Stockholm (UTC+1) is still before the deadline for the 11th ...
    world.clock.set("2030-03-10T10:59:00+00:00")
    world.ok("PATCH", f"/orders/{order['id']}", world.staff, {"quantity": 2})
    # ... 12:00 is not.
    world.clock.set("2030-03-10T11:00:00+00:00")
    orders_before, events_before = count(world, orders), len(outbox_messages(world.runtime))
    for method, path, body in (
        ("POST", "/orders", world.order_body(unit_id=world.unit["id"], delivery_date="2030-03-11")),
        ("PATCH", f"/orders/{order['id']}", {"quantity": 3}),
        ("POST", f"/orders/{order['id']}/cancel", None),
    ):
        response = world.call(method, path, world.staff, body)
        assert response.status_code == 409, (method, path)
        problem = response.get_json()
        assert problem["type"].endswith("/order-deadline-passed")
        assert "2030-03-11" in problem["detail"] and "2030-03-10T12:00+01:00" in problem["detail"]
    assert count(world, orders) == orders_before
    assert len(outbox_messages(world.runtime)) == events_before
    # Moving an open order onto a day whose deadline passed is refused too.
    later = world.place(unit_id=world.unit["id"], delivery_date="2030-03-14")
    response = world.call("PATCH", f"/orders/{later['id']}", world.staff, {"delivery_date": "2030-03-11"})
    assert response.status_code == 409
    assert world.ok("GET", f"/orders/{later['id']}", world.staff)["delivery_date"] == "2030-03-14"


def test_a_registers_deadline_is_its_own_and_can_be_changed(world):
    """The administrator sets the deadline: here 08:00 two days before delivery."""
    world.ok(
        "PATCH", f"/registers/{world.register['id']}", world.admin, {"deadline": {"time": "08:00", "days_before": 2}}
    )
    change = events_of(world.runtime, "orders.register.changed")[-1]["data"]
    assert change["changes"] == [
        {"field": "deadline_time", "before": "12:00", "after": "08:00"},
        {"field": "deadline_days_before", "before": 1, "after": 2},
    ]
    # Now 09:00 on the 10th: the 12th closed at 08:00 today, the 13th is open.
    assert world.call("POST", "/orders", world.staff, world.order_body(unit_id=world.unit["id"])).status_code == 409
    world.place(unit_id=world.unit["id"], delivery_date="2030-03-13")


def test_no_orders_for_a_discharged_individual(world):
    person = world.individual(valid_from="2030-03-01")
    world.ok("POST", f"/individuals/{person['id']}/discharge", world.admin, {"date": "2030-03-12"})
    world.place(individual_id=person["id"], delivery_date="2030-03-12")  # the day they leave
    response = world.call(
        "POST", "/orders", world.staff, world.order_body(individual_id=person["id"], delivery_date="2030-03-13")
    )
    assert response.status_code == 409 and "discharged" in response.get_json()["detail"]
    assert len(events_of(world.runtime, "orders.individual.discharged")) == 1
    assert world.call("POST", f"/individuals/{person['id']}/discharge", world.admin, {}).status_code == 409


def test_no_orders_before_admission(world):
    person = world.individual(valid_from="2030-03-20")
    response = world.call("POST", "/orders", world.staff, world.order_body(individual_id=person["id"]))
    assert response.status_code == 409


def test_a_cancelled_order_cannot_be_changed_or_cancelled_again(world):
    order = world.place(unit_id=world.unit["id"])
    world.ok("POST", f"/orders/{order['id']}/cancel", world.staff)
    assert world.call("PATCH", f"/orders/{order['id']}", world.staff, {"quantity": 2}).status_code == 409
    assert world.call("POST", f"/orders/{order['id']}/cancel", world.staff).status_code == 409
    assert len(events_of(world.runtime, "orders.order.cancelled")) == 1


def test_invalid_orders_are_refused_and_nothing_is_written(world):
    """Every endpoint validates input; a refused order leaves no row and no event."""
    person = world.individual()
    other_list = world.ok(
        "POST", "/assortment-lists", world.admin, {"name": "Avdelning 7", "unit_id": world.other_unit["id"]}, 201
    )
    world.ok(
        "POST",
        f"/assortment-lists/{other_list['id']}/grants",
        world.admin,
        {"principal": {"type": "user", "id": "staff-all"}, "right": "order"},
        201,
    )
    foreign = world.ok(
        "POST",
        f"/assortment-lists/{other_list['id']}/articles",
        world.admin,
        {"code": "L7", "name": "Lunch", "kind": "meal"},
        201,
    )
    withdrawn = world.ok(
        "POST",
        f"/assortment-lists/{world.list['id']}/articles",
        world.admin,
        {"code": "OLD", "name": "Utgått", "kind": "extra", "active": False},
        201,
    )
    orders_before, events_before = count(world, orders), len(outbox_messages(world.runtime))
    cases = [
        ({"quantity": 0}, "quantity"),
        ({"quantity": "2"}, "quantity"),
        ({"meal": "brunch"}, "meal"),
        ({"delivery_date": "2030-02-30"}, "delivery_date"),
        ({"article_id": "not-an-id"}, "article_id"),
        ({"article_id": "00000000-0000-4000-8000-000000000000"}, "article_id"),
        ({"article_id": foreign["id"]}, "article_id"),
        ({"article_id": withdrawn["id"]}, "article_id"),
        ({"surprise": 1}, "surprise"),
        ({"individual_id": "00000000-0000-4000-8000-000000000000"}, "individual_id"),
        ({"unit_id": world.other_unit["id"]}, "unit_id"),
        ({"delivery_point_id": "00000000-0000-4000-8000-000000000000"}, "delivery_point_id"),
    ]
    for fields, field in cases:
        response = world.call(
            "POST", "/orders", world.staff, world.order_body(**{"individual_id": person["id"], **fields})
        )
        assert response.status_code == 422, fields
        assert response.mimetype == "application/problem+json"
        assert field in [e["field"] for e in response.get_json()["errors"]], fields
    no_unit = world.call("POST", "/orders", world.staff, world.order_body())
    assert no_unit.status_code == 422
    not_json = world.client.post("/api/v1/orders", data="quantity=1", headers=world.staff)
    assert not_json.status_code == 415
    assert count(world, orders) == orders_before
    assert len(outbox_messages(world.runtime)) == events_before


def test_orders_are_listed_per_register_and_day(world):
    world.place(unit_id=world.unit["id"], delivery_date="2030-03-12")
    world.place(unit_id=world.unit["id"], delivery_date="2030-03-13", meal="breakfast")
    listed = world.ok("GET", f"/registers/{world.register['id']}/orders?delivery_date=2030-03-13", world.staff)
    assert [(o["delivery_date"], o["meal"]) for o in listed["items"]] == [("2030-03-13", "breakfast")]
    paged = world.ok("GET", f"/registers/{world.register['id']}/orders?limit=1", world.staff)
    assert len(paged["items"]) == 1 and paged["next_offset"] == 1
    bad = world.call("GET", f"/registers/{world.register['id']}/orders?delivery_date=tomorrow", world.staff)
    assert bad.status_code == 422


def test_order_events_hold_no_personal_values(world):
    """DESIGN.md: events carry ids, field names and counts, never a person's data."""
    secret = {
        "name": "Birgitta Åkesson",
        "room": "Rum 4711",
        "notes": "Svårt att svälja",
        "allergies": ["skaldjur"],
        "diets": ["proteinrik"],
    }
    person = world.individual(**secret)
    order = world.place(individual_id=person["id"])
    world.ok("PATCH", f"/orders/{order['id']}", world.staff, {"quantity": 2})
    world.ok("PATCH", f"/individuals/{person['id']}", world.admin, {"notes": "Kan svälja", "room": "Rum 8"})
    world.ok("GET", f"/individuals/{person['id']}", world.staff)
    blob = str(outbox_messages(world.runtime)).encode()
    # The whole room ("Rum 4711"), not its digits alone: "4711" turns up in random UUIDs now and then.
    assert_no_plaintext(blob, ["Birgitta", "Åkesson", "Rum 4711", "svälja", "skaldjur", "proteinrik", "Rum 8"])
