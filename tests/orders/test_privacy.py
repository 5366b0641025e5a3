"""GDPR participation (R1, R2, R3, R5): inventory, export and erasure of an individual, over the gdpr protocol."""

from __future__ import annotations

import json
import threading
import uuid

from sqlalchemy import select

from services.orders import SPEC
from services.orders.models import individuals, orders
from services.orders.privacy import INVENTORY
from shared.bus import GDPR, Binding, Bus, Message, Outcome
from shared.crypto import ERASED
from shared.privacy import announcement, handle_command
from tests.gdpr.sealing import confirm_exact, opened_reply, sealed_command
from tests.orders.test_individuals import GRETA, HARALD
from tests.orders.world import World
from tests.support import TokenMint, events_of, make_runtime


def command(action: str, pnr: str, tenant: str = "t1") -> dict:
    return {
        "request_id": str(uuid.uuid4()),
        "command_id": str(uuid.uuid4()),
        "action": action,
        "phase": "resolve",
        "tenant": tenant,
        "subject": {"personnummer": pnr, "email": "greta@example.org"},
    }


def gdpr_messages(runtime) -> list[dict]:
    """The outbox's messages to the gdpr service, opened (transient ones are sealed at rest)."""
    table, cipher = runtime.tables.outbox, getattr(runtime.outbox, "cipher", None)
    with runtime.db.transaction() as s:
        rows = list(
            s.execute(select(table.c.message_id, table.c.payload).where(table.c.exchange == GDPR).order_by(table.c.id))
        )
    return [json.loads(cipher.open(r.message_id, r.payload) if cipher else r.payload) for r in rows]


def run(world, message: dict) -> dict:
    """Handle one gdpr command as the worker does, and return the reply it put in the outbox."""
    if message["phase"] == "resolve" and "confirmed" not in message:
        message = confirm_exact(world.runtime, message)  # approved after the preview (issue 15)
    with world.runtime.db.transaction() as s:
        handle_command(world.runtime, s, sealed_command(world.runtime, message))  # sealed as the gdpr service does
    replies = [m for m in gdpr_messages(world.runtime) if m["command_id"] == message["command_id"]]
    assert len(replies) == 1
    return opened_reply(world.runtime, replies[0])


def with_history(world):
    """Greta with orders delivered in 2021 (past retention), 2023 (kept until 2030-12-31) and 2030; Harald too."""
    clock = world.clock
    now = clock.current
    greta, harald = world.individual(**GRETA), world.individual(**HARALD)
    placed = {}
    for day in ("2021-06-01", "2023-11-15"):
        clock.set(f"{day[:4]}-01-02T08:00:00+00:00")
        placed[day] = world.place(individual_id=greta["id"], delivery_date=day, quantity=3)
    clock.current = now
    placed["2030-03-12"] = world.place(individual_id=greta["id"], quantity=2)
    kept_for_harald = world.place(individual_id=harald["id"])
    return greta, harald, placed, kept_for_harald


def test_the_inventory_declares_categories_roles_and_special_categories():
    """R3, R5: the vendor is processor for the tenant; diets and allergies are special category (R16)."""
    declared = INVENTORY.as_dict()
    kinds = {c["kind"]: c for c in declared["categories"]}
    assert set(kinds) == {"individual", "health_data", "order", "access_grant"}
    assert all(c["role"] == "processor" and c["controller"] == "tenant (customer)" for c in kinds.values())
    assert kinds["health_data"]["special_category"] is True
    assert {f["name"] for f in kinds["health_data"]["fields"] if f["special"]} >= {"diets", "allergies"}
    assert all(
        f["encrypted"]
        for c in ("individual", "health_data")
        for f in kinds[c]["fields"]
        if f["name"] in ("name", "personnummer", "date_of_birth", "room", "bed", "notes", "diets", "allergies")
    )
    assert "Bokföringslagen" in kinds["order"]["legal_basis"] and "7 years" in kinds["order"]["retention"]


def test_counts_are_live(world):
    with_history(world)
    with world.runtime.db.transaction() as s:
        counts = world.runtime.participant.counts(s)
    assert counts["individual"] == 2 and counts["health_data"] == 2 and counts["order"] == 4


