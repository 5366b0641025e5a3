"""The orders domain, whole: its four parts over one dependency bundle, built once per process.

Free of Flask and kombu.  The HTTP layer (api.py) and the GDPR participant (privacy.py) call
the parts with a database session, the caller (``shared.tokens.Principal``) and plain dicts that
already passed the request's JSON schema; every change writes its event to the outbox in the
caller's transaction (R9, R11).  Which file holds which rule: docs/orders.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.clock import utcnow
from shared.crypto import BlindIndex, index_bits

from .access import Access
from .base import Deps
from .catalogue import Catalogue
from .individuals import Individuals
from .ordering import Ordering


@dataclass(frozen=True)
class OrdersDomain:
    access: Access  # grants on registers and lists (the checks: access.py's functions)
    catalogue: Catalogue  # settings, units, delivery points, registers, assortment lists, articles
    individuals: Individuals  # encrypted individuals, search, and data-subject requests
    ordering: Ordering  # place, change, cancel, history, retention purge

    @classmethod
    def over(cls, deps: Deps) -> OrdersDomain:
        return cls(Access(deps), Catalogue(deps), Individuals(deps), Ordering(deps))


def deps_of(runtime) -> Deps:
    """The dependency bundle from a runtime's vault, keyring, outbox and settings."""
    config = runtime.config
    # BLIND_INDEX_BITS pins the width; by default it follows PLANNED_SUBJECTS (docs/crypto.md "Sizing")
    bits = config["BLIND_INDEX_BITS"] or index_bits(config["PLANNED_SUBJECTS"])
    return Deps(
        vault=runtime.vault,
        index=BlindIndex(runtime.keyring, bits=bits),
        outbox=runtime.outbox,
        clock=config.get("clock") or utcnow,
        default_timezone=config["DEFAULT_TIMEZONE"],
        retained_k=config["RETAINED_K"],
    )


def build_domain(runtime) -> OrdersDomain:
    """The one constructor of the orders domain (called once by the service's wiring)."""
    return OrdersDomain.over(deps_of(runtime))
