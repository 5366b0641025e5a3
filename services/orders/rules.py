"""The orders service's pure rules: vocabulary, order deadlines, who can be ordered for, bookkeeping retention.

Plain values in, a value or a typed exception out: no database, no Flask, no clock of their
own (the caller passes ``now`` or ``today``), so each rule is unit-tested directly
(tests/orders/test_rules.py) and the aggregates (access, catalogue, individuals, ordering)
apply the same rule wherever it is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.clock import iso_date
from shared.errors import Conflict, Gone, Invalid

from . import events as ev

RIGHTS = ev.RIGHTS  # view, order, change, administer (R8, R12)
MEALS = ("breakfast", "lunch", "snack", "dinner", "evening")
UNIT_KINDS = ("care_unit", "hospital_ward", "school_kitchen", "care_home", "other")
ARTICLE_KINDS = ("meal", "diet_variant", "extra")
TENANT_ADMIN = "tenant_admin"

# --- individuals (R7, R16) --------------------------------------------------------------------

SUBJECT_PREFIX = "orders:individual:"
# Columns holding the individual's personal data, encrypted under the individual's data key (R7).
IDENTITY_FIELDS = ("name", "personnummer", "date_of_birth", "room", "bed")
HEALTH_FIELDS = ("diets", "allergies", "texture_level", "notes")  # special category (R16, art. 9)
ENCRYPTED_FIELDS = IDENTITY_FIELDS + HEALTH_FIELDS
STAY_FIELDS = ("valid_from", "valid_to")  # admission and discharge: encrypted dates too (issue 14)
UNIT_SUBJECT_PREFIX = "orders:unit:"  # key of a unit order's diet variant (no person behind it)
LIST_FIELDS = ("diets", "allergies")


def subject_of(individual_id: str) -> str:
    return SUBJECT_PREFIX + individual_id


def variant_subject(individual_id: str | None, unit_id: str) -> str:
    """Whose data key encrypts an order's diet variant: the individual's, else the unit's."""
    return subject_of(individual_id) if individual_id else UNIT_SUBJECT_PREFIX + unit_id


def individual_id_of(reference: str) -> str | None:
    """The individual id in a subject reference of this service; None for any other reference."""
    return reference[len(SUBJECT_PREFIX) :] if reference.startswith(SUBJECT_PREFIX) else None


def field_error(field: str, message: str) -> Invalid:
    return Invalid(f"{field} {message}", errors=[{"field": field, "message": message}])


def check_validity(valid_from: date | None, valid_to: date | None) -> None:
    """An admission period cannot end before it starts."""
    if valid_from is not None and valid_to is not None and valid_to < valid_from:
        raise field_error("valid_to", "is before valid_from")


def check_not_erased(status: str) -> None:
    if status == "erased":
        raise Gone("this individual was erased on request")


def check_orderable(status: str, valid_from: date | None, valid_to: date | None, delivery_date: date) -> None:
    """No orders for an erased or discharged individual, nor before admission."""
    if status == "erased":
        raise Conflict("the individual was erased; no orders can be placed for them")
    # A discharge records its date in valid_to: meals up to and including that day can be ordered.
    if (valid_to is not None and delivery_date > valid_to) or (status == "discharged" and valid_to is None):
        raise Conflict("the individual is discharged before that delivery date")
    if valid_from is not None and delivery_date < valid_from:
        raise Conflict("the individual is not yet admitted on that delivery date")


# --- order deadlines --------------------------------------------------------------------------


class DeadlinePassed(Conflict):
    title = "Order deadline passed"
    type_suffix = "order-deadline-passed"


class _DeadlineColumns(Protocol):
    deadline_minutes: int
    deadline_days_before: int
    timezone: str


