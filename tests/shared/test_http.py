"""The app factory every service uses: problem+json, validation, size limit, health, OpenAPI, logs."""

from __future__ import annotations

import io
import json
import logging

import pytest
from flask import jsonify

from shared.crypto import DecryptionError
from shared.errors import Conflict
from shared.http import ApiBlueprint, create_service_app, schema_errors
from shared.inputs import MAX_DEPTH, FromSetting, harden, multiline, parse_json
from shared.logs import JsonFormatter
from shared.tokens import TokenVerifier
from tests.support import TokenMint

bp = ApiBlueprint("demo", __name__)

THING = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "quantity": {"type": "integer", "minimum": 1},
    },
    "required": ["name", "quantity"],
    "additionalProperties": False,
}


@bp.operation("POST", "/api/v1/things", summary="Create a thing", body=THING, responses={201: THING}, roles=["staff"])
def create_thing(body):
    if body["name"] == "taken":
        raise Conflict("a thing with this name exists")
    if body["name"] == "boom":
        raise RuntimeError("secret internal detail: 19121212-1212")
    return jsonify(body), 201


@bp.operation(
    "GET",
    "/api/v1/things/{thing_id}",
    summary="Read a thing",
    query={
        "type": "object",
        "properties": {"limit": {"type": "string", "pattern": "^[0-9]+$"}},
        "additionalProperties": False,
    },
    responses={200: {"type": "object"}},
)
def read_thing(thing_id, query):
    return jsonify(id=thing_id, query=query)


@bp.operation("GET", "/api/v1/public", summary="No token needed", public=True, responses={200: {"type": "object"}})
def public():
    return jsonify(ok=True)


@bp.operation(
    "POST",
    "/api/v1/things/search",
    summary="Find things (a static sibling of /things/{thing_id})",
    body={"type": "object", "properties": {"name": {"type": "string"}}},
    responses={200: {"type": "object"}},
)
def search_things(body):
    return jsonify(found=[])


NOTE = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 50},
        "text": multiline({"type": "string", "maxLength": 500}),
        "code": {"type": "string", "pattern": "^[a-z]+$"},
    },
    "additionalProperties": False,
}


@bp.operation(
    "POST", "/api/v1/notes", summary="A note with a multi-line text", body=NOTE, responses={200: {"type": "object"}}
)
def create_note(body):
    return jsonify(body)


@bp.operation(
    "GET",
    "/api/v1/damaged",
    summary="Reads a stored value that fails authentication",
    responses={200: {"type": "object"}},
)
def read_damaged():
    raise DecryptionError("ciphertext failed authentication")


class FakeRuntime:
    """Only the token verifier: the app factory under test needs nothing else."""

    def __init__(self, mint):
        self.tokens = TokenVerifier(mint.keyset(), "recept-auth")


@pytest.fixture
def mint():
    return TokenMint()


@pytest.fixture
def app(mint):
    def broken():
        raise ConnectionRefusedError("amqp://user:password@host")

    return create_service_app(
        "demo",
        blueprints=[bp],
        readiness={"database": lambda: None, "broker": broken},
        max_content_length=2048,
        extensions={"recept": FakeRuntime(mint)},
    )


@pytest.fixture
def client(app):
    return app.test_client()


def assert_problem(response, status):
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status and body["title"] and body["detail"] and body["type"].startswith("https://")
    return body


def test_valid_request_passes_through(client, mint):
    r = client.post("/api/v1/things", json={"name": "soup", "quantity": 2}, headers=mint.headers())
    assert r.status_code == 201 and r.get_json() == {"name": "soup", "quantity": 2}


def test_validation_errors_name_fields_without_echoing_values(client, mint):
    r = client.post(
        "/api/v1/things", json={"name": "x" * 25, "quantity": 0, "secret": "19121212-1212"}, headers=mint.headers()
    )
    body = assert_problem(r, 422)
    fields = {e["field"]: e["message"] for e in body["errors"]}
    assert set(fields) == {"name", "quantity", "secret"}
    assert "19121212" not in r.get_data(as_text=True) and "xxxxx" not in r.get_data(as_text=True)


def test_missing_field_is_named(client, mint):
    body = assert_problem(client.post("/api/v1/things", json={"name": "a"}, headers=mint.headers()), 422)
    assert body["errors"] == [{"field": "quantity", "message": "is required"}]