def test_counts_per_tenant_are_each_customers_own(world, client, mint, runtime, database_url, clock):
    """Issue 15 (art. 30(2), R3, R5): a customer's records of processing count its own data only; the
    announcement carries them per tenant slug, numbers only."""
    with_history(world)
    other = World(client, mint, runtime, database_url, clock, tenant="t2")
    other.individual(name="Harald Berg")
    with runtime.db.transaction() as s:
        per_tenant = runtime.participant.tenant_counts(s)
        total = runtime.participant.counts(s)
    t1 = per_tenant["t1"]
    assert (t1["individual"], t1["health_data"], t1["order"]) == (2, 2, 4) and t1["access_grant"] > 0
    assert per_tenant["t2"]["individual"] == 1 and "order" not in per_tenant["t2"]
    for kind, n in total.items():
        assert sum(kinds.get(kind, 0) for kinds in per_tenant.values()) == n
    announced = announcement(runtime)
    assert announced["tenant_counts"] == per_tenant
    wire = json.dumps(announced, ensure_ascii=False)
    assert all(name not in wire for name in (GRETA["name"], HARALD["name"], "Harald Berg"))


def test_export_holds_everything_about_the_individual_decrypted_and_their_orders(world):
    """R1: the individual's record and orders; nobody else's."""
    greta, harald, placed, _ = with_history(world)
    reply = run(world, command("export", GRETA["personnummer"]))
    assert reply["status"] == "done"
    assert reply["references"] == [f"orders:individual:{greta['id']}"]
    person = reply["export"]["individual"][0]
    assert person["name"] == GRETA["name"] and person["allergies"] == GRETA["allergies"]
    assert person["personnummer"] == GRETA["personnummer"].replace("-", "")
    assert person["notes"] == GRETA["notes"] and person["texture_level"] == 4
    assert sorted(o["id"] for o in reply["export"]["order"]) == sorted(o["id"] for o in placed.values())
    assert "Harald" not in json.dumps(reply)
    # Another tenant's request does not find t1's people.
    assert run(world, command("export", GRETA["personnummer"], tenant="t2"))["references"] == []


def test_erase_shreds_the_individual_keeps_invoicing_quantities_and_leaves_others_alone(world):
    """R2: crypto-shred, delete health data, keep orders inside bookkeeping retention de-identified."""
    greta, harald, placed, harald_order = with_history(world)
    with world.runtime.db.transaction() as s:
        before = s.execute(select(individuals).where(individuals.c.id == greta["id"])).one()
    reply = run(world, command("erase", GRETA["personnummer"]))
    assert reply["status"] == "done"
    assert reply["erasure"] == [
        {"kind": "individual", "action": "deleted", "count": 1},
        {"kind": "health_data", "action": "deleted", "count": 1},
        {
            "kind": "order",
            "action": "retained",
            "count": 1,
            "legal_basis": "Bokföringslagen (1999:1078) 7 kap. 2 §",
            "retain_until": "2030-12-31",
        },
        {
            "kind": "order",
            "action": "retained",
            "count": 1,
            "legal_basis": "Bokföringslagen (1999:1078) 7 kap. 2 §",
            "retain_until": "2037-12-31",
        },
        {"kind": "order", "action": "deleted", "count": 1},
    ]
    vault = world.runtime.vault
    with world.runtime.db.transaction() as s:
        # Every copy of her ciphertexts (a backup, say) is now unreadable ...
        for field in (
            "name",
            "personnummer",
            "date_of_birth",
            "room",
            "bed",
            "diets",
            "allergies",
            "texture_level",
            "notes",
        ):
            assert vault.decrypt(s, "individuals", field, greta["id"], getattr(before, field)) is ERASED
        # ... and the row itself holds nothing personal any more.
        tombstone = s.execute(select(individuals).where(individuals.c.id == greta["id"])).one()
        assert tombstone.status == "erased"
        assert all(
            getattr(tombstone, f) is None
            for f in (
                "name",
                "personnummer",
                "diets",
                "allergies",
                "notes",
                "name_idx",
                "personnummer_idx",
                "valid_from",
            )
        )
        kept = {r.id: r for r in s.execute(select(orders).where(orders.c.id.in_([o["id"] for o in placed.values()])))}
    assert set(kept) == {placed["2023-11-15"]["id"], placed["2030-03-12"]["id"]}
    assert [
        (r.quantity, r.individual_id, r.deidentified)
        for r in (kept[placed["2023-11-15"]["id"]], kept[placed["2030-03-12"]["id"]])
    ] == [(3, None, True), (2, None, True)]
    # Harald is untouched.
    assert world.ok("GET", f"/individuals/{harald['id']}", world.staff)["allergies"] == HARALD["allergies"]
    assert world.ok("GET", f"/orders/{harald_order['id']}", world.staff)["individual_id"] == harald["id"]
    # Greta is gone for the API: no reads, no orders, no search hits.
    assert world.call("GET", f"/individuals/{greta['id']}", world.staff).status_code == 410
    assert (
        world.call(
            "POST", "/orders", world.staff, world.order_body(individual_id=greta["id"], delivery_date="2030-03-14")
        ).status_code
        == 409
    )
    assert world.ok("POST", "/individuals/search", world.staff, {"personnummer": GRETA["personnummer"]}) == {
        "items": []
    }
    erased = events_of(world.runtime, "orders.individual.erased")
    assert len(erased) == 1 and erased[0]["data"]["orders_retained"] == 2 and erased[0]["data"]["orders_deleted"] == 1
    assert erased[0]["actor"]["kind"] == "service"
    # The same request again does nothing more.
    again = run(world, command("erase", GRETA["personnummer"]))
    assert again["references"] == [] and again["erasure"][0] == {"kind": "individual", "action": "deleted", "count": 0}
    assert len(events_of(world.runtime, "orders.individual.erased")) == 1


