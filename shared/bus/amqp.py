"""The RabbitMQ back end (pika): declarations, a consumer with batched acks, a confirming publisher.

On RabbitMQ the publisher uses asynchronous publisher confirms over one channel (waiting for
each confirm in turn caps near 2,000 messages/s here), ``mandatory`` and persistent delivery;
consumers use prefetch and batched acks.  Service queues are quorum queues, so the broker
counts deliveries and dead-letters a message after the delivery limit.

The broker URL may name the nodes of a cluster (``split_hosts``); both connect to the first
reachable node and move to a surviving one when theirs goes away (``BrokerNodes``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .interface import (
    Backend,
    BatchHandler,
    BusError,
    Delivery,
    Message,
    Outcome,
    Publisher,
    Unreachable,
    Unroutable,
)
from .topology import (
    DEAD_LETTER_QUEUE_ARGUMENTS,
    DLX,
    EXCHANGES,
    Binding,
    dead_letter_key,
    dead_letter_queue,
    queue_arguments,
    queue_name,
)

if TYPE_CHECKING:
    # pika ships no type information: mypy sees these as Any; they name what is passed around.
    import pika
    import pika.adapters.blocking_connection
    import pika.channel
    import pika.frame
    import pika.spec

__all__ = ["RabbitBackend", "RabbitPublisher", "BrokerNodes", "split_hosts"]

log = logging.getLogger(__name__)

RECONNECT_MAX = 1.0  # seconds between reconnect attempts at most, while no broker node answers


_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(?::(\d{1,5}))?")


def split_hosts(url: str) -> tuple[str, ...]:
    """One single-host URL per node named in a broker URL.

    A cluster is named in one URL with a comma-separated host list:
    ``amqp://user:pass@host1:5672,host2:5672,host3:5672/vhost?heartbeat=30``.  The user,
    password, vhost and query apply to every node (a RabbitMQ cluster shares its users and
    vhosts).  A URL with one host is returned as it is.  A comma-separated list of whole URLs
    is refused rather than guessed at.  Errors name the position of a bad host, never the URL
    (it holds the password).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("amqp", "amqps"):
        raise BusError("broker URL must start with amqp:// or amqps://")
    if re.search(r",\s*amqps?://", rest):
        raise BusError(
            "name several broker hosts in one URL (amqp://user:pass@host1:5672,host2:5672/vhost), not as a list of URLs"
        )
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host_list = authority.rpartition("@")
    hosts = host_list.split(",")
    if len(hosts) == 1:
        return (url,)
    urls = []
    for position, host in enumerate(hosts, 1):
        host = host.strip()
        match = _HOST.fullmatch(host)
        if not match or (match.group(2) is not None and not 0 < int(match.group(2)) < 65536):
            raise BusError(f"host {position} of the broker URL's {len(hosts)} hosts is not host or host:port")
        urls.append(f"{scheme}://{userinfo}{at}{host}{tail}")
    return tuple(urls)


class BrokerNodes:
    """The nodes of a broker URL and which one to try first.

    Connections go to the first reachable node in the URL's order and stay with the node that
    answered, so a dead node early in the list costs its timeout once, not on every reconnect.
    When a connection to a node is lost, the next attempt starts with the node after it: clients
    move to a surviving node of the cluster instead of waiting for the one that went away.
    The consumer and the publishers of one bus share this object, so they move together.
    """

    def __init__(self, url: str) -> None:
        self.urls = split_hosts(url)
        self._first = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.urls)

    def order(self) -> list[int]:
        """Indexes of the nodes, in the order to try them now."""
        with self._lock:
            first = self._first
        return [(first + k) % len(self.urls) for k in range(len(self.urls))]

    def connected(self, index: int) -> None:
        with self._lock:
            self._first = index

    def lost(self, index: int) -> None:
        with self._lock:
            if self._first == index:
                self._first = (index + 1) % len(self.urls)


def _parameters(url: str) -> pika.URLParameters:
    import pika

    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 60
    params.heartbeat = 30
    return params


