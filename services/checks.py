"""Start-up checks shared by the command line (services/cli.py) and the launcher (services/launcher.py).

Kept apart from both so neither imports the other: the launcher needs the checks, the command line
needs the launcher.
"""

from __future__ import annotations

import re
import sys

# Everything up to the last "@" of the authority is userinfo; a broker URL may name several
# hosts ("amqp://u:p@h1:5672,h2:5672/vhost"), which urlsplit cannot parse into hostname and port.
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:[^/?#]*@)?(?P<hosts>[^/?#]*)(?P<path>[^?#]*)")


def say(message: str) -> None:
    print(f"recept: {message}", file=sys.stderr, flush=True)


def redact(url: str) -> str:
    """A URL with its credentials, query and fragment removed, for messages (one or several hosts)."""
    match = _URL.match(url)
    if match is None:
        return "(unparseable URL)"
    return f"{match['scheme']}://{match['hosts']}{match['path']}"


def check_broker(url: str) -> None:
    from shared.bus import Bus, BusError

    try:
        Bus(url, "probe").ping()
    except BusError as exc:
        raise SystemExit(f"recept: cannot reach the broker at {redact(url)}: {exc}") from None


def check_database(service: str, url: str) -> None:
    from shared.db import Database

    db = Database(url)
    try:
        db.ping()
    except Exception as exc:  # noqa: BLE001 - report any driver error plainly
        raise SystemExit(
            f"recept: cannot reach the {service} database at {redact(url)}: {type(exc).__name__}"
        ) from None
    finally:
        db.dispose()