def test_retention_purge_deletes_orders_past_the_bookkeeping_period(world):
    """R2: orders delivered more than 7 years before the end of their fiscal year are deleted."""
    greta, _harald, placed, _ = with_history(world)
    from services.orders.ordering import purge_expired_orders

    with world.runtime.db.transaction() as s:
        assert purge_expired_orders(s, world.runtime.outbox, world.clock.current.date()) == 1
    assert world.call("GET", f"/orders/{placed['2021-06-01']['id']}", world.staff).status_code == 404
    world.ok("GET", f"/orders/{placed['2023-11-15']['id']}", world.staff)
    purged = events_of(world.runtime, "orders.retention.purged")
    assert [e["data"] for e in purged] == [{"orders_deleted": 1, "delivered_before": "2023-01-01"}]


def test_erase_command_over_rabbitmq_is_answered_once(postgres_url, rabbit_url, clock):
    """R2 end to end on the real broker: command in, erasure and reply out through the outbox, once."""
    mint = TokenMint()
    runtime = make_runtime(SPEC, postgres_url, broker_url=rabbit_url, mint=mint, clock=clock, ANNOUNCE_INTERVAL=3600)
    try:
        world = World(SPEC.create_app(runtime=runtime).test_client(), mint, runtime, postgres_url, clock)
        greta = world.individual(**GRETA)
        gdpr = Bus(rabbit_url, "gdpr")
        gdpr.declare([Binding(GDPR, "gdpr.reply.*"), Binding(GDPR, "gdpr.announce.*")])
        runtime.declare()
        message = confirm_exact(runtime, command("erase", GRETA["personnummer"]))
        publisher = gdpr.publisher()
        try:
            body = json.dumps(sealed_command(runtime, message)).encode()
            # Sent twice, as an at-least-once bus may deliver it: the inbox makes it one erasure.
            assert publisher.publish([Message(GDPR, "gdpr.command.orders", body, message["command_id"])] * 2) == [
                None,
                None,
            ]
        finally:
            publisher.close()
        stop, got = threading.Event(), []

        def collect(batch):
            for delivery in batch:
                if delivery.routing_key == "gdpr.reply.orders":
                    got.append(opened_reply(runtime, json.loads(delivery.body)))
            if got:
                stop.set()
            return [Outcome.ACK] * len(batch)

        threads = runtime.start_worker_threads(stop)
        gdpr.consume(collect, stop)
        for thread in threads:
            thread.join(timeout=15)
        assert len(got) == 1 and got[0]["command_id"] == message["command_id"]
        assert got[0]["references"] == [f"orders:individual:{greta['id']}"]
        assert got[0]["erasure"][0] == {"kind": "individual", "action": "deleted", "count": 1}
        assert len(events_of(runtime, "orders.individual.erased")) == 1
    finally:
        runtime.db.dispose()


# --- issue 15: residents known by name and birth date; preview, confirmed refs -----------------------

GUN = {"name": "Gun-Britt Lindqvist", "date_of_birth": "1938-04-07"}


def care_command(phase: str, request_id: str, subject: dict, action: str = "erase", confirmed=()) -> dict:
    return {
        "request_id": request_id,
        "command_id": str(uuid.uuid4()),
        "action": action,
        "phase": phase,
        "tenant": "t1",
        "subject": subject,
        "confirmed": list(confirmed),
    }


def _found(reply: dict) -> dict[str, str]:
    """Candidate card label -> match."""
    return {c["card"]["label"]: c["match"] for c in reply["candidates"]}


