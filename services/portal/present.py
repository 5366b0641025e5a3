"""Shapes the gdpr and audit services' JSON into what the portal's pages show.

Pure functions, no Flask.  They read the API.md fields and tolerate the extra fields a
service may add, so a service growing its answer does not break a page.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TYPES = ("export", "erase")
STATUSES = (
    "previewing",
    "awaiting_approval",
    "awaiting_confirmation",
    "in_progress",
    "completed",
    "partially_completed",
    "failed",
    "rejected",
)
FINISHED = frozenset({"completed", "rejected"})  # answered: a deadline no longer applies
RUNNING = frozenset({"previewing", "in_progress"})  # the page refreshes itself
ERASURE_ACTIONS = ("deleted", "anonymised", "retained")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def items_of(answer: Any) -> list[dict]:
    """A list answer, or the ``items`` of a paged one."""
    if isinstance(answer, dict):
        answer = answer.get("items", answer.get("requests", []))
    return [item for item in answer or [] if isinstance(item, dict)]


def is_overdue(request: dict, now: datetime) -> bool:
    if isinstance(request.get("overdue"), bool):
        return request["overdue"]
    due = parse_time(request.get("due_at"))
    return due is not None and due < now and request.get("status") not in FINISHED


@dataclass
class ServiceProgress:
    service: str
    status: str
    phase: str | None = None
    error: str | None = None
    erasure: list[dict] = field(default_factory=list)
    records: dict[str, int] = field(default_factory=dict)
    attempts: int | None = None
    replied_at: datetime | None = None


def _erasure_items(value: Any) -> list[dict]:
    if not isinstance(value, list):
        return []
    items = []
    for item in value:
        if isinstance(item, dict) and item.get("action") in ERASURE_ACTIONS:
            items.append(
                {
                    "kind": str(item.get("kind", "")),
                    "action": item["action"],
                    "count": item.get("count"),
                    "legal_basis": item.get("legal_basis"),
                    "retain_until": item.get("retain_until"),
                }
            )
    return items


def _record_counts(value: Any) -> dict[str, int]:
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}
    return {}


def services_of(request: dict) -> list[ServiceProgress]:
    """One entry per service, whether the answer lists them or maps name -> entry."""
    raw = request.get("services") or []
    if isinstance(raw, dict):
        raw = [
            {"service": name, **(entry if isinstance(entry, dict) else {"status": entry})}
            for name, entry in raw.items()
        ]
    out = []
    for entry in raw:
        if not isinstance(entry, dict):
            continue
        result = entry.get("result")
        summary = result if isinstance(result, dict) else {}
        erasure = (
            _erasure_items(entry.get("erasure")) or _erasure_items(result) or _erasure_items(summary.get("erasure"))
        )
        records = (
            _record_counts(entry.get("records"))
            or _record_counts(summary.get("records"))
            or (_record_counts(result) if not erasure else {})
        )
        out.append(
            ServiceProgress(
                service=str(entry.get("service") or entry.get("name") or "?"),
                status=str(entry.get("status") or "waiting"),
                phase=entry.get("phase"),
                error=entry.get("error") if isinstance(entry.get("error"), str) else None,
                erasure=erasure,
                records=records,
                attempts=entry.get("attempts") if isinstance(entry.get("attempts"), int) else None,
                replied_at=parse_time(entry.get("replied_at")),
            )
        )
    return sorted(out, key=lambda s: s.service)


def erasure_table(services: Iterable[ServiceProgress]) -> list[dict]:
    """Rows of the erasure table: per service and kind of data, what was done (R2)."""
    return [{"service": s.service, **item} for s in services for item in s.erasure]


@dataclass(frozen=True)
class Candidate:
    """One candidate of a request's preview (issue 15): a masked card the approver may confirm."""

    service: str
    id: str
    kind: str
    match: str  # exact | near
    label: str
    count: int


