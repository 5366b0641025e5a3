"""``./recept auth ...``: bootstrap tenants and users, and rotate the token-signing key.

Works the same in the embedded run (default: SQLite var/auth.db) and the distributed one
(RECEPT_AUTH_DATABASE_URL): it migrates the auth database, then writes through the same
domain functions as the api, so every change also lands in the outbox as an event.

    ./recept auth add-tenant SLUG NAME
    ./recept auth add-user --tenant SLUG --username U --role R [--role R2] [--password-stdin | --directory]
    ./recept auth rotate-signing-key
"""

from __future__ import annotations

import argparse
import sys

from shared.errors import DomainError


def _runtime():
    from . import SPEC

    config = SPEC.config()
    SPEC.migrate(config)
    return SPEC.runtime(config)


def _add_tenant(args) -> int:
    runtime = _runtime()
    try:
        auth = runtime.domain
        with auth.db.transaction() as session:
            view = auth.create_tenant(session, None, args.slug, args.name)
    finally:
        runtime.db.dispose()
    print(f"tenant {view['slug']} created (id {view['id']}, kind {view['kind']})")
    return 0


def _set_agreement(args) -> int:
    """Record a tenant's data processing agreement (R5, issue 15): announced to the other services."""
    runtime = _runtime()
    try:
        auth = runtime.domain
        with auth.db.transaction() as session:
            view = auth.set_agreement(session, None, args.slug, args.version, args.signed_on, args.signatory)
    finally:
        runtime.db.dispose()
    agreement = view["agreement"]
    print(f"tenant {view['slug']}: agreement {agreement['version']} signed on {agreement['signed_on']} recorded")
    return 0


def _read_password(stream) -> str:
    line = stream.readline()
    return line[:-1] if line.endswith("\n") else line


def _add_user(args) -> int:
    if args.password_stdin == args.directory:
        print(
            "recept: give exactly one of --password-stdin (a local user) or --directory (a directory user)",
            file=sys.stderr,
        )
        return 2
    password = _read_password(sys.stdin) if args.password_stdin else None
    runtime = _runtime()
    try:
        auth = runtime.domain
        with auth.db.transaction() as session:
            view = auth.create_user(
                session,
                None,
                args.tenant,
                username=args.username,
                roles=args.role,
                password=password,
                display_name=args.display_name,
                email=args.email,
                source="directory" if args.directory else "local",
            )
    finally:
        runtime.db.dispose()
    # The id only: the username is personal data and stays out of terminals' scrollback and logs.
    print(f"user created in tenant {args.tenant} (id {view['id']}, roles {', '.join(view['roles']) or 'none'})")
    return 0


def _rotate(args) -> int:
    from . import SPEC

    keys = SPEC.config()["signing_keys"]
    kid = keys.rotate()
    print(f"new signing key {kid} in {keys.path}; tokens signed with the old key stay valid until they expire")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="./recept auth", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tenant = sub.add_parser("add-tenant", help="create a tenant (slug 'vendor' is the vendor's own staff)")
    tenant.add_argument("slug")
    tenant.add_argument("name")
    tenant.set_defaults(func=_add_tenant)
    agreement = sub.add_parser("set-agreement", help="record a tenant's data processing agreement (R5)")
    agreement.add_argument("slug")
    agreement.add_argument("--version", required=True)
    agreement.add_argument("--signed-on", required=True, help="YYYY-MM-DD")
    agreement.add_argument("--signatory", required=True, help="who signed it for the customer (stored encrypted)")
    agreement.set_defaults(func=_set_agreement)
    user = sub.add_parser("add-user", help="create a user in a tenant")
    user.add_argument("--tenant", required=True)
    user.add_argument("--username", required=True)
    user.add_argument("--role", action="append", default=[], help="a role (repeat for more)")
    user.add_argument("--display-name")
    user.add_argument("--email")
    user.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    user.add_argument("--directory", action="store_true", help="a directory user (logs in with the directory)")
    user.set_defaults(func=_add_user)
    rotate = sub.add_parser("rotate-signing-key", help="add a new token-signing key; old tokens stay valid")
    rotate.set_defaults(func=_rotate)
    from shared.erasure_replay import add_commands

    from . import SPEC

    add_commands(sub, SPEC)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DomainError as exc:
        # Domain messages hold no personal data; field problems name the field and the rule.
        details = "; ".join(f"{e['field']} {e['message']}" for e in exc.errors)
        print(f"recept: {exc.detail}" + (f" ({details})" if details else ""), file=sys.stderr)
        return 1
