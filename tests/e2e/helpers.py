"""Steps of a data-subject request on the running system, shared by the e2e scenarios (docs/e2e.md):
wait for a request's preview, pick its exact candidates, wait for it to finish."""

from __future__ import annotations

from typing import Any

from tests.processes import wait_until

from .conftest import Api

UNFINISHED = ("previewing", "awaiting_approval", "awaiting_confirmation", "in_progress")


def previewed(gdpr: Api, token: str, request_id: str, timeout: float = 60) -> dict[str, Any]:
    """The request's document once every service has answered its preview (issue 15): awaiting approval."""

    def ready():
        view = gdpr.ok("GET", f"/api/v1/requests/{request_id}", token)
        return view if view["status"] != "previewing" else None

    view = wait_until(ready, timeout, "the preview")
    assert view["status"] == "awaiting_approval", view["status"]
    return view


def exact_decision(preview: dict[str, Any]) -> dict[str, Any]:
    """An approval of ``preview`` confirming its exact candidates only, as an approver who recognises the person."""
    decision = {
        "preview_hash": preview["hash"],
        "confirmed": [
            c["id"] for entry in preview["services"].values() for c in entry["candidates"] if c["match"] == "exact"
        ],
    }
    assert decision["confirmed"], preview
    return decision


def finish(gdpr: Api, token: str, request_id: str, timeout: float = 90) -> dict[str, Any]:
    """The request's document once it is no longer waiting or running."""

    def finished():
        view = gdpr.ok("GET", f"/api/v1/requests/{request_id}", token)
        return view if view["status"] not in UNFINISHED else None

    return wait_until(finished, timeout, "the request to finish", interval=0.5)
