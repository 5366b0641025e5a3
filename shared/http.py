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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import wraps
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask.globals import request_ctx
from flask.json.provider import DefaultJSONProvider
from flask.sansio.app import App
from flask.typing import ResponseReturnValue
from jsonschema import FormatChecker
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter, Map, ValidationError

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

if TYPE_CHECKING:
    from .service import Runtime

log = logging.getLogger("recept.http")

#: What ``ApiBlueprint.operation`` decorates: a Flask view, given the path values (and ``body=``, ``query=``).
View = Callable[..., ResponseReturnValue]

PROBLEM = "application/problem+json"
TYPE_BASE = "https://recept.example/problems/"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    type_suffix: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
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
    "dependentRequired": "is required with {validator_value}",
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
    problems: list[dict[str, str]] = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        # An error from iter_errors always names its keyword; ``str`` only narrows the type.
        rule = str(error.validator)
        value: Any = error.validator_value
        if rule == "pattern" and value in TEXT_PATTERNS:
            continue  # the text rule's own checks (inputs.check_document, x-multiline) say it better
        path = [str(p) for p in error.absolute_path]
        if rule == "required":
            missing = error.message.split("'")[1] if "'" in error.message else ""
            path.append(missing)
        elif rule == "dependentRequired":
            # "'birth_date' is a dependency of 'name'": the missing field is named, with the one that needs it.
            quoted = error.message.split("'")
            missing, present = (quoted[1], quoted[3]) if len(quoted) >= 5 else ("", "")
            path.append(missing)
            value = present
        elif rule == "additionalProperties":
            schema_there = error.schema if isinstance(error.schema, Mapping) else {}
            extras = sorted(
                set(instance_at(instance, error.absolute_path) or {})
                - set((schema_there.get("properties") or {}).keys())
            )
            path.append(extras[0] if extras else "")
        template = _MESSAGES.get(rule, "is not valid")
        if rule == "enum":
            value = ", ".join(map(str, value))
        elif rule == "type" and isinstance(value, list):
            value = " or ".join(map(str, value))
        message = template.format(validator_value=value)
        problems.append(
            {"field": ".".join(p for p in [prefix, *path] if p) or "body", "message": message, "rule": rule}
        )
    # A line break also breaks most patterns: the single-line message says it, once.
    single = {p["field"] for p in problems if p["rule"] == "x-multiline"}
    return [
        {"field": p["field"], "message": p["message"]}
        for p in problems
        if not (p["rule"] == "pattern" and p["field"] in single)
    ]


def instance_at(instance: Any, path: Iterable[str | int]) -> Any:
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
    body: dict[str, Any] | None = None
    query: dict[str, Any] | None = None
    responses: dict[int | str, Any] = field(default_factory=dict)
    roles: tuple[str, ...] | None = None
    public: bool = False
    tags: tuple[str, ...] = ()
    content_type: str = "application/json"
    upload: dict[str, Any] | None = None


_SUCCESS_WITHOUT_BODY = {204, 304}


def _is_response_object(spec: Any) -> bool:
    """An OpenAPI response object (``{"description", "content"?}``) rather than a bare JSON schema."""
    return isinstance(spec, dict) and "description" in spec and "type" not in spec and "$ref" not in spec


def _check_responses(method: str, path: str, responses: Mapping[int | str, Any], content_type: str) -> None:
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

    def __init__(self, name: str, import_name: str, **kwargs: Any) -> None:
        super().__init__(name, import_name, **kwargs)
        self.operations: list[Operation] = []
        self._views: list[tuple[Operation, View, str]] = []
        self._routed = False

    def operation(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        responses: Mapping[int | str, Any],
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
        roles: Iterable[str] | None = None,
        public: bool = False,
        tags: Iterable[str] = (),
        content_type: str = "application/json",
        upload: dict[str, Any] | None = None,
    ) -> Callable[[View], View]:
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

        def decorator(view: View) -> View:
            @wraps(view)
            def wrapper(**kwargs: Any) -> ResponseReturnValue:
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

    def register(self, app: App, options: dict[str, Any]) -> None:
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


Schemas = tuple[dict[str, Any] | None, dict[str, Any] | None]


def _schemas(op: Operation) -> Schemas:
    """The query and body schema of ``op`` in this app: its settings put in (inputs.FromSetting)."""
    if not (has_settings(op.query) or has_settings(op.body)):
        return op.query, op.body
    cache: dict[int, Schemas] = current_app.extensions.setdefault("recept.schemas", {})
    if id(op) not in cache:
        settings = current_app.extensions.get("recept.settings")
        cache[id(op)] = (resolve(op.query, settings), resolve(op.body, settings))
    return cache[id(op)]


