"""Dutch working days: Monday to Friday, minus NL public holidays and company closure days.

Deadlines are computed once (in an activity, so the result is recorded in the
workflow's history) and stored with the name of the calendar that computed them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from importlib.metadata import version
from zoneinfo import ZoneInfo

import holidays

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
END_OF_DAY = time(23, 59, 59)

_MONTHS_NL = (
    "januari", "februari", "maart", "april", "mei", "juni",
    "juli", "augustus", "september", "oktober", "november", "december",
)


def dutch_long_date(value: date | datetime) -> str:
    """``30 april 2026``: the way letters write a date (local date for datetimes)."""
    if isinstance(value, datetime):
        value = value.astimezone(AMSTERDAM).date()
    return f"{value.day} {_MONTHS_NL[value.month - 1]} {value.year}"


def end_of_day(day: date) -> datetime:
    """23:59:59 Europe/Amsterdam on ``day``."""
    return datetime.combine(day, END_OF_DAY, tzinfo=AMSTERDAM)


def local_date(moment: datetime) -> date:
    return moment.astimezone(AMSTERDAM).date()


@dataclass(frozen=True)
class WorkingDayCalendar:
    closure_days: frozenset[date] = field(default_factory=frozenset)

    @property
    def name(self) -> str:
        name = f"NL public holidays (holidays {_holidays_version()})"
        if self.closure_days:
            days = ",".join(d.isoformat() for d in sorted(self.closure_days))
            name += f" + company closure days {days}"
        return name

    def is_working_day(self, day: date) -> bool:
        if day.weekday() >= 5 or day in self.closure_days:
            return False
        return day not in _nl_holidays(day.year)

    def add_working_days(self, day: date, count: int) -> date:
        """The ``count``-th working day after ``day`` (``day`` itself never counts)."""
        if count < 1:
            raise ValueError("count must be at least 1")
        current = day
        remaining = count
        while remaining:
            current += timedelta(days=1)
            if self.is_working_day(current):
                remaining -= 1
        return current

    def deadline_after(self, received_at: datetime, working_days: int) -> datetime:
        """End of the ``working_days``-th working day after the day of receipt, Amsterdam time."""
        return end_of_day(self.add_working_days(local_date(received_at), working_days))


@functools.cache
def _holidays_version() -> str:
    """The installed ``holidays`` package's version (read from its metadata once per process)."""
    return version("holidays")


@functools.lru_cache(maxsize=16)
def _nl_holidays(year: int) -> holidays.HolidayBase:
    """The NL public holidays of ``year``, built once per process and year (building them is the slow part
    of planning a deadline)."""
    return holidays.country_holidays("NL", years=year)
