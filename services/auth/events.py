"""The events the auth service publishes: ids, role names, field names and reasons, never a name,
e-mail address, username or password."""

from shared.events import REGISTRY, obj

_ID = {"type": "string", "minLength": 1, "maxLength": 36}
_NULLABLE_ID = {"type": ["string", "null"], "maxLength": 36}
_FIELDS = {"type": "array", "items": {"type": "string", "maxLength": 40}, "maxItems": 20}
_ROLE = {"type": "string", "maxLength": 40}
_ROLES = {"type": "array", "items": _ROLE, "maxItems": 20}
_TIME = {"type": "string", "maxLength": 40}

TENANT_CREATED = REGISTRY.register(
    "auth.tenant.created",
    1,
    obj({"tenant_id": _ID, "kind": {"enum": ["vendor", "customer"]}}),
    "A tenant (the vendor's customer, or the vendor itself) was created.",
)
TENANT_UPDATED = REGISTRY.register(
    "auth.tenant.updated",
    1,
    obj({"tenant_id": _ID, "fields": _FIELDS}),
    "A tenant's own fields changed (names the fields).",
)
AGREEMENT_CHANGED = REGISTRY.register(
    "auth.agreement.changed",
    1,
    obj({"tenant_id": _ID, "version": {"type": ["string", "null"], "maxLength": 50}, "fields": _FIELDS}),
    "The tenant's data processing agreement (R5) was recorded or changed.",
)
TENANT_ANNOUNCED = REGISTRY.register(
    "auth.tenant.announced",
    1,
    obj(
        {
            "tenant_id": _ID,
            "kind": {"enum": ["vendor", "customer"]},
            "agreement": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "required": ["version", "signed_on"],
                "properties": {
                    "version": {"type": "string", "maxLength": 50},
                    "signed_on": {"type": ["string", "null"], "maxLength": 10},
                },
            },
        }
    ),
    "A tenant as it is now (slug in the envelope, kind, agreement version and date; never the signatory): "
    "sent when it is created or its agreement changes, and again every TENANT_ANNOUNCE_INTERVAL so that a "
    "service started later learns every tenant (the gdpr service keeps a replica, issue 15).",
)
DIRECTORY_CONFIGURED = REGISTRY.register(
    "auth.directory.configured",
    1,
    obj({"tenant_id": _ID, "fields": _FIELDS}),
    "The tenant's directory (LDAP / AD) settings were set or changed.",
)
DIRECTORY_REMOVED = REGISTRY.register(
    "auth.directory.removed", 1, obj({"tenant_id": _ID}), "The tenant's directory settings were removed."
)

USER_CREATED = REGISTRY.register(
    "auth.user.created",
    1,
    obj({"user_id": _ID, "tenant_id": _ID, "source": {"enum": ["local", "directory"]}}),
    "A user account was created (by an administrator, the CLI, or just in time at a directory login).",
)
USER_UPDATED = REGISTRY.register(
    "auth.user.updated",
    1,
    obj({"user_id": _ID, "fields": _FIELDS}),
    "A user's fields changed (names the fields, never the values).",
)
USER_DISABLED = REGISTRY.register(
    "auth.user.disabled",
    1,
    obj({"user_id": _ID, "reason": {"enum": ["admin", "erasure"]}}),
    "A user account was disabled; it can no longer log in or refresh.",
)
USER_ENABLED = REGISTRY.register("auth.user.enabled", 1, obj({"user_id": _ID}), "A disabled user account was enabled.")
USER_DELETED = REGISTRY.register(
    "auth.user.deleted",
    1,
    obj({"user_id": _ID, "reason": {"enum": ["admin", "erasure"]}}),
    "A user account was deleted (its personal fields crypto-shredded).",
)
PASSWORD_CHANGED = REGISTRY.register(
    "auth.password.changed",
    1,
    obj({"user_id": _ID, "by": {"enum": ["self", "admin"]}}),
    "A local user's password was set or changed.",
)
ROLE_GRANTED = REGISTRY.register(
    "auth.role.granted",
    1,
    obj({"user_id": _ID, "role": _ROLE, "source": {"enum": ["manual", "directory"]}}),
    "A role was granted (by an administrator, or mapped from directory groups).",
)
ROLE_REVOKED = REGISTRY.register(
    "auth.role.revoked",
    1,
    obj({"user_id": _ID, "role": _ROLE, "source": {"enum": ["manual", "directory"]}}),
    "A role was revoked (by an administrator, or no longer mapped from the directory).",
)

LOGIN_SUCCEEDED = REGISTRY.register(
    "auth.login.succeeded",
    1,
    obj(
        {
            "user_id": _ID,
            "tenant_id": _ID,
            "method": {"enum": ["local", "directory"]},
            "session_id": _ID,
            "roles": _ROLES,
        }
    ),
    "A user logged in; session_id is the refresh-token family.",
)
LOGIN_FAILED = REGISTRY.register(
    "auth.login.failed",
    1,
    obj(
        {
            "user_id": _NULLABLE_ID,
            "tenant_id": _NULLABLE_ID,
            "reason": {
                "enum": [
                    "unknown_tenant",
                    "unknown_user",
                    "wrong_password",
                    "locked",
                    "disabled",
                    "client_blocked",
                    "directory_unavailable",
                ]
            },
        }
    ),
    "A login failed. The caller saw one generic answer; the reason is for the audit trail only.",
)
ACCOUNT_LOCKED = REGISTRY.register(
    "auth.account.locked",
    1,
    obj({"user_id": _ID, "failures": {"type": "integer"}, "locked_until": _TIME}),
    "Too many failed logins locked an account until locked_until.",
)
ACCOUNT_UNLOCKED = REGISTRY.register(
    "auth.account.unlocked", 1, obj({"user_id": _ID}), "An administrator cleared an account's failed-login state."
)
SESSION_REVOKED_V1 = REGISTRY.register(
    "auth.session.revoked",
    1,
    obj(
        {
            "user_id": _ID,
            "session_id": _ID,
            "reason": {"enum": ["logout", "reuse_detected", "user_disabled", "directory_rejected"]},
        }
    ),
    "A login session's refresh tokens were revoked (logout, refresh-token reuse, disabled account).",
)
# Version 2 adds the reason password_changed; version 1 stays registered for events already published.
SESSION_REVOKED = REGISTRY.register(
    "auth.session.revoked",
    2,
    obj(
        {
            "user_id": _ID,
            "session_id": _ID,
            "reason": {"enum": ["logout", "reuse_detected", "user_disabled", "directory_rejected", "password_changed"]},
        }
    ),
    "A login session's refresh tokens and its access tokens still in date were revoked (logout, "
    "refresh-token reuse, disabled account, password changed or reset).",
)
