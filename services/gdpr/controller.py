"""Who decides about a data-subject request: the customer as controller of its processor data (issue 15).

Pure rules, no database: ``Coordinator.open``, ``approve`` and ``confirm`` (domain.py) call them with the
caller's principal and what they know of the request.

For the customer's order registers the vendor is only the **processor** (GDPR art. 28); the customer
tenant is the controller and decides.  So:

- A request on a customer tenant whose services hold processor data (a category with
  ``role: "processor"`` in a live participant's inventory) carries the controller's instruction.  Opened
  by that tenant's ``privacy_officer``, the request is itself the instruction.  Opened by a vendor
  ``compliance_officer``, it must name the instruction (who at the customer gave it, when, a reference)
  and a privacy officer of that tenant confirms it before anything runs (``awaiting_confirmation``).
- Four eyes: whoever opened a request never approves it.  On processor data one of the people who opened,
  approved or confirmed it is the customer's privacy officer.
- Controller data of the vendor's own (logins, support records; the vendor tenant's requests) stays the
  vendor's decision: a vendor officer opens it and a second one approves it, as before.
- A privacy officer acts for its own tenant only; anything of another tenant does not exist for it (404).
- A person asking for themself on the public page (``DataSubject``, services/gdpr/public.py) opens a
  request but decides nothing: about the vendor's own data a vendor officer approves it as for
  any request; about a customer's processor data, the customer's privacy officer confirms it first
  (``awaiting_confirmation``): the person's request reaches the controller as an instruction to confirm.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from shared.clock import rfc3339
from shared.errors import AccessDenied, Conflict, Invalid, NotFound
from shared.tokens import Principal

VENDOR_OFFICER = "compliance_officer"
PRIVACY_OFFICER = "privacy_officer"
DATA_SUBJECT = "data_subject"
STEPS = ("opened", "approved", "confirmed", "rejected")


@dataclass(frozen=True)
class Party:
    """Someone taking part in a request's decision, by role and tenant (user id for the four-eyes check)."""

    role: str  # compliance_officer | privacy_officer
    tenant: str | None
    user_id: str
    vendor: bool  # a vendor officer (token tenant is a vendor tenant)

    def record(self, step: str, at: datetime) -> dict[str, Any]:
        return {"step": step, "role": self.role, "tenant": self.tenant, "user_id": self.user_id, "at": rfc3339(at)}


@dataclass(frozen=True)
class DataSubject:
    """The person themself, asking on the public page after verifying an address: no account, no token.

    It stands in for a ``Principal`` when ``Coordinator.open`` is called for a public request."""

    tenant: str  # the tenant the public page acts in (the vendor's)
    user_id: str  # a fixed actor id of the public page, never the person's

    @property
    def actor(self) -> dict[str, Any]:
        return {"id": self.user_id, "tenant": None, "kind": "service"}


def party(principal: Principal | DataSubject, tenant: str, vendor_tenants: Iterable[str]) -> Party:
    """The caller as a party to a request of ``tenant``.

    A vendor compliance officer reaches every tenant; anyone else only its own (another tenant's request
    is a 404); a caller with neither officer role may not decide (403).  The person on the public page
    is a party that opens requests only (``on_open``)."""
    if isinstance(principal, DataSubject):
        return Party(DATA_SUBJECT, None, principal.user_id, vendor=False)
    if principal.tenant in tuple(vendor_tenants):
        if principal.has_any_role((VENDOR_OFFICER,)):
            return Party(VENDOR_OFFICER, principal.tenant, principal.user_id, vendor=True)
        raise AccessDenied("your roles do not allow this operation")
    if principal.tenant != tenant:
        raise NotFound("no such request")
    if principal.has_any_role((PRIVACY_OFFICER,)):
        return Party(PRIVACY_OFFICER, principal.tenant, principal.user_id, vendor=False)
    if principal.has_any_role((VENDOR_OFFICER,)):
        # An officer of a customer tenant (deployments that list no vendor tenant): its own tenant only.
        return Party(VENDOR_OFFICER, principal.tenant, principal.user_id, vendor=False)
    raise AccessDenied("your roles do not allow this operation")


def processor_kinds(inventories: Iterable[Mapping[str, Any]]) -> list[str]:
    """The kinds of data the services hold as the customer's processor (their inventories' ``role``)."""
    kinds: list[str] = []
    for inventory in inventories:
        for category in (inventory or {}).get("categories", []):
            if category.get("role") == "processor":
                kinds.append(f"{inventory.get('service')}:{category.get('kind')}")
    return sorted(set(kinds))


def touches_processor_data(tenant: str, vendor_tenants: Iterable[str], inventories: Iterable[Mapping]) -> bool:
    """A request on a customer tenant reaches the processor data the services hold for it."""
    return tenant not in tuple(vendor_tenants) and bool(processor_kinds(inventories))


