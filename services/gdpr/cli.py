"""``./recept gdpr <command>``: operator commands of the gdpr service.

./recept gdpr participants          the services the gdpr service knows, their phase and last announcement
./recept gdpr inventory [--csv]     the data inventory (record of processing activities) on stdout
./recept gdpr records SLUG [--csv]  one customer's records of processing (art. 30(2)): its counts and agreement
./recept gdpr sweep                 one round of re-sends, silence timeouts, package expiry and shredding
./recept gdpr replay-erasures       after restoring a backup: erase again everyone the erasure log lists
./recept gdpr decrypt-package FILE OUT   open a downloaded export (.rcpt) with its passphrase (asked for,
                                    or RECEPT_PACKAGE_PASSPHRASE); writes the ZIP to OUT
./recept gdpr verify-certificate FILE [--key PEM]   check an erasure certificate offline against the
                                    public key in PEM (GET /api/v1/certificates/key), or without --key
                                    against this service's keyring; --audit-key PEM also checks the anchor
                                    (`./recept audit public-key`); exit 0 valid, 1 invalid, 2 unreadable
"""

from __future__ import annotations

import argparse
import json
import sys


def _runtime():
    from . import SPEC

    config = SPEC.config()
    SPEC.migrate(config)
    return SPEC.runtime(config)


def _decrypt(path_in: str, path_out: str) -> int:
    """No runtime and no keyring: the person's passphrase is all it takes (services/gdpr/handover.py)."""
    import getpass
    import os

    from shared.errors import Invalid

    from .handover import decrypt_command

    passphrase = os.environ.get("RECEPT_PACKAGE_PASSPHRASE") or getpass.getpass("Passphrase: ")
    try:
        decrypt_command(path_in, path_out, passphrase)
    except (Invalid, OSError) as exc:
        print(f"decrypt-package: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path_out}")
    return 0


def _verify_certificate(path: str, key_path: str | None, audit_key_path: str | None = None) -> int:
    """Offline: the certificate file and a public key (or the configured keyring); no database, no network."""
    from pathlib import Path

    from shared.errors import Invalid

    from . import certificate

    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"verify-certificate: cannot read {path}: {type(exc).__name__}", file=sys.stderr)
        return 2
    if key_path:
        try:
            keys = certificate.keys_of(certificate.load_public_pem(Path(key_path).read_bytes()))
        except OSError as exc:
            print(f"verify-certificate: cannot read {key_path}: {type(exc).__name__}", file=sys.stderr)
            return 2
        except Invalid as exc:
            print(f"verify-certificate: {key_path}: {exc}", file=sys.stderr)
            return 2
    else:
        from shared.crypto.keyring import Keyring, KeyringError

        from . import SPEC

        try:
            keys = certificate.CertificateKeys.from_keyring(Keyring.from_config(SPEC.config())).public_keys
        except KeyringError as exc:
            print(f"verify-certificate: no --key and no keyring: {exc}", file=sys.stderr)
            return 2
    reason = certificate.problem(document, keys)
    if reason is None and audit_key_path:
        from shared.checkpoints import checkpoint_signature_problem

        try:
            audit_key = certificate.load_public_pem(Path(audit_key_path).read_bytes())
        except OSError as exc:
            print(f"verify-certificate: cannot read {audit_key_path}: {type(exc).__name__}", file=sys.stderr)
            return 2
        except Invalid as exc:
            print(f"verify-certificate: {audit_key_path}: {exc}", file=sys.stderr)
            return 2
        anchor = document["certificate"].get("anchor")
        if not isinstance(anchor, dict):
            reason = "no anchor to check"
        else:
            found = checkpoint_signature_problem(anchor, audit_key)
            reason = None if found is None else f"anchor: {found} (not the audit's checkpoint)"
    if reason is not None:
        print(f"INVALID: {reason}", file=sys.stderr)
        return 1
    body = document["certificate"]
    anchor = body.get("anchor") or {}
    print(
        f"VALID: erasure {body.get('request_id')} of tenant {body.get('tenant')}, {body.get('status')} "
        f"at {body.get('completed_at')}, signed by key {document['signature']['key_id']}, "
        f"anchored to audit checkpoint {anchor.get('chain')}#{anchor.get('seq')}"
        + (" (its signature checked with the audit's key)" if audit_key_path else "")
    )
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="./recept gdpr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("participants", help="list the participating services")
    inventory = sub.add_parser("inventory", help="print the data inventory")
    inventory.add_argument("--csv", action="store_true", help="as CSV instead of JSON")
    records = sub.add_parser("records", help="print one customer tenant's records of processing")
    records.add_argument("slug", help="the tenant's slug")
    records.add_argument("--csv", action="store_true", help="as CSV instead of JSON")
    sub.add_parser("sweep", help="run one round of the background loop now")
    decrypt = sub.add_parser("decrypt-package", help="decrypt a downloaded export package to its ZIP")
    decrypt.add_argument("file", help="the downloaded .rcpt file")
    decrypt.add_argument("out", help="where to write the ZIP")
    verify = sub.add_parser("verify-certificate", help="verify an erasure certificate offline")
    verify.add_argument("file", help="the certificate (JSON, as GET /api/v1/requests/{id}/certificate answers)")
    verify.add_argument("--key", help="the public key (PEM); default: derived from this service's keyring")
    verify.add_argument(
        "--audit-key", help="also check the anchor's checkpoint signature with the audit's public key (PEM)"
    )
    from shared.erasure_replay import add_commands

    from . import SPEC

    add_commands(sub, SPEC)
    args = parser.parse_args(argv)
    if hasattr(args, "func"):
        return args.func(args)
    if args.command == "decrypt-package":
        return _decrypt(args.file, args.out)
    if args.command == "verify-certificate":
        return _verify_certificate(args.file, args.key, args.audit_key)
    runtime = _runtime()
    parts = runtime.domain  # parts.Parts, from bootstrap.build
    try:
        if args.command == "sweep":
            print(json.dumps(parts.sweeper.sweep()))
            return 0
        if args.command == "records":
            from . import tenants

            with runtime.db.transaction() as s:
                row = tenants.find(s, args.slug)
                if row is None:
                    print(f"records: no such tenant (auth has not announced {args.slug!r})", file=sys.stderr)
                    return 1
                document = parts.inventory.records(s, args.slug, tenants.agreement_of(row))
            sys.stdout.write(parts.inventory.as_csv(document) if args.csv else json.dumps(document, indent=2) + "\n")
            return 0
        with runtime.db.transaction() as s:
            document = parts.inventory.document(s)
        if args.command == "participants":
            for service in document["services"]:
                stale = " (stale: not expected by new requests)" if service["stale"] else ""
                print(f"{service['service']:<12} {service['phase']:<12} last seen {service['last_seen']}{stale}")
            return 0
        sys.stdout.write(parts.inventory.as_csv(document) if args.csv else json.dumps(document, indent=2) + "\n")
        return 0
    finally:
        runtime.db.dispose()
