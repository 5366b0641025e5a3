"""The orders rules on their own (rules.py): deadlines, who can be ordered for, bookkeeping retention (R2, R9).

No database, broker or clock: each rule gets its inputs and is checked directly.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.orders.rules import (
    BOOKKEEPING_YEARS,
    Deadline,
    DeadlinePassed,
    check_not_erased,
    check_orderable,
    check_timezone,
    check_validity,
    format_deadline_time,
    individual_id_of,
    is_retained,
    order_change,
    parse_deadline_time,
    retain_until,
    retention_cutoff,
    subject_of,
)
from shared.errors import Conflict, Gone, Invalid

pytestmark = pytest.mark.unit

NOON_DAY_BEFORE = Deadline(minutes=12 * 60, days_before=1, timezone="Europe/Stockholm")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- deadlines ------------------------------------------------------------------------------------


def test_deadline_is_local_time_the_given_days_before_delivery():
    at = NOON_DAY_BEFORE.at(date(2030, 3, 12))
    assert at.isoformat() == "2030-03-11T12:00:00+01:00"
    # Summer time: the same local noon is 10:00 UTC instead of 11:00.
    assert NOON_DAY_BEFORE.at(date(2030, 6, 12)).astimezone(UTC) == utc("2030-06-11T10:00:00+00:00")
    assert Deadline(0, 0, "Europe/Stockholm").at(date(2030, 3, 12)).isoformat() == "2030-03-12T00:00:00+01:00"


def test_deadline_is_open_until_just_before_it_and_closed_from_it_on():
    delivery = date(2030, 3, 12)
    NOON_DAY_BEFORE.check(delivery, utc("2030-03-11T10:59:59+00:00"), "placed")
    with pytest.raises(DeadlinePassed) as passed:
        NOON_DAY_BEFORE.check(delivery, utc("2030-03-11T11:00:00+00:00"), "changed")
    assert isinstance(passed.value, Conflict)
    assert "2030-03-12" in str(passed.value) and "2030-03-11T12:00+01:00" in str(passed.value)
    assert str(passed.value).endswith("can no longer be changed")
    with pytest.raises(DeadlinePassed):
        NOON_DAY_BEFORE.check(delivery, utc("2030-03-12T09:00:00+00:00"), "cancelled")


def test_deadline_reads_a_registers_columns():
    class Row:
        deadline_minutes, deadline_days_before, timezone = 450, 2, "Europe/Helsinki"

    assert Deadline.of(Row()) == Deadline(450, 2, "Europe/Helsinki")


@pytest.mark.parametrize("text, minutes", [("00:00", 0), ("07:30", 450), ("12:00", 720), ("23:59", 1439)])
def test_deadline_time_round_trips(text, minutes):
    assert parse_deadline_time(text) == minutes
    assert format_deadline_time(minutes) == text


def test_time_zone_must_be_known():
    assert check_timezone("Europe/Stockholm") == "Europe/Stockholm"
    for bad in ("Mars/Olympus", "../etc/passwd", ""):
        with pytest.raises(Invalid) as invalid:
            check_timezone(bad)
        assert invalid.value.errors == [{"field": "timezone", "message": "is not a known time zone"}]


# --- who can be ordered for ----------------------------------------------------------------------


def test_an_active_individual_is_orderable_within_the_admission_period():
    check_orderable("active", None, None, date(2030, 3, 12))
    check_orderable("active", date(2030, 3, 12), date(2030, 3, 20), date(2030, 3, 12))
    check_orderable("active", date(2030, 3, 1), date(2030, 3, 12), date(2030, 3, 12))


def test_no_orders_before_admission_after_discharge_or_after_erasure():
    with pytest.raises(Conflict, match="not yet admitted"):
        check_orderable("active", date(2030, 3, 13), None, date(2030, 3, 12))
    with pytest.raises(Conflict, match="discharged before"):
        check_orderable("active", None, date(2030, 3, 11), date(2030, 3, 12))
    # The discharge day itself can still be ordered for.
    check_orderable("discharged", None, date(2030, 3, 12), date(2030, 3, 12))
    with pytest.raises(Conflict, match="discharged before"):
        check_orderable("discharged", None, None, date(2030, 3, 12))
    with pytest.raises(Conflict, match="erased"):
        check_orderable("erased", None, None, date(2030, 3, 12))


def test_admission_period_cannot_end_before_it_starts():
    check_validity(None, None)
    check_validity(date(2030, 3, 1), date(2030, 3, 1))
    with pytest.raises(Invalid) as invalid:
        check_validity(date(2030, 3, 2), date(2030, 3, 1))
    assert invalid.value.errors == [{"field": "valid_to", "message": "is before valid_from"}]


def test_an_erased_individual_is_gone():
    check_not_erased("active")
    check_not_erased("discharged")
    with pytest.raises(Gone):
        check_not_erased("erased")


def test_subject_references_name_individuals_of_this_service_only():
    assert subject_of("abc") == "orders:individual:abc"
    assert individual_id_of(subject_of("abc")) == "abc"
    assert individual_id_of("crm:person:abc") is None


def test_change_records_carry_values_of_non_personal_fields_only():
    assert order_change("quantity", 4, 6) == {"field": "quantity", "before": 4, "after": 6}
    assert order_change("delivery_date", date(2030, 3, 12), date(2030, 3, 13)) == {
        "field": "delivery_date",
        "before": "2030-03-12",
        "after": "2030-03-13",
    }
    assert order_change("diet_variant", "gluten_free", "lactose_free") == {"field": "diet_variant"}


# --- bookkeeping retention (R2) ---------------------------------------------------------------------


def test_orders_are_kept_until_the_end_of_the_seventh_year_after_delivery():
    assert BOOKKEEPING_YEARS == 7
    assert retain_until(date(2023, 11, 15)) == date(2030, 12, 31)
    assert retain_until(date(2023, 1, 1)) == date(2030, 12, 31)
    assert is_retained(date(2023, 11, 15), date(2030, 12, 31))
    assert not is_retained(date(2023, 11, 15), date(2031, 1, 1))
    assert retention_cutoff(date(2030, 3, 10)) == date(2023, 1, 1)


def test_the_purge_cutoff_and_the_erasure_rule_agree_on_every_day():
    """The purge compares with retention_cutoff, an erasure asks is_retained: one rule, two forms."""
    for today in (date(2030, 1, 1), date(2030, 3, 10), date(2030, 12, 31), date(2032, 2, 29)):
        cutoff = retention_cutoff(today)
        day = date(today.year - 9, 1, 1)
        while day <= today:
            assert (day < cutoff) == (not is_retained(day, today)), (day, today)
            day += timedelta(days=1)
