"""A broker URL that names several RabbitMQ nodes (issue 20): parsing, and failover on a real broker."""

from __future__ import annotations

import socket
import time

import pika
import pytest
from sqlalchemy import func, select

from shared.bus import Bus, BusError
from shared.bus.amqp import BrokerNodes, split_hosts
from tests.conftest import RABBIT_HOST, RABBIT_PORT
from tests.shared.library_service import LibraryService
from tests.support import BrokerProxy, wait_for

# --- parsing (no broker) ----------------------------------------------------------------------


def test_a_single_host_url_is_used_as_it_is():
    url = "amqp://user:s3cret@rabbit:5672/recept?heartbeat=10"
    assert split_hosts(url) == (url,)
    assert split_hosts("amqps://rabbit/") == ("amqps://rabbit/",)


def test_several_hosts_share_credentials_vhost_and_query():
    urls = split_hosts("amqps://recept-crm:p%40ss@rabbit-0:5671, rabbit-1,[::1]:5673/recept%2Fprod?heartbeat=10")
    assert urls == (
        "amqps://recept-crm:p%40ss@rabbit-0:5671/recept%2Fprod?heartbeat=10",
        "amqps://recept-crm:p%40ss@rabbit-1/recept%2Fprod?heartbeat=10",
        "amqps://recept-crm:p%40ss@[::1]:5673/recept%2Fprod?heartbeat=10",
    )
    # ...and each is a URL pika reads as that node, with the shared user, password and vhost.
    params = [pika.URLParameters(u) for u in urls]
    assert [(p.host, p.port) for p in params] == [("rabbit-0", 5671), ("rabbit-1", 5671), ("::1", 5673)]
    assert {(p.credentials.username, p.credentials.password, p.virtual_host) for p in params} == {
        ("recept-crm", "p@ss", "recept/prod")
    }


def test_hosts_without_credentials_or_vhost():
    assert split_hosts("amqp://h1:5672,h2:5673") == ("amqp://h1:5672", "amqp://h2:5673")


@pytest.mark.parametrize(
    "url, says",
    [
        ("amqp://u:s3cret@h1:5672,amqp://u:s3cret@h2:5672/v", "not as a list of URLs"),
        ("amqp://u:s3cret@h1:5672, amqps://u:s3cret@h2:5672/v", "not as a list of URLs"),
        ("amqp://u:s3cret@h1:5672,,h3/v", "host 2 of the broker URL's 3 hosts"),
        ("amqp://u:s3cret@h1:5672,h2:99999/v", "host 2 of the broker URL's 2 hosts"),
        ("amqp://u:s3cret@h1:5672,h2:port/v", "host 2 of the broker URL's 2 hosts"),
        ("amqp://u:s3cret@h1 h2,h3/v", "host 1 of the broker URL's 2 hosts"),
    ],
)
def test_a_malformed_host_list_is_refused_without_the_password(url, says):
    with pytest.raises(BusError) as info:
        Bus(url, "x")
    assert says in str(info.value)
    assert "s3cret" not in str(info.value)


def test_nodes_are_tried_from_the_one_that_answered_and_after_the_one_that_went_away():
    nodes = BrokerNodes("amqp://h1,h2,h3/")
    assert nodes.order() == [0, 1, 2]  # first reachable, in the URL's order
    nodes.connected(1)  # h1 did not answer, h2 did
    assert nodes.order() == [1, 2, 0]  # a reconnect does not wait on h1 again first
    nodes.lost(1)  # h2 went away
    assert nodes.order() == [2, 0, 1]
    nodes.lost(1)  # the publisher noticing the same loss later changes nothing
    assert nodes.order() == [2, 0, 1]
    nodes.lost(2)
    assert nodes.order() == [0, 1, 2]  # wraps around


def test_one_node_stays_the_only_choice():
    nodes = BrokerNodes("amqp://h1/")
    nodes.lost(0)
    assert nodes.order() == [0]


# --- failover on the local RabbitMQ -----------------------------------------------------------