def preview_of(request: dict) -> tuple[str | None, list[Candidate], dict[str, str]]:
    """The preview's hash, its candidates (exact ones first per service) and each service's status."""
    preview = request.get("preview")
    if not isinstance(preview, dict) or not isinstance(preview.get("services"), dict):
        return None, [], {}
    found, statuses = [], {}
    for service, entry in sorted(preview["services"].items()):
        if not isinstance(entry, dict):
            continue
        statuses[service] = str(entry.get("status") or "")
        for c in entry.get("candidates") or []:
            if not isinstance(c, dict) or not c.get("id"):
                continue
            card = c.get("card") if isinstance(c.get("card"), dict) else {}
            found.append(
                Candidate(
                    service,
                    str(c["id"]),
                    str(c.get("kind") or ""),
                    "exact" if c.get("match") == "exact" else "near",
                    str(card.get("label") or ""),
                    int(c.get("count") or 0),
                )
            )
    found.sort(key=lambda c: (c.service, c.match != "exact"))
    hash_ = preview.get("hash")
    return (str(hash_) if hash_ else None), found, statuses


def can_decide(request: dict, user_id: str) -> bool:
    """Approve / reject are offered on a request (erase, or export by default) awaiting approval, but never
    to the officer who opened it."""
    if request.get("status") != "awaiting_approval":
        return False
    requester = request.get("requested_by")
    if isinstance(requester, dict):
        requester = requester.get("id")
    return requester is None or str(requester) != str(user_id)


def can_confirm(request: dict) -> bool:
    """Confirm / reject are offered on a request waiting for the customer's privacy officer (issue 15)."""
    links = request.get("links")
    return request.get("status") == "awaiting_confirmation" and isinstance(links, dict) and "confirm" in links


def can_retry(request: dict) -> bool:
    return request.get("status") in {"partially_completed", "failed"} or any(
        s.status in {"failed", "silent"} for s in services_of(request)
    )


def export_ready(request: dict) -> bool:
    if request.get("type") != "export":
        return False
    package = request.get("export")
    if isinstance(package, dict) and package.get("available") is False:
        return False  # expired and crypto-shredded: nothing left to download
    links = request.get("links") if isinstance(request.get("links"), dict) else {}
    return request.get("status") == "completed" or bool(links.get("export"))


# --- inventory -------------------------------------------------------------------------------


@dataclass
class InventoryRow:
    service: str
    kind: str
    data_subjects: str
    fields: list[dict]
    special: bool
    purposes: list[str]
    legal_basis: str
    role: str
    controller: str
    retention: str
    recipients: list[str]
    storage: str
    erasure: str
    encrypted: bool
    stale: bool
    count: int | None


def _services_of_inventory(answer: Any) -> list[dict]:
    if isinstance(answer, dict):
        for key in ("services", "participants", "items"):
            if isinstance(answer.get(key), list):
                return [s for s in answer[key] if isinstance(s, dict)]
        if isinstance(answer.get("categories"), list):
            # a flat list of categories, each naming its service
            grouped: dict[str, dict] = {}
            for cat in answer["categories"]:
                if isinstance(cat, dict):
                    name = str(cat.get("service", "?"))
                    grouped.setdefault(name, {"service": name, "categories": []})["categories"].append(cat)
            return list(grouped.values())
        return []
    return [s for s in answer or [] if isinstance(s, dict)]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value or []]


def inventory_rows(answer: Any) -> list[InventoryRow]:
    rows = []
    for entry in _services_of_inventory(answer):
        service = str(entry.get("service") or entry.get("name") or "?")
        inventory = entry.get("inventory") if isinstance(entry.get("inventory"), dict) else entry
        counts = entry.get("counts") if isinstance(entry.get("counts"), dict) else {}
        for cat in inventory.get("categories") or []:
            if not isinstance(cat, dict):
                continue
            kind = str(cat.get("kind", "?"))
            fields = [f for f in cat.get("fields") or [] if isinstance(f, dict)]
            count = cat.get("count", counts.get(kind))
            rows.append(
                InventoryRow(
                    service=service,
                    kind=kind,
                    data_subjects=str(cat.get("data_subjects", "")),
                    fields=fields,
                    special=bool(cat.get("special_category") or any(f.get("special") for f in fields)),
                    purposes=_strings(cat.get("purposes")),
                    legal_basis=str(cat.get("legal_basis", "")),
                    role=str(cat.get("role", "")),
                    controller=str(cat.get("controller", "")),
                    retention=str(cat.get("retention", "")),
                    recipients=_strings(cat.get("recipients")),
                    storage=str(cat.get("storage", "")),
                    erasure=str(cat.get("erasure", "")),
                    encrypted=bool(cat["encrypted"])
                    if isinstance(cat.get("encrypted"), bool)
                    else any(f.get("encrypted") for f in fields if f.get("personal", True)),
                    stale=bool(entry.get("stale")),
                    count=count if isinstance(count, int) and not isinstance(count, bool) else None,
                )
            )
    return sorted(rows, key=lambda r: (r.service, r.kind))


