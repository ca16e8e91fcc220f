"""The product's schedules, created or brought up to date by the worker at start (any number of workers
leave one of each; an operator's pause and note are kept across the update):

- ``annual-complaint-analysis``: the yearly analysis, every 15 January at 06:00 Amsterdam time; each run
  analyses the calendar year before it (the workflow's input year is None);
- ``dossier-retention-sweep``: every day at 03:30 Amsterdam time, the dossiers whose retention year has
  ended are erased, whatever became of their complaint's workflow.
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

from complaints.models import AnnualAnalysisInput, RetentionSweepInput
from workflows.analysis import AnnualAnalysisWorkflow
from workflows.retention import RetentionSweepWorkflow

SCHEDULE_ID = "annual-complaint-analysis"
SWEEP_SCHEDULE_ID = "dossier-retention-sweep"
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


def sweep_schedule(task_queue: str) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            RetentionSweepWorkflow.run, RetentionSweepInput(), id=SWEEP_SCHEDULE_ID, task_queue=task_queue,
            static_summary="the daily sweep: erase the dossiers whose retention year has ended"),
        spec=ScheduleSpec(
            calendars=[ScheduleCalendarSpec(hour=[ScheduleRange(3)], minute=[ScheduleRange(30)],
                                            second=[ScheduleRange(0)], comment="every day, 03:30 Europe/Amsterdam")],
            time_zone_name=TIME_ZONE),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(days=1)),
    )


async def ensure_annual_schedule(client: Client, task_queue: str, schedule_id: str = SCHEDULE_ID) -> ScheduleHandle:
    """Create the yearly analysis's schedule, or bring an existing one up to date (idempotent)."""
    return await ensure_schedule(client, schedule_id, annual_schedule(task_queue))


async def ensure_sweep_schedule(client: Client, task_queue: str,
                                schedule_id: str = SWEEP_SCHEDULE_ID) -> ScheduleHandle:
    """Create the daily retention sweep's schedule, or bring an existing one up to date (idempotent)."""
    return await ensure_schedule(client, schedule_id, sweep_schedule(task_queue))


async def ensure_schedule(client: Client, schedule_id: str, schedule: Schedule) -> ScheduleHandle:
    """Create the schedule, or bring an existing one up to the current definition, keeping its state."""
    try:
        return await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        pass
    handle = client.get_schedule_handle(schedule_id)

    def current(existing: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=dataclasses.replace(schedule, state=existing.description.schedule.state))

    await handle.update(current)
    return handle
