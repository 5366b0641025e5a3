"""Outbox, relay and consumer against a real RabbitMQ and PostgreSQL (DESIGN.md "Events")."""

from __future__ import annotations

import json
import threading
import uuid

import pika
import pytest
from sqlalchemy import update

from shared.bus import (
    DLX,
    EVENTS,
    Binding,
    Bus,
    Delivery,
    MemoryBackend,
    Message,
    Outcome,
    Unroutable,
    dead_letter_queue,
)
from tests.shared.library_service import THING_HAPPENED, LibraryService, tables
from tests.support import wait_for


@pytest.fixture
def service(postgres_url, rabbit_url):
    svc = LibraryService(postgres_url, rabbit_url)
    yield svc
    svc.db.dispose()


def queue_depth(url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def test_rolled_back_transaction_publishes_nothing(service):
    with pytest.raises(RuntimeError):
        with service.db.transaction() as s:
            service.outbox.emit(s, THING_HAPPENED, data={"n": 1})
            raise RuntimeError("business rule failed after the event was added")
    assert service.unsent() == 0
    assert service.publish_pending() == 0
    assert queue_depth(service.bus.url, service.bus.queue) == 0


class Crash(BaseException):
    """Stands for the relay process dying (not an Exception, so nothing catches it)."""


class CrashingPublisher:
    def publish(self, messages, timeout=30.0):
        raise Crash()

    def idle(self, seconds):
        pass

    def close(self):
        pass


def test_relay_killed_after_commit_publishes_after_restart(service):
    service.emit([1, 2, 3])
    with pytest.raises(Crash):
        service.relay(CrashingPublisher()).run_once()
    assert service.unsent() == 3  # committed, not yet published, not lost
    restarted = service.relay()
    assert restarted.run_once() == 3
    restarted.publisher.close()
    assert service.unsent() == 0
    with service.running():
        assert wait_for(lambda: service.applied_numbers() == [1, 2, 3])


def test_ten_thousand_events_none_lost_none_applied_twice(service):
    total = 10_000
    for start in range(0, total, 500):
        service.emit_many(range(start, start + 500))
    with service.running():
        assert wait_for(lambda: len(service.applied_numbers()) >= total // 2, timeout=120)
        # Re-publish a slice that was already delivered: at-least-once on the wire,
        # exactly-once in effect thanks to the inbox.
        with service.db.transaction() as s:
            s.execute(update(tables.outbox).where(tables.outbox.c.id <= 1000).values(sent_at=None))
        assert wait_for(lambda: service.unsent() == 0, timeout=120)
        assert wait_for(lambda: len(service.applied_numbers()) >= total, timeout=120)
    assert service.applied_numbers() == list(range(total))


def test_unroutable_event_is_an_error_and_is_retried(service, rabbit_url):
    publisher = service.bus.publisher()
    try:
        results = publisher.publish([Message(EVENTS, "nobody.listens.here", b"{}", str(uuid.uuid4()))])
    finally:
        publisher.close()
    assert isinstance(results[0], Unroutable)


def test_failed_row_holds_back_its_aggregate_and_is_retried(service):
    class FlakyPublisher:
        """Refuses the first message once, confirms everything else."""

        def __init__(self, real):
            self.real, self.failed = real, False

        def publish(self, messages, timeout=30.0):
            results = self.real.publish(messages, timeout)
            if not self.failed:
                self.failed = True
                results[0] = RuntimeError("nack")
            return results

        def idle(self, seconds):
            self.real.idle(seconds)

        def close(self):
            self.real.close()

    service.emit([1, 2], aggregate="thing:a")
    service.emit([3], aggregate="thing:b")
    relay = service.relay(FlakyPublisher(service.bus.publisher()))
    assert relay.run_once() == 1  # only thing:b went through
    assert service.unsent() == 2  # 1 failed, 2 held behind it
    with service.db.transaction() as s:  # skip the backoff wait
        s.execute(update(tables.outbox).values(next_attempt_at=None))
    assert relay.run_once() == 2
    relay.publisher.close()


def test_consumer_dying_before_ack_gets_message_again_and_applies_it_once(service):
    service.emit([7])
    assert service.publish_pending() == 1
    stop = threading.Event()
    crashed = []

    def handle_then_die(batch):
        service.consumer.handle_batch(batch)  # commits the write and the inbox row
        crashed.append(len(batch))
        raise Crash()  # ... and dies before the ack

    with pytest.raises(Crash):
        service.bus.consume(handle_then_die, stop)
    assert crashed == [1] and service.applied_numbers() == [7]
    redelivered: list[Delivery] = []

    def record(batch):
        redelivered.extend(batch)
        outcomes = service.consumer.handle_batch(batch)
        stop.set()
        return outcomes

    service.bus.consume(record, stop)
    assert [d.delivery_count for d in redelivered] == [2]
    assert service.applied_numbers() == [7]
    assert queue_depth(service.bus.url, service.bus.queue) == 0


def test_poison_message_is_dead_lettered_after_the_limit_and_others_flow(service):
    service.poison = {13}
    service.emit([12, 13, 14])
    service.emit([15])
    with service.running():
        assert wait_for(lambda: service.applied_numbers() == [12, 14, 15])
        assert wait_for(lambda: queue_depth(service.bus.url, dead_letter_queue("lib")) == 1)
    conn = pika.BlockingConnection(pika.URLParameters(service.bus.url))
    try:
        method, props, body = conn.channel().basic_get(dead_letter_queue("lib"), auto_ack=True)
        assert json.loads(body)["data"] == {"n": 13}
        assert method.exchange == DLX
    finally:
        conn.close()


def test_unparseable_message_goes_straight_to_dead_letters(service):
    publisher = service.bus.publisher()
    try:
        assert publisher.publish([Message(EVENTS, "lib.thing.happened", b"not json", str(uuid.uuid4()))]) == [None]
    finally:
        publisher.close()
    service.emit([1])
    with service.running():
        assert wait_for(lambda: service.applied_numbers() == [1])
        assert wait_for(lambda: queue_depth(service.bus.url, dead_letter_queue("lib")) == 1)


def test_consumer_reconnects_after_the_connection_is_closed(service):
    """Closing the consumer's connection from the broker side (as a restart does) loses nothing."""
    import subprocess

    service.emit([1])
    with service.running():
        assert wait_for(lambda: service.applied_numbers() == [1])
        vhost = service.bus.url.rsplit("/", 1)[1]
        listing = subprocess.run(
            ["rabbitmqctl", "-q", "list_connections", "pid", "vhost"], capture_output=True, text=True, check=True
        ).stdout
        pids = [line.split("\t")[0] for line in listing.splitlines() if line.endswith("\t" + vhost)]
        assert pids
        for pid in pids:
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", pid, "test: broker restart"], capture_output=True, check=False
            )
        service.emit([2])
        assert wait_for(lambda: service.applied_numbers() == [1, 2], timeout=60)


def test_consumer_subscribes_again_when_the_broker_cancels_its_subscription(service, rabbit_url, caplog):
    """A basic.cancel from the broker (its queue deleted, or its replica gone) ends the subscription but
    not the connection: the consumer must notice and subscribe again instead of waiting forever on a
    channel that delivers nothing more (issue 20)."""
    service.emit([1])
    with service.running():
        assert wait_for(lambda: service.applied_numbers() == [1])
        conn = pika.BlockingConnection(pika.URLParameters(rabbit_url))
        try:
            conn.channel().queue_delete(service.bus.queue)  # the broker cancels the consumer on it
        finally:
            conn.close()
        # The broker sends basic.cancel once the deleted queue's process has ended (RabbitMQ 3.10 sends
        # none if a queue of the same name is declared before that): re-declare after the consumer saw it.
        assert wait_for(lambda: any("cancelled the subscription" in r.getMessage() for r in caplog.records), 10)
        service.bus.declare(service.consumer.bindings)  # the queue is back (a worker declares it on start)
        service.emit([2])
        assert wait_for(lambda: service.applied_numbers() == [1, 2], timeout=30)


# --- the same contract on the in-memory back end ----------------------------------------------


@pytest.fixture
def memory_service(tmp_path):
    MemoryBackend.reset()
    svc = LibraryService(f"sqlite:///{tmp_path / 'lib.db'}", "memory://")
    yield svc
    svc.db.dispose()
    MemoryBackend.reset()


def test_memory_bus_delivers_and_dead_letters_like_rabbitmq(memory_service):
    svc = memory_service
    svc.poison = {2}
    svc.emit([1, 2, 3])
    with svc.running():
        assert wait_for(lambda: svc.applied_numbers() == [1, 3])
        from kombu import Connection

        def dead_count():
            with Connection("memory://") as conn:
                q = conn.SimpleQueue(dead_letter_queue("lib"))
                try:
                    return q.qsize()
                finally:
                    q.close()

        assert wait_for(lambda: dead_count() == 1)


def test_memory_bus_refuses_unroutable_messages(memory_service):
    publisher = memory_service.bus.publisher()
    assert isinstance(publisher.publish([Message(EVENTS, "nobody.listens.here", b"{}", "x")])[0], Unroutable)


def test_bad_broker_url_is_rejected():
    from shared.bus import BusError

    with pytest.raises(BusError):
        Bus("redis://localhost", "x")


def test_unreachable_broker_is_reported_without_credentials():
    from shared.bus import BusError

    with pytest.raises(BusError) as info:
        Bus("amqp://user:s3cret@127.0.0.1:1/", "x").ping()
    assert "s3cret" not in str(info.value)


def test_outcome_per_delivery_in_a_batch_is_respected(service):
    """A batch with a failure in the middle acks the others and requeues only that one."""
    service.emit([1, 2, 3])
    assert service.publish_pending() == 3
    stop = threading.Event()
    seen: list[tuple[int, int]] = []

    def handler(batch):
        outcomes = []
        for d in batch:
            n = json.loads(d.body)["data"]["n"]
            seen.append((n, d.delivery_count))
            outcomes.append(Outcome.RETRY if (n == 2 and d.delivery_count == 1) else Outcome.ACK)
        if any(n == 2 and c == 2 for n, c in seen):
            stop.set()
        return outcomes

    service.bus.consume(handler, stop)
    assert (2, 2) in seen and sorted(n for n, c in seen if c == 1) == [1, 2, 3]
    assert queue_depth(service.bus.url, service.bus.queue) == 0


def test_only_one_relay_per_database_publishes(service):
    """Scaled-out workers: the second relay stands by while the first holds the lock."""
    from shared.outbox import RelayLock

    first, second = RelayLock(service.db, "outbox:x"), RelayLock(service.db, "outbox:x")
    try:
        assert first.held() is True
        assert second.held() is False
        first.release()
        second._checked = 0.0
        assert second.held() is True
    finally:
        first.release()
        second.release()


def test_memory_bus_serves_a_queue_named_like_an_exchange(tmp_path):
    """The gdpr service's queue recept.gdpr shares its name with the recept.gdpr exchange."""
    MemoryBackend.reset()
    svc = LibraryService(f"sqlite:///{tmp_path / 'gdpr.db'}", "memory://", name="gdpr")
    try:
        svc.emit([5])
        with svc.running():
            assert wait_for(lambda: svc.applied_numbers() == [5])
    finally:
        svc.db.dispose()
        MemoryBackend.reset()


def test_transient_payloads_are_encrypted_at_rest_and_published_in_clear(service):
    """gdpr commands and export replies carry personal data: sealed in the outbox, opened by the relay."""
    from shared.bus import GDPR
    from shared.crypto import Keyring, PayloadCipher
    from tests.conftest import raw_dump

    cipher = PayloadCipher(Keyring.generate())
    service.outbox.cipher = cipher
    service.bus.declare([*service.consumer.bindings, Binding(GDPR, "gdpr.reply.#")])
    with service.db.transaction() as s:
        service.outbox.send(s, GDPR, "gdpr.reply.lib", {"email": "anna.svensson@example.se"}, transient=True)
    assert b"anna.svensson" not in raw_dump(service.db.url)
    relay = service.relay()
    relay.cipher = cipher
    try:
        assert relay.run_once() == 1
    finally:
        relay.publisher.close()
    conn = pika.BlockingConnection(pika.URLParameters(service.bus.url))
    try:
        _m, _p, body = conn.channel().basic_get(service.bus.queue, auto_ack=True)
        assert json.loads(body) == {"email": "anna.svensson@example.se"}
    finally:
        conn.close()
    assert service.unsent() == 0 and b"anna.svensson" not in raw_dump(service.db.url)


def test_a_message_is_pending_until_the_broker_confirms_it(service):
    """Outbox.is_pending: a sender that re-sends under one id (gdpr commands) writes it only while none waits."""
    from shared.bus import GDPR

    service.bus.declare([*service.consumer.bindings, Binding(GDPR, "gdpr.command.#")])
    with service.db.transaction() as s:
        assert not service.outbox.is_pending(s, "cmd-1")
        service.outbox.send(s, GDPR, "gdpr.command.lib", {"n": 1}, message_id="cmd-1", transient=True)
        event_id = service.outbox.emit(s, THING_HAPPENED, data={"n": 2})["id"]
        assert service.outbox.is_pending(s, "cmd-1") and service.outbox.is_pending(s, event_id)
    relay = service.relay()
    try:
        assert relay.run_once() == 2
    finally:
        relay.publisher.close()
    with service.db.transaction() as s:
        # The transient row is gone, the event's is kept as sent: neither waits any more.
        assert not service.outbox.is_pending(s, "cmd-1") and not service.outbox.is_pending(s, event_id)


def test_old_inbox_entries_are_purged(service):
    from datetime import timedelta

    service.emit([1])
    with service.running():
        assert wait_for(lambda: service.applied_numbers() == [1])
    service.consumer.inbox_retention = timedelta(seconds=-1)
    assert service.consumer.purge_inbox() == 1


def test_a_commit_in_another_process_wakes_the_relay_at_once(postgres_url):
    """The api writes the outbox row, the worker's relay publishes it: LISTEN/NOTIFY, not the next poll."""
    import time

    from shared.db import Database
    from shared.outbox import Outbox, Relay
    from tests.shared.library_service import metadata

    class Recorder:
        def __init__(self):
            self.published_at = None

        def publish(self, messages, timeout=30.0):
            self.published_at = time.monotonic()
            return [None] * len(messages)

        def idle(self, seconds):
            time.sleep(seconds)

        def close(self):
            pass

    worker_db, api_db = Database(postgres_url), Database(postgres_url)  # two engines: two processes' worth
    metadata.create_all(worker_db.engine)
    recorder, stop = Recorder(), threading.Event()
    relay = Relay(worker_db, tables.outbox, recorder)
    thread = threading.Thread(target=relay.run, args=(stop, 10.0), daemon=True)  # polls only every 10 s
    thread.start()
    try:
        time.sleep(0.5)  # the relay is idle, listening
        committed = time.monotonic()
        with api_db.transaction() as s:
            Outbox(tables.outbox, "lib").emit(s, THING_HAPPENED, data={"n": 1})
        assert wait_for(lambda: recorder.published_at is not None, timeout=5)
        assert recorder.published_at - committed < 1.0
    finally:
        stop.set()
        thread.join(10)
        worker_db.dispose()
        api_db.dispose()


# --- permanent and transient failures (issue 20) -----------------------------------------------


class DeliveryLog:
    """Wraps the consumer's handle_batch and counts every delivery per event number."""

    def __init__(self, consumer) -> None:
        self.consumer = consumer
        self.deliveries: dict[int, list[int]] = {}  # n -> delivery counts seen, in order
        self.lock = threading.Lock()

    def __call__(self, batch):
        with self.lock:
            for delivery in batch:
                try:
                    n = json.loads(delivery.body)["data"]["n"]
                except (ValueError, KeyError, TypeError):
                    continue
                self.deliveries.setdefault(n, []).append(delivery.delivery_count)
        return self.consumer.handle_batch(batch)


def dead_bodies(url: str, queue: str) -> list[dict]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel, bodies = conn.channel(), []
        while True:
            method, _props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return bodies
            bodies.append(json.loads(body))
    finally:
        conn.close()


@pytest.mark.parametrize("limit", [1, 3, 5])
def test_a_transient_failure_is_delivered_exactly_delivery_limit_times(postgres_url, make_rabbit_vhost, limit):
    """DELIVERY_LIMIT means deliveries in all (docs/deploy.md): limit 5 is five deliveries, not six."""
    svc = LibraryService(postgres_url, make_rabbit_vhost(), delivery_limit=limit)
    try:
        svc.poison = {2}
        svc.emit([1, 2, 3])
        log = DeliveryLog(svc.consumer)
        with svc.running(handle_batch=log):
            assert wait_for(lambda: queue_depth(svc.bus.url, dead_letter_queue("lib")) == 1)
            assert wait_for(lambda: svc.applied_numbers() == [1, 3])
            assert queue_depth(svc.bus.url, svc.bus.queue) == 0
        assert log.deliveries[2] == list(range(1, limit + 1))
        assert log.deliveries[1] == [1] and log.deliveries[3] == [1]
        assert [b["data"]["n"] for b in dead_bodies(svc.bus.url, dead_letter_queue("lib"))] == [2]
    finally:
        svc.db.dispose()


def test_a_message_failing_validation_is_dead_lettered_on_its_first_delivery(service):
    service.invalid = {5}
    service.poison = {6}
    service.emit([4, 5, 6, 7])
    log = DeliveryLog(service.consumer)
    with service.running(handle_batch=log):
        assert wait_for(lambda: queue_depth(service.bus.url, dead_letter_queue("lib")) == 2)
        assert wait_for(lambda: service.applied_numbers() == [4, 7])
    assert log.deliveries[5] == [1]  # permanent: straight to the dead letters
    assert log.deliveries[6] == [1, 2, 3]  # transient: the limit (3), exactly
    assert sorted(b["data"]["n"] for b in dead_bodies(service.bus.url, dead_letter_queue("lib"))) == [5, 6]


def test_which_failures_are_permanent():
    import jsonschema
    from sqlalchemy.exc import OperationalError

    from services.audit.domain import PoisonEvent
    from shared.consumer import PoisonMessage, is_permanent
    from shared.errors import Invalid

    assert is_permanent(PoisonMessage("body is not JSON"))
    assert is_permanent(Invalid("event does not match its schema"))
    assert is_permanent(PoisonEvent("envelope field id is not a uuid"))
    assert is_permanent(jsonschema.ValidationError("x"))
    assert is_permanent(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))
    assert not is_permanent(RuntimeError("lock timeout"))
    assert not is_permanent(KeyError("data"))  # a bug a redeploy fixes: retried, then dead-lettered
    assert not is_permanent(OperationalError("SELECT 1", {}, Exception("server closed the connection")))


def test_memory_bus_counts_deliveries_like_the_consumer(memory_service):
    svc = memory_service
    svc.poison, svc.invalid = {2}, {3}
    svc.emit([1, 2, 3])
    log = DeliveryLog(svc.consumer)
    with svc.running(handle_batch=log):
        assert wait_for(lambda: svc.applied_numbers() == [1])
        assert wait_for(lambda: len(log.deliveries.get(2, [])) == 3)
    assert log.deliveries[2] == [1, 2, 3] and log.deliveries[3] == [1]
