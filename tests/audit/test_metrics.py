"""The audit's metrics (issue 20): chain verification results, chains and entries."""

from __future__ import annotations

from tests.shared.test_metrics import samples, value


def test_audit_verification_results_are_counted(audit_factory, tmp_path):
    from sqlalchemy import text

    from tests.audit.conftest import Events
    from tests.audit.test_ledger import store

    runtime = audit_factory(f"sqlite:///{tmp_path / 'audit.db'}")
    events = Events()
    store(runtime, [events(tenant=t) for t in ("t1", "t2", "t1")])
    client = runtime.spec.create_app(runtime=runtime).test_client()
    before = samples(client.get("/metrics").data)
    runtime.domain.verify()
    with runtime.db.transaction() as s:
        s.execute(text("UPDATE audit_entries SET body = CAST(body AS TEXT) WHERE chain = 'tenant:t1' AND seq = 2"))
    runtime.domain.verify()
    after = samples(client.get("/metrics").data)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("recept_audit_chain_verifications_total", result="ok", kind="full") == 3
    assert moved("recept_audit_chain_verifications_total", result="broken", kind="full") == 1
    assert value(after, "recept_audit_chains_broken") == 1
    assert value(after, "recept_audit_chains") == 2 and value(after, "recept_audit_entries") == 3
