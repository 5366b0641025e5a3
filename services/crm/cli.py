"""The crm service's commands: ``./recept crm import-calls FILE.csv``, ``./recept crm ingest-mail PATH --company ID``.

Both call the same domain functions as the HTTP api, act as the system actor, and
print a JSON report (counts and per-line problems, never a personal value).  Exit
status: 0 all good, 1 some rows or messages were rejected, 2 the command could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.erasure_replay import add_commands
from shared.errors import DomainError

from . import SPEC


def _runtime():
    return SPEC.runtime()


def _fail(message: str) -> int:
    print(f"recept crm: {message}", file=sys.stderr)
    return 2


def import_calls_command(args) -> int:
    from .calls import import_calls
    from .domain import SYSTEM

    path = Path(args.file)
    if not path.is_file():
        return _fail("the call-log file does not exist")
    runtime = _runtime()
    try:
        crm = runtime.domain
        with runtime.db.transaction() as s:
            report = import_calls(crm, s, SYSTEM, path.read_bytes(), "cli")
    finally:
        runtime.db.dispose()
    print(json.dumps(report, indent=2))
    return 1 if report["rejected"] else 0


def ingest_mail_command(args) -> int:
    from .domain import SYSTEM
    from .mail import ingest, mailbox_messages

    runtime = _runtime()
    counts = {"ingested": 0, "duplicates": 0, "rejected": 0}
    problems = []
    try:
        crm = runtime.domain
        with runtime.db.transaction() as s:
            crm.company(s, args.company)
        kind, messages = mailbox_messages(Path(args.path))
        for number, raw in enumerate(messages, start=1):
            try:
                # One transaction per message: a bad message is reported and the rest go in.
                with runtime.db.transaction() as s:
                    _email_id, duplicate = ingest(crm, s, SYSTEM, args.company, raw, kind)
                counts["duplicates" if duplicate else "ingested"] += 1
            except DomainError as exc:
                counts["rejected"] += 1
                problems.append({"message": number, "problem": exc.detail})
    finally:
        runtime.db.dispose()
    print(json.dumps({"source": kind, **counts, "errors": problems}, indent=2))
    return 1 if counts["rejected"] else 0


def deliver_notices_command(_args) -> int:
    from .notices import deliver_pending

    runtime = _runtime()
    try:
        outcome = deliver_pending(runtime.domain)
    finally:
        runtime.db.dispose()
    print(json.dumps(outcome, indent=2))
    return 0


def indexed_columns(tables) -> dict:
    """The blind-index columns of the crm database, for ``reindex`` (docs/crypto.md)."""
    from shared.crypto.reindex import IndexedColumn
    from shared.normalise import normalise_name

    # e-mails and phone numbers are stored in their normal forms; names as entered
    return {
        "persons": [
            IndexedColumn("name_idx", "name", "name", normalise_name),
            IndexedColumn("email_idx", "email", "email"),
            IndexedColumn("phone_idx", "phone", "phone"),
        ],
        "cases": [
            IndexedColumn("caller_phone_idx", "caller_phone", "phone"),
            IndexedColumn("caller_name_idx", "caller_name", "name", normalise_name),
            IndexedColumn("caller_email_idx", "caller_email", "email"),
        ],
        "calls": [IndexedColumn("number_idx", "number", "phone")],
        "email_addresses": [IndexedColumn("address_idx", "address", "email")],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./recept crm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    calls = sub.add_parser("import-calls", help="import the phone operator's call log (CSV)")
    calls.add_argument("file", metavar="FILE.csv")
    calls.set_defaults(func=import_calls_command)
    ingest = sub.add_parser("ingest-mail", help="store every message of a Maildir or an mbox as company documents")
    ingest.add_argument("path", metavar="PATH", help="a Maildir directory (cur/, new/) or an mbox file")
    ingest.add_argument("--company", required=True, metavar="ID", help="the company the e-mails belong to")
    ingest.set_defaults(func=ingest_mail_command)
    deliver = sub.add_parser("deliver-notices", help="send due pending change-notice deliveries now")
    deliver.set_defaults(func=deliver_notices_command)
    add_commands(sub, SPEC, reindex=indexed_columns)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DomainError as exc:
        return _fail(exc.detail)
