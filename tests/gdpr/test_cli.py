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


def test_cli_prints_one_tenants_records_and_refuses_an_unknown_one(tmp_path, monkeypatch, capsys):
    """Issue 15 (art. 30(2)): the records of one customer, as the API gives them."""
    from services.gdpr import SPEC
    from services.gdpr.tenants import TenantReplica

    url = f"sqlite:///{tmp_path / 'gdpr.db'}"
    monkeypatch.setenv("RECEPT_GDPR_DATABASE_URL", url)
    monkeypatch.setenv("RECEPT_GDPR_KEYRING", Keyring.generate().to_json())
    assert main(["participants"]) == 0  # migrates
    config = SPEC.config()
    runtime = SPEC.runtime(config)
    try:
        with runtime.db.transaction() as s:
            TenantReplica().on_event(
                s,
                {
                    "type": "auth.tenant.announced",
                    "tenant": "kommun",
                    "data": {
                        "tenant_id": "1",
                        "kind": "customer",
                        "agreement": {"version": "PUB 1", "signed_on": "2025-01-15"},
                    },
                },
            )
    finally:
        runtime.db.dispose()
    capsys.readouterr()
    assert main(["records", "kommun"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["tenant"] == "kommun" and document["agreement"] == {"version": "PUB 1", "signed_on": "2025-01-15"}
    gdpr = {c["kind"]: c["count"] for s in document["services"] if s["service"] == "gdpr" for c in s["categories"]}
    assert gdpr == {"data_subject_request": 0, "export_package": 0}
    assert main(["records", "kommun", "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("service,role_in_requests,")
    assert main(["records", "nosuch"]) == 1
    assert "no such tenant" in capsys.readouterr().err
