"""``./recept gdpr ...``: the operator commands."""

from __future__ import annotations

import json

from services.gdpr.cli import main
from shared.crypto import Keyring


def test_cli_lists_participants_prints_the_inventory_and_runs_a_sweep(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECEPT_GDPR_DATABASE_URL", f"sqlite:///{tmp_path / 'gdpr.db'}")
    monkeypatch.setenv("RECEPT_GDPR_KEYRING", Keyring.generate().to_json())
    assert main(["participants"]) == 0
    assert capsys.readouterr().out.startswith("gdpr ")
    assert main(["sweep"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "resent": 0,
        "silent": 0,
        "packages_deleted": 0,
        "identifiers_shredded": 0,
    }
    assert main(["inventory", "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("service,role_in_requests,")
