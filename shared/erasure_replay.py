"""Replaying the erasure log after a database restore (R2, R16; docs/crypto.md "Backups").

``replay_erasures(runtime)`` reads the service's erasure log (``shared.crypto.erasure_log``)
and, for every listed subject that has a live data key again — which only a restored backup
can cause, since shredding is final — shreds the key again and re-runs the service's own
erase for the subject through its participant (``Participant.erase`` with the subject
reference), so the restored rows are deleted or de-identified by the same rules as the
first time.  It runs from ``./recept <service> replay-erasures`` and at every api and
worker start, before serving.  It is idempotent: a second run finds no live key.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

from .crypto.erasure_log import ErasureLog
from .crypto.vault import REPLAYING

__all__ = [
    "REPLAY_REQUEST_ID",
    "add_commands",
    "erasure_log_path",
    "open_erasure_log",
    "reindex_command",
    "replay_command",
    "replay_erasures",
    "revived_subjects",
]

log = logging.getLogger(__name__)

#: The request id the re-run erase sees (in its events, so the trail shows a replay).
REPLAY_REQUEST_ID = "erasure-log-replay"
_CHUNK = 500


def erasure_log_path(config: Any, service: str) -> str:
    """``ERASURE_LOG`` when set; else the default of ``shared.config`` for this service."""
    from .config import default_erasure_log

    return str(config.get("ERASURE_LOG") or default_erasure_log(service, config["DATABASE_URL"]))


def open_erasure_log(config: Any, service: str, keyring: Any) -> ErasureLog | None:
    """The service's erasure log.  Set explicitly (``ERASURE_LOG``, as every deployment does), it must
    work: a directory that cannot be written stops the start (``ConfigError``: the volume is not
    mounted, or not writable by the service's user) rather than every later erasure failing.  Left at
    its default in a place that cannot be written (a read-only image without the volume), the log is
    off and the start says so, so erasures keep working without the backup protection."""
    from .config import ConfigError

    path = Path(erasure_log_path(config, service))
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        usable = os.access(path.parent, os.W_OK)
    except OSError:
        usable = False
    if not usable:
        if config.get("ERASURE_LOG"):
            raise ConfigError(
                f"ERASURE_LOG: the directory of {str(path)!r} cannot be written; mount the service's "
                'erasure-log volume there, writable by its user (docs/deploy.md "Backups and restore")'
            )
        log.warning(
            "erasure log is OFF: the default location is not writable; set ERASURE_LOG to a "
            'volume kept apart from the database\'s backups (docs/crypto.md "Backups")'
        )
        return None
    return ErasureLog(path, service, keyring)


def revived_subjects(session: Any, data_keys: Any, subjects: list[str]) -> list[str]:
    """The subjects among ``subjects`` that have a live (unshredded) data key, in log order."""
    live: set[str] = set()
    for start in range(0, len(subjects), _CHUNK):
        chunk = subjects[start : start + _CHUNK]
        live.update(
            session.scalars(
                select(data_keys.c.subject)
                .distinct()
                .where(data_keys.c.subject.in_(chunk), data_keys.c.wrapped.is_not(None))
            )
        )
    return [subject for subject in subjects if subject in live]


def replay_erasures(runtime: Any) -> int:
    """Shred again, and erase again, every logged subject a restore brought back; how many."""
    erasure_log: ErasureLog | None = runtime.vault.erasure_log
    if erasure_log is None:
        return 0
    subjects = erasure_log.subjects()  # raises ErasureLogError on a tampered line: do not serve
    if not subjects:
        return 0
    with runtime.db.transaction() as session:
        revived = revived_subjects(session, runtime.tables.data_keys, subjects)
    if not revived:
        return 0
    participant = runtime.participant
    for subject in revived:
        # One transaction per subject: a large restore makes steady progress, and a subject
        # whose erase fails does not hold back the others' (the error still stops the start).
        with runtime.db.transaction() as session:
            session.info[REPLAYING] = True  # already in the log: do not append it again
            try:
                runtime.vault.shred(session, subject)
                if participant is not None:
                    from .privacy import Context

                    ctx = Context(request_id=REPLAY_REQUEST_ID, tenant=None, subject={}, references=[subject])
                    participant.erase(session, ctx, [subject])
            finally:
                session.info.pop(REPLAYING, None)
    log.warning("erasure log: re-erased %d subject(s) a database restore had brought back", len(revived))
    return len(revived)


# --- operator commands: ./recept <service> replay-erasures | reindex ---------------------------


def add_commands(sub: Any, spec: Any, reindex: Callable[[Any], dict[str, Sequence[Any]]] | None = None) -> None:
    """Add ``replay-erasures`` (and, for a service with blind indexes, ``reindex``) to a service's
    argparse sub-commands.  ``reindex(tables)`` names, per table, its ``IndexedColumn``s."""
    replay = sub.add_parser(
        "replay-erasures",
        help="after restoring a database backup: erase again everyone the erasure log lists (also runs at every start)",
        description="The restore step after restoring a database backup: erase again every subject the "
        "service's erasure log lists whose data key the backup brought back; prints a JSON report "
        '(docs/deploy.md "Backups and restore"). Every api and worker start runs it too.',
    )
    replay.add_argument(
        "--reseal", action="store_true", help="then re-sign the log under the primary key (before retiring an old key)"
    )
    replay.set_defaults(func=lambda args: replay_command(spec, reseal=args.reseal))
    if reindex is not None:
        sub.add_parser(
            "reindex", help="recompute every blind index (after PLANNED_SUBJECTS or the index key changed)"
        ).set_defaults(func=lambda _args: reindex_command(spec, reindex))


def _runtime(spec: Any) -> Any:
    config = spec.config()
    spec.migrate(config)
    return spec.runtime(config)


def replay_command(spec: Any, reseal: bool = False) -> int:
    from .crypto import ErasureLogError

    runtime = _runtime(spec)
    try:
        count = replay_erasures(runtime)
        if runtime.vault.erasure_log is None:
            print(f"recept {spec.name}: the erasure log is off (set ERASURE_LOG)", file=sys.stderr)
            return 2
        sealed = runtime.vault.erasure_log.reseal() if reseal else None
    except ErasureLogError as exc:
        print(f"recept {spec.name}: {exc}", file=sys.stderr)
        return 2
    finally:
        runtime.db.dispose()
    report: dict[str, Any] = {"service": spec.name, "log": str(runtime.vault.erasure_log.path), "re_erased": count}
    if sealed is not None:
        report["resealed"] = sealed
    print(json.dumps(report))
    return 0


def reindex_command(spec: Any, reindex: Callable[[Any], dict[str, Sequence[Any]]], batch: int = 500) -> int:
    """Recompute the service's blind indexes with its current index (bits, primary index key),
    one transaction per batch of rows so a large table does not hold one long transaction."""
    from .crypto.reindex import reindex_table

    runtime = _runtime(spec)
    changed: dict[str, int] = {}
    try:
        index = blind_index_of(runtime)
        for table_name, columns in reindex(runtime.tables).items():
            table = runtime.spec.metadata.tables[table_name]
            with runtime.db.transaction() as session:
                changed[table_name] = reindex_table(session, runtime.vault, index, table, columns, batch=batch)
    finally:
        runtime.db.dispose()
    print(
        json.dumps(
            {
                "service": spec.name,
                "bits": index.bits,
                "index_key": runtime.keyring.index_primary_id,
                "rows_changed": changed,
            }
        )
    )
    return 0


def blind_index_of(runtime: Any) -> Any:
    """The BlindIndex a service's domain writes with (its ``index``, or its deps' ``index``)."""
    domain = runtime.domain
    for candidate in (getattr(domain, "index", None), getattr(getattr(domain, "individuals", None), "deps", None)):
        index = getattr(candidate, "index", candidate)
        if index is not None and hasattr(index, "bits"):
            return index
    raise RuntimeError(f"service {runtime.name} has no blind index")