def test_malformed_json_is_a_clear_error(client, mint):
    r = client.post("/api/v1/things", data=b"{not json", content_type="application/json", headers=mint.headers())
    assert assert_problem(r, 422)["errors"][0]["field"] == "body"


def test_wrong_media_type_is_415(client, mint):
    r = client.post(
        "/api/v1/things", data="name=a", content_type="application/x-www-form-urlencoded", headers=mint.headers()
    )
    assert_problem(r, 415)


def test_body_over_the_limit_is_413(client, mint):
    r = client.post("/api/v1/things", json={"name": "a" * 5000, "quantity": 1}, headers=mint.headers())
    assert_problem(r, 413)


def test_unknown_path_is_404_and_wrong_method_405(client):
    assert_problem(client.get("/nope"), 404)
    r = client.delete("/api/v1/public")
    assert_problem(r, 405)
    assert "GET" in r.headers["Allow"]


def test_domain_errors_map_to_their_status(client, mint):
    assert_problem(client.post("/api/v1/things", json={"name": "taken", "quantity": 1}, headers=mint.headers()), 409)


def test_unexpected_error_hides_internals_and_logs_no_message(client, mint, caplog):
    with caplog.at_level(logging.ERROR):
        r = client.post("/api/v1/things", json={"name": "boom", "quantity": 1}, headers=mint.headers())
    body = assert_problem(r, 500)
    assert "19121212" not in json.dumps(body) and "secret" not in json.dumps(body)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("demo"))
    for record in caplog.records:
        handler.emit(record)
    logged = stream.getvalue()
    assert "RuntimeError" in logged and "19121212" not in logged