def group_by(rows: Iterable[InventoryRow], attribute: str) -> list[tuple[str, list[InventoryRow]]]:
    groups: dict[str, list[InventoryRow]] = {}
    for row in rows:
        groups.setdefault(getattr(row, attribute) or "?", []).append(row)
    return sorted(groups.items())


@dataclass
class Bar:
    label: str
    service: str
    count: int
    y: int
    width: float


@dataclass
class Chart:
    bars: list[Bar]
    height: int
    maximum: int
    label_width: int = 260
    bar_area: int = 400
    bar_height: int = 22
    gap: int = 8


def counts_chart(rows: Iterable[InventoryRow]) -> Chart:
    """A horizontal bar chart (drawn as inline SVG by the template) of records per category per service."""
    counted = [r for r in rows if r.count is not None]
    maximum = max((r.count for r in counted), default=0)
    chart = Chart(bars=[], height=0, maximum=maximum)
    step = chart.bar_height + chart.gap
    for index, row in enumerate(counted):
        width = (row.count / maximum * chart.bar_area) if maximum else 0.0
        chart.bars.append(
            Bar(
                label=f"{row.service} · {row.kind}",
                service=row.service,
                count=row.count,
                y=index * step,
                width=round(max(width, 1.0 if row.count else 0.0), 1),
            )
        )
    chart.height = max(len(chart.bars) * step, step)
    return chart


# --- audit -----------------------------------------------------------------------------------


def actor_of(event: dict) -> str:
    actor = event.get("actor")
    if isinstance(actor, dict):
        return str(actor.get("id") or actor.get("kind") or "")
    return str(actor or "")


def resource_of(event: dict) -> str:
    resource = event.get("resource")
    if isinstance(resource, dict):
        return ":".join(str(resource.get(k)) for k in ("type", "id") if resource.get(k))
    return str(resource or "")


@dataclass
class ChainStatus:
    name: str
    tenant: str
    ok: bool
    verified: int | None
    head: str
    checkpoint: str
    first_bad: dict | None
    problem: str


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items() if v is not None)
    if isinstance(value, list):
        return "; ".join(_text(v) for v in value)
    return "" if value is None else str(value)


def chains_of(answer: Any) -> list[ChainStatus]:
    """The audit service's verification, one entry per chain (a chain per tenant)."""
    raw = answer
    if isinstance(answer, dict):
        raw = answer.get("chains", answer.get("items", []))
        if isinstance(raw, dict):
            raw = [{"chain": name, **(value if isinstance(value, dict) else {})} for name, value in raw.items()]
    out = []
    for entry in raw or []:
        if not isinstance(entry, dict):
            continue
        first_bad = entry.get("first_bad") or entry.get("first_bad_entry")
        if first_bad is not None and not isinstance(first_bad, dict):
            first_bad = {"entry": first_bad}
        if isinstance(entry.get("status"), str):
            ok = entry["status"] == "ok"
        else:
            ok = bool(entry.get("ok", True))
        verified = entry.get("entries_verified", entry.get("verified"))
        out.append(
            ChainStatus(
                name=str(entry.get("chain") or entry.get("tenant") or "?"),
                tenant=str(entry.get("tenant") or ""),
                ok=ok and first_bad is None,
                verified=verified if isinstance(verified, int) and not isinstance(verified, bool) else None,
                head=_text(entry.get("head")),
                checkpoint=_text(entry.get("last_checkpoint")),
                first_bad=first_bad,
                problem=_text(entry.get("checkpoint_problems") or entry.get("problem")),
            )
        )
    return sorted(out, key=lambda c: c.name)
