"""The daily retention sweep: a dossier is erased when its year ends, whatever became of its workflow."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from temporalio.client import ScheduleActionStartWorkflow
from temporalio.testing import ActivityEnvironment

from activities.retention import RetentionActivities
from complaints.models import RetentionSweepInput, SweepResult, SweepRunInput, SweptDossier
from tests.lifecycle import eventually, start_formal, started, wait_dossier
from workflows.retention import RetentionSweepWorkflow
from workflows.schedule import SWEEP_SCHEDULE_ID, ensure_sweep_schedule

A_YEAR_AND_A_DAY = timedelta(days=366)


async def test_the_sweep_erases_a_terminated_complaint_after_its_year_and_leaves_a_running_one(
        env, client, settings, worker, mail, pool):
    # One complaint whose workflow an operator terminated in the Web UI, one that still runs.
    lost = await start_formal(client, settings)
    await started(lost)
    await wait_dossier(pool, lost, complainant_name="Jan de Vries")
    await lost.terminate(reason="clicked by an operator")
    running = await start_formal(client, settings, reference=f"REF-{uuid.uuid4()}")
    await started(running)
    await wait_dossier(pool, running, complainant_name="Jan de Vries")

    # A sweep a year and a day later.
    sweep = await client.start_workflow(
        RetentionSweepWorkflow.run, RetentionSweepInput(wait_seconds=int(A_YEAR_AND_A_DAY.total_seconds())),
        id=f"sweep-{uuid.uuid4()}", task_queue=settings.task_queue)
    await env.fast_forward(sweep, A_YEAR_AND_A_DAY + timedelta(minutes=1))
    result = await sweep.result()
    assert isinstance(result, SweepResult)
    swept = {e.complaint_id: e.workflow for e in result.erased}
    assert swept.get(lost.id) == "terminated"
    assert running.id not in swept

    # Erased the way the workflow erases: personal data gone, the erasure and the event recorded.
    row = await wait_dossier(pool, lost, phase="purged")
    assert row["complainant_name"] is None and row["complainant_email"] is None and row["description"] is None
    assert row["product"] is not None and row["received_at"] is not None
    letters = await pool.fetch("SELECT recipient, body FROM letters WHERE complaint_id = $1", lost.id)
    assert letters and all(r["recipient"] is None and r["body"] is None for r in letters)
    erasure = await pool.fetchrow("SELECT reason, fields FROM erasures WHERE complaint_id = $1", lost.id)
    assert "retention year ended" in erasure["reason"] and "daily sweep" in erasure["reason"]
    assert "terminated" in erasure["reason"] and "complainant_name" in erasure["fields"]
    events = await pool.fetch("SELECT action, actor FROM complaint_events WHERE complaint_id = $1", lost.id)
    assert ("purged", "system") in [(e["action"], e["actor"]) for e in events]

    # The running complaint erases its own dossier when its year ends: the sweep leaves it alone.
    kept = await wait_dossier(pool, running, complainant_name="Jan de Vries")
    assert kept["purged_at"] is None
    assert result.left_to_workflows >= 1

    # The director learns which dossier the sweep had to erase, and why; no personal data in the alert.
    def alert():
        found = [m for m in mail.find(x_alert_kind="retention-sweep") if lost.id in m.get_content()]
        return found or None
    [message] = await eventually(alert, what="the sweep's alert")
    body = message.get_content()
    assert f"{lost.id} (workflow: terminated)" in body
    assert "Jan de Vries" not in body and running.id not in body
    assert message["To"] == settings.director_email or settings.director_email in message["To"]


async def test_a_retried_sweep_returns_what_it_erased_and_erases_nothing_twice(client, settings, pool):
    """The activity retried after it committed (worker killed before it reported) finds its own record,
    so the director's alert still names every dossier it erased."""
    cid = f"complaint-sweep-{uuid.uuid4().hex[:12]}"
    await pool.execute(
        "INSERT INTO complaints (complaint_id, phase, route, channel, role, product, submitted_on, received_at,"
        " complainant_name, purge_on) VALUES ($1, 'closed', 'formal', 'email', 'customer', 'Training Agile',"
        " current_date - 400, now() - interval '400 days', 'Jan de Vries', now() - interval '1 day')", cid)
    activities = RetentionActivities(pool, settings, client)
    run = SweepRunInput(as_of=datetime.now(timezone.utc), workflow_id="sweep", workflow_run_id=str(uuid.uuid4()))
    first = await ActivityEnvironment().run(activities.sweep_expired_dossiers, run)
    assert SweptDossier(complaint_id=cid, workflow="not found") in first.erased
    again = await ActivityEnvironment().run(activities.sweep_expired_dossiers, run)
    assert again == first
    assert await pool.fetchval("SELECT count(*) FROM erasures WHERE complaint_id = $1", cid) == 1
    assert await pool.fetchval("SELECT complainant_name FROM complaints WHERE complaint_id = $1", cid) is None


async def test_the_worker_keeps_one_daily_sweep_schedule(client, settings):
    handle = client.get_schedule_handle(SWEEP_SCHEDULE_ID)
    try:
        await ensure_sweep_schedule(client, f"other-{uuid.uuid4()}")
        await ensure_sweep_schedule(client, settings.task_queue)

        async def updated():
            schedule = (await handle.describe()).schedule
            return schedule if schedule.action.task_queue == settings.task_queue else None
        schedule = await eventually(updated, timeout=30, interval=0.5, what="the update to this task queue")
        [calendar] = schedule.spec.calendars
        assert [(r.start, r.end or r.start) for r in calendar.hour] == [(3, 3)]
        assert [(r.start, r.end or r.start) for r in calendar.minute] == [(30, 30)]
        assert schedule.spec.time_zone_name == "Europe/Amsterdam"
        action = schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "RetentionSweepWorkflow"
        assert [s.id async for s in await client.list_schedules()].count(SWEEP_SCHEDULE_ID) <= 1
    finally:
        await handle.delete()
