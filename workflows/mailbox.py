"""The info@ mailbox, read inside Temporal: the procedure's front door for complaints by e-mail.

One workflow per folder (id ``mailbox-<folder>``), started by the worker when ``MAILBOX_URL`` is
set. It looks in the folder, hands each new mail to an idempotent processing step (a new complaint,
correspondence on one, a bounce of our letter, or machine mail left alone), sets aside what cannot
be processed (the quarantine folder, and an alert ``mail-quarantined`` to the director) and looks
again after ``MAILBOX_POLL_SECONDS``. A crash anywhere loses nothing: the mail leaves the folder only
after Temporal accepted what it caused. The Web UI shows its last look and its counts.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.names import LIST_NEW_MAIL, PROCESS_MAIL, QUARANTINE_MAIL, SEND_MAILBOX_ALERT
    from complaints.models import (
        AlertKind,
        AlertSent,
        ListMailInput,
        MailboxAlertInput,
        MailboxWorkflowInput,
        MailList,
        MailOutcome,
        MailProcessed,
        ProcessMailInput,
        QuarantineMailInput,
    )
    from workflows.policies import MAIL_RETRY_UNTIL_TAKEN, failure_reason

#: The mailbox server (or the dossier, or Temporal) out of reach: retried without end, with backoff.
MAILBOX_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0,
                            maximum_interval=timedelta(minutes=1))
#: One mail: a failure that is not an outage (a bug that this mail triggers) ends after these
#: attempts and the mail is set aside, so that one bad mail never stops the inbox.
PROCESS_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0,
                            maximum_interval=timedelta(seconds=30), maximum_attempts=6,
                            non_retryable_error_types=["MailUnprocessable"])
MAILBOX_TIMEOUT = timedelta(minutes=2)
#: A worker that died while processing a mail: another picks the mail up after this.
PROCESS_HEARTBEAT = timedelta(seconds=30)
#: Looks in the mailbox per run, before it continues as new with its counts (keeps the history short).
LOOKS_PER_RUN = 200

UNAVAILABLE = "MailboxUnavailable"


def workflow_id(folder: str) -> str:
    return f"mailbox-{folder}"


@workflow.defn
class MailboxWorkflow:
    @workflow.init
    def __init__(self, input: MailboxWorkflowInput) -> None:
        self._state = input.model_copy()

    @workflow.run
    async def run(self, input: MailboxWorkflowInput) -> None:
        state = self._state
        self._details("starting")
        for _ in range(LOOKS_PER_RUN):
            listed = await workflow.execute_activity(
                LIST_NEW_MAIL, ListMailInput(folder=state.folder), result_type=MailList,
                start_to_close_timeout=MAILBOX_TIMEOUT, retry_policy=MAILBOX_RETRY,
                summary=f"look for new mail in {state.folder}")
            for uid in listed.uids:
                if not await self._handle(listed.uidvalidity, uid):
                    break  # the mailbox went away mid-way: the rest waits for the next look
            state.polls += 1
            state.last_poll = workflow.now()
            self._details(f"{len(listed.uids)} new mail(s) at the last look")
            if workflow.info().is_continue_as_new_suggested():
                break
            await workflow.sleep(timedelta(seconds=listed.poll_seconds), summary="until the next look in the mailbox")
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(state)

    async def _handle(self, uidvalidity: int, uid: int) -> bool:
        """Process one mail; set it aside if it cannot be processed. False when the mailbox is out of reach."""
        state = self._state
        try:
            done = await workflow.execute_activity(
                PROCESS_MAIL, ProcessMailInput(folder=state.folder, uidvalidity=uidvalidity, uid=uid),
                result_type=MailProcessed, start_to_close_timeout=MAILBOX_TIMEOUT, retry_policy=PROCESS_RETRY,
                heartbeat_timeout=PROCESS_HEARTBEAT, summary=f"process mail {uid}")
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == UNAVAILABLE:
                return False
            await self._quarantine(uidvalidity, uid, failure_reason(err))
            return True
        if done.outcome is not MailOutcome.GONE:
            state.processed += 1
        return True

    async def _quarantine(self, uidvalidity: int, uid: int, reason: str) -> None:
        state = self._state
        await workflow.execute_activity(
            QUARANTINE_MAIL, QuarantineMailInput(folder=state.folder, uidvalidity=uidvalidity, uid=uid, reason=reason),
            start_to_close_timeout=MAILBOX_TIMEOUT, retry_policy=MAILBOX_RETRY,
            summary=f"set mail {uid} aside in the quarantine folder")
        state.quarantined += 1
        try:
            await workflow.execute_activity(
                SEND_MAILBOX_ALERT, MailboxAlertInput(kind=AlertKind.MAIL_QUARANTINED, folder=state.folder,
                                                      uidvalidity=uidvalidity, uid=uid, reason=reason),
                result_type=AlertSent, start_to_close_timeout=MAILBOX_TIMEOUT,
                retry_policy=MAIL_RETRY_UNTIL_TAKEN,
                summary="alert the director: mail-quarantined")
        except ActivityError as err:  # the director's address refused for good: the mail is set aside all the same
            workflow.logger.warning("mailbox alert undeliverable: %s", failure_reason(err))

    def _details(self, last: str) -> None:
        s = self._state
        lines = [f"**Folder:** {s.folder}",
                 f"**Last look:** {s.last_poll.isoformat() if s.last_poll else 'not yet'} ({last})",
                 f"**Processed:** {s.processed}", f"**Quarantined:** {s.quarantined}", f"**Looks:** {s.polls}"]
        workflow.set_current_details("\n\n".join(lines))

    @workflow.query
    def counts(self) -> MailboxWorkflowInput:
        """The folder, how many mails were processed and set aside, and when it last looked."""
        return self._state.model_copy()
