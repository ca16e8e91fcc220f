"""How the workflows call their activities: retry policies and timeouts, shared by both workflows.

The dossier and the mail server are retried until they are back: an outage must not lose a
letter, an alert, a dossier write or the year's report (the mail activities' attempts are bounded,
and the complaint workflow then waits and tries again). A permanent refusal (an activity's
non-retryable ApplicationError, e.g. the mail server refusing an address for good) ends the
retries at once.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

DOSSIER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                            maximum_interval=timedelta(minutes=1))
#: Letters and alerts: attempts for about four minutes; then the workflow notes the mail server failing,
#: waits and tries again (workflows/complaint.py). A refused recipient ends them at once.
MAIL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0,
                         maximum_interval=timedelta(minutes=1), maximum_attempts=8)
#: Longer than a letter's attempts can take (MAIL_RETRY: 8 attempts of at most ACTIVITY_TIMEOUT with their
#: back-off, under 9 minutes). A new complaint starts its deadline timers only once its acknowledgement has
#: gone (or failed), unless a deadline falls within this.
ACKNOWLEDGEMENT_IN_FLIGHT = timedelta(minutes=15)
#: How long a letter or alert waits after its attempts all failed at the mail server, before it is tried again.
MAIL_SERVER_PAUSE = timedelta(minutes=10)
#: The yearly report's mail and the mailbox's alerts: retried until the mail server takes them.
MAIL_RETRY_UNTIL_TAKEN = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0,
                                     maximum_interval=timedelta(minutes=5))

#: A complaint's activities (one dossier write, one letter); a killed worker's are retried after this.
ACTIVITY_TIMEOUT = timedelta(seconds=30)
#: The working-day calendar, a local activity.
CALENDAR_TIMEOUT = timedelta(seconds=10)

#: The yearly analysis: the report's SQL over a year of complaints, its storage, and the mail
#: (which renders the chart with matplotlib before sending).
COMPUTE_REPORT_TIMEOUT = timedelta(minutes=5)
STORE_REPORT_TIMEOUT = timedelta(seconds=60)
MAIL_REPORT_TIMEOUT = timedelta(minutes=2)


def failure_reason(err: ActivityError) -> str:
    """Why an activity failed for good, as its ApplicationError says it (e.g. the SMTP refusal)."""
    cause = err.cause
    return str(cause.message if isinstance(cause, ApplicationError) else err)