def binding_agreement(processor: bool, agreement: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The data processing agreement a request on processor data is bound to; without one, a 409 (art. 28(3):
    the processor acts only under a contract with the controller)."""
    if not processor:
        return None
    if agreement is None:
        raise Conflict(
            "the tenant has no data processing agreement on record; a request on its processor data needs one "
            "(record it in the auth service: PUT /api/v1/tenants/{slug}/agreement)"
        )
    return agreement


def _instruction_errors(instruction: Mapping[str, Any], today: date) -> list[dict[str, str]]:
    problems = []
    for name, limit in (("given_by", 200), ("reference", 100)):
        value = instruction.get(name)
        if not isinstance(value, str) or not 1 <= len(value.strip()) <= limit:
            problems.append({"field": f"instruction.{name}", "message": f"needs 1-{limit} characters"})
    given_at = instruction.get("given_at")
    try:
        when = date.fromisoformat(str(given_at)[:10])
    except ValueError:
        problems.append({"field": "instruction.given_at", "message": "is not a date (YYYY-MM-DD)"})
    else:
        if when > today:
            problems.append({"field": "instruction.given_at", "message": "is in the future"})
    return problems


@dataclass(frozen=True)
class Opening:
    """What the rules decide when a request is opened."""

    instruction: dict[str, str] | None  # to store (Vault-encrypted: ``given_by`` names a person)
    needs_confirmation: bool  # a privacy officer of the tenant must confirm before anything runs


def on_open(
    opener: Party,
    *,
    request_id: str,
    processor: bool,
    instruction: Mapping[str, Any] | None,
    now: datetime,
) -> Opening:
    """The instruction a new request carries, and whether it waits for the customer's confirmation."""
    if opener.role == DATA_SUBJECT:
        # The person's own request: on a customer's processor data it goes to the customer's privacy
        # officer, whose confirmation is the controller's instruction; the vendor's own data, the vendor's.
        return Opening(None, processor)
    if opener.role == PRIVACY_OFFICER:
        if instruction is not None:
            raise Invalid(
                "the request is invalid",
                errors=[{"field": "instruction", "message": "a privacy officer's own request is the instruction"}],
            )
        return Opening({"given_by": "privacy_officer", "given_at": rfc3339(now), "reference": request_id}, False)
    if not processor:
        # The vendor's own controller data: the vendor decides, nobody at a customer is asked.
        if instruction is not None:
            raise Invalid(
                "the request is invalid",
                errors=[{"field": "instruction", "message": "only a request on a customer's processor data takes one"}],
            )
        return Opening(None, False)
    if instruction is None:
        raise Invalid(
            "a request on a customer's processor data needs the customer's instruction",
            errors=[
                {
                    "field": "instruction",
                    "message": "give who at the customer instructed it (given_by), when (given_at) and a reference",
                }
            ],
        )
    problems = _instruction_errors(instruction, now.date())
    if problems:
        raise Invalid("the instruction is not valid", errors=problems)
    recorded = {
        "given_by": str(instruction["given_by"]).strip(),
        "given_at": str(instruction["given_at"]),
        "reference": str(instruction["reference"]).strip(),
    }
    return Opening(recorded, True)


def on_approve(
    approver: Party,
    *,
    requested_by: str,
    needs_confirmation: bool,
) -> str:
    """Check the approver and return the status the request moves to (in_progress or awaiting_confirmation).

    A privacy officer of the tenant approving a vendor officer's request confirms its instruction at once."""
    if approver.user_id == requested_by:
        # Four eyes: an erasure cannot be undone, so whoever asked for it cannot also release it.
        raise AccessDenied("a request must be approved by an officer other than its requester")
    if needs_confirmation and approver.role != PRIVACY_OFFICER:
        return "awaiting_confirmation"
    return "in_progress"


def on_confirm(confirmer: Party, *, requested_by: str, parties: Iterable[Mapping[str, Any]], status: str) -> None:
    """A privacy officer of the request's tenant confirms the instruction a vendor officer recorded."""
    if status != "awaiting_confirmation":
        raise Conflict(f"the request is {status}; only a request awaiting confirmation can be confirmed")
    if confirmer.role != PRIVACY_OFFICER:
        raise AccessDenied("only a privacy officer of the request's tenant confirms an instruction")
    if confirmer.user_id == requested_by or any(
        p.get("user_id") == confirmer.user_id for p in parties if p.get("step") == "approved"
    ):
        raise AccessDenied("the confirmation must come from someone who neither opened nor approved the request")


def approvals(parties: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The approvals as a request's document shows them: step, role, tenant and time, never a user id."""
    return [
        {"step": p["step"], "role": p["role"], "tenant": p["tenant"], "at": p["at"]}
        for p in parties
        if p.get("step") in ("approved", "confirmed")
    ]


def opened_by(parties: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Who opened the request, by role and tenant (the first pair of the four eyes), never a user id."""
    for p in parties:
        if p.get("step") == "opened":
            return {"role": p["role"], "tenant": p["tenant"], "at": p["at"]}
    return None


def visible_user(parties: Iterable[Mapping[str, Any]], user_id: str | None, viewer_tenant: str | None) -> str | None:
    """A party's user id, or None when the viewer is of another tenant than that party."""
    if user_id is None or viewer_tenant is None:
        return user_id
    for p in parties:
        if p.get("user_id") == user_id:
            return user_id if p.get("tenant") == viewer_tenant else None
    return None
