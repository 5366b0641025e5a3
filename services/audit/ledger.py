"""The audit ledger on its database: batch ingest into the hash chains, checkpoints, verification,
queries, the GDPR trail and the retention purge (R9, R11, GDPR art. 15 and 5(2)).

Writers serialise per chain: on PostgreSQL with ``SELECT ... FOR UPDATE`` on the chain's head
row (so several workers can ingest different tenants at once), on SQLite through its single
writer (shared.db begins every transaction with ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, or_, select, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from shared import metrics
from shared.clock import as_utc, rfc3339, utcnow
from shared.config import ROOT

from .checkpoints import CheckpointFiles, Signer, TrustedKeys
from .domain import Entry, Finding, Row, chain_tenant, entry_hash, genesis, walk_chain
from .events import CHECKPOINT_SIGNED, ENTRIES_PURGED
from .models import chains, checkpoints, entries

log = logging.getLogger(__name__)

DEFAULT_KEY_FILE = ROOT / "var" / "audit-checkpoint-key.pem"
DEFAULT_CHECKPOINT_DIR = ROOT / "var" / "audit-checkpoints"
ROW_COLUMNS = (
    entries.c.seq,
    entries.c.event_id,
    entries.c.body,
    entries.c.prev_hash,
    entries.c.hash,
    entries.c.chain,
    entries.c.type,
    entries.c.time,
    entries.c.tenant,
    entries.c.actor,
    entries.c.subject,
    entries.c.resource_type,
    entries.c.resource_id,
)
_CHECKED = ("chain", "event_id", "type", "time", "tenant", "actor", "subject", "resource_type", "resource_id")


@dataclass
class Filters:
    """A query on the trail; ``tenant`` is forced to the caller's own for a tenant_admin."""

    tenant: str | None = None
    actor: str | None = None
    subject: str | None = None
    resource: str | None = None
    resource_type: str | None = None
    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: tuple[datetime, int] | None = None  # decoded cursor


@dataclass
class ChainReport:
    chain: str
    tenant: str | None
    entries_verified: int = 0
    first_seq: int = 1
    head: dict[str, Any] | None = None
    last_checkpoint: dict[str, Any] | None = None
    first_bad: Finding | None = None
    checkpoint_problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.first_bad is None and not self.checkpoint_problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "tenant": self.tenant,
            "status": "ok" if self.ok else "broken",
            "entries_verified": self.entries_verified,
            "first_seq": self.first_seq,
            "head": self.head,
            "last_checkpoint": self.last_checkpoint,
            "first_bad": self.first_bad.as_dict() if self.first_bad else None,
            "checkpoint_problems": self.checkpoint_problems,
        }


def _insert(session: Session, table):
    dialect = session.get_bind().dialect.name
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


