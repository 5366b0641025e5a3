"""The gdpr service's own data inventory (R3, R5): what it stores about people while answering requests.

The gdpr service coordinates requests rather than answering them, so it is not a bus
participant; its declaration is added to the inventory it reports next to the others'.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.privacy import Category, DataField, Inventory

from .models import export_packages, requests

INVENTORY = Inventory(
    service="gdpr",
    categories=(
        Category(
            kind="data_subject_request",
            data_subjects="people exercising their GDPR rights (customer staff, meal recipients, support callers)",
            fields=(
                DataField("email", "the subject's e-mail address, as given in the request", encrypted=True),
                DataField("phone", "the subject's phone number, as given in the request", encrypted=True),
                DataField(
                    "personnummer", "the subject's personal identity number, as given in the request", encrypted=True
                ),
                DataField("username", "the subject's login name, as given in the request", encrypted=True),
                DataField("name", "the subject's name, as given in the request (issue 15)", encrypted=True),
                DataField("birth_date", "the subject's birth date, as given in the request", encrypted=True),
                DataField("unit", "the care unit or register the subject stays at, as given", encrypted=True),
                DataField(
                    "preview",
                    "the services' masked candidate cards (initials, birth year, unit, counts) shown to the approver",
                    encrypted=True,
                ),
                DataField("reason", "free-text reasons for the request, its extension or rejection", encrypted=True),
                DataField("requested_by", "user id of the compliance officer who opened or decided it (pseudonymous)"),
                DataField("references", "the services' pseudonymous subject references found for the subject"),
            ),
            purposes=("answer data-subject requests (GDPR art. 12, 15, 17, 20)", "accountability (GDPR art. 5(2))"),
            legal_basis="legal obligation (GDPR art. 6(1)(c))",
            role="controller",
            controller="vendor",
            retention="identifiers and reasons crypto-shredded IDENTIFIER_RETENTION after the request finished; "
            "the request record (ids, dates, outcome) is kept as evidence",
            recipients=("the participating services (identifiers only, over recept.gdpr)",),
            storage="gdpr database, tables requests and request_services",
            erasure="retained",
        ),
        Category(
            kind="export_package",
            data_subjects="people who asked for a copy of their data",
            fields=(
                DataField(
                    "package",
                    "the export ZIP: every record the services hold about the subject, possibly health data",
                    special=True,
                    encrypted=True,
                ),
            ),
            purposes=("hand the subject their data (GDPR art. 15, 20)",),
            legal_basis="legal obligation (GDPR art. 6(1)(c))",
            role="controller",
            controller="vendor",
            retention="deleted and crypto-shredded EXPORT_RETENTION after it was built",
            recipients=("the data subject, through the compliance officer",),
            storage="gdpr database, tables export_packages and request_services",
            erasure="deleted",
        ),
    ),
)


def counts(session: Session) -> dict[str, int]:
    """Live counts for the gdpr service's own categories."""
    live_requests = session.scalar(
        select(func.count()).select_from(requests).where(requests.c.identifiers_shredded_at.is_(None))
    )
    live_packages = session.scalar(
        select(func.count()).select_from(export_packages).where(export_packages.c.package.is_not(None))
    )
    return {"data_subject_request": int(live_requests or 0), "export_package": int(live_packages or 0)}


def tenant_counts(session: Session) -> dict[str, dict[str, int]]:
    """The same per tenant slug (a customer's records of processing, issue 15)."""
    out: dict[str, dict[str, int]] = {}
    live = requests.c.identifiers_shredded_at.is_(None)
    query = select(requests.c.tenant, func.count()).where(live).group_by(requests.c.tenant)
    for tenant, n in session.execute(query):
        out.setdefault(tenant, {})["data_subject_request"] = int(n)
    packages = (
        select(requests.c.tenant, func.count())
        .select_from(export_packages)
        .join(requests, requests.c.id == export_packages.c.request_id)
        .where(export_packages.c.package.is_not(None))
        .group_by(requests.c.tenant)
    )
    for tenant, n in session.execute(packages):
        out.setdefault(tenant, {})["export_package"] = int(n)
    return out
