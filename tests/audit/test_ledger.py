"""The hash chains on SQLite and PostgreSQL: ingest, tamper evidence, checkpoints, retention (R9, R11)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, insert, select, update

from services.audit.checkpoints import Signer, public_pem
from services.audit.domain import entry_hash, genesis, to_entry
from services.audit.models import chains, checkpoints, entries
from shared.clock import as_utc, parse_rfc3339
from tests.audit.conftest import write_key
from tests.support import events_of


def store(runtime, envelopes) -> int:
    with runtime.db.transaction() as s:
        return runtime.domain.ingest(s, [to_entry(e) for e in envelopes])


def chain_rows(runtime, chain="tenant:t1"):
    with runtime.db.transaction() as s:
        return s.execute(select(entries).where(entries.c.chain == chain).order_by(entries.c.seq)).all()


def verify(runtime, chain="tenant:t1"):
    return {r.chain: r for r in runtime.domain.verify()}[chain]


def execute(runtime, *statements) -> None:
    with runtime.db.transaction() as s:
        for statement in statements:
            s.execute(statement)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def lite(audit_factory, sqlite_url):
    """SQLite only: tampering with rows works alike on both back ends; PostgreSQL runs the rest."""
    return audit_factory(sqlite_url)


def renumber_from(runtime, seq: int, shift: int, chain="tenant:t1") -> None:
    """Shift the seqs from ``seq`` on by ``shift`` (through a detour, so no unique check trips midway)."""
    where = (entries.c.chain == chain, entries.c.seq >= seq)
    execute(runtime, update(entries).where(*where).values(seq=entries.c.seq + 1_000_000))
    execute(
        runtime,
        update(entries)
        .where(entries.c.chain == chain, entries.c.seq >= 1_000_000)
        .values(seq=entries.c.seq - 1_000_000 + shift),
    )


def test_each_tenant_gets_its_own_chain_numbered_from_one(audit, events):
    """R9: one chain per tenant; tenantless events go to the vendor (people) or system chain."""
    batch = [
        events(tenant="t1"),
        events(tenant="t2"),
        events(tenant="t1"),
        events(tenant=None),
        events(tenant=None, actor="relay", kind="system"),
    ]
    assert store(audit, batch) == 5
    assert [(r.seq, r.event_id) for r in chain_rows(audit, "tenant:t1")] == [(1, batch[0]["id"]), (2, batch[2]["id"])]
    assert [r.seq for r in chain_rows(audit, "tenant:t2")] == [1]
    assert [r.event_id for r in chain_rows(audit, "vendor")] == [batch[3]["id"]]
    assert [r.event_id for r in chain_rows(audit, "system")] == [batch[4]["id"]]
    first, second = chain_rows(audit, "tenant:t1")
    assert first.prev_hash == genesis("tenant:t1") and second.prev_hash == first.hash
    assert second.hash == entry_hash(first.hash, second.body)
    assert json.loads(second.body) == batch[2]


def test_a_redelivered_event_is_stored_once(audit, events):
    """Idempotent by event id: again in a later batch, or twice in one batch."""
    batch = [events() for _ in range(3)]
    assert store(audit, batch) == 3
    assert store(audit, [batch[1], batch[1], events()]) == 1
    assert [r.seq for r in chain_rows(audit)] == [1, 2, 3, 4]


def test_intact_chains_verify(audit, events):
    store(audit, [events(tenant=t) for t in ("t1", "t2", "t1", None)])
    audit.domain.checkpoint(force=True)
    store(audit, [events(tenant="t1")])
    reports = audit.domain.verify()
    assert [(r.chain, r.ok, r.entries_verified) for r in reports] == [
        ("tenant:t1", True, 3),
        ("tenant:t2", True, 1),
        ("vendor", True, 1),
    ]
    assert reports[0].as_dict()["last_checkpoint"]["seq"] == 2


def test_a_flipped_byte_names_the_changed_entry(audit, events):
    store(audit, [events() for _ in range(8)])
    row = chain_rows(audit)[4]
    body = bytearray(row.body)
    body[body.index(b"quantity")] ^= 0x01
    execute(audit, update(entries).where(entries.c.id == row.id).values(body=bytes(body)))
    report = verify(audit)
    assert report.first_bad.seq == 5 and report.first_bad.problem == "changed"
    assert report.first_bad.event_id == row.event_id and report.entries_verified == 4


def test_a_changed_query_copy_is_caught(lite, events):
    """Who-did-it columns are checked against the hashed event, so a query cannot be misled."""
    store(lite, [events() for _ in range(4)])
    execute(lite, update(entries).where(entries.c.seq == 3).values(actor="someone-else"))
    assert (verify(lite).first_bad.seq, verify(lite).first_bad.problem) == (3, "changed")


def test_a_deleted_row_names_the_removed_entry(audit, events):
    store(audit, [events() for _ in range(8)])
    execute(audit, delete(entries).where(entries.c.chain == "tenant:t1", entries.c.seq == 5))
    report = verify(audit)
    assert (report.first_bad.seq, report.first_bad.problem) == (5, "removed")


def test_a_deleted_row_with_the_rest_renumbered_names_the_removed_entry(lite, events):
    store(lite, [events() for _ in range(8)])
    execute(lite, delete(entries).where(entries.c.chain == "tenant:t1", entries.c.seq == 5))
    renumber_from(lite, 6, -1)
    report = verify(lite)
    assert (report.first_bad.seq, report.first_bad.problem) == (5, "removed")


@pytest.mark.parametrize("forger", ["rehashes", "guesses"])
def test_an_inserted_row_names_the_inserted_entry(lite, events, forger):
    """Whether the forger computes a hash that links to entry 4 or not, entry 5 is named as inserted."""
    store(lite, [events() for _ in range(8)])
    rows = chain_rows(lite)
    renumber_from(lite, 5, +1)
    forged = events()
    body = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode()
    digest = entry_hash(rows[3].hash, body) if forger == "rehashes" else bytes(32)
    execute(
        lite,
        insert(entries).values(
            chain="tenant:t1",
            seq=5,
            event_id=forged["id"],
            type=forged["type"],
            time=parse_rfc3339(forged["time"]),
            recorded_at=rows[3].recorded_at,
            tenant="t1",
            actor=forged["actor"]["id"],
            subject=forged["subject"],
            resource_type="order",
            resource_id="o1",
            body=body,
            prev_hash=rows[3].hash,
            hash=digest,
        ),
    )
    report = verify(lite)
    assert (report.first_bad.seq, report.first_bad.problem) == (5, "inserted")
    assert report.entries_verified == 4


def test_a_cut_tail_is_detected_against_the_last_checkpoint(audit, events):
    """Cutting the newest entries and moving the head back still leaves the signed checkpoint at 10."""
    store(audit, [events() for _ in range(10)])
    audit.domain.checkpoint(force=True)
    rows = chain_rows(audit)
    execute(
        audit,
        delete(entries).where(entries.c.chain == "tenant:t1", entries.c.seq > 7),
        update(chains).where(chains.c.chain == "tenant:t1").values(seq=7, head_hash=rows[6].hash),
    )
    report = verify(audit)
    assert (report.first_bad.seq, report.first_bad.problem) == (8, "truncated")


def test_a_cut_tail_is_detected_from_the_files_when_the_database_checkpoints_are_gone_too(lite, events):
    store(lite, [events() for _ in range(6)])
    lite.domain.checkpoint(force=True)
    execute(lite, delete(entries), delete(chains), delete(checkpoints))
    report = verify(lite)
    assert (report.first_bad.seq, report.first_bad.problem) == (1, "truncated")


def test_a_rehashed_chain_disagrees_with_its_signed_checkpoint(lite, events):
    """A forger who recomputes every hash after a change is caught by the signature over the head."""
    store(lite, [events() for _ in range(6)])
    lite.domain.checkpoint(force=True)
    rows = chain_rows(lite)
    prev = genesis("tenant:t1")
    for row in rows:
        body = row.body.replace(b'"quantity"', b'"delivery"') if row.seq == 3 else row.body
        digest = entry_hash(prev, body)
        execute(lite, update(entries).where(entries.c.id == row.id).values(body=body, prev_hash=prev, hash=digest))
        prev = digest
    execute(lite, update(chains).where(chains.c.chain == "tenant:t1").values(head_hash=prev))
    report = verify(lite)
    assert (report.first_bad.seq, report.first_bad.problem) == (1, "rewritten")


def test_a_checkpoint_signed_with_another_key_is_reported(audit, events, tmp_path):
    store(audit, [events() for _ in range(3)])
    stranger = Signer.from_file(write_key(tmp_path / "stranger.pem"))
    rows = chain_rows(audit)
    record = stranger.sign("tenant:t1", 3, rows[-1].hash.hex())
    execute(
        audit,
        insert(checkpoints).values(
            chain="tenant:t1",
            seq=3,
            head_hash=record["head_hash"],
            key_id=record["key_id"],
            signature=record["signature"],
            created_at=rows[-1].recorded_at,
        ),
    )
    report = verify(audit)
    assert not report.ok and report.first_bad is None
    assert [(p["source"], p["problem"], p["key_id"]) for p in report.checkpoint_problems] == [
        ("database", "unknown_key", stranger.key_id)
    ]


def test_a_checkpoint_claiming_our_key_id_with_a_forged_signature_is_reported(lite, events, tmp_path):
    store(lite, [events() for _ in range(3)])
    ledger = lite.domain
    ledger.checkpoint(force=True)
    stranger = Signer.from_file(write_key(tmp_path / "stranger.pem"))
    path = ledger.files.path("tenant:t1", 3)
    forged = {**json.loads(path.read_text()), "head_hash": "ab" * 32}
    forged["signature"] = stranger.sign("tenant:t1", 3, forged["head_hash"])["signature"]
    path.write_text(json.dumps(forged))
    report = verify(lite)
    assert [(p["problem"], p["key_id"]) for p in report.checkpoint_problems] == [
        ("bad_signature", ledger.signer.key_id)
    ]


def test_checkpoints_of_a_trusted_second_key_are_accepted(audit_factory, sqlite_url, events, tmp_path):
    """A rotated signing key: the old key's public half stays trusted, so its checkpoints still count."""
    old_key = write_key(tmp_path / "old.pem")
    old = audit_factory(sqlite_url, CHECKPOINT_KEY_FILE=str(old_key))
    store(old, [events() for _ in range(3)])
    old.domain.checkpoint(force=True)
    public = tmp_path / "old.pub.pem"
    public.write_text(public_pem(Signer.from_file(old_key).public_key))
    new = audit_factory(sqlite_url, CHECKPOINT_TRUSTED_KEYS=[str(public)])
    assert verify(new).ok
    untrusting = audit_factory(sqlite_url)
    assert {p["problem"] for p in verify(untrusting).checkpoint_problems} == {"unknown_key"}


