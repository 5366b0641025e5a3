"""``./recept portal COMMAND``: the portal's maintenance commands."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    from shared.erasure_replay import add_commands

    from . import SPEC

    parser = argparse.ArgumentParser(prog="./recept portal", description="The compliance portal's commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("purge-sessions", help="end every expired sign-in session (their tokens are crypto-shredded)")
    sub.add_parser("settings", help="list the portal's settings and their environment variables")
    add_commands(sub, SPEC)
    args = parser.parse_args(argv)
    if hasattr(args, "func"):
        return args.func(args)
    config = SPEC.config()
    if args.command == "settings":
        for variable, help_text in config.describe():
            print(f"{variable:<36} {help_text}")
        return 0
    SPEC.migrate(config)
    runtime = SPEC.runtime(config)
    try:
        purged = runtime.domain.store.purge()
    finally:
        runtime.db.dispose()
    print(f"purged {purged} expired session(s)")
    return 0
