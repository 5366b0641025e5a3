"""Call logs (R13): the phone operator's CSV export, parsed, matched to persons, imported once.

A file's columns are timestamp, calling number (the outside party: the only personal
value), called line (the vendor's own support line), duration and direction.  Bad rows
are reported by line and field (never by value) while the good rows are imported; a
keyed fingerprint of each normalised row makes a re-import add nothing twice.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.clock import as_utc, rfc3339, utcnow
from shared.errors import Invalid
from shared.normalise import normalise_phone

from . import events as ev
from .domain import Actor, Crm, new_id
from .models import call_imports, calls

COLUMNS = ("timestamp", "calling_number", "called_line", "duration", "direction")
ALIASES = {
    "timestamp": "timestamp",
    "time": "timestamp",
    "start": "timestamp",
    "started_at": "timestamp",
    "date_time": "timestamp",
    "datetime": "timestamp",
    "calling_number": "calling_number",
    "calling": "calling_number",
    "number": "calling_number",
    "caller": "calling_number",
    "from": "calling_number",
    "a_number": "calling_number",
    "called_line": "called_line",
    "called": "called_line",
    "line": "called_line",
    "to": "called_line",
    "b_number": "called_line",
    "duration": "duration",
    "duration_s": "duration",
    "seconds": "duration",
    "length": "duration",
    "direction": "direction",
    "dir": "direction",
    "type": "direction",
}
DIRECTIONS = {
    "in": "inbound",
    "inbound": "inbound",
    "incoming": "inbound",
    "inkommande": "inbound",
    "out": "outbound",
    "outbound": "outbound",
    "outgoing": "outbound",
    "utgående": "outbound",
    "missed": "missed",
    "missad": "missed",
    "missat": "missed",
}
MAX_DURATION = 7 * 24 * 3600
MAX_REPORTED_ERRORS = 1000
_CLOCK = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})\Z")


@dataclass(frozen=True)
class CallRow:
    line: int
    started_at: datetime
    number: str  # E.164
    called_line: str
    duration_s: int
    direction: str

    def canonical(self) -> bytes:
        return "|".join(
            [
                self.started_at.astimezone(UTC).isoformat(),
                self.number,
                self.called_line,
                str(self.duration_s),
                self.direction,
            ]
        ).encode()


def _problem(line: int, field: str, message: str) -> dict[str, Any]:
    return {"line": line, "field": field, "message": message}


def decode(data: bytes) -> str:
    """UTF-8 (with or without BOM), else Windows-1252, which Swedish spreadsheet exports still use."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def parse_duration(text: str) -> int:
    text = text.strip()
    if text.isdigit():
        seconds = int(text)
    else:
        match = _CLOCK.match(text)
        if not match:
            raise ValueError("is not seconds or [H:]MM:SS")
        hours, minutes, secs = int(match.group(1) or 0), int(match.group(2)), int(match.group(3))
        if secs >= 60 or (match.group(1) and minutes >= 60):
            raise ValueError("is not seconds or [H:]MM:SS")
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds > MAX_DURATION:
        raise ValueError("is longer than a week")
    return seconds


def parse_timestamp(text: str, zone: ZoneInfo) -> datetime:
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    # Operators log local time without an offset; read it in the configured zone.
    return (value.replace(tzinfo=zone) if value.tzinfo is None else value).astimezone(UTC)


def parse_csv(data: bytes, zone: ZoneInfo) -> tuple[list[CallRow], list[dict[str, Any]], int]:
    """(good rows, per-line problems, data rows seen).  Raises Invalid when the file has no usable header."""
    text = decode(data)
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        raise Invalid("the file is empty", errors=[{"field": "file", "message": "has no header line"}]) from None
    names = [ALIASES.get(re.sub(r"[\s\-]+", "_", h.strip().lower())) for h in header]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise Invalid(
            "the header line lacks required columns",
            errors=[{"field": f"header.{c}", "message": "column is missing"} for c in missing],
        )
    position = {name: names.index(name) for name in COLUMNS}
    rows, problems, seen = [], [], 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error:
            seen += 1
            problems.append(_problem(reader.line_num, "line", "is not valid CSV"))
            continue
        if not record or all(not cell.strip() for cell in record):
            continue
        seen += 1
        line = reader.line_num
        if len(record) != len(header):
            problems.append(_problem(line, "line", f"has {len(record)} fields, expected {len(header)}"))
            continue
        cell = {name: record[i] for name, i in position.items()}
        row_problems = []
        try:
            started_at = parse_timestamp(cell["timestamp"], zone)
        except ValueError:
            row_problems.append(_problem(line, "timestamp", "is not an ISO 8601 date and time"))
        try:
            number = normalise_phone(cell["calling_number"])
        except Invalid:
            row_problems.append(_problem(line, "calling_number", "is not a valid phone number"))
        called_line = cell["called_line"].strip()
        if not called_line or len(called_line) > 40:
            row_problems.append(_problem(line, "called_line", "must be 1-40 characters"))
        try:
            duration = parse_duration(cell["duration"])
        except ValueError as exc:
            row_problems.append(_problem(line, "duration", str(exc)))
        direction = DIRECTIONS.get(cell["direction"].strip().lower())
        if direction is None:
            row_problems.append(_problem(line, "direction", "must be inbound, outbound or missed"))
        if row_problems:
            problems.extend(row_problems)
            continue
        rows.append(CallRow(line, started_at, number, called_line, duration, direction))
    return rows, problems, seen


