"""The yearly analysis: were the measures effective?

Once a year (the schedule ``annual-complaint-analysis``, complaints/schedule.py) or on
request (``admin.py analyse --year YYYY``): compute the year's report in PostgreSQL as of
this run, keep it in the dossier (every run is kept), and mail it to the director.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.names import COMPUTE_ANNUAL_REPORT, MAIL_ANNUAL_REPORT, STORE_ANNUAL_REPORT
    from complaints.calendar import local_date
    from complaints.models import (
        AnnualAnalysisInput,
        AnnualAnalysisResult,
        ComputedReport,
        ComputeReportInput,
        MailReportInput,
        ReportMailed,
        StoredReport,
        StoreReportInput,
    )

# The dossier and the mail server are retried until they are back (an outage must not lose the
# year's report); a permanent refusal of the director's address (5xx) ends the mail's retries.
DOSSIER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                            maximum_interval=timedelta(minutes=1))
MAIL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0,
                         maximum_interval=timedelta(minutes=5))
COMPUTE_TIMEOUT = timedelta(minutes=5)
STORE_TIMEOUT = timedelta(seconds=60)
MAIL_TIMEOUT = timedelta(minutes=2)  # renders the chart (matplotlib) before sending


@workflow.defn
class AnnualAnalysisWorkflow:
    @workflow.run
    async def run(self, input: AnnualAnalysisInput) -> AnnualAnalysisResult:
        as_of = workflow.now()
        year = input.year if input.year is not None else local_date(as_of).year - 1
        computed = await workflow.execute_activity(
            COMPUTE_ANNUAL_REPORT, ComputeReportInput(year=year, as_of=as_of), result_type=ComputedReport,
            start_to_close_timeout=COMPUTE_TIMEOUT, retry_policy=DOSSIER_RETRY,
            summary=f"compute the {year} report")
        info = workflow.info()
        stored = await workflow.execute_activity(
            STORE_ANNUAL_REPORT,
            StoreReportInput(year=year, run_at=as_of, report=computed.report, monthly=computed.monthly,
                             requested_by=input.requested_by, workflow_id=info.workflow_id,
                             workflow_run_id=info.run_id),
            result_type=StoredReport, start_to_close_timeout=STORE_TIMEOUT, retry_policy=DOSSIER_RETRY,
            summary=f"store the {year} report in the dossier")
        result = AnnualAnalysisResult(year=year, report_id=stored.report_id, run_at=stored.run_at,
                                      report=computed.report)
        try:
            mailed = await workflow.execute_activity(
                MAIL_ANNUAL_REPORT, MailReportInput(report_id=stored.report_id), result_type=ReportMailed,
                start_to_close_timeout=MAIL_TIMEOUT, retry_policy=MAIL_RETRY,
                summary="mail the report to the director")
        except ActivityError as err:  # refused for good: the report stays in the dossier
            cause = err.cause
            result.mail_error = str(cause.message if isinstance(cause, ApplicationError) else err)
        else:
            result.message_id, result.mailed_at = mailed.message_id, mailed.sent_at
        return result
