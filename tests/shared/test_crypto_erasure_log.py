"""The erasure log (R2, R16), blind-index sizing (R7) and index-key rotation (docs/crypto.md)."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import BigInteger, Column, LargeBinary, MetaData, String, Table, select

from shared.crypto import (
    BlindIndex,
    ErasureLog,
    ErasureLogError,
    Keyring,
    KeyringError,
    Vault,
    crypto_tables,
    index_bits,
)
from shared.crypto.keyring import DEFAULT_INDEX_ID
from shared.crypto.reindex import IndexedColumn, reindex_table
from shared.db import Database
from shared.normalise import normalise_name


@pytest.fixture
def ring() -> Keyring:
    return Keyring.generate()


@pytest.fixture
def store(tmp_path):
    metadata = MetaData()
    data_keys = crypto_tables(metadata)
    people = Table(
        "people",
        metadata,
        Column("id", String(32), primary_key=True),
        Column("name", LargeBinary),
        Column("name_idx", BigInteger, nullable=True),
    )
    db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    metadata.create_all(db.engine)
    yield db, data_keys, people
    db.dispose()


# --- the erasure log ---------------------------------------------------------------------------


def test_a_shred_is_on_disk_before_its_transaction_commits_and_not_at_all_after_a_rollback(tmp_path, ring, store):
    db, data_keys, _people = store
    log = ErasureLog(tmp_path / "log" / "svc.log", "svc", ring)
    vault = Vault(ring, data_keys, erasure_log=log)
    seen_at_commit = []

    with db.transaction() as s:
        vault.encrypt(s, "svc:person:1", "people", "name", "1", "Greta")
        vault.encrypt(s, "svc:person:2", "people", "name", "2", "Harald")
    with pytest.raises(RuntimeError):
        with db.transaction() as s:
            vault.shred(s, "svc:person:2")
            raise RuntimeError("the erasure failed")
    assert log.subjects() == []  # a rolled-back shred is not recorded
    with db.transaction() as s:
        vault.shred(s, "svc:person:1")
        assert log.subjects() == []  # not yet: recorded when the transaction commits
        from sqlalchemy import event

        event.listen(s, "after_commit", lambda session: seen_at_commit.append(log.subjects()))
    assert seen_at_commit == [["svc:person:1"]]  # already on disk when the commit finished
    assert oct(log.path.stat().st_mode & 0o777) == "0o600"


def test_records_are_maced_pseudonymous_and_bound_to_their_service(tmp_path, ring):
    path = tmp_path / "svc.log"
    log = ErasureLog(path, "orders", ring)
    log.append(["orders:individual:abc", "orders:individual:def", "orders:individual:abc"])
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and set(json.loads(lines[0])) == {"v", "k", "subject", "at", "mac"}
    assert log.subjects() == ["orders:individual:abc", "orders:individual:def"]
    with pytest.raises(ErasureLogError, match="line 1 fails its MAC"):
        ErasureLog(path, "crm", ring).subjects()  # moved to another service's log
    # under a key this keyring does not hold (retired without --reseal, another keyring): skipped
    assert ErasureLog(path, "orders", Keyring.generate()).subjects() == []
    forged = json.loads(lines[1])
    forged["subject"] = "orders:individual:xyz"
    path.write_text(lines[0] + "\n" + json.dumps(forged) + "\n")
    with pytest.raises(ErasureLogError, match="line 2 fails its MAC") as caught:
        log.subjects()
    assert "xyz" not in str(caught.value)  # messages name lines, not subjects


def test_a_torn_last_line_is_dropped_and_the_next_append_starts_clean(tmp_path, ring):
    path = tmp_path / "svc.log"
    log = ErasureLog(path, "svc", ring)
    log.append(["svc:a"])
    with open(path, "ab") as f:
        f.write(b'{"v":1,"k":"x","subj')  # a crash mid-write (never fsync'd)
    assert log.subjects() == ["svc:a"]
    log.append(["svc:b"])
    assert log.subjects() == ["svc:a", "svc:b"]
    assert path.read_bytes().count(b"\n") == 2


_WRITER = """
import os, sys
from shared.crypto import ErasureLog, Keyring
ring = Keyring.from_json(os.environ["TEST_RING"])
log = ErasureLog(sys.argv[1], "svc", ring)
for i in range(int(sys.argv[3])):
    log.append([f"svc:person:{sys.argv[2]}-{i}", f"svc:case:{sys.argv[2]}-{i}"])
