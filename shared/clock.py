"""Time for every service: one clock, one way to read stored timestamps, one wire format.

Every service stores UTC.  SQLite hands timezone-aware columns back naive, PostgreSQL aware in
the session's zone, so stored values are read through ``as_utc``.  On the wire (HTTP replies,
events, export packages) a timestamp is RFC 3339 in UTC with microseconds and a ``Z``:
``2026-12-01T13:46:55.123456Z``; a date is ``YYYY-MM-DD``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import overload

__all__ = ["utcnow", "as_utc", "rfc3339", "now_rfc3339", "iso_date", "parse_rfc3339"]


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """A stored timestamp as an aware UTC datetime (naive values are taken to be UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@overload
def rfc3339(value: datetime) -> str: ...
@overload
def rfc3339(value: None) -> None: ...
def rfc3339(value: datetime | None) -> str | None:
    """The one wire format of a timestamp: RFC 3339, UTC, microseconds, ``Z``."""
    if value is None:
        return None
    return as_utc(value).isoformat(timespec="microseconds").replace("+00:00", "Z")


def now_rfc3339() -> str:
    return rfc3339(utcnow())


def iso_date(value: date | datetime | None) -> str | None:
    """A date (or a timestamp's date part, in UTC) as ``YYYY-MM-DD``; timestamps as ``rfc3339``."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return rfc3339(value)
    return value.isoformat()


def parse_rfc3339(raw: str) -> datetime:
    """An RFC 3339 timestamp with an offset (or ``Z``), as aware UTC; ValueError otherwise."""
    if not isinstance(raw, str) or not 10 <= len(raw) <= 40 or "T" not in raw.upper():
        raise ValueError("not an RFC 3339 timestamp")
    value = datetime.fromisoformat(raw.replace("z", "Z").replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("an RFC 3339 timestamp needs an offset")
    return value.astimezone(UTC)
