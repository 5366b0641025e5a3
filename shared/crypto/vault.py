"""Per-subject data keys, field encryption bound to its row and column, crypto-shredding (R7, R16).

Each data subject has a data key, stored wrapped by the keyring's primary KEK in the service's
``data_keys`` table; every personal field of the subject is AES-256-GCM under that key.
Shredding destroys the subject's keys, so every copy of its fields reads as :data:`ERASED`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from typing import Any, Union, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, SessionTransaction, scoped_session

from shared.clock import utcnow

from .erasure_log import ErasureLog
from .keyring import KEY_BYTES, Keyring, KeyringError

__all__ = ["ERASED", "AnySession", "ErasedType", "DecryptionError", "crypto_tables", "Vault"]

#: What the vault's methods take: a session, or a scoped session (its current session is used).
AnySession = Union[Session, "scoped_session[Session]"]

NONCE_BYTES = 12  # AES-GCM nonce
TAG_BYTES = 16  # AES-GCM tag
FIELD_VERSION = 1  # first byte of every field ciphertext
WRAP_VERSION = 1  # first byte of every wrapped data key
_FLAG_BYTES = 0  # first plaintext byte: the value was bytes
_FLAG_STR = 1  # ... the value was str (UTF-8)
_HEADER = 1 + 16  # version byte + data-key id (uuid, 16 raw bytes)
_MIN_BLOB = _HEADER + NONCE_BYTES + TAG_BYTES + 1


# --- ERASED -----------------------------------------------------------------------------------


class ErasedType:
    """Type of :data:`ERASED`, the value of a field whose data subject was crypto-shredded."""

    __slots__ = ()
    _instance: ErasedType | None = None

    def __new__(cls) -> ErasedType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<erased>"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "ERASED"  # pickles as the module-level singleton

    def __copy__(self) -> ErasedType:
        return self

    def __deepcopy__(self, _memo: object) -> ErasedType:
        return self


ERASED = ErasedType()


class DecryptionError(ValueError):
    """A ciphertext is corrupt, tampered with, or was moved to another row or column."""


# --- data_keys table --------------------------------------------------------------------------


def crypto_tables(metadata: MetaData) -> Table:
    """Define (once) the ``data_keys`` table on ``metadata`` and return it.

    One row per data key.  A shredded key keeps its row as a tombstone (``wrapped`` NULL,
    ``shredded_at`` set) so its ciphertexts decrypt to :data:`ERASED` instead of failing:
    never delete rows from this table.
    """
    existing = metadata.tables.get("data_keys")
    if existing is not None:
        return existing
    return Table(
        "data_keys",
        metadata,
        Column("id", String(32), primary_key=True),  # uuid4 hex
        Column("subject", String(200), nullable=False, index=True),  # pseudonymous subject reference
        Column("kek_id", String(64), nullable=False),
        Column("wrapped", LargeBinary, nullable=True),  # NULL once shredded
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("shredded_at", DateTime(timezone=True), nullable=True),
    )


# --- Vault ------------------------------------------------------------------------------------

_CACHE_PREFIX = "recept.crypto.keys:"
_LISTENING = "recept.crypto.listening"
_PENDING = "recept.crypto.erasures"  # session.info: {id(log): (log, [subjects])} to append at commit
_LOGGING = "recept.crypto.logging"
#: Set in ``session.info`` by the replay of the erasure log: its shreds are already logged.
REPLAYING = "recept.crypto.replaying"
_IN_CHUNK = 500  # subjects / ids per IN (...) query


class _KeyCache:
    """Unwrapped data keys of one session's current transaction."""

    __slots__ = ("by_id", "by_subject")

    def __init__(self) -> None:
        self.by_id: dict[str, tuple[str, AESGCM | None]] = {}  # key id -> (subject, cipher or None if shredded)
        self.by_subject: dict[str, tuple[str, AESGCM]] = {}  # subject -> (key id, cipher) used to encrypt


def _drop_caches(session: Session, _transaction: object) -> None:
    # Any transaction end (commit, rollback, savepoint release/rollback, close) drops the cache:
    # a rolled-back savepoint may have created or shredded keys the cache still remembers.
    for name in [k for k in session.info if isinstance(k, str) and k.startswith(_CACHE_PREFIX)]:
        del session.info[name]