def test_a_preview_finds_residents_by_name_and_birth_date_exactly_or_nearly_and_changes_nothing(world):
    """Exact: the same normalised name and birth date.  Near: the name's parts in another order, the
    same name born another day, the same birthday sharing a part of the name; nothing else."""
    her = world.individual(**GUN)
    world.place(individual_id=her["id"])
    world.individual(name="Lindqvist Gun-Britt", date_of_birth="1938-04-07")  # register order
    world.individual(name="Gun-Britt Lindqvist", date_of_birth="1941-11-02")  # the neighbour
    world.individual(name="Gun Åberg", date_of_birth="1938-04-07")  # same day, one name shared
    world.individual(name="Harald Öberg", date_of_birth="1938-04-07")  # same day, nothing shared
    world.individual(name="Gunnel Lindkvist", date_of_birth="1950-01-01")
    request_id = str(uuid.uuid4())
    subject = {"name": "gun - britt lindqvist", "birth_date": "1938-04-07"}
    reply = run(world, care_command("preview", request_id, subject))
    assert reply["status"] == "done" and reply["references"] == [] and reply["export"] is None
    assert _found(reply) == {
        "individual, register Avdelning 3 patienter, unit Avdelning 3, born 1938, initials G.-B. L., 1 order": "exact",
        "individual, register Avdelning 3 patienter, unit Avdelning 3, born 1938, initials L. G.-B., 0 orders": "near",
        "individual, register Avdelning 3 patienter, unit Avdelning 3, born 1941, initials G.-B. L., 0 orders": "near",
        "individual, register Avdelning 3 patienter, unit Avdelning 3, born 1938, initials G. Å., 0 orders": "near",
    }
    assert "Lindqvist" not in json.dumps(reply["candidates"]) and "04-07" not in json.dumps(reply["candidates"])
    assert [e["type"] for e in events_of(world.runtime) if e["type"].startswith("orders.individual.erased")] == []
    # Another unit than hers given: she is only a near match then.
    elsewhere = run(world, care_command("preview", request_id, {**subject, "unit": "avdelning 7"}))
    assert "exact" not in _found(elsewhere).values() and len(elsewhere["candidates"]) == 4


def test_only_a_confirmed_resident_is_erased_and_not_once_her_record_changed_since_the_preview(world):
    """A ref is bound to the row's state: an order placed after the preview makes it stale."""
    her = world.individual(**GUN)
    neighbour = world.individual(name="Gun-Britt Lindqvist", date_of_birth="1941-11-02")
    request_id = str(uuid.uuid4())
    subject = {"name": "Gun-Britt Lindqvist", "birth_date": "1938-04-07"}
    preview = run(world, care_command("preview", request_id, subject))
    refs = {c["match"]: c["ref"] for c in preview["candidates"]}
    world.place(individual_id=her["id"])
    stale = run(world, care_command("resolve", request_id, subject, confirmed=[refs["exact"]]))
    assert stale["stale"] == 1 and stale["references"] == []
    assert world.ok("GET", f"/individuals/{her['id']}", world.staff)["name"] == "Gun-Britt Lindqvist"
    fresh = run(world, care_command("preview", request_id, subject))
    exact = next(c["ref"] for c in fresh["candidates"] if c["match"] == "exact")
    done = run(world, care_command("resolve", request_id, subject, confirmed=[exact]))
    assert done["stale"] == 0 and {"kind": "individual", "action": "deleted", "count": 1} in done["erasure"]
    assert world.call("GET", f"/individuals/{her['id']}", world.staff).status_code == 410
    assert world.ok("GET", f"/individuals/{neighbour['id']}", world.staff)["name"] == "Gun-Britt Lindqvist"


def test_residents_created_before_the_name_indexes_are_found_and_reindex_fills_them(world):
    """The migration adds empty index columns; a request still finds older rows (decrypting the
    unindexed ones), and ./recept orders reindex writes the values the service itself writes."""
    from services.orders.cli import indexed_columns
    from shared.crypto.reindex import reindex_table
    from shared.erasure_replay import blind_index_of

    her = world.individual(**GUN)
    with world.runtime.db.transaction() as s:
        written = s.execute(
            select(individuals.c.name_key_idx, individuals.c.birth_date_idx).where(individuals.c.id == her["id"])
        ).one()
        assert None not in written
        s.execute(individuals.update().values(name_key_idx=None, birth_date_idx=None))
    subject = {"name": "Gun-Britt Lindqvist", "birth_date": "1938-04-07"}
    reply = run(world, care_command("preview", str(uuid.uuid4()), subject))
    assert [c["match"] for c in reply["candidates"]] == ["exact"]
    rt = world.runtime
    with rt.db.transaction() as s:
        changed = reindex_table(s, rt.vault, blind_index_of(rt), individuals, indexed_columns(None)["individuals"])
        assert changed == 1
        again = s.execute(
            select(individuals.c.name_key_idx, individuals.c.birth_date_idx).where(individuals.c.id == her["id"])
        ).one()
    assert tuple(again) == tuple(written)