"""


def test_the_api_replicas_and_the_worker_append_to_one_log_without_losing_or_tearing_a_line(tmp_path, ring):
    """Deployed, every process of a service appends to the one log on a shared volume (docs/crypto.md
    "One log per service"): four processes appending at once leave every record whole and verifiable."""
    path = tmp_path / "volume" / "svc.log"
    writers, each = 4, 40
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TEST_RING": ring.to_json()}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), f"w{n}", str(each)], cwd=root, env=env)
        for n in range(writers)
    ]
    assert [proc.wait(timeout=120) for proc in procs] == [0] * writers
    records = list(ErasureLog(path, "svc", ring).records())  # every line parses and passes its MAC
    expected = {f"svc:{kind}:w{n}-{i}" for n in range(writers) for i in range(each) for kind in ("person", "case")}
    assert len(records) == len(expected) and {r.subject for r in records} == expected
    assert path.read_bytes().endswith(b"\n") and (path.stat().st_mode & 0o777) == 0o600


def test_reseal_moves_the_log_to_the_primary_key_before_an_old_key_is_retired(tmp_path, ring):
    path = tmp_path / "svc.log"
    ErasureLog(path, "svc", ring).append(["svc:a", "svc:b"])
    rotated = ring.rotated()
    assert ErasureLog(path, "svc", rotated).reseal() == 2
    retired = rotated.without(ring.primary_id)
    assert ErasureLog(path, "svc", retired).subjects() == ["svc:a", "svc:b"]
    ErasureLog(tmp_path / "unsealed.log", "svc", ring).append(["svc:c"])
    assert ErasureLog(tmp_path / "unsealed.log", "svc", retired).subjects() == []  # why reseal comes first


# --- blind-index sizing (issue 14: 16 bits at 5 000 people made 92 % of values unique) -------------


@pytest.mark.parametrize("planned, bits", [(5_000, 8), (100_000, 13), (1_000_000, 16), (10_240, 10), (1, 1), (19, 1)])
def test_index_bits_leave_at_least_ten_rows_per_value_at_the_planned_scale(planned, bits):
    assert index_bits(planned) == bits
    if planned >= 20:
        assert planned / 2**bits >= 10 and planned / 2 ** (bits + 1) < 10  # the widest that still hides


def test_index_bits_rejects_nonsense():
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError):
            index_bits(bad)


def test_at_the_planned_scale_values_are_shared_and_lookups_still_find_everyone(ring):
    """5 000 people: with the sized index almost no value is unique (16 bits: ~92 % were), and every
    person is found by her value (no false negatives)."""
    names = [f"person {i}" for i in range(5_000)]
    sized = BlindIndex(ring, bits=index_bits(len(names)))
    counts: dict[int, int] = {}
    for name in names:
        counts[sized.name(name)] = counts.get(sized.name(name), 0) + 1
    unique = sum(1 for n in counts.values() if n == 1) / len(names)
    assert unique < 0.01 and min(counts.values()) >= 2
    wide = BlindIndex(ring, bits=16)
    wide_counts: dict[int, int] = {}
    for name in names:
        wide_counts[wide.name(name)] = wide_counts.get(wide.name(name), 0) + 1
    assert sum(1 for n in wide_counts.values() if n == 1) / len(names) > 0.9  # the finding
    rng = random.Random(7)
    for name in rng.sample(names, 200):
        assert sized.name(name) in {sized.name(n) for n in names if n == name}
    assert math.isclose(len(names) / 2**sized.bits, 19.53, rel_tol=0.01)


# --- index-key rotation -----------------------------------------------------------------------


def test_the_index_key_rotates_keeps_the_old_one_until_retired_and_survives_json(ring):
    rotated = ring.rotated_index()
    assert rotated.index_primary_id != DEFAULT_INDEX_ID and rotated.index_key != ring.index_key
    assert list(rotated.index_keys) == [rotated.index_primary_id, DEFAULT_INDEX_ID]
    assert Keyring.from_json(rotated.to_json()) == rotated
    assert set(json.loads(rotated.to_json())) == {"primary", "keys", "index_primary", "index_keys"}
    assert Keyring.from_json(rotated.rotated().to_json()).index_keys == rotated.index_keys  # KEK rotation keeps them
    retired = rotated.without_index(DEFAULT_INDEX_ID)
    assert list(retired.index_keys) == [rotated.index_primary_id]
    with pytest.raises(KeyringError, match="primary index key"):
        retired.without_index(rotated.index_primary_id)
    with pytest.raises(KeyringError, match="no index key"):
        retired.without_index("nope")
    with pytest.raises(KeyringError, match="both"):
        Keyring.from_json(
            json.dumps({**json.loads(rotated.to_json()), "index_key": json.loads(ring.to_json())["index_key"]})
        )


def test_during_a_rotation_lookups_match_old_and_new_values_and_reindex_moves_every_row(ring, store):
    db, data_keys, people = store
    vault = Vault(ring, data_keys)
    old = BlindIndex(ring, bits=32)
    names = {uuid.uuid4().hex: f"Person {i}" for i in range(60)}
    with db.transaction() as s:
        for row_id, name in names.items():
            s.execute(
                people.insert().values(
                    id=row_id,
                    name=vault.encrypt(s, f"svc:p:{row_id}", "people", "name", row_id, name),
                    name_idx=old.name(name),
                )
            )
        s.execute(
            people.insert().values(
                id="erased",
                name=vault.encrypt(s, "svc:p:e", "people", "name", "erased", "Erased One"),
                name_idx=old.name("Erased One"),
            )
        )
        vault.shred(s, "svc:p:e")
    rotated = ring.rotated_index()
    new = BlindIndex(rotated, bits=32)
    assert new.rotating and not old.rotating

    def found(index, name):
        with db.transaction() as s:
            return {
                r.id
                for r in s.execute(
                    select(people.c.id).where(index.match(people.c.name_idx, "name", normalise_name(name)))
                )
            }

    sample = list(names.items())[:10]
    for row_id, name in sample:
        assert row_id in found(new, name)  # old rows found during the rotation
    with db.transaction() as s:
        changed = reindex_table(
            s,
            Vault(rotated, data_keys),
            new,
            people,
            [IndexedColumn("name_idx", "name", "name", normalise_name)],
            batch=7,
        )
    assert changed == 61  # every value moved, and the erased one lost its index
    retired = BlindIndex(rotated.without_index(DEFAULT_INDEX_ID), bits=32)
    for row_id, name in sample:
        assert row_id in found(retired, name)  # after the re-index the old key can go
    with db.transaction() as s:
        assert s.scalar(select(people.c.name_idx).where(people.c.id == "erased")) is None
        assert (
            reindex_table(
                s, Vault(rotated, data_keys), new, people, [IndexedColumn("name_idx", "name", "name", normalise_name)]
            )
            == 0
        )  # repeatable


def test_a_configured_erasure_log_that_cannot_be_written_stops_the_start(tmp_path, ring, caplog):
    """A deployment sets ERASURE_LOG to its volume: if that is missing or read-only the service must not
    start (each erasure would fail later); an unwritable *default* only turns the log off, loudly."""
    from shared.config import ConfigError
    from shared.erasure_replay import open_erasure_log

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the volume should be")
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    with pytest.raises(ConfigError, match="ERASURE_LOG: the directory of .* cannot be written"):
        open_erasure_log({"ERASURE_LOG": str(blocker / "svc.log"), "DATABASE_URL": url}, "svc", ring)
    beside_a_file = f"sqlite:///{blocker / 'svc.db'}"  # default: <db dir>/erasure-log/svc.log
    with caplog.at_level("WARNING"):
        assert open_erasure_log({"DATABASE_URL": beside_a_file}, "svc", ring) is None
    assert "erasure log is OFF" in caplog.text
    log = open_erasure_log({"ERASURE_LOG": str(tmp_path / "volume" / "svc.log"), "DATABASE_URL": url}, "svc", ring)
    assert log is not None and (tmp_path / "volume").is_dir()
