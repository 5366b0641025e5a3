"""Wiring of the auth service: its domain objects, made once per runtime, and what its processes run."""

from __future__ import annotations

from shared.privacy import command_subscription
from shared.service import Loop, Runtime, Wiring
from shared.tokens import RevocationList

from .api import bp
from .domain import Auth
from .login import Logins
from .privacy import AuthParticipant
from .worker import purge_loop, tenant_announce_loop


def build(runtime: Runtime) -> Wiring:
    auth = Auth(runtime)
    logins = Logins(auth)
    # Other services read the revocation list over HTTP every few seconds; auth reads its own table on
    # every request, so a logged-out token is refused here at once (docs/auth.md "Revocation").
    runtime.tokens.revocations = RevocationList(auth.revocation_list, interval=0.0)
    participant = AuthParticipant(auth)
    return Wiring(
        domain=auth,
        blueprints=[bp],
        extensions={"auth": auth, "auth.logins": logins},
        participant=participant,
        # auth reacts to no other service's events; it answers the gdpr service's commands.
        subscriptions=[command_subscription(runtime)],
        loops=[
            Loop("purge", purge_loop(logins, runtime.config["PURGE_INTERVAL"])),
            Loop("tenants", tenant_announce_loop(auth, runtime.config["TENANT_ANNOUNCE_INTERVAL"])),
        ],
        preflight=lambda: logins.forwarding_token,  # a configured but unreadable token stops the start
    )
