"""Personal data at rest (R7, R16): field encryption, per-subject data keys, crypto-shredding, blind indexes.

Key hierarchy (see docs/crypto.md)::

    Keyring (environment / mounted secret)
      KEKs {kid: 32 bytes}, one primary ──wraps──▶ data_keys row per data subject (32-byte data key)
      index_key ──HKDF(kind)──▶ blind-index HMAC keys            │
                                                                  └──encrypts──▶ fields of that subject

Only primitives from the ``cryptography`` package are used: AES-256-GCM (``AESGCM``),
HMAC-SHA256 and HKDF-SHA256.  Nothing in this module puts key material or personal data
into an exception message or a ``repr``.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import unicodedata
import uuid
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
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
from sqlalchemy.orm import scoped_session

from shared.errors import Invalid

__all__ = [
    "ERASED",
    "ErasedType",
    "KeyringError",
    "DecryptionError",
    "Keyring",
    "crypto_tables",
    "Vault",
    "BlindIndex",
    "normalise_email",
    "normalise_phone",
    "normalise_personnummer",
    "normalise_name",
]

KEY_BYTES = 32          # AES-256 KEKs, data keys and the index key
NONCE_BYTES = 12        # AES-GCM nonce
TAG_BYTES = 16          # AES-GCM tag
FIELD_VERSION = 1       # first byte of every field ciphertext
WRAP_VERSION = 1        # first byte of every wrapped data key
_FLAG_BYTES = 0         # first plaintext byte: the value was bytes
_FLAG_STR = 1           # ... the value was str (UTF-8)
_HEADER = 1 + 16        # version byte + data-key id (uuid, 16 raw bytes)
_MIN_BLOB = _HEADER + NONCE_BYTES + TAG_BYTES + 1
_KID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


# --- ERASED -----------------------------------------------------------------------------------

class ErasedType:
    """Type of :data:`ERASED`, the value of a field whose data subject was crypto-shredded."""

    __slots__ = ()
    _instance: "ErasedType | None" = None

    def __new__(cls) -> "ErasedType":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<erased>"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "ERASED"          # pickles as the module-level singleton

    def __copy__(self) -> "ErasedType":
        return self

    def __deepcopy__(self, _memo) -> "ErasedType":
        return self


ERASED = ErasedType()


# --- errors -----------------------------------------------------------------------------------

class KeyringError(ValueError):
    """The keyring is malformed, incomplete, or does not fit the stored keys.

    Messages name key ids and lengths, never key material.
    """


class DecryptionError(ValueError):
    """A ciphertext is corrupt, tampered with, or was moved to another row or column."""


# --- Keyring ----------------------------------------------------------------------------------

def _b64key(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise KeyringError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{what} is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise KeyringError(f"{what} must decode to {KEY_BYTES} bytes, not {len(raw)}")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class Keyring:
    """Key-encryption keys (KEKs) by id, one of them primary, plus the blind-index key.

    Immutable: :meth:`rotated` and :meth:`without` return new keyrings.  JSON form::

        {"primary": "<kid>", "keys": {"<kid>": "<base64 32 bytes>", ...}, "index_key": "<base64 32 bytes>"}
    """

    __slots__ = ("_keys", "primary_id", "index_key")

    def __init__(self, keys: Mapping[str, bytes], primary_id: str, index_key: bytes) -> None:
        if not keys:
            raise KeyringError("keyring has no key-encryption keys")
        checked: dict[str, bytes] = {}
        for kid, key in keys.items():
            if not isinstance(kid, str) or not _KID.match(kid):
                raise KeyringError("key ids must be 1-64 characters of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
            if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
                raise KeyringError(f"key {kid!r} must be {KEY_BYTES} bytes")
            checked[kid] = bytes(key)
        if primary_id not in checked:
            raise KeyringError(f"primary key id {primary_id!r} is not among the keyring's keys")
        if not isinstance(index_key, (bytes, bytearray)) or len(index_key) != KEY_BYTES:
            raise KeyringError(f"index_key must be {KEY_BYTES} bytes")
        if bytes(index_key) in checked.values():
            raise KeyringError("index_key must differ from every key-encryption key")
        self._keys = checked
        self.primary_id: str = primary_id
        self.index_key: bytes = bytes(index_key)

    # construction

    @classmethod
    def generate(cls) -> "Keyring":
        kid = secrets.token_hex(8)
        return cls({kid: os.urandom(KEY_BYTES)}, kid, os.urandom(KEY_BYTES))

    @classmethod
    def from_json(cls, text: str) -> "Keyring":
        if isinstance(text, (bytes, bytearray)):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise KeyringError("keyring is not UTF-8 text") from None
        if not isinstance(text, str):
            raise KeyringError("keyring must be JSON text")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyringError(f"keyring is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
        if not isinstance(data, dict):
            raise KeyringError('keyring JSON must be an object {"primary", "keys", "index_key"}')
        unknown = sorted(set(data) - {"primary", "keys", "index_key"})
        if unknown:
            raise KeyringError(f"keyring has unknown fields: {', '.join(map(repr, unknown))}")
        missing = [name for name in ("primary", "keys", "index_key") if name not in data]
        if missing:
            raise KeyringError(f"keyring is missing: {', '.join(missing)}")
        primary, keys = data["primary"], data["keys"]
        if not isinstance(primary, str):
            raise KeyringError('keyring "primary" must be a key id string')
        if not isinstance(keys, dict) or not keys:
            raise KeyringError('keyring "keys" must be a non-empty object {"<kid>": "<base64>"}')
        decoded = {}
        for kid, value in keys.items():
            if not _KID.match(kid):
                raise KeyringError("key ids must be 1-64 characters of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
            decoded[kid] = _b64key(value, f"key {kid!r}")
        return cls(decoded, primary, _b64key(data["index_key"], "index_key"))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Keyring":
        """From ``config["KEYRING"]`` (JSON text) or ``config["KEYRING_FILE"]`` (path); exactly one."""
        text = config.get("KEYRING") or None
        path = config.get("KEYRING_FILE") or None
        if text and path:
            raise KeyringError("both KEYRING and KEYRING_FILE are set; set only one")
        if text:
            return cls.from_json(text)
        if path:
            try:
                content = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise KeyringError(f"cannot read KEYRING_FILE {str(path)!r}: {reason}") from None
            try:
                return cls.from_json(content)
            except KeyringError as exc:
                raise KeyringError(f"KEYRING_FILE {str(path)!r}: {exc}") from None
        raise KeyringError(
            "no keyring configured: set RECEPT_<SERVICE>_KEYRING (JSON) or RECEPT_<SERVICE>_KEYRING_FILE "
            "(path of a JSON file); `./recept keys` prints a new one"
        )

    # serialisation and rotation

    def to_json(self) -> str:
        keys = {self.primary_id: _b64(self._keys[self.primary_id])}
        keys.update((kid, _b64(key)) for kid, key in self._keys.items() if kid != self.primary_id)
        # one line, so it fits an environment variable or a .env file
        return json.dumps({"primary": self.primary_id, "keys": keys, "index_key": _b64(self.index_key)})

    def rotated(self) -> "Keyring":
        """A new random primary KEK; every old KEK stays (for unwrapping) and the index key is kept."""
        kid = secrets.token_hex(8)
        while kid in self._keys:  # pragma: no cover - 64-bit collision
            kid = secrets.token_hex(8)
        return Keyring({**self._keys, kid: os.urandom(KEY_BYTES)}, kid, self.index_key)

    def without(self, kid: str) -> "Keyring":
        """This keyring minus one retired, non-primary KEK (after :meth:`Vault.rewrap`)."""
        self.kek(kid)
        if kid == self.primary_id:
            raise KeyringError("cannot remove the primary key; rotate first")
        return Keyring({k: v for k, v in self._keys.items() if k != kid}, self.primary_id, self.index_key)

    # access

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    @property
    def primary(self) -> bytes:
        return self._keys[self.primary_id]

    def kek(self, kid: str) -> bytes:
        try:
            return self._keys[kid]
        except (KeyError, TypeError):
            raise KeyringError(
                f"keyring has no key-encryption key {kid!r}; it has {', '.join(map(repr, self._keys))}"
            ) from None

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Keyring):
            return NotImplemented
        return (self.primary_id, self._keys, self.index_key) == (other.primary_id, other._keys, other.index_key)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Keyring primary={self.primary_id!r} keys={list(self._keys)!r}>"


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
        Column("id", String(32), primary_key=True),               # uuid4 hex
        Column("subject", String(200), nullable=False, index=True),  # pseudonymous subject reference
        Column("kek_id", String(64), nullable=False),
        Column("wrapped", LargeBinary, nullable=True),              # NULL once shredded
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("shredded_at", DateTime(timezone=True), nullable=True),
    )


# --- Vault ------------------------------------------------------------------------------------

_CACHE_PREFIX = "recept.crypto.keys:"
_LISTENING = "recept.crypto.listening"
_IN_CHUNK = 500  # subjects / ids per IN (...) query


class _KeyCache:
    """Unwrapped data keys of one session's current transaction."""

    __slots__ = ("by_id", "by_subject")

    def __init__(self) -> None:
        self.by_id: dict[str, tuple[str, AESGCM | None]] = {}    # key id -> (subject, cipher or None if shredded)
        self.by_subject: dict[str, tuple[str, AESGCM]] = {}       # subject -> (key id, cipher) used to encrypt


