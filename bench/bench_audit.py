"""The audit service: ingest end to end over the distributed system (with its memory), and chain verification."""

from __future__ import annotations

import json
import threading
import time
import uuid

from bench.common import System, plain_url, raw_pika_round_trip, wait_until
from bench.runner import Context, Figure, benchmark

TENANTS = [f"bench-{i}" for i in range(10)]


def placed_events(count: int, start: int) -> list:
    """``count`` orders.order.placed events as a service emits them, spread over ten tenants."""
    from services.orders.events import ORDER_PLACED

    out = []
    for n in range(start, start + count):
        tenant = TENANTS[n % len(TENANTS)]
        order_id = str(uuid.uuid4())
        out.append(
            (
                ORDER_PLACED,
                {
                    "data": {
                        "order_id": order_id,
                        "register_id": str(uuid.UUID(int=n % 97)),
                        "unit_id": str(uuid.UUID(int=7)),
                        "individual_id": str(uuid.uuid4()),
                        "article_id": str(uuid.UUID(int=11)),
                        "delivery_date": "2030-01-15",
                        "meal": "lunch",
                        "quantity": 1 + n % 5,
                    },
                    "actor": {"id": str(uuid.UUID(int=n % 50)), "tenant": tenant, "kind": "user"},
                    "tenant": tenant,
                    "subject": None,
                    "resource": {"type": "order", "id": order_id},
                },
            )
        )
    return out


def envelope_size() -> int:
    from shared.events import make_event

    event_type, kwargs = placed_events(1, 0)[0]
    return len(json.dumps(make_event(event_type, source="orders", **kwargs)).encode())


def stored(conn) -> int:
    return conn.execute("SELECT count(*) FROM audit_entries WHERE type = 'orders.order.placed'").fetchone()[0]


@benchmark(
    "audit_ingest",
    "events through a service's outbox → RabbitMQ → audit hash chains, "
    "over the distributed system; its memory (PSS per process and in total) idle and under that load",
)
def audit_ingest(ctx: Context) -> list[Figure]:
    import psycopg

    from services.orders.models import tables as orders_tables
    from shared.crypto import PayloadCipher
    from shared.db import Database
    from shared.outbox import Outbox

    count = ctx.size(100_000, 1_000)
    baseline = raw_pika_round_trip(ctx.vhost(), count, b"x" * envelope_size())

    # The smoke run starts only the two services on the path, to stay quick; the full run starts them all.
    system = System(ctx, ("orders", "audit") if ctx.smoke else None).start()
    time.sleep(ctx.size(10, 2))  # let start-up traffic (announcements, first checkpoints) settle
    idle_rss = [system.rss_mib() for _ in range(3)]
    idle = [system.pss_mib() for _ in range(3)]
    processes = system.memory()
    for kind, pss, rss in processes:
        print(f"   idle: {kind:<22} PSS {pss:7.1f} MiB   RSS {rss:7.1f} MiB", flush=True)

    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            samples.append(system.pss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    orders_db = Database(system.urls["orders"])
    outbox = Outbox(orders_tables.outbox, "orders", cipher=PayloadCipher(system.keyring))
    events = placed_events(count, 0)  # built before the clock starts: this is the service's own work
    with psycopg.connect(plain_url(system.urls["audit"])) as audit:
        try:
            sampler.start()
            started = time.perf_counter()
            for first in range(0, count, 500):
                with orders_db.transaction() as s:
                    outbox.emit_many(s, events[first : first + 500])
            ok = wait_until(lambda: stored(audit) >= count, timeout=ctx.size(1800, 120), interval=0.2)
            elapsed = time.perf_counter() - started
            got = stored(audit)
        finally:
            done.set()
            sampler.join(5)
            orders_db.dispose()
    if not ok or got != count:
        raise RuntimeError(f"audit stored {got} of {count} events")
    kinds: dict[str, list[float]] = {}
    for kind, pss, _rss in processes:
        group = "launcher" if kind == "launcher" else kind.split(" ", 1)[1]  # api master / api worker / worker
        kinds.setdefault(group, []).append(pss)
    per_kind = [
        Figure(f"PSS idle: {group} processes ({len(values)})", sum(values), "MiB", higher_is_better=False)
        for group, values in sorted(kinds.items())
    ]
    cores_note = f"{len(processes)} processes"
    return [
        Figure(
            "events stored in the audit chains (no event lost)",
            count / elapsed,
            "events/s",
            baseline,
            "raw pika publish (async confirms) + consume (batched acks)",
            ">= 0.50 of baseline",
            0.5,
        ),
        Figure(
            f"memory (PSS) of the whole system, idle ({cores_note})",
            sum(idle) / len(idle),
            "MiB",
            600.0,
            "goal 600 MiB",
            "< 600 MiB",
            1.0,
            higher_is_better=False,
        ),
        Figure(
            "memory (PSS) of the whole system, peak during the ingest",
            max(samples or idle),
            "MiB",
            700.0,
            "goal 700 MiB",
            "< 700 MiB",
            1.0,
            higher_is_better=False,
        ),
        *per_kind,
        Figure(
            f"resident memory (RSS, shared pages counted per process) of the whole system, idle ({cores_note})",
            sum(idle_rss) / len(idle_rss),
            "MiB",
            higher_is_better=False,
        ),
    ]


@benchmark("audit_verify", "audit chain verification (links, query copies, checkpoints) over stored entries")
def audit_verify(ctx: Context) -> list[Figure]:
    from services.audit import SPEC
    from services.audit.domain import entry_hash, genesis, to_entry
    from shared.events import make_event
    from tests.support import make_runtime

    count = ctx.size(1_000_000, 2_000)
    runtime = make_runtime(SPEC, ctx.postgres(), CHECKPOINT_DIR=ctx.tempdir())
    ledger = runtime.domain
    bodies: list[bytes] = []
    try:
        for first in range(0, count, 10_000):
            batch = [
                to_entry(make_event(t, source="orders", **kw))
                for t, kw in placed_events(min(10_000, count - first), first)
            ]
            bodies += [e.body for e in batch]
            with runtime.db.transaction() as s:
                ledger.ingest(s, batch)
        ledger.checkpoint(force=True)

        started = time.perf_counter()
        reports = ledger.verify()
        elapsed = time.perf_counter() - started
    finally:
        runtime.db.dispose()
    verified = sum(r.entries_verified for r in reports)
    if verified != count or not all(r.ok for r in reports):
        raise RuntimeError(f"verification found {verified} good entries of {count}")
    # Baseline: the same SHA-256 chain over the same bodies, in memory (no database, no checks).
    started = time.perf_counter()
    prev = genesis("bench")
    for body in bodies:
        prev = entry_hash(prev, body)
    hashed = time.perf_counter() - started
    return [
        Figure(
            f"entries verified ({len(reports)} chains)",
            count / elapsed,
            "entries/s",
            count / hashed,
            "the SHA-256 chain alone, in memory",
        )
    ]
