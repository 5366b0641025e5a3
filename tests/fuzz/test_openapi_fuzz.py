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
- ``problem_json`` (ours): every error is RFC 9457 problem+json with type, title, status, detail;
- ``positive_data_acceptance`` (as ``accepts_valid_data``): a request the schema accepts is
  accepted (not a 400/422), so the documents say exactly what the servers take.  Ids in a body or query (``company_id``,
  ``unit_id``, ...) are the seeded objects' in the positive examples: "this id must exist" is no
  schema rule.  ``RULES_BEYOND_SCHEMA`` lists, per operation and field, the few rules JSON Schema
  cannot state, each with why; a 422 whose every field error is one of them is not counted.

Left out: ``max_response_time`` (a shared 2-core machine).

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
EXCLUDED = [max_response_time, positive_data_acceptance]  # the latter runs as accepts_valid_data

# Rules a JSON Schema cannot state: operation label -> field -> why.  Narrow on purpose: only a
# 422 naming exactly these fields on exactly this operation is let through by accepts_valid_data.
_PERSONNUMMER = (
    "a personnummer's check digit (Luhn) and birth date (a real day, not in the future), and in orders"
    " the tenant's setting that enables them (PUT /settings, which this run also calls)"
)
RULES_BEYOND_SCHEMA: dict[str, dict[str, str]] = {
    # A file's content is no JSON Schema: the call log's CSV columns, the e-mail's RFC 5322 headers.
    "POST /api/v1/calls/import": {"file": "a CSV header line", "header.*": "the CSV header's columns"},
    "POST /api/v1/companies/{company_id}/emails": {"message": "an RFC 5322 message (From, Date, ...)"},
    # Stored state: the person the case links must be on the case's company's person tab now; a
    # notice recipient needs an e-mail address, the stored one when a change names none.
    "PATCH /api/v1/cases/{case_id}": {"person_id": "a person of the case's company"},
    "PATCH /api/v1/persons/{person_id}": {"notice_recipient": "an e-mail address, given or stored"},
    # Relative to today: a date of birth is not in the future.
    # Two fields compared: a stay ends after it starts.
    "POST /api/v1/registers/{register_id}/individuals": {
        "personnummer": _PERSONNUMMER,
        "date_of_birth": "not in the future",
        "valid_to": "not before valid_from",
    },
    "PATCH /api/v1/individuals/{individual_id}": {
        "personnummer": _PERSONNUMMER,
        "date_of_birth": "not in the future",
        "valid_to": "not before valid_from (given or stored)",
    },
    # An individual's unit is stored: an order for one without a unit must name the unit.
    "POST /api/v1/orders": {"unit_id": "the individual's stored unit, when the order names none"},
    # One parameter's bound depends on another's value (OpenAPI states each query parameter alone);
    # a cursor is opaque.
    "GET /api/v1/events": {
        "limit": "the page size is at most 1000 with format=json, any with csv",
        "until": "a time window ends after it starts (until > since)",
        "cursor": "an opaque value from a previous page's next_cursor",
    },
    # RFC 4515 filters nest parentheses (no regular language); the bind password is needed again
    # when the stored connection changes; plain LDAP follows a setting; roles follow the tenant.
    "PUT /api/v1/tenants/{slug}/directory": {
        "user_filter": "an RFC 4515 filter with {username}",
        "group_filter": "an RFC 4515 filter with {user_dn}",
        "bind_password": "required unless the stored connection stays the same",
        "tls": "none only where ALLOW_PLAIN_LDAP is set",
        "group_roles.*": "roles this tenant may grant",
    },
    # Roles a tenant grants depend on the tenant (vendor or customer) and the caller's own; a
    # username holds no character of Unicode category C, unassigned code points included (a class
    # of some 700 ranges no generator handles in reasonable time).
    "POST /api/v1/tenants/{slug}/users": {"roles": "roles this tenant may grant", "username": "no category C"},
    "POST /api/v1/tenants/{slug}/users/search": {"username": "no category C"},
    "POST /api/v1/tenants": {"signed_on": "a signing date is not in the future: relative to today"},
    "PUT /api/v1/tenants/{slug}/agreement": {"signed_on": "a signing date is not in the future: relative to today"},
    "POST /api/v1/individuals/search": {"personnummer": _PERSONNUMMER},
    "POST /api/v1/requests": {
        "subject.personnummer": _PERSONNUMMER,
        "subject.birth_date": "a real day, not in the future and not before 1880: relative to today",
        "instruction.given_at": "not in the future: relative to today",
    },
    # A certificate is free-form JSON: every string and field name in it follows the universal text
    # rule, which a schema without recursion over arbitrary JSON cannot state.
    "POST /api/v1/certificates/verify": {
        "body": "field names follow the text rule at any depth",
        "certificate": "free-form JSON under the text rule",
        "certificate.*": "free-form JSON under the text rule",
        "signature": "free-form JSON under the text rule",
        "signature.*": "free-form JSON under the text rule",
    },
    # The customers a person may name, and whether SMS is offered, are settings of the deployment.
    "POST /api/v1/public/verifications": {
        "customer": "one of the customers the PUBLIC_CUSTOMERS setting lists",
        "channel": "sms only where an SMS sender is configured",
    },
}
# Stored state answered with another status than 422: operation label -> status -> why.
STATUS_BEYOND_SCHEMA: dict[str, dict[int, str]] = {
    # A verification exists only after a code was sent to an address, and it expires (410 Gone).
    "POST /api/v1/public/verifications/{verification_id}/confirm": {410: "a verification that was started and lives"},
    # A hand-over token exists only for a finished export, and it works once (410 Gone).
    "POST /api/v1/public/downloads": {410: "the token of a hand-over link of a finished export, not used yet"},
}