def test_checkpoints_are_due_by_count_or_time_and_written_as_files(audit_factory, database_url, events):
    runtime = audit_factory(database_url, CHECKPOINT_EVERY=5, CHECKPOINT_INTERVAL=3600.0)
    ledger = runtime.domain
    store(runtime, [events() for _ in range(4)])
    assert ledger.checkpoint() == []
    store(runtime, [events() for _ in range(2)])
    [record] = ledger.checkpoint()
    assert (record["chain"], record["seq"]) == ("tenant:t1", 6)
    assert json.loads(ledger.files.path("tenant:t1", 6).read_text()) == record
    store(runtime, [events()])
    assert ledger.checkpoint() == []
    ledger.clock = lambda: record_time(runtime) + timedelta(hours=2)
    assert [r["seq"] for r in ledger.checkpoint()] == [7]


def record_time(runtime):
    with runtime.db.transaction() as s:
        return as_utc(s.scalar(select(func.max(checkpoints.c.created_at))))


def test_a_broken_chain_is_never_signed(lite, events):
    store(lite, [events() for _ in range(4)])
    execute(lite, update(entries).where(entries.c.seq == 2).values(body=b"{}"))
    assert lite.domain.checkpoint(force=True) == []


def test_a_lost_checkpoint_file_is_written_again(lite, events):
    store(lite, [events() for _ in range(2)])
    ledger = lite.domain
    ledger.checkpoint(force=True)
    ledger.files.path("tenant:t1", 2).unlink()
    assert ledger.sync_files() == 1 and ledger.files.exists("tenant:t1", 2)


