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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask.globals import request_ctx
from jsonschema import FormatChecker
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter, ValidationError

from . import metrics, tracing
from .crypto import DecryptionError
from .errors import (
    AccessDenied,
    DamagedRecord,
    DomainError,
    Invalid,
    NotFound,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from .inputs import (
    TEXT_PATTERNS,
    Validator,
    acceptable_path_value,
    harden,
    has_settings,
    parse_json,
    query_parameters,
    resolve,
)
from .logs import request_id
from .tokens import CHALLENGE, Principal

log = logging.getLogger("recept.http")

PROBLEM = "application/problem+json"
TYPE_BASE = "https://recept.example/problems/"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    type_suffix: str | None = None,
    errors: list[dict] | None = None,
    headers: dict | None = None,
) -> Response:
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
    "x-multiline": "must be a single line (no line breaks or tabs)",
    "maxProperties": "takes at most {validator_value} fields",
    "not": "is not accepted",
    "exclusiveMinimum": "must be more than {validator_value}",
    "exclusiveMaximum": "must be less than {validator_value}",
}


def schema_errors(schema: dict[str, Any], instance: Any, prefix: str = "") -> list[dict[str, str]]:
    """Field-level problems, described by rule, never echoing the submitted value."""
    # inputs.Validator: JSON Schema 2020-12 where an ``integer`` is a JSON integer (never 3.0)
    # and ``x-multiline: false`` refuses line breaks.
    validator = Validator(schema, format_checker=FormatChecker())
    problems = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        if error.validator == "pattern" and error.validator_value in TEXT_PATTERNS:
            continue  # the text rule's own checks (inputs.check_document, x-multiline) say it better
        path = [str(p) for p in error.absolute_path]
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else ""
            path.append(missing)
        elif error.validator == "additionalProperties":
            extras = sorted(
                set(instance_at(instance, error.absolute_path) or {})
                - set((error.schema.get("properties") or {}).keys())
            )
            path.append(extras[0] if extras else "")
        template = _MESSAGES.get(error.validator, "is not valid")
        value = error.validator_value
        if error.validator == "enum":
            value = ", ".join(map(str, value))
        elif error.validator == "type" and isinstance(value, list):
            value = " or ".join(map(str, value))
        message = template.format(validator_value=value)
        problems.append(
            {"field": ".".join(p for p in [prefix, *path] if p) or "body", "message": message, "rule": error.validator}
        )
    # A line break also breaks most patterns: the single-line message says it, once.
    single = {p["field"] for p in problems if p["rule"] == "x-multiline"}
    return [
        {"field": p["field"], "message": p["message"]}
        for p in problems
        if not (p["rule"] == "pattern" and p["field"] in single)
    ]


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
    upload: dict | None = None


_SUCCESS_WITHOUT_BODY = {204, 304}


def _is_response_object(spec: Any) -> bool:
    """An OpenAPI response object (``{"description", "content"?}``) rather than a bare JSON schema."""
    return isinstance(spec, dict) and "description" in spec and "type" not in spec and "$ref" not in spec


def _check_responses(method: str, path: str, responses: dict, content_type: str) -> None:
    """Every operation documents its success: a status below 400 with a schema (or 204).

    Raised at import, so an operation without a described answer cannot be declared.
    """
    successes = {int(k): v for k, v in responses.items() if int(k) < 400}
    where = f"{method} {path}"
    if not successes:
        raise TypeError(f"{where}: responses= must declare the success status with its schema")
    for status, spec in successes.items():
        if status in _SUCCESS_WITHOUT_BODY:
            continue
        if spec is None:
            raise TypeError(f"{where}: the {status} response needs a schema")
        if _is_response_object(spec):
            content = spec.get("content") or {}
            if not content or not all(isinstance(m, dict) and "schema" in m for m in content.values()):
                raise TypeError(f"{where}: the {status} response object needs content with a schema")


