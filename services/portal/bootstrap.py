"""Wiring of the portal: its one domain object (sessions and the upstream clients), made once per runtime.

The portal has no bus and no worker, so its wiring holds no participant, subscriptions or loops.
"""

from __future__ import annotations

from shared.clock import utcnow
from shared.service import Runtime, Wiring

from .web import Portal


def build(runtime: Runtime) -> Wiring:
    portal = Portal(runtime, clock=runtime.config.get("clock") or utcnow)
    return Wiring(domain=portal, extensions={"portal": portal}, preflight=lambda: None)
