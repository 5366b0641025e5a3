"""Ingest through the bus: RabbitMQ with PostgreSQL, and the embedded in-memory bus (R9, R11)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pika
import pytest
from sqlalchemy import func, select

from services.audit.models import entries
from shared.bus import EVENTS, GDPR, MemoryBackend, Message, dead_letter_queue, queue_name
from tests.audit.conftest import Worker
from tests.conftest import create_vhost, pg_admin
from tests.gdpr.sealing import opened_reply, sealed_command
from tests.support import wait_for


def count(runtime) -> int:
    with runtime.db.transaction() as s:
        return s.scalar(select(func.count()).select_from(entries))


def publish(runtime, envelopes, chunk: int = 2000) -> None:
    publisher = runtime.bus.publisher()
    try:
        for start in range(0, len(envelopes), chunk):
            results = publisher.publish(
                [Message(EVENTS, e["type"], json.dumps(e).encode(), e["id"]) for e in envelopes[start : start + chunk]]
            )
            assert results == [None] * len(results)
    finally:
        publisher.close()


def queue_depth(url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


@pytest.fixture(scope="module")
def shared_vhost(rabbitmq_server):
    """One fresh vhost for this module's RabbitMQ tests (made like tests/conftest.py's make_rabbit_vhost):
    creating one costs seconds of rabbitmqctl, so the tests share it and each empties the audit queues."""
    return create_vhost()


@pytest.fixture
def rabbit_audit(audit_factory, postgres_url, shared_vhost):
    """An audit runtime on PostgreSQL and RabbitMQ, its queues emptied of whatever an earlier test left."""
    conn = pika.BlockingConnection(pika.URLParameters(shared_vhost))
    try:
        channel = conn.channel()
        for queue in (queue_name("audit"), dead_letter_queue("audit")):
            channel.queue_delete(queue)
    finally:
        conn.close()
    runtime = audit_factory(postgres_url, broker_url=shared_vhost, ANNOUNCE_INTERVAL=3600.0)
    runtime.declare()
    return runtime


def test_ten_thousand_events_become_exactly_ten_thousand_entries_and_redelivery_stores_none_twice(rabbit_audit, events):
    """10,000 events over RabbitMQ: every one stored once, even when 1,000 of them arrive again."""
    batch = [events(tenant=f"t{n % 4}") for n in range(10_000)]
    publish(rabbit_audit, batch)
    with Worker(rabbit_audit):
        assert wait_for(lambda: count(rabbit_audit) == 10_000, timeout=120)
        publish(rabbit_audit, batch[:1000])
        assert wait_for(lambda: queue_depth(rabbit_audit.bus.url, rabbit_audit.bus.queue) == 0)
    assert count(rabbit_audit) == 10_000
    with rabbit_audit.db.transaction() as s:
        stored = set(s.scalars(select(entries.c.event_id)))
    assert stored == {e["id"] for e in batch}
    reports = rabbit_audit.domain.verify()
    assert [(r.chain, r.ok, r.entries_verified) for r in reports] == [(f"tenant:t{n}", True, 2500) for n in range(4)]


def test_a_poison_event_is_dead_lettered_and_the_others_are_stored(rabbit_audit, events):
    good = [events() for _ in range(5)]
    poison = {**events(), "tenant": 42}
    publish(rabbit_audit, [good[0], good[1], poison, *good[2:]])
    with Worker(rabbit_audit):
        assert wait_for(lambda: count(rabbit_audit) == 5)
        assert wait_for(lambda: queue_depth(rabbit_audit.bus.url, dead_letter_queue("audit")) == 1)
    assert rabbit_audit.domain.verify()[0].ok


def test_events_wait_out_a_database_outage_and_none_is_dead_lettered(rabbit_audit, events, postgres_url):
    """PostgreSQL refuses connections for a while: the ingest waits, then stores everything once."""
    name = postgres_url.rsplit("/", 1)[1]
    with Worker(rabbit_audit):
        publish(rabbit_audit, [events() for _ in range(10)])
        assert wait_for(lambda: count(rabbit_audit) == 10)
        with pg_admin() as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            publish(rabbit_audit, [events() for _ in range(50)])
            time.sleep(2.0)  # long enough for several retries had the consumer nacked
        finally:
            with pg_admin() as admin:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert wait_for(lambda: count(rabbit_audit) == 60)
    assert queue_depth(rabbit_audit.bus.url, dead_letter_queue("audit")) == 0
    assert rabbit_audit.domain.verify()[0].ok


def test_ingest_goes_on_after_the_broker_drops_the_connection(rabbit_audit, events):
    with Worker(rabbit_audit):
        publish(rabbit_audit, [events() for _ in range(5)])
        assert wait_for(lambda: count(rabbit_audit) == 5)
        vhost = rabbit_audit.bus.url.rsplit("/", 1)[1]
        listing = subprocess.run(
            ["rabbitmqctl", "-q", "list_connections", "pid", "vhost"], capture_output=True, text=True, check=True
        ).stdout
        pids = [line.split("\t")[0] for line in listing.splitlines() if line.endswith("\t" + vhost)]
        assert pids
        for pid in pids:
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", pid, "test: broker restart"], capture_output=True, check=False
            )
        publish(rabbit_audit, [events() for _ in range(5)])
        assert wait_for(lambda: count(rabbit_audit) == 10)


# --- the embedded run's in-memory bus -----------------------------------------------------------


@pytest.fixture
def memory_audit(audit_factory, tmp_path):
    runtime = audit_factory(f"sqlite:///{tmp_path / 'audit.db'}", CHECKPOINT_INTERVAL=0.05, ANNOUNCE_INTERVAL=3600.0)
    runtime.declare()
    yield runtime
    MemoryBackend.reset()


def test_the_embedded_run_stores_events_and_signs_checkpoints(memory_audit, events):
    batch = [events() for _ in range(20)]
    publish(memory_audit, batch + batch[:5])
    with Worker(memory_audit):
        assert wait_for(lambda: count(memory_audit) == 20)
        ledger = memory_audit.domain
        assert wait_for(lambda: ledger.files.exists("tenant:t1", 20))
    report = memory_audit.domain.verify()[0]
    assert report.ok and report.last_checkpoint["seq"] == 20


def test_a_gdpr_command_arrives_with_the_events_and_is_answered_once(memory_audit, events):
    """Art. 15: the trail of the references the gdpr service passes comes back in one reply."""
    from kombu import Connection

    from shared.bus import Binding

    # A stand-in for the gdpr service's queue, named apart: kombu's SimpleQueue("recept.gdpr") would
    # declare a direct exchange of that name, clashing with the recept.gdpr topic exchange.
    memory_audit.bus.backend.declare("portal", [Binding(GDPR, "gdpr.reply.#")], 5)
    seen, other = events(subject="orders:individual:p1"), events(subject="orders:individual:p2")
    publish(memory_audit, [seen, other])
    command = {
        "request_id": str(uuid.uuid4()),
        "command_id": str(uuid.uuid4()),
        "action": "export",
        "phase": "trail",
        "tenant": "t1",
        "subject": {},
        "references": ["orders:individual:p1"],
    }
    publisher = memory_audit.bus.publisher()
    try:
        for _ in range(2):  # delivered twice: answered once
            assert publisher.publish(
                [
                    Message(
                        GDPR,
                        "gdpr.command.audit",
                        json.dumps(sealed_command(memory_audit, command)).encode(),
                        str(uuid.uuid4()),
                    )
                ]
            ) == [None]
    finally:
        publisher.close()
    replies = []
    with Connection("memory://") as conn:
        queue = conn.SimpleQueue(queue_name("portal"), no_ack=True)
        try:
            with Worker(memory_audit):

                def drain():
                    while True:
                        try:
                            replies.append(opened_reply(memory_audit, json.loads(queue.get(block=False).body)))
                        except queue.Empty:
                            return bool(replies)

                assert wait_for(drain)
                time.sleep(0.5)  # room for a second reply, which must not come
                drain()
        finally:
            queue.close()
    [reply] = replies
    assert (reply["status"], reply["command_id"], reply["references"]) == (
        "done",
        command["command_id"],
        ["orders:individual:p1"],
    )
    assert [r["event_id"] for r in reply["export"]["audit_trail"]] == [seen["id"]]