def _drop_caches(session, _transaction) -> None:
    # Any transaction end (commit, rollback, savepoint release/rollback, close) drops the cache:
    # a rolled-back savepoint may have created or shredded keys the cache still remembers.
    for name in [k for k in session.info if isinstance(k, str) and k.startswith(_CACHE_PREFIX)]:
        del session.info[name]


def _now() -> datetime:
    return datetime.now(timezone.utc)


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

    def __init__(self, keyring: Keyring, table: Table) -> None:
        missing = {"id", "subject", "kek_id", "wrapped", "created_at", "shredded_at"} - set(table.c.keys())
        if missing:
            raise ValueError(f"table {table.name!r} is not a data_keys table (missing {', '.join(sorted(missing))})")
        self.keyring = keyring
        self.table = table
        self._cache_name = _CACHE_PREFIX + table.fullname

    # -- public API ----------------------------------------------------------------------------

    def encrypt(self, session, subject: str, table: str, column: str, row_id, value: str | bytes | None) -> bytes | None:
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

    def decrypt(self, session, table: str, column: str, row_id, blob: bytes | None) -> str | bytes | None | ErasedType:
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
        header, nonce = blob[:_HEADER], blob[_HEADER:_HEADER + NONCE_BYTES]
        try:
            plaintext = cipher.decrypt(nonce, blob[_HEADER + NONCE_BYTES:], header + _location(table, column, row_id))
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

    def shred(self, session, subject: str) -> int:
        """Destroy every data key of ``subject``; returns how many were live.  Idempotent."""
        _check_subject(subject)
        t = self.table
        result = session.execute(
            update(t)
            .where(t.c.subject == subject, t.c.wrapped.is_not(None))
            .values(wrapped=None, shredded_at=_now())
        )
        cache = session.info.get(self._cache_name)
        if cache is not None:
            cache.by_subject.pop(subject, None)
            for key_id, (owner, _cipher) in list(cache.by_id.items()):
                if owner == subject:
                    cache.by_id[key_id] = (owner, None)
        return result.rowcount

    def is_shredded(self, session, subject: str) -> bool:
        """True when ``subject`` has data keys and all of them are shredded."""
        _check_subject(subject)
        t = self.table
        total, live = session.execute(
            select(func.count(), func.count(t.c.wrapped)).where(t.c.subject == subject)
        ).one()
        return total > 0 and live == 0

    def rewrap(self, session, batch: int = 1000) -> int:
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
                params.append({"b_id": row.id, "b_old": row.kek_id,
                               "b_wrapped": _wrap(primary, primary_id, row.id, row.subject, key)})
            result = session.execute(stmt, params)
            dialect = session.connection().dialect
            count += result.rowcount if dialect.supports_sane_multi_rowcount else len(params)
            last = rows[-1].id

    # -- bulk helpers (optional; they only save round trips) ------------------------------------

    def prepare(self, session, subjects: Iterable[str]) -> None:
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

    def prefetch(self, session, blobs: Iterable[bytes | None]) -> None:
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

    def _cache(self, session) -> _KeyCache:
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
            return AESGCM(kek).decrypt(wrapped[1:1 + NONCE_BYTES], wrapped[1 + NONCE_BYTES:],
                                       _wrap_aad(kek_id, key_id, subject))
        except InvalidTag:
            raise KeyringError(
                f"data key {key_id} does not unwrap with key-encryption key {kek_id!r} "
                "(wrong key material under that id, or the data_keys row was altered)"
            ) from None

    def _remember(self, cache: _KeyCache, row) -> None:
        if row.wrapped is None:
            cache.by_id[row.id] = (row.subject, None)
            return
        cipher = AESGCM(self._unwrap(row.id, row.subject, row.kek_id, bytes(row.wrapped)))
        cache.by_id[row.id] = (row.subject, cipher)

    def _load_ids(self, session, cache: _KeyCache, ids: list[str]) -> None:
        t = self.table
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start:start + _IN_CHUNK]
            for row in session.execute(
                select(t.c.id, t.c.subject, t.c.kek_id, t.c.wrapped).where(t.c.id.in_(chunk))
            ):
                self._remember(cache, row)

    def _load_subjects(self, session, cache: _KeyCache, subjects: list[str], create: bool) -> None:
        t = self.table
        for start in range(0, len(subjects), _IN_CHUNK):
            chunk = subjects[start:start + _IN_CHUNK]
            rows = session.execute(
                select(t.c.id, t.c.subject, t.c.kek_id, t.c.wrapped, t.c.created_at)
                .where(t.c.subject.in_(chunk), t.c.wrapped.is_not(None))
                .order_by(t.c.created_at, t.c.id)
            )
            for row in rows:  # ascending: the newest live key of a subject wins
                self._remember(cache, row)
                cache.by_subject[row.subject] = (row.id, cache.by_id[row.id][1])
        if not create:
            return
        new_rows = []
        now = _now()
        primary_id, primary = self.keyring.primary_id, self.keyring.primary
        for subject in subjects:
            if subject in cache.by_subject:
                continue
            key_id, key = uuid.uuid4().hex, AESGCM.generate_key(bit_length=256)
            new_rows.append({"id": key_id, "subject": subject, "kek_id": primary_id,
                             "wrapped": _wrap(primary, primary_id, key_id, subject, key),
                             "created_at": now, "shredded_at": None})
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
    return f"{table}.{column}:{row_id}".encode("utf-8")


