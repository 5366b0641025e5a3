"""Issue 14 items 4 and 5: the diet variant and the admission period encrypted, retained orders de-identified
to k people, and every read of individuals' data in the trail (R7, R9, R16; GDPR art. 15)."""

from __future__ import annotations

import json
from datetime import date

import pytest
from sqlalchemy import select, text

from services.orders import SPEC
from services.orders.models import individuals, order_changes, orders
from services.orders.ordering import deidentify_orders_of
from services.orders.rules import generalised_date, retained_level
from shared.crypto import Keyring
from shared.db import make_engine, migrate
from tests.conftest import raw_dump
from tests.orders.test_individuals import GRETA, HARALD
from tests.orders.test_privacy import command, run
from tests.support import assert_no_plaintext, events_of, make_runtime

VARIANT = "PUREE-IDDSI4-XQZ"  # distinctive, so a raw dump can be searched for it
UNIT_VARIANT = "UNITVAR-QQ7"
ADMITTED, DISCHARGED = "2029-11-23", "2031-07-19"


def test_the_diet_variant_and_the_admission_period_are_ciphertext_at_rest(world):
    """R7, R16: a raw dump of either back end holds neither the variant nor the stay's dates."""
    person = world.individual(valid_from=ADMITTED, valid_to=DISCHARGED)
    assert (person["valid_from"], person["valid_to"]) == (ADMITTED, DISCHARGED)
    mine = world.place(individual_id=person["id"], diet_variant=VARIANT)
    unit_order = world.place(unit_id=world.unit["id"], diet_variant=UNIT_VARIANT)
    assert mine["diet_variant"] == VARIANT and unit_order["diet_variant"] == UNIT_VARIANT
    # Reading decrypts them again, for the API and for orders' own rules.
    assert world.ok("GET", f"/orders/{mine['id']}", world.staff)["diet_variant"] == VARIANT
    assert world.ok("GET", f"/individuals/{person['id']}", world.staff)["valid_to"] == DISCHARGED
    listed = world.ok("GET", f"/registers/{world.register['id']}/individuals", world.staff)["items"]
    assert [(p["valid_from"], p["valid_to"]) for p in listed] == [(ADMITTED, DISCHARGED)]
    changed = world.ok("PATCH", f"/orders/{mine['id']}", world.staff, {"diet_variant": "GF2"})
    assert changed["diet_variant"] == "GF2"
    world.ok("PATCH", f"/individuals/{person['id']}", world.admin, {"valid_from": "2030-04-02"})
    assert_no_plaintext(
        raw_dump(world.database_url), [VARIANT, UNIT_VARIANT, "GF2", ADMITTED, DISCHARGED, "2030-04-02"]
    )
    with world.runtime.db.transaction() as s:
        row = s.execute(select(orders.c.diet_variant).where(orders.c.id == mine["id"])).one()
        stay = s.execute(select(individuals.c.valid_from).where(individuals.c.id == person["id"])).one()
        # Bound to its row and column, under the individual's key (as every other personal field).
        assert world.runtime.vault.decrypt(s, "orders", "diet_variant", mine["id"], row.diet_variant) == "GF2"
        assert (
            world.runtime.vault.decrypt(s, "individuals", "valid_from", person["id"], stay.valid_from) == "2030-04-02"
        )
    # The encrypted admission period still decides what can be ordered (R12).
    too_early = world.call("POST", "/orders", world.staff, world.order_body(individual_id=person["id"]))
    assert too_early.status_code == 409
    discharged = world.individual(valid_from="2030-01-01")
    world.ok("POST", f"/individuals/{discharged['id']}/discharge", world.admin, {"date": "2030-03-11"})
    assert (
        world.call("POST", "/orders", world.staff, world.order_body(individual_id=discharged["id"])).status_code == 409
    )


def test_the_retained_level_is_the_finest_that_describes_k_people():
    assert retained_level(5, 9, 5) == "unit_month"
    assert retained_level(4, 5, 5) == "register_month"
    assert retained_level(1, 4, 5) == "register_year"
    assert generalised_date(date(2030, 3, 12), "unit_month") == date(2030, 3, 1)
    assert generalised_date(date(2030, 3, 12), "register_year") == date(2030, 1, 1)