class ApiBlueprint(Blueprint):
    """A Blueprint whose routes are declared with their schemas and access rules.

    Routes are added to Flask when the blueprint is first registered, once every operation is
    known: a variable segment (``/persons/{person_id}``) then refuses the static words of its
    sibling routes (``/persons/search``), so the static route wins for every method and a
    method it lacks is a 405 with the right ``Allow``, never a lookup of a person "search".
    """

    def __init__(self, name: str, import_name: str, **kwargs) -> None:
        super().__init__(name, import_name, **kwargs)
        self.operations: list[Operation] = []
        self._views: list[tuple[Operation, Callable, str]] = []
        self._routed = False

    def operation(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        responses: dict,
        body: dict | None = None,
        query: dict | None = None,
        roles: Iterable[str] | None = None,
        public: bool = False,
        tags: Iterable[str] = (),
        content_type: str = "application/json",
        upload: dict | None = None,
    ):
        """Declare an endpoint.

        ``responses``: status -> what the answer holds: a JSON schema of the body (in
        ``content_type``), an OpenAPI response object (``{"description", "content"}``: other or
        alternative media types such as ``text/csv``), or None for an error status (a problem).
        A success status with its schema is required (204 needs none);
        ``body``: JSON schema of the request body (passed to the view as ``body=``);
        ``query``: JSON schema (object) of the query parameters, all strings, passed as ``query=``;
        ``roles``: the caller needs one of these roles (None: any signed-in caller);
        ``public``: no token needed (login, public keys);
        ``upload``: a body that is not JSON (a file), as OpenAPI request-body ``content`` (media type
        -> ``{"schema": ...}``); only documented, the view reads and checks it.

        Body and query schemas are hardened (shared/inputs.py: the text rule) and the hardened
        schema is both what validates and what ``/openapi.json`` publishes.  A value given as
        ``inputs.FromSetting(NAME)`` is the app's setting NAME in both.
        """
        _check_responses(method.upper(), path, responses, content_type)
        op = Operation(
            method.upper(),
            path,
            summary,
            harden(body),
            harden(query),
            dict(responses),
            tuple(roles) if roles is not None else None,
            public,
            tuple(tags),
            content_type,
            upload,
        )
        self.operations.append(op)

        def decorator(view: Callable):
            @wraps(view)
            def wrapper(**kwargs):
                # A path value no id can hold (NUL, bidi controls, a lone surrogate) names nothing.
                if not all(acceptable_path_value(v) for v in kwargs.values() if isinstance(v, str)):
                    raise NotFound("no such resource")
                if not op.public:
                    principal = authenticate()
                    if op.roles is not None and not principal.has_any_role(op.roles):
                        raise AccessDenied("your roles do not allow this operation")
                params = query_parameters(request.args)  # the text rule, declared or not
                query_schema, body_schema = _schemas(op)
                if query_schema is not None:
                    problems = schema_errors(query_schema, params)
                    if problems:
                        raise Invalid("the query parameters are invalid", errors=problems)
                    kwargs["query"] = params
                if body_schema is not None:
                    kwargs["body"] = json_body(body_schema, hardened=True)
                return view(**kwargs)

            self._views.append((op, wrapper, view.__name__))
            return wrapper

        return decorator

    def register(self, app, options) -> None:
        if not self._routed:
            self._routed = True
            for op, wrapper, endpoint in self._views:
                self.add_url_rule(
                    _rule(op.path, [o.path for o in self.operations]),
                    endpoint=endpoint,
                    view_func=wrapper,
                    methods=[op.method],
                )
        super().register(app, options)


def _schemas(op: Operation) -> tuple[dict | None, dict | None]:
    """The query and body schema of ``op`` in this app: its settings put in (inputs.FromSetting)."""
    if not (has_settings(op.query) or has_settings(op.body)):
        return op.query, op.body
    cache = current_app.extensions.setdefault("recept.schemas", {})
    if id(op) not in cache:
        settings = current_app.extensions.get("recept.settings")
        cache[id(op)] = (resolve(op.query, settings), resolve(op.body, settings))
    return cache[id(op)]


def _rule(path: str, siblings: list[str]) -> str:
    """The werkzeug rule of ``path``; a variable refuses the static words siblings have in its place."""
    parts = path.strip("/").split("/")
    out = []
    for i, part in enumerate(parts):
        variable = re.fullmatch(r"\{(\w+)\}", part)
        if not variable:
            out.append(part)
            continue
        words = set()
        for other in siblings:
            theirs = other.strip("/").split("/")
            if len(theirs) != len(parts) or re.fullmatch(r"\{\w+\}", theirs[i]):
                continue
            if all(
                a == b or re.fullmatch(r"\{\w+\}", a) or re.fullmatch(r"\{\w+\}", b)
                for j, (a, b) in enumerate(zip(parts, theirs))
                if j != i
            ):
                words.add(theirs[i])
        if words:
            out.append(f"<segment({', '.join(repr(w) for w in sorted(words))}):{variable.group(1)}>")
        else:
            out.append(f"<{variable.group(1)}>")
    return "/" + "/".join(out)


