"""``./recept keys``: a rotated keyring file is owner-only, and ``rewrap`` moves every data key onto the new
primary key so the old one can be retired (docs/crypto.md "Rotation and rewrap"; security review, issue 14)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from services.crm import SPEC as CRM
from shared.crypto import Keyring
from tests.crm.conftest import Harness

ROOT = Path(__file__).resolve().parent.parent


def recept(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_rotate_writes_the_keyring_owner_only_whatever_was_there(tmp_path):
    path = tmp_path / "crm-keyring"
    path.write_text(Keyring.generate().to_json())
    os.chmod(path, 0o644)  # e.g. `./recept keys > file` under umask 022
    stale = path.with_suffix(".tmp")  # a leftover of an interrupted run
    stale.write_text("old")
    os.chmod(stale, 0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEPT_")}
    result = recept("keys", "--rotate", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "keys rewrap" in result.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".crm-keyring.")]  # no temporary left


def test_rewrap_moves_every_live_data_key_to_the_new_primary(tmp_path):
    keyring_file = tmp_path / "crm-keyring"
    first = Keyring.generate()
    keyring_file.write_text(first.to_json())
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    crm = Harness(url, keyring=first)
    company = crm.company()
    people = [crm.person(company["id"], name=f"Person {i}", email=f"p{i}@a.example") for i in range(3)]
    crm.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEPT_")}
    env.update(RECEPT_CRM_DATABASE_URL=url, RECEPT_CRM_KEYRING_FILE=str(keyring_file))
    assert recept("keys", "--rotate", str(keyring_file), env=env).returncode == 0
    rotated = Keyring.from_json(keyring_file.read_text())

    result = recept("keys", "rewrap", "crm", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["crm"]
    assert report == {"rewrapped": 3, "primary": rotated.primary_id, "retirable": [first.primary_id]}
    assert json.loads(recept("keys", "rewrap", "crm", env=env).stdout)["crm"]["rewrapped"] == 0  # repeatable

    # The old key can go: the service reads everything with the new one alone.
    retired = rotated.without(first.primary_id)
    after = Harness(url, keyring=retired)
    try:
        with after.runtime.db.transaction() as s:
            table = CRM.tables.data_keys
            assert set(s.scalars(select(table.c.kek_id))) == {rotated.primary_id}
        assert [after.get(f"/api/v1/persons/{p['id']}")["name"] for p in people] == ["Person 0", "Person 1", "Person 2"]
    finally:
        after.close()


def test_rewrap_of_an_unknown_service_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEPT_")}
    result = recept("keys", "rewrap", "nosuch", env=env)
    assert result.returncode != 0 and "unknown service" in result.stderr
