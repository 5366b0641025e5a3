"""HTTP API of the auth service: login, tokens and public keys (API.md), and the management of
tenants, their directories, users and roles.  Thin: parse, call the domain, shape the answer."""

from __future__ import annotations

import re

from flask import Response, current_app, jsonify, request

from shared.errors import NotFound
from shared.http import ApiBlueprint, authenticate
from shared.inputs import EMAIL, FromSetting, multiline, nullable
from shared.tokens import VENDOR_ROLES

from .domain import ROLE_DESCRIPTIONS, Auth
from .login import Logins

bp = ApiBlueprint("auth", __name__)

_SLUG = {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]{1,62}$"}
_TEXT = {"type": "string", "minLength": 1, "maxLength": 200}
_ROLE = {"type": "string", "maxLength": 40}
_PASSWORD = {"type": "string", "minLength": 1, "maxLength": 1024}
# A password being set: the policy's bounds in the schema, so the document says what is refused
# (the configured PASSWORD_MIN_LENGTH, the same value the hasher applies).
_NEW_PASSWORD = {"type": "string", "minLength": FromSetting("PASSWORD_MIN_LENGTH"), "maxLength": 1024}
_DN = {"type": "string", "minLength": 1, "maxLength": 500}
_ATTRIBUTE = {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9-]{0,99}$"}
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _closed(properties: dict, required: list[str] | None = None, **extra) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": required or [],
        "additionalProperties": False,
        **extra,
    }


TOKENS = _closed(
    {
        "access_token": {"type": "string"},
        "token_type": {"const": "Bearer"},
        "expires_in": {"type": "integer"},
        "refresh_token": {"type": "string"},
    },
    ["access_token", "token_type", "expires_in", "refresh_token"],
)
LOGIN = _closed(
    {
        "tenant": {"type": "string", "minLength": 1, "maxLength": 63},
        "username": {"type": "string", "minLength": 1, "maxLength": 256},
        "password": _PASSWORD,
    },
    ["tenant", "username", "password"],
)
REFRESH = _closed({"refresh_token": {"type": "string", "minLength": 1, "maxLength": 200}}, ["refresh_token"])
LOGOUT = _closed(
    {"refresh_token": {"type": "string", "minLength": 1, "maxLength": 200}, "everywhere": {"type": "boolean"}},
    minProperties=1,
)
OWN_PASSWORD = _closed(
    {"current_password": _PASSWORD, "new_password": _NEW_PASSWORD}, ["current_password", "new_password"]
)
AGREEMENT = _closed(
    {
        "version": {"type": "string", "minLength": 1, "maxLength": 50},
        "signed_on": {"type": "string", "format": "date"},
        "signatory": _TEXT,
    },
    ["version", "signed_on", "signatory"],
)
NEW_TENANT = _closed({"slug": _SLUG, "name": _TEXT, "agreement": AGREEMENT}, ["slug", "name"])
TENANT_CHANGE = _closed({"name": _TEXT}, ["name"])
DIRECTORY = _closed(
    {
        "urls": {
            "type": "array",
            "items": {"type": "string", "minLength": 8, "maxLength": 300},
            "minItems": 1,
            "maxItems": 5,
        },
        "tls": {"enum": ["ldaps", "starttls", "none"]},
        "ca_certificates": multiline({"type": "string", "maxLength": 100_000}),  # PEM: lines
        "bind_dn": _DN,
        "bind_password": {"type": "string", "minLength": 1, "maxLength": 1024},
        "user_search_base": _DN,
        "user_filter": {"type": "string", "minLength": 3, "maxLength": 1000},
        "username_attribute": _ATTRIBUTE,
        "group_search_base": _DN,
        "group_filter": {"type": "string", "minLength": 3, "maxLength": 1000},
        "group_name_attribute": _ATTRIBUTE,
        "member_of_attribute": _ATTRIBUTE,
        "display_name_attribute": _ATTRIBUTE,
        "mail_attribute": _ATTRIBUTE,
        "group_roles": {
            "type": "object",
            "maxProperties": 100,
            "propertyNames": {"type": "string", "minLength": 1, "maxLength": 500},  # group names: one line
            "additionalProperties": {"type": "array", "items": _ROLE, "maxItems": 10},
        },
        "timeout": {"type": "number", "minimum": 0.5, "maximum": 30},
    },
    ["urls", "tls", "bind_dn", "user_search_base", "user_filter"],
    # Every URL's scheme follows tls; a group filter needs the base it searches.
    allOf=[
        {
            "if": {"properties": {"tls": {"const": "ldaps"}}},
            "then": {"properties": {"urls": {"items": {"pattern": "^[Ll][Dd][Aa][Pp][Ss]://"}}}},
            "else": {"properties": {"urls": {"items": {"pattern": "^[Ll][Dd][Aa][Pp]://"}}}},
        }
    ],
    dependentRequired={"group_filter": ["group_search_base"]},
)
NEW_USER = _closed(
    {
        "username": {"type": "string", "minLength": 1, "maxLength": 256},
        "display_name": {"type": "string", "maxLength": 200},
        "email": EMAIL,
        "roles": {"type": "array", "items": _ROLE, "maxItems": 10, "uniqueItems": True},
        "password": _NEW_PASSWORD,
        "source": {"enum": ["local", "directory"]},
    },
    ["username"],
    # A directory user signs in with the directory's password, never a local one.
    allOf=[
        {
            "if": {"properties": {"source": {"const": "directory"}}, "required": ["source"]},
            "then": {"not": {"required": ["password"]}},
        }
    ],
)
USER_CHANGE = _closed(
    {
        "display_name": {"type": ["string", "null"], "maxLength": 200},
        "email": nullable(EMAIL),
        "status": {"enum": ["active", "disabled"]},
    },
    minProperties=1,
)
USER_SEARCH = _closed(
    {"username": {"type": "string", "minLength": 1, "maxLength": 256}, "email": EMAIL}, minProperties=1
)
PASSWORD = _closed({"password": _NEW_PASSWORD}, ["password"])
GRANT = _closed({"role": _ROLE}, ["role"])
# --- answers (every operation documents its success, issue 18) ---------------------------------------

