"""Looking for a person where the product promises she is not (issue 14): the broker's own data
directory, and a database backup restored after her erasure.

Shared by tests/gdpr/test_broker_disk.py, tests/orders/test_erasure_restore.py and the e2e journey
(tests/e2e/test_data_subject_journey.py), so every one of them searches the same way.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.conftest import missing

__all__ = ["broker_data_dir", "dump_database", "found_in_files", "restore_database"]


# --- RabbitMQ's disk ----------------------------------------------------------------------------------


def broker_data_dir() -> Path:
    """The running broker's data directory (``rabbit_mnesia:dir()``: quorum-queue segments, WAL, message
    stores); one that cannot be found or read is a missing server (tests/conftest.missing: fails under CI)."""
    try:
        out = (
            subprocess.run(
                ["rabbitmqctl", "-q", "eval", "rabbit_mnesia:dir()."],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            .stdout.strip()
            .strip('"')
        )
        path = Path(out)
        with os.scandir(path) as entries:
            next(iter(entries))
        return path
    except (OSError, subprocess.SubprocessError, StopIteration):
        missing("RabbitMQ's data directory (rabbitmqctl on this machine, readable)")
        raise  # not reached: missing() fails under CI and skips elsewhere


def found_in_files(directory: Path, needles: Iterable[bytes]) -> set[bytes]:
    """The needles that occur, byte for byte, in any file under ``directory``.  A file that vanishes
    while it is read (the broker rolls its WAL) is skipped; under CI any other unreadable file fails."""
    wanted = list(needles)
    hits: set[bytes] = set()
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                data = (Path(root) / name).read_bytes()
            except FileNotFoundError:
                continue
            except OSError:
                if os.environ.get("CI"):
                    raise
                continue
            hits |= {n for n in wanted if n in data}
    return hits


# --- backups ------------------------------------------------------------------------------------------


def _pg_args(url: str) -> tuple[list[str], str]:
    u = make_url(url)
    return ["-h", str(u.host), "-p", str(u.port or 5432), "-U", str(u.username)], str(u.database)


def dump_database(url: str, target: Path) -> None:
    """A backup as an operator takes one: ``pg_dump -Fc`` (PostgreSQL) or the SQLite backup API."""
    if url.startswith("sqlite"):
        with sqlite3.connect(make_url(url).database) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        return
    args, database = _pg_args(url)
    subprocess.run(["pg_dump", *args, "-Fc", "-f", str(target), database], check=True, capture_output=True)


def restore_database(url: str, source: Path) -> None:
    """Restore a backup of ``dump_database`` into the database at ``url`` (the same one or a new, empty
    one), replacing what is there: ``pg_restore --clean --if-exists --single-transaction``."""
    if url.startswith("sqlite"):
        with sqlite3.connect(source) as src, sqlite3.connect(make_url(url).database) as dst:
            src.backup(dst)
        return
    args, database = _pg_args(url)
    subprocess.run(
        [
            "pg_restore",
            *args,
            "--clean",
            "--if-exists",
            "--single-transaction",
            "--no-owner",
            "-d",
            database,
            str(source),
        ],
        check=True,
        capture_output=True,
    )