def _wrap_aad(kek_id: str, key_id: str, subject: str) -> bytes:
    return f"recept.data_key.v1\x00{kek_id}\x00{key_id}\x00{subject}".encode("utf-8")


def _wrap(kek: bytes, kek_id: str, key_id: str, subject: str, key: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return bytes([WRAP_VERSION]) + nonce + AESGCM(kek).encrypt(nonce, key, _wrap_aad(kek_id, key_id, subject))


# --- blind indexes ----------------------------------------------------------------------------

class BlindIndex:
    """Keyed, truncated HMAC-SHA256 of normalised values, for lookups on encrypted columns (R7).

    ``of(kind, value)`` = the top ``bits`` bits of HMAC-SHA256(K_kind, value), where
    K_kind = HKDF-SHA256(keyring.index_key, info="recept.blind-index.v1:" + kind).  The result
    is a non-negative int below 2**bits (``bits`` <= 63, so it fits a signed BIGINT column).

    Choosing ``bits``: an index value should match *several* rows at the planned scale, so the
    index does not single anyone out (no frequency analysis or cross-table linking of one
    person).  Expected rows per value = N / 2**bits for N indexed values, so pick
    ``bits ≈ log2(N / k)`` for k matches per value (k ≈ 10-50):

    =========  ==========================
    bits       rows per value
    =========  ==========================
    12         ~24 at 100 000, ~240 at 1M
    16         ~1.5 at 100 000, ~15 at 1M
    20         ~10 at 10M
    =========  ==========================

    A lookup selects the rows with the index value, decrypts them and keeps those whose
    normalised plaintext equals the query: false positives are filtered, there are never
    false negatives.  Changing ``bits`` or the index key means recomputing every index column,
    which is why :meth:`Keyring.rotated` keeps the index key.
    """

    def __init__(self, keyring: Keyring, bits: int = 16) -> None:
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 63:
            raise ValueError("bits must be an integer from 1 to 63")
        self.bits = bits
        self._index_key = keyring.index_key
        self._keys: dict[str, bytes] = {}

    def _key(self, kind: str) -> bytes:
        key = self._keys.get(kind)
        if key is None:
            if not isinstance(kind, str) or not kind:
                raise ValueError("kind must be a non-empty string")
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=b"recept.blind-index.v1:" + kind.encode("utf-8")).derive(self._index_key)
            self._keys[kind] = key
        return key

    def of(self, kind: str, normalised_value: str) -> int:
        if not isinstance(normalised_value, str):
            raise TypeError("normalised_value must be a str")
        mac = hmac.HMAC(self._key(kind), hashes.SHA256())
        mac.update(normalised_value.encode("utf-8"))
        return int.from_bytes(mac.finalize()[:8], "big") >> (64 - self.bits)

    def email(self, value: str) -> int:
        return self.of("email", normalise_email(value))

    def phone(self, value: str) -> int:
        return self.of("phone", normalise_phone(value))

    def personnummer(self, value: str) -> int:
        return self.of("personnummer", normalise_personnummer(value))

    def name(self, value: str) -> int:
        return self.of("name", normalise_name(value))

    def __repr__(self) -> str:
        return f"<BlindIndex bits={self.bits}>"


