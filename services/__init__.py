"""The Recept services; each is a package with a ``SPEC`` (shared.service.ServiceSpec)."""

from __future__ import annotations

import importlib

SERVICES = ("auth", "orders", "crm", "audit", "gdpr", "portal")
PORTS = {"auth": 8081, "orders": 8082, "crm": 8083, "audit": 8084, "gdpr": 8085, "portal": 8086}


def load(name: str):
    """The ServiceSpec of service ``name``."""
    if name not in SERVICES:
        raise KeyError(f"unknown service {name!r}; services are {', '.join(SERVICES)}")
    return importlib.import_module(f"services.{name}").SPEC
