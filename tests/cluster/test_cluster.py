"""Recept on a three-node RabbitMQ cluster with quorum queues (issue 20): events stream from the orders
service to the audit while the node leading the queues is stopped; the audit gets every event exactly
once, the chains verify, and the workers reconnect to the surviving nodes (the broker URL names all
three)."""

from __future__ import annotations

import time

import pytest

from tests.chaos.conftest import ApiWatch, launched
from tests.processes import wait_until

from .conftest import RabbitCluster

NAMES = ("orders", "audit")

# In the default run (issue 20): bounded, cluster start-up included (the module's fixture starts in
# this test's setup), so a broken failover fails in time rather than holding CI up.
pytestmark = pytest.mark.timeout(175)


def test_events_survive_losing_the_node_that_leads_the_queues(rabbit_cluster: RabbitCluster, tmp_path, postgres_server):
    cluster = rabbit_cluster
    first = cluster.nodes[0]
    assert len(cluster.running(first)) == 3
    with launched(tmp_path, cluster.url(), NAMES, vhost="/") as system:
        wait_until(
            lambda: all(_queue_has_consumer(cluster, f"recept.q.{n}") for n in NAMES),
            60,
            "both workers to consume",
            interval=1,
        )
        leader_name = cluster.leader("recept.q.audit", first)
        members = _members(cluster, "recept.q.audit")
        assert len(members) == 3, members  # a quorum queue on every node
        leader = cluster.node(leader_name)
        survivors = [n for n in cluster.nodes if n is not leader]
        stopped: list[float] = []

        def stop_leader(fraction: float) -> None:
            if not stopped and fraction >= 0.4:
                cluster.stop_node(leader)
                stopped.append(time.monotonic())

        with ApiWatch(system):
            system.stream(per_service=600, seconds=10, during=stop_leader)
            assert stopped
            system.assert_exactly_once(timeout=75)
        system.assert_chains_verify()
        # Both queues elected a leader among the surviving nodes ...
        for queue in ("recept.q.audit", "recept.q.orders"):
            assert cluster.leader(queue, survivors[0]) in {n.name for n in survivors}
        # ... and the workers reconnected there: publishers and consumers of both services.
        assert wait_until(
            lambda: sum(cluster.connections(n) for n in survivors) >= 4,
            30,
            "the workers' connections on the surviving nodes",
        )
        assert all(_queue_has_consumer(cluster, f"recept.q.{n}", via=survivors[0]) for n in NAMES)


def _members(cluster: RabbitCluster, queue: str) -> list[str]:
    out = cluster.ctl(cluster.nodes[0], "list_queues", "name", "members").stdout
    for line in out.splitlines():
        if line.startswith(queue + "\t"):
            return [m.strip(" []'") for m in line.split("\t", 1)[1].split(",") if "@" in m]
    return []


def _queue_has_consumer(cluster: RabbitCluster, queue: str, via=None) -> bool:
    out = cluster.ctl(via or cluster.nodes[0], "list_queues", "name", "consumers", check=False).stdout
    return any(line.split()[:1] == [queue] and line.split()[1:2] != ["0"] for line in out.splitlines() if line.strip())
