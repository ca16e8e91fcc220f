"""The daily retention sweep (schedule ``dossier-retention-sweep``): every dossier whose retention year has
ended is erased, whatever became of its complaint's workflow (activities/retention.py)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.names import MAIL_SWEEP_REPORT, SWEEP_EXPIRED_DOSSIERS
    from complaints.models import AlertSent, MailSweepInput, RetentionSweepInput, SweepResult, SweepRunInput
    from workflows.policies import DOSSIER_RETRY, MAIL_RETRY_UNTIL_TAKEN

SWEEP_TIMEOUT = timedelta(minutes=10)


@workflow.defn
class RetentionSweepWorkflow:
    @workflow.run
    async def run(self, input: RetentionSweepInput) -> SweepResult:
        if input.wait_seconds:
            await workflow.sleep(timedelta(seconds=input.wait_seconds), summary="until the sweep is due")
        info = workflow.info()
        result = await workflow.execute_activity(
            SWEEP_EXPIRED_DOSSIERS,
            SweepRunInput(as_of=workflow.now(), workflow_id=info.workflow_id, workflow_run_id=info.run_id),
            result_type=SweepResult, start_to_close_timeout=SWEEP_TIMEOUT, heartbeat_timeout=timedelta(minutes=2),
            retry_policy=DOSSIER_RETRY, summary="erase the dossiers whose retention year has ended")
        workflow.set_current_details(f"**Erased by the sweep:** {len(result.erased)}\n\n"
                                     f"**Left to their running workflows:** {result.left_to_workflows}")
        if result.erased:
            await workflow.execute_activity(
                MAIL_SWEEP_REPORT, MailSweepInput(sweep_id=result.sweep_id), result_type=AlertSent,
                start_to_close_timeout=timedelta(minutes=2), retry_policy=MAIL_RETRY_UNTIL_TAKEN,
                summary="tell the director which dossiers the sweep erased")
        return result
