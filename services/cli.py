"""``./recept`` after bootstrap: up, migrate, keys, and each service's own commands.

./recept up [--port 8080] [--broker amqp://...]   run the whole system
./recept migrate [SERVICE...]                     run migrations only
./recept keys [--rotate FILE]                     print a new keyring (or rotate one in place, 0600)
./recept keys rewrap [SERVICE...]                 re-wrap data keys under the primary key after a rotation
./recept bench [NAME...] [--smoke]                run benchmarks against in-run baselines
./recept SERVICE COMMAND ...                      e.g. ./recept auth add-tenant, ./recept audit verify
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from services import SERVICES, load
from services.checks import check_broker, check_database, say
from shared.config import ROOT

VAR = ROOT / "var"


def ensure_keyring() -> None:
    """Embedded/dev default: services with no keyring configured share one under var/."""
    if os.environ.get("RECEPT_KEYRING") or os.environ.get("RECEPT_KEYRING_FILE"):
        return
    lacking = [
        s
        for s in SERVICES
        if not (os.environ.get(f"RECEPT_{s.upper()}_KEYRING") or os.environ.get(f"RECEPT_{s.upper()}_KEYRING_FILE"))
    ]
    if not lacking:
        return
    from shared.crypto import Keyring

    path = VAR / "keyring.json"
    if not path.exists():
        VAR.mkdir(exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(Keyring.generate().to_json())
        say(f"generated a development keyring at {path} (use a mounted secret in production)")
    for service in lacking:
        os.environ[f"RECEPT_{service.upper()}_KEYRING_FILE"] = str(path)


def migrate_all(names=SERVICES) -> None:
    for name in names:
        spec = load(name)
        config = spec.config()
        check_database(name, config["DATABASE_URL"])
        spec.migrate(config)
        say(f"{name}: database migrated")


def cmd_migrate(args) -> None:
    unknown = sorted(set(args.services) - set(SERVICES))
    if unknown:
        raise SystemExit(f"recept: unknown service(s) {', '.join(unknown)}; services are {', '.join(SERVICES)}")
    ensure_keyring()
    migrate_all(args.services or SERVICES)


def cmd_keys(args) -> None:
    import json

    from services import keys as keyfiles
    from shared.crypto import Keyring

    if args.action == "rewrap":  # docs/crypto.md "Rotation and rewrap"
        unknown = sorted(set(args.services) - set(SERVICES))
        if unknown:
            raise SystemExit(f"recept: unknown service(s) {', '.join(unknown)}; services are {', '.join(SERVICES)}")
        ensure_keyring()
        report = {name: keyfiles.rewrap(load(name), load(name).config()) for name in args.services or SERVICES}
        print(json.dumps(report, indent=2))
        return
    if args.rotate:
        rotated = keyfiles.rotate_file(Path(args.rotate))
        say(
            f"new primary key {rotated.primary_id} in {args.rotate} (mode 0600); deploy it to the service, "
            "then run './recept keys rewrap <service>'"
        )
        return
    print(Keyring.generate().to_json())


def cmd_up(args) -> None:
    ensure_keyring()
    if args.port:
        os.environ["RECEPT_PORT"] = str(args.port)
    broker = args.broker or os.environ.get("RECEPT_BROKER_URL")
    if broker and not broker.startswith("memory://"):
        from services.launcher import run_distributed

        check_broker(broker)
        run_distributed(broker, host=args.host)
    else:
        from services.embedded import run_embedded

        run_embedded(host=args.host, port=int(os.environ.get("RECEPT_PORT", "8080")))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from bench.runner import main as bench_main

        ensure_keyring()
        raise SystemExit(bench_main(argv[1:]))
    if argv and argv[0] in SERVICES:
        module = importlib.import_module(f"services.{argv[0]}.cli")
        ensure_keyring()
        raise SystemExit(module.main(argv[1:]))

    parser = argparse.ArgumentParser(
        prog="./recept", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="migrate and run the whole system")
    up.add_argument("--port", type=int, help="embedded run's port (default 8080, or RECEPT_PORT)")
    up.add_argument("--broker", help="amqp:// URL: run distributed against this RabbitMQ (or RECEPT_BROKER_URL)")
    up.add_argument("--host", default=os.environ.get("RECEPT_HOST", "127.0.0.1"), help="address to listen on")
    up.set_defaults(func=cmd_up)
    mig = sub.add_parser("migrate", help="run every service's (or the named services') migrations")
    mig.add_argument("services", nargs="*", metavar="SERVICE", help=", ".join(SERVICES))
    mig.set_defaults(func=cmd_migrate)
    keys = sub.add_parser("keys", help="print a new keyring as JSON, --rotate a keyring file, or rewrap data keys")
    keys.add_argument("--rotate", metavar="FILE", help="add a new primary key to this keyring file (written 0600)")
    keys.add_argument(
        "action",
        nargs="?",
        choices=["rewrap"],
        help="rewrap: re-wrap every data key of the services under their primary key",
    )
    keys.add_argument("services", nargs="*", metavar="SERVICE", help="for rewrap (default: every service)")
    keys.set_defaults(func=cmd_keys)
    sub.add_parser("test", help="run the test suite (arguments go to pytest)")
    sub.add_parser("bench", help="run the benchmarks (./recept bench [NAME...] [--smoke])")
    for name in SERVICES:
        sub.add_parser(name, help=f"the {name} service's own commands")
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
