"""The HTTP side every service shares: problem+json errors, validated operations that
document themselves as OpenAPI 3.1, request ids, JSON request logs, health endpoints.

A service declares its API with ``ApiBlueprint.operation``; the same declaration
validates the request and produces ``/openapi.json``, so the two cannot drift apart.
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Callable, Iterable

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from jsonschema import Draft202012Validator, FormatChecker
from werkzeug.exceptions import HTTPException

from .errors import AccessDenied, DomainError, Invalid, Unauthorized, Unavailable, UnsupportedMediaType
from .logs import request_id
from .tokens import CHALLENGE, Principal

log = logging.getLogger("recept.http")

PROBLEM = "application/problem+json"
TYPE_BASE = "https://recept.example/problems/"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def problem(status: int, title: str, detail: str, *, type_suffix: str | None = None,
            errors: list[dict] | None = None, headers: dict | None = None) -> Response:
    body: dict[str, Any] = {
        "type": TYPE_BASE + (type_suffix or re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    rid = request_id.get()
    if rid:
        body["request_id"] = rid
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


# --- validation ---------------------------------------------------------------------------------

_MESSAGES = {
    "required": "is required",
    "type": "has the wrong type (expected {validator_value})",
    "enum": "must be one of {validator_value}",
    "const": "has an unexpected value",
    "minLength": "is too short (at least {validator_value} characters)",
    "maxLength": "is too long (at most {validator_value} characters)",
    "minimum": "must be at least {validator_value}",
    "maximum": "must be at most {validator_value}",
    "pattern": "has the wrong format",
    "format": "is not a valid {validator_value}",
    "additionalProperties": "is not an accepted field",
    "minItems": "needs at least {validator_value} items",
    "maxItems": "takes at most {validator_value} items",
    "minProperties": "needs at least {validator_value} fields",
    "anyOf": "does not match any accepted form",
    "oneOf": "does not match exactly one accepted form",
    "uniqueItems": "has duplicate items",
}


def schema_errors(schema: dict[str, Any], instance: Any, prefix: str = "") -> list[dict[str, str]]:
    """Field-level problems, described by rule, never echoing the submitted value."""
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    problems = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        path = [str(p) for p in error.absolute_path]
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else ""
            path.append(missing)
        elif error.validator == "additionalProperties":
            extras = sorted(set(instance_at(instance, error.absolute_path) or {}) -
                            set((error.schema.get("properties") or {}).keys()))
            path.append(extras[0] if extras else "")
        template = _MESSAGES.get(error.validator, "is not valid")
        value = error.validator_value
        if error.validator == "enum":
            value = ", ".join(map(str, value))
        message = template.format(validator_value=value)
        problems.append({"field": ".".join(p for p in [prefix, *path] if p) or "body", "message": message})
    return problems


def instance_at(instance: Any, path) -> Any:
    for part in path:
        instance = instance[part]
    return instance


def validate(schema: dict[str, Any], instance: Any, what: str = "request body") -> None:
    problems = schema_errors(schema, instance)
    if problems:
        raise Invalid(f"the {what} has {len(problems)} invalid field(s)", errors=problems)


# --- operations and OpenAPI ------------------------------------------------------------------------

@dataclass
class Operation:
    method: str
    path: str
    summary: str
    body: dict | None = None
    query: dict | None = None
    responses: dict = field(default_factory=dict)
    roles: tuple[str, ...] | None = None
    public: bool = False
    tags: tuple[str, ...] = ()
    content_type: str = "application/json"


class ApiBlueprint(Blueprint):
    """A Blueprint whose routes are declared with their schemas and access rules."""

    def __init__(self, name: str, import_name: str, **kwargs) -> None:
        super().__init__(name, import_name, **kwargs)
        self.operations: list[Operation] = []

    def operation(self, method: str, path: str, *, summary: str, body: dict | None = None,
                  query: dict | None = None, responses: dict | None = None, roles: Iterable[str] | None = None,
                  public: bool = False, tags: Iterable[str] = (), content_type: str = "application/json"):
        """Declare an endpoint.

        ``body``: JSON schema of the request body (passed to the view as ``body=``);
        ``query``: JSON schema (object) of the query parameters, all strings, passed as ``query=``;
        ``roles``: the caller needs one of these roles (None: any signed-in caller);
        ``public``: no token needed (login, public keys).
        """
        op = Operation(method.upper(), path, summary, body, query, responses or {},
                       tuple(roles) if roles is not None else None, public, tuple(tags), content_type)
        self.operations.append(op)

        def decorator(view: Callable):
            @wraps(view)
            def wrapper(**kwargs):
                if not op.public:
                    principal = authenticate()
                    if op.roles is not None and not principal.has_any_role(op.roles):
                        raise AccessDenied("your roles do not allow this operation")
                if op.query is not None:
                    params = {k: v for k, v in request.args.items()}
                    problems = schema_errors(op.query, params)
                    if problems:
                        raise Invalid("the query parameters are invalid", errors=problems)
                    kwargs["query"] = params
                if op.body is not None:
                    kwargs["body"] = json_body(op.body)
                return view(**kwargs)

            rule = re.sub(r"\{(\w+)\}", r"<\1>", path)
            self.add_url_rule(rule, endpoint=view.__name__, view_func=wrapper, methods=[op.method])
            return wrapper

        return decorator


def json_body(schema: dict | None = None) -> Any:
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send the request body as application/json")
    try:
        data = json.loads(request.get_data(cache=True) or b"null")
    except (ValueError, UnicodeDecodeError):
        raise Invalid("the request body is not valid JSON", errors=[{"field": "body", "message": "is not valid JSON"}]) from None
    if schema is not None:
        validate(schema, data)
    return data


def build_openapi(title: str, version: str, blueprints: Iterable[ApiBlueprint], description: str = "") -> dict:
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    paths: dict[str, dict] = {
        "/healthz": {"get": {"summary": "The process runs", "responses": {"200": {"description": "ok"}}}},
        "/readyz": {"get": {"summary": "Can serve its API: database reachable, configuration sound",
                            "responses": {"200": {"description": "ready"},
                                          "503": {"description": "not ready",
                                                  "content": {PROBLEM: {"schema": problem_ref}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    }
    for bp in blueprints:
        for op in getattr(bp, "operations", ()):   # plain Blueprints (HTML pages) are not in the API document
            entry: dict[str, Any] = {"summary": op.summary, "operationId": f"{bp.name}_{op.method.lower()}_"
                                     + re.sub(r"[^a-zA-Z0-9]+", "_", op.path).strip("_")}
            if op.tags:
                entry["tags"] = list(op.tags)
            params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                      for n in re.findall(r"\{(\w+)\}", op.path)]
            if op.query:
                required = set(op.query.get("required", []))
                params += [{"name": n, "in": "query", "required": n in required, "schema": s}
                           for n, s in op.query.get("properties", {}).items()]
            if params:
                entry["parameters"] = params
            if op.body is not None:
                entry["requestBody"] = {"required": True, "content": {"application/json": {"schema": op.body}}}
            responses: dict[str, Any] = {}
            for status, spec in (op.responses or {200: None}).items():
                if isinstance(spec, dict) and "description" in spec and "schema" not in spec:
                    responses[str(status)] = spec
                    continue
                desc = {"description": "success" if int(status) < 400 else "failure"}
                if spec is not None:
                    desc["content"] = {op.content_type if int(status) < 400 else PROBLEM: {"schema": spec}}
                responses[str(status)] = desc
            responses.setdefault("default", {"description": "an error", "content": {PROBLEM: {"schema": problem_ref}}})
            entry["responses"] = responses
            if op.public:
                entry["security"] = []
            elif op.roles:
                entry["description"] = "Roles: " + ", ".join(op.roles)
            paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"Problem": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                               "status": {"type": "integer"}, "detail": {"type": "string"},
                               "errors": {"type": "array", "items": {"type": "object", "properties": {
                                   "field": {"type": "string"}, "message": {"type": "string"}}}}},
                "required": ["type", "title", "status", "detail"],
            }},
        },
    }


# --- the app factory ----------------------------------------------------------------------------------

def create_service_app(name: str, *, blueprints: Iterable[ApiBlueprint], readiness: dict[str, Callable[[], None]],
                       health: dict[str, Callable[[], None]] | None = None, max_content_length: int = 1_048_576, title: str | None = None, version: str = "1.0.0",
                       description: str = "", extensions: dict[str, Any] | None = None) -> Flask:
    """A Flask app with everything a Recept service shares.

    ``readiness`` maps what the API needs to serve (its database, its configuration) to a check
    that raises when it fails; ``/readyz`` names every failing one.  ``health`` holds the checks
    of what the API can serve without (the broker: writes go through the outbox and wait there);
    ``/healthz`` reports them as detail and stays 200 while the process runs.
    """
    app = Flask(f"recept.{name}", static_folder=None)   # no implicit /static route shadowing a blueprint's
    app.config["MAX_CONTENT_LENGTH"] = max_content_length
    app.json.sort_keys = False
    app.extensions.update(extensions or {})
    blueprints = list(blueprints)
    spec = build_openapi(title or f"Recept {name}", version, blueprints, description)

    @app.before_request
    def _start() -> None:
        supplied = request.headers.get("X-Request-ID", "")
        request_id.set(supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex)
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        rid = request_id.get()
        if rid:
            response.headers["X-Request-ID"] = rid
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        duration = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        log.info("request", extra={"method": request.method, "path": request.path, "status": response.status_code,
                                   "duration_ms": round(duration, 2)})
        return response

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError):
        return problem(exc.status, exc.title, exc.detail, type_suffix=exc.type_suffix, errors=exc.errors,
                       headers=exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        detail = {
            404: "no such resource",
            405: f"method {request.method} is not allowed here",
            413: f"the request body is larger than {request.max_content_length or app.config['MAX_CONTENT_LENGTH']} bytes",
        }.get(exc.code or 500, exc.description or exc.name)
        headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else None
        return problem(exc.code or 500, exc.name, detail, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.error("unhandled error", exc_info=exc)
        return problem(500, "Internal server error",
                       "the service failed to handle this request; quote the request id when reporting it")

    @app.get("/healthz")
    def healthz():
        checks = {}
        for dependency, check in (health or {}).items():
            try:
                check()
                checks[dependency] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
                checks[dependency] = "unreachable"
                log.info("health: %s unreachable (%s)", dependency, type(exc).__name__)
        return jsonify(status="ok", checks=checks) if checks else jsonify(status="ok")

    @app.get("/readyz")
    def readyz():
        failing = []
        for dependency, check in readiness.items():
            try:
                check()
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                failing.append(dependency)
                log.warning("readiness: %s unreachable (%s)", dependency, type(exc).__name__)
        if failing:
            raise Unavailable("not reachable: " + ", ".join(failing),
                              errors=[{"field": d, "message": "is not reachable"} for d in failing])
        return jsonify(status="ready", checks={d: "ok" for d in readiness})

    @app.get("/openapi.json")
    def openapi():
        return jsonify(spec)

    for bp in blueprints:
        app.register_blueprint(bp)
    return app


def runtime():
    """The current service's Runtime (shared.service) from inside a request."""
    return current_app.extensions["recept"]


def authenticate() -> Principal:
    """The verified caller of the current request (cached on ``flask.g``)."""
    principal = g.get("principal")
    if principal is not None:
        return principal
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send an access token as 'Authorization: Bearer <token>'", headers=CHALLENGE)
    principal = runtime().tokens.verify(token.strip())
    g.principal = principal
    return principal
