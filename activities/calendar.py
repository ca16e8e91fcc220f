"""The working-day calendar as a (local) activity, so each deadline it computes is recorded in history."""

from __future__ import annotations

from temporalio import activity

from activities.names import PLAN_DEADLINE
from complaints.calendar import WorkingDayCalendar
from complaints.models import PlanDeadlinesInput, PlannedDeadline


class CalendarActivities:
    def __init__(self, calendar: WorkingDayCalendar) -> None:
        self._calendar = calendar

    @activity.defn(name=PLAN_DEADLINE)
    async def plan_deadline(self, input: PlanDeadlinesInput) -> PlannedDeadline:
        """End of the N-th Dutch working day after the day of receipt, and which calendar said so."""
        return PlannedDeadline(
            at=self._calendar.deadline_after(input.received_at, input.working_days),
            calendar=self._calendar.name,
        )
