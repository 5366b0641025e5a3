"""Keyring files and re-wrapping (docs/crypto.md "Rotation and rewrap"): ``./recept keys ...``.

A keyring file holds every key-encryption key of a service, so it is written owner-only
(0600) through a fresh temporary file in the same folder, whatever the modes of the old file
or of a stale temporary file.  After a rotation, ``rewrap`` re-wraps every live data key of a
service under the keyring's primary key, so the old key can be retired with
``Keyring.without``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sqlalchemy import select

from shared.crypto import Keyring, Vault
from shared.db import Database


def write_keyring(path: Path, keyring: Keyring) -> None:
    """Replace ``path`` with ``keyring``, mode 0600, atomically (a reader sees the old or the new file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # O_EXCL, 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(keyring.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rotate_file(path: Path) -> Keyring:
    """Add a new primary key to the keyring file at ``path``; returns the new keyring."""
    rotated = Keyring.from_json(Path(path).read_text(encoding="utf-8")).rotated()
    write_keyring(path, rotated)
    return rotated


def rewrap(spec, config) -> dict[str, object]:
    """Re-wrap every live data key of one service under its keyring's primary KEK.

    Returns how many were re-wrapped and which KEKs no live data key needs any more (those can be
    dropped from the keyring).  Safe to repeat; a key shredded meanwhile stays shredded.
    """
    keyring = config.get("keyring") or Keyring.from_config(config)
    table = spec.tables.data_keys
    db = config.get("database") or Database(config["DATABASE_URL"])
    try:
        with db.transaction() as session:
            count = Vault(keyring, table).rewrap(session)
        with db.transaction() as session:
            in_use = set(session.scalars(select(table.c.kek_id).where(table.c.wrapped.is_not(None)).distinct()))
    finally:
        if config.get("database") is None:
            db.dispose()
    return {
        "rewrapped": count,
        "primary": keyring.primary_id,
        "retirable": sorted(k for k in keyring.key_ids if k != keyring.primary_id and k not in in_use),
    }
