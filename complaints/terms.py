"""The terms of Level Up's complaint procedure, each stated once.

Everything that states a term is built from here: the workflow's timers and their
summaries in the Web UI, the director's alerts, the letters' template values, the yearly
report's labels and its measure windows. Change a term here and all of them say the new
one (``tests/test_terms.py`` fails if a letter template writes a term out itself).

Each term speaks Dutch (letters, alerts) and English (the Web UI, the report in English):
``ACKNOWLEDGE_WITHIN.nl()`` is ``3 werkdagen``, ``.en()`` is ``3 working days``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Unit(StrEnum):
    WORKING_DAYS = "working days"
    DAYS = "days"
    WEEKS = "weeks"
    HOURS = "hours"
    YEARS = "years"


#: (singular, plural) of each unit.
_NL = {Unit.WORKING_DAYS: ("werkdag", "werkdagen"), Unit.DAYS: ("dag", "dagen"),
       Unit.WEEKS: ("week", "weken"), Unit.HOURS: ("uur", "uur"), Unit.YEARS: ("jaar", "jaar")}
_EN = {Unit.WORKING_DAYS: ("working day", "working days"), Unit.DAYS: ("day", "days"),
       Unit.WEEKS: ("week", "weeks"), Unit.HOURS: ("hour", "hours"), Unit.YEARS: ("year", "years")}
_FIXED = {Unit.DAYS: timedelta(days=1), Unit.WEEKS: timedelta(weeks=1), Unit.HOURS: timedelta(hours=1)}


@dataclass(frozen=True)
class Term:
    """A length of time the procedure names: ``count`` of ``unit``."""

    count: int
    unit: Unit

    def nl(self) -> str:
        """In Dutch, as letters and alerts write it: ``2 weken``."""
        return f"{self.count} {_NL[self.unit][self.count != 1]}"

    def en(self) -> str:
        """In English, as the Web UI and the English report write it: ``2 weeks``."""
        return f"{self.count} {_EN[self.unit][self.count != 1]}"

    @property
    def delta(self) -> timedelta:
        """The term as a fixed length of time; working days need the calendar, years the date."""
        if self.unit not in _FIXED:
            raise ValueError(f"{self.en()} is not a fixed length of time")
        return self.count * _FIXED[self.unit]

    @property
    def days(self) -> int:
        """Whole days (for the report's SQL windows)."""
        return self.delta.days

    def after(self, moment: datetime) -> datetime:
        """``moment`` plus this term (a year after 29 February is 28 February)."""
        if self.unit is Unit.YEARS:
            try:
                return moment.replace(year=moment.year + self.count)
            except ValueError:  # 29 February
                return moment.replace(year=moment.year + self.count, day=28)
        return moment + self.delta

    def before(self, moment: datetime) -> datetime:
        """``moment`` minus this term (a year before 29 February is 28 February)."""
        if self.unit is Unit.YEARS:
            return Term(-self.count, Unit.YEARS).after(moment)
        return moment - self.delta


# ------------------------------------------------------------------ the procedure's terms

#: The informal phase: a manager or external officer talks it through; after this the director hears of it.
INFORMAL_STALLED_AFTER = Term(10, Unit.WORKING_DAYS)
#: Receipt of a formal complaint is acknowledged within this, counted from the day after receipt.
ACKNOWLEDGE_WITHIN = Term(3, Unit.WORKING_DAYS)
#: A formal complaint is resolved within this of its receipt ...
RESOLVE_WITHIN = Term(4, Unit.WEEKS)
#: ... or, within it, the new term is announced; without staff doing so, the term is extended by this.
DEFAULT_EXTENSION = Term(4, Unit.WEEKS)
#: The director is warned this long before the resolution term ends.
DUE_SOON_BEFORE = Term(7, Unit.DAYS)
#: This long before the term ends without a decision, the workflow announces the new term itself.
AUTO_EXTEND_BEFORE = Term(24, Unit.HOURS)
#: After the decision the complainant has this long to say they do not agree.
OBJECTION_WINDOW = Term(14, Unit.DAYS)
#: No agreement: the independent mediator is engaged within this.
MEDIATOR_WITHIN = Term(10, Unit.WORKING_DAYS)
#: The consequences of the mediator's binding verdict are picked up within this.
CONSEQUENCES_WITHIN = Term(2, Unit.WEEKS)
#: A complaint that came by mail without all minimum contents: the director hears of it after this.
COMPLETE_WITHIN = Term(5, Unit.WORKING_DAYS)
#: A closed complaint is kept in the dossier this long; then its personal data is erased.
RETENTION = Term(1, Unit.YEARS)

# ------------------------------------------------------------------ sensible bounds

#: Intake refuses a complaint received (or written) longer ago than this: every deadline would have passed.
INTAKE_LOOKBACK = Term(1, Unit.YEARS)
#: Staff may extend the resolution term at most this far ahead of today.
EXTENSION_LIMIT = Term(1, Unit.YEARS)

# ------------------------------------------------------------------ the yearly analysis

#: A measure is judged by the complaints about its product this long before and after it.
MEASURE_WINDOW = Term(180, Unit.DAYS)
#: A measure is judged only once this long has passed since it.
JUDGE_MEASURE_AFTER = Term(90, Unit.DAYS)

#: Every term by the name a letter template uses for it: its constant's name in lower case
#: (``$consequences_within`` for ``CONSEQUENCES_WITHIN``).
BY_NAME: dict[str, Term] = {name.lower(): value for name, value in dict(globals()).items()
                            if isinstance(value, Term)}


def template_values() -> dict[str, str]:
    """Every term in Dutch, by its template name: what letters may state (``$retention``: ``1 jaar``)."""
    return {name: term.nl() for name, term in BY_NAME.items()}
