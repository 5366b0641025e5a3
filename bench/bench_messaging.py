"""Outbox → relay → RabbitMQ → idempotent consumer, against raw pika doing the same traffic."""
from __future__ import annotations

import json
import threading
import time
import uuid

from bench.runner import Context, Figure, benchmark


def raw_pika_round_trip(url: str, count: int, body: bytes) -> float:
    """Baseline: raw pika publish with asynchronous confirms, then consume with batched acks.

    Returns messages per second over both halves (the time to move ``count`` messages through).
    """
    import pika

    params = pika.URLParameters(url)
    setup = pika.BlockingConnection(params)
    ch = setup.channel()
    ch.exchange_declare("bench.raw", exchange_type="topic", durable=True)
    ch.queue_declare("bench.raw", durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_bind("bench.raw", "bench.raw", routing_key="#")
    setup.close()

    started = time.perf_counter()
    state = {"acked": 0, "sent": 0}

    def on_open(conn):
        conn.channel(on_open_callback=on_channel)

    def on_channel(channel):
        def on_confirm(frame):
            m = frame.method
            state["acked"] = m.delivery_tag if m.multiple else state["acked"] + 1
            if state["acked"] >= count:
                channel.connection.close()

        def publish_some():
            # Keep a bounded window in flight, as a real asynchronous publisher would.
            while state["sent"] < count and state["sent"] - state["acked"] < 2000:
                channel.basic_publish("bench.raw", "bench.event", body,
                                      pika.BasicProperties(delivery_mode=2, message_id=str(uuid.uuid4())))
                state["sent"] += 1
            if state["sent"] < count:
                channel.connection.ioloop.call_later(0.001, publish_some)

        channel.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda _f: publish_some())

    conn = pika.SelectConnection(params, on_open_callback=on_open,
                                 on_close_callback=lambda c, e: c.ioloop.stop())
    conn.ioloop.start()
    conn.ioloop.close()

    consumer = pika.BlockingConnection(params)
    ch = consumer.channel()
    ch.basic_qos(prefetch_count=500)
    received = 0
    last_tag = None
    for method, _props, _body in ch.consume("bench.raw", inactivity_timeout=5):
        if method is None:
            break
        received += 1
        last_tag = method.delivery_tag
        if received % 200 == 0 or received == count:
            ch.basic_ack(last_tag, multiple=True)
        if received >= count:
            break
    ch.cancel()
    consumer.close()
    elapsed = time.perf_counter() - started
    if received != count:
        raise RuntimeError(f"baseline lost messages: {received} of {count}")
    return count / elapsed


@benchmark("messaging", "outbox → relay → RabbitMQ → idempotent consumer (PostgreSQL both ends)")
def messaging(ctx: Context) -> list[Figure]:
    from tests.shared.library_service import LibraryService, wait_for

    count = ctx.size(50_000, 500)
    body = json.dumps({"pad": "x" * 300}).encode()
    baseline = raw_pika_round_trip(ctx.vhost(), count, body)

    service = LibraryService(ctx.postgres(), ctx.vhost(), name="bench", batch=True)
    try:
        started = time.perf_counter()
        stop = threading.Event()
        relay = threading.Thread(target=service.relay().run, args=(stop, 0.02), daemon=True)
        consumer = threading.Thread(target=service.bus.consume, args=(service.consumer.handle_batch, stop),
                                    kwargs={"batch_size": 500}, daemon=True)
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
    return [Figure("events through outbox, relay and consumer", count / elapsed, "events/s", baseline,
                   "raw pika publish (async confirms) + consume (batched acks)", ">= 0.50 of baseline", 0.5)]
