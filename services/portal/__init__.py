"""The compliance portal: the web pages a data-protection officer works in (issue 9).

A client of the auth, gdpr and audit services' HTTP contracts (API.md); it holds no data of
its own beyond its sign-in sessions, and it has no bus subscriptions and no worker.
"""

from __future__ import annotations

from pathlib import Path

from shared.config import Setting
from shared.service import Runtime, ServiceSpec

from .models import metadata, tables

NAME = "portal"
DESCRIPTION = "Server-rendered pages for compliance officers, on top of the auth, gdpr and audit APIs."

SETTINGS = (
    Setting("AUTH_URL", str, "http://127.0.0.1:8080/auth", "base URL of the auth service"),
    Setting("GDPR_URL", str, "http://127.0.0.1:8080/gdpr", "base URL of the gdpr service"),
    Setting("AUDIT_URL", str, "http://127.0.0.1:8080/audit", "base URL of the audit service"),
    Setting("UPSTREAM_TIMEOUT", float, 10.0, "seconds the portal waits for a service's answer", minimum=0.1),
    Setting("SECRET_KEY", str, None, "signs the session cookie; default: a key derived from the keyring", secret=True),
    Setting("SESSION_IDLE_MINUTES", int, 30, "a session ends after this many minutes without a request", minimum=1),
    Setting("SESSION_MAX_HOURS", int, 12, "a session ends this many hours after sign-in, active or not", minimum=1),
    Setting("PAGE_REFRESH_SECONDS", int, 3, "how often a running request's page reloads itself", minimum=1),
    Setting("COOKIE_SECURE", bool, False, "send the session cookie over HTTPS only (set true behind TLS)"),
    Setting(
        "FORWARDING_TOKEN", str, None, "shared with auth: lets the portal forward the browser's address", secret=True
    ),
    Setting("FORWARDING_TOKEN_FILE", str, None, "path of a file holding FORWARDING_TOKEN (a mounted secret)"),
)


class PortalSpec(ServiceSpec):
    """A ServiceSpec whose app is HTML pages; readiness checks the services it calls, not a broker."""

    def create_app(self, config=None, runtime: Runtime | None = None):
        from .web import build_app

        return build_app(runtime if runtime is not None else self.runtime(config), self.description)


SPEC = PortalSpec(
    name=NAME,
    metadata=metadata,
    tables=tables,
    migrations=Path(__file__).parent / "migrations",
    bootstrap="services.portal.bootstrap",
    settings=SETTINGS,
    has_worker=False,  # no bus, so no worker process: the launchers start only its api (docs/portal.md)
    description=DESCRIPTION,
)


def create_app(config=None):
    """Flask application factory (gunicorn: `services.portal:create_app()`)."""
    return SPEC.create_app(config)


def embedded_overrides(port: int) -> dict:
    """Settings of the portal in the embedded run on ``port`` (every service under one host)."""
    base = f"http://127.0.0.1:{port}"
    return {"AUTH_URL": f"{base}/auth", "GDPR_URL": f"{base}/gdpr", "AUDIT_URL": f"{base}/audit"}


def distributed_env(ports: dict[str, int], host: str = "127.0.0.1") -> dict[str, str]:
    """Environment of the portal's process in the distributed run (each service on its own port)."""
    return {f"RECEPT_PORTAL_{name.upper()}_URL": f"http://{host}:{ports[name]}" for name in ("auth", "gdpr", "audit")}