def test_an_erasure_generalises_retained_orders_until_they_describe_k_people(world):
    """Issue 14: unit + date + variant of a kept order must not single the erased person out (RETAINED_K)."""
    greta = world.individual(**GRETA)
    harald = world.individual(**HARALD)
    kept = world.place(individual_id=greta["id"], diet_variant=VARIANT, delivery_point_id=world.point["id"])
    world.ok("PATCH", f"/orders/{kept['id']}", world.staff, {"quantity": 2})
    world.place(individual_id=harald["id"])
    reply = run(world, command("erase", GRETA["personnummer"]))
    # The reply keeps the bookkeeping legal basis for the retained order.
    assert {
        "kind": "order",
        "action": "retained",
        "count": 1,
        "legal_basis": "Bokföringslagen (1999:1078) 7 kap. 2 §",
        "retain_until": "2037-12-31",
    } in reply["erasure"]
    with world.runtime.db.transaction() as s:
        row = s.execute(select(orders).where(orders.c.id == kept["id"])).one()
        history = s.execute(select(order_changes).where(order_changes.c.order_id == kept["id"])).all()
    # Two people in the unit that month, k = 5: neither the unit nor the month singles her out.
    assert (row.individual_id, row.deidentified, row.diet_variant, row.delivery_point_id) == (None, True, None, None)
    assert (row.unit_id, row.register_id, row.delivery_date) == (None, world.register["id"], date(2030, 1, 1))
    assert row.placed_at.year == 2030 and (row.placed_at.month, row.placed_at.day) == (1, 1)
    assert (row.quantity, row.article_id, row.meal) == (2, world.lunch["id"], "lunch")
    assert history == []  # exact change times and values would narrow the row down again
    assert_no_plaintext(raw_dump(world.database_url), [VARIANT])


def test_a_unit_with_k_people_keeps_its_unit_and_the_month(world):
    """With enough people in the unit that month, the kept order keeps the unit and the month (k = 2 here)."""
    greta, harald = world.individual(**GRETA), world.individual(**HARALD)
    mine = world.place(individual_id=greta["id"], diet_variant=VARIANT)
    world.place(individual_id=harald["id"], delivery_date="2030-03-28")
    with world.runtime.db.transaction() as s:
        kept, deleted = deidentify_orders_of(s, greta["id"], date(2030, 3, 10), k=2)
        row = s.execute(select(orders).where(orders.c.id == mine["id"])).one()
    assert (kept, deleted) == ([date(2030, 3, 12)], 0)
    assert (row.unit_id, row.delivery_date, row.diet_variant) == (world.unit["id"], date(2030, 3, 1), None)


def _reads(world, since: int) -> list[dict]:
    return [e for e in events_of(world.runtime)[since:] if e["type"] == "orders.individuals.read"]


