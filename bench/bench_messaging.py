"""Outbox → relay → RabbitMQ → idempotent consumer, against raw pika doing the same traffic."""

from __future__ import annotations

import json
import threading
import time

from bench.common import raw_pika_round_trip
from bench.runner import Context, Figure, benchmark


@benchmark("messaging", "outbox → relay → RabbitMQ → idempotent consumer (PostgreSQL both ends)")
def messaging(ctx: Context) -> list[Figure]:
    from tests.shared.library_service import LibraryService
    from tests.support import wait_for

    count = ctx.size(50_000, 500)
    body = json.dumps({"pad": "x" * 300}).encode()
    baseline = raw_pika_round_trip(ctx.vhost(), count, body)

    service = LibraryService(ctx.postgres(), ctx.vhost(), name="bench", batch=True)
    try:
        started = time.perf_counter()
        stop = threading.Event()
        relay = threading.Thread(target=service.relay().run, args=(stop, 0.02), daemon=True)
        consumer = threading.Thread(
            target=service.bus.consume,
            args=(service.consumer.handle_batch, stop),
            kwargs={"batch_size": 500},
            daemon=True,
        )
        relay.start()
        consumer.start()
        for start in range(0, count, 500):
            service.emit_many(range(start, min(count, start + 500)))
        ok = wait_for(lambda: len(service.applied_numbers()) >= count, timeout=600, interval=0.2)
        elapsed = time.perf_counter() - started
        stop.set()
        relay.join(15)
        consumer.join(15)
        if not ok or service.applied_numbers() != list(range(count)):
            raise RuntimeError("events were lost or applied twice")
    finally:
        service.db.dispose()
    return [
        Figure(
            "events through outbox, relay and consumer",
            count / elapsed,
            "events/s",
            baseline,
            "raw pika publish (async confirms) + consume (batched acks)",
            ">= 0.50 of baseline",
            0.5,
        )
    ]
