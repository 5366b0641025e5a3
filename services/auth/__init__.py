"""The auth service: app factory and service declaration.

Minimal login data (R6), local and directory logins (R10), tokens, tenants with their data
processing agreements (R5), roles; docs/auth.md.
"""
from __future__ import annotations

import weakref
from pathlib import Path

from shared.config import Config
from shared.service import Runtime, ServiceSpec

from .config import SETTINGS
from .models import metadata, tables

NAME = "auth"

_auths: "weakref.WeakKeyDictionary[Runtime, object]" = weakref.WeakKeyDictionary()


def auth_for(runtime: Runtime):
    """The one ``Auth`` (services.auth.domain) of a runtime, shared by its api, worker and CLI."""
    from .domain import Auth

    auth = _auths.get(runtime)
    if auth is None:
        auth = _auths[runtime] = Auth(runtime)
    return auth


class AuthSpec(ServiceSpec):
    """The auth service verifies its own tokens with its own keys: no HTTP round trip to itself."""

    def config(self, overrides=None, env=None) -> Config:
        from .signing import SigningKeys

        config = super().config(overrides=overrides, env=env)
        if config.values.get("signing_keys") is None:
            config.values["signing_keys"] = SigningKeys(config["SIGNING_KEYS_FILE"], config["ACCESS_TOKEN_TTL"])
        if config.values.get("keyset") is None:
            config.values["keyset"] = config["signing_keys"].keyset()
        return config


def _blueprints():
    from .api import bp

    return [bp]


def _extensions(runtime: Runtime) -> dict:
    from .login import Logins

    auth = auth_for(runtime)
    return {"auth": auth, "auth.logins": Logins(auth)}


def _participant(runtime: Runtime):
    from .privacy import AuthParticipant

    return AuthParticipant(auth_for(runtime))


def _background(runtime: Runtime):
    from .worker import purge_loop

    return [purge_loop(runtime)]


def _subscriptions(runtime: Runtime):
    from .worker import SUBSCRIPTIONS

    return SUBSCRIPTIONS


SPEC = AuthSpec(
    name=NAME,
    metadata=metadata,
    tables=tables,
    migrations=Path(__file__).parent / "migrations",
    blueprints=_blueprints,
    settings=SETTINGS,
    subscriptions=_subscriptions,
    participant=_participant,
    extensions=_extensions,
    background=_background,
    description="Minimal login data (R6), local and directory logins (R10), tokens, tenants and their "
                "data processing agreements (R5), roles.",
)


def create_app(config=None):
    """Flask application factory (gunicorn: `services.auth:create_app()`)."""
    return SPEC.create_app(config)