def import_calls(crm: Crm, s: Session, actor: Actor, data: bytes, source: str) -> dict[str, Any]:
    """Import a call-log file in this transaction; returns the per-line report."""
    zone = ZoneInfo(crm.config["CALL_LOG_TIMEZONE"])
    rows, problems, seen = parse_csv(data, zone)
    unique: dict[str, CallRow] = {}
    duplicates = 0
    for row in rows:
        fingerprint = crm.fingerprint("call", row.canonical())
        if fingerprint in unique:
            duplicates += 1
        else:
            unique[fingerprint] = row
    existing: set[str] = set()
    prints = list(unique)
    for start in range(0, len(prints), 500):
        existing.update(
            s.scalars(select(calls.c.fingerprint).where(calls.c.fingerprint.in_(prints[start : start + 500])))
        )
    duplicates += len(existing)
    fresh = [(fp, row) for fp, row in unique.items() if fp not in existing]

    # Match each distinct number once; a number shared by several persons matches none of them.
    owners: dict[str, Any] = {}
    for number in {row.number for _fp, row in fresh}:
        found = crm.persons_by_phone(s, number)
        owners[number] = found[0] if len(found) == 1 else None

    import_id, now = new_id(), utcnow()
    s.execute(
        call_imports.insert().values(
            id=import_id,
            source=source,
            imported_by=actor.id,
            rows=seen,
            imported=len(fresh),
            duplicates=duplicates,
            rejected=0,
            matched=0,
            created_at=now,
        )
    )
    records = [(new_id(), fp, row) for fp, row in fresh]
    crm.vault.prepare(s, [f"crm:call:{call_id}" for call_id, _fp, _row in records])
    values, matched = [], 0
    for call_id, fingerprint, row in records:
        owner = owners[row.number]
        matched += owner is not None
        subject = f"crm:call:{call_id}"
        values.append(
            {
                "id": call_id,
                "import_id": import_id,
                "subject_ref": subject,
                "number": crm.seal(s, subject, calls, "number", call_id, row.number),
                "number_idx": crm.index.of("phone", row.number),
                "called_line": row.called_line,
                "started_at": row.started_at,
                "duration_s": row.duration_s,
                "direction": row.direction,
                "person_id": owner.id if owner is not None else None,
                "company_id": owner.company_id if owner is not None else None,
                "fingerprint": fingerprint,
                "created_at": now,
            }
        )
    if values:
        s.execute(calls.insert(), values)
    for value in values:
        crm.emit(
            s,
            ev.CALL_RECORDED,
            actor,
            data={
                "call_id": value["id"],
                "import_id": import_id,
                "person_id": value["person_id"],
                "direction": value["direction"],
            },
            subject=value["subject_ref"],
            resource=("call", value["id"]),
        )
    rejected = len({p["line"] for p in problems})
    s.execute(call_imports.update().where(call_imports.c.id == import_id).values(matched=matched, rejected=rejected))
    report = {
        "import_id": import_id,
        "rows": seen,
        "imported": len(values),
        "duplicates": duplicates,
        "rejected": rejected,
        "matched": matched,
    }
    crm.emit(
        s,
        ev.CALL_IMPORT_COMPLETED,
        actor,
        data={**report, "source": source},
        subject=None,
        resource=("call_import", import_id),
    )
    report["errors"] = problems[:MAX_REPORTED_ERRORS]
    if len(problems) > MAX_REPORTED_ERRORS:
        report["errors_truncated"] = True
    return report


def call_view(crm: Crm, s: Session, row) -> dict[str, Any]:
    values, erased = crm.plain(s, calls, row, ("number",))
    out = {
        "id": row.id,
        "import_id": row.import_id,
        "number": values["number"],
        "called_line": row.called_line,
        "started_at": rfc3339(row.started_at),
        "duration_s": row.duration_s,
        "direction": row.direction,
        "person_id": row.person_id,
        "company_id": row.company_id,
        "redacted": row.redacted_at is not None,
    }
    if erased:
        out["erased_fields"] = erased
    return out


def viewed_calls(crm: Crm, s: Session, actor: Actor, rows) -> None:
    for row in rows:
        crm.emit(s, ev.CALL_VIEWED, actor, data={"call_id": row.id}, subject=row.subject_ref, resource=("call", row.id))


def list_calls(
    crm: Crm,
    s: Session,
    actor: Actor,
    *,
    person_id: str | None = None,
    company_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    query = select(calls).order_by(calls.c.started_at.desc(), calls.c.id).limit(limit).offset(offset)
    if person_id is not None:
        query = query.where(calls.c.person_id == person_id)
    if company_id is not None:
        query = query.where(calls.c.company_id == company_id)
    if since is not None:
        query = query.where(calls.c.started_at >= since)
    if until is not None:
        query = query.where(calls.c.started_at < until)
    rows = s.execute(query).all()
    crm.vault.prefetch(s, [r.number for r in rows])
    viewed_calls(crm, s, actor, rows)
    return [call_view(crm, s, r) for r in rows]


def calls_by_phone(crm: Crm, s: Session, normalised: str) -> list:
    return crm.matching(s, calls, "number_idx", "number", normalised, normalise_phone, "phone")


def search_calls(crm: Crm, s: Session, actor: Actor, phone: str) -> list[dict[str, Any]]:
    rows = sorted(
        calls_by_phone(crm, s, normalise_phone(phone)), key=lambda r: (as_utc(r.started_at), r.id), reverse=True
    )
    viewed_calls(crm, s, actor, rows)
    return [call_view(crm, s, r) for r in rows]


def parse_time_filter(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(
            "a time filter is not ISO 8601", errors=[{"field": field, "message": "is not an ISO 8601 date and time"}]
        ) from None
    return as_utc(parsed)  # a time without an offset is UTC