def test_retention_purges_old_entries_and_the_chain_stays_verifiable(audit_factory, database_url, events):
    """Purged up to a signed checkpoint, the rest verifies from there; the purge is itself an event."""
    runtime = audit_factory(database_url, RETENTION_DAYS=30)
    ledger = runtime.domain
    start = ledger.clock()
    ledger.clock = lambda: start - timedelta(days=40)
    store(runtime, [events() for _ in range(5)])
    ledger.checkpoint(force=True)
    ledger.clock = lambda: start
    store(runtime, [events() for _ in range(3)])
    [result] = [r for r in ledger.purge() if r["chain"] == "tenant:t1"]
    assert (result["purged"], result["anchor_seq"]) == (5, 5)
    assert [r.seq for r in chain_rows(runtime)] == [6, 7, 8]
    report = verify(runtime)
    assert report.ok and report.first_seq == 6 and report.entries_verified == 3
    [purged] = events_of(runtime, "audit.entries.purged")
    assert purged["data"] == {"chain": "tenant:t1", "up_to_seq": 5, "count": 5, "retention_days": 30}
    assert ledger.purge() == []


def test_retention_signs_a_checkpoint_where_it_cuts(audit_factory, sqlite_url, events):
    runtime = audit_factory(sqlite_url, RETENTION_DAYS=30)
    ledger = runtime.domain
    start = ledger.clock()
    ledger.clock = lambda: start - timedelta(days=40)
    store(runtime, [events() for _ in range(4)])
    ledger.clock = lambda: start
    store(runtime, [events() for _ in range(2)])
    assert ledger.purge()[0]["anchor_seq"] == 4
    assert ledger.files.exists("tenant:t1", 4)
    assert verify(runtime).ok


