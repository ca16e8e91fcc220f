"""The schedule ``annual-complaint-analysis``: the yearly analysis, every 15 January at 06:00 Amsterdam time.

Each run analyses the calendar year before it (the workflow's input year is None). The
worker calls :func:`ensure_annual_schedule` at start: it creates the schedule, or updates an
existing one to the current definition, so starting any number of workers leaves one schedule.
An operator's pause and note are kept across that update.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from complaints.models import AnnualAnalysisInput
from workflows.analysis import AnnualAnalysisWorkflow

SCHEDULE_ID = "annual-complaint-analysis"
TIME_ZONE = "Europe/Amsterdam"
#: A worker or server outage of up to a week still produces the report once it is back.
CATCHUP_WINDOW = timedelta(days=7)


def annual_schedule(task_queue: str) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            AnnualAnalysisWorkflow.run,
            AnnualAnalysisInput(year=None, requested_by=None),
            id=SCHEDULE_ID,  # Temporal appends the scheduled time
            task_queue=task_queue,
            static_summary="the yearly analysis of complaints (the previous calendar year)",
        ),
        spec=ScheduleSpec(
            calendars=[ScheduleCalendarSpec(
                month=[ScheduleRange(1)], day_of_month=[ScheduleRange(15)],
                hour=[ScheduleRange(6)], minute=[ScheduleRange(0)], second=[ScheduleRange(0)],
                comment="15 January, 06:00 Europe/Amsterdam: the previous year's analysis")],
            time_zone_name=TIME_ZONE,
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW),
    )


async def ensure_annual_schedule(client: Client, task_queue: str, schedule_id: str = SCHEDULE_ID) -> ScheduleHandle:
    """Create the schedule, or bring an existing one up to the current definition (idempotent)."""
    schedule = annual_schedule(task_queue)
    try:
        return await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        pass
    handle = client.get_schedule_handle(schedule_id)

    def current(existing: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=dataclasses.replace(schedule, state=existing.description.schedule.state))

    await handle.update(current)
    return handle