def with_hosts(url: str, *hosts: str) -> str:
    """``url`` (one host) with ``hosts`` listed before its own host."""
    scheme, rest = url.split("://", 1)
    userinfo, host_and_tail = rest.split("@", 1)
    return f"{scheme}://{userinfo}@{','.join(hosts)},{host_and_tail}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.fixture
def node(rabbitmq_server):
    """A TCP relay to the real broker that stands for one cluster node: ``stop()`` is that node going away."""
    node = BrokerProxy(RABBIT_HOST, RABBIT_PORT)
    yield node
    node.stop()


def test_an_unreachable_first_host_is_skipped(postgres_url, rabbit_url):
    """Declare, publish and consume all reach the broker behind a host that refuses connections."""
    url = with_hosts(rabbit_url, f"127.0.0.1:{closed_port()}")
    service = LibraryService(postgres_url, url)
    try:
        assert service.bus.backend.nodes.order()[0] == 1  # the declaration found the second host
        service.emit(range(50))
        with service.running():
            assert wait_for(lambda: service.applied_numbers() == list(range(50)), timeout=20)
        assert service.unsent() == 0
    finally:
        service.db.dispose()


def test_clients_move_to_a_surviving_node_when_theirs_goes_away(postgres_url, rabbit_url, node):
    """Relay and consumer run on the first node; it goes away mid-stream; nothing is lost or applied twice."""
    service = LibraryService(postgres_url, with_hosts(rabbit_url, f"127.0.0.1:{node.port}"))
    try:
        with service.running():
            service.emit(range(100))
            assert wait_for(lambda: service.applied_numbers() == list(range(100)), timeout=20)
            assert node.accepted >= 2  # the consumer and the relay went through it
            assert service.bus.backend.nodes.order()[0] == 0
            node.stop()
            service.emit(range(100, 200))  # written while the node is gone
            assert wait_for(lambda: service.applied_numbers() == list(range(200)), timeout=30)
            assert service.bus.backend.nodes.order()[0] == 1
        assert service.unsent() == 0
    finally:
        service.db.dispose()


def test_ping_reports_every_host_unreachable_without_credentials():
    url = f"amqp://user:s3cret@127.0.0.1:{closed_port()},127.0.0.1:{closed_port()}/"
    started = time.monotonic()
    with pytest.raises(BusError) as info:
        Bus(url, "x").ping()
    assert "tried 2 hosts" in str(info.value) and "s3cret" not in str(info.value)
    assert time.monotonic() - started < 10


def test_the_command_line_names_a_cluster_url_without_its_password():
    from services.checks import redact

    assert (
        redact("amqp://recept:s3cret@rabbit-0:5672,rabbit-1:5672/recept") == "amqp://rabbit-0:5672,rabbit-1:5672/recept"
    )
    assert redact("amqp://guest:s3cret@127.0.0.1:1/") == "amqp://127.0.0.1:1/"


# --- catch-up after an outage (issue 20) -------------------------------------------------------


def test_a_backlog_written_while_the_broker_was_away_drains_at_the_steady_rate(postgres_url, rabbit_url, node):
    """Events written during a broker outage go out at the rate of a backlog written while it is up:
    the relay does not count the failed connection attempts against each row (their backoff made
    the catch-up trickle at a tenth of the steady rate), and relay and consumer notice the broker's
    return within about a second.  The ratio is generous: the machine is shared and noisy."""
    from shared.outbox import Relay
    from tests.shared.library_service import measure_catch_up, tables

    service = LibraryService(postgres_url, node.url(rabbit_url), batch=True)
    try:
        relayed = Relay(service.db, tables.outbox, service.bus.publisher())
        assert relayed.reconnect_max <= 1.0
        relayed.publisher.close()
        figures = measure_catch_up(service, node, count=2000, outage=10.0)
        assert figures.reconnect_delay < 5.0, figures
        assert figures.drain >= 0.5 * figures.steady, figures
        assert service.unsent() == 0
        with service.db.transaction() as s:  # no row was charged for the outage
            assert not s.scalar(select(func.max(tables.outbox.c.attempts)))
    finally:
        service.db.dispose()
