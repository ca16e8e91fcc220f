"""The schedule of the yearly analysis, as the worker sets it up at start, on the session's dev server."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleOverlapPolicy

from complaints.models import AnnualAnalysisInput
from tests.lifecycle import eventually
from workflows.schedule import SCHEDULE_ID, ensure_annual_schedule

WAIT = 30.0  # the scheduler applies a pause or an update a moment after the call returns


async def schedule_ids(client: Client) -> list[str]:
    return [s.id async for s in await client.list_schedules()]


async def paused(handle) -> bool:
    return (await handle.describe()).schedule.state.paused


def first(ranges) -> tuple[int, int]:
    [r] = ranges
    return r.start, r.end or r.start


async def test_the_worker_keeps_one_annual_schedule(client: Client, settings) -> None:
    handle = client.get_schedule_handle(SCHEDULE_ID)
    try:
        await ensure_annual_schedule(client, f"other-{uuid.uuid4()}")
        await handle.pause(note="paused by an operator")
        await eventually(lambda: paused(handle), timeout=WAIT, interval=0.5, what="the pause applied")
        await ensure_annual_schedule(client, settings.task_queue)  # a second worker start: updated, kept paused
        await ensure_annual_schedule(client, settings.task_queue)

        async def updated():
            schedule = (await handle.describe()).schedule
            return schedule if schedule.action.task_queue == settings.task_queue else None
        schedule = await eventually(updated, timeout=WAIT, interval=0.5, what="the update to this task queue")
        [calendar] = schedule.spec.calendars
        assert (first(calendar.month), first(calendar.day_of_month), first(calendar.hour),
                first(calendar.minute), first(calendar.second)) == ((1, 1), (15, 15), (6, 6), (0, 0), (0, 0))
        assert schedule.spec.time_zone_name == "Europe/Amsterdam"
        assert schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
        assert schedule.policy.catchup_window >= timedelta(days=3)
        assert schedule.state.paused and schedule.state.note == "paused by an operator"

        action = schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert (action.workflow, action.task_queue) == ("AnnualAnalysisWorkflow", settings.task_queue)
        [arg] = await client.data_converter.decode(action.args, [AnnualAnalysisInput])
        assert arg == AnnualAnalysisInput(year=None, requested_by=None)

        # 15 January, 06:00 in Amsterdam (CET): 05:00 UTC.
        now = datetime.now(timezone.utc)
        await handle.unpause()

        async def unpaused():
            described = await handle.describe()
            return None if described.schedule.state.paused else described
        upcoming = (await eventually(unpaused, timeout=WAIT, interval=0.5, what="the schedule unpaused")
                    ).info.next_action_times[0]
        assert upcoming == datetime(now.year + 1 if (now.month, now.day, now.hour) >= (1, 15, 5) else now.year,
                                    1, 15, 5, 0, tzinfo=timezone.utc)

        async def one() -> bool:
            return (await schedule_ids(client)).count(SCHEDULE_ID) == 1
        await eventually(one, timeout=WAIT, interval=0.5, what="one schedule listed")
    finally:
        await handle.delete()
