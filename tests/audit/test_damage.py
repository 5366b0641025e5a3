"""The verifier never crashes (issue 20, R11): a row rewritten with another storage type or unreadable
values gets a verdict naming the entry, and verification goes on with the other chains."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text

from services.audit import cli
from services.audit.models import entries
from tests.audit.conftest import write_key
from tests.audit.test_ledger import store


@pytest.fixture
def lite(audit_factory, tmp_path, monkeypatch):
    """SQLite: its columns take any type, which is how a body ends up as TEXT; the CLI points at it too."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    key = write_key(tmp_path / "damage-key.pem")
    runtime = audit_factory(url, CHECKPOINT_KEY_FILE=str(key))
    monkeypatch.setenv("RECEPT_AUDIT_DATABASE_URL", url)
    monkeypatch.setenv("RECEPT_AUDIT_CHECKPOINT_KEY_FILE", str(key))
    monkeypatch.setenv("RECEPT_AUDIT_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    return runtime


@pytest.fixture
def two_chains(lite, events):
    """Six entries in tenant:t1 (checkpointed at 6) and four in tenant:t2."""
    store(lite, [events(tenant="t1") for _ in range(6)] + [events(tenant="t2") for _ in range(4)])
    lite.domain.checkpoint(force=True)
    return lite


def event_id(runtime, seq: int, chain: str = "tenant:t1") -> str:
    with runtime.db.transaction() as s:
        return s.scalar(select(entries.c.event_id).where(entries.c.chain == chain, entries.c.seq == seq))


def damage(runtime, sql: str) -> None:
    with runtime.db.transaction() as s:
        s.execute(text(sql))


DAMAGE = {
    # The case from the issue: the body rewritten with SQLite's TEXT storage class instead of BLOB.
    "body as text": (
        "UPDATE audit_entries SET body = CAST(body AS TEXT) WHERE chain = 'tenant:t1' AND seq = 3",
        "damaged",
        "body",
    ),
    "hash as hex text": (
        "UPDATE audit_entries SET hash = hex(hash) WHERE chain = 'tenant:t1' AND seq = 3",
        "damaged",
        "hash",
    ),
    "previous hash as text": (
        "UPDATE audit_entries SET prev_hash = 'x' WHERE chain = 'tenant:t1' AND seq = 3",
        "damaged",
        "prev_hash",
    ),
    "time unreadable": (
        "UPDATE audit_entries SET time = 'yesterday-ish' WHERE chain = 'tenant:t1' AND seq = 3",
        "damaged",
        "time",
    ),
    "body not utf-8": (
        "UPDATE audit_entries SET body = X'fffe00' WHERE chain = 'tenant:t1' AND seq = 3",
        "changed",
        None,
    ),
    "body a json array": (
        "UPDATE audit_entries SET body = CAST('[1,2]' AS BLOB) WHERE chain = 'tenant:t1' AND seq = 3",
        "changed",
        None,
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_entry_is_named_and_the_other_chains_are_verified(two_chains, case):
    sql, problem, column = DAMAGE[case]
    expected_id = event_id(two_chains, 3)
    damage(two_chains, sql)
    reports = {r.chain: r for r in two_chains.domain.verify()}
    assert set(reports) == {"tenant:t1", "tenant:t2"}
    bad = reports["tenant:t1"].first_bad
    assert bad is not None and (bad.seq, bad.problem) == (3, problem), bad
    assert bad.event_id == expected_id
    if column:
        assert column in bad.detail
    assert reports["tenant:t1"].entries_verified == 2
    assert reports["tenant:t2"].ok and reports["tenant:t2"].entries_verified == 4


def test_cli_names_the_text_body_and_goes_on(two_chains, capsys):
    """./recept audit verify: exit 1, the entry named, the other chain reported, no traceback."""
    damage(two_chains, DAMAGE["body as text"][0])
    capsys.readouterr()
    assert cli.main(["verify"]) == 1
    captured = capsys.readouterr()
    assert "tenant:t1: broken" in captured.out and "first bad entry: 3 (damaged)" in captured.out
    assert "tenant:t2: ok, 4 entries verified" in captured.out
    assert "Traceback" not in captured.err
    assert cli.main(["verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [c["status"] for c in report["chains"]] == ["broken", "ok"]
    assert report["chains"][0]["first_bad"]["event_id"] == event_id(two_chains, 3)


def test_a_sequence_number_that_is_not_a_number(two_chains):
    damage(two_chains, "UPDATE audit_entries SET seq = 'three' WHERE chain = 'tenant:t1' AND seq = 3")
    reports = {r.chain: r for r in two_chains.domain.verify()}
    bad = reports["tenant:t1"].first_bad
    assert (bad.seq, bad.problem) == (3, "removed")  # entry 3 is no longer where it belongs ...
    assert reports["tenant:t2"].ok


def test_a_damaged_chain_head_and_checkpoint_row_get_verdicts(two_chains):
    damage(
        two_chains,
        "UPDATE audit_chains SET head_hash = 'not bytes', anchor_hash = 'nor this' WHERE chain = 'tenant:t1'",
    )
    damage(two_chains, "UPDATE audit_checkpoints SET seq = 'six', created_at = 'soon' WHERE chain = 'tenant:t2'")
    reports = {r.chain: r for r in two_chains.domain.verify()}
    head = reports["tenant:t1"].first_bad
    assert head is not None and head.problem == "damaged" and "head" in head.detail
    # tenant:t2's database checkpoint is unreadable; its file is still there and vouches for the chain.
    t2 = reports["tenant:t2"]
    assert t2.first_bad is None and t2.entries_verified == 4
    assert [p["problem"] for p in t2.checkpoint_problems] == ["malformed"]
    assert t2.checkpoint_problems[0]["source"] == "database"


def test_the_verification_api_answers_for_a_damaged_chain(two_chains, mint):
    damage(two_chains, DAMAGE["body as text"][0])
    client = two_chains.spec.create_app(runtime=two_chains).test_client()
    reply = client.get("/api/v1/chains/verify", headers=mint.headers(roles=["auditor"], tenant=None))
    assert reply.status_code == 200, reply.get_data(as_text=True)
    chains = {c["chain"]: c for c in reply.get_json()["chains"]}
    assert chains["tenant:t1"]["first_bad"]["problem"] == "damaged" and chains["tenant:t2"]["status"] == "ok"