def _append_erasures(session: Session) -> None:
    # before_commit: the records are on disk (fsync'd) before the shred commits; if writing
    # fails the commit is aborted, so no erasure commits without its record.
    pending = session.info.pop(_PENDING, None)
    for log, subjects in (pending or {}).values():
        log.append(subjects)


def _forget_erasures(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended without its before_commit (a rollback): nothing to log.
    # A rolled-back savepoint keeps its records: logging a shred that did not commit only makes
    # the replay finish an erasure that was asked for, never loses one.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


class Vault:
    """Per-subject envelope encryption of fields, with crypto-shredding.

    Field ciphertext (bytes; store it in a ``LargeBinary`` column)::

        0x01 | data-key id (16 bytes, uuid) | nonce (12) | AES-256-GCM(data key, flag + value) + tag (16)

    where ``flag`` is 0x00 for bytes and 0x01 for UTF-8 str, and the associated data is the
    17-byte header followed by ``f"{table}.{column}:{row_id}"`` (``row_id`` via ``str()``), so a
    ciphertext copied to another row or column fails with :class:`DecryptionError`.

    Unwrapped data keys are cached in ``session.info`` until the session's transaction (or
    savepoint) ends; :meth:`shred` updates the cache of its own session.
    """

    def __init__(self, keyring: Keyring, table: Table, erasure_log: ErasureLog | None = None) -> None:
        missing = {"id", "subject", "kek_id", "wrapped", "created_at", "shredded_at"} - set(table.c.keys())
        if missing:
            raise ValueError(f"table {table.name!r} is not a data_keys table (missing {', '.join(sorted(missing))})")
        self.keyring = keyring
        self.table = table
        #: Where shreds are recorded outside the database, so they survive restoring a backup
        #: (``shared.erasure_replay``).  None: not recorded (tests and tools without a service).
        self.erasure_log = erasure_log
        self._cache_name = _CACHE_PREFIX + table.fullname

    # -- public API ----------------------------------------------------------------------------

    def encrypt(
        self, session: AnySession, subject: str, table: str, column: str, row_id: object, value: str | bytes | None
    ) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, str):
            plaintext = b"\x01" + value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            plaintext = b"\x00" + bytes(value)
        else:
            raise TypeError(f"can only encrypt str or bytes, not {type(value).__name__}")
        _check_subject(subject)
        location = _location(table, column, row_id)  # validate before a key is created
        cache = self._cache(session)
        entry = cache.by_subject.get(subject)
        if entry is None:
            self._load_subjects(session, cache, [subject], create=True)
            entry = cache.by_subject[subject]
        key_id, cipher = entry
        header = bytes([FIELD_VERSION]) + uuid.UUID(hex=key_id).bytes
        nonce = os.urandom(NONCE_BYTES)
        return header + nonce + cipher.encrypt(nonce, plaintext, header + location)

    def decrypt(
        self, session: AnySession, table: str, column: str, row_id: object, blob: bytes | None
    ) -> str | bytes | None | ErasedType:
        if blob is None:
            return None
        blob = bytes(blob)
        if len(blob) < _MIN_BLOB or blob[0] != FIELD_VERSION:
            raise DecryptionError("not a field ciphertext of a supported version")
        key_id = blob[1:_HEADER].hex()
        cache = self._cache(session)
        entry = cache.by_id.get(key_id)
        if entry is None:
            self._load_ids(session, cache, [key_id])
            entry = cache.by_id.get(key_id)
            if entry is None:
                raise DecryptionError("ciphertext refers to an unknown data key")
        cipher = entry[1]
        if cipher is None:
            return ERASED
        header, nonce = blob[:_HEADER], blob[_HEADER : _HEADER + NONCE_BYTES]
        try:
            plaintext = cipher.decrypt(nonce, blob[_HEADER + NONCE_BYTES :], header + _location(table, column, row_id))
        except InvalidTag:
            raise DecryptionError(
                "ciphertext failed authentication (tampered, or moved to another row or column)"
            ) from None
        flag, body = plaintext[0], plaintext[1:]
        if flag == _FLAG_STR:
            return body.decode("utf-8")
        if flag == _FLAG_BYTES:
            return body
        raise DecryptionError("ciphertext has an unknown value type")  # pragma: no cover - authenticated

    def shred(self, session: AnySession, subject: str) -> int:
        """Destroy every data key of ``subject``; returns how many were live.  Idempotent."""
        _check_subject(subject)
        t = self.table
        result = cast(
            "CursorResult[Any]",
            session.execute(
                update(t)
                .where(t.c.subject == subject, t.c.wrapped.is_not(None))
                .values(wrapped=None, shredded_at=utcnow())
            ),
        )
        cache = session.info.get(self._cache_name)
        if cache is not None:
            cache.by_subject.pop(subject, None)
            for key_id, (owner, _cipher) in list(cache.by_id.items()):
                if owner == subject:
                    cache.by_id[key_id] = (owner, None)
        if self.erasure_log is not None and not session.info.get(REPLAYING):
            self._log_at_commit(session, subject)
        return int(result.rowcount)

    def _log_at_commit(self, session: AnySession, subject: str) -> None:
        info = session.info
        if not info.get(_LOGGING):
            real = session.registry() if isinstance(session, scoped_session) else session
            event.listen(real, "before_commit", _append_erasures)
            event.listen(real, "after_transaction_end", _forget_erasures)
            info[_LOGGING] = True
        log = self.erasure_log
        assert log is not None
        info.setdefault(_PENDING, {}).setdefault(id(log), (log, []))[1].append(subject)

    def is_shredded(self, session: AnySession, subject: str) -> bool:
        """True when ``subject`` has data keys and all of them are shredded."""
        _check_subject(subject)
        t = self.table
        total, live = session.execute(select(func.count(), func.count(t.c.wrapped)).where(t.c.subject == subject)).one()
        return total > 0 and live == 0

    def rewrap(self, session: AnySession, batch: int = 1000) -> int:
        """Re-wrap every live data key whose KEK is not the primary; returns how many.

        Works through the table in primary-key order, ``batch`` rows per query.  A key shredded
        concurrently stays shredded (the UPDATE only touches rows still live on the old KEK).
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        t, primary_id, primary = self.table, self.keyring.primary_id, self.keyring.primary
        stmt = (
            update(t)
            .where(t.c.id == bindparam("b_id"), t.c.kek_id == bindparam("b_old"), t.c.wrapped.is_not(None))
            .values(kek_id=primary_id, wrapped=bindparam("b_wrapped"))
        )
        count, last = 0, ""
        while True:
            rows = session.execute(
                select(t.c.id, t.c.subject, t.c.kek_id, t.c.wrapped)
                .where(t.c.id > last, t.c.wrapped.is_not(None), t.c.kek_id != primary_id)
                .order_by(t.c.id)
                .limit(batch)
            ).all()
            if not rows:
                return count
            params = []
            for row in rows:
                key = self._unwrap(row.id, row.subject, row.kek_id, bytes(row.wrapped))
                params.append(
                    {
                        "b_id": row.id,
                        "b_old": row.kek_id,
                        "b_wrapped": _wrap(primary, primary_id, row.id, row.subject, key),
                    }
                )
            result = cast("CursorResult[Any]", session.execute(stmt, params))
            dialect = session.connection().dialect
            count += result.rowcount if dialect.supports_sane_multi_rowcount else len(params)
            last = rows[-1].id

    # -- bulk helpers (optional; they only save round trips) ------------------------------------

    def prepare(self, session: AnySession, subjects: Iterable[str]) -> None:
        """Load, and create where missing, the data keys of many subjects in a few statements.

        Call before encrypting fields of many subjects in one transaction: one SELECT per 500
        subjects plus one multi-row INSERT, instead of a SELECT and an INSERT per subject.
        """
        cache = self._cache(session)
        wanted = []
        for subject in dict.fromkeys(subjects):
            _check_subject(subject)
            if subject not in cache.by_subject:
                wanted.append(subject)
        if wanted:
            self._load_subjects(session, cache, wanted, create=True)

    def prefetch(self, session: AnySession, blobs: Iterable[bytes | None]) -> None:
        """Load the data keys of many ciphertexts at once before decrypting them one by one."""
        cache = self._cache(session)
        ids = []
        for blob in blobs:
            if blob is not None and len(blob) >= _HEADER and blob[0] == FIELD_VERSION:
                key_id = bytes(blob[1:_HEADER]).hex()
                if key_id not in cache.by_id:
                    ids.append(key_id)
        if ids:
            self._load_ids(session, cache, list(dict.fromkeys(ids)))

    # -- internals -----------------------------------------------------------------------------

    def _cache(self, session: AnySession) -> _KeyCache:
        info = session.info
        cache = info.get(self._cache_name)
        if cache is None:
            if not info.get(_LISTENING):
                real = session.registry() if isinstance(session, scoped_session) else session
                event.listen(real, "after_transaction_end", _drop_caches)
                info[_LISTENING] = True
            cache = info[self._cache_name] = _KeyCache()
        return cache

    def _unwrap(self, key_id: str, subject: str, kek_id: str, wrapped: bytes) -> bytes:
        kek = self.keyring.kek(kek_id)
        if len(wrapped) != 1 + NONCE_BYTES + KEY_BYTES + TAG_BYTES or wrapped[0] != WRAP_VERSION:
            raise KeyringError(f"data key {key_id} has a malformed wrapped value")
        try:
            return AESGCM(kek).decrypt(
                wrapped[1 : 1 + NONCE_BYTES], wrapped[1 + NONCE_BYTES :], _wrap_aad(kek_id, key_id, subject)
            )
        except InvalidTag:
            raise KeyringError(
                f"data key {key_id} does not unwrap with key-encryption key {kek_id!r} "
                "(wrong key material under that id, or the data_keys row was altered)"
            ) from None

    def _remember(self, cache: _KeyCache, row: Any) -> None:  # a Row of data_keys columns
        if row.wrapped is None:
            cache.by_id[row.id] = (row.subject, None)
            return
        cipher = AESGCM(self._unwrap(row.id, row.subject, row.kek_id, bytes(row.wrapped)))
        cache.by_id[row.id] = (row.subject, cipher)

    def _load_ids(self, session: AnySession, cache: _KeyCache, ids: list[str]) -> None:
        t = self.table
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            for row in session.execute(select(t.c.id, t.c.subject, t.c.kek_id, t.c.wrapped).where(t.c.id.in_(chunk))):
                self._remember(cache, row)

    def _load_subjects(self, session: AnySession, cache: _KeyCache, subjects: list[str], create: bool) -> None:
        t = self.table
        for start in range(0, len(subjects), _IN_CHUNK):
            chunk = subjects[start : start + _IN_CHUNK]
            rows = session.execute(
                select(t.c.id, t.c.subject, t.c.kek_id, t.c.wrapped, t.c.created_at)
                .where(t.c.subject.in_(chunk), t.c.wrapped.is_not(None))
                .order_by(t.c.created_at, t.c.id)
            )
            for row in rows:  # ascending: the newest live key of a subject wins
                self._remember(cache, row)
                cipher = cache.by_id[row.id][1]
                assert cipher is not None  # only live keys were selected
                cache.by_subject[row.subject] = (row.id, cipher)
        if not create:
            return
        new_rows = []
        now = utcnow()
        primary_id, primary = self.keyring.primary_id, self.keyring.primary
        for subject in subjects:
            if subject in cache.by_subject:
                continue
            key_id, key = uuid.uuid4().hex, AESGCM.generate_key(bit_length=256)
            new_rows.append(
                {
                    "id": key_id,
                    "subject": subject,
                    "kek_id": primary_id,
                    "wrapped": _wrap(primary, primary_id, key_id, subject, key),
                    "created_at": now,
                    "shredded_at": None,
                }
            )
            cipher = AESGCM(key)
            cache.by_id[key_id] = (subject, cipher)
            cache.by_subject[subject] = (key_id, cipher)
        if new_rows:
            session.execute(insert(t), new_rows)


def _check_subject(subject: Any) -> None:
    if not isinstance(subject, str) or not subject or len(subject) > 200:
        raise ValueError("subject must be a non-empty string of at most 200 characters")


def _location(table: str, column: str, row_id: Any) -> bytes:
    if row_id is None:
        raise ValueError("row_id is required (encrypt after the row has its id)")
    if not table or not column or ":" in table or "." in column or ":" in column:
        raise ValueError("table and column must be non-empty; column without '.' or ':'; table without ':'")
    return f"{table}.{column}:{row_id}".encode()


def _wrap_aad(kek_id: str, key_id: str, subject: str) -> bytes:
    return f"recept.data_key.v1\x00{kek_id}\x00{key_id}\x00{subject}".encode()


def _wrap(kek: bytes, kek_id: str, key_id: str, subject: str, key: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return bytes([WRAP_VERSION]) + nonce + AESGCM(kek).encrypt(nonce, key, _wrap_aad(kek_id, key_id, subject))