_STAMP = {"type": ["string", "null"]}
TENANT_OUT = {
    "type": "object",
    "required": ["id", "slug", "name", "kind", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string"},
        "slug": {"type": "string"},
        "name": {"type": "string"},
        "kind": {"type": "string"},
        "created_at": _STAMP,
        "updated_at": _STAMP,
        "agreement": {"type": ["object", "null"]},
        "directory": {"type": "boolean"},
    },
}
TENANTS_OUT = {"type": "array", "items": TENANT_OUT}
USER_OUT = {
    "type": "object",
    "required": ["id", "tenant", "username", "roles", "groups", "source", "status"],
    "properties": {
        "id": {"type": "string"},
        "tenant": {"type": "string"},
        "username": {"type": "string"},
        "display_name": {"type": ["string", "null"]},
        "email": {"type": ["string", "null"]},
        "roles": {"type": "array", "items": {"type": "string"}},
        "groups": {"type": "array", "items": {"type": "string"}},
        "source": {"enum": ["local", "directory"]},
        "status": {"type": "string"},
        "created_at": _STAMP,
        "updated_at": _STAMP,
        "last_login_at": _STAMP,
        "failed_logins": {"type": "integer"},
        "last_failed_login_at": _STAMP,
        "locked_until": _STAMP,
        "has_password": {"type": "boolean"},
    },
}
USERS_OUT = {"type": "array", "items": USER_OUT}
USER_PAGE = {
    "type": "object",
    "required": ["items", "total", "limit", "offset"],
    "properties": {
        "items": USERS_OUT,
        "total": {"type": "integer"},
        "limit": {"type": "integer"},
        "offset": {"type": "integer"},
    },
}
DIRECTORY_OUT = {
    "type": "object",
    "required": ["urls", "tls", "bind_dn", "bind_password_set", "user_search_base", "user_filter"],
    "properties": {
        "urls": {"type": "array", "items": {"type": "string"}},
        "tls": {"type": "string"},
        "bind_password_set": {"const": True},
        "group_roles": {"type": "object"},
    },
}
JWKS_OUT = {
    "type": "object",
    "required": ["keys"],
    "properties": {"keys": {"type": "array", "items": {"type": "object", "required": ["kty", "kid"]}}},
}
REVOCATIONS_OUT = {
    "type": "object",
    "required": ["jti"],
    "additionalProperties": False,
    "properties": {"jti": {"type": "array", "items": {"type": "string"}}},
}
ROLES_OUT = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["role", "scope", "description"],
        "properties": {
            "role": {"type": "string"},
            "scope": {"enum": ["vendor", "tenant"]},
            "description": {"type": "string"},
        },
    },
}
STATUS_OUT = {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}

