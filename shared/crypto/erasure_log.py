"""The erasure log (R2, R16): crypto-shredding that survives restoring a database backup.

Wrapped data keys live in the service's own database, so a dump taken before an erasure
holds the subject's key and makes her readable again once restored.  Every shred is
therefore also appended to a file OUTSIDE the database (``ERASURE_LOG``; a mounted volume
in compose and Kubernetes), one line per subject, and fsync'd before the erasure's
transaction commits.  After a restore, ``replay`` (``shared.erasure_replay``, run by
``./recept <service> replay-erasures`` and at every api and worker start) shreds the keys
of every listed subject again and re-runs the service's erase for it.

A line is JSON::

    {"v": 1, "k": "<kek id>", "subject": "<pseudonymous subject reference>", "at": "<RFC 3339>", "mac": "<base64>"}

``mac`` = HMAC-SHA256(HKDF(KEK[k], "recept.erasure-log.v1"),
"recept.erasure-log.v1" NUL service NUL k NUL subject NUL at), so a line cannot be forged
or moved to another service's log without the keyring.  Subjects are pseudonymous
references (``orders:individual:<uuid>``), never names or identifiers.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hmac as std_hmac
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.clock import rfc3339, utcnow

from .keyring import Keyring, KeyringError

__all__ = ["ErasureLog", "ErasureLogError", "ErasureRecord"]

_INFO = b"recept.erasure-log.v1"

log = logging.getLogger(__name__)


class _UnknownKey(Exception):
    """A line MACed under a key-encryption key this keyring does not hold."""


class ErasureLogError(ValueError):
    """The erasure log is unreadable, tampered with, or signed with a key the keyring lacks.

    Messages name the file and the line number, never a subject.
    """


@dataclass(frozen=True)
class ErasureRecord:
    subject: str
    at: str  # RFC 3339, UTC
    kek_id: str


class ErasureLog:
    """An append-only file of MACed erasure records for one service."""

    def __init__(self, path: str | os.PathLike[str], service: str, keyring: Keyring) -> None:
        self.path = Path(path)
        self.service = service
        self.keyring = keyring
        self._macs: dict[str, bytes] = {}

    # -- keys ----------------------------------------------------------------------------------

    def _mac_key(self, kid: str) -> bytes:
        key = self._macs.get(kid)
        if key is None:
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(self.keyring.kek(kid))
            self._macs[kid] = key
        return key

    def _mac(self, kid: str, subject: str, at: str) -> bytes:
        mac = hmac.HMAC(self._mac_key(kid), hashes.SHA256())
        mac.update(b"\x00".join([_INFO, self.service.encode(), kid.encode(), subject.encode(), at.encode()]))
        return mac.finalize()

    def _line(self, subject: str, at: str) -> bytes:
        kid = self.keyring.primary_id
        mac = base64.b64encode(self._mac(kid, subject, at)).decode("ascii")
        record = {"v": 1, "k": kid, "subject": subject, "at": at, "mac": mac}
        return json.dumps(record, separators=(",", ":"), sort_keys=True).encode("utf-8") + b"\n"

    # -- writing -------------------------------------------------------------------------------

    def append(self, subjects: Iterable[str], at: datetime | None = None) -> int:
        """Append one record per subject and fsync the file (and, when new, its directory).

        Called before the erasing transaction commits: if this raises (disk full, volume not
        mounted), the commit is aborted and the erasure is retried rather than left undurable.
        """
        stamp = rfc3339(at or utcnow())
        lines = b"".join(self._line(subject, stamp) for subject in dict.fromkeys(subjects))
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        created = not self.path.exists()
        with self._locked():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                keep = self._complete_length(size)
                if keep != size:
                    # A torn last line: a crash cut its write off before the fsync, so its
                    # transaction never committed.  Drop it rather than bury it mid-file.
                    os.ftruncate(fd, keep)
                os.write(fd, lines)
                os.fsync(fd)
            finally:
                os.close(fd)
        if created:
            _fsync_dir(self.path.parent)
        return lines.count(b"\n")

    def _complete_length(self, size: int) -> int:
        """Bytes of the file up to and including its last newline."""
        if size == 0:
            return 0
        with open(self.path, "rb") as f:
            start = max(0, size - 4096)
            f.seek(start)
            tail = f.read()
            if start and b"\n" not in tail:
                f.seek(0)
                start, tail = 0, f.read()
        return start + tail.rfind(b"\n") + 1

    def reseal(self) -> int:
        """Rewrite every verifiable record under the primary KEK (before retiring an old KEK
        with ``Keyring.without``); returns how many records the log holds.  Atomic (rename).
        Lines under KEKs the keyring lacks are dropped, so reseal only with the full keyring."""
        with self._locked():
            records = list(self.records())
            tmp = self.path.with_name(self.path.name + ".reseal")
            with open(tmp, "wb") as f:
                for record in records:
                    f.write(self._line(record.subject, record.at))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        return len(records)

    def _locked(self) -> _Lock:
        return _Lock(self.path.with_name(self.path.name + ".lock"))

    # -- reading -------------------------------------------------------------------------------

    def records(self) -> Iterator[ErasureRecord]:
        """Every verified record in file order.  A missing file is an empty log.  An incomplete
        last line (no newline: the write was cut off, so its transaction never committed) is
        skipped, and so are lines MACed under a KEK the keyring does not hold (with a warning);
        any other bad line raises :class:`ErasureLogError`."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ErasureLogError(f"cannot read the erasure log {str(self.path)!r}: {exc.strerror}") from None
        lines = data.split(b"\n")
        complete = lines[:-1]  # the part after the last newline is empty or torn
        foreign = 0
        for number, raw in enumerate(complete, start=1):
            if not raw.strip():
                continue
            try:
                yield self._parse(raw, number)
            except _UnknownKey:
                foreign += 1
        if foreign:
            # Lines under a KEK the keyring lacks cannot be checked, so they are not acted on:
            # a retired KEK whose lines were not resealed, or a log left from another keyring
            # (a development reset).  Nobody can forge a line under a key the keyring holds.
            log.warning(
                "erasure log %s: %d line(s) MACed with a key-encryption key this keyring does not "
                "have were skipped (run replay-erasures --reseal before retiring a key)",
                self.path,
                foreign,
            )

    def subjects(self) -> list[str]:
        return list(dict.fromkeys(record.subject for record in self.records()))

    def _parse(self, raw: bytes, number: int) -> ErasureRecord:
        where = f"erasure log {str(self.path)!r} line {number}"
        try:
            data: Any = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ErasureLogError(f"{where} is not JSON") from None
        if (
            not isinstance(data, dict)
            or data.get("v") != 1
            or not all(isinstance(data.get(name), str) for name in ("k", "subject", "at", "mac"))
        ):
            raise ErasureLogError(f"{where} is not an erasure record of version 1")
        try:
            mac = base64.b64decode(data["mac"], validate=True)
        except (binascii.Error, ValueError):
            raise ErasureLogError(f"{where} has a malformed MAC") from None
        try:
            expected = self._mac(data["k"], data["subject"], data["at"])
        except KeyringError:
            raise _UnknownKey from None
        if not std_hmac.compare_digest(mac, expected):
            raise ErasureLogError(f"{where} fails its MAC (altered, or from another service's log)")
        return ErasureRecord(subject=data["subject"], at=data["at"], kek_id=data["k"])

    def __repr__(self) -> str:
        return f"<ErasureLog {self.service} {str(self.path)!r}>"


class _Lock:
    """An exclusive advisory lock on a side file, so appends and a reseal never interleave."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> _Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
