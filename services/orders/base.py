"""What every part of the orders domain is built on: the one dependency bundle, new ids, records and pages."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar

from shared.clock import as_utc
from shared.crypto import BlindIndex, Vault
from shared.outbox import Outbox

Clock = Callable[[], datetime]
T = TypeVar("T")


@dataclass(frozen=True)
class Deps:
    """The dependencies of access, catalogue, individuals and ordering, built once per process."""

    vault: Vault                    # per-individual field encryption and crypto-shredding (R7)
    index: BlindIndex               # lookups on encrypted columns
    outbox: Outbox                  # events in the caller's transaction (R9, R11)
    clock: Clock                    # the service's notion of now (tests move it)
    default_timezone: str           # of new registers' deadlines

    def now(self) -> datetime:
        # An injected clock may hand back another zone; stored and compared times are UTC.
        return as_utc(self.clock())


def new_id() -> str:
    return str(uuid.uuid4())


class Record:
    """Attribute access over the values just inserted, so they read like a fetched row."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)
        self._mapping = values


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; ``next_offset`` is None on the last page."""

    items: Sequence[T]
    next_offset: int | None

    @classmethod
    def of(cls, rows: Sequence[T], limit: int, offset: int) -> "Page[T]":
        """From ``limit + 1`` fetched rows: the extra row only says that another page exists."""
        return cls(rows[:limit], offset + limit if len(rows) > limit else None)