def _beyond_schema(case, response) -> bool:
    if response.status_code in STATUS_BEYOND_SCHEMA.get(case.operation.label, {}):
        return True
    rules = RULES_BEYOND_SCHEMA.get(case.operation.label)
    if not rules or response.status_code != 422:
        return False
    errors = response.json().get("errors") or []
    return bool(errors) and all(_listed(e.get("field") or "", rules) for e in errors)


def _listed(name: str, rules: dict[str, str]) -> bool:
    return name in rules or any(r.endswith(".*") and name.startswith(r[:-1]) for r in rules)


def accepts_valid_data(ctx, response, case) -> bool | None:
    """schemathesis' positive_data_acceptance, but for the listed rules beyond a schema."""
    if _beyond_schema(case, response):
        return None
    return positive_data_acceptance(ctx, response, case)


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
    # body or query field -> an id that exists (seeds unless given: objects the run's own calls on
    # seeded paths, such as a DELETE, leave alone)
    refs: dict[str, str] | None = None
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
                refs = target.seeds if target.refs is None else target.refs
                if mode is GenerationMode.POSITIVE and refs:
                    strategy = strategy.map(lambda case, refs=refs: _refer_to_seeds(case, refs))

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
                    case.call_and_validate(
                        headers=headers, excluded_checks=EXCLUDED, additional_checks=[problem_json, accepts_valid_data]
                    )

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


def _refer_to_seeds(case, seeds: dict[str, str]):
    """A valid example's references (``company_id``, ``company_ids``) name the seeded objects."""
    for part in (case.body, case.query):
        if not isinstance(part, dict):
            continue
        for key, value in list(part.items()):
            if key in seeds and isinstance(value, str):
                part[key] = seeds[key]
            elif key.endswith("s") and key[:-1] in seeds and isinstance(value, list) and value:
                part[key] = [seeds[key[:-1]]]
    return case


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
        # Named in bodies only (a case's person, a notice's recipient): no fuzzed path deletes it.
        recipient = client.post(
            f"/api/v1/companies/{company['id']}/persons",
            json={"name": "Rut Mottagare", "email": "rut@example.se", "notice_recipient": True},
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
                refs={"company_id": company["id"], "person_id": recipient["id"]},
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
        # Named in bodies only (an order's article and individual): no fuzzed path withdraws them.
        resident = world.individual()
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
                refs={
                    "unit_id": world.unit["id"],
                    "register_id": world.register["id"],
                    "list_id": world.list["id"],
                    "article_id": world.soup["id"],
                    "individual_id": resident["id"],
                    "delivery_point_id": world.point["id"],
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