class SegmentConverter(BaseConverter):
    """One path segment, except the given static words (they belong to a sibling route)."""

    def __init__(self, url_map, *excluded: str) -> None:
        super().__init__(url_map)
        self.excluded = frozenset(excluded)

    def to_python(self, value: str) -> str:
        if value in self.excluded:
            raise ValidationError()
        return value


def json_body(schema: dict | None = None, *, hardened: bool = False) -> Any:
    """The request's JSON body under the shared input rules (shared/inputs.py), validated."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send the request body as application/json")
    data = parse_json(request.get_data(cache=True) or b"null")
    if schema is not None:
        validate(schema if hardened else harden(schema), data)
    return data


def build_openapi(
    title: str, version: str, blueprints: Iterable[ApiBlueprint], description: str = "", settings: Any = None
) -> dict:
    """The OpenAPI 3.1 document of ``blueprints``; ``settings`` fill in ``inputs.FromSetting`` values."""
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    problem_content = {PROBLEM: {"schema": problem_ref}}

    def json_reply(description: str, schema: dict) -> dict:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    checks = {"type": "object", "additionalProperties": {"enum": ["ok", "unreachable"]}}
    # The probes and this document need no token (security: []): kubelets and tools have none.
    paths: dict[str, dict] = {
        "/healthz": {
            "get": {
                "summary": "The process runs",
                "security": [],
                "responses": {
                    "200": json_reply(
                        "ok",
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "ok"}, "checks": checks},
                        },
                    ),
                    "default": {"description": "an error", "content": problem_content},
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Can serve its API: database reachable, configuration sound",
                "security": [],
                "responses": {
                    "200": json_reply(
                        "ready",
                        {
                            "type": "object",
                            "required": ["status", "checks"],
                            "properties": {"status": {"const": "ready"}, "checks": checks},
                        },
                    ),
                    "503": {"description": "not ready", "content": problem_content},
                    "default": {"description": "an error", "content": problem_content},
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": json_reply("OpenAPI 3.1", {"type": "object", "required": ["openapi", "paths"]}),
                    "default": {"description": "an error", "content": problem_content},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of this service (docs/operations.md)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "default": {"description": "an error", "content": problem_content},
                },
            }
        },
    }
    for bp in blueprints:
        for op in getattr(bp, "operations", ()):  # plain Blueprints (HTML pages) are not in the API document
            entry: dict[str, Any] = {
                "summary": op.summary,
                "operationId": f"{bp.name}_{op.method.lower()}_" + re.sub(r"[^a-zA-Z0-9]+", "_", op.path).strip("_"),
            }
            if op.tags:
                entry["tags"] = list(op.tags)
            params = [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in re.findall(r"\{(\w+)\}", op.path)
            ]
            query, body = resolve(op.query, settings), resolve(op.body, settings)
            if query:
                required = set(query.get("required", []))
                params += [
                    {"name": n, "in": "query", "required": n in required, "schema": s}
                    for n, s in query.get("properties", {}).items()
                ]
            if params:
                entry["parameters"] = params
            if body is not None:
                entry["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
            elif op.upload is not None:
                entry["requestBody"] = {"required": True, "content": op.upload}
            responses: dict[str, Any] = {}
            for status, spec in op.responses.items():
                code = int(status)
                if _is_response_object(spec):
                    responses[str(status)] = spec
                elif code >= 400:
                    responses[str(status)] = {"description": "failure", "content": problem_content}
                elif spec is None:  # 204: no body
                    responses[str(status)] = {"description": "success"}
                else:
                    responses[str(status)] = {"description": "success", "content": {op.content_type: {"schema": spec}}}
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
            "schemas": {
                "Problem": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                            },
                        },
                    },
                    "required": ["type", "title", "status", "detail"],
                }
            },
        },
    }


# --- the app factory ----------------------------------------------------------------------------------


class ServiceFlask(Flask):
    def make_default_options_response(self) -> Response:
        # werkzeug lists a method when a rule's path pattern matches, before the rule's
        # converters have a say; keep only the methods that would really be dispatched here.
        adapter = request_ctx.url_adapter
        methods = set()
        for method in adapter.allowed_methods():
            try:
                adapter.match(method=method)
                methods.add(method)
            except HTTPException:
                continue
        response = self.response_class()
        response.allow.update(methods | {"OPTIONS"})
        return response


def create_service_app(
    name: str,
    *,
    blueprints: Iterable[ApiBlueprint],
    readiness: dict[str, Callable[[], None]],
    health: dict[str, Callable[[], None]] | None = None,
    max_content_length: int = 1_048_576,
    title: str | None = None,
    version: str = "1.0.0",
    description: str = "",
    extensions: dict[str, Any] | None = None,
    settings: Any = None,
) -> Flask:
    """A Flask app with everything a Recept service shares.

    ``readiness`` maps what the API needs to serve (its database, its configuration) to a check
    that raises when it fails; ``/readyz`` names every failing one.  ``health`` holds the checks
    of what the API can serve without (the broker: writes go through the outbox and wait there);
    ``/healthz`` reports them as detail and stays 200 while the process runs.  ``settings`` (the
    service's configuration) gives the values of ``inputs.FromSetting`` in declared schemas.
    """
    app = ServiceFlask(f"recept.{name}", static_folder=None)  # no implicit /static route shadowing a blueprint's
    app.config["MAX_CONTENT_LENGTH"] = max_content_length
    app.url_map.converters["segment"] = SegmentConverter
    app.json.sort_keys = False
    app.extensions.update(extensions or {})
    app.extensions["recept.settings"] = settings
    blueprints = list(blueprints)
    spec = build_openapi(title or f"Recept {name}", version, blueprints, description, settings)

    @app.before_request
    def _start() -> None:
        supplied = request.headers.get("X-Request-ID", "")
        request_id.set(supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex)
        g.started = time.perf_counter()
        # Continue the caller's W3C trace (traceparent) in this request's span; the route, not the path.
        route = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
        g.recept_span = tracing.start_server_span(name, request.method, route, request.headers)

    @app.teardown_request
    def _end_span(error: BaseException | None) -> None:
        started = g.pop("recept_span", None)
        if started is not None:
            tracing.end_span(started, g.pop("recept_status", None), error)

    @app.after_request
    def _finish(response: Response) -> Response:
        rid = request_id.get()
        if rid:
            response.headers["X-Request-ID"] = rid
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        # The rule (/api/v1/orders/<order_id>), never the path: ids stay out of metric labels.
        route = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
        metrics.HTTP_REQUESTS.labels(name, request.method, route, str(response.status_code)).inc()
        g.recept_status = response.status_code
        metrics.HTTP_DURATION.labels(name, request.method, route).observe(seconds)
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 2),
            },
        )
        return response

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError):
        return problem(
            exc.status, exc.title, exc.detail, type_suffix=exc.type_suffix, errors=exc.errors, headers=exc.headers
        )

    @app.errorhandler(DecryptionError)
    def _damaged(exc: DecryptionError):
        # The vault's typed failure (tampered, moved or unreadable ciphertext): a damaged record.
        log.error("damaged stored value", exc_info=exc)
        return _domain_error(
            DamagedRecord(
                "a stored value of this record cannot be decrypted; it is damaged and "
                "must be restored or corrected by an operator"
            )
        )

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
        return problem(
            500,
            "Internal server error",
            "the service failed to handle this request; quote the request id when reporting it",
        )

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
            raise Unavailable(
                "not reachable: " + ", ".join(failing),
                errors=[{"field": d, "message": "is not reachable"} for d in failing],
            )
        return jsonify(status="ready", checks={d: "ok" for d in readiness})

    @app.get("/openapi.json")
    def openapi():
        return jsonify(spec)

    probes: list = []

    @app.get("/metrics")
    def prometheus_metrics():
        # Counted figures of this service, and its outbox (and a service's own probes) read now.
        rt = app.extensions.get("recept")
        if rt is None:
            return Response(b"", mimetype="text/plain")
        if not probes:
            probes.append(metrics.ServiceProbes(rt, broker=False))
        return Response(metrics.exposition(rt, probes=probes[0]), content_type=metrics.CONTENT_TYPE_LATEST)

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
