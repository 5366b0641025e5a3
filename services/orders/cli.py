"""``./recept orders COMMAND``: operator commands of the orders service."""

from __future__ import annotations

import argparse
import json
import sys

from shared.erasure_replay import add_commands

from . import SPEC


def purge_expired(_args) -> int:
    from shared.clock import utcnow
    from shared.db import Database
    from shared.outbox import Outbox

    from .ordering import purge_expired_orders

    config = SPEC.config()
    SPEC.migrate(config)
    # Only the database is needed: the events go to the outbox, the worker's relay publishes them.
    db = Database(config["DATABASE_URL"])
    try:
        with db.transaction() as session:
            count = purge_expired_orders(session, Outbox(SPEC.tables.outbox, SPEC.name), utcnow().date())
    finally:
        db.dispose()
    print(f"orders: deleted {count} order(s) past the bookkeeping retention period")
    return 0


def inventory(_args) -> int:
    from .privacy import INVENTORY

    print(json.dumps(INVENTORY.as_dict(), indent=2, ensure_ascii=False))
    return 0


def indexed_columns(tables) -> dict:
    """The blind-index columns of the orders database, for ``reindex`` (docs/crypto.md)."""
    from shared.crypto.reindex import IndexedColumn
    from shared.normalise import name_key, normalise_name

    from .individuals import birth_date_key

    # personnummer is stored in its normal form; names as entered, indexed normalised
    return {
        "individuals": [
            IndexedColumn("name_idx", "name", "name", normalise_name),
            IndexedColumn("personnummer_idx", "personnummer", "personnummer"),
            # Issue 15: filled here for individuals created before the upgrade.
            IndexedColumn("name_key_idx", "name", "name_key", name_key),
            IndexedColumn("birth_date_idx", "date_of_birth", "birth_date", birth_date_key),
        ]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./recept orders", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("purge-expired", help="delete orders older than the 7-year bookkeeping period").set_defaults(
        func=purge_expired
    )
    sub.add_parser("inventory", help="print this service's data inventory (GDPR art. 30) as JSON").set_defaults(
        func=inventory
    )
    add_commands(sub, SPEC, reindex=indexed_columns)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return args.func(args)