PAGE = _closed(
    {
        "limit": {"type": "string", "pattern": r"^([1-9]\d?|[1-4]\d\d|500)$"},
        "offset": {"type": "string", "pattern": r"^\d{1,7}$"},
    }
)


def _auth() -> Auth:
    return current_app.extensions["auth"]


def _logins() -> Logins:
    return current_app.extensions["auth.logins"]


def _user_id(value: str) -> str:
    # An id that cannot exist is the same 404 as one that does not.
    if not _UUID.match(value):
        raise NotFound("no such user")
    return value


def _no_content() -> Response:
    return Response(status=204)


# --- login, tokens, keys (API.md) -------------------------------------------------------------------


@bp.operation(
    "POST",
    "/api/v1/auth/login",
    summary="Log in with tenant, username and password",
    body=LOGIN,
    public=True,
    tags=("login",),
    responses={200: TOKENS, 401: None, 503: None},
)
def login(body):
    logins = _logins()
    client = logins.client_address(
        request.remote_addr,
        request.headers.get("X-Recept-Client-Address"),
        request.headers.get("X-Recept-Forwarding-Token"),
    )
    return jsonify(logins.login(body["tenant"], body["username"], body["password"], client))


@bp.operation(
    "POST",
    "/api/v1/auth/refresh",
    summary="Swap a refresh token for new tokens (rotation)",
    body=REFRESH,
    public=True,
    tags=("login",),
    responses={200: TOKENS, 401: None, 503: None},
)
def refresh(body):
    return jsonify(_logins().refresh(body["refresh_token"]))


@bp.operation(
    "POST",
    "/api/v1/auth/logout",
    summary="End this session (refresh_token) or every session",
    body=LOGOUT,
    tags=("login",),
    responses={204: {"description": "ended"}},
)
def logout(body):
    _logins().logout(authenticate(), body.get("refresh_token"), everywhere=bool(body.get("everywhere")))
    return _no_content()


@bp.operation(
    "GET",
    "/.well-known/jwks.json",
    summary="The public keys that verify access tokens",
    public=True,
    tags=("login",),
    responses={200: JWKS_OUT},
)
def jwks():
    response = jsonify(_auth().signing_keys.jwks())
    response.headers["Cache-Control"] = "public, max-age=60"
    return response


@bp.operation(
    "GET",
    "/.well-known/revocations.json",
    public=True,
    tags=("login",),
    responses={200: REVOCATIONS_OUT},
    summary="The jti of access tokens revoked before they expire (every verifier re-reads it)",
)
def revocations():
    response = jsonify(_auth().revocation_list())
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.operation("GET", "/api/v1/auth/me", summary="The caller's own account", tags=("login",), responses={200: USER_OUT})
def me():
    principal = authenticate()
    auth = _auth()
    with auth.db.transaction() as s:
        tenant = auth.tenant_row(s, principal.tenant or "")
        return jsonify(auth.user_view(s, auth.user_row(s, tenant.id, principal.user_id), tenant.slug))


@bp.operation(
    "POST",
    "/api/v1/auth/password",
    summary="Change one's own local password",
    body=OWN_PASSWORD,
    tags=("login",),
    responses={204: {"description": "changed"}},
)
def change_own_password(body):
    _logins().change_own_password(authenticate(), body["current_password"], body["new_password"])
    return _no_content()


@bp.operation(
    "GET", "/api/v1/roles", summary="The roles and what they allow", tags=("roles",), responses={200: ROLES_OUT}
)
def roles():
    return jsonify(
        [
            {"role": r, "scope": "vendor" if r in VENDOR_ROLES else "tenant", "description": d}
            for r, d in ROLE_DESCRIPTIONS.items()
        ]
    )


