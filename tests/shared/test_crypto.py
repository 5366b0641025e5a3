"""shared.crypto: field encryption, per-subject keys, crypto-shredding, rotation, blind indexes (R7, R16)."""

from __future__ import annotations

import base64
import copy
import json
import pickle
import uuid

import pytest
from sqlalchemy import BigInteger, Column, LargeBinary, String, Table, event, select

from shared.config import load_config
from shared.crypto import (
    ERASED,
    BlindIndex,
    DecryptionError,
    Keyring,
    KeyringError,
    Vault,
    crypto_tables,
)
from shared.db import Database, new_metadata
from shared.normalise import normalise_email, normalise_name
from tests.conftest import raw_dump
from tests.shared.support import assert_no_leak

# --- helpers ----------------------------------------------------------------------------------


class Env:
    def __init__(self, url: str, keyring: Keyring | None = None) -> None:
        self.url = url
        self.keyring = keyring or Keyring.generate()
        self.metadata = new_metadata()
        self.keys = crypto_tables(self.metadata)
        self.people = Table(
            "people",
            self.metadata,
            Column("id", String(32), primary_key=True),
            Column("subject", String(200), nullable=False),
            Column("email", LargeBinary),
            Column("name", LargeBinary),
            Column("photo", LargeBinary),
            Column("email_idx", BigInteger),
        )
        self.db = Database(url)
        self.metadata.create_all(self.db.engine)
        self.vault = Vault(self.keyring, self.keys)

    def store(self, subject: str, **fields) -> str:
        """Insert a people row with its fields encrypted; returns the row id."""
        row_id = uuid.uuid4().hex
        with self.db.transaction() as s:
            values = {c: self.vault.encrypt(s, subject, "people", c, row_id, v) for c, v in fields.items()}
            s.execute(self.people.insert().values(id=row_id, subject=subject, **values))
        return row_id

    def load(self, row_id: str, vault: Vault | None = None) -> dict:
        vault = vault or self.vault
        with self.db.transaction() as s:
            row = s.execute(select(self.people).where(self.people.c.id == row_id)).one()
            return {c: vault.decrypt(s, "people", c, row_id, getattr(row, c)) for c in ("email", "name", "photo")}

    def key_rows(self):
        with self.db.transaction() as s:
            return s.execute(select(self.keys).order_by(self.keys.c.created_at)).all()


@pytest.fixture
def env(database_url):
    e = Env(database_url)
    yield e
    e.db.dispose()


class StatementCounter:
    def __init__(self, engine) -> None:
        self.engine, self.count = engine, 0

    def _on(self, _conn, _cursor, statement, *_args) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "PRAGMA")):  # SQLite's BEGIN IMMEDIATE
            self.count += 1

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._on)
        return self

    def __exit__(self, *_exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on)


# --- ERASED -----------------------------------------------------------------------------------


def test_erased_is_a_falsy_singleton():
    assert repr(ERASED) == "<erased>"
    assert not ERASED
    assert type(ERASED)() is ERASED
    assert copy.copy(ERASED) is ERASED and copy.deepcopy(ERASED) is ERASED
    assert pickle.loads(pickle.dumps(ERASED)) is ERASED


# --- Vault: field encryption ------------------------------------------------------------------


def test_round_trip_str_bytes_none(env):
    row = env.store("crm:person:1", email="Anna.Svensson@example.se", name="Åsa Öberg ☃", photo=b"\x00\xffJPEG")
    assert env.load(row) == {"email": "Anna.Svensson@example.se", "name": "Åsa Öberg ☃", "photo": b"\x00\xffJPEG"}
    empty = env.store("crm:person:1", email="", name=None, photo=b"")
    loaded = env.load(empty)
    assert loaded == {"email": "", "name": None, "photo": b""}
    assert type(loaded["email"]) is str and type(loaded["photo"]) is bytes
    with env.db.transaction() as s:  # same session, straight back
        blob = env.vault.encrypt(s, "crm:person:2", "people", "name", 7, "Bo")
        assert env.vault.decrypt(s, "people", "name", 7, blob) == "Bo"
        assert env.vault.decrypt(s, "people", "name", "7", memoryview(blob)) == "Bo"
        assert env.vault.encrypt(s, "crm:person:2", "people", "name", 7, None) is None
        assert env.vault.decrypt(s, "people", "name", 7, None) is None
        # a fresh nonce each time
        assert env.vault.encrypt(s, "crm:person:2", "people", "name", 7, "Bo") != blob