def _rule(path: str, siblings: list[str]) -> str:
    """The werkzeug rule of ``path``; a variable refuses the static words siblings have in its place."""
    parts = path.strip("/").split("/")
    out: list[str] = []
    for i, part in enumerate(parts):
        variable = re.fullmatch(r"\{(\w+)\}", part)
        if not variable:
            out.append(part)
            continue
        words: set[str] = set()
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

    def __init__(self, url_map: Map, *excluded: str) -> None:
        super().__init__(url_map)
        self.excluded = frozenset(excluded)

    def to_python(self, value: str) -> str:
        if value in self.excluded:
            raise ValidationError()
        return value


def json_body(schema: dict[str, Any] | None = None, *, hardened: bool = False) -> Any:
    """The request's JSON body under the shared input rules (shared/inputs.py), validated."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send the request body as application/json")
    data = parse_json(request.get_data(cache=True) or b"null")
    if schema is not None:
        validate(schema if hardened else harden(schema), data)
    return data


def build_openapi(
    title: str, version: str, blueprints: Iterable[Blueprint], description: str = "", settings: Any = None
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``blueprints``; ``settings`` fill in ``inputs.FromSetting`` values."""
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    problem_content = {PROBLEM: {"schema": problem_ref}}

    def json_reply(description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    checks = {"type": "object", "additionalProperties": {"enum": ["ok", "unreachable"]}}
    # The probes and this document need no token (security: []): kubelets and tools have none.
    paths: dict[str, dict[str, Any]] = {
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
        if adapter is None:  # no URL matching has run (never so for a dispatched OPTIONS): Flask's own answer
            return super().make_default_options_response()
        methods: set[str] = set()
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
    blueprints: Iterable[Blueprint],
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
    if isinstance(app.json, DefaultJSONProvider):  # the provider Flask sets up; answers keep their field order
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
        # The headers as a plain mapping (tracing needs no werkzeug); a repeated one keeps its last value.
        headers = dict(request.headers.items())
        g.recept_span = tracing.start_server_span(name, request.method, route, headers)

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
    def _domain_error(exc: DomainError) -> Response:
        return problem(
            exc.status, exc.title, exc.detail, type_suffix=exc.type_suffix, errors=exc.errors, headers=exc.headers
        )

    @app.errorhandler(DecryptionError)
    def _damaged(exc: DecryptionError) -> Response:
        # The vault's typed failure (tampered, moved or unreadable ciphertext): a damaged record.
        log.error("damaged stored value", exc_info=exc)
        return _domain_error(
            DamagedRecord(
                "a stored value of this record cannot be decrypted; it is damaged and "
                "must be restored or corrected by an operator"
            )
        )

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        detail = {
            404: "no such resource",
            405: f"method {request.method} is not allowed here",
            413: f"the request body is larger than {request.max_content_length or app.config['MAX_CONTENT_LENGTH']} bytes",
        }.get(exc.code or 500, exc.description or exc.name)
        # MethodNotAllowed carries the methods the route has; other HTTP errors have none.
        allowed: Iterable[str] | None = getattr(exc, "valid_methods", None)
        headers = {"Allow": ", ".join(allowed)} if allowed else None
        return problem(exc.code or 500, exc.name, detail, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return problem(
            500,
            "Internal server error",
            "the service failed to handle this request; quote the request id when reporting it",
        )

    @app.get("/healthz")
    def healthz() -> Response:
        checks: dict[str, str] = {}
        for dependency, check in (health or {}).items():
            try:
                check()
                checks[dependency] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
                checks[dependency] = "unreachable"
                log.info("health: %s unreachable (%s)", dependency, type(exc).__name__)
        return jsonify(status="ok", checks=checks) if checks else jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> Response:
        failing: list[str] = []
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
    def openapi() -> Response:
        return jsonify(spec)

    probes: list[metrics.ServiceProbes] = []

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
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


def runtime() -> Runtime:
    """The current service's Runtime (shared.service) from inside a request."""
    rt: Runtime = current_app.extensions["recept"]
    return rt


def authenticate() -> Principal:
    """The verified caller of the current request (cached on ``flask.g``)."""
    cached: Principal | None = g.get("principal")
    if cached is not None:
        return cached
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send an access token as 'Authorization: Bearer <token>'", headers=CHALLENGE)
    principal = runtime().tokens.verify(token.strip())
    g.principal = principal
    return principal
