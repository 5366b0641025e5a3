"""The auth service: app factory and service declaration.

Minimal login data (R6), local and directory logins (R10), tokens, tenants with their data
processing agreements (R5), roles; docs/auth.md.
"""

from __future__ import annotations

from pathlib import Path

from shared.config import Config
from shared.service import ServiceSpec

from .config import SETTINGS
from .models import metadata, tables

NAME = "auth"


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


SPEC = AuthSpec(
    name=NAME,
    metadata=metadata,
    tables=tables,
    migrations=Path(__file__).parent / "migrations",
    bootstrap="services.auth.bootstrap",
    settings=SETTINGS,
    description="Minimal login data (R6), local and directory logins (R10), tokens, tenants and their "
    "data processing agreements (R5), roles.",
)


def create_app(config=None):
    """Flask application factory (gunicorn: `services.auth:create_app()`)."""
    return SPEC.create_app(config)