def test_moved_ciphertext_fails(env):
    secret = "moved-secret@example.se"
    with env.db.transaction() as s:
        blob = env.vault.encrypt(s, "crm:person:1", "people", "email", "row-1", secret)
        for table, column, row_id in [
            ("people", "email", "row-2"),
            ("people", "name", "row-1"),
            ("contacts", "email", "row-1"),
        ]:
            with pytest.raises(DecryptionError) as info:
                env.vault.decrypt(s, table, column, row_id, blob)
            assert_no_leak(info, secret)
        assert env.vault.decrypt(s, "people", "email", "row-1", blob) == secret


def test_flipped_or_truncated_ciphertext_fails(env):
    with env.db.transaction() as s:
        blob = env.vault.encrypt(s, "crm:person:1", "people", "email", 1, "flip@example.se")
    with env.db.transaction() as s:
        for i in range(len(blob)):  # version byte, key id, nonce, ciphertext and tag alike
            tampered = bytearray(blob)
            tampered[i] ^= 0x01
            with pytest.raises(DecryptionError):
                env.vault.decrypt(s, "people", "email", 1, bytes(tampered))
        for bad in (b"", blob[:20], blob[:-1]):
            with pytest.raises(DecryptionError):
                env.vault.decrypt(s, "people", "email", 1, bad)
        assert env.vault.decrypt(s, "people", "email", 1, blob) == "flip@example.se"


def test_bad_arguments(env):
    with env.db.transaction() as s:
        with pytest.raises(ValueError, match="row_id"):
            env.vault.encrypt(s, "crm:person:1", "people", "email", None, "x")
        with pytest.raises(TypeError):
            env.vault.encrypt(s, "crm:person:1", "people", "email", 1, 12345)
        with pytest.raises(ValueError, match="subject"):
            env.vault.encrypt(s, "", "people", "email", 1, "x")
        with pytest.raises(ValueError):
            env.vault.encrypt(s, "crm:person:1", "people", "e.mail", 1, "x")
    with pytest.raises(ValueError, match="data_keys"):
        Vault(env.keyring, env.people)


def test_crypto_tables_schema():
    metadata = new_metadata()
    table = crypto_tables(metadata)
    assert crypto_tables(metadata) is table
    assert table.name == "data_keys"
    c = table.c
    assert c.id.primary_key and c.id.type.length == 32
    assert c.subject.type.length == 200 and c.subject.index and not c.subject.unique
    assert c.kek_id.type.length == 64
    assert c.wrapped.nullable and c.shredded_at.nullable
    assert c.created_at.type.timezone and c.shredded_at.type.timezone


# --- crypto-shredding -------------------------------------------------------------------------


def test_shred_erases_one_subject_only(env):
    anna = [env.store("crm:person:anna", email="anna@example.se", name="Anna", photo=b"anna-photo") for _ in range(3)]
    bo = env.store("crm:person:bo", email="bo@example.se", name="Bo", photo=b"bo-photo")
    with env.db.transaction() as s:
        # fill the session's key cache first: the shred must invalidate it
        row = s.execute(select(env.people.c.email).where(env.people.c.id == anna[0])).scalar_one()
        assert env.vault.decrypt(s, "people", "email", anna[0], row) == "anna@example.se"
        assert env.vault.shred(s, "crm:person:anna") == 1
        assert env.vault.decrypt(s, "people", "email", anna[0], row) is ERASED
        assert env.vault.is_shredded(s, "crm:person:anna")
        assert not env.vault.is_shredded(s, "crm:person:bo")
        assert not env.vault.is_shredded(s, "crm:person:nobody")
    for row_id in anna:
        assert env.load(row_id) == {"email": ERASED, "name": ERASED, "photo": ERASED}
    assert env.load(bo) == {"email": "bo@example.se", "name": "Bo", "photo": b"bo-photo"}
    shredded = [r for r in env.key_rows() if r.subject == "crm:person:anna"]
    assert len(shredded) == 1 and shredded[0].wrapped is None and shredded[0].shredded_at is not None

    # twice is harmless: nothing left to destroy, the first shred time stays
    with env.db.transaction() as s:
        assert env.vault.shred(s, "crm:person:anna") == 0
        assert env.vault.shred(s, "crm:person:nobody") == 0
        assert env.vault.is_shredded(s, "crm:person:anna")
    again = [r for r in env.key_rows() if r.subject == "crm:person:anna"]
    assert again[0].shredded_at == shredded[0].shredded_at
    assert env.load(anna[1])["name"] is ERASED
    assert env.load(bo)["name"] == "Bo"


