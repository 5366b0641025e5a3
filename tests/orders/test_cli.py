"""``./recept orders ...``: the retention purge and the inventory, as an operator runs them."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

from sqlalchemy import insert, select

from services.orders import SPEC
from services.orders.cli import main
from services.orders.models import articles, assortment_lists, orders, registers, units
from tests.support import events_of, make_runtime


def seed_orders(runtime, days: list[date]) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    with runtime.db.transaction() as s:
        s.execute(insert(units).values(id="u", tenant="t1", name="Avd", kind="other", created_at=now))
        s.execute(
            insert(registers).values(
                id="r",
                tenant="t1",
                name="R",
                deadline_minutes=720,
                deadline_days_before=1,
                timezone="Europe/Stockholm",
                created_at=now,
                updated_at=now,
            )
        )
        s.execute(insert(assortment_lists).values(id="l", tenant="t1", name="L", unit_id=None, created_at=now))
        s.execute(
            insert(articles).values(
                id="a", tenant="t1", list_id="l", code="A", name="A", kind="meal", active=True, created_at=now
            )
        )
        for n, day in enumerate(days):
            s.execute(
                insert(orders).values(
                    id=f"o{n}",
                    tenant="t1",
                    register_id="r",
                    unit_id="u",
                    article_id="a",
                    delivery_date=day,
                    meal="lunch",
                    quantity=1,
                    status="placed",
                    placed_at=now,
                    placed_by="x",
                    updated_at=now,
                    deidentified=False,
                )
            )


def test_purge_expired_deletes_only_orders_past_the_bookkeeping_period(database_url, monkeypatch, capsys):
    """R2: `./recept orders purge-expired` keeps seven full fiscal years after the delivery year."""
    runtime = make_runtime(SPEC, database_url)
    this_year = date.today().year
    try:
        seed_orders(runtime, [date(this_year - 8, 12, 31), date(this_year - 7, 1, 1), date(this_year, 1, 1)])
        monkeypatch.setenv("RECEPT_ORDERS_DATABASE_URL", database_url)
        assert main(["purge-expired"]) == 0
        assert "deleted 1 order(s)" in capsys.readouterr().out
        with runtime.db.transaction() as s:
            assert sorted(s.scalars(select(orders.c.id))) == ["o1", "o2"]
        assert main(["purge-expired"]) == 0
        assert len(events_of(runtime, "orders.retention.purged")) == 1
    finally:
        runtime.db.dispose()


def test_inventory_command_prints_the_declared_inventory(capsys):
    """R3: the data inventory is readable by operators without a running system."""
    assert main(["inventory"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["service"] == "orders"
    assert {c["kind"] for c in printed["categories"]} == {"individual", "health_data", "order", "access_grant"}