# --- normalisation ----------------------------------------------------------------------------

def _invalid(field: str, message: str) -> Invalid:
    return Invalid(message, errors=[{"field": field, "message": message}])


_EMAIL_LABEL = re.compile(r"[^\s@.]+\Z")


def normalise_email(value: Any, *, field: str = "email") -> str:
    """Trimmed, lower-cased e-mail address; :class:`Invalid` unless it is a plausible address."""
    if not isinstance(value, str):
        raise _invalid(field, "e-mail address must be a string")
    text = unicodedata.normalize("NFC", value).strip().lower()
    local, at, domain = text.rpartition("@")
    labels = domain.split(".")
    if (
        not at or not local or len(local) > 64 or len(text) > 254
        or any(ch.isspace() or unicodedata.category(ch)[0] == "C" for ch in text)
        or "@" in local or ".." in local or local.startswith(".") or local.endswith(".")
        or len(labels) < 2 or not all(_EMAIL_LABEL.match(label) for label in labels)
        or any(label.startswith("-") or label.endswith("-") for label in labels)
    ):
        raise _invalid(field, "not a valid e-mail address")
    return text


_PHONE_SEPARATORS = re.compile(r"[\s\-./()]")


def normalise_phone(value: Any, default_country: str = "46", *, field: str = "phone") -> str:
    """E.164 (``+46701234567``).

    ``+CC…`` and ``00CC…`` are international; ``0…`` is national in ``default_country``;
    bare digits (``46701234567``, as phone switches log them) are read as E.164 without the
    ``+``.  Spaces, ``-``, ``.``, ``/`` and parentheses are ignored, and so is a ``(0)``
    trunk prefix after a country code (``+46 (0)70 …``).
    """
    if not isinstance(default_country, str) or not re.fullmatch(r"[1-9]\d{0,2}", default_country):
        raise ValueError("default_country must be a country calling code such as '46'")
    if not isinstance(value, str):
        raise _invalid(field, "phone number must be a string")
    text = unicodedata.normalize("NFKC", value).strip()
    international = text.startswith("+") or text.startswith("00")
    if international:
        text = text.replace("(0)", "")
    digits = _PHONE_SEPARATORS.sub("", text)
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    elif digits.startswith("0"):
        digits = default_country + digits[1:]
    if not digits.isascii() or not digits.isdigit() or digits.startswith("0") or not 7 <= len(digits) <= 15:
        raise _invalid(field, "not a valid phone number")
    return "+" + digits