def test_new_data_after_shred_gets_a_new_key(env):
    old = env.store("orders:individual:1", name="Old Name")
    with env.db.transaction() as s:
        env.vault.shred(s, "orders:individual:1")
        blob = env.vault.encrypt(s, "orders:individual:1", "people", "name", "x", "New Name")
        assert env.vault.decrypt(s, "people", "name", "x", blob) == "New Name"
        assert not env.vault.is_shredded(s, "orders:individual:1")  # a live key exists again
    assert env.load(old)["name"] is ERASED
    rows = env.key_rows()
    assert len(rows) == 2 and [r.wrapped is None for r in rows] == [True, False]


def test_rolled_back_savepoint_does_not_leave_phantom_keys(env):
    row_id = uuid.uuid4().hex
    with env.db.transaction() as s:
        with pytest.raises(RuntimeError):
            with s.begin_nested():
                env.vault.encrypt(s, "crm:person:sp", "people", "name", row_id, "Savepoint")
                raise RuntimeError("roll the savepoint back")
        blob = env.vault.encrypt(s, "crm:person:sp", "people", "name", row_id, "Savepoint")
        s.execute(env.people.insert().values(id=row_id, subject="crm:person:sp", name=blob))
    assert env.load(row_id)["name"] == "Savepoint"


def test_shred_then_rollback_keeps_data(env):
    row_id = env.store("crm:person:r", name="Kept")
    s = env.db.sessions()
    try:
        blob = s.execute(select(env.people.c.name).where(env.people.c.id == row_id)).scalar_one()
        assert env.vault.shred(s, "crm:person:r") == 1
        assert env.vault.decrypt(s, "people", "name", row_id, blob) is ERASED
        s.rollback()
        assert env.vault.decrypt(s, "people", "name", row_id, blob) == "Kept"
    finally:
        s.close()


# --- caching and bulk paths -------------------------------------------------------------------


def test_key_cache_per_session(env):
    with StatementCounter(env.db.engine) as counter, env.db.transaction() as s:
        blobs = [env.vault.encrypt(s, "crm:person:c", "people", "name", i, f"value {i}") for i in range(50)]
    assert counter.count <= 2  # one SELECT (no key yet) and one INSERT for 50 fields
    with StatementCounter(env.db.engine) as counter, env.db.transaction() as s:
        assert [env.vault.decrypt(s, "people", "name", i, b) for i, b in enumerate(blobs)] == [
            f"value {i}" for i in range(50)
        ]
    assert counter.count == 1


def test_many_subjects_in_one_transaction(env):
    subjects = [f"orders:individual:{i}" for i in range(1200)]
    with StatementCounter(env.db.engine) as counter, env.db.transaction() as s:
        env.vault.prepare(s, subjects + subjects[:10])
        blobs = [env.vault.encrypt(s, subj, "people", "name", i, f"Person {i}") for i, subj in enumerate(subjects)]
    assert counter.count <= 6  # three chunked SELECTs and a bulk INSERT, not 2 400 statements
    assert len({r.subject for r in env.key_rows()}) == 1200
    with StatementCounter(env.db.engine) as counter, env.db.transaction() as s:
        env.vault.prefetch(s, blobs + [None])
        env.vault.prepare(s, subjects[:5])  # existing keys are found, none created
        values = [env.vault.decrypt(s, "people", "name", i, b) for i, b in enumerate(blobs)]
    assert values == [f"Person {i}" for i in range(1200)]
    assert counter.count <= 4
    assert len(env.key_rows()) == 1200


# --- rotation ---------------------------------------------------------------------------------


def test_rotation_and_rewrap(env):
    old_kid = env.keyring.primary_id
    rows = {
        f"crm:person:{i}": env.store(f"crm:person:{i}", email=f"p{i}@example.se", photo=bytes([i])) for i in range(5)
    }
    with env.db.transaction() as s:
        env.vault.shred(s, "crm:person:4")

    rotated = env.keyring.rotated()
    assert rotated.primary_id != old_kid and old_kid in rotated and rotated.index_key == env.keyring.index_key
    vault2 = Vault(rotated, env.keys)
    assert env.load(rows["crm:person:0"], vault2)["email"] == "p0@example.se"  # old wrapped keys still unwrap
    with env.db.transaction() as s:
        blob = vault2.encrypt(s, "crm:person:new", "people", "name", "n", "Newcomer")
    assert {r.kek_id for r in env.key_rows() if r.subject == "crm:person:new"} == {rotated.primary_id}

    with env.db.transaction() as s:
        assert vault2.rewrap(s, batch=2) == 4  # four live keys on the old KEK; the shredded one stays shredded
    live = [r for r in env.key_rows() if r.wrapped is not None]
    assert len(live) == 5 and {r.kek_id for r in live} == {rotated.primary_id}
    assert [r.wrapped for r in env.key_rows() if r.subject == "crm:person:4"] == [None]
    with env.db.transaction() as s:
        assert vault2.rewrap(s) == 0

    retired = Vault(rotated.without(old_kid), env.keys)  # the old KEK is no longer needed
    for i in range(4):
        assert env.load(rows[f"crm:person:{i}"], retired) == {
            "email": f"p{i}@example.se",
            "name": None,
            "photo": bytes([i]),
        }
    assert env.load(rows["crm:person:4"], retired)["email"] is ERASED
    with env.db.transaction() as s:
        assert retired.decrypt(s, "people", "name", "n", blob) == "Newcomer"


