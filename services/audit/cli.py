"""``./recept audit ...``: verify the chains, sign checkpoints now, purge by retention, show the public key.

./recept audit verify [--chain CHAIN] [--json]   exit 0 when every chain verifies, 1 when one is broken
./recept audit checkpoint                        sign the head of every chain with new entries now
./recept audit purge                             delete entries older than RETENTION_DAYS
./recept audit public-key                        the checkpoint signing key's public half and key id
./recept audit replay-erasures                   after restoring a database backup: erase again (docs/crypto.md)
"""

from __future__ import annotations

import argparse
import json
import sys

from sqlalchemy.exc import SQLAlchemyError

from shared.config import ConfigError
from shared.db import Database
from shared.erasure_replay import add_commands
from shared.outbox import Outbox

from . import SPEC
from .checkpoints import public_pem
from .ledger import Ledger

# The commands every service has (shared.erasure_replay.add_commands), as opposed to the ledger's own.
SHARED_COMMANDS = frozenset({"replay-erasures"})


def _ledger(config) -> Ledger:
    ledger = Ledger(Database(config["DATABASE_URL"]), Outbox(SPEC.tables.outbox, SPEC.name), config)
    ledger.load_keys()  # a key that cannot be read is a configuration error before any work
    return ledger


def _print_report(report: dict, out) -> None:
    head = report["head"] or {}
    line = (
        f"{report['chain']}: {report['status']}, {report['entries_verified']} entries verified "
        f"(from {report['first_seq']}, head {head.get('seq')})"
    )
    checkpoint = report["last_checkpoint"]
    if checkpoint:
        line += f", last checkpoint at {checkpoint['seq']} by key {checkpoint['key_id']}"
    print(line, file=out)
    bad = report["first_bad"]
    if bad:
        print(f"  first bad entry: {bad['seq']} ({bad['problem']}): {bad['detail']}", file=out)
    for problem in report["checkpoint_problems"]:
        print(
            f"  checkpoint {problem['seq']} from {problem['source']}: {problem['problem']} (key {problem['key_id']})",
            file=out,
        )


def cmd_verify(ledger: Ledger, args) -> int:
    reports = ledger.verify(chain=args.chain)
    if args.chain and not reports:
        print(f"audit: no chain named {args.chain}", file=sys.stderr)
        return 2
    ok = all(r.ok for r in reports)
    if args.json:
        print(json.dumps({"status": "ok" if ok else "broken", "chains": [r.as_dict() for r in reports]}, indent=2))
    else:
        for report in reports:
            _print_report(report.as_dict(), sys.stdout)
        print(f"audit: {len(reports)} chain(s), {'all verified' if ok else 'BROKEN'}")
    return 0 if ok else 1


def cmd_checkpoint(ledger: Ledger, _args) -> int:
    written = ledger.checkpoint(force=True)
    for record in written:
        print(f"{record['chain']}: checkpoint at {record['seq']}")
    print(f"audit: {len(written)} checkpoint(s) signed by key {ledger.signer.key_id}")
    return 0


def cmd_purge(ledger: Ledger, _args) -> int:
    refused = 0
    for result in ledger.purge():
        if "refused" in result:
            refused += 1
            print(f"{result['chain']}: NOT purged, the chain is broken at {result['refused']['seq']}")
        else:
            print(
                f"{result['chain']}: {result['purged']} entries purged, chain now starts after {result['anchor_seq']}"
            )
    return 1 if refused else 0


def cmd_public_key(ledger: Ledger, _args) -> int:
    print(f"# key id {ledger.signer.key_id}")
    print(public_pem(ledger.signer.public_key), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./recept audit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="walk the chains and name the first bad entry")
    verify.add_argument("--chain", help="only this chain (tenant:<slug>, vendor or system)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=cmd_verify)
    sub.add_parser("checkpoint", help="sign every chain's head now").set_defaults(func=cmd_checkpoint)
    sub.add_parser("purge", help="apply the retention period now").set_defaults(func=cmd_purge)
    sub.add_parser("public-key", help="print the signing key's public half").set_defaults(func=cmd_public_key)
    add_commands(sub, SPEC)
    args = parser.parse_args(argv)
    if args.command in SHARED_COMMANDS:
        return int(args.func(args))  # shared.erasure_replay's: they build their own runtime
    try:
        config = SPEC.config()
        ledger = _ledger(config)
    except ConfigError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    try:
        return args.func(ledger, args)
    except SQLAlchemyError as exc:
        # The driver's message may quote values; the type is enough to act on.
        print(
            f"audit: the database failed ({type(exc).__name__}); is it reachable and migrated "
            f"(./recept migrate audit)?",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # noqa: BLE001 - a verdict, not a traceback (the message may quote stored values)
        print(
            f"audit: {args.command} failed ({type(exc).__name__}); nothing was changed by the failure", file=sys.stderr
        )
        return 2
    finally:
        ledger.db.dispose()