# --- tenants ------------------------------------------------------------------------------------------


@bp.operation(
    "GET",
    "/api/v1/tenants",
    summary="List tenants",
    roles=VENDOR_ROLES,
    tags=("tenants",),
    responses={200: TENANTS_OUT},
)
def list_tenants():
    auth = _auth()
    with auth.db.transaction() as s:
        return jsonify(auth.list_tenants(s, authenticate()))


@bp.operation(
    "POST",
    "/api/v1/tenants",
    summary="Create a tenant (with its data processing agreement)",
    body=NEW_TENANT,
    roles=("vendor_admin",),
    tags=("tenants",),
    responses={201: TENANT_OUT, 409: None},
)
def create_tenant(body):
    auth = _auth()
    with auth.db.transaction() as s:
        view = auth.create_tenant(s, authenticate(), body["slug"], body["name"], body.get("agreement"))
    return jsonify(view), 201


@bp.operation(
    "GET",
    "/api/v1/tenants/{slug}",
    summary="A tenant with its agreement",
    tags=("tenants",),
    responses={200: TENANT_OUT},
)
def get_tenant(slug):
    auth = _auth()
    with auth.db.transaction() as s:
        return jsonify(auth.get_tenant(s, authenticate(), slug))


@bp.operation(
    "PATCH",
    "/api/v1/tenants/{slug}",
    summary="Rename a tenant",
    body=TENANT_CHANGE,
    roles=("vendor_admin",),
    tags=("tenants",),
    responses={200: TENANT_OUT},
)
def update_tenant(slug, body):
    auth = _auth()
    with auth.db.transaction() as s:
        return jsonify(auth.update_tenant(s, authenticate(), slug, body["name"]))


@bp.operation(
    "PUT",
    "/api/v1/tenants/{slug}/agreement",
    summary="Record the data processing agreement (R5)",
    body=AGREEMENT,
    roles=("vendor_admin",),
    tags=("tenants",),
    responses={200: TENANT_OUT},
)
def set_agreement(slug, body):
    auth = _auth()
    with auth.db.transaction() as s:
        return jsonify(auth.set_agreement(s, authenticate(), slug, **body))


# --- directory ----------------------------------------------------------------------------------------


@bp.operation(
    "GET",
    "/api/v1/tenants/{slug}/directory",
    summary="The tenant's directory settings (no secret)",
    tags=("directory",),
    responses={200: DIRECTORY_OUT},
)
def get_directory(slug):
    auth = _auth()
    with auth.db.transaction() as s:
        return jsonify(auth.get_directory(s, authenticate(), slug))


@bp.operation(
    "PUT",
    "/api/v1/tenants/{slug}/directory",
    summary="Configure the tenant's LDAP / AD login (R10)",
    body=DIRECTORY,
    tags=("directory",),
    responses={200: DIRECTORY_OUT},
)
def set_directory(slug, body):
    auth = _auth()
    with auth.db.transaction() as s:
        return jsonify(auth.set_directory(s, authenticate(), slug, body))


@bp.operation(
    "DELETE",
    "/api/v1/tenants/{slug}/directory",
    summary="Remove the tenant's directory login",
    tags=("directory",),
    responses={204: {"description": "removed"}},
)
def remove_directory(slug):
    auth = _auth()
    with auth.db.transaction() as s:
        auth.remove_directory(s, authenticate(), slug)
    return _no_content()


@bp.operation(
    "POST",
    "/api/v1/tenants/{slug}/directory/test",
    summary="Check that the service account can bind on the directory",
    tags=("directory",),
    responses={200: STATUS_OUT, 503: None},
)
def test_directory(slug):
    _logins().check_directory(authenticate(), slug)
    return jsonify(status="ok")


# --- users and roles ----------------------------------------------------------------------------------


@bp.operation(
    "GET",
    "/api/v1/tenants/{slug}/users",
    summary="List the tenant's users",
    query=PAGE,
    tags=("users",),
    responses={200: USER_PAGE},
)
def list_users(slug, query):
    auth = _auth()
    with auth.db.transaction() as s:
        return jsonify(
            auth.list_users(
                s, authenticate(), slug, limit=int(query.get("limit", 100)), offset=int(query.get("offset", 0))
            )
        )


