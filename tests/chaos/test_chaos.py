"""Chaos while events stream (issue 20): kill -9 of every worker, the broker dropping every connection,
two workers per service. Each: 0 lost, 0 stored twice, the chains verify, the apis kept answering."""

from __future__ import annotations

import time

from tests.processes import wait_until

from .conftest import NAMES, ApiWatch, ChaosSystem


def test_kill_9_of_each_worker_mid_stream(system: ChaosSystem):
    """Every worker (relays, consumers, the audit's ingest) dies without warning once while events stream;
    the launcher restarts each and nothing is lost or stored twice."""
    before = {name: system.workers(name) for name in NAMES}
    assert all(len(pids) == 1 for pids in before.values()), before
    pending = list(NAMES)

    def kill(fraction: float) -> None:
        # Spread the kills over the stream: one worker at each fifth of it.
        while pending and fraction >= (len(NAMES) - len(pending) + 1) / (len(NAMES) + 1):
            system.kill_worker(pending.pop(0))

    with ApiWatch(system):
        system.stream(per_service=300, seconds=8, during=kill)
        assert not pending
        system.assert_exactly_once()
    after = {name: system.workers(name) for name in NAMES}
    for name in NAMES:
        assert after[name] and after[name] != before[name], f"{name} worker was not restarted"
    assert "restarting" in system.log_path.read_text()
    system.assert_chains_verify()
    assert system.dead_letters() == {}


def test_the_broker_drops_every_connection_mid_stream(system: ChaosSystem):
    """The broker closes every connection of the vhost twice (as a broker restart does): publishers and
    consumers reconnect, unconfirmed rows are published again, redeliveries are recognised."""
    drops: list[int] = []

    def drop(fraction: float) -> None:
        if (len(drops) == 0 and fraction >= 0.3) or (len(drops) == 1 and fraction >= 0.7):
            drops.append(system.close_broker_connections())

    with ApiWatch(system):
        system.stream(per_service=200, seconds=6, during=drop)
        assert len(drops) == 2 and all(drops), drops
        system.assert_exactly_once()
    system.assert_chains_verify()
    assert system.dead_letters() == {}


def test_two_workers_per_service(system: ChaosSystem):
    """A second worker for every service: two consumers per queue, one relay per database at a time
    (the advisory lock), and one of each pair killed mid-stream."""
    for name in NAMES:
        system.start_extra_worker(name)
    wait_until(lambda: all(system.consumers(name) >= 2 for name in NAMES), 90, "two consumers per queue", interval=1)
    killed: list[str] = []

    def kill(fraction: float) -> None:
        if not killed and fraction >= 0.5:
            for name in NAMES:
                system.kill_worker(name)  # the launcher's one: the extra worker carries on alone
                killed.append(name)

    with ApiWatch(system):
        system.stream(per_service=300, seconds=8, during=kill)
        system.assert_exactly_once()
    assert killed == list(NAMES)
    assert all(extra.poll() is None for extra in system.extra_workers), "an extra worker died"
    system.assert_chains_verify()
    assert system.dead_letters() == {}
    started = time.monotonic()
    for extra in system.extra_workers:
        extra.terminate()
    for extra in system.extra_workers:
        extra.wait(timeout=30)
    assert time.monotonic() - started < 30
    assert all(extra.returncode == 0 for extra in system.extra_workers)