@dataclass(frozen=True)
class Deadline:
    """A register's deadline: a local time of day, some days before delivery, in the register's zone."""

    minutes: int  # local time of day, minutes after midnight
    days_before: int
    timezone: str

    def at(self, delivery_date: date) -> datetime:
        day = delivery_date - timedelta(days=self.days_before)
        return datetime.combine(day, time(self.minutes // 60, self.minutes % 60), tzinfo=ZoneInfo(self.timezone))

    def check(self, delivery_date: date, now: datetime, doing: str) -> None:
        """DeadlinePassed once ``now`` reached the deadline of ``delivery_date`` (it is open until just before)."""
        deadline = self.at(delivery_date)
        if now >= deadline:
            raise DeadlinePassed(
                f"the order deadline for delivery on {delivery_date.isoformat()} passed at "
                f"{deadline.isoformat(timespec='minutes')}; orders for that day can no longer be {doing}"
            )

    @staticmethod
    def of(row: _DeadlineColumns) -> Deadline:
        return Deadline(row.deadline_minutes, row.deadline_days_before, row.timezone)


def parse_deadline_time(text: str) -> int:
    """``"HH:MM"`` (already checked by the request schema) as minutes after midnight."""
    hours, _, minutes = text.partition(":")
    return int(hours) * 60 + int(minutes)


def format_deadline_time(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise field_error("timezone", "is not a known time zone") from None
    return name


def order_change(field: str, before: Any, after: Any) -> dict[str, Any]:
    """One entry of an order's change record (history and event): values only for non-personal fields."""
    if field not in ev.ORDER_VALUE_FIELDS:
        return {"field": field}  # the diet variant is named, its values stay out of the log
    if isinstance(before, date):
        before, after = iso_date(before), iso_date(after)
    return {"field": field, "before": before, "after": after}


# --- bookkeeping retention (R2) -----------------------------------------------------------------
# The one rule for how long an order is kept: the retention purge (ordering.purge_expired_orders)
# and the erasure of an individual (individuals.Individuals.erase) both ask it.

BOOKKEEPING_LEGAL_BASIS = "Bokföringslagen (1999:1078) 7 kap. 2 §"
BOOKKEEPING_YEARS = 7


def retain_until(delivery_date: date) -> date:
    """Bookkeeping records are kept 7 years after the end of the fiscal (calendar) year."""
    return date(delivery_date.year + BOOKKEEPING_YEARS, 12, 31)


def is_retained(delivery_date: date, today: date) -> bool:
    """Whether an order delivered on ``delivery_date`` must still be kept on ``today``."""
    return retain_until(delivery_date) >= today


def retention_cutoff(today: date) -> date:
    """Orders delivered before this date are past retain_until and must go.

    The same rule as ``is_retained``, as one date a query can compare against:
    ``delivery_date < retention_cutoff(today)`` exactly when ``not is_retained(delivery_date, today)``.
    """
    return date(today.year - BOOKKEEPING_YEARS, 1, 1)


# --- de-identification of retained orders (issue 14) ---------------------------------------------
# An order kept for bookkeeping after its individual's erasure must not single the person out:
# the unit and delivery date it keeps have to describe at least k people (RETAINED_K).  The diet
# variant, the delivery point and the change history go entirely; the date and the unit are
# generalised one level at a time until the group is large enough.

RETAINED_LEVELS = ("unit_month", "register_month", "register_year")


def retained_level(people_in_unit_month: int, people_in_register_month: int, k: int) -> str:
    """The finest level at which a retained order still describes at least ``k`` people.

    ``register_year`` is the last level: bookkeeping law keeps the record even when fewer
    than ``k`` people were ordered for in the register that year (then it holds only the
    register, the year, the article, the meal and the quantity).
    """
    if people_in_unit_month >= k:
        return "unit_month"
    if people_in_register_month >= k:
        return "register_month"
    return "register_year"


def generalised_date(delivery_date: date, level: str) -> date:
    """The delivery date a retained order keeps: the first of its month, or of its year."""
    return date(delivery_date.year, 1, 1) if level == "register_year" else delivery_date.replace(day=1)
