"""The yearly analysis: were the measures effective?

Once a year (the schedule ``annual-complaint-analysis``, workflows/schedule.py) or on
request (``admin.py analyse --year YYYY``): compute the year's report in PostgreSQL as of
this run, keep it in the dossier (every run is kept), and mail it to the director.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

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
    from workflows.policies import (
        COMPUTE_REPORT_TIMEOUT,
        DOSSIER_RETRY,
        MAIL_REPORT_TIMEOUT,
        MAIL_RETRY_UNTIL_TAKEN,
        STORE_REPORT_TIMEOUT,
        failure_reason,
    )


@workflow.defn
class AnnualAnalysisWorkflow:
    @workflow.run
    async def run(self, input: AnnualAnalysisInput) -> AnnualAnalysisResult:
        as_of = workflow.now()
        year = input.year if input.year is not None else local_date(as_of).year - 1
        computed = await workflow.execute_activity(
            COMPUTE_ANNUAL_REPORT, ComputeReportInput(year=year, as_of=as_of), result_type=ComputedReport,
            start_to_close_timeout=COMPUTE_REPORT_TIMEOUT, retry_policy=DOSSIER_RETRY,
            summary=f"compute the {year} report")
        info = workflow.info()
        stored = await workflow.execute_activity(
            STORE_ANNUAL_REPORT,
            StoreReportInput(year=year, run_at=as_of, report=computed.report, monthly=computed.monthly,
                             requested_by=input.requested_by, workflow_id=info.workflow_id,
                             workflow_run_id=info.run_id),
            result_type=StoredReport, start_to_close_timeout=STORE_REPORT_TIMEOUT, retry_policy=DOSSIER_RETRY,
            summary=f"store the {year} report in the dossier")
        result = AnnualAnalysisResult(year=year, report_id=stored.report_id, run_at=stored.run_at,
                                      report=computed.report)
        try:
            mailed = await workflow.execute_activity(
                MAIL_ANNUAL_REPORT, MailReportInput(report_id=stored.report_id), result_type=ReportMailed,
                start_to_close_timeout=MAIL_REPORT_TIMEOUT, retry_policy=MAIL_RETRY_UNTIL_TAKEN,
                summary="mail the report to the director")
        except ActivityError as err:  # refused for good: the report stays in the dossier
            result.mail_error = failure_reason(err)
        else:
            result.message_id, result.mailed_at = mailed.message_id, mailed.sent_at
        return result