class RabbitBackend(Backend):
    def __init__(self, url: str) -> None:
        self.url = url
        self.nodes = BrokerNodes(url)

    def _open(self) -> tuple[pika.BlockingConnection, int]:
        """A connection to the first reachable node, and that node's index."""
        import pika
        import pika.exceptions

        error: Exception | None = None
        for index in self.nodes.order():
            try:
                conn = pika.BlockingConnection(_parameters(self.nodes.urls[index]))
            except (pika.exceptions.AMQPError, OSError) as exc:
                error = exc
                if len(self.nodes) > 1:
                    log.warning("broker host %d of %d unreachable (%s)", index + 1, len(self.nodes), type(exc).__name__)
                continue
            self.nodes.connected(index)
            return conn, index
        tried = f" (tried {len(self.nodes)} hosts)" if len(self.nodes) > 1 else ""
        raise Unreachable(f"cannot connect to the broker{tried}: {type(error).__name__}") from None

    def _connect(self) -> pika.BlockingConnection:
        return self._open()[0]

    def ping(self) -> None:
        self._connect().close()

    def queue_depths(self, queues: Sequence[str]) -> list[int | None]:
        import pika.exceptions

        conn = self._connect()  # BusError when no node answers
        try:
            out: list[int | None] = []
            for queue in queues:
                channel = conn.channel()
                try:
                    out.append(channel.queue_declare(queue, passive=True).method.message_count)
                    channel.close()
                except pika.exceptions.ChannelClosedByBroker:
                    out.append(None)  # not declared yet (the worker declares it when it starts)
            return out
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise BusError(f"cannot read queue depths: {type(exc).__name__}") from None
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    def declare(self, service: str, bindings: list[Binding], delivery_limit: int) -> None:
        conn = self._connect()
        try:
            ch = conn.channel()
            for exchange in EXCHANGES:
                ch.exchange_declare(exchange, exchange_type="topic", durable=True)
            queue, dead = queue_name(service), dead_letter_queue(service)
            ch.queue_declare(dead, durable=True, arguments=dict(DEAD_LETTER_QUEUE_ARGUMENTS))
            ch.queue_bind(dead, DLX, routing_key=dead_letter_key(service))
            ch.queue_declare(queue, durable=True, arguments=queue_arguments(service, delivery_limit))
            for binding in bindings:
                ch.queue_bind(queue, binding.exchange, routing_key=binding.pattern)
        finally:
            conn.close()

    def publisher(self) -> Publisher:
        return RabbitPublisher(self.url, nodes=self.nodes)

    def consume(
        self,
        queue: str,
        handle_batch: BatchHandler,
        stop: threading.Event,
        *,
        prefetch: int,
        batch_size: int,
        batch_wait: float,
        delivery_limit: int,
        dead_letter_queue: str,
    ) -> None:
        # The quorum queue counts deliveries and dead-letters by itself (queue_arguments), so
        # delivery_limit and dead_letter_queue are already in the broker's hands.
        import pika.exceptions

        backoff = 0.0  # the wait between reconnect attempts; 0 while connected
        while not stop.is_set():
            try:
                conn, node = self._open()
            except BusError:
                if not backoff:
                    log.warning("consumer: broker unreachable, retrying every %.0fs at most", RECONNECT_MAX)
                # Short and capped: once the broker is back the backlog in the queue flows within
                # about a second (a connection attempt to a node that is away costs next to nothing).
                backoff = min(RECONNECT_MAX, max(0.1, backoff * 2))
                stop.wait(backoff)
                continue
            if backoff:
                log.info("consumer: connected to the broker again")
            backoff = 0.0
            try:
                self._consume_on(conn, queue, handle_batch, stop, prefetch, batch_size, batch_wait)
            except _Cancelled:
                # The broker ended the subscription (the queue was deleted, or its replica went
                # away) though the connection lives on: without this the loop would go on
                # reading a channel that never delivers again.  Subscribe again.
                log.warning("consumer: the broker cancelled the subscription to %s; subscribing again", queue)
                stop.wait(0.2)  # a queue that is gone for good: retry calmly, not in a tight loop
            except (pika.exceptions.AMQPError, OSError) as exc:
                self.nodes.lost(node)
                log.warning("consumer: connection lost (%s), reconnecting", type(exc).__name__)
                stop.wait(0.1)  # a node that closes every new channel (queue missing) is not hammered
            finally:
                if conn.is_open:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001 - closing a broken connection
                        pass

    @staticmethod
    def _consume_on(
        conn: pika.BlockingConnection,
        queue: str,
        handle_batch: BatchHandler,
        stop: threading.Event,
        prefetch: int,
        batch_size: int,
        batch_wait: float,
    ) -> None:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=prefetch)
        pending: list[Delivery] = []

        def on_message(
            _ch: pika.adapters.blocking_connection.BlockingChannel,
            method: pika.spec.Basic.Deliver,
            properties: pika.spec.BasicProperties,
            body: bytes,
        ) -> None:
            headers = properties.headers or {}
            pending.append(
                Delivery(
                    exchange=method.exchange,
                    routing_key=method.routing_key,
                    body=body,
                    message_id=properties.message_id,
                    delivery_count=int(headers.get("x-delivery-count", 0)) + 1,
                    tag=method.delivery_tag,
                    headers=headers,
                )
            )

        cancelled: list[pika.frame.Method] = []
        ch.add_on_cancel_callback(cancelled.append)  # basic.cancel from the broker
        ch.basic_consume(queue, on_message, auto_ack=False)
        while not stop.is_set():
            conn.process_data_events(time_limit=0.25)
            # Adaptive batching: keep gathering while deliveries keep arriving (a busy queue fills
            # batches up to batch_size or batch_wait); a lone message is handled at once.
            deadline = time.monotonic() + batch_wait
            while pending and len(pending) < batch_size and time.monotonic() < deadline:
                before = len(pending)
                conn.process_data_events(time_limit=min(0.005, max(0.0, deadline - time.monotonic())))
                if len(pending) == before:
                    break
            if not pending:
                if cancelled:
                    raise _Cancelled
                continue
            batch, pending[:] = list(pending), []
            outcomes = handle_batch(batch)
            last_ack: object = None
            for delivery, outcome in zip(batch, outcomes):
                if outcome is Outcome.ACK:
                    last_ack = delivery.tag
                else:
                    # Flush the acks before this one, then requeue (broker counts the delivery)
                    # or dead-letter it; the rest of the batch keeps flowing.
                    if last_ack is not None:
                        ch.basic_ack(delivery_tag=last_ack, multiple=True)
                        last_ack = None
                    ch.basic_nack(delivery_tag=delivery.tag, requeue=outcome is Outcome.RETRY)
            if last_ack is not None:
                ch.basic_ack(delivery_tag=last_ack, multiple=True)