def test_missing_kek_is_a_clear_error(env):
    row_id = env.store("crm:person:k", email="k@example.se")
    old_kid = env.keyring.primary_id
    without_old = env.keyring.rotated().without(old_kid)
    with pytest.raises(KeyringError) as info:
        env.load(row_id, Vault(without_old, env.keys))
    assert old_kid in str(info.value) and "no key-encryption key" in str(info.value)
    assert_no_leak(info, base64.b64encode(env.keyring.kek(old_kid)).decode(), "k@example.se")
    with pytest.raises(KeyringError), env.db.transaction() as s:
        Vault(without_old, env.keys).rewrap(s)

    # same key id, different key material: also a keyring problem, not silent garbage
    impostor = Keyring({old_kid: b"\x01" * 32}, old_kid, env.keyring.index_key)
    with pytest.raises(KeyringError, match="does not unwrap"):
        env.load(row_id, Vault(impostor, env.keys))


# --- no plaintext at rest ---------------------------------------------------------------------


def test_raw_dump_holds_no_plaintext(env):
    index = BlindIndex(env.keyring)
    people = [
        ("anna.svensson@example.se", "Anna Svensson", b"ANNA-PHOTO-BYTES"),
        ("bo.ek@example.com", "Bo Ek", b"BO-PHOTO-BYTES"),
        ("carl-xyzzy@example.org", "Carl Xyzzy-Ström", b"CARL-PHOTO-BYTES"),
    ]
    for i, (email, name, photo) in enumerate(people):
        row_id = env.store(f"crm:person:{i}", email=email, name=name, photo=photo)
        with env.db.transaction() as s:
            s.execute(env.people.update().where(env.people.c.id == row_id).values(email_idx=index.email(email)))
    with env.db.transaction() as s:  # the data is really there
        assert s.execute(select(env.people.c.email_idx)).scalars().all() == [index.email(p[0]) for p in people]
    dump = raw_dump(env.url)
    assert b"crm:person:0" in dump  # the dump is real (pseudonymous subject references are plaintext)
    for email, name, photo in people:
        for value in (email, name, email.upper(), normalise_email(email), normalise_name(name)):
            assert value.encode() not in dump
        assert photo not in dump
    assert base64.b64encode(env.keyring.primary).decode().encode() not in dump
    assert env.keyring.primary not in dump


# --- Keyring ----------------------------------------------------------------------------------


def test_keyring_json_round_trip_and_rotation():
    ring = Keyring.generate()
    assert len(ring.kek(ring.primary_id)) == 32 and len(ring.index_key) == 32
    assert ring.index_key != ring.primary
    assert Keyring.from_json(ring.to_json()) == ring
    data = json.loads(ring.to_json())
    assert set(data) == {"primary", "keys", "index_key"} and data["primary"] == ring.primary_id
    rotated = ring.rotated()
    assert rotated.primary_id != ring.primary_id
    assert rotated.kek(ring.primary_id) == ring.primary
    assert rotated.index_key == ring.index_key
    assert Keyring.from_json(rotated.to_json()) == rotated
    assert set(rotated.key_ids) == {ring.primary_id, rotated.primary_id}
    assert ring.primary_id in rotated and "nope" not in rotated
    assert Keyring.generate().primary_id != ring.primary_id
    assert base64.b64encode(ring.primary).decode() not in repr(ring)
    with pytest.raises(KeyringError, match="'nope'"):
        ring.kek("nope")
    with pytest.raises(KeyringError, match="primary"):
        rotated.without(rotated.primary_id)
    assert rotated.without(ring.primary_id).key_ids == (rotated.primary_id,)


def _ring(**overrides) -> dict:
    data = {
        "primary": "k1",
        "keys": {"k1": base64.b64encode(b"K" * 32).decode()},
        "index_key": base64.b64encode(b"I" * 32).decode(),
    }
    data.update(overrides)
    return data


