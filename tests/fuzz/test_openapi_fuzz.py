"""API fuzzing (issue 18): every service's own /openapi.json against the service itself.

Per service, in the embedded configuration (SQLite, memory bus), the app is built, objects are
seeded, the document is loaded with schemathesis, and every operation is called with
generated valid and invalid requests, with a token of the roles the operation needs, both on
generated ids and on the seeded ones.  Asserted for every response:

- ``not_a_server_error``: never a 5xx;
- ``status_code_conformance``, ``content_type_conformance``, ``response_headers_conformance``,
  ``response_schema_conformance``: the answer is one the document declares, in its media type and
  schema;
- ``negative_data_rejection``: a request the schema refuses is refused (4xx);
- ``problem_json`` (ours): every error is RFC 9457 problem+json with type, title, status, detail.

Left out: ``positive_data_acceptance`` (ST202) expects every schema-valid request to succeed, which
rules that need the database (an unknown company_id is a 422, a time window must be ordered,
a personnummer's check digit) cannot meet; ``max_response_time`` (a shared 2-core machine).

``RECEPT_FUZZ_EXAMPLES`` (default 4) is the number of examples per operation, mode and id set;
``./recept fuzz`` runs this tier with 100 (docs/architecture.md, "API fuzzing").
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import max_response_time
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support import TokenMint, make_runtime

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("RECEPT_FUZZ_EXAMPLES", "4"))
EXCLUDED = [positive_data_acceptance, max_response_time]


def problem_json(ctx, response, case) -> bool | None:
    """Every 4xx/5xx is problem+json with the members RFC 9457 and the document promise."""
    if response.status_code < 400:
        return None
    values = [v for k, v in response.headers.items() if k.lower() == "content-type"] or [""]
    media = values[0][0] if isinstance(values[0], list) else values[0]
    assert media.split(";")[0].strip() == "application/problem+json", f"{response.status_code} is {media!r}"
    body = response.json()
    assert body["status"] == response.status_code and body["title"] and body["detail"] and body["type"]
    return True


@dataclass
class Target:
    app: Any
    headers: Callable[[Any], dict[str, str]]  # operation -> Authorization header of the roles it needs
    seeds: dict[str, str] = field(default_factory=dict)  # path parameter -> an id that exists
    closers: list[Callable[[], None]] = field(default_factory=list)


def fuzz(target: Target) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", target.app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        headers = target.headers(operation)
        names = {p.name for p in operation.path_parameters}
        seeded = {n: v for n, v in target.seeds.items() if n in names}
        variants = [None] + ([seeded] if seeded else [])
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for path_parameters in variants:
                # The token is a fixed header: a negative case is about the request, not a missing token.
                strategy = operation.as_strategy(
                    generation_mode=mode, path_parameters=path_parameters, headers=headers or None
                )

                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    derandomize=False,
                    suppress_health_check=list(HealthCheck),
                    phases=[Phase.explicit, Phase.generate],
                )
                @given(strategy)
                def run(case):
                    case.call_and_validate(headers=headers, excluded_checks=EXCLUDED, additional_checks=[problem_json])

                try:
                    run()
                except Unsatisfiable:
                    continue  # nothing invalid to send (an operation without parameters)
                except BaseException as exc:  # noqa: BLE001 - schemathesis raises a FailureGroup
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
                    failures.append(
                        f"{operation.label} [{mode.value}{', seeded' if path_parameters else ''}]:\n{str(exc)[:3000]}"
                    )
    assert operations > 3
    assert not failures, f"{len(failures)} failing operation(s):\n\n" + "\n\n".join(failures)


def _sqlite(tmp_path, name: str) -> str:
    return f"sqlite:///{tmp_path / f'{name}.db'}"


# --- one test per service -------------------------------------------------------------------------


def test_auth_keeps_its_contract(tmp_path):
    from tests.auth.conftest import PASSWORD, build

    harness = build(_sqlite(tmp_path, "auth"), tmp_path)
    try:
        harness.tenant("vendor", "Recept AB")
        harness.tenant("north", "North")
        user = harness.user("north", "nils", roles=("staff",))
        vendor = {"Authorization": f"Bearer {harness.token('vendor', ('vendor_admin',))}"}
        login = harness.login("north", "nils", PASSWORD)
        assert login.status_code == 200, login.json
        # The caller's own endpoints (/auth/me, password, logout) as a user who logged in.
        own = {"Authorization": f"Bearer {login.json['access_token']}"}

        def headers(operation) -> dict[str, str]:
            return own if operation.path.startswith("/api/v1/auth/") else vendor

        fuzz(Target(harness.app, headers, seeds={"slug": "north", "user_id": user["id"], "role": "staff"}))
    finally:
        harness.runtime.db.dispose()


def test_crm_keeps_its_contract(tmp_path):
    from services.crm import SPEC

    mint = TokenMint()
    runtime = make_runtime(SPEC, _sqlite(tmp_path, "crm"), mint=mint)
    try:
        app = SPEC.create_app(runtime=runtime)
        client = app.test_client()
        support = mint.headers(tenant="vendor", roles=("support",))
        company = client.post("/api/v1/companies", json={"name": "Kommun AB"}, headers=support).get_json()
        person = client.post(
            f"/api/v1/companies/{company['id']}/persons",
            json={"name": "Pia Person", "email": "pia@example.se", "phone": "+46701234567"},
            headers=support,
        ).get_json()
        case = client.post(
            "/api/v1/cases", json={"company_id": company["id"], "subject": "Login fails"}, headers=support
        ).get_json()
        fuzz(
            Target(
                app,
                lambda _op: mint.headers(tenant="vendor", roles=("support",)),
                seeds={"company_id": company["id"], "person_id": person["id"], "case_id": case["id"]},
            )
        )
    finally:
        runtime.db.dispose()


def test_audit_keeps_its_contract(tmp_path):
    from services.audit import SPEC

    mint = TokenMint()
    runtime = make_runtime(SPEC, _sqlite(tmp_path, "audit"), mint=mint)
    try:
        app = SPEC.create_app(runtime=runtime)
        fuzz(Target(app, lambda _op: mint.headers(tenant="vendor", roles=("auditor",))))
    finally:
        runtime.db.dispose()


def test_orders_keeps_its_contract(tmp_path):
    from datetime import datetime

    from services.orders import SPEC
    from tests.orders.conftest import Clock
    from tests.orders.world import World

    mint, clock = TokenMint(), Clock(datetime(2030, 3, 10, 8, 0, tzinfo=UTC))
    runtime = make_runtime(SPEC, _sqlite(tmp_path, "orders"), mint=mint, clock=clock)
    try:
        app = SPEC.create_app(runtime=runtime)
        world = World(app.test_client(), mint, runtime, "sqlite", clock)
        person = world.individual(texture_level=3, diets=["gluten"])
        order = world.place(individual_id=person["id"])
        grants = world.ok("GET", f"/registers/{world.register['id']}/grants", world.admin)["items"]
        # The member of staff who holds every right, also a tenant administrator.
        roles = ["tenant_admin", "staff"]
        fuzz(
            Target(
                app,
                lambda _op: mint.headers(sub="staff-all", tenant="t1", roles=roles),
                seeds={
                    "unit_id": world.unit["id"],
                    "register_id": world.register["id"],
                    "list_id": world.list["id"],
                    "article_id": world.lunch["id"],
                    "individual_id": person["id"],
                    "order_id": order["id"],
                    "grant_id": grants[0]["id"],
                },
            )
        )
    finally:
        runtime.db.dispose()


def test_gdpr_keeps_its_contract(tmp_path):
    from tests.gdpr.test_requests import Gdpr

    gdpr = Gdpr(_sqlite(tmp_path, "gdpr"))
    try:
        opened = gdpr.open("export", reason="asked by e-mail")
        assert opened.status_code == 202, opened.get_json()
        fuzz(Target(gdpr.client.application, lambda _op: gdpr.headers(), seeds={"request_id": opened.get_json()["id"]}))
    finally:
        gdpr.rt.db.dispose()


def test_a_fuzz_failure_is_reported(tmp_path):
    """The harness itself: a 500 from an operation is found and reported, not swallowed."""
    from flask import jsonify

    from shared.http import ApiBlueprint, create_service_app

    bp = ApiBlueprint(f"broken_{uuid.uuid4().hex[:6]}", __name__)

    @bp.operation(
        "POST",
        "/api/v1/things",
        summary="Fails on a long name",
        public=True,
        body={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        responses={200: {"type": "object"}},
    )
    def things(body):
        if len(body["name"]) > 3:
            raise RuntimeError("a bug")
        return jsonify(ok=True)

    @bp.operation("GET", "/api/v1/ok", summary="Fine", public=True, responses={200: {"type": "object"}})
    def fine():
        return jsonify(ok=True)

    app = create_service_app("broken", blueprints=[bp], readiness={})
    with pytest.raises(AssertionError, match="POST /api/v1/things"):
        fuzz(Target(app, lambda _op: {}))