@bp.operation(
    "POST",
    "/api/v1/tenants/{slug}/users",
    summary="Create a user",
    body=NEW_USER,
    tags=("users",),
    responses={201: USER_OUT, 409: None},
)
def create_user(slug, body):
    auth = _auth()
    with auth.db.transaction() as s:
        view = auth.create_user(
            s,
            authenticate(),
            slug,
            username=body["username"],
            display_name=body.get("display_name"),
            email=body.get("email"),
            roles=body.get("roles", []),
            password=body.get("password"),
            source=body.get("source", "local"),
        )
    return jsonify(view), 201


@bp.operation(
    "POST",
    "/api/v1/tenants/{slug}/users/search",
    summary="Find users by username or e-mail",
    body=USER_SEARCH,
    tags=("users",),
    responses={200: USERS_OUT},
)
def search_users(slug, body):
    auth = _auth()
    with auth.db.transaction() as s:
        return jsonify(
            auth.search_users(s, authenticate(), slug, username=body.get("username"), email=body.get("email"))
        )


@bp.operation(
    "GET", "/api/v1/tenants/{slug}/users/{user_id}", summary="A user", tags=("users",), responses={200: USER_OUT}
)
def get_user(slug, user_id):
    auth = _auth()
    with auth.db.transaction() as s:
        return jsonify(auth.get_user(s, authenticate(), slug, _user_id(user_id)))


@bp.operation(
    "PATCH",
    "/api/v1/tenants/{slug}/users/{user_id}",
    summary="Change, disable or enable a user",
    body=USER_CHANGE,
    tags=("users",),
    responses={200: USER_OUT},
)
def update_user(slug, user_id, body):
    auth = _auth()
    with auth.db.transaction() as s:
        return jsonify(auth.update_user(s, authenticate(), slug, _user_id(user_id), body))


@bp.operation(
    "DELETE",
    "/api/v1/tenants/{slug}/users/{user_id}",
    summary="Delete a user (crypto-shredded)",
    tags=("users",),
    responses={204: {"description": "deleted"}},
)
def delete_user(slug, user_id):
    auth = _auth()
    with auth.db.transaction() as s:
        auth.delete_user(s, authenticate(), slug, _user_id(user_id))
    return _no_content()


@bp.operation(
    "PUT",
    "/api/v1/tenants/{slug}/users/{user_id}/password",
    summary="Set a local user's password",
    body=PASSWORD,
    tags=("users",),
    responses={204: {"description": "set"}},
)
def set_password(slug, user_id, body):
    auth = _auth()
    with auth.db.transaction() as s:
        auth.set_password(s, authenticate(), slug, _user_id(user_id), body["password"])
    return _no_content()


@bp.operation(
    "POST",
    "/api/v1/tenants/{slug}/users/{user_id}/unlock",
    summary="Clear failed logins and the lock",
    tags=("users",),
    responses={200: USER_OUT},
)
def unlock_user(slug, user_id):
    auth = _auth()
    with auth.db.transaction() as s:
        return jsonify(auth.unlock(s, authenticate(), slug, _user_id(user_id)))


@bp.operation(
    "POST",
    "/api/v1/tenants/{slug}/users/{user_id}/roles",
    summary="Grant a role",
    body=GRANT,
    tags=("roles",),
    responses={200: USER_OUT},
)
def grant_role(slug, user_id, body):
    auth = _auth()
    with auth.db.transaction() as s:
        return jsonify(auth.grant_role(s, authenticate(), slug, _user_id(user_id), body["role"]))


@bp.operation(
    "DELETE",
    "/api/v1/tenants/{slug}/users/{user_id}/roles/{role}",
    summary="Revoke a role",
    tags=("roles",),
    responses={200: USER_OUT},
)
def revoke_role(slug, user_id, role):
    auth = _auth()
    with auth.db.transaction() as s:
        return jsonify(auth.revoke_role(s, authenticate(), slug, _user_id(user_id), role))
