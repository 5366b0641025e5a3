"""Backups must not bring erased people back (R2, R16; docs/crypto.md "Backups and the erasure log").

The journey: dump the database, erase Greta, restore the pre-erasure dump (her wrapped data
key comes back with it), run the restore step; she must end unreadable and absent again —
on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from services.orders import SPEC, cli
from services.orders.models import individuals
from services.orders.rules import subject_of
from shared.crypto import ERASED, ErasureLog, ErasureLogError
from shared.erasure_replay import replay_erasures
from tests.conftest import raw_dump
from tests.forensics import dump_database, restore_database
from tests.orders.test_individuals import GRETA, HARALD
from tests.orders.test_privacy import command, run
from tests.support import make_runtime


@pytest.fixture
def erasure_log_path(tmp_path) -> Path:
    return tmp_path / "volume" / "orders.log"  # outside the database, as a mounted volume is


@pytest.fixture
def runtime(database_url, mint, clock, erasure_log_path):
    rt = make_runtime(SPEC, database_url, mint=mint, clock=clock, ERASURE_LOG=str(erasure_log_path))
    yield rt
    rt.db.dispose()


def greta_name(runtime, individual_id: str):
    with runtime.db.transaction() as s:
        row = s.execute(select(individuals).where(individuals.c.id == individual_id)).one()
        return runtime.vault.decrypt(s, "individuals", "name", row.id, row.name), row


def test_a_restored_pre_erasure_dump_is_erased_again_by_the_restore_step(world, tmp_path, erasure_log_path):
    """R2: dump, erase, restore the dump, replay the erasure log: Greta is unreadable and absent again,
    Harald (not erased) is untouched."""
    greta, harald = world.individual(**GRETA), world.individual(**HARALD)
    backup = tmp_path / "backup.dump"
    world.runtime.db.dispose()
    dump_database(world.database_url, backup)

    reply = run(world, command("erase", GRETA["personnummer"]))
    assert reply["status"] == "done" and reply["references"] == [subject_of(greta["id"])]
    assert greta_name(world.runtime, greta["id"])[0] is None  # the erase rule empties the columns
    # the shred reached the log before its transaction committed; the log names no value
    log_text = erasure_log_path.read_text()
    assert subject_of(greta["id"]) in log_text and "Greta" not in log_text and GRETA["personnummer"] not in log_text
    assert ErasureLog(erasure_log_path, "orders", world.runtime.keyring).subjects() == [subject_of(greta["id"])]

    world.runtime.db.dispose()
    restore_database(world.database_url, backup)
    # this is the hole: the restored dump holds her wrapped data key, so she is readable again
    restored_name, restored_row = greta_name(world.runtime, greta["id"])
    assert restored_name == GRETA["name"]

    assert replay_erasures(world.runtime) == 1
    name, row = greta_name(world.runtime, greta["id"])
    with world.runtime.db.transaction() as s:  # any copy of her ciphertext: its data key is gone
        assert world.runtime.vault.decrypt(s, "individuals", "name", row.id, restored_row.name) is ERASED
    assert name is None and row.status == "erased" and row.name_idx is None and row.personnummer_idx is None
    with world.runtime.db.transaction() as s:
        assert world.runtime.vault.is_shredded(s, subject_of(greta["id"]))
    assert greta_name(world.runtime, harald["id"])[0] == HARALD["name"]
    world.runtime.db.dispose()
    dumped = raw_dump(world.database_url)
    for secret in (GRETA["name"], "Lindqvist", GRETA["personnummer"].replace("-", "")):
        assert secret.encode() not in dumped
    # idempotent, and the replay did not append her again
    assert replay_erasures(world.runtime) == 0
    assert log_text == erasure_log_path.read_text()


def test_the_restore_step_runs_at_start_and_as_a_command(world, tmp_path, erasure_log_path, monkeypatch, capsys):
    """The documented step `./recept orders replay-erasures`, and create_app, both erase again."""
    greta = world.individual(**GRETA)
    backup = tmp_path / "backup.dump"
    world.runtime.db.dispose()
    dump_database(world.database_url, backup)
    run(world, command("erase", GRETA["personnummer"]))
    world.runtime.db.dispose()
    restore_database(world.database_url, backup)
    assert greta_name(world.runtime, greta["id"])[0] == GRETA["name"]

    # an api start replays before it serves
    SPEC.create_app(runtime=world.runtime)
    assert greta_name(world.runtime, greta["id"])[0] is None

    world.runtime.db.dispose()
    restore_database(world.database_url, backup)
    monkeypatch.setenv("RECEPT_ORDERS_DATABASE_URL", world.database_url)
    monkeypatch.setenv("RECEPT_ORDERS_KEYRING", world.runtime.keyring.to_json())
    monkeypatch.setenv("RECEPT_ORDERS_ERASURE_LOG", str(erasure_log_path))
    monkeypatch.setattr("shared.service.KeySet", lambda _fetch: world.mint.keyset())
    assert cli.main(["replay-erasures"]) == 0
    assert '"re_erased": 1' in capsys.readouterr().out
    assert greta_name(world.runtime, greta["id"])[0] is None


def test_a_tampered_erasure_log_stops_the_start(world, erasure_log_path):
    """A forged or altered line is refused (the MAC needs the keyring), and the api does not start."""
    greta = world.individual(**GRETA)
    run(world, command("erase", GRETA["personnummer"]))
    text = erasure_log_path.read_text()
    erasure_log_path.write_text(text.replace(greta["id"], greta["id"][:-1] + ("0" if greta["id"][-1] != "0" else "1")))
    with pytest.raises(ErasureLogError, match="fails its MAC"):
        SPEC.create_app(runtime=world.runtime)


def test_indexes_follow_planned_subjects_and_reindex_keeps_everyone_findable(world, monkeypatch, capsys, mint, clock):
    """R7 / issue 14: the index width comes from PLANNED_SUBJECTS; after changing it, `./recept orders
    reindex` recomputes the columns and a search still finds her (no false negatives)."""
    from services.orders.domain import deps_of

    assert deps_of(world.runtime).index.bits == 13  # the default 100 000 people
    greta = world.individual(**GRETA)
    world.runtime.db.dispose()
    monkeypatch.setenv("RECEPT_ORDERS_DATABASE_URL", world.database_url)
    monkeypatch.setenv("RECEPT_ORDERS_KEYRING", world.runtime.keyring.to_json())
    monkeypatch.setenv("RECEPT_ORDERS_PLANNED_SUBJECTS", "5000")
    monkeypatch.setattr("shared.service.KeySet", lambda _fetch: world.mint.keyset())
    assert cli.main(["reindex"]) == 0
    report = capsys.readouterr().out
    assert '"bits": 8' in report and '"individuals": 1' in report
    smaller = make_runtime(
        SPEC, world.database_url, mint=mint, clock=clock, keyring=world.runtime.keyring, PLANNED_SUBJECTS=5000
    )
    try:
        assert deps_of(smaller).index.bits == 8
        individuals_domain = smaller.domain.individuals
        with smaller.db.transaction() as s:
            assert individuals_domain.resolve(s, "t1", GRETA["personnummer"]) == [subject_of(greta["id"])]
    finally:
        smaller.db.dispose()
