"""``./recept auth``: bootstrap tenants and users, rotate the signing key (embedded and distributed)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.auth import cli
from shared.config import ROOT
from shared.crypto import Keyring
from tests.auth.conftest import build
from tests.support import events_of


@pytest.fixture
def env(tmp_path, monkeypatch):
    keyring = Keyring.generate()
    values = {
        "RECEPT_AUTH_DATABASE_URL": f"sqlite:///{tmp_path / 'auth.db'}",
        "RECEPT_AUTH_KEYRING": keyring.to_json(),
        "RECEPT_AUTH_SIGNING_KEYS_FILE": str(tmp_path / "signing.json"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values, keyring


@pytest.mark.integration  # runs ./recept as a child process
def test_add_tenant_and_user_from_the_cli_then_log_in(env, tmp_path, monkeypatch, capsys):
    values, keyring = env
    assert cli.main(["add-tenant", "vendor", "Recept AB"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("a vendor admin password\n"))
    assert (
        cli.main(
            [
                "add-user",
                "--tenant",
                "vendor",
                "--username",
                "root.admin",
                "--role",
                "vendor_admin",
                "--role",
                "support",
                "--password-stdin",
            ]
        )
        == 0
    )
    output = capsys.readouterr()
    assert "root.admin" not in output.out + output.err and "password" not in output.out
    harness = build(
        values["RECEPT_AUTH_DATABASE_URL"],
        tmp_path,
        keyring=keyring,
        SIGNING_KEYS_FILE=values["RECEPT_AUTH_SIGNING_KEYS_FILE"],
    )
    try:
        response = harness.login("vendor", "root.admin", "a vendor admin password")
        assert response.status_code == 200
        assert [e["type"] for e in events_of(harness.runtime)][:5] == [
            "auth.tenant.created",
            "auth.tenant.announced",  # the other services learn the tenant (issue 15)
            "auth.user.created",
            "auth.role.granted",
            "auth.role.granted",
        ]
        assert all(e["actor"]["kind"] == "system" for e in events_of(harness.runtime)[:4])
    finally:
        harness.runtime.db.dispose()


def test_cli_reports_problems_without_personal_values(env, monkeypatch, capsys):
    assert cli.main(["add-tenant", "north", "North"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("tiny\n"))
    assert (
        cli.main(["add-user", "--tenant", "north", "--username", "ulla.cli", "--role", "staff", "--password-stdin"])
        == 1
    )
    assert cli.main(["add-user", "--tenant", "north", "--username", "ulla.cli", "--role", "pilot", "--directory"]) == 1
    assert cli.main(["add-user", "--tenant", "north", "--username", "ulla.cli"]) == 2
    assert cli.main(["add-tenant", "north", "North again"]) == 1
    err = capsys.readouterr().err
    assert "too short" in err and "ulla.cli" not in err and "tiny" not in err


def test_rotate_signing_key_keeps_the_old_key_published(env, capsys):
    values, _keyring = env
    assert cli.main(["rotate-signing-key"]) == 0
    assert cli.main(["rotate-signing-key"]) == 0
    data = json.loads(Path(values["RECEPT_AUTH_SIGNING_KEYS_FILE"]).read_text())
    assert len(data["keys"]) == 3 and sum(k["retired_at"] is None for k in data["keys"]) == 1


def test_distributed_run_cli_writes_to_postgresql(postgres_url, tmp_path):
    """The same commands as a separate process against RECEPT_AUTH_DATABASE_URL (what ./recept runs)."""
    keyring = Keyring.generate()
    # The system-wide RECEPT_KEYRING: services/cli.py would otherwise point every service at var/keyring.json.
    child_env = {
        **os.environ,
        "RECEPT_AUTH_DATABASE_URL": postgres_url,
        "RECEPT_KEYRING": keyring.to_json(),
        "RECEPT_AUTH_SIGNING_KEYS_FILE": str(tmp_path / "signing.json"),
    }
    run = [sys.executable, "-m", "services.cli", "auth"]
    done = subprocess.run(
        run + ["add-tenant", "south", "South Region"],
        env=child_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        run + ["add-user", "--tenant", "south", "--username", "sven", "--role", "tenant_admin", "--password-stdin"],
        input="south admin password\n",
        env=child_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    harness = build(postgres_url, tmp_path, keyring=keyring)
    try:
        assert harness.login("south", "sven", "south admin password").status_code == 200
    finally:
        harness.runtime.db.dispose()


def test_set_agreement_from_the_cli_records_it_without_echoing_the_signatory(env, capsys):
    """Issue 15: the operator records a tenant's data processing agreement (R5) from the command line."""
    assert cli.main(["add-tenant", "north", "North"]) == 0
    assert (
        cli.main(
            ["set-agreement", "north", "--version", "PUB 2", "--signed-on", "2025-11-03", "--signatory", "Siv Sund"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "agreement PUB 2 signed on 2025-11-03 recorded" in out and "Siv Sund" not in out
    assert cli.main(["set-agreement", "north", "--version", "3", "--signed-on", "3025-01-01", "--signatory", "S"]) == 1
    assert "signed_on is in the future" in capsys.readouterr().err
    assert (
        cli.main(["set-agreement", "nowhere", "--version", "3", "--signed-on", "2025-01-01", "--signatory", "S"]) == 1
    )