def normalise_name(value: Any, *, field: str = "name") -> str:
    """NFKC, case-folded, inner whitespace collapsed to one space, stripped."""
    if not isinstance(value, str):
        raise _invalid(field, "name must be a string")
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


_PNR = re.compile(r"(\d{2})?(\d{6})([-+]?)(\d{4})\Z")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(digits):
        n = int(ch) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def normalise_personnummer(value: Any, today: date | None = None, *, field: str = "personnummer") -> str:
    """Swedish personal identity (or co-ordination) number as 12 digits ``YYYYMMDDNNNN``.

    Accepts ``YYYYMMDD-NNNN``, ``YYYYMMDDNNNN``, ``YYMMDD-NNNN``, ``YYMMDDNNNN`` and
    ``YYMMDD+NNNN``.  Checks the Luhn digit of the 10-digit form and the birth date (day + 60
    for a samordningsnummer; not in the future).  Two-digit years take the century that makes
    the person 0-99 years old on ``today``; with ``+`` the person turns 100 or more this year
    (Skatteverket writes ``+`` from January 1st of the year the person turns 100).  The day
    digits are kept as written, so a samordningsnummer keeps its day + 60.
    """
    if not isinstance(value, str):
        raise _invalid(field, "personal identity number must be a string")
    today = today or date.today()
    match = _PNR.match(unicodedata.normalize("NFKC", value).strip())
    if not match:
        raise _invalid(field, "not a valid personal identity number")
    century, yymmdd, sep, tail = match.groups()
    if century and sep == "+":
        raise _invalid(field, "not a valid personal identity number")
    yy, mm, dd = int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:6])
    day = dd - 60 if dd > 60 else dd
    if century:
        year = int(century) * 100 + yy
    elif sep == "+":
        year = today.year - 100 - (today.year - 100 - yy) % 100
    else:
        year = today.year - (today.year - yy) % 100
        if (year, mm, day) > (today.year, today.month, today.day):
            year -= 100
    try:
        born = date(year, mm, day)
    except ValueError:
        raise _invalid(field, "personal identity number has an impossible date") from None
    if born > today:
        raise _invalid(field, "personal identity number has an impossible date")
    if not _luhn_ok(yymmdd + tail):
        raise _invalid(field, "personal identity number has a wrong check digit")
    return f"{year:04d}{yymmdd[2:]}{tail}"
