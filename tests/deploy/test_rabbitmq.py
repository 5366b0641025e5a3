"""deploy/rabbitmq/definitions.json: follows the code, and its per-service users work — and only just — on a real RabbitMQ."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from urllib.parse import quote

import pika
import pika.exceptions
import pytest

from deploy import render
from deploy.contract import bus_services
from deploy.make_secrets import generate
from deploy.topology import ADMIN_USER, all_topologies, rabbit_password_hash, user_name
from services import SERVICES
from shared.bus import DLX, EVENTS, GDPR, Binding, Bus, BusError, Message, Unroutable, dead_letter_queue, queue_name
from shared.bus.topology import DEAD_LETTER_MAX_LENGTH, DEAD_LETTER_POLICY, DEAD_LETTER_TTL_MS
from tests.conftest import RABBIT_HOST, RABBIT_PORT


def test_committed_definitions_equal_what_the_code_declares():
    """Services re-declare their queues at start; a queue whose arguments differ fails (PRECONDITION_FAILED)."""
    committed = json.loads(render.DEFINITIONS.read_text(encoding="utf-8"))
    assert committed == json.loads(render.render_definitions()), (
        "deploy/rabbitmq/definitions.json is stale: run `python -m deploy.render`"
    )


def test_definitions_hold_no_password():
    committed = json.loads(render.DEFINITIONS.read_text(encoding="utf-8"))
    assert {u["name"] for u in committed["users"]} == {ADMIN_USER, *(user_name(s) for s in bus_services())}
    assert all(u["password_hash"] == "" for u in committed["users"])


def test_services_without_a_worker_get_no_broker_user_or_queue():
    """The portal has no worker (its spec's has_worker): no credential, no queue that nobody would consume."""
    api_only = set(SERVICES) - set(bus_services())
    assert "portal" in api_only
    committed = json.loads(render.DEFINITIONS.read_text(encoding="utf-8"))
    text = json.dumps(committed)
    for service in api_only:
        assert user_name(service) not in {u["name"] for u in committed["users"]}
        assert queue_name(service) not in {q["name"] for q in committed["queues"]}
        assert f"dead.{service}" not in text


def test_every_service_queue_has_a_dead_letter_exchange_and_a_delivery_limit():
    committed = json.loads(render.DEFINITIONS.read_text(encoding="utf-8"))
    queues = {q["name"]: q["arguments"] for q in committed["queues"]}
    for service in bus_services():
        assert queues[queue_name(service)]["x-dead-letter-exchange"] == DLX
        assert queues[queue_name(service)]["x-delivery-limit"] >= 1
        assert queues[dead_letter_queue(service)]["x-queue-type"] == "quorum"
    assert {"source": DLX, "destination": dead_letter_queue("orders"), "routing_key": "dead.orders"}.items() <= next(
        b for b in committed["bindings"] if b["destination"] == dead_letter_queue("orders")
    ).items()


def test_dead_letter_queues_have_a_ttl_and_a_length_limit_by_policy():
    """Issue 14: a dead letter does not stay on the broker's disk indefinitely."""
    committed = json.loads(render.DEFINITIONS.read_text(encoding="utf-8"))
    (policy,) = [p for p in committed["policies"] if p["name"] == DEAD_LETTER_POLICY["name"]]
    assert policy["apply-to"] == "queues" and policy["vhost"] == "recept"
    assert policy["definition"] == {
        "message-ttl": DEAD_LETTER_TTL_MS,
        "max-length": DEAD_LETTER_MAX_LENGTH,
        "overflow": "drop-head",
    }
    assert 0 < DEAD_LETTER_TTL_MS <= 30 * 24 * 3600 * 1000 and DEAD_LETTER_MAX_LENGTH > 0
    pattern = re.compile(policy["pattern"])
    for service in bus_services():
        assert pattern.search(dead_letter_queue(service)) and not pattern.search(queue_name(service))


def test_the_dead_letter_policy_applies_on_a_real_broker(broker):
    def ctl(*args: str) -> str:
        return subprocess.run(
            ["rabbitmqctl", "-q", *args, "-p", broker.vhost], check=True, capture_output=True, text=True, timeout=60
        ).stdout

    listed = ctl("list_queues", "name", "policy")
    rows = {line.split("\t")[0]: line.split("\t")[1].strip() for line in listed.splitlines() if "\t" in line}
    for service in bus_services():
        assert rows[dead_letter_queue(service)] == DEAD_LETTER_POLICY["name"], rows
        assert rows[queue_name(service)] != DEAD_LETTER_POLICY["name"]
    policies = ctl("list_policies")
    assert DEAD_LETTER_POLICY["name"] in policies and f'"message-ttl":{DEAD_LETTER_TTL_MS}' in policies


def test_rabbit_password_hash_is_salted_sha256():
    salt = b"\x01\x02\x03\x04"
    assert rabbit_password_hash("secret", salt) == rabbit_password_hash("secret", salt)
    assert rabbit_password_hash("secret") != rabbit_password_hash("secret")


# --- on a real broker -------------------------------------------------------------------------------


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _import(definitions: dict) -> None:
    # rabbitmqctl reads the file as the rabbitmq user, who cannot enter pytest's 0700 folders (and
    # this version refuses "-" for stdin): a world-readable copy of throwaway test credentials.
    directory = Path(tempfile.mkdtemp(prefix="recept-definitions-"))
    try:
        directory.chmod(0o755)
        path = directory / "definitions.json"
        path.write_text(json.dumps(definitions))
        path.chmod(0o644)
        _rabbitmqctl("import_definitions", str(path))
    finally:
        shutil.rmtree(directory)


@pytest.fixture(scope="module")
def broker(rabbitmq_server, tmp_path_factory):
    """The compose definitions (with generated passwords) imported under a fresh vhost and renamed users."""
    directory = tmp_path_factory.mktemp("secrets")
    generate(directory)
    definitions = json.loads((directory / "rabbitmq-definitions.json").read_text())
    tag = uuid.uuid4().hex[:8]
    vhost = f"recept-deploy-{tag}"
    renamed = {u["name"]: f"{u['name']}-{tag}" for u in definitions["users"]}
    for user in definitions["users"]:
        user["name"] = renamed[user["name"]]
    for entry in definitions["permissions"] + definitions["topic_permissions"]:
        entry["user"] = renamed[entry["user"]]
    definitions["vhosts"] = [{"name": vhost}]
    for key in ("permissions", "topic_permissions", "exchanges", "queues", "bindings", "policies"):
        for entry in definitions[key]:
            entry["vhost"] = vhost
    _import(definitions)

    def url(service: str) -> str:
        password = (directory / f"rabbitmq-{service}-password").read_text().strip()
        return (
            f"amqp://{quote(renamed[user_name(service)], safe='')}:{password}@{RABBIT_HOST}:{RABBIT_PORT}/"
            f"{quote(vhost, safe='')}"
        )

    url.vhost = vhost
    yield url
    # Each rabbitmqctl call starts an Erlang VM (~1 s): clean up in parallel.
    threads = [threading.Thread(target=_rabbitmqctl, args=("delete_user", user)) for user in renamed.values()]
    threads.append(threading.Thread(target=_rabbitmqctl, args=("delete_vhost", vhost)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


TOPOLOGIES = {t.service: t for t in all_topologies()}


def _bindings(service: str) -> list[Binding]:
    topology = TOPOLOGIES[service]
    return [Binding(exchange, key) for exchange, queue, key in topology.bindings if queue == queue_name(service)]


def _limit(service: str) -> int:
    return TOPOLOGIES[service].queues[queue_name(service)]["arguments"]["x-delivery-limit"]


@pytest.mark.parametrize("service", bus_services())
def test_each_service_declares_its_own_topology_as_its_own_user(broker, service):
    """What a worker does at start: same arguments as the imported queues, allowed by its permissions."""
    Bus(broker(service), service, delivery_limit=_limit(service)).declare(_bindings(service))


def _publish(url: str, exchange: str, routing_key: str) -> Exception | None:
    publisher = Bus(url, "probe").publisher()
    try:
        return publisher.publish([Message(exchange, routing_key, b"{}", uuid.uuid4().hex)], timeout=10)[0]
    finally:
        publisher.close()


def _refused(url: str, action) -> bool:
    """Does the broker refuse ``action(channel)`` with ACCESS_REFUSED (403)?"""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        action(connection.channel())
    except pika.exceptions.ChannelClosedByBroker as exc:
        return exc.reply_code == 403
    finally:
        connection.close()
    return False


def _allowed(result: Exception | None) -> bool:
    # Confirmed, or accepted by the broker but bound to no queue (declared by no worker yet).
    return result is None or isinstance(result, Unroutable)


def _denied(result: Exception | None) -> bool:
    return isinstance(result, BusError) and not isinstance(result, Unroutable)


def test_a_service_publishes_events_under_its_own_name_only(broker):
    """Topic permissions: a compromised crm cannot forge orders events into the audit trail (R9, R11)."""
    assert _allowed(_publish(broker("orders"), EVENTS, "orders.order.placed"))
    assert _denied(_publish(broker("crm"), EVENTS, "orders.order.placed"))


def test_participants_reply_and_announce_under_their_own_name_only(broker):
    """A service cannot answer a data-subject request (R1, R2) on another service's behalf."""
    participants = [t.service for t in TOPOLOGIES.values() if t.participant and not t.coordinator]
    assert participants, "no service takes part in data-subject requests"
    one = participants[0]
    other = next(s for s in bus_services() if s != one)
    assert _allowed(_publish(broker(one), GDPR, f"gdpr.reply.{one}"))
    assert _allowed(_publish(broker(one), GDPR, f"gdpr.announce.{one}"))
    assert _denied(_publish(broker(one), GDPR, f"gdpr.reply.{other}"))
    assert _denied(_publish(broker(one), GDPR, f"gdpr.command.{other}"))


def test_only_the_coordinator_sends_gdpr_commands(broker):
    coordinators = [t.service for t in TOPOLOGIES.values() if t.coordinator]
    assert coordinators == ["gdpr"]
    assert _allowed(_publish(broker("gdpr"), GDPR, "gdpr.command.orders"))


def test_a_service_cannot_consume_another_services_queue(broker):
    assert _refused(broker("orders"), lambda ch: ch.basic_get(queue_name("crm")))
    assert _refused(broker("crm"), lambda ch: ch.basic_get(dead_letter_queue("orders")))


def test_a_service_cannot_bind_its_queue_to_other_services_messages(broker):
    """Binding recept.gdpr 'gdpr.reply.*' would copy every export reply (personal data) to the binder."""
    service = next(t.service for t in TOPOLOGIES.values() if t.participant and not t.coordinator)
    Bus(broker(service), service, delivery_limit=_limit(service)).declare(_bindings(service))
    assert _refused(broker(service), lambda ch: ch.queue_bind(queue_name(service), GDPR, "gdpr.reply.*"))
    assert _refused(broker(service), lambda ch: ch.queue_bind(queue_name(service), DLX, "dead.orders"))


def test_a_service_cannot_declare_queues_outside_its_own(broker):
    assert _refused(broker("orders"), lambda ch: ch.queue_declare("recept.sneaky", durable=True))


def test_the_committed_users_cannot_log_in_without_the_generated_hashes(rabbitmq_server):
    """The committed file is safe to import anywhere: its users have no password until make_secrets."""
    definitions = json.loads(render.DEFINITIONS.read_text(encoding="utf-8"))
    tag = uuid.uuid4().hex[:8]
    user = {**next(u for u in definitions["users"] if u["name"] == user_name("orders")), "name": f"recept-orders-{tag}"}
    _import({"users": [user]})
    try:
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika.URLParameters(f"amqp://{user['name']}:@{RABBIT_HOST}:{RABBIT_PORT}/"))
    finally:
        _rabbitmqctl("delete_user", user["name"])