def test_retention_keeps_a_broken_chain_as_evidence(audit_factory, sqlite_url, events):
    runtime = audit_factory(sqlite_url, RETENTION_DAYS=30)
    ledger = runtime.domain
    start = ledger.clock()
    ledger.clock = lambda: start - timedelta(days=40)
    store(runtime, [events() for _ in range(4)])
    ledger.clock = lambda: start
    execute(runtime, update(entries).where(entries.c.seq == 2).values(body=b"{}"))
    [result] = ledger.purge()
    assert result["purged"] == 0 and result["refused"]["seq"] == 2
    assert len(chain_rows(runtime)) == 4


def test_a_purge_without_a_checkpoint_is_detected(lite, events):
    """Deleting the oldest entries and moving the anchor by hand is not a retention purge."""
    store(lite, [events() for _ in range(5)])
    rows = chain_rows(lite)
    execute(
        lite,
        delete(entries).where(entries.c.seq <= 2),
        update(chains).where(chains.c.chain == "tenant:t1").values(anchor_seq=2, anchor_hash=rows[1].hash),
    )
    report = verify(lite)
    assert (report.first_bad.seq, report.first_bad.problem) == (1, "removed")


def test_an_unreadable_checkpoint_file_is_reported(lite, events):
    store(lite, [events()])
    ledger = lite.domain
    ledger.checkpoint(force=True)
    ledger.files.path("tenant:t1", 1).write_text("{not json")
    problems = [p for r in ledger.verify() for p in r.checkpoint_problems]
    assert [(p["source"], p["problem"]) for p in problems] == [("file tenant_t1/000000000000001.json", "malformed")]


def test_concurrent_first_starts_agree_on_one_checkpoint_key(tmp_path):
    """The api, the worker's loops and the announcer may all create the dev key at once; none may
    read a half-written file, and all must end up with the same key."""
    import threading

    for attempt in range(10):
        path = tmp_path / f"key-{attempt}.pem"
        keys, errors = [], []

        def start():
            try:
                keys.append(public_pem(Signer.from_file(path, create=True).public_key))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(set(keys)) == 1
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_each_signed_checkpoint_is_published_and_not_recorded_again(lite, events):
    """Issue 15: ``audit.checkpoint.signed`` carries what the checkpoint signed (no personal data), so the
    gdpr service can anchor erasure certificates to it; the audit does not ingest its own announcements
    (each would grow the chain it signed, to be signed again for ever)."""
    from services.audit.worker import ingest_handler

    store(lite, [events(tenant="t1"), events(tenant="t1"), events(tenant=None)])
    written = lite.domain.checkpoint(force=True)
    published = [e for e in events_of(lite) if e["type"] == "audit.checkpoint.signed"]
    assert sorted((e["data"]["chain"], e["data"]["seq"], e["tenant"]) for e in published) == [
        ("tenant:t1", 2, "t1"),
        ("vendor", 1, None),
    ]
    by_chain = {r["chain"]: r for r in written}
    for event in published:
        data = event["data"]
        record = by_chain[data["chain"]]
        assert (data["head_hash"], data["key_id"], data["signature"], data["signed_at"]) == (
            record["head_hash"],
            record["key_id"],
            record["signature"],
            record["created_at"],
        )
        assert lite.domain.trusted.problem({**record, **{k: data[k] for k in ("seq", "head_hash")}}) is None
    with lite.db.transaction() as s:
        ingest_handler(lite.domain)(s, published)
    assert len(chain_rows(lite)) == 2  # nothing was added to the chain