SECRET_B64 = base64.b64encode(b"S3CR3T-K3Y-MAT3RIAL-16B").decode()


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json " + SECRET_B64, "not valid JSON"),
        ("", "not valid JSON"),
        (json.dumps([SECRET_B64]), "must be an object"),
        (json.dumps({"keys": {"k1": SECRET_B64}}), "missing"),
        (json.dumps(_ring(keys={"k1": SECRET_B64})), "32 bytes"),  # short key
        (json.dumps(_ring(keys={"k1": SECRET_B64 + "!"})), "base64"),  # not base64
        (json.dumps(_ring(keys={"k1": 12345})), "base64"),
        (json.dumps(_ring(keys={})), "non-empty"),
        (json.dumps(_ring(primary="k2")), "'k2'"),  # primary not on the ring
        (json.dumps(_ring(index_key=SECRET_B64)), "index_key"),
        (json.dumps(_ring(index_key=base64.b64encode(b"K" * 32).decode())), "differ"),
        (json.dumps(_ring(keys={"bad id!": base64.b64encode(b"K" * 32).decode()})), "key ids"),
        (json.dumps(_ring(extra=SECRET_B64)), "unknown fields"),
    ],
)
def test_keyring_bad_json_is_a_clear_error(text, message):
    with pytest.raises(KeyringError, match=message) as info:
        Keyring.from_json(text)
    assert_no_leak(info, SECRET_B64, "S3CR3T", base64.b64encode(b"K" * 32).decode())
    # no chained exception (e.g. a JSONDecodeError holding the whole text) is shown with it
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_keyring_from_config(tmp_path):
    ring = Keyring.generate()
    assert Keyring.from_config({"KEYRING": ring.to_json()}) == ring
    path = tmp_path / "keyring.json"
    path.write_text(ring.to_json())
    assert Keyring.from_config({"KEYRING_FILE": str(path), "KEYRING": None}) == ring
    config = load_config("crm", env={"RECEPT_CRM_KEYRING_FILE": str(path)})
    assert Keyring.from_config(config) == ring
    assert Keyring.from_config(load_config("crm", env={"RECEPT_KEYRING": ring.to_json()})) == ring

    with pytest.raises(KeyringError, match="no keyring configured"):
        Keyring.from_config(load_config("crm", env={}))
    with pytest.raises(KeyringError, match="only one"):
        Keyring.from_config({"KEYRING": ring.to_json(), "KEYRING_FILE": str(path)})
    with pytest.raises(KeyringError, match="cannot read") as info:
        Keyring.from_config({"KEYRING_FILE": str(tmp_path / "missing.json")})
    assert "missing.json" in str(info.value)
    path.write_text(json.dumps(_ring(keys={"k1": SECRET_B64})))
    with pytest.raises(KeyringError, match="32 bytes") as info:
        Keyring.from_config({"KEYRING_FILE": str(path)})
    assert_no_leak(info, SECRET_B64)


# --- blind indexes ----------------------------------------------------------------------------


def test_blind_index_values():
    ring = Keyring.generate()
    index = BlindIndex(ring)
    assert index.bits == 16
    phones = ["+46 70 123 45 67", "070-123 45 67", "0701234567", "0046701234567"]
    assert len({index.phone(p) for p in phones}) == 1
    assert index.email("Anna.Svensson@Example.SE ") == index.email("anna.svensson@example.se")
    assert index.name("  ÅSA   Öberg ") == index.name("åsa öberg")
    assert index.personnummer("19811218-9876") == index.personnummer("811218-9876")
    values = [index.of("email", f"user{i}@example.se") for i in range(2000)]
    assert all(0 <= v < 2**16 for v in values)
    assert len(set(values)) > 1900  # spread out

    wide = BlindIndex(ring, bits=63)
    assert 0 <= wide.of("email", "x") < 2**63  # fits a signed BIGINT
    assert wide.of("email", "x") != wide.of("name", "x")  # one derived key per kind
    assert BlindIndex(ring.rotated(), bits=63).of("email", "x") == wide.of("email", "x")  # rotation keeps it
    assert BlindIndex(Keyring.generate(), bits=63).of("email", "x") != wide.of("email", "x")
    assert wide.of("email", "x") >> (63 - 16) == index.of("email", "x")  # a prefix of the same HMAC
    for bits in (0, 64, 16.0, True):
        with pytest.raises(ValueError):
            BlindIndex(ring, bits=bits)
    with pytest.raises(ValueError):
        index.of("", "x")
