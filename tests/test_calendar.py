"""Working days and the acknowledgement deadline (3 working days, end of day, Amsterdam)."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from complaints.calendar import AMSTERDAM, WorkingDayCalendar, dutch_long_date, end_of_day

NL = WorkingDayCalendar()


@pytest.mark.parametrize(
    ("received", "acknowledge_by", "why"),
    [
        (date(2026, 4, 24), date(2026, 4, 30), "Friday; Monday 27 April is Koningsdag"),
        (date(2026, 4, 2), date(2026, 4, 9), "Good Friday and Easter Monday"),
        (date(2026, 5, 13), date(2026, 5, 19), "Ascension Day on Thursday 14 May"),
        (date(2026, 12, 24), date(2026, 12, 30), "Christmas Day and Boxing Day"),
        (date(2026, 11, 7), date(2026, 11, 11), "received on a Saturday"),
    ],
)
def test_acknowledge_by_is_end_of_third_working_day(received: date, acknowledge_by: date, why: str) -> None:
    receipt = datetime.combine(received, datetime.min.time(), tzinfo=AMSTERDAM).replace(hour=14)
    deadline = NL.deadline_after(receipt, 3)
    assert deadline == datetime.combine(acknowledge_by, datetime.min.time(), tzinfo=AMSTERDAM).replace(
        hour=23, minute=59, second=59), why


def test_receipt_late_in_the_evening_utc_counts_by_the_amsterdam_date() -> None:
    # 23:30 UTC on Thursday 23 April is already Friday 24 April in Amsterdam.
    receipt = datetime(2026, 4, 23, 23, 30, tzinfo=timezone.utc)
    assert NL.deadline_after(receipt, 3) == end_of_day(date(2026, 4, 30))


def test_company_closure_days_are_not_working_days() -> None:
    closed = WorkingDayCalendar(frozenset({date(2026, 12, 28), date(2026, 12, 29)}))
    receipt = datetime(2026, 12, 24, 10, tzinfo=AMSTERDAM)
    assert closed.deadline_after(receipt, 3) == end_of_day(date(2027, 1, 4))
    assert "2026-12-28,2026-12-29" in closed.name
    assert "holidays" in NL.name and "closure" not in NL.name


def test_ten_working_days_for_a_stalled_informal_phase() -> None:
    # Monday 20 April 2026 + 10 working days, Koningsdag (27 April) excluded: Tuesday 5 May.
    # (Bevrijdingsdag, 5 May, is not a public holiday in the NL calendar of the holidays package
    # outside lustrum years.)
    receipt = datetime(2026, 4, 20, 9, tzinfo=AMSTERDAM)
    assert NL.deadline_after(receipt, 10).date() == NL.add_working_days(date(2026, 4, 20), 10)
    assert NL.add_working_days(date(2026, 4, 20), 10) == date(2026, 5, 5)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (date(2026, 4, 30), "30 april 2026"),
        (date(2027, 1, 1), "1 januari 2027"),
        (datetime(2026, 3, 31, 23, 30, tzinfo=timezone.utc), "1 april 2026"),
    ],
)
def test_dutch_long_dates(value: date, text: str) -> None:
    assert dutch_long_date(value) == text