def test_listing_searching_and_reading_orders_are_each_one_read_event_naming_the_subjects(world):
    """GDPR art. 15: who has seen my data.  One event per request, references only, never values."""
    greta, harald = world.individual(**GRETA), world.individual(**HARALD)
    order = world.place(individual_id=greta["id"], diet_variant=VARIANT)
    world.place(unit_id=world.unit["id"])
    refs = {p["id"]: f"orders:individual:{p['id']}" for p in (greta, harald)}

    before = len(events_of(world.runtime))
    world.ok("GET", f"/registers/{world.register['id']}/individuals", world.staff)
    [listed] = _reads(world, before)
    assert {**listed["data"], "subjects": sorted(listed["data"]["subjects"])} == {
        "register_id": world.register["id"],
        "purpose": "list_individuals",
        "count": 2,
        "subjects": sorted(refs.values()),
    }
    assert listed["actor"] == {"id": "staff-all", "tenant": "t1", "kind": "user", "roles": ["staff"]}
    assert listed["subject"] is None and listed["tenant"] == "t1"

    before = len(events_of(world.runtime))
    world.ok("POST", "/individuals/search", world.staff, {"name": HARALD["name"]})
    [searched] = _reads(world, before)
    assert (searched["data"]["purpose"], searched["data"]["subjects"]) == ("search_individuals", [refs[harald["id"]]])

    before = len(events_of(world.runtime))
    world.ok("GET", f"/registers/{world.register['id']}/orders", world.staff)
    world.ok("GET", f"/orders/{order['id']}", world.staff)
    listed_orders, read_order = _reads(world, before)
    assert (listed_orders["data"]["purpose"], listed_orders["data"]["subjects"]) == ("list_orders", [refs[greta["id"]]])
    assert (read_order["data"]["purpose"], read_order["data"]["count"]) == ("read_order", 1)

    # Nobody read, nothing recorded: a search without a match and an empty page.
    before = len(events_of(world.runtime))
    world.ok("POST", "/individuals/search", world.staff, {"name": "Ingen Alls"})
    assert _reads(world, before) == []
    assert_no_plaintext(
        json.dumps(events_of(world.runtime)).encode(), [GRETA["name"], HARALD["name"], VARIANT, *GRETA["allergies"]]
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database_url(request, tmp_path):
    """A database at no revision yet (the orders tests' shared PostgreSQL one is already at head)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return request.getfixturevalue("make_postgres_db")()


def test_the_migration_encrypts_existing_variants_and_stays(fresh_database_url, monkeypatch, clock):
    """Rows written before revision orders_0003 are encrypted by it, on SQLite and PostgreSQL."""
    database_url = fresh_database_url
    keyring = Keyring.generate()
    monkeypatch.setenv("RECEPT_ORDERS_KEYRING", keyring.to_json())
    migrate("orders", database_url, SPEC.migrations, revision="orders_0002")
    engine = make_engine(database_url)
    now = clock.current
    try:
        with engine.begin() as c:
            c.execute(
                text(
                    "INSERT INTO units (id, tenant, name, kind, created_at) VALUES "
                    "('u1', 't1', 'Avd 1', 'care_unit', :now)"
                ),
                {"now": now},
            )
            c.execute(
                text(
                    "INSERT INTO registers (id, tenant, name, deadline_minutes, deadline_days_before, timezone, "
                    "created_at, updated_at) VALUES ('r1', 't1', 'R', 720, 1, 'Europe/Stockholm', :now, :now)"
                ),
                {"now": now},
            )
            c.execute(
                text("INSERT INTO assortment_lists (id, tenant, name, created_at) VALUES ('l1', 't1', 'L', :now)"),
                {"now": now},
            )
            c.execute(
                text(
                    "INSERT INTO articles (id, tenant, list_id, code, name, kind, active, created_at) VALUES "
                    "('a1', 't1', 'l1', 'LUNCH', 'Lunch', 'meal', :yes, :now)"
                ),
                {"now": now, "yes": True},
            )
            c.execute(
                text(
                    "INSERT INTO individuals (id, tenant, register_id, unit_id, status, valid_from, valid_to, "
                    "created_at, updated_at) VALUES ('i1', 't1', 'r1', 'u1', 'active', :start, :end, :now, :now)"
                ),
                {"start": date.fromisoformat(ADMITTED), "end": date.fromisoformat(DISCHARGED), "now": now},
            )
            for order_id, individual, variant, deidentified in (
                ("o1", "i1", VARIANT, False),
                ("o2", None, UNIT_VARIANT, False),
                ("o3", None, "OLDVAR-ERASED", True),
            ):
                c.execute(
                    text(
                        "INSERT INTO orders (id, tenant, register_id, unit_id, individual_id, article_id, "
                        "delivery_date, meal, quantity, diet_variant, status, placed_at, placed_by, updated_at, "
                        "deidentified) VALUES (:id, 't1', 'r1', 'u1', :ind, 'a1', :day, 'lunch', 1, :v, "
                        "'placed', :now, 'u', :now, :d)"
                    ),
                    {
                        "id": order_id,
                        "ind": individual,
                        "day": date(2030, 3, 12),
                        "v": variant,
                        "now": now,
                        "d": deidentified,
                    },
                )
    finally:
        engine.dispose()
    runtime = make_runtime(SPEC, database_url, keyring=keyring, clock=clock)  # migrates to head
    try:
        assert_no_plaintext(raw_dump(database_url), [VARIANT, UNIT_VARIANT, "OLDVAR-ERASED", ADMITTED, DISCHARGED])
        vault = runtime.vault
        with runtime.db.transaction() as s:
            rows = {r.id: r for r in s.execute(select(orders))}
            person = s.execute(select(individuals)).one()
            assert vault.decrypt(s, "orders", "diet_variant", "o1", rows["o1"].diet_variant) == VARIANT
            assert vault.decrypt(s, "orders", "diet_variant", "o2", rows["o2"].diet_variant) == UNIT_VARIANT
            assert vault.decrypt(s, "individuals", "valid_from", "i1", person.valid_from) == ADMITTED
            assert vault.decrypt(s, "individuals", "valid_to", "i1", person.valid_to) == DISCHARGED
            # Retained before this revision: generalised at the coarsest level.
            old = rows["o3"]
            assert (old.diet_variant, old.unit_id, old.delivery_date) == (None, None, date(2030, 3, 1))
    finally:
        runtime.db.dispose()
