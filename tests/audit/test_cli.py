"""``./recept audit ...``: verify (exit status names a broken chain), checkpoint, purge, public-key."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import delete

from services.audit import cli
from services.audit.models import entries
from tests.audit.conftest import write_key
from tests.audit.test_ledger import store


@pytest.fixture
def env(monkeypatch, audit_factory, tmp_path):
    """A populated SQLite audit database and the environment that points the CLI at it."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    key = tmp_path / "cli-key.pem"
    runtime = audit_factory(url, CHECKPOINT_KEY_FILE=str(write_key(key)))
    monkeypatch.setenv("RECEPT_AUDIT_DATABASE_URL", url)
    monkeypatch.setenv("RECEPT_AUDIT_CHECKPOINT_KEY_FILE", str(key))
    monkeypatch.setenv("RECEPT_AUDIT_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    return runtime


def test_verify_exits_zero_on_intact_chains_and_one_naming_the_first_bad_entry(env, events, capsys):
    store(env, [events() for _ in range(5)])
    assert cli.main(["checkpoint"]) == 0
    assert "tenant:t1: checkpoint at 5" in capsys.readouterr().out
    assert cli.main(["verify"]) == 0
    assert "tenant:t1: ok, 5 entries verified" in capsys.readouterr().out
    with env.db.transaction() as s:
        s.execute(delete(entries).where(entries.c.seq == 3))
    assert cli.main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "first bad entry: 3 (removed)" in out and "BROKEN" in out


def test_verify_json_and_a_cut_tail(env, events, capsys):
    store(env, [events() for _ in range(4)])
    assert cli.main(["checkpoint"]) == 0
    with env.db.transaction() as s:
        s.execute(delete(entries).where(entries.c.seq == 4))
    capsys.readouterr()
    assert cli.main(["verify", "--json", "--chain", "tenant:t1"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "broken"
    assert report["chains"][0]["first_bad"]["seq"] == 4 and report["chains"][0]["first_bad"]["problem"] == "truncated"
    assert cli.main(["verify", "--chain", "tenant:nobody"]) == 2


def test_purge_and_public_key(env, events, capsys, monkeypatch):
    ledger = env.domain
    now = ledger.clock()
    ledger.clock = lambda: now - timedelta(days=3)  # recorded three days ago
    store(env, [events() for _ in range(2)])
    monkeypatch.setenv("RECEPT_AUDIT_RETENTION_DAYS", "1")
    assert cli.main(["purge"]) == 0
    assert "tenant:t1: 2 entries purged" in capsys.readouterr().out
    assert cli.main(["verify"]) == 0
    assert cli.main(["public-key"]) == 0
    assert "BEGIN PUBLIC KEY" in capsys.readouterr().out


def test_an_unreadable_key_file_is_a_clear_error(env, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RECEPT_AUDIT_CHECKPOINT_KEY_FILE", str(tmp_path / "missing.pem"))
    assert cli.main(["verify"]) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_replay_erasures_is_the_restore_step_of_the_audit_database_too(env, monkeypatch, tmp_path, capsys):
    """Issue 14: `./recept audit replay-erasures` ran the ledger's dispatch and failed (TypeError) — the
    e2e journey's restore step found it. Backup, shred, restore the backup: the command shreds again."""
    from shared.crypto import ErasureLog, Vault
    from tests.forensics import dump_database, restore_database

    log_path = tmp_path / "volume" / "audit.log"
    vault = Vault(env.keyring, env.spec.tables.data_keys, erasure_log=ErasureLog(log_path, "audit", env.keyring))
    subject = "audit:probe:1"
    with env.db.transaction() as s:
        blob = vault.encrypt(s, subject, "probe", "value", 1, "a value")
    env.db.dispose()
    url = str(env.db.engine.url)
    dump_database(url, tmp_path / "backup.db")
    with env.db.transaction() as s:
        assert vault.shred(s, subject) == 1
    env.db.dispose()
    restore_database(url, tmp_path / "backup.db")
    with env.db.transaction() as s:
        assert vault.decrypt(s, "probe", "value", 1, blob) == "a value"  # the backup brought the key back
    env.db.dispose()

    monkeypatch.setenv("RECEPT_AUDIT_KEYRING", env.keyring.to_json())
    monkeypatch.setenv("RECEPT_AUDIT_ERASURE_LOG", str(log_path))
    monkeypatch.setattr("shared.service.KeySet", lambda _fetch: None)
    assert cli.main(["replay-erasures"]) == 0
    assert json.loads(capsys.readouterr().out)["re_erased"] == 1
    with env.db.transaction() as s:
        assert vault.is_shredded(s, subject)
    assert cli.main(["replay-erasures"]) == 0
    assert json.loads(capsys.readouterr().out)["re_erased"] == 0
