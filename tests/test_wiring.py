"""Every service's wiring (issue 13): built once per runtime, subscriptions listed in the open, and
readiness that means "can serve its API" (issue 20)."""

from __future__ import annotations

import pytest

from services import SERVICES, load
from shared.bus import GDPR
from tests.support import make_runtime

pytestmark = pytest.mark.unit


@pytest.fixture(params=SERVICES)
def runtime(request, tmp_path):
    rt = make_runtime(load(request.param), f"sqlite:///{tmp_path}/{request.param}.db")
    yield rt
    rt.db.dispose()


def test_wiring_is_built_once_and_every_way_in_sees_the_same_domain_object(runtime):
    wiring = runtime.wiring
    assert runtime.wiring is wiring
    assert runtime.domain is wiring.domain
    app = runtime.spec.create_app(runtime=runtime)
    assert app.extensions["recept"] is runtime
    assert any(value is runtime.domain for value in app.extensions.values())


def test_a_participant_lists_the_gdpr_command_subscription_itself(runtime):
    wiring = runtime.wiring
    if not runtime.spec.has_worker:
        assert wiring.participant is None and not wiring.subscriptions and not wiring.loops
        return
    keys = [(s.exchange, s.pattern) for s in wiring.subscriptions]
    assert len(keys) == len(set(keys)), "a binding is listed twice"
    if wiring.participant is not None:
        assert (GDPR, f"gdpr.command.{runtime.name}") in keys
    bindings = [(b.exchange, b.pattern) for b in runtime.consumer().bindings]
    assert sorted(bindings) == sorted(keys), "the consumer binds exactly the listed subscriptions"


def test_readiness_is_the_database_and_the_broker_is_a_health_detail(tmp_path):
    # A broker nobody listens on: the api still serves (writes wait in the outbox), so it is ready.
    spec = load("orders")
    rt = make_runtime(spec, f"sqlite:///{tmp_path}/orders.db", broker_url="amqp://guest:guest@127.0.0.1:1/")
    try:
        client = spec.create_app(runtime=rt).test_client()
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.get_json()["checks"] == {"database": "ok", "configuration": "ok"}
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.get_json() == {"status": "ok", "checks": {"broker": "unreachable"}}
    finally:
        rt.db.dispose()