def test_missing_or_bad_token_is_401_and_wrong_role_403(client, mint):
    assert_problem(client.post("/api/v1/things", json={"name": "a", "quantity": 1}), 401)
    r = client.post("/api/v1/things", json={"name": "a", "quantity": 1}, headers={"Authorization": "Bearer nope"})
    assert_problem(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = client.post("/api/v1/things", json={"name": "a", "quantity": 1}, headers=mint.headers(roles=["auditor"]))
    assert_problem(r, 403)


def test_query_parameters_are_validated(client, mint):
    assert client.get("/api/v1/things/7?limit=5", headers=mint.headers()).get_json() == {
        "id": "7",
        "query": {"limit": "5"},
    }
    assert_problem(client.get("/api/v1/things/7?limit=x", headers=mint.headers()), 422)
    assert_problem(client.get("/api/v1/things/7?other=1", headers=mint.headers()), 422)


def test_health_and_readiness_name_what_is_down_without_secrets(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    body = assert_problem(client.get("/readyz"), 503)
    assert "broker" in body["detail"] and "database" not in body["detail"]
    assert "password" not in json.dumps(body)


def test_openapi_documents_every_operation(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    # The published schema is the one that validates: the declared one with the text rule (issue 18).
    assert spec["paths"]["/api/v1/things"]["post"]["requestBody"]["content"]["application/json"]["schema"] == harden(
        THING
    )
    assert spec["paths"]["/api/v1/things/{thing_id}"]["get"]["parameters"][0]["name"] == "thing_id"
    assert spec["paths"]["/api/v1/public"]["get"]["security"] == []
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert path in spec["paths"]


def test_openapi_document_is_valid_openapi(client):
    from openapi_spec_validator import validate

    validate(client.get("/openapi.json").get_json())


def test_request_id_is_echoed_or_made(client):
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123-def-456"})
    assert r.headers["X-Request-ID"] == "abc-123-def-456"
    r = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces and <html>"})
    assert r.headers["X-Request-ID"] != "bad id with spaces and <html>" and len(r.headers["X-Request-ID"]) == 32


def test_request_log_lines_are_json_without_query_strings(client, mint, caplog):
    with caplog.at_level(logging.INFO, logger="recept.http"):
        client.get("/api/v1/things/9?limit=12345", headers=mint.headers())
    record = [r for r in caplog.records if r.name == "recept.http"][-1]
    line = json.loads(JsonFormatter("demo").format(record))
    assert line["path"] == "/api/v1/things/9" and line["status"] == 200 and "12345" not in json.dumps(line)
    assert line["service"] == "demo" and "duration_ms" in line


# --- the shared input layer (shared/inputs.py, issue 18) ----------------------------------------------


def post_raw(client, mint, path, text: str):
    return client.post(
        path, data=text.encode("utf-8", "surrogatepass"), content_type="application/json", headers=mint.headers()
    )


def test_deeply_nested_json_is_a_422_not_a_recursion_error(app, mint):
    # 100,000 '[' is larger than this app's 2 KiB limit, so it gets a larger one here.
    app.config["MAX_CONTENT_LENGTH"] = 1_048_576
    client = app.test_client()
    body = assert_problem(post_raw(client, mint, "/api/v1/things", "[" * 100_000), 422)
    assert "nested" in body["detail"]
    # Within the parser's reach but deeper than the limit: the same answer.
    body = assert_problem(
        post_raw(client, mint, "/api/v1/things", '{"name": ' + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "}"), 422
    )
    assert "nested" in body["detail"]


def test_duplicate_keys_are_rejected(client, mint):
    body = assert_problem(post_raw(client, mint, "/api/v1/things", '{"name": "a", "quantity": 1, "name": "b"}'), 422)
    assert body["errors"] == [{"field": "name", "message": "has a duplicate key"}]


def test_nan_and_infinity_are_not_json(client, mint):
    assert_problem(post_raw(client, mint, "/api/v1/things", '{"name": "a", "quantity": NaN}'), 422)
    assert_problem(post_raw(client, mint, "/api/v1/things", '{"name": "a", "quantity": Infinity}'), 422)


@pytest.mark.parametrize("text", ["\\ud800", "a\\u0000b", "\\u202eevil", "x\\u2066y", "\\u0007"])
def test_unacceptable_text_is_a_field_level_422(client, mint, text):
    body = assert_problem(post_raw(client, mint, "/api/v1/things", '{"name": "%s", "quantity": 1}' % text), 422)
    assert [e["field"] for e in body["errors"]] == ["name"]
    assert "ud800" not in json.dumps(body) and "evil" not in json.dumps(body)


def test_a_raw_lone_surrogate_is_refused_as_not_utf8(client, mint):
    body = assert_problem(post_raw(client, mint, "/api/v1/things", '{"name": "\ud800", "quantity": 1}'), 422)
    assert body["errors"][0]["message"] == "is not UTF-8"


def test_line_breaks_only_where_a_field_allows_them(client, mint):
    headers = mint.headers()
    assert client.post("/api/v1/notes", json={"text": "two\nlines\tand a tab"}, headers=headers).status_code == 200
    for field, value in (("title", "two\nlines"), ("code", "abc\n"), ("title", "tab\there")):
        body = assert_problem(client.post("/api/v1/notes", json={field: value}, headers=headers), 422)
        assert body["errors"] == [{"field": field, "message": "must be a single line (no line breaks or tabs)"}]
    # Multi-line still refuses NUL and bidi overrides.
    assert_problem(client.post("/api/v1/notes", json={"text": "a\u202eb"}, headers=headers), 422)


def test_an_integral_number_reaches_the_view_as_an_int(client, mint):
    # JSON Schema's integer admits 3.0 (JSON has one number type); the view gets the int 3, so the
    # domain never stores "3.0" (issue 18), and a documented valid request is accepted.
    answer = client.post("/api/v1/things", json={"name": "a", "quantity": 3.0}, headers=mint.headers())
    assert answer.status_code == 201 and answer.get_json()["quantity"] == 3
    assert "3.0" not in answer.get_data(as_text=True)
    assert parse_json(b'{"n": 3.0, "x": 2.5, "big": 1e300}') == {"n": 3, "x": 2.5, "big": 1e300}
    assert type(parse_json(b"3.0")) is int and type(parse_json(b"1e300")) is float
    body = assert_problem(
        client.post("/api/v1/things", json={"name": "a", "quantity": 3.5}, headers=mint.headers()), 422
    )
    assert body["errors"] == [{"field": "quantity", "message": "has the wrong type (expected integer)"}]


def test_query_strings_follow_the_same_rules(client, mint):
    headers = mint.headers()
    body = assert_problem(client.get("/api/v1/things/7?limit=1&limit=2", headers=headers), 422)
    assert body["errors"] == [{"field": "limit", "message": "is given more than once"}]
    assert_problem(client.get("/api/v1/things/7?limit=1%00", headers=headers), 422)
    assert_problem(client.get("/api/v1/things/7?limit=%E2%80%AE1", headers=headers), 422)


def test_a_path_value_with_control_characters_names_nothing(client, mint):
    assert_problem(client.get("/api/v1/things/a%00b", headers=mint.headers()), 404)


def test_static_sibling_routes_win_and_allow_is_truthful(client, mint):
    assert client.post("/api/v1/things/search", json={}, headers=mint.headers()).get_json() == {"found": []}
    r = client.get("/api/v1/things/search", headers=mint.headers())
    assert_problem(r, 405)
    assert set(r.headers["Allow"].replace(" ", "").split(",")) == {"POST", "OPTIONS"}
    r = client.options("/api/v1/things/search")
    assert set(r.headers["Allow"].replace(" ", "").split(",")) == {"POST", "OPTIONS"}
    assert client.get("/api/v1/things/7", headers=mint.headers()).status_code == 200


def test_a_damaged_stored_value_is_a_problem_not_a_500(client, mint):
    body = assert_problem(client.get("/api/v1/damaged", headers=mint.headers()), 409)
    assert body["type"].endswith("/damaged-record")


def test_an_operation_must_document_its_success():
    demo = ApiBlueprint("undocumented", __name__)
    with pytest.raises(TypeError, match="success status"):
        demo.operation("GET", "/x", summary="x", responses={404: None})
    with pytest.raises(TypeError, match="needs a schema"):
        demo.operation("GET", "/x", summary="x", responses={200: None})
    demo.operation("DELETE", "/x", summary="x", responses={204: None})


def test_probes_and_the_document_are_public_with_schemas(client):
    spec = client.get("/openapi.json").get_json()
    for path in ("/healthz", "/readyz", "/openapi.json"):
        operation = spec["paths"][path]["get"]
        assert operation["security"] == []
        assert operation["responses"]["200"]["content"]["application/json"]["schema"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            ok = [s for s in operation["responses"] if s != "default" and int(s) < 300 and s != "204"]
            assert ok, f"{method} {path} documents no success"
            assert all(operation["responses"][s]["content"] for s in ok)


def test_a_declared_bound_follows_the_apps_setting():
    """inputs.FromSetting: the same declaration validates and is published with each app's value."""
    bp = ApiBlueprint("setting_bound", __name__)
    secret = {"type": "string", "minLength": FromSetting("SECRET_MIN"), "maxLength": 100}

    @bp.operation(
        "POST",
        "/api/v1/secrets",
        summary="Set a secret",
        public=True,
        body={"type": "object", "properties": {"secret": secret}, "required": ["secret"]},
        responses={204: None},
    )
    def set_secret(body):
        return "", 204

    for minimum in (8, 20):
        app = create_service_app("bound", blueprints=[bp], readiness={}, settings={"SECRET_MIN": minimum})
        client = app.test_client()
        document = client.get("/openapi.json").get_json()
        body_schema = document["paths"]["/api/v1/secrets"]["post"]["requestBody"]["content"]["application/json"]
        assert body_schema["schema"]["properties"]["secret"]["minLength"] == minimum
        assert client.post("/api/v1/secrets", json={"secret": "x" * minimum}).status_code == 204
        short = assert_problem(client.post("/api/v1/secrets", json={"secret": "x" * (minimum - 1)}), 422)
        assert short["errors"] == [{"field": "secret", "message": f"is too short (at least {minimum} characters)"}]
    with pytest.raises(TypeError, match="SECRET_MIN"):
        create_service_app("bound", blueprints=[bp], readiness={})


def test_a_field_that_needs_another_names_the_missing_one_and_why():
    """dependentRequired (issue 15's name + birth date): the missing field, with the one that needs it."""
    schema = {"type": "object", "dependentRequired": {"name": ["birth_date"]}}
    assert schema_errors(schema, {"name": "Karin"}, prefix="subject") == [
        {"field": "subject.birth_date", "message": "is required with name"}
    ]
    assert schema_errors(schema, {"name": "Karin", "birth_date": "1938-04-02"}) == []
