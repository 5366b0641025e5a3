"""The app factory every service uses: problem+json, validation, size limit, health, OpenAPI, logs."""
from __future__ import annotations

import io
import json
import logging

import pytest
from flask import jsonify

from shared.errors import Conflict
from shared.http import ApiBlueprint, create_service_app
from shared.logs import JsonFormatter
from shared.tokens import TokenVerifier
from tests.support import TokenMint

bp = ApiBlueprint("demo", __name__)

THING = {
    "type": "object",
    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 20},
                   "quantity": {"type": "integer", "minimum": 1}},
    "required": ["name", "quantity"],
    "additionalProperties": False,
}


@bp.operation("POST", "/api/v1/things", summary="Create a thing", body=THING, responses={201: THING},
              roles=["staff"])
def create_thing(body):
    if body["name"] == "taken":
        raise Conflict("a thing with this name exists")
    if body["name"] == "boom":
        raise RuntimeError("secret internal detail: 19121212-1212")
    return jsonify(body), 201


@bp.operation("GET", "/api/v1/things/{thing_id}", summary="Read a thing",
              query={"type": "object", "properties": {"limit": {"type": "string", "pattern": "^[0-9]+$"}},
                     "additionalProperties": False})
def read_thing(thing_id, query):
    return jsonify(id=thing_id, query=query)


@bp.operation("GET", "/api/v1/public", summary="No token needed", public=True)
def public():
    return jsonify(ok=True)


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

    return create_service_app("demo", blueprints=[bp], readiness={"database": lambda: None, "broker": broken},
                              max_content_length=2048, extensions={"recept": FakeRuntime(mint)})


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
    r = client.post("/api/v1/things", json={"name": "x" * 25, "quantity": 0, "secret": "19121212-1212"},
                    headers=mint.headers())
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
    r = client.post("/api/v1/things", data="name=a", content_type="application/x-www-form-urlencoded",
                    headers=mint.headers())
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
    assert client.get("/api/v1/things/7?limit=5", headers=mint.headers()).get_json() == {"id": "7", "query": {"limit": "5"}}
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
    assert spec["paths"]["/api/v1/things"]["post"]["requestBody"]["content"]["application/json"]["schema"] == THING
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