class RabbitPublisher(Publisher):
    """Publisher confirms handled asynchronously over a pika SelectConnection.

    The connection's I/O loop runs in the caller's thread, only while a batch is in
    flight or while ``idle`` waits, so there is no second thread to coordinate with.
    """

    def __init__(self, url: str, connect_timeout: float = 10.0, *, nodes: BrokerNodes | None = None) -> None:
        self.url = url
        self.nodes = nodes or BrokerNodes(url)
        self._node: int | None = None  # index of the node this publisher is connected to
        self.connect_timeout = connect_timeout
        self._conn: pika.SelectConnection | None = None
        self._channel: pika.channel.Channel | None = None
        self._ready = False
        self._closed_reason: str | None = None
        self._waiting: Callable[[], bool] | None = None
        self._next_tag = 1
        self._inflight: dict[int, int] = {}  # delivery tag -> index in batch
        self._by_id: dict[str, int] = {}  # message id -> index in batch
        self._results: list[Exception | _Pending | None] = []  # per message of the batch in flight

    # I/O loop plumbing ------------------------------------------------------------------------
    def _wake(self) -> None:
        if self._waiting is not None and self._waiting() and self._conn is not None:
            self._conn.ioloop.stop()

    def _run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        if done():
            return True
        assert self._conn is not None, "the I/O loop runs only on an open connection"
        ioloop = self._conn.ioloop
        self._waiting = done
        timer = ioloop.call_later(timeout, ioloop.stop)
        try:
            ioloop.start()
        finally:
            self._waiting = None
            ioloop.remove_timeout(timer)
        return done()

    def _connect(self) -> None:
        reason: str | None = "no broker host"
        for index in self.nodes.order():
            reason = self._open(self.nodes.urls[index])
            if reason is None:
                self._node = index
                self.nodes.connected(index)
                return
            if len(self.nodes) > 1:
                log.warning("relay: broker host %d of %d unreachable (%s)", index + 1, len(self.nodes), reason)
        raise Unreachable(f"cannot open a publishing channel: {reason}")

    def _open(self, url: str) -> str | None:
        """Open a confirming channel on one node; None when it is ready, else why not."""
        import pika

        self._ready = False
        self._closed_reason = None
        self._next_tag = 1
        self._conn = pika.SelectConnection(
            _parameters(url),
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
        )
        ok = self._run_until(lambda: self._ready or self._closed_reason is not None, self.connect_timeout)
        if ok and self._ready:
            return None
        reason = self._closed_reason or "timed out"
        self._drop()
        return reason

    def _on_open(self, conn: pika.SelectConnection) -> None:
        conn.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, _conn: pika.SelectConnection, exc: BaseException) -> None:
        self._closed_reason = type(exc).__name__
        self._wake_stop()

    def _on_closed(self, _conn: pika.SelectConnection, exc: BaseException) -> None:
        self._closed_reason = type(exc).__name__
        self._ready = False
        self._fail_inflight(BusError("connection closed before the broker confirmed"))
        self._wake_stop()

    def _wake_stop(self) -> None:
        if self._conn is not None:
            self._conn.ioloop.stop()

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_ok)

    def _on_confirm_ok(self, _frame: pika.frame.Method) -> None:
        self._ready = True
        self._wake()

    def _on_channel_closed(self, _channel: pika.channel.Channel, exc: BaseException) -> None:
        self._ready = False
        self._closed_reason = type(exc).__name__
        self._fail_inflight(BusError("channel closed before the broker confirmed"))
        if self._conn is not None and self._conn.is_open:
            self._conn.close()
        self._wake_stop()

    def _on_return(
        self,
        _channel: pika.channel.Channel,
        _method: pika.spec.Basic.Return,
        properties: pika.spec.BasicProperties,
        _body: bytes,
    ) -> None:
        # basic.return comes before the ack of an unroutable mandatory message.
        index = self._by_id.get(properties.message_id)
        if index is not None:
            self._results[index] = Unroutable("no queue is bound for this routing key")

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        nack = method.NAME == "Basic.Nack"
        tags = [t for t in self._inflight if t <= method.delivery_tag] if method.multiple else [method.delivery_tag]
        for tag in tags:
            index = self._inflight.pop(tag, None)
            if index is None:
                continue
            if nack:
                self._results[index] = BusError("the broker refused the message (nack)")
            elif self._results[index] is _PENDING:
                self._results[index] = None
        self._wake()

    def _fail_inflight(self, error: Exception) -> None:
        for index in self._inflight.values():
            if self._results[index] is _PENDING or self._results[index] is None:
                self._results[index] = error
        self._inflight.clear()

    def _drop(self) -> None:
        conn = self._conn
        self._channel, self._ready = None, False
        if conn is None:
            return
        try:
            if not (conn.is_closed or conn.is_closing):
                conn.close()
            if not conn.is_closed:
                self._run_until(lambda: conn.is_closed, 2.0)
            # pika closes the socket in a callback after "closed" and then drops its transport;
            # run the loop until it has (a fixed short wait was not enough on a loaded machine,
            # and the socket left behind is a ResourceWarning).
            for _ in range(50):
                if getattr(conn, "_transport", None) is None:
                    break
                self._run_until(lambda: False, 0.02)
        except Exception:  # noqa: BLE001 - best effort on a broken connection
            pass
        finally:
            self._conn = None
            try:
                conn.ioloop.close()  # its wake-up socket pair would otherwise leak
            except Exception:  # noqa: BLE001
                pass

    # Public API -------------------------------------------------------------------------------
    def publish(self, messages: Sequence[Message], timeout: float = 30.0) -> list[Exception | None]:
        import pika

        if not messages:
            return []
        if self._conn is None or not self._ready:
            if self._node is not None:
                # The node went away (or stopped confirming): start the reconnect with the next one.
                self.nodes.lost(self._node)
                self._node = None
            self._drop()
            try:
                self._connect()
            except Unreachable as exc:
                return [exc] * len(messages)  # nothing was sent
        self._results = [_PENDING] * len(messages)
        self._by_id = {m.message_id: i for i, m in enumerate(messages)}
        self._inflight = {}
        channel = self._channel
        assert channel is not None, "a ready publisher has an open channel"
        for index, message in enumerate(messages):
            props = pika.BasicProperties(
                content_type="application/json",
                delivery_mode=2,
                message_id=message.message_id,
                headers=message.headers or None,
            )
            channel.basic_publish(message.exchange, message.routing_key, message.body, props, mandatory=True)
            self._inflight[self._next_tag] = index
            self._next_tag += 1
        self._run_until(lambda: not self._inflight, timeout)
        if self._inflight:
            self._fail_inflight(BusError("timed out waiting for publisher confirms"))
            self._drop()  # tags of the next batch must not mix with late confirms of this one
        results = [BusError("no confirm") if isinstance(r, _Pending) else r for r in self._results]
        self._results, self._by_id = [], {}
        return results

    def idle(self, seconds: float) -> None:
        if self._conn is None or not self._ready:
            time.sleep(seconds)
            return
        self._run_until(lambda: False, seconds)

    def close(self) -> None:
        self._node = None
        self._drop()


class _Cancelled(Exception):
    """The broker cancelled the consumer's subscription (basic.cancel); the connection is still open."""


class _Pending:
    """The result of a message whose confirm has not come yet (one instance: ``_PENDING``)."""


_PENDING = _Pending()