class Ledger:
    """Everything the audit does with its database, for one service runtime (api, worker or CLI)."""

    def __init__(self, db, outbox, config: Mapping[str, Any], *, clock=utcnow) -> None:
        self.db = db
        self.outbox = outbox
        self.config = config
        self.clock = clock
        self._keys: tuple[Signer, TrustedKeys] | None = None
        self.files = CheckpointFiles(Path(config.get("CHECKPOINT_DIR") or DEFAULT_CHECKPOINT_DIR))
        self.retention = timedelta(days=config["RETENTION_DAYS"])
        self._insert_entries = entries.insert()

    # --- keys ---------------------------------------------------------------------------------------
    def load_keys(self) -> tuple[Signer, TrustedKeys]:
        """Load the checkpoint key and the trusted keys (a ConfigError when one cannot be read).

        On first use rather than at construction, so wiring a ledger (the deploy renderer does, to
        learn the topology) touches no secret; the worker's preflight and /readyz call it early.
        """
        if self._keys is None:
            key_file = self.config.get("CHECKPOINT_KEY_FILE")
            signer = Signer.from_file(Path(key_file) if key_file else DEFAULT_KEY_FILE, create=not key_file)
            trusted = TrustedKeys.from_files(
                self.config.get("CHECKPOINT_TRUSTED_KEYS") or (), extra=[signer.public_key]
            )
            self._keys = (signer, trusted)
        return self._keys

    @property
    def signer(self) -> Signer:
        return self.load_keys()[0]

    @property
    def trusted(self) -> TrustedKeys:
        return self.load_keys()[1]

    # --- ingest ------------------------------------------------------------------------------------
    def ingest(self, session: Session, batch: Iterable[Entry]) -> int:
        """Append new events to their chains in this transaction; events already stored are skipped."""
        fresh: dict[str, Entry] = {}
        for entry in batch:
            fresh.setdefault(entry.event_id, entry)
        if not fresh:
            return 0
        ids = list(fresh)
        for start in range(0, len(ids), 1000):
            for stored in session.scalars(
                select(entries.c.event_id).where(entries.c.event_id.in_(ids[start : start + 1000]))
            ):
                fresh.pop(stored, None)
        if not fresh:
            return 0
        by_chain: dict[str, list[Entry]] = {}
        for entry in fresh.values():
            by_chain.setdefault(entry.chain, []).append(entry)
        now = self.clock()
        heads = self._lock_heads(session, sorted(by_chain), now)
        rows, moved = [], []
        for chain, items in by_chain.items():
            seq, prev = heads[chain]
            for entry in items:
                seq += 1
                digest = entry_hash(prev, entry.body)
                rows.append(
                    {
                        **entry.columns(),
                        "seq": seq,
                        "recorded_at": now,
                        "body": entry.body,
                        "prev_hash": prev,
                        "hash": digest,
                    }
                )
                prev = digest
            moved.append({"b_chain": chain, "b_seq": seq, "b_hash": prev, "b_now": now})
        session.execute(self._insert_entries, rows)
        session.execute(
            update(chains)
            .where(chains.c.chain == bindparam("b_chain"))
            .values(seq=bindparam("b_seq"), head_hash=bindparam("b_hash"), updated_at=bindparam("b_now")),
            moved,
        )
        return len(rows)

    def _lock_heads(self, session: Session, names: list[str], now: datetime) -> dict[str, tuple[int, bytes]]:
        def read() -> dict[str, tuple[int, bytes]]:
            query = (
                select(chains.c.chain, chains.c.seq, chains.c.head_hash)
                .where(chains.c.chain.in_(names))
                .order_by(chains.c.chain)
                .with_for_update()
            )
            return {r.chain: (r.seq, r.head_hash) for r in session.execute(query)}

        heads = read()
        missing = [name for name in names if name not in heads]
        if missing:
            session.execute(
                _insert(session, chains).on_conflict_do_nothing(),
                [
                    {
                        "chain": name,
                        "tenant": chain_tenant(name),
                        "seq": 0,
                        "head_hash": genesis(name),
                        "anchor_seq": 0,
                        "anchor_hash": genesis(name),
                        "checkpoint_seq": 0,
                        "checkpoint_at": None,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for name in missing
                ],
            )
            heads = read()
        return heads

    # --- checkpoints -------------------------------------------------------------------------------
    def checkpoint(self, *, force: bool = False) -> list[dict[str, Any]]:
        """Sign the head of every chain that is due (N new entries or T seconds); returns the new checkpoints.

        A chain's new entries are verified from its previous checkpoint first: a broken chain is
        reported and never signed, so a checkpoint cannot vouch for tampered entries.
        """
        now = self.clock()
        every, interval = self.config["CHECKPOINT_EVERY"], timedelta(seconds=self.config["CHECKPOINT_INTERVAL"])
        with self.db.transaction() as s:
            candidates = s.execute(select(chains).where(chains.c.seq > chains.c.checkpoint_seq)).all()
        written = []
        for head in candidates:
            since = as_utc(head.checkpoint_at or head.created_at)
            if not force and head.seq - head.checkpoint_seq < every and now - since < interval:
                continue
            with self.db.transaction() as s:
                current = s.execute(select(chains).where(chains.c.chain == head.chain).with_for_update()).one()
                if current.seq <= current.checkpoint_seq:
                    continue
                finding = self._check_segment(s, current)
                metrics.AUDIT_VERIFICATIONS.labels("audit", "ok" if finding is None else "broken", "checkpoint").inc()
                if finding is not None:
                    log.error(
                        "audit: chain %s is broken at entry %d (%s); not signing a checkpoint",
                        current.chain,
                        finding.seq,
                        finding.problem,
                    )
                    continue
                record = self.signer.sign(current.chain, current.seq, current.head_hash.hex())
                self._store_checkpoint(s, record, now)
                self._announce_checkpoint(s, record)
            written.append(record)
        for record in written:
            self.files.write(record)
        return written

    def _store_checkpoint(self, s: Session, record: dict[str, Any], now: datetime) -> None:
        s.execute(
            checkpoints.insert().values(
                chain=record["chain"],
                seq=record["seq"],
                head_hash=record["head_hash"],
                key_id=record["key_id"],
                signature=record["signature"],
                created_at=now,
            )
        )
        s.execute(
            update(chains)
            .where(chains.c.chain == record["chain"], chains.c.checkpoint_seq < record["seq"])
            .values(checkpoint_seq=record["seq"], checkpoint_at=now)
        )

    def _announce_checkpoint(self, s: Session, record: dict[str, Any]) -> None:
        """Publish the checkpoint (``audit.checkpoint.signed``, issue 15) in its own transaction's outbox."""
        self.outbox.emit(
            s,
            CHECKPOINT_SIGNED,
            data={
                "chain": record["chain"],
                "seq": record["seq"],
                "head_hash": record["head_hash"],
                "key_id": record["key_id"],
                "signature": record["signature"],
                "signed_at": record["created_at"],
            },
            actor={"id": "audit-checkpoint", "tenant": None, "kind": "system"},
            tenant=chain_tenant(record["chain"]),
            resource={"type": "audit_chain", "id": record["chain"]},
        )

    def _check_segment(self, s: Session, head) -> Finding | None:
        """Walk a chain's entries since its last checkpoint (or purge anchor) up to the recorded head."""
        start_seq, start_hash = head.anchor_seq, head.anchor_hash
        if head.checkpoint_seq > head.anchor_seq:
            row = s.execute(
                select(checkpoints).where(checkpoints.c.chain == head.chain, checkpoints.c.seq == head.checkpoint_seq)
            ).one_or_none()
            if row is None or self.trusted.problem(_record(row)) is not None:
                return Finding(head.checkpoint_seq, "rewritten", "the last checkpoint in the database is not valid")
            start_seq, start_hash = head.checkpoint_seq, bytes.fromhex(row.head_hash)
        finding = self._check_span(s, head.chain, start_seq, start_hash, head.seq)
        if finding is None:
            last = s.scalar(select(entries.c.hash).where(entries.c.chain == head.chain, entries.c.seq == head.seq))
            if head.seq > start_seq and last != head.head_hash:
                return Finding(head.seq, "changed", "the recorded head differs from the last entry")
        return finding

    def _check_span(self, s: Session, chain: str, start_seq: int, start_hash: bytes, up_to: int) -> Finding | None:
        """Walk entries ``start_seq+1 .. up_to`` against the trusted checkpoints among them."""
        signed = {}
        for row in s.execute(
            select(checkpoints).where(
                checkpoints.c.chain == chain, checkpoints.c.seq > start_seq, checkpoints.c.seq <= up_to
            )
        ):
            record = _record(row)
            if self.trusted.problem(record) is None:
                signed[record["seq"]] = record["head_hash"]
        with closing(self._rows(s, chain, start_seq, up_to)) as rows:
            walk = walk_chain(
                chain, rows, start_seq=start_seq, start_hash=start_hash, checkpoints=signed, head_seq=up_to
            )
        return walk.first_bad

    def sync_files(self) -> int:
        """Write the files of checkpoints that are in the database but not on disk (a crash between the two)."""
        with self.db.transaction() as s:
            heads = {r.chain: r.anchor_seq for r in s.execute(select(chains.c.chain, chains.c.anchor_seq))}
            rows = s.execute(select(checkpoints)).all()
        written = 0
        for row in rows:
            if row.seq < heads.get(row.chain, 0) or self.files.exists(row.chain, row.seq):
                continue
            self.files.write(_record(row))
            written += 1
        return written

    # --- verification ------------------------------------------------------------------------------
    def verify(self, chain: str | None = None, tenant: str | None = None) -> list[ChainReport]:
        """Verify every chain (or one, or a tenant's): links, query copies, checkpoints, cut tails."""
        # Files first, then one database snapshot: a checkpoint on disk was committed before it was
        # written, so the snapshot holds every entry it vouches for.
        file_records = [("file " + name, record) for name, record in self.files.read_all()]
        with self.db.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                s = Session(bind=conn)
                try:
                    reports = self._verify_in(s, file_records, chain, tenant)
                finally:
                    s.close()
        broken = sum(1 for r in reports if not r.ok)
        if reports:
            metrics.AUDIT_VERIFICATIONS.labels("audit", "ok", "full").inc(len(reports) - broken)
            metrics.AUDIT_VERIFICATIONS.labels("audit", "broken", "full").inc(broken)
        if chain is None and tenant is None:
            metrics.AUDIT_BROKEN.labels("audit").set(broken)
        return reports

    def _verify_in(self, s: Session, file_records, only_chain, tenant) -> list[ChainReport]:
        heads = {r.chain: r for r in _read(s, select(*HEAD_COLUMNS))}
        db_records = [("database", _record(r)) for r in _read(s, select(checkpoints))]
        names = set(heads) | set(s.scalars(select(entries.c.chain).distinct()))
        reports: dict[str, ChainReport] = {}
        trusted: dict[str, dict[int, str]] = {}
        latest: dict[str, dict[str, Any]] = {}

        def report_for(name: str) -> ChainReport:
            if name not in reports:
                reports[name] = ChainReport(name, chain_tenant(name))
            return reports[name]

        for source, record in [*db_records, *file_records]:
            problem = self.trusted.problem(record)
            name = record.get("chain") if isinstance(record, dict) and isinstance(record.get("chain"), str) else None
            if problem is not None:
                report_for(name or "unknown").checkpoint_problems.append(
                    {
                        "source": source,
                        "seq": record.get("seq") if isinstance(record, dict) else None,
                        "key_id": record.get("key_id") if isinstance(record, dict) else None,
                        "problem": problem,
                    }
                )
                continue
            signed = trusted.setdefault(name, {})
            if signed.get(record["seq"], record["head_hash"]) != record["head_hash"]:
                report_for(name).checkpoint_problems.append(
                    {"source": source, "seq": record["seq"], "key_id": record["key_id"], "problem": "conflict"}
                )
                continue
            signed[record["seq"]] = record["head_hash"]
            if record["seq"] >= latest.get(name, {}).get("seq", -1):
                latest[name] = record
            names.add(name)
        for name in sorted(names):
            if only_chain is not None and name != only_chain:
                continue
            if tenant is not None and chain_tenant(name) != tenant:
                continue
            report = report_for(name)
            try:
                self._verify_chain(s, report, heads.get(name), trusted.get(name, {}), latest.get(name))
            except Exception as exc:  # noqa: BLE001 - one unreadable chain must not stop the others' verdicts
                log.error("audit: verifying chain %s failed (%s)", name, type(exc).__name__)
                report.first_bad = Finding(
                    report.first_seq, "damaged", f"the chain could not be read past this point ({type(exc).__name__})"
                )
        keep = [
            r
            for name, r in sorted(reports.items())
            if (only_chain is None or name == only_chain) and (tenant is None or chain_tenant(name) == tenant)
        ]
        return keep

    def _verify_chain(
        self, s: Session, report: ChainReport, head, signed: dict[int, str], latest: dict[str, Any] | None
    ) -> None:
        name = report.chain
        damage = _head_damage(head)
        if damage is not None:
            report.head = None
            report.first_bad = Finding(1, "damaged", f"the chain's head record is damaged: {damage}")
            return
        anchor_seq = head.anchor_seq if head is not None else 0
        anchor_hash = head.anchor_hash if head is not None else genesis(name)
        head_seq = head.seq if head is not None else 0
        report.first_seq = anchor_seq + 1
        report.head = {"seq": head_seq, "hash": head.head_hash.hex() if head is not None else None}
        if latest is not None:
            report.last_checkpoint = {
                "seq": latest["seq"],
                "hash": latest["head_hash"],
                "key_id": latest["key_id"],
                "created_at": latest.get("created_at"),
            }
        if anchor_seq and signed.get(anchor_seq) != anchor_hash.hex():
            report.first_bad = Finding(
                1,
                "removed",
                f"entries 1 to {anchor_seq} are gone and no signed checkpoint vouches for entry {anchor_seq}",
            )
            return
        later = {seq: h for seq, h in signed.items() if seq > anchor_seq}
        with closing(self._rows(s, name, anchor_seq, None)) as rows:
            walk = walk_chain(
                name, rows, start_seq=anchor_seq, start_hash=anchor_hash, checkpoints=later, head_seq=head_seq
            )
        report.entries_verified = walk.verified
        report.first_bad = walk.first_bad
        if (
            walk.first_bad is None
            and head is not None
            and walk.last_seq == head_seq
            and walk.last_hash != head.head_hash
        ):
            report.first_bad = Finding(head_seq, "changed", "the recorded head differs from the last entry")

    def _rows(self, s: Session, chain: str, after: int, up_to: int | None, chunk: int = 5000) -> Iterator[Row]:
        """A chain's entries in seq order, read ``chunk`` at a time.

        On PostgreSQL the next chunk is read by a helper thread while this one is walked, so the
        server produces rows while the hashes are checked; the session is only ever used by one
        thread at a time (the reader between hand-overs), and the reader is waited for before the
        generator ends, however the walk ends.
        """

        def read(after: int) -> list:
            query = select(*ROW_COLUMNS).where(entries.c.chain == chain, entries.c.seq > after)
            if up_to is not None:
                query = query.where(entries.c.seq <= up_to)
            return _read(s, query.order_by(entries.c.seq).limit(chunk))

        def last_of(batch: list) -> int | None:
            if len(batch) < chunk or not isinstance(batch[-1].seq, int):
                return None  # a sequence number that is not one ends the walk there (walk_chain names it)
            return int(batch[-1].seq)

        ahead = s.get_bind().dialect.name == "postgresql"
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-verify") if ahead else None
        pending: Future[list] | None = None
        try:
            batch = read(after)
            while True:
                following = last_of(batch)
                if following is not None and pool is not None:
                    pending = pool.submit(read, following)
                yield from self._as_rows(batch)
                if following is None:
                    return
                if pending is not None:
                    batch, pending = pending.result(), None
                else:
                    batch = read(following)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)  # a running read ends before the session moves on

    @staticmethod
    def _as_rows(batch: list) -> Iterator[Row]:
        for r in batch:
            if isinstance(r, StoredRow):
                yield Row(
                    seq=r.seq,
                    event_id=r.event_id,
                    body=r.body,
                    prev_hash=r.prev_hash,
                    hash=r.hash,
                    columns={name: getattr(r, name) for name in _CHECKED},
                    unreadable=r.damage,
                )
                continue
            # The typed read (nearly every row): unpack the tuple in ROW_COLUMNS order.
            seq, event_id, body, prev_hash, digest, name, kind, when, tenant, actor, subject, rtype, rid = r
            yield Row(
                seq,
                event_id,
                body,
                prev_hash,
                digest,
                {
                    "chain": name,
                    "event_id": event_id,
                    "type": kind,
                    "time": when,
                    "tenant": tenant,
                    "actor": actor,
                    "subject": subject,
                    "resource_type": rtype,
                    "resource_id": rid,
                },
            )

    # --- queries -----------------------------------------------------------------------------------
    def _where(self, f: Filters) -> list:
        c = entries.c
        clauses = []
        if f.tenant is not None:
            clauses.append(c.tenant == f.tenant)
        if f.actor is not None:
            clauses.append(c.actor == f.actor)
        if f.subject is not None:
            clauses.append(c.subject == f.subject)
        if f.resource is not None:
            clauses.append(c.resource_id == f.resource)
        if f.resource_type is not None:
            clauses.append(c.resource_type == f.resource_type)
        if f.type is not None:
            if f.type.endswith(".*"):
                prefix = f.type[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                clauses.append(c.type.like(prefix + "%", escape="\\"))
            else:
                clauses.append(c.type == f.type)
        if f.since is not None:
            clauses.append(c.time >= f.since)
        if f.until is not None:
            clauses.append(c.time < f.until)
        if f.after is not None:
            at, entry_id = f.after
            clauses.append(or_(c.time > at, and_(c.time == at, c.id > entry_id)))
        return clauses

    def query(self, f: Filters, limit: int) -> tuple[list[dict[str, Any]], tuple[datetime, int] | None]:
        """One page in (time, id) order, and the position after it when there is more."""
        c = entries.c
        with self.db.transaction() as s:
            rows = s.execute(
                select(c.id, c.chain, c.seq, c.time, c.recorded_at, c.body, c.hash)
                .where(*self._where(f))
                .order_by(c.time, c.id)
                .limit(limit + 1)
            ).all()
        more = len(rows) > limit
        rows = rows[:limit]
        items = [_item(r) for r in rows]
        return items, ((as_utc(rows[-1].time), rows[-1].id) if more and rows else None)

    def iterate(self, f: Filters, page: int = 1000) -> Iterator[dict[str, Any]]:
        """Every entry matching ``f``, page by page (one short transaction per page)."""
        while True:
            items, after = self.query(f, page)
            yield from items
            if after is None:
                return
            f = Filters(**{**f.__dict__, "after": after})

    # --- GDPR (art. 15 trail, art. 17 answer) --------------------------------------------------------
    @staticmethod
    def _trail_clause(references: list[str]):
        users = [ref.split(":", 2)[2] for ref in references if ref.startswith("auth:user:")]
        clause = entries.c.subject.in_(references)
        return or_(clause, entries.c.actor.in_(users)) if users else clause

    def trail(self, s: Session, references: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Who saw or changed the data of these subjects, and what a user among them did."""
        if not references:
            return {"audit_trail": [], "activity": []}
        c = entries.c
        rows = s.execute(
            select(c.id, c.chain, c.seq, c.time, c.recorded_at, c.body, c.hash, c.subject)
            .where(self._trail_clause(references))
            .order_by(c.time, c.id)
        ).all()
        refs = set(references)
        trail, activity = [], []
        for r in rows:
            (trail if r.subject in refs else activity).append(_export_record(r))
        return {"audit_trail": trail, "activity": activity}

    def retained(self, s: Session, references: list[str]) -> tuple[int, datetime | None]:
        """How many entries concern these subjects, and until when the newest is kept."""
        if not references:
            return 0, None
        count, newest = s.execute(
            select(func.count(), func.max(entries.c.recorded_at)).where(self._trail_clause(references))
        ).one()
        return count, (as_utc(newest) + self.retention if newest is not None else None)

    def counts(self, s: Session) -> dict[str, int]:
        """Entries per kind, from the chain heads (no table scan)."""
        out = {"audit_entry": 0, "vendor_audit_entry": 0}
        for r in s.execute(select(chains.c.tenant, chains.c.seq, chains.c.anchor_seq)):
            out["audit_entry" if r.tenant is not None else "vendor_audit_entry"] += r.seq - r.anchor_seq
        return out

    def tenant_counts(self, s: Session) -> dict[str, dict[str, int]]:
        """Entries of each tenant's chains, per tenant slug (no table scan; issue 15, art. 30(2))."""
        out: dict[str, dict[str, int]] = {}
        for r in s.execute(
            select(chains.c.tenant, chains.c.seq, chains.c.anchor_seq).where(chains.c.tenant.is_not(None))
        ):
            kinds = out.setdefault(r.tenant, {"audit_entry": 0})
            kinds["audit_entry"] += r.seq - r.anchor_seq
        return out

    # --- retention ---------------------------------------------------------------------------------
    def purge(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Delete entries older than the retention period, chain by chain, up to a signed checkpoint.

        The purged span is verified first (a broken chain is kept as evidence, never purged), a
        checkpoint is signed at its last entry, and that entry's hash becomes the chain's anchor,
        so the rest of the chain stays verifiable.
        """
        now = now or self.clock()
        cutoff = now - self.retention
        with self.db.transaction() as s:
            names = list(s.scalars(select(chains.c.chain).order_by(chains.c.chain)))
        results, new_files = [], []
        for name in names:
            with self.db.transaction() as s:
                head = s.execute(select(chains).where(chains.c.chain == name).with_for_update()).one()
                target = s.scalar(
                    select(func.max(entries.c.seq)).where(
                        entries.c.chain == name, entries.c.seq > head.anchor_seq, entries.c.recorded_at < cutoff
                    )
                )
                if target is None:
                    continue
                finding = self._check_span(s, name, head.anchor_seq, head.anchor_hash, target)
                if finding is not None:
                    log.error(
                        "audit: chain %s is broken at entry %d (%s); not purging it", name, finding.seq, finding.problem
                    )
                    results.append({"chain": name, "purged": 0, "refused": finding.as_dict()})
                    continue
                anchor_hash = s.scalar(select(entries.c.hash).where(entries.c.chain == name, entries.c.seq == target))
                has_checkpoint = s.scalar(
                    select(func.count())
                    .select_from(checkpoints)
                    .where(checkpoints.c.chain == name, checkpoints.c.seq == target)
                )
                if not has_checkpoint:
                    record = self.signer.sign(name, target, anchor_hash.hex())
                    self._store_checkpoint(s, record, now)
                    new_files.append(record)
                purged = s.execute(delete(entries).where(entries.c.chain == name, entries.c.seq <= target)).rowcount
                s.execute(
                    update(chains)
                    .where(chains.c.chain == name)
                    .values(anchor_seq=target, anchor_hash=anchor_hash, updated_at=now)
                )
                s.execute(delete(checkpoints).where(checkpoints.c.chain == name, checkpoints.c.seq < target))
                self.outbox.emit(
                    s,
                    ENTRIES_PURGED,
                    data={"chain": name, "up_to_seq": target, "count": purged, "retention_days": self.retention.days},
                    actor={"id": "audit-retention", "tenant": None, "kind": "system"},
                    tenant=chain_tenant(name),
                    resource={"type": "audit_chain", "id": name},
                )
                results.append({"chain": name, "purged": purged, "anchor_seq": target})
        for record in new_files:
            self.files.write(record)
        for result in results:
            if result.get("purged"):
                self.files.remove_before(result["chain"], result["anchor_seq"])
        return results


HEAD_COLUMNS = (chains.c.chain, chains.c.seq, chains.c.head_hash, chains.c.anchor_seq, chains.c.anchor_hash)


class StoredRow:
    """A row read column by column because one of its values does not fit its column's type."""

    def __init__(self, values: dict[str, Any], damage: str | None) -> None:
        self.__dict__.update(values)
        self.damage = damage


def _read(s: Session, query) -> list:
    """Every row of ``query``; rows whose stored values cannot be read come back as a ``StoredRow`` whose
    ``damage`` says why.

    The typed read is the fast path.  When a value does not fit its column (SQLite keeps any type in
    any column: a time that is not one, a number that is text), the rows are read again raw and
    converted one value at a time, so verification names the bad entry instead of failing.
    """
    try:
        return s.execute(query).all()  # rows with attributes; only the slow path below builds StoredRows
    except (ValueError, TypeError, OverflowError, ArithmeticError):
        pass
    dialect = s.get_bind().dialect
    columns = list(query.selected_columns)
    raw = query.with_only_columns(*[type_coerce(c, NullType()).label(c.name) for c in columns])
    converters = {c.name: c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns}
    rows = []
    for r in s.execute(raw):
        values, damage = {}, None
        for name, value in r._mapping.items():
            convert = converters[name]
            try:
                values[name] = convert(value) if convert is not None and value is not None else value
            except (ValueError, TypeError, OverflowError, ArithmeticError):
                values[name] = value
                damage = damage or f"the {name} column holds {_stored_as(value)} that cannot be read as its type"
        rows.append(StoredRow(values, damage))
    return rows


def _stored_as(value: Any) -> str:
    return "text" if isinstance(value, str) else type(value).__name__


def _head_damage(head) -> str | None:
    if head is None:
        return None
    if getattr(head, "damage", None):
        return head.damage
    for name in ("seq", "anchor_seq"):
        value = getattr(head, name)
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name} is stored as {_stored_as(value)}, not as an integer"
    for name in ("head_hash", "anchor_hash"):
        if not isinstance(getattr(head, name), bytes):
            return f"{name} is stored as {_stored_as(getattr(head, name))}, not as bytes"
    return None


def _record(row) -> dict[str, Any]:
    """A checkpoint row as the record that was signed; values of the wrong type stay as they are, so the
    record is reported as malformed instead of failing the whole verification."""
    seq = row.seq
    if isinstance(seq, str) and seq.isdigit():
        seq = int(seq)
    try:
        created = rfc3339(row.created_at) if isinstance(row.created_at, datetime) else None
    except (ValueError, TypeError, OverflowError):
        created = None
    return {
        "format": 1,
        "chain": row.chain,
        "seq": seq,
        "head_hash": row.head_hash,
        "key_id": row.key_id,
        "signature": row.signature,
        "created_at": created,
    }


def _item(row) -> dict[str, Any]:
    event = json.loads(row.body)
    event["audit"] = {
        "chain": row.chain,
        "seq": row.seq,
        "recorded_at": rfc3339(row.recorded_at),
        "hash": row.hash.hex(),
    }
    return event


def _export_record(row) -> dict[str, Any]:
    event = json.loads(row.body)
    actor = event.get("actor") or {}
    resource = event.get("resource") or {}
    return {
        "event_id": event["id"],
        "time": event["time"],
        "type": event["type"],
        "source": event["source"],
        "actor_id": actor.get("id"),
        "actor_kind": actor.get("kind"),
        "actor_tenant": actor.get("tenant"),
        "tenant": event["tenant"],
        "subject": event["subject"],
        "resource_type": resource.get("type"),
        "resource_id": resource.get("id"),
        "data": event["data"],
        "chain": row.chain,
        "seq": row.seq,
    }
