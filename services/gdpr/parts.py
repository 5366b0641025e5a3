"""The gdpr service's domain objects, as one bundle: what its api, worker and ``./recept gdpr`` share.

``bootstrap.build(runtime)`` makes them once per runtime; this is ``runtime.domain``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .domain import Coordinator
from .inventory import DataInventory
from .sweep import Sweeper


@dataclass(frozen=True)
class Parts:
    coordinator: Coordinator
    inventory: DataInventory
    sweeper: Sweeper
