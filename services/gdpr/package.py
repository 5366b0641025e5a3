"""The export package (R1): a ZIP with one folder per service, JSON and CSV per kind of record,
a manifest with per-file SHA-256 and row counts, and a short human-readable summary.

Pure functions over already-decrypted data; the caller encrypts the result at rest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterable
from typing import Any

from shared.spreadsheet import formula_safe

SCHEMA_VERSION = "1"
MANIFEST = "manifest.json"
SUMMARY = "summary.txt"
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_name(name: str) -> str:
    """A file or folder name that cannot climb out of its folder."""
    cleaned = _SAFE.sub("_", str(name)).strip("_")
    return cleaned[:80] or "records"


def _cell(value: Any) -> str:
    """One cell; text a spreadsheet would run as a formula is escaped (a CRM name, a note)."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return formula_safe(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)  # a negative number is a number, not a formula
    return formula_safe(str(value))


def to_csv(records: list[Any]) -> bytes:
    """One row per record; columns are the union of the records' keys in first-seen order."""
    rows = [r if isinstance(r, dict) else {"value": r} for r in records]
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return out.getvalue().encode("utf-8")


def to_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=False, default=str).encode("utf-8")


def build(
    *,
    request_id: str,
    tenant: str,
    generated_at: str,
    subject_hashes: list[dict[str, str]],
    parts: dict[str, dict[str, list[Any]]],
    services: list[dict[str, Any]],
    inventories: dict[str, dict[str, Any]],
) -> tuple[bytes, dict[str, Any]]:
    """(ZIP bytes, manifest).

    ``parts``: service -> kind -> records, as the services exported them;
    ``services``: one entry per service that answered ({"service", "phase"});
    ``inventories``: service -> its declared inventory (purposes, legal basis, retention, recipients),
    included because an access request is also owed that information (GDPR art. 15(1)).
    """
    files: list[tuple[str, bytes, int]] = []
    service_entries = []
    for entry in sorted(services, key=lambda e: e["service"]):
        service = entry["service"]
        folder = safe_name(service)
        kinds = parts.get(service) or {}
        records_total = 0
        kind_entries = []
        for kind in sorted(kinds):
            records = kinds[kind] if isinstance(kinds[kind], list) else [kinds[kind]]
            base = f"{folder}/{safe_name(kind)}"
            files.append((base + ".json", to_json(records), len(records)))
            files.append((base + ".csv", to_csv(records), len(records)))
            kind_entries.append({"kind": kind, "rows": len(records)})
            records_total += len(records)
        inventory = inventories.get(service)
        if inventory is not None:
            categories = inventory.get("categories") or []
            files.append((f"{folder}/inventory.json", to_json(inventory), len(categories)))
        service_entries.append(
            {"service": service, "phase": entry.get("phase", "resolve"), "kinds": kind_entries, "rows": records_total}
        )
    summary = _summary(request_id, tenant, generated_at, service_entries)
    files.append((SUMMARY, summary, len(service_entries)))
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "request_id": request_id,
        "type": "export",
        "tenant": tenant,
        "generated_at": generated_at,
        "subject_identifiers": subject_hashes,
        "services": service_entries,
        "files": [
            {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "rows": rows}
            for path, data, rows in files
        ],
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data, _rows in files:
            archive.writestr(path, data)
        archive.writestr(MANIFEST, to_json(manifest))
    return buffer.getvalue(), manifest


def _summary(request_id: str, tenant: str, generated_at: str, services: Iterable[dict[str, Any]]) -> bytes:
    lines = [
        "Export of personal data (GDPR art. 15 and 20)",
        "",
        f"Request:   {request_id}",
        f"Customer:  {tenant}",
        f"Generated: {generated_at}",
        "",
        "Each folder holds one service's records, each kind of record as JSON and as CSV",
        "(UTF-8, comma-separated, first row is the header).  inventory.json in a folder says",
        "why that service holds the data, on which legal basis, for how long and who receives it.",
        "manifest.json lists every file with its SHA-256 checksum and row count.",
        "",
    ]
    for entry in services:
        lines.append(f"{entry['service']}: {entry['rows']} record(s)")
        for kind in entry["kinds"]:
            lines.append(f"  - {kind['kind']}: {kind['rows']}")
    return ("\n".join(lines) + "\n").encode("utf-8")
